"""Offline payment safety at the command line: revoke, checkpoint, check, audit, meta.

- `revoke DEVICE_ID [--after-seq N]` (authority): records the device signs after
  seq N are rejected once they hold the revocation in their causal past, payees who
  know of it cannot take in what it paid after seq N, and it fails every handshake.
- `checkpoint` (authority or hub): signs checkpoint records that cover the head of
  every author's chain held here (up to 48 authors each), with the state hash, so
  that those devices can settle: their unsettled exposure resets when they ref it.
- `check RECORD_ID`: the payee's answer from its own store, with no hub in reach:
  the record's verdict, the payer's unsettled exposure against its offline limit,
  any known equivocation or revocation of the payer, settled or pending.
- `audit --out FILE`: every stored record with its verdict, settlement and flags
  for a reviewer (payments near the per-payment cap, bursts, forks, revocations).
- `meta --field F --value V`: last-writer-wins metadata of one of this device's
  accounts, shown by `balance ACCOUNT`.

Nothing here decides validity: verdicts come from the ledger rules, and the audit
flags only describe patterns, deterministically from the records; they never block.
A record counts as settled once an applied checkpoint covers its author's chain at
or beyond its seq (on a forked chain: on the branch of the latest cover).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..core.hlc import hlc_ms
from ..core.ids import Account, device_id, parse_device_id
from ..core.ledger import OfflineLimits, Replica
from ..core.records import (
    MAX_COVERS,
    Admit,
    Checkpoint,
    Issue,
    Kind,
    Meta,
    Redeem,
    Revoke,
    Transfer,
    parse_record,
)
from ..core.store import HistoryEntry, LedgerStore, StoredRecord, Verdict
from ..errors import LocalError
from ..storage.bundle import STDIO
from ..storage.home import Home
from . import progress
from .commands import (
    _when,
    amount_json,
    emit,
    fmt,
    now_ms,
    opened,
    out_file,
    printable,
    shown,
    wallet,
)
from .helptext import OUT_FILE, add_command

__all__ = ["AUDIT_FLAGS", "BURST_COUNT", "BURST_WINDOW_MS", "NEAR_CAP_PERCENT", "CheckResult",
           "Settlement", "add_parsers", "audit_rows", "check_record", "settled_split"]

NEAR_CAP_PERCENT = 90  # a debit at or above this share of the per-payment cap (and within it)
BURST_COUNT = 5  # the 5th or later applied debit of one device ...
BURST_WINDOW_MS = 10 * 60 * 1000  # ... within this much hlc time
AUDIT_FLAGS = ("near_cap", "burst", "equivocation", "after_revocation", "rejected")
_AUDIT_COLUMNS = ("record_id", "author", "seq", "kind", "hlc", "time", "verdict", "reason",
                  "amount", "currency", "display", "from", "to", "memo", "device", "settled",
                  "flags")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                data: argparse.ArgumentParser) -> None:
    s = add_command(sub, "revoke", parents=[data],
                    help="(authority) withdraw a device's certificate",
                    example='p2p-ledger --home A revoke "$(p2p-ledger --home D1 id)"')
    s.add_argument("device_id", help="the device's id, as `p2p-ledger id` prints it there")
    s.add_argument("--after-seq", type=int, metavar="N",
                   help="its records up to seq N stay valid (default: its highest seq held here)")
    s.set_defaults(func=cmd_revoke)

    s = add_command(sub, "checkpoint", parents=[data],
                    help="(authority or hub) settle every chain held here",
                    example="p2p-ledger --home HUB checkpoint")
    s.set_defaults(func=cmd_checkpoint)

    s = add_command(sub, "check", parents=[data],
                    help="is this payment good? answered offline from this store",
                    example="p2p-ledger --home D2 check 3f9c2a71")
    s.add_argument("record_id", help="the record id (hex; a unique prefix of 8+ digits will do)")
    s.set_defaults(func=cmd_check)

    s = add_command(sub, "audit", parents=[data],
                    help="export every record with its verdict, settlement and flags",
                    example=["p2p-ledger --home A audit --out audit.jsonl",
                             "p2p-ledger --home A audit --format csv --out - | less"])
    s.add_argument("--out", type=out_file, required=True, metavar="FILE",
                   help=OUT_FILE + " (the summary then goes to stderr)")
    s.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="one JSON object a line, or CSV with a header (default %(default)s)")
    s.set_defaults(func=cmd_audit)

    s = add_command(sub, "meta", parents=[data],
                    help="set metadata of one of this device's accounts",
                    description="Set metadata of one of this device's accounts (last writer "
                    "wins). The field `name` is its display name, shown beside its id in "
                    "`balance` and `history`.",
                    example="p2p-ledger --home D2 meta --field name --value 'Fuel station 7'")
    s.add_argument("--field", required=True,
                   help="the field to set (`name` is the display name)")
    s.add_argument("--value", required=True, help="its new value")
    s.add_argument("--account", default="main", metavar="NAME",
                   help="which of this device's accounts (default %(default)s)")
    s.set_defaults(func=cmd_meta)


# ---------------------------------------------------------------- settlement

class Settlement:
    """Which stored records are settled, with each author's cover looked up once."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self._authors: dict[bytes, tuple[int, frozenset[bytes] | None]] = {}

    def settled(self, row: StoredRecord | HistoryEntry) -> bool:
        seq, branch = self._cover(row.author)
        return row.seq <= seq and (branch is None or row.id in branch)

    def _cover(self, author: bytes) -> tuple[int, frozenset[bytes] | None]:
        """The highest covered seq, and on a forked chain the records of the covered
        branch (a cover of one branch settles nothing on the other)."""
        if author not in self._authors:
            seq = self.store.covered_seq(author)
            branch: frozenset[bytes] | None = None
            latest = self.store.latest_cover(author) if seq and self.store.forked(author) else None
            if latest is not None:
                ids, cursor = set(), latest[2]
                while (row := self.store.get(cursor)) is not None:
                    ids.add(row.id)
                    if row.prev is None:
                        break
                    cursor = row.prev
                branch = frozenset(ids)
            self._authors[author] = (seq, branch)
        return self._authors[author]


