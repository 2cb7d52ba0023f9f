"""`p2p-ledger simulate`: run a named scenario in the deterministic simulator.

    p2p-ledger simulate --list
    p2p-ledger simulate --scenario convoy --nodes 50 --seed 7 --partitions 3 --report out/
    p2p-ledger simulate --scenario chaos --report out/ --trace out/trace.jsonl
    p2p-ledger simulate check out/trace.jsonl

Writes report.json, report.md and convergence.png into the report directory and exits
0 when every check passed, 1 when one failed. `simulate check FILE` re-checks a trace
offline (sim/tracecheck.py): exit 0 when every invariant holds, 1 with one line per
violation, 2 when the file is not a readable trace. A progress bar shows on a terminal. The
simulator (and trio, and matplotlib) are imported only when the command runs; this
module itself imports nothing heavy, so the CLI stays quick for other commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import LocalError
from .helptext import add_command

__all__ = ["add_parser", "cmd_simulate"]


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1)")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               data: argparse.ArgumentParser) -> None:
    s = add_command(
        sub, "simulate", parents=[data], help="run a fault scenario in the deterministic simulator",
        example=["p2p-ledger simulate --list",
                 "p2p-ledger simulate --scenario convoy --nodes 50 --seed 7 --report out/",
                 "p2p-ledger simulate --swarm --seed 12 --shrink --report out/",
                 "p2p-ledger simulate --scenario chaos --trace out/trace.jsonl --report out/",
                 "p2p-ledger simulate check out/trace.jsonl"],
        description="Run many nodes in one process on simulated time and links, with "
        "faults, and write a report (report.json, report.md, convergence.png). The same "
        "seed and version give the same report.json.")
    s.add_argument("action", nargs="?", choices=["check"], metavar="check",
                   help="`simulate check FILE`: re-check the invariants from a trace "
                   "(--trace) alone; exit 0 when they hold, 1 with one line per "
                   "violation, 2 when FILE is not a trace")
    s.add_argument("file", nargs="?", type=Path, metavar="FILE",
                   help="the trace file to check")
    s.add_argument("--list", action="store_true", help="list the named scenarios")
    s.add_argument("--scenario", metavar="NAME", help="a scenario from --list")
    s.add_argument("--swarm", action="store_true",
                   help="instead of a scenario, draw the topology, workload, size, rate "
                   "and every fault's strength (or absence) from the seed")
    s.add_argument("--report", type=Path, metavar="DIR", help="where to write the report")
    s.add_argument("--nodes", type=int, metavar="N",
                   help="how many nodes (at least 3; default: the scenario's)")
    s.add_argument("--seed", type=int, default=1, metavar="S", help="default %(default)s")
    s.add_argument("--duration", type=_positive, metavar="SECONDS",
                   help="simulated seconds of workload and faults")
    s.add_argument("--rate", type=_positive, metavar="PER_S", help="payments per second")
    s.add_argument("--bound", type=_positive, metavar="SECONDS",
                   help="convergence must come this soon after the faults stop")
    f = s.add_argument_group("faults (override the scenario's)")
    f.add_argument("--latency", type=float, metavar="MS", help="one-way latency of every link")
    f.add_argument("--jitter", type=float, metavar="MS",
                   help="random extra latency, up to this much")
    f.add_argument("--bandwidth", type=_positive, metavar="KB_S",
                   help="kilobytes per second per direction")
    f.add_argument("--loss", type=_probability, metavar="P", help="packet loss (retransmitted)")
    f.add_argument("--reorder", type=_probability, metavar="P",
                   help="each record a node stores also goes alone, with probability P, "
                   "over a shortcut to a random node: often before its causal past")
    f.add_argument("--duplicate", type=_probability, metavar="P",
                   help="a delivery over a second path (shortcut, courier) is made again "
                   "1-30 s later, with probability P")
    f.add_argument("--couriers", type=int, metavar="N",
                   help="people carrying bundles of records from node to node (sneakernet), "
                   "handing them over late and out of order")
    f.add_argument("--partitions", type=int, metavar="N", help="split-and-heal episodes")
    f.add_argument("--bridge", action="store_true", default=None,
                   help="one node keeps its links across each split")
    f.add_argument("--no-bridge", dest="bridge", action="store_false",
                   help="no node keeps its links across a split")
    f.add_argument("--clogs", type=int, metavar="N",
                   help="episodes of links stopped one by one and restored in random order")
    f.add_argument("--crashes", type=int, metavar="N", help="node crashes (restart from store)")
    f.add_argument("--mid-batch", type=_probability, metavar="P",
                   help="share of crashes that cut power inside a store transaction")
    f.add_argument("--skew", type=float, metavar="SECONDS", help="clock offsets up to +-this")
    f.add_argument("--no-mobility", dest="mobility", action="store_false", default=None,
                   help="convoy vehicles keep their places")
    f.add_argument("--mobility", dest="mobility", action="store_true",
                   help="convoy vehicles drift around their slots")
    s.add_argument("--no-shared-checks", dest="shared_checks", action="store_false",
                   default=None, help="every replica parses and verifies every record itself")
    s.add_argument("--no-plot", action="store_true", help="skip convergence.png")
    s.add_argument("--shrink", action="store_true",
                   help="when the run fails, look for the smallest run that fails the same "
                   "check and print the command that replays it")
    s.add_argument("--shrink-runs", type=int, default=60, metavar="N",
                   help="at most this many runs while shrinking (default %(default)s)")
    s.add_argument("--trace", type=Path, metavar="FILE",
                   help="write every event of the run to FILE, one JSON object a line")
    g = s.add_argument_group("the system under test (specs/simulator.md section 10)")
    g.add_argument("--replica", metavar="MODULE:FACTORY",
                   help="build every replica with FACTORY(network, store) instead of the "
                   "real Replica (MODULE may be a path to a .py file)")
    g.add_argument("--check", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="also run FUNCTION(world) -> CheckResult after the run (repeatable)")
    g.add_argument("--workload", metavar="MODULE:FUNCTION",
                   help="run the async FUNCTION(world) instead of the scenario's workload")
    s.set_defaults(func=cmd_simulate)


def _list(json_out: bool) -> int:
    from ..sim.scenarios import SCENARIOS

    if json_out:
        print(json.dumps({"scenarios": [{"name": s.name, "nodes": s.nodes,
                                         "duration": s.duration,
                                         "description": s.description}
                                        for s in SCENARIOS.values()]}, indent=2))
        return 0
    width = max(len(n) for n in SCENARIOS)
    for s in SCENARIOS.values():
        print(f"{s.name:<{width}}  {s.nodes:>3} nodes  {s.duration:>4g} s  {s.description}")
    return 0


def _params(args: argparse.Namespace) -> Any:
    from ..sim.scenarios import SCENARIOS, Scenario, params_for
    from ..sim.swarm import swarm_scenario

    base: str | Scenario
    if args.swarm:
        if args.scenario:
            raise LocalError("give --scenario NAME or --swarm, not both")
        base = swarm_scenario(args.seed)
    elif args.scenario not in SCENARIOS:
        raise LocalError(f"no scenario {args.scenario!r}; see `p2p-ledger simulate --list`")
    else:
        base = args.scenario
    if args.nodes is not None and args.nodes < 3:
        raise LocalError("--nodes must be at least 3")
    def ms(value: float | None) -> float | None:
        return None if value is None else value / 1000

    faults = {"latency": ms(args.latency), "jitter": ms(args.jitter),
              "bandwidth": None if args.bandwidth is None else args.bandwidth * 1000,
              "loss": args.loss, "reorder": args.reorder, "duplicate": args.duplicate,
              "couriers": args.couriers, "partitions": args.partitions,
              "bridge": args.bridge, "clogs": args.clogs,
              "crashes": args.crashes, "mid_batch": args.mid_batch, "skew": args.skew,
              "mobility": args.mobility}
    return params_for(base, seed=args.seed, nodes=args.nodes, duration=args.duration,
                      rate=args.rate, bound=args.bound, shared_checks=args.shared_checks,
                      faults=faults)


def _plugins(args: argparse.Namespace) -> dict[str, Any]:
    """The callables --replica, --check and --workload name, loaded (not yet run); a
    bad spec is a usage error (exit 2) in one line."""
    from ..sim.plugins import load

    out: dict[str, Any] = {}
    if args.replica is not None:
        out["replica_factory"] = load(args.replica, "--replica")
    if args.check:
        out["checks"] = [load(spec, "--check") for spec in args.check]
    if args.workload is not None:
        out["workload"] = load(args.workload, "--workload")
    return out


class _Progress:
    """A one-line bar on stderr, redrawn at most ten times a wall second."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, now: float, horizon: float, converged: float) -> None:
        wall = time.monotonic()
        if wall - self.last < 0.1:
            return
        self.last = wall
        share = min(1.0, now / horizon) if horizon else 1.0
        bar = "#" * int(30 * share)
        sys.stderr.write(f"\r[{bar:<30}] {now:7.1f} s simulated, "
                         f"{100 * converged:5.1f}% of replicas up to date ")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")


