"""Sync benchmark: two nodes on loopback TCP, against raw signature verification.

Two cases, on the deterministic workload of `bench_ingest.py`:

- full: node A holds N records (default 10,000), node B is empty; B syncs with A.
- delta: both hold the first N records, A holds D more (default 1,000); B syncs.

For each, in the same run: the wall time of `Node.sync_once` over real TCP on
127.0.0.1 (handshake, summaries, deltas, verification and durable storage on B,
until both sides are LIVE), node A serving from a process of its own (`PeerProcess`:
two devices are two processes; in one, A's delta and packing took B's thread), the
CPU time of B's main process and of A's, the wire bytes both ways, and the time PyNaCl takes to
verify exactly the records that moved on one core (the baseline). Round trips after
the handshake are counted on the same stores driven by the sans-IO sessions in
memory, flight by flight (one flight = everything one side has to send, delivered).

Printed: a table, the ratios against the targets (wall <= 1.3x the verification
time; 1 round trip after the handshake; wire bytes per record <= 1.15x the record's
own size), and one JSON line.

    python tools/bench_sync.py [--records N] [--delta D]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nacl.signing
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import DEFAULT_CACHE, GcTimer, Workload, baseline_verify, devices_for

from p2p_ledger.build import build_kind
from p2p_ledger.core.checking import Verifier
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.records import Failures, SignedRecord
from p2p_ledger.node.links import Link
from p2p_ledger.node.node import Node, newest_admit
from p2p_ledger.node.verifier import shared_verifier
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import (
    HandshakeDone,
    PeerSummary,
    RecordsReceived,
    Session,
)
from p2p_ledger.storage.sqlite import SqliteStore

TARGET_WALL_RATIO = 1.3
TARGET_ROUND_TRIPS = 1
TARGET_BYTES_RATIO = 1.15


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_store(path: Path, work: Workload, raws: Sequence[bytes]) -> None:
    store = SqliteStore(path, work.network_id)
    try:
        replica = Replica(work.network, store)
        with store.transaction():
            report = replica.receive_many(raws, now_ms=_now_ms())
        assert len(report.applied) == len(raws), "bad workload"
        assert not report.refused, "bad workload"
    finally:
        store.close()


def open_replica(path: Path, work: Workload) -> Replica:
    return Replica(work.network, SqliteStore(path, work.network_id))


def close_replicas(*replicas: Replica) -> None:
    for r in replicas:
        store = r.store
        assert isinstance(store, SqliteStore)
        store.close()


class WaitTimer:
    """Wraps a replica's verifier: the seconds its caller spent waiting for answers
    (the judging thread idle while the signature checks catch up)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.seconds = 0.0

    def __call__(self, records: Sequence[SignedRecord], network_id: bytes
                 ) -> Callable[[], Failures]:
        result = self.verifier(records, network_id)

        def waited() -> Failures:
            t0 = time.perf_counter()
            try:
                return result()
            finally:
                self.seconds += time.perf_counter() - t0
        return waited


