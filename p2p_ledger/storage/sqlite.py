"""The durable store: one SQLite file in WAL mode with synchronous=FULL.

A record is acknowledged only after the transaction that wrote it commits; with
synchronous=FULL the WAL is fsynced at every commit, so kill -9 or a power cut loses
nothing acknowledged and leaves a database SQLite recovers on the next open.

Opening does no work proportional to the store's size (but once, to migrate a store
of the previous schema: `sqlite_schema.py`): the running totals live in a one-row
table, balances in their own table, and every lookup the ledger rules make goes
through a primary key or an index. Signatures are verified once, on arrival;
`p2p-ledger verify` re-checks them all on request.

Damage: every statement goes through `connection.Connection`, which turns SQLite's
errors into ours, so no `sqlite3` exception leaves this module: a malformed page or a file that is
not a database is `StoreDamaged`, any other failure (a full disk, a lock held too long)
`StoreError`. Either aborts the transaction under way, which is then rolled back, so a
damaged store is never signed into. `quick_check()` (the structure of every page) is
what signing commands run at open, and `integrity_problems()` (that plus every index
against its table) what `verify` runs: specs/node.md section 8 gives their cost.
A row that SQLite reads back but that does not decode is damage too. SQLite keeps no
checksum of the values themselves: a changed byte inside a value passes both checks
and only `verify`'s replay of the records finds it.

How a transaction writes its rows (in bulk, every `_FLUSH_EVERY` records) and the
schema are in `sqlite_schema.py`; the views for people (balances, history, metadata)
in `sqlite_views.py`; the record and admit row codecs, which the PostgreSQL store
shares, in `rows.py`.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ..core.ids import Account
from ..core.store import (
    AdmitInfo,
    Credit,
    Effects,
    HistoryEntry,
    PeerRow,
    StoredRecord,
    Tip,
    Totals,
)
from ..errors import StoreDamaged, StoreError
from . import sqlite_views as views
from .connection import damaged
from .rows import ROW_COLS, admit_row, record_row
from .sqlite_schema import (  # noqa: F401 (_NO_TRANSACTION, _SCHEMA: re-exported)
    _NO_TRANSACTION,
    _SCHEMA,
    DERIVED_TABLES,
    SCHEMA_VERSION,
    _Batch,
    _check,
    _connect,
    _Open,
    _write_batch,
)

__all__ = ["DERIVED_TABLES", "SCHEMA_VERSION", "SqliteStore"]


_CACHE_ROWS = 4096
# SQLite's page cache in a bulk transaction, in KiB (default: 2,000). Measured at
# 100,000 records (issue 15): SQLite's share of an ingest x0.70 with 32 MiB.
_BULK_CACHE_KIB = 32 << 10
_FLUSH_EVERY = 2048  # records per bulk write inside a transaction


class SqliteStore:
    """`LedgerStore` on SQLite. Use `transaction()` around every batch of `apply`."""

    def __init__(self, path: str | Path, network_id: bytes) -> None:
        self.path = str(path)
        self._db, self._cache_size = _connect(self.path, network_id)
        self._depth = 0
        self._cache: OrderedDict[bytes, StoredRecord] = OrderedDict()
        self._admits: dict[bytes, AdmitInfo] = {}
        self._open = _Open()
        self._batch = _Batch()
        self._forked: set[bytes] = set()
        self._revoked: dict[bytes, list[tuple[int, bytes]]] = {}

    def close(self) -> None:
        self._db.close()

    def cache_kib(self) -> int:
        """SQLite's page cache limit on this connection now, in KiB."""
        size: int = self._db.execute("PRAGMA cache_size").fetchone()[0]
        page: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        return -size if size < 0 else size * page // 1024

    # ------------------------------------------------------------ damage

    def quick_check(self) -> None:
        """Raise `StoreDamaged` unless SQLite's `PRAGMA quick_check` passes: every page
        of every table and index is well formed and every row decodes (not: that each
        index matches its table). Linear in the file's size (specs/node.md)."""
        found = _check(self._db, "quick_check(10)")
        if found:
            raise StoreDamaged(damaged(self.path, f"SQLite's quick_check: {found[0]}"))

    def integrity_problems(self) -> list[str]:
        """What SQLite's full `PRAGMA integrity_check` finds (at most 100 lines), or
        nothing: `quick_check` plus every index entry against its table row."""
        return _check(self._db, "integrity_check(100)")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one committed state of the store, whatever other
        processes commit meanwhile: a read transaction, which in WAL mode keeps its
        snapshot until it ends (and keeps the WAL from being checkpointed past it)."""
        if self._depth:
            raise StoreError("a snapshot cannot be taken inside a write transaction")
        self._db.execute("BEGIN")
        try:
            # BEGIN is deferred: the snapshot is fixed by the first read, so read now.
            self._db.execute("SELECT records FROM totals").fetchone()
            yield
        finally:
            if self._db.in_transaction:  # nothing was written: this just ends the snapshot
                self._db.execute("ROLLBACK")

    @contextlib.contextmanager
    def transaction(self, *, bulk: bool = False) -> Iterator[None]:
        """All-or-nothing; nested calls join the outermost transaction.

        `bulk` (an import, a sync frame): SQLite's page cache is `_BULK_CACHE_KIB` for
        this transaction and back to its size after the commit or rollback, so the
        indexes being written spill fewer pages; a store that only reads (`balance`,
        `status`) keeps SQLite's small default and its small RSS."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if not bulk:
            yield from self._transaction()
            return
        self._db.execute(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
        try:
            yield from self._transaction()
        finally:
            self._db.execute(f"PRAGMA cache_size={self._cache_size}")

    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        # Under the write lock nobody else appends, so positions can be handed out here.
        first = self._stored_max_order() + 1
        self._open, self._batch = _Open(first_order=first, next_order=first), _Batch()
        self._forked = {a for (a,) in self._db.execute(
            "SELECT DISTINCT author FROM equivocations")}
        self._revoked = {}
        for rid, dev, after in self._db.execute("SELECT record, device, after_seq "
                                                "FROM revocations"):
            self._revoked.setdefault(dev, []).append((after, rid))
        committed = False
        try:
            yield
            self._flush()
            self._db.execute("COMMIT")
            committed = True
        finally:
            # Whatever ended the block (an error, a cancellation, a kill signal turned
            # into an exception), an uncommitted transaction is rolled back whole.
            self._depth = 0
            self._open, self._batch = _Open(), _Batch()
            if not committed:
                self._cache.clear()  # it may hold rows that are being rolled back
                self._admits.clear()
                if self._db.in_transaction:  # SQLite may have rolled back already (an I/O
                    self._db.execute("ROLLBACK")  # error): a second ROLLBACK would fail

    def _one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
        return row

    # ------------------------------------------------------------ lookups

    def lock_author(self, author: bytes) -> bool:
        return False  # BEGIN IMMEDIATE: a transaction is the only writer of the file

    def has(self, rid: bytes) -> bool:
        return rid in self._cache or rid in self._open.raws or self._one(
            "SELECT 1 FROM records WHERE id=?", rid) is not None

    def get(self, rid: bytes) -> StoredRecord | None:
        cached = self._cache.get(rid)
        if cached is not None:
            return cached
        t = self._one(f"SELECT {ROW_COLS} FROM records WHERE id=?", rid)
        if t is None:
            return None
        row = record_row(t, self.path)
        self._remember(row)
        return row

    def _remember(self, row: StoredRecord) -> None:
        """Keep recent rows: the next record of a chain reads its prev straight back.
        Rows never change once stored, so the cache is only ever cleared on rollback."""
        if len(self._cache) >= _CACHE_ROWS:
            self._cache.popitem(last=False)  # O(1), unlike deleting a plain dict's first key
        self._cache[row.id] = row

    def raw(self, rid: bytes) -> bytes | None:
        if rid in self._open.raws:
            return self._open.raws[rid]
        t = self._one("SELECT raw FROM records WHERE id=?", rid)
        return None if t is None else t[0]  # type: ignore[return-value]

    def admit(self, rid: bytes) -> AdmitInfo | None:
        if rid in self._open.admits:
            return self._open.admits[rid]
        known = self._admits.get(rid)
        if known is not None:
            return known
        t = self._one("SELECT * FROM admits WHERE id=?", rid)
        if t is None:
            return None
        info = admit_row(t)
        if len(self._admits) < _CACHE_ROWS:  # admits never change once stored
            self._admits[rid] = info
        return info

    def admits_for(self, device: bytes) -> list[AdmitInfo]:
        self._flush()
        return [admit_row(t) for t in self._db.execute(
            "SELECT a.* FROM admits a JOIN records r ON r.id = a.id WHERE a.device=? "
            "ORDER BY r.ord", (device,))]

    def credit(self, rid: bytes) -> Credit | None:
        txn = self._open
        mine = txn.credits.get(rid)
        if mine is not None:
            if rid not in txn.claimed:
                return mine
            return Credit(id=rid, account=mine.account, amount=mine.amount, claimed=True)
        t = self._one("SELECT device, name, amount, claimed FROM credits WHERE id=?", rid)
        if t is None:
            return None
        if self._depth:
            txn.stored_claimed[rid] = bool(t[3])  # for `_claim`, which comes next
        return Credit(id=rid, account=Account(device=t[0], name=t[1]),  # type: ignore[arg-type]
                      amount=t[2],  # type: ignore[arg-type]
                      claimed=bool(t[3]) or rid in txn.claimed)

    def claims_of(self, credit: bytes, author: bytes) -> list[tuple[bytes, int]]:
        return list(self._db.execute(
            "SELECT claimer, claimer_seq FROM credits WHERE id=? AND device=? "
            "AND claimer IS NOT NULL UNION ALL "
            "SELECT claimer, seq FROM claims WHERE credit=? AND author=?",
            (credit, author, credit, author))
        ) + self._batch.claims.get((credit, author), [])

    def idem(self, author: bytes, key: str) -> list[tuple[bytes, int]]:
        txn = self._open
        known = txn.idem_stored.get((author, key))
        if known is None and self._new_author(author):
            known = []
        if known is None:
            known = list(self._db.execute(
                "SELECT id, seq FROM records WHERE author=? AND idem_key=? AND ord<? "
                "ORDER BY id", (author, key, txn.first_order)))
        return known + txn.idem.get((author, key), [])

    def prefetch_idem(self, pairs: list[tuple[bytes, str]]) -> None:
        """Look up many (author, idempotency key) pairs in one query, for `idem` to
        answer from memory for the rest of the transaction."""
        txn = self._open
        if not self._depth:
            return  # outside a transaction nothing would keep the answers
        todo = [p for p in set(pairs)
                if p not in txn.idem_stored and not self._new_author(p[0])]
        for i in range(0, len(todo), 400):
            chunk = todo[i:i + 400]
            for p in chunk:
                txn.idem_stored[p] = []
            values = ",".join("(?,?)" for _ in chunk)
            # A join, not `(author, idem_key) IN (...)`, which SQLite answers by a scan.
            for author, key, rid, seq in self._db.execute(
                    f"WITH wanted(author, key) AS (VALUES {values}) "
                    f"SELECT r.author, r.idem_key, r.id, r.seq FROM wanted JOIN records r "
                    f"ON r.author = wanted.author AND r.idem_key = wanted.key WHERE r.ord<?",
                    [*(x for p in chunk for x in p), txn.first_order]):
                txn.idem_stored[(author, key)].append((rid, seq))
            for p in chunk:
                txn.idem_stored[p].sort()  # by record id, as `idem` lists them

    def _new_author(self, author: bytes) -> bool:
        """Whether SQLite held no record of `author` before the open transaction: its
        first record was stored in the transaction and it has no fork (another first
        record stored before would have made one)."""
        return (author, 1) in self._open.at and not self.forked(author)

    def ids_at(self, author: bytes, seq: int) -> list[bytes]:
        txn = self._open
        pending = txn.at.get((author, seq), [])
        if (author, seq - 1) in txn.at and not self.forked(author):
            # The record before this seq was stored in this transaction and the author
            # has no fork: so SQLite held nothing of the author at seq-1, hence nothing
            # at seq either (a record is stored only after its prev). No query needed.
            return list(pending)
        return [t[0] for t in self._db.execute(
            "SELECT id FROM records WHERE author=? AND seq=? AND ord<? ORDER BY ord",
            (author, seq, txn.first_order))] + pending

    def forked(self, author: bytes) -> bool:
        if self._depth:  # in a transaction: the set read at its start, plus its own
            return author in self._forked or author in self._open.forked
        return self._one("SELECT 1 FROM equivocations WHERE author=?", author) is not None

    def cover(self, checkpoint: bytes, author: bytes) -> tuple[int, bytes] | None:
        pending = self._open.covers.get((checkpoint, author))
        if pending is not None:
            return pending
        t = self._one("SELECT seq, id FROM covers WHERE checkpoint=? AND author=?",
                      checkpoint, author)
        return None if t is None else (t[0], t[1])  # type: ignore[return-value]

    def covered_seq(self, author: bytes) -> int:
        self._flush()
        t = self._one("SELECT max(seq) FROM covers WHERE author=?", author)
        return int(t[0]) if t is not None and t[0] is not None else 0  # type: ignore[call-overload]

    def latest_cover(self, author: bytes) -> tuple[bytes, int, bytes] | None:
        self._flush()
        t = self._one("SELECT checkpoint, seq, id FROM covers WHERE author=? "
                      "ORDER BY seq DESC, checkpoint DESC LIMIT 1", author)
        return None if t is None else (t[0], t[1], t[2])  # type: ignore[return-value]

    def revocations(self, device: bytes) -> list[tuple[int, bytes]]:
        if self._depth:  # in a transaction: the table read at its start, plus its own
            if not self._revoked and not self._open.revocations:
                return []  # the common case: nobody revoked at all
            return sorted(self._revoked.get(device, []) + [
                (after, rid) for rid, dev, after in self._open.revocations if dev == device])
        return list(self._db.execute(
            "SELECT after_seq, record FROM revocations WHERE device=? ORDER BY after_seq, record",
            (device,)))

    def held_among(self, rids: list[bytes]) -> set[bytes]:
        """Which of these ids are stored (one query for a whole batch)."""
        txn = self._open
        held = {r for r in rids if r in self._cache or r in txn.raws}
        rest = [r for r in rids if r not in held]
        for i in range(0, len(rest), 500):
            chunk = rest[i:i + 500]
            held.update(t[0] for t in self._db.execute(
                f"SELECT id FROM records WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return held

    def tips(self) -> list[Tip]:
        self._flush()
        return [Tip(author=a, seq=s, id=i) for a, s, i in self._db.execute(
            "SELECT author, seq, id FROM tips ORDER BY author, seq, id")]

    def tips_of(self, author: bytes) -> list[Tip]:
        self._flush()
        return [Tip(author=author, seq=s, id=i) for s, i in self._db.execute(
            "SELECT seq, id FROM tips WHERE author=? ORDER BY seq, id", (author,))]

    def records_of(self, author: bytes, after_seq: int) -> list[tuple[int, StoredRecord]]:
        self._flush()
        return [(t[0], record_row(t[1:], self.path)) for t in self._db.execute(
            f"SELECT ord, {ROW_COLS} FROM records WHERE author=? AND seq>? ORDER BY seq",
            (author, after_seq))]

    def raws_in_order(self, rids: list[bytes]) -> list[bytes]:
        self._flush()
        found: list[tuple[int, bytes]] = []
        for i in range(0, len(rids), 500):
            chunk = rids[i:i + 500]
            found.extend(self._db.execute(
                f"SELECT ord, raw FROM records WHERE id IN ({','.join('?' * len(chunk))})",
                chunk))
        found.sort()
        return [raw for _, raw in found]

    def all_ids_in_order(self) -> Iterator[bytes]:
        self._flush()
        for (rid,) in self._db.execute("SELECT id FROM records ORDER BY ord"):
            yield rid

    def max_order(self) -> int:
        """The position of the newest stored record (0 when empty)."""
        self._flush()
        return self._stored_max_order()

    def _stored_max_order(self) -> int:
        t = self._one("SELECT max(ord) FROM records")
        return int(t[0]) if t is not None and t[0] is not None else 0  # type: ignore[call-overload]

    def records_after(self, order: int, limit: int = 10_000) -> list[tuple[int, bytes, bytes]]:
        """(order, id, raw) of records stored after position `order`, oldest first."""
        self._flush()
        return list(self._db.execute(
            "SELECT ord, id, raw FROM records WHERE ord > ? ORDER BY ord LIMIT ?",
            (order, limit)))

    def authors_after(self, order: int) -> set[bytes]:
        """The authors of the records stored after position `order`."""
        self._flush()
        return {a for (a,) in self._db.execute(
            "SELECT DISTINCT author FROM records WHERE ord > ?", (order,))}

    def note_peer(self, device: bytes, *, address: str, role: str, now_ms: int, state: str,
                  synced: bool) -> None:
        """Remember a peer's last contact; `synced` marks that it holds what we held."""
        records = self.totals().records if synced else None
        self._db.execute(
            "INSERT INTO peers VALUES (?,?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET "
            "address=excluded.address, role=excluded.role, "
            "last_contact_ms=excluded.last_contact_ms, state=excluded.state, "
            "synced_records=coalesce(excluded.synced_records, peers.synced_records)",
            (device, address, role, now_ms, records, state))

    def peers(self) -> list[PeerRow]:
        """(device, address, role, last_contact_ms, records held at last sync, state)."""
        return list(self._db.execute(
            "SELECT device, address, role, last_contact_ms, synced_records, state FROM peers "
            "ORDER BY last_contact_ms DESC"))

    def synced_records(self, device: bytes) -> int | None:
        """Records held here when we were last in sync with this peer (None: never)."""
        t = self._one("SELECT synced_records FROM peers WHERE device=?", device)
        return None if t is None else t[0]  # type: ignore[return-value]

    def table_rows(self, table: str) -> list[tuple[object, ...]]:
        """Every row of one derived table, sorted (for `verify`)."""
        if table not in DERIVED_TABLES:
            raise ValueError(f"not a derived table: {table}")
        self._flush()
        return sorted(self._db.execute(f"SELECT * FROM {table}"), key=repr)

    def iter_raw_in_order(self) -> Iterator[tuple[bytes, bytes]]:
        self._flush()
        yield from self._db.execute("SELECT id, raw FROM records ORDER BY ord")

    # ------------------------------------------------------------ writing

    def apply(self, fx: Effects) -> None:
        if not self._depth:
            with self.transaction():
                self.apply(fx)
            return
        row, txn, batch = fx.row, self._open, self._batch
        rid, author, seq = row.id, row.author, row.seq
        order = txn.next_order
        txn.next_order += 1
        moves = fx.movements
        own: tuple[str, int] | tuple[None, None] = (None, None)
        if moves and moves[0].account.device == author:  # kept in the record's row
            own = (moves[0].account.name, moves[0].delta)
            k = (author, own[0])
            seqs = batch.own_seqs.get(k)
            if seqs is None:
                batch.own_seqs[k] = (seq, seq)
            elif seq > seqs[1]:  # the common case: a chain grows
                batch.own_seqs[k] = (seqs[0], seq)
            elif seq < seqs[0]:
                batch.own_seqs[k] = (seq, seqs[1])
        batch.records.append((order, rid, author, seq, row.prev, row.kind.value, row.hlc,
                              row.verdict.value, row.reason, row.chain.encode(), fx.raw,
                              fx.idem_key, *own))
        txn.raws[rid] = fx.raw
        at = txn.at.get((author, seq))
        if at is None:
            txn.at[(author, seq)] = [rid]
        else:
            at.append(rid)
        self._remember(row)
        if row.prev is not None:
            batch.drop_tip(author, row.prev)
        batch.tips_added[(author, rid)] = seq
        if fx.admit is not None:
            a = txn.admits[rid] = fx.admit
            batch.admits.append((rid, a.device, a.role, a.tier, a.offline_limit, a.expires))
        if fx.credit is not None:
            c = txn.credits[rid] = fx.credit
            batch.credits[rid] = [rid, c.account.device, c.account.name, c.amount, order,
                                  int(c.claimed), None, None]
            if c.claimed:
                txn.claimed.add(rid)
        for credit in fx.claims:
            self._claim(credit, rid, author, seq)
        if fx.idem_key is not None:
            txn.idem.setdefault((author, fx.idem_key), []).append((rid, seq))
        for idx, m in enumerate(moves):
            k = (m.account.device, m.account.name)
            batch.balances[k] = batch.balances.get(k, 0) + m.delta
            if idx or own[0] is None:
                batch.movements.append((*k, order, idx, m.delta))
        for other in fx.equivocates_with:
            first, second = sorted((other, rid))
            batch.equivocations.append((author, seq, first, second))
            txn.forked.add(author)
        for covered_author, covered_seq, covered in fx.covers:
            txn.covers[(rid, covered_author)] = (covered_seq, covered)
            batch.covers.append((rid, covered_author, covered_seq, covered))
        if fx.revoke is not None:
            txn.revocations.append((rid, fx.revoke[0], fx.revoke[1]))
            batch.revocations.append((rid, fx.revoke[0], fx.revoke[1]))
        if fx.meta is not None:
            account, name, value = fx.meta
            batch.metadata.append((account.device, account.name, name, value, row.hlc, author,
                                   rid))
        batch.issued += fx.issued
        batch.redeemed += fx.redeemed
        if row.hlc > txn.max_hlc:
            txn.max_hlc = row.hlc
        if row.hlc > batch.max_hlc:
            batch.max_hlc = row.hlc
        if len(batch.records) >= _FLUSH_EVERY:
            self._flush()

    def _claim(self, credit: bytes, claimer: bytes, author: bytes, seq: int) -> None:
        """Record that `claimer` (of `author`, the payee) claims `credit`: in the credit's
        row if it is the first claim, else as a further claim."""
        txn, batch = self._open, self._batch
        batch.claims.setdefault((credit, author), []).append((claimer, seq))
        if credit in txn.claimed:
            first = False
        elif credit in txn.credits:
            first = True  # made in this transaction and not claimed yet
        else:
            known = txn.stored_claimed.get(credit)
            if known is None:
                t = self._one("SELECT claimed FROM credits WHERE id=?", credit)
                known = t is not None and bool(t[0])
            first = not known
        if not first:
            batch.more_claims.append((credit, author, claimer, seq))
            return
        txn.claimed.add(credit)
        unwritten = batch.credits.get(credit)
        if unwritten is not None:
            unwritten[5:] = [1, claimer, seq]
        else:
            batch.first_claims.append((claimer, seq, credit))

    def _flush(self) -> None:
        """Write the batch in bulk: every `_FLUSH_EVERY` records, before any read that
        does not look at the open transaction's own records, and before every commit."""
        batch, db = self._batch, self._db
        if not batch.records:
            return
        self._batch = _Batch()
        _write_batch(db, batch)

    # ------------------------------------------------------------ views (sqlite_views.py)

    def balance(self, account: Account) -> int:
        self._flush()
        return views.balance(self._db, account)

    def balances(self) -> dict[Account, int]:
        self._flush()
        return views.balances(self._db)

    def totals(self) -> Totals:
        self._flush()
        return views.totals(self._db)

    def max_hlc(self) -> int:
        t = self._one("SELECT max_hlc FROM totals")
        assert t is not None
        stored = t[0]
        assert isinstance(stored, int)
        return max(stored, self._open.max_hlc)

    def unclaimed_credits(self, device: bytes) -> list[Credit]:
        self._flush()
        return views.unclaimed_credits(self._db, device)

    def equivocations(self) -> list[tuple[bytes, int, bytes, bytes]]:
        self._flush()
        return views.equivocations(self._db)

    def history(self, account: Account) -> list[HistoryEntry]:
        self._flush()
        return views.history(self._db, account)

    def meta(self, account: Account) -> dict[str, str]:
        self._flush()
        return views.meta(self._db, account)
