"""Cloud-tier benchmark (issue 13): ingest through PostgreSQL front-ends against the
SQLite node, and the delta query on a 1,000,000-record PostgreSQL store.

    python tools/bench_cloud.py [--records 20000] [--store 1000000] [--lacking 1000]
                                [--frame 1000] [--quick] [--profile]

The workload (`SitesWorkload`, on `bench_ingest.Workload`): ~120 devices at two sites,
paying each other within their site; the authority's top-ups and the cash-outs are at
site 0. So site 1's records depend only on the setup (admits and cash-ins, stored
before the clock starts) and on each other, and two front-ends can each take one
site's records - as two site hubs relaying to two front-ends would deliver them. The
same N records (setup excluded), in generation order, go to every run:

- baseline: raw Ed25519 verification of those records on one core
  (`bench_ingest.baseline_verify`);
- SQLite node: one process, a fresh `SqliteStore`, the records received in frames of
  `--frame` records, one transaction per frame, signatures checked in the verifier
  child process - what a node does with a peer's frames;
- 1 front-end: the same, on a `PostgresStore` of a throwaway server (tools/pg_local.py,
  127.0.0.1 TCP, default durability settings: fsync and synchronous_commit on);
- 2 front-ends: two such processes on one new database, each taking one site's
  records, started together; the rate is N over the time until both are done.

Every record must come out `applied`, and every store must end with the same state
hash and totals; otherwise the run fails. Rates are printed with their ratio to the
baseline and to each other, against the targets: 1 front-end >= 0.5x the SQLite node,
2 front-ends >= 1.6x one. Each run is in its own process (`--worker`).

The delta query (`cloud_store.py`): a PostgreSQL store of `--store` records is built by
bulk COPY (see there how, and what is checked), then `Replica.delta` for a peer whose
summary lacks the last `--lacking` records is timed (target <= 100 ms).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import pg_local  # noqa: E402
import psycopg  # noqa: E402
from bench_ingest import DEFAULT_CACHE, DEFAULT_DEVICES, Workload, baseline_verify  # noqa: E402

from p2p_ledger.core.collector import gc_paused  # noqa: E402
from p2p_ledger.core.ids import Account  # noqa: E402
from p2p_ledger.core.ledger import Replica  # noqa: E402
from p2p_ledger.core.network import NetworkDescriptor  # noqa: E402
from p2p_ledger.core.records import Body, Issue, Meta, Redeem, Transfer  # noqa: E402
from p2p_ledger.core.store import NodeStore, Verdict  # noqa: E402
from p2p_ledger.node.verifier import shared_verifier  # noqa: E402
from p2p_ledger.storage.bundle import read_bundle, write_bundle  # noqa: E402
from p2p_ledger.storage.postgres import PostgresStore  # noqa: E402
from p2p_ledger.storage.sqlite import SqliteStore  # noqa: E402

TARGET_ONE = 0.5  # one front-end / SQLite node
TARGET_TWO = 1.6  # two front-ends / one
TARGET_DELTA_MS = 100.0
SITES = 2


# ---------------------------------------------------------------- workload


class SitesWorkload(Workload):
    """`Workload` with its devices at two sites (even and odd index): payments stay in
    a site; top-ups and cash-outs only at site 0; `site` tells each record's site."""

    def __init__(self, *, seed: str = "cloud", devices: int = DEFAULT_DEVICES) -> None:
        super().__init__(seed=seed, devices=devices)
        self.site_of = {d.device: i % SITES for i, d in enumerate(self.devices)}
        self.site_of[self.authority.device] = 0
        self.site = 0

    def _pick(self, site: int) -> Any:
        return self.rng.choice(self.devices[site::SITES])

    def _step(self) -> bytes:
        site = self.rng.randrange(SITES)
        self.site = site
        roll = self.rng.random()
        if site == 0 and roll < 0.05:
            d = self._pick(0)
            return self._sign(self.authority, Issue(to=Account(device=d.device),
                                                    amount=self.rng.randint(500_00, 5_000_00),
                                                    key=self._key_text(self.authority)))
        if roll < 0.08:
            d = self._pick(site)
            return self._sign(d, Meta(account="main", field="display_name",
                                      value=f"truck {self.rng.randint(1, 9999)}"))
        payer = max((self._pick(site) for _ in range(8)), key=lambda c: c.claimable())
        have = payer.claimable()
        if have < 1_00:
            raise RuntimeError("a site ran out of money: use more devices or fewer records")
        body: Body
        if site == 0 and roll < 0.11:
            body = Redeem(from_="main", amount=self.rng.randint(1_00, max(1_00, have // 4)),
                          key=self._key_text(payer))
        else:
            payee = self._pick(site)
            while payee is payer:
                payee = self._pick(site)
            body = Transfer(from_="main", to=Account(device=payee.device),
                            amount=min(have, self.rng.randint(1_00, 300_00)),
                            key=self._key_text(payer))
        return self._sign(payer, body)


def bundles(n: int, cache: Path) -> tuple[NetworkDescriptor, dict[str, Path]]:
    """The setup, the N records, and each site's share of them, as bundle files
    (cached)."""
    work = SitesWorkload()
    names = ("setup", "all", *(f"site{s}" for s in range(SITES)))
    paths = {name: cache / f"cloud-{name}-n{n}.bundle" for name in names}
    if all(p.exists() for p in paths.values()):
        return work.network, paths
    cache.mkdir(parents=True, exist_ok=True)
    setup = list(work._setup())
    stream: list[bytes] = []
    sites: list[list[bytes]] = [[] for _ in range(SITES)]
    for _ in range(n):
        stream.append(work._step())
        sites[work.site].append(stream[-1])
    write_bundle(paths["setup"], work.network_id, setup)
    write_bundle(paths["all"], work.network_id, stream)
    for s in range(SITES):
        write_bundle(paths[f"site{s}"], work.network_id, sites[s])
    return work.network, paths


# ---------------------------------------------------------------- one ingest process


def open_store(where: str, network: NetworkDescriptor) -> NodeStore:
    if where.startswith("postgresql://"):
        return PostgresStore(where, network.network_id)
    return SqliteStore(Path(where), network.network_id)


def receive_frames(replica: Replica, raws: Sequence[bytes], frame: int) -> int:
    """Receive `raws` in frames, one transaction each, as a node does; how many were
    applied (anything else fails the run)."""
    store = replica.store
    assert isinstance(store, (PostgresStore, SqliteStore))
    now = time.time_ns() // 1_000_000
    applied = 0
    for i in range(0, len(raws), frame):
        with gc_paused(), store.transaction(bulk=True):
            report = replica.receive_many(raws[i:i + frame], now_ms=now)
        bad = [a for a in report.applied if a.verdict is not Verdict.APPLIED]
        if bad or report.refused or report.waiting:
            raise RuntimeError(f"frame {i // frame}: {len(bad)} not applied "
                               f"({bad[0].reason if bad else ''}), {len(report.refused)} "
                               f"refused, {report.waiting} waiting")
        applied += len(report.applied)
    return applied


def worker(job: dict[str, Any]) -> dict[str, Any]:
    network = NetworkDescriptor.from_json(job["network"])
    raws = read_bundle(Path(job["bundle"]), network.network_id)
    store = open_store(job["store"], network)
    verifier = shared_verifier()
    verifier.warm_up()
    replica = Replica(network, store, verifier=verifier.start)
    profile = cProfile.Profile() if job.get("profile") else None
    try:
        delay = job["start_at"] - time.time()
        if delay > 0:
            time.sleep(delay)
        started = time.time()
        c0 = time.process_time()
        if profile is not None:
            profile.enable()
        applied = receive_frames(replica, raws, job["frame"])
        if profile is not None:
            profile.disable()
        ended = time.time()
        cpu = time.process_time() - c0
    finally:
        store.close()
    out: dict[str, Any] = {"started": started, "ended": ended, "applied": applied,
                           "records": len(raws), "cpu_s": cpu}
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).strip_dirs().sort_stats("tottime").print_stats(14)
        out["profile"] = text.getvalue()
    return out


def run_workers(jobs: list[dict[str, Any]], lead: float = 3.0) -> list[dict[str, Any]]:
    """Run each job in its own process, all starting their clocks at the same moment."""
    start_at = time.time() + lead
    procs = []
    for job in jobs:
        job = {**job, "start_at": start_at}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(job)],
                                      stdout=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"a worker failed ({p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------- the runs


