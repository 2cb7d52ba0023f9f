"""The simulator's checks, evaluated after every committed batch of every replica.

- conservation: after each batch the replica's `conserved()` holds (the sum of all
  balances equals issued minus redeemed).
- verdicts: the verdict (and reason) a record gets when first applied anywhere is the
  verdict it has in every replica, at every later moment; so is the chain state it
  establishes (its author's balances after it), which is also a function of its
  causal past. Records of a cloned
  (equivocating) device are held to the same rule and counted apart, since the issue
  only promises it for honest records.
- validity: a replica stores only records some member created (signed with its own
  key, so valid by construction; anything else would be a forgery or a corruption that
  got in), and only once its causal past is stored: its `prev` and every record it
  `refs` (as the checker saw them when the record was created). At the end every
  stored record's refs and prev are checked again.
- convergence: after the faults stop, within the bound the parameters state, every
  honest replica (one whose device key the authority has not revoked) holds every
  record that any honest replica holds, with one `state_hash` among them. The records
  no honest replica holds may only be a revoked device's records above its cut-off:
  a revoked device fails every handshake, so what never left it stays there. The
  checker tracks who holds what (`holders`) and which members are revoked (it sees
  the authority's `revoke` records when they are created) to say exactly that.

A violation is kept with where and when it happened (the first few of each kind go
into the report). The checker also measures each record's lag: simulated seconds from
its creation to its arrival in each replica. It reads stores, never changes them.
"""

from __future__ import annotations

import dataclasses
import operator
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.records import Kind, Revoke, parse_record
from ..core.store import ChainState, MemoryStore, StoredRecord, Verdict

__all__ = ["CheckResult", "Checker"]

_KEEP = 20  # violations kept per check
# A chain state's fields, read in C: comparing two through the dataclass's `__eq__`
# (a Python call building two tuples) was the checker's costliest line (issue 14).
_chain_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(ChainState)))


@dataclass(slots=True, kw_only=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    checked: int = 0
    violations: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail,
                "checked": self.checked, "violations": self.violations}


