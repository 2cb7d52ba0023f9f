"""The benchmark's payment workload as plain entries, for the CRDTs that do not sign.

Yjs and Automerge are fed the very records the ledger syncs: each signed record of
`bench_ingest.Workload` is decoded with `parse_record` and turned into one plain
entry holding what a payments person would call its content, with none of the
ledger's own metadata (seq, prev, refs, clock, signature). Each CRDT adds its own
metadata instead (client clocks, actor ids, change hashes). Record kinds map to:

    transfer  {payer, payee, amount, key, memo}
    issue     {payer: the authority, payee, amount, key, memo: null}   (cash-in)
    redeem    {payer, payee: null, amount, key, memo: null}             (cash-out)
    admit     {admit: device, tier, limit}
    meta      {account: device, field, value}

Device keys stay 32 raw bytes (Yjs and Automerge both hold binary values), amounts
integers in minor units. The entries go to the harnesses as JSON with hex bytes.
This module only converts; it never signs, stores or syncs anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from p2p_ledger.core.records import Admit, Issue, Meta, Redeem, Transfer, parse_record

Entry = dict[str, object]
BYTES_FIELDS = ("payer", "payee", "admit", "account")


def entry_of(raw: bytes) -> Entry:
    """One record's content as a plain entry (bytes fields as bytes)."""
    signed = parse_record(raw)
    body, author = signed.record.body, signed.record.author
    match body:
        case Transfer():
            return {"payer": author, "payee": body.to.device, "amount": body.amount,
                    "key": body.key, "memo": body.memo}
        case Issue():
            return {"payer": author, "payee": body.to.device, "amount": body.amount,
                    "key": body.key, "memo": None}
        case Redeem():
            return {"payer": author, "payee": None, "amount": body.amount, "key": body.key,
                    "memo": None}
        case Admit():
            return {"admit": body.device, "tier": body.tier, "limit": body.offline_limit}
        case Meta():
            return {"account": author, "field": body.field, "value": body.value}
    raise ValueError(f"the workload has no {type(body).__name__} records")


def entries(raws: Iterable[bytes]) -> list[Entry]:
    return [entry_of(raw) for raw in raws]


def to_json(entry: Entry) -> dict[str, object]:
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in entry.items()}


def from_json(item: dict[str, object]) -> Entry:
    return {k: bytes.fromhex(v) if k in BYTES_FIELDS and isinstance(v, str) else v
            for k, v in item.items()}


def write(path: Path, raws: Sequence[bytes]) -> int:
    """Write the entries of `raws` to `path` as a JSON list; returns how many."""
    items = [to_json(e) for e in entries(raws)]
    path.write_text(json.dumps(items, separators=(",", ":")))
    return len(items)


def read(path: Path) -> list[Entry]:
    return [from_json(item) for item in json.loads(path.read_text())]