def preload(where: str, network: NetworkDescriptor, setup: Path) -> None:
    store = open_store(where, network)
    try:
        replica = Replica(network, store)
        receive_frames(replica, read_bundle(setup, network.network_id), 10_000)
    finally:
        store.close()


def fingerprint(where: str, network: NetworkDescriptor) -> tuple[str, int, int, int]:
    store = open_store(where, network)
    try:
        t = store.totals()
        return Replica(network, store).state_hash().hex(), t.records, t.issued, t.redeemed
    finally:
        store.close()


def new_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}".encode())
        db.execute(f"CREATE DATABASE {name}".encode())
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def ingest_runs(args: argparse.Namespace, server_url: str, work: Path
                ) -> tuple[dict[str, float], list[str]]:
    network, paths = bundles(args.records, args.cache)
    raws = read_bundle(paths["all"], network.network_id)
    base = {"network": network.to_json(), "frame": args.frame, "profile": args.profile}
    notes: list[str] = []
    verify_s = baseline_verify(raws, network.network_id)
    rates = {"verify": len(raws) / verify_s}

    def timed(name: str, where: str, shares: list[Path]) -> None:
        preload(where, network, paths["setup"])
        results = run_workers([{**base, "store": where, "bundle": str(p)} for p in shares])
        assert sum(r["applied"] for r in results) == len(raws), results
        wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
        rates[name] = len(raws) / wall
        cpu = sum(r["cpu_s"] for r in results)
        print(f"  {name:<14} {rates[name]:>9,.0f} records/s  ({wall:.2f} s wall, "
              f"{cpu:.2f} s CPU in {len(results)} process(es))", flush=True)
        notes.extend(f"{name}:\n{r['profile']}" for r in results if "profile" in r)
        stores[name] = where

    stores: dict[str, str] = {}
    print(f"ingest of {len(raws):,} records (frames of {args.frame}):", flush=True)
    timed("sqlite node", str(work / "node.sqlite3"), [paths["all"]])
    timed("1 front-end", new_database(server_url, "bench_one"), [paths["all"]])
    timed("2 front-ends", new_database(server_url, "bench_two"),
          [paths[f"site{s}"] for s in range(SITES)])
    prints = {name: fingerprint(where, network) for name, where in stores.items()}
    if len(set(prints.values())) != 1:
        raise RuntimeError(f"the stores differ after the same records: {prints}")
    return rates, notes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--store", type=int, default=1_000_000, help="records in the delta store")
    p.add_argument("--lacking", type=int, default=1_000)
    p.add_argument("--frame", type=int, default=1_000)
    p.add_argument("--quick", action="store_true", help="2,000 records, a 50,000-record store")
    p.add_argument("--profile", action="store_true", help="profile each ingest process")
    p.add_argument("--no-delta", action="store_true", help="skip the delta store")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.records, args.store = 2_000, 50_000
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    print(f"cloud tier benchmark: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
          flush=True)
    server_url = pg_local.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp:
            rates, notes = ingest_runs(args, server_url, Path(tmp))
            delta: dict[str, float] = {}
            if not args.no_delta:
                import cloud_store

                delta = cloud_store.delta_run(new_database(server_url, "bench_delta"),
                                              args.store, args.lacking, args.cache)
    finally:
        pg_local.stop(server_url)
    report(rates, delta, args)
    for note in notes:
        print(note)
    return 0


