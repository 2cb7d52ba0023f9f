"""The simulator: its links on fake time, whole small runs with every check passing,
byte-identical reports from one seed, and the `simulate` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import trio
import trio.testing

from p2p_ledger.cli import simulate
from p2p_ledger.core.ledger import Replica
from p2p_ledger.errors import LocalError
from p2p_ledger.sim.checks import Checker
from p2p_ledger.sim.clock import SimClock
from p2p_ledger.sim.links import LinkProfile, LinkStats, SimConnection
from p2p_ledger.sim.report import write_report
from p2p_ledger.sim.scenarios import SCENARIOS, params_for
from p2p_ledger.sim.store import SimStore
from p2p_ledger.sim.world import World
from tests.helpers import T0, make_world

# ---------------------------------------------------------------- links


@pytest.fixture
def sim_clock() -> SimClock:
    """The simulator's clock, which the links' timers run on (pytest-trio runs a test
    on the clock a fixture returns)."""
    return SimClock()


def _conn(**profile: float) -> SimConnection:
    import random

    return SimConnection(LinkProfile(**profile), random.Random(1), LinkStats())


async def test_latency_and_bandwidth_are_exact(sim_clock: SimClock) -> None:
    conn = _conn(latency=0.05, bandwidth=100_000)
    await conn.a.send_all(b"x" * 10_000)  # 0.1 s on the wire, within the send buffer
    assert trio.current_time() == 0
    assert await conn.b.receive_some(65536) == b"x" * 10_000
    assert trio.current_time() == pytest.approx(0.15)


async def test_a_sender_blocks_only_while_its_send_buffer_is_full(
        sim_clock: SimClock) -> None:
    """As over a socket: `send_all` returns once at most SEND_BUFFER bytes are left to
    transmit; the chunks still arrive one transmission time after another."""
    from p2p_ledger.sim.links import SEND_BUFFER

    conn = _conn(latency=0.05, bandwidth=100_000)
    chunk = b"z" * (SEND_BUFFER // 2)
    for _ in range(2):
        await conn.a.send_all(chunk)
    assert trio.current_time() == 0  # exactly full
    await conn.a.send_all(chunk)  # waits until one chunk's worth has gone out
    assert trio.current_time() == pytest.approx(len(chunk) / 100_000)
    arrived = []
    for _ in range(3):
        assert await conn.b.receive_some(None) == chunk
        arrived.append(trio.current_time())
    assert arrived == pytest.approx([(i + 1) * len(chunk) / 100_000 + 0.05 for i in range(3)])


async def test_stream_delivers_in_order_and_counts_frames(
        sim_clock: SimClock) -> None:
    conn = _conn(latency=0.01, jitter=0.5)
    frames = [len(b).to_bytes(4, "big") + b for b in (b"one", b"two!", b"three")]
    for f in frames:
        await conn.a.send_all(f)
    got = b""
    while len(got) < sum(map(len, frames)):
        got += await conn.b.receive_some(3)  # small reads split chunks
    assert got == b"".join(frames)
    assert conn.stats.frames == 3


async def test_loss_delays_and_a_stall_holds_bytes(
        sim_clock: SimClock) -> None:
    lossy = _conn(latency=0.01, loss=0.5)
    await lossy.a.send_all(b"y" * 50_000)
    await lossy.b.receive_some(None)
    assert lossy.stats.retransmissions > 0
    assert trio.current_time() >= 0.2  # at least one retransmission timeout
    conn = _conn(latency=0.01)
    conn.stall(True)
    await conn.a.send_all(b"held")
    with trio.move_on_after(30):
        await conn.b.receive_some(10)
        pytest.fail("a stalled link delivered")
    conn.stall(False)
    assert await conn.b.receive_some(10) == b"held"


async def test_reset_breaks_both_ends(sim_clock: SimClock) -> None:
    conn = _conn()
    conn.reset()
    with pytest.raises(trio.BrokenResourceError):
        await conn.a.send_all(b"z")
    with pytest.raises(trio.BrokenResourceError):
        await conn.b.receive_some(10)


async def test_a_link_needs_the_simulators_clock(
        autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(RuntimeError, match="SimClock"):
        _conn()


async def test_one_reader_and_one_sender_at_a_time(sim_clock: SimClock) -> None:
    """As on trio's streams: a second task reading (or blocked sending) on the same end
    while the first waits is an error, not a wait that steals the first one's wake-up."""
    conn = _conn(latency=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.b.receive_some, 10)
        await trio.sleep(0.1)
        with pytest.raises(trio.BusyResourceError):
            await conn.b.receive_some(10)
        nursery.cancel_scope.cancel()
    conn.stall(True)
    from p2p_ledger.sim.links import SEND_WINDOW
    await conn.a.send_all(b"w" * (SEND_WINDOW + 1))  # queued: the next send blocks
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.a.send_all, b"w")
        await trio.sleep(0.1)
        with pytest.raises(trio.BusyResourceError):
            await conn.a.send_all(b"w")
        nursery.cancel_scope.cancel()


