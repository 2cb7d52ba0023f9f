"""Simulator benchmark: 100 nodes, 20,000 payments, a convoy with partitions, run to
convergence; prints simulated events per wall second.

    python tools/bench_sim.py [--nodes 100] [--payments 20000] [--duration 400]
                              [--partitions 3] [--seed 1] [--no-shared-checks]
                              [--report DIR]

The payment rate is payments / duration. Target: the whole run under 5 minutes on a
2-core machine. The checks run as in `p2p-ledger simulate`; the run fails (exit 1)
if any fails. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from p2p_ledger.sim.report import build_report, write_report
from p2p_ledger.sim.scenarios import params_for
from p2p_ledger.sim.world import World

TARGET_SECONDS = 300.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--payments", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=400.0)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-shared-checks", action="store_true")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    params = params_for("convoy", seed=args.seed, nodes=args.nodes, duration=args.duration,
                        rate=args.payments / args.duration, bound=300.0,
                        shared_checks=not args.no_shared_checks,
                        faults={"partitions": args.partitions})
    started = time.perf_counter()
    cpu = time.process_time()
    world = World(params)
    built = time.perf_counter() - started
    world.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    report = (write_report(world, args.report, plot=False) if args.report
              else build_report(world))
    events = world.events()
    timeline = report["timeline"]
    traffic = report["traffic"]
    workload = report["workload"]
    assert isinstance(timeline, dict)
    assert isinstance(traffic, dict)
    assert isinstance(workload, dict)
    figures = {
        "nodes": args.nodes, "payments": workload["made"],
        "records": workload["records_created"],
        "records_stored": sum(world.checker.counts),
        "simulated_s": round(world.end_at, 3),
        "time_to_convergence_s": timeline["time_to_convergence_s"],
        "bytes": traffic["bytes"], "messages": traffic["messages"],
        "wall_s": round(wall, 1), "setup_s": round(built, 1), "cpu_s": round(cpu, 1),
        "events": events, "events_per_wall_s": round(events / wall),
        "shared_checks": not args.no_shared_checks,
        "passed": report["passed"], "target_s": TARGET_SECONDS,
    }
    print(f"{args.nodes} nodes, {workload['made']} payments, convoy with {args.partitions} "
          f"partitions: converged {timeline['time_to_convergence_s']} s after the faults "
          f"stopped ({world.end_at:.0f} s simulated)")
    print(f"wall {wall:.1f} s (set-up {built:.1f} s, CPU {cpu:.1f} s), target "
          f"{TARGET_SECONDS:.0f} s: {'met' if wall <= TARGET_SECONDS else 'NOT met'}")
    print(f"{events:,} simulated events, {events / wall:,.0f} per wall second; "
          f"{figures['records_stored']:,} records stored across replicas")
    for c in report["checks"]:  # type: ignore[attr-defined]
        print(f"  {'pass' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}")
    print(json.dumps(figures, sort_keys=True))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