class Phases:
    """Where node B's main thread spends its CPU during a sync, stage by stage, each
    stage's own time only (a stage called inside another is taken out of it), read
    with `time.thread_time` at every entry and exit, and Python's cyclic collections
    as a stage of their own (through `gc.callbacks`). The stages are the functions the
    node calls for them, wrapped while the block runs:

    - unpack: `compact.unpack_records` (rebuilding the PACKED frame's records);
    - session: the rest of `Session.receive_data` (decryption, frame parsing);
    - judging: `Replica._receive_chunk` without the rows it writes (parsing what
      came as bytes, the ledger rules, the store's reads, the in-memory batch);
    - store writes: `sqlite_schema._write_batch` (the rows, in bulk) and COMMIT;
    - GC; and "other", the rest of B's CPU (the node's trio tasks, the handshake,
      the summaries).

    The wrappers cost a few microseconds per call: figures of a run with phases are
    not the run's headline figures."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[str] = []
        self._mark = 0.0
        self._undo: list[Callable[[], None]] = []

    def _switch(self, push: str | None) -> None:
        now = time.thread_time()
        if self._stack:
            top = self._stack[-1]
            self.seconds[top] = self.seconds.get(top, 0.0) + now - self._mark
        if push is None:
            self._stack.pop()
        else:
            self._stack.append(push)
        self._mark = now

    def _wrap(self, owner: object, name: str, stage: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args: object, **kwargs: object) -> object:
            self._switch(stage)
            try:
                return inner(*args, **kwargs)
            finally:
                self._switch(None)
        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, inner))

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        self._switch("GC" if phase == "start" else None)

    def __enter__(self) -> Phases:
        import p2p_ledger.protocol.session as session_module
        import p2p_ledger.storage.sqlite as sqlite_module
        self._wrap(session_module, "unpack_records", "unpack")
        self._wrap(Session, "receive_data", "session")
        self._wrap(Replica, "_receive_chunk", "judging")
        self._wrap(sqlite_module, "_write_batch", "store writes")
        gc.callbacks.append(self._gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._gc)
        for undo in reversed(self._undo):
            undo()

    def commit_timed(self, store: SqliteStore) -> None:
        """Time the COMMIT statements of `store` as store writes."""
        db = store._db
        execute = db.execute

        def timed(sql: str, *args: object) -> object:
            if sql != "COMMIT":
                return execute(sql, *args)
            self._switch("store writes")
            try:
                return execute(sql, *args)
            finally:
                self._switch(None)
        db.execute = timed  # type: ignore[method-assign,assignment]


class PeerProcess:
    """Node A in a process of its own, serving loopback TCP, as a peer device is: its
    delta, packing and encryption do not share B's thread (B's own checker child is
    started by B, as in a running node). Started with the path of A's store and the
    workload's device count (the workload is deterministic, so the child rebuilds the
    same network and keys); `close` stops it and returns A's state hash and CPU
    seconds, read from its last line."""

    def __init__(self, path: Path, devices: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", str(path),
             "--devices", str(devices)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.proc.kill()
            raise SystemExit(f"node A's process did not start: {line!r}")
        self.port = int(line.split()[1])

    def close(self) -> dict[str, object]:
        """Stop A (its stdin closes) and return what it printed last."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        if self.proc.wait(timeout=120) != 0:
            raise SystemExit(f"node A's process failed ({self.proc.returncode})")
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return result

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def serve_a(path: Path, devices: int) -> int:
    """The child of `PeerProcess`: serve A's store on 127.0.0.1 until stdin closes."""
    work = Workload(devices=devices)
    replica = open_replica(path, work)
    node = Node(replica, work.authority.key, role="authority")
    shared_verifier().ready()
    cpu0 = time.process_time()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, lambda s: node.serve_stream(s, "tcp://bench"), 0,
                host="127.0.0.1"))
            print(f"port {listeners[0].socket.getsockname()[1]}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
        cpu = time.process_time() - cpu0
        state = replica.state_hash().hex()
    finally:
        close_replicas(replica)
    print(json.dumps({"state_hash": state, "cpu_s": cpu}), flush=True)
    return 0


async def tcp_sync_with(port: int, b: Node) -> tuple[float, int, int, float]:
    """B syncs with a node served on 127.0.0.1:`port` (e.g. a `PeerProcess`):
    (seconds, bytes B->A, bytes A->B, B's CPU seconds in that time). B's signature
    checker is up before the clock starts, as in a running node."""
    shared_verifier().ready()
    t0, cpu0 = time.perf_counter(), time.process_time()
    stats = await b.sync_once(Link(scheme="tcp", host="127.0.0.1", port=port))
    took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    assert stats.synced, stats.reason
    return took, stats.bytes_out, stats.bytes_in, cpu


async def tcp_sync(a: Node, b: Node) -> tuple[float, int, int]:
    """B syncs with A over loopback TCP: (seconds, bytes B->A, bytes A->B). The nodes
    are up before the clock starts, their signature checker too, as for running nodes
    (the verifier child starts with the node and takes ~0.15 s to import)."""
    shared_verifier().ready()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, lambda s: a.serve_stream(s, "tcp://bench"), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        t0 = time.perf_counter()
        stats = await b.sync_once(Link(scheme="tcp", host="127.0.0.1", port=port))
        took = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    assert stats.synced, stats.reason
    return took, stats.bytes_out, stats.bytes_in


def sessions(work: Workload, key_a: nacl.signing.SigningKey, key_b: nacl.signing.SigningKey,
             ra: Replica, rb: Replica) -> tuple[Session, Session]:
    """A's responder session and B's initiator session, as the nodes would make them."""
    sa = Session(network=work.network, key=key_a, admit=None, role="authority",
                 initiator=False, now=0.0,
                 known_admit=functools.partial(newest_admit, ra.store))
    sb = Session(network=work.network, key=key_b, admit=admit_of(rb, key_b), role="device",
                 initiator=True, now=0.0)
    return sa, sb


def count_flights(work: Workload, key_a: nacl.signing.SigningKey,
                  key_b: nacl.signing.SigningKey, ra: Replica, rb: Replica) -> int:
    """Flights after both handshakes are done until both sessions are LIVE."""
    sa, sb = sessions(work, key_a, key_b, ra, rb)
    sides = {id(sa): ra, id(sb): rb}
    flights_after_handshake = 0
    handshaken: set[int] = set()
    src, dst = sb, sa
    for _ in range(100):
        data = src.data_to_send()
        if not data and src.state is State.LIVE and dst.state is State.LIVE:
            break
        if len(handshaken) == 2 and data:
            flights_after_handshake += 1
        dst.receive_data(data, 0.0)
        replica = sides[id(dst)]
        while (ev := dst.next_event()) is not None:
            if isinstance(ev, HandshakeDone):
                handshaken.add(id(dst))
                dst.send_summary(replica.frontier(), 0.0)
            elif isinstance(ev, PeerSummary):
                delta = replica.delta(ev.frontier, complete=False)
                dst.send_records(delta, 0.0)
                dst.send_synced(len(delta), 0.0)
            elif isinstance(ev, RecordsReceived):
                with replica.store.transaction():
                    replica.receive_many(ev.records, now_ms=_now_ms())
        src, dst = dst, src
    assert sa.state is State.LIVE, sa.state
    assert sb.state is State.LIVE, sb.state
    return flights_after_handshake


def admit_of(replica: Replica, key: nacl.signing.SigningKey) -> bytes | None:
    device = bytes(key.verify_key)
    admits = replica.store.admits_for(device)
    return replica.store.raw(admits[-1].id) if admits else None


def run_case(name: str, work_dir: Path, work: Workload, shared: list[bytes],
             only_a: list[bytes], *, phases: bool = False) -> dict[str, object]:
    case = work_dir / name
    case.mkdir()
    build_store(case / "a.sqlite3", work, shared + only_a)
    build_store(case / "b.sqlite3", work, shared)
    for n in ("a", "b"):
        shutil.copy(case / f"{n}.sqlite3", case / f"{n}-flights.sqlite3")
    key_a = work.authority.key
    key_b = work.devices[0].key

    rb = open_replica(case / "b.sqlite3", work)
    try:
        with PeerProcess(case / "a.sqlite3", len(work.devices)) as peer:
            node_b = Node(rb, key_b)
            waits = WaitTimer(rb.verifier)
            rb.verifier = waits
            stages = Phases() if phases else contextlib.nullcontext(None)
            with GcTimer() as collector, stages as timer:
                if timer is not None:
                    timer.commit_timed(rb.store)  # type: ignore[arg-type]
                took, up, down, cpu_b = trio.run(tcp_sync_with, peer.port, node_b)
            side_a = peer.close()
        same = side_a["state_hash"] == rb.state_hash().hex()
    finally:
        close_replicas(rb)
    assert same, "the two nodes did not converge"

    fa = open_replica(case / "a-flights.sqlite3", work)
    fb = open_replica(case / "b-flights.sqlite3", work)
    try:
        flights = count_flights(work, key_a, key_b, fa, fb)
    finally:
        close_replicas(fa, fb)

    baseline = baseline_verify(only_a, work.network_id)
    record_bytes = sum(len(r) for r in only_a)
    return {
        "case": name, "records_moved": len(only_a), "record_bytes": record_bytes,
        "wire_bytes": up + down, "wire_bytes_down": down, "wire_bytes_up": up,
        "bytes_ratio": (up + down) / record_bytes, "wall_s": took,
        "verify_s": baseline, "wall_ratio": took / baseline,
        "cpu_b_s": cpu_b, "cpu_a_s": side_a["cpu_s"],
        "waited_for_checks_s": waits.seconds, "gc_s": collector.seconds,
        "gc_collections": collector.collections, "gc_full": collector.full,
        "flights_after_handshake": flights, "round_trips_after_handshake": flights / 2,
        **({"phases_us_per_record": {
            **{k: v / len(only_a) * 1e6 for k, v in timer.seconds.items()},
            "other": (cpu_b - sum(timer.seconds.values())) / len(only_a) * 1e6}}
           if timer is not None else {}),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=10_000, help="records held in common")
    p.add_argument("--delta", type=int, default=1_000, help="new records in the delta case")
    p.add_argument("--phases", action="store_true",
                   help="split B's main-thread CPU by stage (class Phases); the "
                        "wrappers add a little to every figure")
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # PeerProcess's child
    p.add_argument("--devices", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve is not None:
        return serve_a(args.serve, args.devices)
    n, d = args.records, args.delta
    work = Workload(devices=devices_for(n + d))
    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raws = list(work.records(n + d))
    print(f"workload: {len(raws)} records generated in {time.perf_counter() - t0:.1f} s",
          flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        results.append(run_case("full", Path(tmp), work, [], raws[:n], phases=args.phases))
        results.append(run_case("delta", Path(tmp), work, raws[:n], raws[n:n + d],
                                phases=args.phases))
    print()
    print(f"{'case':<6} {'moved':>6} {'wire KB':>8} {'bytes/rec':>9} {'x rec':>6} "
          f"{'wall s':>7} {'verify s':>8} {'x verify':>8} {'RTT':>4}")
    for r in results:
        print(f"{r['case']:<6} {r['records_moved']:>6} {r['wire_bytes'] / 1000:>8.1f} "  # type: ignore[operator]
              f"{r['wire_bytes'] / r['records_moved']:>9.1f} "  # type: ignore[operator]
              f"{r['bytes_ratio']:>6.3f} {r['wall_s']:>7.3f} {r['verify_s']:>8.3f} "
              f"{r['wall_ratio']:>8.2f} {r['round_trips_after_handshake']:>4}")
    print()
    for r in results:
        print(f"{r['case']}: B's receiver waited {r['waited_for_checks_s']:.3f} s for "
              f"signature checks, used {r['cpu_b_s']:.3f} s of CPU in its main process "
              f"(A's process: {r['cpu_a_s']:.3f} s); GC in B {r['gc_s']:.3f} s in "
              f"{r['gc_collections']} collections ({r['gc_full']} full)")
    if args.phases and build_kind() == "compiled":
        print("NOTE: compiled build: a compiled module calls its neighbours directly, so "
              "the stages inside the compiled core (judging, store writes) are not split "
              "out and count as \"other\".")
    for r in results:
        split = r.get("phases_us_per_record")
        if isinstance(split, dict):
            print(f"{r['case']}: B's main-thread CPU per record moved, by stage: " + ", ".join(
                f"{k} {v:.0f} us" for k, v in sorted(split.items(), key=lambda kv: -kv[1])))
    for r in results:
        ok_wall = r["wall_ratio"] <= TARGET_WALL_RATIO  # type: ignore[operator]
        ok_bytes = r["bytes_ratio"] <= TARGET_BYTES_RATIO  # type: ignore[operator]
        ok_rtt = r["round_trips_after_handshake"] <= TARGET_ROUND_TRIPS  # type: ignore[operator]
        print(f"{r['case']}: wall {r['wall_ratio']:.2f}x verify (target <= "
              f"{TARGET_WALL_RATIO}x: {'met' if ok_wall else 'NOT met'}); wire "
              f"{r['bytes_ratio']:.3f}x record bytes (target <= {TARGET_BYTES_RATIO}x: "
              f"{'met' if ok_bytes else 'NOT met'}); {r['round_trips_after_handshake']} "
              f"round trips after the handshake (target {TARGET_ROUND_TRIPS}: "
              f"{'met' if ok_rtt else 'NOT met'})")
    print(json.dumps({"bench": "sync", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
