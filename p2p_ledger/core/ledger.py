"""The replica: a set of verified records (the CRDT) and the ledger rules over it.

Merging is set union. A record is *applied* (stored, with a verdict) only once its
`prev` and `refs` are held, so every record is judged on its complete causal past and
on nothing else. That is why the verdict of a record is the same in every replica and
never changes when later records arrive, and why every derived view (balances,
histories, the state hash) is a function of the record set alone.

The rules, in the order `_judge` applies them:

1. Chain: seq 1 has no prev; otherwise prev is the author's record at seq-1 and the
   hlc strictly increases. A break makes the record invalid: it is not stored.
2. Admission: the authority needs none; any other author's seq-1 record must ref an
   applied `admit` of its key. Later records inherit it along the chain.
3. Claims: each ref that is an applied credit to one of the author's accounts, and
   that no earlier record of the author's chain claimed, adds to that account's
   chain balance. This is how a payee's chain takes in the money it received. A
   transfer to one of the author's own accounts is claimed by itself at once.
4. The kind's rule gives the verdict: `duplicate` for a second money record with an
   idempotency key already used in the chain, `rejected` with a reason (a debit the
   chain balance does not cover, an authority-only kind from a device), else
   `applied` with its effects on balances.

Two records of one author at one seq are an equivocation: both are kept, each judged
on its own causal past, and every pair of records at that seq is recorded as evidence
(the same pairs whatever the arrival order).

Records arrive as bytes and the current time; nothing here reads a clock, a socket or
a file. Records that wait for their causal past sit in a bounded pending area
(`pending.py`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr

from ..errors import InvalidRecord
from ..errors import RecordProblem as P
from .checking import (
    _CHUNKS_AHEAD,
    _FIRST_VERIFY_CHUNK,
    _VERIFY_CHUNK,
    CheckingAhead,
    Verifier,
    _Chunk,
    _chunk_sizes,
)
from .collector import gc_paused
from .hlc import hlc_ms
from .ids import Account
from .money import format_amount
from .network import NetworkDescriptor
from .pending import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_BYTES_PER_ORIGIN,
    _Pending,
)
from .records import (
    INT_LIMIT,
    Admit,
    Checkpoint,
    Issue,
    Kind,
    Meta,
    Record,
    Redeem,
    Revoke,
    SignedRecord,
    Transfer,
    parse_record,
    record_id,
    signed_raw,
    start_verifying,
    verify_signature,
)
from .store import (
    AdmitInfo,
    BatchDelta,
    ChainState,
    Credit,
    Effects,
    LedgerStore,
    Movement,
    StoredRecord,
    Tip,
    Verdict,
)

__all__ = ["Applied", "CheckingAhead", "Delivery", "Frontier", "IngestReport", "OfflineLimits",
           "Replica"]

DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000

# The record checks `receive`, `check_ahead` and `receive_many` call, as module
# variables: compiled by mypyc (the opt-in build, specs/build.md), a call of an imported
# function is a direct C call that nothing can replace, while a module variable is looked
# up in the module's dict at each call in both builds. sim/accel.py's shared checks
# replace these two while a simulation runs.
_parse_record: Callable[[bytes], SignedRecord] = parse_record
_verify_signature: Callable[[SignedRecord, bytes], None] = verify_signature
_MAX_REMEMBERED = 10_000  # admits whose offline limits are kept worked out
_CREDIT_KINDS = (Kind.ISSUE, Kind.TRANSFER)
_RefRows = list[tuple[bytes, StoredRecord]]
_STATE_HASH_CONTEXT = b"p2p-ledger state v1\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """A record that was stored, with its verdict."""

    record: SignedRecord
    verdict: Verdict
    reason: str | None = None
    equivocates_with: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """The outcome of handing one record to the replica."""

    applied: tuple[Applied, ...] = ()
    refused: tuple[InvalidRecord, ...] = ()  # records released from pending that failed
    waiting: bool = False
    already_held: bool = False


@dataclass(slots=True, kw_only=True)
class IngestReport:
    """The outcome of a batch: what was stored, refused, left waiting or already held."""

    applied: list[Applied] = field(default_factory=list)
    refused: list[tuple[int | None, InvalidRecord]] = field(default_factory=list)
    waiting: int = 0  # records in the pending area when the batch ended
    already_held: int = 0
    # records of this batch not in the store when it ended: refused, or parked pending
    # (what a STORED acknowledgement must not count as stored)
    unstored: int = 0
    # The records of `applied` that had waited in the pending area and were released
    # by this batch, each with the origins that delivered it: not necessarily this
    # batch's origin, which may only have brought their causal past (a node relays
    # such a record to that origin's peer too; specs/node.md section 2).
    released: dict[bytes, frozenset[Hashable]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Frontier:
    """Per author, the tips of its chain held: normally one (seq, id), more after a fork."""

    tips: Mapping[bytes, tuple[tuple[int, bytes], ...]]

    @classmethod
    def from_tips(cls, tips: Iterable[Tip]) -> Frontier:
        out: dict[bytes, list[tuple[int, bytes]]] = {}
        for t in tips:
            out.setdefault(t.author, []).append((t.seq, t.id))
        return cls({a: tuple(sorted(v)) for a, v in out.items()})

    def tip_count(self) -> int:
        return sum(len(t) for t in self.tips.values())

    def to_list(self) -> list[list[object]]:
        return [[a, s, i] for a in sorted(self.tips) for s, i in self.tips[a]]

    @classmethod
    def from_list(cls, items: object) -> Frontier:
        if not isinstance(items, list):
            raise ValueError("a frontier is a list of [author, seq, id]")
        tips: list[Tip] = []
        for it in items:
            if (not isinstance(it, list) or len(it) != 3 or type(it[0]) is not bytes
                    or len(it[0]) != 32 or type(it[1]) is not int
                    or not 1 <= it[1] < INT_LIMIT
                    or type(it[2]) is not bytes or len(it[2]) != 32):
                raise ValueError("a frontier entry is [author: 32 bytes, seq: 1 to 2**63 - 1, "
                                 "id: 32 bytes]")
            tips.append(Tip(author=it[0], seq=it[1], id=it[2]))
        return cls.from_tips(tips)


@mypyc_attr(allow_interpreted_subclasses=True)  # tests subclass it (specs/build.md)
class Replica:
    """One replica of one network's ledger, over a `LedgerStore`."""

    def __init__(self, network: NetworkDescriptor, store: LedgerStore, *,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
                 max_pending_bytes_per_origin: int = DEFAULT_MAX_PENDING_BYTES_PER_ORIGIN,
                 max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
                 verifier: Verifier = start_verifying) -> None:
        self.network = network
        # How a batch's signatures are checked ahead of judging: by default on a worker
        # thread; the node uses a child process (node/verifier.py).
        self.verifier = verifier
        self.network_id = network.network_id
        self.store = store
        self.max_skew_ms = max_skew_ms
        self._pending = _Pending(max_pending, max_pending_bytes, max_pending_bytes_per_origin)
        self._batch_applied: set[bytes] = set()  # ids applied by the running receive_many
        self._limits_by_admit: dict[bytes, OfflineLimits] = {}

    # ------------------------------------------------------------ receiving

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """What the pending area holds, by `pending_cost`."""
        return self._pending.bytes

    def pending_bytes_of(self, origin: Hashable) -> int:
        """What the records `origin` delivered and that still wait hold (`pending_cost`)."""
        return self._pending.used.get(origin, 0)

    def pending_totals(self) -> tuple[int, int, int]:
        """Records (parked, released, dropped) by this replica's pending area since it
        was made: parked for want of their causal past, released to be judged once it
        arrived, let go unreleased (their session ended, or evicted)."""
        p = self._pending
        return p.parked, p.released, p.dropped

    def pending(self) -> list[tuple[bytes, frozenset[bytes]]]:
        """Records waiting for their causal past, with the ids each still lacks."""
        return [(rid, frozenset(w.missing)) for rid, w in self._pending.records.items()]

    def forget_origin(self, origin: Hashable) -> int:
        """Drop the pending records that `origin` delivered, unless another origin
        delivered them too; returns how many were dropped. The node calls it when a
        session ends: that session can never send their missing past any more, and
        its peer sends them again, with their past, in its next session."""
        return self._pending.forget(origin)

    def receive(self, raw: bytes, *, now_ms: int, origin: Hashable = None) -> Delivery:
        """Verify one record and apply it (and whatever it releases from pending).

        `origin` is an opaque key for where the record came from (the node passes its
        session): the pending area is bounded per origin (`_Pending`).

        Raises InvalidRecord if this record fails verification; then nothing changed.
        The caller must run this inside `store.transaction()` and acknowledge the
        applied records only after the transaction commits.
        """
        rec = _parse_record(raw)
        if rec.id in self._pending:
            return Delivery(refused=tuple(self._pending.also_from(rec.id, origin)),
                            already_held=True)
        if self.store.has(rec.id):
            return Delivery(already_held=True)
        self._check_clock(rec, now_ms)
        _verify_signature(rec, self.network_id)
        return self._accept(rec, origin)

    def check_ahead(self, raws: Iterable[bytes | SignedRecord]) -> CheckingAhead:
        """Parse a batch and start checking its signatures now; `receive_many` takes it
        later. The node hands each frame to the checks before it judges the frame before,
        so the checks of one overlap the judging of the other. A record held by the time
        it is received was checked for nothing (on the verifier's core)."""
        ids: list[bytes] = []
        refused: list[tuple[int | None, InvalidRecord]] = []
        parsed: list[tuple[int, SignedRecord]] = []
        for index, raw in enumerate(raws):
            try:
                rec = raw if isinstance(raw, SignedRecord) else _parse_record(raw)
            except InvalidRecord as exc:
                refused.append((index, exc))
                continue
            ids.append(rec.id)
            parsed.append((index, rec))
        chunks = []
        sizes = _chunk_sizes()
        while parsed:
            size = next(sizes)
            chunks.append(_Chunk.started(parsed[:size], self.network_id, self.verifier))
            del parsed[:size]
        return CheckingAhead(chunks, ids, refused)

    def receive_many(self, raws: Iterable[bytes | SignedRecord] | CheckingAhead, *,
                     now_ms: int, origin: Hashable = None) -> IngestReport:
        """Receive a batch, collecting every outcome instead of raising.

        Items are record bytes, or records already decoded but not verified
        (`SignedRecord`, whose fields agree with its bytes by construction): either
        way each signature is checked here.

        Same result as calling `receive` on each in turn, with the same `origin`.
        The batch is cut in chunks (64 records, then twice as many each time up to
        1024); while one chunk is judged and stored, the signatures of the next two
        are being checked (`self.verifier`: a worker thread, or the node's child
        process). Python's cyclic garbage collector is paused meanwhile (`gc_paused`):
        the batch keeps every record it handles alive, and each full collection would
        walk them all.

        A batch from `check_ahead` gives the same result, except that records that do
        not parse come first in `refused`."""
        with gc_paused():
            if isinstance(raws, CheckingAhead):
                return self._receive_checked(raws, now_ms=now_ms, origin=origin)
            return self._receive_many(raws, now_ms=now_ms, origin=origin)

    def _receive_checked(self, batch: CheckingAhead, *, now_ms: int,
                         origin: Hashable) -> IngestReport:
        report = IngestReport(refused=list(batch._refused), unstored=len(batch._refused))
        self._batch_applied = set()
        for chunk in batch._chunks:
            kept = self._unheld(chunk.records, report, now_ms, origin)
            self._receive_chunk(chunk.narrowed(kept), report, origin)
        return self._finish(report, batch._ids)

    def _receive_many(self, raws: Iterable[bytes | SignedRecord], *, now_ms: int,
                      origin: Hashable) -> IngestReport:
        report = IngestReport()
        chunk: list[tuple[int, SignedRecord]] = []
        size = _FIRST_VERIFY_CHUNK
        in_flight: deque[_Chunk] = deque()
        self._batch_applied = set()
        ids: list[bytes] = []
        for index, raw in enumerate(raws):
            if isinstance(raw, SignedRecord):
                rec = raw  # decoded already (a compact RECORDS frame), not yet verified
            else:
                try:
                    rec = _parse_record(raw)
                except InvalidRecord as exc:
                    report.refused.append((index, exc))
                    report.unstored += 1
                    continue
            ids.append(rec.id)
            chunk.append((index, rec))
            if len(chunk) >= size:
                size = min(2 * size, _VERIFY_CHUNK)
                in_flight.append(_Chunk.started(self._unheld(chunk, report, now_ms, origin),
                                                self.network_id, self.verifier))
                chunk = []
                if len(in_flight) > _CHUNKS_AHEAD:
                    self._receive_chunk(in_flight.popleft(), report, origin)
        in_flight.append(_Chunk.started(self._unheld(chunk, report, now_ms, origin),
                                        self.network_id, self.verifier))
        while in_flight:
            self._receive_chunk(in_flight.popleft(), report, origin)
        return self._finish(report, ids)

    def _finish(self, report: IngestReport, ids: list[bytes]) -> IngestReport:
        report.waiting = len(self._pending)
        # Stored now: applied by this batch, or held in the store before it (a record
        # held only in the pending area, or refused, is not).
        maybe = [rid for rid in ids if rid not in self._batch_applied]
        if maybe:
            held = self.store.held_among(maybe)
            report.unstored += sum(1 for rid in maybe if rid not in held)
        return report

    def _receive_chunk(self, chunk: _Chunk, report: IngestReport, origin: Hashable) -> None:
        self.store.prefetch_idem([
            (rec.record.author, body.key) for _, rec in chunk.records
            if isinstance(body := rec.record.body, (Issue, Transfer, Redeem))])
        applied, batch_applied, pending = report.applied, self._batch_applied, self._pending
        released_failures: list[InvalidRecord] = []
        for (index, rec), failure in zip(chunk.records, chunk.failures(), strict=True):
            if failure is not None:
                report.refused.append((index, failure))
                continue
            if rec.id in batch_applied or rec.id in pending:
                report.already_held += 1  # the same record twice in one batch
                continue
            before = len(applied)
            try:
                self._take(rec, applied, released_failures, origin, report.released)
            except InvalidRecord as exc:
                report.refused.append((index, exc))
                continue
            for a in applied[before:]:
                batch_applied.add(a.record.id)
            if released_failures:
                report.refused.extend((None, e) for e in released_failures)
                released_failures.clear()

    def _unheld(self, chunk: list[tuple[int, SignedRecord]], report: IngestReport,
                now_ms: int, origin: Hashable) -> list[tuple[int, SignedRecord]]:
        """The chunk without what is held already (stored or pending: then `origin`
        holds it too), counted, and without records from too far in the future,
        refused."""
        held = self.store.held_among([rec.id for _, rec in chunk])
        out = []
        for index, rec in chunk:
            if rec.id in self._pending:
                report.refused.extend((None, e) for e in self._pending.also_from(rec.id, origin))
            if rec.id in held or rec.id in self._pending:
                report.already_held += 1
                continue
            try:
                self._check_clock(rec, now_ms)
            except InvalidRecord as exc:
                report.refused.append((index, exc))
                continue
            out.append((index, rec))
        return out

    def _check_clock(self, rec: SignedRecord, now_ms: int) -> None:
        ahead = hlc_ms(rec.record.hlc) - now_ms
        if ahead > self.max_skew_ms:
            raise InvalidRecord(
                P.FUTURE_TIMESTAMP, f"timestamp is {ahead} ms ahead of this clock "
                f"(limit {self.max_skew_ms} ms); try again later", record_id=rec.hex_id)

    def _accept(self, rec: SignedRecord, origin: Hashable) -> Delivery:
        """Apply a verified record now, or park it until its causal past is held."""
        applied: list[Applied] = []
        refused: list[InvalidRecord] = []
        waiting = self._take(rec, applied, refused, origin, {})
        return Delivery(applied=tuple(applied), refused=tuple(refused), waiting=waiting)

    def _take(self, rec: SignedRecord, applied: list[Applied],
              refused: list[InvalidRecord], origin: Hashable,
              released: dict[bytes, frozenset[Hashable]]) -> bool:
        """`_accept` appending to the caller's lists (no Delivery per record in a batch)
        and noting in `released` the origins of each record it releases from the
        pending area. Returns whether `rec` was parked; raises InvalidRecord if `rec`
        itself fails."""
        missing = self._missing(rec)
        if missing:
            refused.extend(self._pending.add(rec, missing, origin))
            return True
        done = self._apply(rec)
        if done is not None:
            applied.append(done)
        if not self._pending.waiters:
            return False  # nothing waits for anything: nothing to release
        queue = self._pending.release(rec.id)
        while queue:
            nxt, origins = queue.pop(0)
            try:
                done = self._apply(nxt)
            except InvalidRecord as exc:
                refused.append(exc)
                continue
            if done is not None:
                applied.append(done)
                released[nxt.id] = origins
            queue.extend(self._pending.release(nxt.id))
        return False

    def _missing(self, rec: SignedRecord) -> set[bytes]:
        r = rec.record
        has = self.store.has
        missing = {d for d in r.refs if not has(d)}
        if r.prev is not None and not has(r.prev):
            missing.add(r.prev)
        return missing

    def _apply(self, rec: SignedRecord) -> Applied | None:
        """Judge and store one record whose causal past is held; None if another writer
        of the store (a front-end on the same database) stored it meanwhile. The
        author's records are judged one at a time across writers (`lock_author`), so
        a fork's branches, or one record, arriving at two writers at once are judged
        as if they came one after the other."""
        if self.store.lock_author(rec.record.author) and self.store.has(rec.id):
            return None
        fx = self._judge(rec)
        self.store.apply(fx)
        return Applied(record=rec, verdict=fx.row.verdict, reason=fx.row.reason,
                       equivocates_with=fx.equivocates_with)

    # ------------------------------------------------------------ the rules

    def _judge(self, rec: SignedRecord) -> Effects:
        r = rec.record
        store = self.store
        prev = self._check_chain(rec)
        chain = prev.chain if prev is not None else ChainState(admit=self._admission(rec))
        # The refs' rows, read once: every rule below asks about them by kind.
        refs = [(ref, row) for ref in r.refs if (row := store.get(ref)) is not None]
        if any(row.hlc >= r.hlc for _, row in refs):
            # A hybrid logical clock is after everything its record has seen.
            raise InvalidRecord(P.BROKEN_CHAIN, "hlc is not after the hlc of every ref",
                                record_id=rec.hex_id)
        admit_id = self._renewed_admit(rec, chain.admit, refs)
        info = store.admit(admit_id) if admit_id is not None else None
        role = "authority" if info is None else info.role
        limits = self._limits(info)
        known = self._authority_seq(rec, chain, refs)
        balances = dict(chain.balances)
        claims = []
        for ref, ref_row in refs:
            if ref_row.kind not in _CREDIT_KINDS or ref_row.verdict is not Verdict.APPLIED:
                continue
            credit = store.credit(ref)
            if credit is None or credit.account.device != r.author:
                continue
            if credit.claimed and self._earlier_in_chain(store.claims_of(ref, r.author), rec):
                continue
            if self._revoked_row(ref_row, known):
                continue  # paid by a device this record knows was revoked by then
            name = credit.account.name
            if limits is not None and balances.get(name, 0) + credit.amount > limits.holding:
                continue  # over the holding limit: left unclaimed, for a later record
            balances[name] = balances.get(name, 0) + credit.amount
            claims.append(ref)
        settled = max(chain.settled_debited, self._settled_by_refs(rec, refs))
        others = self.store.ids_at(r.author, r.seq)
        cut = self._revocation_cut(r.author, known)
        rule = _KindRule(self, rec, balances, role, limits, chain.debited - settled,
                         revoked_after=cut if cut is not None and r.seq > cut else None)
        verdict, reason = rule.verdict()
        applied = verdict is Verdict.APPLIED
        if rule.credit is not None and applied and rule.credit.account.device == r.author:
            # Paying one's own account: the chain takes the credit in at once.
            balances[rule.credit.account.name] = (
                balances.get(rule.credit.account.name, 0) + rule.credit.amount)
            claims.append(rec.id)
        new_chain = ChainState(admit=admit_id, balances=tuple(sorted(balances.items())),
                               debited=chain.debited + (rule.debit if applied else 0),
                               settled_debited=settled, authority_seq=known)
        row = StoredRecord(id=rec.id, author=r.author, seq=r.seq, prev=r.prev, kind=r.kind,
                           hlc=r.hlc, verdict=verdict, reason=reason, chain=new_chain)
        return Effects(
            row=row, raw=rec.raw, idem_key=rule.idem_key, claims=tuple(claims),
            credit=rule.credit if applied else None,
            movements=rule.movements if applied else (),
            issued=rule.issued if applied else 0, redeemed=rule.redeemed if applied else 0,
            admit=rule.admit if applied else None,
            equivocates_with=tuple(others),
            meta=rule.meta if applied else None,
            covers=rule.covers if applied else (),
            revoke=rule.revoke if applied else None)

    def _authority_seq(self, rec: SignedRecord, chain: ChainState, refs: _RefRows) -> int:
        """The highest seq of the authority's (linear) chain in the record's causal past."""
        r = rec.record
        if r.author == self.network.authority:
            return r.seq
        known = chain.authority_seq
        for _, row in refs:
            known = max(known, row.seq if row.author == self.network.authority
                        else row.chain.authority_seq)
        return known

    def _revocation_cut(self, device: bytes, known: int) -> int | None:
        """The lowest revocation cut-off of `device` among the revocations in a causal
        past that holds the authority's chain up to seq `known` (None: none)."""
        cuts = [after for after, rid in self.store.revocations(device)
                if (row := self.store.get(rid)) is not None and row.seq <= known]
        return min(cuts) if cuts else None

    def _revoked_row(self, row: StoredRecord, known: int) -> bool:
        """Whether a stored record comes after a revocation cut-off of its author that a
        causal past holding the authority's chain up to `known` knows about."""
        cut = self._revocation_cut(row.author, known)
        return cut is not None and row.seq > cut

    def _renewed_admit(self, rec: SignedRecord, current: bytes | None,
                       refs: _RefRows) -> bytes | None:
        """A record may ref a newer admit of its author (a renewed certificate, another
        tier): from then on the chain uses the newest (by hlc, then id) it has seen."""
        r = rec.record
        if current is None:
            return None  # the authority
        best = current
        best_row: StoredRecord | None = None
        for ref, row in refs:
            if row.kind is not Kind.ADMIT or ref == current:
                continue
            info = self.store.admit(ref)
            if info is None or info.device != r.author:
                continue
            best_row = best_row or self.store.get(best)
            if best_row is None or (row.hlc, ref) > (best_row.hlc, best):
                best, best_row = ref, row
        return best

    def _limits(self, info: AdmitInfo | None) -> OfflineLimits | None:
        """The offline limits of a chain admitted as a device (None: unlimited)."""
        if info is None or info.role != "device" or not self.network.limited:
            return None
        # An admit's limits follow from its record (named by its id) and the network
        # alone, so they are worked out once per admit: every record of the chain asks.
        limits = self._limits_by_admit.get(info.id)
        if limits is None:
            limits = self._limits_of(info)
            if len(self._limits_by_admit) < _MAX_REMEMBERED:
                self._limits_by_admit[info.id] = limits
        return limits

    def _limits_of(self, info: AdmitInfo) -> OfflineLimits:
        tier = self.network.tier(info.tier)
        assert tier is not None, "an admit with an unknown tier is never applied"
        unsettled = (tier.unsettled if info.offline_limit is None
                     else min(tier.unsettled, info.offline_limit))
        return OfflineLimits(per_payment=tier.per_payment, unsettled=unsettled,
                       holding=tier.holding, expires=info.expires)

    def _settled_by_refs(self, rec: SignedRecord, refs: _RefRows) -> int:
        """The author's debited total as of the latest of its own records that a
        settlement checkpoint referenced by `rec` covers (0 if none)."""
        r = rec.record
        best = 0
        for ref, ref_row in refs:
            if ref_row.kind is not Kind.CHECKPOINT:
                continue
            cover = self.store.cover(ref, r.author)
            if cover is None:
                continue
            seq, covered = cover
            row = self.store.get(covered)
            if (row is not None and row.author == r.author
                    and (covered == r.prev or self._earlier_in_chain([(covered, seq)], rec))):
                best = max(best, row.chain.debited)
        return best

    def _check_chain(self, rec: SignedRecord) -> StoredRecord | None:
        r = rec.record
        if r.prev is None:
            return None
        prev = self.store.get(r.prev)
        assert prev is not None, "applied before its prev was held"
        if prev.author != r.author or prev.seq != r.seq - 1:
            raise InvalidRecord(P.BROKEN_CHAIN,
                                f"prev is not the author's record at seq {r.seq - 1}",
                                record_id=rec.hex_id)
        if r.hlc <= prev.hlc:
            raise InvalidRecord(P.BROKEN_CHAIN, "hlc does not increase along the chain",
                                record_id=rec.hex_id)
        return prev

    def _admission(self, rec: SignedRecord) -> bytes | None:
        """The admit record id that lets this seq-1 record's author in."""
        r = rec.record
        if r.author == self.network.authority:
            return None
        for ref in r.refs:
            info = self.store.admit(ref)
            if info is not None and info.device == r.author:
                return ref
        raise InvalidRecord(P.NOT_ADMITTED,
                            "the author's first record refs no admit record for its key",
                            record_id=rec.hex_id)

    def _earlier_in_chain(self, candidates: list[tuple[bytes, int]], rec: SignedRecord) -> bool:
        """Whether any (id, seq) of the author's is an ancestor of `rec` in its chain."""
        r = rec.record
        earlier = {rid for rid, seq in candidates if seq < r.seq}
        if not earlier:
            return False
        if not self.store.forked(r.author):
            return True  # a linear chain: every lower seq is an ancestor
        lowest = min(seq for _, seq in candidates)
        cursor = r.prev
        while cursor is not None:
            if cursor in earlier:
                return True
            row = self.store.get(cursor)
            if row is None or row.seq <= lowest:
                return False
            cursor = row.prev
        return False

    # ------------------------------------------------------------ views

    def frontier(self) -> Frontier:
        return Frontier.from_tips(self.store.tips())

    def delta(self, since: Frontier, *, complete: bool = True,
              authors: Iterable[bytes] | None = None) -> list[bytes]:
        """The records held here that a replica at `since` lacks, in causal order.

        `authors`, when given, limits the comparison to those authors: the caller
        knows that for every other author the replica at `since` holds the same tips
        as this one (a summary sketch tells exactly which authors differ).

        For a fork-free author this is exact. Where `since` names a tip of an author
        that is not held here, the two chains may have forked: with `complete` (the
        default, for one-way exchanges such as bundles) the author's whole chain is
        sent, a superset of what is missing. A live session passes complete=False: if
        the peer's unknown tip is above ours, the peer is taken to be ahead and nothing
        of that author is sent; if it had forked, the peer's own delta brings its
        branch here, and the node then pushes ours as evidence."""
        wanted: list[bytes] = []
        store = self.store
        ours = ({t.author for t in store.tips()} if authors is None
                else {a for a in authors if store.tips_of(a)})
        forked: Callable[[bytes], bool] = store.forked
        has: Callable[[bytes], bool] = store.has
        if isinstance(store, BatchDelta):  # the same questions, a few queries in all
            forks = {author for author, _, _, _ in store.equivocations()}
            held = store.held_among([since.tips[a][0][1] for a in ours
                                     if len(since.tips.get(a, ())) == 1])
            forked, has = forks.__contains__, held.__contains__
        after: dict[bytes, int] = {}  # fork-free authors: what is above this seq
        for author in ours:
            theirs = since.tips.get(author, ())
            if not theirs:
                after[author] = 0
            elif len(theirs) == 1 and not forked(author) and has(theirs[0][1]):
                after[author] = theirs[0][0]
            elif (not complete and len(theirs) == 1 and not forked(author)
                  and theirs[0][0] > max(t.seq for t in store.tips_of(author))):
                continue
            else:
                known = self._ancestors({rid for _, rid in theirs})
                wanted.extend(row.id for _, row in store.records_of(author, 0)
                              if row.id not in known)
        if isinstance(store, BatchDelta):
            return store.delta_raws(after, wanted)
        for author, seq in after.items():
            wanted.extend(row.id for _, row in store.records_of(author, seq))
        return store.raws_in_order(wanted)

    def _ancestors(self, ids: set[bytes]) -> set[bytes]:
        seen: set[bytes] = set()
        stack = [i for i in ids if self.store.has(i)]
        while stack:
            rid = stack.pop()
            if rid in seen:
                continue
            seen.add(rid)
            row = self.store.get(rid)
            if row is not None and row.prev is not None:
                stack.append(row.prev)
        return seen

    def state_hash(self) -> bytes:
        """Digest of the record set: the sorted tips of every author's chain, each of
        which commits to its whole chain through prev."""
        h = hashlib.blake2b(_STATE_HASH_CONTEXT, digest_size=32)
        for t in self.store.tips():
            h.update(t.author + t.seq.to_bytes(8, "big") + t.id)
        return h.digest()

    def verdict(self, rid: bytes) -> tuple[Verdict, str | None] | None:
        row = self.store.get(rid)
        return None if row is None else (row.verdict, row.reason)

    def balance(self, account: Account) -> int:
        return self.store.balance(account)

    def balances(self) -> dict[Account, int]:
        return self.store.balances()

    def conserved(self) -> bool:
        """Money conservation: the sum of all balances equals issued minus redeemed."""
        t = self.store.totals()
        return sum(self.store.balances().values()) == t.issued - t.redeemed

    def spendable(self, account: Account) -> int:
        """What `account`'s owner can debit now: its chain balance at the head plus the
        credits its chain has not claimed yet."""
        head = self.head(account.device)
        chain = head.chain.balance(account.name) if head is not None else 0
        return chain + sum(c.amount for c in self.store.unclaimed_credits(account.device)
                           if c.account == account)

    def preview(self, record: Record) -> tuple[Verdict, str | None]:
        """The verdict `record` would get if it were signed and applied now, without
        signing or storing anything (the wallet asks before it signs)."""
        payload = record.payload()
        raw = signed_raw(payload, bytes(64))
        rec = SignedRecord(record=record, signature=bytes(64), payload=payload, raw=raw,
                           id=record_id(raw))
        try:
            fx = self._judge(rec)
        except InvalidRecord as exc:
            return Verdict.REJECTED, str(exc)
        return fx.row.verdict, fx.row.reason

    def offline_limits(self, device: bytes) -> OfflineLimits | None:
        """The limits the device's chain runs under now (None: none)."""
        head = self.head(device)
        if head is not None:
            admit_id = head.chain.admit
        else:
            admits = self.store.admits_for(device)
            admit_id = admits[-1].id if admits else None
        return self._limits(self.store.admit(admit_id) if admit_id is not None else None)

    def head(self, author: bytes) -> StoredRecord | None:
        """The author's latest record (highest seq; lowest id among equals)."""
        tips = self.store.tips_of(author)
        if not tips:
            return None
        best = min(tips, key=lambda t: (-t.seq, t.id))
        return self.store.get(best.id)


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    """A device's offline limits, from its tier and its admit, in minor units; expiry
    in Unix milliseconds."""

    per_payment: int
    unsettled: int
    holding: int
    expires: int | None


