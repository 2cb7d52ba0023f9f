"""convergence.png: how a run converged, for a person to read at a glance.

Top: the share of replicas that hold every record created so far (solid) and the
average share of records each holds (dashed), over simulated time. Bottom: bytes sent
per second on all links. Fault episodes are shaded (partitions, clogs) or marked
(crashes), with a line where the faults stop and where the replicas converged.

matplotlib is an optional dependency (`pip install p2p-ledger[sim]`); it is imported
here only, with the non-interactive Agg backend, so nothing opens a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["MissingPlotting", "plot_convergence"]


class MissingPlotting(RuntimeError):
    """matplotlib is not installed."""


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
    rates = [0.0] + [(b1 - b0) / (t1 - t0) / 1000 if t1 > t0 else 0.0
                     for t0, t1, b0, b1 in zip(t, t[1:], s["bytes"], s["bytes"][1:],
                                                         strict=False)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    fig.suptitle(f"{p['scenario']}: {p['nodes']} nodes, seed {p['seed']}, "
                 f"{p['rate']:g} payments/s for {p['duration']:g} s")
    shown: set[str] = set()
    colours = {"partition": "tab:red", "clog": "tab:orange", "burst": "tab:purple"}
    for f in report["faults"]:
        for ax in (top, bottom):
            if f["kind"] in colours and f["end_s"] > f["start_s"]:
                label = f"{f['kind']}" if f["kind"] not in shown and ax is top else None
                ax.axvspan(f["start_s"], f["end_s"], color=colours[f["kind"]], alpha=0.12,
                           label=label)
            elif f["kind"] in ("crash", "clone", "revoke"):
                label = f["kind"] if f["kind"] not in shown and ax is top else None
                ax.axvline(f["start_s"], color="tab:gray", linestyle=":", linewidth=1,
                           label=label)
        shown.add(f["kind"])
    top.plot(t, [100 * v for v in s["converged"]], color="tab:blue", linewidth=2,
             label="replicas holding every record")
    top.plot(t, [100 * v for v in s["held"]], color="tab:green", linestyle="--",
             label="records held (average share)")
    for ax in (top, bottom):
        ax.axvline(tl["faults_stop_s"], color="black", linewidth=1.2)
        if tl["converged_at_s"] is not None:
            ax.axvline(tl["converged_at_s"], color="tab:blue", linewidth=1.2)
    top.annotate("faults stop", (tl["faults_stop_s"], 102), ha="right", fontsize=9)
    if tl["converged_at_s"] is not None:
        top.annotate(f"converged (+{tl['time_to_convergence_s']:g} s)",
                     (tl["converged_at_s"], 102), ha="left", fontsize=9, color="tab:blue")
    top.set_ylim(0, 108)
    top.set_ylabel("% of replicas / records")
    top.legend(loc="lower left", fontsize=8, framealpha=0.9)
    top.grid(alpha=0.3)
    bottom.plot(t, rates, color="tab:purple", linewidth=1)
    bottom.fill_between(t, rates, color="tab:purple", alpha=0.2)
    bottom.set_ylabel("kB/s sent (all links)")
    bottom.set_xlabel("simulated time (s)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