class Checker:
    """Watches every commit of every replica of one run."""

    def __init__(self, names: list[str], devices: list[bytes],
                 now: Callable[[], float]) -> None:
        self.now = now
        self.names = list(names)
        self.devices = list(devices)
        members = len(names)
        self.created: dict[bytes, float] = {}
        self.author_of: dict[bytes, bytes] = {}
        self.seq_of: dict[bytes, int] = {}
        self.refs_of: dict[bytes, tuple[bytes, ...]] = {}  # of created records with refs
        self.first_verdict: dict[bytes, tuple[str, str | None, str]] = {}
        self.first_chain: dict[bytes, ChainState] = {}  # what the record's chain established
        self.counts = [0] * members
        self.lags: list[array[int]] = [array("l") for _ in range(members)]
        self.creating: int | None = None  # the member whose wallet is signing right now
        self.forked_authors: set[bytes] = set()
        self.batches = 0
        self.verdicts_checked = 0
        self.forked_checked = 0
        self.conservation: list[dict[str, object]] = []
        self.verdict_changes: list[dict[str, object]] = []
        self.invalid: list[dict[str, object]] = []
        self.counts_of = {"conservation": 0, "verdicts": 0, "validity": 0}
        self.holders: dict[bytes, int] = {}  # record id -> bit mask of members holding it
        self.cut_off: dict[bytes, int] = {}  # revoked device -> lowest revocation after_seq
        self.revoked_mask = 0  # members whose device is revoked
        self._needed = 0  # records some honest replica holds

    def grow(self, name: str, device: bytes, store: MemoryStore) -> None:
        """A member joined (a cloned device) with a copy of another's store."""
        member = len(self.devices)
        self.devices.append(device)
        self.counts.append(store.totals().records)
        self.lags.append(array("l"))
        self.names.append(name)
        for rid in store.all_ids_in_order():
            self.holders[rid] = self.holders.get(rid, 0) | 1 << member
        self._recount()

    # ------------------------------------------------------------ who must converge

    def honest(self, member: int) -> bool:
        return not self.revoked_mask >> member & 1

    def needed(self) -> int:
        """How many records the honest replicas must each hold: those any of them holds."""
        return self._needed

    def _revoked(self, device: bytes, after_seq: int) -> None:
        self.cut_off[device] = min(after_seq, self.cut_off.get(device, after_seq))
        self._recount()

    def _recount(self) -> None:
        self.revoked_mask = sum(1 << i for i, d in enumerate(self.devices) if d in self.cut_off)
        honest = ~self.revoked_mask
        self._needed = sum(1 for mask in self.holders.values() if mask & honest)

    def stranded(self) -> list[tuple[bytes, str | None]]:
        """Created records no honest replica holds, each with what is wrong with that
        (None: allowed, a revoked device's record above its cut-off)."""
        out: list[tuple[bytes, str | None]] = []
        for rid, mask in self.holders.items():
            if mask & ~self.revoked_mask or rid not in self.created:
                continue
            author, seq = self.author_of[rid], self.seq_of[rid]
            cut = self.cut_off.get(author)
            problem = (None if cut is not None and seq > cut else
                       "an honest author's record that no honest replica holds" if cut is None
                       else f"a revoked device's record at seq {seq}, not above its cut-off "
                       f"{cut}, that no honest replica holds")
            out.append((rid, problem))
        return out

    def _flag(self, kind: str, into: list[dict[str, object]], item: dict[str, object]) -> None:
        self.counts_of[kind] += 1
        if len(into) < _KEEP:
            into.append(item)

    def genesis(self, store: MemoryStore) -> None:
        for rid in store.all_ids_in_order():
            row = store.get(rid)
            assert row is not None
            self.created[rid] = 0.0
            self.author_of[rid] = row.author
            self.seq_of[rid] = row.seq
            self.first_verdict[rid] = (row.verdict.value, row.reason, "genesis")
            self.first_chain[rid] = row.chain
            self.holders[rid] = (1 << len(self.devices)) - 1
        self._recount()

    def on_commit(self, member: int, store: MemoryStore, rids: list[bytes],
                  conserved: bool) -> None:
        now = self.now()
        self.batches += 1
        name = self.names[member]
        self.counts[member] = store.totals().records
        if not conserved:
            self._flag("conservation", self.conservation, {
                "node": name, "time": round(now, 3), "batch": len(rids)})
        lags = self.lags[member]
        # Stored before a record of this batch: held before it, or earlier in it (the
        # store reports a batch in the order it applied it).
        batch, earlier = set(rids), set()
        has = store.has

        def stored_before(dep: bytes) -> bool:
            return dep in earlier or (dep not in batch and has(dep))
        # Every replica runs this for every record it stores: the lookups are bound once
        # per batch, and `_held` is inlined.
        created, holders, refs_of = self.created, self.holders, self.refs_of
        first_verdicts, first_chains = self.first_verdict, self.first_chain
        bit = 1 << member
        for rid in rids:
            earlier.add(rid)
            row = store.get(rid)
            assert row is not None
            held_by = holders.get(rid, 0)
            holders[rid] = held_by | bit
            if not self.revoked_mask & bit and not held_by & ~self.revoked_mask:
                self._needed += 1
            made = created.get(rid)
            if made is None:
                # New to the world: only its author's key can have signed it here (a
                # wallet payment, or a node acting on its own, like the authority
                # revoking an equivocating device).
                if self.creating == member or row.author == self.devices[member]:
                    created[rid] = now
                    self.author_of[rid] = row.author
                    self.seq_of[rid] = row.seq
                    raw = store.raw(rid)
                    assert raw is not None
                    if its_refs := parse_record(raw).record.refs:
                        refs_of[rid] = tuple(its_refs)
                    self._note_revocation(store, row)
                else:
                    self._flag("validity", self.invalid, {
                        "node": name, "time": round(now, 3), "record": rid.hex(),
                        "problem": "stored a record that no member created"})
                    continue
            else:
                lags.append(round((now - made) * 1000))
            refs = refs_of.get(rid)
            if row.prev is not None and not stored_before(row.prev):
                self._flag("validity", self.invalid, {
                    "node": name, "time": round(now, 3), "record": rid.hex(),
                    "problem": "stored before its prev"})
            elif refs and not all(stored_before(ref) for ref in refs):
                self._flag("validity", self.invalid, {
                    "node": name, "time": round(now, 3), "record": rid.hex(),
                    "problem": "stored before a record it refs"})
            first = first_verdicts.get(rid)
            if first is None:
                first_verdicts[rid] = (row.verdict.value, row.reason, name)
                first_chains[rid] = row.chain
                continue
            if row.author in self.forked_authors:
                self.forked_checked += 1
            self.verdicts_checked += 1
            if first[0] != row.verdict.value or first[1] != row.reason:
                seen = (row.verdict.value, row.reason)
                self._flag("verdicts", self.verdict_changes, {
                    "node": name, "time": round(now, 3), "record": rid.hex(),
                    "first": f"{first[0]} at {first[2]}" + (f" ({first[1]})" if first[1] else ""),
                    "here": seen[0] + (f" ({seen[1]})" if seen[1] else "")})
            elif _chain_fields(row.chain) != _chain_fields(first_chains[rid]):
                # Judged on another causal past: the balances the chain established
                # (what the author may spend next) differ, whatever the verdict says.
                self._flag("verdicts", self.verdict_changes, {
                    "node": name, "time": round(now, 3), "record": rid.hex(),
                    "first": f"chain balances {dict(first_chains[rid].balances)} at "
                    f"{first[2]}", "here": f"chain balances {dict(row.chain.balances)}"})

    def _note_revocation(self, store: MemoryStore, row: StoredRecord) -> None:
        """An applied `revoke` can only be the authority's: its device is revoked."""
        if row.kind != Kind.REVOKE or row.verdict != Verdict.APPLIED:
            return
        raw = store.raw(row.id)
        assert raw is not None
        body = parse_record(raw).record.body
        assert isinstance(body, Revoke)
        self._revoked(body.device, body.after_seq)

    # ------------------------------------------------------------ at the end

    def final_validity(self, member: int, store: MemoryStore) -> int:
        """Every stored record has its whole causal past stored; returns records seen."""
        n = 0
        for rid in store.all_ids_in_order():
            raw = store.raw(rid)
            assert raw is not None
            rec = parse_record(raw).record
            row = store.get(rid)
            assert row is not None
            if row.verdict.value != self.first_verdict.get(rid, ("?",))[0]:
                self._flag("verdicts", self.verdict_changes, {
                    "node": self.names[member], "time": round(self.now(), 3),
                    "record": rid.hex(), "first": str(self.first_verdict.get(rid)),
                    "here": row.verdict.value})
            for dep in (*rec.refs, *(() if rec.prev is None else (rec.prev,))):
                if not store.has(dep):
                    self._flag("validity", self.invalid, {
                        "node": self.names[member], "time": round(self.now(), 3),
                        "record": rid.hex(), "problem": "a ref or prev is not stored"})
            n += 1
        return n

    def results(self, *, checked_records: int) -> list[CheckResult]:
        c = self.counts_of
        forked = (f"; {self.forked_checked} of them by the cloned device"
                  if self.forked_authors else "")
        return [
            CheckResult(name="conservation", passed=c["conservation"] == 0,
                        checked=self.batches,
                        detail=f"money conserved after each of {self.batches} batches"
                        if c["conservation"] == 0 else
                        f"{c['conservation']} batches left money unconserved",
                        violations=self.conservation),
            CheckResult(name="verdicts", passed=c["verdicts"] == 0,
                        checked=self.verdicts_checked,
                        detail=(f"{self.verdicts_checked} later applications agreed with the "
                                f"first verdict and chain state{forked}")
                        if c["verdicts"] == 0 else
                        f"{c['verdicts']} verdicts or chain states differed from the first "
                        "one",
                        violations=self.verdict_changes),
            CheckResult(name="validity", passed=c["validity"] == 0, checked=checked_records,
                        detail="only created records were stored, each after its causal "
                        "past" if c["validity"] == 0 else
                        f"{c['validity']} invalid or premature records stored",
                        violations=self.invalid),
        ]
