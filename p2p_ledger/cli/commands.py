"""The CLI commands. Each takes the parsed arguments and returns an exit code.

Writes follow one rule: sign and apply inside a store transaction, and print a record
as stored only after that transaction has committed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..core.collector import gc_paused
from ..core.hlc import hlc_ms
from ..core.ids import Account, device_id, parse_device_id
from ..core.ledger import IngestReport, Replica
from ..core.money import format_amount, parse_amount
from ..core.network import DEFAULT_TIERS, NetworkDescriptor, Tier
from ..core.records import Admit, Role
from ..core.store import NodeStore, Verdict
from ..core.wallet import PaymentResult, Wallet
from ..errors import LocalError
from ..node.verifier import shared_verifier
from ..storage.bundle import STDIO, read_bundle, read_summary, write_bundle, write_summary
from ..storage.home import Home
from . import progress

PASSPHRASE_ENV = "P2P_LEDGER_PASSPHRASE"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def emit(args: argparse.Namespace, data: Mapping[str, object], text: str) -> None:
    """The command's result: JSON with --json, else text; on stderr when stdout carries
    the data itself (`--out -`)."""
    out = sys.stderr if getattr(args, "out", None) == STDIO else sys.stdout
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True), file=out)
    else:
        print(text, file=out)


def shown(path: Path) -> str:
    return "stdout" if path == STDIO else str(path)


def printable(text: str) -> str:
    """Text another device or a peer wrote (a memo, a display name, a close reason), as
    it is safe to print on a terminal: what is not printable (an escape, a newline, a
    bidi override) is shown escaped, `\\x1b`, so that it cannot clear the screen, change
    colours or forge a line of output. Letters of any script stay as they are."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def warn(message: str) -> None:
    print(f"p2p-ledger: warning: {message}", file=sys.stderr)


def passphrase(*, new: bool = False) -> str:
    """From P2P_LEDGER_PASSPHRASE, else a prompt on a terminal, else an error."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env:
            raise LocalError(f"{PASSPHRASE_ENV} is set but empty")
        return env
    if not sys.stdin.isatty():
        raise LocalError(f"a passphrase is needed: set {PASSPHRASE_ENV} or run on a terminal")
    first = getpass.getpass("Passphrase for the device key: ")
    if not first:
        raise LocalError("an empty passphrase is not allowed (use --no-passphrase)")
    if new and getpass.getpass("Repeat the passphrase: ") != first:
        raise LocalError("the passphrases differ")
    return first


def _new_key(home: Home, no_passphrase: bool) -> bytes:
    if no_passphrase:
        warn("the device key is stored UNENCRYPTED; anyone who copies "
             f"{home.key_path} can spend from this device")
        return bytes(home.create_key(None).verify_key)
    return bytes(home.create_key(passphrase(new=True)).verify_key)


def out_file(text: str) -> Path:
    """An --out argument: a file to write, in a folder that exists ("-" is stdout)."""
    path = Path(text)
    if path == STDIO:
        return STDIO
    parent = path.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: the folder {parent} does not "
                                         "exist")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a folder")
    return path


@contextmanager
def undone_on_failure(home: Home) -> Iterator[None]:
    """`init` and `network create` make files in the home (key, descriptor, store): if
    the command fails or is interrupted, remove the ones it made, and the home folder
    if it made that too, so that the home is as it was."""
    existed = home.path.is_dir()
    before = set(home.path.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        if home.path.is_dir():
            for made in set(home.path.iterdir()) - before:
                if made.is_dir():
                    shutil.rmtree(made, ignore_errors=True)
                else:
                    made.unlink(missing_ok=True)
            if not existed:
                with contextlib.suppress(OSError):
                    home.path.rmdir()
        raise


def node_store(replica: Replica) -> NodeStore:
    store = replica.store
    assert isinstance(store, NodeStore)
    return store


@contextmanager
def opened(home: Home, *, signs: bool = False) -> Iterator[Replica]:
    """The home's replica, closed after. A command that `signs` or stores records gets
    it only if SQLite's quick_check passes: it never writes into a damaged store."""
    replica = home.replica(check=signs)
    try:
        yield replica
    finally:
        node_store(replica).close()


