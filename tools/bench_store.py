"""Large-store benchmark: how long `p2p-ledger status` and `balance` take, and how much
memory they need, on a home whose store holds a million records.

The home is built once and cached under `tools/.cache/` (about 20 minutes for
1,000,000 records on a busy 2-core machine): the `Workload` of `bench_ingest.py` signs
real records, and a `Replica` over the home's `SqliteStore` ingests them with
`receive_many` in large transactions, just as an import would. The home's own key is a
fresh unencrypted one; it is not the authority, and `status` and `balance` never need
it. A cached home is reused while it opens with the current schema and holds N
records; `--rebuild` builds it again (do so after a change to the ledger rules or to
the store's derived tables).

It also times SQLite's two damage checks on that store, in this process: the
`quick_check` that every command which signs or stores runs at open (median of the
repeats), and the full `integrity_check` that `verify` runs first (once).

Each measurement is a fresh `p2p-ledger` process, timed from spawn to exit, with its
own peak RSS (from `wait4` in a small runner process: see `_RUNNER`). The baseline is
the same interpreter running `import p2p_ledger.cli.main`, so the figures show what
opening the store and answering costs above starting the program. Targets:
open+status <= 1 s, peak RSS <= 150 MB.

    python tools/bench_store.py [--records N] [--repeat R] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import (  # tools/ is not a package: imported by path
    DEFAULT_CACHE,
    DEFAULT_DEVICES,
    WORKLOAD_VERSION,
    Workload,
    check_report,
    devices_for,
)

from p2p_ledger.core.ledger import Replica
from p2p_ledger.errors import P2PLedgerError
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SCHEMA_VERSION, SqliteStore

TARGET_STATUS_S = 1.0
TARGET_RSS_MB = 150.0
_DONE = "complete.json"


# ---------------------------------------------------------------- building


def _chunks(it: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    while True:
        batch = [raw for _, raw in zip(range(size), it, strict=False)]
        if not batch:
            return
        yield batch


def build_home(path: Path, n: int, devices: int, batch: int) -> Workload:
    """Create a home at `path` holding the workload's first `n` records."""
    work = Workload(devices=devices)
    home = Home(path)
    home.create_key(None)
    home.set_network(work.network)
    store = SqliteStore(home.store_path, work.network_id)
    try:
        replica = Replica(work.network, store)
        now = time.time_ns() // 1_000_000
        done, t0 = 0, time.perf_counter()
        for raws in _chunks(work.records(n), batch):
            with store.transaction():
                report = replica.receive_many(raws, now_ms=now)
            problem = check_report(report, len(raws))
            if problem:
                raise RuntimeError(f"building the store: {problem}")
            done += len(raws)
            spent = time.perf_counter() - t0
            print(f"  built {done:,}/{n:,} records in {spent:.0f} s "
                  f"({done / spent:,.0f}/s, about {(n - done) * spent / done:.0f} s left)",
                  flush=True)
    finally:
        store.close()
    return work


def _usable(path: Path, n: int) -> bool:
    """Whether a finished build at `path` still opens with this code and holds `n` records."""
    if not (path / _DONE).exists():
        return False
    try:
        store = Home(path).open_store()
    except P2PLedgerError as exc:
        print(f"cached store is unusable ({exc}); rebuilding", flush=True)
        return False
    try:
        return store.totals().records == n
    except P2PLedgerError as exc:
        print(f"cached store is unusable ({exc}); rebuilding", flush=True)
        return False
    finally:
        store.close()


def cached_home(n: int, devices: int, cache: Path, batch: int, *, rebuild: bool = False
                ) -> tuple[Path, bool]:
    """The home with `n` records, built once. It is reused while it opens with the
    current schema and holds `n` records; after a change to the ledger rules that would
    store different derived state, pass `rebuild`."""
    path = cache / f"store-n{n}-d{devices}-v{WORKLOAD_VERSION}-s{SCHEMA_VERSION}"
    if not rebuild and _usable(path, n):
        return path, True
    if path.exists():
        shutil.rmtree(path)  # an interrupted or stale build
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building a store of {n:,} records in {path} ...", flush=True)
    t0 = time.perf_counter()
    build_home(path, n, devices, batch)
    (path / _DONE).write_text(json.dumps({"records": n, "devices": devices,
                                          "build_s": round(time.perf_counter() - t0, 1)}))
    return path, False


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    seconds: float
    rss_mb: float
    stdout: str