def settled_split(replica: Replica, account: Account,
                  settlement: Settlement | None = None) -> tuple[int, int]:
    """(settled, pending) parts of the account's balance, in minor units."""
    s = settlement or Settlement(replica.store)
    settled = sum(e.delta for e in replica.store.history(account) if s.settled(e))
    return settled, replica.balance(account) - settled


# ---------------------------------------------------------------- authority and hubs

def cmd_revoke(args: argparse.Namespace) -> int:
    home = Home(args.home)
    device = parse_device_id(args.device_id)
    with opened(home, signs=True) as replica:
        store = replica.store
        w = wallet(home, replica)
        if not w.is_authority:
            raise LocalError("only the network authority can revoke devices")
        if not store.admits_for(device):
            raise LocalError(f"{device_id(device)} has no admit record here: nothing to revoke")
        after = args.after_seq
        if after is None:
            after = max((t.seq for t in store.tips_of(device)), default=0)
        if after < 0:
            raise LocalError("--after-seq is 0 or more")
        with store.transaction():
            applied = w.revoke(device, after_seq=after, now_ms=now_ms())
        data: dict[str, object] = {"record_id": applied.record.hex_id,
                                   "verdict": applied.verdict.value,
                                   "device_id": device_id(device), "after_seq": after}
        if applied.reason:
            data["reason"] = applied.reason
        emit(args, data,
             f"revoked {device_id(device)} after its seq {after} "
             f"(record {applied.record.hex_id[:16]}, {applied.verdict.value}): payees who "
             "know of it cannot take in what it paid later, and it fails every handshake")
    return 0 if applied.verdict is Verdict.APPLIED else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        store = replica.store
        w = wallet(home, replica)
        if not w.is_authority and _role(store, w.device) != "hub":
            raise LocalError("only the network authority or a hub signs checkpoints")
        covers, left_out = _to_cover(replica, w.device)
        signed = []
        with store.transaction():
            for at in range(0, len(covers), MAX_COVERS):
                body = Checkpoint(covers=tuple(covers[at:at + MAX_COVERS]),
                                  state_hash=replica.state_hash())
                signed.append((w.submit(body, now_ms=now_ms()), body))
        data = {"checkpoints": [
            {"record_id": a.record.hex_id, "verdict": a.verdict.value,
             "state_hash": body.state_hash.hex(),
             "covers": [{"device_id": device_id(dev), "seq": seq, "record_id": rid.hex()}
                        for dev, seq, rid in body.covers]} for a, body in signed],
            "left_out": [{"device_id": device_id(d), "reason": why} for d, why in left_out]}
        lines = [f"checkpoint {a.record.hex_id} ({a.verdict.value}) covers {len(body.covers)} "
                 f"chains, state hash {body.state_hash.hex()[:16]}" for a, body in signed]
        lines += [f"  {device_id(dev)} up to seq {seq}" for _, body in signed
                  for dev, seq, _ in body.covers]
        lines += [f"  left out {device_id(d)}: {why}" for d, why in left_out]
        if not signed:
            lines.insert(0, "nothing new to cover: every chain held here is covered to its head")
        emit(args, data, "\n".join(lines))
        return 0 if all(a.verdict is Verdict.APPLIED for a, _ in signed) else 1


