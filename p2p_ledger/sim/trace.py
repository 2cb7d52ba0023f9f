"""The event trace of a run (`simulate --trace FILE`): one JSON object per line.

The schema (version 1) is in specs/simulator.md section 11; `tracecheck.py` re-checks
the invariants from a trace alone. Every event has `e` (its type) and, except the
header, `t` (simulated seconds, to the microsecond). Record ids and device keys are
the first 12 bytes of the real ones, in hex (`short`): enough to tell apart
2^40 records, a third of the bytes.

How the simulator produces it, from hooks that cost nothing when no trace is asked
for (each is one `is None` test): `World` writes the header, the genesis, the
membership changes, faults and the end; `trace_arrivals` (a proxy around each replica,
the real one or a plugin's, wrapping its `receive_many`) writes what arrives; the store's
`on_apply` stages each record's effects and the commit observer writes them with
their batch; `TracingStream` wraps
both ends of each connection and writes every write sent and every read delivered.

It only watches. It never changes what a node does or draws a random number, so a
traced run is the same run (the same report bytes) as an untraced one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterable
from typing import IO, TYPE_CHECKING, Any, cast

import trio

from ..core.checking import CheckingAhead
from ..core.ledger import IngestReport, Replica
from ..core.records import SignedRecord, parse_record, record_id
from ..core.store import Effects, MemoryStore

if TYPE_CHECKING:
    from .store import SimStore
    from .world import Member, World

__all__ = ["TRACE_VERSION", "Tracer", "TracingStream", "short", "trace_arrivals"]

TRACE_VERSION = 1
_SHORT = 12  # bytes of a record id or device key kept in the trace


def short(key: bytes) -> str:
    return key[:_SHORT].hex()


def _path(origin: object) -> str:
    if isinstance(origin, tuple):
        return "/".join(_path(part) for part in origin)
    return origin.hex() if isinstance(origin, bytes) else str(origin)


def _now() -> float:
    return round(trio.current_time(), 6)


class Tracer:
    """Writes one run's events to `out` (a text file the caller owns)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.names: dict[int, str] = {}  # member index -> name
        self.staged: dict[int, dict[bytes, Effects]] = {}  # per store: applied, not committed
        self.connections = 0
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def emit(self, event: dict[str, object]) -> None:
        self.out.write(self._dumps(event))
        self.out.write("\n")

    # ------------------------------------------------------------ the world

    def start(self, w: World, genesis: MemoryStore) -> None:
        p = w.params
        self.names = {m.index: m.name for m in w.members}
        self.emit({"e": "trace", "v": TRACE_VERSION, "source": "p2p-ledger-sim",
                   "nodes": {m.name: short(m.device) for m in w.members},
                   "authority": short(bytes(w.authority_key.verify_key)),
                   "params": p.to_json()})
        rows = []
        for rid in genesis.all_ids_in_order():
            row = genesis.get(rid)
            assert row is not None
            rows.append([short(rid), short(row.author), row.seq, row.verdict.value])
        self.emit({"e": "genesis", "t": 0.0, "records": rows})

    def join(self, m: Member, copy_of: str | None) -> None:
        self.names[m.index] = m.name
        self.emit({"e": "join", "t": _now(), "n": m.name, "device": short(m.device),
                   "copy_of": copy_of})

    def fault(self, kind: str, on: bool, **detail: object) -> None:
        self.emit({"e": "fault", "t": _now(), "kind": kind, "on": on, **detail})

    def end(self, w: World) -> None:
        p = w.params
        self.emit({"e": "end", "t": round(w.end_at, 6), "faults_stop": p.duration,
                   "bound": p.bound,
                   "converged_at": None if w.converged_at is None
                   else round(w.converged_at, 6)})

    # ------------------------------------------------------------ records

    def on_apply(self, store: SimStore, fx: Effects) -> None:
        self.staged.setdefault(store.owner, {})[fx.row.id] = fx

    def on_commit(self, store: SimStore, rids: list[bytes], creating: bool) -> None:
        """A batch was committed: its applies, then the commit (rolled-back applies,
        staged but never committed, are dropped here)."""
        staged = self.staged.pop(store.owner, {})
        t, name = _now(), self.names[store.owner]
        for rid in rids:
            fx = staged.get(rid)
            if fx is None:
                continue
            self.emit(self.apply_event(t, name, fx, creating=creating))
        self.emit({"e": "commit", "t": t, "n": name, "k": len(rids)})

    @staticmethod
    def apply_event(t: float, name: str, fx: Effects, *, creating: bool) -> dict[str, object]:
        row = fx.row
        refs = parse_record(fx.raw).record.refs
        event: dict[str, object] = {
            "e": "apply", "t": t, "n": name, "r": short(row.id), "a": short(row.author),
            "s": row.seq, "k": row.kind.name.lower(), "v": row.verdict.value,
            "cs": hashlib.blake2b(row.chain.encode(), digest_size=8).hexdigest()}
        if row.prev is not None:
            event["p"] = short(row.prev)
        if refs:
            event["refs"] = [short(r) for r in refs]
        if row.reason:
            event["why"] = row.reason
        if fx.movements:
            event["mv"] = [m.delta for m in fx.movements]
        if fx.issued:
            event["iss"] = fx.issued
        if fx.redeemed:
            event["red"] = fx.redeemed
        if fx.revoke is not None:
            event["revoke"] = [short(fx.revoke[0]), fx.revoke[1]]
        if creating:
            event["new"] = True
        return event

    def arrive(self, name: str, ids: list[bytes], origin: Hashable,
               report: IngestReport) -> None:
        event: dict[str, object] = {"e": "arrive", "t": _now(), "n": name,
                                    "r": [short(r) for r in ids]}
        if isinstance(origin, int):  # a node's session
            event["session"] = origin
        elif origin is not None:  # a second path (paths.py): ("courier", 2), ...
            event["via"] = _path(origin)
        if report.refused:
            event["refused"] = len(report.refused)
        if report.waiting:
            event["waiting"] = report.waiting
        self.emit(event)

    # ------------------------------------------------------------ links

    def open(self, dialer: str, server: str) -> int:
        self.connections += 1
        self.emit({"e": "open", "t": _now(), "n": dialer, "peer": server,
                   "c": self.connections})
        return self.connections

    def close(self, name: str, conn: int) -> None:
        self.emit({"e": "close", "t": _now(), "n": name, "c": conn})


