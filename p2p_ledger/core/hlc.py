"""Hybrid logical clock timestamps, packed in one integer.

An HLC value is `physical_ms << 16 | counter`: milliseconds since the Unix epoch
and a 16-bit logical counter. Comparing two values as integers orders them by time
first, then by counter. A node's next timestamp is larger than every timestamp it has
seen (its own and received ones) and than its physical clock, so timestamps along an
author's chain strictly increase even when the wall clock steps back.

Nothing here reads a clock: the caller passes the current physical time.
"""

from __future__ import annotations

__all__ = ["MAX_HLC", "hlc_ms", "next_hlc", "pack_hlc"]

_COUNTER_BITS = 16
MAX_HLC = (1 << 63) - 1  # records.INT_LIMIT - 1: the store's integers are signed 64-bit


def pack_hlc(physical_ms: int, counter: int = 0) -> int:
    if physical_ms < 0 or not 0 <= counter < (1 << _COUNTER_BITS):
        raise ValueError("HLC parts out of range")
    return (physical_ms << _COUNTER_BITS) | counter


def hlc_ms(hlc: int) -> int:
    """The physical milliseconds part of an HLC value."""
    return hlc >> _COUNTER_BITS


def next_hlc(last_seen: int, now_ms: int) -> int:
    """The timestamp for a new local event: after `last_seen` and not before `now_ms`."""
    return max(last_seen + 1, pack_hlc(now_ms))
