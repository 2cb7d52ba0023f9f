"""What a peer can make the node spend, bounded: the pending area per session and in
total (and what a session left there goes when it closes), sessions at once and per
host, and the send buffers of all sessions together. On fake time, over in-memory
streams, as in test_node.py; peers that misbehave are driven by hand (`HandDriven`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shlex
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.core.hlc import pack_hlc
from p2p_ledger.core.ids import device_id
from p2p_ledger.core.ledger import Frontier
from p2p_ledger.core.records import Meta, Record, sign_record
from p2p_ledger.errors import SyncFailed
from p2p_ledger.node import node as node_module
from p2p_ledger.node import serving as serving_module
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import SessionConfig
from tests.helpers import T0
from tests.node_helpers import (
    Fleet,
    HandDriven,
    RecordingStream,
    Running,
    SlowStream,
    make_fleet,
    start_session,
    wait_until,
)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


def orphans(fleet: Fleet, who: str, count: int, *, tag: str, refs: int = 8) -> list[bytes]:
    """Valid records of `who` whose prev and refs nobody holds: they can only wait."""
    key = fleet.key(who)
    out = []
    for i in range(count):
        deps = [hashlib.blake2b(f"{tag}/{i}/{j}".encode(), digest_size=32).digest()
                for j in range(refs + 1)]
        record = Record(author=bytes(key.verify_key), seq=2 + i, prev=deps[0],
                        refs=tuple(sorted(deps[1:])), hlc=pack_hlc(T0, i),
                        body=Meta(account="main", field="f", value="x" * 100))
        out.append(sign_record(record, key, fleet.world.network.network_id).raw)
    return out


async def connect(nursery: trio.Nursery, fleet: Fleet, node: Node, who: str, address: str,
                  *, pair: object = trio.testing.memory_stream_pair) -> HandDriven:
    """A peer driven by hand, connected to `node` at `address`, handshake done."""
    left, right = pair()  # type: ignore[operator]
    start_session(nursery, node, right, initiator=False, address=address)
    peer = HandDriven.device(fleet, who, left, admit_from=node.replica)
    await peer.handshake()
    await trio.testing.wait_all_tasks_blocked()  # the node has taken our AUTH too
    return peer


async def send(peer: HandDriven, raws: list[bytes]) -> None:
    peer.session.send_records(raws, trio.current_time())
    await peer.flush()


# ---------------------------------------------------------------- the pending area

async def test_a_flooding_peer_is_held_to_its_pending_budget_until_it_closes(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    budget = 60_000
    hub = fleet.node("hub", role="hub",
                     replica=fleet.replica("hub", max_pending_bytes_per_origin=budget))
    flood = orphans(fleet, "carol", 200, tag="flood")
    async with trio.open_nursery() as nursery:
        hostile = await connect(nursery, fleet, hub, "carol", "mem://hostile")
        for at in range(0, len(flood), 20):
            await send(hostile, flood[at:at + 20])
            await trio.testing.wait_all_tasks_blocked()
            assert 0 < hub.replica.pending_bytes <= budget
        assert hub.replica.pending_count < 50
        [origin] = hub.peers
        assert hub.replica.pending_bytes == hub.replica.pending_bytes_of(origin)
        # Dropping is not the peer's fault: the session is not closed for it.
        assert not hostile.session.closed
        hostile.session.close("done", trio.current_time())
        await hostile.flush()
        await hostile.stream.aclose()
        await wait_until(lambda: not hub.peers)
        assert (hub.replica.pending_count, hub.replica.pending_bytes) == (0, 0)
        nursery.cancel_scope.cancel()


async def test_the_total_pending_budget_holds_across_flooding_peers_and_spares_an_honest_one(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", replica=fleet.replica(
        "hub", max_pending_bytes=150_000, max_pending_bytes_per_origin=60_000))
    # alice's two payments, sent second first: the second waits for the first.
    scratch = fleet.replica("alice-scratch")
    first = fleet.pay(scratch, "alice", "carol", 1_00, "p-1")
    second = fleet.pay(scratch, "alice", "carol", 2_00, "p-2")
    raws = scratch.store.raws_in_order([first, second])
    async with trio.open_nursery() as nursery:
        honest = await connect(nursery, fleet, hub, "alice", "mem://honest")
        await send(honest, raws[1:])
        await wait_until(lambda: hub.replica.pending_count == 1)
        hostiles = []
        for n in range(4):
            hostile = await connect(nursery, fleet, hub, "carol", f"mem://hostile-{n}")
            await send(hostile, orphans(fleet, "carol", 60, tag=f"flood-{n}"))
            await trio.testing.wait_all_tasks_blocked()
            hostiles.append(hostile)
            assert hub.replica.pending_bytes <= 150_000
            assert all(hub.replica.pending_bytes_of(pid) <= 60_000 for pid in hub.peers)
            assert second in {rid for rid, _ in hub.replica.pending()}
        assert hub.replica.pending_bytes > 120_000
        # The honest peer's record is released by its past, from the same session.
        await send(honest, raws[:1])
        await wait_until(lambda: hub.replica.store.has(second))
        assert all(not h.session.closed for h in hostiles)
        nursery.cancel_scope.cancel()


async def test_a_record_another_session_also_delivered_stays_when_the_first_closes(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub")
    waiting = orphans(fleet, "carol", 3, tag="shared")
    async with trio.open_nursery() as nursery:
        a = await connect(nursery, fleet, hub, "carol", "mem://a")
        b = await connect(nursery, fleet, hub, "carol", "mem://b")
        await send(a, waiting)
        await send(b, waiting[:1])
        await wait_until(lambda: hub.replica.pending_count == 3)
        await trio.testing.wait_all_tasks_blocked()
        await a.stream.aclose()
        await wait_until(lambda: len(hub.peers) == 1)
        assert [rid for rid, _ in hub.replica.pending()] == [
            hashlib.blake2b(waiting[0], digest_size=32).digest()]
        await b.stream.aclose()
        await wait_until(lambda: not hub.peers)
        assert hub.replica.pending_count == 0
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- sessions

async def test_sessions_beyond_max_sessions_are_refused_with_a_reason(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_sessions=2))
    async with trio.open_nursery() as nursery:
        first = await connect(nursery, fleet, hub, "alice", "mem://one")
        await connect(nursery, fleet, hub, "bob", "mem://two")
        third = await connect(nursery, fleet, hub, "carol", "mem://three")
        end = await third.closed_by_peer()
        assert end.by_peer
        assert end.reason == ("handshake failed: node busy: 2 sessions, the most it runs "
                              "at once")
        await wait_until(lambda: len(hub.peers) == 2)
        # One ends: there is room again.
        await first.stream.aclose()
        await wait_until(lambda: len(hub.peers) == 1)
        fourth = await connect(nursery, fleet, hub, "carol", "mem://four")
        fourth.session.send_summary(Frontier({}), trio.current_time())
        await fourth.flush()
        await wait_until(lambda: any(p.session.state is State.WE_SYNCED
                                     for p in hub.peers.values() if p.address == "mem://four"))
        nursery.cancel_scope.cancel()


async def test_sessions_from_one_host_are_bounded_apart(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_sessions_per_host=2))
    async with trio.open_nursery() as nursery:
        await connect(nursery, fleet, hub, "alice", "tcp://10.0.0.7:4001")
        await connect(nursery, fleet, hub, "bob", "tcp://10.0.0.7:4002")
        third = await connect(nursery, fleet, hub, "carol", "tcp://10.0.0.7:4003")
        end = await third.closed_by_peer()
        assert end.reason == ("handshake failed: node busy: 2 sessions from tcp://10.0.0.7, "
                              "the most it takes from one host")
        other = await connect(nursery, fleet, hub, "carol", "tcp://10.0.0.8:4001")
        assert not other.session.closed
        await wait_until(lambda: len(hub.peers) == 3)
        nursery.cancel_scope.cancel()


async def test_sessions_with_one_device_are_bounded_apart(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_sessions_per_device=2))
    async with trio.open_nursery() as nursery:
        await connect(nursery, fleet, hub, "carol", "mem://a")
        await connect(nursery, fleet, hub, "carol", "mem://b")
        third = await connect(nursery, fleet, hub, "carol", "mem://c")
        end = await third.closed_by_peer()
        carol = device_id(fleet.world.device("carol"))
        assert end.reason == f"handshake failed: node busy: 2 sessions with {carol} already"
        other = await connect(nursery, fleet, hub, "alice", "mem://d")
        assert not other.session.closed
        await wait_until(lambda: len(hub.peers) == 3)
        nursery.cancel_scope.cancel()


async def test_beyond_the_refusals_in_progress_a_connection_is_closed_at_once(
        autojump_clock: MockClock, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_REFUSING", 1)
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_sessions=1))
    async with trio.open_nursery() as nursery:
        await connect(nursery, fleet, hub, "alice", "mem://one")
        # A refused session in its handshake (it sends nothing)...
        _slow, right = trio.testing.memory_stream_pair()
        start_session(nursery, hub, right, initiator=False, address="mem://slow")
        await trio.testing.wait_all_tasks_blocked()
        assert len(hub.peers) == 2
        # ...and the next connection is not even answered.
        left2, right2 = trio.testing.memory_stream_pair()
        late = start_session(nursery, hub, right2, initiator=False, address="mem://late")
        await late.done.wait()
        assert late.stats is not None
        assert late.stats.error
        assert late.stats.reason == "node busy: 1 sessions, the most it runs at once"
        assert await left2.receive_some() == b""
        assert len(hub.peers) == 2
        nursery.cancel_scope.cancel()


async def stall(nursery: trio.Nursery, node: Node,
                address: str) -> tuple[trio.abc.Stream, Running]:
    """A connection that never says a word: a handshake that never finishes."""
    left, right = trio.testing.memory_stream_pair()
    running = start_session(nursery, node, right, initiator=False, address=address)
    await trio.testing.wait_all_tasks_blocked()
    return left, running


async def test_connections_that_never_finish_their_handshake_cannot_crowd_out_devices(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Anyone who can reach the port, with no key, could hold every session slot with
    connections that send nothing, each for its 10 s handshake timeout and then again:
    over TCP, 300 such connections from one host made an admitted device's `sync` fail
    ("the peer closed the connection"). Handshakes in progress are bounded apart, per
    host and in total, and closed at once beyond that; only a peer that has proved its
    key and admission takes one of `max_sessions`."""
    hub = fleet.node("hub", role="hub", config=NodeConfig(
        max_sessions=2, max_handshakes=3, max_handshakes_per_host=2))
    async with trio.open_nursery() as nursery:
        held = [await stall(nursery, hub, f"tcp://10.6.6.6:{port}") for port in (1, 2)]
        for port in (3, 4, 5):
            left, late = await stall(nursery, hub, f"tcp://10.6.6.6:{port}")
            await late.done.wait()
            assert late.stats is not None
            assert late.stats.reason == ("node busy: 2 handshakes in progress from "
                                         "tcp://10.6.6.6, the most it runs from one host")
            assert await left.receive_some() == b""
        assert all(not running.done.is_set() for _, running in held)
        # The two stalled handshakes take none of the two sessions: both devices sync.
        alice = await connect(nursery, fleet, hub, "alice", "tcp://10.0.0.7:1")
        bob = await connect(nursery, fleet, hub, "bob", "tcp://10.0.0.8:1")
        for peer in (alice, bob):
            peer.session.send_summary(hub.replica.frontier(), trio.current_time())
            await peer.flush()
        await wait_until(lambda: sum(p.session.state is State.WE_SYNCED
                                     for p in hub.peers.values()) == 2)
        # The total: one more handshake from another host fills it, the next is closed.
        await stall(nursery, hub, "tcp://10.9.9.9:1")
        _, beyond = await stall(nursery, hub, "tcp://10.9.9.10:1")
        await beyond.done.wait()
        assert beyond.stats is not None
        assert beyond.stats.reason == "node busy: 3 handshakes in progress, the most it runs"
        # The stalled ones end at their handshake timeout, and room is made again.
        await wait_until(lambda: all(running.done.is_set() for _, running in held))
        assert all(r.stats is not None and r.stats.reason == "handshake timed out"
                   for _, r in held)
        nursery.cancel_scope.cancel()


