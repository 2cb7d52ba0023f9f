"""Regenerate specs/vectors/frames.json, the golden vectors of the sync protocol's wire.

Everything is fixed: Ed25519 keys and X25519 ephemeral secrets come from fixed seeds,
Ed25519 signatures are deterministic (RFC 8032) and sealed frames use counter nonces,
so running this again gives the same bytes.

The handshake, the key derivation and the sealing are computed here from the
primitives the spec names (hashlib's BLAKE2b, libsodium's X25519, Ed25519 and
XChaCha20-Poly1305 through PyNaCl), not through p2p_ledger.protocol.crypto or the
Session, so that tests/test_frames.py can check the implementation against an
independent reading of specs/sync-protocol.md. Only the plain message encoding uses
`encode_message`, whose output the tests check against the JSON fields.

Run `python tools/gen_frame_vectors.py` to rewrite the file, `--check` to compare only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from pathlib import Path

import msgpack
import nacl.bindings as sodium
import nacl.public
import nacl.signing

from p2p_ledger.core.hlc import pack_hlc
from p2p_ledger.core.ids import Account
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import MAX_RECORD_BYTES, Admit, Issue, Record, sign_record
from p2p_ledger.protocol.compact import pack_records
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
    encode_message,
)
from p2p_ledger.protocol.sketch import Sketch, element

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import write_or_check

VECTORS_PATH = Path(__file__).resolve().parent.parent / "specs" / "vectors" / "frames.json"

T0 = 1_763_900_000_000  # the vectors' fixed "now" in ms
AUTH_CONTEXT = b"p2p-ledger session auth v1\x00"
TAG_BYTES = 16


SKETCH_SALT = bytes(range(16))


def seed(name: str) -> bytes:
    return hashlib.blake2b(f"p2p-ledger frame vectors/{name}".encode(), digest_size=32).digest()


KEYS = {n: nacl.signing.SigningKey(seed(n)) for n in ("authority", "alice")}
PUB = {n: bytes(k.verify_key) for n, k in KEYS.items()}
NETWORK = NetworkDescriptor(name="vectors", currency="AED", authority=PUB["authority"])
NET_ID = NETWORK.network_id
EPHEMERAL = {"initiator": seed("ephemeral/initiator"), "responder": seed("ephemeral/responder")}


def length_prefixed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def seal(key: bytes, counter: int, body: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF; nonce = counter, 24 bytes little-endian; AD = prefix."""
    prefix = (len(body) + TAG_BYTES).to_bytes(4, "big")
    nonce = counter.to_bytes(24, "little")
    return prefix + bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        body, prefix, nonce, key))


# ---------------------------------------------------------------- records to carry

def records() -> dict[str, bytes]:
    admit = sign_record(Record(author=PUB["authority"], seq=1, prev=None, refs=(),
                               hlc=pack_hlc(T0), body=Admit(device=PUB["alice"])),
                        KEYS["authority"], NET_ID)
    issue = sign_record(Record(author=PUB["authority"], seq=2, prev=admit.id, refs=(),
                               hlc=pack_hlc(T0, 1),
                               body=Issue(to=Account(device=PUB["alice"]), amount=100_00,
                                          key="cash-in-0001")),
                        KEYS["authority"], NET_ID)
    return {"admit_alice": admit.raw, "issue_alice": issue.raw,
            "admit_alice_id": admit.id, "issue_alice_id": issue.id}


# ---------------------------------------------------------------- the handshake

