"""The SQLite store's views for people: balances, totals, history, metadata, unclaimed
credits and equivocations - what `balance`, `history` and `status` show.

They read rows only through SQL, never the open transaction's state in memory
(`_Open`) that the ledger rules' lookups answer from: `SqliteStore` writes its batch
before calling one (`_flush`), so a view sees what has been applied. Moved out of
`sqlite.py` unchanged; nothing here writes.
"""

from __future__ import annotations

import operator

from ..core.ids import Account
from ..core.records import Kind
from ..core.store import Credit, HistoryEntry, Totals
from .connection import Connection

__all__ = ["balance", "balances", "equivocations", "history", "meta", "totals",
           "unclaimed_credits"]

_BY_ORDER = operator.itemgetter(6)  # a history row's position in the store
_KINDS = {k.value: k for k in Kind}


def _one(db: Connection, sql: str, *args: object) -> tuple[object, ...] | None:
    row: tuple[object, ...] | None = db.execute(sql, args).fetchone()
    return row


def balance(db: Connection, account: Account) -> int:
    t = _one(db, "SELECT minor FROM balances WHERE device=? AND name=?",
             account.device, account.name)
    return 0 if t is None else t[0]  # type: ignore[return-value]


def balances(db: Connection) -> dict[Account, int]:
    return {Account(device=d, name=n): v for d, n, v in db.execute(
        "SELECT device, name, minor FROM balances ORDER BY device, name")}


def totals(db: Connection) -> Totals:
    t = _one(db, "SELECT records, issued, redeemed, max_hlc FROM totals")
    authors = _one(db, "SELECT COUNT(DISTINCT author) FROM tips")
    assert t is not None
    assert authors is not None
    return Totals(records=t[0], issued=t[1], redeemed=t[2], max_hlc=t[3],  # type: ignore[arg-type]
                  authors=authors[0])  # type: ignore[arg-type]


def unclaimed_credits(db: Connection, device: bytes) -> list[Credit]:
    return [Credit(id=i, account=Account(device=device, name=n), amount=a)
            for i, n, a in db.execute(
                "SELECT id, name, amount FROM credits WHERE device=? AND claimed=0 "
                "ORDER BY ord", (device,))]


def equivocations(db: Connection) -> list[tuple[bytes, int, bytes, bytes]]:
    return list(db.execute(
        "SELECT author, seq, first, second FROM equivocations "
        "ORDER BY author, seq, first, second"))


def history(db: Connection, account: Account) -> list[HistoryEntry]:
    # A movement is a `movements` row, or the first movement of a record of the
    # account's own device, kept in that record's row between the seqs that the
    # account's balances row keeps (sqlite_schema.py). No balances row: no movement.
    dev, name = account.device, account.name
    seqs = _one(db, "SELECT own_first, own_last FROM balances WHERE device=? AND "
                "name=?", dev, name)
    if seqs is None:
        return []
    rows: list[tuple[bytes, int, int, bytes, int, int, int]] = []
    if seqs[0] is not None:
        rows.extend(db.execute(
            "SELECT id, kind, hlc, author, seq, own_delta, ord FROM records "
            "WHERE author=? AND seq BETWEEN ? AND ? AND own_account=?",
            (dev, seqs[0], seqs[1], name)))
    mine = len(rows)
    rows.extend(db.execute(
        "SELECT r.id, r.kind, r.hlc, r.author, r.seq, m.delta, m.ord "
        "FROM movements m JOIN records r ON r.ord = m.ord "
        "WHERE m.device=? AND m.name=? ORDER BY m.ord, m.idx", (dev, name)))
    if 0 < mine < len(rows):
        # By position, a stable sort of two (nearly) sorted runs: about linear, and a
        # record's own movement (its first) stays ahead of its movements rows.
        rows.sort(key=_BY_ORDER)
    kinds = _KINDS  # a dict lookup, not an Enum call per row; unknown: Kind raises
    return [HistoryEntry(id=i, kind=kinds[k] if k in kinds else Kind(k), hlc=h,
                         author=a, seq=s, delta=d)
            for i, k, h, a, s, d, _ in rows]


def meta(db: Connection, account: Account) -> dict[str, str]:
    return dict(db.execute(
        "SELECT field, value FROM metadata WHERE device=? AND name=? ORDER BY field",
        (account.device, account.name)))
