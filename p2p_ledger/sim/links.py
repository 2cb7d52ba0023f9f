"""Simulated links: a reliable byte stream (like TCP) between two simulated nodes.

A `SimConnection` is two one-way pipes. Each `send_all` is a *chunk*: it occupies the
pipe for `len / bandwidth` seconds after the chunks ahead of it, then arrives
`latency + uniform(0, jitter)` seconds later, never before the chunk sent ahead of it
(a stream delivers in order). Like a kernel's socket send buffer, `send_all` returns
at once while at most `SEND_BUFFER` bytes are still to be transmitted, and otherwise
when they are down to that: a node's sender blocks only on a link it fills. (Until
issue 14's third round the sender waited out each chunk's transmission: a timed
wake-up per chunk, which a real TCP socket does not make.)

Faults, and how each is modelled on a stream that must deliver every byte in order:

- *loss*: each ~1400-byte packet of a chunk is lost with probability `loss` and sent
  again after a retransmission timeout that doubles each round; the chunk arrives when
  its last packet does, and holds back the chunks behind it (head-of-line blocking).
  After `MAX_RETRIES` rounds the connection breaks, as TCP gives up.
- *stall* (a partition or a clogged link): nothing is delivered and new connections
  cannot be made; queued bytes wait, and arrive one latency after the stall ends if
  the connection is still open by then. A sender blocks once `SEND_WINDOW` bytes wait.
  A session may time out meanwhile (its idle timeout): that is part of what is studied.
- *break* (out of radio range, a crashed peer): the connection resets at once; both
  ends see `BrokenResourceError`; bytes in flight are lost.

A stream never reorders or duplicates bytes: on a sealed channel that could only break
the session (its nonces are a counter). Records delivered late, twice and out of
causal order travel by second paths beside the sessions (paths.py).

Every random choice comes from the `random.Random` handed in, so a seed replays a run.
This module never reads the wall clock. A connection runs on the simulator's clock
(`SimClock`): its ends wait for a chunk to be due, or for room to send, on the clock's
own timers (`Wakeup`, clock.py) rather than on trio cancel scopes.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import trio

from .clock import Wakeup, sim_clock

__all__ = ["LinkProfile", "LinkStats", "SimConnection", "SimStream"]

PACKET_BYTES = 1400
MIN_RTO = 0.2
MAX_RETRIES = 8
SEND_WINDOW = 256 << 10
SEND_BUFFER = 64 << 10  # untransmitted bytes a sender may leave queued (a socket's)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProfile:
    """What a link is like. Times in seconds, bandwidth in bytes per second per
    direction (None: unlimited), the probability of losing a packet."""

    latency: float = 0.02
    jitter: float = 0.0
    bandwidth: float | None = None
    loss: float = 0.0

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0:
            raise ValueError("latency and jitter are not negative")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth is positive")
        if not 0 <= self.loss < 1:
            raise ValueError("a probability is in [0, 1)")

    @property
    def rto(self) -> float:
        return max(MIN_RTO, 3 * (self.latency + self.jitter))


@dataclass(slots=True)
class LinkStats:
    """What crossed one link (both directions), for the report."""

    bytes: int = 0
    chunks: int = 0
    frames: int = 0
    retransmissions: int = 0
    connections: int = 0
    resets: int = 0


class _FrameCounter:
    """Counts whole protocol frames (4-byte length prefix + body) in a byte stream."""

    __slots__ = ("_header", "_left", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self._header = b""
        self._left = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._left:
                step = min(self._left, len(view))
                self._left -= step
                view = view[step:]
                continue
            need = 4 - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) == 4:
                self._left = int.from_bytes(self._header, "big")
                self._header = b""
                self.frames += 1


@dataclass(slots=True)
class _Pipe:
    """One direction of a connection."""

    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    queued: int = 0
    busy_until: float = 0.0
    last_at: float = 0.0
    eof: bool = False  # the sender closed; the reader sees b"" once the queue is empty
    reader_closed: bool = False
    # The reader waits (`reader`) for a chunk, and with one queued until it is due; a
    # sender blocked by a full window waits (`sender`) for room. Each is woken only
    # when what it looks at changed, so a chunk queued behind others wakes nobody: the
    # reader is already waiting for the one ahead, which is never due later.
    reader: Wakeup | None = None
    sender: Wakeup | None = None
    counter: _FrameCounter = field(default_factory=_FrameCounter)

    def wake_reader(self) -> None:
        if self.reader is not None:
            self.reader.wake()

    def wake_sender(self) -> None:
        if self.sender is not None:
            self.sender.wake()

    def notify(self) -> None:
        self.wake_reader()
        self.wake_sender()


class SimConnection:
    """One connection between node `a` (the dialer) and node `b`: its two ends, over
    the `_Wire` they share."""

    def __init__(self, profile: LinkProfile, rng: random.Random, stats: LinkStats,
                 stalled: bool = False) -> None:
        self.wire = _Wire(profile, rng, stats, stalled)
        self.a = SimStream(self.wire, 0)
        self.b = SimStream(self.wire, 1)
        stats.connections += 1

    @property
    def finished(self) -> bool:
        """Broken, or closed at both ends."""
        return self.wire.broken or (self.a.closed and self.b.closed)

    @property
    def stats(self) -> LinkStats:
        return self.wire.stats

    def reset(self) -> None:
        self.wire.reset()

    def stall(self, on: bool) -> None:
        self.wire.stall(on)


class _Wire:
    """What both ends of a connection share: the link's profile, its state and the two
    directions' pipes. The ends hold the wire and their `SimConnection` holds the ends
    and the wire, so a connection dropped is freed by reference counting: the world
    runs with the cyclic collector off (collector.py)."""

    def __init__(self, profile: LinkProfile, rng: random.Random, stats: LinkStats,
                 stalled: bool) -> None:
        self.profile = profile
        self.rng = rng
        self.stats = stats
        self.broken = False
        self.stalled = stalled
        self.clock = sim_clock()
        self._pipes = (_Pipe(), _Pipe())

    def pipe(self, side: int) -> _Pipe:
        return self._pipes[side]

    def reset(self) -> None:
        """Break the connection at once (peer gone or out of range)."""
        if self.broken:
            return
        self.broken = True
        self.stats.resets += 1
        for p in self._pipes:
            p.queue.clear()
            p.queued = 0
            p.notify()

    def stall(self, on: bool) -> None:
        """Stop or resume delivery (a partition or a clogged link)."""
        if on == self.stalled:
            return
        self.stalled = on
        if not on:
            resume = trio.current_time() + self.profile.latency
            for p in self._pipes:
                p.queue = deque((max(at, resume), data) for at, data in p.queue)
                p.last_at = max(p.last_at, resume) if p.queue else p.last_at
        for p in self._pipes:
            p.notify()

    def schedule(self, side: int, data: bytes) -> float:
        """Queue a chunk sent by `side`; returns when the sender is done transmitting."""
        prof, rng, pipe = self.profile, self.rng, self._pipes[side]
        now = trio.current_time()
        start = max(now, pipe.busy_until)
        pipe.busy_until = start + (len(data) / prof.bandwidth if prof.bandwidth else 0.0)
        at = pipe.busy_until + prof.latency
        if prof.jitter:
            at += rng.uniform(0.0, prof.jitter)
        if prof.loss:
            extra = self._retransmission_delay(len(data))
            if extra is None:
                self.reset()
                return now
            at += extra
        at = max(at, pipe.last_at)
        pipe.last_at = at
        self.stats.bytes += len(data)
        self.stats.chunks += 1
        counted = pipe.counter.frames
        pipe.counter.feed(data)
        self.stats.frames += pipe.counter.frames - counted
        head = pipe.queue[0] if pipe.queue else None
        pipe.queue.append((at, data))
        pipe.queued += len(data)
        if head is None:  # a first chunk: a waiting reader waits until it is due
            if pipe.reader is not None and not self.stalled:
                self.clock.wake_at(at, pipe.reader)
            else:
                pipe.wake_reader()
        return pipe.busy_until

    def _retransmission_delay(self, size: int) -> float | None:
        """Extra seconds the loss model adds to a chunk of `size` bytes, or None when
        the connection gives up."""
        prof, rng = self.profile, self.rng
        waiting = -(-size // PACKET_BYTES)
        delay, rto, rounds = 0.0, prof.rto, 0
        while waiting:
            waiting = sum(1 for _ in range(waiting) if rng.random() < prof.loss)
            if waiting:
                rounds += 1
                self.stats.retransmissions += waiting
                if rounds > MAX_RETRIES:
                    return None
                delay += rto
                rto *= 2
        return delay


def _waiting(current: Wakeup | None) -> Wakeup:
    """The current task's wake-up, where at most one task may wait (one reader, one
    sender: as on trio's own streams, a second at once is an error)."""
    if current is not None:
        raise trio.BusyResourceError("another task is already using this end")
    return Wakeup()


