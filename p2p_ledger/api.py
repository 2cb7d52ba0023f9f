"""The application's handle on one home: `open_home`, `create_network`, `join_network`.

A `Ledger` holds what a program on a device, a point of sale or a hub works with: the
home's replica (its SQLite store), the device key unsealed with the passphrase, and a
wallet that signs this device's records. Its write methods (`pay`, `issue`, `redeem`,
`admit`) each sign and store one record in one transaction, committed when they
return, and tell the nodes made by `node()` at once, so a live session pushes the
payment and the nodes' feeds publish it. Closing the ledger closes the store.

Nothing here runs sessions: that is `Node` (node/node.py), on trio. Everything here
is synchronous and quick, except unsealing the key (Argon2id, a few tens of
milliseconds) when a home is opened.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from types import TracebackType

import nacl.signing
import trio

from .core.ids import DEFAULT_ACCOUNT_NAME, Account, device_id, parse_device_id
from .core.ledger import Applied, Replica
from .core.money import format_amount
from .core.network import DEFAULT_TIERS, NetworkDescriptor, Tier
from .core.records import Role
from .core.wallet import PaymentResult, Wallet
from .errors import KeyFileError, LocalError
from .node.node import Node, NodeConfig
from .storage.home import Home
from .storage.sqlite import SqliteStore

__all__ = ["Ledger", "create_network", "join_network", "open_home"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ledger:
    """One home, open: `replica`, `wallet`, `device` (the public key), `network`.
    Use it as a context manager, or call `close()`. Amounts are integers in the minor
    units of the network's currency (12_50 is 12.50 AED); accounts are `Account`
    values or their text, `DEVICE_ID` or `DEVICE_ID/NAME`."""

    def __init__(self, home: Home, replica: Replica, key: nacl.signing.SigningKey) -> None:
        self.home = home
        self.replica = replica
        self.wallet = Wallet(replica, key)
        self.device = self.wallet.device
        self._key = key
        self._nodes: list[Node] = []
        self._closed = False

    @property
    def store(self) -> SqliteStore:
        store = self.replica.store
        assert isinstance(store, SqliteStore)
        return store

    @property
    def network(self) -> NetworkDescriptor:
        return self.replica.network

    @property
    def device_id(self) -> str:
        """This device's id, as `p2p-ledger id` prints it: what the authority admits and
        what payers pay to."""
        return device_id(self.device)

    def account(self, name: str = DEFAULT_ACCOUNT_NAME) -> Account:
        """One of this device's accounts (`main` by default)."""
        return Account(device=self.device, name=name)

    def balance(self, account: Account | str | None = None) -> int:
        """An account's balance as this replica knows it, in minor units (default: this
        device's `main` account)."""
        return self.replica.balance(self._account(account) if account else self.account())

    def format(self, amount: int) -> str:
        """An amount in minor units as people read it: `12.50 AED`."""
        return format_amount(amount, self.network.currency)

    # ------------------------------------------------------------ writes

    def pay(self, to: Account | str, amount: int, *, key: str | None = None,
            memo: str | None = None, from_name: str = DEFAULT_ACCOUNT_NAME) -> PaymentResult:
        """Pay `amount` (minor units) from this device's account `from_name` to `to`:
        sign a transfer and store it, committed when this returns. Works offline: the
        payee can check it, given this chain, when the records reach it.

        `key` is the idempotency key: pass your own (a receipt or order number) so
        that a retry after a crash or a timeout cannot pay twice - the same key for the
        same payment returns the original record with verdict `duplicate`. Default: a
        fresh random key. Raises `PaymentRefused` (nothing signed) for a payment the
        ledger would reject - over the funds available, over an offline limit, a key
        already used for a different payment, a revoked or forked device - and
        `AmountError` for an amount that is not a positive integer in range."""
        to = self._account(to)
        with self.store.transaction():
            result = self.wallet.pay(to, amount, key=key or _fresh_key(), now_ms=_now_ms(),
                                     from_name=from_name, memo=memo)
        self._stored()
        return result

    def issue(self, to: Account | str, amount: int, *, key: str | None = None) -> PaymentResult:
        """(Authority) put `amount` (minor units) into account `to`: a cash-in or top-up.
        `key` is the idempotency key, as for `pay`. `LocalError` on any other device;
        `PaymentRefused` for an issue the ledger would reject."""
        to = self._account(to)
        with self.store.transaction():
            result = self.wallet.issue(to, amount, key=key or _fresh_key(), now_ms=_now_ms())
        self._stored()
        return result

    def redeem(self, amount: int, *, key: str | None = None,
               from_name: str = DEFAULT_ACCOUNT_NAME) -> PaymentResult:
        """Take `amount` (minor units) out of this device's account `from_name`: a
        cash-out. `key` and the refusals are as for `pay`."""
        with self.store.transaction():
            result = self.wallet.redeem(amount, key=key or _fresh_key(), now_ms=_now_ms(),
                                        from_name=from_name)
        self._stored()
        return result

    def admit(self, device: bytes | str, *, role: Role = Role.DEVICE, tier: int = 0,
              offline_limit: int | None = None, expires_ms: int | None = None) -> Applied:
        """(Authority) admit a device (its id, or public key) to the network with a
        `role`, a KYC `tier` (its offline limits) and optionally its own
        `offline_limit` and an expiry (milliseconds since the epoch). Its records are
        accepted by peers once this admit reaches them. `LocalError` on any other
        device or for a tier the network does not have."""
        key = parse_device_id(device) if isinstance(device, str) else device
        with self.store.transaction():
            applied = self.wallet.admit(key, now_ms=_now_ms(), role=role, tier=tier,
                                        offline_limit=offline_limit, expires=expires_ms)
        self._stored()
        return applied

    # ------------------------------------------------------------ nodes

    def node(self, *, config: NodeConfig | None = None, role: str | None = None) -> Node:
        """A `Node` serving this ledger's replica with this device's key, told of every
        record this ledger signs. `role` fixes the role it claims (default: the one its
        newest admit gives); see `Node` for the rest."""
        node = Node(self.replica, self._key, role=role, config=config)
        self._nodes.append(node)
        return node

    def _stored(self) -> None:
        """After a commit: inside trio, push the new record to the nodes' live sessions
        and feeds now; outside, they find it the next time they push."""
        try:
            now = trio.current_time()
        except RuntimeError:  # not inside trio.run
            return
        for node in self._nodes:
            node.push_new(now)

    def _account(self, account: Account | str) -> Account:
        return Account.parse(account) if isinstance(account, str) else account

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the store. The ledger and its nodes cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _fresh_key() -> str:
    return secrets.token_hex(8)


