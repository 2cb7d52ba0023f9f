"""Signed records: the only facts the ledger knows.

Wire form (see specs/records.md for the CDDL and golden vectors):

    signed-record = [payload: bstr, signature: bstr .size 64]
    payload       = [kind, author, seq, prev, refs, hlc, body]

Both are canonical CBOR (RFC 8949 core deterministic encoding). The signature is
Ed25519 by `author` over `SIGNATURE_CONTEXT || network_id || payload`, so a record
signed for one network never verifies in another. A record's id is BLAKE2b-256 of
the whole signed-record bytes.

Decoding is strict: any byte sequence that is not exactly what `encode` would
produce for a valid record (extra fields, unknown kinds, non-canonical integers or
map order, floats, tags, oversize input) raises `InvalidRecord`. This module checks
only what a record says about itself; rules that need other records (chains, funds,
admission) live in `ledger.py`. It does no I/O.
"""

from __future__ import annotations

import concurrent.futures
import enum
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.signing

from ..errors import AmountError, InvalidRecord, LocalError
from ..errors import RecordProblem as P
from .ids import Account, check_account_name
from .money import check_amount

__all__ = [
    "INT_LIMIT", "MAX_COVERS", "MAX_MEMO_CHARS", "MAX_RECORD_BYTES", "MAX_REFS", "PARALLEL_MIN",
    "SIGNATURE_CONTEXT", "Admit", "Body", "Checkpoint", "Failures",
    "Issue", "Kind", "Meta", "Record", "Redeem", "Revoke", "Role", "SignedRecord", "Transfer",
    "canonical_cbor", "open_record", "parse_record", "record_id", "sign_record",
    "signature_failure", "signature_verifies", "signed_raw", "start_verifying", "verify_signature",
    "verify_signatures",
]

MAX_RECORD_BYTES = 4096
MAX_REFS = 64
MAX_KEY_CHARS = 64
MAX_MEMO_CHARS = 140
MAX_META_CHARS = 256
MAX_COVERS = 48
SIGNATURE_CONTEXT = b"p2p-ledger record v1\x00"
# Every integer of a record (seq, hlc, tier, after_seq, expires, a cover's seq) and of
# a sync frame is below this: the store keeps them in SQLite INTEGER columns, which
# are signed 64-bit, and a larger value would fail there (OverflowError) instead of
# being refused here as the peer's fault.
INT_LIMIT = 1 << 63


class Kind(enum.IntEnum):
    """Record kinds, as numbered on the wire."""

    ADMIT = 1
    REVOKE = 2
    ISSUE = 3
    TRANSFER = 4
    REDEEM = 5
    META = 6
    CHECKPOINT = 7

    @property
    def label(self) -> str:
        return self.name.lower()


class Role(enum.Enum):
    DEVICE = "device"
    HUB = "hub"


def canonical_cbor(obj: object) -> bytes:
    return bytes(cbor2.dumps(obj, canonical=True))


def _bstr_head(n: int) -> bytes:
    """The canonical CBOR head of a byte string of length n (major type 2)."""
    if n < 24:
        return bytes([0x40 | n])
    for code, size in ((0x58, 1), (0x59, 2), (0x5A, 4), (0x5B, 8)):
        if n < 1 << (8 * size):
            return bytes([code]) + n.to_bytes(size, "big")
    raise ValueError("a byte string too long for CBOR")


def signed_raw(payload: bytes, signature: bytes) -> bytes:
    """A record's bytes: `canonical_cbor([payload, signature])`, without the encoder."""
    return (b"\x82" + _bstr_head(len(payload)) + payload + _bstr_head(len(signature))
            + signature)


# ---------------------------------------------------------------- field checks
# Each check takes the decoded CBOR value and returns the Python value, or raises
# ValueError with a message; `_Field.encode` does the reverse.

def _bytes32(v: object) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise ValueError("expected 32 bytes")
    return v


def _uint(v: object) -> int:
    if type(v) is not int or not 0 <= v < INT_LIMIT:
        raise ValueError("expected an unsigned integer below 2**63")
    return v


def _text(limit: int) -> Callable[[object], str]:
    def check(v: object) -> str:
        if type(v) is not str or not 0 < len(v) <= limit:
            raise ValueError(f"expected text of 1 to {limit} characters")
        return v
    return check


