"""The revocations workload: devices revoked while cut off, that go on signing.

A revocation matters when the revoked device does not know of it: a stolen device
taken out of reach, whose holder goes on paying. So for each of about one device in
ten, at even intervals:

1. `CUT_AHEAD` seconds before the revocation, the device's neighbourhood is cut off
   from the rest of the network: the device, its neighbours, and the members linked
   only to those (in a hub tree: its site, hub and devices), never the authority.
   Every link across is stalled, as in a partition.
2. The authority revokes the device (cut-off: the device's head as the authority
   holds it).
3. The device pays every 1-3 s until the run's faults stop. Inside its cut-off
   neighbourhood nobody knows of the revocation, so its wallet signs and its peers
   store and relay the records (`applied`: they did not know the revocation;
   specs/ledger.md, revocation).
4. 15-25 s after the revocation the neighbourhood is reconnected. The revocation
   reaches the site, and the device through a session opened before its peer knew
   (such a session goes on until its link breaks); new handshakes fail. From then
   on its wallet refuses to sign (counted as `revoked` among the payments). Its
   holder, a thief with a tampered wallet, signs anyway (`TamperedWallet`): those
   records hold the revocation in their causal past, so the ledger rejects them
   ("revoked ..., and this record knew it") wherever they arrive.

The report counts the revoked devices' records above their cut-off by the verdict
the honest replicas gave them, and those that reached no honest replica.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from ..core.hlc import next_hlc
from ..core.ids import DEFAULT_ACCOUNT_NAME, Account
from ..core.records import Body, Record, Transfer
from ..core.wallet import Wallet

if TYPE_CHECKING:
    from .world import Edge, Member, World

__all__ = ["TamperedWallet", "run_revocations"]

CUT_AHEAD = 5.0
CUT_FOR = (15.0, 25.0)
PAY_EVERY = (1.0, 3.0)
MAX_PAYMENT = 200_00


class TamperedWallet(Wallet):
    """A wallet with the revocation refusal taken out, as on a stolen device: it signs
    the next record of the chain whatever the replica knows of a revocation. The
    ledger still judges the record (it is rejected when it knew the revocation)."""

    def unsigned(self, body: Body, *, now_ms: int, debit_from: str | None = None) -> Record:
        head = self.replica.head(self.device)
        refs, _ = self._refs(debit_from)
        return Record(author=self.device, seq=1 if head is None else head.seq + 1,
                      prev=None if head is None else head.id, refs=tuple(sorted(set(refs))),
                      hlc=next_hlc(self.replica.store.max_hlc(), now_ms), body=body)


async def run_revocations(w: World, rng: random.Random) -> None:
    from .faults import _episode

    devices = [m for m in w.members if m.role == "device"]
    count = max(1, len(devices) // 10)
    auth = next(m for m in w.members if m.role == "authority")
    d = w.params.duration
    async with trio.open_nursery() as nursery:
        for k in range(count):
            at = d * (k + 1) / (count + 1)
            await trio.sleep_until(max(0.0, at - CUT_AHEAD))
            target = rng.choice([m for m in devices if m.device not in w.revoked])
            cut, cut_at = _cut_off(w, target, auth), trio.current_time()
            for e in cut:
                w.stall(e, True)
            nursery.start_soon(_go_on_paying, w, target, w.rng(f"revoked/{target.index}"))
            await trio.sleep_until(at)
            after = 0
            if auth.up:
                head = auth.replica.head(target.device)
                after = head.seq if head is not None else 0
                with w.creating(auth):
                    Wallet(auth.replica, auth.key).revoke(target.device, after_seq=after,
                                                          now_ms=w.now_ms(auth))
                w.revoked[target.device] = after
                now = trio.current_time()
                _episode(w, "revoke", now, now, node=target.name, after_seq=after)
            back = min(at + rng.uniform(*CUT_FOR), d)
            nursery.start_soon(_reconnect, w, target, cut, cut_at, back)


def _cut_off(w: World, target: Member, auth: Member) -> list[Edge]:
    """The links between the target's neighbourhood and the rest of the network."""
    group = {target.index} | {e.other(target.index) for e in w.edges_of[target.index]}
    for m in w.members:
        links = w.edges_of[m.index]
        if links and all(e.other(m.index) in group for e in links):
            group.add(m.index)
    group.discard(auth.index)
    return [e for e in w.edges if (e.a in group) != (e.b in group)]


async def _reconnect(w: World, target: Member, cut: list[Edge], start: float,
                     back: float) -> None:
    from .faults import _episode

    await trio.sleep_until(back)
    for e in cut:
        w.stall(e, False)
    _episode(w, "cut-off", start, trio.current_time(), node=target.name, links_cut=len(cut))


async def _go_on_paying(w: World, m: Member, rng: random.Random) -> None:
    payees = [x for x in w.members if x.role == "device" and x is not m
              and x.clone_of is None]
    n = 0
    while True:
        await trio.sleep(rng.uniform(*PAY_EVERY))
        if trio.current_time() >= w.params.duration:
            return
        if not m.up or not payees:
            continue
        n += 1
        payee = Account(device=rng.choice(payees).device)
        amount = rng.randint(1_00, MAX_PAYMENT)
        if not m.replica.store.revocations(m.device):
            w.pay(m, payee, amount, f"revoked-{n}")  # its wallet does not know yet
            continue
        w.payments["revoked"] += 1  # the wallet refuses; the thief signs anyway
        with w.creating(m):
            TamperedWallet(m.replica, m.key).submit(
                Transfer(from_=DEFAULT_ACCOUNT_NAME, to=payee, amount=amount,
                         key=f"revoked-{n}"),
                now_ms=w.now_ms(m), debit_from=DEFAULT_ACCOUNT_NAME)
        w.payments["tampered"] += 1
