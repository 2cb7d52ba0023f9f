"""The event trace (`simulate --trace`) and the offline checker (`simulate check`): a
run's trace passes, the same run traced or not gives the same report, and traces
doctored to break each invariant are caught with one line per violation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2p_ledger.sim.report import build_report
from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.tracecheck import TraceError, check_trace
from p2p_ledger.sim.world import World
from tests.test_sim import _cli

Events = list[dict[str, object]]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Events, dict[str, object]]:
    """A small chaos run (loss, partitions, a clog, crashes, skew), traced."""
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    params = params_for("chaos", seed=5, nodes=6, duration=20.0, rate=2.0)
    with path.open("w") as out:
        world = World(params, trace=out)
        world.run()
    report = build_report(world)
    return [json.loads(line) for line in path.read_text().splitlines()], report


def _lines(events: Events) -> list[str]:
    return [json.dumps(e) for e in events]


def _applies(events: Events) -> list[int]:
    return [i for i, e in enumerate(events) if e["e"] == "apply"]


def test_a_run_traces_every_kind_of_event_and_passes(
        traced: tuple[Events, dict[str, object]]) -> None:
    events, report = traced
    kinds = {e["e"] for e in events}
    assert {"trace", "genesis", "open", "close", "send", "deliver", "arrive", "apply",
            "commit", "fault", "end"} <= kinds
    assert {e["kind"] for e in events if e["e"] == "fault"} >= {"stall", "crash"}
    assert events[0]["v"] == 1
    result = check_trace(_lines(events))
    assert result.passed, result.lines()
    assert result.applies == sum(1 for e in events if e["e"] == "apply") > 0
    assert report["passed"]


def test_tracing_does_not_change_the_run(traced: tuple[Events, dict[str, object]]) -> None:
    world = World(params_for("chaos", seed=5, nodes=6, duration=20.0, rate=2.0))
    world.run()
    assert json.dumps(build_report(world), sort_keys=True) == json.dumps(
        traced[1], sort_keys=True)


def test_unbalanced_effects_break_conservation(
        traced: tuple[Events, dict[str, object]]) -> None:
    events = [dict(e) for e in traced[0]]
    i = next(i for i in _applies(events) if events[i].get("mv"))
    mv = list(events[i]["mv"])  # type: ignore[call-overload]
    mv[-1] += 1
    events[i]["mv"] = mv
    result = check_trace(_lines(events))
    assert not result.passed
    assert result.counts.keys() == {"conservation"}
    assert result.lines()[0].startswith(f"conservation: {events[i]['n']} at ")


def test_two_verdicts_for_one_record_are_caught(
        traced: tuple[Events, dict[str, object]]) -> None:
    events = [dict(e) for e in traced[0]]
    seen: set[object] = set()
    for i in _applies(events):
        if events[i]["r"] in seen and events[i]["v"] == "applied":
            events[i]["v"], events[i]["why"] = "rejected", "overdrawn"
            break
        seen.add(events[i]["r"])
    result = check_trace(_lines(events))
    assert result.counts.get("verdict stability") == 1
    assert f"rejected (overdrawn) at {events[i]['n']}" in result.lines()[-1]


def test_a_record_applied_before_its_prev_is_caught(
        traced: tuple[Events, dict[str, object]]) -> None:
    events = [dict(e) for e in traced[0]]
    where = {(e["n"], e["r"]): i for i, e in enumerate(events) if e["e"] == "apply"}
    late = next(i for i in _applies(events) if (events[i]["n"], events[i].get("p")) in where)
    early = where[(events[late]["n"], events[late]["p"])]
    events.insert(early, events.pop(late))  # the record now comes before its prev
    result = check_trace(_lines(events))
    assert result.counts == {"causal delivery": 1}
    assert f"{events[early]['n']} applied {events[early]['r']}" in result.lines()[0]


def test_a_replica_missing_a_record_does_not_converge(
        traced: tuple[Events, dict[str, object]]) -> None:
    events = [dict(e) for e in traced[0]]
    last = _applies(events)[-1]
    name = events[last]["n"]
    del events[last]
    result = check_trace(_lines(events))
    assert result.counts == {"convergence": 1}
    assert result.lines()[0].startswith(f"convergence: honest node {name} lacks 1 records")


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("not json\n", "not JSON"),
    ('{"e": "trace", "v": 99, "nodes": {}}\n', "version 99"),
    ('{"e": "apply"}\n', "starts with its header"),
    ('{"e": "trace", "v": 1, "nodes": {"a": "00"}}\n{"e": "apply", "n": "a"}\n',
     "without a valid 't'"),
    ('{"e": "trace", "v": 1, "nodes": {"a": "00"}}\n{"e": "teleport"}\n', "unknown event"),
    ('{"e": "trace", "v": 1, "nodes": {"a": "00"}}\n{"e": "commit", "n": "b", "t": 1}\n',
     "unknown node 'b'"),
])
def test_a_malformed_trace_is_a_typed_error(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        check_trace(text.splitlines())


def test_check_command_exit_codes(traced: tuple[Events, dict[str, object]], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_lines(traced[0])) + "\n")
    assert _cli(["simulate", "check", str(good)]) == 0
    assert "all invariants hold" in capsys.readouterr().out
    events = [dict(e) for e in traced[0]]
    del events[_applies(events)[-1]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(_lines(events)) + "\n")
    assert _cli(["simulate", "check", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("convergence: ")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n")
    assert _cli(["simulate", "check", str(broken)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert _cli(["simulate", "check", str(tmp_path / "absent.jsonl")]) == 2


def test_simulate_trace_option_writes_a_checkable_trace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t" / "trace.jsonl"
    assert _cli(["simulate", "--scenario", "convoy", "--nodes", "5", "--duration", "10",
                 "--rate", "1", "--no-plot", "--report", str(tmp_path / "r"),
                 "--trace", str(trace)]) == 0
    capsys.readouterr()
    assert _cli(["simulate", "check", str(trace)]) == 0


def test_a_chain_state_judged_on_another_past_is_caught(
        traced: tuple[Events, dict[str, object]]) -> None:
    events = [dict(e) for e in traced[0]]
    seen: set[object] = set()
    for i in _applies(events):
        if events[i]["r"] in seen:
            events[i]["cs"] = "0" * 16
            break
        seen.add(events[i]["r"])
    result = check_trace(_lines(events))
    assert result.counts == {"verdict stability": 1}
    assert "its chain state at" in result.lines()[0]


def test_the_broken_merge_fails_offline_as_it_fails_in_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/broken_merge.py under a small sneakernet run (the run `--shrink` found
    from the default one): the simulator's checks and the trace alone find the same
    records stored before a credit they ref, judged on another past."""
    trace = tmp_path / "trace.jsonl"
    assert _cli(["simulate", "--scenario", "sneakernet", "--seed", "1", "--nodes", "5",
                 "--rate", "0.1", "--duplicate", "0", "--couriers", "0", "--partitions", "1",
                 "--replica", "examples.broken_merge:factory", "--no-plot",
                 "--trace", str(trace), "--report", str(tmp_path / "r")]) == 1
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    failed = {c["name"]: c for c in report["checks"] if not c["passed"]}
    assert set(failed) == {"verdicts", "validity"}
    capsys.readouterr()
    assert _cli(["simulate", "check", str(trace)]) == 1
    lines = capsys.readouterr().out.splitlines()
    causal = [line for line in lines if line.startswith("causal delivery: ")]
    verdicts = [line for line in lines if line.startswith("verdict stability: ")]
    assert len(causal) == len(failed["validity"]["violations"])
    assert len(verdicts) == len(failed["verdicts"]["violations"])
    assert len(causal) + len(verdicts) == len(lines)
    # The same records, by their short ids.
    assert {v["record"][:24] for v in failed["validity"]["violations"]} == {
        line.split(" applied ")[1].split()[0] for line in causal}


