"""Failover of the cloud tier: devices sync through two front-ends while the primary dies.

    python tools/bench_failover.py [--devices N] [--before S] [--json]

A primary and two quorum-synchronous standbys run on loopback (`pg_cluster.Cluster`,
durable: fsync on). Two front-ends - `Node`s over a `PostgresStore` each, whose URL
lists all three hosts with `target_session_attrs=read-write`, exactly what `serve` runs
on a home made by `init --store URL` - listen on loopback TCP. N devices (in-memory
stores) each pay another device 0.01 and sync, alternating front-ends, without pause.
A device counts a record of its own as **acknowledged** when a sync that started
holding it ends in sync (the front-end stored, committed and acknowledged everything
the device sent, and held the rest). After `--before` seconds the primary is
SIGKILLed (all its processes), then the standby that received the most WAL is
promoted (`Cluster.promote`); the front-ends reconnect by themselves on their next
statement. The run goes on until every device has had a record acknowledged after the
promotion, then every device syncs to the end.

Printed: acknowledged records, **acknowledged records lost** (acknowledged, but not in
the new primary: must be 0), the time from the primary's death to the first
acknowledged record after it (by a sync begun after it), how long the promotion took,
the baseline of the same run - the median time of one sync before the death - and the
ratio of the two, and the front-ends' reconnections. `failover_rows()` returns the
same as rows for a combined benchmark table. `run_failover` is the scenario, which
tests/test_failover.py runs too (and checks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_cluster import Cluster

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import Role
from p2p_ledger.core.store import MemoryStore
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.errors import PaymentRefused, TransportError
from p2p_ledger.node.links import parse_link
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.sim.store import SimStore
from p2p_ledger.storage.postgres import PostgresStore

__all__ = ["FailoverRun", "cluster_running", "failover_rows", "run_failover"]

CASH = 100_00
START_MS = 1_763_900_000_000  # the authority's records (2025-11-23); devices sign at now


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(f"failover/{name}".encode(),
                                                   digest_size=32).digest())


@dataclass
class FailoverRun:
    """What happened, for the test to check and the benchmark to print."""

    network: NetworkDescriptor
    front_ends: list[Node]
    devices: dict[str, Node]
    acked: dict[str, set[bytes]] = field(default_factory=dict)  # own records acknowledged
    acked_at_kill: int = 0
    syncs: int = 0
    failed_syncs: int = 0
    sync_seconds_before: list[float] = field(default_factory=list)  # in-sync ones, pre-kill
    killed_at: float = 0.0  # trio clock, seconds: when the primary was seen dead
    promoted_at: float = 0.0
    first_ack_after_kill: float | None = None  # seconds after the kill, of a sync begun
    # after it (one begun before may end with a commit made before the death)
    first_ack_after_kill_at: float | None = None  # the same moment, time.monotonic()

    def close(self) -> None:
        """Close the front-ends' database connections."""
        for front in self.front_ends:
            store = front.replica.store
            assert isinstance(store, PostgresStore)
            store.close()

    @property
    def acked_total(self) -> int:
        return sum(len(ids) for ids in self.acked.values())


def _world(names: list[str]) -> tuple[NetworkDescriptor, dict[str, nacl.signing.SigningKey],
                                      list[bytes]]:
    """The network, its keys, and the authority's records: admits (the front-ends' as a
    hub) and cash for every device."""
    authority = _key("authority")
    network = NetworkDescriptor(name="failover", currency="AED",
                                authority=bytes(authority.verify_key))
    keys = {n: _key(n) for n in [*names, "cloud"]}
    auth = Wallet(Replica(network, MemoryStore()), authority)
    auth.admit(bytes(keys["cloud"].verify_key), role=Role.HUB, now_ms=START_MS)
    for n in names:
        auth.admit(bytes(keys[n].verify_key), now_ms=START_MS)
        auth.issue(Account(device=bytes(keys[n].verify_key)), CASH, key=f"cash-{n}",
                   now_ms=START_MS)
    return network, keys, auth.replica.delta(Frontier({}))