def _name(v: object) -> str:
    if type(v) is not str:
        raise ValueError("expected an account name")
    try:
        return check_account_name(v)
    except LocalError as exc:
        raise ValueError(str(exc)) from None


def _account(v: object) -> Account:
    if type(v) is not list or len(v) != 2:
        raise ValueError("expected an account [device, name]")
    return Account(device=_bytes32(v[0]), name=_name(v[1]))


def _role(v: object) -> Role:
    try:
        return Role(v)
    except ValueError:
        raise ValueError(f"unknown role {v!r}") from None


class _AmountField(ValueError):
    """Marks an amount failure so that it is reported as BAD_AMOUNT."""


def _amount(v: object) -> int:
    try:
        return check_amount(v)
    except AmountError as exc:
        raise _AmountField(str(exc)) from None


def _covers(v: object) -> tuple[tuple[bytes, int, bytes], ...]:
    if type(v) is not list or not 1 <= len(v) <= MAX_COVERS:
        raise ValueError(f"expected 1 to {MAX_COVERS} covers [author, seq, id]")
    out = []
    for c in v:
        if type(c) is not list or len(c) != 3:
            raise ValueError("a cover is [author, seq, id]")
        out.append((_bytes32(c[0]), _uint(c[1]), _bytes32(c[2])))
    if [c[0] for c in out] != sorted({c[0] for c in out}):
        raise ValueError("covers must name distinct authors in ascending order")
    return tuple(out)


def _encode_covers(covers: tuple[tuple[bytes, int, bytes], ...]) -> list[object]:
    return [list(c) for c in covers]


def _plain(v: object) -> object:
    return v


def _encode_account(a: Account) -> list[object]:
    return [a.device, a.name]


def _encode_role(r: Role) -> str:
    return r.value


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str  # the CBOR map key
    check: Callable[[object], Any]
    optional: bool = False
    encode: Callable[[Any], object] = _plain

    @property
    def py(self) -> str:
        """The dataclass attribute ("from" is a Python keyword)."""
        return "from_" if self.attr == "from" else self.attr


_DEVICE = _Field("device", _bytes32)
_TO = _Field("to", _account, encode=_encode_account)
_FROM = _Field("from", _name)
_AMOUNT = _Field("amount", _amount)
_KEY = _Field("key", _text(MAX_KEY_CHARS))


_Fields = tuple[_Field, ...]


def _declare(body: type[Body], kind: Kind, *fields: _Field) -> None:
    """A body's kind and CBOR fields, set on its class once it is made. Not assigned in
    the class body: mypyc hands a dataclass's class-level assignments to @dataclass as
    instance fields, ClassVar or not (mypyc#740), and the compiled build then fails."""
    body.KIND, body.FIELDS = kind, fields


# ---------------------------------------------------------------- bodies