def handshake(recs: dict[str, bytes]) -> dict[str, object]:
    """authority (initiator) and alice (responder), computed from the primitives."""
    eph = {side: nacl.public.PrivateKey(EPHEMERAL[side]) for side in EPHEMERAL}
    pub = {side: bytes(k.public_key) for side, k in eph.items()}
    hello = {side: encode_message(Hello(version=PROTOCOL_VERSION, ephemeral_key=pub[side]))
             for side in eph}
    shared = bytes(sodium.crypto_scalarmult(bytes(eph["initiator"]), pub["responder"]))
    assert shared == bytes(sodium.crypto_scalarmult(bytes(eph["responder"]), pub["initiator"]))
    transcript = hello["initiator"] + hello["responder"]
    okm = hashlib.blake2b(shared + transcript, key=NET_ID, digest_size=64,
                          person=b"p2pl-session").digest()
    i2r, r2i = okm[:32], okm[32:]
    th = hashlib.blake2b(transcript, key=NET_ID, digest_size=32, person=b"p2pl-transcr").digest()
    signed = {"initiator": AUTH_CONTEXT + th + b"I", "responder": AUTH_CONTEXT + th + b"R"}
    auth_i = encode_message(Auth(
        device_key=PUB["authority"], admit=None, role="authority",
        signature=KEYS["authority"].sign(signed["initiator"]).signature))
    auth_r = encode_message(Auth(
        device_key=PUB["alice"], admit=recs["admit_alice"], role="device",
        signature=KEYS["alice"].sign(signed["responder"]).signature))
    flights = [
        ("initiator", length_prefixed(hello["initiator"])),
        ("responder", length_prefixed(hello["responder"]) + seal(r2i, 0, auth_r)),
        ("initiator", seal(i2r, 0, auth_i)),
    ]
    return {
        "description": "authority (initiator, no admit) and alice (responder, shows her admit) "
                       "of the network 'vectors'; both sessions built with these ephemeral "
                       "secrets send exactly these flights",
        "initiator": "authority", "responder": "alice",
        "initiator_ephemeral_secret": EPHEMERAL["initiator"].hex(),
        "responder_ephemeral_secret": EPHEMERAL["responder"].hex(),
        "initiator_ephemeral_public": pub["initiator"].hex(),
        "responder_ephemeral_public": pub["responder"].hex(),
        "hello_initiator": hello["initiator"].hex(),
        "hello_responder": hello["responder"].hex(),
        "shared_secret": shared.hex(),
        "transcript": transcript.hex(),
        "key_initiator_to_responder": i2r.hex(),
        "key_responder_to_initiator": r2i.hex(),
        "transcript_hash": th.hex(),
        "auth_context": AUTH_CONTEXT.hex(),
        "signed_by_initiator": signed["initiator"].hex(),
        "signed_by_responder": signed["responder"].hex(),
        "auth_initiator": auth_i.hex(),
        "auth_responder": auth_r.hex(),
        "flights": [{"from": who, "bytes": data.hex()} for who, data in flights],
    }


# ---------------------------------------------------------------- plain messages

def fields_json(msg: Frame) -> dict[str, object]:
    match msg:
        case Hello():
            return {"version": msg.version, "ephemeral_key": msg.ephemeral_key.hex()}
        case Auth():
            return {"device_key": msg.device_key.hex(), "signature": msg.signature.hex(),
                    "admit": None if msg.admit is None else msg.admit.hex(), "role": msg.role}
        case Summary() | SummaryPart():
            return {"tips": [[a.hex(), s, i.hex()] for a, s, i in msg.tips]}
        case Records():
            return {"records": [r.hex() for r in msg.records]}
        case Synced():
            return {"sent": msg.sent}
        case Ping() | Pong():
            return {"token": msg.token}
        case Close():
            return {"reason": msg.reason}
        case SummarySketch():
            return {"cells": msg.cells.hex()}
        case NeedSummary():
            return {"cells": msg.cells}
        case Packed():
            return {"batch": msg.batch.hex()}
        case SummaryTips():
            return {"elements": msg.elements.hex()}
        case Stored():
            return {"received": msg.received, "unstored": msg.unstored}


