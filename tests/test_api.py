"""The Python API for applications: `open_home` and `Ledger`, `Node.sync`, record feeds.

Homes are real (tmp_path, SQLite); the in-memory peers run on
`MockClock(autojump_threshold=0)`, so timeouts cost no real time. The TCP tests use
loopback and the real clock, bounded by `fail_after`.
"""

from __future__ import annotations

import functools
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import p2p_ledger
from p2p_ledger import (
    FeedOverflow,
    Issue,
    KeyFileError,
    Ledger,
    LocalError,
    Node,
    NodeConfig,
    PaymentRefused,
    RecordStored,
    SyncFailed,
    Transfer,
    TransportError,
    Verdict,
    WrongPassphrase,
    create_network,
    join_network,
    open_home,
)
from p2p_ledger.node.peer import MIN_PUSH_DELAY

ROOT = Path(__file__).resolve().parent.parent
QUICK = NodeConfig(verify_in_process=False)  # batches here are small: no child process


@dataclass
class Site:
    authority: Ledger
    alice: Ledger
    bob: Ledger


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A network: the authority admitted alice and bob and issued 100.00 to alice;
    only the authority's home holds those records yet."""
    with (create_network(tmp_path / "A", name="Site 7", currency="AED",
                         passphrase="authority pass") as authority,
          join_network(tmp_path / "D1", authority.network, passphrase="alice pass") as alice,
          join_network(tmp_path / "D2", authority.network, passphrase=None) as bob):
        authority.admit(alice.device_id)
        authority.admit(bob.device)
        authority.issue(alice.account(), 100_00, key="cash-in-1")
        yield Site(authority, alice, bob)


def transfers(stored: list[RecordStored]) -> list[Transfer]:
    return [s.body for s in stored if isinstance(s.body, Transfer)]


# ---------------------------------------------------------------- the surface

def test_all_names_resolve_and_importing_the_package_does_not_import_trio() -> None:
    assert sorted(set(p2p_ledger.__all__)) == sorted(p2p_ledger.__all__)
    assert [n for n in p2p_ledger.__all__ if not hasattr(p2p_ledger, n)] == []
    code = ("import sys, p2p_ledger; assert 'trio' not in sys.modules; "
            "from p2p_ledger import Node, open_home; assert 'trio' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nodes'"):
        _ = p2p_ledger.Nodes  # type: ignore[attr-defined]


def test_the_package_is_typed() -> None:
    assert (Path(p2p_ledger.__file__).parent / "py.typed").is_file()


# ---------------------------------------------------------------- homes

def test_open_home_needs_the_passphrase_and_finds_the_same_device(site: Site) -> None:
    path, device = site.alice.home.path, site.alice.device_id
    with pytest.raises(WrongPassphrase):
        open_home(path, passphrase="not it")
    with pytest.raises(KeyFileError, match="sealed: give its passphrase"):
        open_home(path)
    with open_home(path, passphrase="alice pass") as again:
        assert again.device_id == device
        assert again.network == site.authority.network
    with open_home(site.bob.home.path) as unsealed:  # stored with passphrase=None
        assert unsealed.device == site.bob.device


def test_a_closed_ledger_has_closed_its_store(tmp_path: Path) -> None:
    ledger = create_network(tmp_path / "A", name="n", currency="AED", passphrase=None)
    with ledger:
        assert ledger.balance() == 0
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        ledger.balance()
    ledger.close()  # a second close is harmless


def test_making_a_home_refuses_an_occupied_one_and_writes_nothing_on_bad_input(
        tmp_path: Path, site: Site) -> None:
    with pytest.raises(LocalError, match="already has"):
        create_network(site.alice.home.path, name="n", currency="AED", passphrase=None)
    with pytest.raises(LocalError, match="already has"):
        join_network(site.authority.home.path, site.alice.network, passphrase=None)
    with pytest.raises(LocalError):
        create_network(tmp_path / "new", name="n", currency="XYZ", passphrase=None)
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalError, match="is a file"):
        join_network(tmp_path / "file", site.alice.network, passphrase=None)


