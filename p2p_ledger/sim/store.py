"""The simulated node's store: `MemoryStore` plus what a `Node` asks of its store.

A simulated node's store is its disk: it outlives a crash. A crash drops the node, its
`Replica` (with the pending area) and its sessions; the restart builds a new `Replica`
over the same `SimStore`. Every write goes through `transaction()`, whose rollback is
MemoryStore's, so a crash in the middle of a batch (`power_cut_after`) leaves the
store exactly as it was before the batch.

On top of `MemoryStore` this adds the rest of `NodeStore`: store positions
(`max_order`, `records_after`) and the peer table (`note_peer`). After each commit it
tells `observer` which records the transaction stored, so the simulator's checks see
every batch of every replica. It never judges a record: the replica does.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.store import Effects, MemoryStore, PeerRow

__all__ = ["PowerCut", "SimStore"]


class PowerCut(Exception):
    """The simulated machine lost power in the middle of a store transaction."""


Observer = Callable[["SimStore", list[bytes]], None]


@dataclass
class SimStore(MemoryStore):
    owner: int = -1  # the member index, for the observer
    observer: Observer | None = None
    power_cut_after: int | None = None  # raise PowerCut at this many more applies
    on_apply: Callable[[SimStore, Effects], None] | None = None  # the trace (trace.py)
    _log: list[tuple[bytes, bytes]] = field(default_factory=list)  # (id, raw) by position
    _peers: dict[bytes, tuple[str, str, int, int | None, str]] = field(default_factory=dict)

    _log_start: int = 0  # where the open transaction began in `_log`

    def _began(self) -> None:
        self._log_start = len(self._log)

    def _committed(self) -> None:
        if self.observer is not None and len(self._log) > self._log_start:
            self.observer(self, [rid for rid, _ in self._log[self._log_start:]])

    def apply(self, fx: Effects) -> None:
        if self.power_cut_after is not None:
            if self.power_cut_after <= 0:
                self.power_cut_after = None
                raise PowerCut("power lost in the middle of a batch")
            self.power_cut_after -= 1
        super().apply(fx)
        if self.on_apply is not None:
            self.on_apply(self, fx)
        self._log.append((fx.row.id, fx.raw))
        if self._undo is not None:
            self._undo.append(self._log.pop)

    # ------------------------------------------------------------ what Node uses

    def max_order(self) -> int:
        return len(self._log)

    def records_after(self, order: int, limit: int = 10_000) -> list[tuple[int, bytes, bytes]]:
        return [(order + 1 + i, rid, raw)
                for i, (rid, raw) in enumerate(self._log[order:order + limit])]

    def authors_after(self, order: int) -> set[bytes]:
        """As SqliteStore.authors_after."""
        return {row.author for rid, _ in self._log[order:]
                if (row := self.get(rid)) is not None}

    def note_peer(self, device: bytes, *, address: str, role: str, now_ms: int, state: str,
                  synced: bool) -> None:
        old = self._peers.get(device)
        records = self.totals().records if synced else (old[3] if old else None)
        self._peers[device] = (address, role, now_ms, records, state)

    def close(self) -> None:
        return None  # a simulated disk stays until the world ends

    def peers(self) -> list[PeerRow]:
        """As SqliteStore.peers: (device, address, role, last_contact_ms, records held at
        last sync, state), latest contact first."""
        return sorted(((d, *p) for d, p in self._peers.items()), key=lambda p: -p[3])

    def synced_records(self, device: bytes) -> int | None:
        """As SqliteStore.synced_records."""
        peer = self._peers.get(device)
        return None if peer is None else peer[3]

    def raws(self) -> list[bytes]:
        """Every stored record, in the order it was stored (a causal order)."""
        return [raw for _, raw in self._log]

    def copy(self, owner: int) -> SimStore:
        """A copy of this disk (for a cloned device), with no observer or trace attached."""
        observer, self.observer = self.observer, None
        on_apply, self.on_apply = self.on_apply, None
        try:
            twin: SimStore = pickle.loads(pickle.dumps(self))  # faster than deepcopy
        finally:
            self.observer, self.on_apply = observer, on_apply
        twin.owner = owner
        twin._peers = {}
        twin.power_cut_after = None  # a power cut armed in the original is not the copy's
        return twin
