"""Regenerate specs/vectors/records.json, the golden vectors of the record format.

Every key comes from a fixed 32-byte seed and Ed25519 signatures are deterministic
(RFC 8032), so running this again gives the same bytes. tests/test_vectors.py checks
both that the committed file equals what `render()` returns and that the records in it
encode and decode byte for byte; a change to the wire format therefore shows up as a
diff of this file, to be made on purpose and explained in specs/records.md.

The valid vectors form one small, coherent ledger (an authority, a device and a hub),
one record of each kind at least, so they can also be replayed into a replica. The
invalid vectors each break exactly one rule and name the `RecordProblem` that
`open_record` must raise; where the bytes are signed, they are signed correctly, so the
problem named is the only one. The `descriptors`, `signatures` and `ledger_rules`
sections hold network descriptor files and their ids (specs/network.md), records
whose Ed25519 key or signature libsodium refuses (specs/records.md section 11), and
records judged by a replica holding given records (ledger rules that need other
records: an unknown tier, the hlc of a ref).

Run `python tools/gen_vectors.py` to rewrite the file, `--check` to compare only.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nacl.signing

from p2p_ledger.core.hlc import hlc_ms, pack_hlc
from p2p_ledger.core.ids import Account, device_id
from p2p_ledger.core.money import MAX_AMOUNT_MINOR
from p2p_ledger.core.network import DEFAULT_TIERS, NetworkDescriptor, Tier
from p2p_ledger.core.records import (
    MAX_MEMO_CHARS,
    MAX_RECORD_BYTES,
    MAX_REFS,
    SIGNATURE_CONTEXT,
    Admit,
    Body,
    Checkpoint,
    Issue,
    Meta,
    Record,
    Redeem,
    Revoke,
    Role,
    SignedRecord,
    Transfer,
    canonical_cbor,
    record_id,
    sign_record,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ed25519_vectors as ed
from vectorfile import write_or_check

VECTORS_PATH = Path(__file__).resolve().parent.parent / "specs" / "vectors" / "records.json"

T0 = 1_763_900_000_000  # 2025-11-23T12:13:20Z in ms: the vectors' fixed "now"
NAMES = ("authority", "alice", "bob")


def seed(name: str) -> bytes:
    return hashlib.blake2b(f"p2p-ledger vectors/{name}".encode(), digest_size=32).digest()


KEYS = {n: nacl.signing.SigningKey(seed(n)) for n in NAMES}
PUB = {n: bytes(k.verify_key) for n, k in KEYS.items()}
NETWORKS = {
    "vectors": NetworkDescriptor(name="vectors", currency="AED", authority=PUB["authority"]),
    # Same authority, another name: a record signed for "vectors" must not verify here.
    "other": NetworkDescriptor(name="other", currency="AED", authority=PUB["authority"]),
}
NET_ID = NETWORKS["vectors"].network_id


# ---------------------------------------------------------------- JSON forms

def cbor_json(value: object) -> object:
    """A decoded CBOR value as JSON: byte strings as lowercase hex, all else as is."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [cbor_json(v) for v in value]
    if isinstance(value, dict):
        return {k: cbor_json(v) for k, v in value.items()}
    return value


def record_json(r: Record) -> dict[str, object]:
    return {"kind": r.kind.label, "kind_number": int(r.kind), "author": r.author.hex(),
            "seq": r.seq, "prev": None if r.prev is None else r.prev.hex(),
            "refs": [x.hex() for x in r.refs], "hlc": r.hlc,
            "body": cbor_json(r.body.to_cbor())}


def valid_json(name: str, description: str, author: str, s: SignedRecord) -> dict[str, object]:
    return {
        "name": name, "description": description, "network": "vectors",
        "network_id": NET_ID.hex(), "author": author, "author_seed": seed(author).hex(),
        "author_device_id": device_id(PUB[author]),
        "hlc_ms": hlc_ms(s.record.hlc), "hlc_counter": s.record.hlc & 0xFFFF,
        "record": record_json(s.record), "payload": s.payload.hex(),
        "signature": s.signature.hex(), "signed_record": s.raw.hex(), "id": s.id.hex(),
    }


