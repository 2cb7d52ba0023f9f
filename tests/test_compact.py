"""PACKED record batches (protocol/compact.py, specs/sync-protocol.md section 7b)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import parse_record, verify_signature
from p2p_ledger.errors import InvalidRecord, RemoteProtocolError
from p2p_ledger.protocol.compact import pack_records, unpack_records
from tests.helpers import T0, World, funded_world

ROOT = Path(__file__).resolve().parent.parent


def busy_world() -> tuple[World, Replica, list[bytes]]:
    """Every device pays every other a few times; returns all records in causal order."""
    world, auth = funded_world()
    names = list(world.device_keys)
    for n in range(4):
        for payer in names:
            for payee in names:
                if payer != payee:
                    world.wallet(payer, auth).pay(world.account(payee), 1_00 + n,
                                                  key=f"{n:04x}{payer}{payee}".encode().hex(),
                                                  now_ms=T0 + n, memo="fuel" if n % 2 else None)
    return world, auth, auth.delta(Frontier({}))


def nothing_held(author: bytes, seq: int) -> bytes | None:
    return None


def test_a_batch_rebuilds_exactly_the_same_records_and_is_much_smaller() -> None:
    _, _, raws = busy_world()
    data = pack_records(raws)
    out = unpack_records(data, nothing_held, max_records=10_000)
    assert [r.raw for r in out] == raws
    assert [r.id for r in out] == [parse_record(r).id for r in raws]
    assert len(data) < 0.5 * sum(map(len, raws))


def test_records_the_peer_holds_travel_as_author_and_seq() -> None:
    _, auth, raws = busy_world()
    early, late = raws[:20], raws[20:]
    where = {}
    for raw in early:
        rec = parse_record(raw)
        where[rec.id] = (rec.record.author, rec.record.seq)
    back = {v: k for k, v in where.items()}
    with_held = pack_records(late, where.get)
    without = pack_records(late)
    assert len(with_held) < len(without)
    out = unpack_records(with_held, lambda a, s: back.get((a, s)), max_records=10_000)
    assert [r.raw for r in out] == late
    with pytest.raises(RemoteProtocolError, match="not held here"):
        unpack_records(with_held, nothing_held, max_records=10_000)
    assert auth.store.has(out[-1].id)


def test_the_vector_is_the_records_vector_packed() -> None:
    vectors = json.loads((ROOT / "specs" / "vectors" / "frames.json").read_text())
    messages = {m["name"]: m for m in vectors["messages"]}
    raws = [bytes.fromhex(r) for r in messages["records"]["fields"]["records"]]
    batch = bytes.fromhex(messages["packed"]["fields"]["batch"])
    assert [r.raw for r in unpack_records(batch, nothing_held, max_records=10)] == raws
    _table, _texts, records = msgpack.unpackb(zlib.decompress(batch))
    assert records[1][2] is None  # the prev: the admit before it in the batch


@pytest.mark.parametrize(("batch", "words"), [
    (b"junk", "not deflate"),
    (zlib.compress(b"\x01"), r"is \[table, texts, records\]"),
    (zlib.compress(msgpack.packb([[b"x"], [], []])), "32-byte values"),
    (zlib.compress(msgpack.packb([[], [], [[4, 0, None, [], 0, [], bytes(64)]]])),
     "table index out of range"),
    (zlib.compress(msgpack.packb([[bytes(32)], [], [[4, 0, None, [], 0, [], bytes(64)]]])),
     "no earlier record"),
    (zlib.compress(msgpack.packb([[bytes(32)], [], [[9, 0, [1, None], [], 0, [], bytes(64)]]])),
     "unknown record kind"),
    (zlib.compress(msgpack.packb([[bytes(32)], [], [[4, 0, [1, None], [-1], 0, [], bytes(64)]]])),
     "later record"),
    (zlib.compress(bytes(17 << 20)), "more than"),
])
def test_malformed_batches_are_refused(batch: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words):
        unpack_records(batch, nothing_held, max_records=100)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_flipped_byte_is_refused_or_fails_verification(data: st.DataObject) -> None:
    world, _, raws = busy_world()
    inner = bytearray(zlib.decompress(pack_records(raws[:12])))
    at = data.draw(st.integers(0, len(inner) - 1))
    inner[at] ^= data.draw(st.integers(1, 255))
    try:
        out = unpack_records(zlib.compress(bytes(inner)), nothing_held, max_records=100)
    except RemoteProtocolError:
        return
    for rec in out:
        if rec.raw not in raws:
            with pytest.raises(InvalidRecord):
                verify_signature(rec, world.network.network_id)
