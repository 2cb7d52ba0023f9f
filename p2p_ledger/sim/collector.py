"""Python's cyclic garbage collector, off while a simulated world runs.

A simulated world keeps every replica's store in one process: at 100 nodes and 20,000
payments, about 2 million stored rows with their chain states, balances and history
entries, tens of millions of objects the collector tracks, all alive until the world
ends. The collector walks each of them at least once (a young collection), and again
in full collections, to find reference cycles - and a world makes none. With the
collector off for whole runs, a collection at the end found two kinds of cycle, both
removed (a connection and its two ends, links.py; a session holding the error whose
traceback held the session, protocol/session.py), and then nothing in any scenario
(every named one, seeds 1 and 7; 29 swarm draws; the benchmark's convoy at 40 and 100
nodes), crashes, restarts and cloned devices included. Its walks were pure cost: 6.6 s
of an 80 s run at 100 nodes and 5,000 payments; side by side at full size, a run
without them took 3.7% less time (issue 14's fifth round, specs/simulator.md section
8). `tests/test_sim_collector.py` keeps it so: it runs worlds of several scenarios
and fails if one leaves a cycle behind.

`collector_off()`, active while a world runs, disables the collector. At the end it
moves everything allocated meanwhile into the oldest generation without walking it
(`gc.freeze()`, then `gc.unfreeze()`): enabled again with tens of millions of objects
counted as young, the next allocation would start a young collection walking all of
them, in the middle of writing the report. Then it enables the collector again, which
finds whatever cycles the world's objects form once the world is dropped (a test
process runs many worlds one after another).

Until this round the simulator kept the collector on and froze what survived each
collection (`gc.freeze()`), so that each object was walked about twice instead of five
times; off, it is walked at most once, after the world ends. A researcher's plugin
(section 10) that makes cycles keeps them until the run ends. It leaves the collector
alone when the application disabled it, or froze objects of its own.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_off"]


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """The cyclic collector off for the block; what the block allocated is then moved,
    unwalked, into the oldest generation, and the collector is on again."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield  # the application's own scheme: leave it alone
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        gc.enable()
