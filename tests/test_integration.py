"""Real processes on real links, 127.0.0.1 only.

One module-scoped setup builds four homes with the library (an authority, a hub and
two devices, all holding the authority's admits and cash-in); each test works on
copies. `serve` processes are started with their stderr drained by a thread, their
port read from the "listening on" line, and are always stopped in `finally`. Every
wait is bounded. Convergence is polled by opening the stores read-only in this
process (milliseconds) and then confirmed with `status --json`.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from p2p_ledger.core.ids import Account, device_id
from p2p_ledger.core.ledger import Frontier, Replica
from p2p_ledger.core.network import NetworkDescriptor
from p2p_ledger.core.records import Role
from p2p_ledger.core.store import MemoryStore
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.node.node import Node
from p2p_ledger.protocol._state import State
from p2p_ledger.protocol.session import (
    HandshakeDone,
    PeerSummary,
    Session,
    SessionClosed,
    SessionConfig,
)
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0, key
from tests.node_helpers import OUT_OF_RANGE_FRAMES, queue_out_of_range

NAMES = ("authority", "hub", "dev1", "dev2")
STARTUP = 20.0  # seconds a `serve` may take to print its address (2 shared cores)
CONVERGE = 20.0


# ---------------------------------------------------------------- homes

def _build_homes(root: Path) -> None:
    keys = {name: Home(root / name).create_key(None) for name in NAMES}
    network = NetworkDescriptor(name="integration", currency="AED",
                                authority=bytes(keys["authority"].verify_key))
    for name in NAMES:
        Home(root / name).set_network(network)
    auth = Wallet(Replica(network, MemoryStore()), keys["authority"])
    auth.admit(bytes(keys["hub"].verify_key), role=Role.HUB, now_ms=T0)
    for name in ("dev1", "dev2"):
        device = bytes(keys[name].verify_key)
        auth.admit(device, now_ms=T0)
        auth.issue(Account(device=device, name="main"), 100_00, key=f"cash-in-{name}",
                   now_ms=T0)
    raws = auth.replica.delta(Frontier({}))
    for name in NAMES:
        replica = Home(root / name).replica()
        store = replica.store
        assert isinstance(store, SqliteStore)
        try:
            with store.transaction():
                report = replica.receive_many(raws, now_ms=T0)
            assert len(report.applied) == len(raws)
        finally:
            store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("homes")
    _build_homes(root)
    return root


@pytest.fixture
def homes(template: Path, tmp_path: Path) -> dict[str, Path]:
    for name in NAMES:
        shutil.copytree(template / name, tmp_path / name)
    return {name: tmp_path / name for name in NAMES}


def _env(passphrase: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("P2P_LEDGER_PASSPHRASE", "P2P_LEDGER_HOME")}
    if passphrase is not None:
        env["P2P_LEDGER_PASSPHRASE"] = passphrase
    return env


def command(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "p2p_ledger", "--home", str(home), *args]


def cli(home: Path, *args: str, timeout: float = 60.0,
        passphrase: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(home, *args), env=_env(passphrase), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=home.parent)


def ok_json(home: Path, *args: str) -> dict[str, Any]:
    done = cli(home, *args, "--json")
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def device_of(home: Path) -> bytes:
    return Home(home).public_key()


def peek(home: Path, look: Callable[[Replica], Any]) -> Any:
    """Read a home's store in this process (safe while a `serve` writes it: WAL)."""
    replica = Home(home).replica()
    store = replica.store
    assert isinstance(store, SqliteStore)
    try:
        return look(replica)
    finally:
        store.close()


def state_hash(home: Path) -> str:
    return str(peek(home, lambda r: r.state_hash().hex()))


def holds(home: Path, record_hex: str) -> bool:
    return bool(peek(home, lambda r: r.store.has(bytes.fromhex(record_hex))))


