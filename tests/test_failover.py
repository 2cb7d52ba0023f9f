"""Failover of the cloud tier against real PostgreSQL servers.

The failover test runs `tools/bench_failover.py`'s scenario on a loopback cluster from
`tools/pg_cluster.py` (a primary and two standbys, `ANY 1 (s1, s2)` synchronous):
devices pay and sync without pause through two front-ends; the primary is SIGKILLed
mid-stream; the test promotes a standby (the script picks the one that received the
most); the front-ends reconnect by themselves. The front-ends are `Node`s over a
`PostgresStore` in this process - the same objects `serve` runs on a home whose
store is the multi-host URL - rather than `serve` processes, so that the test sees
exactly which records each device's sync reported as stored, and bounds everything
with one trio deadline. Checked: every acknowledged record is on the new primary,
none was acknowledged while no primary existed, the remaining standby holds exactly
what the new primary holds, and every device converges with the cloud.

The other tests make the two outcomes of a lost connection happen on purpose, on a
server of their own: a transaction cut off before its commit (nothing stored; the
store reconnects on its next call), and a commit whose reply is lost (the server
waits for a synchronous standby that does not exist, and the test terminates the
waiting backend: committed, but never acknowledged; the re-send is acknowledged and
stored once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import trio

# tools/ is on sys.path: tests/postgres_server.py, imported by conftest, put it there
from bench_failover import FailoverRun, cluster_running, lost_acknowledged, run_failover
from pg_cluster import Cluster
from pg_server import LocalServer

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.errors import StoreUnavailable, SyncFailed
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.sim.store import SimStore
from p2p_ledger.storage.postgres import PostgresStore

from .helpers import T0, World
from .node_helpers import WALL_MS
from .test_cloud import source

# ---------------------------------------------------------------- the failover


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with cluster_running(durable=False) as c:  # a process dies, not the power: no fsync
        yield c


async def test_no_acknowledged_record_is_lost_when_the_primary_dies_mid_stream(
        cluster: Cluster) -> None:
    run = await run_failover(cluster, devices=4, before=1.5, within=50)
    try:
        check_failover(run, cluster)
    finally:
        run.close()


def check_failover(run: FailoverRun, cluster: Cluster) -> None:
    assert run.acked_at_kill > 0
    assert run.acked_total > run.acked_at_kill  # records acknowledged by the new primary
    assert lost_acknowledged(run, cluster.url()) == []
    # Nothing was acknowledged while no primary existed: not before the promotion began.
    assert run.first_ack_after_kill_at is not None
    assert cluster.promote_began is not None
    assert run.first_ack_after_kill_at > cluster.promote_began
    # Each front-end lost its connection and made a new one by itself.
    for front in run.front_ends:
        store = front.replica.store
        assert isinstance(store, PostgresStore)
        assert store.reconnects >= 1
    # The database replicas converge: the standby left holds what the new primary holds.
    (dead,) = [n for n in cluster.nodes if n.role == "dead"]
    assert dead.name == "primary"
    cluster.caught_up()
    (standby,) = cluster.standbys()
    ids = []
    for node in (cluster.primary(), standby):
        with node.connect("ledger") as db:
            ids.append(db.execute(b"SELECT id FROM records ORDER BY id").fetchall())
    assert ids[0] == ids[1]
    assert len(ids[0]) >= run.acked_total
    # The ledger replicas converge: every device holds what the cloud holds.
    cloud = run.front_ends[0].replica
    assert cloud.conserved()
    for device in run.devices.values():
        assert device.replica.state_hash() == cloud.state_hash()


# ---------------------------------------------------------------- a lost connection


@pytest.fixture
def waiting_server() -> Iterator[LocalServer]:
    """A server whose commits, in sessions that ask for synchronous commit, wait for a
    standby that never comes: a commit stays in flight until the test ends it."""
    server = LocalServer(name="pg-wait", settings=(
        "fsync=off", "synchronous_commit=local", "synchronous_standby_names='absent'"))
    server.init()
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as db:
        db.execute(b"CREATE DATABASE ledger")
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        server.remove()


def _admin(server: LocalServer, dbname: str = "postgres"
           ) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.url(dbname), autocommit=True)


def _terminate(server: LocalServer, pid: int) -> None:
    """End a backend, and return once it has exited (the timeout form waits)."""
    with _admin(server) as db:
        assert db.execute(b"SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (
            True,)


def test_a_transaction_cut_off_before_commit_stores_nothing_and_the_store_reconnects(
        waiting_server: LocalServer) -> None:
    world, src = source(("alice", "bob"))
    store = PostgresStore(waiting_server.url("ledger"), world.network.network_id)
    front = Replica(world.network, store)
    base = src.delta(Frontier({}))
    with store.transaction():
        front.receive_many(base[:-1], now_ms=WALL_MS)

    def cut_off() -> None:
        with store.transaction():
            front.receive_many(base[-1:], now_ms=WALL_MS)
            _terminate(waiting_server, store._db.backend_pid)
    with pytest.raises(StoreUnavailable):
        cut_off()
    assert store.reconnects == 0
    assert store.totals().records == len(base) - 1  # this call reconnected
    assert store.reconnects == 1
    # The peer sends the last record again: stored now.
    with store.transaction():
        report = front.receive_many(base[-1:], now_ms=WALL_MS)
    assert len(report.applied) == 1
    assert front.state_hash() == src.state_hash()
    store.close()


def _cut_off_the_commit_of_records(server: LocalServer, done: list[int],
                                   stop: threading.Event) -> None:
    """Terminate (once) a backend whose commit of records waits for the standby:
    committed locally, but not yet replied to; it still holds its author locks, which
    mark it. Any other waiting commit (the peers table: no author lock), and any after
    the first, goes on: cancelling the wait, which PostgreSQL answers with success.
    Runs until `stop`, so that no commit of the test waits forever."""
    with _admin(server, "ledger") as db:
        while not stop.is_set():
            for pid, locks in db.execute(
                    b"SELECT a.pid, (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid "
                    b"AND l.locktype = 'advisory') FROM pg_stat_activity a "
                    b"WHERE a.wait_event = 'SyncRep'").fetchall():
                if locks and not done:
                    done.append(int(str(pid)))  # first: the test reads it once cut off
                    db.execute(b"SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    db.execute(b"SELECT pg_cancel_backend(%s)", (pid,))
            time.sleep(0.01)


async def test_a_commit_whose_reply_is_lost_is_not_acknowledged_and_its_resend_is_harmless(
        waiting_server: LocalServer) -> None:
    world, src = source(("alice", "bob"))
    base = src.delta(Frontier({}))
    url = waiting_server.url("ledger")
    plain = PostgresStore(url, world.network.network_id)  # commits without waiting
    with plain.transaction():
        Replica(world.network, plain).receive_many(base, now_ms=WALL_MS)
    # The front-end's commits wait for a synchronous standby (as on a primary).
    waiting = PostgresStore(url + "&options=-c%20synchronous_commit%3Don",
                            world.network.network_id)
    config = NodeConfig(verify_in_process=False)
    front = Node(Replica(world.network, waiting), world.device_keys["bob"], config=config)
    alice_replica = Replica(world.network, SimStore())
    alice_replica.receive_many(base, now_ms=WALL_MS)
    alice = Node(alice_replica, world.device_keys["alice"], config=config)
    paid = Wallet(alice_replica, world.device_keys["alice"]).pay(
        world.account("bob"), 3_00, key="cut-off", now_ms=T0 + 100)
    raw = alice_replica.store.raw(paid.record_id)
    assert raw is not None
    terminated: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_cut_off_the_commit_of_records,
                              args=(waiting_server, terminated, stop))
    killer.start()
    try:
        await _cut_off_then_resend(world, base, raw, paid.record_id, alice, front, plain,
                                   waiting, waiting_server, terminated)
    finally:
        stop.set()
        killer.join(30)
        plain.close()
        waiting.close()


async def _cut_off_then_resend(world: World, base: list[bytes], raw: bytes, rid: bytes,
                               alice: Node, front: Node, plain: PostgresStore,
                               waiting: PostgresStore, waiting_server: LocalServer,
                               terminated: list[int]) -> None:
    with trio.fail_after(30), pytest.raises(SyncFailed) as failed:
        await alice.sync(front)  # the front-end's commit blocks until it is terminated
    assert len(terminated) == 1
    assert failed.value.stats.stored_by_peer == 0  # never acknowledged ...
    assert plain.has(rid)  # ... though it did commit: the uncertain case
    # The standby "arrives" (as after a failover): the front-end goes on by itself.
    with _admin(waiting_server) as db:
        db.execute(b"ALTER SYSTEM SET synchronous_standby_names = ''")
        db.execute(b"SELECT pg_reload_conf()")
    with trio.fail_after(30):
        stats = await alice.sync(front)
    assert stats.synced
    assert waiting.reconnects == 1
    # The peer re-sends the record (it was never acknowledged): held, acknowledged as
    # stored (nothing unstored), and stored once.
    with waiting.transaction():
        again = front.replica.receive_many([raw], now_ms=WALL_MS)
    assert again.applied == []
    assert again.unstored == 0
    assert waiting.totals().records == len(base) + 1
    assert front.replica.balance(world.account("bob")) == 103_00
    assert front.replica.state_hash() == alice.replica.state_hash()
