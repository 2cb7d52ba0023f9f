"""Hearing a shared store's change notices, so that a node pushes what other
processes commit at once rather than at its next poll.

`hear_notices` keeps a `StoreListener` open (PostgreSQL: a LISTEN connection, on which
every storing transaction of any front-end NOTIFYs at commit) and calls `found()`
whenever notices arrive - and once right after each (re)connect, for what was
committed while nobody listened. It waits on the listener's socket with trio, so no
thread is held. A listener that fails is closed and reopened after `RETRY` seconds;
meanwhile, and for any notice missed, the node's poll (`Node.watch_store`) finds the
records: notices only make it sooner, never decide what is pushed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import trio

from ..core.store import NotifyingStore, StoreListener
from ..errors import StoreError

__all__ = ["RETRY", "hear_notices"]

RETRY = 2.0  # seconds between attempts to reopen a failed listener

log = logging.getLogger("p2p_ledger.node")


async def hear_notices(store: NotifyingStore, found: Callable[[], object]) -> None:
    """Until cancelled: call `found()` after each batch of notices."""
    while True:
        try:
            listener = await _open(store)
        except StoreError as exc:
            log.warning("%s; polling meanwhile, trying again in %.0f s", exc, RETRY)
            await trio.sleep(RETRY)
            continue
        try:
            found()  # what was committed before we listened
            while True:
                await trio.lowlevel.wait_readable(listener.fileno())
                if listener.drain():
                    found()
        except StoreError as exc:
            log.warning("%s; polling meanwhile, listening again in %.0f s", exc, RETRY)
        finally:
            listener.close()
        await trio.sleep(RETRY)


class _Opening:
    """A listener being opened on a worker thread, which trio may abandon when the
    caller is cancelled: whichever of the two comes second closes the listener."""

    def __init__(self, store: NotifyingStore) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.listener: StoreListener | None = None
        self.abandoned = False

    def open(self) -> StoreListener:
        listener = self.store.listen()
        with self.lock:
            if self.abandoned:
                listener.close()
            self.listener = listener
        return listener

    def abandon(self) -> None:
        with self.lock:
            self.abandoned = True
            if self.listener is not None:
                self.listener.close()


async def _open(store: NotifyingStore) -> StoreListener:
    """Connecting blocks (bounded by the store's connect timeout): off trio's thread,
    abandoned if cancelled meanwhile, and then never left open."""
    opening = _Opening(store)
    try:
        return await trio.to_thread.run_sync(opening.open, abandon_on_cancel=True)
    except trio.Cancelled:
        opening.abandon()
        raise
