"""The trio node: sessions over in-memory streams, on fake time.

Every test runs on `MockClock(autojump_threshold=0)`: when all tasks wait, the clock
jumps to the next deadline, so timeouts, keepalives and backoff are asserted exactly
and cost no real time. Nodes keep real SQLite stores in tmp_path, as they do in
production; the links are `trio.testing.memory_stream_pair`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.core.ids import device_id
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import parse_record, record_id
from p2p_ledger.errors import TransportError
from p2p_ledger.node.links import Link, parse_link
from p2p_ledger.node.node import MAX_FRAME_WAIT, Node, NodeConfig
from p2p_ledger.node.peer import MIN_PUSH_DELAY
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import PeerSummary, PeerSynced, SessionConfig
from p2p_ledger.protocol.sketch import CELL_BYTES, ELEMENT_BYTES
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import key
from tests.node_helpers import (
    WALL_MS,
    Fleet,
    HandDriven,
    RecordingStream,
    SlowStream,
    flip_signature,
    make_fleet,
    peer_at,
    start_pair,
    start_session,
    wait_until,
)

NODE_LOG = "p2p_ledger.node"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


def store_of(node: Node) -> SqliteStore:
    store = node.replica.store
    assert isinstance(store, SqliteStore)
    return store


def live(node: Node, address: str) -> bool:
    return any(p.address == address and p.session.state is State.LIVE
               for p in node.peers.values())


# ---------------------------------------------------------------- reconciliation

async def test_session_reconciles_both_ways_and_closes_after_sync(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    ra_, rb_ = fleet.replica("alice"), fleet.replica("bob")
    fleet.pay(ra_, "alice", "carol", 10_00, "a-1")
    fleet.pay(rb_, "bob", "carol", 5_00, "b-1")
    fleet.pay(rb_, "bob", "alice", 1_00, "b-2")
    a, b = fleet.node("alice", replica=ra_), fleet.node("bob", replica=rb_)
    assert a.replica.state_hash() != b.replica.state_hash()

    async with trio.open_nursery() as nursery:
        ra, rb = start_pair(nursery, a, b, until_synced=True)
    sa, sb = ra.stats, rb.stats
    assert sa is not None
    assert sb is not None

    assert a.replica.state_hash() == b.replica.state_hash()
    assert a.replica.balance(fleet.world.account("carol")) == 15_00
    assert b.replica.balance(fleet.world.account("alice")) == 100_00 - 10_00 + 1_00
    assert sa.synced
    assert sb.synced
    assert (sa.reason, sa.error) == ("sync complete", False)
    assert (sb.reason, sb.error) == ("sync complete", False)  # the reason the dialer gave
    assert (sa.records_out, sa.records_in) == (1, 2)
    assert (sb.records_out, sb.records_in) == (2, 1)
    # each side's records were acknowledged by the other as stored
    assert (sa.stored_by_peer, sa.unstored_by_peer) == (1, 0)
    assert (sb.stored_by_peer, sb.unstored_by_peer) == (2, 0)
    assert sa.bytes_out == sb.bytes_in > 0
    assert sb.bytes_out == sa.bytes_in > 0
    assert sa.peer == device_id(fleet.world.device("bob"))
    assert sb.peer == device_id(fleet.world.device("alice"))
    assert sa.seconds == 0.0  # memory links take no (fake) time
    assert list(a.completed) == [sa]
    assert list(b.completed) == [sb]
    assert not a.peers
    assert not b.peers
    (peer,) = store_of(a).peers()
    assert peer[0] == fleet.world.device("bob")
    assert peer[1] == "mem://link/a"
    assert peer[5] == "closed"


async def test_a_peer_synced_before_gets_a_sketch_and_a_new_one_listed_tips(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    a, b = fleet.node("alice"), fleet.node("bob")
    bob = fleet.world.device("bob")
    many = Frontier({n.to_bytes(32, 'big'): ((1, n.to_bytes(32, 'big')),) for n in range(1000)})
    assert a.sketch_cells(bob, many) == 0  # never met: listed tips
    assert store_of(a).synced_records(bob) is None
    async with trio.open_nursery() as nursery:
        start_pair(nursery, a, b, until_synced=True)
    assert store_of(a).synced_records(bob) == store_of(a).totals().records
    cells = a.sketch_cells(bob, many)
    assert cells >= 36  # in sync before, nothing new since: the smallest sketch
    assert cells * CELL_BYTES < 1000 * ELEMENT_BYTES
    assert a.sketch_cells(bob, Frontier({})) == 0  # listed tips would be smaller
    # Records received since the last sync make the sketch larger.
    for n in range(40):
        fleet.pay(a.replica, "alice", "carol", 1, f"k-{n}")
    assert a.sketch_cells(bob, many) > cells
    # A second session converges (with a frontier this small, through listed tips).
    fleet.pay(b.replica, "bob", "carol", 1_00, "b-1")
    async with trio.open_nursery() as nursery:
        ra, rb = start_pair(nursery, a, b, until_synced=True, name="again")
    assert ra.stats is not None
    assert rb.stats is not None
    assert (ra.stats.records_out, ra.stats.records_in) == (40, 1)
    assert a.replica.state_hash() == b.replica.state_hash()


async def test_records_stored_after_our_hashed_summary_join_the_delta(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    a = fleet.node("alice")
    store = store_of(a)
    before = store.max_order()
    sent = a.replica.frontier()
    fleet.pay(a.replica, "alice", "carol", 1, "after-summary")  # came in meanwhile
    alice = fleet.world.device("alice")
    # The peer's hashed summary named no author as differing from what we sent.
    summary = PeerSummary(frontier=sent, authors=frozenset())
    widened = a._widened(summary, before)
    assert widened.authors == {alice}
    delta = a.replica.delta(widened.frontier, complete=False, authors=widened.authors)
    assert [parse_record(raw).record.author for raw in delta] == [alice]
    assert a._widened(summary, store.max_order()) is summary  # nothing since
    full = PeerSummary(frontier=sent)
    assert a._widened(full, before) is full  # a full summary needs no widening

async def test_sync_once_dials_through_the_connector(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    b = fleet.node("bob")
    fleet.pay(b.replica, "bob", "carol", 7_00, "b-1")
    dialed: list[Link] = []

    async def connect(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
        dialed.append(link)
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(b.serve_stream, right, "mem://from-alice")
        return left

    a = fleet.node("alice", connect=connect)
    stats = await a.sync_once(parse_link("tcp://bob.example:7000"))
    assert dialed == [parse_link("tcp://bob.example:7000")]
    assert stats.synced
    assert stats.reason == "sync complete"
    assert stats.address == "tcp://bob.example:7000"
    assert (stats.records_in, stats.records_out) == (1, 0)
    assert a.replica.state_hash() == b.replica.state_hash()


async def test_a_delta_counts_as_delivered_only_on_the_peers_acknowledgement(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Both SYNCED have crossed, but the peer has not acknowledged (STORED) the node's
    delta: the node does not note the peer in sync until it does."""
    hub = fleet.node("hub", role="hub")
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        run = start_session(nursery, hub, right, initiator=False, address="mem://bob")
        bob = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        await bob.handshake()
        bob.session.send_summary(Frontier({}), trio.current_time())
        await bob.flush()
        while not any(isinstance(e, PeerSynced) for e in bob.events):
            await bob.receive()
        bob.session.send_synced(0, trio.current_time())
        await bob.flush()
        await trio.sleep(5)
        at_hub = peer_at(hub, "mem://bob")
        assert at_hub.state is State.LIVE
        assert at_hub.peer_received == 0 < at_hub.records_sent
        (peer,) = store_of(hub).peers()
        assert peer[5] == "connected"  # not "live": nothing counts as delivered yet
        bob.session.acknowledge(bob.session.records_received, 0, trio.current_time())
        await bob.flush()
        await wait_until(lambda: store_of(hub).peers()[0][5] == "live")
        bob.session.close("done", trio.current_time())
        await bob.flush()
        await run.done.wait()
    assert run.stats is not None
    assert run.stats.synced
    assert run.stats.stored_by_peer == run.stats.records_out == len(fleet.seed)