# ---------------------------------------------------------------- valid records

class _Chains:
    """Signs records of several authors, keeping each author's seq and prev."""

    def __init__(self) -> None:
        self.heads: dict[str, SignedRecord] = {}
        self.out: list[dict[str, object]] = []
        self.by_name: dict[str, SignedRecord] = {}

    def add(self, name: str, description: str, author: str, body: Body, *, hlc: int,
            refs: tuple[str, ...] = ()) -> None:
        head = self.heads.get(author)
        record = Record(author=PUB[author], seq=1 if head is None else head.record.seq + 1,
                        prev=None if head is None else head.id,
                        refs=tuple(sorted(self.by_name[r].id for r in refs)), hlc=hlc, body=body)
        s = sign_record(record, KEYS[author], NET_ID)
        self.heads[author] = self.by_name[name] = s
        self.out.append(valid_json(name, description, author, s))


def build_valid() -> _Chains:
    alice, bob = Account(device=PUB["alice"]), Account(device=PUB["bob"])
    c = _Chains()
    c.add("admit_device", "authority seq 1: admits alice as a device, with every optional "
          "field set", "authority",
          Admit(device=PUB["alice"], role=Role.DEVICE, tier=1, offline_limit=500_00,
                expires=T0 + 365 * 24 * 3600 * 1000), hlc=pack_hlc(T0))
    c.add("admit_hub", "authority seq 2: admits bob as a hub; no optional fields, tier 0",
          "authority", Admit(device=PUB["bob"], role=Role.HUB), hlc=pack_hlc(T0, 1))
    c.add("issue", "authority seq 3: issues 100.00 AED to alice/main", "authority",
          Issue(to=alice, amount=100_00, key="cash-in-0001"), hlc=pack_hlc(T0 + 1_000))
    c.add("transfer_with_memo", "alice seq 1: refs her admit and the issue (claiming it) and "
          "pays 12.50 AED to bob/main, with a non-ASCII memo", "alice",
          Transfer(from_="main", to=bob, amount=12_50, key="pay-0001",
                   memo="\u0648\u0642\u0648\u062f pump 3 \u2014 12.5 L"),
          hlc=pack_hlc(T0 + 2_000), refs=("admit_device", "issue"))
    c.add("redeem", "alice seq 2: cashes out 20.00 AED; hlc counter 1 in the same ms",
          "alice", Redeem(from_="main", amount=20_00, key="cash-out-0001"),
          hlc=pack_hlc(T0 + 2_000, 1))
    c.add("meta", "alice seq 3: sets the label of alice/main (last writer wins)", "alice",
          Meta(account="main", field="label", value="Truck 7"), hlc=pack_hlc(T0 + 3_000))
    c.add("transfer_no_memo", "bob seq 1: refs his admit and alice's transfer (claiming it) "
          "and pays 5.00 AED to the named account alice/savings, without a memo", "bob",
          Transfer(from_="main", to=Account(device=PUB["alice"], name="savings"),
                   amount=5_00, key="fwd-1"),
          hlc=pack_hlc(T0 + 4_000), refs=("admit_hub", "transfer_with_memo"))
    c.add("checkpoint", "bob (a hub) seq 2: a settlement checkpoint: he has seen alice's "
          "chain up to her seq 3", "bob",
          Checkpoint(covers=((PUB["alice"], 3, c.by_name["meta"].id),),
                     state_hash=hashlib.blake2b(b"vectors state", digest_size=32).digest()),
          hlc=pack_hlc(T0 + 4_500))
    c.add("revoke", "authority seq 4: revokes alice's certificate after her seq 3",
          "authority", Revoke(device=PUB["alice"], after_seq=3), hlc=pack_hlc(T0 + 5_000))
    return c


# ---------------------------------------------------------------- verdicts

