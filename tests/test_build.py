"""Which build runs (p2p_ledger/build.py, specs/build.md): compiled or pure Python.

.ci/run installs the package twice - as README says (compiled when a C compiler is
present) and with no working C compiler (pure Python) - and sets
P2P_LEDGER_EXPECT_BUILD to the build each install must give, so that a compile that
quietly fell back to pure Python, or tests that imported the checkout's sources
instead of the installed package, fail here.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from p2p_ledger.build import COMPILED_MODULES, build_kind, compiled_modules
from p2p_ledger.core import ledger
from p2p_ledger.core.store import MemoryStore, NodeStore
from p2p_ledger.protocol import compact
from p2p_ledger.sim.accel import shared_record_checks
from p2p_ledger.sim.store import SimStore

from .helpers import T0, funded_world
from .test_compact import busy_world

ROOT = Path(__file__).resolve().parents[1]


def test_the_build_is_all_compiled_or_all_pure() -> None:
    kind = build_kind()
    assert kind in ("compiled", "pure Python"), kind
    expected = os.environ.get("P2P_LEDGER_EXPECT_BUILD")
    if expected:
        assert kind == expected


def test_compiled_modules_are_the_listed_ones_that_are_extension_modules() -> None:
    compiled = compiled_modules()
    assert set(compiled) <= set(COMPILED_MODULES)
    for name in COMPILED_MODULES:
        path = importlib.import_module(name).__file__
        assert path is not None
        assert (name in compiled) == (not path.endswith(".py")), path


def test_every_listed_module_has_its_source_in_the_checkout() -> None:
    for name in COMPILED_MODULES:
        assert (ROOT / Path(*name.split("."))).with_suffix(".py").is_file(), name


def test_the_store_protocols_stay_checkable_and_subclassable() -> None:
    # NodeStore lives in an interpreted module so that isinstance works in both
    # builds; MemoryStore accepts the simulator's interpreted subclass.
    assert not isinstance(MemoryStore(), NodeStore)  # no positions, no peers table
    store = SimStore()
    assert isinstance(store, NodeStore)
    assert store.max_order() == 0


def test_the_simulators_shared_checks_reach_the_replica() -> None:
    # sim/accel.py replaces the record checks core/ledger.py calls; compiled, a call of
    # an imported function would bypass it (specs/build.md section 4): the second replica
    # must find every record parsed and verified by the first.
    world, source = funded_world()
    raws = source.delta(world.replica().frontier())
    assert raws
    with shared_record_checks() as cache:
        for replica in (world.replica(), world.replica()):
            with replica.store.transaction():
                for raw in raws:
                    assert replica.receive(raw, now_ms=T0).applied
        assert cache.misses == len(raws)
        assert cache.hits == len(raws)
        assert set(cache.parsed) == set(raws)
        # The packed frames' records: decoded once by the sender, rebuilt once.
        assert compact.pack_records(raws) == compact.pack_records(raws)
        assert set(cache.decoded) == set(raws)
        data = compact.pack_records(raws)
        first = compact.unpack_records(data, lambda author, seq: None, max_records=len(raws))
        again = compact.unpack_records(data, lambda author, seq: None, max_records=len(raws))
        assert [r.raw for r in first] == raws
        assert all(a is b for a, b in zip(first, again, strict=True))  # from the cache
        assert len(cache.rebuilt) == len(raws)
        # Whole batches: read once (this one, under 1 KiB, is not deflated); one of
        # 1 KiB or more is deflated once.
        assert not cache.deflated
        assert len(cache.batches) == 1
        big = busy_world()[2]
        assert compact.pack_records(big) == compact.pack_records(big)
        assert len(cache.deflated) == 1
    assert vars(ledger)["_parse_record"] is ledger.parse_record  # restored
    assert vars(compact)["_rebuilt"] is compact.rebuilt
    assert vars(compact)["_deflated"] is compact.deflated
    assert vars(compact)["_batch_of"] is compact.batch_of
