"""What a `Session` reports to the node (its events), how it is configured
(`SessionConfig`), and the summary budget sessions share (`SummaryBudget`). Moved out
of protocol/session.py unchanged; session.py re-exports every name. Pure values, no
I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.ledger import Frontier
from ..core.records import SignedRecord
from ..errors import ProtocolError

__all__ = ["Event", "HandshakeDone", "PeerSummary", "PeerSynced", "RecordsReceived",
           "SessionClosed", "SessionConfig", "SummaryBudget", "SyncComplete"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeDone:
    peer: bytes
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSummary:
    """The peer's frontier. From a full summary `authors` is None. From a sketch or
    listed tips, `authors` names the only authors whose tips differ from the frontier
    we sent, and `frontier` is that frontier with those authors' tips replaced by the
    peer's (authors only the peer holds are left out: we had nothing of theirs).
    Records stored since we sent ours may make more authors differ: the node adds
    them (`Node._widened`)."""

    frontier: Frontier
    authors: frozenset[bytes] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsReceived:
    """Records from the peer, not yet verified: bytes (from RECORDS), or rebuilt from a
    PACKED frame (`SignedRecord`, fields and bytes agreeing by construction)."""

    records: tuple[bytes | SignedRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSynced:
    sent: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncComplete:
    """Both initial deltas are complete, and the peer has acknowledged (STORED) every
    record we sent up to our SYNCED: the two sides hold the same records (unless new
    ones appeared meanwhile, which are pushed). `peer_unstored` counts the records we
    sent that the peer processed but does not hold durably (it refused them, or
    parked them waiting for records it lacks); 0 when everything arrived."""

    peer_unstored: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed:
    reason: str
    by_peer: bool
    error: ProtocolError | None = None


Event = HandshakeDone | PeerSummary | RecordsReceived | PeerSynced | SyncComplete | SessionClosed


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0      # close if no complete frame arrives for this long
    keepalive: float = 20.0         # send PING after this long without sending
    batch_bytes: int = 256 << 10    # records per RECORDS frame, by size
    max_frames_per_second: int = 2000
    # Send records as PACKED frames (compact.py) rather than RECORDS. The node turns it
    # on; off here, `send_records` sends any bytes it is given (tests send junk).
    packed: bool = False
    # The most tips a full summary of the peer may have (the wire allows
    # MAX_SUMMARY_TOTAL). Parts wait packed at 72 bytes a tip; the frontier built from
    # the whole summary takes ~350 bytes a tip more while the node computes the delta.
    max_summary_tips: int = 250_000


class SummaryBudget:
    """Tips of full summaries being received, counted across the sessions that share
    it (the node's): while one peer's long summary arrives part by part, others wait
    for theirs in the same memory. A session takes a part's tips before keeping them
    and gives them all back when its summary is complete or it closes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0

    def take(self, tips: int) -> bool:
        if self.held + tips > self.total:
            return False
        self.held += tips
        return True

    def give_back(self, tips: int) -> None:
        self.held -= tips
