"""kill -9 at a random moment: nothing acknowledged is lost, nothing half-written stays.

A child process pays 0.01 AED again and again through the CLI's own code path (sign
and apply inside a store transaction, print the record id only after the commit). The
test reads the acknowledged ids from its stdout, SIGKILLs it, reopens the store and
checks that every acknowledged record is there, that `verify` finds nothing wrong and
that money is conserved. A second child is killed in the middle of an import's
transaction: the bundle's records must then be all there or none.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import record_id
from p2p_ledger.storage.bundle import write_bundle
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.keys import save_key
from p2p_ledger.storage.sqlite import SqliteStore
from p2p_ledger.storage.verify import verify_replica
from tests.helpers import T0, World, make_world, sync

FUNDS = 100_00
KILLS = 3
MAX_ACKS = 400  # kill after a random number of acks up to this ...
MAX_SECONDS = 5.0  # ... or after this much real time, whichever comes first

# The CLI's `pay` in a loop: the same helpers, the same transaction, ack after commit.
PAY_LOOP = """
import sys
from p2p_ledger.cli.commands import opened, wallet
from p2p_ledger.core.ids import Account
from p2p_ledger.storage.home import Home

home, to, run, now = Home(sys.argv[1]), Account.parse(sys.argv[2]), sys.argv[3], int(sys.argv[4])
with opened(home) as replica:
    w = wallet(home, replica)
    for i in range(1_000_000):
        with replica.store.transaction():
            result = w.pay(to, 1, key=f"{run}-{i}", now_ms=now)
        assert result.verdict.value == "applied", result
        sys.stdout.write(result.record_id.hex() + "\\n")
        sys.stdout.flush()
"""

# The CLI's `import`, paused (blocking on stdin until killed) right after the store
# wrote the n-th new record inside the import's transaction, or, when n is 0, after
# the command returned.
PAUSED_IMPORT = """
import sys
from p2p_ledger.cli.main import main
from p2p_ledger.storage.sqlite import SqliteStore

home, bundle, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
original = SqliteStore.apply
written = 0

def pause(word):
    sys.stdout.write(word + "\\n")
    sys.stdout.flush()
    sys.stdin.read()

def apply(self, fx):
    global written
    original(self, fx)
    written += 1
    if written == stop_after:
        pause("inside")

SqliteStore.apply = apply
code = main(["--home", home, "import", bundle])
pause(f"returned {code}")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("P2P_LEDGER_PASSPHRASE", "P2P_LEDGER_HOME")}


