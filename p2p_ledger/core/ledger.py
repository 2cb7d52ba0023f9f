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

from collections import deque
from collections.abc import Callable, Hashable, Iterable

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
from .frontier import _STATE_HASH_CONTEXT, Frontier, delta, state_hash  # noqa: F401
from .hlc import hlc_ms
from .ids import Account
from .network import NetworkDescriptor
from .pending import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_BYTES_PER_ORIGIN,
    _Pending,
)
from .records import (
    Issue,
    Kind,
    Record,
    Redeem,
    SignedRecord,
    Transfer,
    parse_record,
    record_id,
    signed_raw,
    start_verifying,
    verify_signature,
)
from .results import Applied, Delivery, IngestReport, OfflineLimits
from .rules import (
    _admission,
    _authority_seq,
    _check_chain,
    _KindRule,
    _limits_of,
    _RefRows,
    _renewed_admit,
    _revocation_cut,
    _revoked_row,
)
from .store import (
    AdmitInfo,
    ChainState,
    Effects,
    LedgerStore,
    StoredRecord,
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
        prev = _check_chain(store, rec)
        chain = (prev.chain if prev is not None
                 else ChainState(admit=_admission(store, self.network, rec)))
        # The refs' rows, read once: every rule below asks about them by kind.
        refs = [(ref, row) for ref in r.refs if (row := store.get(ref)) is not None]
        if any(row.hlc >= r.hlc for _, row in refs):
            # A hybrid logical clock is after everything its record has seen.
            raise InvalidRecord(P.BROKEN_CHAIN, "hlc is not after the hlc of every ref",
                                record_id=rec.hex_id)
        admit_id = _renewed_admit(store, rec, chain.admit, refs)
        info = store.admit(admit_id) if admit_id is not None else None
        role = "authority" if info is None else info.role
        limits = self._limits(info)
        known = _authority_seq(self.network, rec, chain, refs)
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
            if _revoked_row(store, ref_row, known):
                continue  # paid by a device this record knows was revoked by then
            name = credit.account.name
            if limits is not None and balances.get(name, 0) + credit.amount > limits.holding:
                continue  # over the holding limit: left unclaimed, for a later record
            balances[name] = balances.get(name, 0) + credit.amount
            claims.append(ref)
        settled = max(chain.settled_debited, self._settled_by_refs(rec, refs))
        others = self.store.ids_at(r.author, r.seq)
        cut = _revocation_cut(store, r.author, known)
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

    def _limits(self, info: AdmitInfo | None) -> OfflineLimits | None:
        """The offline limits of a chain admitted as a device (None: unlimited)."""
        if info is None or info.role != "device" or not self.network.limited:
            return None
        # An admit's limits follow from its record (named by its id) and the network
        # alone, so they are worked out once per admit: every record of the chain asks.
        limits = self._limits_by_admit.get(info.id)
        if limits is None:
            limits = _limits_of(self.network, info)
            if len(self._limits_by_admit) < _MAX_REMEMBERED:
                self._limits_by_admit[info.id] = limits
        return limits

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
        """The records held here that a replica at `since` lacks, in causal order
        (`frontier.delta` says how)."""
        return delta(self.store, since, complete=complete, authors=authors)

    def state_hash(self) -> bytes:
        """Digest of the record set: the sorted tips of every author's chain, each of
        which commits to its whole chain through prev."""
        return state_hash(self.store)

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
