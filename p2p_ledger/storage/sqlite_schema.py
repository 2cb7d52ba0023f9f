"""The SQLite store's file: opening it, its schema and structure checks, and the bulk
writes of a transaction (moved out of `sqlite.py`, which is `SqliteStore` itself; the
row codecs, shared with the PostgreSQL store, are in `rows.py`).

Writing is the cost of ingest, and SQLite charges mostly per row and per column, so
an applied record writes few rows: its idempotency key is a column of its own row, and
the first record that claims a credit is kept in the credit's row (only a fork of the
payee's chain can claim a credit twice; those further claims go to `claims`), and a
record's first movement, when it is on an account of the record's own author (the
payer's debit of a transfer or cash-out), is two columns of the record's row
(`own_account`, `own_delta`) instead of a `movements` row: `history` finds it through
`records_author_seq`, which carries `own_account` for that, between the lowest and
highest seq of such movements that the account's `balances` row keeps. Within
a transaction, rows are written in bulk every `_FLUSH_EVERY` records (and before any
read that needs them), while the lookups the ledger rules make on the transaction's
own records are answered from memory until it ends: nothing just written is read
back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from ..core.store import AdmitInfo, Credit
from ..errors import StoreDamaged, StoreError
from .connection import Connection

__all__ = ["DERIVED_TABLES", "SCHEMA_VERSION"]

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE info (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE totals (one INTEGER PRIMARY KEY CHECK (one = 1), records INTEGER NOT NULL,
    issued INTEGER NOT NULL, redeemed INTEGER NOT NULL, max_hlc INTEGER NOT NULL);
INSERT INTO totals VALUES (1, 0, 0, 0, 0);
CREATE TABLE records (ord INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, author BLOB NOT NULL,
    seq INTEGER NOT NULL, prev BLOB, kind INTEGER NOT NULL, hlc INTEGER NOT NULL,
    verdict TEXT NOT NULL, reason TEXT, chain BLOB NOT NULL, raw BLOB NOT NULL,
    idem_key TEXT, own_account TEXT, own_delta INTEGER);
CREATE INDEX records_author_seq ON records (author, seq, own_account);
CREATE INDEX records_idem ON records (author, idem_key) WHERE idem_key IS NOT NULL;
CREATE TABLE admits (id BLOB PRIMARY KEY, device BLOB NOT NULL, role TEXT NOT NULL,
    tier INTEGER NOT NULL, offline_limit INTEGER, expires INTEGER) WITHOUT ROWID;
CREATE INDEX admits_device ON admits (device);
CREATE TABLE credits (id BLOB PRIMARY KEY, device BLOB NOT NULL, name TEXT NOT NULL,
    amount INTEGER NOT NULL, ord INTEGER NOT NULL, claimed INTEGER NOT NULL DEFAULT 0,
    claimer BLOB, claimer_seq INTEGER) WITHOUT ROWID;
CREATE INDEX credits_unclaimed ON credits (device, ord) WHERE claimed = 0;
CREATE TABLE claims (credit BLOB NOT NULL, author BLOB NOT NULL, claimer BLOB NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (credit, author, claimer)) WITHOUT ROWID;
CREATE TABLE tips (author BLOB NOT NULL, id BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (author, id)) WITHOUT ROWID;
CREATE TABLE balances (device BLOB NOT NULL, name TEXT NOT NULL, minor INTEGER NOT NULL,
    own_first INTEGER, own_last INTEGER, PRIMARY KEY (device, name)) WITHOUT ROWID;
CREATE TABLE movements (device BLOB NOT NULL, name TEXT NOT NULL, ord INTEGER NOT NULL,
    idx INTEGER NOT NULL, delta INTEGER NOT NULL, PRIMARY KEY (device, name, ord, idx))
    WITHOUT ROWID;
CREATE TABLE equivocations (author BLOB NOT NULL, seq INTEGER NOT NULL, first BLOB NOT NULL,
    second BLOB NOT NULL, PRIMARY KEY (author, seq, first, second)) WITHOUT ROWID;
CREATE TABLE covers (checkpoint BLOB NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    id BLOB NOT NULL, PRIMARY KEY (checkpoint, author)) WITHOUT ROWID;
CREATE INDEX covers_author ON covers (author, seq);
CREATE TABLE revocations (record BLOB PRIMARY KEY, device BLOB NOT NULL,
    after_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX revocations_device ON revocations (device);
CREATE TABLE peers (device BLOB PRIMARY KEY, address TEXT NOT NULL, role TEXT NOT NULL,
    last_contact_ms INTEGER NOT NULL, synced_records INTEGER, state TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE metadata (device BLOB NOT NULL, name TEXT NOT NULL, field TEXT NOT NULL,
    value TEXT NOT NULL, hlc INTEGER NOT NULL, author BLOB NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (device, name, field)) WITHOUT ROWID;
"""
_NO_TRANSACTION = 1 << 62  # `_Open.first_order` outside a transaction: every row is older
# Tables whose every row follows from the records; `verify` recomputes and compares them.
DERIVED_TABLES = ("records", "admits", "credits", "claims", "tips", "balances",
                  "movements", "equivocations", "metadata", "totals", "covers",
                  "revocations")