async def test_clock_timers_wake_each_task_at_its_time(sim_clock: SimClock) -> None:
    """The clock jumps to the earlier of its own next timer and trio's next deadline;
    a timer that finds its wake-up already woken (or cancelled) does nothing."""
    from p2p_ledger.sim.clock import Wakeup

    woke: list[tuple[str, float]] = []

    async def timed(name: str, at: float) -> None:
        wakeup = Wakeup()
        sim_clock.wake_at(at, wakeup)
        await wakeup.wait()
        woke.append((name, trio.current_time()))

    async def slept(name: str, at: float) -> None:
        await trio.sleep_until(at)
        woke.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for name, at in (("t3", 3.0), ("t1", 1.0), ("t2", 2.0)):
            nursery.start_soon(timed, name, at)
        nursery.start_soon(slept, "s1.5", 1.5)
        nursery.start_soon(slept, "s2", 2.0)
    assert sorted(woke, key=lambda w: (w[1], w[0])) == [
        ("t1", 1.0), ("s1.5", 1.5), ("s2", 2.0), ("t2", 2.0), ("t3", 3.0)]

    # Cancelled while waiting: its timer (at 5) must not wake the task's next wait.
    early = Wakeup()
    sim_clock.wake_at(5.0, early)
    with trio.move_on_at(4.0):
        await early.wait()
    assert trio.current_time() == 4.0
    later = Wakeup()
    sim_clock.wake_at(10.0, later)
    await later.wait()
    assert trio.current_time() == 10.0
    early.wake()  # woken or cancelled already: nothing happens
    later.wake()
    await trio.sleep(1)
    assert trio.current_time() == 11.0


# ---------------------------------------------------------------- the convergence check

def test_convergence_asks_honest_replicas_for_what_any_honest_replica_holds() -> None:
    """Members: the authority, d0 (revoked below), d1. What the honest replicas must
    each hold is what any of them holds; a record that only revoked replicas hold is
    excused only above its device's cut-off."""
    world = make_world(devices=("d0", "d1"), seed="sim-checks")
    genesis = SimStore()
    auth = world.wallet("authority", Replica(world.network, genesis))
    with genesis.transaction():
        for name in ("d0", "d1"):
            auth.admit(world.device(name), now_ms=T0)
        auth.issue(world.account("d0"), 100_00, key="cash-in-d0", now_ms=T0)
    devices = [bytes(world.authority_key.verify_key), world.device("d0"), world.device("d1")]
    checker = Checker(["authority", "d0", "d1"], devices, lambda: 1.0)
    checker.genesis(genesis)
    stores = [genesis.copy(owner=i) for i in range(3)]
    for store in stores:
        store.observer = lambda st, rids: checker.on_commit(st.owner, st, rids, True)
    replicas = [Replica(world.network, store) for store in stores]
    base = genesis.totals().records

    d0 = world.wallet("d0", replicas[1])
    paid = []
    for n in (1, 2):
        with stores[1].transaction():
            paid.append(d0.pay(world.account("d1"), 10_00, key=f"p{n}",
                                now_ms=T0 + n).record_id)
    # d0 is honest so far: d1 and the authority must get its payments.
    assert checker.needed() == base + 2
    assert checker.stranded() == []

    with stores[0].transaction():
        auth = world.wallet("authority", replicas[0])
        auth.revoke(world.device("d0"), after_seq=1, now_ms=T0 + 3)
    assert [checker.honest(i) for i in range(3)] == [True, False, True]
    # Only the revocation is needed now; d0's payments, held by d0 alone, are not,
    # but the one at its cut-off (seq 1) should have reached an honest replica.
    assert checker.needed() == base + 1
    assert dict(checker.stranded()) == {
        paid[0]: "a revoked device's record at seq 1, not above its cut-off 1, that no "
                 "honest replica holds",
        paid[1]: None}

    with stores[2].transaction():
        replicas[2].receive_many([stores[1].raw(paid[0]) or b""], now_ms=T0 + 4)
    # d1, honest, accepted d0's first payment: every honest replica must hold it.
    assert checker.needed() == base + 2
    assert checker.stranded() == [(paid[1], None)]