class Body:
    """Base of record bodies. Subclasses declare KIND and FIELDS, in CBOR key terms."""

    __slots__ = ()
    KIND: ClassVar[Kind]
    FIELDS: ClassVar[_Fields]

    def to_cbor(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in self.FIELDS:
            value = getattr(self, f.py)
            if value is None and f.optional:
                continue
            out[f.attr] = f.encode(value)
        return out

    @classmethod
    def from_cbor(cls, raw: object) -> Body:
        if type(raw) is not dict:
            raise InvalidRecord(P.MALFORMED, f"{cls.KIND.label} body is not a map")
        spec = _SPECS[cls]
        if not spec.known.issuperset(raw):
            unknown = [k for k in raw if k not in spec.known]
            raise InvalidRecord(P.UNKNOWN_FIELD,
                                f"{cls.KIND.label} body has unknown field(s) {unknown!r}")
        values: dict[str, object] = {}
        for attr, key, check, optional in spec.fields:
            if attr not in raw:
                if not optional:
                    raise InvalidRecord(P.MALFORMED,
                                        f"{cls.KIND.label} body lacks field {attr!r}")
                values[key] = None
                continue
            try:
                values[key] = check(raw[attr])
            except _AmountField as bad_amount:  # a name of its own: compiled, one type each
                raise InvalidRecord(P.BAD_AMOUNT, str(bad_amount)) from None
            except (ValueError, LocalError) as exc:
                raise InvalidRecord(P.BAD_FIELD, f"{cls.KIND.label}.{attr}: {exc}") from None
        return cls(**values)

    def validate(self) -> None:
        """Check field values when building a body locally (LocalError on misuse)."""
        try:
            self.from_cbor(self.to_cbor())
        except InvalidRecord as exc:
            raise LocalError(str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Admit(Body):
    """The network authority certifies a device (or hub) to take part."""

    device: bytes
    role: Role = Role.DEVICE
    tier: int = 0
    offline_limit: int | None = None
    expires: int | None = None


_declare(Admit, Kind.ADMIT,
         _DEVICE, _Field("role", _role, encode=_encode_role), _Field("tier", _uint),
         _Field("offline_limit", _amount, optional=True),
         _Field("expires", _uint, optional=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class Revoke(Body):
    """The network authority withdraws a device's certificate after `after_seq`."""

    device: bytes
    after_seq: int


_declare(Revoke, Kind.REVOKE, _DEVICE, _Field("after_seq", _uint))


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue(Body):
    """The network authority puts new money into an account (cash-in)."""

    to: Account
    amount: int
    key: str


_declare(Issue, Kind.ISSUE, _TO, _AMOUNT, _KEY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Body):
    """The author pays from its own account `from_` to any account `to`."""

    from_: str
    to: Account
    amount: int
    key: str
    memo: str | None = None


_declare(Transfer, Kind.TRANSFER,
         _FROM, _TO, _AMOUNT, _KEY, _Field("memo", _text(MAX_MEMO_CHARS), optional=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class Redeem(Body):
    """The author takes money out of its own account and out of the network (cash-out)."""

    from_: str
    amount: int
    key: str


_declare(Redeem, Kind.REDEEM, _FROM, _AMOUNT, _KEY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta(Body):
    """Last-writer-wins metadata of one of the author's accounts (a display name, say)."""

    account: str
    field: str
    value: str


_declare(Meta, Kind.META,
         _Field("account", _name), _Field("field", _text(32)),
         _Field("value", _text(MAX_META_CHARS)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint(Body):
    """A settlement node (the authority or a hub) states that it has seen each listed
    author's chain up to (seq, id), and its state hash when it signed. Devices ref it
    to settle: what it covers no longer counts against their offline limit."""

    covers: tuple[tuple[bytes, int, bytes], ...]
    state_hash: bytes


_declare(Checkpoint, Kind.CHECKPOINT,
         _Field("covers", _covers, encode=_encode_covers),
         _Field("state_hash", _bytes32))


BODY_TYPES: dict[Kind, type[Body]] = {
    b.KIND: b for b in (Admit, Revoke, Issue, Transfer, Redeem, Meta, Checkpoint)}
_KINDS: dict[int, Kind] = {int(k): k for k in Kind}


@dataclass(frozen=True, slots=True)
class _BodySpec:
    """A body type's fields unpacked once, for `from_cbor` and the canonical check:
    the known CBOR keys, per field (CBOR key, attribute, check, optional), and every
    key order canonical CBOR allows (one per choice of optional fields present)."""

    known: frozenset[str]
    fields: tuple[tuple[str, str, Callable[[object], Any], bool], ...]
    canonical_orders: frozenset[tuple[str, ...]]

    @classmethod
    def of(cls, body_type: type[Body]) -> _BodySpec:
        fields = body_type.FIELDS
        optional = [f.attr for f in fields if f.optional]
        orders = set()
        for mask in range(1 << len(optional)):
            left_out = {a for i, a in enumerate(optional) if mask >> i & 1}
            keys = [f.attr.encode() for f in fields if f.attr not in left_out]
            keys.sort(key=lambda k: (len(k), k))  # RFC 8949 core deterministic order
            orders.add(tuple(k.decode() for k in keys))
        return cls(known=frozenset(f.attr for f in fields),
                   fields=tuple((f.attr, f.py, f.check, f.optional) for f in fields),
                   canonical_orders=frozenset(orders))


_SPECS: dict[type[Body], _BodySpec] = {b: _BodySpec.of(b) for b in BODY_TYPES.values()}

# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """An unsigned record: what the author states."""

    author: bytes
    seq: int
    prev: bytes | None
    refs: tuple[bytes, ...]
    hlc: int
    body: Body

    def __post_init__(self) -> None:
        problem = _record_shape_problem(self)
        if problem:
            raise LocalError(problem)

    @property
    def kind(self) -> Kind:
        return self.body.KIND

    def payload(self) -> bytes:
        return canonical_cbor([int(self.kind), self.author, self.seq, self.prev,
                               list(self.refs), self.hlc, self.body.to_cbor()])


def _record_shape_problem(r: Record) -> str | None:
    if len(r.author) != 32:
        return "author must be a 32-byte key"
    if not 1 <= r.seq < INT_LIMIT:
        return "seq must be 1 or more, below 2**63"
    if (r.seq == 1) != (r.prev is None):
        return "prev must be absent exactly when seq is 1"
    if r.prev is not None and len(r.prev) != 32:
        return "prev must be a 32-byte id"
    refs = r.refs
    if len(refs) > MAX_REFS:
        return f"at most {MAX_REFS} refs"
    # Strictly ascending is the same as distinct and sorted.
    if any(len(x) != 32 for x in refs) or any(a >= b for a, b in pairwise(refs)):
        return "refs must be distinct 32-byte ids in ascending order"
    if r.prev is not None and r.prev in refs:
        return "prev must not be repeated in refs"
    if not 0 <= r.hlc < INT_LIMIT:
        return "hlc out of range (below 2**63)"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedRecord:
    """A record with its signature, exact bytes and id. Build with `sign_record`,
    `parse_record` or `open_record`; the fields always agree with each other."""

    record: Record
    signature: bytes
    payload: bytes
    raw: bytes
    id: bytes

    @property
    def hex_id(self) -> str:
        return self.id.hex()


def record_id(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=32).digest()


def _signed_message(network_id: bytes, payload: bytes) -> bytes:
    return SIGNATURE_CONTEXT + network_id + payload


def sign_record(record: Record, key: nacl.signing.SigningKey, network_id: bytes) -> SignedRecord:
    """Sign `record` as its author. The key must be the author's."""
    if bytes(key.verify_key) != record.author:
        raise LocalError("the signing key is not the record's author")
    record.body.validate()
    payload = record.payload()
    if len(payload) + 80 > MAX_RECORD_BYTES:
        raise LocalError("record too large")
    sig = key.sign(_signed_message(network_id, payload)).signature
    raw = signed_raw(payload, sig)
    return SignedRecord(record=record, signature=sig, payload=payload, raw=raw,
                        id=record_id(raw))


def _loads(data: bytes, what: str) -> object:
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidRecord(P.MALFORMED, f"{what} is not valid CBOR: {exc}") from None


def parse_record(raw: object) -> SignedRecord:
    """Decode and check a signed record's form, without checking the signature.
    Anything but `bytes` is malformed (typed `object` so that the compiled build
    refuses it the same way, not with a TypeError at the call)."""
    if type(raw) is not bytes:
        raise InvalidRecord(P.MALFORMED, "a record is a byte string")
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidRecord(P.OVERSIZE, f"{len(raw)} bytes, limit {MAX_RECORD_BYTES}")
    rid = record_id(raw)
    try:
        return _parse(raw, rid)
    except InvalidRecord as exc:
        raise exc.with_record_id(rid.hex()) from None


def _envelope_head(payload_len: int) -> bytes:
    """Canonical bytes before the payload in [payload, sig]: array(2), bstr header.
    After the payload come 0x58 0x40 and the 64 signature bytes (66 bytes)."""
    if payload_len < 24:
        return bytes([0x82, 0x40 + payload_len])
    if payload_len < 256:
        return bytes([0x82, 0x58, payload_len])
    return bytes([0x82, 0x59]) + payload_len.to_bytes(2, "big")


def _parse(raw: bytes, rid: bytes) -> SignedRecord:
    outer = _loads(raw, "record")
    if type(outer) is not list or len(outer) != 2:
        raise InvalidRecord(P.MALFORMED, "a signed record is [payload, signature]")
    payload, sig = outer
    if type(payload) is not bytes or type(sig) is not bytes or len(sig) != 64:
        raise InvalidRecord(P.MALFORMED, "payload must be bytes and the signature 64 bytes")
    head = _envelope_head(len(payload))
    if len(raw) != len(head) + len(payload) + 66 or not raw.startswith(head):
        raise InvalidRecord(P.NON_CANONICAL, "signed record is not canonical CBOR")
    inner = _loads(payload, "payload")
    if type(inner) is not list or len(inner) != 7:
        raise InvalidRecord(P.MALFORMED, "payload is [kind, author, seq, prev, refs, hlc, body]")
    kind_v, author, seq, prev, refs, hlc, body_v = inner
    if type(kind_v) is not int:
        raise InvalidRecord(P.MALFORMED, "kind must be an integer")
    kind = _KINDS.get(kind_v)
    if kind is None:
        raise InvalidRecord(P.UNKNOWN_KIND, f"kind {kind_v}")
    try:
        _bytes32(author)
        _uint(seq)
        if prev is not None:
            _bytes32(prev)
        _uint(hlc)
    except ValueError as exc:
        raise InvalidRecord(P.BAD_FIELD, str(exc)) from None
    if type(refs) is not list or any(type(x) is not bytes for x in refs):
        raise InvalidRecord(P.BAD_FIELD, "refs must be a list of ids")
    body_type = BODY_TYPES[kind]
    body = body_type.from_cbor(body_v)
    try:
        record = Record(author=author, seq=seq, prev=prev, refs=tuple(refs), hlc=hlc,
                        body=body)
    except LocalError as exc:
        raise InvalidRecord(P.BAD_FIELD, str(exc)) from None
    # Every field passed its check, so the decoded structure is exactly what
    # `record.payload()` would encode. cbor2 always writes shortest integers and
    # definite lengths and keeps a map's key order, so re-encoding the decoded value
    # reproduces the input iff the input was canonical - given that the one map (the
    # body) has its keys in canonical order, which is checked first.
    if (tuple(body_v) not in _SPECS[body_type].canonical_orders
            or cbor2.dumps(inner) != payload):
        raise InvalidRecord(P.NON_CANONICAL, "payload is not canonical CBOR")
    return SignedRecord(record=record, signature=sig, payload=payload, raw=raw, id=rid)


def signature_verifies(signature: bytes, payload: bytes, author: bytes,
                       network_id: bytes) -> bool:
    """Whether `author` signed `payload` for this network."""
    try:
        nacl.bindings.crypto_sign_open(signature + _signed_message(network_id, payload), author)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.RuntimeError,
            nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        return False
    return True


def signature_failure(signed: SignedRecord) -> InvalidRecord:
    return InvalidRecord(P.BAD_SIGNATURE, "signature does not verify", record_id=signed.hex_id)


def verify_signature(signed: SignedRecord, network_id: bytes) -> None:
    """Raise InvalidRecord(BAD_SIGNATURE) unless the author signed this payload here."""
    if not signature_verifies(signed.signature, signed.payload, signed.record.author,
                              network_id):
        raise signature_failure(signed)


_pool: concurrent.futures.ThreadPoolExecutor | None = None
PARALLEL_MIN = 64  # fewer signatures than this are checked at once, on the caller's thread
Failures = list[InvalidRecord | None]


def _check_all(records: Sequence[SignedRecord], network_id: bytes) -> Failures:
    return [None if signature_verifies(r.signature, r.payload, r.record.author, network_id)
            else signature_failure(r) for r in records]


def start_verifying(records: Sequence[SignedRecord], network_id: bytes
                    ) -> Callable[[], Failures]:
    """Begin checking many signatures on a worker thread (libsodium releases the GIL,
    so the caller can do other work meanwhile); call the result to get, per record,
    None or the failure. Small batches are checked at once on this thread."""
    global _pool
    if len(records) < PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        done = _check_all(records, network_id)
        return lambda: done
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count(),
                                                      thread_name_prefix="verify")
    future = _pool.submit(_check_all, list(records), network_id)
    return future.result


def verify_signatures(records: Sequence[SignedRecord], network_id: bytes) -> Failures:
    """Per record, None or the signature failure."""
    return start_verifying(records, network_id)()


def open_record(raw: bytes, network_id: bytes) -> SignedRecord:
    """Parse and verify a record received from anywhere."""
    signed = parse_record(raw)
    verify_signature(signed, network_id)
    return signed