TYPE_NAMES: dict[type[object], str] = {
    Hello: "HELLO", Auth: "AUTH", Summary: "SUMMARY", Records: "RECORDS", Synced: "SYNCED",
    Ping: "PING", Pong: "PONG", Close: "CLOSE", SummaryPart: "SUMMARY_PART",
    SummarySketch: "SKETCH", NeedSummary: "NEED_SUMMARY", Packed: "PACKED",
    SummaryTips: "TIPS", Stored: "STORED"}


def messages(recs: dict[str, bytes], hs: dict[str, object]) -> list[dict[str, object]]:
    def hx(name: str) -> bytes:
        value = hs[name]
        assert isinstance(value, str)
        return bytes.fromhex(value)

    forked = seed("forked-author")
    elements = [element(SKETCH_SALT, PUB["authority"], 2, recs["issue_alice_id"]),
                element(SKETCH_SALT, forked, 3, bytes(32)),
                element(SKETCH_SALT, forked, 3, b"\xff" * 32)]
    cases: list[tuple[str, str, Frame]] = [
        ("hello", "the initiator's HELLO of the handshake vector",
         Hello(version=PROTOCOL_VERSION, ephemeral_key=hx("initiator_ephemeral_public"))),
        ("auth_device", "alice's AUTH of the handshake vector: her key, her signature of "
         "the transcript as responder, the authority's admit of her key",
         Auth(device_key=PUB["alice"], admit=recs["admit_alice"], role="device",
              signature=KEYS["alice"].sign(hx("signed_by_responder")).signature)),
        ("auth_authority", "the authority's AUTH of the handshake vector: no admit",
         Auth(device_key=PUB["authority"], admit=None, role="authority",
              signature=KEYS["authority"].sign(hx("signed_by_initiator")).signature)),
        ("summary_empty", "an empty replica's summary", Summary(tips=())),
        ("summary_part", "an early part of a summary too long for one frame (more than "
         f"{MAX_SUMMARY_ENTRIES} entries; the parts of a real one hold {MAX_SUMMARY_ENTRIES} "
         "each): the same body as SUMMARY, the entries continue in the next part and end in "
         "a SUMMARY",
         SummaryPart(tips=((PUB["authority"], 2, recs["issue_alice_id"]),
                           (PUB["alice"], 1, recs["admit_alice_id"])))),
        ("summary", "the authority at seq 2, and an author forked at seq 3 (two tips, "
         "sorted by seq then id)",
         Summary(tips=((PUB["authority"], 2, recs["issue_alice_id"]),
                       (forked, 3, bytes(32)), (forked, 3, b"\xff" * 32)))),
        ("sketch", "the same three tips as the summary vector as a 36-cell sketch, salt "
         f"{SKETCH_SALT.hex()} (specs/sync-protocol.md section 7a)",
         SummarySketch(cells=Sketch.of(elements, 36, SKETCH_SALT).to_bytes())),
        ("tips", "the same three tips as listed elements, sorted, salt "
         f"{SKETCH_SALT.hex()} (specs/sync-protocol.md section 7a)",
         SummaryTips(elements=b"".join(sorted(elements)))),
        ("tips_empty", "an empty replica's listed tips", SummaryTips(elements=b"")),
        ("need_summary", "the 36-cell sketch did not decode: send the full summary",
         NeedSummary(cells=36)),
        ("packed", "the same two records as the records vector, packed (section 7b): the "
         "issue's prev is the admit, the batch's first record; under 1 KiB, so as it is",
         Packed(batch=pack_records([recs["admit_alice"], recs["issue_alice"]]))),
        ("packed_deflated", "the same batch deflated (zlib), as a sender deflates a batch of "
         "1 KiB or more; a receiver reads either form, whatever its size",
         Packed(batch=zlib.compress(pack_records([recs["admit_alice"],
                                                  recs["issue_alice"]])))),
        ("records_empty", "a batch with no records", Records(records=())),
        ("records", "the authority's first two records, in causal order",
         Records(records=(recs["admit_alice"], recs["issue_alice"]))),
        ("synced", "the initial delta is complete after 2 records", Synced(sent=2)),
        ("stored", "the first 2 records this session brought are committed; 1 of them is "
         "not held (refused, or parked waiting for its causal past)",
         Stored(received=2, unstored=1)),
        ("ping", "a keepalive", Ping(token=1)),
        ("pong", "the answer, with the largest token (2**63 - 1: every integer of a frame "
         "is below 2**63)", Pong(token=2**63 - 1)),
        ("close", "a reason in UTF-8",
         Close(reason="closing: \u0627\u0644\u0634\u0628\u0643\u0629 busy")),
    ]
    out: list[dict[str, object]] = []
    for name, description, msg in cases:
        body = encode_message(msg)
        out.append({"name": name, "description": description, "type": TYPE_NAMES[type(msg)],
                    "fields": fields_json(msg), "body": body.hex(),
                    "frame": length_prefixed(body).hex()})
    return out


