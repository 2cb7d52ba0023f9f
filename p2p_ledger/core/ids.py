"""Printable names for keys, records and accounts.

A device id is the device's Ed25519 public key plus a 3-byte BLAKE2b checksum, in
lowercase RFC 4648 base32 without padding: 56 characters a person can copy, read
aloud or type, and in which a typo is caught by the checksum instead of paying a key
nobody holds. Inside records the raw 32-byte key is used.

An account is `DEVICE_ID/NAME`; NAME defaults to `main`. Only the device whose key
it names can debit it, because a debit names only the account's NAME and is signed
by the device itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from ..errors import LocalError

__all__ = ["DEFAULT_ACCOUNT_NAME", "Account", "check_account_name", "device_id",
           "parse_device_id", "short_id"]

DEFAULT_ACCOUNT_NAME = "main"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


def _checksum(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=3, person=b"p2pl-devid").digest()


def device_id(key: bytes) -> str:
    """The printable device id of a 32-byte Ed25519 public key."""
    if len(key) != 32:
        raise ValueError("a device key is 32 bytes")
    return base64.b32encode(key + _checksum(key)).decode("ascii").lower()


def parse_device_id(text: str) -> bytes:
    """The 32-byte key of a printable device id; LocalError if it is not one."""
    cleaned = text.strip().upper()
    if len(cleaned) != 56:
        raise LocalError(f"{text!r} is not a device id (56 characters of base32 expected)")
    try:
        raw = base64.b32decode(cleaned)
    except ValueError:
        raise LocalError(f"{text!r} is not a device id (not base32)") from None
    key, check = raw[:32], raw[32:]
    if _checksum(key) != check:
        raise LocalError(f"{text!r} is not a device id (checksum mismatch: a typo?)")
    return key


def short_id(key_or_id: bytes) -> str:
    """A short hex prefix for tables and logs (never for addressing)."""
    return key_or_id.hex()[:12]


_GOOD_NAMES: set[str] = {DEFAULT_ACCOUNT_NAME}


def check_account_name(name: str) -> str:
    if name in _GOOD_NAMES:
        return name
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise LocalError(
            f"{name!r} is not an account name (1-32 of a-z 0-9 _ . -, starting with a letter "
            "or digit)")
    if len(_GOOD_NAMES) < 10_000:  # a bounded memo of names already checked
        _GOOD_NAMES.add(name)
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """An account: the owning device's key and a name."""

    device: bytes
    name: str = DEFAULT_ACCOUNT_NAME

    def __post_init__(self) -> None:
        if len(self.device) != 32:
            raise LocalError("an account's device key is 32 bytes")
        check_account_name(self.name)

    @classmethod
    def parse(cls, text: str) -> Account:
        """Parse `DEVICE_ID` or `DEVICE_ID/NAME`."""
        dev, _, name = text.strip().partition("/")
        return cls(device=parse_device_id(dev), name=name or DEFAULT_ACCOUNT_NAME)

    def __str__(self) -> str:
        return f"{device_id(self.device)}/{self.name}"
