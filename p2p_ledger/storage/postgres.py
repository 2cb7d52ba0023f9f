"""The cloud tier's store: one PostgreSQL database shared by many front-end processes.

Several `serve` processes on one home whose store is a PostgreSQL URL are one logical
node: each has its own connection, and they meet only in the database. What keeps
them correct (specs/cloud.md):

- **Per-author serialization, nothing wider.** Validity depends only on a record's
  causal past, which is stored before it, so two writers can judge records of
  different authors at once. Records of one author are judged one writer at a time:
  `lock_author` takes `pg_advisory_xact_lock` on a hash of the author before the
  replica judges (or the wallet signs) one of its records, and the replica then asks
  `has` again. So a fork's two branches arriving at two front-ends at once are both
  stored and the second one records the equivocation, exactly once; the same record
  arriving twice at once is stored once. A unique key cannot do this: forks must be
  stored.
- **No deadlock.** Locks are taken in increasing key order within a transaction; a
  key below one already held is only *tried*; if another writer holds it, the
  transaction so far is committed (every record in it is complete with its causal
  past, so any prefix is a valid state) and a new one waits for the key holding
  nothing else. Rows that writers of different authors share (a payee's balance,
  metadata, the totals) are written only at commit, in key order, after the last lock.
- **Positions that skip nothing.** A record's position for pushing (`max_order`,
  `records_after`) is the id of the transaction that wrote it; positions up to the
  oldest transaction still running anywhere (`pg_snapshot_xmin`) are final: no
  transaction can commit a record there any more. So a front-end polling for new
  records never skips a row of a transaction that was still in flight when it looked.
  `ord`, from a sequence, orders records causally (a record is inserted only after its
  past was visible).

- **Failover.** The connection (`pg_connection.py`) comes back by itself: a lost one
  raises `StoreUnavailable` (a transaction then was not committed, or, lost during its
  COMMIT, may have been: either way nothing of it was acknowledged, and a re-sent
  record that is held is simply dropped), and the next statement connects again with
  the same URL, which may list several hosts (`target_session_attrs=read-write`).

Calls are synchronous, on the caller's thread (for a node, trio's), like SqliteStore's:
the ledger asks its store many small questions per record, and a thread hop per call
would cost more than the query; a cloud tier scales by running more front-end
processes, each on its own core.

Tables are hash-partitioned by the author (or payee, device) key, and every unique key
contains it, so the schema can be distributed by Citus as it is.

The schema is in `pg_schema.py`, the views for people (balances, history, metadata) in
`pg_views.py`, and the record and admit row codecs, shared with SQLite, in `rows.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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
from ..errors import StoreError
from . import pg_views as views
from .pg_connection import PgConnection
from .pg_listen import CHANNEL, ChangeListener
from .pg_schema import (
    PARTITIONS,
    SCHEMA,
    SCHEMA_VERSION,
    author_lock_key,
    is_postgres_url,
    safe_url,
)
from .rows import ROW_COLS, admit_row, record_row

__all__ = ["PARTITIONS", "SCHEMA_VERSION", "ChangeListener", "PostgresStore", "author_lock_key",
           "is_postgres_url", "safe_url"]

_TOTALS_SLOTS = 16  # writers add to the totals row of their slot: no shared hot row
_CACHE_ROWS = 4096
_INIT_LOCK = 0x7032_706C_6564_6772  # advisory lock key: one process creates the schema


# The position up to which records are final: below the oldest running transaction.
_FINAL = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1)"


class PostgresStore:
    """`NodeStore` on PostgreSQL. Use `transaction()` around every batch of `apply`."""

    def __init__(self, url: str, network_id: bytes) -> None:
        self.url = url
        self._db = PgConnection(url)  # reconnects by itself after a failover
        self.path = self._db.path  # what messages name, as SqliteStore's path
        self._slot = self._db.backend_pid % _TOTALS_SLOTS
        self._depth = 0
        self._held: set[int] = set()
        self._top_lock: int | None = None
        self._cache: OrderedDict[bytes, StoredRecord] = OrderedDict()
        self._admits: dict[bytes, AdmitInfo] = {}
        # Under the author locks of the open transaction (`ids_at`): each author's
        # highest seq when first asked, and the ids this transaction stored per seq.
        self._top_seq: dict[bytes, int] = {}
        self._new_at: dict[tuple[bytes, int], list[bytes]] = {}
        # Credits this transaction created: nobody else sees them before it commits, so
        # only it can claim them (`credit`).
        self._new_credits: dict[bytes, Credit] = {}
        self._balances: dict[tuple[bytes, str], int] = {}
        self._metadata: dict[tuple[bytes, str, str], tuple[str, int, bytes, bytes]] = {}
        self._totals = [0, 0, 0, 0]  # records, issued, redeemed, max_hlc of the open txn
        try:
            self._init(network_id)
        except StoreError:
            self._db.close()
            raise

    def _init(self, network_id: bytes) -> None:
        with self.transaction():
            self._w("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            have = self._one("SELECT to_regclass('info')")
            if have is None or have[0] is None:
                for statement in SCHEMA.split(";\n"):  # a pipeline takes one at a time
                    if statement.strip():
                        self._w(statement)
                self._w("INSERT INTO info VALUES ('schema', %s), ('network', %s)",
                        (str(SCHEMA_VERSION).encode(), network_id))
                return
            info = {k: bytes(v) for k, v in self._q("SELECT key, value FROM info")}
        if info.get("schema") != str(SCHEMA_VERSION).encode():
            raise StoreError(f"store schema {info.get('schema')!r} is not {SCHEMA_VERSION}")
        if info.get("network") != network_id:
            raise StoreError("this store belongs to another network")

    def close(self) -> None:
        self._db.close()

    @property
    def reconnects(self) -> int:
        """Connections made after the first: failovers (or restarts) lived through."""
        return self._db.reconnects

    def listen(self) -> ChangeListener:
        """A new connection that hears when any front-end commits records (blocks while
        it connects)."""
        return ChangeListener(self.url)

    # ------------------------------------------------------------ statements

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        """Every failure of the database becomes a StoreError naming the store; a lost
        connection StoreUnavailable (pg_connection.py)."""
        return self._db.errors()

    def _q(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement and wait for its rows (none for a statement that returns
        none; inside a transaction only statements that return rows come here)."""
        if not self._depth:  # on its own: retried once on a new connection if lost
            return self._db.rows(sql, params)
        with self._errors():  # pipelined: the rows come when asked for
            return self._db.execute(sql, params).fetchall()

    def _w(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Send one statement whose result nobody waits for: inside a transaction (a
        pipeline) it is sent at once and its outcome comes with the next read or the
        COMMIT, so writes cost no round trip each. The server runs statements in the
        order sent: a read after it sees it, a lock taken by it is held for the next."""
        if not self._depth:
            self._db.rows(sql, params)
            return
        with self._errors():
            self._db.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self._q(sql, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def transaction(self, *, bulk: bool = False) -> Iterator[None]:
        """All-or-nothing, except that a transaction that must wait for an author lock
        out of key order commits what it has first (see the module's docstring).
        `bulk` is ignored: the server's shared buffers serve every session."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._q("BEGIN")  # outside the pipeline: retried once if the connection was lost
        self._db.in_transaction = True
        committed = False
        try:
            with self._errors(), self._db.pipeline():
                self._depth = 1
                yield
                self._flush_shared()
                self._w("COMMIT")
            committed = True  # the pipeline's end waited for every result, COMMIT's too
        finally:
            self._depth = 0
            self._release()
            if not committed:
                self._cache.clear()  # they may hold rows that are being rolled back
                self._admits.clear()
                self._balances.clear()
                self._metadata.clear()
                self._totals = [0, 0, 0, 0]
                with contextlib.suppress(StoreError):  # a lost connection rolled it back
                    self._q("ROLLBACK")
            self._db.in_transaction = False

    def lock_author(self, author: bytes) -> bool:
        if not self._depth:
            return False  # outside a transaction a lock would end with the statement
        key = author_lock_key(author)
        if key in self._held:
            return False
        if self._top_lock is None or key > self._top_lock:
            # Pipelined: the server waits for the lock before it runs what follows.
            self._w("SELECT pg_advisory_xact_lock(%s)", (key,))
        else:
            got = self._one("SELECT pg_try_advisory_xact_lock(%s)", (key,))
            if not (got and got[0]):
                # Waiting here while holding larger keys could deadlock: commit what is
                # done (complete records only), then wait holding nothing.
                self._flush_shared()
                self._w("COMMIT")
                self._w("BEGIN")
                self._release()
                self._w("SELECT pg_advisory_xact_lock(%s)", (key,))
        self._held.add(key)
        self._top_lock = key if self._top_lock is None else max(self._top_lock, key)
        return True

    def _release(self) -> None:
        """The transaction ended: its author locks, and what they made knowable, are gone."""
        self._held.clear()
        self._top_lock = None
        self._top_seq.clear()
        self._new_at.clear()
        self._new_credits.clear()

    def _flush_shared(self) -> None:
        """Write the rows that writers of different authors share - balances, metadata,
        this writer's totals slot - in key order, so two commits never wait on each
        other's rows in opposite orders."""
        if self._balances:
            rows = sorted((d, n, v) for (d, n), v in self._balances.items())
            self._many("INSERT INTO balances VALUES (%s, %s, %s) ON CONFLICT (device, name) "
                       "DO UPDATE SET minor = balances.minor + excluded.minor", rows)
            self._balances.clear()
        if self._metadata:
            meta = [(d, n, f, v, h, a, r) for (d, n, f), (v, h, a, r)
                    in sorted(self._metadata.items())]
            self._many(
                "INSERT INTO metadata VALUES (%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (device, name, field) DO UPDATE SET value=excluded.value, "
                "hlc=excluded.hlc, author=excluded.author, record=excluded.record "
                "WHERE (excluded.hlc, excluded.author, excluded.record) "
                "> (metadata.hlc, metadata.author, metadata.record)", meta)
            self._metadata.clear()
        if self._totals[0]:
            # Records were stored: the other front-ends' listeners hear it at COMMIT
            # (pg_listen.py); one notice per transaction however often this runs.
            self._w(f"NOTIFY {CHANNEL}")
            records, issued, redeemed, max_hlc = self._totals
            self._w("INSERT INTO totals VALUES (%s, %s, %s, %s, %s) ON CONFLICT (slot) DO "
                    "UPDATE SET records = totals.records + excluded.records, "
                    "issued = totals.issued + excluded.issued, "
                    "redeemed = totals.redeemed + excluded.redeemed, "
                    "max_hlc = greatest(totals.max_hlc, excluded.max_hlc)",
                    (self._slot, records, issued, redeemed, max_hlc))
            self._totals = [0, 0, 0, 0]

    def _many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.many(sql, rows)

    # ------------------------------------------------------------ lookups

    def has(self, rid: bytes) -> bool:
        if rid in self._cache:  # a record, once stored, stays (a rollback clears the cache)
            return True
        return self._one("SELECT 1 FROM records WHERE id=%s", (rid,)) is not None

    def held_among(self, rids: list[bytes]) -> set[bytes]:
        if not rids:
            return set()
        return {bytes(t[0]) for t in self._q("SELECT id FROM records WHERE id = ANY(%s)",
                                             (rids,))}

    def get(self, rid: bytes) -> StoredRecord | None:
        cached = self._cache.get(rid)
        if cached is not None:
            return cached
        t = self._one(f"SELECT {ROW_COLS} FROM records WHERE id=%s", (rid,))
        if t is None:
            return None
        row = record_row(t)
        self._remember(row)
        return row

    def _remember(self, row: StoredRecord) -> None:
        if len(self._cache) >= _CACHE_ROWS:
            self._cache.popitem(last=False)
        self._cache[row.id] = row

    def raw(self, rid: bytes) -> bytes | None:
        t = self._one("SELECT raw FROM records WHERE id=%s", (rid,))
        return None if t is None else bytes(t[0])

    def admit(self, rid: bytes) -> AdmitInfo | None:
        cached = self._admits.get(rid)
        if cached is not None:  # an admit never changes (a rollback clears the cache)
            return cached
        t = self._one("SELECT id, device, role, tier, offline_limit, expires FROM admits "
                      "WHERE id=%s", (rid,))
        if t is None:
            return None
        if len(self._admits) >= _CACHE_ROWS:
            self._admits.clear()
        info = self._admits[rid] = admit_row(t)
        return info

    def admits_for(self, device: bytes) -> list[AdmitInfo]:
        return [admit_row(t) for t in self._q(
            "SELECT id, device, role, tier, offline_limit, expires FROM admits "
            "WHERE device=%s ORDER BY ord", (device,))]

    def credit(self, rid: bytes) -> Credit | None:
        new = self._new_credits.get(rid)
        if new is not None:
            return new
        t = self._one("SELECT device, name, amount, claimed FROM credits WHERE id=%s", (rid,))
        if t is None:
            return None
        return Credit(id=rid, account=Account(device=bytes(t[0]), name=t[1]), amount=t[2],
                      claimed=t[3])

    def claims_of(self, credit: bytes, author: bytes) -> list[tuple[bytes, int]]:
        # Only the claimer's (the payee's) partitions are read.
        return [(bytes(c), s) for c, s in self._q(
            "SELECT claimer, claimer_seq FROM credits WHERE device=%s AND id=%s "
            "AND claimer IS NOT NULL UNION ALL "
            "SELECT claimer, seq FROM claims WHERE author=%s AND credit=%s",
            (author, credit, author, credit))]

    def idem(self, author: bytes, key: str) -> list[tuple[bytes, int]]:
        return [(bytes(i), s) for i, s in self._q(
            "SELECT id, seq FROM records WHERE author=%s AND idem_key=%s ORDER BY ord",
            (author, key))]

    def prefetch_idem(self, pairs: list[tuple[bytes, str]]) -> None:
        return None  # `idem` is one indexed query in the author's partition

    def ids_at(self, author: bytes, seq: int) -> list[bytes]:
        if author_lock_key(author) in self._held:
            # While this transaction holds the author's lock, only it stores the author's
            # records: above the highest seq stored when it first asked, the answer is
            # what it stored itself. One query per author per transaction, not per record.
            top = self._top_seq.get(author)
            if top is None:
                t = self._one("SELECT coalesce(max(seq), 0) FROM records WHERE author=%s",
                              (author,))
                top = self._top_seq[author] = 0 if t is None else int(t[0])
            if seq > top:
                return list(self._new_at.get((author, seq), ()))
        return [bytes(i) for (i,) in self._q(
            "SELECT id FROM records WHERE author=%s AND seq=%s ORDER BY ord", (author, seq))]

    def forked(self, author: bytes) -> bool:
        return self._one("SELECT 1 FROM equivocations WHERE author=%s LIMIT 1",
                         (author,)) is not None

    def cover(self, checkpoint: bytes, author: bytes) -> tuple[int, bytes] | None:
        t = self._one("SELECT seq, id FROM covers WHERE author=%s AND checkpoint=%s",
                      (author, checkpoint))
        return None if t is None else (t[0], bytes(t[1]))

    def covered_seq(self, author: bytes) -> int:
        t = self._one("SELECT max(seq) FROM covers WHERE author=%s", (author,))
        return 0 if t is None or t[0] is None else int(t[0])

    def latest_cover(self, author: bytes) -> tuple[bytes, int, bytes] | None:
        t = self._one("SELECT checkpoint, seq, id FROM covers WHERE author=%s "
                      "ORDER BY seq DESC, checkpoint DESC LIMIT 1", (author,))
        return None if t is None else (bytes(t[0]), t[1], bytes(t[2]))

    def revocations(self, device: bytes) -> list[tuple[int, bytes]]:
        return [(a, bytes(r)) for a, r in self._q(
            "SELECT after_seq, record FROM revocations WHERE device=%s "
            "ORDER BY after_seq, record", (device,))]

    def tips(self) -> list[Tip]:
        return [Tip(author=bytes(a), seq=s, id=bytes(i)) for a, s, i in self._q(
            "SELECT author, seq, id FROM tips ORDER BY author, seq, id")]

    def tips_of(self, author: bytes) -> list[Tip]:
        return [Tip(author=author, seq=s, id=bytes(i)) for s, i in self._q(
            "SELECT seq, id FROM tips WHERE author=%s ORDER BY seq, id", (author,))]

    def records_of(self, author: bytes, after_seq: int) -> list[tuple[int, StoredRecord]]:
        return [(t[0], record_row(t[1:])) for t in self._q(
            f"SELECT ord, {ROW_COLS} FROM records WHERE author=%s AND seq>%s "
            "ORDER BY seq, ord", (author, after_seq))]

    def delta_raws(self, after: Mapping[bytes, int], also: list[bytes]) -> list[bytes]:
        """`BatchDelta`: one query for every fork-free author of a delta - per author an
        index range on `records (author, seq)` in its own partition (the LATERAL with
        OFFSET 0 keeps the planner from a hash join over the whole table) - and one for
        the ids of the others."""
        rows: list[tuple[Any, ...]] = []
        if after:
            rows = self._q(
                "SELECT x.ord, x.raw FROM unnest(%s::bytea[], %s::bigint[]) AS w(author, seq), "
                "LATERAL (SELECT ord, raw FROM records r WHERE r.author = w.author "
                "AND r.seq > w.seq OFFSET 0) AS x", (list(after), list(after.values())))
        if also:
            rows += self._q("SELECT ord, raw FROM records WHERE id = ANY(%s)", (also,))
        rows.sort(key=lambda t: t[0])
        return [bytes(raw) for _, raw in rows]

    def raws_in_order(self, rids: list[bytes]) -> list[bytes]:
        if not rids:
            return []
        return [bytes(raw) for (raw,) in self._q(
            "SELECT raw FROM records WHERE id = ANY(%s) ORDER BY ord", (rids,))]

    def all_ids_in_order(self) -> Iterator[bytes]:
        for (rid,) in self._q("SELECT id FROM records ORDER BY ord"):
            yield bytes(rid)

    # ------------------------------------------------------------ positions and peers

    def max_order(self) -> int:
        t = self._one(f"SELECT {_FINAL}")
        assert t is not None
        return int(t[0])

    def records_after(self, order: int, limit: int = 10_000) -> list[tuple[int, bytes, bytes]]:
        """Whole transactions' records, of transactions after `order` that are final,
        in causal order (by `ord`)."""
        rows = self._q(f"SELECT tx, ord, id, raw FROM records WHERE tx > %s AND tx <= {_FINAL} "
                       "ORDER BY tx, ord LIMIT %s", (order, limit))
        if len(rows) == limit:  # never split a transaction: the next call starts after it
            last_tx, last_ord = rows[-1][0], rows[-1][1]
            rows += self._q("SELECT tx, ord, id, raw FROM records WHERE tx=%s AND ord>%s "
                            "ORDER BY ord", (last_tx, last_ord))
        rows.sort(key=lambda t: t[1])
        return [(tx, bytes(rid), bytes(raw)) for tx, _, rid, raw in rows]

    def authors_after(self, order: int) -> set[bytes]:
        return {bytes(a) for (a,) in self._q(
            "SELECT DISTINCT author FROM records WHERE tx > %s", (order,))}

    def note_peer(self, device: bytes, *, address: str, role: str, now_ms: int, state: str,
                  synced: bool) -> None:
        records = self.totals().records if synced else None
        self._w("INSERT INTO peers VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (device) DO UPDATE "
                "SET address=excluded.address, role=excluded.role, "
                "last_contact_ms=excluded.last_contact_ms, state=excluded.state, "
                "synced_records=coalesce(excluded.synced_records, peers.synced_records)",
                (device, address, role, now_ms, records, state))

    def peers(self) -> list[PeerRow]:
        return [(bytes(d), a, r, ms, s, st) for d, a, r, ms, s, st in self._q(
            "SELECT device, address, role, last_contact_ms, synced_records, state FROM peers "
            "ORDER BY last_contact_ms DESC")]

    def synced_records(self, device: bytes) -> int | None:
        t = self._one("SELECT synced_records FROM peers WHERE device=%s", (device,))
        return None if t is None or t[0] is None else int(t[0])

    # ------------------------------------------------------------ writing

    def apply(self, fx: Effects) -> None:
        if not self._depth:
            with self.transaction():
                self.apply(fx)
            return
        row = fx.row
        rid, author, seq = row.id, row.author, row.seq
        # Every write is pipelined (`_w`); the rows that hang off the record take its
        # `ord` with currval: this session's last nextval, the record's insert's.
        self._w("INSERT INTO records (author, id, seq, prev, kind, hlc, verdict, reason, "
                "chain, raw, idem_key) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                (author, rid, seq, row.prev, row.kind.value, row.hlc, row.verdict.value,
                 row.reason, row.chain.encode(), fx.raw, fx.idem_key))
        self._remember(row)
        self._new_at.setdefault((author, seq), []).append(rid)
        if row.prev is not None:
            self._w("DELETE FROM tips WHERE author=%s AND id=%s", (author, row.prev))
        self._w("INSERT INTO tips VALUES (%s,%s,%s)", (author, rid, seq))
        if fx.admit is not None:
            a = fx.admit
            self._w("INSERT INTO admits VALUES (%s,%s,%s,%s,%s,%s,currval('record_ord'))",
                    (a.device, rid, a.role, a.tier, a.offline_limit, a.expires))
        if fx.credit is not None:
            c = fx.credit
            self._new_credits[rid] = Credit(id=rid, account=c.account, amount=c.amount,
                                            claimed=c.claimed)
            self._w("INSERT INTO credits VALUES (%s,%s,%s,%s,currval('record_ord'),%s,NULL,NULL)",
                    (c.account.device, rid, c.account.name, c.amount, c.claimed))
        for credit in fx.claims:
            if (made := self._new_credits.get(credit)) is not None:
                self._new_credits[credit] = dataclasses.replace(made, claimed=True)
            # The claimer is the payee: its partition only, under its author lock. The
            # first claim marks the credit; a further one (a forked payee) is a row of
            # `claims` - one statement, so that nothing waits for the first's answer.
            self._w("WITH first AS (UPDATE credits SET claimed=true, claimer=%s, "
                    "claimer_seq=%s WHERE device=%s AND id=%s AND claimer IS NULL "
                    "RETURNING 1) INSERT INTO claims SELECT %s, %s, %s, %s "
                    "WHERE NOT EXISTS (SELECT 1 FROM first)",
                    (rid, seq, author, credit, author, credit, rid, seq))
        for idx, m in enumerate(fx.movements):
            k = (m.account.device, m.account.name)
            self._balances[k] = self._balances.get(k, 0) + m.delta
            self._w("INSERT INTO movements VALUES (%s,%s,currval('record_ord'),%s,%s)",
                    (*k, idx, m.delta))
        for other in fx.equivocates_with:
            first_id, second_id = sorted((other, rid))
            self._w("INSERT INTO equivocations VALUES (%s,%s,%s,%s)",
                    (author, seq, first_id, second_id))
        for covered_author, covered_seq, covered in fx.covers:
            self._w("INSERT INTO covers VALUES (%s,%s,%s,%s)",
                    (covered_author, rid, covered_seq, covered))
        if fx.revoke is not None:
            self._w("INSERT INTO revocations VALUES (%s,%s,%s)",
                    (fx.revoke[0], rid, fx.revoke[1]))
        if fx.meta is not None:
            account, name, value = fx.meta
            key = (account.device, account.name, name)
            new = (value, row.hlc, author, rid)
            old = self._metadata.get(key)
            if old is None or old[1:] < new[1:]:
                self._metadata[key] = new
        totals = self._totals
        totals[0] += 1
        totals[1] += fx.issued
        totals[2] += fx.redeemed
        totals[3] = max(totals[3], row.hlc)

    # ------------------------------------------------------------ views (pg_views.py)

    def _flush_if_open(self) -> None:
        """A view read inside a transaction sees the transaction's own shared rows."""
        if self._depth:
            self._flush_shared()

    def balance(self, account: Account) -> int:
        self._flush_if_open()
        return views.balance(self._q, account)

    def balances(self) -> dict[Account, int]:
        self._flush_if_open()
        return views.balances(self._q)

    def totals(self) -> Totals:
        self._flush_if_open()
        return views.totals(self._q)

    def max_hlc(self) -> int:
        t = self._one("SELECT coalesce(max(max_hlc), 0) FROM totals")
        assert t is not None
        return max(int(t[0]), self._totals[3])

    def unclaimed_credits(self, device: bytes) -> list[Credit]:
        return views.unclaimed_credits(self._q, device)

    def equivocations(self) -> list[tuple[bytes, int, bytes, bytes]]:
        return views.equivocations(self._q)

    def history(self, account: Account) -> list[HistoryEntry]:
        return views.history(self._q, account)

    def meta(self, account: Account) -> dict[str, str]:
        self._flush_if_open()
        return views.meta(self._q, account)
