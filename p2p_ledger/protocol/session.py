"""The sync session: the protocol with no I/O (the h11 shape).

Feed it the bytes that arrived and the current time (`receive_data`), take out events
(`next_event`) and the bytes to send (`data_to_send`), and call `tick` when `deadline`
has passed. It never reads a socket or a clock, so the same object runs over TCP, a
pipe, a WebSocket and the simulator, and tests drive it with fake time.

A peer proves membership with the authority's admit record for its key. A node so new
that it does not hold its own admit yet shows none and claims `device`; it is accepted
if `known_admit` (the node's store) knows an admit of its key, and the admit reaches it
in the delta. Of the admit shown and the one the node knows, the newer decides: it
must not have expired by the wall clock (`wall_ms`, given, never read), and the peer
never gets a role above the one it gives. That judgement is protocol/admission.py.

What the session does not do is judge records: it hands the peer's records to the
node as `RecordsReceived`, and sends what the node gives it (`send_summary`,
`send_records`, `send_synced`). The node owns the replica.

Acknowledged means stored. The node tells the peer, with `acknowledge` (a STORED
frame), how many of the records this session brought it are processed and committed,
and how many of those it does not hold durably. `SyncComplete` comes only when both
initial deltas are complete *and* the peer has acknowledged every record we sent up to
our SYNCED: until then nothing we sent counts as delivered.

Any protocol failure - a malformed, oversize, unknown, replayed or out-of-state frame,
a failed handshake, a silent or flooding peer - kills the session: it queues a CLOSE
for the peer (sealed when keys exist), emits `SessionClosed` with the reason and the
error, and refuses all further use with `LocalProtocolError`.

The events, `SessionConfig` and `SummaryBudget` are in events.py (re-exported here).
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn

import nacl.signing

from ..core.ledger import Frontier
from ..core.network import NetworkDescriptor
from ..core.store import Tip
from ..errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._state import TRANSITIONS, State
from .admission import Admission, admitted_role, claim_refused
from .compact import Held, pack_records, unpack_records
from .crypto import Channel, Ephemeral, auth_message, derive_keys, verify_auth_signature
from .events import (
    Event,
    HandshakeDone,
    PeerSummary,
    PeerSynced,
    RecordsReceived,
    SessionClosed,
    SessionConfig,
    SummaryBudget,
    SyncComplete,
)
from .frames import (
    HANDSHAKE_FRAME_LIMIT,
    MAX_BATCH_RECORDS,
    MAX_FRAME_BYTES,
    MAX_SUMMARY_ENTRIES,
    MAX_SUMMARY_TOTAL,
    PROTOCOL_VERSION,
    Auth,
    Close,
    Frame,
    FrameReader,
    FrameType,
    Hello,
    NeedSummary,
    Packed,
    Ping,
    Pong,
    Records,
    Stored,
    Summary,
    SummaryPart,
    SummarySketch,
    SummaryTips,
    Synced,
    decode_message,
    encode_message,
    frame,
    frame_type,
)
from .sketch import (
    MAX_LISTED_TIPS,
    OurTips,
    Sketch,
    listed_tips,
    names_tip,
    peer_tips,
    sketch_size,
)

__all__ = ["Admission", "Event", "HandshakeDone", "PeerSummary", "PeerSynced", "RecordsReceived",
           "Session", "SessionClosed", "SessionConfig", "SummaryBudget", "SyncComplete"]

# A full summary's tips wait, until its last part, packed: author, seq (8 bytes), id.
_PACKED_TIP = struct.Struct(">32sQ32s")


class Session:
    """One side of one sync session."""

    def __init__(self, *, network: NetworkDescriptor, key: nacl.signing.SigningKey,
                 admit: bytes | None, role: str, initiator: bool, now: float,
                 config: SessionConfig | None = None, ephemeral: Ephemeral | None = None,
                 refuse_peer: Callable[[bytes], str | None] | None = None,
                 known_admit: Callable[[bytes], Admission | None] | None = None,
                 wall_ms: int | None = None,
                 summary_budget: SummaryBudget | None = None) -> None:
        """`known_admit(device)`: the newest admit of `device` the node holds.
        `wall_ms`: the wall clock (Unix ms) at `now`, to judge admit expiry at the
        handshake (the session counts on from it with `now`); None judges none.
        `refuse_peer(device)`: the node's own reason to refuse a peer (a revocation, or
        no room). `summary_budget`: the tips of full summaries all sessions may hold."""
        self.network = network
        self.config = config or SessionConfig()
        self.initiator = initiator
        self.state = State.HELLO
        self.peer: bytes | None = None
        self.peer_role: str | None = None
        self.error: ProtocolError | None = None
        self._key = key
        self._admit = admit
        self._role = role
        self._refuse_peer = refuse_peer
        self._known_admit = known_admit
        self._wall_ms = wall_ms
        self._ephemeral = ephemeral or Ephemeral()
        self._reader = FrameReader(HANDSHAKE_FRAME_LIMIT)
        self._channel: Channel | None = None
        self._transcript_hash = b""
        self._hello_sent = b""
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._sent_summary = False
        self._frontier = Frontier({})  # ours, as given to send_summary
        self._ours: OurTips | None = None  # its tips hashed for sketches, when needed
        self._ids_at: Callable[[bytes, int], list[bytes]] = _nothing_held
        self._sent_hashed = False  # our summary went as a SKETCH or TIPS
        self._answered_need = False
        # the peer's SKETCH or TIPS, waiting for our own summary to decode against
        self._peer_hashed: SummarySketch | SummaryTips | None = None
        self._summary_parts = bytearray()  # the peer's SUMMARY_PARTs, packed (_PACKED_TIP)
        self._summary_budget = summary_budget or SummaryBudget(self.config.max_summary_tips)
        self._summary_held = 0  # tips taken from the budget
        self._started = now
        self._last_received = now
        # Until the sync completes, the last frame that moved it on (not PING or PONG):
        # a peer that only answers keepalives must not hold a sync open for good.
        self._last_progress = now
        self._last_sent = now
        self._window_start = now
        self._window_frames = 0
        self._ping_token = 0
        self._ping_sent_at: float | None = None
        # Round-trip time, from the handshake (each side: its HELLO out, the peer's next
        # frame back) and PING/PONG.
        self.rtt: float | None = None
        self._hello_at: float | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.records_sent = 0
        self.records_received = 0
        # acknowledgements (STORED): what the peer acknowledged of ours, what we of its
        self.peer_received = 0
        self.peer_unstored = 0
        self.acked_received = 0
        self.acked_unstored = 0
        self._sent_at_synced: int | None = None  # records_sent when our SYNCED went
        self._completed = False
        if initiator:
            self._send_hello()

    # ------------------------------------------------------------ the I/O edge

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the peer; b"" means the peer closed its side."""
        if self.state is State.CLOSED:
            return
        self.bytes_received += len(data)
        if not data:
            self._die(RemoteProtocolError("the peer closed the connection"), by_peer=True)
            return
        try:
            self._reader.feed(data)
            while not self.closed:
                body = self._reader.next_body()
                if body is None:
                    break
                self._count_frame(now)
                msg = self._open(body)
                if not isinstance(msg, Ping | Pong):
                    self._last_progress = now
                self._handle(msg, now)
        except RemoteProtocolError as exc:
            self._die(exc, by_peer=False)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        self.bytes_sent += len(out)
        return out

    @property
    def deadline(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self.state in (State.HELLO, State.AUTH):
            return self._started + self.config.handshake_timeout
        return min(self._silent_until(), self._last_sent + self.config.keepalive)

    def _silent_until(self) -> float:
        """When the peer counts as silent: `idle_timeout` after its last frame, or,
        until the sync completes, after its last frame that was not a keepalive."""
        last = self._last_received if self._completed else self._last_progress
        return last + self.config.idle_timeout

    def tick(self, now: float) -> None:
        """Act on deadlines: time out a handshake or a silent peer, send keepalives."""
        if self.state is State.CLOSED:
            return
        if self.state in (State.HELLO, State.AUTH):
            if now >= self._started + self.config.handshake_timeout:
                self._die(RemoteProtocolError("handshake timed out"), by_peer=False)
            return
        if now >= self._last_received + self.config.idle_timeout:
            self._die(RemoteProtocolError(
                f"peer silent for {self.config.idle_timeout:g} s"), by_peer=False)
        elif now >= self._silent_until():
            self._die(RemoteProtocolError(
                f"peer sent nothing but keepalives for {self.config.idle_timeout:g} s "
                "before the sync completed"), by_peer=False)
        elif now >= self._last_sent + self.config.keepalive:
            self.ping(now)

    def ping(self, now: float) -> None:
        """Send a PING; its PONG refreshes `rtt`."""
        self._ping_token += 1
        self._ping_sent_at = now
        self._send(Ping(token=self._ping_token), now)

    def _sample_rtt(self, sample: float) -> None:
        self.rtt = sample if self.rtt is None else 0.8 * self.rtt + 0.2 * sample

    @property
    def pending_output(self) -> int:
        """Bytes queued for the peer and not yet taken by `data_to_send`."""
        return len(self._out)

    @property
    def pending_input(self) -> int:
        """Bytes received of a frame not yet complete."""
        return self._reader.buffered

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # ------------------------------------------------------------ what the node sends

    def send_summary(self, frontier: Frontier, now: float, *, sketch_cells: int = 0,
                     listed: bool = False,
                     ids_at: Callable[[bytes, int], list[bytes]] | None = None) -> None:
        """Send our frontier: as a sketch of `sketch_cells` cells if given (for a peer
        that probably differs little), else as TIPS if `listed` (every tip hashed to
        20 bytes; up to MAX_LISTED_TIPS tips), else in full. After a sketch or tips
        the peer may ask for the full summary. `ids_at(author, seq)` (the store's)
        names the records we hold at a point of a chain; it lets a peer's sketch or
        tips be decoded without resending chains."""
        if self._sent_summary:
            self._misuse("the summary was already sent")
        self._sent_summary = True
        self._frontier = frontier
        if ids_at is not None:
            self._ids_at = ids_at
        if sketch_cells:
            self._sent_hashed = True
            self._send(SummarySketch(
                cells=self._our_tips().sketch(sketch_size(sketch_cells)).to_bytes()), now)
        elif listed and frontier.tip_count() <= MAX_LISTED_TIPS:
            self._sent_hashed = True
            self._send(SummaryTips(elements=self._our_tips().listed()), now)
        else:
            self._send_full_summary(now)
        if self._peer_hashed is not None:
            self._decode_peer_hashed(now)

    def names_peer_tip(self, author: bytes, seq: int, tip_id: bytes, rid: bytes) -> bool:
        """Whether a tip of the peer's summary (`PeerSummary.frontier`) at (author, seq),
        given as `tip_id`, is record `rid` - also when the summary came hashed and named a
        record not held here then (sketch.py: `names_tip`)."""
        return tip_id == rid or (bool(self._transcript_hash)
                                 and names_tip(self._salt, author, seq, tip_id, rid))

    @property
    def _salt(self) -> bytes:
        """Keys the sketch hashes: the same on both sides, unknown before the session."""
        return hashlib.blake2b(self._transcript_hash, digest_size=16,
                               person=b"p2pl-sketch-salt").digest()

    def _our_tips(self) -> OurTips:
        if self._ours is None:
            self._ours = OurTips(_tip_list(self._frontier), self._salt)
        return self._ours

    def _send_full_summary(self, now: float) -> None:
        tips = _tip_list(self._frontier)
        if len(tips) > MAX_SUMMARY_TOTAL:
            self._misuse(f"a summary of {len(tips)} authors exceeds {MAX_SUMMARY_TOTAL}")
        step = MAX_SUMMARY_ENTRIES
        for at in range(0, max(len(tips) - step, 0), step):
            self._send(SummaryPart(tips=tuple(tips[at:at + step])), now)
        last = len(tips) - (len(tips) - 1) % step - 1 if tips else 0
        self._send(Summary(tips=tuple(tips[last:])), now)

    def send_records(self, raws: Sequence[bytes], now: float,
                     batch_bytes: int | None = None, held: Held | None = None) -> None:
        """Send records (of our own store, in causal order), cut into frames of at most
        `batch_bytes` of record bytes (default from the config; the node adapts it to
        the link): PACKED frames unless the config says otherwise. `held(id)` names
        records the peer is known to hold, as (author, seq), which packs them smaller."""
        start = 0
        while start < len(raws):
            end = self.frame_end(raws, start, batch_bytes)
            self.send_frame(raws[start:end], now, held)
            start = end

    def frame_end(self, raws: Sequence[bytes], start: int, batch_bytes: int | None = None
                  ) -> int:
        """Where the frame `send_records` starts at `raws[start]` ends (exclusive): at
        most `batch_bytes` of record bytes (default from the config) and
        MAX_BATCH_RECORDS records, one record at least."""
        limit = min(batch_bytes or self.config.batch_bytes, MAX_FRAME_BYTES // 2)
        end, size = start, 0
        while end < len(raws):
            raw = raws[end]
            if end > start and (size + len(raw) > limit or end - start >= MAX_BATCH_RECORDS):
                break
            size += len(raw) + 3
            end += 1
        return end

    def send_frame(self, raws: Sequence[bytes], now: float, held: Held | None = None) -> None:
        """Send these records as one frame, cut by the caller with `frame_end` (the
        node's delta goes a frame at a time as its send buffer drains)."""
        if self.config.packed:
            self._send(Packed(batch=pack_records(raws, held)), now)
        else:
            self._send(Records(records=tuple(raws)), now)
        self.records_sent += len(raws)

    def _held_here(self, author: bytes, seq: int) -> bytes | None:
        ids = self._ids_at(author, seq)
        return ids[0] if len(ids) == 1 else None

    def send_synced(self, sent: int, now: float) -> None:
        self._send(Synced(sent=sent), now)
        self._sent_at_synced = self.records_sent
        self._maybe_complete()

    def acknowledge(self, received: int, unstored: int, now: float) -> None:
        """Tell the peer that the first `received` records this session brought are
        processed and committed, and that `unstored` of them are not held durably.
        Both counts only grow; sending the same counts again sends nothing."""
        if not (0 <= unstored <= received <= self.records_received
                and received >= self.acked_received and unstored >= self.acked_unstored):
            self._misuse(f"cannot acknowledge {received} records ({unstored} unstored) after "
                         f"{self.acked_received} of {self.records_received}")
        if (received, unstored) == (self.acked_received, self.acked_unstored):
            return
        self._send(Stored(received=received, unstored=unstored), now)
        self.acked_received, self.acked_unstored = received, unstored

    def _maybe_complete(self) -> None:
        """SyncComplete once: both SYNCED crossed and our delta acknowledged."""
        if (self.state is State.LIVE and not self._completed
                and self._sent_at_synced is not None
                and self.peer_received >= self._sent_at_synced):
            self._completed = True
            self._events.append(SyncComplete(peer_unstored=self.peer_unstored))

    def close(self, reason: str, now: float) -> None:
        """Close on our side with a reason the peer will see (never fails)."""
        if self.state is State.CLOSED:
            return
        if self._channel is not None:
            self._send(Close(reason=reason), now)
        self.state = State.CLOSED
        self._give_back_summary_tips()
        self._events.append(SessionClosed(reason=reason, by_peer=False))

    # ------------------------------------------------------------ internals

    def _count_frame(self, now: float) -> None:
        self._last_received = now
        if now - self._window_start >= 1.0:
            self._window_start, self._window_frames = now, 0
        self._window_frames += 1
        if self._window_frames > self.config.max_frames_per_second:
            raise RemoteProtocolError(
                f"flooding: more than {self.config.max_frames_per_second} frames per second")

    def _open(self, body: bytes) -> Frame:
        if self._channel is not None:
            body = self._channel.open(body)
        return decode_message(body)

    def _transition(self, direction: str, kind: FrameType) -> None:
        nxt = TRANSITIONS.get((self.state, (direction, kind)))
        if nxt is None:
            what = f"{kind.name} in state {self.state.value}"
            if direction == "recv":
                raise RemoteProtocolError(f"unexpected frame: {what}")
            self._misuse(f"cannot send {what}")
        self.state = nxt

    def _misuse(self, message: str) -> NoReturn:
        """Our own protocol error: the session dies (as after a peer's) and we raise."""
        error = LocalProtocolError(message)
        if self.state is not State.CLOSED:
            self.error = error
            self.state = State.CLOSED
            self._give_back_summary_tips()
            self._events.append(SessionClosed(reason=message, by_peer=False, error=error))
        raise error

    def _send(self, msg: Frame, now: float) -> None:
        self._transition("send", frame_type(msg))
        body = encode_message(msg)
        self._out += self._channel.seal(body) if self._channel else frame(body)
        self._last_sent = now

    def _send_hello(self) -> None:
        body = encode_message(Hello(version=PROTOCOL_VERSION,
                                    ephemeral_key=self._ephemeral.public))
        self._hello_sent = body
        self._out += frame(body)

    def _handle(self, msg: Frame, now: float) -> None:
        self._transition("recv", frame_type(msg))
        match msg:
            case Hello():
                self._on_hello(msg, now)
            case Auth():
                self._on_auth(msg, now)
            case SummaryPart():
                self._take_summary_tips(len(msg.tips))
                self._summary_parts += b"".join(_PACKED_TIP.pack(*t) for t in msg.tips)
            case Summary():
                self._take_summary_tips(len(msg.tips))
                tips = itertools.chain(_PACKED_TIP.iter_unpack(self._summary_parts), msg.tips)
                frontier = Frontier.from_tips(Tip(author=a, seq=s, id=i) for a, s, i in tips)
                self._give_back_summary_tips()
                self._events.append(PeerSummary(frontier=frontier))
            case SummarySketch() | SummaryTips():
                if self._summary_parts or self._peer_hashed is not None:
                    raise RemoteProtocolError("a hashed summary after another summary")
                self._peer_hashed = msg
                if self._sent_summary:
                    self._decode_peer_hashed(now)
            case NeedSummary():
                if not self._sent_hashed or self._answered_need:
                    raise RemoteProtocolError(
                        "NEED_SUMMARY without a sketch or tips to answer")
                self._answered_need = True
                self._send_full_summary(now)
            case Records():
                self.records_received += len(msg.records)
                self._events.append(RecordsReceived(records=msg.records))
            case Packed():
                records = unpack_records(msg.batch, self._held_here,
                                         max_records=MAX_BATCH_RECORDS)
                self.records_received += len(records)
                self._events.append(RecordsReceived(records=tuple(records)))
            case Synced():
                self._events.append(PeerSynced(sent=msg.sent))
            case Ping():
                self._send(Pong(token=msg.token), now)
            case Pong():
                if msg.token == self._ping_token and self._ping_sent_at is not None:
                    self._sample_rtt(now - self._ping_sent_at)
                    self._ping_sent_at = None
            case Stored():
                self._on_stored(msg)
            case Close():
                self._give_back_summary_tips()
                self._events.append(SessionClosed(reason=msg.reason, by_peer=True))
        self._maybe_complete()

    def _on_stored(self, msg: Stored) -> None:
        if msg.received > self.records_sent:
            raise RemoteProtocolError(f"STORED acknowledges {msg.received} records; "
                                      f"{self.records_sent} were sent")
        if msg.received < self.peer_received or msg.unstored < self.peer_unstored:
            raise RemoteProtocolError("STORED counts went backwards")
        self.peer_received, self.peer_unstored = msg.received, msg.unstored

    def _take_summary_tips(self, tips: int) -> None:
        """Count a summary frame's tips against this session's limit and the budget it
        shares with other sessions, before keeping them."""
        total = self._summary_held + tips
        limit = min(self.config.max_summary_tips, MAX_SUMMARY_TOTAL)
        if total > limit:
            raise RemoteProtocolError(
                f"summary too long: more than {limit} tips (this node's limit)")
        if not self._summary_budget.take(tips):
            raise RemoteProtocolError(
                f"summary refused: summaries of other peers hold this node's "
                f"{self._summary_budget.total} tips; try again later")
        self._summary_held = total

    def _give_back_summary_tips(self) -> None:
        self._summary_budget.give_back(self._summary_held)
        self._summary_held = 0
        self._summary_parts = bytearray()

    def _decode_peer_hashed(self, now: float) -> None:
        msg, self._peer_hashed = self._peer_hashed, None
        assert msg is not None
        # shapes were checked when the frames were decoded
        if isinstance(msg, SummarySketch):
            sketch = Sketch.from_bytes(msg.cells, self._salt)
            found, cells = peer_tips(self._our_tips(), sketch, self._ids_at), sketch.cells
        else:
            found, cells = listed_tips(self._our_tips(), msg.elements, self._ids_at), 0
        if found is None:
            self._send(NeedSummary(cells=cells), now)
            return
        self._transition("decoded", frame_type(msg))
        self._events.append(PeerSummary(frontier=Frontier({**self._frontier.tips, **found.tips}),
                                        authors=frozenset(found.tips)))

    def _on_hello(self, msg: Hello, now: float) -> None:
        if msg.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"unsupported protocol version {msg.version}")
        if self.initiator:
            self._sample_rtt(now - self._started)  # our HELLO out, theirs back
        peer_hello = encode_message(msg)
        if not self.initiator:
            self._send_hello()
            self._hello_at = now  # the responder's sample: its HELLO out, the AUTH back
        transcript = (self._hello_sent + peer_hello if self.initiator
                      else peer_hello + self._hello_sent)
        i2r, r2i, self._transcript_hash = derive_keys(
            self._ephemeral.shared(msg.ephemeral_key), self.network.network_id, transcript)
        self._channel = Channel(*((i2r, r2i) if self.initiator else (r2i, i2r)))
        self._reader.limit = MAX_FRAME_BYTES
        signature = self._key.sign(auth_message(self._transcript_hash, self.initiator)).signature
        body = encode_message(Auth(device_key=bytes(self._key.verify_key), signature=signature,
                                   admit=self._admit, role=self._role))
        self._out += self._channel.seal(body)
        self._last_sent = now

    def _on_auth(self, msg: Auth, now: float) -> None:
        if self._hello_at is not None:
            self._sample_rtt(now - self._hello_at)
        verify_auth_signature(msg.device_key, msg.signature, self._transcript_hash,
                              not self.initiator)
        if msg.device_key == bytes(self._key.verify_key):
            raise RemoteProtocolError("handshake failed: connected to itself")
        if msg.device_key == self.network.authority:
            role = "authority"
            if msg.role != role:
                raise claim_refused(msg.role, role)
        else:
            wall = (None if self._wall_ms is None
                    else self._wall_ms + round((now - self._started) * 1000))
            role = admitted_role(msg, self.network, self._known_admit, wall)
        refusal = self._refuse_peer(msg.device_key) if self._refuse_peer else None
        if refusal:
            raise RemoteProtocolError(f"handshake failed: {refusal}")
        self.peer, self.peer_role = msg.device_key, role
        self._events.append(HandshakeDone(peer=msg.device_key, role=role))

    def _die(self, error: ProtocolError, *, by_peer: bool) -> None:
        if self.state is State.CLOSED:
            return
        # Kept as a value (its message says what happened; nobody prints its traceback):
        # the traceback's frames hold this session, a cycle only the collector frees.
        self.error = error.with_traceback(None)
        if self._channel is not None and not by_peer:
            body = encode_message(Close(reason=str(error)[:200]))
            self._out += self._channel.seal(body)
        self.state = State.CLOSED
        self._give_back_summary_tips()
        self._events.append(SessionClosed(reason=str(error), by_peer=by_peer, error=error))


def _nothing_held(author: bytes, seq: int) -> list[bytes]:
    return []


def _tip_list(frontier: Frontier) -> list[tuple[bytes, int, bytes]]:
    """The frontier as summary entries, sorted by author."""
    return [(a, s, i) for a in sorted(frontier.tips) for s, i in frontier.tips[a]]
