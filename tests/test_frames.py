"""Sync frames and session crypto (p2p_ledger/protocol/frames.py, crypto.py).

Golden vectors in specs/vectors/frames.json (written by tools/gen_frame_vectors.py from
the primitives, not from this package) are checked both ways: each message encodes to
its bytes and its bytes decode to the value given by its JSON fields, also when fed to
a FrameReader one byte at a time. The sealed frames and the whole handshake are
checked the same way, the handshake by running two real Sessions with the vector's
ephemeral secrets. Then the decoder's refusals, the reader's limits, and round trips of
arbitrary values with Hypothesis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import msgpack
import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import MAX_RECORD_BYTES
from p2p_ledger.errors import RemoteProtocolError
from p2p_ledger.protocol.crypto import (
    AUTH_CONTEXT,
    Channel,
    Ephemeral,
    auth_message,
    derive_keys,
    verify_auth_signature,
)
from p2p_ledger.protocol.frames import (
    HANDSHAKE_FRAME_LIMIT,
    MAX_BATCH_RECORDS,
    MAX_FRAME_BYTES,
    MAX_REASON_CHARS,
    MAX_SUMMARY_ENTRIES,
    MAX_SUMMARY_TOTAL,
    PROTOCOL_VERSION,
    Auth,
    Close,
    Frame,
    FrameReader,
    FrameType,
    Hello,
    NeedSummary,
    Packed,
    Ping,
    Pong,
    Records,
    Stored,
    Summary,
    SummaryPart,
    SummarySketch,
    SummaryTips,
    Synced,
    decode_message,
    encode_message,
    frame,
)
from p2p_ledger.protocol.session import HandshakeDone, Session
from tests.protocol_pair import SessionPair, Side, split_frames

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "specs" / "vectors" / "frames.json").read_text(encoding="utf-8"))
MESSAGES = {m["name"]: m for m in VECTORS["messages"]}
INVALID = {v["name"]: v for v in VECTORS["invalid"]}
HS = VECTORS["handshake"]


def hx(value: str) -> bytes:
    return bytes.fromhex(value)


def value_of(vector: dict[str, Any]) -> Frame:
    """The frame value a vector's JSON fields describe (independent of the decoder)."""
    f = vector["fields"]
    match vector["type"]:
        case "HELLO":
            return Hello(version=f["version"], ephemeral_key=hx(f["ephemeral_key"]))
        case "AUTH":
            return Auth(device_key=hx(f["device_key"]), signature=hx(f["signature"]),
                        admit=None if f["admit"] is None else hx(f["admit"]), role=f["role"])
        case "SUMMARY":
            return Summary(tips=tuple((hx(a), s, hx(i)) for a, s, i in f["tips"]))
        case "SUMMARY_PART":
            return SummaryPart(tips=tuple((hx(a), s, hx(i)) for a, s, i in f["tips"]))
        case "RECORDS":
            return Records(records=tuple(hx(r) for r in f["records"]))
        case "SYNCED":
            return Synced(sent=f["sent"])
        case "PING":
            return Ping(token=f["token"])
        case "PONG":
            return Pong(token=f["token"])
        case "CLOSE":
            return Close(reason=f["reason"])
        case "SKETCH":
            return SummarySketch(cells=hx(f["cells"]))
        case "NEED_SUMMARY":
            return NeedSummary(cells=f["cells"])
        case "PACKED":
            return Packed(batch=hx(f["batch"]))
        case "TIPS":
            return SummaryTips(elements=hx(f["elements"]))
        case "STORED":
            return Stored(received=f["received"], unstored=f["unstored"])
    raise AssertionError(vector["type"])


# ---------------------------------------------------------------- the vector file

def test_vector_file_is_what_the_generator_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    gen = importlib.import_module("gen_frame_vectors")
    assert gen.render() == (ROOT / "specs" / "vectors" / "frames.json").read_text("utf-8")


