"""Property tests of offline safety, with workloads drawn by Hypothesis.

The network has one tier (60.00 per payment, 100.00 unsettled, 300.00 held), so
devices run into every limit; payments are drawn up to 70.00 and the wallet refuses
what the rules forbid.

1. `TestHonestWorkload`: an authority and three honest devices, each with its own
   replica: payments through the Wallet, syncs between any two replicas, settlement
   (the authority takes in a device's chain, signs a checkpoint covering it, and the
   device takes the checkpoint back). Invariants at every step: every record a
   wallet accepted is `applied` wherever it is held (no honest transfer rejected
   after being accepted); no account's balance is negative; money is conserved. At
   teardown a full sync makes every replica converge.
2. `TestEquivocatingDevice`: the same with a fourth device, mallory (120.00 issued,
   less than its two clones may pay together), whose replica is cloned after a drawn
   prelude (payments, maybe a settlement): two replicas sign for
   one key from the same head. The clones are apart: they send their records to the
   others but never receive. The authority revokes mallory as soon as it sees the
   fork, as its node does. At teardown everyone gets everything: all agree on the
   state hash and the evidence, money is conserved, honest balances are not negative,
   and mallory's balance is not below minus its offline limit.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import Checkpoint
from p2p_ledger.core.store import Verdict
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.errors import PaymentRefused
from tests.helpers import T0, World
from tests.test_safety import TIER, tiered_world

HONEST = ("alice", "bob", "carol")
AMOUNTS = st.integers(min_value=1, max_value=70_00)
BIG = st.sampled_from((60_00, 50_00, 40_00))  # so that the clones spend what they can


class SafetyMachine(RuleBasedStateMachine):
    """Replicas by name ("authority" and each device's), their wallets, a clock."""

    devices: tuple[str, ...] = HONEST

    def __init__(self) -> None:
        super().__init__()
        self.world: World = tiered_world("props", devices=(*HONEST, "mallory"))
        self.now = T0
        auth = self.world.wallet("authority")
        for name in self.world.device_keys:
            auth.admit(self.world.device(name), now_ms=self.tick())
            auth.issue(self.world.account(name), 120_00 if name == "mallory" else 150_00,
                       key=f"cash-in-{name}", now_ms=self.tick())
        self.wallets: dict[str, Wallet] = {"authority": auth}
        for name in self.devices:
            self.wallets[name] = self.world.wallet(name, self.copy_of(auth.replica))
        self.accepted: set[bytes] = set()

    def tick(self) -> int:
        self.now += 1_000
        return self.now

    def copy_of(self, src: Replica) -> Replica:
        replica = self.world.replica()
        report = replica.receive_many(src.delta(Frontier({})), now_ms=self.now)
        assert not report.refused, report.refused
        return replica

    def deliver(self, src: Replica, dst: Replica) -> None:
        report = dst.receive_many(src.delta(dst.frontier()), now_ms=self.now)
        assert not report.refused, report.refused
        for a in report.applied:
            if a.record.id in self.accepted:
                assert a.verdict is Verdict.APPLIED, (a.verdict, a.reason)
        if dst is self.wallets["authority"].replica and dst.store.equivocations():
            self.wallets["authority"].freeze_equivocators(now_ms=self.tick())

    def pay_from(self, wallet: Wallet, payee: str, amount: int) -> None:
        try:
            result = wallet.pay(self.world.account(payee), amount, key=f"k{self.now}",
                                now_ms=self.tick())
        except PaymentRefused as exc:
            event(f"refused: {str(exc).split(':')[0]}")
            return
        assert result.verdict is Verdict.APPLIED, result
        self.accepted.add(result.record_id)

    def settle(self, name: str) -> None:
        """The authority takes in the device's chain, covers it, and sends it back."""
        auth, device = self.wallets["authority"], self.wallets[name]
        self.deliver(device.replica, auth.replica)
        head = auth.replica.head(self.world.device(name))
        if head is None or auth.replica.store.forked(self.world.device(name)):
            return
        auth.submit(Checkpoint(covers=((head.author, head.seq, head.id),),
                               state_hash=auth.replica.state_hash()), now_ms=self.tick())
        self.deliver(auth.replica, device.replica)

    # ------------------------------------------------------------ rules

    @rule(payer=st.sampled_from(HONEST), payee=st.sampled_from((*HONEST, "mallory")),
          amount=AMOUNTS)
    def pay(self, payer: str, payee: str, amount: int) -> None:
        if payer != payee:
            self.pay_from(self.wallets[payer], payee, amount)

    @rule(src=st.sampled_from(("authority", *HONEST)), dst=st.sampled_from(("authority", *HONEST)))
    def sync(self, src: str, dst: str) -> None:
        if src != dst:
            self.deliver(self.wallets[src].replica, self.wallets[dst].replica)

    @rule(name=st.sampled_from(HONEST))
    def settle_honest(self, name: str) -> None:
        self.settle(name)

    # ------------------------------------------------------------ invariants

    def receivers(self) -> list[Replica]:
        return [w.replica for w in self.wallets.values()]

    @invariant()
    def accepted_stay_applied_and_money_is_conserved(self) -> None:
        for replica in self.receivers():
            assert replica.conserved()
            for rid in self.accepted:
                verdict = replica.verdict(rid)
                assert verdict is None or verdict == (Verdict.APPLIED, None), verdict

    @invariant()
    def no_honest_balance_is_negative(self) -> None:
        honest = {self.world.device(n) for n in HONEST}
        for replica in self.receivers():
            for account, balance in replica.balances().items():
                if account.device in honest:
                    assert balance >= 0, (account, balance)

    def converge(self) -> list[Replica]:
        """Everyone gets everything (twice round: the authority may sign a revocation
        on the way); returns every replica."""
        replicas = self.receivers()
        for _ in range(2):
            for src in replicas:
                for dst in replicas:
                    if dst is not src:
                        self.deliver(src, dst)
        assert len({r.state_hash() for r in replicas}) == 1
        assert len({tuple(r.store.equivocations()) for r in replicas}) == 1
        return replicas


class HonestWorkload(SafetyMachine):
    def teardown(self) -> None:
        replicas = self.converge()
        assert not replicas[0].store.equivocations()
        for replica in replicas:
            for rid in self.accepted:
                assert replica.verdict(rid) == (Verdict.APPLIED, None)
        self.no_honest_balance_is_negative()


class EquivocatingDevice(SafetyMachine):
    devices = (*HONEST, "mallory")

    @initialize(prelude=st.lists(st.tuples(st.sampled_from(HONEST), AMOUNTS), max_size=4),
                settled=st.booleans())
    def clone_mallory(self, prelude: list[tuple[str, int]], settled: bool) -> None:
        mallory = self.wallets["mallory"]
        for payee, amount in prelude:
            self.pay_from(mallory, payee, amount)
        if settled:
            self.settle("mallory")
        self.clone = Wallet(self.copy_of(mallory.replica), mallory.key)

    @rule(which=st.booleans(), payee=st.sampled_from(HONEST), amount=BIG | AMOUNTS)
    def mallory_pays(self, which: bool, payee: str, amount: int) -> None:
        self.pay_from(self.clone if which else self.wallets["mallory"], payee, amount)

    @rule(which=st.booleans(), dst=st.sampled_from(("authority", *HONEST)))
    def mallory_sends(self, which: bool, dst: str) -> None:
        src = self.clone if which else self.wallets["mallory"]
        self.deliver(src.replica, self.wallets[dst].replica)

    def teardown(self) -> None:
        for src in (self.wallets["mallory"], self.clone):
            for dst in ("authority", *HONEST):
                self.deliver(src.replica, self.wallets[dst].replica)
        replicas = self.converge()
        limits = self.wallets["authority"].replica.offline_limits(self.world.device("mallory"))
        assert limits is not None
        assert limits.unsettled == TIER.unsettled
        for replica in replicas:
            assert replica.conserved()
            loss = -replica.balance(Account(device=self.world.device("mallory")))
            assert loss <= limits.unsettled, loss
        event("forked" if replicas[0].store.equivocations() else "no fork")
        event("mallory lost money" if loss > 0 else "no loss")
        self.no_honest_balance_is_negative()


HonestWorkload.TestCase.settings = settings(stateful_step_count=25)
TestHonestWorkload = HonestWorkload.TestCase
EquivocatingDevice.TestCase.settings = settings(stateful_step_count=25)
TestEquivocatingDevice = EquivocatingDevice.TestCase
