"""A damaged store file: nothing is signed or stored into it, and `verify` says so.

One module-scoped pair of homes (an authority with a few hundred records, and a device
with one payment the authority lacks, in a bundle) is built through the library; each
test damages a copy of the authority's store file the way a failing disk or a bad copy
does: 256 bytes of garbage over the page in the middle of the file, over the file
header, or over an index page. Then every command that signs or stores (`pay`,
`issue`, `import`, `sync`, `serve`) must exit 3 with one line on stderr and leave the
file exactly as it was, and `verify` must report the damage the same way. Damage that
SQLite's quick_check cannot see (an index entry changed in place, a row that does not
decode) is found by `verify`'s full integrity_check or when the row is read; a store
failure that is not damage is an ordinary one-line error. Last, `verify` on a store
another process writes to meanwhile reads one snapshot.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from p2p_ledger.cli.commands import opened
from p2p_ledger.cli.main import EXIT_INTERNAL, EXIT_STORE_DAMAGED, _failed, main
from p2p_ledger.core.ids import Account, device_id, parse_device_id
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.errors import StoreDamaged, StoreError
from p2p_ledger.storage.bundle import write_bundle
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SqliteStore
from p2p_ledger.storage.verify import verify_replica

PAIRS = 250  # issue + payment pairs: ~500 records, ~130 pages, indexes of several pages
GARBAGE = hashlib.blake2b(b"a failing disk", digest_size=64).digest() * 4  # 256 bytes


@dataclass
class Homes:
    work: Path
    authority: Path
    device_id: str
    bundle: Path  # a payment by the device that the authority does not hold yet


def _wallet(home: Home, replica: Replica) -> Wallet:
    return Wallet(replica, home.signing_key(lambda: ""))  # the keys here are not sealed


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Homes:
    work = tmp_path_factory.mktemp("damage")
    a, d = Home(work / "authority"), Home(work / "device")
    assert main(["--home", str(a.path), "network", "create", "--name", "damage",
                 "--no-passphrase"]) == 0
    d.create_key(None)
    d.set_network(a.network())
    device = d.public_key()
    now = time.time_ns() // 1_000_000  # the commands below judge with the real clock
    with opened(a) as replica:
        w = _wallet(a, replica)
        me = Account(device=w.device)
        with replica.store.transaction():
            w.admit(device, now_ms=now)
            for i in range(PAIRS):
                w.issue(me, 100_00, key=f"cash-{i}", now_ms=now)
                w.pay(Account(device=device), 1_00, key=f"pay-{i}", now_ms=now,
                      memo="a memo long enough to fill the pages of the records table")
        history = replica.delta(Frontier({}))
    with opened(d) as replica:
        with replica.store.transaction():
            assert not replica.receive_many(history, now_ms=now).refused
            paid = _wallet(d, replica).pay(Account(device=a.public_key()), 50_00,
                                           key="back", now_ms=now)
        raw = replica.store.raw(paid.record_id)
        assert raw is not None
    bundle = work / "device.bundle"
    write_bundle(bundle, a.network().network_id, [raw])
    assert not (a.path / "ledger.sqlite3-wal").exists()  # everything is in the main file
    return Homes(work=work, authority=a.path, device_id=device_id(device), bundle=bundle)


def _copy(homes: Homes, tmp_path: Path) -> Path:
    return Path(shutil.copytree(homes.authority, tmp_path / "authority"))


def _store_file(home: Path) -> Path:
    return home / "ledger.sqlite3"


def _page_size(home: Path) -> int:
    size = int.from_bytes(_store_file(home).read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def _pages(home: Path) -> dict[int, tuple[str, str]]:
    """Every page in use: page number -> (table or index name, page type)."""
    db = sqlite3.connect(_store_file(home))
    try:
        return {n: (name, kind) for n, name, kind in db.execute(
            "SELECT pageno, name, pagetype FROM dbstat")}
    finally:
        db.close()


def _damage(home: Path, offset: int) -> None:
    with _store_file(home).open("r+b") as f:
        f.seek(offset)
        f.write(GARBAGE)


def _damage_middle(home: Path) -> str:
    """Garbage over the start (the b-tree header and cell pointers) of the page in the
    middle of the file, or of the used page nearest to it: which table or index that
    is varies from run to run, as record ids do. Returns what the page belonged to."""
    pages = _pages(home)
    middle = _store_file(home).stat().st_size // _page_size(home) // 2 + 1  # from 1
    page = min(pages, key=lambda n: (abs(n - middle), n))
    _damage(home, (page - 1) * _page_size(home))
    return f"{pages[page][0]} ({pages[page][1]})"


def _damage_header(home: Path) -> str:
    _damage(home, 0)  # the 100-byte file header, then page 1's b-tree header
    return "the file header"


def _damage_leaf_of(home: Path, name: str) -> str:
    """Garbage over the start of the middle leaf page of one table or index."""
    leaves = sorted(n for n, (owner, kind) in _pages(home).items()
                    if owner == name and kind == "leaf")
    assert len(leaves) > 1, f"{name} should span several pages"
    _damage(home, (leaves[len(leaves) // 2] - 1) * _page_size(home))
    return f"{name} (leaf)"


def _damage_index(home: Path) -> str:
    """A leaf of the (author, seq) index, which the ledger rules and the wallet read
    for every record."""
    return _damage_leaf_of(home, "records_author_seq")


DAMAGE = {"middle": _damage_middle, "header": _damage_header, "index": _damage_index}


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2p_ledger", "--home", str(home), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False, cwd=home.parent)


def _refused_as_damaged(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 3, nothing on stdout, one line on stderr: no traceback."""
    assert done.returncode == EXIT_STORE_DAMAGED, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("p2p-ledger: error: the store "), lines[0]
    assert "is damaged" in lines[0]
    assert "nothing is signed or stored" in lines[0]
    return lines[0]


