"""The simulator's collector scheme (sim/collector.py): survivors of full collections are
frozen while a world runs, cycles are still found, and nothing stays frozen after."""

from __future__ import annotations

import gc

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
        gc.collect()  # the first full walk: `doomed` is alive, so frozen
        was = gc.get_freeze_count()
        del doomed
        keep = [_Cycle() for _ in range(collector._GROWTH * was)]
        gc.collect()  # frozen objects grew fourfold: everything is unfrozen
        assert freezer.unfreezes == 1
        assert gc.get_freeze_count() == 0
        assert gc.collect() >= 1  # the next full collection walks everything: found
        assert keep
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