class SimStream(trio.abc.Stream):
    """One end of a `SimConnection`, as the trio stream a `Node` runs a session over."""

    def __init__(self, conn: _Wire, side: int) -> None:
        self._conn = conn
        self._out = conn.pipe(side)
        self._in = conn.pipe(1 - side)
        self._side = side
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        conn, out = self._conn, self._out
        if self._closed:
            raise trio.ClosedResourceError("this end is closed")
        while conn.stalled and out.queued > SEND_WINDOW and not conn.broken:
            out.sender = wakeup = _waiting(out.sender)
            try:
                await wakeup.wait()
            finally:
                out.sender = None
        if conn.broken or out.reader_closed:
            raise trio.BrokenResourceError("connection reset")
        done = conn.schedule(self._side, bytes(data))
        bandwidth = conn.profile.bandwidth
        room_at = done - SEND_BUFFER / bandwidth if bandwidth else done
        if room_at > conn.clock.current_time():
            wakeup = Wakeup()
            conn.clock.wake_at(room_at, wakeup)
            await wakeup.wait()
        else:
            await trio.lowlevel.checkpoint()
        if conn.broken:
            raise trio.BrokenResourceError("connection reset")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The first chunk, once it is due. Like trio's own streams, a checkpoint
        every time (the node relies on it): a call that finds a chunk due at once
        yields first. The reader waits (`reader`) until the first chunk is due, or
        until a chunk comes to an empty pipe, which sets the timer of the same wait
        rather than waking the reader only for it to sleep again."""
        conn, pipe = self._conn, self._in
        waited = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this end is closed")
            if conn.broken:
                raise trio.BrokenResourceError("connection reset")
            wake = float("inf")
            ready = False
            if pipe.queue and not conn.stalled:
                wake = pipe.queue[0][0]
                ready = wake <= trio.current_time()
            elif not pipe.queue and pipe.eof:
                ready = True
            if ready and waited:
                return self._take(max_bytes) if pipe.queue else b""
            waited = True
            if ready:
                await trio.lowlevel.checkpoint()
                continue
            pipe.reader = wakeup = _waiting(pipe.reader)
            if wake != float("inf"):
                conn.clock.wake_at(wake, wakeup)
            try:
                await wakeup.wait()
            finally:
                pipe.reader = None

    def _take(self, max_bytes: int | None) -> bytes:
        pipe = self._in
        at, data = pipe.queue[0]
        if max_bytes is not None and len(data) > max_bytes:
            pipe.queue[0] = (at, data[max_bytes:])
            data = data[:max_bytes]
        else:
            pipe.queue.popleft()
        pipe.queued -= len(data)
        pipe.wake_sender()  # a sender may be waiting for room
        return data

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._out.notify()
            self._in.reader_closed = True
            self._in.queue.clear()
            self._in.queued = 0
            self._in.notify()
        await trio.lowlevel.checkpoint()
