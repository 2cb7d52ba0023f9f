"""Device key files: the Ed25519 seed sealed under a passphrase.

The seal is Argon2id (PyNaCl `pwhash.argon2id`, moderate cost by default) deriving a
key for XSalsa20-Poly1305 (`SecretBox`), so a wrong passphrase or an edited file fails
authentication instead of yielding a different key. An unencrypted key file is written
only when asked for (`init --no-passphrase`). Files are written atomically with mode
0600.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from ..core.ids import device_id, parse_device_id
from ..errors import KeyFileError, LocalError, WrongPassphrase

__all__ = ["key_device", "load_key", "read_key_file", "save_key", "seal_seed", "unseal_seed"]

_FORMAT = "p2p-ledger-key"
_KDF = nacl.pwhash.argon2id


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal_seed(seed: bytes, passphrase: str, *, opslimit: int = _KDF.OPSLIMIT_INTERACTIVE,
              memlimit: int = _KDF.MEMLIMIT_INTERACTIVE) -> dict[str, object]:
    salt = nacl.utils.random(_KDF.SALTBYTES)
    key = _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt,
                   opslimit=opslimit, memlimit=memlimit)
    sealed = nacl.secret.SecretBox(key).encrypt(seed)
    return {"protection": "argon2id", "opslimit": opslimit, "memlimit": memlimit,
            "salt": _b64(salt), "sealed": _b64(bytes(sealed))}


def unseal_seed(data: dict[str, object], passphrase: str) -> bytes:
    try:
        salt = base64.b64decode(str(data["salt"]), validate=True)
        sealed = base64.b64decode(str(data["sealed"]), validate=True)
        opslimit, memlimit = int(str(data["opslimit"])), int(str(data["memlimit"]))
    except (KeyError, ValueError) as exc:
        raise KeyFileError(f"key file is damaged: {exc}") from None
    try:
        key = _KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt,
                       opslimit=opslimit, memlimit=memlimit)
        return bytes(nacl.secret.SecretBox(key).decrypt(sealed))
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase("wrong passphrase for the device key") from None


def write_private(path: Path, text: str) -> None:
    """Write atomically: a temporary file, fsync, rename; readable by the owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_key(path: Path, key: nacl.signing.SigningKey, passphrase: str | None) -> None:
    seed = bytes(key)
    data: dict[str, object] = {"format": _FORMAT, "version": 1,
                               "device_id": device_id(bytes(key.verify_key))}
    if passphrase is None:
        data |= {"protection": "none", "seed": _b64(seed)}
    else:
        data |= seal_seed(seed, passphrase)
    write_private(path, json.dumps(data, indent=2) + "\n")


def key_protection(path: Path) -> str:
    return str(read_key_file(path).get("protection"))


def key_device(path: Path) -> bytes:
    """The public key named in a key file, read without unsealing it."""
    data = read_key_file(path)  # its own errors say what is wrong (a missing file...)
    try:
        return parse_device_id(str(data.get("device_id")))
    except LocalError as exc:
        raise KeyFileError(f"key file {path} is damaged: {exc}") from None


def read_key_file(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyFileError(f"no device key at {path}: run `p2p-ledger init` first") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise KeyFileError(f"{path} is not a p2p-ledger key file")
    return data


def load_key(path: Path, passphrase: str | None) -> nacl.signing.SigningKey:
    """Load the device key. `passphrase` is needed unless the file is unencrypted."""
    data = read_key_file(path)
    if data.get("protection") == "none":
        try:
            seed = base64.b64decode(str(data["seed"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise KeyFileError(f"key file is damaged: {exc}") from None
    elif data.get("protection") == "argon2id":
        if passphrase is None:
            raise KeyFileError("the device key is encrypted and no passphrase was given")
        seed = unseal_seed(data, passphrase)
    else:
        raise KeyFileError(f"unknown key protection {data.get('protection')!r}")
    if len(seed) != 32:
        raise KeyFileError("key file is damaged: the seed is not 32 bytes")
    key = nacl.signing.SigningKey(seed)
    if data.get("device_id") != device_id(bytes(key.verify_key)):
        raise KeyFileError("key file is damaged: the key does not match its device id")
    return key
