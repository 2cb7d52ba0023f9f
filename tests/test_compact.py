"""PACKED record batches (protocol/compact.py, specs/sync-protocol.md section 7b)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import parse_record, verify_signature
from p2p_ledger.errors import InvalidRecord, RemoteProtocolError
from p2p_ledger.protocol.compact import DEFLATE_FROM, pack_records, unpack_records
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


def held_split(raws: list[bytes]) -> tuple[list[bytes], dict[bytes, tuple[bytes, int]],
                                           dict[tuple[bytes, int], bytes]]:
    """The records after the first 20, with where the first 20 are, by id and back: as
    a peer holding the first 20 would answer `held` and `lookup`."""
    where = {}
    for raw in raws[:20]:
        rec = parse_record(raw)
        where[rec.id] = (rec.record.author, rec.record.seq)
    return raws[20:], where, {v: k for k, v in where.items()}


def test_records_the_peer_holds_travel_as_author_and_seq() -> None:
    _, auth, raws = busy_world()
    late, where, back = held_split(raws)
    with_held = pack_records(late, where.get)
    without = pack_records(late)
    assert len(with_held) < len(without)
    out = unpack_records(with_held, lambda a, s: back.get((a, s)), max_records=10_000)
    assert [r.raw for r in out] == late
    with pytest.raises(RemoteProtocolError, match="not held here"):
        unpack_records(with_held, nothing_held, max_records=10_000)
    assert auth.store.has(out[-1].id)


def test_the_vectors_are_the_records_vector_packed_as_it_is_and_deflated() -> None:
    vectors = json.loads((ROOT / "specs" / "vectors" / "frames.json").read_text())
    messages = {m["name"]: m for m in vectors["messages"]}
    raws = [bytes.fromhex(r) for r in messages["records"]["fields"]["records"]]
    batch = bytes.fromhex(messages["packed"]["fields"]["batch"])
    deflated = bytes.fromhex(messages["packed_deflated"]["fields"]["batch"])
    assert zlib.decompress(deflated) == batch  # under 1 KiB: sent as it is
    for data in (batch, deflated):
        assert [r.raw for r in unpack_records(data, nothing_held, max_records=10)] == raws
    _table, _texts, records = msgpack.unpackb(batch)
    assert records[1][2] is None  # the prev: the admit before it in the batch


def test_a_batch_is_deflated_from_1_kib() -> None:
    _, _, raws = busy_world()
    for n in range(1, len(raws) + 1):
        data = pack_records(raws[:n])
        plain = data if data.startswith(b"\x93") else zlib.decompress(data)
        assert (data is plain) == (len(plain) < DEFLATE_FROM)
        assert [r.raw for r in unpack_records(data, nothing_held, max_records=n)] == raws[:n]
        # either form is read, whatever its size: deflating is the sender's choice
        other = zlib.compress(plain) if data is plain else plain
        assert [r.raw for r in unpack_records(other, nothing_held, max_records=n)] == raws[:n]


@pytest.mark.parametrize(("batch", "words"), [
    (b"junk", "not deflate"),
    (b"\x93\x90\x90", "not msgpack"),  # [[], [], ...] cut short, as it is
    (b"\x93\x90\x90\x90junk", "not msgpack"),  # more after the batch
    (msgpack.packb([[b"x"], [], []]), "32-byte values"),
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


def sqlite_lookup(author: bytes, seq: int) -> bytes | None:
    """Binds seq as the store's `ids_at` does: SQLite INTEGER is signed 64-bit."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("SELECT ?", (seq,))
    return None


def packed(*records: list[object]) -> bytes:
    return zlib.compress(msgpack.packb([[bytes(32)], ["main", "device"], list(records)]))


SIG = bytes(64)


@pytest.mark.parametrize("batch", [
    # a prev or a ref named as (author, seq) held here, at seq 2**63 and 2**64 - 1
    pytest.param(packed([5, 0, [2, [0, 2**63]], [], 1, [0, 100, "k"], SIG]), id="prev-held-at"),
    pytest.param(packed([5, 0, [2, 0], [[0, 2**64 - 1]], 1, [0, 100, "k"], SIG]),
                 id="ref-held-at"),
    pytest.param(packed([5, 0, [2**63, 0], [], 1, [0, 100, "k"], SIG]), id="link-seq"),
    pytest.param(packed([5, 0, [1, None], [], 2**63, [0, 100, "k"], SIG]), id="hlc"),
    pytest.param(packed([5, 0, [1, None], [], 2**62, [0, 100, "k"], SIG],
                        [5, 0, None, [], 2**62, [0, 100, "k"], SIG]), id="hlc-sum"),
    pytest.param(packed([1, 0, [1, None], [], 1, [0, 1, 2**63, None, None], SIG]), id="tier"),
    pytest.param(packed([1, 0, [1, None], [], 1, [0, 1, 0, None, 2**63], SIG]), id="expires"),
    pytest.param(packed([2, 0, [1, None], [], 1, [0, 2**63], SIG]), id="after-seq"),
    pytest.param(packed([7, 0, [1, None], [], 1, [[[0, 2**63, 0]], 0], SIG]), id="cover-seq"),
])
def test_an_integer_of_2_to_the_63_or_more_is_a_malformed_frame(batch: bytes) -> None:
    """Refused as the peer's fault, before the store sees it: a seq of 2**63 once raised
    OverflowError in SQLite, out of the session and out of `serve`."""
    with pytest.raises(RemoteProtocolError, match=r"2\*\*63"):
        unpack_records(batch, sqlite_lookup, max_records=100)


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
