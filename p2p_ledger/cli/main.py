"""The `p2p-ledger` command line: argument parsing and error reporting.

Every command takes `--home DIR` (or `P2P_LEDGER_HOME`). Commands that print data take
`--json`. The commands themselves live in `commands.py` (and the offline-safety ones
in `safety.py`).

`main` is the one error boundary: whatever a command raises becomes one line on
stderr, "p2p-ledger: error: ...", and an exit code from `EXIT_CODES`; no Python
traceback ever reaches the user (set P2P_LEDGER_DEBUG=1 to see one for a bug).
Exceptions that leave a trio nursery arrive wrapped in exception groups: they are
unwrapped and judged by what they hold.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..errors import LocalError, P2PLedgerError, StoreBusy, StoreDamaged
from . import commands, logs, net, safety, simulate

__all__ = ["EXIT_CODES", "build_parser", "main"]

DEFAULT_HOME = "~/.p2p-ledger"

EXIT_OK = 0
EXIT_ERROR = 1        # the command could not do what was asked; nothing was changed
EXIT_USAGE = 2        # the command line is wrong (argparse)
EXIT_STORE_DAMAGED = 3  # the home's store is damaged: restore it (specs/node.md section 9)
EXIT_INTERNAL = 70    # a bug in p2p-ledger (EX_SOFTWARE)
EXIT_BUSY = 75        # another process holds the home's store; try again (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_CODES = {EXIT_OK: "success", EXIT_ERROR: "error (one line on stderr says what)",
              EXIT_USAGE: "usage error",
              EXIT_STORE_DAMAGED: "the home's store is damaged (restore it from a backup or "
                                  "a peer)",
              EXIT_INTERNAL: "internal error (a bug: please report)",
              EXIT_BUSY: "the home is busy (another p2p-ledger process is writing it)",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C)"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2p-ledger",
        description="Offline-first payment ledger: signed records that sync between devices.")
    p.add_argument("--home", default=os.environ.get("P2P_LEDGER_HOME", DEFAULT_HOME),
                   help="node home directory (env P2P_LEDGER_HOME; default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true", help="print JSON instead of text")

    s = sub.add_parser("init", parents=[data], help="create this device's key; join a network")
    s.add_argument("--network", type=Path, help="network descriptor file to join")
    s.add_argument("--no-passphrase", action="store_true",
                   help="store the key unencrypted (not recommended)")
    s.add_argument("--store", metavar="URL",
                   help="keep the records in this PostgreSQL database (postgresql://...) "
                        "instead of the home's SQLite file: every `serve` on this home is "
                        "then a front-end of one node (specs/cloud.md)")
    s.set_defaults(func=commands.cmd_init)

    s = sub.add_parser("id", help="print this device's id")
    s.set_defaults(func=commands.cmd_id)

    network = sub.add_parser("network", help="create or export the network descriptor")
    nsub = network.add_subparsers(dest="network_command", required=True, metavar="ACTION")
    s = nsub.add_parser("create", parents=[data], help="make this home the network authority")
    s.add_argument("--name", required=True)
    s.add_argument("--currency", default="AED")
    s.add_argument("--no-passphrase", action="store_true",
                   help="store the key unencrypted (not recommended)")
    tiers = s.add_mutually_exclusive_group()
    tiers.add_argument("--tier", action="append", default=[], metavar="PER:UNSETTLED:HOLDING",
                       help="offline limits of the next KYC tier (0, 1, ...), as amounts: "
                            "per payment, unsettled, holding (repeatable; default 3 tiers)")
    tiers.add_argument("--no-tiers", action="store_true",
                       help="a network without offline limits")
    s.set_defaults(func=commands.cmd_network_create)
    s = nsub.add_parser("export", help="write the public network descriptor")
    s.add_argument("--out", type=commands.out_file, required=True)
    s.set_defaults(func=commands.cmd_network_export)

    s = sub.add_parser("admit", parents=[data], help="(authority) certify a device")
    s.add_argument("device_id")
    s.add_argument("--role", choices=["device", "hub"], default="device")
    s.add_argument("--tier", type=int, default=0)
    s.add_argument("--offline-limit", metavar="AMOUNT")
    s.add_argument("--expires", type=float, metavar="DAYS",
                   help="the certificate expires this many days from now (default: never)")
    s.set_defaults(func=commands.cmd_admit)

    s = sub.add_parser("issue", parents=[data], help="(authority) put money into an account")
    s.add_argument("--to", required=True, metavar="ACCOUNT")
    s.add_argument("--amount", required=True)
    s.add_argument("--key", help="idempotency key (default: a fresh random one)")
    s.set_defaults(func=commands.cmd_issue)

    s = sub.add_parser("pay", parents=[data], help="pay from one of this device's accounts")
    s.add_argument("--to", required=True, metavar="ACCOUNT")
    s.add_argument("--amount", required=True)
    s.add_argument("--from", dest="from_name", default="main", metavar="NAME")
    s.add_argument("--key", help="idempotency key (default: a fresh random one)")
    s.add_argument("--memo")
    s.set_defaults(func=commands.cmd_pay)

    s = sub.add_parser("redeem", parents=[data], help="cash out of one of this device's accounts")
    s.add_argument("--amount", required=True)
    s.add_argument("--from", dest="from_name", default="main", metavar="NAME")
    s.add_argument("--key", help="idempotency key (default: a fresh random one)")
    s.set_defaults(func=commands.cmd_redeem)

    s = sub.add_parser("balance", parents=[data], help="balances (all accounts, or one)")
    s.add_argument("account", nargs="?")
    s.set_defaults(func=commands.cmd_balance)

    s = sub.add_parser("history", parents=[data], help="an account's movements")
    s.add_argument("account", nargs="?")
    s.set_defaults(func=commands.cmd_history)

    s = sub.add_parser("status", parents=[data], help="what this node holds")
    s.set_defaults(func=commands.cmd_status)

    s = sub.add_parser("verify", parents=[data],
                       help="re-verify every stored record and verdict from scratch")
    s.set_defaults(func=commands.cmd_verify)

    s = sub.add_parser("summary", help="write this node's frontier for an offline exchange")
    s.add_argument("--out", type=commands.out_file, required=True)
    s.set_defaults(func=commands.cmd_summary)

    s = sub.add_parser("export", parents=[data], help="write a bundle of records")
    s.add_argument("--out", type=commands.out_file, required=True)
    s.add_argument("--since", type=Path, metavar="SUMMARY",
                   help="only what the node that wrote SUMMARY lacks")
    s.set_defaults(func=commands.cmd_export)

    s = sub.add_parser("import", parents=[data], help="verify and store a bundle's records")
    s.add_argument("bundle", type=Path)
    s.set_defaults(func=commands.cmd_import)

    net.add_parsers(sub, data)
    simulate.add_parser(sub)
    safety.add_parsers(sub, data)

    s = sub.add_parser("demo", help="run a self-contained demonstration in temporary homes")
    s.set_defaults(func=_demo)
    logs.add_options(p)  # -v, -q, --log-format: before or after any command name
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imports trio: only when asked

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.home = Path(os.path.expanduser(args.home))
    logs.configure(logs.level_for(args), args.log_format)
    try:
        if args.home.exists() and not args.home.is_dir():
            raise LocalError(f"--home {args.home} is a file, not a home folder")
        code: int = args.func(args)
    except BaseException as exc:  # noqa: BLE001 - the one boundary: judged in _failed
        return _failed(exc, args)
    return code


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised while handling (its context), and so on."""
    seen: list[BaseException] = []
    at: BaseException | None = exc
    while at is not None and at not in seen:
        seen.append(at)
        at = at.__cause__ or at.__context__
    return seen


