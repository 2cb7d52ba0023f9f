"""Every state of a sync session and every transition, in one table.

A session starts in HELLO. Triggers are frames received from the peer ("recv") and
frames we send ("send"); a pair that is not in the table is a protocol error, a
remote one for "recv", a local one for "send". After CLOSED nothing is accepted.

    HELLO --recv HELLO--> AUTH --recv AUTH--> SUMMARY --recv SUMMARY--> SYNCING
    SYNCING --recv SYNCED--> THEY_SYNCED --send SYNCED--> LIVE
    SYNCING --send SYNCED--> WE_SYNCED  --recv SYNCED--> LIVE

The peer's summary may instead come hashed, as a SKETCH or TIPS (sketch.py).
Received in SUMMARY it is decoded against our own tips as soon as ours is sent
(trigger "decoded"); if it does not decode we send NEED_SUMMARY and wait for the
full SUMMARY in REFETCH, where the peer's SYNCED may overtake it (REFETCH_SYNCED):

    SUMMARY --recv SKETCH--> SUMMARY --decoded SKETCH--> SYNCING
    SUMMARY --recv TIPS--> SUMMARY --decoded TIPS--> SYNCING
    SUMMARY --send NEED_SUMMARY--> REFETCH --recv SUMMARY--> SYNCING
    REFETCH --recv SYNCED--> REFETCH_SYNCED --recv SUMMARY--> THEY_SYNCED

In every state after the handshake (SUMMARY, REFETCH, REFETCH_SYNCED, SYNCING,
WE_SYNCED, THEY_SYNCED, LIVE) RECORDS, PACKED, STORED, PING and PONG may go either way and
leave the state as it is, our own summary, sketch or tips may be sent (once; the session
checks that), and the peer's NEED_SUMMARY may arrive (once, after our sketch or tips;
checked too).
A long summary travels as SUMMARY_PART frames closed by one SUMMARY; the peer's
parts arrive in SUMMARY or REFETCH(_SYNCED).
CLOSE either way ends in CLOSED from any state. specs/sync-protocol.md shows the same table.
"""

from __future__ import annotations

import enum

from .frames import FrameType as F

__all__ = ["State", "TRANSITIONS", "Trigger"]


class State(enum.Enum):
    HELLO = "hello"              # waiting for the peer's HELLO
    AUTH = "auth"                # keys derived, waiting for the peer's AUTH
    SUMMARY = "summary"          # handshake done, waiting for the peer's SUMMARY
    REFETCH = "refetch"          # the peer's sketch or tips did not decode: SUMMARY asked for
    REFETCH_SYNCED = "refetch_synced"  # as REFETCH, and the peer's delta is complete
    SYNCING = "syncing"          # both summaries known, deltas streaming both ways
    WE_SYNCED = "we_synced"      # our delta is complete, the peer's is not
    THEY_SYNCED = "they_synced"  # the peer's delta is complete, ours is not
    LIVE = "live"                # in sync; new records are pushed as they appear
    CLOSED = "closed"


Trigger = tuple[str, F]  # ("recv" | "send" | "decoded", frame type)

_AFTER_HANDSHAKE = (State.SUMMARY, State.REFETCH, State.REFETCH_SYNCED, State.SYNCING,
                    State.WE_SYNCED, State.THEY_SYNCED, State.LIVE)

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.HELLO, ("recv", F.HELLO)): State.AUTH,
    (State.AUTH, ("recv", F.AUTH)): State.SUMMARY,
    (State.SUMMARY, ("recv", F.SUMMARY_PART)): State.SUMMARY,
    (State.SUMMARY, ("recv", F.SUMMARY)): State.SYNCING,
    (State.SUMMARY, ("recv", F.SKETCH)): State.SUMMARY,
    (State.SUMMARY, ("decoded", F.SKETCH)): State.SYNCING,
    (State.SUMMARY, ("recv", F.TIPS)): State.SUMMARY,
    (State.SUMMARY, ("decoded", F.TIPS)): State.SYNCING,
    (State.SUMMARY, ("send", F.NEED_SUMMARY)): State.REFETCH,
    (State.REFETCH, ("recv", F.SUMMARY_PART)): State.REFETCH,
    (State.REFETCH, ("recv", F.SUMMARY)): State.SYNCING,
    (State.REFETCH, ("recv", F.SYNCED)): State.REFETCH_SYNCED,
    (State.REFETCH_SYNCED, ("recv", F.SUMMARY_PART)): State.REFETCH_SYNCED,
    (State.REFETCH_SYNCED, ("recv", F.SUMMARY)): State.THEY_SYNCED,
    (State.SYNCING, ("recv", F.SYNCED)): State.THEY_SYNCED,
    (State.SYNCING, ("send", F.SYNCED)): State.WE_SYNCED,
    (State.WE_SYNCED, ("recv", F.SYNCED)): State.LIVE,
    (State.THEY_SYNCED, ("send", F.SYNCED)): State.LIVE,
}
for _s in _AFTER_HANDSHAKE:
    for _t in (F.RECORDS, F.PACKED, F.PING, F.PONG, F.STORED):
        TRANSITIONS[(_s, ("recv", _t))] = _s
        TRANSITIONS[(_s, ("send", _t))] = _s
    TRANSITIONS[(_s, ("send", F.SUMMARY))] = _s
    TRANSITIONS[(_s, ("send", F.SUMMARY_PART))] = _s
    TRANSITIONS[(_s, ("send", F.SKETCH))] = _s
    TRANSITIONS[(_s, ("send", F.TIPS))] = _s
    TRANSITIONS[(_s, ("recv", F.NEED_SUMMARY))] = _s
for _s in State:
    if _s is not State.CLOSED:
        TRANSITIONS[(_s, ("recv", F.CLOSE))] = State.CLOSED
        TRANSITIONS[(_s, ("send", F.CLOSE))] = State.CLOSED
