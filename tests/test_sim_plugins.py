"""The pluggable system under test: replica factories, extra checks and workloads,
from the Python API and from `p2p-ledger simulate` (specs/simulator.md section 10)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import Kind, SignedRecord
from p2p_ledger.core.store import Effects
from p2p_ledger.sim.checks import CheckResult
from p2p_ledger.sim.plugins import PluginError, PluginFailed, load
from p2p_ledger.sim.report import build_report
from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.store import SimStore
from p2p_ledger.sim.world import World

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"nodes": 6, "duration": 12.0, "rate": 2.0, "bound": 60.0}

built: list[int] = []


class CountingReplica(Replica):
    """The real rules; counts the replicas built, by member."""


def counting_factory(network: NetworkDescriptor, store: SimStore) -> Replica:
    built.append(store.owner)
    return CountingReplica(network, store)


def holds_every_cash_in(world: World) -> CheckResult:
    """A researcher's invariant: every replica holds the genesis (an admit of every
    member but the authority, a cash-in of every device)."""
    genesis = len(world.members) - 1 + sum(m.role == "device" for m in world.members)
    missing = [m.name for m in world.members if m.store.totals().records < genesis]
    return CheckResult(name="cash-ins held", passed=not missing,
                       detail=f"{len(world.members) - len(missing)} replicas hold them",
                       checked=len(world.members))


def always_fails(world: World) -> CheckResult:
    return CheckResult(name="always fails", passed=False, detail="on purpose")


async def one_payment_a_second(world: World) -> None:
    devices = [m for m in world.members if m.role == "device"]
    n = 0
    while True:
        await trio.sleep(1.0)
        payer, payee = devices[n % len(devices)], devices[(n + 1) % len(devices)]
        n += 1
        if payer.up:
            world.pay(payer, Account(device=payee.device), 1_00, f"plugin-{n}")


def test_world_takes_a_replica_factory_checks_and_a_workload() -> None:
    built.clear()
    world = World(params_for("convoy", seed=3, **SMALL),  # type: ignore[arg-type]
                  replica_factory=counting_factory, checks=[holds_every_cash_in],
                  workload=one_payment_a_second)
    world.run()
    report = build_report(world)
    assert sorted(built) == list(range(6))  # one replica per member (no crashes)
    assert world.payments["attempted"] == 11  # at 1..11 s: cancelled at duration 12
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["cash-ins held"]["passed"] is True
    assert report["passed"] is True
    assert report["parameters"]["plugins"] == {  # type: ignore[index]
        "replica": "tests.test_sim_plugins:counting_factory",
        "checks": ["tests.test_sim_plugins:holds_every_cash_in"],
        "workload": "tests.test_sim_plugins:one_payment_a_second"}


class SkewedChain(Replica):
    """The real verdicts, but every transfer's chain state says one more minor unit
    debited: what the author may spend next differs from the other replicas'."""

    def _judge(self, rec: SignedRecord) -> Effects:
        fx = super()._judge(rec)
        if rec.record.kind is not Kind.TRANSFER:
            return fx
        chain = dataclasses.replace(fx.row.chain, debited=fx.row.chain.debited + 1)
        return dataclasses.replace(fx, row=dataclasses.replace(fx.row, chain=chain))


def skewed_on_one_member(network: NetworkDescriptor, store: SimStore) -> Replica:
    return (SkewedChain if store.owner == 2 else Replica)(network, store)


def test_a_chain_state_that_differs_under_the_same_verdict_fails_the_verdicts_check() -> None:
    world = World(params_for("convoy", seed=3, **SMALL),  # type: ignore[arg-type]
                  replica_factory=skewed_on_one_member)
    world.run()
    checks = {c["name"]: c for c in build_report(world)["checks"]}  # type: ignore[attr-defined]
    assert checks["verdicts"]["passed"] is False
    assert checks["conservation"]["passed"] is True
    flagged = checks["verdicts"]["violations"]
    assert flagged
    assert all(v["first"].startswith("chain balances") for v in flagged)
    assert any(v["node"] == world.members[2].name or v["first"].endswith(
        f"at {world.members[2].name}") for v in flagged)


def test_a_failing_plugin_check_fails_the_run() -> None:
    world = World(params_for("convoy", seed=3, **SMALL),  # type: ignore[arg-type]
                  checks=[always_fails])
    world.run()
    report = build_report(world)
    assert report["passed"] is False
    assert report["checks"][-1] == {  # type: ignore[index]
        "name": "always fails", "passed": False, "detail": "on purpose", "checked": 0,
        "violations": []}


def test_a_check_returning_the_wrong_thing_is_the_plugins_fault() -> None:
    world = World(params_for("convoy", seed=3, **SMALL),  # type: ignore[arg-type]
                  checks=[lambda w: True])  # type: ignore[arg-type, return-value]
    with pytest.raises(PluginFailed, match="returned a bool, not a CheckResult"):
        world.run()


@pytest.mark.parametrize(("spec", "problem"), [
    ("no_colon", "expected MODULE:NAME"),
    ("nowhere.at.all:f", "cannot import nowhere.at.all: ModuleNotFoundError"),
    ("tests.test_sim_plugins:absent", "has no absent"),
    ("tests.test_sim_plugins:SMALL", "is a dict, not a callable"),
    ("missing/file.py:f", "no file missing/file.py"),
])
def test_bad_specs_are_usage_errors(spec: str, problem: str) -> None:
    with pytest.raises(PluginError, match=problem):
        load(spec, "--replica")


def test_a_spec_may_be_a_file_path(tmp_path: Path) -> None:
    plugin = tmp_path / "mine.py"
    plugin.write_text("def factory(network, store):\n    return None\n")
    fn = load(f"{plugin}:factory", "--replica")
    assert fn(None, None) is None


def _simulate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2p_ledger", "simulate", *args],
                          capture_output=True, text=True, cwd=cwd, check=False, timeout=300)


def test_the_command_refuses_a_bad_spec_in_one_line_with_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def factory(:\n")
    for option, spec, problem in (
            ("--replica", "nowhere:factory", "cannot import nowhere"),
            ("--check", f"{broken}:factory", "raised SyntaxError"),
            ("--workload", "tests.test_sim_plugins:nothing", "has no nothing")):
        done = _simulate("--scenario", "convoy", "--report", str(tmp_path / "r"), option, spec)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"p2p-ledger: error: {option} {spec}: ")
        assert problem in done.stderr
        assert "Traceback" not in done.stderr


def test_the_command_runs_a_plugin_check(tmp_path: Path) -> None:
    done = _simulate("--scenario", "convoy", "--nodes", "5", "--duration", "8", "--rate", "1",
                     "--no-plot", "--report", str(tmp_path), "--check",
                     "tests.test_sim_plugins:always_fails", "--json")
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["checks"][-1]["name"] == "always fails"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parameters"]["plugins"] == {
        "checks": ["tests.test_sim_plugins:always_fails"]}
