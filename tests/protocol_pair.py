"""Two sync sessions joined in memory, with no sockets (the h11 `ConnectionPair` shape).

`SessionPair.pump()` moves bytes both ways until both sides are quiet. Delivering
everything one side has queued is one *flight*; a round trip is two flights. After
every `receive_data` a side with a replica acts on its events the way a node does:

- HandshakeDone   -> send_summary(replica.frontier()), plus the side's `extra_tips`, as
                     a sketch of `sketch_cells` cells if that is set, else as listed
                     tips if `listed` is
- PeerSummary     -> send_records(replica.delta(frontier, authors)), then send_synced(count)
- RecordsReceived -> replica.receive_many(records) inside store.transaction(), then
                     acknowledge(received, unstored) (a STORED frame)

A side without a replica only keeps its events, for tests that drive a session by hand.
Time is `pair.now`, fake seconds that the test moves itself; records are judged at the
fixed clock T0.

The rest of this module builds what an honest session never sends, for the tests of
bad input: `forge` seals a frame that a session opens as its peer's next one (it reads
the session's private keys, which only tests may do), `peek` decodes a flight the way
its receiver will without consuming it, `sent_frames` decodes every sealed frame a side
has sent so far, and `ManualPeer` is the other end of a
handshake written by hand from specs/sync-protocol.md with only the crypto and frame
primitives, so it can lie in ways a `Session` cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.signing

from p2p_ledger.core.ledger import Frontier, IngestReport, Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.store import Tip
from p2p_ledger.errors import InvalidRecord
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.crypto import Channel, Ephemeral, auth_message, derive_keys
from p2p_ledger.protocol.frames import (
    PROTOCOL_VERSION,
    Auth,
    Frame,
    Hello,
    decode_message,
    encode_message,
    frame,
)
from p2p_ledger.protocol.session import (
    Event,
    HandshakeDone,
    PeerSummary,
    RecordsReceived,
    Session,
    SessionClosed,
    SessionConfig,
    SummaryBudget,
)
from tests.helpers import T0, World

__all__ = ["ManualPeer", "SessionPair", "Side", "admit_of", "forge", "make_session", "peek",
           "sent_frames", "split_frames"]


# ---------------------------------------------------------------- building sessions

def admit_of(replica: Replica, device: bytes) -> bytes:
    """The raw admit record of `device` held by `replica` (what a device shows in AUTH)."""
    admits = replica.store.admits_for(device)
    assert admits, "the device is not admitted in this replica"
    raw = replica.store.raw(admits[0].id)
    assert raw is not None
    return raw


def make_session(world: World, name: str, *, initiator: bool, admit: bytes | None = None,
                 now: float = 0.0, config: SessionConfig | None = None,
                 network: NetworkDescriptor | None = None, ephemeral: Ephemeral | None = None,
                 role: str | None = None, summary_budget: SummaryBudget | None = None) -> Session:
    """A session for `name` ("authority" or a device of `world`)."""
    is_authority = name == "authority"
    key = world.authority_key if is_authority else world.device_keys[name]
    return Session(network=network or world.network, key=key, admit=admit,
                   role=role or ("authority" if is_authority else "device"),
                   initiator=initiator, now=now, config=config, ephemeral=ephemeral,
                   summary_budget=summary_budget)


# ---------------------------------------------------------------- the pair

@dataclass
class Side:
    """One end: its session, its replica (or None), and what happened to it."""

    name: str
    session: Session
    replica: Replica | None = None
    events: list[Event] = field(default_factory=list)
    refused: list[InvalidRecord] = field(default_factory=list)
    reports: list[IngestReport] = field(default_factory=list)
    handshake_flight: int | None = None  # the flight that completed its handshake
    live_flight: int | None = None       # the flight after which it was LIVE
    # Tips announced on top of the replica's frontier (authors the peer has never seen),
    # to make summaries long without signing thousands of records.
    extra_tips: tuple[Tip, ...] = ()
    sketch_cells: int = 0  # send the summary as a sketch of this many cells (0: in full)
    listed: bool = False  # without a sketch, send the summary as TIPS
    received: int = 0  # records received and committed, as acknowledged (STORED)
    unstored: int = 0  # of those, not in the store
    acknowledges: bool = True  # False: a peer that never sends STORED

    def announced(self) -> Frontier:
        """The frontier this side sends as its summary."""
        assert self.replica is not None
        frontier = self.replica.frontier()
        if not self.extra_tips:
            return frontier
        own = [Tip(author=a, seq=s, id=i) for a, tips in frontier.tips.items() for s, i in tips]
        return Frontier.from_tips([*own, *self.extra_tips])

    def drain(self) -> None:
        """Move the session's pending events into `events` without acting on them."""
        self.events.extend(iter(self.session.next_event, None))

    def of_type(self, kind: type[object]) -> list[Event]:
        self.drain()
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def closed_event(self) -> SessionClosed:
        self.drain()
        closes = [e for e in self.events if isinstance(e, SessionClosed)]
        assert len(closes) == 1, self.events
        return closes[0]

    def react(self, now: float, flight: int, now_ms: int) -> None:
        """Drain the session's events and act on them as a node would."""
        while (ev := self.session.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, HandshakeDone) and self.handshake_flight is None:
                self.handshake_flight = flight
            if self.replica is None:
                continue
            if isinstance(ev, RecordsReceived):
                # Records verify themselves: keep them even if the session died after them.
                with self.replica.store.transaction():
                    report = self.replica.receive_many(ev.records, now_ms=now_ms)
                self.reports.append(report)
                self.refused.extend(err for _, err in report.refused)
                # acknowledged after the commit, as the node does
                self.received += len(ev.records)
                self.unstored += report.unstored
                if self.acknowledges and not self.session.closed:
                    self.session.acknowledge(self.received, self.unstored, now)
            elif self.session.closed:
                continue  # a later frame of the same flight killed the session
            elif isinstance(ev, HandshakeDone):
                self.session.send_summary(self.announced(), now, sketch_cells=self.sketch_cells,
                                          listed=self.listed,
                                          ids_at=self.replica.store.ids_at)
            elif isinstance(ev, PeerSummary):
                delta = self.replica.delta(ev.frontier, authors=ev.authors)
                self.session.send_records(delta, now)
                self.session.send_synced(len(delta), now)
        if self.session.state is State.LIVE and self.live_flight is None:
            self.live_flight = flight


