"""Hostile peers against the trio node (issue 11): frames carrying integers the store
cannot hold, a bug met while handling one peer's input, and the CLOSE a refused peer
must receive even when the link is slow.

Every test runs on `MockClock(autojump_threshold=0)` over in-memory streams, with a hub
that also serves an honest device (alice) in another session: that session must never
notice the hostile one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.core.ledger import Frontier
from p2p_ledger.core.records import record_id
from p2p_ledger.errors import StoreDamaged
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import SessionConfig
from tests.node_helpers import (
    OUT_OF_RANGE_FRAMES,
    Fleet,
    HandDriven,
    Running,
    SlowStream,
    flip_signature,
    make_fleet,
    queue_out_of_range,
    start_pair,
    start_session,
    wait_until,
)

NODE_LOG = "p2p_ledger.node"
PACKING = SessionConfig(packed=True)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


def live(node: Node, address: str) -> bool:
    return any(p.address == address and p.session.state is State.LIVE
               for p in node.peers.values())


def bobs_records(fleet: Fleet) -> tuple[bytes, bytes]:
    """Two payments of bob's, signed on a scratch replica the hub never sees: the
    second has a prev."""
    scratch = fleet.replica("bob-scratch")
    raws = [scratch.store.raw(fleet.pay(scratch, "bob", "carol", 1_00, key))
            for key in ("first", "second")]
    assert raws[0] is not None
    assert raws[1] is not None
    return raws[0], raws[1]


def authority_record(fleet: Fleet) -> tuple[bytes, bytes]:
    """(author, id) of a record every node of the fleet holds: the authority's first."""
    return fleet.world.network.authority, record_id(fleet.seed[0])


async def honest_session_goes_on(fleet: Fleet, hub: Node, alice: Node, good: Running,
                                 key: str) -> None:
    assert live(hub, good.address)
    rid = fleet.pay(alice.replica, "alice", "carol", 2_00, key)
    alice.push_new(trio.current_time())
    await wait_until(lambda: hub.replica.store.has(rid))
    assert live(hub, good.address)


def bad_peer(fleet: Fleet, hub: Node, nursery: trio.Nursery, address: str,
             stream_delay: float = 0.0) -> tuple[HandDriven, Running]:
    """An admitted device (bob, driven by hand) in a new session with the hub; the hub
    writes to it through a link whose sends take `stream_delay`."""
    left, right = trio.testing.memory_stream_pair()
    hub_side = SlowStream(right, stream_delay) if stream_delay else right
    run = start_session(nursery, hub, hub_side, initiator=False, address=address)
    return HandDriven.device(fleet, "bob", left, admit_from=hub.replica, config=PACKING), run


# ---------------------------------------------------------------- integers out of range

@pytest.mark.parametrize("what", OUT_OF_RANGE_FRAMES)
async def test_an_out_of_range_integer_closes_only_that_session(
        autojump_clock: MockClock, fleet: Fleet, what: str) -> None:
    """A seq of 2**63 in a SUMMARY tip, a TIPS element or a PACKED reference raised
    OverflowError in the store, out of the session and out of `serve`."""
    hub, alice = fleet.node("hub", role="hub"), fleet.node("alice")
    before = hub.replica.state_hash()
    _, chained = bobs_records(fleet)
    async with trio.open_nursery() as nursery:
        _, good = start_pair(nursery, alice, hub, name="good")
        await wait_until(lambda: live(hub, good.address))
        bad, run = bad_peer(fleet, hub, nursery, "mem://bad")
        await bad.handshake()
        queue_out_of_range(bad.session, what, held=authority_record(fleet), chained=chained,
                           now=trio.current_time())
        await bad.flush()
        end = await bad.closed_by_peer(answer=False)
        await run.done.wait()
        assert run.stats is not None
        assert run.stats.error
        assert run.stats.reason.startswith("malformed"), run.stats.reason
        assert "2**63" in run.stats.reason
        # The hostile device learnt why, in a sealed CLOSE.
        assert (end.by_peer, end.error, end.reason) == (True, None, run.stats.reason[:200])
        await honest_session_goes_on(fleet, hub, alice, good, "after-bad")
        assert hub.replica.state_hash() != before  # alice's payment, nothing of bob's
        assert not hub.replica.store.has(bytes(32))
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the session boundary