def _role(store: LedgerStore, device: bytes) -> str | None:
    """The role given by the device's newest admit held here (by hlc, then id)."""
    ranked = [(row.hlc, a.id, a.role) for a in store.admits_for(device)
              if (row := store.get(a.id)) is not None]
    return max(ranked)[2] if ranked else None


def _to_cover(replica: Replica, signer: bytes
              ) -> tuple[list[tuple[bytes, int, bytes]], list[tuple[bytes, str]]]:
    """Covers (author, seq, id) of every chain's head not covered yet, by author; and
    the chains left out: a forked or revoked chain is never settled (settling it would
    let the device spend its offline limit again)."""
    store = replica.store
    covers, left_out = [], []
    for author in sorted({t.author for t in store.tips()}):
        head = replica.head(author)
        assert head is not None
        if author == signer and head.kind is Kind.CHECKPOINT:
            continue  # nothing of ours but earlier checkpoints
        if head.seq <= store.covered_seq(author):
            continue
        if store.forked(author):
            left_out.append((author, "its chain has forked (an equivocation)"))
        elif store.revocations(author):
            left_out.append((author, "it has been revoked"))
        else:
            covers.append((author, head.seq, head.id))
    return covers, left_out


# ---------------------------------------------------------------- the payee's check

def _find(store: LedgerStore, text: str) -> bytes | None:
    """The id named by full hex or by a unique prefix of at least 8 hex digits."""
    text = text.strip().lower()
    if not text or text.strip("0123456789abcdef"):
        raise LocalError(f"{text!r} is not a record id (hex)")
    if len(text) == 64:
        rid = bytes.fromhex(text)
        return rid if store.has(rid) else None
    if not 8 <= len(text) < 64:
        raise LocalError("a record id is 64 hex digits (or a unique prefix of 8 or more)")
    found = [rid for rid in store.all_ids_in_order() if rid.hex().startswith(text)]
    if len(found) > 1:
        raise LocalError(f"{text!r} names {len(found)} records: give more digits")
    return found[0] if found else None


def _parties(author: bytes, body: object) -> tuple[int | None, str | None, str | None]:
    """(amount, from, to) of a money record; Nones elsewhere."""
    if isinstance(body, Transfer):
        return body.amount, str(Account(device=author, name=body.from_)), str(body.to)
    if isinstance(body, Redeem):
        return body.amount, str(Account(device=author, name=body.from_)), None
    if isinstance(body, Issue):
        return body.amount, None, str(body.to)
    return None, None, None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """What `check` found about one stored record, for a payee deciding offline."""

    row: StoredRecord
    amount: int | None
    payer: str | None  # the debited account (or None: an issue, an admit...)
    payee: str | None
    memo: str | None  # a transfer's memo
    limits: OfflineLimits | None  # the payer's limits now (None: no limits)
    forks: list[tuple[int, bytes, bytes]]  # the payer's known equivocations
    revoked: tuple[int, bytes] | None  # (after_seq, record) of its earliest cut-off
    settled: bool

    @property
    def after_revocation(self) -> bool:
        return self.revoked is not None and self.row.seq > self.revoked[0]

    @property
    def flags(self) -> list[str]:
        """The red flags: any of them means do not rely on this payment."""
        out = [] if self.row.verdict is Verdict.APPLIED else [self.row.verdict.value]
        out += ["equivocation"] if self.forks else []
        out += ["after_revocation"] if self.after_revocation else []
        return out


def check_record(replica: Replica, rid: bytes) -> CheckResult | None:
    store = replica.store
    row, raw = store.get(rid), store.raw(rid)
    if row is None or raw is None:
        return None
    body = parse_record(raw).record.body
    amount, payer, payee = _parties(row.author, body)
    revoked = store.revocations(row.author)
    return CheckResult(
        row=row, amount=amount, payer=payer, payee=payee,
        memo=body.memo if isinstance(body, Transfer) else None,
        limits=replica.offline_limits(row.author),
        forks=[(seq, x, y) for a, seq, x, y in store.equivocations() if a == row.author],
        revoked=min(revoked) if revoked else None, settled=Settlement(store).settled(row))


