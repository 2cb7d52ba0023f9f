"""The SQLite store's schema: a record's own movement kept in its row, and opening a
store written by the previous schema (2), which is migrated in one transaction.

`fixtures/store_schema2.sqlite3` was written by the schema-2 code (commit 464618c):
`test_stores.script` run over a `SqliteStore` of `test_stores.worlds`, then the file
VACUUMed to 1 KiB pages (journal mode DELETE) to keep it small. The same script run
today makes the same records (fixed keys and clock), so the migrated store must answer
every question exactly like a store that never was on schema 2.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Replica
from p2p_ledger.errors import StoreError
from p2p_ledger.storage.sqlite import SCHEMA_VERSION, SqliteStore
from p2p_ledger.storage.verify import verify_replica

from .helpers import T0, make_world
from .test_ledger import DEVICES
from .test_stores import script, snapshot, worlds

FIXTURE = Path(__file__).parent / "fixtures" / "store_schema2.sqlite3"


def _v2_copy(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(FIXTURE, path)
    return path


def _sql(path: Path, query: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_the_fixture_is_a_schema_2_store() -> None:
    assert _sql(FIXTURE, "SELECT value FROM info WHERE key = 'schema'") == [(2,)]
    columns = {c[1] for c in _sql(FIXTURE, "PRAGMA table_info(records)")}
    assert "own_account" not in columns
    assert SCHEMA_VERSION == 3


def test_a_schema_2_store_is_migrated_on_open_and_answers_as_a_new_one(
        tmp_path: Path) -> None:
    path = _v2_copy(tmp_path)
    moved = _sql(path, "SELECT count(*) FROM movements m JOIN records r ON r.ord = m.ord "
                       "WHERE m.idx = 0 AND m.device = r.author")[0][0]
    assert isinstance(moved, int)
    assert moved > 5  # payers' debits: transfers, cash-outs
    memory = make_world(devices=DEVICES)
    world = make_world(devices=DEVICES)
    migrated = Replica(world.network, SqliteStore(path, world.network.network_id))
    try:
        expected = snapshot(memory, script(memory).replica)
        got = snapshot(world, migrated)
        for name in expected:
            assert got[name] == expected[name], name
        problems, checked = verify_replica(migrated, tmp_path / "scratch.sqlite3",
                                           now_ms=T0 + 1_000)
        assert problems == []  # every derived table, records' rows included, as replayed
        assert checked == got["totals"].records  # type: ignore[attr-defined]
    finally:
        migrated.store.close()  # type: ignore[attr-defined]
    assert _sql(path, "SELECT value FROM info WHERE key = 'schema'") == [(3,)]
    assert _sql(path, "SELECT count(*) FROM records WHERE own_account IS NOT NULL") \
        == [(moved,)]
    assert _sql(path, "SELECT count(*) FROM movements m JOIN records r ON r.ord = m.ord "
                      "WHERE m.idx = 0 AND m.device = r.author") == [(0,)]


def test_a_migrated_store_has_the_schema_of_a_new_one(tmp_path: Path) -> None:
    path = _v2_copy(tmp_path)
    world = make_world(devices=DEVICES)
    SqliteStore(path, world.network.network_id).close()
    fresh = tmp_path / "fresh.sqlite3"
    SqliteStore(fresh, world.network.network_id).close()
    for table in ("records", "movements"):
        assert _sql(path, f"PRAGMA table_info({table})") \
            == _sql(fresh, f"PRAGMA table_info({table})")
    index = "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
    assert _sql(path, index) == _sql(fresh, index)


def test_a_failed_migration_leaves_the_schema_2_store_as_it_was(tmp_path: Path) -> None:
    """The last step fails (a trigger refuses the schema's new version): everything the
    migration did before it is rolled back, and the error is a typed StoreError."""
    path = _v2_copy(tmp_path)
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON info "
                       "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    finally:
        db.close()
    state = "SELECT * FROM {} ORDER BY 1, 2"
    before = {t: _sql(path, state.format(t)) for t in ("records", "movements", "info")}
    world = make_world(devices=DEVICES)
    with pytest.raises(StoreError, match="refused by the test"):
        SqliteStore(path, world.network.network_id)
    after = {t: _sql(path, state.format(t)) for t in ("records", "movements", "info")}
    assert after == before
    assert "own_account" not in {c[1] for c in _sql(path, "PRAGMA table_info(records)")}


def test_a_schema_2_store_of_another_network_is_refused_untouched(tmp_path: Path) -> None:
    path = _v2_copy(tmp_path)
    other = make_world(devices=DEVICES, seed="other")
    with pytest.raises(StoreError, match="another network"):
        SqliteStore(path, other.network.network_id)
    assert _sql(path, "SELECT value FROM info WHERE key = 'schema'") == [(2,)]


def test_own_movements_in_the_row_give_the_history_of_every_account(
        tmp_path: Path) -> None:
    """Transfers between two accounts of one device (both movements on the author's
    device: the first kept in the row, the second a movements row), an issue by the
    authority to its own account, and payments out of both: the same history,
    balances and verify result as the in-memory store."""
    memory, disk = worlds(tmp_path)
    results = []
    for world in (memory, disk):
        r = world.replica()
        auth, alice = world.wallet("authority", r), world.wallet("alice", r)
        savings = world.account("alice", "savings")
        treasury = Account(device=bytes(world.authority_key.verify_key), name="treasury")
        with r.store.transaction():
            auth.admit(world.device("alice"), now_ms=T0)
            auth.admit(world.device("bob"), now_ms=T0)
            auth.issue(world.account("alice"), 90_00, key="cash-in", now_ms=T0)
            auth.issue(treasury, 5_00, key="own", now_ms=T0 + 1)
            alice.pay(savings, 40_00, key="save", now_ms=T0 + 2)
            alice.pay(world.account("bob"), 10_00, key="p1", now_ms=T0 + 3)
        with r.store.transaction():
            alice.pay(world.account("bob"), 15_00, key="p2", now_ms=T0 + 4,
                      from_name="savings")
            alice.redeem(1_00, key="out", now_ms=T0 + 5)
        accounts = [world.account("alice"), savings, world.account("bob"), treasury]
        results.append(([r.store.history(a) for a in accounts],
                         [r.store.balance(a) for a in accounts], r.state_hash()))
        if isinstance(r.store, SqliteStore):
            assert r.store.table_rows("movements")  # some are still rows of their own
            problems, _ = verify_replica(r, tmp_path / "scratch.sqlite3", now_ms=T0 + 10)
            assert problems == []
            r.store.close()
    assert results[0] == results[1]
    histories, balances, _ = results[0]
    assert [len(h) for h in histories] == [4, 2, 2, 1]
    assert balances == [39_00, 25_00, 25_00, 5_00]


def test_history_reads_own_movements_in_the_index_between_the_accounts_seqs(
        tmp_path: Path) -> None:
    """The own-movement half of `history` is an index range of the device's records
    between the lowest and highest seq of its own movements on the account (kept in
    the account's balances row), with `own_account` filtered in the index before any
    table row is read; an account never debited by its device reads no records."""
    _, disk = worlds(tmp_path)
    r = disk.replica()
    store = r.store
    assert isinstance(store, SqliteStore)
    try:
        auth, alice = disk.wallet("authority", r), disk.wallet("alice", r)
        with store.transaction():
            auth.admit(disk.device("alice"), now_ms=T0)
            auth.issue(disk.account("alice"), 90_00, key="cash-in", now_ms=T0)
            for i in range(3):
                alice.pay(disk.account("alice", "savings"), 1_00, key=f"s{i}",
                          now_ms=T0 + 1 + i)
        seqs = "SELECT name, own_first, own_last FROM balances WHERE device=? ORDER BY name"
        assert list(store._db.execute(seqs, (disk.device("alice"),))) == [
            ("main", 1, 3), ("savings", None, None)]
        plan = [row[3] for row in store._db.execute(
            "EXPLAIN QUERY PLAN SELECT id, kind, hlc, author, seq, own_delta, ord, 0 "
            "FROM records WHERE author=? AND seq BETWEEN ? AND ? AND own_account=?",
            (b"a", 1, 2, "main"))]
        assert plan == [
            "SEARCH records USING INDEX records_author_seq (author=? AND seq>? AND seq<?)"]
        columns = [c[2] for c in store._db.execute(
            "PRAGMA index_info(records_author_seq)")]
        assert columns == ["author", "seq", "own_account"]
        assert [e.delta for e in store.history(disk.account("alice"))] == [
            90_00, -1_00, -1_00, -1_00]
        assert [e.delta for e in store.history(disk.account("alice", "savings"))] == [
            1_00, 1_00, 1_00]
        assert store.history(disk.account("alice", "never")) == []
    finally:
        store.close()
