"""The error tree: every error says whose fault it is.

- `LocalError`: we (the caller of this library, or the person at the CLI) asked for
  something that cannot be done: a bad amount typed in, a payment that would
  overdraw, a wrong passphrase. Nothing was signed or stored.
- `InvalidRecord`: bytes from somewhere else (a bundle, a peer) that do not verify.
  It carries a `RecordProblem` naming the reason. An invalid record is never stored.
- `StoreError`: the local store is unusable (wrong network, unknown schema, a failed
  disk). `StoreDamaged`, one kind of it, is a store file SQLite finds damaged: nothing
  is signed or stored into it.
- `ProtocolError`: a sync session broke: `LocalProtocolError` if we misused it,
  `RemoteProtocolError` if the peer sent something wrong. `TransportError`: a link
  failed underneath. `SyncFailed`: a sync ended before the peer acknowledged storing
  everything sent (it carries what did move).
- `FeedOverflow`: an application did not read a node's record feed fast enough.

Every class here derives from `P2PLedgerError`, so a caller that wants to catch all
of ours can, without catching programming errors such as `TypeError`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node.node import SessionStats

__all__ = [
    "AmountError",
    "FeedOverflow",
    "InvalidRecord",
    "KeyFileError",
    "LocalError",
    "LocalProtocolError",
    "P2PLedgerError",
    "PaymentRefused",
    "PendingFull",
    "ProtocolError",
    "RecordProblem",
    "RemoteProtocolError",
    "StoreDamaged",
    "StoreBusy",
    "StoreError",
    "StoreReadOnly",
    "StoreUnavailable",
    "SyncFailed",
    "TransportError",
    "UsageError",
    "WrongPassphrase",
]


class P2PLedgerError(Exception):
    """Base class of every error this package raises on purpose."""


class LocalError(P2PLedgerError):
    """Our own side asked for something impossible; nothing was changed."""


class UsageError(LocalError):
    """The command line (or an API call's arguments) names something that cannot be
    used: the CLI exits 2, as for argparse's own usage errors."""


class AmountError(LocalError, ValueError):
    """An amount that is not a positive whole number of minor units within limits."""


class PaymentRefused(LocalError):
    """A record this device will not sign: a payment over its funds or limits, a reused
    idempotency key, or anything at all once the device is revoked or has forked."""


class KeyFileError(LocalError):
    """The device key file is missing, damaged, or cannot be unlocked."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not decrypt the device key."""


class StoreError(P2PLedgerError):
    """The local store cannot be used as asked."""


class StoreReadOnly(StoreError):
    """The store cannot be written here (a read-only file, folder or file system);
    nothing was changed. The CLI exits 1."""


class StoreBusy(StoreError):
    """Another process held the store's write lock for longer than the wait allows
    (another `import`, a `serve` committing a large delta). Nothing was changed; the
    same command can simply be run again."""


class StoreUnavailable(StoreError):
    """The store's database server cannot be reached right now (a PostgreSQL store
    whose connection was lost: the primary died, a failover is under way). The
    transaction under way, if any, was not committed - or, if the connection was lost
    during its commit, may or may not have been - and nothing of it was acknowledged.
    The store connects again on its next call; a node ends the session and goes on."""


class StoreDamaged(StoreError):
    """The store file is damaged: SQLite's integrity check failed, or a read met a
    malformed page or a file that is not a database. The transaction under way, if
    any, was rolled back, so nothing was signed or stored."""


class ProtocolError(P2PLedgerError):
    """A sync session broke its protocol. The session is dead afterwards."""


class LocalProtocolError(ProtocolError, LocalError):
    """We used a session wrongly (sent in the wrong state, after close, ...)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids, or failed the handshake."""


class TransportError(P2PLedgerError):
    """A link failed: connection refused or reset, a process that exited."""


class SyncFailed(P2PLedgerError):
    """A sync ended without the peer acknowledging that it stored all we sent: the link
    broke, the peer refused the session or some records, or closed it early. What was
    committed on either side stays; a later sync sends only the rest. `stats` says
    what moved and `stats.reason` why the session ended."""

    def __init__(self, stats: SessionStats) -> None:
        self.stats = stats
        super().__init__(f"sync with {stats.address} failed: {stats.reason or 'no reason given'}")


class FeedOverflow(LocalError):
    """A record feed (`Node.subscribe`) held as many unread records as it may: the
    application read too slowly. The feed is closed; records stored meanwhile are in
    the store (read them there, then subscribe again)."""


class RecordProblem(enum.Enum):
    """Why a record failed verification. The value is the name printed to people."""

    MALFORMED = "malformed"
    NON_CANONICAL = "non_canonical"
    OVERSIZE = "oversize"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_FIELD = "unknown_field"
    BAD_FIELD = "bad_field"
    BAD_AMOUNT = "bad_amount"
    BAD_SIGNATURE = "bad_signature"
    FUTURE_TIMESTAMP = "future_timestamp"
    BROKEN_CHAIN = "broken_chain"
    NOT_ADMITTED = "not_admitted"
    PENDING_FULL = "pending_full"


class InvalidRecord(P2PLedgerError):
    """A record that fails verification. It is never stored.

    `record_id` is the hex id when the bytes were framed well enough to hash them.
    """

    def __init__(self, problem: RecordProblem, detail: str, *, record_id: str | None = None):
        self.problem = problem
        self.detail = detail
        self.record_id = record_id
        where = f" (record {record_id[:16]})" if record_id else ""
        super().__init__(f"{problem.value}: {detail}{where}")

    def with_record_id(self, record_id: str) -> InvalidRecord:
        return InvalidRecord(self.problem, self.detail, record_id=record_id)


class PendingFull(InvalidRecord):
    """The bounded pending area is full; the record was dropped, not stored."""

    def __init__(self, detail: str, *, record_id: str | None = None):
        super().__init__(RecordProblem.PENDING_FULL, detail, record_id=record_id)
