"""Builders for the node tests: nodes over SQLite stores of one funded network, streams
that record when they sent, a session driven by hand over a stream, and bounded waits
in trio time (fake under MockClock, so they cost nothing and never flake).

Every node starts with the authority's records (admits of every device, cash-in to
alice and bob). Records are signed at the fixed clock T0 and nodes judge them at
WALL_MS, a minute later, so no timestamp is ever "in the future".
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import trio
import trio.testing

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import Role
from p2p_ledger.core.store import MemoryStore
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.node.links import open_link
from p2p_ledger.node.node import Connector, Node, NodeConfig, SessionStats
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import (
    Event,
    HandshakeDone,
    Session,
    SessionClosed,
    SessionConfig,
)
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0, World, make_world

__all__ = ["OUT_OF_RANGE_FRAMES", "TOO_LARGE", "WALL_MS", "Fleet", "HandDriven",
           "RecordingStream", "Running", "SlowStream", "flip_signature", "make_fleet", "peer_at",
           "queue_out_of_range", "start_pair", "start_session", "wait_until"]

WALL_MS = T0 + 60_000


@dataclass
class Fleet:
    """One network: an authority and devices, each of which can get a node."""

    world: World
    tmp: Path
    seed: list[bytes]  # the authority's records, in causal order
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def key(self, name: str) -> nacl.signing.SigningKey:
        return self.world.authority_key if name == "authority" else self.world.device_keys[name]

    def replica(self, name: str, *, seeded: bool = True, **limits: int) -> Replica:
        """A replica over a new store; `limits` go to `Replica` (its pending area's)."""
        store = SqliteStore(self.tmp / f"{name}-{next(self._counter)}.sqlite3",
                            self.world.network.network_id)
        replica = Replica(self.world.network, store, **limits)
        if seeded:
            with store.transaction():
                report = replica.receive_many(self.seed, now_ms=WALL_MS)
            assert not report.refused, report.refused
        return replica

    def node(self, name: str, *, role: str = "device", config: NodeConfig | None = None,
             replica: Replica | None = None, rng: random.Random | None = None,
             connect: Connector = open_link) -> Node:
        return Node(replica or self.replica(name), self.key(name), role=role, config=config,
                    wall_ms=lambda: WALL_MS, rng=rng, connect=connect)

    def pay(self, replica: Replica, payer: str, payee: str, amount: int, key: str) -> bytes:
        """`payer` pays `payee` on `replica`, committed; returns the record id."""
        store = replica.store
        assert isinstance(store, SqliteStore)
        with store.transaction():
            result = Wallet(replica, self.key(payer)).pay(
                self.world.account(payee), amount, key=key, now_ms=T0 + 1_000)
        return result.record_id

    def admit_raw(self, replica: Replica, name: str) -> bytes:
        admits = replica.store.admits_for(self.world.device(name))
        raw = replica.store.raw(admits[-1].id)
        assert raw is not None
        return raw


def make_fleet(tmp: Path, devices: tuple[str, ...] = ("alice", "bob", "carol", "hub"),
               seed: str = "test") -> Fleet:
    world = make_world(devices=devices, seed=seed)
    auth = world.wallet("authority", Replica(world.network, MemoryStore()))
    for name in devices:
        auth.admit(world.device(name), role=Role.HUB if name == "hub" else Role.DEVICE,
                   now_ms=T0)
    for name in ("alice", "bob"):
        if name in devices:
            auth.issue(world.account(name), 100_00, key=f"cash-in-{name}", now_ms=T0)
    raws = auth.replica.delta(Frontier({}))
    return Fleet(world=world, tmp=tmp, seed=raws)


# The first integer SQLite's signed 64-bit INTEGER cannot hold: no frame or record may
# carry it (specs/sync-protocol.md section 3, specs/records.md section 3).
TOO_LARGE = 2**63
# The frames whose out-of-range seq once raised OverflowError in the store and
# stopped `serve` (issue 11, item 4).
OUT_OF_RANGE_FRAMES = ("SUMMARY tip", "TIPS element", "PACKED prev")


def queue_out_of_range(session: Session, what: str, *, held: tuple[bytes, bytes],
                       chained: bytes, now: float) -> None:
    """Queue on `session` (past its handshake) what a hostile peer can send with the
    public API. `held` is (author, id) of a record the receiver holds: a SUMMARY or
    TIPS names it as that author's tip at seq TOO_LARGE; a PACKED frame of `chained`
    (a record with a prev) names its prev as the author's record at seq TOO_LARGE
    (the session must pack: `SessionConfig(packed=True)`)."""
    author, rid = held
    far = Frontier({author: ((TOO_LARGE, rid),)})
    if what == "SUMMARY tip":
        session.send_summary(far, now)
    elif what == "TIPS element":
        session.send_summary(far, now, listed=True)
    else:
        assert what == "PACKED prev", what
        session.send_records([chained], now, held=lambda _: (author, TOO_LARGE))


def flip_signature(raw: bytes, i: int) -> bytes:
    """The record with one byte of its signature (the last 64 bytes) changed."""
    pos = len(raw) - 1 - i % 64
    return raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1:]


