"""Log levels and formats for every command: `-v`/`-q` and `--log-format`.

Every command, and the top level, takes `-v` (more: info, then debug) and `-q` (less:
errors only, and no progress bars); they count from the command's base level, which
is `info` for `serve` (a hub operator wants to see sessions come and go) and
`warning` for the others. `serve` may set its base in its configuration file
(`[log] level`). `--log-format json` writes one JSON object per line (time in UTC,
level, logger, message, and the traceback if any), for a service manager's journal or
a log shipper; the default is one line of text.

Logs go to stderr, always: stdout carries a command's output, and with
`serve --stdio` the protocol itself. Nothing here prints anything but log records.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["LEVELS", "JsonLines", "add_options", "configure", "level_for", "quiet"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(message)s"


def add_options(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """Add -v, -q and --log-format to `parser` and to every subcommand under it, so
    that they may be given before or after the command name. Below the top level
    their defaults are suppressed: a subcommand does not reset what came before it."""
    count: object = 0 if top else argparse.SUPPRESS
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=count,
                       help="log more (-v info, -vv debug)")
    group.add_argument("-q", "--quiet", action="count", default=count,
                       help="log less (each -q one level up) and show no progress bars")
    group.add_argument("--log-format", choices=FORMATS,
                       default=None if top else argparse.SUPPRESS,
                       help="log lines as text (default) or JSON, one object per line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                add_options(sub, top=False)


def quiet(args: argparse.Namespace) -> bool:
    return int(getattr(args, "quiet", 0) or 0) > 0


def level_for(args: argparse.Namespace, base: int = logging.WARNING) -> int:
    """The log level: `base`, one step (10) lower per -v and higher per -q."""
    steps = int(getattr(args, "verbose", 0) or 0) - int(getattr(args, "quiet", 0) or 0)
    return min(max(base - 10 * steps, logging.DEBUG), logging.CRITICAL)


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and
    `exception` (the formatted traceback) when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _ToStderr(logging.Handler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not when the
    handler was made), as logging's own last-resort handler does."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            self.handleError(record)


_handler: logging.Handler | None = None


def configure(level: int, fmt: str | None = None) -> None:
    """Send log records at `level` and above to stderr, as text or JSON lines. Called
    again (by `serve`, once it has read its configuration), it replaces what it set."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _ToStderr()
    _handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(_TEXT))
    root.addHandler(_handler)
    root.setLevel(level)
