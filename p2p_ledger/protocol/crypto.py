"""Session cryptography: ephemeral X25519, keys bound to the network, sealed frames.

Each side sends a fresh X25519 public key in its HELLO. Both compute the shared secret
and derive two 32-byte keys (one per direction) with BLAKE2b keyed by the network id
over the shared secret and both HELLO frames. A peer of another network derives other
keys, so its first sealed frame fails to open: it learns only that the handshake failed.

Each side then proves its device key by signing the transcript hash (which covers both
ephemeral keys, so a signature cannot be replayed into another session) and shows the
authority's admit record for its key, inside the first sealed frame (AUTH).

Sealed frames are XChaCha20-Poly1305 with the frame's length prefix as associated data
and a per-direction counter as nonce. The receiver expects exactly the next counter, so
a frame that is replayed, dropped or reordered inside the stream fails to open.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.signing

from ..errors import RemoteProtocolError

__all__ = ["AUTH_CONTEXT", "Channel", "Ephemeral", "auth_message", "derive_keys",
           "verify_auth_signature"]

AUTH_CONTEXT = b"p2p-ledger session auth v1\x00"
_KDF_PERSON = b"p2pl-session"
_TAG = sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES


class Ephemeral:
    """A one-session X25519 key pair."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._private = (nacl.public.PrivateKey(secret) if secret is not None
                         else nacl.public.PrivateKey.generate())
        self.public = bytes(self._private.public_key)

    def shared(self, peer_public: bytes) -> bytes:
        try:
            return bytes(sodium.crypto_scalarmult(bytes(self._private), peer_public))
        except nacl.exceptions.RuntimeError:
            raise RemoteProtocolError("handshake failed: bad ephemeral key") from None


def derive_keys(shared: bytes, network_id: bytes, transcript: bytes) -> tuple[bytes, bytes, bytes]:
    """(initiator-to-responder key, responder-to-initiator key, transcript hash)."""
    okm = hashlib.blake2b(shared + transcript, key=network_id, digest_size=64,
                          person=_KDF_PERSON).digest()
    th = hashlib.blake2b(transcript, key=network_id, digest_size=32,
                         person=b"p2pl-transcr").digest()
    return okm[:32], okm[32:], th


def auth_message(transcript_hash: bytes, initiator: bool) -> bytes:
    return AUTH_CONTEXT + transcript_hash + (b"I" if initiator else b"R")


def verify_auth_signature(device_key: bytes, signature: bytes, transcript_hash: bytes,
                          initiator: bool) -> None:
    try:
        nacl.signing.VerifyKey(device_key).verify(
            auth_message(transcript_hash, initiator), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        raise RemoteProtocolError("handshake failed: the peer did not prove its key") from None


class Channel:
    """Seals outgoing and opens incoming frame bodies of one session."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self._send_key = send_key
        self._receive_key = receive_key
        self._sent = 0
        self._received = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return counter.to_bytes(24, "little")

    def seal(self, body: bytes) -> bytes:
        """A whole wire frame (length prefix included) carrying `body`."""
        prefix = (len(body) + _TAG).to_bytes(4, "big")
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            body, prefix, self._nonce(self._sent), self._send_key)
        self._sent += 1
        return prefix + bytes(sealed)

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < _TAG:
            raise RemoteProtocolError("a sealed frame failed authentication (shorter than "
                                      "its tag)")
        prefix = len(sealed).to_bytes(4, "big")
        try:
            body = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed, prefix, self._nonce(self._received), self._receive_key)
        except nacl.exceptions.CryptoError:
            raise RemoteProtocolError(
                "a sealed frame failed authentication (another network, tampering, or a "
                "replayed or reordered frame)") from None
        self._received += 1
        return bytes(body)
