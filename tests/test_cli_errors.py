"""No traceback ever reaches a user: each failure seen on 50d1dbf, and the rest of its
class, ends in one line on stderr and a documented exit code (`EXIT_CODES`), and
leaves the home as it was.

Most cases call `main()` in this process (a traceback would be an exception escaping
it); the ones that need a signal or a second process run the real entry point.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from p2p_ledger.api import open_home
from p2p_ledger.cli import commands, views
from p2p_ledger.cli.main import (
    EXIT_BUSY,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    main,
)
from p2p_ledger.core.ids import device_id
from p2p_ledger.core.wallet import Wallet
from p2p_ledger.errors import StoreBusy
from p2p_ledger.node.node import NodeConfig
from p2p_ledger.storage.home import Home
from p2p_ledger.storage.sqlite import SqliteStore
from tests.helpers import T0
from tests.node_helpers import wait_until

PASSPHRASE = "correct horse battery staple"
BIG = 20_000  # records in the bundle imported under Ctrl-C: seconds of work


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An authority home A with its descriptor net.json, a bundle of its records, and a
    plain file; the passphrase comes from the environment."""
    monkeypatch.setenv("P2P_LEDGER_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("P2P_LEDGER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["--home", "A", "network", "create", "--name", "Site", "--currency", "AED"]) == 0
    assert main(["--home", "A", "network", "export", "--out", "net.json"]) == 0
    assert main(["--home", "A", "export", "--out", "all.bundle"]) == 0
    (tmp_path / "plain").write_text("not a home\n")
    return tmp_path


def one_line(capsys: pytest.CaptureFixture[str], code: int, expected_code: int,
             *words: str) -> str:
    """The command exited `expected_code` with exactly one line on stderr holding
    `words`."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("p2p-ledger: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------- paths

def test_a_home_that_does_not_exist_is_not_called_damaged(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`id` (and every command that reads the key first) on a home never made said "key
    file is damaged: no device key at ...": a new user's typo in --home, taken for a
    broken key. A key file whose device id does not parse is damaged, and says which."""
    line = one_line(capsys, main(["--home", "NOPE", "id"]), EXIT_ERROR,
                    "no device key at NOPE/key.json", "init")
    assert "damaged" not in line
    assert not (work / "NOPE").exists()
    (work / "A" / "key.json").write_text('{"format": "p2p-ledger-key", "device_id": "x"}')
    one_line(capsys, main(["--home", "A", "id"]), EXIT_ERROR,
             "key file A/key.json is damaged", "'x' is not a device id")


@pytest.mark.parametrize("command", [["id"], ["balance"], ["status"], ["pay", "--to", "x",
                                     "--amount", "1"], ["init", "--network", "net.json"],
                                     ["network", "create", "--name", "x"]])
def test_home_that_is_a_plain_file(work: Path, capsys: pytest.CaptureFixture[str],
                                   command: list[str]) -> None:
    code = main(["--home", "plain", *command])
    one_line(capsys, code, EXIT_ERROR, "--home plain is a file, not a home folder")
    assert (work / "plain").read_text() == "not a home\n"


@pytest.mark.parametrize("command", [["network", "export"], ["summary"], ["export"],
                                     ["audit"]])
def test_out_into_a_missing_folder_is_a_usage_error(
        work: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--home", "A", *command, "--out", "nowhere/file"])
    assert exited.value.code == EXIT_USAGE
    assert "cannot write nowhere/file: the folder nowhere does not exist" in (
        capsys.readouterr().err)
    assert not (work / "nowhere").exists()


def test_init_with_a_bundle_for_a_descriptor(work: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code = main(["--home", "E", "init", "--network", "all.bundle"])
    one_line(capsys, code, EXIT_ERROR, "all.bundle is not a text file")
    assert not (work / "E").exists()
    # The same bytes on stdin (`--network -`) are named "stdin", not "-".
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((work / "all.bundle")
                                                                 .read_bytes())))
    code = main(["--home", "E", "init", "--network", "-"])
    one_line(capsys, code, EXIT_ERROR, "stdin is not a text file")
    assert not (work / "E").exists()


