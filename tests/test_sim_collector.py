"""The simulator's collector scheme (sim/collector.py): survivors of collections are
frozen while a world runs, cycles are still found, and nothing stays frozen after."""

from __future__ import annotations

import gc
import weakref

from p2p_ledger.sim import collector
from p2p_ledger.sim.collector import long_lived_frozen


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_survivors_of_a_full_collection_are_frozen_and_unfrozen_after() -> None:
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    keep = [_Cycle() for _ in range(100)]
    with long_lived_frozen() as freezer:
        assert gc.get_threshold() == (collector._YOUNG, *thresholds[1:])
        gc.collect()
        assert freezer.freezes == 1
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0
    assert freezer not in gc.callbacks
    assert gc.get_threshold() == thresholds


def test_a_cycle_frozen_alive_is_collected_after_the_frozen_set_grows() -> None:
    with long_lived_frozen() as freezer:
        doomed = _Cycle()
        gone = weakref.ref(doomed)
        gc.collect()  # the first full walk: `doomed` is alive, so frozen
        was = gc.get_freeze_count()
        del doomed
        gc.collect()
        assert gone() is not None  # frozen: no collection sees the dead cycle
        gc.disable()  # only the collections below run, in this order
        try:
            keep = [_Cycle() for _ in range(collector._GROWTH * was)]
        finally:
            gc.enable()
        gc.collect(0)  # the young survivors are frozen too: fourfold, so all unfrozen
        assert freezer.unfreezes == 1
        assert freezer.walk_due  # nothing is frozen until everything has been walked
        gc.disable()
        try:
            gc.collect(0)
            assert gc.get_freeze_count() == 0
        finally:
            gc.enable()
        gc.collect()  # the full collection walks everything: the cycle is found
        assert gone() is None
        assert not freezer.walk_due
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == 0


def test_young_survivors_are_frozen_too() -> None:
    with long_lived_frozen() as freezer:
        gc.collect()
        before = gc.get_freeze_count()
        keep = [_Cycle() for _ in range(100)]
        gc.collect(0)
        assert freezer.freezes == 2
        assert gc.get_freeze_count() >= before + len(keep)
    assert gc.get_freeze_count() == 0


def test_leaves_a_scheme_of_someone_else_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with long_lived_frozen() as freezer:
            gc.collect()
        assert freezer.freezes == 0
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
