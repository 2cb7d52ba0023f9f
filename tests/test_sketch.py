"""Summary sketches (protocol/sketch.py, specs/sync-protocol.md section 7a): the IBLT
itself, its decoding into the peer's tips, and sessions that use it."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.store import Tip
from p2p_ledger.protocol import sketch as sketch_module
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.frames import (
    NeedSummary,
    Summary,
    SummarySketch,
    SummaryTips,
    encode_message,
)
from p2p_ledger.protocol.session import PeerSummary
from p2p_ledger.protocol.sketch import (
    CELL_BYTES,
    ELEMENT_BYTES,
    MIN_SKETCH_CELLS,
    OurTips,
    Sketch,
    cells_for,
    element,
    listed_tips,
    peer_tips,
)
from tests.helpers import T0, World, funded_world, make_world, sync
from tests.protocol_pair import SessionPair, forge, sent_frames
from tests.test_ledger import make_fork, replica_with

ROOT = Path(__file__).resolve().parent.parent
SALT = bytes(range(16))


def tips_of(replica: Replica) -> list[tuple[bytes, int, bytes]]:
    return [(a, s, i) for a, tips in replica.frontier().tips.items() for s, i in tips]


def sketch_of(tips: list[tuple[bytes, int, bytes]], cells: int, salt: bytes = SALT) -> Sketch:
    return Sketch.of((element(salt, *t) for t in tips), cells, salt)


# ---------------------------------------------------------------- the table

def frame_vectors() -> tuple[dict[str, dict[str, Any]], list[tuple[bytes, int, bytes]]]:
    """The message vectors by name, and the tips of the summary vector."""
    vectors = json.loads((ROOT / "specs" / "vectors" / "frames.json").read_text())
    messages = {m["name"]: m["fields"] for m in vectors["messages"]}
    tips = [(bytes.fromhex(a), s, bytes.fromhex(i)) for a, s, i in messages["summary"]["tips"]]
    return messages, tips


def test_the_vector_is_the_sketch_of_the_summary_vectors_tips() -> None:
    messages, tips = frame_vectors()
    cells = bytes.fromhex(messages["sketch"]["cells"])
    assert len(cells) == 36 * CELL_BYTES
    assert sketch_of(tips, 36).to_bytes() == cells
    assert Sketch.from_bytes(cells, SALT).to_bytes() == cells
    # Three elements set at most nine cells; the rest stay zero.
    assert 3 <= sum(c != bytes(CELL_BYTES) for c in
                    (cells[i:i + CELL_BYTES] for i in range(0, len(cells), CELL_BYTES))) <= 9


elements = st.binary(min_size=20, max_size=20)


@settings(max_examples=200, deadline=None)
@given(common=st.sets(elements, max_size=60), only_a=st.sets(elements, max_size=12),
       only_b=st.sets(elements, max_size=12), salt=st.binary(min_size=16, max_size=16))
def test_peeling_finds_exactly_the_difference_or_gives_up(
        common: set[bytes], only_a: set[bytes], only_b: set[bytes], salt: bytes) -> None:
    only_a -= common | only_b
    only_b -= common
    cells = cells_for(len(only_a) + len(only_b))
    a = Sketch.of([*common, *only_a], cells, salt)
    b = Sketch.of([*common, *only_b], cells, salt)
    out = a.minus(b).peel()
    if out is not None:  # never a wrong answer
        assert (set(out[0]), set(out[1])) == (only_a, only_b)
        assert len(out[0]) == len(only_a)
        assert len(out[1]) == len(only_b)


@pytest.mark.parametrize("difference", [1, 2, 10, 40, 200])
def test_peeling_succeeds_almost_always_at_the_chosen_size(difference: int) -> None:
    rng = random.Random(difference)
    ok = 0
    for _ in range(100):
        salt = rng.randbytes(16)
        mine = [rng.randbytes(20) for _ in range(difference)]
        out = Sketch.of(mine, cells_for(difference), salt).minus(
            Sketch.of([], cells_for(difference), salt)).peel()
        ok += out is not None and sorted(out[0]) == sorted(mine)
    assert ok >= 95


def test_a_difference_far_beyond_the_table_does_not_decode() -> None:
    rng = random.Random(7)
    many = [rng.randbytes(20) for _ in range(500)]
    assert Sketch.of(many, MIN_SKETCH_CELLS, SALT).peel() is None


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=3 * CELL_BYTES, max_size=30 * CELL_BYTES))
def test_any_bytes_peel_without_error(data: bytes) -> None:
    data = data[:len(data) - len(data) % (3 * CELL_BYTES)]
    out = Sketch.from_bytes(data, SALT).peel()
    assert out is None or all(len(e) == 20 for e in out[0] + out[1])


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        Sketch(37, SALT)
    with pytest.raises(ValueError, match="whole number"):
        Sketch.from_bytes(bytes(CELL_BYTES + 1), SALT)
    with pytest.raises(ValueError, match="different shapes"):
        Sketch(36, SALT).minus(Sketch(39, SALT))


# ---------------------------------------------------------------- the peer's tips

def two_replicas() -> tuple[World, Replica, Replica]:
    """The authority's replica and a copy after alice paid once; then alice pays twice
    more on the authority's."""
    world, auth = funded_world()
    wallet = world.wallet("alice", auth)
    wallet.pay(world.account("carol"), 1_00, key="s-0", now_ms=T0)
    copy = world.replica()
    sync(copy, auth)
    wallet.pay(world.account("bob"), 10_00, key="s-1", now_ms=T0)
    wallet.pay(world.account("carol"), 5_00, key="s-2", now_ms=T0)
    return world, auth, copy


