"""The node: one replica, many sessions, over any link, on trio.

Each session gets a receiver task (bytes in, events out) and a sender task (flushes what
the session queued); what the node keeps per session is a `_Peer` (node/peer.py). The
node reacts to events: after the handshake it sends its summary; on the peer's summary
it sends exactly the delta the peer lacks and SYNCED; records received are applied in
one store transaction per frame and acknowledged to the peer (STORED) only after that
commit, then relayed to every other session (flooding; a record is never sent back to
the session it came from, and receivers drop what they already hold). A session counts
as in sync (`SessionStats.synced`, the peers table, and so `sync`'s exit status) only
once the peer has acknowledged storing all we sent.

Records written by other processes on the same home (`p2p-ledger pay` while `serve`
runs) are found by polling the store's newest position and pushed like the rest.
Every record newly stored, whoever wrote it, is also published to the application's
record feeds (`subscribe`, node/feed.py) at the moment it is pushed.

A session that misbehaves is closed with its reason logged, naming the peer; the
others go on. That holds for any error raised while handling one peer's input, not
only the protocol's own: the receiver is the one place that catches `Exception`, and
it closes that session only (trio's Cancelled and KeyboardInterrupt still propagate).
A closed session's last frames - the CLOSE with the reason - are flushed before its
stream is closed, within FINAL_FLUSH seconds. Nothing here decides validity: the
replica does.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable

import nacl.signing
import trio
import trio.testing

from ..core.collector import gc_paused
from ..core.ids import device_id
from ..core.ledger import CheckingAhead, Frontier, Replica
from ..core.records import Admit, SignedRecord
from ..core.store import LedgerStore, NodeStore
from ..errors import PendingFull, StoreError, StoreUnavailable
from ..protocol.crypto import Ephemeral
from ..protocol.session import (
    Admission,
    HandshakeDone,
    PeerSummary,
    PeerSynced,
    RecordsReceived,
    Session,
    SessionClosed,
    SummaryBudget,
    SyncComplete,
)
from ..protocol.sketch import CELL_BYTES, ELEMENT_BYTES, cells_for
from .config import NodeConfig, NodeCounters, reason_kind
from .feed import RecordFeed
from .links import open_link
from .logbudget import LogBudget
from .peer import SessionStats, _Peer
from .relay import Relaying
from .serving import Connector as Connector
from .serving import Serving
from .verifier import shared_verifier

__all__ = ["Node", "NodeConfig", "NodeCounters", "SessionStats", "newest_admit", "reason_kind"]

log = logging.getLogger("p2p_ledger.node")

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# A frame's records wait, their signatures being checked, to be judged while the next
# frame is checked, if that frame is arriving; at most MAX_FRAME_WAIT (a slow link).
MAX_FRAME_WAIT = 0.1
# After a session ends, how long its sender may take to write what is still queued
# (the CLOSE with the reason last) before the stream is closed regardless.
FINAL_FLUSH = 2.0
# Sessions refused for want of room still run their handshake, so that the peer reads
# why in a CLOSE; beyond this many at once, a new connection is closed without a word.
MAX_REFUSING = 16
# Ended sessions whose stats `Node.completed` keeps: every connection a peer opens ends
# as one, so keeping them all grew a hub's memory for good (specs/node.md section 8).
KEEP_COMPLETED = 1000


def newest_admit(store: LedgerStore, device: bytes) -> Admission | None:
    """The newest admit of `device` in `store`, by hlc, then id (as the ledger ranks
    them): what the handshake checks a peer against (`Session(known_admit=...)`)."""
    ranked = [Admission(id=a.id, hlc=row.hlc, role=a.role, expires=a.expires)
              for a in store.admits_for(device) if (row := store.get(a.id)) is not None]
    return max(ranked, key=lambda a: (a.hlc, a.id), default=None)


class Node(Relaying, Serving):
    """A replica served over sync sessions, on trio.

    An application usually gets one from `Ledger.node()`, which also pushes the
    payments it signs to live sessions at once. Then, inside `trio.run`:

    - `await node.sync(peer)`: one sync with a URL (tcp://HOST:PORT, ws://HOST:PORT/PATH,
      exec:COMMAND) or another `Node` of this process; stats on success, `SyncFailed`
      or `TransportError` otherwise;
    - `await node.keep_dialing(url)`: stay connected to a peer, redialing with backoff,
      pushing new records both ways while connected (until cancelled);
    - `await nursery.start(node.serve_tcp, port)`: accept peers;
    - `await node.watch_store()`: also push records other processes write to the home;
    - `with node.subscribe() as feed: async for stored in feed`: each record as it is
      stored here, with its verdict.

    The node's timers run on trio's clock (fake in tests); `wall_ms` is the wall
    clock, in milliseconds, that record timestamps are judged by (default: the system's).
    `role` fixes the role claimed in handshakes (default: the one this device's own
    newest admit gives). With `config.verify_in_process` (the default), constructing a
    node starts the signature checker's child process, shared by the process's nodes.
    """

    def __init__(self, replica: Replica, key: nacl.signing.SigningKey, *, role: str | None = None,
                 config: NodeConfig | None = None,
                 wall_ms: Callable[[], int] | None = None, rng: random.Random | None = None,
                 connect: Connector = open_link) -> None:
        self.replica = replica
        self._checked_store: NodeStore | None = None  # the store `_store` last checked
        self.key = key
        self.device = bytes(key.verify_key)
        self._fixed_role = role
        self.config = config or NodeConfig()
        if self.config.verify_in_process:
            verifier = shared_verifier()
            verifier.warm_up()
            replica.verifier = verifier.start
        self._wall_ms = wall_ms
        self._rng = rng or random.Random()
        self._connect = connect
        # What this node shows and claims in its handshakes; `_learn_admission` updates
        # both when its own admit arrives (a running hub learns it is a hub).
        self.admit: bytes | None = None
        self.role = "authority" if self.device == replica.network.authority else "device"
        self._learn_admission(starting=True)
        self.peers: dict[int, _Peer] = {}
        self._upgrading: Counter[str] = Counter()  # WebSocket upgrades in progress, by host
        self._ids = itertools.count(1)
        # record id -> the origins that delivered it (session ids here), until pushed
        self._origin: dict[bytes, frozenset[Hashable]] = {}
        self._summary_budget = SummaryBudget(self.config.summary_tips_total)
        self._pushed_up_to = self._store.max_order()
        # the last KEEP_COMPLETED sessions' stats (refused connections included); the
        # totals are in self.counters
        self.completed: deque[SessionStats] = deque(maxlen=KEEP_COMPLETED)
        # records left out of pushes because the peer was known to hold them, over the
        # sessions that have ended (peer.py)
        self.records_not_pushed = 0
        self.counters = NodeCounters()
        self.dial_pauses: list[float] = []  # what keep_dialing waited, for tests and status
        self._feeds: list[RecordFeed] = []
        self._store_unavailable = False  # the store poll found it unreachable (logged once)
        self._log_budget = LogBudget(log)  # lines unauthenticated connections cause

    @property
    def _store(self) -> NodeStore:
        store = self.replica.store
        # isinstance on a runtime-checkable Protocol inspects every member (~0.2 ms):
        # asked once per store, not on every frame.
        if store is self._checked_store:
            return self._checked_store
        assert isinstance(store, NodeStore), "a node needs a NodeStore (core/store.py)"
        self._checked_store = store
        return store

    def _newest_admit(self, device: bytes) -> Admission | None:
        return newest_admit(self.replica.store, device)

    def _learn_admission(self, *, starting: bool = False) -> None:
        """Take this node's own newest admit for later handshakes: show it, and claim
        the role it gives (unless the role was fixed by the caller). Until it holds one,
        a node claims `device`: a peer that knows its admit lets it in and sends it."""
        if self.device == self.replica.network.authority:
            self.role = self._fixed_role or "authority"
            return
        newest = self._newest_admit(self.device)
        if newest is None:
            if starting:
                log.info("this device holds no admit record of its own yet: peers that "
                         "know its admit will accept it and send it")
            self.role = self._fixed_role or "device"
            return
        admit = self.replica.store.raw(newest.id)
        if admit == self.admit:
            return
        self.admit, self.role = admit, self._fixed_role or newest.role
        if not starting:
            log.info("this device holds its own admit now: role %s", self.role)

    def now_ms(self) -> int:
        return self._wall_ms() if self._wall_ms is not None else time.time_ns() // 1_000_000

    def _ephemeral(self) -> Ephemeral:
        """The key pair of a new session's handshake: fresh from the OS's randomness. The
        simulator draws it from its seed instead (sim/members.py `SimNode`), since the
        transcript it enters salts the summary sketch, whose collisions shape traffic."""
        return Ephemeral()

    def _refused(self, device: bytes, address: str) -> str | None:
        """Why a peer that proved its key and admission may still not sync here: the
        node runs as many sessions as it may (others proved theirs while this one's
        handshake ran), it has as many sessions here as one device may, or the
        authority revoked it (whether or not its admit is held here). Expiry is judged
        by the session, on the newer of the admit shown and the one held here."""
        busy = self._busy(address, proved=True)
        if busy is not None:
            return busy
        same = sum(p.session.peer == device for p in self.peers.values())
        if same >= self.config.max_sessions_per_device:
            return f"node busy: {same} sessions with {device_id(device)} already"
        revocations = self.replica.store.revocations(device)
        if revocations:
            after, rid = min(revocations)
            return (f"{device_id(device)} was revoked after its seq {after} "
                    f"(record {rid.hex()[:16]})")
        return None

    # ------------------------------------------------------------ sessions

    async def run_session(self, stream: trio.abc.Stream, *, initiator: bool, address: str,
                          until_synced: bool = False) -> SessionStats:
        """Run one session over `stream` to its end; returns what moved. `initiator` is
        the side that dialed; `address` names the peer in logs and stats.

        A session does not end when the two sides are in sync: it stays LIVE and pushes
        new records both ways until the peer or the link closes it (that is how `serve`
        and `keep_dialing` relay). With `until_synced` it closes as soon as the peer
        has acknowledged storing our delta, as `sync` does. Most callers want `sync`,
        `keep_dialing` or `serve_tcp` rather than this."""
        started = trio.current_time()
        crowded = self._crowded(address)
        if crowded is not None:
            return await self._turn_away(stream, address, crowded)
        busy = self._busy(address)
        if busy is not None and sum(p.refusing for p in self.peers.values()) >= MAX_REFUSING:
            return await self._turn_away(stream, address, busy)

        def refuse(device: bytes) -> str | None:
            return self._refused(device, address) if busy is None else busy

        session = Session(network=self.replica.network, key=self.key, admit=self.admit,
                          role=self.role, initiator=initiator, now=started,
                          config=self.config.session, known_admit=self._newest_admit,
                          refuse_peer=refuse,
                          wall_ms=self.now_ms(), summary_budget=self._summary_budget,
                          ephemeral=self._ephemeral())
        peer = _Peer(next(self._ids), session, stream, address, until_synced, busy is not None,
                     held=self._held_linear)
        peer.wake()  # the initiator's HELLO is already queued
        self.peers[peer.id] = peer
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, peer)
                await self._receiver(peer)
                peer.wake()  # the sender flushes what is left, the CLOSE last, and returns
                nursery.cancel_scope.deadline = trio.current_time() + FINAL_FLUSH
        finally:
            del self.peers[peer.id]
            self.records_not_pushed += peer.not_pushed
            if dropped := self.replica.forget_origin(peer.id):
                log.info("session %s: dropped %d records it left waiting for their past",
                         peer.label, dropped)
            with (trio.CancelScope(shield=True), trio.move_on_after(2),
                  contextlib.suppress(*_STREAM_ERRORS)):
                await stream.aclose()
        st = peer.stats
        st.seconds = trio.current_time() - started
        st.bytes_in, st.bytes_out = session.bytes_received, session.bytes_sent
        st.records_in, st.records_out = session.records_received, session.records_sent
        st.stored_by_peer, st.unstored_by_peer = session.peer_received, session.peer_unstored
        self.counters.bytes_in += st.bytes_in
        self.counters.bytes_out += st.bytes_out
        self._ended(st)
        return st

    def _ended(self, stats: SessionStats) -> None:
        """Note a session that ended, or a connection turned away: its stats join the
        last KEEP_COMPLETED, and the counts, which count every one."""
        self.completed.append(stats)
        self.counters.sessions_ended += 1
        self.counters.sessions_failed += stats.error

    async def _receiver(self, peer: _Peer) -> None:
        session = peer.session
        while not session.closed:
            deadline = session.deadline
            until = deadline if deadline is not None else float("inf")
            if peer.checking is not None:  # a frame waits for the next to be complete
                until = min(until, peer.checking_since + MAX_FRAME_WAIT)
            data: bytes | None = None
            with trio.move_on_at(until) as peer.receiving:
                try:
                    data = bytes(await peer.stream.receive_some(self.config.receive_size))
                except _STREAM_ERRORS:
                    data = b""
            now = trio.current_time()
            self._guarded(peer, functools.partial(self._take_input, data=data), now)
            if session.pending_output or session.closed:
                peer.wake()  # something to write (an outbox that came due wakes it itself)
            # (receive_some is a checkpoint: other tasks run between two reads)

    def _take_input(self, peer: _Peer, now: float, data: bytes | None) -> None:
        """Handle what the receiver read (None: its deadline came first)."""
        if data is None:
            self._take_checked(peer, now)
            peer.session.tick(now)
        else:
            peer.session.receive_data(data, now)
        self._handle_events(peer, now)

    def _guarded(self, peer: _Peer, step: Callable[[_Peer, float], None], now: float) -> None:
        """Run one step of a session's handling (its input, or packing its delta) at the
        session boundary: whatever it raised (a bug, a value nobody foresaw) ends this
        session only, never the process and the other sessions with it. Only Exception:
        trio.Cancelled and KeyboardInterrupt are BaseExceptions and propagate; a step
        never awaits. A StoreError is not the peer's doing but our store's (damaged,
        disk full): it stops the node, which must not go on serving from a store it
        cannot trust - except a store that is only unreachable for now (a PostgreSQL
        failover): that ends this session, unacknowledged, and the store reconnects on
        its next call."""
        try:
            step(peer, now)
        except StoreUnavailable as exc:
            self._store_lost(peer, exc, now)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - see above: one peer, one session
            self._input_failed(peer, exc, now)

    def _input_failed(self, peer: _Peer, exc: Exception, now: float) -> None:
        """Close a session whose input raised: a one-line warning, the traceback at
        debug level, and a CLOSE telling the peer (not our internals, only the kind)."""
        session = peer.session
        log.warning("session %s: closed after an error on its input: %s: %s", peer.label,
                    type(exc).__name__, exc)
        log.debug("session %s: the error on its input", peer.label, exc_info=exc)
        reason = f"internal error on the peer's input ({type(exc).__name__})"
        peer.checking = None  # not acknowledged: the peer sends it again
        session.close(reason, now)  # a no-op if the session had already ended
        while (ev := session.next_event()) is not None:  # the rest of the input is dropped
            if isinstance(ev, SessionClosed):
                reason = ev.reason
        peer.stats.reason = peer.stats.reason or reason
        peer.stats.error = True

    def _store_lost(self, peer: _Peer, exc: StoreUnavailable, now: float) -> None:
        """End a session whose store went away under it: what it was storing is not
        acknowledged (the peer sends it again to whichever front-end it reaches)."""
        log.warning("session %s: closed, the store is unavailable: %s", peer.label, exc)
        peer.checking = None
        peer.session.close("the store is unavailable for now; sync again", now)
        while (ev := peer.session.next_event()) is not None:  # the rest is dropped
            if isinstance(ev, SessionClosed):
                peer.stats.reason = peer.stats.reason or ev.reason
        peer.stats.error = True

    async def _sender(self, peer: _Peer) -> None:
        session = peer.session
        while True:
            if peer.delta is None or session.closed:  # no delta frames left to pack: wait
                due = min(peer.outbox_due(), peer.ack_due())
                if due == float("inf"):  # nothing waits for a timer: none to set
                    await peer.wakeup.wait()
                else:
                    with trio.move_on_at(due):
                        await peer.wakeup.wait()
                peer.wakeup = trio.Event()
            now = trio.current_time()
            if now >= peer.outbox_due():
                peer.flush_outbox(now)
            if now >= peer.ack_due():
                self._acknowledge(peer, now)
            self._guarded(peer, self._feed_delta, now)
            data = session.data_to_send()
            if data:
                try:
                    await peer.stream.send_all(data)
                except _STREAM_ERRORS as exc:
                    session.close(f"link failed: {exc}", trio.current_time())
                    session.data_to_send()
                    return
                peer.sent_bytes += len(data)
                peer.send_seconds += trio.current_time() - now
            # Whatever was queued during send_all (the receiver may have closed the
            # session meanwhile: the CLOSE with its reason) goes out before we stop.
            if session.closed and not session.pending_output:
                return

    def _handle_events(self, peer: _Peer, now: float) -> None:
        self._react(peer, now)
        if peer.checking is not None and (not peer.session.pending_input
                                          or now - peer.checking_since >= MAX_FRAME_WAIT):
            self._take_checked(peer, now)  # no next frame arriving, or a slow link
            self._react(peer, now)  # to what judging it queued (a CLOSE)
        self._acknowledge(peer, now)
        self._bound_send_buffers(now)

    def _react(self, peer: _Peer, now: float) -> None:
        session = peer.session
        while (ev := session.next_event()) is not None:
            if not isinstance(ev, RecordsReceived):
                self._take_checked(peer, now)  # whatever follows records sees them stored
            match ev:
                case HandshakeDone() | PeerSummary() if session.closed:
                    pass  # the same input also closed the session: nothing to answer
                case HandshakeDone():
                    log.info("session %s: handshake done (%s)", peer.label, ev.role)
                    peer.stats.peer = device_id(ev.peer)
                    frontier = self.replica.frontier()
                    peer.summary_order = self._store.max_order()
                    session.send_summary(frontier, now, ids_at=self._store.ids_at,
                                         sketch_cells=self.sketch_cells(ev.peer, frontier),
                                         listed=True)
                    self._note(peer, "connected", synced=False)
                case PeerSummary():
                    peer.pushed_up_to = self._store.max_order()  # the delta covers these
                    for author, tips in ev.frontier.tips.items():
                        if len(tips) == 1:  # a chain forked there: learn nothing of it
                            peer.learn(author, *tips[0])
                    summary = self._widened(ev, peer.summary_order)
                    peer.delta = self.replica.delta(summary.frontier, complete=False,
                                                    authors=summary.authors)
                    peer.delta_next, peer.delta_held = 0, self._held_by(summary)
                    self._feed_delta(peer, now)
                case RecordsReceived():
                    for rec in ev.records:  # the peer holds what it sends (if it is
                        if isinstance(rec, SignedRecord):  # held here: `_linear`)
                            peer.learn(rec.record.author, rec.record.seq, rec.id)
                    # This frame's signatures go to the checks first, then the frame
                    # before is judged and stored meanwhile.
                    checking = self.replica.check_ahead(ev.records)
                    self._take_checked(peer, now)
                    peer.checking, peer.checking_since = checking, now
                case PeerSynced():
                    peer.peer_synced = ev.sent
                case SyncComplete():
                    self._acknowledge(peer, now, at_once=True)  # before any CLOSE below
                    if ev.peer_unstored:
                        # The peer holds less than we sent: not in sync, whatever the
                        # states say.
                        session.close(f"the peer did not store {ev.peer_unstored} of the "
                                      f"records sent (refused, or waiting for records it "
                                      f"lacks)", now)
                        continue
                    peer.stats.synced = True
                    self._note(peer, "live", synced=True)
                    log.info("session %s: in sync", peer.label)
                    if peer.until_synced:
                        session.close("sync complete", now)
                case SessionClosed():
                    if ev.error is not None and not ev.by_peer:
                        self.counters.add(self.counters.frames_refused, reason_kind(ev.reason))
                    peer.stats.reason = ev.reason
                    peer.stats.error = ev.error is not None
                    level = logging.WARNING if ev.error is not None else logging.INFO
                    kind = None if session.peer is not None else "handshake failures"
                    self._log_budget.log(kind, level, "session %s closed%s: %s", peer.label,
                                         " by the peer" if ev.by_peer else "", ev.reason)
                    if session.peer is not None:
                        self._note(peer, "closed", synced=False)

    def _stop(self, peer: _Peer, reason: str, now: float) -> None:
        """Close a session from outside its receiver, which may be waiting for input;
        a STORED still waiting for its delay goes first."""
        self._acknowledge(peer, now, at_once=True)
        peer.session.close(reason, now)
        if peer.receiving is not None:
            peer.receiving.cancel()

    def _busy(self, address: str, *, proved: bool = False) -> str | None:
        """Why a new session may not run here now: too many at once, or from one host.
        Only sessions whose peer proved its key and admission count (a handshake in
        progress is bounded by `_crowded`); `proved`: for a peer proving its own now."""
        admitted = [p for p in self.peers.values()
                    if not p.refusing and p.session.peer is not None]
        if len(admitted) >= self.config.max_sessions:
            return f"node busy: {len(admitted)} sessions, the most it runs at once"
        host, most = _host(address), self.config.max_sessions_per_host
        same = sum(_host(p.address) == host for p in admitted)
        if most is not None and same >= most:
            return f"node busy: {same} sessions from {host}, the most it takes from one host"
        return None

    def _crowded(self, address: str) -> str | None:
        """Why a new connection is closed at once: as many handshakes in progress as
        the node runs, in total or from this host. A handshake costs nothing to start
        and proves nothing until its AUTH: anyone who reaches the port could otherwise
        hold every session with connections that never finish theirs."""
        shaking = [p for p in self.peers.values()
                   if p.session.peer is None and not p.session.closed]
        if len(shaking) >= self.config.max_handshakes:
            return f"node busy: {len(shaking)} handshakes in progress, the most it runs"
        host = _host(address)
        same = sum(_host(p.address) == host for p in shaking)
        if same >= self.config.max_handshakes_per_host:
            return (f"node busy: {same} handshakes in progress from {host}, the most it "
                    "runs from one host")
        return None

    def _acknowledge(self, peer: _Peer, now: float, *, at_once: bool = False) -> None:
        """Tell the peer what of its records is committed here: one STORED frame for all
        the frames handled since the last. At once while the peer's sync waits for it
        (before its SYNCED, and until the STORED covers the delta that SYNCED counted),
        when records went unstored, and `at_once`; in the live phase after that, within
        `LIVE_ACK_DELAY` of the first record it leaves unacknowledged (`_Peer.ack_due`),
        so that a stream of pushes is acknowledged in one frame, not one per push frame
        (node.md section 2). Either way only after the commit."""
        session = peer.session
        if session.closed:
            return
        if (peer.committed, peer.unstored) == (session.acked_received, session.acked_unstored):
            peer.ack_since = None
            return
        if (at_once or peer.peer_synced is None or session.acked_received < peer.peer_synced
                or peer.unstored != session.acked_unstored or now >= peer.ack_due()):
            session.acknowledge(peer.committed, peer.unstored, now)
            peer.ack_since = None
        elif peer.ack_since is None:
            peer.ack_since = now
            peer.wake()  # the sender sets its timer for the acknowledgement

    def _take_checked(self, peer: _Peer, now: float) -> None:
        """Judge and store the frame whose signatures are being checked, if any."""
        if peer.checking is not None:
            checking, peer.checking = peer.checking, None
            self._take_records(peer, checking, now)

    def _take_records(self, peer: _Peer,
                      raws: tuple[bytes | SignedRecord, ...] | CheckingAhead,
                      now: float) -> None:
        store = self._store
        # The commit too is in the pause: it writes the batch's rows.
        with gc_paused(), store.transaction(bulk=True):
            report = self.replica.receive_many(raws, now_ms=self.now_ms(), origin=peer.id)
        # committed: from here on these records may be acknowledged to the peer
        peer.committed += len(raws)
        peer.unstored += report.unstored
        if report.applied:
            self.counters.add(self.counters.records_stored, "peer", len(report.applied))
        forks: set[tuple[bytes, int]] = set()
        own_admit = False
        this_session = frozenset((peer.id,))
        for a in report.applied:
            # A record released from the pending area came from whoever delivered it,
            # not from this session, which may only have brought its causal past: taken
            # for this peer's, it was never pushed to it (swarm seed 217).
            self._origin[a.record.id] = report.released.get(a.record.id, this_session)
            if a.equivocates_with:
                forks.add((a.record.record.author, a.record.record.seq))
            body = a.record.record.body
            own_admit |= isinstance(body, Admit) and body.device == self.device
        if own_admit:
            self._learn_admission()
        for _, exc in report.refused:
            self.counters.add(self.counters.records_refused, exc.problem.value)
            if isinstance(exc, PendingFull):
                log.info("session %s: %s", peer.label, exc)  # not the peer's fault
                continue
            peer.invalid += 1
            log.warning("session %s: refused record %s: %s", peer.label,
                        (exc.record_id or "?")[:16], exc)
        if peer.invalid > self.config.max_invalid_records:
            peer.session.close(f"too many invalid records ({peer.invalid})", now)
        if forks and self.device == self.replica.network.authority:
            self._freeze(forks)
        if report.applied:
            self.push_new(now)
        for author, seq in sorted(forks):
            self._push_evidence(author, seq, now)

    def _widened(self, summary: PeerSummary, since: int) -> PeerSummary:
        """A hashed summary names the authors whose tips differ from the frontier we
        sent; records stored here since (from other sessions) may make more differ.
        Their authors join the delta, compared with the tips the peer holds, which are
        the ones we sent."""
        if summary.authors is None:
            return summary
        news = self._store.authors_after(since)
        if news <= summary.authors:
            return summary
        return PeerSummary(frontier=summary.frontier, authors=summary.authors | news)

    def sketch_cells(self, device: bytes, frontier: Frontier) -> int:
        """Cells of the summary sketch for this peer, or 0 for listed tips.

        A sketch is for a peer we were in sync with before: the two frontiers then
        differ in at most the tips of the records either side got since. We know our
        count (records held now minus at that sync) and allow as much again for the
        peer's (at least 8); if that would not decode, the peer asks for the full
        summary, one round trip more. A new peer, or a frontier whose listed tips
        are no larger than the sketch, gets the listed tips (TIPS: 20 bytes a tip)."""
        held_then = self._store.synced_records(device)
        if held_then is None:
            return 0
        ours = max(self._store.totals().records - held_then, 0)
        cells = cells_for(2 * ours + 8)
        return cells if cells * CELL_BYTES < frontier.tip_count() * ELEMENT_BYTES else 0

    def _note(self, peer: _Peer, state: str, *, synced: bool) -> None:
        if peer.session.peer is None:
            return
        with self._store.transaction():
            self._store.note_peer(peer.session.peer, address=peer.address,
                                  role=peer.session.peer_role or "?", now_ms=self.now_ms(),
                                  state=state, synced=synced)


def _host(address: str) -> str:
    """A session's address without its port: tcp://HOST:PORT -> tcp://HOST."""
    head, _, port = address.rpartition(":")
    return head if port.isdigit() and "//" in head else address
