"""Signature checks in a child process: a core of its own, and no share of our GIL.

`Replica.receive_many` checks a chunk's signatures while it judges the chunk before.
On a worker thread (the core's default) the check is starved: each Ed25519 check
releases the GIL, but getting it back for the next record waits behind the judging
thread, which holds it (measured: the node then waits ~0.7 s for checks over a 10,000-
record sync whose checks take 1.0 s on one core). A child process has its own GIL.

The child is `python -m p2p_ledger.node.verifier`, started on first use and shared by
every replica of this process. On its stdin come frames (4-byte big-endian length,
then msgpack) `[seq, network_id, [[signature, payload, author], ...]]`; a reader thread
takes them in at once, so that our writes do not wait for the check in progress. On
its stdout go `[seq, [index of each record whose signature fails, ...]]`, in order. It
exits when its stdin closes: when we close it, or when this process ends, however.

If the child cannot be started, dies, or answers anything but a well-formed answer,
the chunk is checked here instead and the thread default is used from then on: a
record is never taken as signed on a doubtful answer.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from queue import SimpleQueue
from typing import IO

import msgpack

from ..core.records import (
    PARALLEL_MIN,
    Failures,
    SignedRecord,
    signature_failure,
    signature_verifies,
    start_verifying,
)

__all__ = ["ProcessVerifier", "serve", "shared_verifier"]

_MAX_FRAME = 64 << 20


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    if size > _MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes")
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def _write_frame(stream: IO[bytes], body: bytes) -> None:
    stream.write(len(body).to_bytes(4, "big") + body)
    stream.flush()


class ProcessVerifier:
    """`start(records, network_id)` as `records.start_verifying`, checked in the child.
    Safe to share between threads: requests and answers are taken under one lock."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._lock = threading.Lock()  # _give_up runs under it: it calls _close
        self._command = list(command or [sys.executable, "-m", "p2p_ledger.node.verifier"])
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False
        self._next = 0
        self._answers: dict[int, list[int]] = {}  # read ahead of the one asked for
        self._taken = 0  # answers taken: requests sent less these are the queue
        self.records_sent = 0  # records sent to the child to check, in all (metrics)

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def queued(self) -> int:
        """Batches sent to the child whose answers have not been taken yet."""
        return 0 if self._broken else self._next - self._taken

    def warm_up(self) -> None:
        """Start the child now (it takes ~0.1 s to import), not on the first batch."""
        with self._lock:
            if not self._broken:
                try:
                    self._child()
                except OSError:
                    self._give_up()

    def ready(self) -> bool:
        """Start the child if need be and wait until it answers (False: it cannot)."""
        seq = self._request(b"", [])
        return seq is not None and self._answer(seq, 0) is not None

    def start(self, records: Sequence[SignedRecord], network_id: bytes
              ) -> Callable[[], Failures]:
        if len(records) < PARALLEL_MIN or self._broken:
            return start_verifying(records, network_id)
        records = list(records)
        seq = self._request(network_id, [[r.signature, r.payload, r.record.author]
                                         for r in records])
        if seq is None:
            return start_verifying(records, network_id)

        def result() -> Failures:
            bad = self._answer(seq, len(records))
            if bad is None:
                return start_verifying(records, network_id)()
            return [signature_failure(r) if i in bad else None for i, r in enumerate(records)]
        return result

    def _request(self, network_id: bytes, items: list[list[bytes]]) -> int | None:
        """Send one request; its number, or None if the child cannot take it."""
        with self._lock:
            if self._broken:
                return None
            seq, self._next = self._next, self._next + 1
            self.records_sent += len(items)
            try:
                proc = self._child()
                assert proc.stdin is not None
                _write_frame(proc.stdin, msgpack.packb([seq, network_id, items],
                                                       use_bin_type=True))
            except (OSError, ValueError):
                self._give_up()
                return None
            return seq

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            # A process group of its own: Ctrl-C at a terminal signals the foreground
            # group, and a child still starting up (before it ignores SIGINT) would die
            # of it with an interpreter traceback on the user's screen. The node handles
            # Ctrl-C; closing our end of its stdin is what ends the child.
            self._proc = subprocess.Popen(self._command, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, process_group=0)
        return self._proc

    def _answer(self, seq: int, count: int) -> set[int] | None:
        """The failing indexes for request `seq`, or None if the child failed us."""
        with self._lock:
            return self._answer_locked(seq, count)

    def _answer_locked(self, seq: int, count: int) -> set[int] | None:
        proc = self._proc
        try:
            while seq not in self._answers:
                if proc is None or proc.stdout is None or self._broken:
                    return None
                body = _read_frame(proc.stdout)
                if body is None:
                    raise ValueError("the verifier process ended")
                got, bad = msgpack.unpackb(body, raw=False)
                if type(got) is not int or type(bad) is not list or got > seq:
                    raise ValueError("a malformed answer, or one out of order")
                self._answers[got] = bad
        except (OSError, ValueError, msgpack.UnpackException):
            self._give_up()
            return None
        bad = self._answers.pop(seq)
        self._taken += 1
        if len(self._answers) > 64:  # answers to requests given up (a batch that failed)
            for old in sorted(self._answers)[:-64]:
                del self._answers[old]
        if not all(type(i) is int and 0 <= i < count for i in bad):
            self._give_up()
            return None
        return set(bad)

    def _give_up(self) -> None:
        self._broken = True
        self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_shared: ProcessVerifier | None = None


def shared_verifier() -> ProcessVerifier:
    """The process's one verifier child, closed at exit."""
    global _shared
    if _shared is None:
        _shared = ProcessVerifier()
        atexit.register(_shared.close)
    return _shared


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child's loop: answer each request in order until the input ends."""
    requests: SimpleQueue[bytes | None] = SimpleQueue()

    def reader() -> None:
        try:
            while (body := _read_frame(inp)) is not None:
                requests.put(body)
        finally:
            requests.put(None)

    threading.Thread(target=reader, name="verifier-input", daemon=True).start()
    while (body := requests.get()) is not None:
        seq, network_id, items = msgpack.unpackb(body, raw=False)
        bad = [i for i, (signature, payload, author) in enumerate(items)
               if not signature_verifies(signature, payload, author, network_id)]
        _write_frame(out, msgpack.packb([seq, bad], use_bin_type=True))


if __name__ == "__main__":
    # The node starts us in a process group of our own; run by hand, Ctrl-C at a
    # terminal would still reach us: the node handles it, and closing our stdin is
    # what ends us (no traceback of ours on the user's screen).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        # The node went away (interrupted, killed) while we answered: nobody is left
        # to answer, and nothing to report. Leave without flushing stdout again.
        os._exit(0)
