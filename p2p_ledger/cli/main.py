"""The `p2p-ledger` command line: argument parsing and error reporting.

Every command takes `--home DIR` (or `P2P_LEDGER_HOME`). Commands that print data take
`--json`. Errors of ours (`P2PLedgerError`) print one line on stderr and exit 1;
usage errors exit 2; a damaged store (`StoreDamaged`) exits 3, so that a script can
tell "restore this home" from an ordinary refusal. The commands themselves live in
`commands.py` (and the offline-safety ones in `safety.py`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import P2PLedgerError, StoreDamaged
from . import commands, net, safety, simulate

__all__ = ["EXIT_STORE_DAMAGED", "build_parser", "main"]

DEFAULT_HOME = "~/.p2p-ledger"
EXIT_STORE_DAMAGED = 3


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
    s.add_argument("--out", type=Path, required=True)
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
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=commands.cmd_summary)

    s = sub.add_parser("export", parents=[data], help="write a bundle of records")
    s.add_argument("--out", type=Path, required=True)
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
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # imports trio: only when asked

    return run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.home = Path(os.path.expanduser(args.home))
    try:
        code: int = args.func(args)
    except StoreDamaged as exc:
        print(f"p2p-ledger: error: {exc}", file=sys.stderr)
        return EXIT_STORE_DAMAGED
    except P2PLedgerError as exc:
        print(f"p2p-ledger: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("p2p-ledger: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`p2p-ledger status | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
