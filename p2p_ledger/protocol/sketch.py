"""Summary sketches: a frontier in under a kilobyte when the peer's differs little.

A full summary lists every author's tips, ~70 bytes each: 700 KB for 10,000 authors,
even when the peer holds all but one record. Two peers that synced before differ in
a few tips, so each sends an invertible Bloom lookup table (IBLT) of its tips instead:
a fixed number of cells, each holding a count, the XOR of the elements hashed into it
and the XOR of their check values. The receiver builds the same table over its own
tips, subtracts, and peels the cells left holding one element: what remains are
exactly the tips that only one side has, provided the difference is small enough for
the cells (about 2/3 of the cell count). If the peeling stalls the receiver asks for
the full summary (specs/sync-protocol.md, "Summary sketches").

Towards a peer it never synced with, a node lists its tips as elements instead (a
TIPS frame, `OurTips.listed`, 20 bytes a tip against ~70 in the full summary); the
receiver takes the two set differences directly (`listed_tips`) and names them the
same way.

An element is 20 bytes: an 8-byte hash of the author, the seq, a 4-byte hash of the
record id. All hashes are BLAKE2b keyed with a salt both sides take from the session
transcript, which includes each side's fresh ephemeral key: no one can prepare
records whose hashes collide in a session not yet started. Element hashes are not
ids: the receiver maps them back to authors and records it holds (`PeerTips`).

Counts are kept modulo 256, which subtraction and peeling tolerate (a cell is taken
as pure only if its check value agrees). Pure code, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..core.records import INT_LIMIT

__all__ = ["CELL_BYTES", "ELEMENT_BYTES", "MAX_LISTED_TIPS", "MAX_SKETCH_CELLS",
           "MIN_SKETCH_CELLS", "OurTips", "PeerTips", "Sketch", "author_hash", "cells_for",
           "element", "listed_tips", "peer_tips", "sketch_size"]

ELEMENT_BYTES = 20          # author hash 8 | seq 8 | id hash 4
CELL_BYTES = 1 + ELEMENT_BYTES + 4  # count | element XOR | check XOR
MAX_LISTED_TIPS = 40_000  # per TIPS frame (800 KB); a larger frontier goes in full
MIN_SKETCH_CELLS = 36  # two elements share all their cells with p = 1/1728
MAX_SKETCH_CELLS = 3 * 4095  # ~320 KB: beyond that a full summary is about as small
_HASHES = 3
_COUNT = 0xFF  # counts are kept modulo 256


def sketch_size(cells: int) -> int:
    """`cells` within bounds, rounded up to a multiple of 3 (the hash count)."""
    n = min(max(cells, MIN_SKETCH_CELLS), MAX_SKETCH_CELLS)
    return n + -n % _HASHES


def cells_for(expected_difference: int) -> int:
    """Cells that peel a difference of this many tips with high probability (about
    98% measured at every size: 2x plus slack for small tables)."""
    return sketch_size(2 * expected_difference + 12)


def _h(data: bytes, salt: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size, key=salt).digest()


def author_hash(salt: bytes, author: bytes) -> bytes:
    return _h(author, salt, 8)


def element(salt: bytes, author: bytes, seq: int, rid: bytes) -> bytes:
    return author_hash(salt, author) + seq.to_bytes(8, "big") + _h(rid, salt, 4)


def names_tip(salt: bytes, author: bytes, seq: int, tip_id: bytes, rid: bytes) -> bool:
    """Whether `tip_id`, a peer's tip at (author, seq) as `PeerTips` gives it, is record
    `rid`: the same id, or the unknown id (`_unknown_id`) of `rid`'s element, for a
    record not held here when the summary was decoded. That matches 4 bytes of the id's
    hash under the session's salt, as decoding itself does (`_name`)."""
    if tip_id == rid:
        return True
    e = element(salt, author, seq, rid)
    return _unknown_id(e[:8], seq, e[16:]) == tip_id


