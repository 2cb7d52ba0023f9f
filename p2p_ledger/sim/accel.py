"""Shared record work: one process, many replicas, each record checked and rebuilt once.

In a simulation of N nodes every record is parsed and its signature verified N times,
by N replicas, on the very same bytes. Both are pure functions of those bytes (and
the network id), so while `shared_record_checks()` is active the replica's
`parse_record`, `verify_signature` and `start_verifying` remember their successes by
the record's bytes and answer a repeat from memory. Failures are never remembered:
bytes that did not verify are checked again in full each time, and bytes that differ
in any bit are a different key. The ledger rules, stores and sessions run unchanged.

The same holds for the packed frames that carry records between sessions
(protocol/compact.py): the sender reads each record's fields out of its bytes
(`decoded`), the receiver rebuilds the record's canonical bytes and id from the fields
(`rebuilt`), once per session and record. Both are pure functions; their results are
remembered by their whole input (the record's bytes; every field and the signature),
and an input that fails is never remembered. Frames, sealing and sessions run as always.

Whole batches repeat too: a node pushing new records to several peers at once often
packs the same batch for each (in a 30-node convoy, 77% of the bytes deflated had been
deflated before), and each receiver inflates and reads the same bytes. Deflating a
batch (`deflated`) and inflating and reading one (`batch_of`) are pure functions of
their input, remembered for the last 1,024 inputs of each (a batch is pushed to the
peers within moments); reading one that fails is never remembered. The read batch's
lists are shared by every receiver of those bytes, which only read them.

This patches names in `p2p_ledger.core.ledger` and `p2p_ledger.protocol.compact` for
the duration of the block (and restores them): the simulator owns the process while it
runs. The names are module variables there (`_parse_record`, `_verify_signature`,
`_decoded`, `_rebuilt`), which the opt-in compiled build also looks up at each call
(specs/build.md section 4). A replica checks a
batch's signatures with its own `verifier`, bound when it is made, not through those
names: the simulator gives its replicas `CheckCache.verifier`. It is on by default in
the simulator and can be switched off (`--no-shared-checks`) to measure the full cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from ..core import ledger, records
from ..core.checking import Verifier
from ..core.records import Kind, SignedRecord
from ..errors import InvalidRecord
from ..protocol import compact

__all__ = ["CheckCache", "shared_record_checks"]

Failures = list[InvalidRecord | None]
Asked = list[tuple[Any, Any]]  # (question, answer): what a packer or unpacker asked
_RECENT = 1024  # batches deflated, and read, that are remembered
_T = TypeVar("_T")


@dataclass(slots=True)
class CheckCache:
    parsed: dict[bytes, SignedRecord]
    # network id -> ids of the records whose signature checked out in that network (a
    # set per network: no (id, network) tuple built and hashed per record checked)
    verified: dict[bytes, set[bytes]]
    decoded: dict[bytes, compact.Decoded] = field(default_factory=dict)  # by raw
    rebuilt: dict[tuple[object, ...], SignedRecord] = field(default_factory=dict)
    deflated: dict[bytes, bytes] = field(default_factory=dict)  # the last _RECENT
    batches: dict[tuple[bytes, int], list[list[Any]]] = field(default_factory=dict)
    # whole batches packed and unpacked, with the questions they asked and the answers
    packs: dict[tuple[tuple[bytes, ...], bool], tuple[Asked, bytes]] = field(
        default_factory=dict)
    unpacks: dict[tuple[bytes, int], tuple[Asked, list[SignedRecord]]] = field(
        default_factory=dict)
    batch_hits: int = 0  # packs and unpacks answered from memory
    hits: int = 0
    misses: int = 0
    # What the simulated replicas check batches of signatures with (their `verifier`):
    # the remembering one while the block is active, else the replica's default.
    verifier: Verifier = records.start_verifying


@contextlib.contextmanager
def shared_record_checks(enabled: bool = True) -> Iterator[CheckCache]:
    cache = CheckCache(parsed={}, verified={})
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
        verified = _verified_in(cache, network_id)
        if signed.id in verified:
            cache.hits += 1
            return
        verify0(signed, network_id)
        cache.misses += 1
        verified.add(signed.id)

    def start_verifying(records: Sequence[SignedRecord], network_id: bytes
                        ) -> Callable[[], Failures]:
        verified = _verified_in(cache, network_id)
        todo = [r for r in records if r.id not in verified]
        cache.hits += len(records) - len(todo)
        cache.misses += len(todo)
        if not todo:
            return lambda: [None] * len(records)
        pending = start0(todo, network_id)

        def result() -> Failures:
            failed: dict[bytes, InvalidRecord] = {}
            for rec, failure in zip(todo, pending(), strict=True):
                if failure is None:
                    verified.add(rec.id)
                else:
                    failed[rec.id] = failure
            return [failed.get(r.id) for r in records]
        return result

    packing = vars(compact)
    decoded0: Callable[[bytes], compact.Decoded] = packing["_decoded"]
    rebuilt0: Callable[..., SignedRecord] = packing["_rebuilt"]

    def decoded(raw: bytes) -> compact.Decoded:
        fields = cache.decoded.get(raw)
        if fields is None:
            fields = cache.decoded[raw] = decoded0(raw)
        return fields

    def rebuilt(kind: Kind, author: bytes, seq: int, prev: bytes | None,
                refs: tuple[bytes, ...], hlc: int, body: dict[str, object],
                sig: bytes) -> SignedRecord:
        try:  # the body as msgpack: tells bytes from text, True from 1, 1 from 1.0
            key = (kind, author, seq, prev, refs, hlc, sig,
                   msgpack.packb(body, use_bin_type=True))
        except (TypeError, ValueError, OverflowError):
            return rebuilt0(kind, author, seq, prev, refs, hlc, body, sig)
        rec = cache.rebuilt.get(key)
        if rec is None:
            rec = cache.rebuilt[key] = rebuilt0(kind, author, seq, prev, refs, hlc, body, sig)
        return rec

    deflated0: Callable[[bytes], bytes] = packing["_deflated"]
    batch_of0: Callable[[bytes, int], list[list[Any]]] = packing["_batch_of"]

    def deflated(data: bytes) -> bytes:
        out = cache.deflated.get(data)
        if out is None:
            out = deflated0(data)
            _remember(cache.deflated, data, out)
        return out

    def batch_of(data: bytes, max_records: int) -> list[list[Any]]:
        key = (data, max_records)
        batch = cache.batches.get(key)
        if batch is None:
            batch = batch_of0(data, max_records)  # raises for a bad one: not remembered
            _remember(cache.batches, key, batch)
        return batch

    packed0: Callable[[Sequence[bytes], compact.Held | None], bytes] = packing["_packed"]
    unpacked0: Callable[[bytes, compact.Lookup, int], list[SignedRecord]] = (
        packing["_unpacked"])

    def packed(raws: Sequence[bytes], held: compact.Held | None) -> bytes:
        return _answered(cache, cache.packs, (tuple(raws), held is None), held or _unasked,
                         lambda asking: packed0(raws, None if held is None else asking))

    def unpacked(data: bytes, lookup: compact.Lookup, max_records: int) -> list[SignedRecord]:
        out: list[SignedRecord] = _answered(
            cache, cache.unpacks, (data, max_records), lambda where: lookup(*where),
            lambda asking: unpacked0(data, lambda author, seq: asking((author, seq)),
                                     max_records))
        return list(out)  # the remembered list is shared: each receiver gets its own

    names.update(_parse_record=parse_record, _verify_signature=verify_signature,
                 start_verifying=start_verifying)
    packing.update(_decoded=decoded, _rebuilt=rebuilt, _deflated=deflated,
                   _batch_of=batch_of, _packed=packed, _unpacked=unpacked)
    cache.verifier = start_verifying
    try:
        yield cache
    finally:
        names.update(_parse_record=parse0, _verify_signature=verify0, start_verifying=start0)
        packing.update(_decoded=decoded0, _rebuilt=rebuilt0, _deflated=deflated0,
                       _batch_of=batch_of0, _packed=packed0, _unpacked=unpacked0)


def _verified_in(cache: CheckCache, network_id: bytes) -> set[bytes]:
    """The ids verified in a network (made once: `setdefault` would build a set per call)."""
    verified = cache.verified.get(network_id)
    if verified is None:
        verified = cache.verified[network_id] = set()
    return verified


def _answered(cache: CheckCache, memory: dict[Any, tuple[Asked, _T]], key: Any,
              ask: Callable[[Any], Any], build: Callable[[Callable[[Any], Any]], _T]) -> _T:
    """`build(asking)`, a pure function of its key and of what it asks through `asking`
    (which `ask` answers), remembered with those questions and answers: reused only
    when `ask` answers every one of them as it did then - a packer or unpacker asking in
    that order would ask the same and build the same. A build that raises is not
    remembered."""
    known = memory.get(key)
    if known is not None and all(ask(q) == answer for q, answer in known[0]):
        cache.batch_hits += 1
        return known[1]
    asked: Asked = []

    def asking(question: Any) -> Any:
        answer = ask(question)
        asked.append((question, answer))
        return answer
    out = build(asking)
    _remember(memory, key, (asked, out))
    return out


def _unasked(question: Any) -> Any:
    raise AssertionError("a pack without `held` asks nothing")


def _remember(memory: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memory) >= _RECENT:
        del memory[next(iter(memory))]
    memory[key] = value