def cmd_check(args: argparse.Namespace) -> int:
    with opened(Home(args.home)) as replica:
        rid = _find(replica.store, args.record_id)
        found = check_record(replica, rid) if rid is not None else None
        if found is None:
            emit(args, {"record_id": args.record_id, "held": False, "ok": False,
                        "flags": ["not_held"]},
                 f"record {args.record_id} is not held here: import the payer's records first")
            return 1
        emit(args, _check_json(replica, found), _check_text(replica, found))
        return 0 if not found.flags else 1


def _check_json(replica: Replica, c: CheckResult) -> dict[str, object]:
    row, limits = c.row, c.limits
    return {
        "record_id": row.id.hex(), "held": True, "verdict": row.verdict.value,
        "reason": row.reason, "kind": row.kind.label, "author": device_id(row.author),
        "seq": row.seq, "time": _when(row.hlc),
        "amount": amount_json(replica, c.amount) if c.amount is not None else None,
        "payer": c.payer, "payee": c.payee, "memo": c.memo,
        "exposure": amount_json(replica, row.chain.exposure),
        "limits": None if limits is None else {
            "per_payment": amount_json(replica, limits.per_payment),
            "unsettled": amount_json(replica, limits.unsettled),
            "holding": amount_json(replica, limits.holding), "expires": limits.expires},
        "equivocations": [{"seq": s, "records": [x.hex(), y.hex()]} for s, x, y in c.forks],
        "revoked": None if c.revoked is None else {"after_seq": c.revoked[0],
                                                   "record_id": c.revoked[1].hex()},
        "after_revocation": c.after_revocation, "settled": c.settled,
        "ok": not c.flags, "flags": c.flags}


def _check_text(replica: Replica, c: CheckResult) -> str:
    row, limits = c.row, c.limits
    what = row.kind.label + (f" {fmt(replica, c.amount)}" if c.amount is not None else "")
    what += f" from {c.payer}" if c.payer else f" by {device_id(row.author)}"
    what += f" to {c.payee}" if c.payee else ""
    exposure = f"{fmt(replica, row.chain.exposure)} unsettled, " + (
        "no offline limit" if limits is None else
        f"offline limit {fmt(replica, limits.unsettled)} "
        f"(per payment {fmt(replica, limits.per_payment)})")
    forks = ("none known" if not c.forks else
             "EQUIVOCATION known at seq " + ", ".join(str(s) for s, _, _ in c.forks))
    revoked = ("no" if c.revoked is None else
               f"REVOKED after seq {c.revoked[0]}; this record is "
               f"{'after' if c.after_revocation else 'before'} the cut-off")
    return "\n".join([
        f"record    {row.id.hex()}",
        f"verdict   {row.verdict.value}" + (f": {row.reason}" if row.reason else ""),
        f"payment   {what}", *([f"memo      {printable(c.memo)}"] if c.memo else []),
        f"time      {_when(row.hlc)} (seq {row.seq})",
        f"exposure  {exposure}", f"forks     {forks}", f"revoked   {revoked}",
        "settled   " + ("yes: a checkpoint covers it" if c.settled
                        else "no: pending until a checkpoint covers it"),
        "result    " + ("OK" if not c.flags else "NOT OK: " + ", ".join(c.flags))])


# ---------------------------------------------------------------- audit

def _per_payment(replica: Replica, row: StoredRecord) -> int | None:
    """The per-payment cap the record's chain ran under (None: no limits)."""
    info = replica.store.admit(row.chain.admit) if row.chain.admit is not None else None
    if info is None or info.role != "device":
        return None
    tier = replica.network.tier(info.tier)
    return tier.per_payment if tier is not None else None


