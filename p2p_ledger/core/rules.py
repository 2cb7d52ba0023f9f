"""The per-kind rules: the verdict and effects of one record given its chain's state
(moved out of `ledger.py`; `Replica._judge` builds one `_KindRule` per record), and
the chain, admission and revocation cut-off checks `_judge` asks before it, as
functions of the store and the network."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ..errors import InvalidRecord
from ..errors import RecordProblem as P
from .hlc import hlc_ms
from .ids import Account
from .money import format_amount
from .network import NetworkDescriptor
from .records import Admit, Checkpoint, Issue, Kind, Meta, Redeem, Revoke, SignedRecord, Transfer
from .results import OfflineLimits
from .store import AdmitInfo, ChainState, Credit, LedgerStore, Movement, StoredRecord, Verdict

if TYPE_CHECKING:
    from .ledger import Replica

_RefRows = list[tuple[bytes, StoredRecord]]


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
            payee = _account(body.to.device, body.to.name)
            self.credit = Credit(id=self.rec.id, account=payee, amount=body.amount)
            self.movements = (Movement(account=payee, delta=body.amount),)
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
            payer = _account(r.author, body.from_)
            if isinstance(body, Transfer):
                payee = _account(body.to.device, body.to.name)
                self.credit = Credit(id=self.rec.id, account=payee, amount=body.amount)
                self.movements = (Movement(account=payer, delta=-body.amount),
                                  Movement(account=payee, delta=body.amount))
            else:
                self.movements = (Movement(account=payer, delta=-body.amount),)
                self.redeemed = body.amount
        elif isinstance(body, Meta):
            self.meta = (_account(r.author, body.account), body.field, body.value)
        elif isinstance(body, Revoke):
            self.revoke = (body.device, body.after_seq)
        return Verdict.APPLIED, None


@functools.lru_cache(maxsize=4096)
def _account(device: bytes, name: str) -> Account:
    """An account of a payment, one object per account: made (and validated) once, not
    for every record every replica judges, and the stores' balance tables, keyed by
    accounts, then find their key by identity, not by comparing values (issue 14)."""
    return Account(device=device, name=name)


def _authority_seq(network: NetworkDescriptor, rec: SignedRecord, chain: ChainState,
                   refs: _RefRows) -> int:
    """The highest seq of the authority's (linear) chain in the record's causal past."""
    r = rec.record
    if r.author == network.authority:
        return r.seq
    known = chain.authority_seq
    for _, row in refs:
        known = max(known, row.seq if row.author == network.authority
                    else row.chain.authority_seq)
    return known


def _revocation_cut(store: LedgerStore, device: bytes, known: int) -> int | None:
    """The lowest revocation cut-off of `device` among the revocations in a causal
    past that holds the authority's chain up to seq `known` (None: none)."""
    cuts = [after for after, rid in store.revocations(device)
            if (row := store.get(rid)) is not None and row.seq <= known]
    return min(cuts) if cuts else None


def _revoked_row(store: LedgerStore, row: StoredRecord, known: int) -> bool:
    """Whether a stored record comes after a revocation cut-off of its author that a
    causal past holding the authority's chain up to `known` knows about."""
    cut = _revocation_cut(store, row.author, known)
    return cut is not None and row.seq > cut


def _renewed_admit(store: LedgerStore, rec: SignedRecord, current: bytes | None,
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
        info = store.admit(ref)
        if info is None or info.device != r.author:
            continue
        best_row = best_row or store.get(best)
        if best_row is None or (row.hlc, ref) > (best_row.hlc, best):
            best, best_row = ref, row
    return best


def _limits_of(network: NetworkDescriptor, info: AdmitInfo) -> OfflineLimits:
    tier = network.tier(info.tier)
    assert tier is not None, "an admit with an unknown tier is never applied"
    unsettled = (tier.unsettled if info.offline_limit is None
                 else min(tier.unsettled, info.offline_limit))
    return OfflineLimits(per_payment=tier.per_payment, unsettled=unsettled,
                   holding=tier.holding, expires=info.expires)


def _check_chain(store: LedgerStore, rec: SignedRecord) -> StoredRecord | None:
    r = rec.record
    if r.prev is None:
        return None
    prev = store.get(r.prev)
    assert prev is not None, "applied before its prev was held"
    if prev.author != r.author or prev.seq != r.seq - 1:
        raise InvalidRecord(P.BROKEN_CHAIN,
                            f"prev is not the author's record at seq {r.seq - 1}",
                            record_id=rec.hex_id)
    if r.hlc <= prev.hlc:
        raise InvalidRecord(P.BROKEN_CHAIN, "hlc does not increase along the chain",
                            record_id=rec.hex_id)
    return prev


def _admission(store: LedgerStore, network: NetworkDescriptor,
               rec: SignedRecord) -> bytes | None:
    """The admit record id that lets this seq-1 record's author in."""
    r = rec.record
    if r.author == network.authority:
        return None
    for ref in r.refs:
        info = store.admit(ref)
        if info is not None and info.device == r.author:
            return ref
    raise InvalidRecord(P.NOT_ADMITTED,
                        "the author's first record refs no admit record for its key",
                        record_id=rec.hex_id)
