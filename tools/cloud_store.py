"""A large PostgreSQL store for the cloud benchmark's delta query (bench_cloud.py), built
by bulk COPY, and the query timed on it.

Storing a million records one by one through front-ends would take the better part of
an hour on a small machine, so the store is built in bulk, and then checked:

1. the records: `bench_ingest.Workload`'s first N records (cached as a bundle under
   tools/.cache/, signed one by one as a Wallet signs them);
2. their effects: the ledger's own rules judge every record, in order, over a
   `MemoryStore` (`Replica.receive_many`; signatures are not checked again - the
   generator signed them, and ingest benchmarks time verification), and every
   `Effects` the replica hands its store is kept: exactly what `PostgresStore.apply`
   would have written;
3. COPY of those effects into the PostgreSQL schema in one transaction: records in
   order (so the `ord` sequence numbers them as `apply` would: 1..N), tips, admits,
   credits with their claims, movements, balances summed, metadata last-writer-wins,
   equivocations, covers, revocations, the totals row;
4. the check: a `PostgresStore` opened on the result must give the same state hash,
   totals, balances, equivocations and unclaimed credits of a sample of devices as the
   `MemoryStore`, or the run fails.

The delta query is then `Replica.delta` on a `PostgresStore` for a peer whose summary
holds every author's tip as of record N - lacking (timed several times: the first,
the median and the largest are reported) and must return exactly `lacking` records.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from bench_ingest import cached_bundle, devices_for

from p2p_ledger.core.checking import Failures
from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import SignedRecord
from p2p_ledger.core.store import Effects, MemoryStore
from p2p_ledger.storage.bundle import read_bundle
from p2p_ledger.storage.postgres import PostgresStore

__all__ = ["build", "delta_run"]

REPEAT = 7


class _Keeping(MemoryStore):
    """A MemoryStore that keeps every Effects it is given, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[Effects] = []

    def apply(self, fx: Effects) -> None:
        super().apply(fx)
        self.kept.append(fx)


def _signed_already(records: Sequence[SignedRecord], network_id: bytes
                    ) -> Any:
    """A verifier for records this process signed itself: every one passes."""
    def done() -> Failures:
        return [None] * len(records)
    return done


def judge(raws: list[bytes], network: NetworkDescriptor) -> tuple[Replica, _Keeping]:
    store = _Keeping()
    replica = Replica(network, store, verifier=_signed_already)
    now = time.time_ns() // 1_000_000
    for i in range(0, len(raws), 20_000):
        with store.transaction():
            report = replica.receive_many(raws[i:i + 20_000], now_ms=now)
        if report.refused or report.waiting or len(report.applied) != len(raws[i:i + 20_000]):
            raise RuntimeError(f"the workload did not apply: {len(report.refused)} refused, "
                               f"{report.waiting} waiting")
    return replica, store


def _copy(cur: psycopg.Cursor[Any], table: str, columns: str, rows: Any) -> int:
    n = 0
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN".encode()) as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def copy_effects(url: str, network: NetworkDescriptor, kept: list[Effects],
                 memory: MemoryStore) -> None:
    PostgresStore(url, network.network_id).close()  # the schema
    credits: dict[bytes, list[Any]] = {}
    claims: list[tuple[bytes, bytes, bytes, int]] = []
    movements: list[tuple[bytes, str, int, int, int]] = []
    balances: dict[tuple[bytes, str], int] = {}
    metadata: dict[tuple[bytes, str, str], tuple[str, int, bytes, bytes]] = {}
    admits, equivocations, covers, revocations = [], [], [], []
    issued = redeemed = max_hlc = 0
    for order, fx in enumerate(kept, start=1):
        row = fx.row
        if fx.admit is not None:
            a = fx.admit
            admits.append((a.device, row.id, a.role, a.tier, a.offline_limit, a.expires, order))
        if fx.credit is not None:
            c = fx.credit
            credits[row.id] = [c.account.device, row.id, c.account.name, c.amount, order,
                               c.claimed, None, None]
        for credit in fx.claims:
            entry = credits[credit]
            if entry[6] is None:
                entry[5], entry[6], entry[7] = True, row.id, row.seq
            else:
                claims.append((row.author, credit, row.id, row.seq))
        for idx, m in enumerate(fx.movements):
            k = (m.account.device, m.account.name)
            balances[k] = balances.get(k, 0) + m.delta
            movements.append((*k, order, idx, m.delta))
        for other in fx.equivocates_with:
            first, second = sorted((other, row.id))
            equivocations.append((row.author, row.seq, first, second))
        for covered_author, covered_seq, covered in fx.covers:
            covers.append((covered_author, row.id, covered_seq, covered))
        if fx.revoke is not None:
            revocations.append((fx.revoke[0], row.id, fx.revoke[1]))
        if fx.meta is not None:
            account, name, value = fx.meta
            key = (account.device, account.name, name)
            new = (value, row.hlc, row.author, row.id)
            if key not in metadata or metadata[key][1:] < new[1:]:
                metadata[key] = new
        issued += fx.issued
        redeemed += fx.redeemed
        max_hlc = max(max_hlc, row.hlc)
    with psycopg.connect(url) as db, db.cursor() as cur:
        _copy(cur, "records", "author, id, seq, prev, kind, hlc, verdict, reason, chain, raw, "
              "idem_key", ((fx.row.author, fx.row.id, fx.row.seq, fx.row.prev,
                            fx.row.kind.value, fx.row.hlc, fx.row.verdict.value,
                            fx.row.reason, fx.row.chain.encode(), fx.raw, fx.idem_key)
                           for fx in kept))
        _copy(cur, "tips", "author, id, seq", ((t.author, t.id, t.seq) for t in memory.tips()))
        _copy(cur, "admits", "device, id, role, tier, offline_limit, expires, ord", admits)
        _copy(cur, "credits", "device, id, name, amount, ord, claimed, claimer, claimer_seq",
              credits.values())
        _copy(cur, "claims", "author, credit, claimer, seq", claims)
        _copy(cur, "movements", "device, name, ord, idx, delta", movements)
        _copy(cur, "balances", "device, name, minor",
              ((d, n, v) for (d, n), v in sorted(balances.items())))
        _copy(cur, "metadata", "device, name, field, value, hlc, author, record",
              ((d, n, f, *v) for (d, n, f), v in metadata.items()))
        _copy(cur, "equivocations", "author, seq, first, second", equivocations)
        _copy(cur, "covers", "author, checkpoint, seq, id", covers)
        _copy(cur, "revocations", "device, record, after_seq", revocations)
        cur.execute(b"INSERT INTO totals VALUES (0, %s, %s, %s, %s)",
                    (len(kept), issued, redeemed, max_hlc))
        last = cur.execute(b"SELECT max(ord), count(*) FROM records").fetchone()
        assert last == (len(kept), len(kept)), f"ord is not 1..N: {last}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(b"VACUUM ANALYZE")