# Peak RSS is taken from wait4 in a small runner process, not in this one: Linux
# starts a child's ru_maxrss at its parent's RSS when it forks (or vforks) and execs,
# so a child of this process, which may have just built a large store, would report
# this process's size. The runner is a bare interpreter (-I -S, ~14 MB, below any
# figure measured here); it spawns the command, times it from spawn to exit, and
# writes "seconds maxrss_kib exit_code" to the file named by its first argument.
_RUNNER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(report, "w") as fh:
    fh.write(f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_child(argv: Sequence[str]) -> Run:
    """Run `argv` (absolute program path first) as a fresh process: its wall time from
    spawn to exit and its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        report = Path(tmp) / "report"
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _RUNNER, str(report), *argv],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              check=False)
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"the runner failed: {done.stderr.strip()}")
        seconds, maxrss_kib, code = report.read_text().split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}: {done.stderr.strip()}")
    return Run(seconds=float(seconds), rss_mb=int(maxrss_kib) / 1024, stdout=done.stdout)


def cli_command() -> list[str]:
    """The installed `p2p-ledger` script next to this interpreter (not a pyenv shim,
    whose own start-up would be timed too), else `python -m p2p_ledger`."""
    script = Path(sys.executable).parent / "p2p-ledger"
    return [str(script)] if script.exists() else [sys.executable, "-m", "p2p_ledger"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    name: str
    seconds: float  # median of the repeats
    rss_mb: float  # median of the repeats
    stdout: str


def measure(name: str, argv: Sequence[str], repeat: int, warmup: int) -> Figure:
    for _ in range(warmup):  # the OS page cache, .pyc files
        run_child(argv)
    runs = [run_child(argv) for _ in range(repeat)]
    return Figure(name=name, seconds=statistics.median(r.seconds for r in runs),
                  rss_mb=statistics.median(r.rss_mb for r in runs), stdout=runs[-1].stdout)


def check_answers(n: int, status: Figure, balances: Figure, one: Figure, account: str) -> None:
    """The commands must have answered about the whole store, or the timings mean nothing."""
    st = json.loads(status.stdout)
    if st["records"] != n:
        raise RuntimeError(f"status says {st['records']} records, expected {n}")
    every = {a: v["minor"] for a, v in json.loads(balances.stdout)["accounts"].items()}
    if sum(every.values()) != st["issued"]["minor"] - st["redeemed"]["minor"]:
        raise RuntimeError("balances do not add up to issued minus redeemed")
    got = json.loads(one.stdout)["accounts"][account]["minor"]
    if got != every[account]:
        raise RuntimeError(f"balance {account} is {got}, the full list says {every[account]}")


def time_checks(home: Path, repeat: int) -> tuple[float, float]:
    """Seconds for `quick_check` (median of `repeat`) and `integrity_check` (once)."""
    store = Home(home).open_store()
    try:
        quick = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            store.quick_check()
            quick.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if store.integrity_problems():
            raise RuntimeError(f"the benchmark store {home} is damaged")
        return statistics.median(quick), time.perf_counter() - t0
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=1_000_000, metavar="N")
    p.add_argument("--devices", type=int, default=DEFAULT_DEVICES)
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each command")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    p.add_argument("--batch", type=int, default=50_000, help="records per build transaction")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--rebuild", action="store_true", help="build the store even if cached")
    args = p.parse_args(argv)
    n = args.records
    if n < 10 or args.repeat < 1 or args.batch < 1 or args.warmup < 0:
        p.error("--records must be at least 10, --repeat and --batch at least 1, "
                "--warmup at least 0")
    devices = devices_for(n, args.devices)
    home, cached = cached_home(n, devices, args.cache_dir, args.batch,
                               rebuild=args.rebuild)
    size_mb = (home / "ledger.sqlite3").stat().st_size / 1e6
    print(f"store     {n:,} records, {devices} devices, {size_mb:.0f} MB "
          f"{'(cached) ' if cached else ''}in {home}")

    cli = [*cli_command(), "--home", str(home)]
    account = str(Workload(devices=devices).account(0))
    base = measure("baseline", [sys.executable, "-c", "import p2p_ledger.cli.main"],
                   args.repeat, args.warmup)
    status = measure("status", [*cli, "status", "--json"], args.repeat, args.warmup)
    one = measure("balance ACCOUNT", [*cli, "balance", account, "--json"], args.repeat,
                  args.warmup)
    every = measure("balance (all)", [*cli, "balance", "--json"], args.repeat, args.warmup)
    check_answers(n, status, every, one, account)
    quick_s, integrity_s = time_checks(home, args.repeat)

    print(f"median of {args.repeat} fresh processes each (after {args.warmup} warm-up):")
    print(f"  {'command':<18}{'time':>9}{'- baseline':>12}{'ratio':>8}"
          f"{'peak RSS':>11}{'- baseline':>12}")
    for f in (base, status, one, every):
        print(f"  {f.name:<18}{f.seconds:>8.3f}s{f.seconds - base.seconds:>+11.3f}s"
              f"{f.seconds / base.seconds:>7.2f}x{f.rss_mb:>8.1f} MB"
              f"{f.rss_mb - base.rss_mb:>+9.1f} MB")
    print(f"  damage checks: quick_check {quick_s:.3f} s (at open of every command that "
          f"signs or stores), integrity_check {integrity_s:.3f} s (verify)")
    worst_s = max(status.seconds, one.seconds, every.seconds)
    worst_rss = max(status.rss_mb, one.rss_mb, every.rss_mb)
    ok_s, ok_rss = status.seconds <= TARGET_STATUS_S, worst_rss <= TARGET_RSS_MB
    print(f"targets   open+status {status.seconds:.3f} s <= {TARGET_STATUS_S} s: "
          f"{'ok' if ok_s else 'MISSED'}; peak RSS {worst_rss:.1f} MB <= {TARGET_RSS_MB:.0f} MB: "
          f"{'ok' if ok_rss else 'MISSED'}")
    print(json.dumps({
        "bench": "store", "records": n, "devices": devices, "store_mb": round(size_mb, 1),
        "repeat": args.repeat,
        **{f"{key}_s": round(f.seconds, 4) for key, f in
           (("baseline", base), ("status", status), ("balance_one", one),
            ("balance_all", every))},
        **{f"{key}_rss_mb": round(f.rss_mb, 1) for key, f in
           (("baseline", base), ("status", status), ("balance_one", one),
            ("balance_all", every))},
        "quick_check_s": round(quick_s, 4), "integrity_check_s": round(integrity_s, 4),
        "worst_s": round(worst_s, 4), "target_status_s": TARGET_STATUS_S,
        "target_rss_mb": TARGET_RSS_MB, "meets_target": ok_s and ok_rss}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
