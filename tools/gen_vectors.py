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
problem named is the only one.

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
from p2p_ledger.core.network import NetworkDescriptor
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
        ("prev_at_seq_1", "seq 1 with a prev",
         _signed(_payload(prev=_enc(good.id))), "vectors", "bad_field"),
        ("refs_unsorted", "two refs in descending order",
         _signed(_payload(refs=_enc(sorted([good.id, bytes(32)], reverse=True)))),
         "vectors", "bad_field"),
        ("too_many_refs", f"{MAX_REFS + 1} refs",
         _signed(_payload(refs=_enc([i.to_bytes(32, "big") for i in range(MAX_REFS + 1)]))),
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