def wait_for(predicate: Callable[[], bool], what: str, within: float = CONVERGE) -> None:
    """Poll `predicate` (each call opens stores, a few ms) every 50 ms until it holds;
    fail after `within` seconds. Other processes' stores have nothing to wait on."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.05)


def converged(*hs: Path) -> bool:
    return len({state_hash(h) for h in hs}) == 1


def assert_status_converged(*hs: Path) -> dict[Path, dict[str, Any]]:
    statuses = {h: ok_json(h, "status") for h in hs}
    assert len({s["state_hash"] for s in statuses.values()}) == 1, statuses
    assert len({s["records"] for s in statuses.values()}) == 1, statuses
    return statuses


# ---------------------------------------------------------------- serve processes

class Serve:
    """A `serve` process whose stderr a thread drains into a queue."""

    def __init__(self, home: Path, *args: str, passphrase: str | None = None) -> None:
        self.home = home
        self.proc = subprocess.Popen(command(home, "serve", *args), env=_env(passphrase),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=home.parent)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, pattern: str, within: float = STARTUP) -> re.Match[str]:
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {within} s: "
                                     f"{''.join(self.log)}") from None
            if line is None:
                raise AssertionError(f"serve exited ({self.proc.wait()}) before printing "
                                     f"{pattern!r}: {''.join(self.log)}")
            found = re.search(pattern, line)
            if found:
                return found

    def port(self, scheme: str = "tcp") -> int:
        return int(self.wait_line(rf"listening on {scheme}://127\.0\.0\.1:(\d+)").group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@contextmanager
def serving(home: Path, *args: str, passphrase: str | None = None) -> Iterator[Serve]:
    server = Serve(home, *args, passphrase=passphrase)
    try:
        yield server
    finally:
        server.stop()


def pay(home: Path, to: Path, amount: str, idem: str) -> str:
    """`p2p-ledger pay` from `home`'s main account to `to`'s; the record id."""
    data = ok_json(home, "pay", "--to", f"{device_id(device_of(to))}/main", "--amount", amount,
                   "--key", idem)
    assert data["verdict"] == "applied", data
    return str(data["record_id"])


def balance(home: Path, of: Path) -> int:
    account = Account(device=device_of(of), name="main")
    return int(peek(home, lambda r: r.balance(account)))


# ---------------------------------------------------------------- links

def test_devices_sync_through_a_tcp_hub(homes: dict[str, Path]) -> None:
    hub, dev1, dev2 = homes["hub"], homes["dev1"], homes["dev2"]
    with serving(hub, "--listen", "127.0.0.1:0", "--hub") as server:
        url = f"tcp://127.0.0.1:{server.port()}"
        first = pay(dev1, dev2, "12.50", "d1-1")
        out = ok_json(dev1, "sync", url)
        assert out["synced"] is True
        assert out["reason"] == "sync complete"
        assert (out["records_out"], out["records_in"]) == (1, 0)
        assert out["peer"] == device_id(device_of(hub))

        second = pay(dev2, dev1, "2.00", "d2-1")
        out = ok_json(dev2, "sync", url)
        assert (out["records_out"], out["records_in"]) == (1, 1)
        out = ok_json(dev1, "sync", url)
        assert (out["records_out"], out["records_in"]) == (0, 1)

        statuses = assert_status_converged(hub, dev1, dev2)
        assert out["state_hash"] == statuses[dev1]["state_hash"]
        for home in (hub, dev1, dev2):
            assert holds(home, first)
            assert holds(home, second)
        assert balance(hub, dev2) == 100_00 + 12_50 - 2_00
        (peer,) = statuses[dev1]["peers"]
        assert peer["device_id"] == device_id(device_of(hub))
        assert peer["role"] == "hub"
        assert peer["address"] == url
    assert "in sync" in "".join(server.log)


def test_sync_to_an_unreachable_peer_prints_one_error_line(homes: dict[str, Path]) -> None:
    """Regression, fixed (node.py sync_once): the TransportError leaves a trio nursery as an
    ExceptionGroup, which main() does not catch: a traceback instead of one line."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli(homes["dev1"], "sync", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("p2p-ledger: error: cannot reach tcp://127.0.0.1:")