# ---------------------------------------------------------------- nothing half-done

def test_a_failed_network_create_leaves_no_key_behind(
        work: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a bad currency left key.json behind, and a rerun with another
    passphrase silently reused it, locking the authority out."""
    code = main(["--home", "N", "network", "create", "--name", "x", "--currency", "XXX"])
    one_line(capsys, code, EXIT_ERROR, "currency")
    assert not (work / "N").exists()
    (work / "M").mkdir()
    (work / "M" / "notes.txt").write_text("mine")
    code = main(["--home", "M", "network", "create", "--name", "x", "--currency", "XXX"])
    one_line(capsys, code, EXIT_ERROR, "currency")
    assert tree(work / "M") == {"notes.txt"}  # the folder existed: only ours removed
    monkeypatch.setenv("P2P_LEDGER_PASSPHRASE", "another passphrase")
    assert main(["--home", "N", "network", "create", "--name", "x", "--currency", "AED"]) == 0
    capsys.readouterr()
    # the key is sealed under the passphrase of the run that succeeded
    Home(work / "N").signing_key(lambda: "another passphrase")


def test_a_failure_after_the_key_is_made_removes_what_the_command_made(
        work: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_store(self: Home) -> SqliteStore:
        raise OSError(28, "No space left on device", str(self.store_path))

    monkeypatch.setattr(Home, "open_store", broken_store)
    code = main(["--home", "J", "init", "--network", "net.json"])
    one_line(capsys, code, EXIT_ERROR, "No space left on device")
    assert not (work / "J").exists()


# ---------------------------------------------------------------- links

def test_a_port_out_of_range(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", "A", "sync", "tcp://127.0.0.1:99999"])
    one_line(capsys, code, EXIT_ERROR, "the port must be a number from 1 to 65535")


@pytest.mark.parametrize(("url", "words"), [
    ("tcp://[::1:7700", "is not a peer address"),  # urlsplit: "Invalid IPv6 URL"
    ("ws://[fe80::1/ledger", "is not a peer address"),
    ("exec:'ssh site p2p-ledger serve --stdio", "exec: command"),  # shlex: no closing quote
])
def test_a_peer_address_that_does_not_parse(work: Path, capsys: pytest.CaptureFixture[str],
                                            url: str, words: str) -> None:
    """Each was an internal error, exit 70, "this is a bug in p2p-ledger"."""
    one_line(capsys, main(["--home", "A", "sync", url]), EXIT_ERROR, words)


@pytest.mark.parametrize("option", [["--listen", "127.0.0.1:70000"],
                                    ["--listen-ws", "127.0.0.1:99999"],
                                    ["--listen", "127.0.0.1:0", "--discover",
                                     "--discover-port", "65536"]])
def test_serve_on_a_port_out_of_range_is_a_usage_error(
        work: Path, capsys: pytest.CaptureFixture[str], option: list[str]) -> None:
    """The socket layer took 70000 as 4464 (modulo 65536) and served on that port."""
    with pytest.raises(SystemExit) as stop:
        main(["--home", "A", "serve", *option])
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is not a port (0 to 65535)" in err
    assert "Traceback" not in err


@pytest.fixture
def http_server() -> Iterator[int]:
    """A plain HTTP server (not a WebSocket) on 127.0.0.1: every path is 404."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_websocket_to_a_plain_http_server(work: Path, capsys: pytest.CaptureFixture[str],
                                            http_server: int) -> None:
    code = main(["--home", "A", "sync", f"ws://127.0.0.1:{http_server}/ledger"])
    one_line(capsys, code, EXIT_ERROR, f"cannot reach ws://127.0.0.1:{http_server}/ledger",
             "the server answered HTTP")


@pytest.mark.parametrize(("options", "words"), [
    ([], "nothing to do: give --listen, --listen-ws, --stdio or --peer"),
    (["--discover"], "nothing to do"),
    (["--discover", "--peer", "tcp://127.0.0.1:9"], "--discover needs --listen"),
])
def test_serve_with_nothing_to_do_is_a_usage_error(
        work: Path, capsys: pytest.CaptureFixture[str], options: list[str], words: str) -> None:
    """These exited 2 with a log WARNING line; now the usage line of every command."""
    one_line(capsys, main(["--home", "A", "serve", *options]), EXIT_USAGE, words)


