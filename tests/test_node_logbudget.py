"""Log lines that connections nobody authenticated can cause are budgeted (issue: 40,000
connect-and-close wrote 40,526 WARNING lines): at most LINES_PER_MINUTE of each kind
a minute on the node's clock, then one line with the count. Admitted peers' sessions
are logged as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from p2p_ledger.node.logbudget import LINES_PER_MINUTE, LogBudget
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
        "(not logged)",
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
