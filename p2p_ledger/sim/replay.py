"""The one command line that replays a run: `command_for(params)`.

It names the base (`--scenario NAME`, or `--swarm`, whose parameters come from the
seed) and the seed, then only the options whose values differ from that base, so the
command is as short as the run allows. `params_for` on the parsed options gives back
equal `SimParams`; `tests/test_sim_swarm.py` checks the round trip. Times in the
command are in the units the options take (latency and jitter in milliseconds,
bandwidth in kB/s).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from .scenarios import SCENARIOS, Faults, Scenario, SimParams

__all__ = ["base_scenario", "command_for"]


def base_scenario(params: SimParams) -> Scenario:
    if params.scenario == "swarm":
        from .swarm import swarm_scenario

        return swarm_scenario(params.seed)
    return SCENARIOS[params.scenario]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _fault_options(f: Faults, base: Faults) -> list[str]:
    out: list[str] = []
    for name, scale in (("latency", 1000), ("jitter", 1000), ("bandwidth", 0.001)):
        value = getattr(f, name)
        if value != getattr(base, name) and value is not None:
            out += [f"--{name}", _number(round(value * scale, 6))]
    for name in ("loss", "reorder", "duplicate", "couriers", "partitions", "clogs",
                 "crashes", "mid_batch", "skew"):
        value = getattr(f, name)
        if value != getattr(base, name):
            out += [f"--{name.replace('_', '-')}", _number(value)]
    if f.bridge != base.bridge:
        out.append("--bridge" if f.bridge else "--no-bridge")
    if f.mobility != base.mobility:
        out.append("--mobility" if f.mobility else "--no-mobility")
    return out


def command_for(params: SimParams, *, report: str = "out/",
                extra: Sequence[str] = ()) -> str:
    """`p2p-ledger simulate ...` for `params` (plus `extra` options: plugins, --trace)."""
    base = base_scenario(params)
    words = ["p2p-ledger", "simulate"]
    words += ["--swarm"] if params.scenario == "swarm" else ["--scenario", params.scenario]
    words += ["--seed", str(params.seed)]
    for name in ("nodes", "duration", "rate", "bound"):
        value = getattr(params, name)
        if value != getattr(base, name):
            words += [f"--{name}", _number(value)]
    words += _fault_options(params.faults, base.faults)
    if not params.shared_checks:
        words.append("--no-shared-checks")
    words += [*extra, "--report", report]
    return shlex.join(words)
