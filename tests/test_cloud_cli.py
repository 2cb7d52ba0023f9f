"""The cloud tier through the CLI: one home whose store is a PostgreSQL database,
served by two `serve` processes (front-ends) at once.

`init --store URL` records the URL in the home and every command on that home uses
it. Devices sync with either front-end; a payment synced into one front-end reaches a
device that stays connected to the other (its store poll), and the home's own
`balance` reads the same database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from p2p_ledger.core.ids import Account, device_id
from p2p_ledger.storage.home import Home
from tests.test_integration import (
    CONVERGE,
    cli,
    device_of,
    homes,
    ok_json,
    peek,
    serving,
    template,
)

__all__ = ["homes", "template"]  # the fixtures, shared with test_integration


def ok(home: Path, *args: str) -> str:
    done = cli(home, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_two_front_ends_on_one_database_are_one_node(
        homes: dict[str, Path], tmp_path: Path, new_database: Callable[[], str]) -> None:
    url = new_database()
    auth, dev1, dev2 = homes["authority"], homes["dev1"], homes["dev2"]
    cloud = tmp_path / "cloud"
    ok(auth, "network", "export", "--out", str(tmp_path / "net.json"))
    ok(cloud, "init", "--network", str(tmp_path / "net.json"), "--store", url,
       "--no-passphrase")
    assert Home(cloud).store_url() == url
    assert not Home(cloud).store_path.exists()  # no SQLite file: the database is the store
    ok(auth, "admit", device_id(device_of(cloud)), "--role", "hub")
    with serving(cloud, "--listen", "127.0.0.1:0", "--hub") as front_a, \
            serving(cloud, "--listen", "127.0.0.1:0", "--hub") as front_b:
        a, b = front_a.port(), front_b.port()
        ok(auth, "sync", f"tcp://127.0.0.1:{a}")
        # dev2 stays connected to front-end B; dev1 pays it and syncs with front-end A.
        with serving(dev2, "--listen", "127.0.0.1:0", "--peer", f"tcp://127.0.0.1:{b}") as d2:
            d2.port()
            paid = ok_json(dev1, "pay", "--to", f"{device_id(device_of(dev2))}/main",
                           "--amount", "12.50", "--key", "cloud-1")
            assert paid["verdict"] == "applied"
            ok(dev1, "sync", f"tcp://127.0.0.1:{a}")
            deadline = time.monotonic() + CONVERGE
            payee = Account(device=device_of(dev2))
            while peek(dev2, lambda r: r.balance(payee)) != 112_50:
                assert time.monotonic() < deadline, "the payment never reached dev2"
                time.sleep(0.1)
    # Every command on the home reads the database.
    dev2_main = f"{device_id(device_of(dev2))}/main"
    shown = ok_json(cloud, "balance", dev2_main)
    assert shown["accounts"][dev2_main]["minor"] == 112_50, shown
    status = ok_json(cloud, "status")
    assert status["records"] == peek(dev2, lambda r: r.store.totals().records), status


def test_init_with_a_store_that_is_not_a_postgresql_url_leaves_no_home(
        tmp_path: Path, homes: dict[str, Path]) -> None:
    ok(homes["authority"], "network", "export", "--out", str(tmp_path / "net.json"))
    done = cli(tmp_path / "c", "init", "--network", str(tmp_path / "net.json"), "--store",
               "mysql://x", "--no-passphrase")
    assert done.returncode == 1, done
    assert "postgresql://" in done.stderr
    assert not (tmp_path / "c").exists()


def test_init_with_an_unreachable_database_fails_in_one_line(
        tmp_path: Path, homes: dict[str, Path]) -> None:
    ok(homes["authority"], "network", "export", "--out", str(tmp_path / "net.json"))
    done = cli(tmp_path / "c", "init", "--network", str(tmp_path / "net.json"), "--store",
               f"postgresql:///nope?host={tmp_path}", "--no-passphrase")
    assert done.returncode == 1, done
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr  # one line, no traceback
    assert errors[0].startswith("p2p-ledger: error: cannot open the store dbname=nope")
    assert not (tmp_path / "c").exists()