def test_vectors_cover_every_frame_type_and_the_limits() -> None:
    assert {m["type"] for m in VECTORS["messages"]} == {t.name for t in FrameType}
    assert VECTORS["protocol_version"] == PROTOCOL_VERSION
    assert VECTORS["limits"] == {
        "max_frame_bytes": MAX_FRAME_BYTES, "handshake_frame_limit": HANDSHAKE_FRAME_LIMIT,
        "max_summary_entries": MAX_SUMMARY_ENTRIES, "max_summary_total": MAX_SUMMARY_TOTAL,
        "max_batch_records": MAX_BATCH_RECORDS,
        "max_reason_chars": MAX_REASON_CHARS, "max_record_bytes": MAX_RECORD_BYTES,
        "aead_tag_bytes": 16}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_message_vector_encodes_and_decodes(name: str) -> None:
    vector = MESSAGES[name]
    value, body = value_of(vector), hx(vector["body"])
    assert encode_message(value) == body
    assert decode_message(body) == value
    assert frame(body) == hx(vector["frame"])
    assert body[1] == FrameType[vector["type"]]  # fixarray header, then the type number


@pytest.mark.parametrize("name", list(MESSAGES))
def test_message_vector_read_one_byte_at_a_time(name: str) -> None:
    vector = MESSAGES[name]
    wire = hx(vector["frame"])
    reader = FrameReader(MAX_FRAME_BYTES)
    for i, byte in enumerate(wire):
        assert reader.next_body() is None, i
        reader.feed(bytes([byte]))
    body = reader.next_body()
    assert body == hx(vector["body"])
    assert reader.next_body() is None
    assert reader.buffered == 0
    assert decode_message(body) == value_of(vector)


def test_all_message_vectors_in_one_stream() -> None:
    stream = b"".join(hx(m["frame"]) for m in VECTORS["messages"])
    reader = FrameReader(MAX_FRAME_BYTES)
    reader.feed(stream)
    bodies = list(iter(reader.next_body, None))
    assert [decode_message(b) for b in bodies] == [value_of(m) for m in VECTORS["messages"]]


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_vector_is_refused(name: str) -> None:
    vector = INVALID[name]
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(hx(vector["body"]))
    assert vector["error"] in str(info.value)


# ---------------------------------------------------------------- sealed frames

SEALED = VECTORS["sealed"]


def test_sealed_vector_seals_to_the_same_bytes() -> None:
    channel = Channel(hx(SEALED["send_key"]), hx(SEALED["receive_key"]))
    for item in SEALED["frames"]:
        sealed = channel.seal(hx(item["body"]))
        assert sealed == hx(item["frame"])
        assert int.from_bytes(sealed[:4], "big") == len(hx(item["body"])) + 16


def test_sealed_vector_opens_in_order_only() -> None:
    frames = [hx(item["frame"]) for item in SEALED["frames"]]
    reader = Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"]))
    for item, wire in zip(SEALED["frames"], frames, strict=True):
        assert reader.open(wire[4:]) == hx(item["body"])
    for order in ([1, 0, 2], [0, 0], [0, 2], [2]):  # reordered, replayed, dropped
        fresh = Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"]))
        with pytest.raises(RemoteProtocolError, match="replayed or reordered"):  # noqa: PT012
            for i in order:
                fresh.open(frames[i][4:])


@pytest.mark.parametrize("where", ["ciphertext", "tag", "truncated", "extended"])
def test_tampered_sealed_frame_fails(where: str) -> None:
    sealed = bytearray(hx(SEALED["frames"][0]["frame"])[4:])
    if where == "ciphertext":
        sealed[1] ^= 0x01
    elif where == "tag":
        sealed[-1] ^= 0x01
    elif where == "truncated":  # the length is authenticated as associated data
        del sealed[-1]
    else:
        sealed.append(0)
    reader = Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"]))
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        reader.open(bytes(sealed))


def test_a_frame_opens_only_with_the_key_of_its_direction() -> None:
    sealed = hx(SEALED["frames"][0]["frame"])[4:]
    same_side = Channel(hx(SEALED["send_key"]), hx(SEALED["receive_key"]))
    with pytest.raises(RemoteProtocolError, match="failed authentication"):
        same_side.open(sealed)  # a reflected frame: its receive key is the other direction


# ---------------------------------------------------------------- the handshake

def vector_world() -> tuple[NetworkDescriptor, dict[str, nacl.signing.SigningKey]]:
    net = VECTORS["network"]
    network = NetworkDescriptor(name=net["name"], currency=net["currency"],
                                authority=hx(net["authority"]))
    assert network.network_id == hx(net["network_id"])
    keys = {n: nacl.signing.SigningKey(hx(k["seed"])) for n, k in VECTORS["keys"].items()}
    for n, k in keys.items():
        assert bytes(k.verify_key) == hx(VECTORS["keys"][n]["public_key"])
    return network, keys