def _failed(exc: BaseException, args: argparse.Namespace) -> int:
    """One line on stderr and the exit code for whatever a command raised."""
    leaves = _leaves(exc)
    everything = [e for leaf in leaves for e in _chain(leaf)]
    if any(isinstance(e, KeyboardInterrupt) for e in everything):
        # Ctrl-C, or an error raised while stopping because of it (a child process's
        # pipe closing under us): the user asked to stop.
        print("p2p-ledger: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        raise exc
    ours = [e for e in leaves if isinstance(e, P2PLedgerError)]
    first = ours[0] if ours else leaves[0]
    if isinstance(first, BrokenPipeError) and _stdout_gone():
        # The reader of our output went away (`p2p-ledger status | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    if isinstance(first, StoreDamaged):
        return _say(str(first), EXIT_STORE_DAMAGED)
    if isinstance(first, StoreBusy):
        return _say(str(first), EXIT_BUSY)
    if isinstance(first, P2PLedgerError):
        return _say(str(first), EXIT_ERROR)
    if isinstance(first, OSError):
        where = f"{first.filename}: " if first.filename else ""
        return _say(f"{where}{first.strerror or first}", EXIT_ERROR)
    if os.environ.get("P2P_LEDGER_DEBUG"):
        traceback.print_exception(exc)
    return _say(f"internal error ({type(first).__name__}: {first}); this is a bug in "
                "p2p-ledger: please report it (P2P_LEDGER_DEBUG=1 shows the details)",
                EXIT_INTERNAL)


def _say(message: str, code: int) -> int:
    print(f"p2p-ledger: error: {message}", file=sys.stderr)
    return code


def _stdout_gone() -> bool:
    """Whether the reader of our stdout has gone (a pipe's write end then polls POLLERR),
    rather than some other pipe breaking (a child process's)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