def _file_state(home: Path) -> tuple[bytes, int]:
    """The store file's hash, and the size of its write-ahead log if one was left."""
    wal = home / "ledger.sqlite3-wal"
    return (hashlib.blake2b(_store_file(home).read_bytes()).digest(),
            wal.stat().st_size if wal.exists() else 0)


def _commands(homes: Homes) -> dict[str, tuple[str, ...]]:
    return {
        "pay": ("pay", "--to", homes.device_id, "--amount", "1.00"),
        "issue": ("issue", "--to", homes.device_id, "--amount", "1.00"),
        "import": ("import", str(homes.bundle)),
        # Nothing listens on port 9: a sync that got past opening the store would fail
        # there instead, with exit 1 and another message.
        "sync": ("sync", "tcp://127.0.0.1:9"),
        "serve": ("serve", "--stdio"),
        "verify": ("verify",),
    }


# ---------------------------------------------------------------- the control


def test_an_undamaged_copy_signs_and_verifies(homes: Homes, tmp_path: Path) -> None:
    """The same commands on the same copy, undamaged: what the damage changes."""
    home = _copy(homes, tmp_path)
    store = Home(home).open_store(check=True)
    try:
        assert store.integrity_problems() == []
    finally:
        store.close()
    assert _cli(home, "verify").returncode == 0
    before = _file_state(home)
    assert _cli(home, "pay", "--to", homes.device_id, "--amount", "1.00").returncode == 0
    assert _file_state(home) != before
    assert _cli(home, "import", str(homes.bundle)).returncode == 0


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("where", sorted(DAMAGE))
def test_a_damaged_store_refuses_to_sign_or_store_and_changes_nothing(
        homes: Homes, tmp_path: Path, where: str) -> None:
    home = _copy(homes, tmp_path)
    what = DAMAGE[where](home)
    damaged = _file_state(home)
    for name, args in _commands(homes).items():
        line = _refused_as_damaged(_cli(home, *args))
        assert _file_state(home) == damaged, (name, what)
        if name == "verify" and where != "header":
            assert "integrity_check" in line, line  # verify's own, full check
        elif where != "header":
            assert "quick_check" in line, line  # refused at open, before anything else
    if where == "header":  # not even read-only commands can open it
        assert "file is not a database" in _refused_as_damaged(_cli(home, "balance"))


