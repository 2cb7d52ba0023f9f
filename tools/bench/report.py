"""The side-by-side table, the targets of issue 6, and RESULTS.md, from the figures
`run.py` gathered. Pure formatting and arithmetic: it measures nothing and never
rounds a figure before a ratio is taken from it.

A target whose figure is missing (Automerge skipped, say) is reported as
`n/a`, never as met.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

NOTE_START = "<!-- closing-note: kept when the tool rewrites this file -->"
NOTE_END = "<!-- /closing-note -->"
DEFAULT_NOTE = ("(No closing note yet. Where a target is not reached, say here what bounds "
                "it, measured with a profiler; `python tools/bench/run.py --profile` prints "
                "where the ledger's sync spends its time.)")

Row = Mapping[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    name: str
    measured: float | None  # None: not measured in this run
    goal: float
    at_most: bool  # the measure must be <= goal (else >= goal)
    unit: str = "x"
    why_missing: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.goal if self.at_most else self.measured >= self.goal

    @property
    def verdict(self) -> str:
        return {None: "n/a", True: "met", False: "NOT met"}[self.met]

    def cells(self) -> tuple[str, str, str]:
        measured = "-" if self.measured is None else _num(self.measured, self.unit)
        goal = ("<= " if self.at_most else ">= ") + _num(self.goal, self.unit)
        verdict = self.verdict + (f" ({self.why_missing})" if self.why_missing else "")
        return measured, goal, verdict


def _num(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "B":
        return f"{v:,.0f} B"
    if unit == "MB":
        return f"{v:.1f} MB"
    return f"{v:.3f} s"


def _row(rows: Sequence[Row], system: str, case: str) -> Row | None:
    return next((r for r in rows if r["system"] == system and r["case"] == case), None)


def _f(row: Row | None, key: str) -> float | None:
    if row is None or row.get(key) is None:
        return None
    value = row[key]
    assert isinstance(value, int | float)
    return float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets(rows: Sequence[Row], ingest: Row | None, store: Row | None,
            summary: Row | None, skipped: Mapping[str, str]) -> list[Target]:
    """The figures issues 6 and 15 set targets on, from this run's measurements."""
    led = {c: _row(rows, "ledger", c) for c in ("full", "delta")}
    yjs, am = _row(rows, "yjs", "delta"), {c: _row(rows, "automerge", c) for c in ("full", "delta")}
    why_am = skipped.get("automerge", "")
    why_yjs = skipped.get("yjs", "")
    out = [
        Target(name="delta wire bytes: ledger / Yjs",
               measured=_ratio(_f(led["delta"], "wire_bytes"), _f(yjs, "wire_bytes")),
               goal=0.6, at_most=True, why_missing=why_yjs),
        Target(name="delta wire bytes: ledger / Automerge",
               measured=_ratio(_f(led["delta"], "wire_bytes"), _f(am["delta"], "wire_bytes")),
               goal=0.4, at_most=True, why_missing=why_am),
    ]
    for case in ("delta", "full"):
        out.append(Target(name=f"{case} wall time: ledger / raw verification of the records",
                          measured=_ratio(_f(led[case], "wall_s"), _f(led[case], "verify_s")),
                          goal=1.3, at_most=True))
    # Issue 6 asked for 5x both ways; issue 15 set what a verifying, durable sync can
    # be asked beside one that does neither: faster on full, twice as fast on a delta.
    for case, goal in (("delta", 2.0), ("full", 1.0)):
        out.append(Target(name=f"{case} wall time: Automerge / ledger (speed-up)",
                          measured=_ratio(_f(am[case], "wall_s"), _f(led[case], "wall_s")),
                          goal=goal, at_most=False, why_missing=why_am))
    out.append(Target(name="ingest rate / raw verification rate (1 core)",
                      measured=_f(ingest, "ratio"), goal=0.8, at_most=False))
    if store is not None:
        rss = max(float(store[k]) for k in ("status_rss_mb", "balance_one_rss_mb",
                                             "balance_all_rss_mb"))
        out.append(Target(name=f"{store['records']:,}-record store: peak RSS of status/balance",
                          measured=rss, goal=150.0, at_most=True, unit="MB"))
        out.append(Target(name=f"{store['records']:,}-record store: open + status (fresh process)",
                          measured=_f(store, "status_s"), goal=1.0, at_most=True, unit="s"))
    if summary is not None:
        biggest = max(float(summary["summary_bytes_a"]),
                      float(summary["summary_bytes_b"]))
        out.append(Target(name=f"summary to a known peer ({summary['authors']:,} authors, "
                               "one changed), larger side", measured=biggest, goal=1024,
                          at_most=True, unit="B"))
    return out


# ---------------------------------------------------------------- text


def _rt(row: Row) -> str:
    rt = f"{float(row['round_trips']):g}"
    hs = row.get("handshake_round_trips")
    return f"{rt} (+{float(hs):g} hs)" if hs else rt


