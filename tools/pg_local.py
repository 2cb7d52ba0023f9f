"""A throwaway PostgreSQL server on 127.0.0.1, for trying the cloud tier (README,
"The cloud tier"). One server, no replication (tools/pg_cluster.py starts a replicated
cluster).

    python3 tools/pg_local.py start          # prints the database URL; the server runs on
    python3 tools/pg_local.py stop URL       # stops that server and deletes its data

`start` runs `initdb` in a new temporary directory and `pg_ctl start` with the server
listening on 127.0.0.1 only, on a free port, and no unix socket; it prints
`postgresql://postgres@127.0.0.1:PORT/postgres` on stdout and returns (the server keeps
running, in the background). Authentication is `trust`: anyone who can connect to
127.0.0.1 on this machine can use the database - for trying things, never for money.
`stop` asks the server at URL where its data is, stops it and deletes the directory.

The server binaries are found on PATH or in /usr/lib/postgresql/<newest>/bin (Debian's
`postgresql` package). initdb refuses to run as root: as root the data directory is
handed to the `postgres` user, which the package creates, and the binaries run as it.
Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PREFIX = "p2p-pg-local-"


class Failed(Exception):
    """What went wrong, in one line for the user."""


def server_binaries() -> Path:
    found = shutil.which("initdb")
    if found is not None:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    if not versions:
        raise Failed("no PostgreSQL server binaries (initdb) here: install the `postgresql` "
                     "package (apt-get install postgresql)")
    return Path(versions[-1]).parent


def _as_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(*argv: str) -> None:
    done = subprocess.run([*_as_user(), *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "failed").splitlines()[-1]
        raise Failed(f"{Path(argv[0]).name}: {last}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start() -> str:
    """Start a server; its URL."""
    bin_dir = server_binaries()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    try:
        if _as_user():
            shutil.chown(root, "postgres")
        data = root / "data"
        _run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=postgres",
             "--encoding=UTF8", "--locale=C", "--no-sync")
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} "
                   "-c unix_socket_directories='' -c max_connections=100")
        _run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
             "-l", str(root / "server.log"), "-o", options, "start")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop(url: str) -> Path:
    """Stop the server at `url` (one `start` made) and delete its data; the directory."""
    import psycopg  # the package's own dependency

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
            row = db.execute("SHOW data_directory").fetchone()
    except psycopg.Error as exc:
        raise Failed(f"cannot reach {url}: {str(exc).strip().splitlines()[0]}") from None
    assert row is not None
    data = Path(row[0])
    if not data.parent.name.startswith(PREFIX):
        raise Failed(f"{url} is not a server that `pg_local.py start` made (its data is in "
                     f"{data}): not stopping it")
    _run(str(server_binaries() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    shutil.rmtree(data.parent, ignore_errors=True)
    return data.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A throwaway PostgreSQL on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start a server; print its URL")
    stopping = sub.add_parser("stop", help="stop the server at URL and delete its data")
    stopping.add_argument("url")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(), flush=True)
            print("a throwaway PostgreSQL is running (trust authentication, 127.0.0.1 only); "
                  "stop it with: python3 tools/pg_local.py stop URL", file=sys.stderr)
        else:
            print(f"stopped; deleted {stop(args.url)}", file=sys.stderr)
    except Failed as exc:
        print(f"pg_local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
