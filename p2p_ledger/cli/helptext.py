"""Help texts shared by every command's parser, and the one way to add a command.

Every command gets a description, an example in its epilog (kept as written), and
every option and argument a help text; `tests/test_cli_conventions.py` walks the
parser and fails on one without. Formats are named the same way everywhere: amounts
in major units (12.50), accounts as a device id or DEVICE_ID/NAME, `-` for stdout or
stdin.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["ACCOUNT", "AMOUNT", "IN_FILE", "JSON", "OUT_FILE", "add_command"]

AMOUNT = ("in major units of the network's currency, with at most its decimals: "
          "12.50 is twelve dirhams fifty fils")
ACCOUNT = ("a device id (56 characters, as `p2p-ledger id` prints it) for its main "
           "account, or DEVICE_ID/NAME for another of its accounts")
OUT_FILE = "the file to write, in a folder that exists; - writes to stdout"
IN_FILE = "the file to read; - reads stdin"
JSON = ("print JSON on stdout instead of text; a failure prints a JSON error object there "
        "too, with the same exit code")


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *,
                help: str, example: str | Sequence[str],
                parents: Sequence[argparse.ArgumentParser] = (),
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its description and an example."""
    examples = [example] if isinstance(example, str) else list(example)
    return sub.add_parser(
        name, help=help, description=description or help[0].upper() + help[1:] + ".",
        parents=list(parents), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("example:\n" if len(examples) == 1 else "examples:\n")
        + "\n".join(f"  {e}" for e in examples))
