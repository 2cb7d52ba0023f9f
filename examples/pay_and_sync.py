"""Pay and sync: the smallest complete use of the Python API.

An authority creates a network and admits a hub and two devices; the hub serves on
loopback TCP; alice is topped up, pays bob while offline, and syncs; bob syncs and
finds the money. Every home is a folder (here under FOLDER, or a temporary one).

    python examples/pay_and_sync.py [FOLDER]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

from p2p_ledger import Role, create_network, join_network


async def main(folder: Path) -> None:
    with (create_network(folder / "authority", name="Site 7", currency="AED",
                         passphrase="authority secret") as authority,
          join_network(folder / "hub", authority.network, passphrase="hub secret") as hub,
          join_network(folder / "alice", authority.network, passphrase="alice secret") as alice,
          join_network(folder / "bob", authority.network, passphrase="bob secret") as bob):
        authority.admit(hub.device_id, role=Role.HUB)
        authority.admit(alice.device_id)
        authority.admit(bob.device_id)
        authority.issue(alice.account(), 250_00, key="cash-in-alice-1")  # 250.00 AED

        async with trio.open_nursery() as nursery:
            port = await nursery.start(hub.node().serve_tcp, 0)
            url = f"tcp://127.0.0.1:{port}"
            await authority.node().sync(url)  # the hub now holds the admits and the cash-in
            alice_node = alice.node()
            await alice_node.sync(url)  # alice gets her admit and her money

            # Offline: signed and stored here, checkable by anyone who gets the records.
            paid = alice.pay(bob.device_id, 12_50, key="invoice-17", memo="lunch")
            print(f"alice paid {alice.format(12_50)} to bob: {paid.verdict.value}")

            stats = await alice_node.sync(url)  # returns once the hub has stored it
            print(f"alice synced: sent {stats.records_out}, the hub stored "
                  f"{stats.stored_by_peer}")
            await bob.node().sync(url)
            nursery.cancel_scope.cancel()

        print(f"bob holds {bob.format(bob.balance())}, alice {alice.format(alice.balance())}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, Path(tmp))
