"""convergence.png: how a run converged, for a person to read at a glance.

One quantity per panel, all on one simulated-time axis:

1. faults: every episode on a lane of its own kind (partitions, clogs, crashes,
   revocations, clones); episodes that overlap in time, or whose labels would, go on
   separate lanes, so none hides another. A crash is a bar from the power cut to the
   restart, labelled with the node; a revocation or a clone is a mark, labelled too.
2. lag: how many records the honest replicas lack, as percentiles over the replicas
   (median, 95th, worst). Under a steady workload nearly every replica lacks the last
   few records at any instant, so "the share of replicas holding every record" swings
   between 0 and 100% and says little; the percentiles show how far behind they are.
3. the honest replicas' average share of the records they must hold (%).
4. bytes sent per second on all links.

The legends sit outside the panels, to the right; "faults stop" and "converged" are
legend entries rather than text on the data, so no label lands on another.

matplotlib is an optional dependency (`pip install p2p-ledger[sim]`); it is imported
here only, with the non-interactive Agg backend, so nothing opens a window. The same
report gives the same PNG bytes (no timestamp in the file, no random layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["MissingPlotting", "lanes", "plot_convergence"]

_COLOURS = {"partition": "tab:red", "clog": "tab:orange", "burst": "tab:purple",
            "crash": "tab:gray", "revoke": "tab:brown", "clone": "tab:pink"}
_KIND_ORDER = ("partition", "clog", "burst", "crash", "revoke", "clone")
_CHARS_ACROSS = 120  # characters of the lane font that fit across the time axis


class MissingPlotting(RuntimeError):
    """matplotlib is not installed."""


def _label(f: dict[str, Any]) -> str:
    if f["kind"] in ("crash", "revoke"):
        return str(f.get("node", f["kind"]))
    if f["kind"] == "clone":
        return f"{f.get('node')} cloned"
    if f["kind"] == "partition":
        sides = f.get("sides")
        return f"split {sides[0]}|{sides[1]}" if isinstance(sides, list) else "split"
    if f["kind"] == "clog":
        return f"{f.get('links')} links"
    return str(f["kind"])


def lanes(faults: list[dict[str, Any]], span: float) -> list[tuple[str, int, dict[str, Any]]]:
    """(kind, lane within the kind, episode) for every episode: greedy first-fit per
    kind, an episode occupying its bar and its label's width (`span` is the time
    axis's length, to turn characters into seconds)."""
    per_char = span / _CHARS_ACROSS
    placed: list[tuple[str, int, dict[str, Any]]] = []
    ends: dict[str, list[float]] = {}
    for f in sorted(faults, key=lambda f: (_KIND_ORDER.index(f["kind"])
                                           if f["kind"] in _KIND_ORDER else 99,
                                           f["start_s"], f["end_s"])):
        kind = f["kind"]
        reach = max(f["end_s"], f["start_s"] + (len(_label(f)) + 2) * per_char)
        taken = ends.setdefault(kind, [])
        lane = next((i for i, end in enumerate(taken) if end <= f["start_s"]), len(taken))
        if lane == len(taken):
            taken.append(reach)
        else:
            taken[lane] = reach
        placed.append((kind, lane, f))
    return placed


