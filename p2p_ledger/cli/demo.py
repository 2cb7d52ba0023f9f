"""`p2p-ledger demo`: an authority and three devices in temporary homes.

The authority admits a fuel-station point of sale, a truck and a site tablet, and
issues money to two of them. The devices then pay each other while apart (each signs
against its own replica only), and the four nodes exchange bundles - summary, export,
import, exactly as the CLI's offline exchange does - until nothing is left to move.
The closing table shows every replica's record count, state hash and balances.
Keys are stored unencrypted here because the homes are thrown away at the end.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.ids import Account, device_id
from ..core.ledger import Replica
from ..core.money import format_amount
from ..core.network import NetworkDescriptor
from ..core.wallet import Wallet
from ..errors import PaymentRefused
from ..storage.bundle import read_bundle, read_summary, write_bundle, write_summary
from ..storage.home import Home
from ..storage.sqlite import SqliteStore

__all__ = ["run_demo"]


@dataclass
class _Node:
    label: str
    home: Home
    replica: Replica
    wallet: Wallet

    def close(self) -> None:
        store = self.replica.store
        assert isinstance(store, SqliteStore)
        store.close()


def _now() -> int:
    return time.time_ns() // 1_000_000


def _make_node(root: Path, label: str, network: NetworkDescriptor | None) -> _Node:
    home = Home(root / label)
    key = home.create_key(None)
    if network is None:
        network = NetworkDescriptor(name="Demo site network", currency="AED",
                                    authority=bytes(key.verify_key))
    home.set_network(network)
    replica = home.replica()
    return _Node(label, home, replica, Wallet(replica, key))


def _exchange(src: _Node, dst: _Node, scratch: Path) -> int:
    """One offline exchange: dst's summary goes to src, src's bundle comes back."""
    summary, bundle = scratch / "summary.cbor", scratch / "bundle.cbor"
    write_summary(summary, dst.replica.network_id, dst.replica.frontier())
    raws = src.replica.delta(read_summary(summary, src.replica.network_id))
    write_bundle(bundle, src.replica.network_id, raws)
    with dst.replica.store.transaction():
        report = dst.replica.receive_many(read_bundle(bundle, dst.replica.network_id),
                                          now_ms=_now())
    assert not report.refused, report.refused
    return len(report.applied)


def _gossip(nodes: list[_Node], scratch: Path) -> tuple[int, int]:
    """Exchange bundles pairwise until a full round moves nothing."""
    bundles = moved = 0
    while True:
        round_moved = 0
        for src, dst in itertools.permutations(nodes, 2):
            got = _exchange(src, dst, scratch)
            bundles += 1
            round_moved += got
        moved += round_moved
        if round_moved == 0:
            return bundles, moved


def _pay(payer: _Node, payee: _Node, amount: int, memo: str) -> str:
    with payer.replica.store.transaction():
        try:
            result = payer.wallet.pay(payee.wallet.account(), amount, key=memo, memo=memo,
                                      now_ms=_now())
        except PaymentRefused as exc:
            return f"  {payer.label:<10} -> {payee.label:<10} refused: {exc}"
    return (f"  {payer.label:<10} -> {payee.label:<10} "
            f"{format_amount(amount, 'AED'):>12}  {memo} ({result.verdict.value})")


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="p2p-ledger-demo-") as tmp:
        root = Path(tmp)
        authority = _make_node(root, "authority", None)
        net = authority.replica.network
        nodes = [authority] + [_make_node(root, label, net)
                               for label in ("fuel-pos", "truck", "tablet")]
        try:
            return _run(root, nodes)
        finally:
            for n in nodes:
                n.close()


def _run(root: Path, nodes: list[_Node]) -> int:
    authority, pos, truck, tablet = nodes
    print(f"network {authority.replica.network.name!r}: authority "
          f"{device_id(authority.wallet.device)[:12]}..., currency AED, homes in {root}")
    with authority.replica.store.transaction():
        for n in (pos, truck, tablet):
            authority.wallet.admit(n.wallet.device, now_ms=_now())
            print(f"  admitted {n.label:<10} {device_id(n.wallet.device)}")
        authority.wallet.issue(truck.wallet.account(), 500_00, key="cash-in-truck", now_ms=_now())
        authority.wallet.issue(tablet.wallet.account(), 300_00, key="cash-in-tablet",
                               now_ms=_now())
    print("  issued 500.00 AED to truck, 300.00 AED to tablet")
    bundles, moved = _gossip(nodes, root)
    print(f"certificates and cash-in delivered: {bundles} exchanges, {moved} records")

    print("offline payments (no node can reach another):")
    print(_pay(truck, pos, 120_50, "diesel 60 L"))
    print(_pay(tablet, pos, 45_00, "lunch order"))
    print(_pay(truck, tablet, 10_00, "shared tools"))
    print(_pay(tablet, truck, 900_00, "overdraft attempt"))
    bundles, moved = _gossip(nodes, root)
    print(f"reconnected and exchanged bundles: {bundles} exchanges, {moved} records")
    print(_pay(pos, authority, 100_00, "fuel purchase settlement"))
    bundles, moved = _gossip(nodes, root)
    print(f"exchanged again: {bundles} exchanges, {moved} records")
    return _table(nodes)


def _table(nodes: list[_Node]) -> int:
    accounts = [Account(device=n.wallet.device) for n in nodes]
    head = f"{'replica':<10} {'records':>7}  {'state hash':<16}  " + "  ".join(
        f"{n.label:>12}" for n in nodes) + "  conserved"
    print()
    print(head)
    print("-" * len(head))
    hashes = set()
    for n in nodes:
        r = n.replica
        hashes.add(r.state_hash())
        cells = "  ".join(f"{format_amount(r.balance(a), 'AED'):>12}" for a in accounts)
        print(f"{n.label:<10} {r.store.totals().records:>7}  {r.state_hash().hex()[:16]}  "
              f"{cells}  {'yes' if r.conserved() else 'NO'}")
    same = len(hashes) == 1 and all(n.replica.conserved() for n in nodes)
    print()
    print("all replicas converged: same state hash and balances, money conserved"
          if same else "REPLICAS DIVERGED")
    return 0 if same else 1