def test_serve_keeps_running_while_its_peer_is_down(homes: dict[str, Path]) -> None:
    """Regression, fixed (node.py keep_dialing): `serve --peer URL` exits with a traceback the
    first time URL cannot be reached, instead of logging it and redialing with backoff
    (the TransportError leaves a nursery as an ExceptionGroup that
    `except TransportError` does not catch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serving(homes["dev1"], "--peer", f"tcp://127.0.0.1:{port}") as server:
        server.wait_line(r"unreachable")
        server.wait_line(r"unreachable")  # it tried again after a backoff pause
        assert server.proc.poll() is None


def test_sync_over_exec_stdio(homes: dict[str, Path]) -> None:
    dev1, dev2 = homes["dev1"], homes["dev2"]
    rid = pay(dev1, dev2, "3.00", "exec-1")
    back = pay(dev2, dev1, "1.00", "exec-2")
    remote = shlex.join(command(dev2, "serve", "--stdio", "--quiet"))
    out = ok_json(dev1, "sync", f"exec:{remote}")
    assert out["synced"] is True
    assert (out["records_out"], out["records_in"]) == (1, 1)
    assert out["peer"] == device_id(device_of(dev2))
    assert holds(dev2, rid)
    assert holds(dev1, back)
    assert_status_converged(dev1, dev2)


def closed_by_server(conn: socket.socket) -> bool:
    """The server closed `conn` (a reset too: it had not read what we sent)."""
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def answered_busy(conn: socket.socket) -> bool:
    """The server answered `conn` with an HTTP 503, then closed it."""
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    return got.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_websocket_upgrades_that_never_finish_are_bounded_and_timed_out(
        homes: dict[str, Path], tmp_path: Path) -> None:
    """Connections to `serve --listen-ws` that send half an HTTP request: the WebSocket
    server held each for 60 s, with no bound on how many (3,000 from one host: +50 MB,
    and 3,000 file descriptors, more until the limit ran out). An upgrade in progress is
    a handshake: 16 from one host at most (`max_handshakes_per_host`), the next answered
    with an HTTP 503 and closed at once, and each closed at `handshake_timeout`. A device
    from another address syncs meanwhile."""
    hub, dev2 = homes["hub"], homes["dev2"]
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nhandshake_timeout = 3.0\n")
    half = b"GET / HTTP/1.1\r\nHost: hub\r\n"
    with serving(hub, "--listen-ws", "127.0.0.1:0", "--hub", "--config", str(config)) as server:
        port = server.port("ws")
        held = []
        try:
            for _ in range(16):
                conn = socket.create_connection(("127.0.0.1", port), timeout=10,
                                                source_address=("127.0.0.2", 0))
                conn.sendall(half)
                held.append(conn)
            time.sleep(0.5)  # the server has taken all 16
            late = socket.create_connection(("127.0.0.1", port), timeout=10,
                                            source_address=("127.0.0.2", 0))
            late.sendall(half)
            started = time.monotonic()
            assert answered_busy(late)  # at once: a 503, then closed
            assert time.monotonic() - started < 2.0
            late.close()
            out = ok_json(dev2, "sync", f"ws://127.0.0.1:{port}/")
            assert out["synced"] is True
            started = time.monotonic()
            assert closed_by_server(held[0])
            assert time.monotonic() - started < 4.0  # its handshake_timeout, not 60 s
        finally:
            for conn in held:
                conn.close()


def test_a_device_behind_a_crowded_address_is_told_why_its_sync_failed(
        homes: dict[str, Path], tmp_path: Path) -> None:
    """Devices behind one NAT reach a hub from one address; past its handshakes bound
    for that address (here 1), the hub closes the next connection before its
    handshake, without a word (the protocol has none then). `sync` said only "the peer
    closed the connection"; it now says the hub is likely busy and what to do, and the
    hub's log names the address. Over loopback TCP, through the real CLI."""
    hub, dev2 = homes["hub"], homes["dev2"]
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nmax_handshakes_per_host = 1\nhandshake_timeout = 30.0\n")
    with serving(hub, "--listen", "127.0.0.1:0", "--hub", "--config", str(config)) as server:
        port = server.port()
        with socket.create_connection(("127.0.0.1", port), timeout=10):  # says nothing
            time.sleep(0.5)  # the hub has taken it: its handshake is in progress
            done = cli(dev2, "sync", f"tcp://127.0.0.1:{port}")
            server.wait_line(r"refused a connection from tcp://127\.0\.0\.1:\d+ without a "
                             r"word: node busy: 1 handshakes in progress from "
                             r"tcp://127\.0\.0\.1, the most it runs from one host")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("p2p-ledger: ")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"p2p-ledger: error: sync with tcp://127.0.0.1:{port} failed: "
                               "the peer closed the connection before the handshake, without "
                               "a word: the peer is likely busy"), done.stderr
    assert "max_handshakes_per_host" in lines[0]


