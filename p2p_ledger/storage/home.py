"""A node's home directory: its key, its network, its store.

    HOME/key.json        the device key (sealed under a passphrase unless asked not to)
    HOME/network.json    the network descriptor this node belongs to
    HOME/ledger.sqlite3  the store, or
    HOME/store.url       the URL of a PostgreSQL store shared by every front-end on this
                         home (`init --store postgresql://...`; specs/cloud.md)

`Home` only finds and opens these; the CLI decides where passphrases come from. The
SQLite store is made when the home joins its network (`set_network`, after any
`set_store_url`), never later: a home with a network whose store file is missing or
empty lost its records, and opening it is `StoreDamaged`, not a new empty store in
which the device would sign its seqs again - a fork of its own chain.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nacl.signing

from ..core.ledger import Replica
from ..core.network import NetworkDescriptor
from ..core.store import NodeStore
from ..errors import LocalError, StoreDamaged, StoreError
from .connection import damaged
from .keys import key_device, key_protection, load_key, save_key, write_private
from .postgres import PostgresStore, is_postgres_url
from .sqlite import SqliteStore

__all__ = ["Home"]


class Home:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_path = self.path / "key.json"
        self.network_path = self.path / "network.json"
        self.store_path = self.path / "ledger.sqlite3"
        self.store_url_path = self.path / "store.url"

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
        if self.store_url() is None:  # the store is made with the home, never later
            SqliteStore(self.store_path, network.network_id).close()

    def network(self) -> NetworkDescriptor:
        try:
            text = self.network_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LocalError(
                f"{self.path} has no network: run `network create` or "
                "`init --network FILE` first") from None
        return NetworkDescriptor.from_json(text)

    # ------------------------------------------------------------ store

    def set_store_url(self, url: str) -> None:
        """Keep this home's records in the PostgreSQL database at `url` (it may carry a
        password: the file is private to its owner). Before `set_network`, which would
        make the SQLite store otherwise."""
        if not is_postgres_url(url):
            raise LocalError(f"--store must be a postgresql:// URL, not {url!r}")
        if self.store_url_path.exists() or self.store_path.exists():
            raise LocalError(f"{self.path} already has a store")
        self.path.mkdir(parents=True, exist_ok=True)
        write_private(self.store_url_path, url + "\n")

    def store_url(self) -> str | None:
        """The PostgreSQL URL of this home's store, or None for its SQLite file."""
        try:
            return self.store_url_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def open_store(self, *, check: bool = False) -> NodeStore:
        """The store; with `check`, a SQLite store only if its quick_check finds it
        undamaged (`StoreDamaged` otherwise): for whatever signs or stores records in
        it. (A PostgreSQL server checks its own pages as it reads them.)"""
        url = self.store_url()
        if url is not None:
            return PostgresStore(url, self.network().network_id)
        network_id = self.network().network_id
        self._check_store_file()
        store = SqliteStore(self.store_path, network_id)
        if check:
            try:
                store.quick_check()
            except StoreError:
                store.close()
                raise
        return store

    def _check_store_file(self) -> None:
        """The SQLite store was made with the home (`set_network`): missing or empty
        (SQLite writes its first page when the store is made) it is damage."""
        try:
            size = self.store_path.stat().st_size
        except FileNotFoundError:
            raise StoreDamaged(damaged(str(self.store_path), "the file is missing")) from None
        if size == 0:
            raise StoreDamaged(damaged(str(self.store_path), "the file is empty"))

    def replica(self, *, check: bool = False) -> Replica:
        return Replica(self.network(), self.open_store(check=check))
