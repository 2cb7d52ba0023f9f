"""Acknowledged means stored, end to end through the CLI.

`sync` exits 0 only once the peer has acknowledged (STORED) every record it was sent,
and the peer acknowledges only after its commit. So a hub SIGKILLed the instant
`sync` exits 0 must hold every record the client sent, and the client, having
exited, holds every record the hub sent. Before STORED existed, `sync` exited as
soon as the SYNCED frames had crossed, while the hub was still committing the
client's delta: killed then, it lost most of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_ledger.core.ids import Account
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0
from tests.test_integration import device_of, homes, ok_json, peek, serving, template

__all__ = ["homes", "template"]  # the fixtures, shared with test_integration

# Enough that committing them takes the hub a good fraction of a second.
PAYMENTS = 3000


def _sign_payments(home: Path, to: Path, count: int, tag: str) -> None:
    """`count` payments of 0.01 from `home`'s main account, signed in this process."""
    replica = Home(home).replica()
    store = replica.store
    assert isinstance(store, SqliteStore)
    try:
        wallet = Wallet(replica, Home(home).signing_key(lambda: ""))
        payee = Account(device=device_of(to), name="main")
        with store.transaction():
            for i in range(count):
                wallet.pay(payee, 1, key=f"{tag}-{i}", now_ms=T0 + i)
    finally:
        store.close()


def _records(home: Path) -> set[bytes]:
    store_ids: set[bytes] = peek(home, lambda r: {
        rid for _, rid, _ in r.store.records_after(0)})
    return store_ids


@pytest.mark.slow
def test_a_hub_killed_when_sync_exits_holds_everything_it_acknowledged(
        homes: dict[str, Path]) -> None:
    hub, dev1, dev2 = homes["hub"], homes["dev1"], homes["dev2"]
    _sign_payments(dev1, dev2, PAYMENTS, "to-hub")   # the hub lacks these
    _sign_payments(dev2, dev1, PAYMENTS // 3, "from-hub")
    # dev2's payments reach the hub first, so the hub has records dev1 lacks
    with serving(hub, "--listen", "127.0.0.1:0", "--hub") as server:
        url = f"tcp://127.0.0.1:{server.port()}"
        ok_json(dev2, "sync", url)
        out = ok_json(dev1, "sync", url)
        server.proc.kill()  # SIGKILL, the instant sync exited 0
        server.proc.wait(timeout=10)
    assert out["synced"] is True
    assert out["records_out"] >= PAYMENTS
    assert out["records_in"] >= PAYMENTS // 3
    client, at_hub = _records(dev1), _records(hub)
    assert client <= at_hub, f"the hub lost {len(client - at_hub)} acknowledged records"
    assert client == at_hub  # and dev1 committed all the hub sent before exiting 0