def test_a_websocket_device_behind_a_crowded_address_is_told_the_hub_is_busy(
        homes: dict[str, Path], tmp_path: Path) -> None:
    """A WebSocket upgrade beyond the per-address bound was closed without a word, and
    the dialer's `sync` waited for its 10 s connect timeout: "cannot reach ...: timed
    out". HTTP has a word for it before the upgrade: the hub answers 503, and `sync`
    fails at once saying the hub is busy."""
    hub, dev2 = homes["hub"], homes["dev2"]
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nmax_handshakes_per_host = 1\nhandshake_timeout = 30.0\n")
    with serving(hub, "--listen-ws", "127.0.0.1:0", "--hub", "--config", str(config)) as server:
        port = server.port("ws")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET / HTTP/1.1\r\nHost: hub\r\n")  # half a request
            time.sleep(0.5)  # the hub has taken it: its upgrade is in progress
            started = time.monotonic()
            done = cli(dev2, "sync", f"ws://127.0.0.1:{port}/")
            took = time.monotonic() - started
            server.wait_line(r"refused a connection from ws://127\.0\.0\.1:\d+ with HTTP 503: "
                             r"node busy: 1 WebSocket upgrades in progress \(1 from "
                             r"ws://127\.0\.0\.1\)")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("p2p-ledger: ")]
    assert lines[0].startswith(f"p2p-ledger: error: cannot reach ws://127.0.0.1:{port}/: the "
                               "server is busy (HTTP 503)"), done.stderr
    assert len(lines) == 1, done.stderr
    assert "max_handshakes_per_host" in lines[0]
    assert took < 8.0  # the command's own start included; not the 10 s connect timeout


def test_sync_over_websocket(homes: dict[str, Path]) -> None:
    hub, dev2 = homes["hub"], homes["dev2"]
    rid = pay(dev2, homes["dev1"], "4.00", "ws-1")
    with serving(hub, "--listen-ws", "127.0.0.1:0", "--hub") as server:
        out = ok_json(dev2, "sync", f"ws://127.0.0.1:{server.port('ws')}/")
        assert out["synced"] is True
        assert out["records_out"] == 1
        assert holds(hub, rid)
    assert_status_converged(hub, dev2)


# ---------------------------------------------------------------- the README walkthrough

README = Path(__file__).resolve().parent.parent / "README.md"
WALKTHROUGH_PASSPHRASE = "correct horse battery staple"


def readme_block(after: str) -> list[str]:
    """The commands of the first README.md `sh` block after the text `after`, in order
    (comments left out)."""
    text = README.read_text(encoding="utf-8")
    block = text.split(after, 1)[1].split("```sh\n", 1)[1]
    lines = block.split("```", 1)[0].splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def readme_walkthrough() -> list[str]:
    """The commands of README.md's hub walkthrough, then of its offline exchange by
    files, in order: every README block that needs no outside host (the others dial
    hub.local, ssh or a proxy; the set-up blocks install the package)."""
    return [*readme_block("A site with a hub, step by step"),
            *readme_block("Without a network, files carry the same exchange")]


