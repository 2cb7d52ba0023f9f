"""The live figures of a running `serve`, for `status`.

`serve --metrics` writes where its metrics are into the home (`serve.json`: the
process id and the metrics URL) once it listens, and removes the file when it stops.
`status` reads that file, checks that the process is still there, scrapes the URL and
parses the answer with prometheus_client's own text parser: the same figures a
Prometheus server sees, read the same way. A file left by a node that was killed
names a process that is gone and is ignored (the node's next start replaces it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["FILE", "announce", "figures", "lines", "withdraw"]

FILE = "serve.json"
SCRAPE_TIMEOUT = 2.0


def announce(home: Path, metrics_url: str) -> None:
    """Say where this process's metrics are (atomically: a reader never sees half)."""
    path = home / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "metrics": metrics_url}) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def withdraw(home: Path) -> None:
    """Remove the file if this process wrote it."""
    path = home / FILE
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # there, but another user's
    return True


def figures(home: Path) -> dict[str, object] | None:
    """The running node's figures, or None if no `serve --metrics` runs on this home.
    A node that runs but does not answer gives its URL and the error."""
    found = _read(home / FILE)
    pid, url = found.get("pid"), found.get("metrics")
    if type(pid) is not int or not isinstance(url, str) or not _alive(pid):
        return None
    out: dict[str, object] = {"pid": pid, "metrics": url}
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as answer:
            text = answer.read().decode("utf-8")
    except (OSError, urllib.error.URLError, ValueError) as exc:
        out["error"] = f"cannot read {url}: {exc}"
        return out
    out.update(_parsed(text))
    return out


def _parsed(text: str) -> dict[str, object]:
    """The figures `status` shows, from the exposition text."""
    single: dict[str, float] = {}
    by: dict[str, dict[str, float]] = {}
    sessions: list[dict[str, object]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix("p2p_ledger_")
            if name == "sessions":
                sessions.append({"state": sample.labels["state"], "role": sample.labels["role"],
                                 "count": int(sample.value)})
            elif name.endswith("_created") or name == "node_info":
                continue
            elif len(sample.labels) == 1:
                by.setdefault(name, {})[next(iter(sample.labels.values()))] = sample.value
            elif not sample.labels:
                single[name] = sample.value
    count = {k: int(v) for k, v in single.items()}
    return {
        "records_held": count.get("records_held", 0),
        "records_stored": {k: int(v) for k, v in by.get("records_stored_total", {}).items()},
        "records_refused": {k: int(v) for k, v in by.get("records_refused_total", {}).items()},
        "frames_refused": {k: int(v) for k, v in by.get("frames_refused_total", {}).items()},
        "sessions": sessions,
        "bytes_in": count.get("received_bytes_total", 0),
        "bytes_out": count.get("sent_bytes_total", 0),
        "sessions_ended": count.get("sessions_ended_total", 0),
        "peer_lag_records": {k: int(v) for k, v in by.get("peer_lag_records", {}).items()},
        "pending_records": count.get("pending_records", 0),
        "pending_bytes": count.get("pending_bytes", 0),
        "verifier_queue": count.get("verifier_queue", 0),
    }


def lines(live: dict[str, object] | None) -> list[str]:
    """The text `status` prints for the figures."""
    if live is None:
        return ["serving      no (no `serve --metrics` runs on this home)"]
    head = f"serving      pid {live['pid']}, metrics {live['metrics']}"
    if "error" in live:
        return [head, f"  live figures unavailable: {live['error']}"]

    def pairs(key: str) -> str:
        table = live[key]
        assert isinstance(table, dict)
        return ", ".join(f"{n} {k}" for k, n in sorted(table.items())) or "none"

    sessions = live["sessions"]
    assert isinstance(sessions, list)
    return [head,
            f"  sessions   {sum(s['count'] for s in sessions)} now ("
            + (", ".join(f"{s['count']} {s['state']} {s['role']}" for s in sessions) or "none")
            + f"), {live['sessions_ended']} ended",
            f"  records    {live['records_held']} held; stored since start: "
            f"{pairs('records_stored')}; refused: {pairs('records_refused')}",
            f"  frames     refused: {pairs('frames_refused')}",
            f"  bytes      {live['bytes_in']} in, {live['bytes_out']} out",
            f"  pending    {live['pending_records']} records ({live['pending_bytes']} bytes); "
            f"verifier queue {live['verifier_queue']}"]