def _check(args: argparse.Namespace) -> int:
    from ..sim.tracecheck import TraceError, check_trace_file

    if args.file is None:
        raise LocalError("simulate check needs the trace FILE")
    try:
        result = check_trace_file(args.file)
    except TraceError as exc:
        print(f"p2p-ledger: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"passed": result.passed, "events": result.events,
                          "applies": result.applies, "violations": result.counts,
                          "lines": result.lines()}, indent=2, sort_keys=True))
    else:
        for line in result.lines():
            print(line)
        if result.passed:
            print(f"all invariants hold ({result.events:,} events, "
                  f"{result.applies:,} records stored)")
    return 0 if result.passed else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _check(args)
    if args.list:
        return _list(args.json)
    if not (args.scenario or args.swarm) or args.report is None:
        raise LocalError("simulate needs --scenario NAME (or --swarm) and --report DIR "
                         "(or --list)")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise LocalError("the plot needs matplotlib: pip install 'p2p-ledger[sim]' "
                             "(or pass --no-plot)") from None
    from ..sim.replay import command_for
    from ..sim.report import write_report
    from ..sim.swarm import swarm_summary
    from ..sim.world import World

    params = _params(args)
    plugins = _plugins(args)
    progress = _Progress() if sys.stderr.isatty() else None
    started = time.monotonic()
    if args.trace is not None:
        args.trace.parent.mkdir(parents=True, exist_ok=True)
        with args.trace.open("w", encoding="utf-8", buffering=1 << 20) as trace:
            world = World(params, progress=progress, trace=trace, **plugins)
            world.run()
    else:
        world = World(params, progress=progress, **plugins)
        world.run()
    wall = time.monotonic() - started
    if progress is not None:
        progress.done()
    report = write_report(world, args.report, plot=not args.no_plot)
    checks = report["checks"]
    assert isinstance(checks, list)
    shrunk = (_shrink(args, params, plugins, report)
              if args.shrink and not report["passed"] else None)
    if args.json:
        print(json.dumps({"passed": report["passed"], "checks": checks,
                          "report": str(args.report), "wall_seconds": round(wall, 3),
                          "replay": command_for(params, report=str(args.report),
                                                extra=_plugin_options(args)),
                          **({"shrunk": shrunk} if shrunk is not None else {})},
                         indent=2, sort_keys=True))
        return 0 if report["passed"] else 1
    if args.swarm:
        print(f"swarm seed {params.seed}: {swarm_summary(params)}")
    for c in checks:
        print(f"{'pass' if c['passed'] else 'FAIL'}  {c['name']}: {c['detail']}")
    if not report["passed"]:
        print("replay: " + command_for(params, report=str(args.report),
                                       extra=_plugin_options(args)))
    events = world.events()
    print(f"simulated {world.end_at:.1f} s in {wall:.1f} s of wall time "
          f"({events / wall:,.0f} events per wall second); report in {args.report}/")
    if shrunk is not None:
        budget = " (the budget of runs ran out first)" if shrunk["exhausted"] else ""
        print(f"smallest failing run after {shrunk['runs']} tries and "
              f"{len(shrunk['steps'])} reductions{budget}:")
        print(shrunk["command"])
    return 0 if report["passed"] else 1