async def run_failover(cluster: Cluster, *, devices: int = 6, before: float = 2.0,
                       within: float = 60.0) -> FailoverRun:
    """Run the scenario on a started cluster (see the module docstring)."""
    names = [f"d{i}" for i in range(devices)]
    network, keys, base = _world(names)
    config = NodeConfig(verify_in_process=False, poll_interval=0.2)
    fronts = []
    for _ in range(2):
        replica = Replica(network, PostgresStore(cluster.url(), network.network_id))
        if not fronts:
            with replica.store.transaction():
                replica.receive_many(base, now_ms=START_MS)
        fronts.append(Node(replica, keys["cloud"], role="hub", config=config))
    nodes = {}
    for n in names:
        replica = Replica(network, SimStore())
        replica.receive_many(base, now_ms=START_MS)
        nodes[n] = Node(replica, keys[n], config=config)
    run = FailoverRun(network=network, front_ends=fronts, devices=nodes,
                      acked={n: set() for n in names})
    stop = trio.Event()
    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            links = []
            for front in fronts:
                nursery.start_soon(front.watch_store)
                listeners = await nursery.start(trio.serve_tcp, front.accept_tcp, 0)
                port = listeners[0].socket.getsockname()[1]
                links.append(parse_link(f"tcp://127.0.0.1:{port}"))
            for i, n in enumerate(names):
                payee = names[(i + 1) % len(names)]
                nursery.start_soon(_device, run, n, keys, payee, links, stop)
            await _failover(run, cluster, before, devices)
            stop.set()
            await trio.sleep(0.5)  # the devices' last syncs end
            for _ in range(2):  # the last records everywhere: each syncs, then each again
                for i, n in enumerate(names):
                    await _sync_until_synced(nodes[n], links[i % 2])
            nursery.cancel_scope.cancel()
    return run


async def _failover(run: FailoverRun, cluster: Cluster, before: float, devices: int) -> None:
    started = trio.current_time()
    # polled: the devices' tasks change these as they go
    while (trio.current_time() - started < before  # noqa: ASYNC110
           or not all(run.acked.values())):  # every device acknowledged before the kill
        await trio.sleep(0.05)
    run.acked_at_kill = run.acked_total
    await trio.to_thread.run_sync(cluster.kill_primary)  # returns when it is dead
    run.killed_at = trio.current_time()
    await trio.to_thread.run_sync(cluster.promote)
    run.promoted_at = trio.current_time()
    acked_after = run.acked_total
    # every device has a record acknowledged by the new primary
    while (run.acked_total - acked_after < devices  # noqa: ASYNC110
           or run.first_ack_after_kill is None):
        await trio.sleep(0.05)


