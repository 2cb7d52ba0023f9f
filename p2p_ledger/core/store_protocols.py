"""The store protocols: `LedgerStore` (what the ledger rules need), `NodeStore`
(what a node, the CLI and the simulator need on top), and the optional capabilities
`BatchDelta`, `NotifyingStore` and `StoreListener`. core/store.py describes them and
re-exports them; they live here, in a module that is never compiled, because mypyc
(which compiles core/store.py, p2p_ledger/build.py) drops `Protocol` from a compiled
class's bases, and `NodeStore` is checked with isinstance (`runtime_checkable`). The
row types are imported for the annotations only, so this module imports nothing of
store.py at run time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .ids import Account
    from .store import (
        AdmitInfo,
        Credit,
        Effects,
        HistoryEntry,
        PeerRow,
        StoredRecord,
        Tip,
        Totals,
    )

__all__ = ["BatchDelta", "LedgerStore", "NodeStore", "NotifyingStore", "StoreListener"]


class LedgerStore(Protocol):
    def transaction(self, *, bulk: bool = False) -> contextlib.AbstractContextManager[None]:
        """All or nothing. `bulk` is a hint (an import, a sync frame: many records in
        one transaction) that a store may use, or ignore: SqliteStore raises SQLite's
        page cache for it."""
    def lock_author(self, author: bytes) -> bool:
        """Inside a transaction, before the replica judges or signs a record of
        `author`: make other writers of this store wait for (or be waited for by) this
        transaction for that author, until it ends. Returns whether records may have been
        stored by another writer since this transaction last looked (the caller then
        asks `has` again). A store with one writer does nothing and returns False."""
        ...
    def has(self, rid: bytes) -> bool: ...
    def held_among(self, rids: list[bytes]) -> set[bytes]: ...
    def get(self, rid: bytes) -> StoredRecord | None: ...
    def raw(self, rid: bytes) -> bytes | None: ...
    def admit(self, rid: bytes) -> AdmitInfo | None: ...
    def admits_for(self, device: bytes) -> list[AdmitInfo]: ...
    def credit(self, rid: bytes) -> Credit | None: ...
    def claims_of(self, credit: bytes, author: bytes) -> list[tuple[bytes, int]]: ...
    def idem(self, author: bytes, key: str) -> list[tuple[bytes, int]]: ...
    def prefetch_idem(self, pairs: list[tuple[bytes, str]]) -> None:
        """A hint: `idem` will soon be asked about these pairs."""
        ...
    def ids_at(self, author: bytes, seq: int) -> list[bytes]: ...
    def forked(self, author: bytes) -> bool: ...
    def cover(self, checkpoint: bytes, author: bytes) -> tuple[int, bytes] | None:
        """What an applied checkpoint says it has seen of `author`: (seq, id)."""
        ...
    def covered_seq(self, author: bytes) -> int:
        """The highest seq of `author` any applied checkpoint covers (0 if none)."""
        ...
    def latest_cover(self, author: bytes) -> tuple[bytes, int, bytes] | None:
        """(checkpoint id, seq, covered id) of the highest cover of `author`."""
        ...
    def revocations(self, device: bytes) -> list[tuple[int, bytes]]:
        """Applied revocations of `device`: (after_seq, revoke record id)."""
        ...
    def tips(self) -> list[Tip]: ...
    def tips_of(self, author: bytes) -> list[Tip]: ...
    def records_of(self, author: bytes, after_seq: int) -> list[tuple[int, StoredRecord]]:
        """(order, row) of the author's records with seq > after_seq."""
        ...
    def raws_in_order(self, rids: list[bytes]) -> list[bytes]: ...
    def apply(self, fx: Effects) -> None: ...
    def balance(self, account: Account) -> int: ...
    def balances(self) -> dict[Account, int]: ...
    def totals(self) -> Totals: ...
    def max_hlc(self) -> int:
        """The largest hlc of any stored record (0 when empty)."""
        ...
    def unclaimed_credits(self, device: bytes) -> list[Credit]: ...
    def equivocations(self) -> list[tuple[bytes, int, bytes, bytes]]: ...
    def history(self, account: Account) -> list[HistoryEntry]: ...
    def meta(self, account: Account) -> dict[str, str]: ...
    def all_ids_in_order(self) -> Iterator[bytes]: ...


@runtime_checkable
class NodeStore(LedgerStore, Protocol):
    """What a `Node` (and the CLI around it) needs of its store beyond the ledger's:
    positions, so that records stored by anyone (another session, another process on
    the same home, another front-end of the same database) are found and pushed; and the
    peers table. A position is an integer that only grows: every record stored at or
    before `max_order()` is returned by `records_after(p)` for any p below its position,
    exactly once across successive calls that each start from the last position
    returned, and no record stored later ever gets a position at or below it."""

    def max_order(self) -> int:
        """The position up to which stored records are final (0 when empty)."""
        ...
    def records_after(self, order: int, limit: int = 10_000) -> list[tuple[int, bytes, bytes]]:
        """(position, id, raw) of records after position `order`, up to `max_order()`,
        by position and in causal order; at least `limit` rows if there are so many (a
        store may return a few more so as not to split one position)."""
        ...
    def authors_after(self, order: int) -> set[bytes]:
        """The authors of the records stored after position `order` (also those not
        final yet)."""
        ...
    def note_peer(self, device: bytes, *, address: str, role: str, now_ms: int, state: str,
                  synced: bool) -> None:
        """Remember a peer's last contact; `synced` marks that it holds what we held."""
        ...
    def peers(self) -> list[PeerRow]:
        """The peers table, latest contact first."""
        ...
    def synced_records(self, device: bytes) -> int | None:
        """Records held here when we were last in sync with this peer (None: never)."""
        ...
    def close(self) -> None: ...


@runtime_checkable
class BatchDelta(Protocol):
    """A store that answers the fork-free part of a delta in one query (PostgresStore:
    a question per author is a round trip each). `Replica.delta` uses it when there."""

    def delta_raws(self, after: Mapping[bytes, int], also: list[bytes]) -> list[bytes]:
        """The records of each author in `after` whose seq is above the author's value
        there, and the records `also` names (of other authors), in causal order as
        `raws_in_order` gives them."""
        ...


class StoreListener(Protocol):
    """A connection that hears when records are committed to a shared store. Both
    calls are non-blocking: wait until `fileno()` is readable, then `drain()` (how
    many notices came; StoreError when the connection failed)."""

    def fileno(self) -> int: ...
    def drain(self) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class NotifyingStore(Protocol):
    """A store that several processes write at once and that tells them when one of
    them committed records (PostgresStore: LISTEN/NOTIFY). A hint only: a node still
    polls `max_order`, for the notices it misses (specs/cloud.md section 2)."""

    def listen(self) -> StoreListener:
        """A new listener (connects: blocking; StoreError when it cannot)."""
        ...
