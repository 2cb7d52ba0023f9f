"""One session as the node runs it: its stream, its stats, and its outbox of records.

`_Peer` holds what the node keeps per session besides the sans-I/O `Session` itself:
the stream, the cancel scope of its receiver, counts for `SessionStats`, the frame
whose signatures are being checked ahead, and the outbox. Records to push collect in
the outbox and go out as one RECORDS frame when it is due (`push_delay`, from the
measured round trip) or full (`batch_bytes`, the link's bandwidth-delay product within
bounds); `wake` tells the sender task there is something to write.

It never reads the stream, judges a record or touches the store: the node's tasks do
(node.py). Sending only queues bytes in the session; the sender task writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from ..core.ids import device_id
from ..core.ledger import CheckingAhead
from ..protocol.session import Session

__all__ = ["SessionStats"]

MAX_PUSH_DELAY = 2.0
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

    Pushing adapts to the link: on a short round trip a new record goes out at once;
    on a long one, records wait up to two round trips (at most MAX_PUSH_DELAY) so that
    they travel in fewer, larger frames. Frames are sized to the link's bandwidth-delay
    product (throughput seen by the sender times the round-trip time), within bounds.
    """

    def __init__(self, pid: int, session: Session, stream: trio.abc.Stream, address: str,
                 until_synced: bool, refusing: bool = False) -> None:
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
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.outbox_since: float | None = None
        self.sent_bytes = 0
        self.send_seconds = 0.0
        self.receiving: trio.CancelScope | None = None  # cancelled to stop the receiver
        # The last frame's records, their signatures being checked while the frame
        # before is judged (`Node._take_checked`), and since when they wait.
        self.checking: CheckingAhead | None = None
        self.checking_since = 0.0

    def push_delay(self) -> float:
        rtt = self.session.rtt
        return 0.0 if rtt is None else min(2 * rtt, MAX_PUSH_DELAY)

    def batch_bytes(self) -> int:
        rtt = self.session.rtt
        if rtt is None or self.send_seconds <= 0 or self.sent_bytes < MIN_BATCH_BYTES:
            return DEFAULT_BATCH_BYTES
        throughput = self.sent_bytes / self.send_seconds
        return int(min(max(throughput * rtt, MIN_BATCH_BYTES), MAX_BATCH_BYTES))

    def outbox_due(self) -> float:
        if self.outbox_since is None:
            return float("inf")
        return self.outbox_since + self.push_delay()

    def enqueue(self, raws: list[bytes], now: float) -> None:
        self.outbox.extend(raws)
        self.outbox_bytes += sum(len(r) for r in raws)
        if self.outbox_since is None:
            self.outbox_since = now
        if now >= self.outbox_due() or self.outbox_bytes >= self.batch_bytes():
            self.flush_outbox(now)
        self.wake()

    def flush_outbox(self, now: float) -> None:
        if self.outbox and not self.session.closed:
            self.session.send_records(self.outbox, now, self.batch_bytes())
        self.outbox, self.outbox_bytes, self.outbox_since = [], 0, None

    @property
    def label(self) -> str:
        who = device_id(self.session.peer)[:12] if self.session.peer else "?"
        return f"{who}@{self.address}"

    def wake(self) -> None:
        self.wakeup.set()
