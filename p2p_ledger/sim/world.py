"""The simulation engine: many real nodes in one process, on a virtual clock.

Every member is a real `Node` (p2p_ledger/node/node.py) over a real `Replica` whose
store is a `SimStore` (its disk). Members dial each other through `_connect`, which
makes a `SimConnection` (links.py) and hands its far end to the other member's
`Node.serve_stream`; from there on the sessions, the relaying and the redial backoff
are the node's own code. The engine only decides the world around the nodes: which
links are in range or cut, which member is down, who pays whom and when.

This file holds `World`: its set-up, payments, watching (commits, convergence,
samples) and the run itself. The members' lifecycle (starting, crashing, dialling and
connecting them, links going out of range or stalling) is `Lifecycle` in members.py,
a mixin of `World`, beside `SimNode`, `Member` and `Edge`, which are re-exported here.

A run has two phases. Until `duration` the workload pays and the faults act
(faults.py). At `duration` the faults stop: partitions heal, clogged links flow,
crashed members restart, the convoy closes up. The run then goes on until every
honest replica (its device not revoked) holds every record any honest replica holds,
with one state hash (converged), or `bound` more seconds pass. The checks (checks.py)
watch every committed batch throughout.

Determinism: every random choice comes from a `random.Random` derived from the seed and
a purpose ("workload", "link/7", ...), keys are derived from the seed, the clock is a
virtual clock starting at 0 (clock.py), and trio's own scheduler is seeded
(`_deterministic_trio`). The sessions' ephemeral X25519 keys come from the seed too
(`SimNode._ephemeral`). Nothing reads the wall clock or iterates over a hash-ordered set.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import nacl.signing
import trio
import trio.lowlevel
import trio.testing

from ..core.ids import Account
from ..core.ledger import Replica
from ..core.network import NetworkDescriptor
from ..core.records import Role
from ..core.wallet import Wallet
from ..errors import PaymentRefused
from .accel import CheckCache, shared_record_checks
from .checks import Checker, CheckResult
from .clock import SimClock
from .collector import collector_off
from .faults import run_faults, run_mobility, run_workload
from .links import LinkProfile, LinkStats
from .members import CONNECT_TIMEOUT as CONNECT_TIMEOUT
from .members import DISCOVERY_INTERVAL as DISCOVERY_INTERVAL
from .members import Edge, Lifecycle, Member, SimNode
from .paths import SecondPaths, run_couriers
from .plugins import CheckFn, ReplicaFactory, WorkloadFn, describe, run_check
from .scenarios import PROFILES, EdgeSpec, MemberSpec, SimParams, Topology, build_topology
from .store import PowerCut, SimStore
from .trace import Tracer

__all__ = ["CASH_IN", "T0_MS", "Edge", "Member", "SimNode", "World"]

T0_MS = 1_763_900_000_000  # the wall clock at simulated time 0 (2025-11-23)
CASH_IN = 10_000_00  # every device starts with 10,000.00 AED


@dataclass(slots=True, kw_only=True)
class Episode:
    kind: str  # "partition", "clog", "crash", "burst", "clone", "revoke"
    start: float
    end: float
    detail: dict[str, object] = field(default_factory=dict)


class World(Lifecycle):
    """One simulation run. `run()` once; then read the fields (report.py does)."""

    def __init__(self, params: SimParams,
                 progress: Callable[[float, float, float], None] | None = None, *,
                 replica_factory: ReplicaFactory | None = None,
                 checks: Iterable[CheckFn] = (),
                 workload: WorkloadFn | None = None,
                 trace: IO[str] | None = None) -> None:
        """`replica_factory`, `checks` and `workload` plug in the system under test
        (plugins.py, specs/simulator.md section 10); by default the real `Replica`,
        the built-in checks only and the scenario's workload. `trace`: where
        `simulate --trace` writes the run's events (trace.py)."""
        self.params = params
        self.progress = progress
        self.replica_factory: ReplicaFactory = replica_factory or Replica
        self.checks = list(checks)
        self.workload = workload
        self.check_results: list[CheckResult] = []  # the plugin checks', after the run
        self.tracer = None if trace is None else Tracer(trace)  # simulate --trace
        self.topology: Topology = build_topology(params.topology, params.nodes,
                                                 self.rng("topology"))
        self.authority_key = self._key("authority")
        self.network = NetworkDescriptor(name=f"sim-{params.scenario}", currency="AED",
                                         authority=bytes(self.authority_key.verify_key))
        self.members: list[Member] = []
        self.edges: list[Edge] = []
        self.edges_of: list[list[Edge]] = []
        self.position_of: list[int] = []  # whose position a member shares (clones)
        self.episodes: list[Episode] = []
        self.checker = Checker([s.name for s in self.topology.members],
                               [bytes(self._member_key(s).verify_key)
                                for s in self.topology.members], trio.current_time)
        self.quiet = False
        self.converged_at: float | None = None
        self.end_at = 0.0
        self.final_hashes: list[bytes] = []
        self.series: dict[str, list[float]] = {"t": [], "converged": [], "held": [],
                                               "missing_p50": [], "missing_p95": [],
                                               "missing_max": [], "bytes": [], "messages": []}
        # refused: by the payer's wallet for want of funds; revoked: by the wallet of a
        # revoked payer; tampered: signed anyway by a revoked device (revoking.py)
        self.payments = {"attempted": 0, "made": 0, "refused": 0, "revoked": 0,
                         "tampered": 0, "no_payer": 0}
        self.revoked: dict[bytes, int] = {}  # device -> after_seq
        self.bursting: list[list[int]] = []  # members a partition isolated (offline-burst)
        self.refused_records = 0
        self.cache: CheckCache | None = None
        self._watchers: dict[int, Replica] = {}  # member -> a Replica over its store
        self.genesis_stored = 0
        self._converged = trio.Event()
        self._root: trio.Nursery | None = None
        self.paths = SecondPaths(self)  # records beside the sessions (paths.py)
        self._build()

    # ------------------------------------------------------------ set-up

    def rng(self, purpose: str) -> random.Random:
        return random.Random(f"p2p-ledger-sim/{self.params.seed}/{purpose}")

    def _key(self, name: str) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(hashlib.blake2b(
            f"p2p-ledger-sim/{self.params.seed}/key/{name}".encode(), digest_size=32).digest())

    def _member_key(self, spec: MemberSpec) -> nacl.signing.SigningKey:
        return self.authority_key if spec.role == "authority" else self._key(spec.name)

    def _build(self) -> None:
        skew = self.rng("skew")
        genesis = self._genesis()
        for i, spec in enumerate(self.topology.members):
            key = self._member_key(spec)
            store = genesis.copy(owner=i)
            store.observer = self.observe
            offset = skew.uniform(-self.params.faults.skew, self.params.faults.skew)
            self.members.append(Member(index=i, name=spec.name, role=spec.role, key=key,
                                       store=store, skew_ms=round(offset * 1000),
                                       rng=self.rng(f"node/{i}"),
                                       ephemerals=self.rng(f"ephemeral/{i}"), axis=spec.axis))
            self.edges_of.append([])
            self.position_of.append(i)
        for link in self.topology.edges:
            self.add_edge(link)
        self.checker.genesis(genesis)
        for m in self.members:
            self.checker.counts[m.index] = m.store.totals().records
        self.genesis_stored = sum(self.checker.counts)  # records every store starts with
        if self.tracer is not None:
            self.tracer.start(self, genesis)
            for m in self.members:
                m.store.on_apply = self.tracer.on_apply

    def _genesis(self) -> SimStore:
        """The records every member holds at time 0: the authority admits everyone and
        cashes in every device (as if provisioned at the depot)."""
        store = SimStore()
        auth = Wallet(Replica(self.network, store), self.authority_key)
        specs = self.topology.members
        with store.transaction():
            for spec in specs:
                if spec.role != "authority":
                    role = Role.HUB if spec.role == "hub" else Role.DEVICE
                    auth.admit(bytes(self._key(spec.name).verify_key), now_ms=T0_MS, role=role)
            for spec in specs:
                if spec.role == "device":
                    auth.issue(Account(device=bytes(self._key(spec.name).verify_key)),
                               CASH_IN, key=f"cash-in-{spec.name}", now_ms=T0_MS)
        return store

    def add_edge(self, spec: EdgeSpec) -> Edge:
        f = self.params.faults
        base = PROFILES[spec.kind]
        profile = LinkProfile(
            latency=base.latency if f.latency is None else f.latency,
            jitter=base.jitter if f.jitter is None else f.jitter,
            bandwidth=base.bandwidth if f.bandwidth is None else f.bandwidth,
            loss=f.loss)
        edge = Edge(index=len(self.edges), a=spec.a, b=spec.b, kind=spec.kind, profile=profile,
                    stats=LinkStats(), rng=self.rng(f"link/{len(self.edges)}"))
        self.edges.append(edge)
        self.edges_of[spec.a].append(edge)
        self.edges_of[spec.b].append(edge)
        return edge

    def add_member(self, m: Member, position_of: int) -> None:
        self.members.append(m)
        self.edges_of.append([])
        self.position_of.append(position_of)
        self.checker.grow(m.name, m.device, m.store)
        if self.tracer is not None:
            m.store.on_apply = self.tracer.on_apply
            self.tracer.join(m, None if m.clone_of is None else self.members[m.clone_of].name)

    # ------------------------------------------------------------ members
    # (starting, crashing and connecting them: `Lifecycle`, members.py)

    def now_ms(self, m: Member) -> int:
        return T0_MS + round(trio.current_time() * 1000) + m.skew_ms

    # ------------------------------------------------------------ payments

    @contextlib.contextmanager
    def creating(self, m: Member) -> Iterator[None]:
        """Around a wallet signing on `m`: its commit is a creation, not an arrival.
        A power cut armed on `m` crashes it here like anywhere else."""
        self.checker.creating = m.index
        try:
            with m.store.transaction():
                yield
        except PowerCut:
            self.crash(m, mid_batch=True)
        finally:
            self.checker.creating = None
        if m.up and m.node is not None:
            m.node.push_new(trio.current_time())

    def pay(self, payer: Member, payee: Account, amount: int, key: str) -> None:
        self.payments["attempted"] += 1
        if payer.replica.store.revocations(payer.device):
            self.payments["revoked"] += 1  # its wallet refuses: it knows it is revoked
            return
        wallet = Wallet(payer.replica, payer.key)
        have = wallet.available()
        if have < 1_00:
            self.payments["refused"] += 1
            return
        with self.creating(payer):
            try:
                wallet.pay(payee, min(amount, have), key=key, now_ms=self.now_ms(payer))
                self.payments["made"] += 1
            except PaymentRefused:
                self.payments["refused"] += 1

    # ------------------------------------------------------------ watching

    def observe(self, store: SimStore, rids: list[bytes]) -> None:
        if self.tracer is not None:
            self.tracer.on_commit(store, rids, self.checker.creating == store.owner)
        # One Replica per disk to ask it: making one per commit worked out the network
        # id (CBOR and a hash) every time.
        watcher = self._watchers.get(store.owner)
        if watcher is None or watcher.store is not store:
            watcher = self._watchers[store.owner] = Replica(self.network, store)
        conserved = watcher.conserved()
        self.checker.on_commit(store.owner, store, rids, conserved)
        self.paths.on_stored(store.owner, rids)
        if self.quiet and self.checker.counts[store.owner] == self.checker.needed():
            self.check_converged()

    def honest(self) -> list[Member]:
        """The members that must converge: those whose device is not revoked (a revoked
        device fails every handshake, so it is cut off by design)."""
        return [m for m in self.members if self.checker.honest(m.index)]

    def converged_now(self) -> bool:
        """Every honest replica is up and holds every record any honest replica holds
        (equal counts of that many, and one state hash, which commits to the set)."""
        honest, needed = self.honest(), self.checker.needed()
        if not all(m.up and self.checker.counts[m.index] == needed for m in honest):
            return False
        return len({Replica(self.network, m.store).state_hash() for m in honest}) == 1

    def check_converged(self) -> None:
        if self.converged_at is None and self.converged_now():
            self.converged_at = trio.current_time()
            self._converged.set()

    def sample(self) -> None:
        needed = self.checker.needed()
        counts = [self.checker.counts[m.index] for m in self.honest()]
        n = len(counts)
        s = self.series
        s["t"].append(round(trio.current_time(), 3))
        s["converged"].append(round(sum(1 for c in counts if c == needed) / n, 4))
        s["held"].append(round(sum(counts) / (n * needed), 4))
        # How far behind the honest replicas are, in records (the plot's lag percentiles).
        missing = sorted(needed - c for c in counts)
        s["missing_p50"].append(missing[n // 2])
        s["missing_p95"].append(missing[min(n - 1, (95 * n) // 100)])
        s["missing_max"].append(missing[-1])
        s["bytes"].append(sum(e.stats.bytes for e in self.edges))
        s["messages"].append(sum(e.stats.frames for e in self.edges))

    async def _sampler(self) -> None:
        p = self.params
        every = min(5.0, max(0.5, (p.duration + p.bound) / 400))
        while True:
            self.sample()
            if self.quiet:
                self.check_converged()
            if self.progress is not None:
                self.progress(trio.current_time(), p.duration + p.bound,
                              self.series["converged"][-1])
            await trio.sleep(every)

    # ------------------------------------------------------------ running

    def run(self) -> None:
        seed = int.from_bytes(hashlib.blake2b(
            f"p2p-ledger-sim/{self.params.seed}/trio".encode(), digest_size=8).digest(), "big")
        with (shared_record_checks(self.params.shared_checks) as cache,
              _deterministic_trio(seed), _node_logs(self), collector_off()):
            self.cache = cache
            trio.run(self._main, clock=SimClock())
            self._finish()

    async def _main(self) -> None:
        async with trio.open_nursery() as root:
            self._root = root
            for m in self.members:
                self.start(m)
            root.start_soon(self._workload)
            root.start_soon(run_faults, self)
            if self.topology.radio_range is not None:
                root.start_soon(run_mobility, self)
            root.start_soon(self._sampler)
            root.start_soon(self.paths.run)
            root.start_soon(run_couriers, self, self.paths)
            await trio.sleep_until(self.params.duration)
            self.quiet = True
            await trio.lowlevel.checkpoint()  # let the fault tasks restore the world first
            self.check_converged()
            with trio.move_on_after(self.params.bound):
                # The commit that completes the honest set may make its node sign more
                # at once, before this task runs (the authority revoking the fork it
                # has just seen): look again now, and wait on if the world moved on.
                while True:
                    await self._converged.wait()
                    if self.converged_now():
                        break
                    self.converged_at, self._converged = None, trio.Event()
                    self.check_converged()
            self.sample()
            self.end_at = trio.current_time()
            if self.tracer is not None:
                self.tracer.end(self)
            root.cancel_scope.cancel()

    async def _workload(self) -> None:
        if self.workload is None:
            await run_workload(self)
            return
        with trio.move_on_at(self.params.duration):
            await self.workload(self)

    def plugins(self) -> dict[str, object]:
        """Which plugins ran (for the report's parameters); empty when none did."""
        out: dict[str, object] = {}
        if self.replica_factory is not Replica:
            out["replica"] = describe(self.replica_factory)
        if self.checks:
            out["checks"] = [describe(c) for c in self.checks]
        if self.workload is not None:
            out["workload"] = describe(self.workload)
        return out

    def events(self) -> int:
        """Simulated events: link writes delivered, records stored, payments tried."""
        return (sum(e.stats.chunks for e in self.edges) + sum(self.checker.counts)
                + self.payments["attempted"])

    def deliveries(self) -> tuple[int, int]:
        """(records sessions handed to replicas, of those the ones new to the replica):
        their ratio is how many times flooding brings a record to each replica."""
        return (sum(m.delivered for m in self.members),
                sum(len(lags) for lags in self.checker.lags))

    def not_pushed(self) -> int:
        """Records the nodes left out of pushes: the peer was known to hold them."""
        return sum(m.not_pushed for m in self.members)

    def _finish(self) -> None:
        self.final_hashes = [Replica(self.network, m.store).state_hash() for m in self.members]
        for m in self.members:
            m.store.observer = None
        self.check_results = [run_check(check, self) for check in self.checks]


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's scheduler replayable: the order in which it runs tasks that become
    runnable together is drawn from `trio._core._run._r`, which we seed, in the
    deterministic mode pytest-trio and Hypothesis use. (Private to trio; see
    specs/simulator.md.)"""
    from trio._core import _run

    saved = (_run.__dict__["_ALLOW_DETERMINISTIC_SCHEDULING"], _run._r.getstate())
    _run.__dict__["_ALLOW_DETERMINISTIC_SCHEDULING"] = True
    _run._r.seed(seed)
    try:
        yield
    finally:
        _run.__dict__["_ALLOW_DETERMINISTIC_SCHEDULING"] = saved[0]
        _run._r.setstate(saved[1])


class _NodeLogCounter(logging.Handler):
    def __init__(self, world: World) -> None:
        super().__init__(logging.WARNING)
        self.world = world

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("session %s: refused record"):
            self.world.refused_records += 1


@contextlib.contextmanager
def _node_logs(world: World) -> Iterator[None]:
    """Keep the nodes' logs out of the terminal; count refused records instead."""
    log = logging.getLogger("p2p_ledger.node")
    handler = _NodeLogCounter(world)
    saved = (log.propagate, log.level)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate, log.level = saved
