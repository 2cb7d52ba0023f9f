"""What the replica hands back: the outcome of a record or a batch, and a device's
offline limits. Plain values, no behaviour (moved out of `ledger.py`)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from ..errors import InvalidRecord
from .frozen import quick_init
from .records import SignedRecord
from .store import Verdict

__all__ = ["Applied", "Delivery", "IngestReport", "OfflineLimits"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """A record that was stored, with its verdict."""

    record: SignedRecord
    verdict: Verdict
    reason: str | None = None
    equivocates_with: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """The outcome of handing one record to the replica."""

    applied: tuple[Applied, ...] = ()
    refused: tuple[InvalidRecord, ...] = ()  # records released from pending that failed
    waiting: bool = False
    already_held: bool = False


quick_init(Applied)  # one per record stored (frozen.py)
quick_init(Delivery)


@dataclass(slots=True, kw_only=True)
class IngestReport:
    """The outcome of a batch: what was stored, refused, left waiting or already held."""

    applied: list[Applied] = field(default_factory=list)
    refused: list[tuple[int | None, InvalidRecord]] = field(default_factory=list)
    waiting: int = 0  # records in the pending area when the batch ended
    already_held: int = 0
    # records of this batch not in the store when it ended: refused, or parked pending
    # (what a STORED acknowledgement must not count as stored)
    unstored: int = 0
    # The records of `applied` that had waited in the pending area and were released
    # by this batch, each with the origins that delivered it: not necessarily this
    # batch's origin, which may only have brought their causal past (a node relays
    # such a record to that origin's peer too; specs/node.md section 2).
    released: dict[bytes, frozenset[Hashable]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    """A device's offline limits, from its tier and its admit, in minor units; expiry
    in Unix milliseconds."""

    per_payment: int
    unsettled: int
    holding: int
    expires: int | None

