"""Re-verify a store from scratch: every signature, chain, verdict and balance.

First SQLite's own `integrity_check` reads every page and checks every index against
its table: a damaged file is reported as such (`StoreDamaged`) and nothing is replayed.
Then the stored records are replayed, in the order they were stored (a causal order),
into a fresh replica over a scratch store, through the same `Replica.receive` that
judged them the first time, and everything the original store says (verdicts, chain
balances, account balances, totals, tips, equivocations) is compared with what the
replay computed. All of it is read from one snapshot of the store (a read
transaction), so records that a running node commits meanwhile are not half seen. An
edit made to the SQLite file by hand, or a changed byte inside a value (which SQLite's
checks cannot see), shows up as a bad signature (the record bytes were changed), an id
mismatch, a row that does not decode, or a derived value that differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.collector import gc_paused
from ..core.hlc import hlc_ms
from ..core.ids import device_id
from ..core.ledger import Replica
from ..core.records import record_id
from ..errors import InvalidRecord, LocalError, StoreDamaged
from .connection import damaged
from .sqlite import DERIVED_TABLES, SqliteStore

__all__ = ["verify_replica"]


def verify_replica(replica: Replica, scratch: Path, *, now_ms: int,
                   replayed: Callable[[int], object] | None = None) -> tuple[list[str], int]:
    """Return (problems found, records checked); raise `StoreDamaged` if SQLite's full
    integrity check fails, before any record is replayed. `replayed(n)` is called as
    records are replayed, with how many since the last call (a progress bar).

    Everything is read from one snapshot of the store, so a node that commits records
    meanwhile cannot make the stored views look different from the replay."""
    store = replica.store
    if not isinstance(store, SqliteStore):
        raise LocalError("`verify` checks a home's SQLite store; this home's store is a "
                         "PostgreSQL database, which `verify` does not check yet")
    with store.snapshot():
        damage = store.integrity_problems()
        if damage:
            more = f" and {len(damage) - 1} more" if len(damage) > 1 else ""
            raise StoreDamaged(damaged(store.path,
                                       f"SQLite's integrity_check: {damage[0]}{more}"))
        return _verify(replica, store, scratch, now_ms=now_ms, replayed=replayed)


def _verify(replica: Replica, store: SqliteStore, scratch: Path, *, now_ms: int,
            replayed: Callable[[int], object] | None) -> tuple[list[str], int]:
    fresh_store = SqliteStore(scratch, replica.network_id)
    fresh = Replica(replica.network, fresh_store)
    clock = max(now_ms, hlc_ms(store.max_hlc()))
    problems: list[str] = []
    checked = 0
    try:
        # One transaction keeps every replayed row alive until it ends: no collector
        # passes over them meanwhile (core/collector.py).
        with gc_paused(), fresh_store.transaction():
            for stored_id, raw in store.iter_raw_in_order():
                checked += 1
                _replay_one(store, fresh, stored_id, raw, clock, problems)
                if replayed is not None and checked % 256 == 0:
                    replayed(256)
        if fresh.pending_count:
            problems.append(f"{fresh.pending_count} stored records lack their causal past")
        _compare_views(store, fresh_store, problems)
    finally:
        fresh_store.close()
    return problems, checked


def _replay_one(store: SqliteStore, fresh: Replica, stored_id: bytes, raw: bytes, clock: int,
                problems: list[str]) -> None:
    name = stored_id.hex()[:16]
    if record_id(raw) != stored_id:
        problems.append(f"record {name}: its bytes do not hash to its id (edited?)")
    try:
        delivery = fresh.receive(raw, now_ms=clock)
    except InvalidRecord as exc:
        problems.append(f"record {name}: does not verify: {exc}")
        return
    for applied in delivery.applied:
        mine, theirs = store.get(applied.record.id), fresh.store.get(applied.record.id)
        if mine is None or theirs is None:
            problems.append(f"record {applied.record.hex_id[:16]}: stored under another id")
        elif mine != theirs:
            problems.append(f"record {applied.record.hex_id[:16]}: stored verdict or chain "
                            f"state differs ({mine.verdict.value} vs {theirs.verdict.value})")


def _compare_views(store: SqliteStore, fresh: SqliteStore, problems: list[str]) -> None:
    mine, theirs = store.balances(), fresh.balances()
    for account in sorted(set(mine) | set(theirs), key=str):
        if mine.get(account, 0) != theirs.get(account, 0):
            problems.append(f"balance of {account}: stored {mine.get(account, 0)}, "
                            f"recomputed {theirs.get(account, 0)}")
    if store.totals() != fresh.totals():
        problems.append(f"totals differ: stored {store.totals()}, recomputed {fresh.totals()}")
    if store.tips() != fresh.tips():
        problems.append("chain tips (and so the state hash) differ from the recomputed ones")
    if store.equivocations() != fresh.equivocations():
        authors = {device_id(e[0]) for e in store.equivocations() + fresh.equivocations()}
        problems.append(f"equivocation evidence differs (authors {sorted(authors)})")
    for table in DERIVED_TABLES:
        if store.table_rows(table) != fresh.table_rows(table):
            problems.append(f"table {table} differs from the one recomputed from the records "
                            "(edited by hand?)")
