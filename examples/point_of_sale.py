"""A point of sale at a remote fuel station: takes payments offline, syncs when a
hub appears.

At the depot in the morning, the authority admits the station's point-of-sale box
(POS), the site hub and two drivers' phones, tops up the drivers, and everyone syncs.
Then the station is offline. At the pump, a driver's phone signs a payment to the
POS and the two sync directly over a local link (an in-memory stream here; in the
field Bluetooth, Wi-Fi Direct or a cable): the POS prints a receipt as soon as the
payment is stored, with the ledger's verdict. A payment over the driver's funds is
refused on the phone, and nothing is signed.

All the while the POS keeps dialing the hub (`keep_dialing`), which is down. When
the hub comes up, the POS connects by itself and its sales flow upstream; the
example ends when the hub holds all of them.

    python examples/point_of_sale.py [FOLDER]
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

import trio

from p2p_ledger import (
    Ledger,
    Node,
    NodeConfig,
    PaymentRefused,
    RecordFeed,
    Role,
    Transfer,
    create_network,
    device_id,
    join_network,
)

# Redial the hub quickly, for a short demonstration (the default backs off to 60 s).
POS_CONFIG = NodeConfig(backoff_initial=0.1, backoff_max=0.5)
SALES = [("driver-1", 45_00, "R-1001"), ("driver-2", 120_00, "R-1002"),
         ("driver-1", 900_00, "R-1003"), ("driver-2", 30_50, "R-1004")]


async def print_receipts(pos: Ledger, node: Node, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The POS side: a receipt for every payment to this POS as it is stored."""
    with node.subscribe() as feed:
        task_status.started()
        async for stored in feed:
            body = stored.body
            if isinstance(body, Transfer) and body.to == pos.account():
                payer = device_id(stored.record.record.author)[:12]
                print(f"receipt {body.key}: {pos.format(body.amount)} from {payer}: "
                      f"{stored.verdict.value}")


async def stored_all(feed: RecordFeed, pos: Ledger, receipts: set[str]) -> None:
    """Wait until `feed` has told the payments to `pos` with these receipt numbers."""
    async for stored in feed:
        body = stored.body
        if isinstance(body, Transfer) and body.to == pos.account():
            receipts.discard(body.key)
        if not receipts:
            return


def free_port() -> int:
    """A loopback port nobody listens on yet: where the hub will come up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main(folder: Path) -> None:
    with (create_network(folder / "authority", name="Station 12", currency="AED",
                         passphrase="authority secret") as authority,
          join_network(folder / "hub", authority.network, passphrase="hub") as hub,
          join_network(folder / "pos", authority.network, passphrase="pos") as pos,
          join_network(folder / "driver-1", authority.network, passphrase="d1") as d1,
          join_network(folder / "driver-2", authority.network, passphrase="d2") as d2):
        drivers = {"driver-1": d1, "driver-2": d2}
        # Morning at the depot.
        authority.admit(hub.device_id, role=Role.HUB)
        for device in (pos, d1, d2):
            authority.admit(device.device_id)
        authority.issue(d1.account(), 200_00, key="top-up-d1")
        authority.issue(d2.account(), 200_00, key="top-up-d2")
        depot = authority.node()
        pos_node = pos.node(config=POS_CONFIG)
        phones = {name: ledger.node() for name, ledger in drivers.items()}
        for node in (pos_node, *phones.values()):
            await node.sync(depot)

        hub_url = f"tcp://127.0.0.1:{free_port()}"
        async with trio.open_nursery() as nursery:
            await nursery.start(print_receipts, pos, pos_node)
            nursery.start_soon(pos_node.keep_dialing, hub_url)  # down for now

            # At the pump, offline.
            sold = set()
            for driver, amount, receipt in SALES:
                try:
                    drivers[driver].pay(pos.account(), amount, key=receipt, memo="fuel")
                except PaymentRefused as refused:
                    print(f"declined {receipt} on {driver}'s phone: {refused}")
                    continue
                await phones[driver].sync(pos_node)  # the phone and the POS, directly
                sold.add(receipt)
            print(f"{len(sold)} sales taken offline; POS balance "
                  f"{pos.format(pos.balance())}")

            # The site hub comes up; the POS finds it on its next redial.
            hub_node = hub.node()
            with hub_node.subscribe() as feed, trio.fail_after(60):
                await nursery.start(hub_node.serve_tcp, int(hub_url.rsplit(":", 1)[1]))
                await stored_all(feed, pos, set(sold))
            print(f"the hub holds all {len(sold)} sales: POS balance there "
                  f"{hub.format(hub.balance(pos.account()))}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, Path(tmp))