def _cpu(row: Row) -> str:
    """The syncing node's main-process CPU seconds (the ledger's B; not measured for
    the other systems)."""
    cpu = row.get("cpu_b_s")
    return "-" if cpu is None else f"{float(cpu):.3f}"


def table_lines(rows: Sequence[Row]) -> list[str]:
    head = (f"{'system':<10} {'case':<6} {'moved':>6} {'wire bytes':>11} {'B/record':>8} "
            f"{'round trips':>13} {'wall s':>8} {'verify s':>8} {'CPU B s':>8} {'peak RSS':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        moved = int(r["records_moved"])
        wire = int(r["wire_bytes"])
        verify = r.get("verify_s")
        lines.append(
            f"{r['system']:<10} {r['case']:<6} {moved:>6} {wire:>11,} {wire / moved:>8.0f} "
            f"{_rt(r):>13} {float(r['wall_s']):>8.3f} "
            f"{'-' if verify is None else format(float(verify), '.3f'):>8} "
            f"{_cpu(r):>8} {float(r['peak_rss_mb']):>6.1f} MB")
    return lines


def other_lines(ingest: Row | None, store: Row | None, summary: Row | None) -> list[str]:
    lines = []
    if ingest is not None:
        lines.append(f"ingest   {ingest['records']:,} records (read bundle + verify + store, "
                     f"fresh SQLite): {float(ingest['ingest_per_s']):,.0f}/s, CPU "
                     f"{float(ingest['cpu_s']):.2f} s for {float(ingest['ingest_s']):.2f} s wall; "
                     f"raw verification {float(ingest['baseline_per_s']):,.0f}/s on 1 core")
    if store is not None:
        lines.append(f"store    {store['records']:,} records ({float(store['store_mb']):.0f} MB "
                     f"on disk), fresh processes, median of {store['repeat']}: "
                     f"status {float(store['status_s']):.3f} s / "
                     f"{float(store['status_rss_mb']):.1f} MB, balance (all) "
                     f"{float(store['balance_all_s']):.3f} s / "
                     f"{float(store['balance_all_rss_mb']):.1f} MB; bare interpreter + imports "
                     f"{float(store['baseline_s']):.3f} s / "
                     f"{float(store['baseline_rss_mb']):.1f} MB")
    if summary is not None:
        lines.append(f"summary  {summary['authors']:,} authors, one changed: SUMMARY frames "
                     f"{summary['summary_bytes_b']:,} B from B, {summary['summary_bytes_a']:,} B "
                     f"from A; the whole sync moving that one record: "
                     f"{summary['sync_wire_bytes']:,} B both ways in "
                     f"{float(summary['sync_wall_s']):.3f} s")
    return lines


def target_lines(ts: Sequence[Target]) -> list[str]:
    width = max(len(t.name) for t in ts)
    lines = [f"{'target':<{width}} {'measured':>12} {'goal':>14}  verdict"]
    for t in ts:
        measured, goal, verdict = t.cells()
        lines.append(f"{t.name:<{width}} {measured:>12} {goal:>14}  {verdict}")
    return lines


# ---------------------------------------------------------------- RESULTS.md


def _kept_note(path: Path) -> str:
    if path.exists():
        text = path.read_text()
        if NOTE_START in text and NOTE_END in text:
            return text.split(NOTE_START, 1)[1].split(NOTE_END, 1)[0].strip()
    return DEFAULT_NOTE


def write_results(path: Path, result: Mapping[str, object], ts: Sequence[Target],
                  text: Sequence[str], command: str, method: Sequence[str]) -> None:
    """Rewrite RESULTS.md with this run's figures, keeping its closing note."""
    machine = result["machine"]
    assert isinstance(machine, Mapping)
    note = _kept_note(path)
    lines = [
        "# Benchmarks: p2p-ledger beside Automerge and Yjs",
        "",
        f"Generated by `{command}` on {machine['date']}. Do not edit by hand, except the",
        "closing note at the end, which the tool keeps.",
        "",
        "## Machine and versions",
        "",
        *[f"- {k}: {v}" for k, v in machine.items()],
        "",
        "## Sync, side by side",
        "",
        "```",
        *text,
        "```",
        "",
        "## Targets (issues 6 and 15)",
        "",
        "| target | measured | goal | verdict |",
        "| --- | --- | --- | --- |",
        *[f"| {t.name} | {' | '.join(t.cells())} |" for t in ts],
        "",
        "## How it is measured",
        "",
        *method,
        "",
        "## Closing note",
        "",
        NOTE_START,
        note,
        NOTE_END,
        "",
        "## All figures (JSON)",
        "",
        "```json",
        json.dumps(result, indent=1, sort_keys=True),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))


def targets_json(ts: Sequence[Target]) -> list[dict[str, object]]:
    return [{**asdict(t), "met": t.met} for t in ts]
