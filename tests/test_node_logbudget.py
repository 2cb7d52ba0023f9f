"""Log lines that connections nobody authenticated can cause are budgeted (issue: 40,000
connect-and-close wrote 40,526 WARNING lines): at most LINES_PER_MINUTE of each kind
a minute on the node's clock, then one line with the count. Admitted peers' sessions
are logged as before."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.node.logbudget import LINES_PER_MINUTE, WINDOW, LogBudget
from p2p_ledger.node.node import Node, NodeConfig
from tests.node_helpers import Fleet, make_fleet

NODE_LOG = "p2p_ledger.node"


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


async def connect_and_close(node: Node, address: str) -> None:
    """A connection that closes before saying a word (during the handshake)."""
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.aclose()
    await node.run_session(ours, initiator=False, address=address)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == NODE_LOG and r.levelno >= logging.WARNING]


async def test_failed_handshakes_are_logged_within_a_budget(
        autojump_clock: MockClock, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    hub = fleet.node("hub", role="hub")
    for i in range(500):
        await connect_and_close(hub, f"mem://x{i}")
    assert trio.current_time() < 60  # all within the first minute
    logged = lines(caplog)
    assert len(logged) == LINES_PER_MINUTE, logged[:3]
    assert all("closed by the peer" in line for line in logged)
    assert hub.counters.sessions_ended == 500  # counted, whether logged or not
    autojump_clock.jump(60)
    await connect_and_close(hub, "mem://late")
    after = lines(caplog)[LINES_PER_MINUTE:]
    assert after == [f"handshake failures: and {500 - LINES_PER_MINUTE} more in the last "
                     "minute (not logged)",
                     "session ?@mem://late closed by the peer: the peer closed the connection"]


async def test_turned_away_connections_are_logged_within_a_budget(
        autojump_clock: MockClock, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_handshakes=0))
    for i in range(300):
        await connect_and_close(hub, f"mem://x{i}")
    logged = lines(caplog)
    assert len(logged) == LINES_PER_MINUTE, logged[:3]
    assert all(line.startswith("refused a connection from mem://x") for line in logged)
    autojump_clock.jump(61)
    await connect_and_close(hub, "mem://late")
    assert lines(caplog)[LINES_PER_MINUTE:] == [
        f"refused connections: and {300 - LINES_PER_MINUTE} more in the last minute "
        "(not logged); the most from mem://x20 (1), mem://x21 (1), mem://x22 (1), "
        f"{300 - LINES_PER_MINUTE - 3} from elsewhere",
        "refused a connection from mem://late without a word: node busy: 0 handshakes in "
        "progress, the most it runs"]


def test_a_budget_counts_each_kind_apart(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = logging.getLogger("tests.logbudget")
    caplog.set_level(logging.INFO, logger="tests.logbudget")
    budget = LogBudget(log, per_window=2, clock=lambda: now[0])
    for i in range(5):
        budget.log("a", logging.WARNING, "a %d", i)
        budget.log("b", logging.INFO, "b %d", i)
    assert [r.getMessage() for r in caplog.records] == ["a 0", "b 0", "a 1", "b 1"]
    now[0] = 59.9
    budget.log("a", logging.WARNING, "a late")  # still the first minute: counted
    now[0] = 60.0
    budget.log("b", logging.WARNING, "b next")
    assert [r.getMessage() for r in caplog.records][4:] == [
        "a: and 4 more in the last minute (not logged)",
        "b: and 3 more in the last minute (not logged)", "b next"]


async def test_a_flood_that_stops_has_its_count_logged_when_its_minute_ends(
        autojump_clock: MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """The count of lines not logged waited for the next line of any kind: after a
    flood that stopped, the operator never learned how many there were. `run` logs it
    when the window ends, on trio's clock, with no line following."""
    log = logging.getLogger("tests.logbudget")
    caplog.set_level(logging.INFO, logger="tests.logbudget")
    budget = LogBudget(log, per_window=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(budget.run)
        await trio.sleep(100)  # nothing to count: it waits, logging nothing
        for i in range(5):
            budget.log("a", logging.WARNING, "a %d", i)
        await trio.sleep(30)
        budget.log("b", logging.WARNING, "b 0")  # a kind within its budget: no count
        await trio.sleep(29.9)
        assert [r.getMessage() for r in caplog.records] == ["a 0", "a 1", "b 0"]
        await trio.sleep(0.2)  # the window (from 100 s) ended at 160 s
        assert [r.getMessage() for r in caplog.records][3:] == [
            "a: and 3 more in the last minute (not logged)"]
        for i in range(3):  # a second flood, later: its count at its own minute's end
            budget.log("a", logging.WARNING, "a %d", i)
        await trio.sleep(WINDOW + 0.1)
        assert [r.getMessage() for r in caplog.records][4:] == [
            "a 0", "a 1", "a: and 1 more in the last minute (not logged)"]
        await trio.sleep(10 * WINDOW)  # and nothing more, nor any busy loop
        assert len(caplog.records) == 7
        nursery.cancel_scope.cancel()


async def test_the_count_of_turned_away_connections_names_the_host_that_hit_the_bound(
        autojump_clock: MockClock, fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """Many devices behind one NAT reach the hub from one host: past its per-host bound
    on handshakes, connections are turned away. The node's count of the lines it did not
    log, when the minute ends (`serve_tcp` runs `report_unlogged`), says which host."""
    caplog.set_level(logging.INFO, logger=NODE_LOG)
    hub = fleet.node("hub", role="hub", config=NodeConfig(max_handshakes_per_host=1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.report_unlogged)
        held, _ = trio.testing.memory_stream_pair()
        nursery.start_soon(functools.partial(hub.run_session, held, initiator=False,
                                             address="tcp://10.6.6.6:1"))
        await trio.testing.wait_all_tasks_blocked()
        for port in range(2, 102):
            await connect_and_close(hub, f"tcp://10.6.6.6:{port}")
        await trio.sleep(WINDOW + 0.1)
        logged = [line for line in lines(caplog) if "refused" in line]
        assert logged[0] == ("refused a connection from tcp://10.6.6.6:2 without a word: "
                             "node busy: 1 handshakes in progress from tcp://10.6.6.6, the "
                             "most it runs from one host")
        assert logged[LINES_PER_MINUTE:] == [
            f"refused connections: and {100 - LINES_PER_MINUTE} more in the last minute "
            f"(not logged); the most from tcp://10.6.6.6 ({100 - LINES_PER_MINUTE})"]
        nursery.cancel_scope.cancel()