def test_peer_tips_name_only_the_changed_author_and_give_the_same_delta() -> None:
    world, ahead, behind = two_replicas()
    cells = cells_for(4)
    found = peer_tips(OurTips(tips_of(ahead), SALT), sketch_of(tips_of(behind), cells),
                      ahead.store.ids_at)
    assert found is not None
    alice = world.device("alice")
    assert set(found.tips) == {alice}
    # The peer's tip for alice is resolved to the record we hold, not "unknown".
    assert found.tips[alice] == behind.frontier().tips[alice]
    by_sketch = ahead.delta(Frontier(found.tips), authors=found.tips)
    assert by_sketch == ahead.delta(behind.frontier())
    assert len(by_sketch) == 2
    # The other way round: the peer is ahead on alice; we send nothing.
    back = peer_tips(OurTips(tips_of(behind), SALT), sketch_of(tips_of(ahead), cells),
                     behind.store.ids_at)
    assert back is not None
    assert set(back.tips) == {alice}
    assert behind.delta(Frontier(back.tips), complete=False, authors=back.tips) == []


def test_authors_only_the_peer_has_are_left_out() -> None:
    world, ahead, _ = two_replicas()
    empty = world.replica()
    found = peer_tips(OurTips([], SALT), sketch_of(tips_of(ahead), cells_for(20)),
                      empty.store.ids_at)
    assert found is not None
    assert found.tips == {}


def test_tip_unknown_here_gets_an_id_no_record_has() -> None:
    world, ahead, behind = two_replicas()
    found = peer_tips(OurTips(tips_of(behind), SALT), sketch_of(tips_of(ahead), cells_for(4)),
                      behind.store.ids_at)
    assert found is not None
    ((seq, rid),) = found.tips[world.device("alice")]
    assert seq == ahead.frontier().tips[world.device("alice")][0][0]
    assert not behind.store.has(rid)
    assert not ahead.store.has(rid)