def wallet(home: Home, replica: Replica) -> Wallet:
    return Wallet(replica, home.signing_key(passphrase))


def fmt(replica: Replica, minor: int) -> str:
    return format_amount(minor, replica.network.currency)


def amount_json(replica: Replica, minor: int) -> dict[str, object]:
    return {"minor": minor, "currency": replica.network.currency, "display": fmt(replica, minor)}


def _when_ms(ms: int) -> str:
    """A time for people and programs alike: ISO 8601 in UTC, with its zone (Z)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(hlc: int) -> str:
    return _when_ms(hlc_ms(hlc))


# ---------------------------------------------------------------- identity & network

def cmd_init(args: argparse.Namespace) -> int:
    home = Home(args.home)
    network = NetworkDescriptor.from_json(_read_text(args.network)) if args.network else None
    if home.has_key() and network is None:
        raise LocalError(
            f"{home.path} is already initialised (device {device_id(home.public_key())})")
    if network is not None and home.has_network():
        raise LocalError(f"{home.path} already belongs to a network")
    if args.store is not None and network is None:
        raise LocalError("--store goes with --network: the store is made when the home "
                         "joins its network")
    with undone_on_failure(home):
        key = home.public_key() if home.has_key() else _new_key(home, args.no_passphrase)
        if network is not None:
            if args.store is not None:  # first: set_network makes a SQLite store otherwise
                home.set_store_url(args.store)
            home.set_network(network)
            home.open_store().close()
    data: dict[str, object] = {"device_id": device_id(key), "home": str(home.path),
                               "network_id": network.network_id.hex() if network else None}
    text = f"device {device_id(key)}"
    if network:
        text += f"\njoined network {network.name!r} ({network.network_id.hex()[:16]})"
        text += "\nnext: ask the authority to run `p2p-ledger admit` with this device id"
    emit(args, data, text)
    return 0


def _read_text(path: Path) -> str:
    name = "stdin" if path == STDIO else str(path)
    try:
        if path == STDIO:
            return sys.stdin.buffer.read().decode("utf-8")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LocalError(f"{name} is not a text file: a network descriptor is the JSON "
                         "that `network export` writes") from None


def cmd_id(args: argparse.Namespace) -> int:
    home = Home(args.home)
    dev = device_id(home.public_key())
    emit(args, {"device_id": dev, "home": str(home.path)}, dev)
    return 0


def cmd_network_create(args: argparse.Namespace) -> int:
    home = Home(args.home)
    if home.has_network():
        raise LocalError(f"{home.path} already belongs to a network")
    currency = args.currency.upper()
    tiers = _tiers(args, currency)
    # Check the descriptor before making a key: a bad name or currency must not leave a
    # key behind (a rerun would silently reuse it, under the old passphrase).
    NetworkDescriptor(name=args.name, currency=currency, authority=bytes(32), tiers=tiers)
    with undone_on_failure(home):
        key = home.public_key() if home.has_key() else _new_key(home, args.no_passphrase)
        network = NetworkDescriptor(name=args.name, currency=currency, authority=key,
                                    tiers=tiers)
        home.set_network(network)
        home.open_store().close()
    show = [{name: {"minor": v, "currency": currency, "display": format_amount(v, currency)}
             for name, v in (("per_payment", t.per_payment), ("unsettled", t.unsettled),
                             ("holding", t.holding))} for t in tiers]
    lines = [f"  tier {i}: {t['per_payment']['display']} per payment, "
             f"{t['unsettled']['display']} unsettled, {t['holding']['display']} held"
             for i, t in enumerate(show)] or ["  no tiers: devices have no offline limits"]
    emit(args, {"network_id": network.network_id.hex(), "name": network.name,
                "currency": network.currency, "authority": device_id(key), "tiers": show},
         "\n".join([f"created network {network.name!r} ({network.network_id.hex()[:16]}), "
                    f"currency {network.currency}; this home is its authority", *lines]))
    return 0


def _tiers(args: argparse.Namespace, currency: str) -> tuple[Tier, ...]:
    """The tier table asked for: --tier PER:UNSETTLED:HOLDING (repeatable) in the
    currency's decimal form, none with --no-tiers, else DEFAULT_TIERS."""
    if args.no_tiers:
        return ()
    if not args.tier:
        return DEFAULT_TIERS
    tiers = []
    for text in args.tier:
        parts = text.split(":")
        if len(parts) != 3:
            raise LocalError(f"--tier {text!r}: expected PER:UNSETTLED:HOLDING amounts")
        per, unsettled, holding = (parse_amount(x, currency) for x in parts)
        tiers.append(Tier(per_payment=per, unsettled=unsettled, holding=holding))
    return tuple(tiers)