def test_the_readme_hub_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """README.md "Using it", line by line, through the real CLI, the hub a real `serve`
    process on 127.0.0.1 (on a free port instead of 7700). The hub starts with no admit
    of its own: the authority must accept it as a device and send it its admit, and
    the running `serve` must then act as the hub it was admitted as, for devices that
    hold nothing yet (specs/sync-protocol.md section 5, node.md section 7)."""
    ids: dict[str, str] = {}
    server: Serve | None = None
    url, listen = "127.0.0.1:7700", "127.0.0.1:0"

    def run(line: str) -> None:
        nonlocal server
        for name in re.findall(r"\$\(p2p-ledger --home (\w+) id\)", line):
            ids.setdefault(name, cli(tmp_path / name, "id").stdout.strip())
            line = line.replace(f'"$(p2p-ledger --home {name} id)"', ids[name])
        background = line.endswith(" &")
        argv = shlex.split(line.removesuffix(" &").replace(url, listen))
        assert argv[:2] == ["p2p-ledger", "--home"], line
        home, args = tmp_path / argv[2], argv[3:]
        if background:
            assert server is None, "one background command: the hub"
            assert args[0] == "serve", line
            server = Serve(home, *args[1:], passphrase=WALKTHROUGH_PASSPHRASE)
            return
        done = cli(home, *args, passphrase=WALKTHROUGH_PASSPHRASE)
        assert done.returncode == 0, (line, done.stdout, done.stderr,
                                      "".join(server.log) if server else "")

    lines = readme_walkthrough()
    assert sum(line.endswith(" &") for line in lines) == 1
    assert lines[-1] == "p2p-ledger --home D1 import for-d1.bundle"
    try:
        for line in lines:
            run(line)
            if server is not None and listen.endswith(":0"):
                listen = f"127.0.0.1:{server.port()}"
        assert server is not None
        homes = {name: tmp_path / name for name in ("A", "HUB", "D1", "D2")}
        d1, d2 = (Account.parse(f"{ids[n]}/main") for n in ("D1", "D2"))
        for name, home in homes.items():
            got = peek(home, lambda r: (r.balance(d1), r.balance(d2)))
            assert got == (250_00 - 12_50, 12_50), name
        assert converged(*homes.values())
        statuses = assert_status_converged(*homes.values())
        peers = statuses[homes["D2"]]["peers"]
        assert [(p["device_id"], p["role"]) for p in peers] == [(ids["HUB"], "hub")]
        server.wait_line(r"holds its own admit now: role hub")
    finally:
        if server is not None:
            server.stop()


async def _summary_then_junk(port: int, network: NetworkDescriptor,
                             signing: nacl.signing.SigningKey, admit: bytes) -> None:
    """Handshake as an admitted device, then write SUMMARY and a junk frame at once."""
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            session = Session(network=network, key=signing, admit=admit, role="device",
                              initiator=True, now=trio.current_time())
            await stream.send_all(session.data_to_send())
            while session.state in (State.HELLO, State.AUTH):
                session.receive_data(await stream.receive_some(1 << 16), trio.current_time())
            session.send_summary(Frontier({}), trio.current_time())
            await stream.send_all(session.data_to_send() + b"\x00\x00\x00\x20" + bytes(32))
            while await stream.receive_some(1 << 16):
                pass


def test_junk_after_a_summary_does_not_bring_serve_down(homes: dict[str, Path]) -> None:
    """A good frame and a bad one in one segment: the node must not reply on the dead
    session (that raised out of the handler and stopped the whole `serve` process, so
    any admitted device could stop a hub); it closes that session and goes on."""
    hub, dev1 = homes["hub"], homes["dev1"]
    signing = Home(dev1).signing_key(lambda: "")
    admit = peek(dev1, lambda r: r.store.raw(r.store.admits_for(device_of(dev1))[-1].id))
    with serving(hub, "--listen", "127.0.0.1:0", "--hub") as server:
        trio.run(_summary_then_junk, server.port(), Home(hub).network(), signing, admit)
        server.wait_line(r"closed: a sealed frame failed authentication")
        assert server.proc.poll() is None


