"""Shrinking a failing run (`simulate --shrink`): the smallest run that fails the same way.

A failing run of 30 nodes for two minutes under every fault is hard to read. Like the
shrinkers of the Automerge and Loro fuzzers, or Hypothesis, this looks for a smaller run
that still fails *the same check* (any of the checks the first run failed): greedy
delta debugging over the run's parameters. Reducers are tried in turn (nodes, duration,
rate, each kind of fault episode, each fault probability); each offers candidates from
the boldest (3 nodes, no partitions at all) to the most timid (one node fewer, one
episode fewer), and the first candidate that still fails is kept and the same reducer
asked again. Passes repeat until one changes nothing, or the budget of runs is spent.

Every candidate is a whole deterministic run of its own seed, so what is found replays:
`command_for` (replay.py) prints it as one command line. The seed is kept; with fewer
nodes the topology and every random stream differ, so a candidate is a new world, not
a cut-down one: that is why a candidate is kept only if it really fails again. The
bound is never shrunk (a tighter bound would make the convergence check fail for a new
reason), nor the scenario's workload kind or topology.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import P2PLedgerError
from .scenarios import SimParams

__all__ = ["Shrunk", "failing_checks", "shrink", "still_fails"]

Reducer = Callable[[SimParams], list[tuple[str, SimParams]]]
MIN_DURATION = 5.0
MIN_RATE = 0.1


@dataclass(slots=True, kw_only=True)
class Shrunk:
    params: SimParams
    runs: int = 0  # candidate runs made
    steps: list[str] = field(default_factory=list)  # what each kept reduction did
    exhausted: bool = False  # the budget ran out before a pass changed nothing


def failing_checks(report: dict[str, object]) -> set[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {str(c["name"]) for c in checks if not c["passed"]}


def still_fails(checks: set[str], run: Callable[[SimParams], dict[str, object]]
                ) -> Callable[[SimParams], bool]:
    """A predicate: does the run of these parameters fail one of `checks`? A run that
    cannot be built or raises a plugin's error does not count."""
    def predicate(params: SimParams) -> bool:
        try:
            report = run(params)
        except (P2PLedgerError, ValueError) as exc:  # no such world (too few nodes ...)
            del exc
            return False
        return bool(failing_checks(report) & checks)
    return predicate


def _fewer(value: int, floor: int) -> list[int]:
    """Smaller counts to try, boldest first: the floor, half, one fewer."""
    out: list[int] = []
    for v in (floor, value // 2, value - 1):
        if floor <= v < value and v not in out:
            out.append(v)
    return out


def _faults(p: SimParams, **changes: Any) -> SimParams:
    return dataclasses.replace(p, faults=dataclasses.replace(p.faults, **changes))


def _nodes(p: SimParams) -> list[tuple[str, SimParams]]:
    return [(f"nodes {p.nodes} -> {n}", dataclasses.replace(p, nodes=n))
            for n in _fewer(p.nodes, 3)]


def _duration(p: SimParams) -> list[tuple[str, SimParams]]:
    out: list[tuple[str, SimParams]] = []
    for d in (MIN_DURATION, round(p.duration / 2, 1), round(p.duration * 0.75, 1)):
        if MIN_DURATION <= d < p.duration and all(d != c.duration for _, c in out):
            out.append((f"duration {p.duration:g} s -> {d:g} s",
                        dataclasses.replace(p, duration=d)))
    return out


def _rate(p: SimParams) -> list[tuple[str, SimParams]]:
    out: list[tuple[str, SimParams]] = []
    for r in (MIN_RATE, round(p.rate / 2, 2)):
        if MIN_RATE <= r < p.rate and all(r != c.rate for _, c in out):
            out.append((f"rate {p.rate:g}/s -> {r:g}/s", dataclasses.replace(p, rate=r)))
    return out


def _episodes(name: str) -> Reducer:
    def reduce(p: SimParams) -> list[tuple[str, SimParams]]:
        k = getattr(p.faults, name)
        return [(f"{name} {k} -> {n}", _faults(p, **{name: n})) for n in _fewer(k, 0)]
    return reduce


def _off(name: str, off: object = 0.0) -> Reducer:
    def reduce(p: SimParams) -> list[tuple[str, SimParams]]:
        value = getattr(p.faults, name)
        if value is None or value == off:
            return []
        return [(f"{name} {value} -> {off}", _faults(p, **{name: off}))]
    return reduce


def _mid_batch(p: SimParams) -> list[tuple[str, SimParams]]:
    """Only where a crash happens: otherwise the share changes nothing but the command."""
    return _off("mid_batch")(p) if p.faults.crashes else []


def _mobility(p: SimParams) -> list[tuple[str, SimParams]]:
    if p.topology != "convoy" or not p.faults.mobility:
        return []
    return [("mobility off", _faults(p, mobility=False))]


# Cheapest-to-run first: fewer nodes and a shorter run make every later try faster.
REDUCERS: tuple[Reducer, ...] = (
    _nodes, _duration, _rate, _episodes("partitions"), _episodes("crashes"),
    _episodes("clogs"), _episodes("couriers"), _off("loss"), _off("reorder"),
    _off("duplicate"), _off("skew"), _off("jitter"), _mid_batch, _mobility)


def shrink(params: SimParams, fails: Callable[[SimParams], bool], *, max_runs: int = 60,
           log: Callable[[str], None] | None = None) -> Shrunk:
    """The smallest parameters found, from `params` (which must fail), for which
    `fails` still holds, within `max_runs` candidate runs."""
    result = Shrunk(params=params)
    tried: dict[SimParams, bool] = {params: True}

    def attempt(cand: SimParams) -> bool:
        if cand not in tried:
            result.runs += 1
            tried[cand] = fails(cand)
        return tried[cand]

    changed = True
    while changed:
        changed = False
        for reducer in REDUCERS:
            kept = True
            while kept:  # ask the same reducer again after each success
                kept = False
                for desc, cand in reducer(result.params):
                    if result.runs >= max_runs and cand not in tried:
                        result.exhausted = True
                        return result
                    if attempt(cand):
                        result.params = cand
                        result.steps.append(desc)
                        if log is not None:
                            log(f"shrink: {desc} (still fails; run {result.runs})")
                        kept = changed = True
                        break
    return result
