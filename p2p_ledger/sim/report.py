"""The report of a run: report.json (for programs), report.md (for people).

report.json holds only values the run computed from its seed: parameters, the
timeline (when the faults stopped, when the replicas converged, the bound), the
workload, traffic, every fault episode, per-node lag and every check with its
violations, and the series the plot draws. Times are simulated seconds rounded to
milliseconds, keys are written sorted, and nothing comes from the wall clock or from
a hash-ordered set, so the same seed and version give the same bytes.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from ..core.ids import device_id
from ..core.records import parse_record
from .checks import CheckResult
from .world import World

__all__ = ["build_report", "write_report"]

FORMAT = "p2p-ledger-simulation"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("p2p-ledger")
    except PackageNotFoundError:
        return "unknown"


def _seconds(ms: float) -> float:
    return round(ms / 1000, 3)


def _lag(values: list[int]) -> dict[str, float | int]:
    if not values:
        return {"records": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, (95 * len(ordered)) // 100)]
    return {"records": len(ordered), "mean": _seconds(statistics.fmean(ordered)),
            "p50": _seconds(ordered[len(ordered) // 2]), "p95": _seconds(p95),
            "max": _seconds(ordered[-1])}


def _replay(w: World) -> str:
    """The command that replays this run (replay.py), plugins named as `module:name`."""
    from .replay import command_for

    plugins = w.plugins()
    extra: list[str] = []
    if "replica" in plugins:
        extra += ["--replica", str(plugins["replica"])]
    for check in plugins.get("checks", []):  # type: ignore[attr-defined]
        extra += ["--check", str(check)]
    if "workload" in plugins:
        extra += ["--workload", str(plugins["workload"])]
    return command_for(w.params, extra=extra)


def _convergence(w: World) -> CheckResult:
    """The convergence property of specs/simulator.md section 6: the honest replicas
    converge on everything any of them holds, and the only records none of them holds
    are revoked devices' records above their cut-off."""
    p = w.params
    honest = w.honest()
    needed = w.checker.needed()
    revoked = [m.name for m in w.members if not w.checker.honest(m.index)]
    stranded = w.checker.stranded()
    wrong: list[dict[str, object]] = [{"record": rid.hex(), "problem": problem}
                                      for rid, problem in stranded if problem is not None]
    who = f"all {len(honest)} honest replicas" + (
        f" (of {len(w.members)}; revoked: {', '.join(revoked)})" if revoked else "")
    cut_off = (f"; {len(stranded)} records of revoked devices, above their cut-off, reached "
               "no honest replica" if stranded and not wrong else "")
    if wrong:
        return CheckResult(
            name="convergence", passed=False, checked=len(w.members), violations=wrong[:20],
            detail=f"{len(wrong)} records that must reach the honest replicas reached none")
    counts = w.checker.counts
    final = {w.final_hashes[m.index] for m in honest}
    if w.converged_at is not None and (len(final) != 1 or any(
            counts[m.index] != needed for m in honest)):
        return CheckResult(
            name="convergence", passed=False, checked=len(w.members),
            detail=f"converged at {w.converged_at:.3f} s, but at the end the {len(honest)} "
            "honest replicas no longer held one record set")
    if w.converged_at is not None:
        took = round(w.converged_at - p.duration, 3)
        return CheckResult(
            name="convergence", passed=took <= p.bound, checked=len(w.members),
            detail=f"{who} hold the {needed} records any of them holds, with state hash "
            f"{w.final_hashes[honest[0].index].hex()[:16]}, {took} s after the faults "
            f"stopped (bound {p.bound:g} s){cut_off}")
    behind = [{"node": m.name, "records": counts[m.index], "missing": needed - counts[m.index]}
              for m in honest if counts[m.index] != needed]
    return CheckResult(
        name="convergence", passed=False, checked=len(w.members), violations=behind[:20],
        detail=f"{len(behind)} of {len(honest)} honest replicas still lacked records any "
        f"of them holds {p.bound:g} s after the faults stopped; {len(final)} distinct state "
        "hashes among them")


def _evidence(w: World) -> CheckResult | None:
    """With a cloned device: every honest replica holds the same equivocation evidence,
    and it is there."""
    if not w.checker.forked_authors:
        return None
    views = [tuple(m.store.equivocations()) for m in w.honest()]
    same = len(set(views)) == 1
    pairs = len(views[0])
    return CheckResult(
        name="evidence", passed=same and pairs > 0, checked=len(views),
        detail=f"every honest replica holds the same {pairs} equivocation pairs" if same else
        "honest replicas hold different equivocation evidence")


