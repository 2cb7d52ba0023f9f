"""Second paths: records that travel beside the sessions, late, twice and out of order.

A session delivers its delta in causal order over an authenticated stream, so
reordering or duplicating its bytes can only break it (the sealed channel refuses
that by design); and flooding over such sessions never hands a replica a record
before its causal past. What does, in the field, is a record travelling by another
path than its past: a device carrying a bundle between partitions, a relay or a
long-range channel that forwards some records and not others. These are the faults
that reach the merge, and the simulator models them here:

- *shortcut* (`reorder` p): each time a member stores a record (created or
  received), with probability p the record is also sent alone over a second, faster
  path to another member, arriving 0.01-0.5 s later. The shortcut goes to a member
  that lacks part of the record's causal past when there is one (the harmful case, as
  a fault injector picks it), else to any member: it arrives before its past if that
  is still on its way (the replica parks it; the past, when it comes by the
  sessions, releases it), after it otherwise (already held).
- *courier* (`couriers` n, sneakernet): n couriers walk from member to member (5-20 s
  a leg; while a partition isolates a group, each leg crosses it). At each stop a
  courier hands over each bundle it carries with probability
  1/2, in a random order (so a newer bundle often comes before an older one, which
  a later stop brings), and picks up a bundle of what that member stored since the
  courier last came by (its newest 300 records at most): a tail whose past the next
  member may lack. It carries at most three bundles (picking up a fourth, it leaves
  the oldest behind).
- *duplicate* (`duplicate` p): a delivery over a second path (a shortcut record, a
  courier's bundle) is made again, with probability p, 1-30 s later at the same
  member, as if by a third path: while the first copy waits in the pending area
  (another origin holds it) or after it was stored (already held).

A delivery is what `p2p-ledger import` does with a bundle: `Replica.receive_many` in
one store transaction (origin: the path), the authority revoking a fork it brought
(`freeze_equivocators`), then `Node.push_new`, which relays what was stored to every
session, as the node does for records another process wrote. Nothing here judges a
record. A member that is down when a delivery reaches it misses it.

The report counts the paths' traffic and, for every replica, what its pending area
did (`Replica.pending_totals`): records parked, released, dropped unreleased (their
session ended, or evicted), lost in crashes (the area is memory) and still waiting at
the end. Every random choice comes from the world's streams `paths/...`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..core import ledger
from ..core.ledger import Replica
from ..core.records import SignedRecord
from ..core.wallet import Wallet
from .store import PowerCut

if TYPE_CHECKING:
    from .world import Member, World

__all__ = ["PathStats", "SecondPaths", "run_couriers"]

SHORTCUT_DELAY = (0.01, 0.5)
DUPLICATE_DELAY = (1.0, 30.0)
COURIER_LEG = (5.0, 20.0)
BUNDLE_RECORDS = 300
COURIER_BUNDLES = 3


@dataclass(slots=True)
class PathStats:
    shortcut_records: int = 0  # records sent alone over a shortcut
    duplicate_deliveries: int = 0  # deliveries made a second time
    courier_stops: int = 0
    bundles_handed_over: int = 0
    bundle_records: int = 0  # records in the bundles handed over
    missed: int = 0  # deliveries that found their member down
    # What the replicas' pending areas did, summed over every replica that ran.
    parked: int = 0
    released: int = 0
    dropped: int = 0
    lost_in_crashes: int = 0
    waiting_at_end: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "second_paths": {"shortcut_records": self.shortcut_records,
                             "duplicate_deliveries": self.duplicate_deliveries,
                             "courier_stops": self.courier_stops,
                             "bundles_handed_over": self.bundles_handed_over,
                             "bundle_records": self.bundle_records,
                             "missed_member_down": self.missed},
            "pending": {"parked": self.parked, "released": self.released,
                        "dropped": self.dropped, "lost_in_crashes": self.lost_in_crashes,
                        "waiting_at_end": self.waiting_at_end}}


class SecondPaths:
    """The shortcut and duplicate paths of one world, and the delivery all paths use."""

    def __init__(self, world: World) -> None:
        self.w = world
        f = world.params.faults
        self.reorder, self.duplicate = f.reorder, f.duplicate
        self.shortcut_rng = world.rng("paths/shortcut")
        self.duplicate_rng = world.rng("paths/duplicate")
        self.stats = PathStats()
        self._due: list[tuple[float, int, int, tuple[bytes, ...], Hashable]] = []
        self._seq = itertools.count()
        self._changed = trio.Event()

    # ------------------------------------------------------------ scheduling

    def on_stored(self, member: int, rids: list[bytes]) -> None:
        """A member committed `rids`: some take a shortcut to another member."""
        if not self.reorder or self.w.quiet or len(self.w.members) < 2:
            return
        rng, store = self.shortcut_rng, self.w.members[member].store
        for rid in rids:
            if rng.random() >= self.reorder:
                continue
            raw = store.raw(rid)
            if raw is None:
                continue
            self.stats.shortcut_records += 1
            dest = self._target(member, rid, raw)
            self.send(rng.uniform(*SHORTCUT_DELAY), dest, (raw,), ("shortcut", member))

    def _target(self, member: int, rid: bytes, raw: bytes) -> int:
        """Where a shortcut goes: a member that lacks part of the record's causal past
        (and not the record), if there is one - a second path matters where it
        overtakes the first - else any other member."""
        parse: Callable[[bytes], SignedRecord] = vars(ledger)["parse_record"]
        rec = parse(raw).record  # the simulation's shared parse while it runs (accel.py)
        holders = self.w.checker.holders
        everyone = (1 << len(self.w.members)) - 1
        have_all = everyone
        for dep in (*rec.refs, *(() if rec.prev is None else (rec.prev,))):
            have_all &= holders.get(dep, 0)
        lacking = everyone & ~have_all & ~holders.get(rid, 0) & ~(1 << member)
        rng = self.shortcut_rng
        if lacking:
            choices = [i for i in range(len(self.w.members)) if lacking >> i & 1]
            return rng.choice(choices)
        dest = rng.randrange(len(self.w.members) - 1)
        return dest + (dest >= member)

    def send(self, delay: float, dest: int, raws: tuple[bytes, ...], origin: Hashable) -> None:
        heapq.heappush(self._due, (trio.current_time() + delay, next(self._seq), dest, raws,
                                   origin))
        self._changed.set()

    async def run(self) -> None:
        """Deliver what is due, when it is due; runs until the world ends."""
        while True:
            wake = self._due[0][0] if self._due else float("inf")
            changed = self._changed
            with trio.move_on_at(wake):
                await changed.wait()
            if changed.is_set():
                self._changed = trio.Event()
            now = trio.current_time()
            while self._due and self._due[0][0] <= now:
                _, _, dest, raws, origin = heapq.heappop(self._due)
                self.deliver(self.w.members[dest], raws, origin)

    # ------------------------------------------------------------ delivering

    def deliver(self, m: Member, raws: tuple[bytes, ...], origin: Hashable, *,
                again: bool = True) -> None:
        """Import `raws` at `m` as `p2p-ledger import` does, and maybe again later."""
        w = self.w
        if again and self.duplicate and not w.quiet and (
                self.duplicate_rng.random() < self.duplicate):
            self.stats.duplicate_deliveries += 1
            self.send(self.duplicate_rng.uniform(*DUPLICATE_DELAY), m.index, raws,
                      ("again", origin))
        if not m.up or m.node is None:
            self.stats.missed += 1
            return
        try:
            with m.store.transaction(bulk=True):
                report = m.replica.receive_many(raws, now_ms=w.now_ms(m), origin=origin)
        except PowerCut:
            w.crash(m, mid_batch=True)
            return
        if m.role == "authority" and any(a.equivocates_with for a in report.applied):
            with w.creating(m):  # the authority answers a fork at once, as on import
                Wallet(m.replica, m.key).freeze_equivocators(now_ms=w.now_ms(m))
        if m.up and m.node is not None:
            m.node.push_new(trio.current_time())

    # ------------------------------------------------------------ pending areas

    def replica_ended(self, m: Member, replica: Replica) -> None:
        """A member's replica is gone (a crash, or the end of the run): add what its
        pending area did; what still waits there is lost (crash) or left (end)."""
        parked, released, dropped = replica.pending_totals()
        s = self.stats
        s.parked += parked
        s.released += released
        s.dropped += dropped
        if m.up:
            s.waiting_at_end += replica.pending_count
        else:
            s.lost_in_crashes += replica.pending_count


async def run_couriers(w: World, paths: SecondPaths) -> None:
    count = w.params.faults.couriers
    if not count:
        return
    async with trio.open_nursery() as nursery:
        for k in range(count):
            nursery.start_soon(_courier, w, paths, k)


async def _courier(w: World, paths: SecondPaths, k: int) -> None:
    rng = w.rng(f"paths/courier/{k}")
    carrying: list[tuple[bytes, ...]] = []
    last_seen: dict[int, int] = {}  # member -> its store position when last visited
    at = -1  # the member last visited
    while True:
        await trio.sleep(rng.uniform(*COURIER_LEG))
        if trio.current_time() >= w.params.duration:
            return
        up = [m for m in w.members if m.up and m.node is not None]
        if not up:
            continue
        m = rng.choice(_across(w, up, at) or up)
        at = m.index
        paths.stats.courier_stops += 1
        # Each bundle carried is handed over with probability 1/2 (the rest stay in the
        # bag for a later stop), in a random order: a newer bundle may come first.
        rng.shuffle(carrying)
        kept = []
        for bundle in carrying:
            if rng.random() < 0.5:
                kept.append(bundle)
                continue
            paths.stats.bundles_handed_over += 1
            paths.stats.bundle_records += len(bundle)
            paths.deliver(m, bundle, ("courier", k))
        carrying = kept
        top = m.store.max_order()
        since = max(last_seen.get(m.index, 0), top - BUNDLE_RECORDS)
        last_seen[m.index] = top
        bundle = tuple(raw for _, _, raw in m.store.records_after(since, BUNDLE_RECORDS))
        if bundle:
            carrying.append(bundle)
        del carrying[:-COURIER_BUNDLES]


def _across(w: World, up: list[Member], at: int) -> list[Member]:
    """While a partition isolates a group, a courier crosses it: from inside the
    group to outside, or the other way (that is what sneakernet is for)."""
    if not w.bursting or at < 0:
        return []
    group = set(w.bursting[-1])
    inside = at in group
    return [m for m in up if (m.index in group) != inside]
