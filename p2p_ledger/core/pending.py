"""The pending area: verified records that wait for their causal past.

A record is applied only once its `prev` and `refs` are held; until then it waits
here, keyed by id, with the ids it still lacks and the opaque origins (sessions, for
the node) that delivered it. When a record arrives, `release` hands back those whose
last missing dependency it was, for the replica to apply. The area is bounded in
count and in bytes (`pending_cost`), in total and per origin, and evicts oldest
first, so no one source can fill it.

It never judges a record, reads the store or checks a signature: what enters has
been verified and what leaves is judged by the replica (`ledger.py`). Like all of
the core it does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

from ..errors import InvalidRecord, PendingFull
from .records import SignedRecord

__all__ = ["DEFAULT_MAX_PENDING", "DEFAULT_MAX_PENDING_BYTES",
           "DEFAULT_MAX_PENDING_BYTES_PER_ORIGIN", "pending_cost"]

DEFAULT_MAX_PENDING = 10_000
# The pending area's memory (`pending_cost`), in total and per origin (a session, for
# the node). A small record with one missing dependency costs ~1.8 KB by that measure,
# the largest (4 KB, 64 refs, all missing) ~38 KB: per origin that is ~4,600 of the
# one or ~220 of the other, far more than an honest peer leaves waiting.
DEFAULT_MAX_PENDING_BYTES = 64 << 20
DEFAULT_MAX_PENDING_BYTES_PER_ORIGIN = 8 << 20
_ENTRY_COST = 1024
_DEPENDENCY_COST = 384


class _Waiting:
    """One record in the pending area: what it still lacks, what it is taken to cost
    in memory, and the sources (opaque origins) that delivered it."""

    __slots__ = ("cost", "missing", "origins", "rec")

    def __init__(self, rec: SignedRecord, missing: set[bytes], origin: Hashable) -> None:
        self.rec = rec
        self.missing = missing
        self.cost = pending_cost(rec, missing)
        self.origins = {origin}


def pending_cost(rec: SignedRecord, missing: Iterable[bytes]) -> int:
    """What a record waiting in the pending area is taken to hold in memory, in bytes:
    its bytes about three times (raw, signed payload, parsed fields), plus the
    bookkeeping per record and per missing dependency (a set entry, a waiters entry).
    Measured with tracemalloc at ~1,500 bytes for a small record with one missing
    dependency and ~415 more per further one; this errs on the high side."""
    return _ENTRY_COST + 3 * len(rec.raw) + _DEPENDENCY_COST * sum(1 for _ in missing)


class _Pending:
    """Records waiting for their causal past, oldest first, bounded in count and in
    bytes (`pending_cost`): in total, and per origin.

    Each record remembers the origins that delivered it, and counts in full against
    each of them. An origin over its own budget loses its oldest records first; when
    the whole area is over its count or bytes, the origin holding the most bytes loses
    its oldest. A record leaves the area only when no origin holds it any more, so
    one that another source also delivered stays. `forget(origin)` lets go of all of
    an origin's records at once (the node does it when a session closes)."""

    def __init__(self, limit: int, max_bytes: int, max_bytes_per_origin: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.max_bytes_per_origin = max_bytes_per_origin
        self.records: OrderedDict[bytes, _Waiting] = OrderedDict()
        self.waiters: dict[bytes, set[bytes]] = {}
        self.bytes = 0
        self.used: dict[Hashable, int] = {}  # bytes held, per origin
        self._by_origin: dict[Hashable, OrderedDict[bytes, None]] = {}  # oldest first
        # Since this area was made: records parked, released to be judged, and let go
        # unreleased (their origins forgotten, or evicted). For metrics and the
        # simulator's report; they never decide anything.
        self.parked = 0
        self.released = 0
        self.dropped = 0

    def __contains__(self, rid: bytes) -> bool:
        return rid in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, rec: SignedRecord, missing: set[bytes], origin: Hashable
            ) -> list[InvalidRecord]:
        entry = _Waiting(rec, missing, origin)
        self.records[rec.id] = entry
        self.bytes += entry.cost
        for dep in missing:
            self.waiters.setdefault(dep, set()).add(rec.id)
        self._charge(origin, rec.id, entry.cost)
        self.parked += 1
        return self._trim(origin)

    def also_from(self, rid: bytes, origin: Hashable) -> list[InvalidRecord]:
        """`origin` delivered a record that waits here already: it holds it too."""
        entry = self.records[rid]
        if origin in entry.origins:
            return []
        entry.origins.add(origin)
        self._charge(origin, rid, entry.cost)
        return self._trim(origin)

    def forget(self, origin: Hashable) -> int:
        """Let go of everything `origin` holds; returns how many records left the area."""
        dropped = 0
        for rid in list(self._by_origin.get(origin, ())):
            dropped += self._let_go(origin, rid)
        return dropped

    def _charge(self, origin: Hashable, rid: bytes, cost: int) -> None:
        self._by_origin.setdefault(origin, OrderedDict())[rid] = None
        self.used[origin] = self.used.get(origin, 0) + cost

    def _uncharge(self, origin: Hashable, rid: bytes, cost: int) -> None:
        held = self._by_origin[origin]
        del held[rid]
        if held:
            self.used[origin] -= cost
        else:
            del self._by_origin[origin], self.used[origin]

    def _let_go(self, origin: Hashable, rid: bytes) -> int:
        """`origin` no longer holds `rid`; 1 if the record left the area with it."""
        entry = self.records[rid]
        entry.origins.discard(origin)
        self._uncharge(origin, rid, entry.cost)
        if entry.origins:
            return 0
        self._remove(rid)
        self.dropped += 1
        return 1

    def _trim(self, origin: Hashable) -> list[InvalidRecord]:
        evicted: list[InvalidRecord] = []
        while self.used.get(origin, 0) > self.max_bytes_per_origin:
            rid = next(iter(self._by_origin[origin]))
            if self._let_go(origin, rid):
                evicted.append(PendingFull(
                    f"dropped: its source holds more than {self.max_bytes_per_origin} "
                    f"bytes of the pending area", record_id=rid.hex()))
        while len(self.records) > self.limit or self.bytes > self.max_bytes:
            largest = max(self.used, key=self.used.__getitem__)
            rid = next(iter(self._by_origin[largest]))
            if self._let_go(largest, rid):
                evicted.append(PendingFull(
                    f"dropped after waiting too long in a full pending area ({self.limit} "
                    f"records, {self.max_bytes} bytes)", record_id=rid.hex()))
        return evicted

    def _remove(self, rid: bytes) -> None:
        entry = self.records.pop(rid)
        self.bytes -= entry.cost
        for origin in entry.origins:
            self._uncharge(origin, rid, entry.cost)
        for dep in entry.missing:
            ws = self.waiters.get(dep)
            if ws is not None:
                ws.discard(rid)
                if not ws:
                    del self.waiters[dep]

    def release(self, arrived: bytes) -> list[tuple[SignedRecord, frozenset[Hashable]]]:
        """Records whose last missing dependency was `arrived`, each with the origins
        that delivered it (the caller's origin, which delivered `arrived`, need not be
        one of them: a relaying node must not take the record for that origin's)."""
        ready = []
        for rid in sorted(self.waiters.pop(arrived, ())):
            entry = self.records[rid]
            entry.missing.discard(arrived)
            if not entry.missing:
                self._remove(rid)
                ready.append((entry.rec, frozenset(entry.origins)))
        self.released += len(ready)
        return ready
