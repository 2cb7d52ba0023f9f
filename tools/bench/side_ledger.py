"""The ledger's side of the comparison: one measurement per process, JSON on stdout.

`run.py` runs each command below as a fresh process through `bench_store.run_child`,
which reads that process's own peak RSS from `wait4`. Commands:

- `prepare`: build node A's and node B's SQLite stores for a case (full: A holds N
  records, B none; delta: both hold N, A holds D more), the same way
  `tools/bench_sync.py` does, and count the sync's flights on copies of them with
  the sans-IO sessions in memory (`bench_sync.count_flights`, after the handshake;
  the handshake's own flights are counted here).
- `sync`: node A serves its store from a process of its own (`bench_sync.PeerProcess`),
  and B, in this process, syncs with it over loopback TCP (`bench_sync.tcp_sync_with`:
  encrypted session, verification and durable storage on B), then time PyNaCl
  verifying exactly the records that moved, on one core, in the same process.
  Building the stores is kept out of this process so that its peak RSS is the sync's.
- `summary`: the summary towards a peer that already holds everything but one record,
  with `--authors` authors, in the form the node chooses (`Node.sketch_cells`: a
  SKETCH for a peer it synced with): the bytes `Session.send_summary` queues on each
  side after the handshake, and the wire bytes of a whole TCP sync that moves the one
  record (after a first sync between the two, in case the nodes learn their peer).

It never changes the workload or the stores' rules: every store must come out
holding every record it was given, and the two nodes must converge, or it fails.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nacl.signing
import trio

TOOLS = Path(__file__).resolve().parent.parent
for _p in (TOOLS, TOOLS / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench_ingest import Workload, baseline_verify  # noqa: E402  (tools/ is not a package)
from bench_sync import (  # noqa: E402
    PeerProcess,
    build_store,
    close_replicas,
    count_flights,
    open_replica,
    sessions,
    tcp_sync,
    tcp_sync_with,
)

from p2p_ledger.core.ledger import Replica  # noqa: E402
from p2p_ledger.core.records import Meta  # noqa: E402
from p2p_ledger.node.node import Node  # noqa: E402
from p2p_ledger.protocol.session import HandshakeDone, Session  # noqa: E402
from p2p_ledger.storage.bundle import read_bundle  # noqa: E402


def _case_records(args: argparse.Namespace, work: Workload) -> tuple[list[bytes], list[bytes]]:
    """(records both hold, records only A holds) for the case."""
    raws = read_bundle(args.bundle, work.network_id)
    n, d = args.records, args.delta
    if len(raws) < n + d:
        raise SystemExit(f"the bundle holds {len(raws)} records, not {n + d}")
    if args.case == "full":
        return [], raws[:n]
    return raws[:n], raws[n:n + d]


def handshake(work: Workload, key_a: nacl.signing.SigningKey, key_b: nacl.signing.SigningKey,
              ra: Replica, rb: Replica) -> tuple[Session, Session, int]:
    """Run the handshake in memory: (A's session, B's session, flights it took)."""
    sa, sb = sessions(work, key_a, key_b, ra, rb)
    done: set[int] = set()
    flights = 0
    src, dst = sb, sa
    for _ in range(20):
        if len(done) == 2:
            return sa, sb, flights
        data = src.data_to_send()
        if data:
            flights += 1
            dst.receive_data(data, 0.0)
        while (ev := dst.next_event()) is not None:
            if isinstance(ev, HandshakeDone):
                done.add(id(dst))
        src, dst = dst, src
    raise RuntimeError("the handshake did not finish in 20 flights")


def cmd_prepare(args: argparse.Namespace) -> dict[str, object]:
    work = Workload(devices=args.devices)
    shared, only_a = _case_records(args, work)
    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    build_store(d / "a.sqlite3", work, shared + only_a)
    build_store(d / "b.sqlite3", work, shared)
    for n in ("a", "b"):
        shutil.copy(d / f"{n}.sqlite3", d / f"{n}-flights.sqlite3")
    key_a, key_b = work.authority.key, work.devices[0].key
    fa = open_replica(d / "a-flights.sqlite3", work)
    fb = open_replica(d / "b-flights.sqlite3", work)
    try:
        _, _, hs = handshake(work, key_a, key_b, fa, fb)
        flights = count_flights(work, key_a, key_b, fa, fb)
    finally:
        close_replicas(fa, fb)
    for n in ("a", "b"):
        (d / f"{n}-flights.sqlite3").unlink()
    return {"flights_after_handshake": flights, "handshake_flights": hs}


def cmd_sync(args: argparse.Namespace) -> dict[str, object]:
    work = Workload(devices=args.devices)
    key_b = work.devices[0].key
    rb = open_replica(args.dir / "b.sqlite3", work)
    prof = cProfile.Profile() if args.profile else None
    try:
        with PeerProcess(args.dir / "a.sqlite3", args.devices) as peer:
            if prof is not None:
                prof.enable()
            took, up, down, cpu_b = trio.run(tcp_sync_with, peer.port, Node(rb, key_b))
            if prof is not None:
                prof.disable()
                prof.dump_stats(str(args.profile))
            side_a = peer.close()
        same = side_a["state_hash"] == rb.state_hash().hex()
    finally:
        close_replicas(rb)
    if not same:
        raise SystemExit("the two nodes did not converge")
    _, only_a = _case_records(args, work)
    verify_s = baseline_verify(only_a, work.network_id)
    return {"wall_s": took, "bytes_up": up, "bytes_down": down, "verify_s": verify_s,
            "cpu_b_s": cpu_b, "cpu_a_s": side_a["cpu_s"],
            "records_moved": len(only_a), "record_bytes": sum(len(r) for r in only_a)}


def _authors_workload(authors: int) -> tuple[Workload, list[bytes], bytes]:
    """A network where each of `authors` devices has signed one record (its display
    name), and one more record by device 0: (workload, records, the extra record)."""
    work = Workload(seed="bench-authors", devices=authors)
    raws = list(work._setup())
    raws += [work._sign(dev, Meta(account="main", field="display_name", value=f"truck {i}"))
             for i, dev in enumerate(work.devices)]
    extra = work._sign(work.devices[0], Meta(account="main", field="site", value="site-1"))
    return work, raws, extra


def cmd_summary(args: argparse.Namespace) -> dict[str, object]:
    work, raws, extra = _authors_workload(args.authors)
    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    build_store(d / "a.sqlite3", work, raws)
    build_store(d / "b.sqlite3", work, raws)
    key_a, key_b = work.authority.key, work.devices[1].key

    def sync_once() -> tuple[float, int, int]:
        ra, rb = open_replica(d / "a.sqlite3", work), open_replica(d / "b.sqlite3", work)
        try:
            result = trio.run(tcp_sync, Node(ra, key_a, role="authority"), Node(rb, key_b))
            if ra.state_hash() != rb.state_hash():
                raise SystemExit("the two nodes did not converge")
            return result
        finally:
            close_replicas(ra, rb)

    sync_once()  # B has met A and both hold the same: A is now a known peer
    ra = open_replica(d / "a.sqlite3", work)
    try:
        with ra.store.transaction():
            ra.receive_many([extra], now_ms=time.time_ns() // 1_000_000)
        authors = len(ra.frontier().tips)
    finally:
        close_replicas(ra)
    for n in ("a", "b"):
        shutil.copy(d / f"{n}.sqlite3", d / f"{n}-summary.sqlite3")
    ra = open_replica(d / "a-summary.sqlite3", work)
    rb = open_replica(d / "b-summary.sqlite3", work)
    try:
        sa, sb, _ = handshake(work, key_a, key_b, ra, rb)
        queued = {}
        sides = (("a", sa, Node(ra, key_a, role="authority"), key_b),
                 ("b", sb, Node(rb, key_b), key_a))
        for name, session, node, peer in sides:
            before = session.pending_output
            frontier = node.replica.frontier()
            # As the node does on HandshakeDone: a sketch for a peer it synced with.
            session.send_summary(frontier, 0.0, ids_at=node.replica.store.ids_at,
                                 sketch_cells=node.sketch_cells(bytes(peer.verify_key),
                                                                frontier))
            queued[name] = session.pending_output - before
    finally:
        close_replicas(ra, rb)
    took, up, down = sync_once()
    return {"authors": authors, "summary_bytes_a": queued["a"], "summary_bytes_b": queued["b"],
            "sync_wire_bytes": up + down, "sync_wall_s": took, "record_bytes": len(extra)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("prepare", "sync"):
        c = sub.add_parser(name)
        c.add_argument("--bundle", type=Path, required=True)
        c.add_argument("--records", type=int, required=True)
        c.add_argument("--delta", type=int, required=True)
        c.add_argument("--devices", type=int, required=True)
        c.add_argument("--case", choices=("full", "delta"), required=True)
        c.add_argument("--dir", type=Path, required=True)
        c.add_argument("--profile", type=Path, help="write a cProfile of the sync here")
    c = sub.add_parser("summary")
    c.add_argument("--authors", type=int, required=True)
    c.add_argument("--dir", type=Path, required=True)
    args = p.parse_args(argv)
    run = {"prepare": cmd_prepare, "sync": cmd_sync, "summary": cmd_summary}[args.command]
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