def cmd_network_export(args: argparse.Namespace) -> int:
    network = Home(args.home).network()
    if args.out == STDIO:
        sys.stdout.write(network.to_json())
        sys.stdout.flush()
    else:
        args.out.write_text(network.to_json(), encoding="utf-8")
    emit(args, {"out": shown(args.out), "network_id": network.network_id.hex(),
                "name": network.name, "currency": network.currency},
         f"wrote {shown(args.out)}")
    return 0


def cmd_admit(args: argparse.Namespace) -> int:
    home = Home(args.home)
    device = parse_device_id(args.device_id)
    with opened(home, signs=True) as replica:
        w = wallet(home, replica)
        limit = (parse_amount(args.offline_limit, replica.network.currency)
                 if args.offline_limit else None)
        if args.tier < 0:
            raise LocalError("a tier is 0 or more")
        if replica.network.limited and replica.network.tier(args.tier) is None:
            raise LocalError(f"the network has no tier {args.tier} "
                             f"(it has {len(replica.network.tiers)})")
        if args.expires is not None and not 0 < args.expires <= 36_500:
            raise LocalError("--expires is a number of days, more than 0")
        now = now_ms()
        expires = None if args.expires is None else now + round(args.expires * 86_400_000)
        if not w.is_authority:
            raise LocalError("only the network authority can admit devices")
        with replica.store.transaction():
            applied = w.submit(Admit(device=device, role=Role(args.role), tier=args.tier,
                                     offline_limit=limit, expires=expires), now_ms=now)
        emit(args, {"record_id": applied.record.hex_id, "verdict": applied.verdict.value,
                    "device_id": device_id(device), "tier": args.tier, "expires": expires},
             f"admitted {device_id(device)} as {args.role} (record {applied.record.hex_id[:16]})"
             + (f", expires {_when_ms(expires)}" if expires is not None else ""))
    return 0 if applied.verdict is Verdict.APPLIED else 1


# ---------------------------------------------------------------- money

def _payment_out(args: argparse.Namespace, result: PaymentResult, what: str,
                 warnings: Sequence[str] = ()) -> int:
    data: dict[str, object] = {"record_id": result.record_id.hex(),
                               "verdict": result.verdict.value, "warnings": list(warnings)}
    for w in warnings:
        warn(w)
    if result.reason:
        data["reason"] = result.reason
    if result.verdict is Verdict.DUPLICATE:
        text = f"already done, nothing signed: {result.reason}"
    else:
        text = f"{what}: stored record {result.record_id.hex()} ({result.verdict.value})"
    emit(args, data, text)
    return 0 if result.verdict is not Verdict.REJECTED else 1


def _key(args: argparse.Namespace) -> str:
    return str(args.key) if args.key else secrets.token_hex(8)


def _payee_warnings(w: Wallet, to: Account) -> list[str]:
    """Money to an account name never seen before is not refused - its device can
    spend from any of its own accounts - but it is said (a typo of the name?)."""
    if not w.new_account(to):
        return []
    return [f"{to} has never received anything here: is {to.name!r} the account name the "
            "payee meant? (its device can spend from it all the same)"]


