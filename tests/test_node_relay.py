"""Relaying a record that waited in the pending area: it goes to every peer but the
ones that delivered it, including the peer whose record released it (swarm seed 217).

Nodes on `MockClock(autojump_threshold=0)` over in-memory streams, with real SQLite
stores in tmp_path, as in tests/test_node.py.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.core.ids import device_id
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.records import parse_record
from p2p_ledger.node.feed import RecordStored
from p2p_ledger.protocol._state import State
from tests.node_helpers import (
    WALL_MS,
    HandDriven,
    make_fleet,
    start_pair,
    start_session,
    wait_until,
)


def _raw(replica: Replica, rid: bytes) -> bytes:
    raw = replica.store.raw(rid)
    assert raw is not None
    return raw


async def test_a_record_released_by_a_peers_record_is_relayed_to_that_peer(
        autojump_clock: MockClock, tmp_path: Path) -> None:
    """Alice's second payment `x` reaches the hub first, over her session, and waits
    there for her first, `y`. Bob, who has `y` but not `x`, pushes `y`; the hub stores
    it and releases `x`. Before, the hub took `x` for bob's (it came out of bob's
    batch) and never pushed it to him: with the session open and nothing left to
    reconcile, bob lacked it for good (7 of 15 replicas of swarm seed 217)."""
    fleet = make_fleet(tmp_path)
    hub, bob = fleet.node("hub", role="hub"), fleet.node("bob")
    scratch = fleet.replica("alice-scratch")
    y = fleet.pay(scratch, "alice", "carol", 1_00, "y")
    x = fleet.pay(scratch, "alice", "carol", 2_00, "x")
    assert parse_record(_raw(scratch, x)).record.prev == y
    stored: list[RecordStored] = []
    async with trio.open_nursery() as nursery:
        with hub.subscribe() as feed:
            async def read_feed() -> None:
                async for record in feed:
                    stored.append(record)
            nursery.start_soon(read_feed)

            h_b, b_h = start_pair(nursery, hub, bob, name="h-b")
            left, right = trio.testing.memory_stream_pair()
            start_session(nursery, hub, right, initiator=False, address="mem://alice")
            alice = HandDriven.device(fleet, "alice", left, admit_from=hub.replica)
            await alice.handshake()
            await wait_until(lambda: all(
                p.session.state is State.LIVE for p in (*hub.peers.values(),
                                                        *bob.peers.values())
                if p.address != "mem://alice"))

            alice.session.send_records([_raw(scratch, x)], trio.current_time())
            await alice.flush()
            await wait_until(lambda: hub.replica.pending_count == 1)
            assert not hub.replica.store.has(x)

            with bob.replica.store.transaction():  # bob has y by another way
                bob.replica.receive_many([_raw(scratch, y)], now_ms=WALL_MS)
            assert bob.push_new(trio.current_time()) == 1
            await wait_until(lambda: hub.replica.store.has(x))
            assert hub.replica.pending_count == 0
            # the hub relays x to bob: y came from bob, x from alice
            await wait_until(lambda: bob.replica.store.has(x), within=5.0)
            assert bob.replica.state_hash() == hub.replica.state_hash()
            await wait_until(lambda: len(stored) == 2)
            by_id = {s.record.id: s.from_peer for s in stored}
            assert by_id == {y: device_id(fleet.world.device("bob")),
                             x: device_id(fleet.world.device("alice"))}
            assert h_b.stats is None  # the hub-bob session is still open, both sides
            assert b_h.stats is None
            nursery.cancel_scope.cancel()
