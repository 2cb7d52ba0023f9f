"""One session as the node runs it: its stream, its stats, and its outbox of records.

`_Peer` holds what the node keeps per session besides the sans-I/O `Session` itself:
the stream, the cancel scope of its receiver, counts for `SessionStats`, the frame
whose signatures are being checked ahead, and the outbox. Records to push collect in
the outbox and go out as one RECORDS frame when it is due (`push_delay`, from the
measured round trip, at least MIN_PUSH_DELAY) or full (`batch_bytes`, the link's
bandwidth-delay product within bounds); `wake` tells the sender task there is
something to write.

What the peer is known to hold (`known`: per author, the highest record of its chain
that the peer's summary showed or that the peer sent in this session) is never pushed
to it: a record at or below such a record, on a chain that is not forked here, is its
ancestor, and the peer holds a record's whole chain (specs/node.md section 2).

It never reads the stream, judges a record or touches the store: the node's tasks do
(node.py). Sending only queues bytes in the session; the sender task writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from ..core.ids import device_id
from ..core.ledger import CheckingAhead
from ..protocol.compact import Held
from ..protocol.session import Session

__all__ = ["SessionStats"]

# New records wait in a peer's outbox two round trips, within these bounds (s). The
# least: on a short round trip a relay would otherwise push every frame it takes on at
# once, half of them a single record, each paying a frame's fixed costs on both ends
# (specs/node.md section 2).
MIN_PUSH_DELAY = 0.2
MAX_PUSH_DELAY = 2.0
# Live pushes are acknowledged (STORED) this long after the first one left
# unacknowledged, all together; the sync's own records at once (Node._acknowledge).
LIVE_ACK_DELAY = 1.0
MIN_BATCH_BYTES = 16 << 10
DEFAULT_BATCH_BYTES = 256 << 10
MAX_BATCH_BYTES = 512 << 10


@dataclass(slots=True)
class SessionStats:
    """What one session moved, and how it ended. `synced` is the success of a sync:
    both deltas were complete and the peer acknowledged storing everything we sent
    (STORED, specs/sync-protocol.md section 7c); `reason` is why the session closed."""

    address: str
    peer: str | None = None
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    synced: bool = False  # both deltas complete, ours acknowledged and all of it stored
    reason: str = ""
    error: bool = False
    stored_by_peer: int = 0    # of records_out, how many the peer acknowledged (STORED)
    unstored_by_peer: int = 0  # of those, how many it does not hold (refused or parked)


class _Peer:
    """One session with its stream, its outbox of records to push, and what the node
    has measured of its link.

    Pushing adapts to the link: records wait two round trips (at least MIN_PUSH_DELAY,
    at most MAX_PUSH_DELAY) so that they travel in fewer, larger frames. Frames are
    sized to the link's bandwidth-delay product (throughput seen by the sender times
    the round-trip time), within bounds.
    """

    def __init__(self, pid: int, session: Session, stream: trio.abc.Stream, address: str,
                 until_synced: bool, refusing: bool = False,
                 held: Callable[[_Peer, bytes, int, bytes], bytes | None] | None = None
                 ) -> None:
        self.id = pid
        self.refusing = refusing  # admitted for its handshake only, to be told why not
        self.session = session
        self.stream = stream
        self.address = address
        self.until_synced = until_synced
        self.invalid = 0
        self.committed = 0  # records the peer sent whose frames are committed here
        self.unstored = 0   # of those, not in the store (refused, or parked pending)
        self.wakeup = trio.Event()
        self.stats = SessionStats(address=address)
        self.pushed_up_to = 0  # records up to this store position went in the delta
        self.summary_order = 0  # the store position when our summary was taken
        self.outbox: list[tuple[bytes, bytes, int]] = []  # (raw, author, seq)
        # author -> (seq, id) of a record the peer holds, with its chain up to it.
        # `held(peer, author, seq, id)`: the id of that record if the node holds it, on
        # a chain not forked there (the id may be a hashed summary's, Node._held_linear).
        self.known: dict[bytes, tuple[int, bytes]] = {}
        self._held = held
        self.not_pushed = 0  # records left out of pushes: the peer was known to hold them
        self.outbox_bytes = 0
        self.outbox_since: float | None = None
        self.sent_bytes = 0
        self.send_seconds = 0.0
        self.receiving: trio.CancelScope | None = None  # cancelled to stop the receiver
        # The last frame's records, their signatures being checked while the frame
        # before is judged (`Node._take_checked`), and since when they wait.
        self.checking: CheckingAhead | None = None
        self.checking_since = 0.0
        # The delta answering the peer's summary, queued a frame at a time as the send
        # buffer drains (`Node._feed_delta`), from `delta_next` on; None once all of it
        # and our SYNCED are queued. Pushes wait in the outbox meanwhile.
        self.delta: Sequence[bytes] | None = None
        self.delta_next = 0
        self.delta_held: Held | None = None
        # The peer's SYNCED: how many records its delta sent (None: not come yet), and
        # since when records committed here wait for a STORED (`Node._acknowledge`).
        self.peer_synced: int | None = None
        self.ack_since: float | None = None

    def push_delay(self) -> float:
        rtt = self.session.rtt or 0.0
        return min(max(2 * rtt, MIN_PUSH_DELAY), MAX_PUSH_DELAY)

    def batch_bytes(self) -> int:
        rtt = self.session.rtt
        if rtt is None or self.send_seconds <= 0 or self.sent_bytes < MIN_BATCH_BYTES:
            return DEFAULT_BATCH_BYTES
        throughput = self.sent_bytes / self.send_seconds
        return int(min(max(throughput * rtt, MIN_BATCH_BYTES), MAX_BATCH_BYTES))

    def ack_due(self) -> float:
        """When the STORED for live pushes committed since `ack_since` goes: within
        `LIVE_ACK_DELAY`, together (node.md section 2)."""
        return float("inf") if self.ack_since is None else self.ack_since + LIVE_ACK_DELAY

    def outbox_due(self) -> float:
        if self.outbox_since is None or self.delta is not None:
            return float("inf")  # (pushes follow the delta: `Node._feed_delta`)
        return self.outbox_since + self.push_delay()

    def learn(self, author: bytes, seq: int, rid: bytes) -> None:
        """The peer holds record `rid`, at `seq` of `author`'s chain (its summary showed
        it, or it sent it)."""
        known = self.known.get(author)
        if known is None or seq > known[0]:
            self.known[author] = (seq, rid)

    def holds(self, author: bytes, seq: int) -> bool:
        """Whether the peer is known to hold our record at `seq` of `author`'s chain."""
        known = self.known.get(author)
        if known is None or seq > known[0] or self._held is None:
            return False
        held = self._held(self, author, *known)
        if held is None:
            return False
        if held != known[1]:  # a hashed summary's tip, now held here: remember its id
            self.known[author] = (known[0], held)
        return True

    def enqueue(self, items: list[tuple[bytes, bytes, int]], now: float) -> None:
        """Queue records to push, each (raw, author, seq)."""
        self.outbox.extend(items)
        self.outbox_bytes += sum(len(raw) for raw, _, _ in items)
        first = self.outbox_since is None
        if first:
            self.outbox_since = now
        if now >= self.outbox_due() or self.outbox_bytes >= self.batch_bytes():
            self.flush_outbox(now)
            self.wake()  # a frame to write
        elif first:
            self.wake()  # the sender sets its timer for the outbox; later pushes keep it

    def flush_outbox(self, now: float) -> None:
        if self.delta is not None:
            return  # pushes go after the delta, which may hold their past
        if self.outbox and not self.session.closed:
            # The peer may have sent some of these while they waited here.
            raws = [raw for raw, author, seq in self.outbox if not self.holds(author, seq)]
            self.not_pushed += len(self.outbox) - len(raws)
            if raws:
                self.session.send_records(raws, now, self.batch_bytes())
        self.outbox, self.outbox_bytes, self.outbox_since = [], 0, None

    @property
    def label(self) -> str:
        who = device_id(self.session.peer)[:12] if self.session.peer else "?"
        return f"{who}@{self.address}"

    def wake(self) -> None:
        self.wakeup.set()
