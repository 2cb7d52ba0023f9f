"""The `p2p-ledger` command line: argument parsing and error reporting.

Every command takes `--home DIR` (or `P2P_LEDGER_HOME`). Commands that print data take
`--json`. The commands themselves live in `commands.py`, those that only show what a
home holds (`balance`, `history`, `status`, `verify`) in `views.py`, and the
offline-safety ones in `safety.py`.

`main` is the one error boundary: whatever a command raises becomes one line on
stderr, "p2p-ledger: error: ...", and an exit code from `EXIT_CODES`; no Python
traceback ever reaches the user (set P2P_LEDGER_DEBUG=1 to see one for a bug).
Exceptions that leave a trio nursery arrive wrapped in exception groups: they are
unwrapped and judged by what they hold.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..build import build_kind
from ..errors import LocalError, P2PLedgerError, StoreBusy, StoreDamaged, UsageError
from . import commands, helptext, logs, net, safety, simulate, views
from .entry import EXIT_INTERRUPTED  # Ctrl-C (130): the entry point returns it too
from .helptext import add_command

__all__ = ["EXIT_CODES", "build_parser", "main"]

DEFAULT_HOME = "~/.p2p-ledger"

EXIT_OK = 0
EXIT_ERROR = 1        # the command could not do what was asked; nothing was changed
EXIT_USAGE = 2        # the command line is wrong (argparse)
EXIT_STORE_DAMAGED = 3  # the home's store is damaged: restore it (specs/node.md section 9)
EXIT_INTERNAL = 70    # a bug in p2p-ledger (EX_SOFTWARE)
EXIT_BUSY = 75        # another process holds the home's store; try again (EX_TEMPFAIL)
EXIT_CODES = {EXIT_OK: "success", EXIT_ERROR: "error (one line on stderr says what)",
              EXIT_USAGE: "usage error",
              EXIT_STORE_DAMAGED: "the home's store is damaged (restore it from a backup or "
                                  "a peer)",
              EXIT_INTERNAL: "internal error (a bug: please report)",
              EXIT_BUSY: "the home is busy (another p2p-ledger process is writing it)",
              EXIT_INTERRUPTED: "interrupted (Ctrl-C)"}


def _exit_codes() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in
                                        EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error under --json also prints the JSON error object."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            _json_error(f"{self.prog}: {message}", EXIT_USAGE)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = _Parser(
        prog="p2p-ledger", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Offline-first payment ledger: signed records that sync between devices.",
        epilog="Amounts are in major units (12.50); an account is a device id or "
               "DEVICE_ID/NAME; - is stdout or stdin where a file is written or read.\n"
               "`p2p-ledger COMMAND --help` describes each command, with an example.\n\n"
               + _exit_codes())
    p.add_argument("--version", action="version",
                   version=f"%(prog)s {__version__} ({build_kind()})")
    p.add_argument("--home", default=os.environ.get("P2P_LEDGER_HOME", DEFAULT_HOME),
                   help="node home directory (env P2P_LEDGER_HOME; default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true", help=helptext.JSON)
    passless = argparse.ArgumentParser(add_help=False)
    passless.add_argument("--no-passphrase", action="store_true",
                          help="store the key unencrypted (not recommended)")

    s = add_command(sub, "init", parents=[data, passless],
                    help="create this device's key; join a network",
                    example="p2p-ledger --home D1 init --network site7.json")
    s.add_argument("--network", type=Path, metavar="FILE",
                   help="the network descriptor to join (from `network export`); "
                        + helptext.IN_FILE)
    s.add_argument("--store", metavar="URL",
                   help="keep the records in this PostgreSQL database (postgresql://...) "
                        "instead of the home's SQLite file: every `serve` on this home is "
                        "then a front-end of one node (specs/cloud.md)")
    s.set_defaults(func=commands.cmd_init)

    s = add_command(sub, "id", parents=[data], help="print this device's id",
                    example='p2p-ledger --home A admit "$(p2p-ledger --home D1 id)"')
    s.set_defaults(func=commands.cmd_id)

    network = add_command(sub, "network", help="create or export the network descriptor",
                          example="p2p-ledger --home A network create --name 'Site 7'")
    nsub = network.add_subparsers(dest="network_command", required=True, metavar="ACTION")
    s = add_command(nsub, "create", parents=[data, passless],
                    help="make this home the network authority",
                    example=["p2p-ledger --home A network create --name 'Site 7' --currency AED",
                             "p2p-ledger --home A network create --name Test --tier "
                             "100.00:500.00:1000.00"])
    s.add_argument("--name", required=True, help="the network's name, shown to its members")
    s.add_argument("--currency", default="AED",
                   help="ISO 4217 code of the network's one currency (default %(default)s)")
    tiers = s.add_mutually_exclusive_group()
    tiers.add_argument("--tier", action="append", default=[], metavar="PER:UNSETTLED:HOLDING",
                       help="offline limits of the next KYC tier (0, 1, ...), as amounts "
                            "(12.50): per payment, unsettled, held in one account "
                            "(repeatable; default 3 tiers)")
    tiers.add_argument("--no-tiers", action="store_true",
                       help="a network without offline limits")
    s.set_defaults(func=commands.cmd_network_create)
    s = add_command(nsub, "export", parents=[data], help="write the public network descriptor",
                    example="p2p-ledger --home A network export --out site7.json")
    s.add_argument("--out", type=commands.out_file, required=True, metavar="FILE",
                   help=helptext.OUT_FILE)
    s.set_defaults(func=commands.cmd_network_export)

    s = add_command(sub, "admit", parents=[data], help="(authority) certify a device",
                    example='p2p-ledger --home A admit "$(p2p-ledger --home D1 id)" --tier 1')
    s.add_argument("device_id", help="the device's id, as `p2p-ledger id` prints it there")
    s.add_argument("--role", choices=["device", "hub"], default="device",
                   help="a hub relays for many devices and may sign checkpoints "
                        "(default %(default)s)")
    s.add_argument("--tier", type=int, default=0,
                   help="KYC tier: an index into the network's tier table, which sets the "
                        "offline limits (default %(default)s)")
    s.add_argument("--offline-limit", metavar="AMOUNT",
                   help="a lower unsettled limit than the tier's, " + helptext.AMOUNT)
    s.add_argument("--expires", type=float, metavar="DAYS",
                   help="the certificate expires this many days from now (default: never)")
    s.set_defaults(func=commands.cmd_admit)

    s = add_command(sub, "issue", parents=[data], help="(authority) put money into an account",
                    example='p2p-ledger --home A issue --to "$(p2p-ledger --home D1 id)" '
                            "--amount 250.00",
                    description="(Authority) put money into an account: a cash-in or top-up. "
                    "Refused if the payee is not admitted, is revoked, or its tier may never "
                    "hold that much in one account (specs/ledger.md section 11).")
    s.add_argument("--to", required=True, metavar="ACCOUNT", help=helptext.ACCOUNT)
    s.add_argument("--amount", required=True, help=helptext.AMOUNT)
    s.add_argument("--key", help="idempotency key: a retry with the same key signs nothing "
                                 "new (default: a fresh random one)")
    s.set_defaults(func=commands.cmd_issue)

    s = add_command(sub, "pay", parents=[data], help="pay from one of this device's accounts",
                    example='p2p-ledger --home D1 pay --to "$(p2p-ledger --home D2 id)" '
                            "--amount 12.50 --memo 'diesel, pump 3'",
                    description="Pay from one of this device's accounts. Refused if this "
                    "device knows of no admit of the payee, knows it is revoked, or knows its "
                    "tier may never hold that much (--force pays anyway); a warning if the "
                    "payee's account NAME has never received anything here.")
    s.add_argument("--to", required=True, metavar="ACCOUNT", help=helptext.ACCOUNT)
    s.add_argument("--amount", required=True, help=helptext.AMOUNT)
    s.add_argument("--from", dest="from_name", default="main", metavar="NAME",
                   help="the account of this device to debit (default %(default)s)")
    s.add_argument("--key", help="idempotency key: a retry with the same key signs nothing "
                                 "new (default: a fresh random one)")
    s.add_argument("--memo", help="a note for the payee, signed into the record")
    s.add_argument("--force", action="store_true",
                   help="pay a device this one holds no admit of (a member too new to have "
                        "reached it), or one its knowledge says cannot take the money")
    s.set_defaults(func=commands.cmd_pay)

    s = add_command(sub, "redeem", parents=[data],
                    help="cash out of one of this device's accounts",
                    example="p2p-ledger --home D1 redeem --amount 100.00")
    s.add_argument("--amount", required=True, help=helptext.AMOUNT)
    s.add_argument("--from", dest="from_name", default="main", metavar="NAME",
                   help="the account of this device to debit (default %(default)s)")
    s.add_argument("--key", help="idempotency key: a retry with the same key signs nothing "
                                 "new (default: a fresh random one)")
    s.set_defaults(func=commands.cmd_redeem)

    s = add_command(sub, "balance", parents=[data], help="balances (all accounts, or one)",
                    example=["p2p-ledger --home D1 balance",
                             'p2p-ledger --home D1 balance "$(p2p-ledger --home D1 id)/main"'])
    s.add_argument("account", nargs="?", metavar="ACCOUNT",
                   help=helptext.ACCOUNT + " (default: every account)")
    s.set_defaults(func=views.cmd_balance)

    s = add_command(sub, "history", parents=[data], help="an account's movements",
                    example="p2p-ledger --home D1 history")
    s.add_argument("account", nargs="?", metavar="ACCOUNT",
                   help=helptext.ACCOUNT + " (default: this device's main account)")
    s.set_defaults(func=views.cmd_history)

    s = add_command(sub, "status", parents=[data], help="what this node holds",
                    example="p2p-ledger --home D1 status --json")
    s.set_defaults(func=views.cmd_status)

    s = add_command(sub, "verify", parents=[data],
                    help="re-verify every stored record and verdict from scratch",
                    example="p2p-ledger --home D1 verify")
    s.set_defaults(func=views.cmd_verify)

    s = add_command(sub, "summary", parents=[data],
                    help="write this node's frontier for an offline exchange",
                    example="p2p-ledger --home D1 summary --out d1.summary")
    s.add_argument("--out", type=commands.out_file, required=True, metavar="FILE",
                   help=helptext.OUT_FILE)
    s.set_defaults(func=commands.cmd_summary)

    s = add_command(sub, "export", parents=[data], help="write a bundle of records",
                    example=["p2p-ledger --home A export --since d1.summary --out for-d1.bundle",
                             "p2p-ledger --home A export --out - | "
                             "ssh site p2p-ledger --home HUB import -"])
    s.add_argument("--out", type=commands.out_file, required=True, metavar="FILE",
                   help=helptext.OUT_FILE)
    s.add_argument("--since", type=Path, metavar="SUMMARY",
                   help="only what the node that wrote SUMMARY lacks; " + helptext.IN_FILE)
    s.set_defaults(func=commands.cmd_export)

    s = add_command(sub, "import", parents=[data], help="verify and store a bundle's records",
                    example="p2p-ledger --home D1 import for-d1.bundle")
    s.add_argument("bundle", type=Path, metavar="BUNDLE",
                   help="a bundle written by `export`; " + helptext.IN_FILE)
    s.set_defaults(func=commands.cmd_import)

    net.add_parsers(sub, data)
    simulate.add_parser(sub, data)
    safety.add_parsers(sub, data)

    s = add_command(sub, "demo", help="run a self-contained demonstration in temporary homes",
                    example="p2p-ledger demo")
    s.set_defaults(func=_demo)
    logs.add_options(p)  # -v, -q, --log-format: before or after any command name
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imports trio: only when asked

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in words
    args = build_parser().parse_args(words)
    args.home = Path(os.path.expanduser(args.home))
    logs.configure(logs.level_for(args), args.log_format)
    lost = _LostInterrupts()
    try:
        with lost:
            if args.home.exists() and not args.home.is_dir():
                raise LocalError(f"--home {args.home} is a file, not a home folder")
            code: int = args.func(args)
    # The one boundary: what a command raises (through trio, in groups) and Ctrl-C.
    # SystemExit (argparse's usage errors, `--version`) passes as Python means it to.
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:  # noqa: BLE001 - above
        return _failed(exc, args)
    if lost.count:
        return _failed(KeyboardInterrupt(), args)
    return code


class _LostInterrupts:
    """Counts the Ctrl-Cs Python swallowed while a command ran.

    Python raises a SIGINT's KeyboardInterrupt in whatever Python code runs next; when
    that is a destructor or a callback run by the garbage collector, the exception is
    "ignored" (printed, then dropped) and the command goes on. Compiled code (the opt-in
    build, specs/build.md section 7) runs Python code so rarely that this happens. Such
    an exception goes to `sys.unraisablehook`: counted here, a command that then ends
    normally still exits as interrupted (130), with its work done or not as its own
    transactions say."""

    def __init__(self) -> None:
        self.count = 0
        self._before = sys.unraisablehook

    def _hook(self, unraisable: sys.UnraisableHookArgs) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            self.count += 1
            return
        self._before(unraisable)

    def __enter__(self) -> None:
        self._before = sys.unraisablehook
        sys.unraisablehook = self._hook

    def __exit__(self, *exc: object) -> None:
        sys.unraisablehook = self._before


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
        if getattr(args, "json", False):
            _json_error("interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    ours = [e for e in leaves if isinstance(e, P2PLedgerError)]
    first = ours[0] if ours else leaves[0]
    if isinstance(first, BrokenPipeError) and _stdout_gone():
        # The reader of our output went away (`p2p-ledger status | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    as_json = bool(getattr(args, "json", False))
    if isinstance(first, StoreDamaged):
        return _say(str(first), EXIT_STORE_DAMAGED, as_json)
    if isinstance(first, StoreBusy):
        return _say(str(first), EXIT_BUSY, as_json)
    if isinstance(first, UsageError):
        return _say(str(first), EXIT_USAGE, as_json)
    if isinstance(first, P2PLedgerError):
        return _say(str(first), EXIT_ERROR, as_json)
    if isinstance(first, OSError):
        where = f"{first.filename}: " if first.filename else ""
        return _say(f"{where}{first.strerror or first}", EXIT_ERROR, as_json)
    if os.environ.get("P2P_LEDGER_DEBUG"):
        traceback.print_exception(exc)
    return _say(f"internal error ({type(first).__name__}: {first}); this is a bug in "
                "p2p-ledger: please report it (P2P_LEDGER_DEBUG=1 shows the details)",
                EXIT_INTERNAL, as_json)


def _say(message: str, code: int, as_json: bool = False) -> int:
    """The one error line on stderr; under --json also the error object on stdout."""
    print(f"p2p-ledger: error: {message}", file=sys.stderr)
    if as_json:
        _json_error(message, code)
    return code


def _json_error(message: str, code: int) -> None:
    """With --json a failure is also one JSON object on stdout, so that a program reading
    stdout always gets JSON: {"error": {"message", "exit_code", "meaning"}}."""
    print(json.dumps({"error": {"message": message, "exit_code": code,
                                "meaning": EXIT_CODES.get(code, "")}}, sort_keys=True),
          flush=True)


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