def build_verdicts(c: _Chains) -> list[dict[str, object]]:
    """Records that continue the valid ledger and get a verdict other than `applied`,
    each with the verdict and reason every replica must give it (specs/ledger.md)."""
    start = len(c.out)
    expected: list[tuple[str, str]] = []

    def add(name: str, description: str, author: str, body: Body, *, hlc: int,
            verdict: str, reason: str) -> None:
        c.add(name, description, author, body, hlc=hlc)
        expected.append((verdict, reason))

    bob = Account(device=PUB["bob"])
    add("issue_by_a_device", "bob seq 3: a hub issues money to himself, which only the "
        "authority may do; rejected, and its idempotency key is used up", "bob",
        Issue(to=bob, amount=1_000_00, key="bob-0001"), hlc=pack_hlc(T0 + 6_000),
        verdict="rejected", reason="only the network authority may issue")
    add("transfer_reusing_a_rejected_key", "bob seq 4: a transfer he could pay (1.00 of "
        "his 7.50 AED) with the key of his rejected issue: a duplicate, no effect", "bob",
        Transfer(from_="main", to=Account(device=PUB["alice"]), amount=1_00, key="bob-0001"),
        hlc=pack_hlc(T0 + 7_000),
        verdict="duplicate", reason="idempotency key already used by this author")
    out = c.out[start:]
    del c.out[start:]  # these are not part of the all-applied valid ledger
    return [{**v, "verdict": verdict, "reason": reason}
            for v, (verdict, reason) in zip(out, expected, strict=True)]


# ---------------------------------------------------------------- invalid records
# Payloads are assembled from encoded parts so that one part at a time can be broken.

def _enc(value: object) -> bytes:
    return canonical_cbor(value)


def _map(items: list[tuple[str, bytes]], *, sort: bool = True) -> bytes:
    """A CBOR map from (text key, encoded value) pairs; canonical order unless told."""
    pairs = [(_enc(k), v) for k, v in items]
    if sort:
        pairs.sort(key=lambda kv: kv[0])  # bytewise by encoded key (RFC 8949 4.2.1)
    return bytes([0xA0 + len(pairs)]) + b"".join(k + v for k, v in pairs)


def _payload(*, kind: bytes = b"\x04", author: bytes | None = None, seq: bytes = b"\x01",
             prev: bytes = b"\xf6", refs: bytes = b"\x80", hlc: bytes | None = None,
             body: bytes | None = None) -> bytes:
    """A seq-1 transfer of alice's, with any encoded part replaced."""
    author = _enc(PUB["alice"]) if author is None else author
    hlc = _enc(pack_hlc(T0)) if hlc is None else hlc
    body = _transfer_body() if body is None else body
    return b"\x87" + kind + author + seq + prev + refs + hlc + body


def _transfer_body(**replace: bytes) -> bytes:
    items = {"from": _enc("main"), "to": _enc([PUB["bob"], "main"]), "amount": _enc(1),
             "key": _enc("k")}
    items.update(replace)
    return _map(list(items.items()))


def _signed(payload: bytes, signer: str = "alice", network: bytes = NET_ID) -> bytes:
    sig = KEYS[signer].sign(SIGNATURE_CONTEXT + network + payload).signature
    return canonical_cbor([payload, sig])


def _bstr_long(data: bytes) -> bytes:
    """A byte string with a needlessly long (2-byte) length header."""
    return b"\x59" + len(data).to_bytes(2, "big") + data


