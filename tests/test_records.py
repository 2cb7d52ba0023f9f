"""Signed records: round trips for every kind, and strict rejection of everything else.

Bad records are built by hand with cbor2 and, where the point is the structure, signed
properly by the author over SIGNATURE_CONTEXT + network_id + payload, so that the only
thing wrong with them is what the test names.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import cbor2
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_ledger.core.hlc import pack_hlc
from p2p_ledger.core.ids import Account
from p2p_ledger.core.money import MAX_AMOUNT_MINOR
from p2p_ledger.core.records import (
    MAX_MEMO_CHARS,
    MAX_RECORD_BYTES,
    MAX_REFS,
    SIGNATURE_CONTEXT,
    Admit,
    Body,
    Issue,
    Kind,
    Meta,
    Record,
    Redeem,
    Revoke,
    Role,
    SignedRecord,
    Transfer,
    canonical_cbor,
    open_record,
    parse_record,
    record_id,
    sign_record,
    verify_signature,
)
from p2p_ledger.core.records import (
    signed_raw as encode_signed,
)
from p2p_ledger.errors import InvalidRecord, LocalError, RecordProblem

from .helpers import T0, key, make_world

WORLD = make_world(seed="records")
NID = WORLD.network.network_id
OTHER_NID = make_world(seed="records-elsewhere").network.network_id
AUTHOR_KEY = key("records/alice")
AUTHOR = bytes(AUTHOR_KEY.verify_key)
STRANGER_KEY = key("records/mallory")
PAYEE = bytes(key("records/bob").verify_key)
PREV = bytes(range(32))
REF_A = b"\x0a" * 32
REF_B = b"\x0b" * 32
HLC = pack_hlc(T0, 3)
DROP = object()  # marks a field to leave out


# ------------------------------------------------------------------ hand builders

def enc(obj: object) -> bytes:
    return canonical_cbor(obj)


def signature(payload: bytes, k: nacl.signing.SigningKey = AUTHOR_KEY,
              network_id: bytes = NID) -> bytes:
    return bytes(k.sign(SIGNATURE_CONTEXT + network_id + payload).signature)


def signed_raw(payload: bytes, k: nacl.signing.SigningKey = AUTHOR_KEY) -> bytes:
    """A canonical [payload, sig] with a good signature by `k` over `payload`."""
    return enc([payload, signature(payload, k)])


def transfer_body(**over: object) -> dict[object, object]:
    body: dict[object, object] = {"from": "main", "to": [PAYEE, "main"], "amount": 1250,
                                  "key": "pay-1"}
    for name, value in over.items():
        name = "from" if name == "from_" else name
        if value is DROP:
            del body[name]
        else:
            body[name] = value
    return body


def payload_items(**over: object) -> list[object]:
    """[kind, author, seq, prev, refs, hlc, body] of a good seq-2 transfer, with overrides."""
    items: dict[str, object] = {"kind": int(Kind.TRANSFER), "author": AUTHOR, "seq": 2,
                                "prev": PREV, "refs": [REF_A, REF_B], "hlc": HLC,
                                "body": transfer_body()}
    items.update(over)
    return list(items.values())


def payload_with(index: int, encoded: bytes, **over: object) -> bytes:
    """The good payload (with `over`) with item `index` replaced by hand-encoded bytes."""
    parts = [enc(x) for x in payload_items(**over)]
    parts[index] = encoded
    return b"\x87" + b"".join(parts)


def problem(raw: bytes) -> RecordProblem:
    """The problem `open_record` reports; also checks the record id is attached."""
    with pytest.raises(InvalidRecord) as info:
        open_record(raw, NID)
    exc = info.value
    if exc.problem is not RecordProblem.OVERSIZE:
        assert exc.record_id == record_id(raw).hex()
    return exc.problem


def test_hand_built_baseline_is_a_valid_record() -> None:
    """Every negative test below changes one thing in this record."""
    payload = enc(payload_items())
    assert payload_with(3, enc(PREV)) == payload
    signed = open_record(signed_raw(payload), NID)
    r = signed.record
    assert (r.kind, r.author, r.seq, r.prev, r.refs, r.hlc) == (
        Kind.TRANSFER, AUTHOR, 2, PREV, (REF_A, REF_B), HLC)
    assert r.body == Transfer(from_="main", to=Account(device=PAYEE), amount=1250, key="pay-1")


# ------------------------------------------------------------------ round trips

ACC = Account(device=PAYEE, name="till.2")
BODIES: list[Body] = [
    Admit(device=PAYEE),
    Admit(device=PAYEE, role=Role.HUB, tier=3, offline_limit=500_00, expires=T0 + 86_400_000),
    Revoke(device=PAYEE, after_seq=7),
    Revoke(device=PAYEE, after_seq=0),
    Issue(to=ACC, amount=MAX_AMOUNT_MINOR, key="cash-in-1"),
    Transfer(from_="main", to=ACC, amount=1, key="k"),
    Transfer(from_="savings", to=ACC, amount=12_50, key="\u0645\u0641\u062a\u0627\u062d",
             memo="fuel \u26fd " + "x" * (MAX_MEMO_CHARS - 7)),
    Redeem(from_="main", amount=99, key="cash-out"),
    Meta(account="main", field="display_name", value="Fuel station \u0661\u0662"),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("seq", [1, 2, 2**63 - 1])
def test_sign_open_round_trip(body: Body, seq: int) -> None:
    record = Record(author=AUTHOR, seq=seq, prev=None if seq == 1 else PREV,
                    refs=(REF_A, REF_B) if seq != 2 else (), hlc=HLC, body=body)
    signed = sign_record(record, AUTHOR_KEY, NID)
    assert len(signed.raw) <= MAX_RECORD_BYTES
    assert signed.id == record_id(signed.raw)
    assert record.kind is body.KIND
    opened = open_record(signed.raw, NID)
    assert opened == signed
    assert opened.record == record
    assert opened.record.body == body
    assert parse_record(signed.raw) == signed
    # Ed25519 is deterministic and the encoding canonical: signing again is byte-identical.
    assert sign_record(record, AUTHOR_KEY, NID).raw == signed.raw
    # The wire form is exactly [payload, sig] and the payload the 7 documented items.
    outer = cbor2.loads(signed.raw)
    assert outer == [signed.payload, signed.signature]
    inner = cbor2.loads(signed.payload)
    assert inner[:6] == [int(body.KIND), AUTHOR, seq, record.prev, list(record.refs), HLC]
    assert inner[6] == body.to_cbor()


def test_optional_fields_are_left_out_not_null() -> None:
    assert Admit(device=PAYEE).to_cbor() == {"device": PAYEE, "role": "device", "tier": 0}
    assert "memo" not in Transfer(from_="main", to=ACC, amount=1, key="k").to_cbor()


def test_transfer_body_uses_from_on_the_wire() -> None:
    body = Transfer(from_="main", to=ACC, amount=5, key="k").to_cbor()
    assert body == {"from": "main", "to": [PAYEE, "till.2"], "amount": 5, "key": "k"}


def test_distinct_records_have_distinct_ids() -> None:
    a = sign_record(Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC,
                           body=BODIES[0]), AUTHOR_KEY, NID)
    b = sign_record(Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC + 1,
                           body=BODIES[0]), AUTHOR_KEY, NID)
    c = sign_record(Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC,
                           body=BODIES[0]), AUTHOR_KEY, OTHER_NID)
    assert len({a.id, b.id, c.id}) == 3


# ------------------------------------------------------------------ signing refusals

def test_sign_record_refuses_a_key_that_is_not_the_author() -> None:
    record = Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC, body=BODIES[0])
    with pytest.raises(LocalError, match="not the record's author"):
        sign_record(record, STRANGER_KEY, NID)


@pytest.mark.parametrize(
    "body",
    [Transfer(from_="main", to=ACC, amount=0, key="k"),
     Transfer(from_="main", to=ACC, amount=-5, key="k"),
     Redeem(from_="main", amount=MAX_AMOUNT_MINOR + 1, key="k"),
     Transfer(from_="Main", to=ACC, amount=5, key="k"),
     Transfer(from_="main", to=ACC, amount=5, key=""),
     Transfer(from_="main", to=ACC, amount=5, key="k", memo="x" * (MAX_MEMO_CHARS + 1)),
     Meta(account="main", field="", value="v")],
    ids=lambda b: repr(b)[:40],
)
def test_sign_record_refuses_bad_bodies(body: Body) -> None:
    record = Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC, body=body)
    with pytest.raises(LocalError):
        sign_record(record, AUTHOR_KEY, NID)


@pytest.mark.parametrize(
    "kwargs",
    [dict(author=AUTHOR[:31]), dict(seq=0, prev=None), dict(seq=1, prev=PREV),
     dict(seq=2, prev=None), dict(prev=PREV[:31]), dict(refs=(REF_B, REF_A)),
     dict(refs=(REF_A, REF_A)), dict(refs=(PREV,)), dict(refs=(REF_A[:31],)),
     dict(refs=tuple(bytes([i]) * 32 for i in range(MAX_REFS + 1))), dict(hlc=-1),
     dict(hlc=2**64), dict(hlc=2**63), dict(seq=2**63)],
    ids=repr,
)
def test_record_refuses_bad_shapes(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = dict(author=AUTHOR, seq=2, prev=PREV, refs=(), hlc=HLC,
                                     body=BODIES[0])
    fields.update(kwargs)
    with pytest.raises(LocalError):
        Record(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ signatures

def test_flipped_signature_bit_is_bad_signature() -> None:
    payload = enc(payload_items())
    sig = bytearray(signature(payload))
    sig[10] ^= 0x01
    raw = enc([payload, bytes(sig)])
    assert parse_record(raw).record.seq == 2  # well formed ...
    assert problem(raw) is RecordProblem.BAD_SIGNATURE  # ... but not signed by the author


@pytest.mark.parametrize(
    "signer",
    [
        pytest.param(lambda p: signature(p, STRANGER_KEY), id="another-key"),
        pytest.param(lambda p: signature(p, network_id=OTHER_NID), id="other-network"),
        pytest.param(lambda p: bytes(AUTHOR_KEY.sign(p).signature), id="payload-only"),
        pytest.param(lambda p: bytes(AUTHOR_KEY.sign(NID + p).signature), id="no-context"),
        pytest.param(lambda p: bytes(64), id="zeros"),
    ],
)
def test_signature_over_anything_else_is_bad_signature(signer: Callable[[bytes], bytes]) -> None:
    payload = enc(payload_items())
    raw = enc([payload, signer(payload)])
    assert problem(raw) is RecordProblem.BAD_SIGNATURE


def test_record_from_another_network_does_not_verify_here() -> None:
    record = Record(author=AUTHOR, seq=1, prev=None, refs=(), hlc=HLC, body=BODIES[4])
    theirs = sign_record(record, AUTHOR_KEY, OTHER_NID)
    assert open_record(theirs.raw, OTHER_NID) == theirs
    with pytest.raises(InvalidRecord) as info:
        open_record(theirs.raw, NID)
    assert info.value.problem is RecordProblem.BAD_SIGNATURE
    with pytest.raises(InvalidRecord):
        verify_signature(theirs, NID)


@given(st.binary(min_size=32, max_size=32))
def test_any_32_byte_author_that_did_not_sign_is_bad_signature(fake_author: bytes) -> None:
    """Including byte strings that are not valid Ed25519 public keys at all."""
    payload = enc(payload_items(author=fake_author))
    raw = enc([payload, signature(payload)])
    if fake_author != AUTHOR:
        assert problem(raw) is RecordProblem.BAD_SIGNATURE


@pytest.mark.parametrize("fake_author", [bytes(32), b"\xff" * 32, b"\x01" + bytes(31),
                                         bytes(31) + b"\x80"])
def test_author_that_is_not_a_public_key_is_bad_signature(fake_author: bytes) -> None:
    payload = enc(payload_items(author=fake_author))
    assert problem(enc([payload, signature(payload)])) is RecordProblem.BAD_SIGNATURE


def test_author_swapped_for_another_key_is_bad_signature() -> None:
    payload = enc(payload_items(author=bytes(STRANGER_KEY.verify_key)))
    assert problem(enc([payload, signature(payload)])) is RecordProblem.BAD_SIGNATURE


# ------------------------------------------------------------------ non-canonical encodings

def _longer_bstr(data: bytes) -> bytes:
    """A byte string header in 4-byte length form, never canonical for < 65536 bytes."""
    return b"\x5a" + struct.pack(">I", len(data)) + data


NON_CANONICAL_PAYLOADS = {
    "kind-in-two-bytes": payload_with(0, b"\x18\x04"),
    "seq-in-two-bytes": payload_with(2, b"\x18\x02"),
    "seq-in-nine-bytes": payload_with(2, b"\x1b" + (2).to_bytes(8, "big")),
    "small-hlc-in-nine-bytes": payload_with(5, b"\x1b" + (1000).to_bytes(8, "big"), hlc=1000),
    "author-length-in-long-form": payload_with(1, b"\x59\x00\x20" + AUTHOR),
    "refs-count-in-long-form": payload_with(4, b"\x98\x02" + enc(REF_A) + enc(REF_B)),
    "amount-in-four-bytes": payload_with(6, b"\xa4" + b"".join(
        enc(k) + (b"\x1a" + (1250).to_bytes(4, "big") if k == "amount" else enc(v))
        for k, v in sorted(transfer_body().items(), key=lambda kv: enc(kv[0])))),
    "text-length-in-long-form": payload_with(6, enc(transfer_body()).replace(
        b"\x64from\x64main", b"\x64from\x78\x04main")),
    "map-keys-out-of-order": payload_with(6, cbor2.dumps(
        {k: transfer_body()[k] for k in ("key", "to", "amount", "from")}, canonical=False)),
    "map-keys-in-lexical-not-length-first-order": payload_with(6, cbor2.dumps(
        dict(sorted(transfer_body().items(), key=lambda kv: str(kv[0]))), canonical=False)),
    "amount-as-bignum-tag": payload_with(6, enc(transfer_body()).replace(
        b"\x66amount\x19\x04\xe2", b"\x66amount\xc2\x42\x04\xe2")),
    "trailing-byte-in-payload": enc(payload_items()) + b"\x00",
    "array-count-in-long-form": b"\x98\x07" + enc(payload_items())[1:],
}


@pytest.mark.parametrize("payload", NON_CANONICAL_PAYLOADS.values(),
                         ids=NON_CANONICAL_PAYLOADS.keys())
def test_non_canonical_payload_is_refused(payload: bytes) -> None:
    good = enc(payload_items(hlc=cbor2.loads(payload)[5]))
    assert payload != good
    assert cbor2.loads(payload) == cbor2.loads(good)  # same values, other bytes
    assert problem(signed_raw(payload)) is RecordProblem.NON_CANONICAL


def test_non_canonical_outer_array_is_refused() -> None:
    payload = enc(payload_items())
    sig = signature(payload)
    cases = [
        b"\x82" + _longer_bstr(payload) + enc(sig),
        b"\x82" + enc(payload) + b"\x59\x00\x40" + sig,
        b"\x98\x02" + enc(payload) + enc(sig),
        enc([payload, sig]) + b"\x00",
        enc([payload, sig]) + enc([payload, sig]),
    ]
    for raw in cases:
        assert cbor2.loads(raw) == [payload, sig]
        assert problem(raw) is RecordProblem.NON_CANONICAL


def _indefinite_cases() -> dict[str, bytes]:
    payload = enc(payload_items())
    sig = signature(payload)
    refs = b"\x9f" + enc(REF_A) + enc(REF_B) + b"\xff"
    items = [enc(x) for x in payload_items()]
    return {
        "outer-array": b"\x9f" + enc(payload) + enc(sig) + b"\xff",
        "payload-bytes-in-chunks": b"\x82\x5f" + enc(payload[:9]) + enc(payload[9:]) + b"\xff"
                                   + enc(sig),
        "payload-array": signed_raw(b"\x9f" + b"".join(items) + b"\xff"),
        "refs-array": signed_raw(payload_with(4, refs)),
        "body-map": signed_raw(payload_with(6, b"\xbf" + enc(transfer_body())[1:] + b"\xff")),
        "text-in-chunks": signed_raw(payload_with(6, enc(transfer_body()).replace(
            b"\x64main", b"\x7f\x62ma\x62in\xff", 1))),
    }


@pytest.mark.parametrize(("name", "raw"), _indefinite_cases().items(),
                         ids=_indefinite_cases().keys())
def test_indefinite_length_items_are_malformed(name: str, raw: bytes) -> None:
    """Canonical CBOR has definite lengths only; the decoder refuses indefinite ones
    outright, which specs/records.md section 9 names `malformed`."""
    assert problem(raw) is RecordProblem.MALFORMED, name


def test_duplicate_map_keys_are_refused() -> None:
    body = enc(transfer_body())
    dup = b"\xa5" + body[1:] + enc("key") + enc("pay-2")
    assert problem(signed_raw(payload_with(6, dup))) is RecordProblem.MALFORMED


# ------------------------------------------------------------------ kinds and fields

@pytest.mark.parametrize("kind", [0, 8, 255, 2**32, -1, -4])
def test_unknown_kind(kind: int) -> None:
    raw = signed_raw(enc(payload_items(kind=kind)))
    assert problem(raw) is RecordProblem.UNKNOWN_KIND


@pytest.mark.parametrize("kind", ["transfer", b"\x04", 4.0, True, None, [4]])
def test_kind_that_is_not_an_integer_is_malformed(kind: object) -> None:
    raw = signed_raw(enc(payload_items(kind=kind)))
    assert problem(raw) is RecordProblem.MALFORMED


@pytest.mark.parametrize(
    "body",
    [transfer_body(extra=1), transfer_body(device=PAYEE), transfer_body(From="main"),
     {**transfer_body(), 1: "one"}, {**transfer_body(), b"key": "k"}],
    ids=["extra", "field-of-another-kind", "case", "int-key", "bytes-key"],
)
def test_unknown_body_field(body: dict[object, object]) -> None:
    assert problem(signed_raw(enc(payload_items(body=body)))) is RecordProblem.UNKNOWN_FIELD


@pytest.mark.parametrize("field", ["from", "to", "amount", "key"])
def test_missing_transfer_field_is_malformed(field: str) -> None:
    raw = signed_raw(enc(payload_items(body=transfer_body(**{field: DROP}))))
    assert problem(raw) is RecordProblem.MALFORMED


@pytest.mark.parametrize(
    ("kind", "body"),
    [(Kind.ADMIT, {"role": "device", "tier": 0}), (Kind.ADMIT, {"device": PAYEE, "tier": 0}),
     (Kind.ADMIT, {"device": PAYEE, "role": "device"}), (Kind.REVOKE, {"device": PAYEE}),
     (Kind.ISSUE, {"to": [PAYEE, "main"], "amount": 1}), (Kind.REDEEM, {"from": "main",
                                                                        "key": "k"}),
     (Kind.META, {"account": "main", "field": "f"}), (Kind.TRANSFER, {})],
    ids=repr,
)
def test_missing_field_of_other_kinds_is_malformed(kind: Kind, body: dict[str, object]) -> None:
    raw = signed_raw(enc(payload_items(kind=int(kind), body=body)))
    assert problem(raw) is RecordProblem.MALFORMED


@pytest.mark.parametrize("body", [[], "body", 1, None, b"\xa0"], ids=repr)
def test_body_that_is_not_a_map_is_malformed(body: object) -> None:
    assert problem(signed_raw(enc(payload_items(body=body)))) is RecordProblem.MALFORMED


WRONG_TYPES: dict[str, list[object]] = {
    "author": [AUTHOR[:31], AUTHOR + b"\x00", AUTHOR.hex(), None],
    "seq": ["2", -1, 2**64, 2**63, True, 2.0, None, 0],
    "prev": [PREV[:31], PREV.hex(), 0],
    "hlc": [-1, 1.5, "now", 2**64, 2**63, None],
    "refs": ["x", [REF_A[:31]], [1], None, {REF_A: 1}],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, vs in WRONG_TYPES.items() for v in vs],
    ids=lambda x: repr(x)[:24],
)
def test_wrong_type_in_payload_is_bad_field(field: str, value: object) -> None:
    raw = signed_raw(enc(payload_items(**{field: value})))
    assert problem(raw) is RecordProblem.BAD_FIELD


@pytest.mark.parametrize(
    ("name", "value"),
    [("to", "bob"), ("to", [PAYEE]), ("to", [PAYEE, "Main"]), ("to", [PAYEE[:31], "main"]),
     ("to", [PAYEE, "main", "x"]), ("to", {"device": PAYEE}), ("from", 1), ("from", "Main"),
     ("from", ""), ("from", b"main"), ("key", ""), ("key", "k" * 65), ("key", 7),
     ("memo", ""), ("memo", "m" * (MAX_MEMO_CHARS + 1)), ("memo", None)],
    ids=lambda x: repr(x)[:24],
)
def test_wrong_type_in_transfer_body_is_bad_field(name: str, value: object) -> None:
    raw = signed_raw(enc(payload_items(body=transfer_body(**{name: value}))))
    assert problem(raw) is RecordProblem.BAD_FIELD


@pytest.mark.parametrize(
    ("kind", "body"),
    [(Kind.ADMIT, {"device": PAYEE, "role": "boss", "tier": 0}),
     (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": "0"}),
     (Kind.ADMIT, {"device": PAYEE[:31], "role": "device", "tier": 0}),
     (Kind.ADMIT, {"device": PAYEE, "role": ["device"], "tier": 0}),
     (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 0, "expires": -1}),
     (Kind.REVOKE, {"device": PAYEE, "after_seq": -1}),
     (Kind.META, {"account": "main", "field": "", "value": "v"}),
     (Kind.META, {"account": "main", "field": "f", "value": "v" * 257}),
     (Kind.META, {"account": "Main", "field": "f", "value": "v"})],
    ids=repr,
)
def test_wrong_type_in_other_bodies_is_bad_field(kind: Kind, body: dict[str, object]) -> None:
    raw = signed_raw(enc(payload_items(kind=int(kind), body=body)))
    assert problem(raw) is RecordProblem.BAD_FIELD


# Every integer of a record is below 2**63: SQLite INTEGER is signed 64-bit, and a
# larger value once passed parsing and then raised OverflowError in the store.
OUT_OF_RANGE_BODIES = [
    (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 2**63}),
    (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 0, "expires": 2**63}),
    (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 0, "expires": 2**64 - 1}),
    (Kind.REVOKE, {"device": PAYEE, "after_seq": 2**63}),
    (Kind.CHECKPOINT, {"covers": [[PAYEE, 2**63, REF_A]], "state_hash": bytes(32)}),
]


@pytest.mark.parametrize(("kind", "body"), OUT_OF_RANGE_BODIES, ids=repr)
def test_an_integer_of_2_to_the_63_in_a_body_is_bad_field(kind: Kind,
                                                          body: dict[str, object]) -> None:
    raw = signed_raw(enc(payload_items(kind=int(kind), body=body)))
    assert problem(raw) is RecordProblem.BAD_FIELD
    largest = {k: 2**63 - 1 if type(v) is int and v >= 2**63 else v for k, v in body.items()}
    if kind is Kind.CHECKPOINT:
        largest["covers"] = [[PAYEE, 2**63 - 1, REF_A]]
    assert parse_record(signed_raw(enc(payload_items(kind=int(kind), body=largest))))


@pytest.mark.parametrize("field", ["seq", "hlc"])
def test_seq_and_hlc_of_2_to_the_63_are_bad_field_and_one_less_is_accepted(field: str) -> None:
    assert problem(signed_raw(enc(payload_items(**{field: 2**63})))) is RecordProblem.BAD_FIELD
    signed = parse_record(signed_raw(enc(payload_items(**{field: 2**63 - 1}))))
    assert getattr(signed.record, field) == 2**63 - 1


# ------------------------------------------------------------------ amounts

@pytest.mark.parametrize(
    "amount",
    [0, -1, -1250, 12.5, 1250.0, float("nan"), float("inf"), MAX_AMOUNT_MINOR + 1, 2**64,
     "1250", True, None, [1250]],
    ids=repr,
)
def test_bad_amount(amount: object) -> None:
    raw = signed_raw(enc(payload_items(body=transfer_body(amount=amount))))
    assert problem(raw) is RecordProblem.BAD_AMOUNT


def test_float_amount_is_bad_amount_in_every_float_width() -> None:
    amount = b"\x66amount\x19\x04\xe2"
    for as_float in (b"\xf9" + struct.pack(">e", 1250.0), b"\xfa" + struct.pack(">f", 1250.0),
                     b"\xfb" + struct.pack(">d", 1250.0)):
        body = enc(transfer_body()).replace(amount, b"\x66amount" + as_float)
        assert cbor2.loads(body)["amount"] == 1250.0
        assert problem(signed_raw(payload_with(6, body))) is RecordProblem.BAD_AMOUNT


@pytest.mark.parametrize(
    ("kind", "body"),
    [(Kind.ISSUE, {"to": [PAYEE, "main"], "amount": 0, "key": "k"}),
     (Kind.REDEEM, {"from": "main", "amount": -3, "key": "k"}),
     (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 0, "offline_limit": 0}),
     (Kind.ADMIT, {"device": PAYEE, "role": "device", "tier": 0, "offline_limit": 1.5})],
    ids=repr,
)
def test_bad_amount_in_other_kinds(kind: Kind, body: dict[str, object]) -> None:
    raw = signed_raw(enc(payload_items(kind=int(kind), body=body)))
    assert problem(raw) is RecordProblem.BAD_AMOUNT


# ------------------------------------------------------------------ chain fields

@pytest.mark.parametrize(
    "over",
    [dict(refs=[REF_B, REF_A]), dict(refs=[REF_A, REF_A]), dict(refs=[REF_A, PREV]),
     dict(seq=1), dict(seq=2, prev=None), dict(seq=0, prev=None),
     dict(refs=[bytes([i]) * 32 for i in range(1, MAX_REFS + 2)])],
    ids=["unsorted", "duplicated", "prev-in-refs", "prev-at-seq-1", "no-prev-at-seq-2",
         "seq-0", "too-many-refs"],
)
def test_bad_chain_fields(over: dict[str, object]) -> None:
    assert problem(signed_raw(enc(payload_items(**over)))) is RecordProblem.BAD_FIELD


def test_max_refs_is_allowed() -> None:
    refs = [bytes([i]) * 32 for i in range(1, MAX_REFS + 1)]
    signed = open_record(signed_raw(enc(payload_items(refs=refs))), NID)
    assert len(signed.record.refs) == MAX_REFS


# ------------------------------------------------------------------ tags

TAGGED = {
    "bignum-amount": (6, enc(transfer_body()).replace(
        b"\x66amount\x19\x04\xe2", b"\x66amount\xc2\x42\x04\xe2"), RecordProblem.NON_CANONICAL),
    "unknown-tag-on-amount": (6, enc(transfer_body()).replace(
        b"\x66amount\x19\x04\xe2", b"\x66amount\xd8\x63\x19\x04\xe2"), RecordProblem.BAD_AMOUNT),
    "decimal-fraction-amount": (6, enc(transfer_body()).replace(
        b"\x66amount\x19\x04\xe2", b"\x66amount\xc4\x82\x21\x19\x04\xe2"),
        RecordProblem.BAD_AMOUNT),
    "unknown-tag-on-seq": (2, b"\xd8\x63\x02", RecordProblem.BAD_FIELD),
    "epoch-time-hlc": (5, b"\xc1\x1a\x00\x00\x00\x01", RecordProblem.BAD_FIELD),
    "set-of-refs": (4, b"\xd9\x01\x02" + enc([REF_A, REF_B]), RecordProblem.BAD_FIELD),
    "tagged-author": (1, b"\xd8\x63" + enc(AUTHOR), RecordProblem.BAD_FIELD),
    "tagged-body": (6, b"\xd8\x63" + enc(transfer_body()), RecordProblem.MALFORMED),
    "tagged-kind": (0, b"\xd8\x63\x04", RecordProblem.MALFORMED),
}


@pytest.mark.parametrize(("index", "encoded", "expected"), TAGGED.values(), ids=TAGGED.keys())
def test_tags_inside_the_payload_are_refused(index: int, encoded: bytes,
                                             expected: RecordProblem) -> None:
    assert problem(signed_raw(payload_with(index, encoded))) is expected


def test_tags_around_the_payload_or_record_are_refused() -> None:
    payload = enc(payload_items())
    sig = signature(payload)
    raw = enc([payload, sig])
    assert problem(b"\xd8\x63" + raw) is RecordProblem.MALFORMED
    assert problem(b"\xd9\xd9\xf7" + raw) is RecordProblem.MALFORMED  # self-described CBOR
    assert problem(b"\x82\xd8\x18" + enc(payload) + enc(sig)) is RecordProblem.MALFORMED
    assert problem(signed_raw(b"\xd8\x63" + payload)) is RecordProblem.MALFORMED


# ------------------------------------------------------------------ framing and size

@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\xff", b"\x82", b"\x1b\x00", enc(1), enc({}), enc([]), enc("record"),
     enc([b"p"]), enc([b"p", bytes(64), b"x"]), enc([b"p", bytes(63)]), enc([b"p", bytes(65)]),
     enc(["p", bytes(64)]), enc([enc(payload_items()[:6]), bytes(64)]),
     enc([enc([*payload_items(), 0]), bytes(64)]), enc([enc({"kind": 4}), bytes(64)]),
     enc([enc(4), bytes(64)]), enc([b"\xff\xff", bytes(64)])],
    ids=lambda r: r.hex()[:24] or "empty",
)
def test_malformed_framing(raw: bytes) -> None:
    assert problem(raw) is RecordProblem.MALFORMED


def test_non_bytes_input_is_malformed() -> None:
    good = signed_raw(enc(payload_items()))
    for wrong in (bytearray(good), memoryview(good), good.hex()):
        with pytest.raises(InvalidRecord) as info:
            parse_record(wrong)
        assert info.value.problem is RecordProblem.MALFORMED


def _padded_record(total: int) -> bytes:
    """A properly signed record with an unknown field padded to make it `total` bytes."""
    for pad in range(total, 0, -1):
        body = transfer_body(pad=b"x" * pad)
        raw = signed_raw(enc(payload_items(body=body)))
        if len(raw) == total:
            return raw
        if len(raw) < total:
            break
    raise AssertionError(f"cannot build a record of exactly {total} bytes")


def test_oversize_is_checked_before_anything_else() -> None:
    at_limit = _padded_record(MAX_RECORD_BYTES)
    assert problem(at_limit) is RecordProblem.UNKNOWN_FIELD  # framed, read, then refused
    over = _padded_record(MAX_RECORD_BYTES + 1)
    assert problem(over) is RecordProblem.OVERSIZE
    with pytest.raises(InvalidRecord) as info:
        parse_record(b"\x00" * (MAX_RECORD_BYTES + 1))
    assert info.value.problem is RecordProblem.OVERSIZE
    assert info.value.record_id is None
    with pytest.raises(InvalidRecord) as info:
        parse_record(b"\xff" * 10_000_000)
    assert info.value.problem is RecordProblem.OVERSIZE


def test_largest_legal_record_fits_the_limit() -> None:
    refs = tuple(sorted(bytes([i]) * 32 for i in range(1, MAX_REFS + 1)))
    body = Meta(account="a" * 32, field="\U0001f4b0" * 32, value="\U0001f4b0" * 256)
    record = Record(author=AUTHOR, seq=2**63 - 1, prev=PREV, refs=refs, hlc=2**63 - 1,
                    body=body)
    signed = sign_record(record, AUTHOR_KEY, NID)
    assert len(signed.raw) <= MAX_RECORD_BYTES
    assert open_record(signed.raw, NID) == signed


# ------------------------------------------------------------------ fuzz

@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_invalid_record(raw: bytes) -> None:
    with pytest.raises(InvalidRecord) as info:
        open_record(raw, NID)
    assert isinstance(info.value.problem, RecordProblem)


_GOOD = sign_record(Record(author=AUTHOR, seq=2, prev=PREV, refs=(REF_A, REF_B), hlc=HLC,
                           body=BODIES[6]), AUTHOR_KEY, NID)


@given(st.data())
def test_any_byte_change_of_a_good_record_is_refused(data: st.DataObject) -> None:
    raw = bytearray(_GOOD.raw)
    index = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[index]))
    raw[index] = value
    with pytest.raises(InvalidRecord):
        open_record(bytes(raw), NID)


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=40) | st.sampled_from([AUTHOR, PAYEE, PREV, "main", "from", "to"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["from", "to", "amount", "key", "memo", "device", "role",
                                       "tier", "x"]) | st.integers(0, 3), inner, max_size=5),
    max_leaves=20,
)


@given(kind=st.integers(0, 7), author=st.sampled_from([AUTHOR, PAYEE]) | _cbor_values,
       seq=st.integers(0, 3) | _cbor_values, prev=st.none() | st.just(PREV) | _cbor_values,
       refs=st.lists(st.sampled_from([REF_A, REF_B, PREV]), max_size=3) | _cbor_values,
       hlc=st.just(HLC) | _cbor_values, body=_cbor_values)
def test_signed_garbage_payloads_only_ever_raise_invalid_record(
        kind: int, author: object, seq: object, prev: object, refs: object, hlc: object,
        body: object) -> None:
    payload = enc([kind, author, seq, prev, refs, hlc, body])
    raw = signed_raw(payload)
    refused: InvalidRecord | None = None
    try:
        signed = open_record(raw, NID)
    except InvalidRecord as exc:
        refused = exc
    if refused is not None:
        assert refused.record_id == record_id(raw).hex()
        return
    # Whatever passed must be a record that re-encodes to exactly these bytes.
    assert isinstance(signed, SignedRecord)
    assert signed.record.payload() == payload
    assert signed.raw == raw


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 4000, 65535, 65536])
def test_signed_raw_is_the_canonical_encoding(size: int) -> None:
    payload, sig = bytes(range(256)) * (size // 256) + bytes(size % 256), b"\x07" * 64
    assert encode_signed(payload, sig) == canonical_cbor([payload, sig])
