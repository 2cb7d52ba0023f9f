"""Progress bars for long work: `import`, `export`, `verify`, `audit` and `sync`.

A bar (tqdm) is drawn on stderr only when stderr is a terminal and `-q` was not given,
and only once the work has taken DELAY seconds, so a quick command prints nothing
more than before. When stderr is a file or a pipe (a script, a service manager, a
test) nothing is drawn at all: no carriage returns in a log. A bar never goes to
stdout, which carries the command's output.

Why tqdm: it has no dependencies of its own, is small to import (it costs every
command that may show a bar), turns itself into a no-op when disabled, and sizes its
line to the terminal; rich draws finer bars but brings markdown and syntax
highlighting with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Never, TypeVar

from tqdm import tqdm

from .logs import quiet

__all__ = ["DELAY", "bar", "counted", "shown"]

DELAY = 0.5  # seconds of work before a bar appears
T = TypeVar("T")


def shown(args: argparse.Namespace) -> bool:
    """Whether bars are drawn for this command: on a terminal, unless -q."""
    return sys.stderr.isatty() and not quiet(args)


def bar(args: argparse.Namespace, what: str, total: int | None = None,
        unit: str = "records") -> tqdm[Never]:
    """A bar for `what` (use it as a context manager; `update(n)` advances it), or a
    silent stand-in with the same methods when bars are not shown."""
    on = shown(args)
    sized = on and _columns() > 0  # a pty that was given no size (a serial console) is 0
    return tqdm(total=total, desc=what, unit=f" {unit}", file=sys.stderr, disable=not on,
                delay=DELAY, dynamic_ncols=sized, ncols=None if sized else 80,
                nrows=None if sized else 24, leave=False,
                unit_scale=True)


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):  # not a real file (tests), or no size
        return 0


def counted(items: Iterable[T], progress: tqdm[Never]) -> Iterator[T]:
    """`items`, advancing `progress` by one for each as it is taken."""
    for item in items:
        yield item
        progress.update(1)
