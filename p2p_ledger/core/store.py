"""The narrow interface between the ledger rules and wherever records are kept.

`Replica` (ledger.py) decides everything; a store only remembers. For each applied
record the replica hands the store one `Effects` value, and the store writes all of
it or none of it. Lookups are by key, so a store of a million records never has to
be loaded into memory. `MemoryStore` here is the reference implementation for tests
and the simulator; `p2p_ledger.storage.sqlite.SqliteStore` is the durable one, and
`p2p_ledger.storage.postgres.PostgresStore` the cloud tier's (many processes, one
database). All must behave identically: tests/test_stores.py runs the same scenarios
against each.

Two protocols: `LedgerStore` is what the ledger rules (`Replica`, `Wallet`) need;
`NodeStore` adds what a node, the CLI and the simulator need on top (store positions
for pushing new records, the peers table, closing). `Node` depends on `NodeStore`
only, so every store above serves a node.

`lock_author` is the one concurrency hook: a store written by several processes at
once (PostgreSQL) serializes the judging of one author's records there; the others
have one writer and do nothing.
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import functools
import struct
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mypy_extensions import mypyc_attr

from .frozen import quick_init
from .ids import Account
from .records import Kind

# The protocols live in an interpreted module of their own (store_protocols.py).
from .store_protocols import BatchDelta, LedgerStore, NodeStore, NotifyingStore, StoreListener

__all__ = ["AdmitInfo", "BatchDelta", "ChainState", "Credit", "Effects", "HistoryEntry",
           "LedgerStore", "MemoryStore", "Movement", "NodeStore", "NotifyingStore", "PeerRow",
           "StoreListener", "StoredRecord", "Tip", "Totals", "Verdict"]


class Verdict(enum.Enum):
    """What a stored record did to the ledger. Every replica computes the same one."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


_TOTALS = struct.Struct(">QQQ")  # ChainState's debited, settled_debited, authority_seq
_BALANCE = struct.Struct(">q")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainState:
    """What an author's chain has established up to and including one record, over
    that record's causal past: the admit record that lets the author in (None for the
    network authority), the balance of each of its accounts, the total it has ever
    debited, that total as of the latest of its records a settlement checkpoint it
    referenced covers (`debited - settled_debited` is its unsettled exposure), and the
    highest seq of the authority's chain in its causal past (the authority's chain is
    linear, so this says exactly which revocations the record "knew")."""

    admit: bytes | None
    balances: tuple[tuple[str, int], ...] = ()
    debited: int = 0
    settled_debited: int = 0
    authority_seq: int = 0  # the highest authority record in the causal past

    def balance(self, name: str) -> int:
        return dict(self.balances).get(name, 0)

    @property
    def exposure(self) -> int:
        return self.debited - self.settled_debited

    def encode(self) -> bytes:
        """Compact bytes: a flag byte, the admit id if any, the two totals as 8 bytes
        each, then per account its name's length, the name, and the balance as 8
        signed big-endian bytes. (Nothing here leaves the signed 64-bit range: amounts
        are capped far below it.)"""
        parts = [b"\x01" + self.admit if self.admit is not None else b"\x00",
                 _TOTALS.pack(self.debited, self.settled_debited, self.authority_seq)]
        for name, balance in self.balances:
            raw = name.encode()
            parts.append(bytes((len(raw),)) + raw + _BALANCE.pack(balance))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ChainState:
        admit = data[1:33] if data[0] == 1 else None
        at = 33 if admit is not None else 1
        debited = int.from_bytes(data[at:at + 8], "big")
        settled = int.from_bytes(data[at + 8:at + 16], "big")
        authority_seq = int.from_bytes(data[at + 16:at + 24], "big")
        at += 24
        balances = []
        while at < len(data):
            size = data[at]
            name = data[at + 1:at + 1 + size].decode()
            at += 1 + size
            balances.append((name, int.from_bytes(data[at:at + 8], "big", signed=True)))
            at += 8
        return cls(admit=admit, balances=tuple(balances), debited=debited,
                   settled_debited=settled, authority_seq=authority_seq)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    id: bytes
    author: bytes
    seq: int
    prev: bytes | None
    kind: Kind
    hlc: int
    verdict: Verdict
    reason: str | None
    chain: ChainState