class Sketch:
    """An IBLT over 20-byte elements. Build with `of`; `to_bytes`/`from_bytes` for
    the wire; `minus` then `peel` to find the difference of two sets."""

    __slots__ = ("checks", "counts", "keys", "salt")

    def __init__(self, cells: int, salt: bytes) -> None:
        if cells % _HASHES or not 0 < cells <= MAX_SKETCH_CELLS:
            raise ValueError(f"a sketch has a multiple of {_HASHES} cells, at most "
                             f"{MAX_SKETCH_CELLS}")
        self.salt = salt
        self.counts = [0] * cells
        self.keys = [0] * cells
        self.checks = [0] * cells

    @property
    def cells(self) -> int:
        return len(self.counts)

    @classmethod
    def of(cls, elements: Iterable[bytes], cells: int, salt: bytes) -> Sketch:
        s = cls(cells, salt)
        for e in elements:
            s._toggle(e, 1)
        return s

    def _spots(self, e: bytes) -> tuple[int, tuple[int, ...]]:
        """The element's check value and its cell in each third of the table."""
        d = _h(e, self.salt, 16)
        part = self.cells // _HASHES
        return (int.from_bytes(d[:4], "big"),
                tuple(i * part + int.from_bytes(d[4 + 4 * i:8 + 4 * i], "big") % part
                      for i in range(_HASHES)))

    def _toggle(self, e: bytes, sign: int) -> None:
        check, spots = self._spots(e)
        key = int.from_bytes(e, "big")
        for i in spots:
            self.counts[i] = (self.counts[i] + sign) & _COUNT
            self.keys[i] ^= key
            self.checks[i] ^= check

    def minus(self, other: Sketch) -> Sketch:
        if other.cells != self.cells or other.salt != self.salt:
            raise ValueError("sketches of different shapes")
        out = Sketch(self.cells, self.salt)
        out.counts = [(a - b) & _COUNT for a, b in zip(self.counts, other.counts, strict=True)]
        out.keys = [a ^ b for a, b in zip(self.keys, other.keys, strict=True)]
        out.checks = [a ^ b for a, b in zip(self.checks, other.checks, strict=True)]
        return out

    def peel(self) -> tuple[list[bytes], list[bytes]] | None:
        """Of a difference `a.minus(b)`: (elements only in a, elements only in b), or
        None if the table cannot be fully peeled (the difference is too large)."""
        work = Sketch(self.cells, self.salt)
        work.counts, work.keys, work.checks = list(self.counts), list(self.keys), list(
            self.checks)
        ours: list[bytes] = []
        theirs: list[bytes] = []
        queue = list(range(self.cells))
        while queue:
            i = queue.pop()
            count = work.counts[i]
            if count not in (1, _COUNT):
                continue
            e = work.keys[i].to_bytes(ELEMENT_BYTES, "big")
            check, spots = work._spots(e)
            if check != work.checks[i] or i not in spots:
                continue
            (ours if count == 1 else theirs).append(e)
            work._toggle(e, -1 if count == 1 else 1)
            queue.extend(spots)
            if len(ours) + len(theirs) > self.cells:
                return None  # a crafted table that never empties
        if any(work.counts) or any(work.keys) or any(work.checks):
            return None
        return ours, theirs

    def to_bytes(self) -> bytes:
        return b"".join(c.to_bytes(1, "big") + k.to_bytes(ELEMENT_BYTES, "big")
                        + h.to_bytes(4, "big")
                        for c, k, h in zip(self.counts, self.keys, self.checks, strict=True))

    @classmethod
    def from_bytes(cls, data: bytes, salt: bytes) -> Sketch:
        if len(data) % CELL_BYTES:
            raise ValueError(f"a sketch is a whole number of {CELL_BYTES}-byte cells")
        s = cls(len(data) // CELL_BYTES, salt)
        for n, at in enumerate(range(0, len(data), CELL_BYTES)):
            s.counts[n] = data[at]
            s.keys[n] = int.from_bytes(data[at + 1:at + 1 + ELEMENT_BYTES], "big")
            s.checks[n] = int.from_bytes(data[at + 1 + ELEMENT_BYTES:at + CELL_BYTES], "big")
        return s


@dataclass(frozen=True, slots=True)
class PeerTips:
    """What a decoded sketch says of the peer: for each author whose tips differ from
    ours, the peer's tips (seq, id); an id we do not hold is given as `unknown_id`,
    which no record has. Authors the peer has and we do not are left out: we hold
    nothing of theirs to send."""

    tips: dict[bytes, tuple[tuple[int, bytes], ...]]


def _unknown_id(ah: bytes, seq: int, ih: bytes) -> bytes:
    # Not a record id: BLAKE2b of a domain string, never equal to the hash of a record.
    return hashlib.blake2b(b"p2p-ledger unknown tip\x00" + ah + seq.to_bytes(8, "big") + ih,
                           digest_size=32).digest()


class OurTips:
    """Our tips (author, seq, id) as elements under one salt, hashed once per session:
    the sketch we send and the one we subtract the peer's from are built from them,
    and are the same table when the two sizes agree."""

    def __init__(self, tips: Iterable[tuple[bytes, int, bytes]], salt: bytes) -> None:
        self.salt = salt
        self.by_element: dict[bytes, tuple[bytes, int, bytes]] = {}
        self.by_author_hash: dict[bytes, bytes] = {}
        self.collision = False  # two of our authors share a hash: no sketch decodes
        for author, seq, rid in tips:
            e = element(salt, author, seq, rid)
            if self.by_author_hash.setdefault(e[:8], author) != author:
                self.collision = True
            self.by_element[e] = (author, seq, rid)
        self._sketches: dict[int, Sketch] = {}

    def sketch(self, cells: int) -> Sketch:
        found = self._sketches.get(cells)
        if found is None:
            found = self._sketches[cells] = Sketch.of(self.by_element, cells, self.salt)
        return found

    def listed(self) -> bytes:
        """Every element, sorted and concatenated: the TIPS frame's payload."""
        return b"".join(sorted(self.by_element))


def peer_tips(ours: OurTips, peer: Sketch,
              ids_at: Callable[[bytes, int], list[bytes]]) -> PeerTips | None:
    """Decode the peer's sketch against our tips. None when the difference does not
    peel, or our own author hashes collide (then a full summary is needed).
    `ids_at(author, seq)` lists the ids we hold at that point of a chain, to name the
    peer's tips that are not ours."""
    if peer.salt != ours.salt:
        raise ValueError("the sketch and our tips are hashed with different salts")
    if ours.collision:
        return None
    diff = ours.sketch(peer.cells).minus(peer).peel()
    if diff is None:
        return None
    only_ours, only_theirs = diff
    if any(e not in ours.by_element for e in only_ours):
        return None  # cannot happen with an honest table: treat as undecodable
    return _name(ours, only_ours, only_theirs, ids_at)


def listed_tips(ours: OurTips, listed: bytes,
                ids_at: Callable[[bytes, int], list[bytes]]) -> PeerTips | None:
    """The peer's every tip as elements (a TIPS frame), against ours: exact, so None
    only when our own author hashes collide. ValueError if not whole elements."""
    if len(listed) % ELEMENT_BYTES:
        raise ValueError(f"listed tips are whole {ELEMENT_BYTES}-byte elements")
    if ours.collision:
        return None
    theirs = {listed[at:at + ELEMENT_BYTES] for at in range(0, len(listed), ELEMENT_BYTES)}
    mine = ours.by_element
    return _name(ours, [e for e in mine if e not in theirs],
                 [e for e in theirs if e not in mine], ids_at)


def _name(ours: OurTips, only_ours: list[bytes], only_theirs: Iterable[bytes],
          ids_at: Callable[[bytes, int], list[bytes]]) -> PeerTips:
    """The tips only one side has, as elements, mapped back to our authors and ids."""
    salt, mine, by_author_hash = ours.salt, ours.by_element, ours.by_author_hash
    differing = {mine[e][0] for e in only_ours}
    theirs: dict[bytes, list[tuple[int, bytes]]] = {}
    for e in only_theirs:
        ah, seq, ih = e[:8], int.from_bytes(e[8:16], "big"), e[16:]
        known = by_author_hash.get(ah)
        if known is None or not 1 <= seq < INT_LIMIT:
            continue  # no record has that seq: a crafted sketch (TIPS are checked earlier)
        differing.add(known)
        held = [rid for rid in ids_at(known, seq) if _h(rid, salt, 4) == ih]
        theirs.setdefault(known, []).append(
            (seq, held[0] if len(held) == 1 else _unknown_id(ah, seq, ih)))
    dropped = set(only_ours)
    for e, (author, seq, rid) in mine.items():
        if author in differing and e not in dropped:
            theirs.setdefault(author, []).append((seq, rid))
    return PeerTips({a: tuple(sorted(theirs.get(a, ()))) for a in differing})
