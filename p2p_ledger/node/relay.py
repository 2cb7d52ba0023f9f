"""Relaying, the `Node`'s part that sends records on: records stored here (from a
peer, through `Ledger`, or by another process on the home, found by `watch_store`) are
sent to every other session and published to the record feeds; forks are answered
with the evidence (and, on the authority, a freeze); the delta answering a peer's
summary is packed a frame at a time as its send buffer drains (`_feed_delta`), and
the send buffers are bounded (`_bound_send_buffers`).

`Relaying` is a mixin of `Node` (node/node.py): its methods use the node's state,
declared below for the type checker only. Moved out of node/node.py unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import nacl.signing
import trio

from ..core.ids import device_id
from ..core.ledger import Replica
from ..core.records import parse_record
from ..core.store import NodeStore, NotifyingStore
from ..core.wallet import Wallet
from ..errors import StoreUnavailable
from ..protocol._state import State
from ..protocol.session import PeerSummary
from .config import NodeConfig, NodeCounters
from .feed import RecordFeed, RecordStored
from .notices import hear_notices
from .peer import _Peer

__all__ = ["Relaying"]

log = logging.getLogger("p2p_ledger.node")

# Bytes queued for a peer below which the next frame of its delta is packed (at most a
# quarter of `max_send_buffer`): `Relaying._feed_delta`.
DELTA_LOW_WATER = 1 << 20
_PUSH_STATES = (State.SYNCING, State.WE_SYNCED, State.THEY_SYNCED, State.LIVE)


class Relaying:
    """Pushing and publishing records, for `Node`."""

    if TYPE_CHECKING:  # the node's state these methods use (node/node.py)
        replica: Replica
        key: nacl.signing.SigningKey
        config: NodeConfig
        counters: NodeCounters
        peers: dict[int, _Peer]
        _origin: dict[bytes, frozenset[Hashable]]
        _pushed_up_to: int
        _feeds: list[RecordFeed]
        _store_unavailable: bool

        @property
        def _store(self) -> NodeStore: ...
        def now_ms(self) -> int: ...
        def _learn_admission(self, *, starting: bool = False) -> None: ...
        def _stop(self, peer: _Peer, reason: str, now: float) -> None: ...

    def push_new(self, now: float) -> int:
        """Send records stored since the last push to every session past its summary,
        except the one each record came from, and publish them to the record feeds.
        Returns how many records were new. Call it (inside trio) after committing
        records to this node's store yourself; `Ledger` does."""
        rows = self._store.records_after(self._pushed_up_to)
        if not rows:
            return 0
        self._pushed_up_to = max(order for order, _, _ in rows)  # causal order need not be
        # position order (PostgresStore: positions are transactions)
        self._publish(rows)
        chains: dict[bytes, tuple[bytes, int]] = {}  # id -> (author, seq), read once
        for peer in self.peers.values():
            if peer.session.state not in _PUSH_STATES:
                continue
            items = []
            for order, rid, raw in rows:
                if order <= peer.pushed_up_to or peer.id in self._origin.get(rid, ()):
                    continue
                where = chains.get(rid) or chains.setdefault(rid, self._chain_of(rid))
                if peer.holds(*where):
                    peer.not_pushed += 1
                else:
                    items.append((raw, *where))
            if items:
                peer.enqueue(items, now)
        for _, rid, _ in rows:
            self._origin.pop(rid, None)
        self._bound_send_buffers(now)
        return len(rows)

    def _chain_of(self, rid: bytes) -> tuple[bytes, int]:
        row = self._store.get(rid)
        if row is None:  # not readable, though just listed: pushed, as any unknown
            return b"", 0
        return row.author, row.seq

    def _held_linear(self, peer: _Peer, author: bytes, seq: int, rid: bytes) -> bytes | None:
        """The id of the peer's record `rid` at (author, seq) if it is held here and
        the chain is not forked here (then every record of that chain held here at or
        below `seq` is its ancestor); None otherwise. `rid` may be a tip of the peer's
        hashed summary for a record not held here when it came (an id no record has):
        the record held here at that point is matched against it."""
        store = self._store
        if store.has(rid):
            return None if store.forked(author) else rid
        ids = store.ids_at(author, seq)
        if len(ids) != 1 or not peer.session.names_peer_tip(author, seq, rid, ids[0]):
            return None
        return None if store.forked(author) else ids[0]

    def subscribe(self, *, max_buffered: int = 10_000) -> RecordFeed:
        """A feed of every record stored in this node's home from now on - from peers,
        signed through `Ledger`, or (while `watch_store` runs) by other processes -
        each a `RecordStored` with its verdict, in store order, after its commit:

            with node.subscribe() as feed:
                async for stored in feed:
                    if isinstance(stored.body, Transfer) and stored.body.to == mine: ...

        Leaving the `with` unsubscribes. A feed holding `max_buffered` unread records
        is closed on the next, and its reader gets `FeedOverflow`."""
        self._feeds = [f for f in self._feeds if not f.closed]
        feed = RecordFeed(max_buffered)
        self._feeds.append(feed)
        return feed

    def _publish(self, rows: list[tuple[int, bytes, bytes]]) -> None:
        self._feeds = [f for f in self._feeds if not f.closed]
        if not self._feeds:
            return
        for _, rid, raw in rows:
            row = self._store.get(rid)
            if row is None:  # not possible for a row just read; nothing to tell
                continue
            peer = next((p.session.peer for o in self._origin.get(rid, ())
                         if isinstance(o, int) and (p := self.peers.get(o)) is not None
                         and p.session.peer is not None), None)
            stored = RecordStored(record=parse_record(raw), verdict=row.verdict,
                                  reason=row.reason,
                                  from_peer=device_id(peer) if peer is not None else None)
            for feed in self._feeds:
                feed.publish(stored)

    def _freeze(self, forks: set[tuple[bytes, int]]) -> None:
        """The authority answers a fork by revoking the device from the fork point."""
        wallet = Wallet(self.replica, self.key)
        with self._store.transaction():
            for applied in wallet.freeze_equivocators(now_ms=self.now_ms()):
                log.warning("an equivocation: revoked the device from the fork (record %s)",
                            applied.record.hex_id[:16])

    def _push_evidence(self, author: bytes, seq: int, now: float) -> None:
        """A fork just met here: every peer gets every branch from the fork point on
        (they drop what they hold), so that the evidence spreads."""
        ids = [row.id for _, row in self.replica.store.records_of(author, seq - 1)]
        raws = self.replica.store.raws_in_order(ids)
        log.warning("equivocation by %s at seq %d: pushing the evidence to all peers",
                    device_id(author), seq)
        for peer in self.peers.values():
            if peer.session.state in _PUSH_STATES:
                peer.session.send_records(raws, now)
                peer.wake()

    async def watch_store(self) -> None:
        """Poll for records written by other processes on this home, and push (and
        publish) them; runs until cancelled. Found by polling every `poll_interval`
        and, on a store shared by front-ends (PostgreSQL), as soon as its change notice
        arrives (node/notices.py); the poll is then the fallback for a missed notice.
        A store that is unreachable (a failover) is logged once; the next poll
        reconnects."""
        async with trio.open_nursery() as nursery:
            store = self._store
            if isinstance(store, NotifyingStore):
                nursery.start_soon(hear_notices, store, self._push_found)
            while True:
                await trio.sleep(self.config.poll_interval)
                self._push_found()

    def _push_found(self) -> None:
        try:
            found = self.push_new(trio.current_time())
            if found:
                self._learn_admission()  # `import` may have brought this node's admit
        except StoreUnavailable as exc:  # a failover: the next poll reconnects
            if not self._store_unavailable:
                log.warning("store poll: %s", exc)
            self._store_unavailable = True
            return
        if self._store_unavailable:
            log.info("store poll: the store is reachable again")
            self._store_unavailable = False
        if found:
            self.counters.add(self.counters.records_stored, "home", found)

    # ------------------------------------------------------------ the delta, buffers

    def _held_by(self, summary: PeerSummary) -> Callable[[bytes], tuple[bytes, int] | None]:
        """Which of our records the peer holds, by its summary, as (author, seq): a
        PACKED frame then names them in a few bytes. Only on chains that are not forked
        here, and where the peer's one tip is on our chain at or after the record (a
        chain commits to its past through prev); from a sketch, every author it did not
        name has exactly our tips."""
        store = self._store

        def held(rid: bytes) -> tuple[bytes, int] | None:
            row = store.get(rid)
            if row is None or store.forked(row.author):
                return None
            if summary.authors is not None and row.author not in summary.authors:
                return row.author, row.seq
            theirs = summary.frontier.tips.get(row.author, ())
            if len(theirs) == 1 and theirs[0][0] >= row.seq and store.has(theirs[0][1]):
                return row.author, row.seq
            return None
        return held

    def _feed_delta(self, peer: _Peer, now: float) -> None:
        """Queue the next frames of the session's delta while fewer than
        `_delta_low_water` bytes wait to be written, then, after its last frame, SYNCED
        and the pushes that waited in the outbox. Packing a frame only when the one
        before is being written bounds the send buffer whatever the delta's size, lets
        the peer start on the first frame at once, and lets the other sessions run
        between frames (the whole delta of a large store packed at once took seconds of
        the event loop, and more than `max_send_buffer` closed the session)."""
        delta, session = peer.delta, peer.session
        if delta is None:
            return
        if session.closed:
            peer.delta, peer.delta_held = None, None
            return
        low_water = self._delta_low_water()
        while peer.delta_next < len(delta) and session.pending_output < low_water:
            end = session.frame_end(delta, peer.delta_next)
            session.send_frame(delta[peer.delta_next:end], now, peer.delta_held)
            peer.delta_next = end
        if peer.delta_next >= len(delta):
            peer.delta, peer.delta_held = None, None
            session.send_synced(len(delta), now)
            peer.flush_outbox(now)

    def _delta_low_water(self) -> int:
        """Bytes queued for a peer below which its delta's next frame is packed: a few
        frames' worth, and well inside the send buffer's bound."""
        return min(DELTA_LOW_WATER, self.config.max_send_buffer // 4)

    def _bound_send_buffers(self, now: float) -> None:
        """Close a session whose peer does not read what we queue for it, and, when all
        sessions together queue too much, the one with the most."""
        queued = {p: p.session.pending_output + p.outbox_bytes for p in self.peers.values()
                  if not p.session.closed}  # a closed one's buffer goes within 2 s
        for peer, size in queued.items():
            if size > self.config.max_send_buffer:
                self._stop(peer, "peer too slow: send buffer full", now)
                queued[peer] = 0
        while sum(queued.values()) > self.config.max_send_buffer_total:
            peer = max(queued, key=queued.__getitem__)
            self._stop(peer, "peer too slow: the send buffers of all sessions are full", now)
            queued[peer] = 0
