"""`p2p-ledger demo`: a hub and three devices syncing over loopback TCP.

The network authority admits a fuel-station point of sale, a truck and a site tablet,
issues cash-in to two of them, and serves as the site hub on 127.0.0.1. The devices
connect to the hub over real TCP sessions (handshake, summaries, deltas, pushes).
Then the tablet drops off the network: payments happen on both sides of the cut, the
tablet pays while offline, and when its link heals everything converges. The closing
table shows every replica's state hash and balances and what moved over the wire.
Keys are stored unencrypted here because the homes are thrown away at the end.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..core.ids import Account, device_id
from ..core.ledger import Replica
from ..core.money import format_amount
from ..core.network import NetworkDescriptor
from ..core.store import NodeStore
from ..core.wallet import Wallet
from ..errors import PaymentRefused
from ..node.links import Link, open_link
from ..node.node import Node, SessionStats
from ..storage.home import Home
from .commands import now_ms

__all__ = ["run_demo"]

_CONVERGE_TIMEOUT = 20.0


@dataclass
class _Member:
    label: str
    replica: Replica
    wallet: Wallet
    node: Node
    link_scope: trio.CancelScope | None = None
    sessions: list[SessionStats] = field(default_factory=list)

    def close(self) -> None:
        store = self.replica.store
        assert isinstance(store, NodeStore)
        store.close()


def _member(root: Path, label: str, network: NetworkDescriptor | None) -> _Member:
    home = Home(root / label)
    key = home.create_key(None)
    if network is None:
        network = NetworkDescriptor(name="Demo site network", currency="AED",
                                    authority=bytes(key.verify_key))
    home.set_network(network)
    replica = home.replica()
    wallet = Wallet(replica, key)
    return _Member(label, replica, wallet, node=None)  # type: ignore[arg-type]


def run_demo() -> int:
    # Sessions closing at the end of the demo are expected; keep their logs quiet.
    logging.getLogger("p2p_ledger.node").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="p2p-ledger-demo-") as tmp:
        root = Path(tmp)
        hub = _member(root, "hub", None)
        net = hub.replica.network
        devices = [_member(root, label, net) for label in ("fuel-pos", "truck", "tablet")]
        members = [hub, *devices]
        try:
            _setup(hub, devices)
            for m in members:
                m.node = Node(m.replica, m.wallet.key,
                              role="authority" if m is hub else "device")
            return trio.run(_run, hub, devices)
        finally:
            for m in members:
                m.close()


def _setup(hub: _Member, devices: list[_Member]) -> None:
    print(f"network {hub.replica.network.name!r}, currency AED; the authority "
          f"{device_id(hub.wallet.device)[:12]}... runs the site hub")
    with hub.replica.store.transaction():
        for d in devices:
            hub.wallet.admit(d.wallet.device, now_ms=now_ms())
            print(f"  admitted {d.label:<9} {device_id(d.wallet.device)}")
        truck, tablet = devices[1], devices[2]
        hub.wallet.issue(truck.wallet.account(), 500_00, key="cash-in-truck", now_ms=now_ms())
        hub.wallet.issue(tablet.wallet.account(), 300_00, key="cash-in-tablet", now_ms=now_ms())
    print("  cash-in: 500.00 AED to truck, 300.00 AED to tablet")


async def _connect(member: _Member, link: Link) -> None:
    """Keep one device linked to the hub until its scope is cancelled (a partition)."""
    with trio.CancelScope() as scope:
        member.link_scope = scope
        async with trio.open_nursery() as nursery:
            stream = await open_link(link, nursery)
            stats = await member.node.run_session(stream, initiator=True, address=str(link))
            member.sessions.append(stats)


async def _converged(members: list[_Member]) -> float:
    start = trio.current_time()
    with trio.fail_after(_CONVERGE_TIMEOUT):
        # Replicas change in other tasks, with no event to wait on: poll.
        while len({m.replica.state_hash() for m in members}) > 1:  # noqa: ASYNC110
            await trio.sleep(0.02)
    return trio.current_time() - start


def _pay(payer: _Member, payee: _Member, amount: int, memo: str) -> None:
    try:
        with payer.replica.store.transaction():
            result = payer.wallet.pay(payee.wallet.account(), amount, key=memo, memo=memo,
                                      now_ms=now_ms())
    except PaymentRefused as exc:
        print(f"  {payer.label:<9} -> {payee.label:<9} refused: {exc}")
        return
    payer.node.push_new(trio.current_time())
    print(f"  {payer.label:<9} -> {payee.label:<9} {format_amount(amount, 'AED'):>12}  "
          f"{memo} ({result.verdict.value})")


async def _run(hub: _Member, devices: list[_Member]) -> int:
    pos, truck, tablet = devices
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(_serve, hub.node), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        link = Link(scheme="tcp", host="127.0.0.1", port=port)
        print(f"hub listening on {link}; devices connect")
        for d in devices:
            nursery.start_soon(_connect, d, link)
            nursery.start_soon(d.node.watch_store)
        took = await _converged([hub, *devices])
        print(f"all four replicas in sync after {took * 1000:.0f} ms")

        print("the tablet loses its link (partition); payments on both sides:")
        assert tablet.link_scope is not None
        tablet.link_scope.cancel()
        await trio.sleep(0.05)
        _pay(truck, pos, 120_50, "diesel 60 L")
        await _converged([hub, pos, truck])
        _pay(pos, hub, 40_00, "fuel levy")
        _pay(tablet, truck, 25_00, "shared tools (offline)")
        _pay(tablet, pos, 900_00, "overdraft attempt (offline)")
        await _converged([hub, pos, truck])
        print(f"  online side in sync; tablet state hash "
              f"{tablet.replica.state_hash().hex()[:16]} differs: "
              f"{tablet.replica.state_hash() != hub.replica.state_hash()}")

        print("the tablet's link heals:")
        nursery.start_soon(_connect, tablet, link)
        took = await _converged([hub, *devices])
        print(f"  converged {took * 1000:.0f} ms after reconnecting")
        code = _table([hub, *devices])
        nursery.cancel_scope.cancel()
    return code


async def _serve(node: Node, stream: trio.SocketStream) -> None:
    await node.serve_stream(stream, "tcp://127.0.0.1")


def _table(members: list[_Member]) -> int:
    accounts = [Account(device=m.wallet.device) for m in members]
    head = (f"{'replica':<9} {'records':>7}  {'state hash':<16}  "
            + "  ".join(f"{m.label:>12}" for m in members) + "  conserved  moved (in/out)")
    print()
    print(head)
    print("-" * len(head))
    for m in members:
        r = m.replica
        cells = "  ".join(f"{format_amount(r.balance(a), 'AED'):>12}" for a in accounts)
        live = list(m.node.peers.values())
        recs_in = sum(s.records_in for s in m.node.completed) + sum(
            p.session.records_received for p in live)
        recs_out = sum(s.records_out for s in m.node.completed) + sum(
            p.session.records_sent for p in live)
        bytes_io = sum(s.bytes_in + s.bytes_out for s in m.node.completed) + sum(
            p.session.bytes_received + p.session.bytes_sent for p in live)
        print(f"{m.label:<9} {r.store.totals().records:>7}  {r.state_hash().hex()[:16]}  "
              f"{cells}  {'yes' if r.conserved() else 'NO':>9}  "
              f"{recs_in}/{recs_out} records, {bytes_io} bytes")
    same = (len({m.replica.state_hash() for m in members}) == 1
            and all(m.replica.conserved() for m in members))
    print()
    print("all replicas converged: same state hash and balances, money conserved"
          if same else "REPLICAS DIVERGED")
    return 0 if same else 1