def _lines_until(proc: subprocess.Popen[bytes], want: int, seconds: float) -> tuple[list[str],
                                                                                      bytes]:
    """Complete stdout lines read until `want` of them arrived, `seconds` passed, or EOF;
    and the bytes of a partial line after them."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    rest = b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while len(lines) < want:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *done, rest = (rest + chunk).split(b"\n")
            lines.extend(x.decode() for x in done)
    return lines, rest


def _kill(proc: subprocess.Popen[bytes], rest: bytes) -> tuple[list[str], str]:
    """SIGKILL the child; return the complete lines it had still written, and stderr."""
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode())
    *done, _partial = (rest + out).split(b"\n")
    return [x.decode() for x in done], err.decode()


def _open(home: Home) -> Replica:
    return home.replica()


def _close(replica: Replica) -> None:
    store = replica.store
    assert isinstance(store, SqliteStore)
    store.close()


def _check_store(replica: Replica, scratch: Path) -> None:
    problems, checked = verify_replica(replica, scratch, now_ms=T0)
    assert problems == []
    assert checked == replica.store.totals().records
    assert replica.conserved()


def _device_home(tmp_path: Path, world: World, name: str) -> Home:
    home = Home(tmp_path / name)
    home.path.mkdir()
    save_key(home.key_path, world.device_keys[name], None)
    home.set_network(world.network)
    return home


def test_acknowledged_payments_survive_kill_9(tmp_path: Path) -> None:
    world = make_world(devices=("alice", "bob"), seed="durability")
    authority = world.wallet("authority")
    authority.admit(world.device("alice"), now_ms=T0)
    authority.issue(world.account("alice"), FUNDS, key="cash-in", now_ms=T0)
    home = _device_home(tmp_path, world, "alice")
    replica = _open(home)
    with replica.store.transaction():
        assert sync(replica, authority.replica) == 2
    _close(replica)

    rng = random.Random(20251123)
    acked: list[str] = []
    for run in range(KILLS):
        want = rng.randint(10, MAX_ACKS)
        proc = subprocess.Popen(
            [sys.executable, "-c", PAY_LOOP, str(home.path), str(world.account("bob")),
             f"run{run}", str(T0)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_env())
        lines, rest = _lines_until(proc, want, MAX_SECONDS)
        late, err = _kill(proc, rest)
        assert lines, f"no payment acknowledged within {MAX_SECONDS} s: {err}"
        acked.extend(lines + late)

        replica = _open(home)  # the store opens after the crash
        try:
            for rid in acked:
                assert replica.store.has(bytes.fromhex(rid)), rid
            _check_store(replica, tmp_path / f"verify-{run}.sqlite3")
            totals = replica.store.totals()
            paid = replica.balance(world.account("bob"))
            # Every stored payment is one fil, applied; the admit and issue are the rest.
            assert paid == totals.records - 2 >= len(acked)
            assert replica.balance(world.account("alice")) == FUNDS - paid
            assert replica.spendable(world.account("alice")) == FUNDS - paid
        finally:
            _close(replica)
    assert len(set(acked)) == len(acked)


def _authority_bundle(tmp_path: Path, world: World, issues: int) -> tuple[Path, list[bytes]]:
    authority = world.wallet("authority")
    for name in world.device_keys:
        authority.admit(world.device(name), now_ms=T0)
    for i in range(issues):
        authority.issue(world.account("alice"), 1_00 + i, key=f"top-up-{i}", now_ms=T0)
    raws = authority.replica.delta(Frontier({}))
    bundle = tmp_path / "authority.bundle"
    write_bundle(bundle, world.network.network_id, raws)
    return bundle, raws


def _paused_import(home: Home, bundle: Path, stop_after: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_IMPORT, str(home.path), str(bundle), str(stop_after)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    # Paused inside, the child has said only "inside"; after the command, the import
    # report's line comes first.
    want = 1 if stop_after else 2
    lines, rest = _lines_until(proc, want, 60.0)
    late, err = _kill(proc, rest)
    said = lines + late
    assert len(said) == want, (said, err)
    return said[-1]


def test_an_import_killed_mid_transaction_stores_all_or_nothing(tmp_path: Path) -> None:
    world = make_world(devices=("alice", "bob"), seed="import-kill")
    bundle, raws = _authority_bundle(tmp_path, world, issues=60)
    ids = [record_id(r) for r in raws]
    home = _device_home(tmp_path, world, "bob")
    replica = _open(home)
    with replica.store.transaction():  # bob already holds the first ten records
        assert len(replica.receive_many(raws[:10], now_ms=T0).applied) == 10
    _close(replica)

    for stop_after in (1, 37, len(raws) - 10):  # the first new record, one inside, the last
        assert _paused_import(home, bundle, stop_after) == "inside"
        replica = _open(home)
        try:
            held = [rid for rid in ids if replica.store.has(rid)]
            assert held == ids[:10]  # none of the killed transaction's records
            _check_store(replica, tmp_path / f"verify-{stop_after}.sqlite3")
        finally:
            _close(replica)

    assert _paused_import(home, bundle, 0) == "returned 0"  # killed after the commit
    replica = _open(home)
    try:
        assert all(replica.store.has(rid) for rid in ids)  # all of them
        _check_store(replica, tmp_path / "verify-done.sqlite3")
        assert replica.balance(world.account("alice")) == sum(1_00 + i for i in range(60))
    finally:
        _close(replica)


def test_a_store_killed_mid_import_still_takes_new_payments(tmp_path: Path) -> None:
    world = make_world(devices=("alice", "bob"), seed="import-kill-2")
    bundle, raws = _authority_bundle(tmp_path, world, issues=5)
    home = _device_home(tmp_path, world, "alice")
    assert _paused_import(home, bundle, 3) == "inside"
    replica = _open(home)
    try:
        assert replica.store.totals().records == 0
        with replica.store.transaction():
            report = replica.receive_many(raws, now_ms=T0)
        assert len(report.applied) == len(raws)
        wallet = world.wallet("alice", replica)
        with replica.store.transaction():
            paid = wallet.pay(Account(device=world.device("bob")), 2_50, key="after-crash",
                              now_ms=T0)
        assert paid.verdict.value == "applied"
        _check_store(replica, tmp_path / "verify.sqlite3")
    finally:
        _close(replica)
