"""Faults that reach the merge: records delivered late, twice and out of causal order
over second paths (sim/paths.py), the broken merge they expose, revoked devices that
go on signing (sim/revoking.py), and fault windows drawn per scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_ledger.sim.report import build_report
from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.world import World

ROOT = Path(__file__).resolve().parent.parent


def _run(name: str, **overrides: object) -> dict[str, object]:
    world = World(params_for(name, **overrides))  # type: ignore[arg-type]
    world.run()
    return build_report(world)


def test_second_paths_park_records_and_the_sessions_release_them() -> None:
    report = _run("convoy", seed=1, nodes=12, duration=40.0, rate=3.0,
                  faults={"reorder": 0.02, "duplicate": 0.3, "couriers": 2})
    assert report["passed"], report["checks"]
    paths, pending = report["second_paths"], report["pending"]
    assert isinstance(paths, dict)
    assert isinstance(pending, dict)
    assert paths["shortcut_records"] > 0
    assert paths["bundles_handed_over"] > 0
    assert paths["duplicate_deliveries"] > 0
    # Records arrived before their causal past, waited, and were let out when it came.
    assert pending["parked"] > 0
    assert pending["released"] + pending["dropped"] + pending["lost_in_crashes"] \
        + pending["waiting_at_end"] == pending["parked"]
    assert pending["released"] > 0


def test_without_second_paths_nothing_is_parked() -> None:
    """Sessions deliver deltas and pushes in causal order: the pending area stays empty
    (the finding of issue 14 that the second paths answer)."""
    report = _run("convoy", seed=1, nodes=8, duration=20.0, rate=3.0)
    assert report["passed"], report["checks"]
    assert report["pending"] == {"parked": 0, "released": 0, "dropped": 0,
                                 "lost_in_crashes": 0, "waiting_at_end": 0}


def _simulate(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2p_ledger", "simulate", "--scenario",
                           "sneakernet", "--seed", "1", "--no-plot", "--report", str(tmp),
                           *args], capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=900)


@pytest.mark.slow
def test_the_broken_merge_fails_a_default_run_and_the_real_one_passes(tmp_path: Path) -> None:
    broken = _simulate(tmp_path / "broken", "--replica", "examples.broken_merge:factory")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "FAIL  verdicts" in broken.stdout
    report = json.loads((tmp_path / "broken" / "report.json").read_text())
    assert report["parameters"]["plugins"] == {"replica": "examples.broken_merge:factory"}
    failed = {c["name"]: c for c in report["checks"] if not c["passed"]}
    assert {"verdicts", "validity"} <= set(failed)
    assert any(v["problem"] == "stored before a record it refs"
               for v in failed["validity"]["violations"])
    real = _simulate(tmp_path / "real")
    assert real.returncode == 0, real.stdout + real.stderr
    pending = json.loads((tmp_path / "real" / "report.json").read_text())["pending"]
    assert pending["parked"] > 0
    assert pending["released"] > 0


def test_revoked_devices_sign_and_their_records_get_verdicts() -> None:
    """Cut off with its site, a revoked device goes on paying (applied where nobody
    knew); reconnected, it learns of the revocation and signs anyway with a tampered
    wallet: the ledger rejects those records, and every honest replica holds both."""
    report = _run("revocations", seed=2, nodes=20, duration=60.0)
    assert report["passed"], report["checks"]
    workload = report["workload"]
    assert isinstance(workload, dict)
    after = workload["records_after_revocation"]
    assert after["applied (did not know it)"] > 0
    assert after["rejected (knew the revocation)"] == workload["tampered"] > 0
    assert workload["records_after_revocation_held_by_no_honest_replica"] == 0
    assert workload["revoked"] >= workload["tampered"]  # wallets refused first
    assert workload["refused"] == 0  # up to 50d1dbf revoked refusals were counted here
    kinds = [f["kind"] for f in report["faults"]]  # type: ignore[union-attr]
    assert kinds == ["cut-off", "revoke"]
    cut = report["faults"][0]  # type: ignore[index]
    assert cut["start_s"] < report["faults"][1]["start_s"] < cut["end_s"]  # type: ignore[index]


def test_one_seed_puts_each_scenarios_partitions_elsewhere() -> None:
    starts = {}
    for name in ("convoy", "offline-burst", "hub-tree"):
        report = _run(name, seed=4, nodes=6, duration=20.0, rate=1.0,
                      faults={"partitions": 1})
        starts[name] = [f["start_s"] for f in report["faults"]  # type: ignore[union-attr]
                        if f["kind"] == "partition"]
    assert all(len(s) == 1 for s in starts.values()), starts
    assert len({s[0] for s in starts.values()}) == 3, starts
