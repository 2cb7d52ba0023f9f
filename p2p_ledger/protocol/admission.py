"""The handshake's admission judgement: which role a peer that signed AUTH gets.

A peer other than the authority proves membership with the authority's admit record
for its key, shown in AUTH (`shown_admit`), or known to the node already
(`known_admit`, the newest admit the node's store holds). Of the two, the newer by
(hlc, id) decides: it must not have expired at the wall clock given, and the peer
never gets a role above the one it claims, nor above what that admit gives
(`admitted_role`). Every refusal is a `RemoteProtocolError` saying why.

These are pure functions of the AUTH frame, the network and what the caller passes:
they never read a clock, a store or a socket, and they check no transcript signature
(the session does that first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.ids import device_id
from ..core.network import NetworkDescriptor
from ..core.records import Admit, open_record
from ..errors import InvalidRecord, LocalError, RemoteProtocolError
from .frames import Auth

__all__ = ["Admission", "admitted_role", "claim_refused", "shown_admit"]

# Roles by what they may do; a peer is never granted more than its newest admit gives.
_ROLE_RANK = {"device": 0, "hub": 1, "authority": 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """An admit record as the handshake judges it: the admit shown in AUTH, or the
    newest one the node holds for the key (`known_admit`). Of two, the newer by
    (hlc, id) decides, as the ledger ranks admits."""

    id: bytes
    hlc: int
    role: str  # `device` or `hub`: the roles an admit gives
    expires: int | None = None  # Unix ms; None: never

    def __post_init__(self) -> None:
        if len(self.id) != 32 or self.role not in ("device", "hub"):
            raise LocalError(f"not an admission: id of {len(self.id)} bytes, role {self.role!r}")


def admitted_role(msg: Auth, network: NetworkDescriptor,
                  known_admit: Callable[[bytes], Admission | None] | None,
                  wall_ms: int | None) -> str:
    """The role a peer other than the authority gets: its claim, checked against
    the admit it shows and the newest one the node knows; RemoteProtocolError if
    it is not admitted, its newest admit has expired at `wall_ms` (the wall clock now,
    Unix ms; None judges no expiry), or the claim does not fit."""
    shown = shown_admit(msg, network)
    known = known_admit(msg.device_key) if known_admit else None
    if shown is None and known is None:
        raise RemoteProtocolError("handshake failed: the peer shows no admit record")
    newest = max((a for a in (shown, known) if a is not None), key=lambda a: (a.hlc, a.id))
    if newest.expires is not None and wall_ms is not None and newest.expires < wall_ms:
        raise RemoteProtocolError(
            f"handshake failed: the certificate of {device_id(msg.device_key)} "
            f"expired at {newest.expires} (Unix ms)")
    # An honest node claims what the admit it shows gives, or `device` while it holds
    # none of its own; a node that knows a newer admit grants no more than that one.
    if shown is not None and msg.role != shown.role:
        raise claim_refused(msg.role, shown.role)
    if shown is None and known is not None and _ROLE_RANK[msg.role] > _ROLE_RANK[known.role]:
        raise claim_refused(msg.role, known.role)
    return min(msg.role, newest.role, key=_ROLE_RANK.__getitem__)


def shown_admit(msg: Auth, network: NetworkDescriptor) -> Admission | None:
    """The admit record in the peer's AUTH, checked; RemoteProtocolError if bad."""
    if msg.admit is None:
        return None
    try:
        rec = open_record(msg.admit, network.network_id)
    except InvalidRecord as exc:
        raise RemoteProtocolError(f"handshake failed: bad admit record ({exc})") from None
    body = rec.record.body
    if (rec.record.author != network.authority or not isinstance(body, Admit)
            or body.device != msg.device_key):
        raise RemoteProtocolError(
            f"handshake failed: {device_id(msg.device_key)} is not admitted to this network")
    return Admission(id=rec.id, hlc=rec.record.hlc, role=body.role.value,
                     expires=body.expires)


def claim_refused(claimed: str, admitted: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"handshake failed: the peer claims role {claimed!r} but is "
                               f"admitted as {admitted!r}")
