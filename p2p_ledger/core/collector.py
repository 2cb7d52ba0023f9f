"""Python's cyclic garbage collector, paused across a batch of records.

A batch (`Replica.receive_many`, a sync frame with its commit, an import, the replay
of `verify`) keeps every record it handles alive until it ends: the parsed records,
their verdicts, the store's rows of the open transaction. Each full collection walks
all of them, and allocation-driven collections come often while a batch allocates:
at 100,000 records, 13 full collections cost 3.2-4.6 s of an 11-18 s ingest (issue
15). The batch itself makes almost no cyclic garbage (records, rows and verdicts are
slotted values with no cycles), so there is nothing for the collector to find until
it ends. `gc_paused()` disables the collector for the block and enables it again
after, however the block ends; reference counting frees everything as usual
meanwhile, and the first collection after the batch finds what cycles it left.

It never leaves the collector disabled: it enables it again only if it disabled it,
so nested batches, and an application that runs with the collector off, keep their
state. Not `gc.freeze()`: frozen objects are never examined again, so in a node that
runs for months every cycle alive at a freeze (an exception's traceback, a finished
task's frames) would leak for good.
"""

from __future__ import annotations

import gc

__all__ = ["gc_paused"]


class _Paused:
    """The context manager `gc_paused` returns: a class rather than a generator, since
    a simulated world enters one for every batch of every replica (issue 14)."""

    __slots__ = ("_paused",)

    def __init__(self) -> None:
        self._paused = False

    def __enter__(self) -> None:
        # Already off: an outer batch paused it, or the application runs without it.
        self._paused = gc.isenabled()
        if self._paused:
            gc.disable()

    def __exit__(self, *exc_info: object) -> None:
        if self._paused:
            gc.enable()


def gc_paused() -> _Paused:
    """The cyclic garbage collector off for the block, back to its state after."""
    return _Paused()