def cmd_issue(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        to = Account.parse(args.to)
        amount = parse_amount(args.amount, replica.network.currency)
        w = wallet(home, replica)
        warnings = _payee_warnings(w, to)
        with replica.store.transaction():
            result = w.issue(to, amount, key=_key(args), now_ms=now_ms())
        return _payment_out(args, result, f"issued {fmt(replica, amount)} to {to}", warnings)


def cmd_pay(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        to = Account.parse(args.to)
        amount = parse_amount(args.amount, replica.network.currency)
        w = wallet(home, replica)
        warnings = _payee_warnings(w, to)
        if args.force and (problem := w.payee_problem(to, amount)) is not None:
            warnings.append(f"--force: {problem}")
        with replica.store.transaction():
            result = w.pay(to, amount, key=_key(args), from_name=args.from_name,
                           memo=args.memo, now_ms=now_ms(), check_payee=not args.force)
        return _payment_out(args, result, f"paid {fmt(replica, amount)} to {to}", warnings)


def cmd_redeem(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        amount = parse_amount(args.amount, replica.network.currency)
        w = wallet(home, replica)
        with replica.store.transaction():
            result = w.redeem(amount, key=_key(args), from_name=args.from_name, now_ms=now_ms())
        return _payment_out(args, result, f"redeemed {fmt(replica, amount)}")


# ---------------------------------------------------------------- offline exchange

def cmd_summary(args: argparse.Namespace) -> int:
    with opened(Home(args.home)) as replica:
        frontier = replica.frontier()
        write_summary(args.out, replica.network_id, frontier)
    emit(args, {"out": shown(args.out), "authors": len(frontier.tips)},
         f"wrote {shown(args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with opened(Home(args.home)) as replica:
        if args.since:
            raws = replica.delta(read_summary(args.since, replica.network_id))
        else:
            ids = list(replica.store.all_ids_in_order())
            raws = []
            with progress.bar(args, "reading", len(ids)) as bar:
                for at in range(0, len(ids), 2000):
                    raws += replica.store.raws_in_order(ids[at:at + 2000])
                    bar.update(len(ids[at:at + 2000]))
        write_bundle(args.out, replica.network_id, raws)
    data: dict[str, object] = {"records": len(raws), "out": shown(args.out)}
    if args.out != STDIO:
        data["bytes"] = args.out.stat().st_size
    emit(args, data, f"wrote {len(raws)} records to {shown(args.out)}")
    return 0


def import_report(report: IngestReport, replica: Replica) -> tuple[dict[str, object], str]:
    counts = {v.value: sum(a.verdict is v for a in report.applied) for v in Verdict}
    refused = [{"index": i, "record_id": e.record_id, "problem": e.problem.value,
                "detail": e.detail} for i, e in report.refused]
    waiting = [{"record_id": rid.hex(), "missing": [m.hex() for m in missing]}
               for rid, missing in replica.pending()]
    rejected = [{"record_id": a.record.hex_id, "reason": a.reason} for a in report.applied
                if a.verdict is Verdict.REJECTED]
    data: dict[str, object] = {"stored": len(report.applied), "verdicts": counts,
                               "rejected": rejected, "refused": refused,
                               "already_held": report.already_held, "not_stored_waiting": waiting}
    verdicts = ", ".join(f"{n} {k}" for k, n in counts.items())
    lines = [f"stored {len(report.applied)} records ({verdicts}), "
             f"{report.already_held} already held"]
    lines += [f"  record {r['record_id']}: stored, verdict rejected: {r['reason']}"
              for r in rejected]
    lines += [f"  REFUSED record #{r['index'] if r['index'] is not None else '?'} "
              f"{r['record_id'] or '(unreadable)'}: {r['problem']}: {r['detail']}"
              for r in refused]
    lines += [f"  NOT STORED record {w['record_id']}: its causal past is missing"
              for w in waiting]
    return data, "\n".join(lines)


def cmd_import(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        raws = read_bundle(args.bundle, replica.network_id)
        replica.verifier = shared_verifier().start  # signatures on a second core
        # The commit too is in the pause (it writes the batch's rows), and in bulk.
        with (gc_paused(), replica.store.transaction(bulk=True),
              progress.bar(args, "importing", len(raws)) as bar):
            report = replica.receive_many(progress.counted(raws, bar), now_ms=now_ms())
        data, text = import_report(report, replica)
        if any(a.equivocates_with for a in report.applied) and (
                home.public_key() == replica.network.authority):
            # The authority answers a fork at once: it revokes the device from the fork.
            with replica.store.transaction():
                frozen = wallet(home, replica).freeze_equivocators(now_ms=now_ms())
            text += "".join(f"\n  equivocation: revoked the device in record "
                            f"{a.record.hex_id}" for a in frozen)
            data["revoked_for_equivocation"] = [a.record.hex_id for a in frozen]
        emit(args, data, text)
        return 1 if report.refused or replica.pending_count else 0