# ---------------------------------------------------------------- writes

def test_pay_issue_admit_and_their_refusals(site: Site) -> None:
    auth = site.authority
    assert auth.balance(site.alice.account()) == 100_00
    assert auth.format(auth.balance(f"{site.alice.device_id}/main")) == "100.00 AED"
    again = auth.issue(site.alice.account(), 100_00, key="cash-in-1")
    assert again.verdict is Verdict.DUPLICATE
    with pytest.raises(PaymentRefused, match="different payment"):
        auth.issue(site.alice.account(), 5_00, key="cash-in-1")
    with pytest.raises(LocalError, match="only the network authority"):
        site.bob.issue(site.bob.account(), 1_00)
    with pytest.raises(LocalError, match="not admitted yet"):
        site.alice.pay(site.bob.device_id, 1_00)  # its admit has not reached it yet


async def test_sync_with_a_node_of_this_process_then_pay_offline(
        autojump_clock: MockClock, site: Site) -> None:
    auth, alice, bob = (x.node(config=QUICK) for x in (site.authority, site.alice, site.bob))
    stats = await alice.sync(auth)
    assert stats.synced
    assert (stats.records_in, stats.records_out) == (3, 0)
    assert stats.peer == site.authority.device_id
    paid = site.alice.pay(site.bob.device_id, 12_50, key="sale-1", memo="fuel")
    assert paid.verdict is Verdict.APPLIED
    assert site.alice.pay(site.bob.device_id, 12_50, key="sale-1", memo="fuel") == \
        type(paid)(record_id=paid.record_id, verdict=Verdict.DUPLICATE,
                   reason=f"already recorded as {paid.record_id.hex()} (applied)")
    with pytest.raises(PaymentRefused, match="insufficient funds"):
        site.alice.pay(site.bob.device_id, 90_00)
    stats = await alice.sync(bob)
    assert stats.stored_by_peer == stats.records_out == 4  # the authority's 3 and the payment
    assert site.bob.balance() == 12_50
    assert site.alice.balance() == 87_50


async def test_sync_over_a_stream_the_application_connected(
        autojump_clock: MockClock, site: Site) -> None:
    auth, bob = site.authority.node(config=QUICK), site.bob.node(config=QUICK)
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(auth.serve_stream, theirs, "mem://bob")
        stats = await bob.sync(ours)
    assert (stats.address, stats.records_in, stats.synced) == ("stream", 3, True)
    assert site.bob.replica.balance(site.alice.account()) == 100_00


async def test_sync_fails_unless_the_peer_stored_everything(
        autojump_clock: MockClock, site: Site) -> None:
    """Bob's clock is a day behind: the authority's records are from its future, so it
    refuses them, acknowledges them as not stored, and the sync fails with the stats."""
    day_ago = time.time_ns() // 1_000_000 - 86_400_000
    behind = Node(site.bob.replica, site.bob.wallet.key, config=QUICK, wall_ms=lambda: day_ago)
    with pytest.raises(SyncFailed, match="did not store 3 of the records") as failed:
        await site.authority.node(config=QUICK).sync(behind)
    assert failed.value.stats.records_out == 3
    assert failed.value.stats.unstored_by_peer == 3
    assert not failed.value.stats.synced
    assert site.bob.replica.balance(site.alice.account()) == 0


# ---------------------------------------------------------------- TCP

async def test_sync_over_tcp_with_a_node_serving(site: Site) -> None:
    hub = site.bob.node(config=QUICK)
    auth = site.authority.node(config=QUICK)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.serve_tcp, 0)
            stats = await auth.sync(f"tcp://127.0.0.1:{port}")
            nursery.cancel_scope.cancel()
    assert stats.synced
    assert stats.stored_by_peer == stats.records_out == 3
    assert site.bob.replica.balance(site.alice.account()) == 100_00