def _store_files(home: Path) -> dict[str, bytes]:
    """The store file and whatever SQLite keeps beside it (-wal, -shm), by name."""
    return {p.name: p.read_bytes() for p in sorted(home.glob("ledger.sqlite3*"))}


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_an_emptied_or_deleted_store_file_is_damage_not_a_new_store(
        homes: Homes, tmp_path: Path, how: str) -> None:
    """A store file truncated to nothing (a copy cut short, a file system that lost it
    at a power cut) or gone, beside the home's key and network. Taken as a new, empty
    store, as it was, `verify` said "0 records re-verified: OK" and the authority signed
    its seq 1 again - a second record at a seq it had already signed, a fork of its own
    chain. It is damage: exit 3, and no store is made in its place."""
    home = _copy(homes, tmp_path)
    if how == "emptied":
        _store_file(home).write_bytes(b"")
    else:
        _store_file(home).unlink()
    before = _store_files(home)
    views = {"balance": ("balance",), "history": ("history",), "status": ("status",)}
    for name, args in {**_commands(homes), **views}.items():
        line = _refused_as_damaged(_cli(home, *args))
        assert ("is empty" if how == "emptied" else "is missing") in line, (name, line)
        assert _store_files(home) == before, name
    with pytest.raises(StoreDamaged, match="nothing is signed"):
        Home(home).open_store()
    assert _store_files(home) == before


def test_reading_a_damaged_page_raises_store_damaged_and_rolls_back(
        homes: Homes, tmp_path: Path) -> None:
    """Opened without the check (as read-only commands do), any statement that meets
    the damaged page raises `StoreDamaged`, never a `sqlite3` error, and a transaction
    it was part of is rolled back whole."""
    home = _copy(homes, tmp_path)
    _damage_leaf_of(home, "records")
    damaged = _file_state(home)
    h = Home(home)
    replica = h.replica()
    store = replica.store
    assert isinstance(store, SqliteStore)

    def pay_then_read_everything() -> None:
        with store.transaction():
            w = _wallet(h, replica)
            w.pay(Account(device=parse_device_id(homes.device_id)), 1, key="inside",
                  now_ms=time.time_ns() // 1_000_000)
            list(store.iter_raw_in_order())  # writes the payment's rows, then meets the page

    try:
        with pytest.raises(StoreDamaged, match="is damaged"):
            store.quick_check()
        with pytest.raises(StoreDamaged, match="malformed"):
            store.table_rows("records")
        with pytest.raises(StoreDamaged, match="malformed"):
            pay_then_read_everything()
    finally:
        store.close()
    assert _file_state(home) == damaged


def test_other_store_failures_are_one_line_errors_and_misuse_stays_a_bug(
        homes: Homes, tmp_path: Path) -> None:
    """A failure that is not damage (here a table dropped by hand) is a `StoreError`:
    one line, exit 1. Using a closed store is our own bug and stays a `sqlite3` error."""
    home = _copy(homes, tmp_path)
    db = sqlite3.connect(_store_file(home))
    try:
        db.execute("DROP TABLE peers")
    finally:
        db.close()
    done = _cli(home, "status")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"p2p-ledger: error: the store {_store_file(home)} failed: no such table: peers"]
    store = Home(home).open_store()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.totals()


# ---------------------------------------------------------------- what quick_check misses


def test_verify_finds_an_index_entry_changed_in_place(homes: Homes, tmp_path: Path) -> None:
    """One idempotency key changed inside the idempotency index: every page is still
    well formed, so quick_check passes (and signing commands would go on), but the
    index no longer matches its table, which verify's integrity_check reports."""
    home = _copy(homes, tmp_path)
    size = _page_size(home)
    pages = sorted(n for n, (name, kind) in _pages(home).items()
                   if name == "records_idem" and kind == "leaf")
    data = bytearray(_store_file(home).read_bytes())
    found = (re.search(rb"(cash|pay)-\d", data[(n - 1) * size:n * size]) for n in pages)
    page, key = next((n, m) for n, m in zip(pages, found, strict=True) if m is not None)
    data[(page - 1) * size + key.end() - 1] = ord("X")  # "pay-17" becomes "pay-X7"
    _store_file(home).write_bytes(bytes(data))
    store = Home(home).open_store(check=True)  # quick_check: no complaint
    try:
        assert any("records_idem" in p for p in store.integrity_problems())
    finally:
        store.close()
    line = _refused_as_damaged(_cli(home, "verify"))
    assert "integrity_check" in line
    assert "records_idem" in line