async def test_a_bug_met_on_one_peers_input_closes_only_that_session(
        autojump_clock: MockClock, fleet: Fleet, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Whatever handling one peer's input raises closes that session, logged as one
    warning line with the traceback at debug level; the process goes on. Only
    Exception: a KeyboardInterrupt (like trio's Cancelled) still propagates."""
    caplog.set_level(logging.DEBUG, logger=NODE_LOG)
    hub, alice = fleet.node("hub", role="hub"), fleet.node("alice")
    first, _ = bobs_records(fleet)
    take_records = hub._take_records
    raising: list[BaseException] = [RuntimeError("a bug met on this input")]

    def take_or_fail(peer: object, raws: object, now: float) -> None:
        if getattr(peer, "address", "").startswith("mem://bad"):
            raise raising[0]
        take_records(peer, raws, now)  # type: ignore[arg-type]

    monkeypatch.setattr(hub, "_take_records", take_or_fail)
    async with trio.open_nursery() as nursery:
        _, good = start_pair(nursery, alice, hub, name="good")
        await wait_until(lambda: live(hub, good.address))
        bad, run = bad_peer(fleet, hub, nursery, "mem://bad")
        await bad.handshake()
        bad.session.send_records([first], trio.current_time())
        await bad.flush()
        end = await bad.closed_by_peer(answer=False)
        await run.done.wait()
        reason = "internal error on the peer's input (RuntimeError)"
        assert run.stats is not None
        assert (run.stats.reason, run.stats.error) == (reason, True)
        assert (end.by_peer, end.error, end.reason) == (True, None, reason)
        await honest_session_goes_on(fleet, hub, alice, good, "after-bug")
        nursery.cancel_scope.cancel()

    ours = [r for r in caplog.records if r.name == NODE_LOG and "mem://bad" in r.getMessage()]
    warned = [r for r in ours if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warned] == [
        f"session {run.stats.peer[:12]}@mem://bad: closed after an error on its input: "
        "RuntimeError: a bug met on this input"]
    assert warned[0].exc_info is None  # one line
    traced = [r for r in ours if r.exc_info is not None]
    assert [r.levelno for r in traced] == [logging.DEBUG]
    assert traced[0].exc_info is not None
    assert isinstance(traced[0].exc_info[1], RuntimeError)

    # A KeyboardInterrupt propagates; so does our own store failing, which is not the
    # peer's doing: it stops the node (serve then exits with one line), rather than
    # closing the session and serving on from that store.
    for n, error in enumerate([KeyboardInterrupt(),
                               StoreDamaged("the store hub.sqlite3 is damaged (test)")]):
        raising[0] = error
        with pytest.RaisesGroup(type(error), flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                bad, run = bad_peer(fleet, hub, nursery, f"mem://bad-{n + 2}")
                await bad.handshake()
                bad.session.send_records([first], trio.current_time())
                await bad.flush()
                await trio.sleep(3600)
        assert run.stats is None


# ---------------------------------------------------------------- CLOSE over a slow link

async def _misbehave(bad: HandDriven, what: str, records: tuple[bytes, bytes],
                     held: tuple[bytes, bytes]) -> None:
    now = trio.current_time()
    if what == "junk frame":
        await bad.stream.send_all(b"\x00\x00\x00\x20" + bytes(32))
        return
    if what == "invalid records":
        for i in range(4):  # one frame each: the hub counts across frames
            bad.session.send_records([flip_signature(records[0], i)], now)
    else:
        queue_out_of_range(bad.session, "PACKED prev", held=held, chained=records[1], now=now)
    await bad.flush()


@pytest.mark.parametrize("what", ["junk frame", "invalid records", "out-of-range PACKED"])
async def test_a_refused_peer_always_receives_the_close_with_the_reason(
        autojump_clock: MockClock, fleet: Fleet, what: str) -> None:
    """The hub's sends take 0.3 s each. Right after bob's summary the hub is sending its
    own summary, then its delta; bob misbehaves at every moment of that (and after).
    A CLOSE queued while the sender was inside `send_all` was dropped: the sender saw
    the session closed and returned without flushing what came last."""
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_invalid_records=3))
    alice = fleet.node("alice")
    records = bobs_records(fleet)
    delay = 0.3
    async with trio.open_nursery() as nursery:
        _, good = start_pair(nursery, alice, hub, name="good")
        await wait_until(lambda: live(hub, good.address))
        for step in range(10):
            bad, run = bad_peer(fleet, hub, nursery, f"mem://bad-{step}", stream_delay=delay)
            await bad.handshake()
            bad.session.send_summary(Frontier({}), trio.current_time())
            await bad.flush()
            await trio.sleep(step * delay / 4)
            await _misbehave(bad, what, records, authority_record(fleet))
            end = await bad.closed_by_peer(answer=False)
            await run.done.wait()
            assert run.stats is not None
            assert run.stats.reason, step
            assert (step, end.by_peer, end.error, end.reason) == (
                step, True, None, run.stats.reason[:200])
        await honest_session_goes_on(fleet, hub, alice, good, "after-bad")
        nursery.cancel_scope.cancel()