def check(url: str, network: NetworkDescriptor, memory: Replica) -> None:
    """The bulk-built store answers as the ledger's own store does, or the run fails."""
    store = PostgresStore(url, network.network_id)
    try:
        built = Replica(network, store)
        same = {
            "state hash": (built.state_hash(), memory.state_hash()),
            "totals": (store.totals(), memory.store.totals()),
            "balances": (store.balances(), memory.store.balances()),
            "equivocations": (store.equivocations(), memory.store.equivocations()),
        }
        devices = sorted({a.device for a in memory.store.balances()})[:5]
        for d in devices:
            same[f"unclaimed of {d.hex()[:8]}"] = (
                sorted(c.id for c in store.unclaimed_credits(d)),
                sorted(c.id for c in memory.store.unclaimed_credits(d)))
            account = Account(device=d)
            same[f"history of {d.hex()[:8]}"] = (store.history(account)[-20:],
                                                 memory.store.history(account)[-20:])
        differ = [name for name, (a, b) in same.items() if a != b]
        if differ:
            raise RuntimeError(f"the bulk-built store differs from the ledger's: {differ}")
    finally:
        store.close()


def build(url: str, n: int, cache: Path
          ) -> tuple[NetworkDescriptor, list[bytes], list[tuple[bytes, int, bytes]]]:
    """The store at `url`; the records, and (author, seq, id) of each in order."""
    t0 = time.perf_counter()
    path, network, _ = cached_bundle(n, devices_for(n), cache)
    raws = read_bundle(path, network.network_id)
    t1 = time.perf_counter()
    memory, kept_store = judge(raws, network)
    t2 = time.perf_counter()
    copy_effects(url, network, kept_store.kept, kept_store)
    t3 = time.perf_counter()
    check(url, network, memory)
    print(f"  built a {n:,}-record store: records {t1 - t0:.0f} s, judged {t2 - t1:.0f} s, "
          f"COPY {t3 - t2:.0f} s, checked {time.perf_counter() - t3:.0f} s", flush=True)
    order = [(fx.row.author, fx.row.seq, fx.row.id) for fx in kept_store.kept]
    return network, raws, order


def delta_run(url: str, n: int, lacking: int, cache: Path) -> dict[str, float]:
    print(f"delta query on a {n:,}-record PostgreSQL store:", flush=True)
    network, raws, order = build(url, n, cache)
    tips: dict[bytes, tuple[int, bytes]] = {}
    for author, seq, rid in order[:n - lacking]:
        tips[author] = (seq, rid)
    peer = Frontier({a: (t,) for a, t in tips.items()})
    store = PostgresStore(url, network.network_id)
    try:
        replica = Replica(network, store)
        times = []
        for _ in range(REPEAT):
            t0 = time.perf_counter()
            sent = replica.delta(peer)
            times.append((time.perf_counter() - t0) * 1000)
            if len(sent) != lacking or set(sent) != set(raws[n - lacking:]):
                raise RuntimeError(f"the delta has {len(sent)} records, not the {lacking} "
                                   "the peer lacks")
    finally:
        store.close()
    print(f"  {lacking:,} records: first {times[0]:.1f} ms, median "
          f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms", flush=True)
    return {"records": float(n), "lacking": float(lacking), "first_ms": times[0],
            "median_ms": statistics.median(times), "max_ms": max(times)}
