"""The members' lifecycle in a simulated world: a member (`Member`) is a `SimNode` over
its `SimStore`; it starts, dials its links (`Edge`), connects through a `SimConnection`
(links.py) whose far end goes to the other member's `Node.serve_stream`, crashes and
restarts; links go out of range and stall.

`Lifecycle` is a mixin of `World` (world.py): its methods use the world's state,
declared below for the type checker only. Moved out of world.py unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nacl.signing
import trio

from ..core.checking import CheckingAhead
from ..core.ledger import Replica
from ..core.network import NetworkDescriptor
from ..core.records import SignedRecord, start_verifying
from ..errors import TransportError
from ..node.links import Link
from ..node.node import Node, NodeConfig
from ..node.peer import _Peer
from ..protocol.crypto import Ephemeral
from .links import LinkProfile, LinkStats, SimConnection
from .plugins import ReplicaFactory, make_replica
from .store import PowerCut, SimStore
from .trace import TracingStream, trace_arrivals

if TYPE_CHECKING:
    from .accel import CheckCache
    from .paths import SecondPaths
    from .scenarios import SimParams, Topology
    from .trace import Tracer

__all__ = ["CONNECT_TIMEOUT", "DISCOVERY_INTERVAL", "Edge", "Lifecycle", "Member", "SimNode"]

CONNECT_TIMEOUT = 10.0
DISCOVERY_INTERVAL = 5.0  # radio peers find each other within this (LAN announcements)


class SimNode(Node):
    """A `Node` over a `SimStore` (a `NodeStore` like any other). It counts the records
    its sessions hand to its replica (`delivered`, held ones included): set against the
    records that were new to the replica, the cost of flooding."""

    delivered = 0
    ephemerals: random.Random  # the member's: its sessions' X25519 keys, from the seed

    def _ephemeral(self) -> Ephemeral:
        return Ephemeral(self.ephemerals.randbytes(32))

    def _take_records(self, peer: _Peer, raws: tuple[bytes | SignedRecord, ...] | CheckingAhead,
                      now: float) -> None:
        self.delivered += len(raws)
        super()._take_records(peer, raws, now)


@dataclass(eq=False)
class Member:
    index: int
    name: str
    role: str
    key: nacl.signing.SigningKey
    store: SimStore
    skew_ms: int
    rng: random.Random
    ephemerals: random.Random
    axis: float
    node: SimNode | None = None
    scope: trio.CancelScope | None = None
    nursery: trio.Nursery | None = None
    up: bool = False
    down_since: float | None = None
    crashed: trio.Event = field(default_factory=trio.Event)
    sessions: int = 0
    session_errors: int = 0
    crashes: int = 0
    clone_of: int | None = None
    delivered: int = 0  # records its sessions brought, by nodes that have stopped
    not_pushed: int = 0  # records its nodes did not push: the peer was known to hold them

    @property
    def device(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def replica(self) -> Replica:
        assert self.node is not None
        return self.node.replica


@dataclass(eq=False)
class Edge:
    index: int
    a: int  # dials
    b: int
    kind: str
    profile: LinkProfile
    stats: LinkStats
    rng: random.Random
    in_range: bool = True
    stalls: int = 0
    conns: list[SimConnection] = field(default_factory=list)
    dialer: trio.CancelScope | None = None

    def other(self, m: int) -> int:
        return self.b if m == self.a else self.a


class Lifecycle:
    """Starting, crashing and connecting members, and the links' state, for `World`."""

    if TYPE_CHECKING:  # the world's state these methods use (world.py)
        params: SimParams
        topology: Topology
        network: NetworkDescriptor
        replica_factory: ReplicaFactory
        tracer: Tracer | None
        cache: CheckCache | None
        paths: SecondPaths
        members: list[Member]
        edges: list[Edge]
        edges_of: list[list[Edge]]
        _root: trio.Nursery | None

        def now_ms(self, m: Member) -> int: ...

    def start(self, m: Member) -> None:
        assert self._root is not None
        m.crashed = trio.Event()
        if self.tracer is not None and m.crashes:
            self.tracer.fault("crash", False, n=m.name)
        self._root.start_soon(self._member_task, m)

    async def _member_task(self, m: Member) -> None:
        # Signatures are checked in this process: the shared checks answer most from
        # memory, and a child process (the node's default) would be one more round trip
        # per batch for one simulated machine's worth of checks.
        config = NodeConfig(backoff_max=self.params.backoff_max, verify_in_process=False)
        node = SimNode(self._replica(m), m.key, config=config,
                       wall_ms=lambda: self.now_ms(m), rng=m.rng,
                       connect=lambda link, _nursery: self._connect(m, link))
        node.ephemerals = m.ephemerals
        try:
            with trio.CancelScope() as scope:
                m.scope = scope
                async with trio.open_nursery() as nursery:
                    m.node, m.nursery, m.up, m.down_since = node, nursery, True, None
                    for e in self.edges_of[m.index]:
                        if e.a == m.index:
                            self.start_dialer(e)
                    await trio.sleep_forever()
        except* PowerCut:
            self.crash(m, mid_batch=True)
        finally:
            self.paths.replica_ended(m, node.replica)
            m.sessions += node.counters.sessions_ended  # (`completed` keeps the last 1,000)
            m.session_errors += node.counters.sessions_failed
            m.delivered += node.delivered
            m.not_pushed += node.records_not_pushed
            if m.node is node:
                m.node, m.nursery, m.scope = None, None, None

    def _replica(self, m: Member) -> Replica:
        verifier = self.cache.verifier if self.cache is not None else start_verifying
        replica = make_replica(self.replica_factory, self.network, m.store, verifier)
        if self.tracer is not None:
            replica = trace_arrivals(replica, self.tracer, m.name)
        return replica

    def crash(self, m: Member, *, mid_batch: bool = False) -> None:
        """Power off: the node, its replica, pending area and sessions are gone; its
        peers' connections reset; the store stays as the last commit left it."""
        if not m.up:
            return
        m.up = False
        m.down_since = trio.current_time()
        m.crashes += 1
        m.store.power_cut_after = None
        if self.tracer is not None:
            self.tracer.fault("crash", True, n=m.name, mid_batch=mid_batch)
        if m.scope is not None:
            m.scope.cancel()
        for e in self.edges_of[m.index]:
            for c in e.conns:
                c.reset()
            e.conns = []
            if e.a == m.index:
                # Its dialers die with the node, but their tasks see the cancellation
                # only later: a restart in the same instant must not take the old
                # dialer for a live one (swarm seed 217: the hub never dialled again).
                e.dialer = None
        m.crashed.set()

    def start_dialer(self, e: Edge) -> None:
        m = self.members[e.a]
        if m.up and m.nursery is not None and e.dialer is None and e.in_range:
            m.nursery.start_soon(self._dial, e, m)

    async def _dial(self, e: Edge, m: Member) -> None:
        with trio.CancelScope() as scope:
            e.dialer = scope
            try:
                if self.topology.radio_range is not None or e.kind == "radio":
                    await trio.sleep(e.rng.uniform(0.0, DISCOVERY_INTERVAL))
                assert m.node is not None
                await m.node.keep_dialing(Link(scheme="tcp", host=self.members[e.b].name,
                                               port=e.index + 1))
            finally:
                if e.dialer is scope:
                    e.dialer = None

    def set_in_range(self, e: Edge, up: bool) -> None:
        if e.in_range == up:
            return
        e.in_range = up
        if self.tracer is not None:
            self.tracer.fault("out-of-range", not up, link=self._link_names(e))
        if up:
            self.start_dialer(e)
            return
        if e.dialer is not None:
            e.dialer.cancel()
            e.dialer = None
        for c in e.conns:
            c.reset()
        e.conns = []

    def _link_names(self, e: Edge) -> list[str]:
        return [self.members[e.a].name, self.members[e.b].name]

    def stall(self, e: Edge, on: bool) -> None:
        e.stalls += 1 if on else -1
        assert e.stalls >= 0
        if self.tracer is not None and e.stalls == (1 if on else 0):
            self.tracer.fault("stall", on, link=self._link_names(e))
        for c in e.conns:
            c.stall(e.stalls > 0)

    async def _connect(self, m: Member, link: Link) -> trio.abc.Stream:
        e = self.edges[link.port - 1]
        other = self.members[e.other(m.index)]
        profile = e.profile
        await trio.sleep(2 * profile.latency)  # SYN, SYN-ACK
        if e.stalls:
            await trio.sleep(CONNECT_TIMEOUT)
            raise TransportError(f"cannot reach {other.name}: timed out")
        if not other.up or not e.in_range or other.nursery is None:
            raise TransportError(f"cannot reach {other.name}: connection refused")
        conn = SimConnection(profile, e.rng, e.stats)
        e.conns = [c for c in e.conns if not c.finished]
        e.conns.append(conn)
        if self.tracer is not None:
            c = self.tracer.open(m.name, other.name)
            other.nursery.start_soon(self._serve, other,
                                     TracingStream(conn.b, self.tracer, other.name, m.name, c),
                                     m.name)
            return TracingStream(conn.a, self.tracer, m.name, other.name, c)
        other.nursery.start_soon(self._serve, other, conn.b, m.name)
        return conn.a

    async def _serve(self, m: Member, stream: trio.abc.Stream, address: str) -> None:
        assert m.node is not None
        await m.node.serve_stream(stream, f"sim:{address}")