async def test_a_replica_whose_methods_cannot_be_replaced_per_instance_is_traced() -> None:
    """In the compiled build (specs/build.md) `Replica` is a native class: a method
    cannot be set on one instance. `trace_arrivals` used to set `receive_many` there,
    so `simulate --trace` on that build stopped with an internal error
    (AttributeError). Now it wraps the replica in a proxy. A slotted replica stands in
    for the native class here (a plugin's replica may be one too)."""
    import io
    from collections.abc import Hashable, Iterable
    from typing import Any

    from p2p_ledger.core.ledger import IngestReport, Replica
    from p2p_ledger.core.store import MemoryStore
    from p2p_ledger.sim.trace import Tracer, short, trace_arrivals
    from tests.helpers import T0, funded_world

    class Slotted:
        __slots__ = ("inner", "verifier")

        def __init__(self, inner: Replica) -> None:
            self.inner = inner
            self.verifier: object = None

        def receive_many(self, raws: Iterable[bytes], *, now_ms: int,
                         origin: Hashable = None) -> IngestReport:
            return self.inner.receive_many(raws, now_ms=now_ms, origin=origin)

    world, auth = funded_world()
    raws = auth.delta(Replica(world.network, MemoryStore()).frontier())
    slotted = Slotted(Replica(world.network, MemoryStore()))
    with pytest.raises(AttributeError):
        slotted.receive_many = slotted.receive_many  # type: ignore[method-assign]
    out = io.StringIO()
    traced = trace_arrivals(slotted, Tracer(out), "n1")  # type: ignore[arg-type]
    report = traced.receive_many(raws, now_ms=T0 + 1, origin=3)
    assert len(report.applied) == len(raws)
    proxy: Any = traced
    proxy.verifier = "set through"  # attributes go to the replica itself
    assert slotted.verifier == "set through"
    assert proxy.inner is slotted.inner  # so does reading one
    event = json.loads(out.getvalue())
    assert (event["e"], event["n"], event["session"]) == ("arrive", "n1", 3)
    assert event["r"] == [short(a.record.id) for a in report.applied]
