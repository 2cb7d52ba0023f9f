"""Named scenarios: a topology, a workload and the faults that run by default.

A *topology* is the simulated members (the network authority, hubs, devices), the
possible links between them (each with a `LinkProfile`), a coordinate per member
along which partitions split the network, and, for radio topologies, positions that
move and decide which links are in range.

- convoy: vehicles in a line on a road; each drifts around its slot, so neighbours come
  in and out of radio range (links to the next two vehicles are possible). The lead
  vehicle carries the authority (the cash office). At the end it closes up.
- site: clusters of devices, each around a hub on Wi-Fi with a ring of device-to-device
  links; the hubs and the site office (the authority) share a LAN.
- hub-tree: the cloud (the authority) at the root, regional hubs over satellite, site
  hubs below them, devices on Wi-Fi at the leaves.
- geometric: devices at random points of a square, linked when within radio range
  (chosen for about eight neighbours; isolated groups are joined to their nearest).

Scenarios combine one of these with a workload (payments at a rate, offline bursts, a
cloned device, revocations) and default faults; command-line options override them.
Nothing here runs anything; `world.py` does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .links import LinkProfile

__all__ = ["PROFILES", "SCENARIOS", "EdgeSpec", "Faults", "MemberSpec", "Scenario",
           "SimParams", "Topology", "build_topology", "params_for"]

# Link kinds: what the radio or wire between two members is like.
PROFILES: dict[str, LinkProfile] = {
    "radio": LinkProfile(latency=0.010, jitter=0.005, bandwidth=250_000),
    "wifi": LinkProfile(latency=0.003, jitter=0.002, bandwidth=1_000_000),
    "lan": LinkProfile(latency=0.001, jitter=0.0, bandwidth=10_000_000),
    "satellite": LinkProfile(latency=0.300, jitter=0.050, bandwidth=64_000),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberSpec:
    name: str
    role: str  # "authority", "hub" or "device"
    axis: float  # where partitions split
    position: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeSpec:
    a: int  # the member that dials
    b: int
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    members: tuple[MemberSpec, ...]
    edges: tuple[EdgeSpec, ...]
    radio_range: float | None = None  # positions decide which edges are up
    spacing: float = 1.0  # convoy: the distance between slots


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    latency: float | None = None  # override every link's one-way latency (s)
    jitter: float | None = None
    bandwidth: float | None = None  # bytes/s
    loss: float = 0.0
    reorder: float = 0.0  # records also sent alone over a shortcut (paths.py)
    duplicate: float = 0.0  # second-path deliveries made twice (paths.py)
    couriers: int = 0  # carriers of bundles between members, sneakernet (paths.py)
    partitions: int = 0  # split-and-heal episodes
    bridge: bool = False  # one member keeps its links across every split
    clogs: int = 0  # episodes of links stopped one by one, restored in random order
    crashes: int = 0
    mid_batch: float = 0.5  # share of crashes that cut power inside a store transaction
    skew: float = 0.0  # clock offsets drawn in [-skew, +skew] seconds
    mobility: bool = True  # radio topologies: members move


@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    scenario: str
    topology: str
    workload: str
    nodes: int
    seed: int
    duration: float  # seconds of workload and faults; then quiet until convergence
    rate: float  # payments per simulated second
    bound: float  # seconds after the faults stop within which replicas must converge
    faults: Faults = field(default_factory=Faults)
    backoff_max: float = 16.0  # the nodes' redial backoff cap
    shared_checks: bool = True

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k) for k in (
            "scenario", "topology", "workload", "nodes", "seed", "duration", "rate", "bound",
            "backoff_max", "shared_checks")}
        f = self.faults
        out["faults"] = {k: getattr(f, k) for k in f.__dataclass_fields__}
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    topology: str
    workload: str
    nodes: int
    duration: float
    rate: float
    bound: float
    faults: Faults


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(name="convoy", description="a moving line of vehicles; the convoy splits and "
             "rejoins twice", topology="convoy", workload="payments", nodes=30,
             duration=120.0, rate=5.0, bound=120.0, faults=Faults(partitions=2)),
    Scenario(name="site", description="device clusters around hubs on a site LAN; two "
             "members drawn from the hubs and devices crash (half of them with the power cut "
             "inside a store transaction) and restart, and links clog", topology="site",
             workload="payments", nodes=40,
             duration=120.0, rate=5.0, bound=120.0, faults=Faults(crashes=2, clogs=1)),
    Scenario(name="hub-tree", description="devices, site hubs and regional hubs up to the "
             "cloud over satellite; the network splits once between its sites", topology="hub-tree",
             workload="payments", nodes=40, duration=120.0, rate=5.0, bound=180.0,
             faults=Faults(partitions=1)),
    Scenario(name="geometric", description="devices at random points linked within radio "
             "range, lossy and jittery", topology="geometric", workload="payments",
             nodes=40, duration=120.0, rate=5.0, bound=120.0,
             faults=Faults(loss=0.02, jitter=0.02)),
    Scenario(name="offline-burst", description="a site where whole clusters go offline and "
             "pay in bursts until they reconnect", topology="site", workload="offline-burst",
             nodes=40, duration=120.0, rate=4.0, bound=120.0, faults=Faults(partitions=2)),
    Scenario(name="cloned-device", description="a convoy in which one device's key is "
             "cloned onto a second vehicle that pays from the same account",
             topology="convoy", workload="cloned-device", nodes=20, duration=90.0, rate=4.0,
             bound=120.0, faults=Faults()),
    Scenario(name="revocations", description="a hub tree where the authority revokes "
             "devices while they are cut off with their site; they go on signing (with a "
             "tampered wallet once they know) and reconnect", topology="hub-tree",
             workload="revocations",
             nodes=30, duration=90.0, rate=4.0, bound=180.0, faults=Faults()),
    Scenario(name="sneakernet", description="site clusters cut off from each other twice; "
             "couriers carry bundles of records across, handed over late, twice and out of "
             "order, and some records take a shortcut ahead of their causal past",
             topology="site", workload="payments", nodes=20, duration=60.0, rate=4.0,
             bound=120.0, faults=Faults(partitions=2, couriers=3, reorder=0.02,
                                        duplicate=0.2)),
    Scenario(name="chaos", description="random geometric network with every fault: loss, "
             "records reordered and duplicated over second paths and carried by couriers, "
             "partitions with a bridge, clogging, crashes (half mid-batch) and clock skew",
             topology="geometric", workload="payments", nodes=30, duration=150.0, rate=4.0,
             bound=180.0,
             faults=Faults(loss=0.02, jitter=0.01, reorder=0.01, duplicate=0.2, couriers=2,
                           partitions=2, bridge=True, clogs=1, crashes=3, skew=2.0)),
)}


def params_for(name: str | Scenario, *, seed: int = 1, **overrides: object) -> SimParams:
    """A scenario's parameters (by name, or a `Scenario` such as the swarm's draw) with
    `overrides` (None values are ignored); fault overrides go in `faults` as a dict."""
    s = name if isinstance(name, Scenario) else SCENARIOS[name]
    faults = s.faults
    fault_overrides = overrides.pop("faults", None)
    if isinstance(fault_overrides, dict):
        faults = replace(faults, **{k: v for k, v in fault_overrides.items() if v is not None})
    base = SimParams(scenario=s.name, topology=s.topology, workload=s.workload, nodes=s.nodes,
                     seed=seed, duration=s.duration, rate=s.rate, bound=s.bound,
                     faults=faults)
    chosen: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **chosen)


# ---------------------------------------------------------------- topologies

def _convoy(n: int, rng: random.Random) -> Topology:
    members = [MemberSpec(name="lead" if i == 0 else f"truck-{i:03d}",
                          role="authority" if i == 0 else "device", axis=float(i),
                          position=(float(i), 0.0)) for i in range(n)]
    edges = [EdgeSpec(a=i, b=j, kind="radio") for i in range(n)
             for j in range(i + 1, min(i + 3, n))]
    return Topology(members=tuple(members), edges=tuple(edges), radio_range=1.6, spacing=1.0)


def _site(n: int, rng: random.Random) -> Topology:
    clusters = max(1, round((n - 1) / 9))
    members = [MemberSpec(name="office", role="authority", axis=0.0)]
    hubs = []
    for c in range(clusters):
        hubs.append(len(members))
        members.append(MemberSpec(name=f"hub-{c:02d}", role="hub", axis=float(c)))
    devices: list[list[int]] = [[] for _ in range(clusters)]
    for d in range(n - 1 - clusters):
        c = d % clusters
        devices[c].append(len(members))
        members.append(MemberSpec(name=f"dev-{c:02d}-{len(devices[c]):02d}", role="device",
                                  axis=c + 0.5))
    edges = [EdgeSpec(a=h, b=0, kind="lan") for h in hubs]
    edges += [EdgeSpec(a=h, b=k, kind="lan") for i, h in enumerate(hubs) for k in hubs[i + 1:]]
    for c, group in enumerate(devices):
        edges += [EdgeSpec(a=d, b=hubs[c], kind="wifi") for d in group]
        if len(group) > 2:
            edges += [EdgeSpec(a=group[i], b=group[(i + 1) % len(group)], kind="wifi")
                      for i in range(len(group))]
    return Topology(members=tuple(members), edges=tuple(edges))


def _hub_tree(n: int, rng: random.Random) -> Topology:
    sites = max(1, n // 8)
    regions = sites // 4 if sites > 4 else 0
    members = [MemberSpec(name="cloud", role="authority", axis=0.0)]
    edges: list[EdgeSpec] = []
    region_ids = []
    for r in range(regions):
        region_ids.append(len(members))
        members.append(MemberSpec(name=f"region-{r:02d}", role="hub", axis=r * 100.0))
        edges.append(EdgeSpec(a=len(members) - 1, b=0, kind="satellite"))
    site_ids = []
    for s in range(sites):
        up = region_ids[s % regions] if regions else 0
        axis = (s % regions) * 100.0 + s if regions else float(s)
        site_ids.append(len(members))
        members.append(MemberSpec(name=f"site-{s:02d}", role="hub", axis=axis))
        edges.append(EdgeSpec(a=len(members) - 1, b=up, kind="lan" if regions else "satellite"))
    for d in range(n - len(members)):
        up = site_ids[d % sites]
        members.append(MemberSpec(name=f"dev-{d:03d}", role="device",
                                  axis=members[up].axis + 0.5))
        edges.append(EdgeSpec(a=len(members) - 1, b=up, kind="wifi"))
    return Topology(members=tuple(members), edges=tuple(edges))


def _geometric(n: int, rng: random.Random) -> Topology:
    points = [(rng.random(), rng.random()) for _ in range(n)]
    r = math.sqrt(8.0 / (math.pi * n))
    members = [MemberSpec(name="authority" if i == 0 else f"dev-{i:03d}",
                          role="authority" if i == 0 else "device", axis=p[0], position=p)
               for i, p in enumerate(points)]
    pairs = {(i, j) for i in range(n) for j in range(i + 1, n)
             if math.dist(points[i], points[j]) <= r}
    # Join isolated groups to the nearest member outside them, until one group remains.
    group = list(range(n))

    def find(x: int) -> int:
        while group[x] != x:
            group[x] = group[group[x]]
            x = group[x]
        return x
    for i, j in sorted(pairs):
        group[find(i)] = find(j)
    while len({find(i) for i in range(n)}) > 1:
        root = find(0)
        inside = [i for i in range(n) if find(i) == root]
        outside = [j for j in range(n) if find(j) != root]
        i, j = min(((i, j) for i in inside for j in outside),
                   key=lambda ij: math.dist(points[ij[0]], points[ij[1]]))
        pairs.add((min(i, j), max(i, j)))
        group[find(j)] = root
    edges = [EdgeSpec(a=i, b=j, kind="radio") for i, j in sorted(pairs)]
    return Topology(members=tuple(members), edges=tuple(edges))


_BUILDERS: dict[str, Callable[[int, random.Random], Topology]] = {
    "convoy": _convoy, "site": _site, "hub-tree": _hub_tree, "geometric": _geometric}


def build_topology(name: str, nodes: int, rng: random.Random) -> Topology:
    if nodes < 3:
        raise ValueError("a simulation needs at least 3 nodes")
    return _BUILDERS[name](nodes, rng)
