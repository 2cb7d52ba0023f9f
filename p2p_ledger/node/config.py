"""How a node runs (`NodeConfig`) and what it counts (`NodeCounters`, `reason_kind`).

Moved out of node/node.py unchanged; node/node.py re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol.session import SessionConfig

__all__ = ["NodeConfig", "NodeCounters", "reason_kind"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node runs its sessions; the defaults suit a device and a hub alike.
    Times are in seconds, sizes in bytes."""

    session: SessionConfig = field(default_factory=lambda: SessionConfig(packed=True))
    poll_interval: float = 0.2
    max_invalid_records: int = 16
    max_send_buffer: int = 64 << 20
    max_send_buffer_total: int = 256 << 20  # over all sessions: the largest is closed
    max_sessions: int = 256  # sessions at once, dialed and accepted, past their handshake
    max_sessions_per_device: int = 4  # of those, with one device key
    max_sessions_per_host: int | None = None  # from one address without its port (NAT!)
    # Connections still in their handshake (nothing proved yet), apart from the above:
    # beyond these a new one is closed at once (specs/node.md section 8).
    max_handshakes: int = 256
    max_handshakes_per_host: int = 16
    summary_tips_total: int = 500_000  # of full summaries being received (SummaryBudget)
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    receive_size: int = 64 << 10
    # Check signatures of large batches in a child process (node/verifier.py) rather
    # than on a thread that competes for the GIL with the judging.
    verify_in_process: bool = True


@dataclass(slots=True)
class NodeCounters:
    """What the node has done since it started, for `serve --metrics` (node/metrics.py):
    counts only, by a small fixed set of reasons, never a peer's free text."""

    records_stored: dict[str, int] = field(default_factory=dict)  # by source: peer, home
    records_refused: dict[str, int] = field(default_factory=dict)  # by RecordProblem value
    frames_refused: dict[str, int] = field(default_factory=dict)  # by the close reason's kind
    bytes_in: int = 0   # of sessions that have ended (live ones are read from them)
    bytes_out: int = 0
    sessions_ended: int = 0  # and connections turned away without a word
    sessions_failed: int = 0  # of those, ended by an error (SessionStats.error)

    def add(self, table: dict[str, int], key: str, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


def reason_kind(reason: str) -> str:
    """A close reason's kind, the words before its first colon ("malformed frame: ..."
    -> "malformed frame"): few enough to be a metric's label."""
    return reason.split(":", 1)[0].strip()[:48] or "unknown"
