"""The PostgreSQL store's one connection, which comes back by itself after a failover.

Every statement of `PostgresStore` goes through `PgConnection.rows` / `.many`, which turn
every database failure into a `StoreError` naming the database (never its password).

**Losing the connection** (the primary died, a failover, a restart) raises
`StoreUnavailable`, and the next statement connects again with the same URL. A URL
listing several hosts with `target_session_attrs=read-write` makes libpq try them in
order and keep the one that accepts writes: after a standby is promoted, that is the
new primary. What was lost with the connection:

- **inside a transaction** (the store's `BEGIN` ... `COMMIT`): the transaction is gone,
  and `StoreUnavailable` goes up to whoever ran it, which acknowledges nothing of it
  (a node sends STORED only after the commit returned). A connection lost *during*
  `COMMIT` leaves the outcome unknown: the transaction may have committed or not.
  Either is safe because nothing was acknowledged: the peer sends the records again,
  and a record already held is dropped and acknowledged as stored (the ledger's
  idempotency: validity depends on the record alone and its causal past).
- **outside a transaction** (a single read, or the `BEGIN` opening one): nothing was
  changed, so the statement is run once more on a new connection before giving up.

Connecting while no host accepts writes (between the primary's death and a
promotion) fails at once on loopback; each failure is one `StoreUnavailable`, and the
caller (a node's session, its store poll) simply tries again later.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from ..errors import StoreBusy, StoreDamaged, StoreError, StoreUnavailable
from .pg_schema import safe_url

__all__ = ["CONNECT_TIMEOUT", "PgConnection", "safe_url"]

CONNECT_TIMEOUT = 10  # seconds, per host tried


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class PgConnection:
    """One autocommit connection; `in_transaction` is kept by the store (its BEGIN and
    COMMIT are statements like any other)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = safe_url(url)
        self.in_transaction = False
        self.reconnects = 0  # connections made after the first (failovers survived)
        try:
            self._db: psycopg.Connection[Any] | None = self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {_first_line(exc)}") from None

    def _connect(self) -> psycopg.Connection[Any]:
        db = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        try:
            # Every query names its partition key as a parameter: a generic plan prunes
            # partitions when it runs. The default (custom plans while they look cheaper,
            # which with 8 partitions each is always) plans every execution again: half
            # the server's CPU per stored record, measured (specs/cloud.md section 9).
            db.execute(b"SET plan_cache_mode = force_generic_plan")
        except BaseException:
            db.close()
            raise
        return db

    @property
    def backend_pid(self) -> int:
        return self._live().info.backend_pid

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, made again if it was lost (only between transactions)."""
        if self._db is not None and not self._db.broken and not self._db.closed:
            return self._db
        if self.in_transaction:
            raise StoreUnavailable(f"the store {self.path}: the connection was lost in a "
                                   "transaction, which was not committed")
        if self._db is not None:
            self._db.close()
            self._db = None
        try:
            self._db = self._connect()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the store {self.path} is unreachable: "
                                   f"{_first_line(exc)}") from None
        self.reconnects += 1
        return self._db

    def _lost(self) -> bool:
        return self._db is None or self._db.broken or self._db.closed

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for a statement that returns none)."""
        for attempt in (1, 2):
            retry = not self.in_transaction and attempt == 1
            try:
                cur = self._live().execute(sql.encode(), params, prepare=params is not None)
                return cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                if not self._lost():
                    raise self._mapped(exc) from exc
                if not retry:
                    raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        """Send one statement inside the store's pipeline (never retried); its outcome
        comes with the next read or the pipeline's end. Call it under `errors()`."""
        return self._live().execute(sql.encode(), params, prepare=params is not None)

    def pipeline(self) -> contextlib.AbstractContextManager[psycopg.Pipeline]:
        return self._live().pipeline()

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Map what psycopg raises inside: a lost connection to StoreUnavailable, every
        other failure of the database to a StoreError naming the store."""
        try:
            yield
        except psycopg.Error as exc:
            if self._lost():
                raise self._unavailable(exc) from exc
            raise self._mapped(exc) from exc

    def many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """`executemany`, inside a transaction (never retried)."""
        try:
            with self._live().cursor() as cur:
                cur.executemany(sql.encode(), rows)
        except psycopg.Error as exc:
            if self._lost():
                raise self._unavailable(exc) from exc
            raise self._mapped(exc) from exc

    def _unavailable(self, exc: psycopg.Error) -> StoreUnavailable:
        where = " in a transaction, which was rolled back or, if it was committing, " \
            "may or may not have committed" if self.in_transaction else ""
        return StoreUnavailable(f"the store {self.path}: connection lost{where}: "
                                f"{_first_line(exc)}")

    def _mapped(self, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.DeadlockDetected
                      | psycopg.errors.SerializationFailure):
            return StoreBusy(f"the store {self.path} is busy: {exc}")
        if isinstance(exc, psycopg.errors.DataCorrupted | psycopg.errors.IndexCorrupted):
            return StoreDamaged(f"the store {self.path} is damaged: {exc}")
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.AdminShutdown
                      | psycopg.errors.CrashShutdown | psycopg.errors.CannotConnectNow):
            # a server going down, or one that became a standby: the next try reconnects
            if self._db is not None:
                self._db.close()
            return self._unavailable(exc)
        if isinstance(exc, psycopg.OperationalError | psycopg.DataError
                      | psycopg.IntegrityError | psycopg.InternalError):
            return StoreError(f"the store {self.path} failed: {_first_line(exc)}")
        raise exc  # a programming error (bad SQL): not the database's doing
