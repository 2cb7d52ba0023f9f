"""The PostgreSQL store's views for people: balances, totals, history, metadata,
unclaimed credits and equivocations - what `balance`, `history` and `status` show, as
`sqlite_views.py` is for SQLite (the SQL differs: the totals are summed over the
writers' slots, and no movement is kept in a record's row here).

Each runs its statements through the store's `q` (`PostgresStore._q`: errors become
`StoreError`, a lost connection `StoreUnavailable`). `PostgresStore` writes the open
transaction's shared rows first where a view reads them. Moved out of `postgres.py`
unchanged; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core.ids import Account
from ..core.records import Kind
from ..core.store import Credit, HistoryEntry, Totals

__all__ = ["Query", "balance", "balances", "equivocations", "history", "meta", "totals",
           "unclaimed_credits"]

Query = Callable[[str, Sequence[Any] | None], list[tuple[Any, ...]]]


def _one(q: Query, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
    rows = q(sql, params)
    return rows[0] if rows else None


def balance(q: Query, account: Account) -> int:
    t = _one(q, "SELECT minor FROM balances WHERE device=%s AND name=%s",
             (account.device, account.name))
    return 0 if t is None else int(t[0])


def balances(q: Query) -> dict[Account, int]:
    return {Account(device=bytes(d), name=n): v for d, n, v in q(
        "SELECT device, name, minor FROM balances ORDER BY device, name", None)}


def totals(q: Query) -> Totals:
    t = _one(q, "SELECT coalesce(sum(records), 0), coalesce(sum(issued), 0), "
             "coalesce(sum(redeemed), 0), coalesce(max(max_hlc), 0) FROM totals")
    authors = _one(q, "SELECT count(DISTINCT author) FROM tips")
    assert t is not None
    assert authors is not None
    return Totals(records=int(t[0]), issued=int(t[1]), redeemed=int(t[2]),
                  max_hlc=int(t[3]), authors=int(authors[0]))


def unclaimed_credits(q: Query, device: bytes) -> list[Credit]:
    return [Credit(id=bytes(i), account=Account(device=device, name=n), amount=a)
            for i, n, a in q(
                "SELECT id, name, amount FROM credits WHERE device=%s AND NOT claimed "
                "ORDER BY ord", (device,))]


def equivocations(q: Query) -> list[tuple[bytes, int, bytes, bytes]]:
    return [(bytes(a), s, bytes(f), bytes(x)) for a, s, f, x in q(
        "SELECT author, seq, first, second FROM equivocations "
        "ORDER BY author, seq, first, second", None)]


def history(q: Query, account: Account) -> list[HistoryEntry]:
    return [HistoryEntry(id=bytes(i), kind=Kind(k), hlc=h, author=bytes(a), seq=s, delta=d)
            for i, k, h, a, s, d in q(
                "SELECT r.id, r.kind, r.hlc, r.author, r.seq, m.delta FROM movements m "
                "JOIN records r ON r.ord = m.ord WHERE m.device=%s AND m.name=%s "
                "ORDER BY m.ord, m.idx", (account.device, account.name))]


def meta(q: Query, account: Account) -> dict[str, str]:
    return dict(q("SELECT field, value FROM metadata WHERE device=%s AND name=%s "
                  "ORDER BY field", (account.device, account.name)))
