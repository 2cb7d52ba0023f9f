"""The verifier child process (node/verifier.py): same answers as checking here, and a
fall back to checking here whenever the child cannot be trusted to answer."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.records import (
    PARALLEL_MIN,
    SignedRecord,
    parse_record,
    start_verifying,
    verify_signatures,
)
from p2p_ledger.errors import InvalidRecord, RecordProblem
from p2p_ledger.node.node import Node, NodeConfig
from p2p_ledger.node.verifier import ProcessVerifier, serve, shared_verifier
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0, World, funded_world, make_world, sqlite_factory

BAD = (3, 40, 71)  # records whose last signature byte is flipped


def tampered(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])  # the signature is the record's last field


@pytest.fixture(scope="module")
def signed() -> tuple[World, list[bytes]]:
    """The raws of a funded network plus 80 payments, in causal order."""
    world, auth = funded_world()
    alice = world.wallet("alice", auth)
    for n in range(80):
        alice.pay(world.account("carol"), 1, key=f"p-{n}", now_ms=T0)
    return world, auth.delta(Frontier({}))


def records_with_bad(raws: list[bytes]) -> list[SignedRecord]:
    return [parse_record(tampered(r) if i in BAD else r) for i, r in enumerate(raws)]


def failing(failures: list[InvalidRecord | None]) -> list[tuple[int, RecordProblem, str]]:
    return [(i, f.problem, f.record_id or "") for i, f in enumerate(failures) if f is not None]


def test_the_child_finds_exactly_the_bad_signatures(signed: tuple[World, list[bytes]]) -> None:
    world, raws = signed
    records = records_with_bad(raws)
    assert len(records) >= PARALLEL_MIN
    verifier = ProcessVerifier()
    try:
        assert verifier.ready()
        got = verifier.start(records, world.network.network_id)()
        again = verifier.start(records[:PARALLEL_MIN], world.network.network_id)()
        assert not verifier.broken
    finally:
        verifier.close()
    assert failing(got) == failing(verify_signatures(records, world.network.network_id))
    assert [i for i, _, _ in failing(got)] == list(BAD)
    assert all(p is RecordProblem.BAD_SIGNATURE for _, p, _ in failing(got))
    assert [i for i, _, _ in failing(again)] == [3, 40]
    # Another network's id: every signature fails.
    verifier = ProcessVerifier()
    try:
        assert len(failing(verifier.start(records, bytes(32))())) == len(records)
    finally:
        verifier.close()


def test_the_childs_loop_answers_in_order() -> None:
    good_sig, payload, author = b"\x00" * 64, b"x", b"\x01" * 32
    inp = io.BytesIO()
    for seq in (5, 6):
        body = msgpack.packb([seq, bytes(32), [[good_sig, payload, author]] * seq])
        inp.write(len(body).to_bytes(4, "big") + body)
    inp.seek(0)
    out = io.BytesIO()
    serve(inp, out)
    data, answers = out.getvalue(), []
    while data:
        size = int.from_bytes(data[:4], "big")
        answers.append(msgpack.unpackb(data[4:4 + size]))
        data = data[4 + size:]
    assert answers == [[5, list(range(5))], [6, list(range(6))]]  # nothing verifies


@pytest.mark.parametrize("command", [
    ["/nonexistent/python"],                                          # cannot start
    [sys.executable, "-c", "pass"],                                   # exits at once
    [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'\\0\\0\\0\\1\\xc1')"],
    # answers every request saying that nothing fails, but for the wrong request
    [sys.executable, "-c", "import sys, msgpack; b = msgpack.packb([7, []]); "
     "sys.stdout.buffer.write(len(b).to_bytes(4, 'big') + b); sys.stdin.buffer.read()"],
    # claims a failing record that is not in the batch
    [sys.executable, "-c", "import sys, msgpack; b = msgpack.packb([0, [10**6]]); "
     "sys.stdout.buffer.write(len(b).to_bytes(4, 'big') + b); sys.stdin.buffer.read()"],
], ids=["missing", "exits", "garbage", "wrong-seq", "out-of-range"])
def test_a_child_that_fails_us_is_dropped_and_the_batch_checked_here(
        signed: tuple[World, list[bytes]], command: list[str]) -> None:
    world, raws = signed
    records = records_with_bad(raws)
    verifier = ProcessVerifier(command)
    try:
        got = verifier.start(records, world.network.network_id)()
        assert verifier.broken
        assert not verifier.ready()
        assert [i for i, _, _ in failing(got)] == list(BAD)
        # From then on, batches are checked without it.
        later = verifier.start(records, world.network.network_id)()
        assert [i for i, _, _ in failing(later)] == list(BAD)
    finally:
        verifier.close()


def test_a_replica_with_the_child_refuses_the_same_records(
        signed: tuple[World, list[bytes]]) -> None:
    world, raws = signed
    batch = [tampered(r) if i in BAD else r for i, r in enumerate(raws)]
    reports, hashes = [], []
    for verifier in (None, shared_verifier().start):
        replica = world.replica()
        if verifier is not None:
            replica.verifier = verifier
        reports.append(replica.receive_many(batch, now_ms=T0))
        hashes.append(replica.state_hash())
    threads, child = reports
    assert hashes[0] == hashes[1]
    assert [(i, e.problem) for i, e in child.refused] == [
        (i, e.problem) for i, e in threads.refused]
    assert {i for i, _ in child.refused} >= set(BAD)
    assert [a.record.id for a in child.applied] == [a.record.id for a in threads.applied]


def test_a_node_checks_signatures_in_the_child_unless_told_not_to(tmp_path: Path) -> None:
    world, auth = funded_world(store_factory=sqlite_factory(tmp_path, make_world().network))
    node = Node(auth, world.authority_key)
    assert auth.verifier == shared_verifier().start
    assert node.config.verify_in_process
    other = Replica(world.network, SqliteStore(tmp_path / "other.db", world.network.network_id))
    Node(other, world.authority_key, config=NodeConfig(verify_in_process=False))
    assert other.verifier is start_verifying


def test_the_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = ("import os, sys\n"
              "from p2p_ledger.node.verifier import shared_verifier\n"
              "v = shared_verifier(); v.warm_up()\n"
              "print(v._proc.pid, flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == -9
    child = int(done.stdout.strip())
    for _ in range(200):  # up to ~10 s
        if not _alive(child):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the verifier child {child} outlived its killed parent")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie waiting to be reaped is not alive
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_one_child_serves_threads_at_once(signed: tuple[World, list[bytes]]) -> None:
    world, raws = signed
    records = records_with_bad(raws)
    verifier = ProcessVerifier()
    results: list[list[int]] = []

    def check() -> None:
        for _ in range(5):
            got = verifier.start(records, world.network.network_id)()
            results.append([i for i, _, _ in failing(got)])

    try:
        threads = [threading.Thread(target=check) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not verifier.broken
    finally:
        verifier.close()
    assert results == [list(BAD)] * 15


def test_the_child_ignores_ctrl_c(signed: tuple[World, list[bytes]]) -> None:
    world, raws = signed
    records = records_with_bad(raws)
    verifier = ProcessVerifier()
    try:
        assert verifier.ready()
        assert verifier._proc is not None
        verifier._proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C to the group
        got = verifier.start(records, world.network.network_id)()
        assert not verifier.broken
        assert [i for i, _, _ in failing(got)] == list(BAD)
    finally:
        verifier.close()
