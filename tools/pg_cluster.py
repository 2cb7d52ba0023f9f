"""A replicated PostgreSQL on loopback: a primary and two quorum-synchronous standbys.

    python tools/pg_cluster.py start [--dir DIR] [--no-fsync]  # prints the URL
    python tools/pg_cluster.py kill-primary [--dir DIR]
    python tools/pg_cluster.py promote [--dir DIR]
    python tools/pg_cluster.py stop [--dir DIR]

`start` makes the primary (`initdb`) and two standbys (`pg_basebackup -R`, named s1
and s2), each its own server on 127.0.0.1 with its own port, and creates the database
`ledger`. The primary commits only once one of the two standbys has flushed the
commit to its disk (`synchronous_standby_names = 'ANY 1 (s1, s2)'`,
`synchronous_commit = on`): a commit that returned is on at least two machines. The
URL lists all three hosts with `target_session_attrs=read-write`, so a client (libpq)
tries them in order and keeps the one that accepts writes:

    postgresql://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/ledger?target_session_attrs=read-write&user=postgres

`kill-primary` SIGKILLs the primary's postmaster and all its processes at once.
`promote` makes a standby the primary; it is not automatic (a real deployment would
run Patroni or similar to decide). **Which standby matters**: with a quorum of one of
two, a commit acknowledged to a client may be on only one of them, so `promote`
waits until both standbys have received all they will from the dead primary and
promotes the one that received the most WAL (`pg_last_wal_receive_lsn`); the other is
first pointed at it (`primary_conninfo`, reloaded), so that the new primary has its
synchronous standby at once and its commits do not wait. The dead primary is not
brought back (it would need `pg_rewind`: it may hold commits nobody acknowledged).

DIR's parent folders must be open to others (the default under /tmp is): run as root,
the servers run as `nobody` (tools/pg_server.py). The state (ports, which server is
what) is kept in DIR/cluster.json, so the commands
can run one by one; `Cluster` is the same as a class, which the failover test and
`tools/bench_failover.py` use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_server import LocalServer, postgres_bin_dir

__all__ = ["Cluster"]

DATABASE = "ledger"
STANDBYS = ("s1", "s2")
QUORUM = "ANY 1 (s1, s2)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _settings(name: str, durable: bool) -> list[str]:
    settings = [
        f"cluster_name={name}",
        "synchronous_commit=on",
        "wal_level=replica",
        "max_wal_senders=10",
        "wal_keep_size=256MB",
        "hot_standby=on",
        "wal_receiver_status_interval=1s",
        "wal_retrieve_retry_interval=100ms",  # a re-pointed standby reconnects quickly
        "max_connections=100",
        "shared_buffers=32MB",
    ]
    if not durable:  # tests: a process killed, not a power cut, so the page cache suffices
        settings += ["fsync=off", "full_page_writes=off"]
    return settings


@dataclass
class Node:
    name: str  # "primary", "s1", "s2"
    port: int
    server: LocalServer
    role: str  # "primary", "standby", "dead"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def one(self, sql: str) -> Any:
        with self.connect() as db:
            row = db.execute(sql.encode()).fetchone()
            return None if row is None else row[0]


@dataclass
class Cluster:
    """A primary and two standbys on loopback under `root`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="p2p-cluster-")))
    durable: bool = True
    nodes: list[Node] = field(default_factory=list)
    promote_began: float | None = None  # time.monotonic() just before `pg_ctl promote`

    # ------------------------------------------------------------ life cycle

    def start(self) -> str:
        """Start all three; the multi-host URL of the database."""
        bin_dir = postgres_bin_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the servers' own user (not root) must reach its folders
        primary = self._node("primary", bin_dir)
        primary.server.init()
        primary.server.start()
        primary.role = "primary"
        self.nodes = [primary]
        with primary.connect() as db:
            db.execute(f"CREATE DATABASE {DATABASE}".encode())
        for name in STANDBYS:
            node = self._node(name, bin_dir)
            node.server.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                            "-U", "postgres", "-D", str(node.server.data), "-R",
                            "--checkpoint=fast", "--wal-method=stream", "--no-sync",
                            timeout=300)
            self._follow(node, primary)
            node.server.start()
            node.role = "standby"
            self.nodes.append(node)
        self._wait_streaming(primary, STANDBYS)
        with primary.connect() as db:  # only now: until the standbys stream, commits wait
            db.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{QUORUM}'".encode())
            db.execute(b"SELECT pg_reload_conf()")
        self.save()
        return self.url()

    def _node(self, name: str, bin_dir: Path) -> Node:
        port = free_port()
        server = LocalServer(port=port, name=name, root=self.root / name, bin_dir=bin_dir,
                             settings=_settings(name, self.durable))
        return Node(name=name, port=port, server=server, role="new")

    @staticmethod
    def _conninfo(node: Node, upstream: Node) -> str:
        return (f"host=127.0.0.1 port={upstream.port} user=postgres "
                f"application_name={node.name}")

    def _follow(self, node: Node, upstream: Node) -> None:
        """Before its start: the standby streams from `upstream`, named for the quorum."""
        auto = node.server.data / "postgresql.auto.conf"
        auto.write_text(auto.read_text()
                        + f"primary_conninfo = '{self._conninfo(node, upstream)}'\n"
                        + f"synchronous_standby_names = '{QUORUM}'\n")  # once promoted

    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return (f"postgresql://{hosts}/{DATABASE}"
                "?target_session_attrs=read-write&user=postgres&connect_timeout=5")

    def primary(self) -> Node:
        (node,) = [n for n in self.nodes if n.role == "primary"]
        return node

    def standbys(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "standby"]

    def kill_primary(self) -> None:
        """SIGKILL the primary and its processes: the machine died."""
        node = self.primary()
        node.server.kill()
        node.role = "dead"
        self.save()

    def promote(self, *, timeout: float = 60) -> Node:
        """Promote the standby that received the most WAL; point the other at it."""
        standbys = self.standbys()
        deadline = time.monotonic() + timeout
        # Both must have stopped receiving (their link to the dead primary is gone),
        # or one may still be writing what the primary sent it last.
        while any(s.one("SELECT count(*) FROM pg_stat_wal_receiver WHERE status='streaming'")
                  for s in standbys):
            if time.monotonic() > deadline:
                raise RuntimeError("the standbys still stream from a primary: is it dead?")
            time.sleep(0.05)
        lsns = {s.name: s.one("SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn")
                for s in standbys}
        chosen = max(standbys, key=lambda s: lsns[s.name] or 0)
        for other in standbys:
            if other is not chosen:
                with other.connect() as db:
                    db.execute(f"ALTER SYSTEM SET primary_conninfo = "
                               f"'{self._conninfo(other, chosen)}'".encode())
                    db.execute(b"SELECT pg_reload_conf()")
        self.promote_began = time.monotonic()  # before this, no server accepts writes
        chosen.server.run("pg_ctl", "-D", str(chosen.server.data), "-w", "-t", "60", "promote")
        chosen.role = "primary"
        self._wait_streaming(chosen, [s.name for s in standbys if s is not chosen],
                             timeout=max(deadline - time.monotonic(), 5))
        self.save()
        return chosen

    def _wait_streaming(self, primary: Node, names: list[str] | tuple[str, ...], *,
                        timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        want = sorted(names)
        while True:
            with primary.connect() as db:
                rows = db.execute(b"SELECT application_name FROM pg_stat_replication "
                                  b"WHERE state = 'streaming'").fetchall()
            if sorted(r[0] for r in rows) == want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"standbys {want} not streaming from {primary.name} "
                                   f"(streaming: {rows})")
            time.sleep(0.05)

    def caught_up(self, *, timeout: float = 30) -> None:
        """Wait until every live standby has replayed all the primary has written."""
        target = self.primary().one("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        deadline = time.monotonic() + timeout
        for s in self.standbys():
            while (s.one("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn") or 0) < target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"standby {s.name} did not catch up")
                time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            if node.role != "dead":
                node.server.stop(mode="immediate")
        for node in self.nodes:  # a killed primary's children exit by themselves
            node.server.kill()
        with contextlib.suppress(OSError):
            for node in self.nodes:
                node.server.remove()
            (self.root / "cluster.json").unlink(missing_ok=True)
            self.root.rmdir()

    # ------------------------------------------------------------ state file

    def save(self) -> None:
        state = {"durable": self.durable,
                 "nodes": [{"name": n.name, "port": n.port, "role": n.role} for n in self.nodes]}
        (self.root / "cluster.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, root: Path) -> Cluster:
        state = json.loads((root / "cluster.json").read_text())
        cluster = cls(root=root, durable=state["durable"])
        bin_dir = postgres_bin_dir()
        for n in state["nodes"]:
            server = LocalServer(port=n["port"], name=n["name"], root=root / n["name"],
                                 bin_dir=bin_dir, settings=_settings(n["name"], cluster.durable))
            cluster.nodes.append(Node(name=n["name"], port=n["port"], server=server,
                                      role=n["role"]))
        return cluster

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "kill-primary", "promote", "stop"])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "p2p-cluster",
                        help="where the servers live (default: %(default)s)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="start: fsync off (tests: a killed process, not a power cut)")
    args = parser.parse_args(argv)
    if args.command == "start":
        if (args.dir / "cluster.json").exists():
            print(f"a cluster is already in {args.dir}: stop it first", file=sys.stderr)
            return 1
        cluster = Cluster(root=args.dir, durable=not args.no_fsync)
        print(cluster.start())
        return 0
    cluster = Cluster.load(args.dir)
    if args.command == "kill-primary":
        cluster.kill_primary()
        print("killed the primary")
    elif args.command == "promote":
        chosen = cluster.promote()
        print(f"promoted {chosen.name} (127.0.0.1:{chosen.port}); the URL is unchanged:")
        print(cluster.url())
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