# ---------------------------------------------------------------- whole runs

def _run(name: str, tmp: Path, **overrides: object) -> dict[str, object]:
    world = World(params_for(name, **overrides))  # type: ignore[arg-type]
    world.run()
    return write_report(world, tmp, plot=False)


def test_convoy_with_partitions_converges_with_every_check_passing(tmp_path: Path) -> None:
    report = _run("convoy", tmp_path, seed=3, nodes=12, duration=40.0, rate=3.0,
                  faults={"partitions": 2, "bridge": True})
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert set(checks) == {"conservation", "verdicts", "validity", "convergence"}
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["verdicts"]["checked"] > 0
    timeline = report["timeline"]
    assert isinstance(timeline, dict)
    assert 0 <= timeline["time_to_convergence_s"] <= timeline["bound_s"]
    assert [f["kind"] for f in report["faults"]] == ["partition", "partition"]  # type: ignore
    assert report["final_state_hash"]
    md = (tmp_path / "report.md").read_text()
    assert "All checks passed" in md
    assert "| convergence | pass |" in md


def test_same_seed_gives_the_same_report_bytes(tmp_path: Path) -> None:
    """The chaos scenario (loss, corruption, partitions with a bridge, clogging,
    crashes mid-batch, clock skew) twice with one seed, once with another."""
    overrides = {"nodes": 8, "duration": 30.0, "rate": 3.0}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        report = _run("chaos", tmp_path / name, seed=seed, **overrides)
        assert report["passed"], report["checks"]
    first = (tmp_path / "a" / "report.json").read_bytes()
    assert first == (tmp_path / "b" / "report.json").read_bytes()
    assert first != (tmp_path / "c" / "report.json").read_bytes()
    kinds = {f["kind"] for f in json.loads(first)["faults"]}
    assert {"partition", "crash", "clog"} <= kinds