# ---------------------------------------------------------------- invalid bodies

def invalid() -> list[dict[str, object]]:
    def pack(obj: object) -> bytes:
        return bytes(msgpack.packb(obj, use_bin_type=True))

    cases = [
        ("unknown_type", "type 15 does not exist", pack([15, 0]), "unknown frame type 15"),
        ("unknown_type_high", "type 200 does not exist", pack([200, "x"]),
         "unknown frame type 200"),
        ("type_zero", "type 0 does not exist", pack([0]), "unknown frame type 0"),
        ("empty_array", "a frame needs its type", pack([]), "array starting with its type"),
        ("not_array", "a bare integer", pack(5), "array starting with its type"),
        ("map", "maps are never allowed", pack({"type": 1}), "not msgpack"),
        ("trailing_bytes", "a PING followed by a stray byte", pack([6, 1]) + b"\x00",
         "not msgpack"),
        ("truncated", "a PING cut short", pack([6, 2**40])[:-1], "not msgpack"),
        ("stored_arity", "STORED with one count", pack([14, 2]), "STORED takes 2 fields"),
        ("stored_more_unstored", "more records unstored than received", pack([14, 1, 2]),
         "more unstored records than received"),
        ("hello_arity", "HELLO with a third field", pack([1, 1, bytes(32), 0]),
         "HELLO takes 2 fields"),
        ("hello_short_key", "an ephemeral key of 31 bytes", pack([1, 1, bytes(31)]),
         "expected 32 bytes"),
        ("hello_key_as_text", "the key as a string, not bin", pack([1, 1, "k" * 32]),
         "expected 32 bytes"),
        ("auth_bad_role", "an unknown role", pack([2, bytes(32), bytes(64), None, "king"]),
         "unknown role"),
        ("summary_entry", "a summary entry of two fields", pack([3, [[bytes(32), 1]]]),
         "summary entry"),
        ("summary_part_arity", "SUMMARY_PART without its tips", pack([9]),
         "SUMMARY_PART takes 1 fields"),
        ("summary_part_not_list", "SUMMARY_PART tips as one bin", pack([9, b"\x01"]),
         "summary is a list"),
        ("summary_part_entry", "a SUMMARY_PART entry with a 31-byte id",
         pack([9, [[bytes(32), 1, bytes(31)]]]), "expected 32 bytes"),
        ("sketch_ragged", "a sketch of one cell and a byte", pack([10, bytes(26)]),
         "multiple of 3 cells"),
        ("sketch_empty", "a sketch of no cells", pack([10, b""]), "multiple of 3 cells"),
        ("tips_ragged", "listed tips of one element and a byte", pack([13, bytes(21)]),
         "multiple of 20 bytes"),
        ("packed_text", "PACKED with text", pack([12, "x"]), "expected up to"),
        ("need_summary_text", "NEED_SUMMARY with text", pack([11, "36"]), "unsigned integer"),
        ("records_not_list", "records as one bin", pack([4, b"\x01"]), "bounded list"),
        ("record_too_big", f"one record of {MAX_RECORD_BYTES + 1} bytes",
         pack([4, [bytes(MAX_RECORD_BYTES + 1)]]), f"up to {MAX_RECORD_BYTES} bytes"),
        ("synced_negative", "a negative count", pack([5, -1]), "unsigned integer"),
        ("ping_bin", "a token as bytes", pack([6, b"\x01"]), "unsigned integer"),
        ("ping_bool", "true is not an integer", pack([6, True]), "unsigned integer"),
        ("ping_float", "1.0 is not an integer", pack([6, 1.0]), "unsigned integer"),
        ("pong_uint64_max", "a token of 2**64 - 1: integers are below 2**63 (SQLite's "
         "signed 64-bit INTEGER)", pack([7, 2**64 - 1]), "below 2**63"),
        ("summary_seq_too_large", "a summary tip at seq 2**63",
         pack([3, [[bytes(32), 2**63, bytes(32)]]]), "below 2**63"),
        ("synced_too_large", "a count of 2**63", pack([5, 2**63]), "below 2**63"),
        ("tips_seq_too_large", "a listed tip whose seq is 2**63 (its top bit set)",
         pack([13, bytes(8) + (2**63).to_bytes(8, "big") + bytes(4)]),
         "seq is not below 2**63"),
        ("close_long", f"a reason of {MAX_REASON_CHARS + 1} characters",
         pack([8, "x" * (MAX_REASON_CHARS + 1)]), "short text"),
        ("ext_type", "msgpack extension types are never allowed",
         pack([6, msgpack.ExtType(1, b"x")]), "not msgpack"),
    ]
    return [{"name": n, "description": d, "body": b.hex(), "error": e} for n, d, b, e in cases]