class SessionPair:
    """Two sides joined by two in-memory byte streams."""

    def __init__(self, a: Side, b: Side, *, now: float = 0.0, now_ms: int = T0,
                 byte_at_a_time: bool = False) -> None:
        self.a, self.b = a, b
        self.now = now
        self.now_ms = now_ms
        self.byte_at_a_time = byte_at_a_time
        self.flights = 0
        self.wire: list[tuple[str, bytes]] = []  # (sender, flight) in order

    @classmethod
    def of(cls, world: World, a: str, b: str, *, replica_a: Replica | None = None,
           replica_b: Replica | None = None, admits: Replica | None = None,
           config: SessionConfig | None = None, config_b: SessionConfig | None = None,
           byte_at_a_time: bool = False,
           summary_budget: SummaryBudget | None = None) -> SessionPair:
        """`a` (the initiator) and `b` of `world`; devices show their admit from `admits`.
        `config` applies to both sides unless `config_b` overrides it for `b`; both
        share `summary_budget` when given."""
        def side(name: str, replica: Replica | None, initiator: bool,
                 cfg: SessionConfig | None) -> Side:
            admit = None
            if name != "authority":
                assert admits is not None, "devices need an admit record"
                admit = admit_of(admits, world.device(name))
            return Side(name, make_session(world, name, initiator=initiator, admit=admit,
                                           config=cfg, summary_budget=summary_budget),
                        replica)
        return cls(side(a, replica_a, True, config), side(b, replica_b, False, config_b or config),
                   byte_at_a_time=byte_at_a_time)

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    def deliver(self, src: Side, data: bytes | None = None) -> bytes:
        """One flight: everything `src` has queued (or `data`, as given) to its peer.
        Returns the bytes delivered; nothing is counted when there are none."""
        if data is None:
            data = src.session.data_to_send()
        if not data:
            return data
        self.flights += 1
        self.wire.append((src.name, data))
        dst = self.other(src)
        chunks = [data[i:i + 1] for i in range(len(data))] if self.byte_at_a_time else [data]
        for chunk in chunks:
            dst.session.receive_data(chunk, self.now)
            dst.react(self.now, self.flights, self.now_ms)
        return data

    def pump(self, max_flights: int = 40) -> int:
        """Deliver flights both ways until neither side has anything to send.
        Returns the number of flights delivered."""
        start = self.flights
        while True:
            moved = bool(self.deliver(self.a)) | bool(self.deliver(self.b))
            if not moved:
                return self.flights - start
            assert self.flights - start <= max_flights, "the sessions never went quiet"

    @property
    def handshake_flight(self) -> int:
        """The flight after which both handshakes were complete."""
        assert self.a.handshake_flight is not None
        assert self.b.handshake_flight is not None
        return max(self.a.handshake_flight, self.b.handshake_flight)

    @property
    def live_flight(self) -> int:
        assert self.a.live_flight is not None
        assert self.b.live_flight is not None
        return max(self.a.live_flight, self.b.live_flight)


