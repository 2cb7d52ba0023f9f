"""Swarm mode: the configuration drawn from the seed, replayable, varied; and the replay
command (`command_for`) that parses back to the same parameters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from p2p_ledger.cli import simulate
from p2p_ledger.sim.replay import command_for
from p2p_ledger.sim.scenarios import SimParams, params_for
from p2p_ledger.sim.swarm import MAX_NODES, MIN_NODES, swarm_scenario
from tests.test_sim import _cli


def _parse(command: str) -> SimParams:
    parser = argparse.ArgumentParser(prog="p2p-ledger")
    sub = parser.add_subparsers(dest="command", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true")
    simulate.add_parser(sub, data)
    words = shlex.split(command)
    assert words[0] == "p2p-ledger"
    params: SimParams = simulate._params(parser.parse_args(words[1:]))
    return params


def test_a_seed_draws_one_configuration_and_seeds_vary_it() -> None:
    assert swarm_scenario(7) == swarm_scenario(7)
    drawn = [swarm_scenario(seed) for seed in range(1, 41)]
    assert len({s.topology for s in drawn}) == 4
    assert len({s.workload for s in drawn}) == 4
    assert all(MIN_NODES <= s.nodes <= MAX_NODES for s in drawn)
    for name in ("loss", "reorder", "partitions", "crashes", "skew"):
        values = [getattr(s.faults, name) for s in drawn]
        assert any(values), name  # switched on for some seeds
        assert not all(values), name  # and off for others
    # Never a world that cannot converge by design: clones only in a convoy,
    # revocations never where a device may be a cut vertex.
    assert all(s.topology == "convoy" for s in drawn if s.workload == "cloned-device")
    assert all(s.topology != "geometric" for s in drawn if s.workload == "revocations")


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_the_replay_command_gives_back_the_same_parameters(seed: int) -> None:
    swarm = params_for(swarm_scenario(seed), seed=seed)
    assert command_for(swarm) == f"p2p-ledger simulate --swarm --seed {seed} --report out/"
    assert _parse(command_for(swarm)) == swarm
    f = swarm.faults
    shrunk = dataclasses.replace(
        swarm, nodes=4, duration=12.5, rate=0.75,
        faults=dataclasses.replace(f, loss=0.0 if f.loss else 0.01, bridge=not f.bridge,
                                   mobility=not f.mobility, crashes=0 if f.crashes else 1,
                                   jitter=0.004, bandwidth=32_000.0))
    assert _parse(command_for(shrunk)) == shrunk
    named = params_for("chaos", seed=seed, nodes=5, faults={"partitions": 0, "skew": 0.5})
    assert _parse(command_for(named)) == named


def test_a_swarm_run_records_what_it_drew(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["simulate", "--swarm", "--seed", "3", "--no-plot",
                 "--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    drawn = swarm_scenario(3)
    assert out.startswith(f"swarm seed 3: {drawn.topology}, {drawn.workload}, "
                          f"{drawn.nodes} nodes")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parameters"]["scenario"] == "swarm"
    assert report["parameters"]["topology"] == drawn.topology
    assert report["parameters"]["faults"]["partitions"] == drawn.faults.partitions
    assert report["replay"] == "p2p-ledger simulate --swarm --seed 3 --report out/"
    assert "Replay: `p2p-ledger simulate --swarm --seed 3" in (tmp_path / "report.md").read_text()


def test_swarm_and_a_scenario_together_are_refused(tmp_path: Path) -> None:
    from p2p_ledger.errors import LocalError

    with pytest.raises(LocalError, match="not both"):
        _cli(["simulate", "--swarm", "--scenario", "chaos", "--report", str(tmp_path)])


def test_soak_runs_swarm_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "tools"))
    soak = importlib.import_module("soak")
    assert soak.main(["--swarm", "--skip-properties", "--seeds", "2", "--first-seed", "21",
                      "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("swarm seed 21: ok")
    assert lines[1].startswith("swarm seed 22: ok")
    summary = json.loads(lines[-1])
    assert summary["swarm_runs"] == 2
    assert summary["failed_seeds"] == []
    assert sum(summary["combinations"].values()) == 2


def test_every_fault_parameter_survives_the_replay_command() -> None:
    """A fault added to `Faults` without a way to say it in the replay command fails
    here: each field is changed on its own and must parse back."""
    from p2p_ledger.sim.scenarios import Faults

    base = params_for("convoy", seed=1)
    for name in Faults.__dataclass_fields__:
        value = getattr(base.faults, name)
        new: object
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, int):
            new = value + 1
        elif value is None:
            new = 0.004 if name != "bandwidth" else 32_000.0
        else:
            new = 0.125 if value != 0.125 else 0.25
        changed = dataclasses.replace(base, faults=dataclasses.replace(
            base.faults, **{name: new}))
        assert _parse(command_for(changed)) == changed, name