def open_home(path: str | Path, *, passphrase: str | None = None) -> Ledger:
    """Open the home folder `path` (made by `p2p-ledger init --network` or
    `network create`, or by `join_network` / `create_network`) for signing.

    `passphrase` unseals the device key (None for a key stored unencrypted).
    Raises `WrongPassphrase`, `KeyFileError` (no key, or a sealed key and no
    passphrase), `LocalError` for a home with no network, `StoreDamaged` if SQLite
    finds the store damaged, `StoreBusy` if another process holds its write lock."""
    home = Home(path)
    key = home.signing_key(lambda: _needed(passphrase, home))
    replica = home.replica(check=True)
    return Ledger(home, replica, key)


def _needed(passphrase: str | None, home: Home) -> str:
    if passphrase is None:
        raise KeyFileError(f"the device key in {home.path} is sealed: give its passphrase")
    return passphrase


def create_network(path: str | Path, *, name: str, currency: str, passphrase: str | None,
                   tiers: tuple[Tier, ...] = DEFAULT_TIERS) -> Ledger:
    """Make a new network whose authority is a new device key in the home `path`, as
    `p2p-ledger network create` does, and open it. `currency` is an ISO 4217 code;
    `tiers` are the offline limits by KYC tier (() for none). The key is sealed under
    `passphrase` (None stores it unencrypted: anyone who copies the file can sign).
    `LocalError` if the home already has a key or a network, or for a bad name or
    currency; nothing is written then."""
    home = Home(path)
    _check_empty(home)
    NetworkDescriptor(name=name, currency=currency, authority=bytes(32), tiers=tiers)
    key = home.create_key(passphrase)
    home.set_network(NetworkDescriptor(name=name, currency=currency,
                                       authority=bytes(key.verify_key), tiers=tiers))
    return Ledger(home, home.replica(), key)


def join_network(path: str | Path, network: NetworkDescriptor, *,
                 passphrase: str | None) -> Ledger:
    """Make a new device home at `path` for `network` (its descriptor, from the
    authority's `ledger.network` or `NetworkDescriptor.from_json`), as `p2p-ledger init
    --network` does, and open it. The device can sign once the authority has admitted
    `ledger.device_id` and the admit has reached it by a sync. Key sealing as in
    `create_network`; `LocalError` if the home already has a key or a network."""
    home = Home(path)
    _check_empty(home)
    key = home.create_key(passphrase)
    home.set_network(network)
    return Ledger(home, home.replica(), key)


def _check_empty(home: Home) -> None:
    if home.has_key() or home.has_network():
        raise LocalError(f"{home.path} already has a device key or a network")
    if home.path.exists() and not home.path.is_dir():
        raise LocalError(f"{home.path} is a file, not a home folder")