def _revocations(w: World) -> dict[str, object]:
    """The revoked devices' records above their cut-off: how many reached the honest
    replicas, by the verdict (and reason) they got there, and how many reached none."""
    if not w.revoked:
        return {}
    cut_off = w.checker.cut_off
    honest = w.honest()
    view = honest[0].store if honest else w.members[0].store
    verdicts: Counter[str] = Counter()
    unheld = 0
    for rid, author in w.checker.author_of.items():
        cut = cut_off.get(author)
        if cut is None or w.checker.seq_of[rid] <= cut:
            continue
        row = view.get(rid)
        if row is None:
            unheld += 1
            continue
        knew = row.reason is not None and "this record knew it" in row.reason
        verdicts[f"{row.verdict.value} (knew the revocation)" if knew else
                 f"{row.verdict.value} (did not know it)"] += 1
    return {"revoked_devices": len(w.revoked),
            "records_after_revocation": dict(sorted(verdicts.items())),
            "records_after_revocation_held_by_no_honest_replica": unheld}


def build_report(w: World) -> dict[str, object]:
    p = w.params
    total = len(w.checker.created)
    checks = w.checker.results(checked_records=sum(w.checker.counts))
    checks.append(_convergence(w))
    evidence = _evidence(w)
    if evidence is not None:
        checks.append(evidence)
    checks.extend(w.check_results)  # the plugin checks (--check), run after the run
    kinds: Counter[str] = Counter()
    for rid in w.checker.created:
        holders = w.checker.holders.get(rid, 0)
        holder = w.members[(holders & -holders).bit_length() - 1] if holders else None
        raw = holder.store.raw(rid) if holder is not None else None
        kinds[parse_record(raw).record.kind.label if raw else "unheld"] += 1
    by_kind: dict[str, dict[str, int]] = {}
    for e in w.edges:
        k = by_kind.setdefault(e.kind, {"links": 0, "bytes": 0, "messages": 0})
        k["links"] += 1
        k["bytes"] += e.stats.bytes
        k["messages"] += e.stats.frames
    per_node = []
    for m, lags, held in zip(w.members, w.checker.lags, w.checker.counts, strict=True):
        per_node.append({"node": m.name, "role": m.role, "device": device_id(m.device)[:16],
                         "revoked": not w.checker.honest(m.index),
                         "records": held, "sessions": m.sessions,
                         "sessions_broken": m.session_errors, "crashes": m.crashes,
                         "skew_ms": m.skew_ms, "lag_s": _lag(list(lags))})
    converged = w.converged_at
    honest_hashes = {w.final_hashes[m.index] for m in w.honest()}
    plugins = w.plugins()
    report: dict[str, object] = {
        "format": FORMAT, "version": 1, "package_version": _version(),
        "parameters": {**p.to_json(), **({"plugins": plugins} if plugins else {})},
        "replay": _replay(w),
        "topology": {"members": len(w.members), "links": len(w.edges),
                     "by_kind": dict(sorted(by_kind.items()))},
        "timeline": {
            "faults_stop_s": p.duration, "bound_s": p.bound,
            "converged_at_s": None if converged is None else round(converged, 3),
            "time_to_convergence_s": (None if converged is None
                                      else round(converged - p.duration, 3)),
            "end_s": round(w.end_at, 3)},
        "workload": {**w.payments, "records_created": total,
                     "by_kind": dict(sorted(kinds.items())), **_revocations(w)},
        "traffic": {"bytes": sum(e.stats.bytes for e in w.edges),
                    "messages": sum(e.stats.frames for e in w.edges),
                    "chunks": sum(e.stats.chunks for e in w.edges),
                    "connections": sum(e.stats.connections for e in w.edges),
                    "resets": sum(e.stats.resets for e in w.edges),
                    "retransmitted_packets": sum(e.stats.retransmissions for e in w.edges),
                    "records_refused": w.refused_records},
        "faults": [{"kind": e.kind, "start_s": e.start, "end_s": e.end, **e.detail}
                   for e in sorted(w.episodes, key=lambda e: (e.start, e.kind, e.end))],
        **w.paths.stats.to_json(),
        "final_state_hash": (honest_hashes.pop().hex() if len(honest_hashes) == 1
                             else None),
        "checks": [c.to_json() for c in checks],
        "passed": all(c.passed for c in checks),
        "per_node": per_node,
        "series": w.series,
    }
    return report