# ---------------------------------------------------------------- sealed frames

def sealed() -> dict[str, object]:
    send_key, receive_key = seed("sealed/send"), seed("sealed/receive")
    bodies = [encode_message(Ping(token=1)), encode_message(Synced(sent=0)),
              encode_message(Close(reason="bye"))]
    return {
        "description": "three bodies sealed in order with send_key (counters 0, 1, 2); a "
                       "Channel(send_key, receive_key) seals them to these frames, and "
                       "Channel(receive_key, send_key) opens them only in this order",
        "send_key": send_key.hex(), "receive_key": receive_key.hex(),
        "frames": [{"counter": i, "body": b.hex(), "nonce": i.to_bytes(24, "little").hex(),
                    "frame": seal(send_key, i, b).hex()} for i, b in enumerate(bodies)],
    }


def build() -> dict[str, object]:
    recs = records()
    hs = handshake(recs)
    return {
        "about": "Golden vectors of specs/sync-protocol.md, written by "
                 "tools/gen_frame_vectors.py and checked by tests/test_frames.py. Byte "
                 "strings are lowercase hex; 'body' is a message, 'frame' is the body with "
                 "its 4-byte big-endian length prefix.",
        "protocol_version": PROTOCOL_VERSION,
        "limits": {"max_frame_bytes": MAX_FRAME_BYTES,
                   "handshake_frame_limit": HANDSHAKE_FRAME_LIMIT,
                   "max_summary_entries": MAX_SUMMARY_ENTRIES,
                   "max_summary_total": MAX_SUMMARY_TOTAL,
                   "max_batch_records": MAX_BATCH_RECORDS,
                   "max_reason_chars": MAX_REASON_CHARS,
                   "max_record_bytes": MAX_RECORD_BYTES, "aead_tag_bytes": TAG_BYTES},
        "network": {"name": NETWORK.name, "currency": NETWORK.currency,
                    "authority": NETWORK.authority.hex(), "network_id": NET_ID.hex()},
        "keys": {n: {"seed": seed(n).hex(), "public_key": PUB[n].hex()} for n in KEYS},
        "messages": messages(recs, hs),
        "invalid": invalid(),
        "sealed": sealed(),
        "handshake": hs,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(VECTORS_PATH, render(), argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