@dataclass(frozen=True, slots=True, kw_only=True)
class Credit:
    """Money an applied `issue` or `transfer` put into an account. `claimed` says
    whether any record of the payee has claimed it yet (a hint that lets the ledger
    skip looking for earlier claims)."""

    id: bytes
    account: Account
    amount: int
    claimed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Movement:
    account: Account
    delta: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmitInfo:
    id: bytes
    device: bytes
    role: str
    tier: int
    offline_limit: int | None
    expires: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Effects:
    """Everything that applying one record changes; written atomically by the store."""

    row: StoredRecord
    raw: bytes
    idem_key: str | None = None
    claims: tuple[bytes, ...] = ()
    credit: Credit | None = None
    movements: tuple[Movement, ...] = ()
    issued: int = 0
    redeemed: int = 0
    admit: AdmitInfo | None = None
    equivocates_with: tuple[bytes, ...] = ()  # other records of the author at this seq
    meta: tuple[Account, str, str] | None = None
    covers: tuple[tuple[bytes, int, bytes], ...] = ()  # an applied checkpoint's
    revoke: tuple[bytes, int] | None = None  # an applied revoke: (device, after_seq)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tip:
    author: bytes
    seq: int
    id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    records: int
    authors: int
    issued: int
    redeemed: int
    max_hlc: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    id: bytes
    kind: Kind
    hlc: int
    author: bytes
    seq: int
    delta: int


# Rows pickle through their constructor (the simulator copies a store with pickle):
# compiled by mypyc, a frozen dataclass's default unpickling sets its fields one by one,
# which `frozen` refuses (specs/build.md). The pure build pickles them the same way.
def _rebuilt(cls: type[Any], fields: dict[str, Any]) -> Any:
    return cls(**fields)


def _reduced(row: Any) -> tuple[Callable[..., Any], tuple[type[Any], dict[str, Any]]]:
    return _rebuilt, (type(row), {f.name: getattr(row, f.name) for f in dataclasses.fields(row)})


for _row in (Account, ChainState, StoredRecord, Credit, Movement, AdmitInfo, Effects, Tip,
             Totals, HistoryEntry):
    copyreg.pickle(_row, _reduced)
for _row in (ChainState, StoredRecord, Credit, Movement, AdmitInfo, Effects, Tip, Totals,
             HistoryEntry):
    quick_init(_row)  # made for every record a replica judges (frozen.py)


class _Transaction:
    """`MemoryStore.transaction()`. A class rather than a generator: a simulated world
    opens one for every batch of every replica (issue 14)."""

    __slots__ = ("_outer", "_store")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._outer = False

    def __enter__(self) -> None:
        store = self._store
        if store._undo is None:
            self._outer = True
            store._undo = []
            store._began()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._outer:
            return
        store = self._store
        if exc_type is not None:  # whatever ended the block early: undo it all
            try:
                for step in reversed(store._undo or ()):
                    step()
                store._prune()
            finally:
                store._undo = None
            return
        store._undo = None
        store._committed()


# A row of the peers table: (device, address, role, last_contact_ms, records held at the
# last sync or None, state).
PeerRow = tuple[bytes, str, str, int, int | None, str]


