"""A small Ed25519 reference for checking the signature vectors (records.md section 11).

Written from RFC 8032 (sections 5.1.3 and 5.1.7) for the tests only, sharing nothing
with tools/ed25519_vectors.py, which made the vectors. It decodes points leniently (y
reduced mod p, the sign of x = 0 ignored), so that it can tell which of libsodium's
extra rules a vector breaks and whether the verification equation itself holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

p = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
_d = (-121665 * pow(121666, -1, p)) % p
_I = pow(2, (p - 1) // 4, p)
Point = tuple[int, int]  # affine (x, y)
_ZERO: Point = (0, 1)


def _add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = _d * x1 * x2 * y1 * y2 % p
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, p) % p,
            (y1 * y2 + x1 * x2) * pow(1 - t, -1, p) % p)


def _times(n: int, a: Point) -> Point:
    result = _ZERO
    for bit in bin(n)[2:]:
        result = _add(result, result)
        if bit == "1":
            result = _add(result, a)
    return result


def _x_for(y: int, sign: int) -> int | None:
    u, v = (y * y - 1) % p, (_d * y * y + 1) % p
    x = u * pow(v, 3, p) * pow(u * pow(v, 7, p), (p - 5) // 8, p) % p
    if (v * x * x - u) % p:
        x = x * _I % p
    if (v * x * x - u) % p:
        return None
    return p - x if x and (x & 1) != sign else x


_B: Point = (_x_for(4 * pow(5, -1, p) % p, 0) or 0, 4 * pow(5, -1, p) % p)


@dataclass(frozen=True, slots=True)
class Decoded:
    point: Point | None  # None: no curve point, however leniently read
    canonical: bool  # y < p, and not x = 0 with the sign bit set

    @property
    def small_order(self) -> bool:
        return self.point is not None and _times(8, self.point) == _ZERO


def decode(data: bytes) -> Decoded:
    n = int.from_bytes(data, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    x = _x_for(y % p, sign)
    canonical = y < p and not (x == 0 and sign == 1)
    return Decoded(None if x is None else (x, y % p), canonical)


def _encode(a: Point) -> bytes:
    return (a[1] | (a[0] & 1) << 255).to_bytes(32, "little")


def challenge(public: bytes, message: bytes, signature: bytes) -> int:
    """k = SHA-512(R || A || M) as a little-endian integer, reduced mod L (libsodium
    reduces it; it matters only for keys with a torsion part)."""
    digest = hashlib.sha512(signature[:32] + public + message).digest()
    return int.from_bytes(digest, "little") % L


def equations(public: bytes, message: bytes, signature: bytes) -> tuple[bool, bool]:
    """Whether [S]B = R + [k]A holds, and whether 8[S]B = 8R + 8[k]A does, with A and
    R decoded leniently and S taken as it is (not reduced)."""
    a, r = decode(public).point, decode(signature[:32]).point
    if a is None or r is None:
        return False, False
    s = int.from_bytes(signature[32:], "little")
    left = _times(s, _B)
    right = _add(r, _times(challenge(public, message, signature), a))
    return left == right, _times(8, left) == _times(8, right)


def broken_rules(public: bytes, message: bytes, signature: bytes) -> set[str]:
    """The names (as in the vectors' `breaks`) of the rules a signature breaks."""
    a, r = decode(public), decode(signature[:32])
    checks = {
        "key_non_canonical": not a.canonical, "key_small_order": a.small_order,
        "r_non_canonical": not r.canonical, "r_small_order": r.small_order,
        "s_not_reduced": int.from_bytes(signature[32:], "little") >= L,
        "equation": not equations(public, message, signature)[0]}
    return {name for name, broken in checks.items() if broken}


def libsodium_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    """The rule of records.md section 11, as written there: A and R canonical and not
    of small order, S < L, and the encoding of [S]B - [k]A equal to the bytes of R."""
    a, r = decode(public), decode(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if not (a.canonical and r.canonical) or a.small_order or r.small_order or s >= L:
        return False
    if a.point is None:
        return False
    minus_ka = _times(challenge(public, message, signature), (p - a.point[0], a.point[1]))
    return _encode(_add(_times(s, _B), minus_ka)) == signature[:32]