def sqlite_ids_at(author: bytes, seq: int) -> list[bytes]:
    """Binds seq as the store's `ids_at` does: SQLite INTEGER is signed 64-bit."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute("SELECT ?", (seq,))
    return []


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
def test_a_peer_tip_at_a_seq_no_record_has_is_left_out(seq: int) -> None:
    """A crafted sketch (or listed tips past the frame check) can name one of our authors
    at seq 2**63 or more: no record has it, and looking it up raised OverflowError in
    the store. It is left out, as a seq of 0 is."""
    _, _, behind = two_replicas()
    ours = tips_of(behind)
    author, _, rid = ours[0]
    theirs = [*ours, (author, seq, rid)]
    found = peer_tips(OurTips(ours, SALT), sketch_of(theirs, cells_for(4)), sqlite_ids_at)
    assert found is not None
    assert found.tips == {}
    listed = b"".join(sorted(element(SALT, *t) for t in theirs))
    found = listed_tips(OurTips(ours, SALT), listed, sqlite_ids_at)
    assert found is not None
    assert found.tips == {}


def listed_of(replica: Replica, salt: bytes = SALT) -> bytes:
    return OurTips(tips_of(replica), salt).listed()


def test_the_tips_vector_lists_the_summary_vectors_tips() -> None:
    messages, tips = frame_vectors()
    listed = bytes.fromhex(messages["tips"]["elements"])
    assert listed == OurTips(tips, SALT).listed()
    assert len(listed) == 3 * ELEMENT_BYTES
    parts = [listed[i:i + ELEMENT_BYTES] for i in range(0, len(listed), ELEMENT_BYTES)]
    assert parts == sorted(parts)


def test_listed_tips_give_the_same_delta_as_the_full_summary_across_a_fork() -> None:
    world = make_world()
    fork = make_fork(world)
    everything = [*fork.base, fork.x.raw, fork.x3.raw, fork.y.raw]
    both = replica_with(world, everything)
    for start in ([], fork.base, [*fork.base, fork.x.raw], [*fork.base, fork.y.raw],
                  [*fork.base, fork.x.raw, fork.x3.raw], everything):
        other = replica_with(world, start)
        named = []
        for src, dst in ((both, other), (other, both)):
            found = listed_tips(OurTips(tips_of(src), SALT), listed_of(dst), src.store.ids_at)
            assert found is not None
            by_list = src.delta(Frontier(found.tips), authors=found.tips)
            assert by_list == src.delta(dst.frontier())
            named.append(set(found.tips))
        # From the full replica's side, the authors named are those the other lacks.
        assert named[0] == {a for a in both.frontier().tips
                            if other.frontier().tips.get(a) != both.frontier().tips[a]}
        assert named[0] or start == everything


def test_listed_tips_name_the_changed_author_and_leave_out_unknown_ones() -> None:
    world, ahead, behind = two_replicas()
    alice = world.device("alice")
    found = listed_tips(OurTips(tips_of(behind), SALT), listed_of(ahead), behind.store.ids_at)
    assert found is not None
    assert set(found.tips) == {alice}
    ((seq, rid),) = found.tips[alice]  # ahead's tip: an id no record here has
    assert seq == ahead.frontier().tips[alice][0][0]
    assert not behind.store.has(rid)
    nothing_here = listed_tips(OurTips([], SALT), listed_of(ahead), world.replica().store.ids_at)
    assert nothing_here is not None
    assert nothing_here.tips == {}
    with pytest.raises(ValueError, match="whole 20-byte elements"):
        listed_tips(OurTips([], SALT), bytes(21), behind.store.ids_at)


# ---------------------------------------------------------------- sessions

def sketch_pair(cells: int) -> tuple[World, SessionPair]:
    world, ahead, behind = two_replicas()
    pair = SessionPair.of(world, "authority", "bob", replica_a=ahead, replica_b=behind,
                          admits=ahead)
    pair.a.sketch_cells = pair.b.sketch_cells = cells
    return world, pair


def test_sketches_both_ways_sync_in_one_round_trip() -> None:
    world, pair = sketch_pair(36)
    pair.pump()
    assert pair.a.replica is not None
    assert pair.b.replica is not None
    assert pair.a.replica.state_hash() == pair.b.replica.state_hash()
    assert pair.a.session.state is pair.b.session.state is State.LIVE
    assert pair.b.live_flight is not None
    assert pair.b.handshake_flight is not None
    assert pair.b.live_flight - pair.b.handshake_flight <= 3
    for side in (pair.a, pair.b):
        sketches = [f for f in sent_frames(pair, side) if isinstance(f, SummarySketch)]
        assert len(sketches) == 1
        assert len(sketches[0].cells) == 36 * CELL_BYTES
        (summary,) = side.of_type(PeerSummary)
        assert isinstance(summary, PeerSummary)
        assert summary.authors == {world.device("alice")}
    assert pair.b.reports
    assert sum(len(r.applied) for r in pair.b.reports) == 2


def test_a_sketch_too_small_costs_one_round_trip_then_the_full_summary() -> None:
    world, ahead, _ = two_replicas()
    empty = world.replica()
    plain = SessionPair.of(world, "authority", "bob", replica_a=ahead, replica_b=world.replica(),
                           admits=ahead)
    pair = SessionPair.of(world, "authority", "bob", replica_a=ahead, replica_b=empty,
                          admits=ahead)
    # 100 authors bob has never seen: far more differs than 36 cells can peel.
    extra = tuple(Tip(author=bytes([n]) * 32, seq=1, id=bytes([n]) * 32) for n in range(100))
    pair.a.extra_tips = plain.a.extra_tips = extra
    pair.a.sketch_cells = 36
    plain.pump()
    pair.pump()
    assert pair.b.replica is not None
    assert pair.b.replica.state_hash() == ahead.state_hash()
    assert pair.a.session.state is pair.b.session.state is State.LIVE
    asked = [f for f in sent_frames(pair, pair.b) if isinstance(f, NeedSummary)]
    assert asked == [NeedSummary(cells=36)]
    # At most one round trip more; here none: bob has no delta to send, so its answer to
    # the full summary (SYNCED) travels with its acknowledgement of the authority's delta,
    # the flight that ends the plain sync too.
    assert plain.flights <= pair.flights <= plain.flights + 2


def test_need_summary_without_our_sketch_kills_the_session() -> None:
    _world, pair = sketch_pair(0)
    pair.pump()
    s = pair.b.session
    s.receive_data(forge(s, encode_message(NeedSummary(cells=36))), 1.0)
    assert s.closed
    assert s.error is not None
    assert "without a sketch" in str(s.error)


def listed_pair() -> tuple[World, SessionPair, SessionPair]:
    """The same two replicas synced with listed tips and with full summaries."""
    world, ahead, behind = two_replicas()
    listed, full = (SessionPair.of(world, "authority", "bob", replica_a=ahead, replica_b=r,
                                   admits=ahead)
                    for r in (behind, copy_of(world, behind)))  # each pair syncs its own copy
    listed.a.listed = listed.b.listed = True
    return world, listed, full


def copy_of(world: World, replica: Replica) -> Replica:
    out = world.replica()
    sync(out, replica)
    return out


def test_listed_tips_sync_like_the_full_summary_in_fewer_bytes() -> None:
    world, listed, full = listed_pair()
    listed.pump()
    full.pump()
    for pair in (listed, full):
        assert pair.a.replica is not None
        assert pair.b.replica is not None
        assert pair.a.replica.state_hash() == pair.b.replica.state_hash()
        assert pair.a.session.state is pair.b.session.state is State.LIVE
    assert listed.flights == full.flights
    for side, other in ((listed.a, full.a), (listed.b, full.b)):
        (tips,) = [f for f in sent_frames(listed, side) if isinstance(f, SummaryTips)]
        (summary,) = [f for f in sent_frames(full, other) if isinstance(f, Summary)]
        assert len(tips.elements) == len(summary.tips) * ELEMENT_BYTES
        assert len(encode_message(tips)) * 2 < len(encode_message(summary))
        (peer,) = side.of_type(PeerSummary)
        assert isinstance(peer, PeerSummary)
        assert peer.authors == {world.device("alice")}
    assert sum(len(r.applied) for r in listed.b.reports) == 2


def test_listed_tips_that_do_not_decode_cost_one_round_trip_then_the_full_summary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every author hashed alike: our own author hashes collide, nothing can be named.
    monkeypatch.setattr(sketch_module, "author_hash", lambda salt, author: bytes(8))
    _world, listed, full = listed_pair()
    listed.pump()
    full.pump()
    assert listed.a.replica is not None
    assert listed.b.replica is not None
    assert listed.a.replica.state_hash() == listed.b.replica.state_hash()
    assert listed.a.session.state is listed.b.session.state is State.LIVE
    for side in (listed.a, listed.b):
        assert [f for f in sent_frames(listed, side) if isinstance(f, NeedSummary)] == [
            NeedSummary(cells=0)]
        assert len([f for f in sent_frames(listed, side) if isinstance(f, Summary)]) == 1
    assert full.flights < listed.flights <= full.flights + 2


def test_a_second_hashed_summary_kills_the_session() -> None:
    _world, listed, _ = listed_pair()
    listed.pump()
    s = listed.b.session
    s.receive_data(forge(s, encode_message(SummaryTips(elements=b""))), 1.0)
    assert s.closed
    assert s.error is not None


def test_a_tip_named_by_its_hash_is_matched_to_the_record_once_held() -> None:
    """`listed_tips` gives a peer's tip that we do not hold an id no record has; once
    the record is held, `names_tip` tells it is that tip (and another record is not)."""
    salt, author = b"s" * 16, b"a" * 32
    held, theirs, other = b"h" * 32, b"t" * 32, b"o" * 32
    ours = OurTips([(author, 1, held)], salt)
    found = listed_tips(ours, element(salt, author, 2, theirs), lambda a, s: [])
    assert found is not None
    ((seq, tip_id),) = found.tips[author]
    assert seq == 2
    assert tip_id not in (held, theirs)
    assert sketch_module.names_tip(salt, author, 2, tip_id, theirs)
    assert not sketch_module.names_tip(salt, author, 2, tip_id, other)
    assert not sketch_module.names_tip(b"x" * 16, author, 2, tip_id, theirs)  # another salt
    assert sketch_module.names_tip(salt, author, 1, held, held)