def build_invalid(valid: _Chains) -> list[dict[str, object]]:
    good = valid.by_name["transfer_with_memo"]
    flipped = good.raw[:-1] + bytes([good.raw[-1] ^ 0x01])
    dup_amount = b"\xa5" + b"".join(_enc(k) + v for k, v in [
        ("to", _enc([PUB["bob"], "main"])), ("key", _enc("k")), ("from", _enc("main")),
        ("amount", _enc(1)), ("amount", _enc(2))])
    cases: list[tuple[str, str, bytes, str, str]] = [
        ("bad_signature", "the transfer_with_memo vector with the last signature bit flipped",
         flipped, "vectors", "bad_signature"),
        ("other_network", "the transfer_with_memo vector, checked in another network: the "
         "network id is part of the signed message", good.raw, "other", "bad_signature"),
        ("wrong_signer", "a well-formed payload authored by alice but signed by bob",
         _signed(_payload(), signer="bob"), "vectors", "bad_signature"),
        ("oversize", f"{MAX_RECORD_BYTES + 1} zero bytes: refused before decoding",
         bytes(MAX_RECORD_BYTES + 1), "vectors", "oversize"),
        ("truncated", "the transfer_with_memo vector without its last byte",
         good.raw[:-1], "vectors", "malformed"),
        ("not_an_envelope", "a CBOR array of three items instead of [payload, signature]",
         canonical_cbor([good.payload, good.signature, b""]), "vectors", "malformed"),
        ("indefinite_length", "the envelope as an indefinite-length array",
         b"\x9f" + good.raw[1:] + b"\xff", "vectors", "malformed"),
        ("duplicate_key", "a transfer body with the key \"amount\" twice",
         _signed(_payload(body=dup_amount)), "vectors", "malformed"),
        ("missing_field", "a transfer body without its idempotency \"key\"",
         _signed(_payload(body=_map([("from", _enc("main")), ("amount", _enc(1)),
                                     ("to", _enc([PUB["bob"], "main"]))]))),
         "vectors", "malformed"),
        ("trailing_bytes", "the transfer_with_memo vector followed by one zero byte",
         good.raw + b"\x00", "vectors", "non_canonical"),
        ("long_length_header", "the envelope with the signature's length in two bytes",
         b"\x82" + canonical_cbor(good.payload) + _bstr_long(good.signature),
         "vectors", "non_canonical"),
        ("long_integer", "seq 1 encoded in five bytes (1a 00000001)",
         _signed(_payload(seq=b"\x1a\x00\x00\x00\x01")), "vectors", "non_canonical"),
        ("map_order", "a transfer body whose keys are not in canonical order",
         _signed(_payload(body=_map([("amount", _enc(1)), ("from", _enc("main")),
                                     ("key", _enc("k")), ("to", _enc([PUB["bob"], "main"]))],
                                    sort=False))), "vectors", "non_canonical"),
        ("tagged_amount", "amount 1 written as a tag-2 bignum (c2 41 01)",
         _signed(_payload(body=_transfer_body(amount=b"\xc2\x41\x01"))),
         "vectors", "non_canonical"),
        ("unknown_kind", "kind 8",
         _signed(_payload(kind=b"\x08")), "vectors", "unknown_kind"),
        ("unknown_field", "a transfer body with an extra \"fee\" field",
         _signed(_payload(body=_transfer_body(fee=_enc(1)))), "vectors", "unknown_field"),
        ("zero_amount", "a transfer of 0",
         _signed(_payload(body=_transfer_body(amount=_enc(0)))), "vectors", "bad_amount"),
        ("amount_over_limit", f"a transfer of {MAX_AMOUNT_MINOR + 1} (limit + 1)",
         _signed(_payload(body=_transfer_body(amount=_enc(MAX_AMOUNT_MINOR + 1)))),
         "vectors", "bad_amount"),
        ("float_amount", "amount 1.0 as a CBOR float (f9 3c00)",
         _signed(_payload(body=_transfer_body(amount=b"\xf9\x3c\x00"))),
         "vectors", "bad_amount"),
        ("float_hlc", "hlc as a CBOR float",
         _signed(_payload(hlc=b"\xf9\x3c\x00")), "vectors", "bad_field"),
        ("short_author", "an author of 31 bytes",
         _signed(_payload(author=_enc(PUB["alice"][:31]))), "vectors", "bad_field"),
        ("seq_zero", "seq 0",
         _signed(_payload(seq=b"\x00")), "vectors", "bad_field"),
        ("hlc_too_large", "hlc 2**63: every integer of a record is below 2**63 (the "
         "store's SQLite INTEGER is signed 64-bit)",
         _signed(_payload(hlc=_enc(2**63))), "vectors", "bad_field"),
        ("prev_at_seq_1", "seq 1 with a prev",
         _signed(_payload(prev=_enc(good.id))), "vectors", "bad_field"),
        ("refs_unsorted", "two refs in descending order",
         _signed(_payload(refs=_enc(sorted([good.id, bytes(32)], reverse=True)))),
         "vectors", "bad_field"),
        ("too_many_refs", f"{MAX_REFS + 1} refs",
         _signed(_payload(refs=_enc([i.to_bytes(32, "big") for i in range(MAX_REFS + 1)]))),
         "vectors", "bad_field"),
        ("short_ref", "a ref of 31 bytes: refs are checked to be byte strings with the "
         "head fields, their size with the cross-field rules (records.md section 9)",
         _signed(_payload(refs=_enc([bytes(31)]))), "vectors", "bad_field"),
        ("short_ref_and_zero_amount", "a ref of 31 bytes and an amount of 0: the body is "
         "checked before the size of a ref, so the problem is the amount",
         _signed(_payload(refs=_enc([bytes(31)]), body=_transfer_body(amount=_enc(0)))),
         "vectors", "bad_amount"),
        ("ref_not_bytes_and_zero_amount", "a ref that is the integer 1 and an amount of 0: "
         "that refs hold byte strings is checked before the body",
         _signed(_payload(refs=b"\x81\x01", body=_transfer_body(amount=_enc(0)))),
         "vectors", "bad_field"),
        ("bad_account_name", "a transfer to an account named \"Main\" (upper case)",
         _signed(_payload(body=_transfer_body(to=_enc([PUB["bob"], "Main"])))),
         "vectors", "bad_field"),
        ("memo_too_long", f"a memo of {MAX_MEMO_CHARS + 1} characters",
         _signed(_payload(body=_transfer_body(memo=_enc("x" * (MAX_MEMO_CHARS + 1))))),
         "vectors", "bad_field"),
    ]
    out = []
    for name, description, raw, network, problem in cases:
        out.append({"name": name, "description": description, "network": network,
                    "network_id": NETWORKS[network].network_id.hex(),
                    "signed_record": raw.hex(), "problem": problem,
                    "record_id": None if len(raw) > MAX_RECORD_BYTES else record_id(raw).hex()})
    return out