def report(rates: dict[str, float], delta: dict[str, float], args: argparse.Namespace) -> None:
    verify = rates["verify"]
    one = rates["1 front-end"] / rates["sqlite node"]
    two = rates["2 front-ends"] / rates["1 front-end"]
    print()
    print("| run | records/s | / raw verification |")
    print("|---|---:|---:|")
    for name in ("verify", "sqlite node", "1 front-end", "2 front-ends"):
        label = "raw verification (1 core)" if name == "verify" else name
        print(f"| {label} | {rates[name]:,.0f} | {rates[name] / verify:.2f}x |")
    print()
    met = {True: "met", False: "NOT met"}
    print(f"1 front-end / SQLite node: {one:.2f}x (target >= {TARGET_ONE}x: "
          f"{met[one >= TARGET_ONE]})")
    print(f"2 front-ends / 1 front-end: {two:.2f}x (target >= {TARGET_TWO}x: "
          f"{met[two >= TARGET_TWO]})")
    if delta:
        print(f"delta for a peer lacking {args.lacking:,} of {delta['records']:,.0f} records: "
              f"median {delta['median_ms']:.1f} ms, first {delta['first_ms']:.1f} ms, "
              f"max {delta['max_ms']:.1f} ms (target <= {TARGET_DELTA_MS:.0f} ms: "
              f"{met[delta['median_ms'] <= TARGET_DELTA_MS]})")
    print(json.dumps({"bench": "cloud", "records": args.records, "frame": args.frame,
                      "rates": rates, "one_over_sqlite": one, "two_over_one": two,
                      "delta": delta, "cores": os.cpu_count()}))


if __name__ == "__main__":
    sys.exit(main())