def _connect(path: str, network_id: bytes) -> tuple[Connection, int]:
    """Open the store's file (WAL, synchronous=FULL) and set up or check its schema:
    the connection and SQLite's page cache size on it."""
    try:
        db = Connection(path, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the store {path}: {exc}") from None
    db.path = path
    try:
        # A file that is not a database (a damaged header) fails at the first statement.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=10000")
        _init_schema(db, network_id)
        cache_size: int = db.execute("PRAGMA cache_size").fetchone()[0]
    except StoreError:
        db.close()
        raise
    return db, cache_size


def _check(db: Connection, pragma: str) -> list[str]:
    """The findings of a structure check (`PRAGMA quick_check` or `integrity_check`), one
    line each (SQLite can put several in one row, under a "*** in database main ***"
    heading, which says nothing here)."""
    found: list[str] = []
    try:
        for (text,) in db.execute(f"PRAGMA {pragma}"):
            found.extend(line for line in str(text).splitlines()
                         if line and not line.startswith("*** in database"))
    except StoreDamaged as exc:  # a page so broken that the check itself stops there
        found.append(f"the check stopped: {exc.__cause__}")
    return [] if found == ["ok"] else found


def _init_schema(db: Connection, network_id: bytes) -> None:
    """Create the schema in a new database file, or check an existing one's version
    and network."""
    have = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='info'").fetchone()
    if have is None:
        # executescript commits first, so the whole schema is one script.
        db.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA} INSERT INTO info VALUES ('schema', "
            f"{SCHEMA_VERSION}), ('network', X'{network_id.hex()}'); COMMIT;")
        return
    info = dict(db.execute("SELECT key, value FROM info").fetchall())
    if info.get("network") != network_id:
        raise StoreError("this store belongs to another network")
    if info.get("schema") == 2:
        _migrate_from_2(db)
        return
    if info.get("schema") != SCHEMA_VERSION:
        raise StoreError(f"store schema {info.get('schema')} is not {SCHEMA_VERSION}")


# Schema 2 to 3: a record's first movement, when on its author's own account, moves
# from `movements` into the record's row, `records_author_seq` carries the account,
# and `balances` the seq range of those movements.
_FROM_2 = """
ALTER TABLE records ADD COLUMN own_account TEXT;
ALTER TABLE records ADD COLUMN own_delta INTEGER;
UPDATE records SET own_account = m.name, own_delta = m.delta FROM movements m
    WHERE m.idx = 0 AND m.ord = records.ord AND m.device = records.author;
DELETE FROM movements WHERE idx = 0
    AND device = (SELECT author FROM records WHERE ord = movements.ord);
DROP INDEX records_author_seq;
CREATE INDEX records_author_seq ON records (author, seq, own_account);
ALTER TABLE balances ADD COLUMN own_first INTEGER;
ALTER TABLE balances ADD COLUMN own_last INTEGER;
UPDATE balances SET (own_first, own_last) = (SELECT min(seq), max(seq) FROM records
    WHERE author = balances.device AND own_account = balances.name);
UPDATE info SET value = 3 WHERE key = 'schema';
"""


