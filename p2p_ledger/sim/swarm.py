"""Swarm mode (`simulate --swarm`): the run's whole configuration drawn from its seed.

As in swarm testing (Groce et al., and TigerBeetle's VOPR), each seed switches every
fault on or off with even odds and then draws its strength, and also draws the
topology, the workload, the size, the duration and the rate. A soak of many seeds so
explores combinations the named scenarios never make (loss with clock skew and a
mid-batch crash on a site; a clone in a convoy that never moves ...), where one big
"everything on" scenario would let one fault mask another.

The draw comes from its own stream (`p2p-ledger-sim/SEED/swarm`) and from nothing
else: `--swarm --seed S` gives the same parameters every time, they are written in
the report's `parameters` (scenario "swarm"), and command-line options override them
as they override a named scenario's defaults. The swarm never builds a world that
cannot converge by design (specs/simulator.md section 3): a cloned device only in a
convoy (which closes up, so no single revoked vehicle cuts it), revocations only where
devices are not cut vertices (convoy, site, hub tree; not the geometric graph).
"""

from __future__ import annotations

import random

from .scenarios import Faults, Scenario, SimParams

__all__ = ["MAX_NODES", "MIN_NODES", "swarm_scenario", "swarm_summary"]

MIN_NODES = 4
MAX_NODES = 16  # small: a soak runs many seeds; --nodes overrides
BOUND = 180.0

_TOPOLOGIES = {  # per workload, where it can run (see the module's last paragraph)
    "payments": ("convoy", "geometric", "hub-tree", "site"),
    "offline-burst": ("convoy", "geometric", "hub-tree", "site"),
    "cloned-device": ("convoy",),
    "revocations": ("convoy", "hub-tree", "site"),
}


def swarm_scenario(seed: int) -> Scenario:
    """The configuration seed `seed` draws (a `Scenario` named "swarm")."""
    rng = random.Random(f"p2p-ledger-sim/{seed}/swarm")
    workload = rng.choice(sorted(_TOPOLOGIES))
    topology = rng.choice(_TOPOLOGIES[workload])

    def on() -> bool:
        return rng.random() < 0.5

    faults = Faults(
        jitter=round(rng.uniform(0.0, 0.05), 3) if on() else None,
        bandwidth=float(rng.choice((32_000, 64_000, 250_000, 1_000_000))) if on() else None,
        loss=round(rng.uniform(0.001, 0.08), 4) if on() else 0.0,
        reorder=round(rng.uniform(0.002, 0.05), 4) if on() else 0.0,
        duplicate=round(rng.uniform(0.02, 0.5), 3) if on() else 0.0,
        couriers=rng.randint(1, 3) if on() else 0,
        partitions=rng.randint(1, 3) if on() else 0,
        bridge=on(),
        clogs=rng.randint(1, 2) if on() else 0,
        crashes=rng.randint(1, 4) if on() else 0,
        mid_batch=round(rng.random(), 2),
        skew=round(rng.uniform(0.0, 5.0), 1) if on() else 0.0,
        mobility=on())
    return Scenario(name="swarm", description=f"swarm seed {seed}: {topology}, {workload}",
                    topology=topology, workload=workload,
                    nodes=rng.randint(MIN_NODES, MAX_NODES),
                    duration=float(rng.randint(20, 90)), rate=round(rng.uniform(0.5, 5.0), 2),
                    bound=BOUND, faults=faults)


def swarm_summary(params: SimParams) -> str:
    """One line: what a (swarm) run's parameters switched on."""
    f = params.faults
    on = [name for name, value in (
        ("loss", f.loss), ("jitter", f.jitter), ("bandwidth", f.bandwidth),
        ("reorder", f.reorder), ("duplicate", f.duplicate), ("couriers", f.couriers),
        ("partitions", f.partitions),
        ("clogs", f.clogs), ("crashes", f.crashes), ("skew", f.skew)) if value]
    if f.bridge and f.partitions:
        on.append("bridge")
    if f.mobility and params.topology == "convoy":
        on.append("mobility")
    return (f"{params.topology}, {params.workload}, {params.nodes} nodes, "
            f"{params.rate:g}/s for {params.duration:g} s; faults: "
            f"{', '.join(on) if on else 'none'}")