def _md(report: dict[str, object]) -> str:
    r = report
    p = r["parameters"]
    t = r["timeline"]
    wl = r["workload"]
    tr = r["traffic"]
    assert isinstance(p, dict)
    assert isinstance(t, dict)
    assert isinstance(wl, dict)
    assert isinstance(tr, dict)
    lines = [f"# Simulation: {p['scenario']} ({p['nodes']} nodes, seed {p['seed']})", ""]
    verdict = "All checks passed" if r["passed"] else "**Some checks FAILED**"
    if t["time_to_convergence_s"] is not None:
        lines.append(f"The honest replicas (those whose device is not revoked) converged "
                     f"{t['time_to_convergence_s']} s (simulated) after "
                     f"the faults stopped at {t['faults_stop_s']:g} s; the bound was "
                     f"{t['bound_s']:g} s. {verdict}.")
    else:
        lines.append(f"The honest replicas did **not** converge within {t['bound_s']:g} s "
                     f"after the faults stopped. {verdict}.")
    lines += ["", "## Checks", "", "| check | result | detail |", "|---|---|---|"]
    checks = r["checks"]
    assert isinstance(checks, list)
    for c in checks:
        lines.append(f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |")
    lines += ["", "## Workload and traffic", "",
              f"- topology `{p['topology']}`, workload `{p['workload']}`, "
              f"{p['rate']:g} payments/s for {p['duration']:g} s",
              f"- payments: {wl['made']} made, {wl['refused']} refused by the payer's wallet "
              f"(insufficient funds in hand), {wl['revoked']} refused because the payer's "
              f"certificate was revoked; {wl['records_created']} records created "
              f"in all ({', '.join(f'{k} {v}' for k, v in wl['by_kind'].items())})",
              f"- wire: {tr['bytes']:,} bytes in {tr['messages']:,} messages "
              f"({tr['chunks']:,} writes) over {tr['connections']:,} connections; "
              f"{tr['resets']:,} resets, {tr['retransmitted_packets']:,} packets "
              f"retransmitted, {tr['records_refused']} records refused by receivers"]
    sp, pend = r["second_paths"], r["pending"]
    assert isinstance(sp, dict)
    assert isinstance(pend, dict)
    lines.append(f"- second paths: {sp['shortcut_records']} records sent over a shortcut, "
                 f"{sp['bundles_handed_over']} courier bundles ({sp['bundle_records']} "
                 f"records) handed over at {sp['courier_stops']} stops, "
                 f"{sp['duplicate_deliveries']} deliveries made twice, "
                 f"{sp['missed_member_down']} missed (member down)")
    lines.append(f"- pending areas: {pend['parked']} records parked for want of their "
                 f"causal past, {pend['released']} released when it came, "
                 f"{pend['dropped']} dropped unreleased, {pend['lost_in_crashes']} lost "
                 f"in crashes, {pend['waiting_at_end']} still waiting at the end")
    if "revoked_devices" in wl:
        lines.append(f"- revocations: {wl['revoked_devices']} devices revoked; their records "
                     f"above the cut-off, by verdict in the honest replicas: "
                     f"{wl['records_after_revocation']}, and "
                     f"{wl['records_after_revocation_held_by_no_honest_replica']} that "
                     f"reached no honest replica; {wl['tampered']} signed by a tampered "
                     "wallet after the device knew")
    faults = r["faults"]
    assert isinstance(faults, list)
    if faults:
        lines += ["", "## Faults", "", "| kind | from (s) | to (s) | detail |",
                  "|---|---|---|---|"]
        for f in faults:
            detail = ", ".join(f"{k}={v}" for k, v in f.items()
                               if k not in ("kind", "start_s", "end_s"))
            lines.append(f"| {f['kind']} | {f['start_s']} | {f['end_s']} | {detail} |")
    per_node = r["per_node"]
    assert isinstance(per_node, list)
    lines += ["", "## Per node", "", "Lag: simulated seconds from a record's creation to its "
              "arrival at the node.", "",
              "| node | role | records | sessions (broken) | crashes | lag mean | p95 | max |",
              "|---|---|---|---|---|---|---|---|"]
    for n in per_node:
        lag = n["lag_s"]
        role = f"{n['role']} (revoked)" if n["revoked"] else n["role"]
        lines.append(f"| {n['node']} | {role} | {n['records']} | {n['sessions']} "
                     f"({n['sessions_broken']}) | {n['crashes']} | {lag.get('mean', '-')} | "
                     f"{lag.get('p95', '-')} | {lag.get('max', '-')} |")
    lines += ["", f"Replay: `{r['replay']}`", "",
              "Plot: `convergence.png`. Machine-readable: `report.json`.", ""]
    return "\n".join(lines)


def write_report(w: World, directory: Path, *, plot: bool = True) -> dict[str, object]:
    """Write report.json, report.md and (with `plot`) convergence.png into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    report = build_report(w)
    (directory / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (directory / "report.md").write_text(_md(report))
    if plot:
        from .plot import plot_convergence

        plot_convergence(report, directory / "convergence.png")
    return report

