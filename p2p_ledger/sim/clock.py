"""The simulator's clock: virtual time that moves to the next deadline at once.

trio's `MockClock(autojump_threshold=0)` moves time the same way, in two turns of the
run loop: one that finds no task to run, waits for I/O for no time and then jumps the
clock (asking the run loop for its statistics to learn the next deadline), and one that
expires the deadline and runs the tasks it wakes. A simulated world moves time about
once per chunk delivered and per timer - millions of times at 100 nodes - so the turn
that only jumps was a large share of trio's work.

`SimClock` jumps where the run loop asks how long it may sleep until the next deadline,
which it asks only when no task can run (`deadline_to_sleep_time`): the answer is
"not at all", with the time moved to that deadline, and the same turn expires it. The
tasks then run in the same batches, in the same order (trio's scheduler draws nothing
for the empty batch MockClock's extra turn ran), so a seed gives the same run as on
MockClock, byte for byte. A simulation does no real I/O, so nothing can arrive while
the clock jumps; `wait_all_tasks_blocked` never sees the loop idle, and is not used.
The clock never reads the wall clock.
"""

from __future__ import annotations

import math

import trio

__all__ = ["SimClock"]

_FOREVER = 86_400.0  # no deadline at all: trio waits for I/O, which a simulation lacks


class SimClock(trio.abc.Clock):
    """Virtual seconds from 0, moved only by the run loop going idle."""

    def __init__(self) -> None:
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline > self._now:
            if math.isinf(deadline):
                return _FOREVER
            self._now = deadline
        return 0.0
