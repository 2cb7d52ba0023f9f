"""Shrinking a failing run: the smallest run that still fails the same check, and the
one command that replays it."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import SignedRecord
from p2p_ledger.core.store import Effects, Movement
from p2p_ledger.sim.checks import CheckResult
from p2p_ledger.sim.report import build_report
from p2p_ledger.sim.scenarios import SimParams, params_for
from p2p_ledger.sim.shrink import failing_checks, shrink, still_fails
from p2p_ledger.sim.store import SimStore
from p2p_ledger.sim.world import World
from tests.test_sim import _cli
from tests.test_sim_swarm import _parse


def no_partition(world: World) -> CheckResult:
    """A check that fails whenever the run had a partition (a stand-in for a bug that
    only a partition brings out)."""
    cut = [e for e in world.episodes if e.kind == "partition"]
    return CheckResult(name="no-partition", passed=not cut, checked=1,
                       detail=f"{len(cut)} partitions")


class DoubleCredit(Replica):
    """A broken replica: the payee of a transfer is credited twice."""

    def _judge(self, rec: SignedRecord) -> Effects:
        fx = super()._judge(rec)
        if len(fx.movements) != 2:
            return fx
        payer, payee = fx.movements
        return dataclasses.replace(fx, movements=(payer, Movement(
            account=payee.account, delta=2 * payee.delta)))


def double_credit(network: NetworkDescriptor, store: SimStore) -> Replica:
    return DoubleCredit(network, store)


def _run(params: SimParams) -> dict[str, object]:
    world = World(params, checks=[no_partition])
    world.run()
    return build_report(world)


BASE = params_for("chaos", seed=5, nodes=6, duration=20.0, rate=2.0)


def test_shrinking_keeps_only_what_makes_the_check_fail() -> None:
    first = _run(BASE)
    assert failing_checks(first) == {"no-partition"}
    steps: list[str] = []
    found = shrink(BASE, still_fails({"no-partition"}, _run), log=steps.append)
    p, f = found.params, found.params.faults
    assert (p.nodes, p.duration, p.rate) == (3, 5.0, 0.1)
    assert f.partitions == 1  # the one thing the failure needs
    assert (f.crashes, f.clogs, f.loss, f.reorder, f.duplicate, f.skew) == (0, 0, 0, 0, 0, 0)
    assert p.bound == BASE.bound
    assert not found.exhausted
    assert len(steps) == len(found.steps) > 0
    assert failing_checks(_run(p)) == {"no-partition"}  # it replays, and still fails


def test_a_run_that_fails_another_way_is_not_kept() -> None:
    """Only the checks the first run failed count: a candidate that fails some other
    check is no smaller failing run of the same bug."""
    def fails_other(params: SimParams) -> dict[str, object]:
        report = _run(params)
        if params.nodes < BASE.nodes:  # pretend fewer nodes breaks something else
            report["checks"] = [{"name": "conservation", "passed": False}]
        return report

    found = shrink(BASE, still_fails({"no-partition"}, fails_other), max_runs=8)
    assert found.params.nodes == BASE.nodes
    assert found.runs == 8
    assert found.exhausted


def test_simulate_shrink_prints_a_command_that_replays_the_smallest_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    code = _cli(["simulate", "--scenario", "chaos", "--seed", "5", "--nodes", "6",
                 "--duration", "20", "--rate", "2", "--no-plot", "--shrink",
                 "--check", "tests.test_sim_shrink:no_partition",
                 "--report", str(tmp_path)])
    assert code == 1
    captured = capsys.readouterr()
    assert "shrink: nodes 6 -> 3 (still fails" in captured.err
    command = captured.out.splitlines()[-1]
    assert command.startswith("p2p-ledger simulate --scenario chaos --seed 5 --nodes 3 ")
    assert "--check tests.test_sim_shrink:no_partition" in command
    smallest = _parse(command)
    assert smallest.nodes == 3
    assert smallest.faults.partitions == 1
    report = json.loads((tmp_path / "smallest" / "report.json").read_text())
    assert not report["passed"]
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["no-partition"]
    # The printed command itself runs and fails the same way.
    assert _cli([*shlex.split(command)[1:], "--no-plot"]) == 1


def test_a_broken_replica_fails_shrinks_and_its_trace_fails_offline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The end-to-end path a researcher takes: a broken replica plugged in fails the run,
    `--shrink` prints a smaller run that still fails, and `simulate check` finds the
    same violation in the trace alone."""
    trace = tmp_path / "trace.jsonl"
    code = _cli(["simulate", "--scenario", "convoy", "--seed", "2", "--nodes", "6",
                 "--duration", "15", "--rate", "1", "--no-plot", "--shrink",
                 "--replica", "tests.test_sim_shrink:double_credit",
                 "--trace", str(trace), "--report", str(tmp_path / "r")])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAIL  conservation" in out
    command = out.splitlines()[-1]
    assert "--replica tests.test_sim_shrink:double_credit" in command
    smallest = _parse(command)
    assert smallest.nodes == 3
    assert smallest.duration < 15
    assert _cli(["simulate", "check", str(trace)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert all(line.startswith("conservation: ") for line in lines)


def test_simulate_shrink_under_json_says_the_same(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli(["simulate", "--json", "--scenario", "chaos", "--seed", "5", "--nodes", "6",
                 "--duration", "20", "--rate", "2", "--no-plot", "--shrink",
                 "--check", "tests.test_sim_shrink:no_partition",
                 "--report", str(tmp_path)])
    assert code == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False
    assert out["replay"].startswith("p2p-ledger simulate --scenario chaos --seed 5 --nodes 6 ")
    shrunk = out["shrunk"]
    assert shrunk["command"].startswith("p2p-ledger simulate --scenario chaos --seed 5 "
                                        "--nodes 3 ")
    assert shrunk["steps"][0] == "nodes 6 -> 3"
    assert shrunk["runs"] >= len(shrunk["steps"])
    assert shrunk["report"] == str(tmp_path / "smallest")
