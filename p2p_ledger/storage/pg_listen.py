"""Change notices between front-ends: PostgreSQL LISTEN/NOTIFY on one channel.

Every transaction of a `PostgresStore` that stored a record runs `NOTIFY` on
`CHANNEL` before its COMMIT (the server delivers it at commit, and only if the
transaction commits; notices of one transaction with the same payload are delivered
once). A front-end keeps a second connection, a `ChangeListener`, that LISTENs on
that channel: when the server sends a notice its socket becomes readable, and the
node (which owns the waiting: trio, `Node.watch_store`) asks the store for records
after its position at once instead of at its next poll.

A notice is only a hint to look now; it carries nothing the node relies on. The poll
stays, as the fallback: a notice can be missed (the listener's connection broke, the
server restarted or failed over, the notice came while the records were not final yet
because an older transaction elsewhere was still open), and then the next poll finds
the records. Nothing here blocks: libpq keeps its socket non-blocking, `drain` reads
only what has arrived. Opening the listener connects, which can block: callers open
it off their event loop's thread.
"""

from __future__ import annotations

import psycopg

from ..errors import StoreError
from .pg_schema import safe_url

__all__ = ["CHANNEL", "ChangeListener"]

CHANNEL = "p2p_ledger_records"
APPLICATION_NAME = "p2p-ledger listener"  # how the listener shows in pg_stat_activity


class ChangeListener:
    """A connection LISTENing for `CHANNEL`. Wait for `fileno()` to be readable, then
    `drain()`; both are non-blocking. A failed connection raises StoreError from
    `drain`: close the listener and open a new one (polling covers the gap)."""

    def __init__(self, url: str) -> None:
        self.path = safe_url(url)
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                       application_name=APPLICATION_NAME)
            self._db.execute(f"LISTEN {CHANNEL}".encode())
        except psycopg.Error as exc:
            raise StoreError(f"cannot listen on the store {self.path}: "
                             f"{str(exc).strip().splitlines()[0]}") from None

    def fileno(self) -> int:
        return self._db.pgconn.socket

    def drain(self) -> int:
        """How many notices have arrived since the last call (0: the socket woke for
        something else, e.g. a server message)."""
        pgconn = self._db.pgconn
        try:
            pgconn.consume_input()
        except psycopg.OperationalError as exc:
            raise StoreError(f"the listener on {self.path} failed: "
                             f"{str(exc).strip().splitlines()[0] if str(exc) else 'closed'}"
                             ) from exc
        if self._db.broken or pgconn.status != psycopg.pq.ConnStatus.OK:
            raise StoreError(f"the listener on {self.path} lost its connection")
        count = 0
        while pgconn.notifies() is not None:
            count += 1
        return count

    def close(self) -> None:
        self._db.close()
