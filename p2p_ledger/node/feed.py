"""Record feeds: what a trio application reads to learn of records as they are stored.

A node publishes every record that lands in its home's store - from a peer, signed
here through `Ledger`, or written by another process and found by `watch_store` - as
a `RecordStored` value with the verdict the ledger gave it, in store order, after the
transaction that stored it has committed. A `RecordFeed` buffers them for one reader:

    with node.subscribe() as feed:
        async for stored in feed:
            ...

Publishing never waits for a reader (the node must not stall on a slow
application): a feed holds at most `max_buffered` unread values, and one more closes
it, so that its reader gets `FeedOverflow` instead of a silent gap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from types import TracebackType

import trio

from ..core.records import Body, Kind, SignedRecord
from ..core.store import Verdict
from ..errors import FeedOverflow

__all__ = ["RecordFeed", "RecordStored"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordStored:
    """A record newly stored here, with its verdict (`applied`, `rejected` with a
    `reason`, or `duplicate`): the same in every replica, and final. `from_peer` is the
    device id of the peer whose session brought it (for a record that waited for its
    causal past, one that brought the record, not the one that brought the past);
    None for a record signed on this node or written into the home by another process."""

    record: SignedRecord
    verdict: Verdict
    reason: str | None = None
    from_peer: str | None = None

    @property
    def kind(self) -> Kind:
        return self.record.record.kind

    @property
    def body(self) -> Body:
        """The record's content: an `Issue`, `Transfer`, `Admit`, ..."""
        return self.record.record.body


class RecordFeed:
    """One reader's buffer of `RecordStored` values; see `Node.subscribe`."""

    def __init__(self, max_buffered: int) -> None:
        if max_buffered < 1:
            raise ValueError("a feed buffers at least one record")
        self.max_buffered = max_buffered
        self._buffer: deque[RecordStored] = deque()
        self._arrived = trio.Event()
        self._closed = False
        self._overflowed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, stored: RecordStored) -> None:
        """Add one value (the node calls this; it never blocks)."""
        if self._closed:
            return
        if len(self._buffer) >= self.max_buffered:
            self._overflowed = True
            self._close()
            return
        self._buffer.append(stored)
        self._arrived.set()

    def close(self) -> None:
        """Stop receiving; a reader waiting in `async for` ends its loop."""
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._arrived.set()

    def __enter__(self) -> RecordFeed:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __aiter__(self) -> RecordFeed:
        return self

    async def __anext__(self) -> RecordStored:
        """The next value, waiting for one. Ends when the feed is closed and drained;
        `FeedOverflow` once the buffered values are read, if the feed overflowed."""
        while not self._buffer:
            if self._overflowed:
                raise FeedOverflow(
                    f"more than {self.max_buffered} stored records were not read from the "
                    "feed, so it was closed: read what is missing from the store, then "
                    "subscribe again")
            if self._closed:
                raise StopAsyncIteration
            await self._arrived.wait()
            self._arrived = trio.Event()
        await trio.lowlevel.checkpoint()
        return self._buffer.popleft()
