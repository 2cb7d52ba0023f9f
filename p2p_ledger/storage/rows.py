"""The rows both stores read back the same way: a record's row (the columns
`ROW_COLS`, in that order) and an admit's row (id, device, role, tier, offline_limit,
expires), decoded into the core's values. SQLite gives `bytes` for a BLOB and psycopg
for a bytea; `bytes()` of either is the value itself, so one decoder serves both.

A record row that does not decode is damage (`StoreDamaged`): SQLite keeps no checksum
of the values in its pages, so a changed byte reaches here. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.records import Kind
from ..core.store import AdmitInfo, ChainState, StoredRecord, Verdict
from ..errors import StoreDamaged
from .connection import damaged

__all__ = ["ROW_COLS", "admit_row", "record_row"]

ROW_COLS = "id, author, seq, prev, kind, hlc, verdict, reason, chain"


def record_row(t: Sequence[Any], path: str | None = None) -> StoredRecord:
    """The `StoredRecord` of a row of `ROW_COLS`; `StoreDamaged` if it does not decode,
    its message naming the store file `path` (SQLite's) or, without one, the reason
    alone (as PostgreSQL's store says it)."""
    try:
        return StoredRecord(id=bytes(t[0]), author=bytes(t[1]), seq=t[2],
                            prev=None if t[3] is None else bytes(t[3]), kind=Kind(t[4]),
                            hlc=t[5], verdict=Verdict(t[6]), reason=t[7],
                            chain=ChainState.decode(bytes(t[8])))
    except (ValueError, IndexError, TypeError) as exc:  # what decoding garbage raises
        what = f"a stored record row does not decode: {exc}"
        raise StoreDamaged(what if path is None else damaged(path, what)) from exc


def admit_row(t: Sequence[Any]) -> AdmitInfo:
    """The `AdmitInfo` of an admits row (id, device, role, tier, offline_limit,
    expires)."""
    return AdmitInfo(id=bytes(t[0]), device=bytes(t[1]), role=t[2], tier=t[3],
                     offline_limit=t[4], expires=t[5])
