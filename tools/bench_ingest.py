"""Ingest benchmark: how fast a replica verifies and stores a bundle, against the cost
of the Ed25519 signature checks alone.

A deterministic workload (one authority admitting ~120 devices, cashing them in and
topping them up; the devices paying each other, cashing out and setting metadata) is
signed record by record with `sign_record`, the same way a `Wallet` builds them: each
record refs the credits its chain has not claimed yet, and a device's first record
refs its admit. The records go into a bundle file (cached under `tools/.cache/`).

Then, in one process and on one core:

- baseline: `nacl.bindings.crypto_sign_open` over exactly those records' signed
  messages (signature + SIGNATURE_CONTEXT + network id + payload, prepared beforehand);
- ingest: what `p2p-ledger import` does - `read_bundle`, then `Replica.receive_many`
  inside one `store.transaction()` of a fresh `SqliteStore`, then the commit; the
  signatures checked in the verifier child process (node/verifier.py), as there.

The ratio ingest/baseline has a target of 0.8x. Every record must come out `applied`;
anything else means the workload or the ledger is wrong, and the run fails.

    python tools/bench_ingest.py [--records N] [--profile] [--btree]

`bench_store.py` reuses `Workload` from here to build its large store.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import itertools
import json
import pstats
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import nacl.bindings
import nacl.signing

from p2p_ledger.build import build_kind
from p2p_ledger.core.collector import gc_paused
from p2p_ledger.core.hlc import pack_hlc
from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import IngestReport, Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import (
    MAX_REFS,
    SIGNATURE_CONTEXT,
    Admit,
    Body,
    Issue,
    Kind,
    Meta,
    Record,
    Redeem,
    Transfer,
    open_record,
    sign_record,
)
from p2p_ledger.core.store import Verdict
from p2p_ledger.errors import InvalidRecord
from p2p_ledger.node.verifier import shared_verifier
from p2p_ledger.storage.bundle import BundleError, read_bundle, write_bundle
from p2p_ledger.storage.sqlite import SqliteStore

TOOLS = Path(__file__).resolve().parent
DEFAULT_CACHE = TOOLS / ".cache"
TARGET_RATIO = 0.8
WORKLOAD_VERSION = 1
START_MS = 1_763_900_000_000  # the fixed clock of the tests (T0); one record per ms after it
DEFAULT_DEVICES = 120
_MEMOS = ("fuel", "lunch", "parts", "tolls", "water", "cargo fee", "repair", "rent share")
_META = (("display_name", "truck {n}"), ("site", "site-{n}"), ("phone", "+971 50 {n:07d}"))


# ---------------------------------------------------------------- workload


def _key(seed: str, name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(f"{seed}/{name}".encode(),
                                                   digest_size=32).digest())


@dataclass(slots=True)
class _Chain:
    """What the generator tracks about one author: enough to sign its next record the
    way a Wallet would, without a replica."""

    key: nacl.signing.SigningKey
    device: bytes
    seq: int = 0
    head: bytes | None = None
    balance: int = 0  # of `main`, over the head's causal past
    unclaimed: deque[tuple[bytes, int]] = field(default_factory=deque)
    admit: bytes | None = None  # to ref from the first record

    def claimable(self) -> int:
        """Balance after the next record claims as many credits as its refs allow."""
        room = MAX_REFS - (1 if self.seq == 0 else 0)
        return self.balance + sum(a for _, a in itertools.islice(self.unclaimed, room))


class Workload:
    """A deterministic stream of valid signed records of one network."""

    def __init__(self, *, seed: str = "bench", devices: int = DEFAULT_DEVICES) -> None:
        if devices < 2:
            raise ValueError("a workload needs at least 2 devices")
        self.seed = seed
        self.rng = random.Random(seed)
        ak = _key(seed, "authority")
        self.authority = _Chain(key=ak, device=bytes(ak.verify_key))
        self.network = NetworkDescriptor(name=f"bench-{seed}", currency="AED",
                                         authority=self.authority.device)
        self.network_id = self.network.network_id
        self.devices = []
        for i in range(devices):
            k = _key(seed, f"device-{i}")
            self.devices.append(_Chain(key=k, device=bytes(k.verify_key)))
        self.by_key = {c.device: c for c in self.devices}
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def account(self, i: int) -> Account:
        return Account(device=self.devices[i].device)

    def _sign(self, chain: _Chain, body: Body) -> bytes:
        refs: list[bytes] = []
        if chain.seq == 0 and chain.admit is not None:
            refs.append(chain.admit)
        while chain.unclaimed and len(refs) < MAX_REFS:
            rid, amount = chain.unclaimed.popleft()
            refs.append(rid)
            chain.balance += amount
        record = Record(author=chain.device, seq=chain.seq + 1, prev=chain.head,
                        refs=tuple(sorted(refs)), hlc=pack_hlc(START_MS + self.count),
                        body=body)
        signed = sign_record(record, chain.key, self.network_id)
        chain.seq += 1
        chain.head = signed.id
        self.count += 1
        self.kinds[body.KIND.label] += 1
        if isinstance(body, (Issue, Transfer)):
            self.by_key[body.to.device].unclaimed.append((signed.id, body.amount))
        if isinstance(body, (Transfer, Redeem)):
            chain.balance -= body.amount
            assert chain.balance >= 0
        return signed.raw

    def _key_text(self, chain: _Chain) -> str:
        return f"{chain.seq + 1:08x}{self.rng.getrandbits(32):08x}"

    def _setup(self) -> Iterator[bytes]:
        auth = self.authority
        for d in self.devices:
            limit = self.rng.choice((None, 500_00, 2_000_00))
            raw = self._sign(auth, Admit(device=d.device, tier=self.rng.randint(0, 2),
                                         offline_limit=limit))
            d.admit = auth.head
            yield raw
        for d in self.devices:
            yield self._sign(auth, Issue(to=Account(device=d.device),
                                         amount=self.rng.randint(1_000_00, 5_000_00),
                                         key=self._key_text(auth)))

    def _payer(self, minimum: int) -> _Chain:
        for _ in range(50):
            d = self.rng.choice(self.devices)
            if d.claimable() >= minimum:
                return d
        return max(self.devices, key=_Chain.claimable)

    def _step(self) -> bytes:
        roll = self.rng.random()
        auth = self.authority
        if roll < 0.05:  # top-up by the authority
            d = self.rng.choice(self.devices)
            return self._sign(auth, Issue(to=Account(device=d.device),
                                          amount=self.rng.randint(500_00, 5_000_00),
                                          key=self._key_text(auth)))
        if roll < 0.08:  # account metadata
            d = self.rng.choice(self.devices)
            name, fmt = self.rng.choice(_META)
            return self._sign(d, Meta(account="main", field=name,
                                      value=fmt.format(n=self.rng.randint(1, 9_999_999))))
        payer = self._payer(1_00)
        have = payer.claimable()
        if have < 1_00:  # nobody can pay: the authority tops someone up instead
            return self._sign(auth, Issue(to=Account(device=payer.device), amount=1_000_00,
                                          key=self._key_text(auth)))
        if roll < 0.11:  # cash-out of up to a quarter of the balance
            amount = self.rng.randint(1_00, max(1_00, have // 4))
            return self._sign(payer, Redeem(from_="main", amount=amount,
                                            key=self._key_text(payer)))
        payee = self.rng.choice(self.devices)
        while payee is payer:
            payee = self.rng.choice(self.devices)
        amount = min(have, self.rng.randint(1_00, 300_00))
        memo = self.rng.choice(_MEMOS) if self.rng.random() < 0.3 else None
        return self._sign(payer, Transfer(from_="main", to=Account(device=payee.device),
                                          amount=amount, key=self._key_text(payer), memo=memo))

    def records(self, n: int) -> Iterator[bytes]:
        """The first `n` records, in an order in which each one's causal past comes first."""
        for raw in self._setup():
            if self.count > n:
                return
            yield raw
        while self.count < n:
            yield self._step()


