"""Crash faults that found their own bugs while the swarm soak and the plot were built:
two crash tasks taking the same member (both restarted it: two nodes over one store),
and a cloned device inheriting the power cut armed in the original's disk (it crashed
on its first write and nothing restarted it: swarm seed 51 on the pre-merge draw)."""

from __future__ import annotations

import itertools

import pytest

from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.store import SimStore
from p2p_ledger.sim.world import World


@pytest.mark.parametrize("seed", [3, 4, 5, 7])
def test_one_member_is_never_crashed_twice_at_once(seed: int) -> None:
    starts_while_up: list[str] = []

    class Watched(World):
        def start(self, m):  # type: ignore[no-untyped-def]
            if m.up:
                starts_while_up.append(m.name)
            super().start(m)

    world = Watched(params_for("chaos", seed=seed, nodes=6, duration=30.0, rate=1.0,
                               faults={"crashes": 8, "partitions": 0, "clogs": 0}))
    world.run()
    crashes = sorted((e.detail["node"], e.start, e.end) for e in world.episodes
                     if e.kind == "crash")
    assert len(crashes) >= 3
    overlapping = [(a, b) for a, b in itertools.pairwise(crashes)
                   if a[0] == b[0] and b[1] < a[2]]
    assert overlapping == []
    assert starts_while_up == []
    assert all(m.up for m in world.members)


def test_a_copied_disk_does_not_inherit_an_armed_power_cut() -> None:
    store = SimStore()
    store.power_cut_after = 2
    twin = store.copy(owner=1)
    assert twin.power_cut_after is None
    assert store.power_cut_after == 2


def test_a_member_restarted_in_the_instant_it_crashed_dials_again() -> None:
    """Shrunk from swarm seed 217 (`simulate --swarm --seed 217 --shrink`): the hub
    crashes as the faults stop and restarts in the same instant; its old dialer to the
    cloud was cancelled but not yet gone, so the new node started none, and the hub never
    synced with the cloud again (the honest replicas did not converge in 180 s)."""
    from p2p_ledger.sim.scenarios import Faults, SimParams

    params = SimParams(scenario="swarm", topology="hub-tree", workload="revocations",
                       nodes=4, seed=217, duration=5.0, rate=0.1, bound=180.0,
                       faults=Faults(bandwidth=250_000.0, bridge=True, crashes=1,
                                     mid_batch=0.92, mobility=False))
    world = World(params)
    world.run()
    crashes = [e for e in world.episodes if e.kind == "crash"]
    assert [(e.start, e.end) for e in crashes] == [(5.0, 5.0)]  # down for no time at all
    assert world.converged_at is not None
    assert world.converged_at - params.duration < 10.0
