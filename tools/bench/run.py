"""Every benchmark of issue 6 in one command: p2p-ledger beside Yjs and Automerge.

    python tools/bench/run.py [--quick] [--profile] [--no-automerge]

The same payment workload (`bench_ingest.Workload`: same accounts, amounts and
idempotency keys) is synced three ways, for a full sync of N records (default
10,000) to an empty peer and a delta of D (default 1,000) on top of N:

- ledger: two nodes over loopback TCP (`side_ledger.py`, reusing `bench_sync.py`):
  handshake, encryption, signature verification, durable SQLite storage;
- Yjs, through pycrdt, in one process (`side_yjs.py`): state vector, update diff;
- Automerge through Node.js, in one process (`side_automerge.mjs`, its sync
  protocol), when `node` and `npm` are here (installed from the lock file with
  `npm ci` on first use); skipped with a printed note otherwise.

Each sync runs in a fresh process whose peak RSS is read from `wait4`
(`bench_store.run_child`); building the replicas happens in other processes. Then,
for the ledger alone: the ingest rate against raw signature verification of the same
records (`bench_ingest.py`), the open time and RSS of a 1,000,000-record store
(`bench_store.py`, whose cached home under tools/.cache/ is reused), and the SUMMARY
bytes towards a known peer with 10,000 authors of whom one changed.

Printed: one table, the targets with met / NOT met, and one JSON line (last). A full
run also rewrites tools/bench/RESULTS.md (keeping its closing note); `--quick`
(small sizes, a minute or two) writes nothing unless `--results` says where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TOOLS = BENCH.parent
for _p in (TOOLS, BENCH):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import payments  # noqa: E402
import report  # noqa: E402
from bench_ingest import DEFAULT_CACHE, cached_bundle, devices_for  # noqa: E402
from bench_store import run_child  # noqa: E402

from p2p_ledger.build import build_kind  # noqa: E402
from p2p_ledger.storage.bundle import read_bundle  # noqa: E402

FULL = {"records": 10_000, "delta": 1_000, "ingest": 100_000, "store": 1_000_000,
        "authors": 10_000, "store_repeat": 3, "store_warmup": 1}
QUICK = {"records": 2_000, "delta": 200, "ingest": 5_000, "store": 20_000,
         "authors": 500, "store_repeat": 1, "store_warmup": 1}

METHOD = [
    "- Workload: `tools/bench_ingest.py`'s deterministic `Workload` (about 89% transfers, "
    "5% top-ups, 3% cash-outs, 3% account metadata, ~120 paying devices). Yjs and "
    "Automerge get the same records decoded into plain entries (`payments.py`): payer, "
    "payee (32-byte keys as binary), amount (integer minor units), idempotency key, memo; "
    "one entry per record, each added in its own transaction / change.",
    "- ledger: node B syncs with node A over loopback TCP (`Node.sync_once`), each node in "
    "a process of its own (A serves its store from a child process, "
    "`bench_sync.PeerProcess`; until this run both ran in one process, so A's delta and "
    "packing shared B's thread): handshake "
    "(key proof, admission, X25519 + XChaCha20-Poly1305), summaries, records, Ed25519 "
    "verification and durable SQLite storage (WAL, synchronous FULL) on B. Wall time is "
    "from connect to both sides live. Round trips are counted on the same stores by the "
    "sans-IO sessions in memory (flights / 2 after the handshake; the handshake's own "
    "round trips shown as +hs).",
    "- Yjs (pycrdt): one process holds both documents in memory; B sends its state "
    "vector, A answers with the update diff, B applies it (pycrdt stores the integer "
    "amounts as Yjs numbers, 64-bit floats). Automerge (JS, WebAssembly): "
    "one Node.js process holds both documents in memory; the public sync API, B first, "
    "turn by turn until neither side sends. Neither signs, verifies, encrypts or writes "
    "to disk; both documents are written by one client / actor, their most compact case.",
    "- verify s: PyNaCl `crypto_sign_open` over exactly the records that moved, one core, "
    "in the ledger's sync process right after the sync.",
    "- peak RSS: `ru_maxrss` of the process that syncs, from `wait4` (for the ledger: node B's "
    "process, whose figure also covers the children it waited for: node A's process and "
    "B's signature checker; a fresh process per row; the replicas are built by other "
    "processes).",
    "- ingest: `tools/bench_ingest.py` (read bundle, `Replica.receive_many` into a fresh "
    "SqliteStore, commit) against raw verification of the same records, same process.",
    "- store: `tools/bench_store.py`: `p2p-ledger status` / `balance` as fresh processes "
    "on a home holding the records (built once, cached under tools/.cache/).",
    "- summary: a network whose every device has signed one record; both nodes hold it "
    "all and have synced once; A gets one more record; bytes that "
    "`Session.send_summary` queues on each side after the handshake, in the form the "
    "node picks for a peer it synced with (a SKETCH, `Node.sketch_cells`), and the wire bytes "
    "of the whole TCP sync that moves the record.",
    "- The machine is shared and has 2 cores: compare figures of one run; repeat a run "
    "before believing a change under ~20%.",
]


# ---------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(TOOLS.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine_info(automerge: dict[str, str] | None) -> dict[str, object]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(), "nproc": os.cpu_count() or 0,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "p2p-ledger": f"{_version('p2p-ledger')} ({build_kind()})",
        "commit": _git_commit(), "PyNaCl": _version("PyNaCl"),
        "SQLite": sqlite3.sqlite_version, "pycrdt (Yjs)": _version("pycrdt"),
        "node": automerge["node"] if automerge else "absent or skipped",
        "@automerge/automerge": automerge["automerge"] if automerge else "absent or skipped",
    }


# ---------------------------------------------------------------- children


def child_json(argv: Sequence[str]) -> tuple[dict[str, object], float]:
    """Run one measuring process: (its last JSON line, its peak RSS in MB)."""
    run = run_child(list(argv))
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result, run.rss_mb


def run_tool(argv: Sequence[str]) -> dict[str, object]:
    """Run one of tools/bench_*.py, echoing its report indented; its last JSON line."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if not line.startswith("{"):
                print(f"    {line.rstrip()}", flush=True)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def automerge_ready(skip: bool) -> tuple[dict[str, str] | None, str]:
    """(versions, "") when the Automerge harness can run, else (None, why not)."""
    if skip:
        return None, "skipped by --no-automerge"
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "node or npm is not installed"
    if not (BENCH / "node_modules" / "@automerge" / "automerge").is_dir():
        print("automerge: installing from tools/bench/package-lock.json (npm ci) ...",
              flush=True)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BENCH,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None, f"npm ci failed: {done.stderr.strip()[-300:]}"
    done = subprocess.run([node, str(BENCH / "side_automerge.mjs"), "version"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"the harness does not start: {done.stderr.strip()[-300:]}"
    versions: dict[str, str] = json.loads(done.stdout)
    return versions, ""


# ---------------------------------------------------------------- the systems


def ledger_rows(bundle: Path, sizes: dict[str, int], devices: int, work: Path,
                profile: bool) -> list[dict[str, object]]:
    py, side = sys.executable, str(BENCH / "side_ledger.py")
    rows = []
    for case in ("full", "delta"):
        common = ["--bundle", str(bundle), "--records", str(sizes["records"]),
                  "--delta", str(sizes["delta"]), "--devices", str(devices), "--case", case,
                  "--dir", str(work / f"ledger-{case}")]
        print(f"ledger {case}: building the two stores ...", flush=True)
        flights, _ = child_json([py, side, "prepare", *common])
        prof = work / f"ledger-{case}.prof"
        sync, rss = child_json([py, side, "sync", *common,
                                *(["--profile", str(prof)] if profile else [])])
        rows.append({
            "system": "ledger", "case": case, "records_moved": sync["records_moved"],
            "wire_bytes": int(sync["bytes_up"]) + int(sync["bytes_down"]),
            "bytes_up": sync["bytes_up"], "bytes_down": sync["bytes_down"],
            "record_bytes": sync["record_bytes"],
            "round_trips": int(flights["flights_after_handshake"]) / 2,
            "handshake_round_trips": int(flights["handshake_flights"]) / 2,
            "wall_s": sync["wall_s"], "verify_s": sync["verify_s"], "peak_rss_mb": rss,
            "cpu_b_s": sync["cpu_b_s"], "cpu_a_s": sync["cpu_a_s"]})
        print(f"  {_brief(rows[-1])}", flush=True)
        if profile:
            print(f"  cProfile of the ledger's {case} sync (node B's process), "
                  "top 25 by own time:")
            stats = pstats.Stats(str(prof), stream=sys.stdout).strip_dirs()
            stats.sort_stats("tottime").print_stats(25)
    return rows


def yjs_rows(payments_json: Path, sizes: dict[str, int], work: Path) -> list[dict[str, object]]:
    return _crdt_rows("yjs", [sys.executable, str(BENCH / "side_yjs.py")], payments_json,
                      sizes, work)


def automerge_rows(payments_json: Path, sizes: dict[str, int], work: Path
                   ) -> list[dict[str, object]]:
    return _crdt_rows("automerge", [shutil.which("node") or "node",
                                    str(BENCH / "side_automerge.mjs")], payments_json, sizes,
                      work)


def _crdt_rows(system: str, side: list[str], payments_json: Path, sizes: dict[str, int],
               work: Path) -> list[dict[str, object]]:
    """Build the two documents with `side` (a command), then time its full and delta
    syncs, each in a fresh process."""
    d = work / system
    d.mkdir()
    print(f"{system}: building the documents ...", flush=True)
    child_json([*side, "build", "--payments", str(payments_json), "--records",
                str(sizes["records"]), "--delta", str(sizes["delta"]), "--dir", str(d)])
    rows = []
    for case in ("full", "delta"):
        sync, rss = child_json([*side, "sync", "--case", case, "--dir", str(d)])
        rows.append(_crdt_row(system, case, sync, rss))
        print(f"  {_brief(rows[-1])}", flush=True)
    return rows


def _crdt_row(system: str, case: str, sync: dict[str, object], rss: float
              ) -> dict[str, object]:
    return {"system": system, "case": case, "records_moved": sync["records_moved"],
            "wire_bytes": int(sync["bytes_up"]) + int(sync["bytes_down"]),
            "bytes_up": sync["bytes_up"], "bytes_down": sync["bytes_down"],
            "round_trips": int(sync["flights"]) / 2,
            "messages": sync.get("messages", sync["flights"]),
            "wall_s": sync["wall_s"], "verify_s": None, "peak_rss_mb": rss}


def _brief(row: dict[str, object]) -> str:
    return (f"{row['system']} {row['case']}: {row['records_moved']} records, "
            f"{row['wire_bytes']:,} B, {float(row['wall_s']):.3f} s, "
            f"peak RSS {float(row['peak_rss_mb']):.1f} MB"
            + (f", CPU B {float(row['cpu_b_s']):.3f} s, A {float(row['cpu_a_s']):.3f} s"  # type: ignore[arg-type]
               if "cpu_b_s" in row else ""))


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes; writes no RESULTS.md")
    for name in ("records", "delta", "ingest", "store", "authors", "store-repeat",
                 "store-warmup"):
        p.add_argument(f"--{name}", type=int, help=f"override the {name} size")
    p.add_argument("--no-automerge", action="store_true", help="skip the Node.js harness")
    p.add_argument("--profile", action="store_true",
                   help="print a cProfile of the ledger's syncs")
    p.add_argument("--results", type=Path, help="write RESULTS.md here (a full run: "
                   "tools/bench/RESULTS.md)")
    p.add_argument("--no-write", action="store_true", help="write no RESULTS.md")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        given = getattr(args, key)
        if given is not None:
            sizes[key] = given
    if sizes["records"] < 10 or sizes["delta"] < 1 or sizes["ingest"] < 10 \
            or sizes["store"] < 10 or sizes["authors"] < 2:
        p.error("sizes too small: records, ingest, store >= 10; delta >= 1; authors >= 2")
    args.sizes = sizes
    if args.results is None and not args.quick and not args.no_write:
        args.results = BENCH / "RESULTS.md"
    if args.no_write:
        args.results = None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes: dict[str, int] = args.sizes
    command = " ".join(["python tools/bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    versions, why_no_automerge = automerge_ready(args.no_automerge)
    if versions is None:
        print(f"NOTE: Automerge is not measured: {why_no_automerge}.", flush=True)
    n, d = sizes["records"], sizes["delta"]
    devices = devices_for(n + d)
    bundle, network, _ = cached_bundle(n + d, devices, args.cache_dir)
    skipped = {} if versions else {"automerge": why_no_automerge}
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        payments_json = work / "payments.json"
        payments.write(payments_json, read_bundle(bundle, network.network_id))
        rows = ledger_rows(bundle, sizes, devices, work, args.profile)
        rows += yjs_rows(payments_json, sizes, work)
        if versions:
            rows += automerge_rows(payments_json, sizes, work)
        print(f"summary: {sizes['authors']:,} authors ...", flush=True)
        summary, _ = child_json([sys.executable, str(BENCH / "side_ledger.py"), "summary",
                                 "--authors", str(sizes["authors"]), "--dir",
                                 str(work / "summary")])
    print(f"ingest: {sizes['ingest']:,} records (tools/bench_ingest.py) ...", flush=True)
    ingest = run_tool([sys.executable, str(TOOLS / "bench_ingest.py"), "--records",
                       str(sizes["ingest"]), "--cache-dir", str(args.cache_dir)])
    print(f"store: {sizes['store']:,} records (tools/bench_store.py; reuses its cached "
          "home, building one takes ~15 min per million records) ...", flush=True)
    store = run_tool([sys.executable, str(TOOLS / "bench_store.py"), "--records",
                      str(sizes["store"]), "--repeat", str(sizes["store_repeat"]),
                      "--warmup", str(sizes["store_warmup"]), "--cache-dir",
                      str(args.cache_dir)])

    ts = report.targets(rows, ingest, store, summary, skipped)
    text = [*report.table_lines(rows), "", *report.other_lines(ingest, store, summary)]
    if versions is None:
        text += ["", f"Automerge not measured: {why_no_automerge}."]
    text += ["", *report.target_lines(ts)]
    machine = machine_info(versions)
    result = {"bench": "issue-6", "machine": machine, "sizes": sizes, "rows": rows,
              "ingest": ingest, "store": store, "summary": summary, "skipped": skipped,
              "targets": report.targets_json(ts)}
    print()
    print("\n".join(text))
    if args.results is not None:
        report.write_results(args.results, result, ts, text, command, METHOD)
        print(f"\nwrote {args.results}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