def devices_for(n: int, wanted: int = DEFAULT_DEVICES) -> int:
    """Fewer devices for tiny runs, so that payments still make up most of the records."""
    return max(3, min(wanted, n // 10))


def _still_valid(path: Path, network_id: bytes) -> bool:
    """Whether a cached bundle still reads, and its first and last records still open,
    with the current code (a change of the record format makes it stale)."""
    try:
        raws = read_bundle(path, network_id)
        for raw in (raws[0], raws[-1]):
            open_record(raw, network_id)
    except (BundleError, InvalidRecord, IndexError) as exc:
        print(f"cached bundle {path.name} is stale ({exc}); generating it again", flush=True)
        return False
    return True


def cached_bundle(n: int, devices: int, cache: Path, seed: str = "bench"
                  ) -> tuple[Path, NetworkDescriptor, bool]:
    """The bundle of the workload's first `n` records, generated once and cached."""
    work = Workload(seed=seed, devices=devices)
    path = cache / f"ingest-{seed}-n{n}-d{devices}-v{WORKLOAD_VERSION}.bundle"
    if path.exists() and _still_valid(path, work.network_id):
        return path, work.network, True
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raws = list(work.records(n))
    write_bundle(path, work.network_id, raws)
    print(f"generated {n} records in {time.perf_counter() - t0:.1f} s -> {path}", flush=True)
    return path, work.network, False


# ---------------------------------------------------------------- measurements


def kind_counts(raws: Sequence[bytes]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for raw in raws:
        payload, _ = cbor2.loads(raw)
        c[Kind(cbor2.loads(payload)[0]).label] += 1
    return dict(sorted(c.items()))


def baseline_verify(raws: Sequence[bytes], network_id: bytes) -> float:
    """Seconds for PyNaCl to verify exactly these records' signatures, nothing else."""
    items = []
    for raw in raws:
        payload, sig = cbor2.loads(raw)
        author = cbor2.loads(payload)[1]
        items.append((sig + SIGNATURE_CONTEXT + network_id + payload, author))
    open_ = nacl.bindings.crypto_sign_open
    t0 = time.perf_counter()
    for signed_message, author in items:
        open_(signed_message, author)
    return time.perf_counter() - t0


class GcTimer:
    """Python's cyclic collections in this process while the block runs, timed through
    `gc.callbacks`: how many (and how many full, generation 2) and their seconds."""

    def __init__(self) -> None:
        self.collections = 0
        self.full = 0
        self.seconds = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.collections += 1
        self.full += info["generation"] == 2

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def text(self) -> str:
        return f"GC {self.seconds:.2f} s in {self.collections} collections ({self.full} full)"


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestTiming:
    read_s: float
    receive_s: float
    commit_s: float
    cpu_s: float  # this process's CPU time over all three (not the verifier child's)
    gc_s: float  # of which Python's cyclic garbage collector (`GcTimer`)
    gc_collections: int
    gc_full: int

    @property
    def total_s(self) -> float:
        return self.read_s + self.receive_s + self.commit_s


def ingest(bundle: Path, network: NetworkDescriptor, store_path: Path,
           instrument: Callable[[SqliteStore], None] | None = None
           ) -> tuple[IngestTiming, IngestReport]:
    """`p2p-ledger import` of `bundle` into a fresh store at `store_path`."""
    store = SqliteStore(store_path, network.network_id)
    if instrument is not None:
        instrument(store)
    try:
        # As `p2p-ledger import`: signatures checked by the verifier child process,
        # started within the timed part, as there.
        replica = Replica(network, store, verifier=shared_verifier().start)
        now = time.time_ns() // 1_000_000
        with GcTimer() as collector:
            c0 = time.process_time()
            t0 = time.perf_counter()
            raws = read_bundle(bundle, network.network_id)
            t1 = time.perf_counter()
            with gc_paused(), store.transaction(bulk=True):  # as `p2p-ledger import`
                report = replica.receive_many(raws, now_ms=now)
                t2 = time.perf_counter()
            t3 = time.perf_counter()
            cpu = time.process_time() - c0
    finally:
        store.close()
    return IngestTiming(read_s=t1 - t0, receive_s=t2 - t1, commit_s=t3 - t2, cpu_s=cpu,
                        gc_s=collector.seconds, gc_collections=collector.collections,
                        gc_full=collector.full), report


def check_report(report: IngestReport, n: int) -> str | None:
    """Why the ingest did not store all `n` records as applied, or None."""
    verdicts = Counter(a.verdict for a in report.applied)
    if (len(report.applied) == n and verdicts[Verdict.APPLIED] == n and not report.refused
            and not report.waiting):
        return None
    first = [f"{e.problem.value}: {e.detail}" for _, e in report.refused[:3]]
    first += [f"{a.verdict.value}: {a.reason}" for a in report.applied
              if a.verdict is not Verdict.APPLIED][:3]
    return (f"expected {n} applied records, got {dict(verdicts)}, "
            f"{len(report.refused)} refused, {report.waiting} waiting; first: {first}")


def profile_ingest(bundle: Path, network: NetworkDescriptor, store_path: Path,
                   top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    ingest(bundle, network, store_path)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


class _TimedConnection:
    """Stands in for a SqliteStore's connection and times each SQL statement's execute
    (diagnostics only: it reaches into the store's private `_db`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.times: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        t0 = time.perf_counter()
        try:
            return self.db.execute(sql, params)
        finally:
            entry = self.times[sql]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> sqlite3.Cursor:
        """Timed like `execute`, counting the rows (the store writes in bulk)."""
        rows = list(rows)
        t0 = time.perf_counter()
        try:
            return self.db.executemany(sql, rows)
        finally:
            entry = self.times[sql]
            entry[0] += len(rows)
            entry[1] += time.perf_counter() - t0

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def _timing_into(timed: list[_TimedConnection]) -> Callable[[SqliteStore], None]:
    """An `ingest` instrument that puts the store's connection behind a
    `_TimedConnection`, appended to `timed`."""
    def instrument(store: SqliteStore) -> None:
        db = getattr(store, "_db", None)
        if isinstance(db, sqlite3.Connection):
            timed.append(_TimedConnection(db))
            store._db = timed[0]  # type: ignore[assignment]
    return instrument


def sql_breakdown(bundle: Path, network: NetworkDescriptor, store_path: Path,
                  top: int = 12) -> str:
    """Where the ingest's SQLite time goes, statement by statement."""
    timed: list[_TimedConnection] = []
    instrument = _timing_into(timed)
    timing, _ = ingest(bundle, network, store_path, instrument)
    if not timed:
        return "(SqliteStore has no `_db` connection any more: no SQL breakdown)"
    rows = sorted(timed[0].times.items(), key=lambda kv: -kv[1][1])
    spent = sum(t for _, t in timed[0].times.values())
    lines = [f"SQL: {spent:.2f} s of {timing.total_s:.2f} s in "
             f"{sum(int(c) for c, _ in timed[0].times.values()):,} statements or rows"]
    for sql, (count, seconds) in rows[:top]:
        text = " ".join(sql.split())
        lines.append(f"  {seconds:7.2f} s {int(count):>9,} x "
                     f"{seconds / max(count, 1) * 1e6:6.1f} us  {text[:80]}")
    return "\n".join(lines)


def btree_entries(store_path: Path) -> dict[str, int]:
    """Entries in each b-tree of the store file (tables and indexes, by name), counted
    from SQLite's `dbstat`: a rowid table's entries are the cells of its leaf pages; an
    index (and a WITHOUT ROWID table) holds an entry in every cell, interior ones too."""
    db = sqlite3.connect(store_path)
    try:
        rowid_tables = {name for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='table'")
            if "WITHOUT ROWID" not in (sql or "").upper()}
        found: Counter[str] = Counter()
        for name, kind, cells in db.execute(
                "SELECT name, pagetype, ncell FROM dbstat WHERE pagetype != 'overflow'"):
            if name in rowid_tables and kind != "leaf":
                continue  # a rowid table's interior cells are separators, not rows
            found[name] += cells
        return dict(found)
    finally:
        db.close()


def btree_report(bundle: Path, network: NetworkDescriptor, store_path: Path, n: int
                 ) -> tuple[str, dict[str, object]]:
    """B-tree entries per record after one ingest, and the rows that UPDATE, DELETE and
    upsert statements changed in it (an entry rewritten or removed, not added)."""
    timed: list[_TimedConnection] = []
    instrument = _timing_into(timed)
    ingest(bundle, network, store_path, instrument)
    entries = btree_entries(store_path)
    total = sum(entries.values())
    lines = [f"b-trees   {total / n:.2f} entries per record in the file after the ingest:"]
    for name, count in sorted(entries.items(), key=lambda kv: -kv[1]):
        if count:
            lines.append(f"  {count / n:5.2f}  {name}")
    changed = 0
    for sql, (count, _) in (timed[0].times.items() if timed else ()):
        head = sql.lstrip().split(None, 1)[0].upper()
        if head in ("UPDATE", "DELETE") or "ON CONFLICT" in sql.upper():
            changed += int(count)
    lines.append(f"  rows updated, deleted or upserted: {changed / n:.2f} per record")
    return "\n".join(lines), {"btree_entries_per_record": round(total / n, 3),
                              "btree_rows_changed_per_record": round(changed / n, 3),
                              "btree_entries": entries}


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, metavar="N")
    p.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    p.add_argument("--profile", action="store_true", help="print a cProfile of the ingest")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--btree", action="store_true",
                   help="count the b-tree entries per record of one more ingest")
    args = p.parse_args(argv)
    n = args.records
    if n < 10:
        p.error("--records must be at least 10")
    devices = devices_for(n, args.devices)

    bundle, network, cached = cached_bundle(n, devices, args.cache_dir)
    raws = read_bundle(bundle, network.network_id)
    kinds = kind_counts(raws)
    print(f"build     p2p-ledger {build_kind()} (p2p_ledger/build.py)")
    print(f"workload  {n} records, {devices} devices, "
          f"{', '.join(f'{k} {v}' for k, v in kinds.items())}; "
          f"bundle {bundle.stat().st_size / 1e6:.1f} MB{' (cached)' if cached else ''}")

    base_s = baseline_verify(raws, network.network_id)
    del raws
    base_rate = _rate(n, base_s)
    print(f"baseline  raw Ed25519 verify (PyNaCl crypto_sign_open, 1 core): "
          f"{base_s:.2f} s = {base_rate:,.0f} records/s")

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        timing, report = ingest(bundle, network, Path(tmp) / "ledger.sqlite3")
        problem = check_report(report, n)
        if problem:
            print(f"bench_ingest: error: {problem}", file=sys.stderr)
            return 1
        rate = _rate(n, timing.total_s)
        ratio = rate / base_rate
        print(f"ingest    read_bundle + receive_many + commit (fresh SqliteStore): "
              f"{timing.total_s:.2f} s = {rate:,.0f} records/s "
              f"(read {timing.read_s:.2f} s, receive {timing.receive_s:.2f} s, "
              f"commit {timing.commit_s:.2f} s; CPU {timing.cpu_s:.2f} s, of which "
              f"GC {timing.gc_s:.2f} s in {timing.gc_collections} collections, "
              f"{timing.gc_full} full)")
        verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
        print(f"ratio     ingest/baseline = {ratio:.2f}x (target >= {TARGET_RATIO}x): {verdict}")
        if args.profile:
            print("profile of one more ingest (cProfile slows it down; "
                  "read the shares, not the seconds):")
            print(profile_ingest(bundle, network, Path(tmp) / "profiled.sqlite3"))
            print(sql_breakdown(bundle, network, Path(tmp) / "timed.sqlite3"))
        btree: dict[str, object] = {}
        if args.btree:
            text, btree = btree_report(bundle, network, Path(tmp) / "counted.sqlite3", n)
            print(text)
    print(json.dumps({**btree,
        "bench": "ingest", "records": n, "devices": devices, "kinds": kinds,
        "baseline_s": round(base_s, 4), "baseline_per_s": round(base_rate, 1),
        "ingest_s": round(timing.total_s, 4), "ingest_per_s": round(rate, 1),
        "read_s": round(timing.read_s, 4), "receive_s": round(timing.receive_s, 4),
        "commit_s": round(timing.commit_s, 4), "cpu_s": round(timing.cpu_s, 4),
        "gc_s": round(timing.gc_s, 4), "gc_collections": timing.gc_collections,
        "gc_full": timing.gc_full,
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO, "meets_target": ratio >= TARGET_RATIO}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