def _migrate_from_2(db: Connection) -> None:
    """Bring a schema-2 store to schema 3 in one transaction (specs/ledger.md section
    10): all of it or, on any failure, nothing. Linear in the store's size, once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated the file since it was read above.
        if db.execute("SELECT value FROM info WHERE key = 'schema'").fetchone()[0] == 2:
            for statement in _FROM_2.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


@dataclass(slots=True)
class _Open:
    """What the open transaction has applied, kept for the lookups the ledger rules make
    until it ends (whether or not the rows were written yet). `first_order` is the
    position of its first record: older rows are the ones it found in SQLite."""

    first_order: int = _NO_TRANSACTION
    next_order: int = _NO_TRANSACTION
    raws: dict[bytes, bytes] = field(default_factory=dict)
    at: dict[tuple[bytes, int], list[bytes]] = field(default_factory=dict)
    admits: dict[bytes, AdmitInfo] = field(default_factory=dict)
    credits: dict[bytes, Credit] = field(default_factory=dict)
    claimed: set[bytes] = field(default_factory=set)  # credits first claimed here
    stored_claimed: dict[bytes, bool] = field(default_factory=dict)  # older credits, as read
    idem: dict[tuple[bytes, str], list[tuple[bytes, int]]] = field(default_factory=dict)
    idem_stored: dict[tuple[bytes, str], list[tuple[bytes, int]]] = field(
        default_factory=dict)  # what SQLite held before this transaction, fetched ahead
    covers: dict[tuple[bytes, bytes], tuple[int, bytes]] = field(default_factory=dict)
    revocations: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    forked: set[bytes] = field(default_factory=set)
    max_hlc: int = 0


@dataclass(slots=True)
class _Batch:
    """Rows of the open transaction not yet sent to SQLite; `_flush` writes them in bulk."""

    records: list[tuple[object, ...]] = field(default_factory=list)
    admits: list[tuple[object, ...]] = field(default_factory=list)
    credits: dict[bytes, list[object]] = field(default_factory=dict)  # rows, claim filled in
    first_claims: list[tuple[bytes, int, bytes]] = field(default_factory=list)  # of older rows
    more_claims: list[tuple[bytes, bytes, bytes, int]] = field(default_factory=list)
    claims: dict[tuple[bytes, bytes], list[tuple[bytes, int]]] = field(
        default_factory=dict)  # every claim of the batch, for `claims_of`
    equivocations: list[tuple[bytes, int, bytes, bytes]] = field(default_factory=list)
    covers: list[tuple[bytes, bytes, int, bytes]] = field(default_factory=list)
    revocations: list[tuple[bytes, bytes, int]] = field(default_factory=list)
    tips_added: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    tips_removed: list[tuple[bytes, bytes]] = field(default_factory=list)
    balances: dict[tuple[bytes, str], int] = field(default_factory=dict)
    own_seqs: dict[tuple[bytes, str], tuple[int, int]] = field(
        default_factory=dict)  # lowest and highest seq of the movements kept in rows
    movements: list[tuple[bytes, str, int, int, int]] = field(default_factory=list)
    metadata: list[tuple[bytes, str, str, str, int, bytes, bytes]] = field(
        default_factory=list)
    issued: int = 0
    redeemed: int = 0
    max_hlc: int = 0

    def drop_tip(self, author: bytes, rid: bytes) -> None:
        if self.tips_added.pop((author, rid), None) is None:
            self.tips_removed.append((author, rid))


def _write_batch(db: Connection, batch: _Batch) -> None:
    """Send the batch's rows to SQLite, a few bulk statements in all."""
    db.executemany("INSERT INTO records (ord, id, author, seq, prev, kind, hlc, verdict, "
                   "reason, chain, raw, idem_key, own_account, own_delta) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch.records)
    db.executemany("INSERT INTO admits VALUES (?,?,?,?,?,?)", batch.admits)
    db.executemany("INSERT INTO credits VALUES (?,?,?,?,?,?,?,?)", batch.credits.values())
    db.executemany("UPDATE credits SET claimed=1, claimer=?, claimer_seq=? WHERE id=?",
                   batch.first_claims)
    db.executemany("INSERT INTO claims VALUES (?,?,?,?)", batch.more_claims)
    db.executemany("INSERT INTO equivocations VALUES (?,?,?,?)", batch.equivocations)
    db.executemany("INSERT INTO covers VALUES (?,?,?,?)", batch.covers)
    db.executemany("INSERT INTO revocations VALUES (?,?,?)", batch.revocations)
    db.executemany("DELETE FROM tips WHERE author=? AND id=?", batch.tips_removed)
    db.executemany("INSERT INTO tips VALUES (?,?,?)",
                   [(a, i, s) for (a, i), s in batch.tips_added.items()])
    no_seqs = (None, None)
    db.executemany("INSERT INTO balances VALUES (?,?,?,?,?) ON CONFLICT (device, name) "
                   "DO UPDATE SET minor = minor + excluded.minor, "
                   "own_first = coalesce(min(own_first, excluded.own_first), own_first, "
                   "excluded.own_first), own_last = coalesce(max(own_last, "
                   "excluded.own_last), own_last, excluded.own_last)",
                   [(d, n, v, *batch.own_seqs.get((d, n), no_seqs))
                    for (d, n), v in batch.balances.items()])
    db.executemany("INSERT INTO movements VALUES (?,?,?,?,?)", batch.movements)
    db.executemany(
        "INSERT INTO metadata VALUES (?,?,?,?,?,?,?) ON CONFLICT (device, name, field) "
        "DO UPDATE SET value=excluded.value, hlc=excluded.hlc, author=excluded.author, "
        "record=excluded.record WHERE (excluded.hlc, excluded.author, excluded.record) "
        "> (metadata.hlc, metadata.author, metadata.record)", batch.metadata)
    db.execute("UPDATE totals SET records=records+?, issued=issued+?, redeemed=redeemed+?, "
               "max_hlc=max(max_hlc, ?)",
               (len(batch.records), batch.issued, batch.redeemed, batch.max_hlc))
