"""The cloud tier against a real PostgreSQL: front-ends racing on one database.

Each "front-end" here is a `Replica` over its own `PostgresStore` (its own connection),
driven from its own thread, as separate `serve` processes would be. The races are
forced, not hoped for: one front-end applies a record and holds its transaction open
while the other receives the racing record; without the per-author lock the second
would judge against a database that lacks the first (no equivocation evidence, or a
duplicate insert that fails). Then the same races run freely, many times.

Node level: two `Node`s over one database are one logical node: a record stored
through one reaches a live session of the other within a second (its store poll).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import trio

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Frontier, IngestReport, Replica
from p2p_ledger.core.records import Meta, Record, Role, Transfer, parse_record, sign_record
from p2p_ledger.core.store import MemoryStore, Verdict
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.protocol._state import State
from p2p_ledger.sim.store import SimStore
from p2p_ledger.storage.postgres import PostgresStore, author_lock_key

from .helpers import T0, World, key, make_world
from .node_helpers import WALL_MS, start_pair, wait_until

NewDatabase = Callable[[], str]


@dataclass
class Cloud:
    world: World
    url: str
    stores: list[PostgresStore]

    def front_end(self) -> Replica:
        store = PostgresStore(self.url, self.world.network.network_id)
        self.stores.append(store)
        return Replica(self.world.network, store)


@pytest.fixture
def cloud(new_database: NewDatabase) -> Iterator[Callable[[World], Cloud]]:
    made: list[Cloud] = []

    def make(world: World) -> Cloud:
        made.append(Cloud(world=world, url=new_database(), stores=[]))
        return made[-1]
    yield make
    for c in made:
        for s in c.stores:
            s.close()


def source(devices: tuple[str, ...], cash: int = 100_00) -> tuple[World, Replica]:
    """A world whose authority has admitted every device and given each `cash`."""
    world = make_world(devices=devices, seed="cloud")
    auth = world.wallet("authority", Replica(world.network, MemoryStore()))
    for name in devices:
        auth.admit(world.device(name), now_ms=T0)
        auth.issue(world.account(name), cash, key=f"cash-{name}", now_ms=T0)
    return world, auth.replica


def receive(front: Replica, raws: list[bytes]) -> IngestReport:
    with front.store.transaction():
        return front.receive_many(raws, now_ms=WALL_MS)


def in_threads(*jobs: Callable[[], object]) -> list[object]:
    """Run the jobs at once, one thread each (each with its own store connection),
    starting together; re-raise the first failure."""
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i: int, job: Callable[[], object]) -> None:
        start.wait()
        try:
            results[i] = job()
        except BaseException as exc:  # handed to the test thread  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def fork(world: World, base: Replica, who: str, tag: str) -> tuple[bytes, bytes]:
    """Two records of `who` at the same seq after its head on `base` (not applied)."""
    wallet = world.wallet(who, base)
    a, b = (sign_record(wallet.unsigned(Meta(account="main", field=tag, value=value),
                                        now_ms=T0 + 5),
                        world.device_keys[who], world.network.network_id)
            for value in ("x", "y"))
    assert a.record.seq == b.record.seq
    assert a.id != b.id
    return a.raw, b.raw


def hold_open_then(front: Replica, raws: list[bytes], applied: threading.Event,
                   hold: float) -> IngestReport:
    """Receive `raws` and keep the transaction open for `hold` seconds after applying."""
    with front.store.transaction():
        report = front.receive_many(raws, now_ms=WALL_MS)
        applied.set()
        time.sleep(hold)
    return report


def after(event: threading.Event, front: Replica, raws: list[bytes]) -> IngestReport:
    assert event.wait(30)
    return receive(front, raws)


# ---------------------------------------------------------------- forks


def test_a_forks_two_branches_at_two_front_ends_at_once_are_stored_with_one_evidence(
        cloud: Callable[[World], Cloud]) -> None:
    world, src = source(("alice", "bob"))
    c = cloud(world)
    one, two = c.front_end(), c.front_end()
    receive(one, src.delta(Frontier({})))
    left, right = fork(world, src, "alice", "f")
    applied = threading.Event()
    r1, r2 = in_threads(lambda: hold_open_then(one, [left], applied, 0.5),
                        lambda: after(applied, two, [right]))
    assert isinstance(r1, IngestReport)
    assert isinstance(r2, IngestReport)
    assert len(r1.applied) == 1
    assert len(r2.applied) == 1
    # The second judged after the first committed: it names the first.
    assert r2.applied[0].equivocates_with == (parse_record(left).id,)
    for front in (one, two):
        assert front.store.has(parse_record(left).id)
        assert front.store.has(parse_record(right).id)
        (evidence,) = front.store.equivocations()
        assert evidence[0] == world.device("alice")
        assert front.store.forked(world.device("alice"))


def test_forks_racing_freely_at_two_front_ends_always_leave_one_evidence_each(
        cloud: Callable[[World], Cloud]) -> None:
    devices = tuple(f"d{i}" for i in range(24))
    world, src = source(devices)
    c = cloud(world)
    one, two = c.front_end(), c.front_end()
    receive(one, src.delta(Frontier({})))
    branches = [fork(world, src, d, "race") for d in devices]
    # One thread per front-end (a store is one connection), one fork per transaction.
    in_threads(lambda: [receive(one, [left]) for left, _ in branches],
               lambda: [receive(two, [right]) for _, right in branches])
    evidence = one.store.equivocations()
    assert sorted(e[0] for e in evidence) == sorted(world.device(d) for d in devices)
    for left, right in branches:
        assert one.store.has(parse_record(left).id)
        assert one.store.has(parse_record(right).id)
    assert one.conserved()


def test_both_branches_of_a_fork_in_one_frame_leave_one_evidence(
        cloud: Callable[[World], Cloud]) -> None:
    """Within one transaction the store answers `ids_at` from what it stored itself
    (it holds the author's lock): the second branch must still meet the first."""
    world, src = source(("alice", "bob"))
    c = cloud(world)
    one = c.front_end()
    receive(one, src.delta(Frontier({})))
    left, right = fork(world, src, "alice", "same-frame")
    report = receive(one, [left, right])
    assert [a.equivocates_with for a in report.applied] == [(), (parse_record(left).id,)]
    (evidence,) = one.store.equivocations()
    assert evidence[0] == world.device("alice")


def test_a_credit_made_and_claimed_in_one_frame_is_not_claimed_twice(
        cloud: Callable[[World], Cloud]) -> None:
    """The store answers `credit` for credits its open transaction made from memory;
    a claim in the same frame must show there, or a second claim of the same credit
    (a crafted record) would count it twice."""
    world, src = source(("alice", "bob"))
    c = cloud(world)
    one = c.front_end()
    receive(one, src.delta(Frontier({})))
    paid = world.wallet("bob", src).pay(world.account("alice"), 5_00, key="c", now_ms=T0 + 5)
    alice = world.wallet("alice", src)
    first = alice.build(Meta(account="main", field="f", value="v"), now_ms=T0 + 6)
    assert paid.record_id in first.record.refs  # it claims the credit
    if not src.store.has(first.id):
        receive(src, [first.raw])
    again = sign_record(Record(author=world.device("alice"), seq=first.record.seq + 1,
                               prev=first.id, refs=(paid.record_id,), hlc=first.record.hlc + 1,
                               body=Transfer(from_="main", to=world.account("bob"),
                                             amount=110_00, key="twice")),
                        world.device_keys["alice"], world.network.network_id)
    expected = receive(src, [again.raw]).applied[0].verdict
    assert expected is Verdict.REJECTED  # 105.00 held: the credit counts once
    raw = src.store.raw(paid.record_id)
    assert raw is not None
    report = receive(one, [raw, first.raw, again.raw])
    assert [a.verdict for a in report.applied] == [Verdict.APPLIED, Verdict.APPLIED, expected]
    assert one.balance(world.account("alice")) == 105_00


# ---------------------------------------------------------------- duplicates


def test_the_same_record_at_two_front_ends_at_once_is_stored_once(
        cloud: Callable[[World], Cloud]) -> None:
    world, src = source(("alice", "bob"))
    c = cloud(world)
    one, two = c.front_end(), c.front_end()
    receive(one, src.delta(Frontier({})))
    paid = world.wallet("alice", src).pay(world.account("bob"), 5_00, key="p1", now_ms=T0 + 9)
    raw = src.store.raw(paid.record_id)
    assert raw is not None
    applied = threading.Event()
    r1, r2 = in_threads(lambda: hold_open_then(one, [raw], applied, 0.5),
                        lambda: after(applied, two, [raw]))
    assert isinstance(r1, IngestReport)
    assert isinstance(r2, IngestReport)
    assert len(r1.applied) == 1
    assert r2.applied == []
    assert r2.unstored == 0
    assert one.store.totals().records == src.store.totals().records
    assert one.balance(world.account("bob")) == 105_00
    assert one.state_hash() == src.state_hash()


def test_one_delta_at_two_front_ends_in_opposite_orders_neither_deadlocks_nor_doubles(
        cloud: Callable[[World], Cloud]) -> None:
    """Each front-end locks the authors of its frame as the records come; in opposite
    orders two such transactions would wait for each other forever. Keys are taken in
    increasing order, and a transaction that would wait out of order commits first."""
    devices = tuple(f"d{i}" for i in range(16))
    world, src = source(devices)
    c = cloud(world)
    one, two = c.front_end(), c.front_end()
    base = src.delta(Frontier({}))
    receive(one, base)
    raws = []
    for d in devices:
        w = world.wallet(d, src)
        raws.append(w.build(Meta(account="main", field="f", value=d), now_ms=T0 + 9).raw)
    # Sorted by lock key, then one front-end gets them forwards and the other backwards.
    raws.sort(key=lambda r: author_lock_key(parse_record(r).record.author))
    for round_ in range(5):
        forwards, backwards = raws, raws[::-1]
        r1, r2 = in_threads(lambda: receive(one, forwards),  # noqa: B023  (joined at once)
                            lambda: receive(two, backwards))  # noqa: B023
        assert isinstance(r1, IngestReport)
        assert isinstance(r2, IngestReport)
        assert r1.unstored == 0
        assert r2.unstored == 0
        assert len(r1.applied) + len(r2.applied) == len(raws)
        assert one.store.totals().records == len(base) + (round_ + 1) * len(devices)
        assert not one.store.equivocations()
        raws = sorted((world.wallet(d, one).build(Meta(account="main", field="f", value="again"),
                                                  now_ms=T0 + 20).raw for d in devices),
                      key=lambda r: author_lock_key(parse_record(r).record.author))


# ---------------------------------------------------------------- a hot payee


def test_a_hot_payee_paid_by_40_devices_through_two_front_ends_gets_the_exact_sum(
        cloud: Callable[[World], Cloud]) -> None:
    payers = tuple(f"p{i}" for i in range(40))
    world, src = source((*payers, "shop"))
    c = cloud(world)
    one, two = c.front_end(), c.front_end()
    receive(one, src.delta(Frontier({})))
    shop = world.account("shop")
    payments: list[list[bytes]] = []
    for i, p in enumerate(payers):
        wallet = world.wallet(p, src)
        raws = []
        for k in range(3):
            paid = wallet.pay(shop, 1_00 + i, key=f"{p}-{k}", now_ms=T0 + 10 + k)
            raw = src.store.raw(paid.record_id)
            assert raw is not None
            raws.append(raw)
        payments.append(raws)
    expected = 100_00 + 3 * sum(1_00 + i for i in range(len(payers)))
    # Half the payers through each front-end, one record per transaction, interleaved
    # by payer so that both front-ends credit the payee all the time.
    def pay_through(front: Replica, chains: list[list[bytes]]) -> None:
        for k in range(3):
            for raws in chains:
                receive(front, [raws[k]])
    in_threads(lambda: pay_through(one, payments[0::2]),
               lambda: pay_through(two, payments[1::2]))
    assert one.balance(shop) == expected
    assert two.balance(shop) == expected
    assert one.conserved()
    totals = one.store.totals()
    assert totals.issued == 100_00 * (len(payers) + 1)
    assert sum(one.balances().values()) == totals.issued - totals.redeemed
    assert one.state_hash() == src.state_hash()
    # The payee spends what one record can take in (64 credits), through the other
    # front-end; the first front-end sees the claims.
    spent = Wallet(two, world.device_keys["shop"])
    with two.store.transaction():
        amount = spent.available()
        result = spent.pay(world.account("p0"), amount, key="spend", now_ms=T0 + 99)
    assert result.verdict.value == "applied"
    assert one.balance(shop) == expected - amount
    # It spent exactly what it claimed; the rest waits, unclaimed, on either front-end.
    assert sum(c.amount for c in one.store.unclaimed_credits(world.device("shop"))) \
        == expected - amount


# ---------------------------------------------------------------- node level


async def test_a_record_stored_through_one_front_end_reaches_a_live_session_of_the_other(
        cloud: Callable[[World], Cloud]) -> None:
    world, src = source(("alice", "bob"))
    hub = Wallet(src, world.authority_key).admit
    world.device_keys["hub"] = key("cloud/hub")
    hub(world.device("hub"), role=Role.HUB, now_ms=T0)
    c = cloud(world)
    base = src.delta(Frontier({}))
    receive(c.front_end(), base)
    config = NodeConfig(verify_in_process=False, poll_interval=0.2)
    hub_key = world.device_keys["hub"]
    front_a = Node(c.front_end(), hub_key, role="hub", config=config, wall_ms=lambda: WALL_MS)
    front_b = Node(c.front_end(), hub_key, role="hub", config=config, wall_ms=lambda: WALL_MS)
    alice_replica = Replica(world.network, SimStore())
    bob_replica = Replica(world.network, SimStore())
    for r in (alice_replica, bob_replica):
        r.receive_many(base, now_ms=WALL_MS)
    alice = Node(alice_replica, world.device_keys["alice"], config=config,
                 wall_ms=lambda: WALL_MS)
    bob = Node(bob_replica, world.device_keys["bob"], config=config, wall_ms=lambda: WALL_MS)
    paid = Wallet(bob_replica, world.device_keys["bob"]).pay(
        world.account("alice"), 7_00, key="to-alice", now_ms=T0 + 50)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front_a.watch_store)
        nursery.start_soon(front_b.watch_store)
        start_pair(nursery, alice, front_b, name="alice-b")  # alice stays connected to B
        await wait_until(lambda: bool(front_b.peers) and all(
            p.session.state is State.LIVE for p in front_b.peers.values()), within=10)
        started = trio.current_time()
        bob_done, _ = start_pair(nursery, bob, front_a, until_synced=True, name="bob-a")
        await wait_until(lambda: alice_replica.store.has(paid.record_id), within=10)
        took = trio.current_time() - started
        assert bob_done is not None
        nursery.cancel_scope.cancel()
    assert took < 1.5, took  # the sync itself, plus at most one poll of B's store
    assert alice_replica.balance(world.account("alice")) == 107_00
    assert isinstance(front_a.replica.store, PostgresStore)
    assert Account(device=world.device("alice")) in front_a.replica.balances()
