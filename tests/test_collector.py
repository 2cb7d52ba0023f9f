"""The cyclic garbage collector is paused across a batch and always restored after it:
`gc_paused` itself, and the batches that use it (`Replica.receive_many`)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import pytest

from p2p_ledger.core.collector import gc_paused
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import Failures, SignedRecord, start_verifying

from .helpers import T0, funded_world

pytestmark = pytest.mark.usefixtures("collector_enabled")  # conftest.py


def test_paused_inside_and_enabled_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_enabled_again_after_an_exception() -> None:
    with pytest.raises(KeyError), gc_paused():
        raise KeyError("boom")
    assert gc.isenabled()


def test_enabled_again_after_a_base_exception() -> None:
    with pytest.raises(KeyboardInterrupt), gc_paused():
        raise KeyboardInterrupt
    assert gc.isenabled()


def test_nested_pauses_leave_it_to_the_outermost() -> None:
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block did not turn it back on
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    with pytest.raises(ValueError, match="boom"), gc_paused():
        raise ValueError("boom")
    assert not gc.isenabled()


def _records() -> list[bytes]:
    """Every record of a funded world: an authority's admits and cash-ins."""
    _, authority = funded_world()
    return authority.delta(Frontier({}))


def _watching(seen: list[bool], fail: bool = False
              ) -> Callable[[Sequence[SignedRecord], bytes], Callable[[], Failures]]:
    """A verifier that notes whether the collector runs while the batch is judged."""
    def verifier(records: Sequence[SignedRecord], network_id: bytes) -> Callable[[], Failures]:
        result = start_verifying(records, network_id)

        def failures() -> Failures:
            seen.append(gc.isenabled())
            if fail:
                raise RuntimeError("the verifier failed")
            return result()
        return failures
    return verifier


def test_receive_many_pauses_the_collector_and_restores_it() -> None:
    world, _ = funded_world()
    raws = _records()
    seen: list[bool] = []
    replica = Replica(world.network, world.store_factory(), verifier=_watching(seen))
    with replica.store.transaction():
        report = replica.receive_many(raws, now_ms=T0)
    assert len(report.applied) == len(raws)
    assert seen
    assert not any(seen)
    assert gc.isenabled()


def test_receive_many_restores_the_collector_after_an_exception() -> None:
    world, _ = funded_world()
    seen: list[bool] = []
    replica = Replica(world.network, world.store_factory(), verifier=_watching(seen, fail=True))
    with pytest.raises(RuntimeError), replica.store.transaction():
        replica.receive_many(_records(), now_ms=T0)
    assert seen == [False]
    assert gc.isenabled()