def test_handshake_vector_key_derivation() -> None:
    network, _ = vector_world()
    eph_i = Ephemeral(hx(HS["initiator_ephemeral_secret"]))
    eph_r = Ephemeral(hx(HS["responder_ephemeral_secret"]))
    assert eph_i.public == hx(HS["initiator_ephemeral_public"])
    assert eph_r.public == hx(HS["responder_ephemeral_public"])
    shared = eph_i.shared(eph_r.public)
    assert shared == eph_r.shared(eph_i.public) == hx(HS["shared_secret"])
    hello_i = encode_message(Hello(version=PROTOCOL_VERSION, ephemeral_key=eph_i.public))
    hello_r = encode_message(Hello(version=PROTOCOL_VERSION, ephemeral_key=eph_r.public))
    assert (hello_i, hello_r) == (hx(HS["hello_initiator"]), hx(HS["hello_responder"]))
    assert hello_i + hello_r == hx(HS["transcript"])
    i2r, r2i, th = derive_keys(shared, network.network_id, hello_i + hello_r)
    assert i2r == hx(HS["key_initiator_to_responder"])
    assert r2i == hx(HS["key_responder_to_initiator"])
    assert th == hx(HS["transcript_hash"])
    assert hx(HS["auth_context"]) == AUTH_CONTEXT
    assert auth_message(th, True) == hx(HS["signed_by_initiator"])
    assert auth_message(th, False) == hx(HS["signed_by_responder"])
    # Another network id gives other keys and another transcript hash.
    other = derive_keys(shared, bytes(32), hello_i + hello_r)
    assert not {i2r, r2i, th} & set(other)


def test_handshake_vector_auth_frames_verify() -> None:
    _, keys = vector_world()
    th = hx(HS["transcript_hash"])
    for side, name, initiator in (("initiator", "authority", True),
                                  ("responder", "alice", False)):
        auth = decode_message(hx(HS[f"auth_{side}"]))
        assert isinstance(auth, Auth)
        assert auth.device_key == bytes(keys[name].verify_key)
        verify_auth_signature(auth.device_key, auth.signature, th, initiator)
        with pytest.raises(RemoteProtocolError, match="did not prove"):
            verify_auth_signature(auth.device_key, auth.signature, th, not initiator)
    assert decode_message(hx(HS["auth_responder"])) == value_of(MESSAGES["auth_device"])
    assert decode_message(hx(HS["auth_initiator"])) == value_of(MESSAGES["auth_authority"])


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["flights", "bytes"])
def test_two_sessions_send_exactly_the_handshake_vector(byte_at_a_time: bool) -> None:
    network, keys = vector_world()
    admit = value_of(MESSAGES["auth_device"])
    assert isinstance(admit, Auth)
    a = Side("authority", Session(
        network=network, key=keys["authority"], admit=None, role="authority", initiator=True,
        now=0.0, ephemeral=Ephemeral(hx(HS["initiator_ephemeral_secret"]))))
    b = Side("alice", Session(
        network=network, key=keys["alice"], admit=admit.admit, role="device", initiator=False,
        now=0.0, ephemeral=Ephemeral(hx(HS["responder_ephemeral_secret"]))))
    pair = SessionPair(a, b, byte_at_a_time=byte_at_a_time)
    pair.pump()
    expected = [("authority" if f["from"] == "initiator" else "alice", hx(f["bytes"]))
                for f in HS["flights"]]
    assert pair.wire == expected
    assert a.of_type(HandshakeDone) == [HandshakeDone(peer=bytes(keys["alice"].verify_key),
                                                      role="device")]
    assert b.of_type(HandshakeDone) == [HandshakeDone(peer=network.authority,
                                                      role="authority")]
    # The flights are the HELLOs in the clear, then AUTHs sealed with counter 0.
    i2r, r2i = hx(HS["key_initiator_to_responder"]), hx(HS["key_responder_to_initiator"])
    hello_r, auth_r = split_frames(expected[1][1])
    assert hello_r[4:] == hx(HS["hello_responder"])
    assert Channel(i2r, r2i).open(auth_r[4:]) == hx(HS["auth_responder"])
    assert Channel(r2i, i2r).open(expected[2][1][4:]) == hx(HS["auth_initiator"])


# ---------------------------------------------------------------- decoding refusals

def pack(obj: object) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


ENTRY = [bytes(32), 1, bytes(32)]


