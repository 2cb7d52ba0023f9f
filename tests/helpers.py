"""Shared builders for tests: a network, its authority, devices, and replicas over
either store implementation. Fixed keys (from seeds) keep failures reproducible."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from p2p_ledger.core.ids import Account
from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.store import LedgerStore, MemoryStore
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.storage.sqlite import SqliteStore

T0 = 1_763_900_000_000  # a fixed "now" in ms (2025-11-23), used as the clock in tests


def key(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(name.encode(), digest_size=32).digest())


StoreFactory = Callable[[], LedgerStore]


@dataclass
class World:
    """An authority and named devices of one network; `replica()` makes empty replicas."""

    authority_key: nacl.signing.SigningKey
    network: NetworkDescriptor
    store_factory: StoreFactory = MemoryStore
    device_keys: dict[str, nacl.signing.SigningKey] = field(default_factory=dict)

    def replica(self) -> Replica:
        return Replica(self.network, self.store_factory())

    def wallet(self, name: str, replica: Replica | None = None) -> Wallet:
        k = self.authority_key if name == "authority" else self.device_keys[name]
        return Wallet(replica or self.replica(), k)

    def device(self, name: str) -> bytes:
        return bytes(self.device_keys[name].verify_key)

    def account(self, name: str, account: str = "main") -> Account:
        return Account(device=self.device(name), name=account)


def make_world(devices: tuple[str, ...] = ("alice", "bob", "carol"),
               store_factory: StoreFactory = MemoryStore, seed: str = "test") -> World:
    ak = key(f"{seed}/authority")
    net = NetworkDescriptor(name=f"net-{seed}", currency="AED", authority=bytes(ak.verify_key))
    return World(authority_key=ak, network=net, store_factory=store_factory,
                 device_keys={d: key(f"{seed}/{d}") for d in devices})


def sqlite_factory(tmp: Path, network: NetworkDescriptor) -> StoreFactory:
    counter = iter(range(10**9))
    return lambda: SqliteStore(tmp / f"store-{next(counter)}.sqlite3", network.network_id)


def sync(dst: Replica, src: Replica, now_ms: int = T0) -> int:
    """Deliver everything src holds that dst lacks; returns records applied."""
    report = dst.receive_many(src.delta(dst.frontier()), now_ms=now_ms)
    assert not report.refused, report.refused
    return len(report.applied)


def funded_world(amounts: dict[str, int] | None = None,
                 store_factory: StoreFactory = MemoryStore) -> tuple[World, Replica]:
    """A world whose authority replica has admitted every device and issued `amounts`
    (default 100.00 AED each). Returns the world and the authority's replica."""
    world = make_world(store_factory=store_factory)
    auth = world.wallet("authority")
    for name in world.device_keys:
        auth.admit(world.device(name), now_ms=T0)
    for name, minor in (amounts or {n: 100_00 for n in world.device_keys}).items():
        auth.issue(world.account(name), minor, key=f"cash-in-{name}", now_ms=T0)
    return world, auth.replica
