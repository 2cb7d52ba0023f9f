"""A budget for the log lines that connections nobody has authenticated can cause.

Every connection turned away, or whose handshake fails, was one or two WARNING lines:
anyone who reaches the port wrote the log (40,000 connect-and-close wrote 40,526
lines). Those lines go through a `LogBudget`: at most `per_window` lines of each kind
in a window of a minute (WINDOW) on the node's (trio) clock; past that they are only
counted, and the count is logged as one line - "KIND: and K more in the last minute
(not logged)" - with the next line of any kind once that window has ended (a flood
that stops leaves its count for the next event). Sessions of admitted peers are
logged as before, outside any budget (specs/node.md section 8, "log lines").
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

LINES_PER_MINUTE = 20  # per kind
WINDOW = 60.0  # seconds


class LogBudget:
    """Log lines of a kind, at most `per_window` each WINDOW seconds; the rest counted."""

    def __init__(self, logger: logging.Logger, *, per_window: int = LINES_PER_MINUTE,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._log = logger
        self.per_window = per_window
        self._clock = clock
        # kind -> [start of its window, lines logged in it, lines not logged]
        self._windows: dict[str, list[float]] = {}

    def log(self, kind: str | None, level: int, msg: str, *args: object) -> None:
        """Log `msg % args` at `level` if `kind` has lines left in its window (kind
        None: outside any budget, always)."""
        if kind is None:
            self._log.log(level, msg, *args)
            return
        now = self._clock()
        self._close_windows(now)
        counts = self._windows.setdefault(kind, [now, 0, 0])
        if counts[1] < self.per_window:
            counts[1] += 1
            self._log.log(level, msg, *args)
        else:
            counts[2] += 1

    def _close_windows(self, now: float) -> None:
        for kind, (start, _, dropped) in list(self._windows.items()):
            if now - start >= WINDOW:
                del self._windows[kind]
                if dropped:
                    self._log.warning("%s: and %d more in the last minute (not logged)",
                                      kind, int(dropped))
