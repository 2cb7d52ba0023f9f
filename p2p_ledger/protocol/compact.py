"""Packed record batches: the same signed records in about half the bytes.

A record's canonical form repeats what a batch already carries: its author's key
(32 bytes) in every record, `prev` (32 bytes) that is the previous record of the same
batch, refs to records the peer holds or that came earlier in the batch, payee keys
and account names shared by many records, CBOR map keys. A PACKED frame carries a
table of the distinct 32-byte values and texts once, and each record as a msgpack
array of small integers into it (specs/sync-protocol.md section 7b):

    batch  = [table: [bin 32, ...], texts: [str, ...], records: [packed, ...]]
    packed = [kind, author: ix, link, refs: [ref, ...], hlc: int, body: [...], sig: bin 64]
    link   = nil                   prev is this author's previous record in the batch
           | [seq, ref | nil]      otherwise (nil: no prev, seq 1)
    ref    = ix >= 0               table[ix]
           | -1 - i                the id of record i of this batch (i before this one)
           | [author: ix, seq]     the one record the receiver holds at that point of
                                   that author's chain (the sender knows it does)
    hlc    = difference from the previous record's hlc in the batch (the first: itself)

The frame carries `batch` deflated (zlib, RFC 1950) when it is `DEFLATE_FROM` bytes
or more, which takes another 10-14% off a large batch: what remains is mostly
signatures. A smaller batch goes as it is: deflated, a batch of a few records grows
(zlib's header and checksum outweigh what it finds to repeat), at about the CPU cost
of packing it. The receiver tells the two apart by the first byte: a batch is a msgpack
array of three (0x93), which no zlib stream starts with (its first byte's low four
bits are 8). Inflating stops at 16 MiB.

Bodies are positional, in the kind's field order, nil for an absent optional field:
32-byte values are table indexes, account names and short texts are text indexes, an
idempotency key of lowercase hex (even length) travels as its bytes, amounts and other
integers as they are. The receiver rebuilds each record's exact canonical bytes,
checks every field as `parse_record` would, and hands over `SignedRecord`s whose ids
are recomputed from those bytes; signatures are checked by the replica as always.
Anything that does not rebuild is a malformed frame. Pure code, no I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import cbor2
import msgpack

from ..core.records import (
    BODY_TYPES,
    INT_LIMIT,
    MAX_RECORD_BYTES,
    Kind,
    Record,
    SignedRecord,
    record_id,
    signed_raw,
)
from ..errors import InvalidRecord, LocalError, RemoteProtocolError

__all__ = ["DEFLATE_FROM", "MAX_UNPACKED_BYTES", "Held", "Lookup", "pack_records",
           "unpack_records"]

# (author, seq) of a record the peer is known to hold, or None.
Held = Callable[[bytes], tuple[bytes, int] | None]
# The one id held at (author, seq), or None when there is none or more than one.
Lookup = Callable[[bytes, int], bytes | None]

_T = TypeVar("_T")
MAX_UNPACKED_BYTES = 16 << 20  # inflated; a frame's records are far fewer bytes
# Batches this long or longer are deflated; shorter ones go as they are, which makes
# them smaller too (specs/sync-protocol.md section 7b has the figures).
DEFLATE_FROM = 1024
_AS_IS = b"\x93"  # a batch's first byte: a msgpack array of three
_MAX_KIND = max(Kind)
_B32 = frozenset({"device", "state_hash"})
_TEXT = frozenset({"from", "account", "memo", "field", "role"})
_HEX = frozenset("0123456789abcdef")


# How each body field travels, worked out once per kind (the packer and unpacker ran
# these membership tests for every field of every record): in field order, (attr, how).
_PLAIN, _AS_B32, _AS_TEXT, _AS_ACCOUNT, _AS_KEY, _AS_COVERS = range(6)


def _how(attr: str) -> int:
    if attr in _B32:
        return _AS_B32
    if attr in _TEXT:
        return _AS_TEXT
    return {"to": _AS_ACCOUNT, "key": _AS_KEY, "covers": _AS_COVERS}.get(attr, _PLAIN)


_PLANS: dict[Kind, tuple[tuple[str, int], ...]] = {
    kind: tuple((f.attr, _how(f.attr)) for f in body.FIELDS) for kind, body in BODY_TYPES.items()}


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed PACKED frame: {what}")


class _Packer:
    def __init__(self, held: Held | None) -> None:
        self.held = held
        # value -> index, in first-seen order (so the keys are the table itself)
        self.table: dict[bytes, int] = {}
        self.texts: dict[str, int] = {}
        self.batch: dict[bytes, int] = {}   # id -> position in this batch
        self.last: dict[bytes, tuple[bytes, int]] = {}  # author -> (id, seq) in this batch

    def b32(self, v: bytes) -> int:
        return self.table.setdefault(v, len(self.table))

    def text(self, v: str) -> int:
        return self.texts.setdefault(v, len(self.texts))

    def ref(self, rid: bytes) -> object:
        at = self.batch.get(rid)
        if at is not None:
            return -1 - at
        where = self.held(rid) if self.held is not None else None
        if where is not None:
            return [self.b32(where[0]), where[1]]
        return self.b32(rid)

    def body(self, kind: Kind, raw: dict[str, Any]) -> list[object]:
        out: list[object] = []
        table, texts = self.table, self.texts
        for attr, how in _PLANS[kind]:
            v = raw.get(attr)
            if v is None:
                out.append(None)
            elif how == _AS_B32:
                out.append(table.setdefault(v, len(table)))
            elif how == _AS_TEXT:
                out.append(texts.setdefault(v, len(texts)))
            elif how == _AS_ACCOUNT:
                out.append([self.b32(v[0]), self.text(v[1])])
            elif how == _AS_KEY:
                out.append(bytes.fromhex(v) if len(v) % 2 == 0 and set(v) <= _HEX else v)
            elif how == _AS_COVERS:
                out.append([[self.b32(a), s, self.b32(i)] for a, s, i in v])
            else:
                out.append(v)
        return out

    def add(self, raw: bytes, hlc_before: int) -> tuple[list[object], int]:
        # `decoded` and `rebuilt` are globals, looked up at each call: the simulator
        # remembers them (sim/accel.py)
        kind_v, author, seq, prev, refs, hlc, body, sig, rid = _decoded(raw)
        last = self.last.get(author)
        if last is not None and prev == last[0] and seq == last[1] + 1:
            link: object = None
        else:
            link = [seq, None if prev is None else self.ref(prev)]
        packed = [kind_v, self.b32(author), link, [self.ref(r) for r in refs], hlc - hlc_before,
                  self.body(Kind(kind_v), body), sig]
        self.batch[rid] = len(self.batch)
        self.last[author] = (rid, seq)
        return packed, hlc


Decoded = tuple[int, bytes, int, "bytes | None", list[bytes], int, dict[str, Any], bytes, bytes]


def decoded(raw: bytes) -> Decoded:
    """A stored record's fields as the packer reads them: kind, author, seq, prev,
    refs, hlc, body (as in CBOR), signature, and its id. A pure function of `raw`
    (the simulator remembers it, sim/accel.py)."""
    payload, sig = cbor2.loads(raw)
    kind_v, author, seq, prev, refs, hlc, body = cbor2.loads(payload)
    return kind_v, author, seq, prev, refs, hlc, body, sig, record_id(raw)


def rebuilt(kind: Kind, author: bytes, seq: int, prev: bytes | None, refs: tuple[bytes, ...],
            hlc: int, body: dict[str, object], sig: bytes) -> SignedRecord:
    """The signed record with these fields (the body as in CBOR), its canonical bytes
    and id computed; RemoteProtocolError if they do not make a valid record. A pure
    function of its arguments (the simulator remembers it, sim/accel.py)."""
    try:
        record = Record(author=author, seq=seq, prev=prev, refs=refs, hlc=hlc,
                        body=BODY_TYPES[kind].from_cbor(body))
        payload = record.payload()
    except (InvalidRecord, LocalError, ValueError, TypeError, OverflowError) as exc:
        raise _bad(f"a record does not rebuild: {exc}") from None
    raw = signed_raw(payload, sig)
    if len(raw) > MAX_RECORD_BYTES:
        raise _bad("a record larger than the limit")
    return SignedRecord(record=record, signature=sig, payload=payload, raw=raw,
                        id=record_id(raw))


# What the packer and unpacker call, as module variables: compiled by mypyc (the opt-in
# build, specs/build.md section 4), a call of a module function is a direct C call that
# nothing can replace, while a module variable is looked up in the module's dict at each
# call in both builds. The simulator's shared checks (sim/accel.py) replace these two.
Rebuild = Callable[[Kind, bytes, int, "bytes | None", tuple[bytes, ...], int,
                    dict[str, object], bytes], SignedRecord]
_decoded: Callable[[bytes], Decoded] = decoded
_rebuilt: Rebuild = rebuilt


def pack_records(raws: Sequence[bytes], held: Held | None = None) -> bytes:
    """Pack records of our own store (trusted: they were checked when stored), in a
    causal order, into a PACKED batch. `held(id)` names records the peer holds."""
    return _packed(raws, held)


def packed(raws: Sequence[bytes], held: Held | None) -> bytes:
    """`pack_records`: a pure function of `raws` and of what `held` answers (the
    simulator remembers it, sim/accel.py)."""
    p = _Packer(held)
    records = []
    hlc = 0
    for raw in raws:
        packed, hlc = p.add(raw, hlc)
        records.append(packed)
    data: bytes = msgpack.packb([list(p.table), list(p.texts), records], use_bin_type=True)
    return _deflated(data) if len(data) >= DEFLATE_FROM else data


def _at(values: list[_T], v: object, what: str) -> _T:
    if type(v) is not int or not 0 <= v < len(values):
        raise _bad(f"a {what} index out of range")
    return values[v]


def _unhex(v: object) -> object:
    return v.hex() if type(v) is bytes else v


class _Unpacker:
    def __init__(self, table: list[object], texts: list[object], lookup: Lookup) -> None:
        if any(type(t) is not bytes or len(t) != 32 for t in table):
            raise _bad("the table holds 32-byte values")
        if any(type(t) is not str for t in texts):
            raise _bad("the texts are strings")
        self.table: list[bytes] = table  # type: ignore[assignment]
        self.texts: list[str] = texts  # type: ignore[assignment]
        self.lookup = lookup
        self.ids: list[bytes] = []
        self.last: dict[bytes, tuple[bytes, int]] = {}

    def b32(self, v: object) -> bytes:
        return _at(self.table, v, "table")

    def text(self, v: object) -> str:
        return _at(self.texts, v, "text")

    def ref(self, v: object) -> bytes:
        if type(v) is int and v < 0:
            if -1 - v >= len(self.ids):
                raise _bad("a reference to a later record of the batch")
            return self.ids[-1 - v]
        if type(v) is list and len(v) == 2 and type(v[1]) is int:
            if not 1 <= v[1] < INT_LIMIT:
                raise _bad("a reference to a seq out of range (1 to 2**63 - 1)")
            found = self.lookup(self.b32(v[0]), v[1])
            if found is None:
                raise _bad("a reference to a record not held here")
            return found
        return self.b32(v)

    def body(self, kind: Kind, v: object) -> dict[str, object]:
        plan = _PLANS[kind]
        if type(v) is not list or len(v) != len(plan):
            raise _bad(f"a {kind.label} body has {len(plan)} fields")
        out: dict[str, object] = {}
        for (attr, how), x in zip(plan, v, strict=True):
            if x is None:
                continue
            if how == _AS_B32:
                out[attr] = self.b32(x)
            elif how == _AS_TEXT:
                out[attr] = self.text(x)
            elif how == _AS_ACCOUNT:
                if type(x) is not list or len(x) != 2:
                    raise _bad("an account is [device, name]")
                out[attr] = [self.b32(x[0]), self.text(x[1])]
            elif how == _AS_KEY:
                out[attr] = _unhex(x)
            elif how == _AS_COVERS:
                if type(x) is not list or any(type(c) is not list or len(c) != 3 for c in x):
                    raise _bad("covers are [author, seq, id]")
                out[attr] = [[self.b32(a), s, self.b32(i)] for a, s, i in x]
            else:
                out[attr] = x
        return out

    def record(self, v: object, hlc_before: int) -> SignedRecord:
        if type(v) is not list or len(v) != 7:
            raise _bad("a packed record has 7 fields")
        kind_v, author_v, link, refs_v, hlc_d, body_v, sig = v
        if type(kind_v) is not int or not 1 <= kind_v <= _MAX_KIND:
            raise _bad("unknown record kind")
        if type(hlc_d) is not int or type(sig) is not bytes or len(sig) != 64:
            raise _bad("hlc is an integer and the signature 64 bytes")
        if type(refs_v) is not list:
            raise _bad("refs are a list")
        kind = Kind(kind_v)
        author = self.b32(author_v)
        if link is None:
            last = self.last.get(author)
            if last is None:
                raise _bad("no earlier record of this author in the batch")
            prev: bytes | None = last[0]
            seq = last[1] + 1
        elif type(link) is list and len(link) == 2 and type(link[0]) is int:
            seq = link[0]
            prev = None if link[1] is None else self.ref(link[1])
        else:
            raise _bad("a link is nil or [seq, ref]")
        refs = tuple(self.ref(r) for r in refs_v)
        rec = _rebuilt(kind, author, seq, prev, refs, hlc_before + hlc_d,
                              self.body(kind, body_v), sig)
        self.ids.append(rec.id)
        self.last[author] = (rec.id, seq)
        return rec


def batch_of(data: bytes, max_records: int) -> list[list[Any]]:
    """A PACKED frame's batch, inflated if it is deflated, and read as msgpack:
    [table, texts, records], each a list, nothing in them checked yet. A pure function
    of its arguments (the simulator remembers it, sim/accel.py); RemoteProtocolError if
    it is not one."""
    if not data.startswith(_AS_IS):
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(data, MAX_UNPACKED_BYTES)
        except zlib.error as exc:
            raise _bad(f"not deflate ({exc})") from None
        if inflate.unconsumed_tail or not inflate.eof:
            raise _bad(f"truncated, or more than {MAX_UNPACKED_BYTES} bytes inflated")
    try:
        batch = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True,
                                max_bin_len=len(data), max_str_len=4096,
                                max_array_len=max(max_records, 64), max_map_len=0,
                                max_ext_len=0)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise _bad(f"not msgpack ({exc})") from None
    if type(batch) is not list or len(batch) != 3 or not all(type(x) is list for x in batch):
        raise _bad("a batch is [table, texts, records]")
    return batch


def deflated(data: bytes) -> bytes:
    """`data` deflated for a PACKED frame (zlib's default level). A pure function (the
    simulator remembers it, sim/accel.py)."""
    return zlib.compress(data)


# As `_decoded` and `_rebuilt`: module variables the simulator replaces. A record pushed
# to several peers at once is often packed into the same batch for each, which each
# receiver inflates and reads again: in a 30-node convoy, 77% of the bytes deflated
# were a batch deflated before.
_batch_of: Callable[[bytes, int], list[list[Any]]] = batch_of
_deflated: Callable[[bytes], bytes] = deflated


def unpack_records(data: bytes, lookup: Lookup, *, max_records: int) -> list[SignedRecord]:
    """Rebuild the records of a PACKED batch (signatures not checked).
    RemoteProtocolError if anything is malformed or refers to what is not here."""
    return _unpacked(data, lookup, max_records)


def unpacked(data: bytes, lookup: Lookup, max_records: int) -> list[SignedRecord]:
    """`unpack_records`: a pure function of `data`, `max_records` and of what `lookup`
    answers (the simulator remembers it, sim/accel.py)."""
    # The batch's lists are only read from here on (a remembered batch is shared).
    table, texts, records = _batch_of(data, max_records)
    u = _Unpacker(table, texts, lookup)
    out: list[SignedRecord] = []
    hlc = 0
    for v in records:
        rec = u.record(v, hlc)
        hlc = rec.record.hlc
        out.append(rec)
    return out


# As above: whole batches, packed for several peers and read by several receivers alike
# (sim/accel.py remembers them with the answers of `held` and `lookup` they asked for).
_packed: Callable[[Sequence[bytes], Held | None], bytes] = packed
_unpacked: Callable[[bytes, Lookup, int], list[SignedRecord]] = unpacked
