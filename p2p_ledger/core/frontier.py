"""Frontiers and deltas: what a replica holds, per author, and what another replica
at a given frontier lacks; the state hash over the same tips. Functions of the store
alone (moved out of `ledger.py`; `Replica.frontier`, `delta` and `state_hash` call
them)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .records import INT_LIMIT
from .store import BatchDelta, LedgerStore, Tip

__all__ = ["Frontier", "ancestors", "delta", "state_hash"]

_STATE_HASH_CONTEXT = b"p2p-ledger state v1\x00"


@dataclass(frozen=True, slots=True)
class Frontier:
    """Per author, the tips of its chain held: normally one (seq, id), more after a fork."""

    tips: Mapping[bytes, tuple[tuple[int, bytes], ...]]

    @classmethod
    def from_tips(cls, tips: Iterable[Tip]) -> Frontier:
        out: dict[bytes, list[tuple[int, bytes]]] = {}
        for t in tips:
            out.setdefault(t.author, []).append((t.seq, t.id))
        return cls({a: tuple(sorted(v)) for a, v in out.items()})

    def tip_count(self) -> int:
        return sum(len(t) for t in self.tips.values())

    def to_list(self) -> list[list[object]]:
        return [[a, s, i] for a in sorted(self.tips) for s, i in self.tips[a]]

    @classmethod
    def from_list(cls, items: object) -> Frontier:
        if not isinstance(items, list):
            raise ValueError("a frontier is a list of [author, seq, id]")
        tips: list[Tip] = []
        for it in items:
            if (not isinstance(it, list) or len(it) != 3 or type(it[0]) is not bytes
                    or len(it[0]) != 32 or type(it[1]) is not int
                    or not 1 <= it[1] < INT_LIMIT
                    or type(it[2]) is not bytes or len(it[2]) != 32):
                raise ValueError("a frontier entry is [author: 32 bytes, seq: 1 to 2**63 - 1, "
                                 "id: 32 bytes]")
            tips.append(Tip(author=it[0], seq=it[1], id=it[2]))
        return cls.from_tips(tips)



def delta(store: LedgerStore, since: Frontier, *, complete: bool = True,
          authors: Iterable[bytes] | None = None) -> list[bytes]:
    """The records held here that a replica at `since` lacks, in causal order.

    `authors`, when given, limits the comparison to those authors: the caller
    knows that for every other author the replica at `since` holds the same tips
    as this one (a summary sketch tells exactly which authors differ).

    For a fork-free author this is exact. Where `since` names a tip of an author
    that is not held here, the two chains may have forked: with `complete` (the
    default, for one-way exchanges such as bundles) the author's whole chain is
    sent, a superset of what is missing. A live session passes complete=False: if
    the peer's unknown tip is above ours, the peer is taken to be ahead and nothing
    of that author is sent; if it had forked, the peer's own delta brings its
    branch here, and the node then pushes ours as evidence."""
    wanted: list[bytes] = []
    ours = ({t.author for t in store.tips()} if authors is None
            else {a for a in authors if store.tips_of(a)})
    forked: Callable[[bytes], bool] = store.forked
    has: Callable[[bytes], bool] = store.has
    if isinstance(store, BatchDelta):  # the same questions, a few queries in all
        forks = {author for author, _, _, _ in store.equivocations()}
        held = store.held_among([since.tips[a][0][1] for a in ours
                                 if len(since.tips.get(a, ())) == 1])
        forked, has = forks.__contains__, held.__contains__
    after: dict[bytes, int] = {}  # fork-free authors: what is above this seq
    for author in ours:
        theirs = since.tips.get(author, ())
        if not theirs:
            after[author] = 0
        elif len(theirs) == 1 and not forked(author) and has(theirs[0][1]):
            after[author] = theirs[0][0]
        elif (not complete and len(theirs) == 1 and not forked(author)
              and theirs[0][0] > max(t.seq for t in store.tips_of(author))):
            continue
        else:
            known = ancestors(store, {rid for _, rid in theirs})
            wanted.extend(row.id for _, row in store.records_of(author, 0)
                          if row.id not in known)
    if isinstance(store, BatchDelta):
        return store.delta_raws(after, wanted)
    for author, seq in after.items():
        wanted.extend(row.id for _, row in store.records_of(author, seq))
    return store.raws_in_order(wanted)


def ancestors(store: LedgerStore, ids: set[bytes]) -> set[bytes]:
    """`ids` held here and all their ancestors along prev."""
    seen: set[bytes] = set()
    stack = [i for i in ids if store.has(i)]
    while stack:
        rid = stack.pop()
        if rid in seen:
            continue
        seen.add(rid)
        row = store.get(rid)
        if row is not None and row.prev is not None:
            stack.append(row.prev)
    return seen


def state_hash(store: LedgerStore) -> bytes:
    """Digest of the record set: the sorted tips of every author's chain, each of
    which commits to its whole chain through prev."""
    h = hashlib.blake2b(_STATE_HASH_CONTEXT, digest_size=32)
    for t in store.tips():
        h.update(t.author + t.seq.to_bytes(8, "big") + t.id)
    return h.digest()