@pytest.mark.parametrize(("body", "words"), [
    # Over MAX_BATCH_RECORDS (= MAX_SUMMARY_ENTRIES, msgpack's array cap) msgpack refuses.
    pytest.param(pack([4, [b"\x01"] * (MAX_BATCH_RECORDS + 1)]), "not msgpack",
                 id="records-over-batch"),
    pytest.param(pack([3, [ENTRY] * (MAX_SUMMARY_ENTRIES + 1)]), "not msgpack",
                 id="summary-over-frame"),
    pytest.param(pack([9, [ENTRY] * (MAX_SUMMARY_ENTRIES + 1)]), "not msgpack",
                 id="summary-part-over-frame"),
    pytest.param(pack([3, [[bytes(32), -1, bytes(32)]]]), "unsigned integer", id="seq-neg"),
    pytest.param(pack([3, [[bytes(32), 1, bytes(31)]]]), "expected 32 bytes", id="id-short"),
    pytest.param(pack([3, "tips"]), "summary is a list", id="summary-text"),
    pytest.param(pack([9, "tips"]), "summary is a list", id="summary-part-text"),
    pytest.param(pack([9, [[bytes(32), 1]]]), "summary entry", id="summary-part-entry"),
    pytest.param(pack([9, [ENTRY], [ENTRY]]), "SUMMARY_PART takes 1 fields",
                 id="summary-part-arity"),
    pytest.param(pack([2, bytes(32), bytes(63), None, "device"]), "expected 64 bytes",
                 id="auth-sig-short"),
    pytest.param(pack([2, bytes(32), bytes(64), "admit", "device"]), "bytes",
                 id="auth-admit-text"),
    pytest.param(pack([2, bytes(32), bytes(64), None, b"device"]), "unknown role",
                 id="auth-role-bin"),
    pytest.param(pack([2, bytes(32), bytes(64), None]), "AUTH takes 4 fields",
                 id="auth-arity"),
    pytest.param(pack([6]), "PING takes 1 fields", id="ping-arity"),
    pytest.param(pack([7, 1, 2]), "PONG takes 1 fields", id="pong-arity"),
    pytest.param(pack([8, 5]), "short text", id="close-int"),
    pytest.param(pack([13, []]), "expected up to", id="tips-as-list"),
    pytest.param(pack([13, bytes(20 * 40_001)]), "expected up to", id="tips-too-many"),
    pytest.param(pack([15, []]), "unknown frame type 15", id="type-15"),
    pytest.param(pack([255]), "unknown frame type 255", id="type-255"),
    pytest.param(pack([1.0, 1]), "array starting with its type", id="type-float"),
    pytest.param(pack([True, 1]), "array starting with its type", id="type-bool"),
    pytest.param(b"\xc1", "not msgpack", id="reserved-byte"),
    pytest.param(b"", "not msgpack", id="empty"),
])
def test_decoder_refuses(body: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(body)
    assert words in str(info.value)


# Every integer of a frame is below 2**63 (SQLite INTEGER is signed 64-bit): a SUMMARY
# tip or TIPS element at 2**63 once raised OverflowError in the store and stopped serve.
@pytest.mark.parametrize("body", [
    pytest.param(pack([1, 2**63, bytes(32)]), id="hello-version"),
    pytest.param(pack([3, [[bytes(32), 2**63, bytes(32)]]]), id="summary-seq"),
    pytest.param(pack([3, [ENTRY, [bytes(32), 2**64 - 1, bytes(32)]]]), id="summary-seq-max"),
    pytest.param(pack([9, [[bytes(32), 2**63, bytes(32)]]]), id="summary-part-seq"),
    pytest.param(pack([5, 2**63]), id="synced-count"),
    pytest.param(pack([6, 2**63]), id="ping-token"),
    pytest.param(pack([7, 2**64 - 1]), id="pong-token"),
    pytest.param(pack([11, 2**63]), id="need-summary-cells"),
])
def test_decoder_refuses_an_integer_of_2_to_the_63_or_more(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match=r"unsigned integer below 2\*\*63"):
        decode_message(body)


@pytest.mark.parametrize("seq", [2**63, 2**63 + 1, 2**64 - 1])
@pytest.mark.parametrize("at", [0, 1, 39_999])
def test_decoder_refuses_a_tips_element_whose_seq_is_2_to_the_63_or_more(seq: int,
                                                                         at: int) -> None:
    good = b"\xab" * 8 + (2**63 - 1).to_bytes(8, "big") + b"\xcd" * 4
    bad = b"\xab" * 8 + seq.to_bytes(8, "big") + b"\xcd" * 4
    elements = [good] * (at + 1)
    elements[at] = bad
    with pytest.raises(RemoteProtocolError, match=r"seq is not below 2\*\*63"):
        decode_message(pack([13, b"".join(elements)]))


def test_decoder_accepts_the_largest_values() -> None:
    assert decode_message(pack([5, 2**63 - 1])) == Synced(sent=2**63 - 1)
    top = b"\xff" * 8 + b"\x7f" + b"\xff" * 11  # a TIPS element with seq 2**63 - 1
    assert decode_message(pack([13, top])) == SummaryTips(elements=top)
    big = bytes(MAX_RECORD_BYTES)
    assert decode_message(pack([4, [big]])) == Records(records=(big,))
    reason = "\u0634" * MAX_REASON_CHARS  # counted in characters, not bytes
    assert decode_message(pack([8, reason])) == Close(reason=reason)
    for role in ("device", "hub", "authority"):
        msg = decode_message(pack([2, bytes(32), bytes(64), None, role]))
        assert isinstance(msg, Auth)
        assert msg.role == role
    many = [b"\x01"] * MAX_BATCH_RECORDS
    assert decode_message(pack([4, many])) == Records(records=tuple(many))


@pytest.mark.parametrize("kind", [Summary, SummaryPart])
def test_a_full_summary_frame_fits_in_a_sealed_frame(kind: type[Summary | SummaryPart]) -> None:
    """MAX_SUMMARY_ENTRIES entries of the largest kind (seq 2**63 - 1) decode, and their
    sealed frame stays under MAX_FRAME_BYTES, so an honest peer never sends a summary
    frame its peer must refuse as oversize."""
    tips = tuple((i.to_bytes(32, "big"), 2**63 - 1, b"\xff" * 32)
                 for i in range(MAX_SUMMARY_ENTRIES))
    msg = kind(tips=tips)
    body = encode_message(msg)
    assert decode_message(body) == msg
    assert len(body) + 16 <= MAX_FRAME_BYTES
    sealed = Channel(hx(SEALED["send_key"]), hx(SEALED["receive_key"])).seal(body)
    reader = FrameReader(MAX_FRAME_BYTES)
    reader.feed(sealed)
    assert reader.next_body() == sealed[4:]
    assert MAX_SUMMARY_TOTAL % MAX_SUMMARY_ENTRIES == 0  # a whole summary is whole frames


def test_close_reason_is_cut_to_the_limit_when_encoded() -> None:
    body = encode_message(Close(reason="x" * (MAX_REASON_CHARS + 50)))
    assert decode_message(body) == Close(reason="x" * MAX_REASON_CHARS)


def test_a_close_reason_with_control_characters_is_refused_and_never_sent() -> None:
    """A peer's CLOSE reason is printed by `sync` on the user's terminal and written to
    the node's log: one carrying escape sequences cleared the screen and printed a fake
    "in sync" line in green (tried with a hostile hub), and a newline forges a log
    line. Decoding refuses it as malformed; encoding replaces what is not printable."""
    for reason in ("\x1b[2J\x1b[32min sync with everyone\x1b[0m", "ok\nforged log line",
                   "bell\x07", "\u202eright-to-left"):
        with pytest.raises(RemoteProtocolError, match="printable"):
            decode_message(pack([8, reason]))
    body = encode_message(Close(reason="peer\x1b[31m gone\n"))
    assert decode_message(body) == Close(reason="peer?[31m gone?")


def test_frame_values_are_frozen_keyword_only() -> None:
    msg = Ping(token=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.token = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Ping(1)  # type: ignore[misc]
    assert not hasattr(msg, "__dict__")  # slots


# ---------------------------------------------------------------- the frame reader

def test_reader_waits_for_whole_frames() -> None:
    reader = FrameReader(100)
    wire = frame(b"abc") + frame(b"") + frame(b"z" * 100)
    reader.feed(wire[:5])
    assert reader.next_body() is None
    assert reader.buffered == 5
    reader.feed(wire[5:])
    assert list(iter(reader.next_body, None)) == [b"abc", b"", b"z" * 100]
    assert reader.buffered == 0


def test_reader_refuses_an_oversize_prefix_at_once() -> None:
    reader = FrameReader(100)
    reader.feed((100).to_bytes(4, "big"))
    assert reader.next_body() is None
    reader = FrameReader(100)
    reader.feed((101).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="101 bytes exceeds the limit of 100"):
        reader.next_body()
    reader = FrameReader(100)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        reader.feed((101).to_bytes(4, "big") + bytes(200))  # refused in feed already
    reader = FrameReader(100)
    reader.feed(frame(bytes(100)) + frame(bytes(100)))  # more than a frame buffered is fine
    assert len(list(iter(reader.next_body, None))) == 2


def test_reader_limit_can_be_raised_after_the_handshake() -> None:
    reader = FrameReader()
    assert reader.limit == HANDSHAKE_FRAME_LIMIT
    big = frame(bytes(HANDSHAKE_FRAME_LIMIT + 1))
    reader.feed(big[:4])
    with pytest.raises(RemoteProtocolError):
        reader.next_body()
    reader = FrameReader()
    reader.limit = MAX_FRAME_BYTES
    reader.feed(big)
    assert reader.next_body() == bytes(HANDSHAKE_FRAME_LIMIT + 1)


# ---------------------------------------------------------------- arbitrary values

uint63 = st.integers(min_value=0, max_value=2**63 - 1)  # every integer of a frame
b32 = st.binary(min_size=32, max_size=32)
record = st.binary(max_size=300)
frames_st: st.SearchStrategy[Frame] = st.one_of(
    st.builds(Hello, version=uint63, ephemeral_key=b32),
    st.builds(Auth, device_key=b32, signature=st.binary(min_size=64, max_size=64),
              admit=st.none() | record, role=st.sampled_from(["device", "hub", "authority"])),
    st.builds(Summary, tips=st.lists(st.tuples(b32, uint63, b32), max_size=5).map(tuple)),
    st.builds(SummaryPart, tips=st.lists(st.tuples(b32, uint63, b32), max_size=5).map(tuple)),
    st.builds(Records, records=st.lists(record, max_size=5).map(tuple)),
    st.builds(Synced, sent=uint63),
    st.builds(Ping, token=uint63),
    st.builds(Pong, token=uint63),
    # printable: what is not is replaced when encoded (test_a_close_reason_with_control_...)
    st.builds(Close, reason=st.text(max_size=MAX_REASON_CHARS).filter(str.isprintable)),
)


@given(frames_st)
def test_any_frame_round_trips(msg: Frame) -> None:
    body = encode_message(msg)
    assert decode_message(body) == msg
    assert encode_message(decode_message(body)) == body


@given(st.lists(frames_st, min_size=1, max_size=6), st.data())
def test_reader_cuts_any_chunking_into_the_same_frames(msgs: list[Frame],
                                                       data: st.DataObject) -> None:
    wire = b"".join(frame(encode_message(m)) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    reader = FrameReader(MAX_FRAME_BYTES)
    out: list[Frame] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        reader.feed(wire[start:end])
        out.extend(decode_message(b) for b in iter(reader.next_body, None))
    assert out == msgs
    assert reader.buffered == 0


@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_a_protocol_error(junk: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_message(junk)


@pytest.mark.parametrize("size", [0, 1, 15])
def test_channel_refuses_a_sealed_frame_shorter_than_its_tag(size: int) -> None:
    """Fewer bytes than the 16-byte tag are the peer's error (RemoteProtocolError), never
    a ValueError from libsodium; the channel's counter does not move, so the next honest
    frame still opens."""
    channel = Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"]))
    with pytest.raises(RemoteProtocolError,
                       match=r"failed authentication \(shorter than its tag\)"):
        channel.open(bytes(size))
    first = SEALED["frames"][0]
    assert channel.open(hx(first["frame"])[4:]) == hx(first["body"])


def test_channel_opens_a_sealed_empty_body_of_exactly_the_tag() -> None:
    sender = Channel(hx(SEALED["send_key"]), hx(SEALED["receive_key"]))
    receiver = Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"]))
    sealed = sender.seal(b"")
    assert len(sealed) == 4 + 16
    assert receiver.open(sealed[4:]) == b""
    with pytest.raises(RemoteProtocolError, match="failed authentication") as info:
        Channel(hx(SEALED["receive_key"]), hx(SEALED["send_key"])).open(bytes(16))
    assert "shorter" not in str(info.value)  # 16 bytes is long enough: the tag is wrong
