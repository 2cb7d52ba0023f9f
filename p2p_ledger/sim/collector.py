"""Python's cyclic garbage collector in a simulation: what lives long is not walked again.

A simulated world keeps every replica's store in one process: at 100 nodes and 20,000
payments, about 2 million stored rows with their chain states, balances and history
entries, tens of millions of objects the collector tracks, all alive until the world
ends. CPython runs a full collection whenever the objects promoted to the oldest
generation since the last reach a quarter of those that survived it, and each walks
them all: the run pays about five times the final heap in full collections (at 40
nodes and 2,000 payments, 2.2 s of a 36 s run were full collections; 3.2 s all of
them).

`long_lived_frozen()`, active while a world runs, moves what survives each collection,
young ones included, out of the collector's sight (`gc.freeze()`): the next collections
walk only what was allocated or promoted since. (Until issue 14's third round only full
collections froze their survivors; at 100 nodes and 20,000 payments the collector then
took 39 s of a 368 s run - 13 s in full collections, 12 s in middle ones walking what
the young ones had promoted - and freezing at every collection took a 10,000-payment
run's collector time from 17.5 s to 6.8 s.) Freezing keeps a cycle that was alive then
and dies later until the next unfreeze, so when the frozen objects have grown fourfold
since the last collection that walked everything, it unfreezes them all and freezes
nothing more until a full collection has walked everything again, finding those
cycles; in all, full collections walk about 4/3 of the final heap instead of five times
it (measured at 40 nodes: a few hundred such cycles at each walk of everything). At the
end of the block everything is unfrozen (a test process runs many worlds one after
another).

The youngest generation is collected every 10,000 allocations instead of 700: most of
what a simulated exchange allocates (trio's cancel scopes and events, frames, parsed
fields) is gone before that, and what lives on (stored rows) is walked as often
either way; measured at 40 nodes, 2,000 payments, the collector's time went from 1.65 s
to 1.07 s. The other thresholds, `gc_paused` batches and reference counting work as
always. No simulated behaviour depends on when the collector runs, so reports are the
same byte for byte.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["long_lived_frozen"]

_GROWTH = 4  # unfreeze when the frozen objects have grown this many times
_YOUNG = 10_000  # allocations between young collections (CPython's default: 700)


@dataclass(slots=True)
class _Freezer:
    frozen: int = 0  # objects frozen since the last unfreeze (counted as they are)
    walked_all_at: int = 0  # `frozen` right after the last full walk; 0: none yet
    freezes: int = 0
    unfreezes: int = 0
    walk_due: bool = False  # unfrozen: freeze nothing until a full collection has run

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        # Called by the collector; freeze and unfreeze only move objects between its
        # lists (no collection, no finaliser runs), so they are safe here.
        if phase != "stop":
            return
        if self.walk_due:
            if info["generation"] != 2:
                return
            self.walk_due = False
        # What this collection kept: the older generations hold only what was promoted
        # since the last freeze (the youngest is empty now). Counted by listing them, in
        # time linear in what the collection just walked; `gc.get_freeze_count()` would
        # walk every frozen object each time.
        self.frozen += len(gc.get_objects(generation=1)) + len(gc.get_objects(generation=2))
        gc.freeze()
        self.freezes += 1
        if self.walked_all_at == 0:
            self.walked_all_at = self.frozen
        elif self.frozen >= _GROWTH * self.walked_all_at:
            gc.unfreeze()  # the next full collection walks everything again
            self.frozen = self.walked_all_at = 0
            self.unfreezes += 1
            self.walk_due = True


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[_Freezer]:
    """While active, each full collection freezes its survivors (see the module)."""
    if gc.get_freeze_count():  # someone else froze objects: leave their scheme alone
        yield _Freezer()
        return
    freezer = _Freezer()
    thresholds = gc.get_threshold()
    gc.set_threshold(_YOUNG, *thresholds[1:])
    gc.callbacks.append(freezer)
    try:
        yield freezer
    finally:
        gc.callbacks.remove(freezer)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