# ---------------------------------------------------------------- looking inside

def split_frames(data: bytes) -> list[bytes]:
    """Whole wire frames (length prefix included); `data` must end on a frame boundary."""
    out = []
    while data:
        size = int.from_bytes(data[:4], "big")
        assert len(data) >= 4 + size, "a truncated frame"
        out.append(data[:4 + size])
        data = data[4 + size:]
    return out


def _keys(session: Session) -> Channel:
    channel = session._channel
    assert channel is not None, "the session has no keys yet"
    return channel


def forge(session: Session, body: bytes) -> bytes:
    """A sealed frame carrying `body` that `session` opens as its peer's next frame."""
    channel = _keys(session)
    forger = Channel(send_key=channel._receive_key, receive_key=channel._send_key)
    forger._sent = channel._received
    return forger.seal(body)


def peek(receiver: Session, data: bytes) -> list[Frame]:
    """Decode a flight of sealed frames as `receiver` will, leaving `receiver` untouched."""
    channel = _keys(receiver)
    observer = Channel(send_key=channel._send_key, receive_key=channel._receive_key)
    observer._received = channel._received
    return [decode_message(observer.open(f[4:])) for f in split_frames(data)]


def sent_frames(pair: SessionPair, side: Side) -> list[Frame]:
    """Every sealed frame `side` has put on the wire so far, decoded in order (its first
    frame, the HELLO in the clear, is left out). Reads the side's keys: tests only."""
    wire = b"".join(data for sender, data in pair.wire if sender == side.name)
    sealed = split_frames(wire)[1:]
    observer = Channel(send_key=bytes(32), receive_key=_keys(side.session)._send_key)
    return [decode_message(observer.open(f[4:])) for f in sealed]


class ManualPeer:
    """The far end of a handshake, written by hand from the spec.

    It sends a HELLO with a fixed ephemeral secret, derives the same keys as a Session
    from the two HELLO bodies, and can then send any AUTH (a wrong signature, another
    key) and seal any body.
    """

    def __init__(self, network: NetworkDescriptor, key: nacl.signing.SigningKey, *,
                 initiator: bool, secret: bytes = b"\x07" * 32,
                 version: int = PROTOCOL_VERSION) -> None:
        self.network = network
        self.key = key
        self.initiator = initiator
        self.ephemeral = Ephemeral(secret)
        self.hello_body = encode_message(Hello(version=version,
                                               ephemeral_key=self.ephemeral.public))
        self.channel: Channel | None = None
        self.transcript_hash = b""

    def hello(self) -> bytes:
        return frame(self.hello_body)

    def take_hello(self, flight: bytes) -> list[bytes]:
        """Read the peer's HELLO (the first frame of `flight`) and derive the keys.
        Returns the remaining (sealed) frames of the flight."""
        frames = split_frames(flight)
        peer_hello = frames[0][4:]
        hello = decode_message(peer_hello)
        assert isinstance(hello, Hello)
        transcript = (self.hello_body + peer_hello if self.initiator
                      else peer_hello + self.hello_body)
        i2r, r2i, self.transcript_hash = derive_keys(
            self.ephemeral.shared(hello.ephemeral_key), self.network.network_id, transcript)
        self.channel = Channel(*((i2r, r2i) if self.initiator else (r2i, i2r)))
        return frames[1:]

    def open(self, sealed_frames: list[bytes]) -> list[Frame]:
        assert self.channel is not None
        return [decode_message(self.channel.open(f[4:])) for f in sealed_frames]

    def seal(self, body: bytes) -> bytes:
        assert self.channel is not None
        return self.channel.seal(body)

    def signature(self, *, as_initiator: bool | None = None,
                  key: nacl.signing.SigningKey | None = None) -> bytes:
        role_flag = self.initiator if as_initiator is None else as_initiator
        return (key or self.key).sign(auth_message(self.transcript_hash, role_flag)).signature

    def auth(self, *, admit: bytes | None, role: str = "device",
             device_key: bytes | None = None, signature: bytes | None = None) -> bytes:
        """A sealed AUTH; by default an honest one for this peer's key."""
        msg = Auth(device_key=device_key or bytes(self.key.verify_key),
                   signature=signature or self.signature(), admit=admit, role=role)
        return self.seal(encode_message(msg))