class _KindRule:
    """The verdict and effects of one record's kind, given its chain balances
    (which the rule updates in place for an applied debit), the author's offline
    limits (None for hubs and the authority) and its unsettled exposure."""

    # The effects, as class-level defaults: `verdict` sets on the instance only the
    # few that its kind has (one rule is built per record, so this is on the hot path).
    debit = 0
    covers: tuple[tuple[bytes, int, bytes], ...] = ()
    revoke: tuple[bytes, int] | None = None
    idem_key: str | None = None
    credit: Credit | None = None
    movements: tuple[Movement, ...] = ()
    issued = 0
    redeemed = 0
    admit: AdmitInfo | None = None
    meta: tuple[Account, str, str] | None = None

    def __init__(self, replica: Replica, rec: SignedRecord, balances: dict[str, int],
                 role: str, limits: OfflineLimits | None, exposure: int, *,
                 revoked_after: int | None) -> None:
        self.replica = replica
        self.revoked_after = revoked_after
        self.rec = rec
        self.balances = balances
        self.role = role
        self.limits = limits
        self.exposure = exposure

    def _fmt(self, minor: int) -> str:
        """Amounts in reasons are for people: major units and the currency."""
        return format_amount(minor, self.replica.network.currency)

    def verdict(self) -> tuple[Verdict, str | None]:
        r = self.rec.record
        body = r.body
        by_authority = r.author == self.replica.network.authority
        limits = self.limits
        # Set before any rule can reject: a rejected record uses up its key whatever the
        # rule (ledger.md section 5), so the store must index the key in every case.
        key = self.idem_key = body.key if isinstance(body, (Issue, Transfer, Redeem)) else None
        if self.revoked_after is not None:
            return Verdict.REJECTED, (f"the author's certificate was revoked after its seq "
                                      f"{self.revoked_after}, and this record knew it")
        if limits is not None and limits.expires is not None and hlc_ms(r.hlc) > limits.expires:
            return Verdict.REJECTED, "the author's certificate (admit) had expired"
        if r.kind in (Kind.ADMIT, Kind.REVOKE, Kind.ISSUE) and not by_authority:
            return Verdict.REJECTED, f"only the network authority may {r.kind.label}"
        if isinstance(body, Checkpoint):
            if self.role not in ("authority", "hub"):
                return Verdict.REJECTED, "only the authority or a hub may sign checkpoints"
            self.covers = body.covers
            return Verdict.APPLIED, None
        if (isinstance(body, Admit) and self.replica.network.limited
                and self.replica.network.tier(body.tier) is None):
            return Verdict.REJECTED, f"the network has no tier {body.tier}"
        if key is not None:
            dupes = self.replica.store.idem(r.author, key)
            if self.replica._earlier_in_chain(dupes, self.rec):
                return Verdict.DUPLICATE, "idempotency key already used by this author"
        if isinstance(body, Admit):
            self.admit = AdmitInfo(id=self.rec.id, device=body.device, role=body.role.value,
                                   tier=body.tier, offline_limit=body.offline_limit,
                                   expires=body.expires)
        elif isinstance(body, Issue):
            self.credit = Credit(id=self.rec.id, account=body.to, amount=body.amount)
            self.movements = (Movement(account=body.to, delta=body.amount),)
            self.issued = body.amount
        elif isinstance(body, (Transfer, Redeem)):
            if (isinstance(body, Transfer) and body.to.device == r.author
                    and body.to.name == body.from_):
                return Verdict.REJECTED, "a transfer to the account it debits moves nothing"
            have = self.balances.get(body.from_, 0)
            fmt = self._fmt
            if have < body.amount:
                return Verdict.REJECTED, (f"insufficient funds: {body.from_} holds {fmt(have)} "
                                          f"over this record's causal past, needs "
                                          f"{fmt(body.amount)}")
            if limits is not None and body.amount > limits.per_payment:
                return Verdict.REJECTED, (f"over the per-payment limit: {fmt(body.amount)} > "
                                          f"{fmt(limits.per_payment)}")
            if limits is not None and self.exposure + body.amount > limits.unsettled:
                return Verdict.REJECTED, (
                    f"over the offline limit: {fmt(self.exposure)} unsettled + "
                    f"{fmt(body.amount)} > {fmt(limits.unsettled)}")
            self.balances[body.from_] = have - body.amount
            self.debit = body.amount
            payer = Account(device=r.author, name=body.from_)
            if isinstance(body, Transfer):
                self.credit = Credit(id=self.rec.id, account=body.to, amount=body.amount)
                self.movements = (Movement(account=payer, delta=-body.amount),
                                  Movement(account=body.to, delta=body.amount))
            else:
                self.movements = (Movement(account=payer, delta=-body.amount),)
                self.redeemed = body.amount
        elif isinstance(body, Meta):
            self.meta = (Account(device=r.author, name=body.account), body.field, body.value)
        elif isinstance(body, Revoke):
            self.revoke = (body.device, body.after_seq)
        return Verdict.APPLIED, None
