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
for the empty batch MockClock's extra turn ran): a seed gave the same run as on
MockClock, byte for byte, until the links moved to the clock's own timers (below),
which MockClock lacks. A simulation does no real I/O, so nothing can arrive while
the clock jumps; `wait_all_tasks_blocked` never sees the loop idle, and is not used.
The clock never reads the wall clock.

**Timers of its own.** The simulated links wait for the next chunk to be due and for
room in a send buffer - once per chunk read at 100 nodes. With trio's deadlines each
such wait is a cancel scope whose expiry raises `Cancelled` through the waiting task:
trio's costliest path, taken millions of times. The clock therefore keeps a heap of
`Wakeup`s (`wake_at`): where it jumps, it jumps to the earlier of trio's next deadline
and its own next timer, and reschedules the tasks whose timers are due (before trio
expires its deadlines due at the same time; ties among its own timers go in the order
they were set - not by the cancel scopes' memory addresses, as trio's deadline heap
breaks them; trio's scheduler then runs each batch in its own seeded order). It changed
nothing simulated: the same bytes, and byte-identical reports of the named scenarios
and swarm draws compared; it saves little time (about 1%, specs/simulator.md section
8). A `Wakeup` is a task suspended until one of: its timer, whoever it waits for
(`wake`), or a cancellation (which only forgets it: a timer of a wake-up already fired
or cancelled does nothing).
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio

__all__ = ["SimClock", "Wakeup", "sim_clock"]

_FOREVER = 86_400.0  # no deadline at all: trio waits for I/O, which a simulation lacks


class SimClock(trio.abc.Clock):
    """Virtual seconds from 0, moved only by the run loop going idle."""

    def __init__(self) -> None:
        self._now = 0.0
        self._timers: list[tuple[float, int, Wakeup]] = []
        self._order = itertools.count()

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        timers = self._timers
        if timers and timers[0][0] <= deadline:
            due = timers[0][0]
            if due > self._now:
                self._now = due
            while timers and timers[0][0] <= due:
                heapq.heappop(timers)[2].wake()
            return 0.0
        if deadline > self._now:
            if math.isinf(deadline):
                return _FOREVER
            self._now = deadline
        return 0.0

    def wake_at(self, when: float, wakeup: Wakeup) -> None:
        """Wake `wakeup`'s task at `when` (at once if that is not later than now): the
        task must be suspended in `wakeup.wait()` by then."""
        if when <= self._now:
            wakeup.wake()
        else:
            heapq.heappush(self._timers, (when, next(self._order), wakeup))


class Wakeup:
    """The current task's wake-up, fired at most once: `wait()` suspends it until a
    `wake()` (from a `SimClock` timer or another task) or a cancellation."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = trio.lowlevel.current_task()

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> None:
        await trio.lowlevel.wait_task_rescheduled(self._abort)


def sim_clock() -> SimClock:
    """The running simulation's clock; a `RuntimeError` under any other clock."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, SimClock):
        raise RuntimeError("simulated links run on the simulator's clock (SimClock)")
    return clock
