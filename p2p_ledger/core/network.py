"""The network descriptor: what every member agrees on before any record exists.

A network is named by its id, BLAKE2b-256 of the canonical CBOR of its descriptor
(name, currency, authority key). The id is self-certifying: a descriptor file that
was edited no longer matches its id. The authority key signs `admit`, `revoke` and
`issue` records; it needs no admission itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..errors import LocalError
from .ids import device_id, parse_device_id
from .money import decimals
from .records import canonical_cbor

__all__ = ["NetworkDescriptor"]

_FORMAT = "p2p-ledger-network"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkDescriptor:
    name: str
    currency: str
    authority: bytes

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64:
            raise LocalError("a network name is 1 to 64 characters")
        decimals(self.currency)
        if len(self.authority) != 32:
            raise LocalError("the authority key is 32 bytes")

    @property
    def network_id(self) -> bytes:
        body = canonical_cbor({"name": self.name, "currency": self.currency,
                               "authority": self.authority, "version": 1})
        return hashlib.blake2b(body, digest_size=32, person=b"p2pl-network").digest()

    def to_json(self) -> str:
        return json.dumps({
            "format": _FORMAT, "version": 1, "network_id": self.network_id.hex(),
            "name": self.name, "currency": self.currency,
            "authority": device_id(self.authority)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> NetworkDescriptor:
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT or data.get("version") != 1:
                raise LocalError("not a p2p-ledger network descriptor (version 1)")
            desc = cls(name=data["name"], currency=data["currency"],
                       authority=parse_device_id(data["authority"]))
            claimed = data["network_id"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LocalError(f"network descriptor is damaged: {exc}") from None
        if desc.network_id.hex() != claimed:
            raise LocalError("network descriptor does not match its network id (edited?)")
        return desc
