"""Re-check a run's invariants from its event trace alone (`p2p-ledger simulate check`).

The trace (schema in specs/simulator.md section 11, written by trace.py) says, per
node, which records it stored, in which order, with which verdict and which effects
on balances. From that alone, with no store, no keys and no simulator, this checks:

- conservation: at every commit (and at the end), the sum of the balance changes a
  node applied equals what it issued minus what it redeemed (sim/checks.py checks the
  same on the live store);
- verdict stability: a record gets one verdict (and reason) wherever it is applied,
  and establishes one chain state (the digest `cs`: its author's balances and totals
  over its causal past), as sim/checks.py compares;
- causal delivery: a node applies a record only when it already holds the record's
  `prev` and every record it `refs` (and never stores one record twice);
- convergence (specs/simulator.md section 6): at the end, every honest node (whose
  device no applied `revoke` names) holds every record any honest node holds; a record
  only revoked nodes hold must be a revoked device's record above its cut-off. If the
  trace states the faults' stop and the bound, the last record an honest node stored
  came within the bound.

A malformed trace (not JSON, an unknown version or event, a missing field, an event
of an unknown node) raises `TraceError`; a violation is one line of text. Nothing
here imports trio: a trace of real nodes checks the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LocalError
from .trace import TRACE_VERSION

__all__ = ["TraceError", "TraceResult", "check_trace", "check_trace_file"]

_KEEP = 50  # violations reported per invariant
_EVENTS = {"genesis", "join", "fault", "end", "apply", "commit", "arrive", "open", "close",
           "send", "deliver"}


class TraceError(LocalError):
    """The trace file is not a trace this checker can read."""


@dataclass(slots=True)
class _Node:
    device: str
    held: set[str] = field(default_factory=set)
    balance: int = 0  # the sum of the balance changes applied
    issued: int = 0
    redeemed: int = 0
    last_apply: float = 0.0


@dataclass(slots=True, kw_only=True)
class TraceResult:
    events: int = 0
    applies: int = 0
    violations: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(self.counts.values())

    def flag(self, check: str, line: str) -> None:
        self.counts[check] = self.counts.get(check, 0) + 1
        kept = self.violations.setdefault(check, [])
        if len(kept) < _KEEP:
            kept.append(line)

    def lines(self) -> list[str]:
        """One line per violation (the first few of each invariant), then how many
        more of each there were."""
        out: list[str] = []
        for check in sorted(self.counts):
            out += [f"{check}: {v}" for v in self.violations.get(check, [])]
            more = self.counts[check] - len(self.violations.get(check, []))
            if more > 0:
                out.append(f"{check}: ... and {more} more")
        return out


class _Checker:
    def __init__(self, header: dict[str, Any]) -> None:
        self.result = TraceResult()
        nodes = _field(header, "nodes", dict, 1)
        self.nodes = {str(n): _Node(device=str(d)) for n, d in nodes.items()}
        self.verdict: dict[str, tuple[str, str | None, str]] = {}  # record -> first
        self.chain: dict[str, tuple[str, str]] = {}  # record -> first (chain digest, node)
        self.author: dict[str, tuple[str, int]] = {}  # record -> (device, seq)
        self.cut_off: dict[str, int] = {}  # revoked device -> lowest after_seq
        self.end: dict[str, Any] | None = None

    def node(self, event: dict[str, Any], line: int) -> _Node:
        name = _field(event, "n", str, line)
        if name not in self.nodes:
            raise TraceError(f"line {line}: an event of unknown node {name!r}")
        return self.nodes[name]

    def feed(self, event: dict[str, Any], line: int) -> None:
        kind = event.get("e")
        if kind not in _EVENTS:
            raise TraceError(f"line {line}: unknown event {kind!r}")
        self.result.events += 1
        if kind == "genesis":
            for row in _field(event, "records", list, line):
                if not (isinstance(row, list) and len(row) == 4):
                    raise TraceError(f"line {line}: a genesis record is not "
                                     "[id, author, seq, verdict]")
                rid, author, seq, verdict = row
                if not (isinstance(rid, str) and isinstance(author, str)
                        and isinstance(seq, int) and isinstance(verdict, str)):
                    raise TraceError(f"line {line}: a genesis record is not "
                                     "[id, author, seq, verdict]")
                self.verdict[rid] = (verdict, None, "genesis")
                self.author[rid] = (author, seq)
                for n in self.nodes.values():
                    n.held.add(rid)
        elif kind == "join":
            name = _field(event, "n", str, line)
            joined = _Node(device=_field(event, "device", str, line))
            source = event.get("copy_of")
            if source is not None:
                if source not in self.nodes:
                    raise TraceError(f"line {line}: {name} copies unknown node {source!r}")
                old = self.nodes[source]
                joined.held = set(old.held)
                joined.balance, joined.issued, joined.redeemed = (
                    old.balance, old.issued, old.redeemed)
            self.nodes[name] = joined
        elif kind == "apply":
            self.apply(event, line)
        elif kind == "commit":
            self.conserved(self.node(event, line), event, line)
        elif kind == "end":
            self.end = event

    def apply(self, event: dict[str, Any], line: int) -> None:
        r = self.result
        r.applies += 1
        n = self.node(event, line)
        name, t = event["n"], _field(event, "t", (int, float), line)
        rid = _field(event, "r", str, line)
        verdict = _field(event, "v", str, line)
        author, seq = _field(event, "a", str, line), _field(event, "s", int, line)
        if rid in n.held:
            r.flag("causal delivery", f"{name} stored record {rid} a second time at {t}")
        deps = [*_list_of(event, "refs", str, line)]
        if "p" in event:
            deps.append(_field(event, "p", str, line))
        missing = [d for d in deps if d not in n.held]
        if missing:
            r.flag("causal delivery", f"{name} applied {rid} at {t} before "
                   f"{', '.join(missing)} of its causal past")
        reason, chain = event.get("why"), event.get("cs")
        first = self.verdict.get(rid)
        if first is None:
            self.verdict[rid] = (verdict, reason, name)
            if chain is not None:
                self.chain[rid] = (chain, name)
        elif first[:2] != (verdict, reason):
            r.flag("verdict stability", f"record {rid}: {_verdict(first[0], first[1])} at "
                   f"{first[2]}, {_verdict(verdict, reason)} at {name} ({t})")
        elif chain is not None and rid in self.chain and self.chain[rid][0] != chain:
            r.flag("verdict stability", f"record {rid}: {_verdict(verdict, reason)} "
                   f"everywhere, but its chain state at {name} ({t}) differs from the "
                   f"one at {self.chain[rid][1]} (judged on another causal past)")
        self.author.setdefault(rid, (author, seq))
        n.held.add(rid)
        n.last_apply = t
        n.balance += sum(_list_of(event, "mv", int, line))
        n.issued += _int(event, "iss", line)
        n.redeemed += _int(event, "red", line)
        revoke = event.get("revoke")
        if revoke is not None and verdict == "applied":
            if not (isinstance(revoke, list) and len(revoke) == 2):
                raise TraceError(f"line {line}: revoke is not [device, after_seq]")
            device, after = revoke
            self.cut_off[device] = min(after, self.cut_off.get(device, after))

    def conserved(self, n: _Node, event: dict[str, Any], line: int) -> None:
        if n.balance != n.issued - n.redeemed:
            self.result.flag("conservation", f"{event.get('n')} at {event.get('t')}: "
                             f"its balance changes since genesis sum to {n.balance}, "
                             f"its issued minus redeemed to {n.issued - n.redeemed}")

    def finish(self) -> TraceResult:
        r = self.result
        for name, n in self.nodes.items():
            self.conserved(n, {"n": name, "t": "the end"}, 0)
        honest = {name: n for name, n in self.nodes.items() if n.device not in self.cut_off}
        if not honest:
            return r
        needed = set().union(*(n.held for n in honest.values()))
        for name, n in sorted(honest.items()):
            missing = needed - n.held
            if missing:
                r.flag("convergence", f"honest node {name} lacks {len(missing)} records "
                       f"other honest nodes hold (e.g. {min(missing)})")
        held_anywhere = set().union(*(n.held for n in self.nodes.values()))
        for rid in sorted(held_anywhere - needed):
            author, seq = self.author.get(rid, ("?", 0))
            cut = self.cut_off.get(author)
            if cut is None:
                r.flag("convergence", f"record {rid} of unrevoked author {author} reached "
                       "no honest node")
            elif seq <= cut:
                r.flag("convergence", f"record {rid} of revoked device {author} at seq "
                       f"{seq}, not above its cut-off {cut}, reached no honest node")
        if self.end is not None and self.end.get("bound") is not None:
            stop, bound = self.end.get("faults_stop"), self.end["bound"]
            last = max(n.last_apply for n in honest.values())
            if isinstance(stop, (int, float)) and isinstance(bound, (int, float)) \
                    and last > stop + bound:
                r.flag("convergence", f"the honest nodes stored their last record at "
                       f"{last}, after the faults stopped at {stop} + the bound {bound}")
        return r


def _verdict(v: str, reason: object) -> str:
    return f"{v} ({reason})" if reason else v


def _field(event: dict[str, Any], key: str, kind: type | tuple[type, ...], line: int) -> Any:
    value = event.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TraceError(f"line {line}: {event.get('e')!r} event without a valid {key!r}")
    return value


def _list_of(event: dict[str, Any], key: str, kind: type, line: int) -> list[Any]:
    value = event.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise TraceError(f"line {line}: {key!r} is not a list of {kind.__name__}")
    return value


def _int(event: dict[str, Any], key: str, line: int) -> int:
    value = event.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TraceError(f"line {line}: {key!r} is not an integer")
    return value


def check_trace(lines: Iterable[str]) -> TraceResult:
    checker: _Checker | None = None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(event, dict):
            raise TraceError(f"line {number}: not a JSON object")
        if checker is None:
            if event.get("e") != "trace":
                raise TraceError("line 1: a trace starts with its header (\"e\": \"trace\")")
            if event.get("v") != TRACE_VERSION:
                raise TraceError(f"line 1: trace version {event.get('v')!r}; this checker "
                                 f"reads version {TRACE_VERSION}")
            checker = _Checker(event)
            continue
        checker.feed(event, number)
    if checker is None:
        raise TraceError("the trace is empty")
    return checker.finish()


def check_trace_file(path: Path) -> TraceResult:
    try:
        with path.open(encoding="utf-8") as f:
            return check_trace(f)
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror or exc}") from None
