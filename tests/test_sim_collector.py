"""The cyclic garbage collector while a world runs (sim/collector.py): off for the run,
on again after with nothing left frozen or counted as young, an application's own
scheme left alone - and a world run makes no reference cycles, which is what makes
running without the collector sound."""

from __future__ import annotations

import gc
import weakref

import pytest

from p2p_ledger.sim.collector import collector_off
from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.swarm import swarm_scenario
from p2p_ledger.sim.world import World


class _Cycle:
    def __init__(self) -> None:
        self.me = self


pytestmark = pytest.mark.usefixtures("collector_enabled")  # conftest.py


def test_the_collector_is_off_in_the_block_and_on_after() -> None:
    thresholds = gc.get_threshold()
    with collector_off():
        assert not gc.isenabled()
        keep = [_Cycle() for _ in range(1000)]
        assert gc.get_count()[0] >= len(keep)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    # moved to the oldest generation unwalked: not counted as young any more
    assert gc.get_count()[0] < len(keep)
    assert all(gc.is_tracked(c) for c in keep)


def test_a_cycle_that_died_in_the_block_is_found_after_it() -> None:
    with collector_off():
        doomed = _Cycle()
        gone = weakref.ref(doomed)
        del doomed
        assert gone() is not None  # nothing collects in the block
    gc.collect()
    assert gone() is None


def test_the_collector_is_restored_after_an_exception() -> None:
    with pytest.raises(ValueError, match="boom"), collector_off():
        raise ValueError("boom")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_an_application_that_disabled_the_collector_keeps_it_disabled() -> None:
    gc.disable()
    with collector_off():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_leaves_a_scheme_of_someone_else_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_off():
            assert gc.isenabled()  # not ours to switch off
            keep = [_Cycle() for _ in range(10)]
        assert gc.get_freeze_count() == frozen  # nothing of theirs unfrozen
        assert keep
    finally:
        gc.unfreeze()


def test_a_world_runs_with_the_collector_off() -> None:
    seen: list[bool] = []

    class Watched(World):
        async def _main(self) -> None:
            seen.append(gc.isenabled())
            await super()._main()

    Watched(params_for("convoy", seed=1, nodes=4, duration=5.0, rate=1.0)).run()
    assert seen == [False]
    assert gc.isenabled()


@pytest.mark.parametrize(("scenario", "seed"), [
    ("chaos", 7),  # crashes and restarts, duplicated and reordered records, clogs
    ("cloned-device", 7),  # a device copied with its disk, equivocating
    ("revocations", 1),  # revoked devices signing, cut off by failing handshakes
    ("site", 3),  # hubs, crashes
    ("sneakernet", 2),  # bundles carried between partitions
    ("swarm", 7),  # a drawn mix (sim/swarm.py)
    ("swarm", 10),
])
def test_a_world_run_makes_no_reference_cycles(scenario: str, seed: int) -> None:
    """What a world allocates and drops while it runs is freed by reference counting:
    if a change makes cycles, running without the collector would keep them to the
    end, and this test says so. (It found two: a connection and its two ends, and a
    session holding the error whose traceback held the session.)"""
    params = (params_for(swarm_scenario(seed), seed=seed) if scenario == "swarm"
              else params_for(scenario, seed=seed, nodes=10, duration=40.0))
    world = World(params)
    gc.collect()
    gc.disable()  # the run leaves it so (collector_off sees it disabled)
    try:
        world.run()
        assert sum(world.checker.counts) > world.genesis_stored  # records went around
        assert gc.collect() == 0
    finally:
        gc.enable()