def test_a_row_that_does_not_decode_is_damage(homes: Homes, tmp_path: Path) -> None:
    """A chain state SQLite reads back fine but that does not decode: the wallet reads
    it to sign the next payment, and refuses as for any damage."""
    home = _copy(homes, tmp_path)
    db = sqlite3.connect(_store_file(home))
    try:
        with db:
            db.execute("UPDATE records SET chain = x'' WHERE ord = (SELECT max(ord) FROM "
                       "records)")
    finally:
        db.close()
    before = _file_state(home)
    line = _refused_as_damaged(_cli(home, "pay", "--to", homes.device_id, "--amount", "1"))
    assert "a stored record row does not decode" in line
    assert _file_state(home) == before
    assert "does not decode" in _refused_as_damaged(_cli(home, "verify"))


# ---------------------------------------------------------------- the node


def test_a_store_error_in_a_node_task_stops_it_as_one_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    """trio wraps a task's exception in exception groups; the CLI's one error boundary
    unwraps them, so a store error of `serve` or `sync` is one line (exit 3 when
    damaged), and a bug among them one line too (exit 70)."""

    async def node() -> None:
        async with trio.open_nursery() as outer:
            outer.start_soon(trio.sleep_forever)
            async with trio.open_nursery() as inner:
                inner.start_soon(trio.sleep_forever)
                raise StoreDamaged("the store X is damaged (database disk image is malformed)")

    with pytest.raises(BaseExceptionGroup) as info:
        trio.run(node)
    assert _failed(info.value, argparse.Namespace(home=Path("X"))) == EXIT_STORE_DAMAGED
    assert capsys.readouterr().err.splitlines() == [
        "p2p-ledger: error: the store X is damaged (database disk image is malformed)"]

    async def other() -> None:
        async with trio.open_nursery():
            raise ValueError("a bug")

    with pytest.raises(BaseExceptionGroup) as info:
        trio.run(other)
    assert _failed(info.value, argparse.Namespace(home=Path("X"))) == EXIT_INTERNAL
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("p2p-ledger: error: internal error (ValueError: a bug)")
    assert issubclass(StoreDamaged, StoreError)


# ---------------------------------------------------------------- one snapshot


def test_verify_reads_one_snapshot_while_another_process_commits(
        homes: Homes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer commits a payment after verify has replayed the records and before it
    reads the stored balances and tables: in one snapshot, it sees none of it."""
    home = Home(_copy(homes, tmp_path))
    replica, writer = home.replica(), home.replica()
    store = replica.store
    assert isinstance(store, SqliteStore)
    replayed = SqliteStore.iter_raw_in_order
    committed = []

    def replay_then_commit(self: SqliteStore) -> object:
        yield from replayed(self)
        with writer.store.transaction():
            committed.append(_wallet(home, writer).pay(
                Account(device=parse_device_id(homes.device_id)), 7_00, key="meanwhile",
                now_ms=time.time_ns() // 1_000_000))

    # On the class: an instance of the compiled build takes no attribute of its own.
    monkeypatch.setattr(SqliteStore, "iter_raw_in_order", replay_then_commit)
    try:
        problems, checked = verify_replica(replica, tmp_path / "scratch.sqlite3",
                                           now_ms=time.time_ns() // 1_000_000)
        assert committed, "the writer must have run between verify's reads"
        assert problems == []
        assert checked == 2 * PAIRS + 1
        assert store.totals().records == checked + 1  # after the snapshot: the new record
    finally:
        store.close()
        writer.store.close()  # type: ignore[attr-defined]