def trace_arrivals(replica: Replica, tracer: Tracer, name: str) -> Replica:
    """`replica` (the real one or a plugin's), writing an `arrive` event for each batch
    handed to its `receive_many`: a proxy that passes everything else through. Not a
    method set on the instance: in the compiled build (specs/build.md) `Replica` is a
    native class, whose methods cannot be replaced per instance (`simulate --trace`
    stopped there with an internal error)."""
    return cast(Replica, _ArrivalsTraced(replica, tracer, name))


class _ArrivalsTraced:
    _traced: tuple[Replica, Tracer, str]

    def __init__(self, inner: Replica, tracer: Tracer, name: str) -> None:
        object.__setattr__(self, "_traced", (inner, tracer, name))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._traced[0], attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._traced[0], attr, value)  # (the node sets `verifier`)

    def receive_many(self, raws: Iterable[bytes | SignedRecord] | CheckingAhead, *,
                     now_ms: int, origin: Hashable = None) -> IngestReport:
        inner, tracer, name = self._traced
        if isinstance(raws, CheckingAhead):
            ids = list(raws._ids)
        else:
            raws = list(raws)
            ids = [r.id if isinstance(r, SignedRecord) else record_id(r) for r in raws]
        report = inner.receive_many(raws, now_ms=now_ms, origin=origin)
        tracer.arrive(name, ids, origin, report)
        return report


class TracingStream(trio.abc.Stream):
    """One end of a connection, writing a `send` event per write and a `deliver`
    event per read that returned bytes."""

    def __init__(self, inner: trio.abc.Stream, tracer: Tracer, name: str, peer: str,
                 conn: int) -> None:
        self.inner, self.tracer, self.name, self.peer, self.conn = (
            inner, tracer, name, peer, conn)
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.tracer.emit({"e": "send", "t": _now(), "n": self.name, "to": self.peer,
                          "c": self.conn, "b": len(data)})
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.tracer.emit({"e": "deliver", "t": _now(), "n": self.name,
                              "from": self.peer, "c": self.conn, "b": len(data)})
        return data

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.tracer.close(self.name, self.conn)
        await self.inner.aclose()