async def _device(run: FailoverRun, name: str, keys: dict[str, nacl.signing.SigningKey],
                  payee: str, links: list[object], stop: trio.Event) -> None:
    node = run.devices[name]
    wallet = Wallet(node.replica, keys[name])
    to = Account(device=bytes(keys[payee].verify_key))
    mine: set[bytes] = set()
    i = 0
    while not stop.is_set():
        i += 1
        try:
            paid = wallet.pay(to, 1, key=f"{name}-{i}", now_ms=time.time_ns() // 1_000_000)
            mine.add(paid.record_id)
        except PaymentRefused:
            pass  # spent out: syncing goes on
        holding = set(mine)
        started = trio.current_time()
        run.syncs += 1
        try:
            with trio.move_on_after(10):
                stats = await node.sync_once(links[i % 2])  # type: ignore[arg-type]
                if stats.synced:
                    if not run.killed_at:
                        run.sync_seconds_before.append(trio.current_time() - started)
                    new = holding - run.acked[name]
                    run.acked[name] |= holding
                    if (new and run.killed_at and run.first_ack_after_kill is None
                            and started > run.killed_at):  # wholly after the death
                        run.first_ack_after_kill = trio.current_time() - run.killed_at
                        run.first_ack_after_kill_at = time.monotonic()
                    await trio.sleep(0.01)
                    continue
        except TransportError:
            pass
        run.failed_syncs += 1
        await trio.sleep(0.05)


async def _sync_until_synced(node: Node, link: object, tries: int = 20) -> None:
    for _ in range(tries):
        with trio.move_on_after(10):
            if (await node.sync_once(link)).synced:  # type: ignore[arg-type]
                return
        await trio.sleep(0.1)
    raise RuntimeError("a device never got in sync after the failover")


@contextmanager
def cluster_running(*, durable: bool) -> Iterator[Cluster]:
    cluster = Cluster(root=Path(tempfile.mkdtemp(prefix="p2p-failover-")), durable=durable)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def lost_acknowledged(run: FailoverRun, url: str) -> list[bytes]:
    """Acknowledged records that the database (the new primary) does not hold."""
    store = PostgresStore(url, run.network.network_id)
    try:
        acked = [rid for ids in run.acked.values() for rid in ids]
        held = store.held_among(acked)
        return [rid for rid in acked if rid not in held]
    finally:
        store.close()


def failover_rows(*, devices: int = 6, before: float = 2.0) -> list[dict[str, object]]:
    """One row: the figures of one failover run on a durable cluster."""
    async def scenario(cluster: Cluster) -> FailoverRun:
        return await run_failover(cluster, devices=devices, before=before)

    with cluster_running(durable=True) as cluster:
        run = trio.run(scenario, cluster)
        run.close()
        lost = lost_acknowledged(run, cluster.url())
    durations = sorted(run.sync_seconds_before)
    median = durations[len(durations) // 2] if durations else 0.0
    first = run.first_ack_after_kill
    return [{
        "system": "ledger-cloud", "case": "failover", "devices": devices,
        "acknowledged": run.acked_total, "acknowledged_before_kill": run.acked_at_kill,
        "acknowledged_lost": len(lost),
        "death_to_first_ack_s": None if first is None else round(first, 3),
        "median_sync_s": round(median, 3),
        "death_to_first_ack_x_sync": None if first is None or not median
        else round(first / median, 1),
        "promotion_s": round(run.promoted_at - run.killed_at, 3),
        "syncs": run.syncs, "failed_syncs": run.failed_syncs,
        "reconnects": [_reconnects(f) for f in run.front_ends],
    }]


def _reconnects(front: Node) -> int:
    store = front.replica.store
    assert isinstance(store, PostgresStore)
    return store.reconnects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=6)
    parser.add_argument("--before", type=float, default=2.0,
                        help="seconds of syncing before the primary is killed")
    args = parser.parse_args(argv)
    (row,) = failover_rows(devices=args.devices, before=args.before)
    print(f"failover, {args.devices} devices syncing through 2 front-ends "
          "(primary + 2 standbys, ANY 1 synchronous, fsync on):")
    print(f"  acknowledged records          {row['acknowledged']} "
          f"({row['acknowledged_before_kill']} before the kill)")
    print(f"  acknowledged records lost     {row['acknowledged_lost']} (target 0: "
          f"{'met' if row['acknowledged_lost'] == 0 else 'NOT met'})")
    print(f"  death to first ack after it   {row['death_to_first_ack_s']} s "
          f"(of which the promotion {row['promotion_s']} s)")
    print(f"  one sync before the death     {row['median_sync_s']} s (median): the "
          f"failover cost {row['death_to_first_ack_x_sync']}x one sync")
    print(f"  syncs                         {row['syncs']} ({row['failed_syncs']} failed "
          "during the failover)")
    print(f"  front-end reconnections       {row['reconnects']}")
    print(json.dumps(row))
    return 0 if row["acknowledged_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