def test_serve_on_a_port_in_use(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--home", "A", "serve", "--quiet", "--listen", f"127.0.0.1:{port}"])
    one_line(capsys, code, EXIT_ERROR, f"cannot listen on 127.0.0.1:{port}",
             "in use")


def test_serve_on_an_address_not_on_this_machine(work: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", "A", "serve", "--quiet", "--listen", "192.0.2.1:7700"])
    one_line(capsys, code, EXIT_ERROR, "cannot listen on 192.0.2.1:7700")


@pytest.mark.parametrize(("stdin", "reason"), [
    (b"garbage\n", "exceeds the limit"),        # not a frame of the protocol
    (b"", "the peer closed the connection"),    # gone during the handshake
])
def test_serve_stdio_whose_one_session_fails(work: Path, stdin: bytes, reason: str) -> None:
    """`serve --stdio` runs one session; it exited 0 when that session failed. Now it
    fails as `sync` does: exit 1 and one `p2p-ledger: error:` line saying why."""
    done = subprocess.run([sys.executable, "-m", "p2p_ledger", "--home", "A", "serve",
                           "--stdio", "--quiet"], input=stdin, capture_output=True,
                          timeout=120, check=False, cwd=work,
                          env={**os.environ, "P2P_LEDGER_PASSPHRASE": PASSPHRASE})
    err = done.stderr.decode()
    assert done.returncode == EXIT_ERROR, err
    lines = [line for line in err.splitlines() if line.startswith("p2p-ledger: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("p2p-ledger: error: session over stdio failed: "), err
    assert reason in lines[0], err
    assert "Traceback" not in err


class _Unclosed(trio.abc.Stream):
    """A stream whose `aclose` leaves the stream under it open: the test then writes
    to the link after the node's session over it has stopped."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(("after", "reason"), [
    (b"garbage\n", "exceeds the limit"),        # not a frame: the session breaks
    (b"", "the peer closed the connection"),      # the link dropped, no CLOSE
    (None, None),                                 # closed with a CLOSE, as `sync` does
])
async def test_serve_stdio_whose_session_fails_after_syncing(
        work: Path, after: bytes | None, reason: str | None) -> None:
    """A `serve --stdio` session that reached sync (LIVE) and then failed exited 0:
    only a session that failed before syncing exited 1. Now any failed session does,
    with one `p2p-ledger: error:` line; one that its peer closes with a CLOSE (as
    `sync exec:...` does) still exits 0."""
    assert main(["--home", "D1", "init", "--network", "net.json"]) == 0
    with open_home(work / "D1", passphrase=PASSPHRASE) as d1:
        assert main(["--home", "A", "admit", d1.device_id]) == 0
        node = d1.node(config=NodeConfig(verify_in_process=False))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "p2p_ledger", "--home", "A", "serve", "--stdio",
             "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=work,
            env={**os.environ, "P2P_LEDGER_PASSPHRASE": PASSPHRASE})
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        link = _Unclosed(trio.StapledStream(process.stdin, process.stdout))
        with trio.fail_after(60):
            if after is None:
                assert (await node.sync(link)).synced
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(functools.partial(
                        node.run_session, link, initiator=True, address="stdio"))
                    await wait_until(lambda: any(p.stats.synced for p in node.peers.values()),
                                     within=60)
                    nursery.cancel_scope.cancel()  # the session stops, sending nothing
                await process.stdin.send_all(after)
            await process.stdin.aclose()
            err = b""
            while chunk := await process.stderr.receive_some():
                err += chunk
            code = await process.wait()
    text = err.decode()
    lines = [line for line in text.splitlines() if line.startswith("p2p-ledger: ")]
    assert "Traceback" not in text
    if reason is None:
        assert (code, lines) == (0, []), text
        return
    assert code == EXIT_ERROR, text
    assert len(lines) == 1, text
    assert lines[0].startswith("p2p-ledger: error: session over stdio failed: "), text
    assert reason in lines[0], text


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """`path` made immutable (`chattr +i`): not writable even by root, on whom `chmod`
    has no effect. Skipped where the attribute cannot be set here."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("chattr +i is not permitted on this file system")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_store_that_cannot_be_written_says_so(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A store file the process may read but not write said "the store ... failed:
    attempt to write a readonly database" (SQLite's words). It names the file and says
    it cannot be written; reading it still works."""
    me = device_id(bytes(Home(work / "A").signing_key(lambda: PASSPHRASE).verify_key))
    with immutable(work / "A" / "ledger.sqlite3"):
        assert main(["--home", "A", "balance"]) == 0
        capsys.readouterr()
        one_line(capsys, main(["--home", "A", "issue", "--to", me, "--amount", "1"]),
                 EXIT_ERROR, "the store A/ledger.sqlite3 cannot be written", "read-only")


def test_a_home_folder_that_cannot_be_written_says_so(
        work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A home folder the process may not write (SQLite makes its -wal and -shm files
    there) said "the store ... failed: unable to open database file"."""
    assert not (work / "A" / "ledger.sqlite3-wal").exists()  # closed cleanly: none left
    with immutable(work / "A"):
        one_line(capsys, main(["--home", "A", "balance"]), EXIT_ERROR,
                 "the store A/ledger.sqlite3 cannot be opened", "folder A is read-only")


# ---------------------------------------------------------------- the boundary itself

def test_a_busy_home(work: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(args: object) -> int:
        raise StoreBusy("the store A/ledger.sqlite3 is busy: another p2p-ledger process "
                        "has been writing it for longer than 10 s; try again")

    monkeypatch.setattr(commands, "cmd_import", locked)
    code = main(["--home", "A", "import", "all.bundle"])
    one_line(capsys, code, EXIT_BUSY, "is busy", "try again")


@pytest.mark.slow
def test_a_home_another_process_holds_is_busy(work: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Two writers on one home: the second waits SQLite's 10 s busy timeout, then says
    the home is busy (exit 75), with nothing stored."""
    assert main(["--home", "F", "init", "--network", "net.json"]) == 0
    newcomer = device_id(Home(work / "F").public_key())
    capsys.readouterr()
    store = next(p for p in (work / "A").iterdir() if p.suffix == ".sqlite3")
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a committing import holds it
        code = main(["--home", "A", "admit", newcomer])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_line(capsys, code, EXIT_BUSY, "is busy", "try again")
    assert main(["--home", "A", "status", "--json"]) == 0
    assert '"records": 0' in capsys.readouterr().out  # nothing was stored


def test_a_bug_is_one_line_and_exit_70(work: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(args: object) -> int:
        raise ExceptionGroup("nursery", [ValueError("an unforeseen value")])

    monkeypatch.setattr(views, "cmd_status", bug)
    code = main(["--home", "A", "status"])
    one_line(capsys, code, EXIT_INTERNAL, "internal error (ValueError: an unforeseen value)",
             "P2P_LEDGER_DEBUG=1")


def test_every_exit_code_is_documented() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"| {code} |" in readme, (code, meaning)


# ---------------------------------------------------------------- Ctrl-C

def _entry(home: Path, *args: str) -> subprocess.Popen[str]:
    """The real entry point, in a process group of its own (as a terminal's job).

    A terminal's job starts with SIGINT at its default. The tests may not: a shell runs
    a background job (`bash .ci/run &`) with SIGINT ignored, an ignored signal stays
    ignored across exec, and Python then never raises KeyboardInterrupt. So SIGINT is
    handled here while the child is made (a handled signal is reset to its default in
    the exec'd child)."""
    env = {"P2P_LEDGER_PASSPHRASE": PASSPHRASE, "PATH": "/usr/bin:/bin"}
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "p2p_ledger", "--home", str(home), *args], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=home.parent, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)


_INTERRUPT_IMPORT = """
import sys

class Interrupting:
    # A Ctrl-C that lands while the command line's modules are imported.
    def find_spec(self, name, path=None, target=None):
        if name == "p2p_ledger.cli.commands":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupting())
from p2p_ledger.cli.entry import main
sys.exit(main())
"""


def test_ctrl_c_while_the_command_line_imports(tmp_path: Path) -> None:
    """The first half second or more of every command is imports, before the command
    line can handle a Ctrl-C; one landing there printed Python's traceback (found by
    trying it). The entry point catches it: "interrupted", exit 130."""
    done = subprocess.run([sys.executable, "-c", _INTERRUPT_IMPORT, "--version"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          check=False)
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert done.stderr == "p2p-ledger: interrupted\n"
    assert done.stdout == ""


def test_the_entry_point_imports_nothing_heavy(tmp_path: Path) -> None:
    """What runs before the entry point's `try` is the package's `__init__` alone: its
    names are imported on first use, so the window where a Ctrl-C is still a traceback
    is the interpreter's own start."""
    probe = ("import sys; import p2p_ledger.cli.entry; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('nacl', 'cbor2', 'msgpack', 'trio', 'sqlite3', 'p2p_ledger')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, check=True)
    assert done.stdout.strip() == str(["p2p_ledger", "p2p_ledger.cli", "p2p_ledger.cli.entry",
                                       "p2p_ledger.errors"])


def _children(pid: int, word: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and word in cmdline:
            found.append(int(entry.name))
    return found


def _interrupted(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == "p2p-ledger: interrupted", err
    return err


def test_ctrl_c_on_serve(work: Path) -> None:
    proc = _entry(work / "A", "serve", "--listen", "127.0.0.1:0", "--peer",
                  "tcp://127.0.0.1:9")
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on ...": the node runs
    assert "listening on tcp://127.0.0.1:" in line, line
    _interrupted(proc)


@pytest.mark.slow
def test_ctrl_c_on_import(work: Path) -> None:
    """Interrupted while the verifier child checks the bundle's signatures: exit 130,
    no BrokenPipeError traceback, and the import's transaction is not half stored."""
    home = Home(work / "A")
    replica = home.replica()
    store = replica.store
    assert isinstance(store, SqliteStore)
    wallet = Wallet(replica, home.signing_key(lambda: PASSPHRASE))
    with store.transaction():
        for i in range(BIG):
            wallet.set_meta("n", str(i), now_ms=T0 + i)
    held = store.totals().records
    store.close()
    assert main(["--home", "A", "export", "--out", "big.bundle"]) == 0
    assert main(["--home", "F", "init", "--network", "net.json"]) == 0
    before = tree(work / "F")
    proc = _entry(work / "F", "import", "big.bundle")
    # Ctrl-C on a terminal signals the whole process group: send it once the verifier
    # child is checking signatures.
    deadline = time.monotonic() + 30
    while not _children(proc.pid, "p2p_ledger.node.verifier"):
        assert proc.poll() is None, proc.stderr
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == "p2p-ledger: interrupted", err
    assert tree(work / "F") >= before
    replica = Home(work / "F").replica()
    try:
        assert replica.store.totals().records in (0, held)  # all or nothing
    finally:
        closing = replica.store
        assert isinstance(closing, SqliteStore)
        closing.close()


class _InterruptedInDestructor:
    """Where a compiled build's Ctrl-C was seen to land: Python code that the garbage
    collector runs, whose exceptions Python prints and drops."""

    def __del__(self) -> None:
        raise KeyboardInterrupt


def test_a_ctrl_c_python_swallowed_still_exits_130(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from p2p_ledger.cli import main as cli_main

    ran: list[bool] = []

    def command(args: object) -> int:
        _InterruptedInDestructor()  # dropped at once: its __del__ raises, Python ignores it
        ran.append(True)  # the command went on and ended normally
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_main, "_demo", command)
    hook = sys.unraisablehook
    assert main(["demo"]) == EXIT_INTERRUPTED
    assert ran == [True]
    assert capsys.readouterr().err.splitlines()[-1] == "p2p-ledger: interrupted"
    assert sys.unraisablehook is hook  # put back
    monkeypatch.setattr(cli_main, "_demo", lambda args: 0)
    assert main(["demo"]) == 0  # no Ctrl-C, no 130
