"""The network descriptor: what every member agrees on before any record exists.

A network is named by its id, BLAKE2b-256 of the canonical CBOR of its descriptor
(name, currency, authority key, tier table). The id is self-certifying: a descriptor
file that was edited no longer matches its id. The authority key signs `admit`,
`revoke` and `issue` records; it needs no admission itself.

The tier table holds the offline limits of devices by KYC tier, in minor units: the
largest single payment, the most a device may pay before a settlement node has seen
its chain (unsettled exposure), and the most its chain may hold. An `admit` names a
tier and may set a lower offline limit. Hubs and the authority have no such limits.
A network without a tier table (an empty one) puts no offline limits on anyone; its
id is computed as before tiers existed. `p2p-ledger network create` gives a network
DEFAULT_TIERS unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..errors import LocalError
from .ids import device_id, parse_device_id
from .money import check_amount, decimals
from .records import canonical_cbor

__all__ = ["DEFAULT_TIERS", "NetworkDescriptor", "Tier"]

_FORMAT = "p2p-ledger-network"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """Offline limits of one KYC tier, in minor units."""

    per_payment: int
    unsettled: int
    holding: int

    def __post_init__(self) -> None:
        for name in ("per_payment", "unsettled", "holding"):
            check_amount(getattr(self, name))

    def to_list(self) -> list[int]:
        return [self.per_payment, self.unsettled, self.holding]


# Tier 0: basic KYC; 1: verified; 2: enhanced. Minor units: for AED, fils.
DEFAULT_TIERS = (Tier(per_payment=500_00, unsettled=1_000_00, holding=2_000_00),
                 Tier(per_payment=2_000_00, unsettled=5_000_00, holding=10_000_00),
                 Tier(per_payment=10_000_00, unsettled=50_000_00, holding=100_000_00))
MAX_TIERS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkDescriptor:
    name: str
    currency: str
    authority: bytes
    tiers: tuple[Tier, ...] = ()

    def __post_init__(self) -> None:
        if type(self.name) is not str or not 0 < len(self.name) <= 64:
            raise LocalError("a network name is text of 1 to 64 characters")
        try:
            self.name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, from a JSON \ud800 escape
            raise LocalError("a network name must be valid Unicode text") from None
        if type(self.currency) is not str:
            raise LocalError("a currency is a text code such as AED")
        decimals(self.currency)
        if type(self.authority) is not bytes or len(self.authority) != 32:
            raise LocalError("the authority key is 32 bytes")
        if len(self.tiers) > MAX_TIERS:
            raise LocalError(f"a network has at most {MAX_TIERS} tiers")

    @property
    def limited(self) -> bool:
        """Whether devices of this network have offline limits at all."""
        return bool(self.tiers)

    def tier(self, index: int) -> Tier | None:
        return self.tiers[index] if 0 <= index < len(self.tiers) else None

    @property
    def network_id(self) -> bytes:
        fields: dict[str, object] = {"name": self.name, "currency": self.currency,
                                     "authority": self.authority, "version": 1}
        if self.tiers:
            fields["tiers"] = [t.to_list() for t in self.tiers]
        body = canonical_cbor(fields)
        return hashlib.blake2b(body, digest_size=32, person=b"p2pl-network").digest()

    def to_json(self) -> str:
        data: dict[str, object] = {
            "format": _FORMAT, "version": 1, "network_id": self.network_id.hex(),
            "name": self.name, "currency": self.currency,
            "authority": device_id(self.authority)}
        if self.tiers:
            data["tiers"] = [{"per_payment": t.per_payment, "unsettled": t.unsettled,
                              "holding": t.holding} for t in self.tiers]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NetworkDescriptor:
        try:
            data = json.loads(text, object_pairs_hook=_unique_members)
            version = data.get("version")
            if data.get("format") != _FORMAT or type(version) is not int or version != 1:
                raise LocalError("not a p2p-ledger network descriptor (version 1)")
            tiers = tuple(Tier(per_payment=t["per_payment"], unsettled=t["unsettled"],
                               holding=t["holding"]) for t in data.get("tiers", ()))
            desc = cls(name=data["name"], currency=data["currency"],
                       authority=parse_device_id(data["authority"]), tiers=tiers)
            claimed = data["network_id"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalError(f"network descriptor is damaged: {exc}") from None
        if desc.network_id.hex() != claimed:
            raise LocalError("network descriptor does not match its network id (edited?)")
        return desc


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object, refused if a member name repeats: readers that kept the first or
    the last value would otherwise disagree about what the file says."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a member appears twice in one object")
    return out
