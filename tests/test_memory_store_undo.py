"""MemoryStore's rollback (one undo step per applied record, `_unapply`): a transaction
that raises leaves every table exactly as it was, whatever kinds of records it applied
- credits claimed by the same record that made them, metadata, checkpoint covers,
revocations, several records of one chain."""

from __future__ import annotations

from typing import Any

import pytest

from p2p_ledger.core.ledger import Replica
from p2p_ledger.core.records import Checkpoint
from p2p_ledger.core.store import MemoryStore

from .helpers import T0, funded_world


def _tables(store: MemoryStore) -> dict[str, Any]:
    """Every field of the store, empty entries and zero balances left out (a rollback
    prunes those: test_memorystore_rollback_leaves_no_empty_entries)."""
    out: dict[str, Any] = {}
    for name, value in vars(store).items():
        if name == "_undo":
            continue
        if isinstance(value, dict):
            value = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list)
                         else v) for k, v in value.items() if v or v is False}
            value = dict(sorted(value.items(), key=repr))  # order of keys is not state
        out[name] = value
    return out


def test_a_transaction_that_raises_leaves_every_table_as_it_was() -> None:
    world, auth_replica = funded_world()
    store = auth_replica.store
    assert isinstance(store, MemoryStore)
    auth = world.wallet("authority", auth_replica)
    alice = world.wallet("alice", auth_replica)
    bob = world.wallet("bob", auth_replica)
    alice.pay(world.account("carol"), 2_00, key="first", now_ms=T0)  # a chain to cover
    before = _tables(store)
    records = store.totals().records
    head = Replica(world.network, store).head(world.device("alice"))
    assert head is not None

    def batch() -> None:
        with store.transaction():
            alice.pay(world.account("bob"), 10_00, key="a-b", now_ms=T0 + 1)
            # to alice's own other account: the record claims the credit it makes
            alice.pay(world.account("alice", "savings"), 5_00, key="a-a", now_ms=T0 + 2)
            bob.pay(world.account("alice"), 7_00, key="b-a", now_ms=T0 + 3)
            alice.pay(world.account("carol"), 1_00, key="a-c", now_ms=T0 + 4)
            alice.set_meta("name", "Alice", now_ms=T0 + 5)
            auth.submit(Checkpoint(covers=((world.device("alice"), head.seq, head.id),),
                                   state_hash=bytes(32)), now_ms=T0 + 6)
            auth.revoke(world.device("carol"), after_seq=1, now_ms=T0 + 7)
            assert store.totals().records == records + 7
            assert _tables(store) != before
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        batch()
    assert _tables(store) == before
    # and the store goes on as if the batch had never been: the same payment again
    paid = alice.pay(world.account("bob"), 10_00, key="a-b", now_ms=T0 + 1)
    assert paid.verdict.value == "applied"
    assert store.totals().records == records + 1
