"""Records whose Ed25519 key or signature is one that libsodium refuses, for
specs/vectors/records.json (section `signatures`, specs/records.md section 11).

RFC 8032 leaves room: some verifiers accept small-order public keys, small-order R,
non-canonical point encodings, or check the cofactored equation. libsodium (through
PyNaCl) does not, so neither does p2p-ledger, and a second implementation built on
another Ed25519 library must refuse exactly the same records. Each case here is a
record whose signature satisfies the plain verification equation [S]B = R + [k]A (or,
for one, only the cofactored 8[S]B = 8R + 8[k]A) and breaks one of libsodium's extra
rules, plus one a lenient reading might refuse and libsodium accepts.

The signatures cannot come from a signing library (nobody holds these keys, and no
library makes a bad signature on purpose), so this module does the curve arithmetic
itself: extended twisted Edwards coordinates, as in RFC 8032 section 6. Only the
vector generator uses it; tests/ed25519_ref.py checks the results independently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
_SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z
IDENTITY: Point = (0, 1, 1, 0)


def _add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(k: int, p: Point) -> Point:
    out = IDENTITY
    while k:
        if k & 1:
            out = _add(out, p)
        p = _add(p, p)
        k >>= 1
    return out


def encode(p: Point) -> bytes:
    zi = pow(p[2], P - 2, P)
    x, y = p[0] * zi % P, p[1] * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _from_y(y: int, sign: int) -> Point:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * _SQRT_M1 % P
    if (x * x - x2) % P:
        raise ValueError(f"no curve point has y = {y}")
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


BASE = _from_y(4 * pow(5, P - 2, P) % P, 0)
# A point of order 8: the torsion part of the point with y = 3 (L times it).
TORSION_8 = mul(L, _from_y(3, 0))


def secret_scalar(seed: bytes) -> int:
    """The clamped scalar a of RFC 8032 5.1.5, whose [a]B is the seed's public key."""
    a = int.from_bytes(hashlib.sha512(seed).digest()[:32], "little")
    return (a & ((1 << 254) - 8)) | (1 << 254)


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def nonce(i: int) -> int:
    return int.from_bytes(hashlib.sha512(b"p2p-ledger vectors/nonce %d" % i).digest(),
                          "little") % L


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


IDENTITY_ENC = encode(IDENTITY)                      # 01 00 .. 00
IDENTITY_NON_CANONICAL = (P + 1).to_bytes(32, "little")  # y = p + 1: ee ff .. ff 7f
IDENTITY_NEGATIVE_ZERO = (1 | 1 << 255).to_bytes(32, "little")  # x = 0 with sign 1


# A case signs the message of a payload the caller builds for a given author key:
# `payload_for(author, attempt)` gives the payload bytes for the attempt-th try, and
# `message(payload)` the signature message. The result is (author, payload, signature).
Case = tuple[bytes, bytes, bytes]
PayloadFor = Callable[[bytes, int], bytes]
Message = Callable[[bytes], bytes]


def any_key_identity(author: bytes, payload_for: PayloadFor, message: Message) -> Case:
    """A small-order key equal to the identity: k·A vanishes, so R = [s]B, S = s
    satisfies the equation for every message."""
    s = nonce(0)
    payload = payload_for(author, 0)
    return author, payload, encode(mul(s, BASE)) + _le(s)


def key_order_8(payload_for: PayloadFor, message: Message) -> Case:
    """The key is a point of order 8: R = [s]B - [j]A works when k = j (mod 8)."""
    author = encode(TORSION_8)
    for attempt in range(256):
        s = nonce(attempt)
        payload = payload_for(author, 0)
        for j in range(8):
            r = encode(_add(mul(s, BASE), mul((8 - j) % 8, TORSION_8)))
            if challenge(r, author, message(payload)) % 8 == j:
                return author, payload, r + _le(s)
    raise AssertionError("no signature found")


def r_small_order(seed: bytes, author: bytes, payload_for: PayloadFor, message: Message,
                  r: bytes) -> Case:
    """A real key, R the identity (in the given encoding) and S = k·a: the equation
    holds because [S]B = [k]A."""
    payload = payload_for(author, 0)
    k = challenge(r, author, message(payload))
    return author, payload, r + _le(k * secret_scalar(seed) % L)


def mixed_key(seed: bytes) -> tuple[int, bytes]:
    """A key with a torsion part: A = [a]B + T8, where a is the seed's scalar."""
    a = secret_scalar(seed)
    return a, encode(_add(mul(a, BASE), TORSION_8))


def key_mixed_order(seed: bytes, payload_for: PayloadFor, message: Message, *,
                    cofactorless: bool) -> Case:
    """An ordinary signature by a mixed-order key: [S]B - [k]A = R - [k]T8, so the
    plain equation holds only when k = 0 (mod 8); the cofactored one always does."""
    a, author = mixed_key(seed)
    for attempt in range(256):
        r = nonce(attempt)
        payload = payload_for(author, 0)
        rb = encode(mul(r, BASE))
        k = challenge(rb, author, message(payload))
        if (k % 8 == 0) == cofactorless:
            return author, payload, rb + _le((r + k * a) % L)
    raise AssertionError("no signature found")


def r_order_8(seed: bytes, payload_for: PayloadFor, message: Message) -> Case:
    """A mixed-order key, R = -[k]T8 of order 8 and S = k·a: the plain equation holds
    ([S]B - [k]A = -[k]T8 = R) when R is chosen as -[j]T8 with k = j (mod 8), j odd."""
    a, author = mixed_key(seed)
    for attempt in range(256):
        payload = payload_for(author, attempt)
        for j in (1, 3, 5, 7):
            r = encode(mul(8 - j, TORSION_8))
            k = challenge(r, author, message(payload))
            if k % 8 == j:
                return author, payload, r + _le(k * a % L)
    raise AssertionError("no signature found")


def s_plus_l(signature: bytes) -> bytes:
    """The same signature with S + L in place of S: [S + L]B = [S]B."""
    return signature[:32] + _le(int.from_bytes(signature[32:], "little") + L)
