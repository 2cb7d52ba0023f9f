"""The PostgreSQL store's schema, and the helpers its users share (URLs, lock keys).

Every table that grows with the ledger is hash-partitioned by the author (or the
payee, the device whose rows they are), and every unique key contains that key, so
that the schema can be distributed by Citus as it is (specs/cloud.md section 5).
Nothing here talks to a server.
"""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import conninfo

__all__ = ["PARTITIONS", "SCHEMA", "SCHEMA_VERSION", "author_lock_key", "is_postgres_url",
           "safe_url"]

SCHEMA_VERSION = 1
PARTITIONS = 8  # hash partitions of each partitioned table


def _partitioned(table: str, columns: str, key: str) -> str:
    parts = "".join(
        f"CREATE TABLE {table}_p{i} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i});\n"
        for i in range(PARTITIONS))
    return f"CREATE TABLE {table} ({columns}) PARTITION BY HASH ({key});\n{parts}"


SCHEMA = "\n".join([
    "CREATE TABLE info (key text PRIMARY KEY, value bytea NOT NULL);",
    "CREATE TABLE totals (slot int PRIMARY KEY, records bigint NOT NULL, "
    "issued bigint NOT NULL, redeemed bigint NOT NULL, max_hlc bigint NOT NULL);",
    "CREATE SEQUENCE record_ord;",
    _partitioned("records", "author bytea NOT NULL, id bytea NOT NULL, "
                 "ord bigint NOT NULL DEFAULT nextval('record_ord'), "
                 "tx bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint), "
                 "seq bigint NOT NULL, prev bytea, kind int NOT NULL, hlc bigint NOT NULL, "
                 "verdict text NOT NULL, reason text, chain bytea NOT NULL, raw bytea NOT NULL, "
                 "idem_key text COLLATE \"C\", PRIMARY KEY (author, id)", "author"),
    "CREATE INDEX records_id ON records (id);",
    "CREATE INDEX records_author_seq ON records (author, seq);",
    "CREATE INDEX records_tx ON records (tx, ord);",
    "CREATE INDEX records_ord ON records (ord);",
    "CREATE INDEX records_idem ON records (author, idem_key) WHERE idem_key IS NOT NULL;",
    _partitioned("admits", "device bytea NOT NULL, id bytea NOT NULL, role text NOT NULL, "
                 "tier int NOT NULL, offline_limit bigint, expires bigint, ord bigint NOT NULL, "
                 "PRIMARY KEY (device, id)", "device"),
    "CREATE INDEX admits_id ON admits (id);",
    _partitioned("credits", "device bytea NOT NULL, id bytea NOT NULL, "
                 "name text COLLATE \"C\" NOT NULL, amount bigint NOT NULL, ord bigint NOT NULL, "
                 "claimed boolean NOT NULL, claimer bytea, claimer_seq bigint, "
                 "PRIMARY KEY (device, id)", "device"),
    "CREATE INDEX credits_id ON credits (id);",
    "CREATE INDEX credits_unclaimed ON credits (device, ord) WHERE NOT claimed;",
    _partitioned("claims", "author bytea NOT NULL, credit bytea NOT NULL, "
                 "claimer bytea NOT NULL, seq bigint NOT NULL, "
                 "PRIMARY KEY (author, credit, claimer)", "author"),
    _partitioned("tips", "author bytea NOT NULL, id bytea NOT NULL, seq bigint NOT NULL, "
                 "PRIMARY KEY (author, id)", "author"),
    _partitioned("balances", "device bytea NOT NULL, name text COLLATE \"C\" NOT NULL, "
                 "minor bigint NOT NULL, PRIMARY KEY (device, name)", "device"),
    _partitioned("movements", "device bytea NOT NULL, name text COLLATE \"C\" NOT NULL, "
                 "ord bigint NOT NULL, idx int NOT NULL, delta bigint NOT NULL, "
                 "PRIMARY KEY (device, name, ord, idx)", "device"),
    _partitioned("equivocations", "author bytea NOT NULL, seq bigint NOT NULL, "
                 "first bytea NOT NULL, second bytea NOT NULL, "
                 "PRIMARY KEY (author, seq, first, second)", "author"),
    _partitioned("covers", "author bytea NOT NULL, checkpoint bytea NOT NULL, "
                 "seq bigint NOT NULL, id bytea NOT NULL, PRIMARY KEY (author, checkpoint)",
                 "author"),
    _partitioned("revocations", "device bytea NOT NULL, record bytea NOT NULL, "
                 "after_seq bigint NOT NULL, PRIMARY KEY (device, record)", "device"),
    _partitioned("metadata", "device bytea NOT NULL, name text COLLATE \"C\" NOT NULL, "
                 "field text COLLATE \"C\" NOT NULL, value text NOT NULL, hlc bigint NOT NULL, "
                 "author bytea NOT NULL, record bytea NOT NULL, "
                 "PRIMARY KEY (device, name, field)", "device"),
    # Small, read by every front-end: a reference table under Citus.
    "CREATE TABLE peers (device bytea PRIMARY KEY, address text NOT NULL, role text NOT NULL, "
    "last_contact_ms bigint NOT NULL, synced_records bigint, state text NOT NULL);",
])


def is_postgres_url(text: str) -> bool:
    return text.startswith(("postgresql://", "postgres://"))


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    params.pop("password", None)
    return conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def author_lock_key(author: bytes) -> int:
    """The advisory lock key of an author: 64 bits of a hash (a collision only makes
    two authors wait for each other)."""
    digest = hashlib.blake2b(b"p2p-ledger/author-lock" + author, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
