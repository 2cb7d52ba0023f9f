"""A node's home directory: its key, its network, its store.

    HOME/key.json        the device key (sealed under a passphrase unless asked not to)
    HOME/network.json    the network descriptor this node belongs to
    HOME/ledger.sqlite3  the store

`Home` only finds and opens these; the CLI decides where passphrases come from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nacl.signing

from ..core.ledger import Replica
from ..core.network import NetworkDescriptor
from ..errors import LocalError, StoreError
from .keys import key_device, key_protection, load_key, save_key, write_private
from .sqlite import SqliteStore

__all__ = ["Home"]


class Home:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_path = self.path / "key.json"
        self.network_path = self.path / "network.json"
        self.store_path = self.path / "ledger.sqlite3"

    # ------------------------------------------------------------ key

    def has_key(self) -> bool:
        return self.key_path.exists()

    def create_key(self, passphrase: str | None) -> nacl.signing.SigningKey:
        if self.has_key():
            raise LocalError(f"{self.path} already has a device key")
        self.path.mkdir(parents=True, exist_ok=True)
        key = nacl.signing.SigningKey.generate()
        save_key(self.key_path, key, passphrase)
        return key

    def public_key(self) -> bytes:
        """The device's public key, read without the passphrase."""
        return key_device(self.key_path)

    def key_is_encrypted(self) -> bool:
        return key_protection(self.key_path) != "none"

    def signing_key(self, passphrase: Callable[[], str]) -> nacl.signing.SigningKey:
        return load_key(self.key_path, passphrase() if self.key_is_encrypted() else None)

    # ------------------------------------------------------------ network

    def has_network(self) -> bool:
        return self.network_path.exists()

    def set_network(self, network: NetworkDescriptor) -> None:
        if self.has_network():
            raise LocalError(f"{self.path} already belongs to a network")
        self.path.mkdir(parents=True, exist_ok=True)
        write_private(self.network_path, network.to_json())

    def network(self) -> NetworkDescriptor:
        try:
            text = self.network_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LocalError(
                f"{self.path} has no network: run `network create` or "
                "`init --network FILE` first") from None
        return NetworkDescriptor.from_json(text)

    # ------------------------------------------------------------ store

    def open_store(self, *, check: bool = False) -> SqliteStore:
        """The store; with `check`, only if SQLite's quick_check finds it undamaged
        (`StoreDamaged` otherwise): for whatever signs or stores records in it."""
        store = SqliteStore(self.store_path, self.network().network_id)
        if check:
            try:
                store.quick_check()
            except StoreError:
                store.close()
                raise
        return store

    def replica(self, *, check: bool = False) -> Replica:
        return Replica(self.network(), self.open_store(check=check))