def audit_rows(replica: Replica) -> Iterator[tuple[dict[str, object], list[str]]]:
    """Every stored record, in store order: its fields as a flat dict, and its flags."""
    store = replica.store
    settlement = Settlement(store)
    forks: dict[bytes, int] = {}
    for author, seq, _, _ in store.equivocations():
        forks[author] = min(seq, forks.get(author, seq))
    cuts: dict[bytes, int | None] = {}
    bursts = _bursts(replica)
    for rid in store.all_ids_in_order():
        row, raw = store.get(rid), store.raw(rid)
        assert row is not None
        assert raw is not None
        body = parse_record(raw).record.body
        amount, payer, payee = _parties(row.author, body)
        if row.author not in cuts:
            revoked = store.revocations(row.author)
            cuts[row.author] = min(revoked)[0] if revoked else None
        cut = cuts[row.author]
        flags = []
        debit = isinstance(body, (Transfer, Redeem)) and row.verdict is Verdict.APPLIED
        cap = _per_payment(replica, row) if debit else None
        if cap is not None and amount is not None and (
                amount * 100 >= cap * NEAR_CAP_PERCENT and amount <= cap):
            flags.append("near_cap")
        if rid in bursts:
            flags.append("burst")
        if row.author in forks and forks[row.author] <= row.seq:
            flags.append("equivocation")
        if cut is not None and row.seq > cut:
            flags.append("after_revocation")
        if row.verdict is Verdict.REJECTED:
            flags.append("rejected")
        subject = body.device if isinstance(body, (Admit, Revoke)) else None
        yield {"record_id": rid.hex(), "author": device_id(row.author), "seq": row.seq,
               "kind": row.kind.label, "hlc": row.hlc, "time": _when(row.hlc),
               "verdict": row.verdict.value, "reason": row.reason, "amount": amount,
               "currency": replica.network.currency if amount is not None else None,
               "display": fmt(replica, amount) if amount is not None else None,
               "from": payer, "to": payee,
               "memo": body.memo if isinstance(body, Transfer) else None,
               "device": device_id(subject) if subject is not None else None,
               "settled": settlement.settled(row)}, flags


def _bursts(replica: Replica) -> set[bytes]:
    """Applied debits that are the BURST_COUNT-th or later of their device within
    BURST_WINDOW_MS of hlc time, counting in (hlc, id) order: the same set whatever
    the order the records were stored in. One author's chain in memory at a time."""
    store = replica.store
    flagged = set()
    for author in sorted({t.author for t in store.tips()}):
        debits = sorted((row.hlc, row.id) for _, row in store.records_of(author, 0)
                        if row.kind in (Kind.TRANSFER, Kind.REDEEM)
                        and row.verdict is Verdict.APPLIED)
        window: deque[int] = deque()
        for hlc, rid in debits:
            ms = hlc_ms(hlc)
            window.append(ms)
            while window[0] < ms - BURST_WINDOW_MS:
                window.popleft()
            if len(window) >= BURST_COUNT:
                flagged.add(rid)
    return flagged


@contextmanager
def _opened_out(path: Path) -> Iterator[TextIO]:
    """The file to write, or stdout for `-` (left open)."""
    if path == STDIO:
        yield sys.stdout
        sys.stdout.flush()
        return
    with path.open("w", encoding="utf-8", newline="") as out:
        yield out


def cmd_audit(args: argparse.Namespace) -> int:
    counts = dict.fromkeys(AUDIT_FLAGS, 0)
    written = 0
    with opened(Home(args.home)) as replica:
        try:
            with (_opened_out(args.out) as out,
                  progress.bar(args, "auditing", replica.store.totals().records) as bar):
                writer = csv.DictWriter(out, fieldnames=_AUDIT_COLUMNS)
                if args.format == "csv":
                    writer.writeheader()
                for fields, flags in progress.counted(audit_rows(replica), bar):
                    if args.format == "jsonl":
                        out.write(json.dumps({**fields, "flags": flags}, sort_keys=True) + "\n")
                    else:
                        writer.writerow({**fields, "flags": ";".join(flags),
                                         "settled": "yes" if fields["settled"] else "no"})
                    written += 1
                    for f in flags:
                        counts[f] += 1
        except OSError as exc:
            raise LocalError(f"cannot write {args.out}: {exc}") from None
    flagged = ", ".join(f"{n} {f}" for f, n in counts.items() if n) or "none"
    emit(args, {"records": written, "out": shown(args.out), "format": args.format,
                "flags": counts},
         f"wrote {written} records to {shown(args.out)} ({args.format}); flags: {flagged}")
    return 0


# ---------------------------------------------------------------- account metadata

def cmd_meta(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        body = Meta(account=args.account, field=args.field, value=args.value)
        body.validate()
        w = wallet(home, replica)
        with replica.store.transaction():
            applied = w.set_meta(args.field, args.value, account=args.account, now_ms=now_ms())
        account = w.account(args.account)
        data: dict[str, object] = {"record_id": applied.record.hex_id,
                                   "verdict": applied.verdict.value, "account": str(account),
                                   "field": args.field, "value": args.value}
        if applied.reason:
            data["reason"] = applied.reason
        emit(args, data, f"set {args.field} of {account} to {args.value!r} "
                         f"(record {applied.record.hex_id[:16]}, {applied.verdict.value})")
    return 0 if applied.verdict is Verdict.APPLIED else 1