async def test_a_device_turned_away_by_the_handshakes_bound_is_told_why(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Devices behind one NAT share a host: past 16 handshakes in progress from it, the
    hub closes a connection before its handshake, and the protocol has no word for it
    then (a CLOSE is sealed with keys the handshake makes). `sync` said only "the peer
    closed the connection"; its reason now says the peer is likely busy, and what to
    do."""
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_handshakes_per_host=1))
    alice = fleet.node("alice")
    async with trio.open_nursery() as nursery:
        await stall(nursery, hub, "tcp://10.6.6.6:1")  # a device still in its handshake
        ours, theirs = trio.testing.memory_stream_pair()
        turned_away = start_session(nursery, hub, theirs, initiator=False,
                                    address="tcp://10.6.6.6:2")
        with pytest.raises(SyncFailed) as failed:
            await alice.sync(ours)
        await turned_away.done.wait()
        nursery.cancel_scope.cancel()
    reason = failed.value.stats.reason
    assert reason.startswith("the peer closed the connection before the handshake, "
                             "without a word: the peer is likely busy"), reason
    assert "16 at most from one address" in reason
    assert "max_handshakes_per_host" in reason
    assert str(failed.value) == f"sync with stream failed: {reason}"


async def test_a_peer_that_closes_after_answering_is_not_called_busy(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """The hint is for a close before any byte came: a peer that answered the HELLO
    and then closed keeps the plain reason."""
    alice = fleet.node("alice")
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:

        async def answer_then_close() -> None:
            await theirs.receive_some()
            await theirs.send_all(b"\x00\x00")  # half a frame's length prefix
            await theirs.aclose()

        nursery.start_soon(answer_then_close)
        with pytest.raises(SyncFailed) as failed:
            await alice.sync(ours)
    assert failed.value.stats.reason == "the peer closed the connection"


async def test_a_command_that_ends_at_once_is_not_called_busy(fleet: Fleet) -> None:
    """Over `exec:` the peer is a command (`ssh ... serve --stdio`), which no handshakes
    bound turns away: one that ends at once (ssh failing, its words on stderr) keeps
    the plain reason. Real time: a real child process."""
    alice = fleet.node("alice")
    with trio.fail_after(60), pytest.raises(SyncFailed) as failed:
        await alice.sync(f"exec:{shlex.quote(sys.executable)} -c pass")
    assert failed.value.stats.reason == "the peer closed the connection"


async def test_websocket_upgrades_refused_with_an_answer_are_bounded(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused WebSocket upgrade is answered with an HTTP 503, and its request read
    (within REFUSAL_WAIT) so that the close does not reset the answer away; at most
    MAX_WS_REFUSING such answers at once (2 here), beyond which a connection is closed
    without a word, as all were before. Over loopback, real time."""
    monkeypatch.setattr(serving_module, "MAX_WS_REFUSING", 2)
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_handshakes_per_host=0))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, hub.accept_ws, 0,
                                                          host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]

        async def answer(stream: trio.SocketStream) -> bytes:
            got = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some():
                    got += chunk
            return got

        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await wait_until(lambda: hub._ws_refusing == 2, within=10)
        beyond = await trio.open_tcp_stream("127.0.0.1", port)
        assert await answer(beyond) == b""  # without a word: two answers are under way
        for stream in silent:  # answered; they send no request: let go at REFUSAL_WAIT
            assert await answer(stream) == serving_module.BUSY_503
        waited = await wait_until(lambda: hub._ws_refusing == 0, within=5)
        assert waited <= serving_module.REFUSAL_WAIT + 0.5
        polite = await trio.open_tcp_stream("127.0.0.1", port)
        await polite.send_all(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n")
        assert await answer(polite) == serving_module.BUSY_503
        for stream in (*silent, beyond, polite):
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_max_sessions_holds_for_handshakes_that_finish_together(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Both connections arrive while no session runs, so neither is refused at once;
    the one that proves its key second is told the node is busy at its AUTH."""
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_sessions=1))
    async with trio.open_nursery() as nursery:
        streams = [trio.testing.memory_stream_pair() for _ in range(2)]
        for n, (_, right) in enumerate(streams):
            start_session(nursery, hub, right, initiator=False, address=f"mem://{n}")
        await trio.testing.wait_all_tasks_blocked()
        alice = HandDriven.device(fleet, "alice", streams[0][0], admit_from=hub.replica)
        bob = HandDriven.device(fleet, "bob", streams[1][0], admit_from=hub.replica)
        await alice.handshake()
        await bob.handshake()
        end = await bob.closed_by_peer()
        assert end.reason == "handshake failed: node busy: 1 sessions, the most it runs at once"
        assert not alice.session.closed
        nursery.cancel_scope.cancel()


async def test_the_record_of_ended_sessions_is_bounded(
        autojump_clock: MockClock, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Node.completed` kept the stats of every session ever run, refused connections
    included: over TCP, each connection that opened and closed at once left ~240 bytes
    on a running `serve` for good (+4.8 MB per 20,000, at ~1,300 a second from one
    client). It keeps the last `KEEP_COMPLETED`; the counters keep the totals."""
    monkeypatch.setattr(node_module, "KEEP_COMPLETED", 5)
    hub = fleet.node("hub", role="hub")
    async with trio.open_nursery() as nursery:
        for n in range(12):
            left, running = await stall(nursery, hub, f"tcp://10.0.0.{n}:1")
            await left.aclose()
            await running.done.wait()
        nursery.cancel_scope.cancel()
    assert [s.address for s in hub.completed] == [f"tcp://10.0.0.{n}:1" for n in range(7, 12)]
    assert hub.counters.sessions_ended == 12
    # (each ended in its handshake, with the peer gone: an error, counted apart)
    assert all(s.error for s in hub.completed)
    assert hub.counters.sessions_failed == 12


# ---------------------------------------------------------------- send buffers

async def test_the_send_buffers_of_all_sessions_are_bounded_together(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """Two peers that stop reading: records pushed to them pile up in their buffers.
    Over the total, the session holding the most is closed; the other goes on."""
    hub = fleet.node("hub", role="hub")
    async with trio.open_nursery() as nursery:
        a = await connect(nursery, fleet, hub, "alice", "mem://a",
                          pair=trio.testing.lockstep_stream_pair)
        a.session.send_summary(Frontier({}), trio.current_time())
        await a.flush()
        await wait_until(lambda: hub.peers[1].session.state is State.WE_SYNCED)
        for n in range(5):
            fleet.pay(hub.replica, "alice", "carol", 1_00, f"p-{n}")
            hub.push_new(trio.current_time())  # a does not read: they wait in its buffer
        b = await connect(nursery, fleet, hub, "bob", "mem://b",
                          pair=trio.testing.lockstep_stream_pair)
        b.session.send_summary(hub.replica.frontier(), trio.current_time())  # it lacks nothing
        await b.flush()
        await wait_until(lambda: hub.peers[2].session.state is State.WE_SYNCED)
        held = hub.peers[1].session.pending_output + hub.peers[2].session.pending_output
        hub.config = dataclasses.replace(hub.config, max_send_buffer_total=held + 1)
        fleet.pay(hub.replica, "alice", "carol", 1_00, "p-last")
        hub.push_new(trio.current_time())  # to both: over the total
        await wait_until(lambda: 1 not in hub.peers)
        assert hub.completed[-1].reason == ("peer too slow: the send buffers of all sessions "
                                            "are full")
        assert hub.peers[2].session.state is State.WE_SYNCED
        assert 0 < hub.peers[2].session.pending_output <= held + 1
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the delta, a frame at a time

STREAMED = NodeConfig(session=SessionConfig(packed=True, batch_bytes=2048),
                      max_send_buffer=16 << 10)


def _fill(fleet: Fleet, hub: Node, count: int) -> None:
    for n in range(count):
        fleet.pay(hub.replica, "alice", "bob", 1, f"many-{n}")


async def test_a_delta_larger_than_the_send_buffer_goes_a_frame_at_a_time(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """The delta answering a summary is packed a frame at a time as the send buffer
    drains: one larger than `max_send_buffer` reaches the peer whole (packed at once,
    it closed the session: "peer too slow: send buffer full"), in many writes, none
    larger than the low-water mark and a frame."""
    hub = fleet.node("hub", role="hub", config=STREAMED)
    _fill(fleet, hub, 300)
    carol = fleet.node("carol")
    left, right = trio.testing.memory_stream_pair()
    wire = RecordingStream(SlowStream(right, 0.001))
    async with trio.open_nursery() as nursery:
        dialed = start_session(nursery, carol, left, initiator=True, address="mem://carol",
                               until_synced=True)
        start_session(nursery, hub, wire, initiator=False, address="mem://hub")
        await dialed.done.wait()
        nursery.cancel_scope.cancel()
    assert dialed.stats is not None
    assert dialed.stats.synced, dialed.stats.reason
    assert carol.replica.state_hash() == hub.replica.state_hash()
    sent = sum(size for _, size in wire.sends)
    assert sent > STREAMED.max_send_buffer  # more than the buffer may hold at once...
    largest = max(size for _, size in wire.sends)
    assert largest <= STREAMED.max_send_buffer // 4 + 2 * 2048  # ...never held at once
    assert len(wire.sends) > sent // (STREAMED.max_send_buffer // 4 + 2 * 2048)


async def test_pushes_wait_for_the_delta_they_may_depend_on(
        autojump_clock: MockClock, fleet: Fleet) -> None:
    """A record stored while the delta is still being sent goes after the delta's
    last frame and our SYNCED: its past (alice's earlier payments) is then held by
    the peer, which never has to park it."""
    hub = fleet.node("hub", role="hub", config=STREAMED)
    _fill(fleet, hub, 300)
    carol = fleet.node("carol")
    left, right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        start_session(nursery, carol, left, initiator=True, address="mem://carol")
        start_session(nursery, hub, SlowStream(right, 0.01), initiator=False,
                      address="mem://hub")
        await wait_until(lambda: any(p.delta is not None and p.delta_next > 0
                                     for p in hub.peers.values()))
        late = fleet.pay(hub.replica, "alice", "bob", 1, "late")
        hub.push_new(trio.current_time())
        (streaming,) = hub.peers.values()
        assert streaming.delta is not None  # still being sent...
        assert [raw for raw, _, _ in streaming.outbox] == [hub.replica.store.raw(late)]
        delta = len(streaming.delta)
        assert streaming.session.records_sent < delta  # ...and the push waits behind it
        await wait_until(lambda: carol.replica.store.has(late))
        assert streaming.delta is None
        assert streaming.session.records_sent == delta + 1
        assert carol.replica.state_hash() == hub.replica.state_hash()
        nursery.cancel_scope.cancel()
    assert carol.replica.pending_count == 0