def _plugin_options(args: argparse.Namespace) -> list[str]:
    """The plugin options as given, for a replay command."""
    out: list[str] = []
    if args.replica is not None:
        out += ["--replica", args.replica]
    for check in args.check:
        out += ["--check", check]
    if args.workload is not None:
        out += ["--workload", args.workload]
    return out


def _shrink(args: argparse.Namespace, params: Any, plugins: dict[str, Any],
            report: dict[str, object]) -> dict[str, Any]:
    """Shrink the failed run (sim/shrink.py); write the smallest failing run's report
    into REPORT/smallest; return the command that replays it, and how it was found."""
    from ..sim.replay import command_for
    from ..sim.report import build_report, write_report
    from ..sim.shrink import failing_checks, shrink, still_fails
    from ..sim.world import World

    def run(p: Any) -> dict[str, object]:
        world = World(p, **plugins)
        world.run()
        return build_report(world)

    checks = failing_checks(report)
    print(f"shrinking: looking for a smaller run that still fails {', '.join(sorted(checks))}",
          file=sys.stderr)
    found = shrink(params, still_fails(checks, run), max_runs=args.shrink_runs,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    where = args.report / "smallest"
    smallest = World(found.params, **plugins)
    smallest.run()
    write_report(smallest, where, plot=not args.no_plot)
    return {"command": command_for(found.params, report=str(where),
                                   extra=_plugin_options(args)),
            "runs": found.runs, "steps": found.steps, "exhausted": found.exhausted,
            "report": str(where)}
