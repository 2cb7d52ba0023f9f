"""A budget for the log lines that connections nobody has authenticated can cause.

Every connection turned away, or whose handshake fails, was one or two WARNING lines:
anyone who reaches the port wrote the log (40,000 connect-and-close wrote 40,526
lines). Those lines go through a `LogBudget`: at most `per_window` lines of each kind
in a window of a minute (WINDOW) on the node's (trio) clock; past that they are only
counted, and the count is logged as one line - "KIND: and K more in the last minute
(not logged)" - when that window ends: by `run`, a task of the serving node, which
wakes at the window's end, or else with the next line of any kind. A line may name
its `source` (the peer's host): the count then says which hosts the lines not logged
came from, the most first, so an operator learns which host hit a bound (a NAT).
Sessions of admitted peers are logged as before, outside any budget (specs/node.md
section 8, "log lines").
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

LINES_PER_MINUTE = 20  # per kind
WINDOW = 60.0  # seconds
SOURCES_NAMED = 3  # hosts named in a window's count, the most first
SOURCES_KEPT = 256  # hosts counted apart in one window; the rest only in the total


@dataclass(slots=True)
class _Window:
    """One kind's minute: lines logged, lines not logged, and by which source."""

    start: float
    logged: int = 0
    dropped: int = 0
    sources: Counter[str] = field(default_factory=Counter)

    def summary(self, kind: str) -> str:
        line = f"{kind}: and {self.dropped} more in the last minute (not logged)"
        if not self.sources:
            return line
        named = self.sources.most_common(SOURCES_NAMED)
        rest = self.dropped - sum(n for _, n in named)
        line += "; the most from " + ", ".join(f"{host} ({n})" for host, n in named)
        return line + (f", {rest} from elsewhere" if rest else "")


class LogBudget:
    """Log lines of a kind, at most `per_window` each WINDOW seconds; the rest counted."""

    def __init__(self, logger: logging.Logger, *, per_window: int = LINES_PER_MINUTE,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._log = logger
        self.per_window = per_window
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._dropping = trio.Event()  # set when a window first drops a line

    def log(self, kind: str | None, level: int, msg: str, *args: object,
            source: str | None = None) -> None:
        """Log `msg % args` at `level` if `kind` has lines left in its window (kind
        None: outside any budget, always); `source`: the host the line is about."""
        if kind is None:
            self._log.log(level, msg, *args)
            return
        now = self._clock()
        self._close_windows(now)
        window = self._windows.setdefault(kind, _Window(start=now))
        if window.logged < self.per_window:
            window.logged += 1
            self._log.log(level, msg, *args)
            return
        window.dropped += 1
        if source is not None and (source in window.sources
                                   or len(window.sources) < SOURCES_KEPT):
            window.sources[source] += 1
        self._dropping.set()

    async def run(self) -> None:
        """Log each window's count when its minute ends, also when no line follows (a
        flood that stops); runs until cancelled, on trio's clock."""
        while True:
            due = min((w.start + WINDOW for w in self._windows.values() if w.dropped),
                      default=None)
            if due is None:
                self._dropping = trio.Event()
                await self._dropping.wait()
            else:
                await trio.sleep_until(due)
                self._close_windows(self._clock())

    def _close_windows(self, now: float) -> None:
        for kind, window in list(self._windows.items()):
            if window.start + WINDOW <= now:
                del self._windows[kind]
                if window.dropped:
                    self._log.warning("%s", window.summary(kind))
