"""Shared record checks: one process, many replicas, each signature checked once.

In a simulation of N nodes every record is parsed and its signature verified N times,
by N replicas, on the very same bytes. Both are pure functions of those bytes (and
the network id), so while `shared_record_checks()` is active the replica's
`parse_record`, `verify_signature` and `start_verifying` remember their successes by
the record's bytes and answer a repeat from memory. Failures are never remembered:
bytes that did not verify are checked again in full each time, and bytes that differ
in any bit are a different key. The ledger rules, stores and sessions run unchanged.

This patches names in `p2p_ledger.core.ledger` for the duration of the block (and
restores them): the simulator owns the process while it runs. It is on by default in
the simulator and can be switched off (`--no-shared-checks`) to measure the full cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..core import ledger
from ..core.records import SignedRecord
from ..errors import InvalidRecord

__all__ = ["CheckCache", "shared_record_checks"]

Failures = list[InvalidRecord | None]


@dataclass(slots=True)
class CheckCache:
    parsed: dict[bytes, SignedRecord]
    verified: set[tuple[bytes, bytes]]  # (record id, network id)
    hits: int = 0
    misses: int = 0


@contextlib.contextmanager
def shared_record_checks(enabled: bool = True) -> Iterator[CheckCache]:
    cache = CheckCache(parsed={}, verified=set())
    if not enabled:
        yield cache
        return
    # The functions the replica calls, looked up at call time: module variables of
    # core/ledger.py, so that this works in the compiled build too (specs/build.md).
    names = vars(ledger)
    parse0: Callable[[bytes], SignedRecord] = names["_parse_record"]
    verify0: Callable[[SignedRecord, bytes], None] = names["_verify_signature"]
    start0: Callable[[Sequence[SignedRecord], bytes], Callable[[], Failures]] = (
        names["start_verifying"])

    def parse_record(raw: bytes) -> SignedRecord:
        rec = cache.parsed.get(raw) if type(raw) is bytes else None
        if rec is None:
            rec = parse0(raw)
            cache.parsed[raw] = rec
        return rec

    def verify_signature(signed: SignedRecord, network_id: bytes) -> None:
        if (signed.id, network_id) in cache.verified:
            cache.hits += 1
            return
        verify0(signed, network_id)
        cache.misses += 1
        cache.verified.add((signed.id, network_id))

    def start_verifying(records: Sequence[SignedRecord], network_id: bytes
                        ) -> Callable[[], Failures]:
        todo = [r for r in records if (r.id, network_id) not in cache.verified]
        cache.hits += len(records) - len(todo)
        cache.misses += len(todo)
        if not todo:
            return lambda: [None] * len(records)
        pending = start0(todo, network_id)

        def result() -> Failures:
            failed: dict[bytes, InvalidRecord] = {}
            for rec, failure in zip(todo, pending(), strict=True):
                if failure is None:
                    cache.verified.add((rec.id, network_id))
                else:
                    failed[rec.id] = failure
            return [failed.get(r.id) for r in records]
        return result

    names.update(_parse_record=parse_record, _verify_signature=verify_signature,
                 start_verifying=start_verifying)
    try:
        yield cache
    finally:
        names.update(_parse_record=parse0, _verify_signature=verify0, start_verifying=start0)