# ---------------------------------------------------------------- network descriptors
# specs/network.md: the descriptor file `p2p-ledger network export` writes, the CBOR
# its network id hashes, and files a reader must refuse.

TIERED = NetworkDescriptor(name="vectors-tiered", currency="AED", authority=PUB["authority"],
                           tiers=DEFAULT_TIERS)
CUSTOM = NetworkDescriptor(
    name="Souq \u0627\u0644\u0630\u0647\u0628 cash", currency="KWD",
    authority=PUB["authority"],
    tiers=(Tier(per_payment=250_000, unsettled=1_000_000, holding=1_000_000),))
DESCRIPTORS = {"vectors": NETWORKS["vectors"], "tiered": TIERED, "custom": CUSTOM}


def descriptor_cbor(d: NetworkDescriptor) -> bytes:
    fields: dict[str, object] = {"name": d.name, "currency": d.currency,
                                 "authority": d.authority, "version": 1}
    if d.tiers:
        fields["tiers"] = [[t.per_payment, t.unsettled, t.holding] for t in d.tiers]
    return canonical_cbor(fields)


def _edited(d: NetworkDescriptor, **changes: object) -> str:
    data = json.loads(d.to_json())
    data.update(changes)
    return json.dumps(data, indent=2) + "\n"


def build_descriptors() -> dict[str, object]:
    tiered = json.loads(TIERED.to_json())
    same = [
        ("vectors", "compact JSON, members in another order, the device id in upper case "
         "with spaces around it", json.dumps({
             "authority": f"  {device_id(PUB['authority']).upper()} ", "name": "vectors",
             "currency": "AED", "network_id": NETWORKS["vectors"].network_id.hex(),
             "version": 1, "format": "p2p-ledger-network"}, separators=(",", ":"))),
        ("vectors", "an empty tier table: the same as none", _edited(NETWORKS["vectors"],
                                                                   tiers=[])),
        ("tiered", "members the format does not define, at the top and in a tier: ignored, "
         "and not hashed", _edited(TIERED, comment="made for the vectors", tiers=[
             {**t, "label": f"tier {i}"} for i, t in enumerate(tiered["tiers"])])),
    ]
    wrong_tiers = [dict(t) for t in tiered["tiers"]]
    wrong_tiers[0]["per_payment"] = 0
    float_tiers = [dict(t) for t in tiered["tiers"]]
    float_tiers[1]["holding"] = 1000000.0
    refused = [
        ("edited_name", "the name changed, the network id not", _edited(
            NETWORKS["vectors"], name="vectors2")),
        ("edited_tier", "a tier's limit changed, the network id not", _edited(
            TIERED, tiers=[{**tiered["tiers"][0], "holding": 300000}, *tiered["tiers"][1:]])),
        ("tiers_removed", "the tier table left out, the network id not", _edited(
            TIERED, tiers=[])),
        ("wrong_format", "format is not p2p-ledger-network", _edited(
            NETWORKS["vectors"], format="p2p-ledger-bundle")),
        ("version_2", "version 2", _edited(NETWORKS["vectors"], version=2)),
        ("version_true", "version written as true (JSON booleans are not integers)",
         _edited(NETWORKS["vectors"], version=True)),
        ("unknown_currency", "a currency the format does not list (its id is correct)",
         _with_id("vectors", currency="XAU")),
        ("name_not_text", "the name is a list (its id is correct)", _with_id(["vectors"])),
        ("name_empty", "an empty name (its id is correct)", _with_id("")),
        ("name_too_long", "a name of 65 characters (its id is correct)", _with_id("n" * 65)),
        ("name_lone_surrogate", "a name holding the JSON escape \\ud800, a lone surrogate "
         "that is no Unicode character", _edited(NETWORKS["vectors"], name="v\ud800")),
        ("zero_limit", "a tier limit of 0", _edited(TIERED, tiers=wrong_tiers)),
        ("float_limit", "a tier limit written as 1000000.0", _edited(TIERED,
                                                                      tiers=float_tiers)),
        ("too_many_tiers", "17 tiers (the most is 16; its id is correct)",
         _with_id("vectors", tiers=DEFAULT_TIERS[:1] * 17)),
        ("duplicate_member", "the member \"name\" twice, the last one the name the id "
         "was computed with", NETWORKS["vectors"].to_json().replace(
             '"name": "vectors"', '"name": "other",\n  "name": "vectors"')),
        ("bad_device_id", "the authority's device id with one character changed", _edited(
            NETWORKS["vectors"], authority=_typo(device_id(PUB["authority"])))),
    ]
    return {
        "exported": [{"name": n, "json": d.to_json(), "descriptor_cbor": descriptor_cbor(d).hex(),
                      "network_id": d.network_id.hex()} for n, d in DESCRIPTORS.items()],
        "same_descriptor": [{"same_as": n, "description": text, "json": j}
                            for n, text, j in same],
        "refused": [{"name": n, "description": text, "json": j} for n, text, j in refused],
    }


