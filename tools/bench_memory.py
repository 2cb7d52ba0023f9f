"""Memory a hostile peer can make a node spend, against a baseline of the same run.

Each case runs in its own child process (RSS only grows within a process), and prints
how much the process's RSS grew:

- pending: one origin floods 10,000 valid records whose prev and 64 refs nobody holds
  (the worst case per record), into a fresh replica; with the byte budgets (the
  defaults) and with budgets so large that only the count limit of 10,000 binds (what
  the replica did before). Then the origin's session ends (`forget_origin`).
- summary: a peer sends a full summary of 1,000,000 tips (what the wire allows) to a
  session; with the default `max_summary_tips` it is refused at 250,000 tips, and
  with the limit raised to 1,000,000 it is kept whole (as before).
- slowdown: an honest sync of 5,000 records between two sessions in memory, alone and
  with the huge summary's frames handled in between its 64 KiB reads, one frame of
  each in turn, as one event loop serves both (default limit, and raised). CPU
  seconds. The sync is short, so both see about the same summary frames while it
  runs: the limit bounds what a summary costs in all (see summary's CPU), not what
  one of its frames costs.

    python tools/bench_memory.py [--case pending|summary|slowdown]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import nacl.signing

from p2p_ledger.core.hlc import pack_hlc
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import Meta, Record, Role, sign_record
from p2p_ledger.core.store import MemoryStore
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.protocol.frames import MAX_SUMMARY_ENTRIES, Summary, SummaryPart
from p2p_ledger.protocol.session import (
    Admission,
    HandshakeDone,
    PeerSummary,
    RecordsReceived,
    Session,
    SessionConfig,
)

T0 = 1_763_900_000_000
FLOOD = 10_000
TIPS = 1_000_000
HONEST = 5_000


def _key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


AUTHORITY, DEVICE, HOSTILE = _key("bench/authority"), _key("bench/device"), _key("bench/hostile")
NETWORK = NetworkDescriptor(name="bench-memory", currency="AED",
                            authority=bytes(AUTHORITY.verify_key))


def _any_device(device: bytes) -> Admission:
    """The node "holds" an admit for every key: the hostile peer is an admitted device."""
    return Admission(id=bytes(32), hlc=0, role="device")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- pending flood

def orphans(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        deps = [hashlib.blake2b(f"{i}/{j}".encode(), digest_size=32).digest() for j in range(65)]
        record = Record(author=bytes(HOSTILE.verify_key), seq=2 + i, prev=deps[0],
                        refs=tuple(sorted(deps[1:])), hlc=pack_hlc(T0, i),
                        body=Meta(account="main", field="f", value="x"))
        out.append(sign_record(record, HOSTILE, NETWORK.network_id).raw)
    return out


def case_pending(bounded: bool) -> dict[str, Any]:
    raws = orphans(FLOOD)
    huge = 1 << 40
    replica = (Replica(NETWORK, MemoryStore()) if bounded else
               Replica(NETWORK, MemoryStore(), max_pending_bytes=huge,
                       max_pending_bytes_per_origin=huge))
    before = rss()
    for at in range(0, len(raws), 200):  # ~1 MiB: as the frames of a session bring them
        with replica.store.transaction():
            replica.receive_many(raws[at:at + 200], now_ms=T0, origin=1)
    grown = rss() - before
    waiting, cost = replica.pending_count, replica.pending_bytes
    replica.forget_origin(1)
    return {"rss_grown": grown, "waiting": waiting, "pending_bytes": cost,
            "after_close": replica.pending_count}


# ---------------------------------------------------------------- summaries

def _pair(config: SessionConfig) -> tuple[Session, Session]:
    """A hostile initiator and our responder, handshake done."""
    ours = Session(network=NETWORK, key=AUTHORITY, admit=None, role="authority",
                   initiator=False, now=0.0, config=config,
                   known_admit=_any_device)
    theirs = Session(network=NETWORK, key=HOSTILE, admit=None, role="device",
                     initiator=True, now=0.0)
    for src, dst in ((theirs, ours), (ours, theirs), (theirs, ours)):
        dst.receive_data(src.data_to_send(), 0.0)
    assert ours.peer is not None
    assert not theirs.closed
    return theirs, ours


def hostile_summary(max_tips: int) -> tuple[Session, Iterator[bytes]]:
    """Our session, and the hostile summary of TIPS tips as the frames it arrives in,
    made one at a time (the peer's side costs nothing to speak of)."""
    theirs, ours = _pair(SessionConfig(max_summary_tips=max_tips))

    def frames() -> Iterator[bytes]:
        step = MAX_SUMMARY_ENTRIES
        for at in range(0, TIPS, step):
            tips = tuple((hashlib.blake2b(b"a%d" % i, digest_size=32).digest(), 1 + i,
                          hashlib.blake2b(b"i%d" % i, digest_size=32).digest())
                         for i in range(at, at + step))
            last = at + step >= TIPS
            theirs._send(Summary(tips=tips) if last else SummaryPart(tips=tips), 0.0)
            yield theirs.data_to_send()
    return ours, frames()


def case_summary(max_tips: int) -> dict[str, Any]:
    ours, frames = hostile_summary(max_tips)
    base, wire, started = peak(), 0, time.process_time()
    for f in frames:
        wire += len(f)
        ours.receive_data(f, 0.0)
        if ours.closed:
            break
    events = list(iter(ours.next_event, None))
    return {"peak_grown": peak() - base, "wire_bytes": wire,
            "cpu_seconds": time.process_time() - started,
            "outcome": type(events[-1]).__name__ if events else "none",
            "reason": getattr(events[-1], "reason", "") if events else ""}


def honest_world() -> tuple[Replica, Replica]:
    source = Replica(NETWORK, MemoryStore())
    auth = Wallet(source, AUTHORITY)
    with source.store.transaction():
        auth.admit(bytes(DEVICE.verify_key), role=Role.DEVICE, now_ms=T0)
        for i in range(HONEST - 1):
            auth.set_meta("n", str(i), now_ms=T0 + i)
    return source, Replica(NETWORK, MemoryStore())


def honest_sync(hostile: Iterator[bytes] | None, victim: Session | None) -> float:
    source, dest = honest_world()
    admit = source.store.raw(source.store.admits_for(bytes(DEVICE.verify_key))[-1].id)
    sa = Session(network=NETWORK, key=AUTHORITY, admit=None, role="authority",
                 initiator=False, now=0.0, known_admit=_any_device)
    sb = Session(network=NETWORK, key=DEVICE, admit=admit, role="device", initiator=True,
                 now=0.0)
    sides = {id(sa): source, id(sb): dest}
    started = time.process_time()
    src, dst = sb, sa
    for _ in range(200):
        data = src.data_to_send()
        if not data and sa.state.value == sb.state.value == "live":
            break
        for chunk in (data[i:i + 65536] for i in range(0, len(data), 65536)):
            dst.receive_data(chunk, 0.0)
            if hostile is not None and victim is not None and not victim.closed:
                frame = next(hostile, None)  # one of its frames per one of ours
                if frame is not None:
                    victim.receive_data(frame, 0.0)
                    list(iter(victim.next_event, None))
            replica = sides[id(dst)]
            while (ev := dst.next_event()) is not None:
                if isinstance(ev, HandshakeDone):
                    dst.send_summary(replica.frontier(), 0.0)
                elif isinstance(ev, PeerSummary):
                    delta = replica.delta(ev.frontier, complete=False)
                    dst.send_records(delta, 0.0)
                    dst.send_synced(len(delta), 0.0)
                elif isinstance(ev, RecordsReceived):
                    with replica.store.transaction():
                        replica.receive_many(ev.records, now_ms=T0 + 10 * HONEST)
        src, dst = dst, src
    assert dest.store.totals().records == HONEST, dest.store.totals().records
    return time.process_time() - started


def case_slowdown(max_tips: int | None) -> dict[str, Any]:
    if max_tips is None:
        return {"cpu_seconds": honest_sync(None, None)}
    victim, frames = hostile_summary(max_tips)
    return {"cpu_seconds": honest_sync(frames, victim)}


# ---------------------------------------------------------------- driver

def child(case: str, arg: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", case, arg], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["pending", "summary", "slowdown"], action="append")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, arg = args.child
        if case == "pending":
            print(json.dumps(case_pending(arg == "bounded")))
        elif case == "summary":
            print(json.dumps(case_summary(int(arg))))
        else:
            print(json.dumps(case_slowdown(None if arg == "none" else int(arg))))
        return
    cases = args.case or ["pending", "summary", "slowdown"]
    mib = 1 << 20
    report: dict[str, Any] = {}
    if "pending" in cases:
        old, new = child("pending", "count-only"), child("pending", "bounded")
        print(f"pending flood of {FLOOD} records (64 unknown refs each), one origin:")
        for name, r in (("count bound only", old), ("byte budgets", new)):
            print(f"  {name:<17} RSS +{r['rss_grown'] / mib:7.1f} MiB, "
                  f"{r['waiting']:>6} waiting ({r['pending_bytes'] / mib:.1f} MiB by "
                  f"pending_cost), {r['after_close']} left after the session ends")
        print(f"  ratio: {new['rss_grown'] / max(old['rss_grown'], 1):.3f}")
        report["pending"] = {"count_only": old, "bounded": new}
    if "summary" in cases:
        old, new = child("summary", str(TIPS)), child("summary", "250000")
        print(f"summary of {TIPS:,} tips ({old['wire_bytes'] / mib:.0f} MiB on the wire):")
        for name, r in (("limit 1,000,000", old), ("limit 250,000", new)):
            print(f"  {name:<17} peak RSS +{r['peak_grown'] / mib:7.1f} MiB, "
                  f"{r['cpu_seconds']:.2f} s CPU: {r['outcome']} {r['reason']}")
        print(f"  ratio: {new['peak_grown'] / max(old['peak_grown'], 1):.3f}")
        report["summary"] = {"limit_1m": old, "limit_250k": new}
    if "slowdown" in cases:
        alone = child("slowdown", "none")["cpu_seconds"]
        old, new = child("slowdown", str(TIPS)), child("slowdown", "250000")
        print(f"honest sync of {HONEST} records, CPU seconds:")
        print(f"  alone {alone:.2f}; with a 1,000,000-tip summary: kept whole "
              f"{old['cpu_seconds']:.2f} ({old['cpu_seconds'] / alone:.2f}x), "
              f"refused at 250,000 {new['cpu_seconds']:.2f} "
              f"({new['cpu_seconds'] / alone:.2f}x)")
        report["slowdown"] = {"alone": alone, "limit_1m": old, "limit_250k": new}
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
