"""The local device's side: building and signing its own records.

A `Wallet` holds the device's signing key and a replica. It picks the next seq and
prev from the device's chain, refs the credits the chain has not claimed yet (and, for
a device's first record, its admit record), stamps a hybrid logical clock value after
everything the replica has seen, and refuses before signing anything the ledger would
reject: an overdraft, an idempotency key reused for a different payment.

Applying the record goes through `Replica.receive` like any record from elsewhere, so
local and remote records are judged by the same code. The caller wraps the call in a
store transaction and acknowledges after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass

import nacl.signing

from ..errors import LocalError, PaymentRefused
from .hlc import next_hlc
from .ids import DEFAULT_ACCOUNT_NAME, Account, device_id
from .ledger import Applied, Replica
from .money import check_amount, format_amount
from .records import (
    MAX_REFS,
    Admit,
    Body,
    Issue,
    Meta,
    Record,
    Redeem,
    Revoke,
    Role,
    SignedRecord,
    Transfer,
    parse_record,
    sign_record,
)
from .store import Credit, Verdict

__all__ = ["PaymentResult", "Wallet"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentResult:
    """What `pay`, `issue` or `redeem` did. `verdict` is `duplicate` when the
    idempotency key had already been used for the same payment: nothing new was signed
    and `record_id` names the original record."""

    record_id: bytes
    verdict: Verdict
    reason: str | None = None


class Wallet:
    """This device's signer over a replica: builds, checks and applies its records.

    Every method that writes signs at most one record (`freeze_equivocators` one per
    forked device) and applies it to the replica, inside the caller's store
    transaction: wrap the call in `store.transaction()` and treat the record as stored
    only once that has committed (`Ledger` does both). `now_ms` is the wall clock in
    milliseconds; the record's hlc is after it and after every record held."""

    def __init__(self, replica: Replica, key: nacl.signing.SigningKey) -> None:
        self.replica = replica
        self.key = key
        self.device = bytes(key.verify_key)

    @property
    def is_authority(self) -> bool:
        return self.device == self.replica.network.authority

    def account(self, name: str = DEFAULT_ACCOUNT_NAME) -> Account:
        """One of this device's accounts."""
        return Account(device=self.device, name=name)

    def fmt(self, minor: int) -> str:
        """An amount for people: major units and the currency ("12.50 AED")."""
        return format_amount(minor, self.replica.network.currency)

    # ------------------------------------------------------------ the payee

    def payee_problem(self, to: Account, amount: int) -> str | None:
        """Why money paid or issued to `to` could never be spent, as far as this
        replica knows (None: no reason known). The payee holds no admit here (not a
        member, or a new member whose admit has not reached this replica yet); it has
        been revoked; or its tier's holding limit is below `amount`, so that no record
        of its chain could ever claim the credit (ledger.md section 12)."""
        network = self.replica.network
        store = self.replica.store
        if to.device == network.authority:
            return None
        who = device_id(to.device)
        admits = store.admits_for(to.device)
        if not admits and self.is_authority:
            return f"{who} is not a member of this network: admit it first"
        if not admits:
            return (f"{who} is not a member of this network as far as this device knows "
                    "(no admit of it is held here; a new member's admit may not have "
                    "reached this device yet: sync first)")
        if store.revocations(to.device):
            return f"{who} has been revoked: money paid to it could never be spent"
        newest = max(admits, key=lambda a: self._admit_rank(a.id))
        tier = network.tier(newest.tier) if network.limited else None
        if newest.role != "device" or tier is None or amount <= tier.holding:
            return None
        bigger = [i for i, t in enumerate(network.tiers) if t.holding >= amount]
        return (f"{who} is admitted at tier {newest.tier}, whose accounts can hold at most "
                f"{self.fmt(tier.holding)}: a credit of {self.fmt(amount)} could never be "
                f"claimed; move at most {self.fmt(tier.holding)} at a time"
                + (f", or admit it at tier {bigger[0]} first" if bigger else ""))

    def new_account(self, to: Account) -> bool:
        """Whether `to` is an account name other than the default that has never
        received anything here (nor been named by a `meta` record): a typo, or an
        account its owner has not told anyone of. Its device can still spend from it."""
        return (to.name != DEFAULT_ACCOUNT_NAME and not self.replica.store.history(to)
                and not self.replica.store.meta(to))

    # ------------------------------------------------------------ building

    def _refs(self, debit_from: str | None) -> tuple[list[bytes], list[Credit]]:
        """The refs of the next record: the admit (on the first record, or a newer one
        the authority has issued since), the latest checkpoint covering this chain if it
        settles more than the chain knows, then as many unclaimed credits as fit in
        the refs and under the holding limit: those to the debited account first,
        oldest first."""
        store = self.replica.store
        head = self.replica.head(self.device)
        refs: list[bytes] = []
        if not self.is_authority:
            admits = store.admits_for(self.device)
            if not admits:
                raise LocalError(
                    f"device {device_id(self.device)} is not admitted yet: the authority must "
                    "run `admit` and its records must be imported here first")
            newest = max(admits, key=lambda a: self._admit_rank(a.id))
            if head is None or self._admit_rank(newest.id) > self._admit_rank(head.chain.admit):
                refs.append(newest.id)
        authority = self.replica.head(self.replica.network.authority)
        if (not self.is_authority and authority is not None
                and (head is None or authority.seq > head.chain.authority_seq)):
            # Carry what this device knows of the authority's chain (revocations above
            # all) into its own, so that its claims respect them.
            refs.append(authority.id)
        cover = store.latest_cover(self.device)
        if cover is not None and head is not None:
            covered = store.get(cover[2])
            if covered is not None and covered.chain.debited > head.chain.settled_debited:
                refs.append(cover[0])
        credits = store.unclaimed_credits(self.device)
        credits.sort(key=lambda c: c.account.name != debit_from)  # stable: oldest first
        limits = self.replica.offline_limits(self.device)
        balances = dict(head.chain.balances) if head is not None else {}
        claimed: list[Credit] = []
        for c in credits:
            if len(refs) + len(claimed) >= MAX_REFS:
                break
            name = c.account.name
            if limits is not None and balances.get(name, 0) + c.amount > limits.holding:
                continue  # would go over the holding limit: leave it for later
            balances[name] = balances.get(name, 0) + c.amount
            claimed.append(c)
        return refs + [c.id for c in claimed], claimed

    def _admit_rank(self, admit_id: bytes | None) -> tuple[int, bytes]:
        row = self.replica.store.get(admit_id) if admit_id is not None else None
        return (row.hlc, row.id) if row is not None else (-1, b"")

    def available(self, name: str = DEFAULT_ACCOUNT_NAME) -> int:
        """What the next record can debit from account `name`: the chain balance plus
        the unclaimed credits that fit in its refs."""
        head = self.replica.head(self.device)
        chain = head.chain.balance(name) if head is not None else 0
        _, claimed = self._refs(name)
        return chain + sum(c.amount for c in claimed if c.account.name == name)

    def unsigned(self, body: Body, *, now_ms: int, debit_from: str | None = None) -> Record:
        """The next record of this device's chain carrying `body`, not yet signed."""
        # Another writer of the same store (a front-end on one database) must not sign
        # the same seq meanwhile: that would fork this device's chain.
        self.replica.store.lock_author(self.device)
        head = self.replica.head(self.device)
        next_seq = 1 if head is None else head.seq + 1
        cuts = [after for after, _ in self.replica.store.revocations(self.device)]
        if cuts and next_seq > min(cuts):
            raise PaymentRefused(
                f"this device's certificate was revoked after its seq {min(cuts)}: it can "
                "sign no more records")
        if self.replica.store.forked(self.device):
            raise PaymentRefused(
                "this device's chain has forked (a cloned copy of this home, or a restored "
                "backup, signed too): it can sign no more records")
        refs, _ = self._refs(debit_from)
        return Record(
            author=self.device, seq=1 if head is None else head.seq + 1,
            prev=None if head is None else head.id, refs=tuple(sorted(set(refs))),
            hlc=next_hlc(self.replica.store.max_hlc(), now_ms), body=body)

    def build(self, body: Body, *, now_ms: int, debit_from: str | None = None) -> SignedRecord:
        """Sign the next record of this device's chain carrying `body`."""
        record = self.unsigned(body, now_ms=now_ms, debit_from=debit_from)
        return sign_record(record, self.key, self.replica.network_id)

    def submit(self, body: Body, *, now_ms: int, debit_from: str | None = None) -> Applied:
        """Sign the next record carrying `body` and apply it, without the money checks
        of `pay` and the rest: what the ledger decides is in the verdict."""
        signed = self.build(body, now_ms=now_ms, debit_from=debit_from)
        delivery = self.replica.receive(signed.raw, now_ms=now_ms)
        assert delivery.applied
        assert delivery.applied[0].record.id == signed.id
        return delivery.applied[0]

    # ------------------------------------------------------------ money

    def _earlier_key(self, key: str) -> bool:
        """Whether this device has signed a money record with this idempotency key
        (a retry is answered by `_earlier`, whatever the payee's standing now)."""
        return bool(self.replica.store.idem(self.device, key))

    def _earlier(self, key: str, body: Issue | Transfer | Redeem) -> PaymentResult | None:
        """The earlier record with this idempotency key, if it is the same payment."""
        for rid, _ in self.replica.store.idem(self.device, key):
            raw = self.replica.store.raw(rid)
            row = self.replica.store.get(rid)
            assert raw is not None
            assert row is not None
            old = parse_record(raw).record.body
            if old != body:
                raise PaymentRefused(
                    f"idempotency key {key!r} was already used for a different payment "
                    f"(record {rid.hex()[:16]})")
            return PaymentResult(record_id=rid, verdict=Verdict.DUPLICATE,
                                 reason=f"already recorded as {rid.hex()} ({row.verdict.value})")
        return None

    def _money(self, body: Issue | Transfer | Redeem, *, now_ms: int) -> PaymentResult:
        check_amount(body.amount)
        earlier = self._earlier(body.key, body)
        if earlier is not None:
            return earlier
        debit_from = None if isinstance(body, Issue) else body.from_
        if debit_from is not None:
            have = self.available(debit_from)
            if have < body.amount:
                total = self.replica.spendable(self.account(debit_from))
                limits = self.replica.offline_limits(self.device)
                if total >= body.amount and limits is not None and total > limits.holding:
                    raise PaymentRefused(
                        f"{debit_from} has received {self.fmt(total)} but can hold only "
                        f"{self.fmt(limits.holding)} (its holding limit), so "
                        f"{self.fmt(have)} can be spent now; spend or settle first; nothing "
                        "was signed")
                if total >= body.amount:
                    raise PaymentRefused(
                        f"{debit_from} holds {self.fmt(total)} but only {self.fmt(have)} can "
                        f"be spent in one record: the rest sits in more than {MAX_REFS} small "
                        "incoming payments; pay a smaller amount first (every payment takes "
                        f"in up to {MAX_REFS} of them); nothing was signed")
                raise PaymentRefused(
                    f"insufficient funds in {debit_from}: {self.fmt(have)} available, "
                    f"{self.fmt(body.amount)} needed; nothing was signed")
        # Every other rule (offline limits, expiry, ...) is asked of the ledger itself,
        # on the unsigned record, so that the wallet never signs what it would reject.
        verdict, reason = self.replica.preview(
            self.unsigned(body, now_ms=now_ms, debit_from=debit_from))
        if verdict is not Verdict.APPLIED:
            raise PaymentRefused(f"{reason}; nothing was signed")
        applied = self.submit(body, now_ms=now_ms, debit_from=debit_from)
        if applied.verdict is not Verdict.APPLIED:
            # The checks above mirror the ledger rules; reaching here is a bug, but the
            # record is signed and stored, so say what the ledger decided.
            return PaymentResult(record_id=applied.record.id, verdict=applied.verdict,
                                 reason=applied.reason)
        return PaymentResult(record_id=applied.record.id, verdict=applied.verdict)

    def issue(self, to: Account, amount: int, *, key: str, now_ms: int) -> PaymentResult:
        """(Authority) sign an `issue` of `amount` minor units into `to`: a cash-in.

        `key` is the idempotency key: the same key for the same issue returns the
        earlier record with verdict `duplicate`, for a different one raises
        `PaymentRefused`. `LocalError` on a device that is not the authority;
        `PaymentRefused` (nothing signed) for an issue the ledger would reject, or one
        the payee could never spend (`payee_problem`: the authority holds every admit
        it signed)."""
        if not self.is_authority:
            raise LocalError("only the network authority can issue money")
        check_amount(amount)
        problem = self.payee_problem(to, amount)
        if problem is not None and not self._earlier_key(key):
            raise PaymentRefused(f"{problem}; nothing was signed")
        return self._money(Issue(to=to, amount=amount, key=key), now_ms=now_ms)

    def pay(self, to: Account, amount: int, *, key: str, now_ms: int,
            from_name: str = DEFAULT_ACCOUNT_NAME, memo: str | None = None,
            check_payee: bool = False) -> PaymentResult:
        """Sign a `transfer` of `amount` minor units from this device's account
        `from_name` to `to`, with an optional `memo`.

        The record refs the credits to this device it has not claimed yet, so the
        payee can check it offline. `key` is the idempotency key, as for `issue`.
        `PaymentRefused`, with nothing signed, for anything the ledger would reject: a
        payment over the funds available in one record, over the device's offline
        limits, to the debited account itself, from a revoked or forked device;
        `AmountError` for an amount out of range. With `check_payee` (the CLI's `pay`
        without --force), also refused when the payee could never spend it as far as
        this replica knows (`payee_problem`). It is not the default: an offline device
        may not hold a new member's admit yet, and a program paying on its own has
        nobody to ask."""
        if to == self.account(from_name):
            raise PaymentRefused(f"{to} is the account being debited: nothing to move")
        check_amount(amount)
        problem = self.payee_problem(to, amount) if check_payee else None
        if problem is not None and not self._earlier_key(key):
            raise PaymentRefused(f"{problem}; nothing was signed (--force pays anyway)")
        return self._money(Transfer(from_=from_name, to=to, amount=amount, key=key, memo=memo),
                           now_ms=now_ms)

    def redeem(self, amount: int, *, key: str, now_ms: int,
               from_name: str = DEFAULT_ACCOUNT_NAME) -> PaymentResult:
        """Sign a `redeem` (a cash-out) of `amount` minor units from account
        `from_name`; `key` and the refusals as for `pay`."""
        return self._money(Redeem(from_=from_name, amount=amount, key=key), now_ms=now_ms)

    # ------------------------------------------------------------ authority

    def admit(self, device: bytes, *, now_ms: int, role: Role = Role.DEVICE, tier: int = 0,
              offline_limit: int | None = None, expires: int | None = None) -> Applied:
        """(Authority) sign an `admit` certifying `device` (its public key): its role,
        KYC tier (the tier's offline limits), an optional offline limit of its own in
        minor units, and an optional expiry (milliseconds since the epoch). A newer
        admit of the same device replaces the older. `LocalError` on a device that is
        not the authority, or for a tier the network does not have."""
        if not self.is_authority:
            raise LocalError("only the network authority can admit devices")
        if self.replica.network.limited and self.replica.network.tier(tier) is None:
            raise LocalError(f"the network has no tier {tier}")
        return self.submit(Admit(device=device, role=role, tier=tier,
                                 offline_limit=offline_limit, expires=expires), now_ms=now_ms)

    def revoke(self, device: bytes, *, after_seq: int, now_ms: int) -> Applied:
        """(Authority) sign a `revoke`: `device`'s records after its seq `after_seq`
        are not accepted. `LocalError` on a device that is not the authority."""
        if not self.is_authority:
            raise LocalError("only the network authority can revoke devices")
        return self.submit(Revoke(device=device, after_seq=after_seq), now_ms=now_ms)

    def freeze_equivocators(self, *, now_ms: int) -> list[Applied]:
        """(Authority) revoke every device whose forked chain is known here and not yet
        revoked at or before the fork: the deterministic answer to an equivocation.
        Each revocation cuts the device off from one seq before the fork."""
        if not self.is_authority:
            raise LocalError("only the network authority can revoke devices")
        done = []
        for author, seq in sorted({(a, s) for a, s, _, _ in
                                   self.replica.store.equivocations()}):
            if any(after < seq for after, _ in self.replica.store.revocations(author)):
                continue
            done.append(self.revoke(author, after_seq=seq - 1, now_ms=now_ms))
        return done

    def set_meta(self, field: str, value: str, *, now_ms: int,
                 account: str = DEFAULT_ACCOUNT_NAME) -> Applied:
        """Sign a `meta` record setting `field` of this device's `account` (a display
        name, say); conflicting writes resolve last-writer-wins by (hlc, author)."""
        return self.submit(Meta(account=account, field=field, value=value), now_ms=now_ms)