def _with_id(name: object, currency: str = "AED", tiers: tuple[Tier, ...] = ()) -> str:
    """A descriptor file for any name, currency and tiers, with the network id they
    hash to, so that the only thing wrong with it is what the case says."""
    fields: dict[str, object] = {"name": name, "currency": currency,
                                 "authority": PUB["authority"], "version": 1}
    data: dict[str, object] = {"format": "p2p-ledger-network", "version": 1, "network_id": "",
                               "name": name, "currency": currency,
                               "authority": device_id(PUB["authority"])}
    if tiers:
        fields["tiers"] = [[t.per_payment, t.unsettled, t.holding] for t in tiers]
        data["tiers"] = [{"per_payment": t.per_payment, "unsettled": t.unsettled,
                          "holding": t.holding} for t in tiers]
    nid = hashlib.blake2b(canonical_cbor(fields), digest_size=32, person=b"p2pl-network")
    data["network_id"] = nid.hexdigest()
    return json.dumps(data, indent=2) + "\n"


def _typo(text: str) -> str:
    return text[:10] + ("b" if text[10] == "a" else "a") + text[11:]


# ---------------------------------------------------------------- Ed25519 edge cases
# specs/records.md section 11: keys and signatures libsodium refuses although the plain
# equation [S]B = R + [k]A holds, and one mixed-order key it accepts.

