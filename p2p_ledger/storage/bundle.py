"""Files for offline exchange: bundles of records and summaries of what a node holds.

A bundle is an RFC 8742 CBOR sequence: a header map, then each record's signed bytes
as one byte string, in causal order. A summary is one CBOR map holding the sender's
frontier. Both name the network, so a file from another network is refused whole.
Reading stops at the first framing error and says where it is; the records inside are
verified one by one by the replica, never here. The path `-` is stdout when writing and
stdin when reading (`export --out - | ssh site p2p-ledger import -`).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import cbor2

from ..core.ledger import Frontier
from ..core.records import MAX_RECORD_BYTES, canonical_cbor
from ..errors import LocalError

__all__ = ["STDIO", "BundleError", "read_bundle", "read_summary", "write_bundle",
           "write_summary"]

_BUNDLE = "p2p-ledger-bundle"
_SUMMARY = "p2p-ledger-summary"
MAX_BUNDLE_RECORDS = 10_000_000


class BundleError(LocalError):
    """A bundle or summary file that cannot be read as one."""


STDIO = Path("-")


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    if path == STDIO:
        out = sys.stdout.buffer
        for c in chunks:
            out.write(c)
        out.flush()
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for c in chunks:
            fh.write(c)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_bundle(path: Path, network_id: bytes, raws: list[bytes]) -> None:
    header = canonical_cbor({"format": _BUNDLE, "version": 1, "network": network_id,
                             "count": len(raws)})
    _write_atomic(path, [header, *(canonical_cbor(r) for r in raws)])


def _header(dec: cbor2.CBORDecoder, kind: str, network_id: bytes, path: Path) -> dict[str, object]:
    try:
        head = dec.decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise BundleError(f"{_shown(path)} is not a {kind} file: {exc}") from None
    if not isinstance(head, dict) or head.get("format") != kind or head.get("version") != 1:
        raise BundleError(f"{_shown(path)} is not a {kind} file (version 1)")
    if head.get("network") != network_id:
        raise BundleError(f"{_shown(path)} belongs to another network")
    return head


def _shown(path: Path) -> str:
    return "stdin" if path == STDIO else str(path)


def _open(path: Path) -> io.BytesIO:
    try:
        return io.BytesIO(sys.stdin.buffer.read() if path == STDIO else path.read_bytes())
    except OSError as exc:
        raise BundleError(f"cannot read {_shown(path)}: {exc}") from None


def read_bundle(path: Path, network_id: bytes) -> list[bytes]:
    fp = _open(path)
    dec = cbor2.CBORDecoder(fp)
    head = _header(dec, _BUNDLE, network_id, path)
    count = head.get("count")
    if type(count) is not int or not 0 <= count <= MAX_BUNDLE_RECORDS:
        raise BundleError(f"{_shown(path)}: bad record count")
    total = len(fp.getbuffer())
    raws: list[bytes] = []
    while fp.tell() < total:
        at = fp.tell()
        try:
            item = dec.decode()
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
            raise BundleError(f"{_shown(path)} is damaged at byte {at} (record {len(raws) + 1}): "
                              f"{exc}") from None
        if type(item) is not bytes or len(item) > MAX_RECORD_BYTES:
            raise BundleError(f"{_shown(path)} is damaged at byte {at} (record {len(raws) + 1}): "
                              "not a record")
        raws.append(item)
    if len(raws) != count:
        raise BundleError(f"{_shown(path)} holds {len(raws)} records but its header says {count} "
                          "(truncated?)")
    return raws


def write_summary(path: Path, network_id: bytes, frontier: Frontier) -> None:
    _write_atomic(path, [canonical_cbor({"format": _SUMMARY, "version": 1,
                                         "network": network_id,
                                         "frontier": frontier.to_list()})])


def read_summary(path: Path, network_id: bytes) -> Frontier:
    head = _header(cbor2.CBORDecoder(_open(path)), _SUMMARY, network_id, path)
    try:
        return Frontier.from_list(head.get("frontier"))
    except ValueError as exc:
        raise BundleError(f"{_shown(path)}: {exc}") from None