async def _out_of_range(port: int, network: NetworkDescriptor,
                        signing: nacl.signing.SigningKey, admit: bytes, what: str,
                        held: tuple[bytes, bytes], chained: bytes) -> SessionClosed:
    """Handshake as an admitted device, send one frame carrying a seq of 2**63 (see
    `queue_out_of_range`), and read until the session ends: how it ended."""
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            session = Session(network=network, key=signing, admit=admit, role="device",
                              initiator=True, now=trio.current_time(),
                              config=SessionConfig(packed=True))
            await stream.send_all(session.data_to_send())
            while session.state in (State.HELLO, State.AUTH):
                session.receive_data(await stream.receive_some(1 << 16), trio.current_time())
            queue_out_of_range(session, what, held=held, chained=chained,
                               now=trio.current_time())
            await stream.send_all(session.data_to_send())  # our AUTH, then the frame
            while not session.closed:
                session.receive_data(await stream.receive_some(1 << 16), trio.current_time())
    (end,) = [e for e in iter(session.next_event, None) if isinstance(e, SessionClosed)]
    return end


def test_out_of_range_frames_do_not_bring_serve_down(homes: dict[str, Path]) -> None:
    """A SUMMARY tip, a TIPS element or a PACKED reference at seq 2**63 from an admitted
    device raised OverflowError in the hub's store and stopped the whole `serve`. Each
    is now a malformed frame: that device gets a CLOSE saying so, and an honest device
    still syncs with the same process."""
    hub, dev1, dev2 = homes["hub"], homes["dev1"], homes["dev2"]
    signing = Home(dev1).signing_key(lambda: "")
    admit = peek(dev1, lambda r: r.store.raw(r.store.admits_for(device_of(dev1))[-1].id))
    authority = Home(hub).network().authority
    held = (authority, peek(hub, lambda r: r.frontier().tips[authority][0][1]))
    pay(dev1, dev2, "1.00", "hostile-1")
    second = pay(dev1, dev2, "1.00", "hostile-2")  # its prev is named at seq 2**63
    chained = peek(dev1, lambda r: r.store.raw(bytes.fromhex(second)))
    rid = pay(dev2, dev1, "3.00", "honest-1")
    with serving(hub, "--listen", "127.0.0.1:0", "--hub") as server:
        port = server.port()
        for what in OUT_OF_RANGE_FRAMES:
            end = trio.run(_out_of_range, port, Home(hub).network(), signing, admit, what,
                           held, chained)
            assert (end.by_peer, end.error) == (True, None), (what, end, "".join(server.log))
            assert end.reason.startswith("malformed"), (what, end)
            assert "2**63" in end.reason, (what, end)
            server.wait_line(r"closed: malformed")
            assert server.proc.poll() is None, what
        out = ok_json(dev2, "sync", f"tcp://127.0.0.1:{port}")
        assert out["synced"] is True
        assert out["records_out"] == 1
        assert holds(hub, rid)
        assert server.proc.poll() is None
    assert not holds(hub, second)


# ---------------------------------------------------------------- live push

def test_payment_by_another_process_reaches_a_connected_peer(homes: dict[str, Path]) -> None:
    dev1, dev2 = homes["dev1"], homes["dev2"]
    with serving(dev1, "--listen", "127.0.0.1:0") as a:
        url = f"tcp://127.0.0.1:{a.port()}"
        with serving(dev2, "--peer", url) as b:
            b.wait_line(r"in sync")
            rid = pay(dev1, dev2, "7.25", "live-1")  # a separate process writes dev1's store
            start = time.monotonic()
            wait_for(lambda: holds(dev2, rid), "the payment to reach dev2", within=10.0)
            took = time.monotonic() - start
            assert took < 3.0, took  # dev1's serve polls its store every 0.2 s
            assert balance(dev2, dev2) == 100_00 + 7_25
    assert_status_converged(dev1, dev2)


# ---------------------------------------------------------------- many sessions

