"""p2p-ledger: an offline-first payment ledger whose replicas sync as a CRDT.

Layers, bottom up (each uses only those below it):

- `p2p_ledger.core`: records, the replica and its ledger rules, money, ids. No I/O.
- `p2p_ledger.storage`: the SQLite store, key files, bundles, node homes.
- `p2p_ledger.node`: the node on trio: sessions over links, relaying, record feeds.
- `p2p_ledger.api`: `open_home` and the `Ledger` it returns, for applications.
- `p2p_ledger.cli`: the `p2p-ledger` command.

What users of the library call is re-exported here. A trio application starts with

    with open_home("HOME", passphrase=...) as ledger:
        ledger.pay(payee, 12_50, key="receipt-1041")
        node = ledger.node()
        ... await node.sync("tcp://hub.local:7700") ...

(README.md, section "Python API", and examples/).

Every name but the errors is imported on first use (PEP 562): `import p2p_ledger`
costs next to nothing, the commands that do not touch the network never import trio,
and the command line's entry point (`cli/entry.py`) starts before any heavy import,
so that a Ctrl-C during those imports is an interruption, not a traceback.
"""

import importlib
from typing import TYPE_CHECKING

# The errors are light (they import nothing of ours); everything else is imported on
# first use.
from .errors import (
    AmountError,
    FeedOverflow,
    InvalidRecord,
    KeyFileError,
    LocalError,
    P2PLedgerError,
    PaymentRefused,
    PendingFull,
    RecordProblem,
    StoreBusy,
    StoreDamaged,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
    SyncFailed,
    TransportError,
    WrongPassphrase,
)

if TYPE_CHECKING:
    from .api import Ledger, create_network, join_network, open_home
    from .core.hlc import next_hlc
    from .core.ids import Account, device_id, parse_device_id
    from .core.ledger import Applied, Delivery, Frontier, IngestReport, Replica
    from .core.money import format_amount, parse_amount
    from .core.network import DEFAULT_TIERS, NetworkDescriptor, Tier
    from .core.records import (
        Admit,
        Issue,
        Kind,
        Meta,
        Record,
        Redeem,
        Revoke,
        Role,
        SignedRecord,
        Transfer,
        open_record,
        parse_record,
        sign_record,
    )
    from .core.store import LedgerStore, MemoryStore, Verdict
    from .core.wallet import PaymentResult, Wallet
    from .node.feed import RecordFeed, RecordStored
    from .node.node import Node, NodeConfig, SessionStats
    from .storage.home import Home
    from .storage.sqlite import SqliteStore

__version__ = "0.1.0"

# The module each name comes from, imported on first use (`__getattr__`).
_MODULES: dict[str, tuple[str, ...]] = {
    ".core.hlc": ("next_hlc",),
    ".core.ids": ("Account", "device_id", "parse_device_id"),
    ".core.ledger": ("Applied", "Delivery", "Frontier", "IngestReport", "Replica"),
    ".core.money": ("format_amount", "parse_amount"),
    ".core.network": ("DEFAULT_TIERS", "NetworkDescriptor", "Tier"),
    ".core.records": ("Admit", "Issue", "Kind", "Meta", "Record", "Redeem", "Revoke", "Role",
                      "SignedRecord", "Transfer", "open_record", "parse_record",
                      "sign_record"),
    ".core.store": ("LedgerStore", "MemoryStore", "Verdict"),
    ".core.wallet": ("PaymentResult", "Wallet"),
    ".storage.home": ("Home",),
    ".storage.sqlite": ("SqliteStore",),
    ".api": ("Ledger", "create_network", "join_network", "open_home"),
    ".node.feed": ("RecordFeed", "RecordStored"),
    ".node.node": ("Node", "NodeConfig", "SessionStats"),
}
_ON_FIRST_USE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE))

__all__ = [
    # opening a home, paying
    "Ledger", "open_home", "create_network", "join_network",
    # the node: syncing, serving, record feeds
    "Node", "NodeConfig", "SessionStats", "RecordFeed", "RecordStored",
    # values
    "Account", "Admit", "Applied", "DEFAULT_TIERS", "Delivery", "Frontier",
    "IngestReport", "Issue", "Kind", "Meta", "NetworkDescriptor", "PaymentResult", "Record",
    "Redeem", "Revoke", "Role", "SignedRecord", "Tier", "Transfer", "Verdict",
    # lower layers
    "Home", "LedgerStore", "MemoryStore", "Replica", "SqliteStore", "Wallet",
    # errors
    "AmountError", "FeedOverflow", "InvalidRecord", "KeyFileError", "LocalError",
    "P2PLedgerError", "PaymentRefused", "PendingFull", "RecordProblem", "StoreBusy",
    "StoreDamaged", "StoreError", "StoreReadOnly", "StoreUnavailable", "SyncFailed",
    "TransportError", "WrongPassphrase",
    # functions
    "__version__", "device_id", "format_amount", "next_hlc", "open_record", "parse_amount",
    "parse_device_id", "parse_record", "sign_record",
]