def plot_convergence(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingPlotting("the plot needs matplotlib: pip install 'p2p-ledger[sim]'"
                              ) from None
    s = report["series"]
    t, p, tl = s["t"], report["parameters"], report["timeline"]
    end = max(t[-1] if t else 0.0, tl["end_s"], p["duration"])
    placed = lanes(report["faults"], end)
    kinds = [k for k in _KIND_ORDER if any(k == kind for kind, _, _ in placed)]
    kinds += sorted({k for k, _, _ in placed} - set(kinds))
    rows: dict[tuple[str, int], int] = {}
    for kind in kinds:
        for lane in range(1 + max(la for k, la, _ in placed if k == kind)):
            rows[(kind, lane)] = len(rows)
    lane_height = max(1.2, 0.28 * len(rows))
    fig, axes = plt.subplots(4, 1, figsize=(11, 3.2 + 5.4 + lane_height), sharex=True,
                             gridspec_kw={"height_ratios": [lane_height, 2.2, 1.6, 1.6]})
    ax_faults, ax_lag, ax_held, ax_bytes = axes
    fig.suptitle(f"{p['scenario']}: {p['nodes']} nodes, seed {p['seed']}, "
                 f"{p['rate']:g} payments/s for {p['duration']:g} s")
    _draw_faults(ax_faults, placed, rows, end)
    markers = []
    for ax in axes:  # the same two lines on every panel; named once, beside the faults
        markers = [ax.axvline(tl["faults_stop_s"], color="black", linewidth=1.1,
                              label=f"faults stop ({tl['faults_stop_s']:g} s)")]
        if tl["converged_at_s"] is not None:
            markers.append(ax.axvline(tl["converged_at_s"], color="tab:green",
                                      linewidth=1.1, linestyle="-.", label=f"converged "
                                      f"(+{tl['time_to_convergence_s']:g} s)"))
    if "missing_max" in s:
        # Widest first: with few replicas the 95th percentile is the worst one, and
        # the thin line then shows on the wide one.
        for key, name, style, colour, width in (
                ("missing_max", "worst replica", "-", "#9ecae1", 3.5),
                ("missing_p95", "95th percentile", "--", "#2171b5", 1.4),
                ("missing_p50", "median replica", "-", "#08306b", 1.4)):
            ax_lag.step(t, s[key], where="post", linestyle=style, linewidth=width,
                        color=colour, label=name)
    ax_lag.set_ylabel("records behind\n(honest replicas)")
    ax_lag.set_ylim(bottom=0)
    ax_held.plot(t, [100 * v for v in s["held"]], color="tab:olive", linewidth=1.4,
                 label="average share held\n(honest replicas)")
    ax_held.set_ylabel("records held (%)")
    ax_held.set_ylim(top=100.5)
    rates = [0.0] + [(b1 - b0) / (t1 - t0) / 1000 if t1 > t0 else 0.0
                     for t0, t1, b0, b1 in zip(t, t[1:], s["bytes"], s["bytes"][1:],
                                               strict=False)]
    ax_bytes.plot(t, rates, color="tab:purple", linewidth=1, label="all links")
    ax_bytes.fill_between(t, rates, color="tab:purple", alpha=0.2)
    ax_bytes.set_ylabel("kB/s sent")
    ax_bytes.set_xlabel("simulated time (s)")
    ax_bytes.set_xlim(0, end)
    for ax in (ax_lag, ax_held, ax_bytes):
        ax.grid(alpha=0.3)
        lines = [h for h in ax.get_lines() if h not in ax.lines[:len(markers)]]
        ax.legend(handles=lines, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)
    ax_faults.legend(handles=markers, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _draw_faults(ax: Any, placed: list[tuple[str, int, dict[str, Any]]],
                 rows: dict[tuple[str, int], int], end: float) -> None:
    count = len(rows)
    for kind, lane, f in placed:
        y = count - 1 - rows[(kind, lane)]
        colour = _COLOURS.get(kind, "tab:olive")
        width = f["end_s"] - f["start_s"]
        if width > 0:
            ax.broken_barh([(f["start_s"], width)], (y - 0.35, 0.7), color=colour, alpha=0.45)
        else:
            ax.plot([f["start_s"]], [y], marker="v", color=colour, markersize=6)
        ax.text(f["start_s"] + 0.004 * end, y, _label(f), va="center", ha="left",
                fontsize=7, clip_on=True)
    ticks, names, seen = [], [], set()
    for (kind, _lane), row in rows.items():
        if kind not in seen:
            seen.add(kind)
            ticks.append(count - 1 - row)
            names.append(kind)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_ylim(-0.6, max(count, 1) - 0.4)
    ax.set_ylabel("faults")
    ax.grid(axis="x", alpha=0.3)
    if not placed:
        ax.text(0.5, 0.5, "no faults", transform=ax.transAxes, ha="center", va="center",
                fontsize=8, color="tab:gray")
