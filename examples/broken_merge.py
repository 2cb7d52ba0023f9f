"""A deliberately broken merge, for the simulator to catch.

`EagerReplica` applies a record as soon as its `prev` is held, without waiting for
the credits it `refs`: a payment that arrives before the money it spends is judged
on a causal past that lacks that money, so its verdict depends on arrival order and
replicas disagree. The real `Replica` parks such a record until its whole causal past
is held (specs/ledger.md section 2). Under the real protocol the bug shows only when
records arrive out of causal order, which the simulator's second paths bring about
(a shortcut, a courier's bundle: specs/simulator.md section 3):

    p2p-ledger simulate --scenario sneakernet --report out/ \\
        --replica examples.broken_merge:factory        # fails: verdicts differ
    p2p-ledger simulate --scenario sneakernet --report out/   # the real replica passes

or, from Python, `World(params, replica_factory=factory)`. Run as a script it does
the first of these (with FOLDER for the report, default a temporary one) and prints
the checks; it exits 0 when the simulator caught the bug.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import SignedRecord
from p2p_ledger.core.store import LedgerStore


class EagerReplica(Replica):
    """The broken merge: only `prev` is waited for; missing refs are ignored."""

    def _missing(self, rec: SignedRecord) -> set[bytes]:
        prev = rec.record.prev
        return set() if prev is None or self.store.has(prev) else {prev}


def factory(network: NetworkDescriptor, store: LedgerStore) -> Replica:
    """The replica factory `simulate --replica examples.broken_merge:factory` uses."""
    return EagerReplica(network, store)


def main(folder: Path) -> int:
    from p2p_ledger.sim.report import write_report
    from p2p_ledger.sim.scenarios import params_for
    from p2p_ledger.sim.world import World

    world = World(params_for("sneakernet", seed=1), replica_factory=factory)
    world.run()
    report = write_report(world, folder, plot=False)
    checks = report["checks"]
    assert isinstance(checks, list)
    for c in checks:
        print(f"{'pass' if c['passed'] else 'FAIL'}  {c['name']}: {c['detail']}")
    caught = not report["passed"]
    print("the broken merge was caught" if caught else "the broken merge was NOT caught")
    return 0 if caught else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(Path(sys.argv[1])))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(tmp)))
