"""The simulator's shared batch work (sim/accel.py): a PACKED batch deflated, or
inflated and read, once for every sender and receiver of the same bytes; bounded, and
never remembering a batch that does not read."""

from __future__ import annotations

import zlib

import pytest

from p2p_ledger.errors import RemoteProtocolError
from p2p_ledger.protocol import compact
from p2p_ledger.sim import accel
from p2p_ledger.sim.accel import shared_record_checks

from .helpers import funded_world


def _none(author: bytes, seq: int) -> bytes | None:
    return None


def busy_records() -> list[bytes]:
    from .test_compact import busy_world
    return busy_world()[2]


def test_the_same_batch_is_deflated_and_read_once_with_the_same_result() -> None:
    raws = busy_records()
    plain = compact.pack_records(raws)
    assert not plain.startswith(b"\x93")  # 1 KiB or more: deflated
    with shared_record_checks() as cache:
        data = compact.pack_records(raws)
        assert compact.pack_records(raws) == data == plain  # the same bytes as without
        first = compact.unpack_records(data, _none, max_records=len(raws))
        again = compact.unpack_records(bytes(data), _none, max_records=len(raws))
        assert [r.raw for r in first] == [r.raw for r in again] == raws
        assert len(cache.deflated) == 1
        assert len(cache.batches) == 1


def test_a_small_batch_is_not_deflated_and_is_read_once() -> None:
    world, source = funded_world()
    raws = source.delta(world.replica().frontier())
    with shared_record_checks() as cache:
        data = compact.pack_records(raws)
        assert data.startswith(b"\x93")  # under 1 KiB: as it is
        assert not cache.deflated
        first = compact.unpack_records(data, _none, max_records=len(raws))
        again = compact.unpack_records(bytes(data), _none, max_records=len(raws))
        assert [r.raw for r in first] == [r.raw for r in again] == raws
        assert len(cache.batches) == 1


def test_a_batch_that_does_not_read_is_refused_every_time_and_never_remembered() -> None:
    bad = zlib.compress(b"\x93\x90\x90")  # [[], [], ...] cut short: not msgpack
    with shared_record_checks() as cache:
        for _ in range(2):
            with pytest.raises(RemoteProtocolError, match="malformed PACKED frame"):
                compact.unpack_records(bad, _none, max_records=10)
        assert not cache.batches


def test_only_the_most_recent_batches_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_RECENT", 2)
    raws = busy_records()
    sizes = (20, 25, 30)  # each batch 1 KiB or more: deflated
    with shared_record_checks() as cache:
        batches = [compact.pack_records(raws[:n]) for n in sizes]
        assert list(cache.deflated.values()) == batches[1:]  # the oldest went first
        for data, n in zip(batches, sizes, strict=True):
            assert len(compact.unpack_records(data, _none, max_records=n)) == n
        assert len(cache.batches) == 2


def test_a_batch_is_packed_and_read_again_when_the_peer_state_answers_otherwise() -> None:
    """A remembered pack or unpack is reused only when `held` / `lookup` give the answers
    it was built with: another peer that holds less gets a batch of its own, and a
    receiver that does not hold a referenced record is refused, not answered from memory."""
    from .test_compact import busy_world, held_split

    late, where, back = held_split(busy_world()[2])
    with shared_record_checks() as cache:
        with_held = compact.pack_records(late, where.get)
        assert compact.pack_records(late, where.get) == with_held
        assert cache.batch_hits == 1
        assert compact.pack_records(late, lambda rid: None) == compact.packed(late, None)
        assert compact.pack_records(late, lambda rid: None) != with_held
        out = compact.unpack_records(with_held, lambda a, s: back.get((a, s)), max_records=999)
        again = compact.unpack_records(with_held, lambda a, s: back.get((a, s)),
                                       max_records=999)
        assert [r.raw for r in out] == [r.raw for r in again] == late
        hits = cache.batch_hits
        with pytest.raises(RemoteProtocolError, match="not held here"):
            compact.unpack_records(with_held, _none, max_records=999)
        assert cache.batch_hits == hits
    assert compact.pack_records(late, where.get) == with_held  # the same bytes without
