"""p2p-ledger: an offline-first payment ledger whose replicas sync as a CRDT.

Layers, bottom up (each uses only those below it):

- `p2p_ledger.core`: records, the replica and its ledger rules, money, ids. No I/O.
- `p2p_ledger.storage`: the SQLite store, key files, bundles, node homes.
- `p2p_ledger.cli`: the `p2p-ledger` command.

What users of the library call is re-exported here.
"""

from .core.hlc import next_hlc
from .core.ids import Account, device_id, parse_device_id
from .core.ledger import Applied, Delivery, Frontier, IngestReport, Replica
from .core.money import format_amount, parse_amount
from .core.network import NetworkDescriptor
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
from .errors import (
    AmountError,
    InvalidRecord,
    KeyFileError,
    LocalError,
    P2PLedgerError,
    PaymentRefused,
    PendingFull,
    RecordProblem,
    StoreDamaged,
    StoreError,
    WrongPassphrase,
)
from .storage.home import Home
from .storage.sqlite import SqliteStore

__version__ = "0.1.0"

__all__ = [
    "Account", "Admit", "AmountError", "Applied", "Delivery", "Frontier", "Home",
    "IngestReport", "InvalidRecord", "Issue", "KeyFileError", "Kind", "LedgerStore",
    "LocalError", "MemoryStore", "Meta", "NetworkDescriptor", "P2PLedgerError",
    "PaymentRefused", "PaymentResult", "PendingFull", "Record", "RecordProblem", "Redeem",
    "Replica", "Revoke", "Role", "SignedRecord", "SqliteStore", "StoreDamaged", "StoreError",
    "Transfer", "Verdict", "Wallet", "WrongPassphrase", "__version__", "device_id",
    "format_amount", "next_hlc", "open_record", "parse_amount", "parse_device_id",
    "parse_record", "sign_record",
]