@mypyc_attr(allow_interpreted_subclasses=True)  # the simulator's SimStore
@dataclass
class MemoryStore:
    """Dict-backed store. `transaction` is all-or-nothing because `apply` never fails
    half way: the replica computes every effect before calling it."""

    _rows: dict[bytes, StoredRecord] = field(default_factory=dict)
    _raw: dict[bytes, bytes] = field(default_factory=dict)
    _order: dict[bytes, int] = field(default_factory=dict)
    _by_author: dict[bytes, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    _at: dict[tuple[bytes, int], list[bytes]] = field(default_factory=lambda: defaultdict(list))
    _admits: dict[bytes, AdmitInfo] = field(default_factory=dict)
    _credits: dict[bytes, Credit] = field(default_factory=dict)
    _unclaimed: dict[bytes, dict[bytes, Credit]] = field(
        default_factory=lambda: defaultdict(dict))
    _claims: dict[tuple[bytes, bytes], list[tuple[bytes, int]]] = field(
        default_factory=lambda: defaultdict(list))
    _idem: dict[tuple[bytes, str], list[tuple[bytes, int]]] = field(
        default_factory=lambda: defaultdict(list))
    _tips: dict[bytes, dict[bytes, int]] = field(default_factory=lambda: defaultdict(dict))
    _balances: dict[Account, int] = field(default_factory=lambda: defaultdict(int))
    # per account: (id, kind, hlc, author, seq, delta) - plain values, not HistoryEntry:
    # one per movement of every record held, built for readers only (`history`)
    _history: dict[Account, list[tuple[bytes, int, int, bytes, int, int]]] = field(
        default_factory=lambda: defaultdict(list))
    _equivocations: list[tuple[bytes, int, bytes, bytes]] = field(default_factory=list)
    _meta: dict[tuple[Account, str], tuple[int, bytes, bytes, str]] = field(
        default_factory=dict)
    _covers: dict[tuple[bytes, bytes], tuple[int, bytes]] = field(default_factory=dict)
    _covered: dict[bytes, int] = field(default_factory=dict)
    _revocations: dict[bytes, list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list))
    _issued: int = 0
    _redeemed: int = 0
    _max_hlc: int = 0

    _undo: list[Callable[[], object]] | None = None

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[type[Any], dict[str, Any]]]:
        """Pickled by its fields, as the rows: compiled, the default pickling would
        leave out an interpreted subclass's own fields (SimStore.copy pickles)."""
        return _reduced(self)

    def transaction(self, *, bulk: bool = False) -> _Transaction:
        """All or nothing, like SQLite's: an exception undoes what the block applied.
        (`bulk` makes no difference in memory.) Nested, the outermost one decides."""
        return _Transaction(self)

    def _began(self) -> None:
        """The outermost transaction began (a hook: the simulator's store uses it)."""

    def _committed(self) -> None:
        """The outermost transaction committed (a hook: the simulator reports it)."""

    def lock_author(self, author: bytes) -> bool:
        return False  # one writer: nothing to wait for

    def has(self, rid: bytes) -> bool:
        return rid in self._rows

    def held_among(self, rids: list[bytes]) -> set[bytes]:
        return {r for r in rids if r in self._rows}

    def get(self, rid: bytes) -> StoredRecord | None:
        return self._rows.get(rid)

    def raw(self, rid: bytes) -> bytes | None:
        return self._raw.get(rid)

    def admit(self, rid: bytes) -> AdmitInfo | None:
        return self._admits.get(rid)

    def admits_for(self, device: bytes) -> list[AdmitInfo]:
        return [a for a in self._admits.values() if a.device == device]

    def credit(self, rid: bytes) -> Credit | None:
        c = self._credits.get(rid)
        if c is None or (rid, c.account.device) not in self._claims:
            return c
        return dataclasses.replace(c, claimed=True)

    def claims_of(self, credit: bytes, author: bytes) -> list[tuple[bytes, int]]:
        return list(self._claims.get((credit, author), ()))

    def idem(self, author: bytes, key: str) -> list[tuple[bytes, int]]:
        return list(self._idem.get((author, key), ()))

    def prefetch_idem(self, pairs: list[tuple[bytes, str]]) -> None:
        return None  # everything is in memory already

    def ids_at(self, author: bytes, seq: int) -> list[bytes]:
        return list(self._at.get((author, seq), ()))

    def forked(self, author: bytes) -> bool:
        return any(e[0] == author for e in self._equivocations)

    def cover(self, checkpoint: bytes, author: bytes) -> tuple[int, bytes] | None:
        return self._covers.get((checkpoint, author))

    def covered_seq(self, author: bytes) -> int:
        return self._covered.get(author, 0)

    def latest_cover(self, author: bytes) -> tuple[bytes, int, bytes] | None:
        found = [(seq, cp, rid) for (cp, a), (seq, rid) in self._covers.items() if a == author]
        if not found:
            return None
        seq, cp, rid = max(found)
        return cp, seq, rid

    def revocations(self, device: bytes) -> list[tuple[int, bytes]]:
        return sorted(self._revocations.get(device, ()))

    def tips(self) -> list[Tip]:
        return sorted((Tip(author=a, seq=s, id=i) for a, t in self._tips.items()
                       for i, s in t.items()), key=lambda t: (t.author, t.seq, t.id))

    def tips_of(self, author: bytes) -> list[Tip]:
        return sorted((Tip(author=author, seq=s, id=i) for i, s in self._tips[author].items()),
                      key=lambda t: (t.seq, t.id)) if author in self._tips else []

    def records_of(self, author: bytes, after_seq: int) -> list[tuple[int, StoredRecord]]:
        rows = (self._rows[i] for i in self._by_author.get(author, ()))
        return [(self._order[r.id], r) for r in rows if r.seq > after_seq]

    def raws_in_order(self, rids: list[bytes]) -> list[bytes]:
        return [self._raw[i] for i in sorted(rids, key=self._order.__getitem__)]

    def all_ids_in_order(self) -> Iterator[bytes]:
        return iter(list(self._order))

    def apply(self, fx: Effects) -> None:
        # One undo step per record (`_unapply`, with what the writes replaced), rather
        # than a closure per write: every simulated replica applies every record.
        row = fx.row
        rid, author = row.id, row.author
        self._rows[rid] = row
        self._raw[rid] = fx.raw
        self._order[rid] = len(self._order)
        self._by_author[author].append(rid)
        self._at[(author, row.seq)].append(rid)
        tips = self._tips[author]
        prev_seq = tips.pop(row.prev, None) if row.prev is not None else None
        tips[rid] = row.seq
        if fx.admit:
            self._admits[rid] = fx.admit
        credit = fx.credit
        if credit:
            self._credits[rid] = credit
            self._unclaimed[credit.account.device][rid] = credit
        claimed: list[Credit | None] = []
        if fx.claims:
            unclaimed = self._unclaimed[author]
            for c in fx.claims:
                self._claims[(c, author)].append((rid, row.seq))
                claimed.append(unclaimed.pop(c, None))
        if fx.idem_key is not None:
            self._idem[(author, fx.idem_key)].append((rid, row.seq))
        balances, histories = self._balances, self._history
        for m in fx.movements:
            balances[m.account] += m.delta
            histories[m.account].append((rid, row.kind.value, row.hlc, author, row.seq,
                                         m.delta))
        for other in fx.equivocates_with:
            self._equivocations.append((author, row.seq, *sorted((other, rid))))  # type: ignore[arg-type]
        meta_was: tuple[tuple[Account, str], tuple[int, bytes, bytes, str] | None] | None = None
        if fx.meta is not None:
            account, name, value = fx.meta
            key = (account, name)
            old = self._meta.get(key)
            if old is None or old[:3] < (row.hlc, author, rid):
                self._meta[key] = (row.hlc, author, rid, value)
                meta_was = (key, old)
        covered_was: list[tuple[bytes, int | None] | None] = []
        for cover_author, seq, covered in fx.covers:
            self._covers[(rid, cover_author)] = (seq, covered)
            was_covered = self._covered.get(cover_author)
            if was_covered is None or seq > was_covered:
                self._covered[cover_author] = seq
                covered_was.append((cover_author, was_covered))
            else:
                covered_was.append(None)
        if fx.revoke is not None:
            self._revocations[fx.revoke[0]].append((fx.revoke[1], rid))
        before = (self._issued, self._redeemed, self._max_hlc)
        self._issued += fx.issued
        self._redeemed += fx.redeemed
        if row.hlc > self._max_hlc:
            self._max_hlc = row.hlc
        if self._undo is not None:
            self._undo.append(functools.partial(
                self._unapply, fx, prev_seq, claimed, meta_was, covered_was, before))

    def _unapply(self, fx: Effects, prev_seq: int | None, claimed: list[Credit | None],
                 meta_was: tuple[tuple[Account, str], tuple[int, bytes, bytes, str] | None]
                 | None, covered_was: list[tuple[bytes, int | None] | None],
                 before: tuple[int, int, int]) -> None:
        """Undo one `apply`: its writes in the reverse order, each entry back to what it
        was (a record paying its own chain both credits and claims itself)."""
        row = fx.row
        rid, author = row.id, row.author
        self._restore_totals(*before)
        if fx.revoke is not None:
            self._revocations[fx.revoke[0]].pop()
        for (cover_author, _, _), was in zip(reversed(fx.covers), reversed(covered_was),
                                             strict=True):
            if was is not None:
                self._restore_covered(*was)
            self._covers.pop((rid, cover_author))
        if meta_was is not None:
            key, old = meta_was
            if old is None:
                self._meta.pop(key)
            else:
                self._meta[key] = old
        for _ in fx.equivocates_with:
            self._equivocations.pop()
        for m in reversed(fx.movements):
            self._history[m.account].pop()
            self._add_balance(m.account, -m.delta)
        if fx.idem_key is not None:
            self._idem[(author, fx.idem_key)].pop()
        for c, credit_was in zip(reversed(fx.claims), reversed(claimed), strict=True):
            if credit_was is not None:
                self._unclaimed[author][c] = credit_was
            self._claims[(c, author)].pop()
        if fx.credit:
            self._unclaimed[fx.credit.account.device].pop(rid, None)
            self._credits.pop(rid, None)
        if fx.admit:
            self._admits.pop(rid, None)
        tips = self._tips[author]
        tips.pop(rid, None)
        if prev_seq is not None:
            tips[row.prev] = prev_seq  # type: ignore[index]
        self._forget(row)

    def _restore_covered(self, author: bytes, seq: int | None) -> None:
        if seq is None:
            self._covered.pop(author, None)
        else:
            self._covered[author] = seq

    def _add_balance(self, account: Account, delta: int) -> None:
        self._balances[account] += delta

    def _prune(self) -> None:
        """After a rollback: drop the keys the undone writes created, so that the store
        reads exactly as before (an author with no records, an account that never
        moved, a credit nobody claimed)."""
        tables: tuple[dict[Any, Any], ...] = (
            self._by_author, self._at, self._unclaimed, self._claims, self._idem, self._tips,
            self._history, self._revocations)
        for table in tables:
            for k in [k for k, v in table.items() if not v]:
                del table[k]
        for account in [a for a, v in self._balances.items()
                        if v == 0 and a not in self._history]:
            del self._balances[account]

    def _forget(self, row: StoredRecord) -> None:
        del self._rows[row.id], self._raw[row.id], self._order[row.id]
        self._by_author[row.author].remove(row.id)
        self._at[(row.author, row.seq)].remove(row.id)

    def _restore_totals(self, issued: int, redeemed: int, max_hlc: int) -> None:
        self._issued, self._redeemed, self._max_hlc = issued, redeemed, max_hlc

    def balance(self, account: Account) -> int:
        return self._balances.get(account, 0)

    def balances(self) -> dict[Account, int]:
        return dict(self._balances)

    def totals(self) -> Totals:
        return Totals(records=len(self._rows), authors=len(self._tips), issued=self._issued,
                      redeemed=self._redeemed, max_hlc=self._max_hlc)

    def max_hlc(self) -> int:
        return self._max_hlc

    def unclaimed_credits(self, device: bytes) -> list[Credit]:
        return list(self._unclaimed.get(device, {}).values())

    def equivocations(self) -> list[tuple[bytes, int, bytes, bytes]]:
        return sorted(self._equivocations)

    def history(self, account: Account) -> list[HistoryEntry]:
        return [HistoryEntry(id=rid, kind=Kind(kind), hlc=hlc, author=author, seq=seq,
                             delta=delta)
                for rid, kind, hlc, author, seq, delta in self._history.get(account, ())]

    def meta(self, account: Account) -> dict[str, str]:
        return {k[1]: v[3] for k, v in sorted(self._meta.items(), key=lambda kv: kv[0][1])
                if k[0] == account}

