"""Yjs (through pycrdt, the Python binding of the Rust port Yrs) syncing the same
payment entries, in one process, JSON on stdout.

Each replica is one `pycrdt.Doc` holding one `Array` of `Map`s, one entry per record
of the workload (see `payments.py`), each appended in its own transaction as a device
would add its own payment. One client writes them all: the most compact case for
Yjs, whose updates encode a run of one client's items together; with one client per
paying device (as in the ledger) its updates would only grow.

- `build`: write the document's update after the first N entries (`yjs-n.bin`) and
  after N + D (`yjs-nd.bin`), so that the sync process does not pay for building.
- `sync`: load A and B from those updates (full: A = N entries, B empty; delta:
  A = N + D, B = N), then time the Yjs sync: B's state vector goes to A, A answers
  with the update diff, B applies it (1 round trip, 2 messages). Nothing is signed or
  verified. B must end up with A's state vector and entries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pycrdt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import payments

ARRAY = "payments"


def _doc(update: bytes | None) -> tuple[pycrdt.Doc, pycrdt.Array]:
    doc: pycrdt.Doc = pycrdt.Doc()
    array = doc.get(ARRAY, type=pycrdt.Array)
    if update:
        doc.apply_update(update)
    return doc, array


def cmd_build(args: argparse.Namespace) -> dict[str, object]:
    entries = payments.read(args.payments)
    n, d = args.records, args.delta
    doc, array = _doc(None)
    t0 = time.perf_counter()
    for i, entry in enumerate(entries[:n + d]):
        with doc.transaction():
            array.append(pycrdt.Map(entry))
        if i + 1 == n:
            (args.dir / "yjs-n.bin").write_bytes(doc.get_update())
    (args.dir / "yjs-nd.bin").write_bytes(doc.get_update())
    return {"build_s": time.perf_counter() - t0, "entries": n + d,
            "doc_bytes": (args.dir / "yjs-nd.bin").stat().st_size}


def cmd_sync(args: argparse.Namespace) -> dict[str, object]:
    full = args.case == "full"
    a_update = (args.dir / ("yjs-n.bin" if full else "yjs-nd.bin")).read_bytes()
    b_update = None if full else (args.dir / "yjs-n.bin").read_bytes()
    a, a_array = _doc(a_update)
    b, b_array = _doc(b_update)
    held = len(b_array)
    t0 = time.perf_counter()
    state_vector = b.get_state()         # B -> A
    diff = a.get_update(state_vector)    # A -> B
    b.apply_update(diff)
    took = time.perf_counter() - t0
    if b.get_state() != a.get_state() or len(b_array) != len(a_array):
        raise SystemExit("the two Yjs documents did not converge")
    last = b_array[len(b_array) - 1]
    if last.to_py() != a_array[len(a_array) - 1].to_py():
        raise SystemExit("the last entry differs after the sync")
    return {"wall_s": took, "bytes_up": len(state_vector), "bytes_down": len(diff),
            "flights": 2, "records_moved": len(b_array) - held}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("--payments", type=Path, required=True)
    b.add_argument("--records", type=int, required=True)
    b.add_argument("--delta", type=int, required=True)
    b.add_argument("--dir", type=Path, required=True)
    s = sub.add_parser("sync")
    s.add_argument("--case", choices=("full", "delta"), required=True)
    s.add_argument("--dir", type=Path, required=True)
    args = p.parse_args(argv)
    print(json.dumps(cmd_build(args) if args.command == "build" else cmd_sync(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
