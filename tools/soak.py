"""Soak: long property runs and many simulator seeds, for hours rather than seconds.

    python tools/soak.py [--minutes 60] [--scenarios chaos,convoy,...] [--nodes 20]
                         [--out DIR] [--skip-properties]
    python tools/soak.py --swarm [--seeds 50] [--first-seed 1] [--minutes 60] [--out DIR]

1. The property tests of tests/test_sim_properties.py under Hypothesis's "long"
   profile (2,000 examples of 100 steps each, registered in tests/conftest.py): a
   failure prints its shrunk, replayable program.
2. Then, until the time is up, scenario after scenario with seeds 1, 2, 3, ...; a run
   whose checks fail keeps its report (report.json, report.md, convergence.png) in
   `--out/SCENARIO-seed-S/` and is replayed exactly by
   `p2p-ledger simulate --scenario SCENARIO --seed S --nodes N --report DIR`.
3. With `--swarm`, instead of the named scenarios: seeds `--first-seed`, ... each
   drawing its whole configuration (topology, workload, size, rate, which faults and
   how strong; sim/swarm.py), until `--seeds` runs or the time is up. Each run prints
   what its seed drew; a failing one keeps its report in `--out/swarm-seed-S/` and
   prints `p2p-ledger simulate --swarm --seed S ...`, which replays it exactly.

Exits 1 if anything failed. The last line is one JSON object with the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from p2p_ledger.sim.replay import command_for
from p2p_ledger.sim.report import build_report, write_report
from p2p_ledger.sim.scenarios import SCENARIOS, params_for
from p2p_ledger.sim.swarm import swarm_scenario, swarm_summary
from p2p_ledger.sim.world import World

ROOT = Path(__file__).resolve().parent.parent


def _properties() -> bool:
    env = dict(os.environ, HYPOTHESIS_PROFILE="long")
    print("property tests under the long profile ...", flush=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x",
                           "tests/test_sim_properties.py", "-k", "ReplicaNetwork"],
                          cwd=ROOT, env=env, check=False)
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("soak-failures"))
    ap.add_argument("--skip-properties", action="store_true")
    ap.add_argument("--swarm", action="store_true",
                    help="swarm runs (configuration drawn from each seed), not the scenarios")
    ap.add_argument("--seeds", type=int, default=None, help="with --swarm: how many seeds")
    ap.add_argument("--first-seed", type=int, default=1)
    args = ap.parse_args(argv)
    deadline = time.monotonic() + 60 * args.minutes
    properties_ok = True if args.skip_properties else _properties()
    if args.swarm:
        return _swarm(args, deadline, properties_ok)
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    runs, failed = 0, []
    seed = 0
    while time.monotonic() < deadline:
        seed += 1
        for name in names:
            if time.monotonic() >= deadline:
                break
            world = World(params_for(name, seed=seed, nodes=args.nodes))
            world.run()
            runs += 1
            report = write_report(world, args.out / f"{name}-seed-{seed}", plot=False)
            status = "ok" if report["passed"] else "FAILED"
            print(f"{name} seed {seed}: {status}", flush=True)
            if report["passed"]:
                for f in (args.out / f"{name}-seed-{seed}").iterdir():
                    f.unlink()
                (args.out / f"{name}-seed-{seed}").rmdir()
            else:
                write_report(world, args.out / f"{name}-seed-{seed}")
                failed.append(f"{name}-seed-{seed}")
    print(json.dumps({"properties_passed": properties_ok, "runs": runs, "failed": failed}))
    return 0 if properties_ok and not failed else 1


def _swarm(args: argparse.Namespace, deadline: float, properties_ok: bool) -> int:
    runs, failed, wall_total = 0, [], 0.0
    drawn: dict[str, int] = {}
    seed = args.first_seed
    while time.monotonic() < deadline and (args.seeds is None or runs < args.seeds):
        params = params_for(swarm_scenario(seed), seed=seed)
        combo = f"{params.topology}/{params.workload}"
        drawn[combo] = drawn.get(combo, 0) + 1
        started = time.monotonic()
        world = World(params)
        world.run()
        wall = time.monotonic() - started
        wall_total += wall
        runs += 1
        report = build_report(world)
        ok = bool(report["passed"])
        print(f"swarm seed {seed}: {'ok' if ok else 'FAILED'} in {wall:.1f} s wall "
              f"({swarm_summary(params)})", flush=True)
        if not ok:
            where = args.out / f"swarm-seed-{seed}"
            write_report(world, where)
            bad = [c["name"] for c in report["checks"] if not c["passed"]]  # type: ignore
            print(f"  failed {', '.join(bad)}; replay: "
                  f"{command_for(params, report=str(where))}", flush=True)
            failed.append(seed)
        seed += 1
    print(json.dumps({"properties_passed": properties_ok, "swarm_runs": runs,
                      "failed_seeds": failed, "wall_s": round(wall_total, 1),
                      "combinations": dict(sorted(drawn.items()))}))
    return 0 if properties_ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
