"""A throwaway PostgreSQL server for the tests, from the machine's own binaries.

`PostgresServer.start()` runs `initdb` in a temporary directory and `pg_ctl start` with
the server listening only on a unix socket in that directory (no TCP port at all), so
tests of different runs never meet. The server refuses to run as root (initdb says so),
and CI runs as root: then the data directory is handed to the `postgres` user (created
by the server package) and every server binary runs through `runuser -u postgres`.
Settings are for tests: fsync off (nothing here tests durability across a power cut),
so creating a database per test costs tens of milliseconds.

Binaries are found on PATH, else in /usr/lib/postgresql/<newest>/bin (Debian's layout).
`.ci/run` installs the `postgresql` package when `initdb` is found in neither.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "server_binaries"]


def server_binaries() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    if not versions:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine: install "
                           "the `postgresql` package (.ci/run does)")
    return Path(versions[-1]).parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="p2p-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # short: a unix socket path is at most 107 bytes
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.user = "postgres" if self.as_user else None

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
                  "--username=postgres", "--encoding=UTF8", "--locale=C", "--no-sync")
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200 -c shared_buffers=64MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.root / "server.log"), "-o", options, "start")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql:///{dbname}?host={self.socket_dir}&user=postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