# ---------------------------------------------------------------- running sessions

@dataclass
class Running:
    """A session running in a nursery; `stats` is set when it ends."""

    address: str
    stats: SessionStats | None = None
    done: trio.Event = field(default_factory=trio.Event)


def start_session(nursery: trio.Nursery, node: Node, stream: trio.abc.Stream, *,
                  initiator: bool, address: str, until_synced: bool = False) -> Running:
    running = Running(address=address)

    async def run() -> None:
        running.stats = await node.run_session(stream, initiator=initiator, address=address,
                                               until_synced=until_synced)
        running.done.set()

    nursery.start_soon(run)
    return running


def start_pair(nursery: trio.Nursery, a: Node, b: Node, *, until_synced: bool = False,
               name: str = "link") -> tuple[Running, Running]:
    """Join two nodes over an in-memory stream; `a` dials."""
    left, right = trio.testing.memory_stream_pair()
    return (start_session(nursery, a, left, initiator=True, address=f"mem://{name}/a",
                          until_synced=until_synced),
            start_session(nursery, b, right, initiator=False, address=f"mem://{name}/b"))


def peer_at(node: Node, address: str) -> Session:
    """The live session of `node` at `address`."""
    found = [p.session for p in node.peers.values() if p.address == address]
    assert len(found) == 1, (address, [p.address for p in node.peers.values()])
    return found[0]


async def wait_until(predicate: Callable[[], bool], *, within: float = 30.0) -> float:
    """Wait, in trio time, until `predicate()` holds; returns the time it took. The
    predicates read stores and session states, which have no event to wait on, so this
    polls: every 10 ms of (fake) time, bounded by `within`."""
    start = trio.current_time()
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)
    return trio.current_time() - start


# ---------------------------------------------------------------- streams and peers

class RecordingStream(trio.abc.Stream):
    """A stream that notes the trio time and size of every send."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends: list[tuple[float, int]] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append((trio.current_time(), len(data)))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


class SlowStream(RecordingStream):
    """A link whose every send takes `delay` seconds (of trio time) before it goes out:
    whatever the node queues meanwhile waits for the next send."""

    def __init__(self, inner: trio.abc.Stream, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep(self.delay)
        await super().send_all(data)


class HandDriven:
    """A session the test drives by hand over a stream: it answers the handshake and
    PINGs (the session does that itself) and does nothing else unless told."""

    def __init__(self, stream: trio.abc.Stream, session: Session) -> None:
        self.stream = stream
        self.session = session
        self.events: list[Event] = []

    @classmethod
    def device(cls, fleet: Fleet, name: str, stream: trio.abc.Stream, *,
               admit_from: Replica, config: SessionConfig | None = None) -> HandDriven:
        session = Session(network=fleet.world.network, key=fleet.key(name),
                          admit=fleet.admit_raw(admit_from, name), role="device",
                          initiator=True, now=trio.current_time(), config=config)
        return cls(stream, session)

    async def flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def receive(self) -> None:
        data = bytes(await self.stream.receive_some(1 << 16))
        self.session.receive_data(data, trio.current_time())
        while (ev := self.session.next_event()) is not None:
            self.events.append(ev)

    async def handshake(self) -> HandshakeDone:
        await self.flush()
        while self.session.state in (State.HELLO, State.AUTH):
            await self.receive()
            await self.flush()
        done = [e for e in self.events if isinstance(e, HandshakeDone)]
        assert len(done) == 1, self.events
        return done[0]

    async def closed_by_peer(self, *, answer: bool = True) -> SessionClosed:
        """Read (answering PINGs unless told not to) until the session ends; the
        closing event."""
        while not self.session.closed:
            await self.receive()
            if answer:
                await self.flush()
        ends = [e for e in self.events if isinstance(e, SessionClosed)]
        assert len(ends) == 1, self.events
        return ends[0]
