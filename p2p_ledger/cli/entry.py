"""The `p2p-ledger` command's entry point, ahead of the command line's imports.

Importing the command line (the core, PyNaCl, cbor2, SQLite, argparse's parsers) takes
half a second or more at start, before `cli.main.main` runs and can turn a Ctrl-C into
"interrupted" and exit 130. A Ctrl-C in that time raised KeyboardInterrupt in the
middle of an import and printed Python's traceback. This module imports nothing of
ours but the light package `__init__` (its names are imported on first use), so a
Ctrl-C from here on is an interruption like any other: one line, exit 130, and
nothing was done.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130  # Ctrl-C; cli/main.py takes it from here (it is the heavy import)


def main() -> int:
    try:
        from .main import main as run
    except KeyboardInterrupt:
        print("p2p-ledger: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return run()
