"""The cloud tier through the CLI: one home whose store is a PostgreSQL database,
served by two `serve` processes (front-ends) at once.

`init --store URL` records the URL in the home and every command on that home uses
it. Devices sync with either front-end; a payment synced into one front-end reaches a
device that stays connected to the other (its store's change notice), and the home's
own `balance` reads the same database. README.md's "The cloud tier" runs as written:
its own throwaway PostgreSQL (tools/pg_local.py), two front-ends, a site hub relaying
upstream, trucks syncing at the site, and every home converging.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from p2p_ledger.core.ids import Account, device_id
from p2p_ledger.storage.home import Home
from tests.test_integration import (
    CONVERGE,
    README,
    WALKTHROUGH_PASSPHRASE,
    Serve,
    _env,
    assert_status_converged,
    cli,
    device_of,
    homes,
    ok_json,
    peek,
    readme_block,
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


# ---------------------------------------------------------------- the README walkthrough


def records_held(home: Path) -> int:
    """Records in a home's store (SQLite or PostgreSQL), read in this process."""
    store = Home(home).open_store()
    try:
        return store.totals().records
    finally:
        store.close()


def test_the_readme_cloud_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """README.md "The cloud tier", line by line, each line through bash (its `$(...)`
    and redirections as a user's shell does them) in one folder, with the package's
    `p2p-ledger` and `python3` first on PATH. A `&` line is a real `serve` process on a
    free port (the README's port is replaced in every later line); `kill %1 %2 %3` stops
    them. Relays between the site hub and the cloud are live pushes: before each sync
    the test waits, bounded, until the site hub and the cloud hold the same records -
    the moment a user waits between two commands."""
    lines = readme_block("## The cloud tier")
    assert lines[2] == "python3 tools/pg_local.py start > pg.url", lines
    (tmp_path / "tools").symlink_to(README.parent / "tools")
    env = _env(WALKTHROUGH_PASSPHRASE)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    servers: list[Serve] = []
    ports: dict[str, str] = {}  # the README's address -> the real one
    site, cloud = tmp_path / "SITE", tmp_path / "CLOUD"

    def relayed() -> None:
        if not any(s.home == site for s in servers):
            return
        deadline = time.monotonic() + CONVERGE
        while records_held(site) != records_held(cloud):
            assert time.monotonic() < deadline, "the site hub and the cloud never met"
            time.sleep(0.1)

    def converged() -> None:
        """Every home: the same state, and T1 254.50, T2 45.50."""
        homes = [tmp_path / name for name in ("OPS", "CLOUD", "SITE", "T1", "T2")]
        assert_status_converged(*homes)
        t1, t2 = (f"{device_id(Home(tmp_path / n).public_key())}/main" for n in ("T1", "T2"))
        for home in homes:
            shown = ok_json(home, "balance")["accounts"]
            assert (shown[t1]["minor"], shown[t2]["minor"]) == (254_50, 45_50), (home, shown)

    def background(line: str) -> None:
        argv = shlex.split(line.removesuffix(" &"))
        assert argv[:2] == ["p2p-ledger", "--home"], line
        assert argv[3] == "serve", line
        at = argv.index("--listen") + 1
        address, argv[at] = argv[at], "127.0.0.1:0"
        servers.append(Serve(tmp_path / argv[2], *argv[4:], passphrase=WALKTHROUGH_PASSPHRASE))
        ports[address] = f"127.0.0.1:{servers[-1].port()}"

    try:
        for line in lines:
            for readme_address, real in ports.items():
                line = line.replace(readme_address, real)
            if line.endswith(" &"):
                background(line)
                continue
            if line.startswith("kill "):
                assert line == "kill " + " ".join(f"%{i + 1}" for i in range(len(servers)))
                converged()
                for server in servers:
                    server.stop()
                continue
            if " sync tcp://" in line:
                relayed()
            done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=120, check=False)
            assert done.returncode == 0, (line, done.stdout, done.stderr,
                                          ["".join(s.log) for s in servers])
        # The last line stopped the database and deleted its data.
        url = (tmp_path / "pg.url").read_text().strip()
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.OperationalError:
            pass
        else:
            raise AssertionError(f"{url} still answers after `pg_local.py stop`")
    finally:
        for server in servers:
            server.stop()
        if (tmp_path / "pg.url").exists():  # a failed run: stop the database anyway
            subprocess.run([sys.executable, str(README.parent / "tools" / "pg_local.py"),
                            "stop", (tmp_path / "pg.url").read_text().strip()],
                           capture_output=True, timeout=120, check=False)