def test_the_sessions_keys_come_from_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handshake's X25519 keys salt the summary sketch (sketch.py), whose collisions
    shape the traffic, so the simulator draws them from the seed: at 100 nodes two runs
    of one seed differed in bytes and messages while the keys came from the OS."""
    from p2p_ledger.protocol import crypto
    from p2p_ledger.sim import members

    drawn: list[bytes] = []

    class Recorded(crypto.Ephemeral):
        def __init__(self, secret: bytes | None = None) -> None:
            super().__init__(secret)
            drawn.append(self.public)

    monkeypatch.setattr(members, "Ephemeral", Recorded)
    runs = []
    for seed in (2, 2, 3):
        drawn.clear()
        World(params_for("convoy", seed=seed, nodes=5, duration=15.0, rate=1.0)).run()
        runs.append(list(drawn))
    assert len(runs[0]) >= 4  # every session of the run drew its key here
    assert len(set(runs[0])) == len(runs[0])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("name", ["site", "hub-tree", "offline-burst", "cloned-device",
                                  "revocations"])
def test_scenario_runs_small_and_passes(name: str, tmp_path: Path) -> None:
    report = _run(name, tmp_path, seed=2, nodes=10, duration=30.0, rate=2.0)
    assert report["passed"], report["checks"]
    names = [c["name"] for c in report["checks"]]  # type: ignore[attr-defined]
    if name == "cloned-device":
        assert "evidence" in names
    if name == "revocations":
        workload = report["workload"]
        assert isinstance(workload, dict)
        assert workload["revoked_devices"] >= 1
        assert workload["records_after_revocation"]  # the revoked device signed


def test_revoked_clone_inside_the_convoy_leaves_the_honest_vehicles_converged(
        tmp_path: Path) -> None:
    """The cloned device's original sits inside the convoy and is revoked once the
    authority sees the fork. On 50d1dbf this run failed as seed 7 of the full scenario
    did: the check wanted the revoked pair to converge too, and the closed-up convoy
    was a line, so the honest vehicles behind the revoked one never heard from the
    front again."""
    world = World(params_for("cloned-device", seed=0, nodes=10, duration=30.0, rate=2.0,
                             bound=30.0))
    world.run()
    report = write_report(world, tmp_path, plot=False)
    assert report["passed"], report["checks"]
    twin = world.members[-1]
    assert twin.clone_of is not None
    original = world.members[twin.clone_of]
    revoked = [m for m in world.members if not world.checker.honest(m.index)]
    assert revoked == [original, twin]
    assert 0 < original.index < len(world.topology.members) - 1  # honest trucks behind it
    assert all(e.in_range for e in world.edges)  # the convoy closed up
    honest = world.honest()
    assert len({Replica(world.network, m.store).state_hash() for m in honest}) == 1
    assert all(world.checker.counts[m.index] == world.checker.needed() for m in honest)
    assert report["per_node"][original.index]["revoked"] is True  # type: ignore[index]


# ---------------------------------------------------------------- the command

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="p2p-ledger")
    sub = parser.add_subparsers(dest="command", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--json", action="store_true")
    simulate.add_parser(sub, data)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SCENARIOS)


def test_simulate_writes_report_and_plot(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "out"
    code = _cli(["simulate", "--scenario", "geometric", "--nodes", "8", "--duration", "20",
                 "--rate", "2", "--seed", "4", "--loss", "0.05", "--report", str(out_dir)])
    assert code == 0
    out = capsys.readouterr().out
    assert "pass  convergence" in out
    assert "events per wall second" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["parameters"]["faults"]["loss"] == 0.05
    assert (out_dir / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="simulate --list"):
        _cli(["simulate", "--scenario", "nowhere", "--report", str(tmp_path)])


# ---------------------------------------------------------------- the plot

def test_overlapping_fault_episodes_get_their_own_lanes() -> None:
    from p2p_ledger.sim.plot import lanes

    faults = [{"kind": "partition", "start_s": 10.0, "end_s": 40.0, "sides": [3, 4]},
              {"kind": "partition", "start_s": 30.0, "end_s": 50.0, "sides": [2, 5]},
              {"kind": "partition", "start_s": 60.0, "end_s": 70.0, "sides": [2, 5]},
              {"kind": "crash", "start_s": 5.0, "end_s": 5.5, "node": "truck-001"},
              # its bar ends before the next starts, but its label does not
              {"kind": "crash", "start_s": 6.0, "end_s": 9.0, "node": "truck-002"},
              {"kind": "crash", "start_s": 50.0, "end_s": 55.0, "node": "truck-003"}]
    placed = {(f["kind"], f["start_s"]): lane for _, lane, f in lanes(faults, 100.0)}
    assert placed == {("partition", 10.0): 0, ("partition", 30.0): 1,
                      ("partition", 60.0): 0, ("crash", 5.0): 0, ("crash", 6.0): 1,
                      ("crash", 50.0): 0}


def test_the_plot_is_the_same_bytes_for_the_same_report(tmp_path: Path) -> None:
    from p2p_ledger.sim.plot import plot_convergence

    world = World(params_for("chaos", seed=5, nodes=6, duration=20.0, rate=2.0))
    world.run()
    report = write_report(world, tmp_path, plot=False)
    series = report["series"]
    assert isinstance(series, dict)
    assert len(series["missing_p50"]) == len(series["t"])
    assert all(a <= b <= c for a, b, c in zip(series["missing_p50"], series["missing_p95"],
                                              series["missing_max"], strict=True))
    plot_convergence(report, tmp_path / "a.png")
    plot_convergence(json.loads(json.dumps(report)), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_each_signature_is_checked_once_and_every_delivery_is_counted() -> None:
    """The simulated replicas check signatures through the shared checks (each record's
    once in the process: before issue 14 their verifier bypassed them), and the flood's
    cost is counted: every record reaches every other replica at least once."""
    world = World(params_for("convoy", seed=4, nodes=8, duration=20.0, rate=2.0))
    world.run()
    assert world.converged_at is not None
    genesis = world.genesis_stored // len(world.members)
    created = len(world.checker.created) - genesis
    assert created > 10
    delivered, useful = world.deliveries()
    assert useful == (len(world.members) - 1) * created  # each arrival, once per replica
    assert delivered >= useful
    cache = world.cache
    assert cache is not None
    assert cache.misses <= created  # a signature is checked in full once at most
    assert cache.hits + cache.misses >= useful  # every arrival went through the cache
