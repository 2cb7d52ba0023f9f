"""Checking a batch's signatures ahead of judging it.

A batch is cut into chunks (`_chunk_sizes`: 64 records, then twice as many each time,
up to 1024). Each `_Chunk` hands its records to a `Verifier`, which starts checking
their signatures elsewhere (a worker thread by default, the node's child process)
and gives back a call that waits for the answers. The replica judges one chunk while
the next ones are being checked. `CheckingAhead` is a whole batch handed to its
checks early (`Replica.check_ahead`), to be received later.

Nothing here decides anything about a record beyond its signature: what is held, the
clock and the verdicts are the replica's (`ledger.py`), at receive time. It does no
I/O and must not wait on a check except through the call its verifier gave.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from ..errors import InvalidRecord
from .records import Failures, SignedRecord

__all__ = ["CheckingAhead", "Verifier"]

# Signatures are checked up to two chunks ahead of judging. The first chunk is small,
# so that judging starts soon (nothing overlaps the check of a batch's first chunk);
# each next one is twice as large, up to the cap.
_FIRST_VERIFY_CHUNK = 64
_VERIFY_CHUNK = 1024
_CHUNKS_AHEAD = 2  # chunks whose signatures are being checked while one is judged


Verifier = Callable[[Sequence[SignedRecord], bytes], Callable[[], Failures]]


class _Chunk:
    """Records of a batch whose signatures are being checked elsewhere (`Verifier`)."""

    __slots__ = ("failures", "records")

    def __init__(self, records: list[tuple[int, SignedRecord]],
                 failures: Callable[[], Failures]) -> None:
        self.records = records
        self.failures = failures

    @classmethod
    def started(cls, records: list[tuple[int, SignedRecord]], network_id: bytes,
                verifier: Verifier) -> _Chunk:
        return cls(records, verifier([rec for _, rec in records], network_id))

    def narrowed(self, kept: list[tuple[int, SignedRecord]]) -> _Chunk:
        """Only `kept` of the records (in order; the rest turned out held already),
        with their answers out of the check under way for all of them."""
        if len(kept) == len(self.records):
            return self
        keep = {index for index, _ in kept}
        records, whole = self.records, self.failures
        return _Chunk(kept, lambda: [failure for (index, _), failure
                                     in zip(records, whole(), strict=True) if index in keep])


def _chunk_sizes() -> Iterator[int]:
    """64 records, then twice as many each time, up to 1024."""
    size = _FIRST_VERIFY_CHUNK
    while True:
        yield size
        size = min(2 * size, _VERIFY_CHUNK)


class CheckingAhead:
    """A batch parsed, whose signatures are being checked already (`Replica.check_ahead`):
    give it to `receive_many` later, in place of its records. Nothing else about it is
    decided until then: what is held, the clock, the verdicts."""

    __slots__ = ("_chunks", "_ids", "_refused")

    def __init__(self, chunks: list[_Chunk], ids: list[bytes],
                 refused: list[tuple[int | None, InvalidRecord]]) -> None:
        self._chunks, self._ids, self._refused = chunks, ids, refused

    def __len__(self) -> int:
        return len(self._ids) + len(self._refused)