async def test_sync_fails_when_the_peer_does_not_store_what_it_was_sent(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """bob's clock is an hour behind: alice's new payment is "from the future" there and
    refused. The sync must not report success."""
    a = fleet.node("alice")
    fleet.pay(a.replica, "alice", "carol", 2_00, "a-1")
    b = Node(fleet.replica("bob"), fleet.key("bob"), role="device",
             wall_ms=lambda: WALL_MS - 3_600_000)
    async with trio.open_nursery() as nursery:
        ra, _ = start_pair(nursery, a, b, until_synced=True)
    assert ra.stats is not None
    assert not ra.stats.synced
    assert (ra.stats.records_out, ra.stats.stored_by_peer, ra.stats.unstored_by_peer) == (1, 1, 1)
    assert "the peer did not store 1 of the records sent" in ra.stats.reason
    (peer,) = store_of(a).peers()
    assert peer[5] == "closed"


# ---------------------------------------------------------------- live push and relay

async def test_record_written_after_live_is_pushed(
        autojump_clock: MockClock, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushed after the least push delay (on this link's short round trip), together
    with what was written meanwhile: one frame, not one per record."""
    a, b = fleet.node("alice"), fleet.node("bob")
    async with trio.open_nursery() as nursery:
        ra, rb = start_pair(nursery, a, b)
        await wait_until(lambda: live(a, ra.address) and live(b, rb.address))
        to_bob = peer_at(a, ra.address)
        frames: list[int] = []
        send_frame = to_bob.send_frame
        monkeypatch.setattr(to_bob, "send_frame", lambda raws, now, held=None: (
            frames.append(len(raws)), send_frame(raws, now, held))[-1])
        rid = fleet.pay(a.replica, "alice", "bob", 3_00, "live-1")
        assert not b.replica.store.has(rid)
        assert a.push_new(trio.current_time()) == 1
        await trio.sleep(MIN_PUSH_DELAY / 2)
        assert not b.replica.store.has(rid)  # waiting in the outbox
        rid2 = fleet.pay(a.replica, "alice", "bob", 4_00, "live-2")
        assert a.push_new(trio.current_time()) == 1
        took = await wait_until(lambda: b.replica.store.has(rid2))
        assert took <= MIN_PUSH_DELAY / 2 + 0.01  # the first record's delay, not a new one
        assert frames == [2]
        assert a.push_new(trio.current_time()) == 0  # nothing new: nothing sent twice
        assert peer_at(b, rb.address).records_received == 2
        assert a.replica.state_hash() == b.replica.state_hash()
        nursery.cancel_scope.cancel()


async def test_watch_store_pushes_what_another_process_wrote(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    a, b = fleet.node("alice"), fleet.node("bob")
    poll = a.config.poll_interval
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.watch_store)
        ra, rb = start_pair(nursery, a, b)
        await wait_until(lambda: live(a, ra.address) and live(b, rb.address))
        # Another process (`p2p-ledger pay` while `serve` runs) opens the same file.
        other = SqliteStore(store_of(a).path, fleet.world.network.network_id)
        try:
            rid = fleet.pay(Replica(fleet.world.network, other), "alice", "bob", 2_00, "cli")
        finally:
            other.close()
        took = await wait_until(lambda: b.replica.store.has(rid))
        assert 0 < took <= poll + MIN_PUSH_DELAY + 0.02
        assert a.replica.state_hash() == b.replica.state_hash()
        nursery.cancel_scope.cancel()


async def test_hub_relays_and_never_echoes_a_record_to_its_origin(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    a, h, b = fleet.node("alice"), fleet.node("hub", role="hub"), fleet.node("bob")
    async with trio.open_nursery() as nursery:
        a_h, h_a = start_pair(nursery, a, h, name="a-h")
        b_h, h_b = start_pair(nursery, b, h, name="b-h")
        await wait_until(lambda: all(live(n, r.address) for n, r in
                                     ((a, a_h), (h, h_a), (b, b_h), (h, h_b))))
        received_before = peer_at(a, a_h.address).records_received
        assert received_before == 0  # all three started with the same records

        rid = fleet.pay(a.replica, "alice", "carol", 4_00, "relay-1")
        a.push_new(trio.current_time())
        await wait_until(lambda: b.replica.store.has(rid))
        await trio.testing.wait_all_tasks_blocked()
        assert h.replica.store.has(rid)
        assert peer_at(h, h_b.address).records_sent == 1
        assert peer_at(h, h_a.address).records_sent == 0  # not sent back to alice
        assert peer_at(a, a_h.address).records_received == received_before
        assert peer_at(h, h_b.address).records_received == 0  # bob did not echo either

        back = fleet.pay(b.replica, "bob", "alice", 1_50, "relay-2")
        b.push_new(trio.current_time())
        await wait_until(lambda: a.replica.store.has(back))
        await trio.testing.wait_all_tasks_blocked()
        assert peer_at(a, a_h.address).records_received == 1
        assert peer_at(b, b_h.address).records_received == 1
        assert a.replica.state_hash() == h.replica.state_hash() == b.replica.state_hash()
        nursery.cancel_scope.cancel()


async def test_a_record_the_peer_named_in_its_hashed_summary_is_not_pushed_to_it(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """The hub learns bob's second record from alice while bob's delta, which carries it
    too, is still on its slow way. Bob's summary (listed tips: hashed) named that record
    as his chain's tip, which the hub did not hold then; once it does, it matches the
    two and does not push the record back to bob (before: one record sent for nothing)."""
    b = fleet.node("bob")
    first = b.replica.store.raw(fleet.pay(b.replica, "bob", "alice", 1_00, "known-0"))
    assert first is not None
    ra, rh = fleet.replica("alice"), fleet.replica("hub")
    for replica in (ra, rh):  # bob's first record is everywhere: his chain is known
        with replica.store.transaction():
            replica.receive_many([first], now_ms=WALL_MS)
    a, h = fleet.node("alice", replica=ra), fleet.node("hub", role="hub", replica=rh)
    paid = fleet.pay(b.replica, "bob", "alice", 2_00, "known-1")
    raw = b.replica.store.raw(paid)
    assert raw is not None
    async with trio.open_nursery() as nursery:
        a_h, h_a = start_pair(nursery, a, h, name="a-h")
        await wait_until(lambda: live(a, a_h.address) and live(h, h_a.address))
        left, right = trio.testing.memory_stream_pair()
        start_session(nursery, b, SlowStream(left, 1.0), initiator=True, address="mem://b-h/b")
        start_session(nursery, h, right, initiator=False, address="mem://b-h/h")
        # the hub has bob's summary (it answered with its delta and SYNCED), not his delta
        await wait_until(lambda: any(p.address == "mem://b-h/h" and p.session.state in (
            State.WE_SYNCED, State.LIVE) for p in h.peers.values()))
        assert not h.replica.store.has(paid)
        with store_of(a).transaction():
            a.replica.receive_many([raw], now_ms=WALL_MS)
        assert a.push_new(trio.current_time()) == 1
        await wait_until(lambda: h.replica.store.has(paid))
        await wait_until(lambda: live(h, "mem://b-h/h") and live(b, "mem://b-h/b"))
        to_bob = next(p for p in h.peers.values() if p.address == "mem://b-h/h")
        assert to_bob.not_pushed == 1
        assert peer_at(h, "mem://b-h/h").records_sent == 0
        assert peer_at(b, "mem://b-h/b").records_received == 0
        assert a.replica.state_hash() == h.replica.state_hash() == b.replica.state_hash()
        nursery.cancel_scope.cancel()


async def test_a_record_the_peer_sent_is_not_pushed_back_from_the_outbox(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Records wait in a slow link's outbox (two round trips); one that the peer sends
    meanwhile, having had it from elsewhere, leaves the outbox unsent."""
    a, h, b = fleet.node("alice"), fleet.node("hub", role="hub"), fleet.node("bob")
    async with trio.open_nursery() as nursery:
        a_h, h_a = start_pair(nursery, a, h, name="a-h")
        left, right = trio.testing.memory_stream_pair()
        h_b = start_session(nursery, h, SlowStream(left, 0.2), initiator=True,
                            address="mem://h-b/h")
        b_h = start_session(nursery, b, SlowStream(right, 0.2), initiator=False,
                            address="mem://h-b/b")
        await wait_until(lambda: all(live(n, r.address) for n, r in
                                     ((a, a_h), (h, h_a), (h, h_b), (b, b_h))))
        peer_at(h, h_b.address).ping(trio.current_time())  # measure the slow round trip
        to_bob = next(p for p in h.peers.values() if p.address == h_b.address)
        await wait_until(lambda: (to_bob.session.rtt or 0) > 0.3)
        paid = fleet.pay(a.replica, "alice", "bob", 1_00, "known-2")
        raw = a.replica.store.raw(paid)
        assert raw is not None
        with store_of(b).transaction():  # bob has it by another way (not a session)
            b.replica.receive_many([raw], now_ms=WALL_MS)
        b.push_new(trio.current_time())  # to the hub, after bob's push delay (~0.8 s)
        await trio.sleep(0.5)
        a.push_new(trio.current_time())  # to the hub at once; it queues it for bob
        await wait_until(lambda: h.replica.store.has(paid))
        assert [r for r, _, _ in to_bob.outbox] == [raw]  # waiting for the push delay
        # bob's push reaches the hub while the record still waits in its outbox
        await wait_until(lambda: not to_bob.outbox, within=5.0)
        await trio.testing.wait_all_tasks_blocked()
        assert to_bob.not_pushed == 1
        assert peer_at(h, h_b.address).records_sent == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- dialing

LINK = parse_link("tcp://peer.example:7000")
BACKOFF = NodeConfig(backoff_initial=1.0, backoff_max=8.0)


async def _dropped_at_once(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
    """A peer that accepts and hangs up before the handshake (a hub at capacity)."""
    left, right = trio.testing.memory_stream_pair()
    await right.aclose()
    return left


def _expected_pauses(seed: int, bases: list[float]) -> list[float]:
    jitter = random.Random(seed)
    return [base * jitter.uniform(0.5, 1.5) for base in bases]


async def _dial_and_check_backoff(node: Node, tried_at: list[float], attempts: int) -> None:
    start = trio.current_time()
    await node.keep_dialing(LINK, attempts=attempts)
    bases = [min(2.0 ** i, 8.0) for i in range(attempts)]  # doubling, capped at backoff_max
    expected = _expected_pauses(42, bases)
    assert node.dial_pauses == expected
    for pause, base in zip(node.dial_pauses, bases, strict=True):
        assert 0.5 * base <= pause <= 1.5 * base
    assert len(set(node.dial_pauses[3:])) == attempts - 3  # jittered, not one fixed delay
    assert [t - start for t in tried_at] == pytest.approx(
        [sum(expected[:i]) for i in range(attempts)])
    assert trio.current_time() - start == pytest.approx(sum(expected))


async def test_keep_dialing_backs_off_exponentially_with_jitter(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    tried_at: list[float] = []

    async def connect(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
        tried_at.append(trio.current_time())
        return await _dropped_at_once(link, nursery)

    node = fleet.node("alice", config=BACKOFF, rng=random.Random(42), connect=connect)
    await _dial_and_check_backoff(node, tried_at, attempts=7)
    assert len(node.completed) == 7
    assert not any(s.synced for s in node.completed)


async def test_keep_dialing_survives_an_unreachable_peer(
        autojump_clock: MockClock, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """Regression, fixed (node.py keep_dialing): the TransportError of an unreachable peer is
    raised inside `async with trio.open_nursery()`, so it leaves the nursery wrapped in
    an ExceptionGroup and `except TransportError` never catches it: `serve --peer URL`
    dies the first time URL is down instead of backing off."""
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    tried_at: list[float] = []

    async def refuse(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
        tried_at.append(trio.current_time())
        raise TransportError(f"cannot reach {link}: connection refused")

    node = fleet.node("alice", config=BACKOFF, rng=random.Random(42), connect=refuse)
    await _dial_and_check_backoff(node, tried_at, attempts=7)
    unreachable = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 7
    assert "peer.example:7000" in unreachable[0]


async def test_sync_once_raises_a_plain_transport_error(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Regression, fixed (node.py sync_once, same cause): its docstring promises
    TransportError if unreachable, but the error leaves a nursery as an ExceptionGroup,
    which `p2p-ledger sync` does not catch (a traceback instead of one error line)."""
    async def refuse(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
        raise TransportError(f"cannot reach {link}: connection refused")

    node = fleet.node("alice", connect=refuse)
    with pytest.raises(TransportError, match="connection refused"):
        await node.sync_once(LINK)


async def test_keep_dialing_starts_again_from_the_shortest_delay_after_a_sync(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    b = fleet.node("bob")
    calls: list[float] = []

    async def connect(link: Link, nursery: trio.Nursery) -> trio.abc.Stream:
        calls.append(trio.current_time())
        if len(calls) != 4:
            return await _dropped_at_once(link, nursery)
        left, right = trio.testing.memory_stream_pair()
        nursery.start_soon(lambda: b.run_session(right, initiator=False, address="mem://a",
                                                 until_synced=True))
        return left

    config = NodeConfig(backoff_initial=1.0, backoff_max=30.0)
    a = fleet.node("alice", config=config, rng=random.Random(7), connect=connect)
    fleet.pay(b.replica, "bob", "alice", 1_00, "b-1")
    await a.keep_dialing(LINK, attempts=6)

    assert [s.synced for s in a.completed] == [False, False, False, True, False, False]
    assert a.replica.state_hash() == b.replica.state_hash()
    # 1, 2, 4, then the fourth attempt synced: back to 1, 2, 4.
    assert a.dial_pauses == _expected_pauses(7, [1.0, 2.0, 4.0, 1.0, 2.0, 4.0])


# ---------------------------------------------------------------- misbehaving peers

async def _bad_peer_scenario(fleet: Fleet, behave: str) -> tuple[Node, HandDriven, str]:
    """A hub with one honest session and one misbehaving peer (bob, by hand). Returns
    the hub, the bad peer and the reason the hub gave for closing it; checks the honest
    session keeps working."""
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_invalid_records=3))
    alice = fleet.node("alice")
    before = hub.replica.state_hash()
    forged: list[bytes] = []
    async with trio.open_nursery() as nursery:
        good_a, good_h = start_pair(nursery, alice, hub, name="good")
        await wait_until(lambda: live(hub, good_h.address))

        left, right = trio.testing.memory_stream_pair()
        bad_run = start_session(nursery, hub, right, initiator=False, address="mem://bad")
        bad = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        if behave == "garbage before the handshake":
            await left.send_all(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
        else:
            await bad.handshake()
        if behave == "garbage after the handshake":
            await left.send_all(b"\x00\x00\x00\x20" + bytes(range(32)))
        elif behave == "a replayed frame":
            bad.session.send_summary(Frontier({}), trio.current_time())
            summary = bad.session.data_to_send()
            await left.send_all(summary)
            await trio.testing.wait_all_tasks_blocked()  # the hub has taken the first copy
            await left.send_all(summary)
        elif behave == "invalid records":
            scratch = fleet.replica("bob-scratch")
            rid = fleet.pay(scratch, "bob", "carol", 1_00, "forged")
            raw = scratch.store.raw(rid)
            assert raw is not None
            forged = [raw, *(flip_signature(raw, i) for i in range(4))]
            for bad_raw in forged[1:]:  # one frame each: the hub counts across frames
                bad.session.send_records([bad_raw], trio.current_time())
                await bad.flush()
        await bad_run.done.wait()
        assert bad_run.stats is not None
        reason = bad_run.stats.reason
        assert bad_run.stats.error or behave == "invalid records"
        assert not bad_run.stats.synced

        # Nothing from the bad peer was stored; the honest session never noticed.
        assert hub.replica.state_hash() == before
        for raw in forged:
            assert not hub.replica.store.has(record_id(raw))
        assert live(hub, good_h.address)
        rid = fleet.pay(alice.replica, "alice", "carol", 2_00, "after-bad")
        alice.push_new(trio.current_time())
        await wait_until(lambda: hub.replica.store.has(rid))
        assert live(hub, good_h.address)
        assert good_a.stats is None
        nursery.cancel_scope.cancel()
    return hub, bad, reason


@pytest.mark.parametrize(("behave", "reason_starts"), [
    ("garbage before the handshake", "frame of 1195725856 bytes exceeds the limit of 8192"),
    ("garbage after the handshake", "a sealed frame failed authentication"),
    ("a replayed frame", "a sealed frame failed authentication"),
    ("invalid records", "too many invalid records (4)"),
])
async def test_misbehaving_peer_is_closed_and_others_go_on(
        autojump_clock: MockClock, fleet: Fleet, caplog: pytest.LogCaptureFixture, behave: str,
        reason_starts: str) -> None:
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    _, bad, reason = await _bad_peer_scenario(fleet, behave)
    assert reason.startswith(reason_starts), reason

    who = "?" if behave == "garbage before the handshake" else \
        device_id(fleet.world.device("bob"))[:12]
    closes = [r.getMessage() for r in caplog.records
              if r.name == NODE_LOG and "closed" in r.getMessage() and "mem://bad" in
              r.getMessage()]
    assert closes == [f"session {who}@mem://bad closed: {reason}"]
    if behave == "invalid records":
        refused = [r for r in caplog.records if "refused record" in r.getMessage()]
        assert len(refused) == 4
        assert all(r.levelno == logging.WARNING and f"{who}@mem://bad" in r.getMessage()
                   and "bad_signature" in r.getMessage() for r in refused)
    if behave != "garbage before the handshake":
        end = await bad.closed_by_peer(answer=False)
        assert end.by_peer
        assert end.reason == reason[:200]


# ---------------------------------------------------------------- frames checked ahead

async def test_a_frame_is_judged_when_the_next_arrives_or_after_max_frame_wait(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """A frame's signatures are checked while the frame before is judged; a frame
    followed by part of the next is still stored within MAX_FRAME_WAIT, in order, and
    acknowledged."""
    hub = fleet.node("hub", role="hub")
    scratch = fleet.replica("bob-scratch")
    rids = [fleet.pay(scratch, "bob", "carol", 1_00, f"ahead-{i}") for i in range(3)]
    async with trio.open_nursery() as nursery:
        left, right = trio.testing.memory_stream_pair()
        start_session(nursery, hub, right, initiator=False, address="mem://bob")
        bob = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        await bob.handshake()
        frames = []
        for raw in scratch.store.raws_in_order(rids):  # one frame each
            bob.session.send_records([raw], trio.current_time())
            frames.append(bob.session.data_to_send())
        # Two frames and the start of a third in one write: the second waits for the
        # third, which does not come.
        await left.send_all(frames[0] + frames[1] + frames[2][:10])
        took = await wait_until(lambda: hub.replica.store.has(rids[1]))
        assert MAX_FRAME_WAIT <= took <= MAX_FRAME_WAIT + 0.01  # fake time: exact
        assert hub.replica.store.has(rids[0])
        assert not hub.replica.store.has(rids[2])
        await left.send_all(frames[2][10:])
        await wait_until(lambda: hub.replica.store.has(rids[2]))
        while bob.session.peer_received < 3:
            await bob.receive()
        assert bob.session.peer_unstored == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- slow and silent peers

SHORT = SessionConfig(handshake_timeout=5.0, idle_timeout=30.0, keepalive=10.0)


async def test_peer_that_sends_nothing_is_dropped_after_the_handshake_timeout(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", config=NodeConfig(session=SHORT))
    left, right = trio.testing.memory_stream_pair()
    start = trio.current_time()
    stats = await hub.run_session(right, initiator=False, address="mem://slowloris")
    assert trio.current_time() - start == 5.0
    assert stats.seconds == 5.0
    assert stats.reason == "handshake timed out"
    assert stats.error
    assert stats.bytes_out == 0  # it learnt nothing, not even our HELLO
    assert await left.receive_some() == b""  # and the link is closed
    assert not store_of(hub).peers()


async def test_peer_silent_after_the_handshake_is_dropped_after_idle_timeout(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", config=NodeConfig(session=SHORT))
    left, right = trio.testing.memory_stream_pair()
    recorded = RecordingStream(right)
    async with trio.open_nursery() as nursery:
        run = start_session(nursery, hub, recorded, initiator=False, address="mem://silent")
        bad = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        await bad.handshake()
        shaken = trio.current_time()
        await run.done.wait()  # bob now says nothing at all
    assert run.stats is not None
    assert run.stats.reason == "peer silent for 30 s"
    assert trio.current_time() - shaken == 30.0
    # HELLO+AUTH and SUMMARY at once, then keepalive PINGs every 10 s, then CLOSE.
    assert sorted({t - shaken for t, _ in recorded.sends}) == [0.0, 10.0, 20.0, 30.0]
    end = await bad.closed_by_peer(answer=False)
    assert end.reason == "peer silent for 30 s"


async def test_keepalives_keep_an_answering_peer_connected(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    config = NodeConfig(session=SHORT)
    a, h = fleet.node("alice", config=config), fleet.node("hub", role="hub", config=config)
    left, right = trio.testing.memory_stream_pair()
    recorded = RecordingStream(left)
    async with trio.open_nursery() as nursery:
        ra = start_session(nursery, a, recorded, initiator=True, address="mem://a")
        rh = start_session(nursery, h, right, initiator=False, address="mem://h")
        await wait_until(lambda: live(a, ra.address) and live(h, rh.address))
        start = trio.current_time()
        await trio.sleep(200.0)  # fake time: ten idle timeouts
        assert live(a, ra.address)
        assert live(h, rh.address)
        assert ra.stats is None
        assert rh.stats is None
        times = [t for t, _ in recorded.sends if t >= start]
        assert len(times) >= 200 / SHORT.keepalive - 1
        gaps = [y - x for x, y in zip([start, *times], times, strict=False)]
        assert max(gaps) <= SHORT.keepalive
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- strangers

async def test_device_of_another_network_is_refused_and_nothing_is_stored(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    other_dir = fleet.tmp / "other"
    other_dir.mkdir()
    other = make_fleet(other_dir, seed="other")
    a = fleet.node("alice")
    o = other.node("alice")
    other.pay(o.replica, "alice", "bob", 9_00, "theirs")
    hashes = (a.replica.state_hash(), o.replica.state_hash())
    totals = (store_of(a).totals(), store_of(o).totals())

    async with trio.open_nursery() as nursery:
        ra, ro = start_pair(nursery, a, o)
    reasons = set()
    for run in (ra, ro):
        assert run.stats is not None
        assert not run.stats.synced
        assert run.stats.error
        assert run.stats.peer is None
        assert run.stats.records_in == run.stats.records_out == 0
        reasons.add(run.stats.reason)
    assert any(r.startswith("a sealed frame failed authentication") for r in reasons), reasons
    assert (a.replica.state_hash(), o.replica.state_hash()) == hashes
    assert (store_of(a).totals(), store_of(o).totals()) == totals
    assert store_of(a).peers() == store_of(o).peers() == []


async def test_device_without_admission_is_refused_at_the_handshake(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub")
    mallory_key = key("test/mallory")  # knows the network, never admitted to it
    mallory = Node(fleet.replica("mallory", seeded=False), mallory_key, wall_ms=lambda: 0)
    async with trio.open_nursery() as nursery:
        rm, rh = start_pair(nursery, mallory, hub)
    assert rh.stats is not None
    assert rm.stats is not None
    assert rh.stats.reason == "handshake failed: the peer shows no admit record"
    assert rh.stats.peer is None
    assert rm.stats.records_in == rh.stats.records_in == 0
    assert store_of(hub).peers() == []
    assert store_of(mallory).totals().records == 0


# ---------------------------------------------------------------- roles

def newcomer(fleet: Fleet, name: str) -> Node:
    """`name`'s node on an empty store (it holds not even its own admit), taking its
    role from its admit as `serve` does."""
    return Node(fleet.replica(name, seeded=False), fleet.key(name), wall_ms=lambda: WALL_MS)


async def test_a_hub_without_its_admit_joins_over_the_network_and_then_serves_as_a_hub(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Issue 11: the authority refused a hub that did not hold its own admit yet (it
    claims `device`, and was admitted as `hub`). It accepts it as a device and sends
    the admit; the same running node then shows its admit and claims `hub`, so a
    device that holds nothing (and must see the hub's admit) gets in."""
    authority = Node(fleet.replica("authority"), fleet.key("authority"),
                     wall_ms=lambda: WALL_MS)
    hub, bob = newcomer(fleet, "hub"), newcomer(fleet, "bob")
    assert (hub.role, hub.admit, bob.role, bob.admit) == ("device", None, "device", None)
    async with trio.open_nursery() as nursery:
        ra, rh = start_pair(nursery, authority, hub, until_synced=True, name="authority")
    assert ra.stats is not None
    assert rh.stats is not None
    assert (ra.stats.reason, ra.stats.synced, rh.stats.synced) == ("sync complete", True, True)
    [(device, _, role, *_)] = store_of(authority).peers()
    assert (device, role) == (hub.device, "device")  # granted what it claimed
    assert (hub.role, hub.admit) == ("hub", fleet.admit_raw(hub.replica, "hub"))

    async with trio.open_nursery() as nursery:
        rb, rh = start_pair(nursery, bob, hub, until_synced=True, name="bob")
    assert rb.stats is not None
    assert rb.stats.synced, rb.stats.reason
    [(device, _, role, *_)] = store_of(bob).peers()
    assert (device, role) == (hub.device, "hub")
    assert (bob.role, bob.admit) == ("device", fleet.admit_raw(bob.replica, "bob"))
    assert bob.replica.state_hash() == hub.replica.state_hash() == authority.replica.state_hash()


async def test_a_serving_node_takes_its_admit_written_by_another_process(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """`p2p-ledger import` of a bundle with the hub's admit while `serve --hub` runs:
    the store poll finds it, and later sessions show it."""
    hub = newcomer(fleet, "hub")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.watch_store)
        other = SqliteStore(store_of(hub).path, fleet.world.network.network_id)
        try:
            with other.transaction():
                Replica(fleet.world.network, other).receive_many(fleet.seed, now_ms=WALL_MS)
        finally:
            other.close()
        took = await wait_until(lambda: hub.role == "hub")
        assert took <= hub.config.poll_interval + 0.02
        assert hub.admit == fleet.admit_raw(hub.replica, "hub")
        nursery.cancel_scope.cancel()


async def test_a_fatal_frame_right_after_a_good_one_closes_only_that_session(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """One read holds a good SUMMARY and then junk: the session queues the summary's
    event and dies. The node must not answer on the dead session (that raised
    LocalProtocolError out of run_session and took `serve` down) and must not crash."""
    hub = fleet.node("hub", role="hub")
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        run = start_session(nursery, hub, right, initiator=False, address="mem://bad")
        bad = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        await bad.handshake()
        bad.session.send_summary(Frontier({}), trio.current_time())
        await left.send_all(bad.session.data_to_send() + b"\x00\x00\x00\x20" + bytes(32))
        await run.done.wait()
    assert run.stats is not None
    assert run.stats.reason.startswith("a sealed frame failed authentication")
    assert run.stats.records_out == 0


async def test_records_that_arrive_with_the_peers_close_are_stored(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Regression, fixed (working tree, node.py _handle_events: `case _ if session.closed and
    not isinstance(ev, SessionClosed): pass`): records that arrive in the same read as
    the peer's CLOSE are dropped unstored. That is every `sync`: the dialer sends its
    delta, SYNCED and (being LIVE at once) CLOSE in one write, so the responder never
    stores what a `sync` uploads. Skip only the replies (send_summary, send_records,
    send_synced) on a closed session; still take RecordsReceived."""
    hub = fleet.node("hub", role="hub")
    scratch = fleet.replica("bob-scratch")
    rid = fleet.pay(scratch, "bob", "carol", 1_00, "last-words")
    raw = scratch.store.raw(rid)
    assert raw is not None
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        run = start_session(nursery, hub, right, initiator=False, address="mem://bob")
        bob = HandDriven.device(fleet, "bob", left, admit_from=hub.replica)
        await bob.handshake()
        bob.session.send_records([raw], trio.current_time())
        bob.session.close("done", trio.current_time())
        await bob.flush()  # RECORDS and CLOSE in one write
        await run.done.wait()
    assert run.stats is not None
    assert run.stats.reason == "done"
    assert run.stats.records_in == 1
    assert hub.replica.store.has(rid)


async def test_live_pushes_are_acknowledged_together_within_the_live_delay(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """The sync's records are acknowledged at once (its completion waits for that); in
    the live phase, pushes committed within LIVE_ACK_DELAY share one STORED, sent that
    long after the first of them - before, every push frame got a STORED of its own."""
    from p2p_ledger.node.peer import LIVE_ACK_DELAY

    a, b = fleet.node("alice"), fleet.node("bob")
    async with trio.open_nursery() as nursery:
        ra, rb = start_pair(nursery, a, b)
        await wait_until(lambda: live(a, ra.address) and live(b, rb.address))
        to_b = peer_at(a, ra.address)
        acked, sent = to_b.peer_received, to_b.records_sent
        assert acked == sent  # the delta: acknowledged before the sync completed
        stored = []
        for n in range(3):
            rid = fleet.pay(a.replica, "alice", "bob", 1_00 + n, f"live-ack-{n}")
            a.push_new(trio.current_time())
            await wait_until(lambda rid=rid: b.replica.store.has(rid))  # type: ignore[misc]
            stored.append(trio.current_time())
        assert to_b.records_sent == sent + 3
        assert to_b.peer_received == acked  # committed there, not acknowledged yet
        assert stored[-1] - stored[0] < LIVE_ACK_DELAY
        await wait_until(lambda: to_b.peer_received == sent + 3, within=2 * LIVE_ACK_DELAY)
        assert trio.current_time() == pytest.approx(stored[0] + LIVE_ACK_DELAY, abs=0.02)
        nursery.cancel_scope.cancel()
