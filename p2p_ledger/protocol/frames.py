"""Sync frames: msgpack messages in length-prefixed frames, with hard limits.

On the wire every frame is a 4-byte big-endian length and that many bytes. The two
handshake frames (HELLO) travel in the clear; every later frame body is sealed by
`crypto.Channel`. A message, once unsealed, is a msgpack array whose first element
is the frame type:

    HELLO    [1, version, ephemeral_key: bin 32]
    AUTH     [2, device_key: bin 32, signature: bin 64, admit: bin | nil, role: str]
    SUMMARY  [3, [[author: bin 32, seq: int, id: bin 32], ...]]   (the last or only part)
    RECORDS  [4, [record: bin, ...]]
    SYNCED   [5, sent: int]            (the initial delta is complete)
    PING     [6, token: int]
    PONG     [7, token: int]
    CLOSE    [8, reason: str]
    SUMMARY_PART [9, [[author, seq, id], ...]]  (an early part of a long summary)
    SKETCH   [10, cells: bin]          (a summary as an IBLT of tips, see sketch.py)
    NEED_SUMMARY [11, cells: int]      (the peer's sketch of that size, or its TIPS
                                        when 0, did not decode)
    PACKED   [12, batch: bin]          (records, packed and deflated: see compact.py)
    TIPS     [13, elements: bin]       (a summary as every tip's 20-byte element, sorted)
    STORED   [14, received: int, unstored: int]  (the peer's records processed and
                                        committed so far, and how many of them are not
                                        held durably: see session.py)

Decoding checks types and sizes and raises RemoteProtocolError for anything else:
an unknown type, a wrong field, an oversize frame, an integer the store could not hold
(every integer, a TIPS element's seq included, is below 2**63: `INT_LIMIT`). Nothing
here keeps state except `FrameReader`'s input buffer, which is capped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from ..core.records import INT_LIMIT, MAX_RECORD_BYTES
from ..errors import RemoteProtocolError
from .sketch import CELL_BYTES, ELEMENT_BYTES, MAX_LISTED_TIPS, MAX_SKETCH_CELLS

__all__ = [
    "HANDSHAKE_FRAME_LIMIT", "MAX_FRAME_BYTES", "PROTOCOL_VERSION", "Auth", "Close", "Frame",
    "FrameReader", "FrameType", "Hello", "NeedSummary", "Packed", "Ping", "Pong", "Records",
    "Stored", "Summary", "SummaryPart", "SummarySketch", "SummaryTips", "Synced",
    "decode_message", "encode_message", "frame",
]

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 1 << 20  # a sealed frame, tag included
HANDSHAKE_FRAME_LIMIT = 8 << 10
MAX_SUMMARY_ENTRIES = 10_000       # per SUMMARY or SUMMARY_PART frame (~700 KB)
MAX_SUMMARY_TOTAL = 1_000_000      # authors in one whole summary
MAX_BATCH_RECORDS = 10_000
MAX_REASON_CHARS = 200


class FrameType(enum.IntEnum):
    HELLO = 1
    AUTH = 2
    SUMMARY = 3
    RECORDS = 4
    SYNCED = 5
    PING = 6
    PONG = 7
    CLOSE = 8
    SUMMARY_PART = 9
    SKETCH = 10
    NEED_SUMMARY = 11
    PACKED = 12
    TIPS = 13
    STORED = 14


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    version: int
    ephemeral_key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    device_key: bytes
    signature: bytes
    admit: bytes | None
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    tips: tuple[tuple[bytes, int, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryPart:
    tips: tuple[tuple[bytes, int, bytes], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Records:
    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced:
    sent: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """The receiver's acknowledgement: of the records this session brought it, the
    first `received` are processed and committed to its store; `unstored` of those it
    does not hold durably (refused, or parked waiting for their causal past)."""

    received: int
    unstored: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SummarySketch:
    cells: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryTips:
    elements: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class NeedSummary:
    cells: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Packed:
    batch: bytes  # zlib (deflate) of compact.pack_records


Frame = (Hello | Auth | Summary | SummaryPart | Records | Synced | Ping | Pong | Close
         | SummarySketch | NeedSummary | Packed | SummaryTips | Stored)

_TYPE_OF: dict[type[object], FrameType] = {
    Hello: FrameType.HELLO, Auth: FrameType.AUTH, Summary: FrameType.SUMMARY,
    Records: FrameType.RECORDS, Synced: FrameType.SYNCED, Ping: FrameType.PING,
    Pong: FrameType.PONG, Close: FrameType.CLOSE, SummaryPart: FrameType.SUMMARY_PART,
    SummarySketch: FrameType.SKETCH, NeedSummary: FrameType.NEED_SUMMARY,
    Packed: FrameType.PACKED, SummaryTips: FrameType.TIPS, Stored: FrameType.STORED}


def frame_type(msg: Frame) -> FrameType:
    return _TYPE_OF[type(msg)]


def encode_message(msg: Frame) -> bytes:
    fields: list[object]
    match msg:
        case Hello():
            fields = [msg.version, msg.ephemeral_key]
        case Auth():
            fields = [msg.device_key, msg.signature, msg.admit, msg.role]
        case Summary() | SummaryPart():
            fields = [[list(t) for t in msg.tips]]
        case Records():
            fields = [list(msg.records)]
        case Synced():
            fields = [msg.sent]
        case Ping() | Pong():
            fields = [msg.token]
        case Close():  # printable only: the peer prints it and logs it
            fields = ["".join(c if c.isprintable() else "?"
                              for c in msg.reason[:MAX_REASON_CHARS])]
        case SummarySketch():
            fields = [msg.cells]
        case NeedSummary():
            fields = [msg.cells]
        case Packed():
            fields = [msg.batch]
        case SummaryTips():
            fields = [msg.elements]
        case Stored():
            fields = [msg.received, msg.unstored]
    return bytes(msgpack.packb([int(frame_type(msg)), *fields], use_bin_type=True))


def frame(body: bytes) -> bytes:
    """Prefix a frame body with its length."""
    return len(body).to_bytes(4, "big") + body


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed frame: {what}")


def _bin(v: object, size: int | None = None, limit: int = MAX_RECORD_BYTES) -> bytes:
    if type(v) is not bytes or (size is not None and len(v) != size) or len(v) > limit:
        raise _bad(f"expected {size or 'up to ' + str(limit)} bytes")
    return v


def _int(v: object) -> int:
    if type(v) is not int or not 0 <= v < INT_LIMIT:
        raise _bad("expected an unsigned integer below 2**63")
    return v


def decode_message(body: bytes) -> Frame:
    try:
        msg = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True,
                              max_bin_len=MAX_FRAME_BYTES, max_str_len=4096,
                              max_array_len=MAX_SUMMARY_ENTRIES, max_map_len=0,
                              max_ext_len=0)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise _bad(f"not msgpack ({exc})") from None
    if type(msg) is not list or not msg or type(msg[0]) is not int:
        raise _bad("a frame is an array starting with its type")
    try:
        kind = FrameType(msg[0])
    except ValueError:
        raise RemoteProtocolError(f"unknown frame type {msg[0]}") from None
    args = msg[1:]
    arity = {FrameType.HELLO: 2, FrameType.AUTH: 4, FrameType.STORED: 2}.get(kind, 1)
    if len(args) != arity:
        raise _bad(f"{kind.name} takes {arity} fields, got {len(args)}")
    return _DECODERS[kind](args)


def _hello(a: list[object]) -> Frame:
    return Hello(version=_int(a[0]), ephemeral_key=_bin(a[1], 32))


def _auth(a: list[object]) -> Frame:
    if a[3] not in ("device", "hub", "authority"):
        raise _bad("unknown role")
    return Auth(device_key=_bin(a[0], 32), signature=_bin(a[1], 64),
                admit=None if a[2] is None else _bin(a[2]), role=str(a[3]))


def _tips(a: list[object]) -> tuple[tuple[bytes, int, bytes], ...]:
    tips = a[0]
    if type(tips) is not list:
        raise _bad("summary is a list")
    out = []
    for t in tips:
        if type(t) is not list or len(t) != 3:
            raise _bad("summary entry is [author, seq, id]")
        out.append((_bin(t[0], 32), _int(t[1]), _bin(t[2], 32)))
    return tuple(out)


def _records(a: list[object]) -> Frame:
    recs = a[0]
    if type(recs) is not list or len(recs) > MAX_BATCH_RECORDS:
        raise _bad("records is a bounded list")
    return Records(records=tuple(_bin(r) for r in recs))


def _sketch(a: list[object]) -> Frame:
    cells = _bin(a[0], limit=MAX_SKETCH_CELLS * CELL_BYTES)
    if not cells or len(cells) % (3 * CELL_BYTES):
        raise _bad(f"a sketch is a non-empty multiple of 3 cells of {CELL_BYTES} bytes")
    return SummarySketch(cells=cells)


def _listed(a: list[object]) -> Frame:
    elements = _bin(a[0], limit=MAX_LISTED_TIPS * ELEMENT_BYTES)
    if len(elements) % ELEMENT_BYTES:
        raise _bad(f"listed tips are a multiple of {ELEMENT_BYTES} bytes")
    # An element is author hash (8) | seq (8, big-endian) | id hash (4): the seq's top
    # bit set means 2**63 or more, which no record has.
    if any(b & 0x80 for b in elements[8::ELEMENT_BYTES]):
        raise _bad("a listed tip's seq is not below 2**63")
    return SummaryTips(elements=elements)


def _stored(a: list[object]) -> Frame:
    received, unstored = _int(a[0]), _int(a[1])
    if unstored > received:
        raise _bad("STORED counts more unstored records than received")
    return Stored(received=received, unstored=unstored)


def _close(a: list[object]) -> Frame:
    # Printable: the reason is shown to a user and written to logs, where an escape
    # sequence would drive the terminal and a newline forge a log line.
    if type(a[0]) is not str or len(a[0]) > MAX_REASON_CHARS or not a[0].isprintable():
        raise _bad("close reason is short text, printable characters only")
    return Close(reason=a[0])


_DECODERS: dict[FrameType, Callable[[list[object]], Frame]] = {
    FrameType.HELLO: _hello, FrameType.AUTH: _auth,
    FrameType.SUMMARY: lambda a: Summary(tips=_tips(a)),
    FrameType.SUMMARY_PART: lambda a: SummaryPart(tips=_tips(a)), FrameType.RECORDS: _records,
    FrameType.SYNCED: lambda a: Synced(sent=_int(a[0])),
    FrameType.PING: lambda a: Ping(token=_int(a[0])),
    FrameType.PONG: lambda a: Pong(token=_int(a[0])), FrameType.CLOSE: _close,
    FrameType.SKETCH: _sketch,
    FrameType.NEED_SUMMARY: lambda a: NeedSummary(cells=_int(a[0])),
    FrameType.PACKED: lambda a: Packed(batch=_bin(a[0], limit=MAX_FRAME_BYTES)),
    FrameType.TIPS: _listed, FrameType.STORED: _stored,
}


class FrameReader:
    """Cuts a byte stream into frame bodies. Holds at most one frame's bytes."""

    def __init__(self, limit: int = HANDSHAKE_FRAME_LIMIT) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self.limit + 4 and self._declared() > self.limit:
            raise RemoteProtocolError(f"frame of {self._declared()} bytes exceeds the limit "
                                      f"of {self.limit}")

    def _declared(self) -> int:
        return int.from_bytes(self._buf[:4], "big")

    def next_body(self) -> bytes | None:
        if len(self._buf) < 4:
            return None
        size = self._declared()
        if size > self.limit:
            raise RemoteProtocolError(f"frame of {size} bytes exceeds the limit of {self.limit}")
        if len(self._buf) < 4 + size:
            return None
        body = bytes(self._buf[4:4 + size])
        del self._buf[:4 + size]
        return body

    @property
    def buffered(self) -> int:
        return len(self._buf)
