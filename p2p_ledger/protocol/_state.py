"""Every state of a sync session and every transition, in one table.

A session starts in HELLO. Triggers are frames received from the peer ("recv") and
frames we send ("send"); a pair that is not in the table is a protocol error, a
remote one for "recv", a local one for "send". After CLOSED nothing is accepted.

    HELLO --recv HELLO--> AUTH --recv AUTH--> SUMMARY --recv SUMMARY--> SYNCING
    SYNCING --recv SYNCED--> THEY_SYNCED --send SYNCED--> LIVE
    SYNCING --send SYNCED--> WE_SYNCED  --recv SYNCED--> LIVE

In every state after the handshake (SUMMARY, SYNCING, WE_SYNCED, THEY_SYNCED, LIVE)
RECORDS, PING and PONG may go either way and leave the state as it is, and our own
summary may be sent (once; the session checks that). A long summary travels as
SUMMARY_PART frames closed by one SUMMARY; the peer's parts arrive in SUMMARY.
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
    SYNCING = "syncing"          # both summaries known, deltas streaming both ways
    WE_SYNCED = "we_synced"      # our delta is complete, the peer's is not
    THEY_SYNCED = "they_synced"  # the peer's delta is complete, ours is not
    LIVE = "live"                # in sync; new records are pushed as they appear
    CLOSED = "closed"


Trigger = tuple[str, F]  # ("recv" | "send", frame type)

_AFTER_HANDSHAKE = (State.SUMMARY, State.SYNCING, State.WE_SYNCED, State.THEY_SYNCED,
                    State.LIVE)

TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.HELLO, ("recv", F.HELLO)): State.AUTH,
    (State.AUTH, ("recv", F.AUTH)): State.SUMMARY,
    (State.SUMMARY, ("recv", F.SUMMARY_PART)): State.SUMMARY,
    (State.SUMMARY, ("recv", F.SUMMARY)): State.SYNCING,
    (State.SYNCING, ("recv", F.SYNCED)): State.THEY_SYNCED,
    (State.SYNCING, ("send", F.SYNCED)): State.WE_SYNCED,
    (State.WE_SYNCED, ("recv", F.SYNCED)): State.LIVE,
    (State.THEY_SYNCED, ("send", F.SYNCED)): State.LIVE,
}
for _s in _AFTER_HANDSHAKE:
    for _t in (F.RECORDS, F.PING, F.PONG):
        TRANSITIONS[(_s, ("recv", _t))] = _s
        TRANSITIONS[(_s, ("send", _t))] = _s
    TRANSITIONS[(_s, ("send", F.SUMMARY))] = _s
    TRANSITIONS[(_s, ("send", F.SUMMARY_PART))] = _s
for _s in State:
    if _s is not State.CLOSED:
        TRANSITIONS[(_s, ("recv", F.CLOSE))] = State.CLOSED
        TRANSITIONS[(_s, ("send", F.CLOSE))] = State.CLOSED