async def test_sync_refuses_what_cannot_be_reached(site: Site) -> None:
    node = site.alice.node(config=QUICK)
    with trio.fail_after(30), pytest.raises(TransportError, match="cannot reach"):
        await node.sync("tcp://127.0.0.1:1")
    with pytest.raises(LocalError, match="not a peer address"):
        await node.sync("http://hub.local/")
    with pytest.raises(ValueError, match="itself"):
        await node.sync(node)


# ---------------------------------------------------------------- feeds

async def test_feed_tells_records_from_peers_and_payments_signed_here(
        autojump_clock: MockClock, site: Site) -> None:
    auth, alice = site.authority.node(config=QUICK), site.alice.node(config=QUICK)
    with alice.subscribe() as feed:
        await alice.sync(auth)
        site.alice.pay(site.bob.device_id, 2_00, key="coffee")
        feed.close()
        seen = [s async for s in feed]
    assert [type(s.body).__name__ for s in seen] == ["Admit", "Admit", "Issue", "Transfer"]
    assert {s.verdict for s in seen} == {Verdict.APPLIED}
    assert [s.from_peer for s in seen] == [site.authority.device_id] * 3 + [None]
    assert transfers(seen)[0].key == "coffee"
    assert isinstance(seen[2].body, Issue)
    assert seen[2].body.amount == 100_00


async def test_a_payment_is_pushed_to_a_live_session_after_the_least_push_delay(
        autojump_clock: MockClock, site: Site) -> None:
    """The ledger tells its node: no store polling (`watch_store` is not running); the
    record waits in the outbox only the least push delay (specs/node.md section 2)."""
    hub, alice = site.bob.node(config=QUICK), site.alice.node(config=QUICK)
    await alice.sync(site.authority.node(config=QUICK))
    with hub.subscribe() as feed, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(hub.serve_stream, theirs, "mem://alice")
            nursery.start_soon(functools.partial(alice.run_session, ours, initiator=True,
                                                 address="mem://hub"))
            got = [await feed.__anext__() for _ in range(3)]  # the initial delta
            assert not transfers(got)
            start = trio.current_time()
            site.alice.pay(site.bob.device_id, 3_00, key="live")
            pushed = await feed.__anext__()
            assert 0.9 * MIN_PUSH_DELAY < trio.current_time() - start < MIN_PUSH_DELAY + 0.05
            nursery.cancel_scope.cancel()
    assert transfers([pushed])[0].key == "live"
    assert pushed.from_peer == site.alice.device_id


async def test_watch_store_publishes_what_another_process_wrote(
        autojump_clock: MockClock, site: Site) -> None:
    node = site.authority.node(config=QUICK)
    with node.subscribe() as feed, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node.watch_store)
            with open_home(site.authority.home.path, passphrase="authority pass") as other:
                other.issue(site.bob.account(), 7_00, key="elsewhere")
            stored = await feed.__anext__()
            nursery.cancel_scope.cancel()
    assert isinstance(stored.body, Issue)
    assert (stored.body.key, stored.from_peer) == ("elsewhere", None)


async def test_a_feed_read_too_slowly_overflows_after_what_it_held(
        autojump_clock: MockClock, site: Site) -> None:
    alice = site.alice.node(config=QUICK)
    with alice.subscribe(max_buffered=2) as feed:
        await alice.sync(site.authority.node(config=QUICK))
        assert feed.closed
        assert len([await feed.__anext__(), await feed.__anext__()]) == 2
        with pytest.raises(FeedOverflow, match="more than 2 stored records"):
            await feed.__anext__()
    with pytest.raises(ValueError, match="at least one"):
        alice.subscribe(max_buffered=0)


async def test_leaving_the_feed_unsubscribes(autojump_clock: MockClock, site: Site) -> None:
    node = site.authority.node(config=QUICK)
    with node.subscribe() as feed:
        pass
    site.authority.issue(site.bob.account(), 1_00)
    assert [s async for s in feed] == []
    with node.subscribe() as kept:
        site.authority.issue(site.bob.account(), 1_00)
        kept.close()
        assert len([s async for s in kept]) == 1