async def _client(port: int, network: NetworkDescriptor, signing: nacl.signing.SigningKey,
                  admit: bytes, reached: Callable[[], None], release: trio.Event) -> None:
    """A device that runs the protocol with a bare Session: handshake, empty summary,
    SYNCED, then it stays connected until released."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        session = Session(network=network, key=signing, admit=admit, role="device",
                          initiator=True, now=trio.current_time())
        while session.state is not State.LIVE:
            out = session.data_to_send()
            if out:
                await stream.send_all(out)
            data = await stream.receive_some(1 << 16)
            now = trio.current_time()
            session.receive_data(data, now)
            while (ev := session.next_event()) is not None:
                if isinstance(ev, HandshakeDone):
                    session.send_summary(Frontier({}), now)
                elif isinstance(ev, PeerSummary):
                    session.send_synced(0, now)
            assert not session.closed, session.error
        out = session.data_to_send()
        if out:
            await stream.send_all(out)
        reached()
        await release.wait()


async def test_hub_holds_200_concurrent_sessions(tmp_path: Path) -> None:
    clients = 200
    auth_key, hub_key = key("load/authority"), key("load/hub")
    network = NetworkDescriptor(name="load", currency="AED",
                                authority=bytes(auth_key.verify_key))
    auth = Wallet(Replica(network, MemoryStore()), auth_key)
    hub_admit = auth.admit(bytes(hub_key.verify_key), role=Role.HUB, now_ms=T0)
    client_keys = [key(f"load/device-{i}") for i in range(clients)]
    admits = [auth.admit(bytes(k.verify_key), now_ms=T0).record.raw for k in client_keys]
    hub_replica = Replica(network, SqliteStore(tmp_path / "hub.sqlite3", network.network_id))
    hub_replica.receive(hub_admit.record.raw, now_ms=T0)
    hub = Node(hub_replica, hub_key, role="hub", wall_ms=lambda: T0)

    live = 0
    all_live, release = trio.Event(), trio.Event()

    def reached() -> None:
        nonlocal live
        live += 1
        if live == clients:
            all_live.set()

    started = time.monotonic()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(_accept, hub), 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as crowd:
                for i in range(clients):
                    crowd.start_soon(_client, port, network, client_keys[i], admits[i],
                                     reached, release)
                await all_live.wait()
                await _until(lambda: sum(p.session.state is State.LIVE
                                         for p in hub.peers.values()) == clients)
                assert len(hub.peers) == clients
                assert {p.session.peer for p in hub.peers.values()} == {
                    bytes(k.verify_key) for k in client_keys}
                release.set()
            nursery.cancel_scope.cancel()
    assert time.monotonic() - started < 45
    store = hub_replica.store
    assert isinstance(store, SqliteStore)
    assert len(store.peers()) == clients
    store.close()


async def _accept(node: Node, stream: trio.SocketStream) -> None:
    peer = stream.socket.getpeername()
    await node.serve_stream(stream, f"tcp://{peer[0]}:{peer[1]}")


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - node state has no event to wait on
        await trio.sleep(0.02)


# ---------------------------------------------------------------- partition and heal

def test_partitioned_device_catches_up_after_restart(homes: dict[str, Path]) -> None:
    hub, dev1, dev2 = homes["hub"], homes["dev1"], homes["dev2"]
    with serving(hub, "--listen", "127.0.0.1:0", "--hub") as h:
        url = f"tcp://127.0.0.1:{h.port()}"
        with serving(dev2, "--peer", url) as d2:
            d2.wait_line(r"in sync")
            with serving(dev1, "--peer", url) as d1:
                d1.wait_line(r"in sync")
                before = pay(dev1, dev2, "1.00", "before-cut")
                wait_for(lambda: holds(dev2, before), "the payment before the cut")
            # dev1 is down: a partition. Both sides go on paying.
            offline = pay(dev1, dev2, "20.00", "offline-1")
            offline2 = pay(dev1, hub, "0.50", "offline-2")
            online = pay(dev2, dev1, "5.00", "while-cut")
            wait_for(lambda: holds(hub, online), "dev2's payment to reach the hub")
            assert not holds(hub, offline)
            assert not holds(dev1, online)
            with serving(dev1, "--peer", url) as d1:  # heal
                wait_for(lambda: converged(hub, dev1, dev2), "all three to converge")
                d1.wait_line(r"in sync")
            for home in (hub, dev1, dev2):
                for rid in (before, offline, offline2, online):
                    assert holds(home, rid)
            assert balance(dev2, dev1) == 100_00 - 1_00 - 20_00 - 50 + 5_00
            assert balance(dev1, dev2) == 100_00 + 1_00 + 20_00 - 5_00
    assert_status_converged(hub, dev1, dev2)