def _sig_message(payload: bytes) -> bytes:
    return SIGNATURE_CONTEXT + NET_ID + payload


def _sig_payload(author: bytes, attempt: int) -> bytes:
    return _payload(author=_enc(author), body=_transfer_body(key=_enc(f"sig-{attempt}")))


def build_signatures() -> list[dict[str, object]]:
    alice_seed = seed("alice")
    good_payload = _sig_payload(PUB["alice"], 0)
    good_sig = KEYS["alice"].sign(_sig_message(good_payload)).signature
    args = (_sig_payload, _sig_message)
    cases: list[tuple[str, str, ed.Case, list[str]]] = [
        ("key_identity", "the key is the identity point (order 1): R = [s]B, S = s satisfies "
         "the equation for every message", ed.any_key_identity(ed.IDENTITY_ENC, *args),
         ["key_small_order"]),
        ("key_order_8", "the key is a point of order 8", ed.key_order_8(*args),
         ["key_small_order"]),
        ("key_identity_non_canonical", "the identity key encoded with y = p + 1",
         ed.any_key_identity(ed.IDENTITY_NON_CANONICAL, *args),
         ["key_non_canonical", "key_small_order"]),
        ("key_negative_zero", "the identity key with the sign bit of x = 0 set",
         ed.any_key_identity(ed.IDENTITY_NEGATIVE_ZERO, *args),
         ["key_non_canonical", "key_small_order"]),
        ("r_identity", "alice's key; R is the identity point, S = k*a",
         ed.r_small_order(alice_seed, PUB["alice"], *args, r=ed.IDENTITY_ENC),
         ["r_small_order"]),
        ("r_identity_non_canonical", "alice's key; R is the identity encoded with "
         "y = p + 1, S = k*a", ed.r_small_order(alice_seed, PUB["alice"], *args,
                                                r=ed.IDENTITY_NON_CANONICAL),
         ["r_non_canonical", "r_small_order"]),
        ("r_order_8", "a mixed-order key; R is a point of order 8, S = k*a",
         ed.r_order_8(alice_seed, *args), ["r_small_order"]),
        ("s_not_reduced", "alice's correct signature with S + L in place of S",
         (PUB["alice"], good_payload, ed.s_plus_l(good_sig)), ["s_not_reduced"]),
        ("key_mixed_order_cofactored_only", "a mixed-order key ([a]B plus a point of order "
         "8) signing normally: only the cofactored equation holds (k mod 8 != 0)",
         ed.key_mixed_order(alice_seed, *args, cofactorless=False), ["equation"]),
        ("key_mixed_order_accepted", "the same mixed-order key, a signature whose k is a "
         "multiple of 8: the plain equation holds and libsodium accepts it",
         ed.key_mixed_order(alice_seed, *args, cofactorless=True), []),
    ]
    out = []
    for name, description, (author, payload, sig), breaks in cases:
        raw = canonical_cbor([payload, sig])
        out.append({"name": name, "description": description, "network": "vectors",
                    "network_id": NET_ID.hex(), "author": author.hex(),
                    "payload": payload.hex(), "signature": sig.hex(),
                    "signed_record": raw.hex(), "record_id": record_id(raw).hex(),
                    "breaks": breaks, "accepted": not breaks})
    return out


# ---------------------------------------------------------------- ledger rules
# Rules that need other records: each case is a record received by a replica that
# holds the `given` records (valid vectors or earlier cases, in that order).

