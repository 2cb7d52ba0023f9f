"""The CLI commands that show what a home holds: `balance`, `history`, `status` and
`verify` (moved out of `commands.py`, whose helpers they use). They open the store
and write nothing to the home (`verify` rebuilds in a temporary folder); each takes
the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..core.ids import Account, device_id
from ..core.ledger import Replica
from ..core.records import Transfer, parse_record
from ..storage.home import Home
from ..storage.verify import verify_replica
from . import progress
from .commands import (
    _when,
    _when_ms,
    amount_json,
    emit,
    fmt,
    node_store,
    now_ms,
    opened,
    printable,
)

__all__ = ["DISPLAY_NAME_FIELD", "cmd_balance", "cmd_history", "cmd_status", "cmd_verify",
           "display_name"]


def _own_account(home: Home, text: str | None) -> Account:
    return Account.parse(text) if text else Account(device=home.public_key())


def cmd_balance(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home) as replica:
        if args.account:
            account = Account.parse(args.account)
            accounts = {account: replica.balance(account)}
        else:
            accounts = replica.balances()
        mine = home.public_key() if home.has_key() else None
        names = {a: n for a in accounts if (n := display_name(replica, a))}
        data: dict[str, object] = {
            "accounts": {str(a): amount_json(replica, v) for a, v in accounts.items()},
            "names": {str(a): n for a, n in names.items()}}
        # Settled vs pending: of the one account asked for, else of this device's own
        # (reading every account's history would make `balance` slow on a big store).
        from .safety import Settlement, settled_split  # safety.py imports this module

        settlement = Settlement(replica.store)
        split = {a: settled_split(replica, a, settlement) for a in accounts
                 if args.account or a.device == mine}
        lines = [f"{'*' if a.device == mine else ' '} {a}  {fmt(replica, v):>20}"
                 + (f"  settled {fmt(replica, split[a][0])}, pending {fmt(replica, split[a][1])}"
                    if a in split else "") + (f"  ({printable(names[a])})" if a in names else "")
                 for a, v in sorted(accounts.items(), key=lambda kv: str(kv[0]))]
        if args.account:
            settled, pending = split[account]
            meta = replica.store.meta(account)
            data.update(settled=amount_json(replica, settled),
                        pending=amount_json(replica, pending), meta=meta)
            lines += [f"  {printable(name)}: {printable(value)}" for name, value in meta.items()]
        else:
            data["settlement"] = {str(a): {"settled": amount_json(replica, st),
                                           "pending": amount_json(replica, pe)}
                                  for a, (st, pe) in split.items()}
        emit(args, data, "\n".join(lines) if lines else "no accounts yet")
    return 0


DISPLAY_NAME_FIELD = "name"


def display_name(replica: Replica, account: Account) -> str | None:
    """The account's display name: its owner's `meta --field name`, if set."""
    return replica.store.meta(account).get(DISPLAY_NAME_FIELD)


def cmd_history(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home) as replica:
        account = _own_account(home, args.account)
        from .safety import Settlement  # safety.py imports this module

        settlement = Settlement(replica.store)
        rows = []
        settled = 0
        for e in replica.store.history(account):
            raw = replica.store.raw(e.id)
            assert raw is not None
            body = parse_record(raw).record.body
            other = _counterparty(account, e.author, e.delta, body)
            done = settlement.settled(e)
            settled += e.delta if done else 0
            memo = body.memo if isinstance(body, Transfer) else None
            rows.append({"record_id": e.id.hex(), "kind": e.kind.label, "time": _when(e.hlc),
                         "delta": e.delta, "display": fmt(replica, e.delta),
                         "currency": replica.network.currency,
                         "counterparty": ("" if other is None else device_id(other.device)
                                          if e.delta > 0 else str(other)),
                         "counterparty_name": other and display_name(replica, other),
                         "memo": memo, "settled": done})
        text = "\n".join(f"{r['time']}  {r['kind']:<8} {r['display']:>18}  "
                         f"{'settled' if r['settled'] else 'pending'}  {r['counterparty']}"
                         + (f" ({printable(str(r['counterparty_name']))})"
                            if r["counterparty_name"] else "")
                         + (f"  memo: {printable(str(r['memo']))}" if r["memo"] else "")
                         for r in rows) or f"no movements on {account}"
        own = display_name(replica, account)
        balance = replica.balance(account)
        emit(args, {"account": str(account), "name": own, "movements": rows,
                    "balance": amount_json(replica, balance),
                    "settled": amount_json(replica, settled),
                    "pending": amount_json(replica, balance - settled)},
             f"{account}{f' ({printable(own)})' if own else ''}\n{text}\nsettled "
             f"{fmt(replica, settled)}, pending {fmt(replica, balance - settled)}"
             f"\nbalance {fmt(replica, balance)}")
    return 0


def _counterparty(account: Account, author: bytes, delta: int, body: object) -> Account | None:
    """The other side of a movement: the payer of a credit (the authority's main
    account for an issue), the payee of a debit; None for a redeem."""
    if delta > 0 and isinstance(body, Transfer):
        return Account(device=author, name=body.from_)
    if delta > 0:
        return Account(device=author)
    return body.to if isinstance(body, Transfer) else None


def cmd_status(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with opened(home) as replica:
        t = replica.store.totals()
        dev = device_id(home.public_key()) if home.has_key() else None
        evid = [{"author": device_id(a), "seq": s, "records": [x.hex(), y.hex()]}
                for a, s, x, y in replica.store.equivocations()]
        peers: list[dict[str, object]] = [{"device_id": device_id(d), "address": a, "role": r,
                  "last_contact": _when_ms(ms), "state": st,
                  "lag_records": None if synced is None else max(0, t.records - synced)}
                 for d, a, r, ms, synced, st in node_store(replica).peers()]
        data = {"device_id": dev, "network_id": replica.network_id.hex(),
                "network": replica.network.name, "currency": replica.network.currency,
                "records": t.records, "authors": t.authors,
                "state_hash": replica.state_hash().hex(),
                "issued": amount_json(replica, t.issued),
                "redeemed": amount_json(replica, t.redeemed), "equivocations": evid,
                "peers": peers}
        from . import live  # prometheus_client's parser: only for `status`

        running = live.figures(home.path)
        data["live"] = running
        text = "\n".join([
            f"device       {dev}", f"network      {replica.network.name} "
            f"({replica.network_id.hex()[:16]}, {replica.network.currency})",
            f"records      {t.records} from {t.authors} authors",
            f"state hash   {replica.state_hash().hex()}",
            f"issued       {fmt(replica, t.issued)}", f"redeemed     {fmt(replica, t.redeemed)}",
            f"equivocations {len(evid)}",
            *(f"peer         {str(p['device_id'])[:16]} {p['role']!s:<9} {p['state']!s:<9} "
              f"last contact {p['last_contact']}  lag {p['lag_records']} records  "
              f"{p['address']}" for p in peers),
            *live.lines(running)])
        emit(args, data, text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    home = Home(args.home)
    with (opened(home) as replica, tempfile.TemporaryDirectory() as tmp,
          progress.bar(args, "verifying", replica.store.totals().records) as shown):
        problems, checked = verify_replica(replica, Path(tmp) / "rebuild.sqlite3",
                                           now_ms=now_ms(), replayed=shown.update)
    emit(args, {"records": checked, "ok": not problems, "problems": problems},
         "\n".join([*problems, f"{checked} records re-verified: "
                    f"{'OK' if not problems else f'{len(problems)} problem(s)'}"]))
    return 0 if not problems else 1
