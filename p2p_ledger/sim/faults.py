"""What happens to the simulated world: faults, movement and the workload.

Each is a trio task that reads the world's parameters, draws from its own random
stream (so adding a fault never changes who pays whom) and acts through `World`
(crash, restart, stall, set_in_range, pay). All of them stop acting at `duration`,
and each fault leaves the world whole at that moment: partitions and clogs heal,
crashed members restart, the convoy closes up.

- partition: the members are split along the topology's axis at a random point
  between the quartiles; every link across is stalled. With `bridge`, the member
  nearest the split keeps its links to both sides.
- clog: links are stopped one by one, held, then restored one by one in a random order.
- crash: a member loses power; with probability `mid_batch` the cut comes inside its
  next store transaction (the store rolls it back). It restarts from its store.
- mobility (convoy): every few seconds each vehicle drifts around its slot; links whose
  ends are further apart than the radio range drop, and come back when in range. When
  the faults stop the convoy closes up: every link of the topology is in range.
- workload: payments at a rate, from a random up device to a random other device;
  `offline-burst` sends most payments from the side a partition isolated;
  `cloned-device` copies a device (key and store) onto a second vehicle elsewhere in
  the convoy, and both pay at once from the same state (a fork); `revocations` has
  the authority revoke devices cut off from it, that go on signing (revoking.py).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio
import trio.lowlevel

from ..core.ids import Account
from .revoking import run_revocations
from .scenarios import EdgeSpec

if TYPE_CHECKING:
    from .world import Member, World

__all__ = ["run_faults", "run_mobility", "run_workload"]

MOBILITY_STEP = 5.0
MAX_PAYMENT = 200_00


def _episode(w: World, kind: str, start: float, end: float, **detail: object) -> None:
    from .world import Episode

    w.episodes.append(Episode(kind=kind, start=round(start, 3), end=round(end, 3),
                              detail=detail))


# ---------------------------------------------------------------- faults

async def run_faults(w: World) -> None:
    f, d = w.params.faults, w.params.duration

    def rng(purpose: str) -> random.Random:
        # Drawn from the seed and the scenario's name: one seed does not put every
        # scenario's partitions, clogs and crashes at the same moments.
        return w.rng(f"{purpose}/{w.params.scenario}")
    plan = rng("faults")
    async with trio.open_nursery() as nursery:
        for k in range(f.partitions):
            start = plan.uniform(0.1, 0.6) * d
            end = min(start + plan.uniform(0.12, 0.25) * d, d)
            nursery.start_soon(_partition, w, start, end, rng(f"partition/{k}"))
        for k in range(f.clogs):
            nursery.start_soon(_clog, w, plan.uniform(0.1, 0.5) * d, rng(f"clog/{k}"))
        held: set[int] = set()  # members a crash task has taken and not restarted yet
        for k in range(f.crashes):
            at = plan.uniform(0.1, 0.8) * d
            nursery.start_soon(_crash, w, at, plan.uniform(5.0, 30.0), rng(f"crash/{k}"),
                               held)


async def _partition(w: World, start: float, end: float, rng: random.Random) -> None:
    await trio.sleep_until(start)
    axes = sorted({m.axis for m in w.members})
    if len(axes) < 2:
        return
    j = rng.randint(len(axes) // 4, max(len(axes) // 4, 3 * len(axes) // 4 - 1))
    split = (axes[j] + axes[j + 1]) / 2
    side = [m.axis < split for m in w.members]
    bridge = None
    if w.params.faults.bridge:
        bridge = min(w.members, key=lambda m: (abs(m.axis - split), m.index)).index
    cut = [e for e in w.edges if side[e.a] != side[e.b] and bridge not in (e.a, e.b)]
    for e in cut:
        w.stall(e, True)
    left = sum(side)
    small = [m.index for m in w.members if side[m.index] == (left <= len(side) - left)
             and m.index != bridge]
    w.bursting.append(small)
    await trio.sleep_until(end)
    w.bursting.remove(small)
    for e in cut:
        w.stall(e, False)
    _episode(w, "partition", start, end, sides=[left, len(side) - left], links_cut=len(cut),
             bridge=None if bridge is None else w.members[bridge].name)


async def _clog(w: World, start: float, rng: random.Random) -> None:
    d = w.params.duration
    count = max(1, min(12, len(w.edges) // 4))
    hold, step = 5.0, 2.0
    if start + 2 * count * step + hold > d:
        step = max(0.05, (d - start - hold) / (2 * count + 1))
    await trio.sleep_until(start)
    chosen = rng.sample(range(len(w.edges)), count)
    for i in chosen:
        await trio.sleep(step)
        w.stall(w.edges[i], True)
    await trio.sleep(hold)
    order = list(chosen)
    rng.shuffle(order)
    for i in order:
        await trio.sleep(step)
        w.stall(w.edges[i], False)
    _episode(w, "clog", start, trio.current_time(), links=count)


async def _crash(w: World, at: float, down: float, rng: random.Random,
                 held: set[int]) -> None:
    d = w.params.duration
    await trio.sleep_until(at)
    # Not a member another crash task holds (waiting for the power cut it armed, or to
    # restart it): both would restart it, two nodes over one store.
    candidates = [m for m in w.members if m.role != "authority" and m.up
                  and m.index not in held]
    if not candidates or trio.current_time() >= d:
        return
    m = rng.choice(candidates)
    held.add(m.index)
    mid_batch = rng.random() < w.params.faults.mid_batch
    if mid_batch:
        m.store.power_cut_after = rng.randint(0, 3)
        with trio.move_on_after(min(5.0, d - trio.current_time())):
            await m.crashed.wait()
        mid_batch = not m.up
    w.crash(m)
    crashed_at = trio.current_time()
    await trio.sleep_until(min(crashed_at + down, d))
    w.start(m)
    held.discard(m.index)
    _episode(w, "crash", crashed_at, trio.current_time(), node=m.name, mid_batch=mid_batch)


# ---------------------------------------------------------------- movement

async def run_mobility(w: World) -> None:
    """Convoy vehicles drift around their slots; links follow the radio range."""
    if not w.params.faults.mobility:
        return
    rng = w.rng("mobility")
    topo = w.topology
    assert topo.radio_range is not None
    spacing, reach = topo.spacing, topo.radio_range
    offsets = [0.0] * len(topo.members)

    def update() -> None:
        for e in w.edges:
            a, b = w.position_of[e.a], w.position_of[e.b]
            apart = abs((topo.members[a].axis - topo.members[b].axis) * spacing
                        + offsets[a] - offsets[b])
            w.set_in_range(e, apart <= reach)

    while True:
        await trio.sleep(MOBILITY_STEP)
        if trio.current_time() >= w.params.duration:
            # The convoy closes up at the depot: every link of the topology is in range
            # again, as without mobility. Back in their driving slots only the next
            # vehicle would be (two slots is beyond the radio range), and the convoy
            # would be a line in which any revoked vehicle, which no honest one syncs
            # with, cuts the honest vehicles behind it off for good.
            for e in w.edges:
                w.set_in_range(e, True)
            return
        for i in range(len(offsets)):
            offsets[i] = max(-0.5 * spacing, min(0.5 * spacing,
                                                 offsets[i] + rng.gauss(0.0, 0.2 * spacing)))
        update()


# ---------------------------------------------------------------- workload

async def run_workload(w: World) -> None:
    p = w.params
    rng = w.rng("workload")
    async with trio.open_nursery() as nursery:
        if p.workload == "cloned-device":
            nursery.start_soon(_clone, w, w.rng("clone"))
        elif p.workload == "revocations":
            nursery.start_soon(run_revocations, w, w.rng("revocations"))
        payees = [Account(device=m.device) for m in w.members
                  if m.role == "device" and m.clone_of is None]
        t, n = 0.0, 0
        while True:
            t += rng.expovariate(p.rate)
            if t >= p.duration:
                break
            await trio.sleep_until(t)
            payer = _payer(w, rng)
            if payer is None:
                w.payments["no_payer"] += 1
                continue
            payee = rng.choice(payees)
            if payee.device == payer.device:
                payee = payees[(payees.index(payee) + 1) % len(payees)]
            n += 1
            w.pay(payer, payee, rng.randint(1_00, MAX_PAYMENT), f"pay-{n}")


def _payer(w: World, rng: random.Random) -> Member | None:
    up = [m for m in w.members if m.role == "device" and m.up]
    if w.params.workload == "offline-burst" and w.bursting and rng.random() < 0.7:
        group = w.bursting[-1]
        bursting = [w.members[i] for i in group if w.members[i].up
                    and w.members[i].role == "device"]
        up = bursting or up
    return rng.choice(up) if up else None


async def _clone(w: World, rng: random.Random) -> None:
    """At a quarter of the run, a device's key and store are copied onto a second
    vehicle elsewhere. The original and the copy each pay at once, from the same state,
    so the chain forks (equivocation); both go on paying from the same account."""
    from .world import Member

    await trio.sleep_until(0.25 * w.params.duration)
    devices = [m for m in w.members if m.role == "device" and m.up]
    x = rng.choice(devices)
    near = {e.other(x.index) for e in w.edges_of[x.index]}
    y = rng.choice([m for m in devices if m is not x and m.index not in near] or devices)
    idx = len(w.members)
    twin = Member(index=idx, name=f"{x.name}-clone", role="device", key=x.key,
                  store=x.store.copy(owner=idx), skew_ms=x.skew_ms, rng=w.rng(f"node/{idx}"),
                  ephemerals=w.rng(f"ephemeral/{idx}"), axis=y.axis, clone_of=x.index)
    twin.store.observer = w.observe
    w.add_member(twin, position_of=w.position_of[y.index])
    w.checker.forked_authors.add(x.device)
    for e in list(w.edges_of[y.index]):
        other = e.other(y.index)
        if other != x.index:
            w.add_edge(EdgeSpec(a=idx, b=other, kind=e.kind)).in_range = e.in_range
    w.add_edge(EdgeSpec(a=idx, b=y.index, kind=w.edges_of[y.index][0].kind))
    w.start(twin)
    while not twin.up:
        await trio.lowlevel.checkpoint()
    # Both sign before either hears of the other (no await between them, and the copy
    # has not connected yet). Left to the workload, the copy could hear of the
    # original's payments before its own and simply extend the chain: no fork at all
    # (seed 37 did so, and the evidence check had nothing to find).
    payees = [Account(device=m.device) for m in w.members
              if m.role == "device" and m.clone_of is None and m is not x]
    for k, payer in enumerate((x, twin)):
        payee, amount = rng.choice(payees), rng.randint(1_00, MAX_PAYMENT)
        if payer.up:
            w.pay(payer, payee, amount, f"cloned-{k}")
    now = trio.current_time()
    _episode(w, "clone", now, now, node=x.name, clone=twin.name, beside=y.name)