def build_ledger_rules(valid: _Chains) -> list[dict[str, object]]:
    by_name = dict(valid.by_name)
    out: list[dict[str, object]] = []

    def add(name: str, description: str, network: str, author: str, seq: int,
            prev: str | None, refs: tuple[str, ...], hlc: int, body: Body,
            given: list[str], expect: dict[str, object]) -> None:
        nid = DESCRIPTORS[network].network_id
        record = Record(author=PUB[author], seq=seq,
                        prev=None if prev is None else by_name[prev].id,
                        refs=tuple(sorted(by_name[r].id for r in refs)), hlc=hlc, body=body)
        s = sign_record(record, KEYS[author], nid)
        by_name[name] = s
        entry = valid_json(name, description, author, s)
        entry.update(network=network, network_id=nid.hex(), given=given, expect=expect)
        out.append(entry)

    add("admit_highest_tier", "authority seq 1 in the tiered network: admits alice at "
        "tier 2, the last of DEFAULT_TIERS", "tiered", "authority", 1, None, (),
        pack_hlc(T0), Admit(device=PUB["alice"], tier=2), [],
        {"verdict": "applied", "reason": None})
    add("admit_unknown_tier", "authority seq 2: admits bob at tier 3, which the tiered "
        "network lacks", "tiered", "authority", 2, "admit_highest_tier", (),
        pack_hlc(T0 + 1_000), Admit(device=PUB["bob"], tier=3), ["admit_highest_tier"],
        {"verdict": "rejected", "reason": "the network has no tier 3"})
    add("refs_rejected_admit", "bob seq 1 refs the rejected admit of his key: he is not "
        "admitted", "tiered", "bob", 1, None, ("admit_unknown_tier",), pack_hlc(T0 + 2_000),
        Meta(account="main", field="label", value="Hub"),
        ["admit_highest_tier", "admit_unknown_tier"], {"problem": "not_admitted"})
    issue = by_name["issue"]
    transfer = Transfer(from_="main", to=Account(device=PUB["bob"]), amount=12_50,
                        key="pay-0001")
    given = ["admit_device", "admit_hub", "issue"]
    add("hlc_equal_to_a_ref", "alice seq 1 refs her admit and the issue; its hlc is above "
        "the admit's but equal to the issue's", "vectors", "alice", 1, None,
        ("admit_device", "issue"), issue.record.hlc, transfer, given,
        {"problem": "broken_chain"})
    add("hlc_below_a_ref", "as hlc_equal_to_a_ref, with an hlc between the admit's and "
        "the issue's", "vectors", "alice", 1, None, ("admit_device", "issue"),
        pack_hlc(T0 + 500), transfer, given, {"problem": "broken_chain"})
    return out


# ---------------------------------------------------------------- the file

def build() -> dict[str, object]:
    valid = build_valid()
    verdicts = build_verdicts(valid)
    return {
        "format": "p2p-ledger record vectors",
        "version": 1,
        "generator": "tools/gen_vectors.py",
        "notes": [
            "Byte strings are lowercase hex. Keys are nacl.signing.SigningKey(seed).",
            "record.body is the CBOR body map with byte strings as hex; an account is "
            "[device, name].",
            "hlc = hlc_ms << 16 | hlc_counter. The valid vectors, applied in order, form a "
            "ledger in which every record has the verdict applied.",
            "The verdict vectors continue that ledger, in order, after the valid ones; "
            "each must get its verdict and reason.",
            "Each invalid vector must make open_record(signed_record, network_id) raise "
            "InvalidRecord with the given problem; record_id is the id the error names.",
        ],
        "constants": {
            "signature_context": SIGNATURE_CONTEXT.hex(),
            "max_record_bytes": MAX_RECORD_BYTES, "max_refs": MAX_REFS,
            "max_amount_minor": MAX_AMOUNT_MINOR,
        },
        "networks": {
            n: {"name": d.name, "currency": d.currency, "authority": d.authority.hex(),
                "authority_device_id": device_id(d.authority),
                "descriptor_cbor": canonical_cbor({"name": d.name, "currency": d.currency,
                                                   "authority": d.authority,
                                                   "version": 1}).hex(),
                "network_id": d.network_id.hex()}
            for n, d in NETWORKS.items()},
        "keys": {n: {"seed": seed(n).hex(), "public_key": PUB[n].hex(),
                     "device_id": device_id(PUB[n])} for n in NAMES},
        "descriptors": build_descriptors(),
        "signatures": build_signatures(),
        "ledger_rules": build_ledger_rules(valid),
        "valid": valid.out,
        "verdicts": verdicts,
        "invalid": build_invalid(valid),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(VECTORS_PATH, render(), argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
