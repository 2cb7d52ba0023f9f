"""Progress bars: drawn on stderr when it is a terminal, and nothing at all when it is
not (a pipe, a file, a service manager's journal) or with -q."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_ledger.cli import progress
from p2p_ledger.cli.main import main

PASSPHRASE = "correct horse battery staple"
COMMANDS = {
    "import": ["--home", "B", "import", "all.bundle"],
    "export": ["--home", "A", "export", "--out", "again.bundle"],
    "verify": ["--home", "A", "verify"],
    "audit": ["--home", "A", "audit", "--out", "audit.jsonl"],
}
WORDS = {"import": "importing", "export": "reading", "verify": "verifying",
         "audit": "auditing"}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A with a few records and a bundle of them; B, a new member of its network."""
    monkeypatch.setenv("P2P_LEDGER_PASSPHRASE", PASSPHRASE)
    monkeypatch.chdir(tmp_path)
    assert main(["--home", "A", "network", "create", "--name", "Site"]) == 0
    assert main(["--home", "A", "network", "export", "--out", "net.json"]) == 0
    assert main(["--home", "B", "init", "--network", "net.json"]) == 0
    for n in range(3):
        assert main(["--home", "A", "meta", "--field", "name", "--value", f"v{n}"]) == 0
    assert main(["--home", "A", "export", "--out", "all.bundle"]) == 0
    monkeypatch.setattr(progress, "DELAY", 0.0)  # the bar at once: the work is short here
    return tmp_path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bar_on_a_terminal(work: Path, command: str, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(COMMANDS[command]) == 0
    drawn = terminal.getvalue()
    assert f"{WORDS[command]}:" in drawn
    assert "records" in drawn
    assert "\r" in drawn  # redrawn in place, and cleared when done (leave=False)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_quiet_when_not_a_terminal(work: Path, command: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(COMMANDS[command]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_quiet_on_a_terminal_with_q(work: Path, command: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["-q", *COMMANDS[command]]) == 0
    assert terminal.getvalue() == ""


SCRIPT = ("import sys; from p2p_ledger.cli import progress; progress.DELAY = 0.0; "
          "from p2p_ledger.cli.main import main; sys.exit(main(sys.argv[1:]))")


def _import_in_a_process(stderr: int) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "P2P_LEDGER_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-c", SCRIPT, *COMMANDS["import"]],
                          stdout=subprocess.PIPE, stderr=stderr, env=env, timeout=60,
                          check=False)


def test_a_process_whose_stderr_is_a_pipe_draws_nothing(work: Path) -> None:
    done = _import_in_a_process(subprocess.PIPE)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert b"stored 3 records" in done.stdout


def test_a_process_whose_stderr_is_a_pseudo_terminal_draws_a_bar(work: Path) -> None:
    """The same command, its stderr a pty: the check is the process's own isatty()."""
    main_fd, child_fd = os.openpty()
    try:
        done = _import_in_a_process(child_fd)
        os.close(child_fd)
        drawn = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the child's side is closed and all was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main_fd)
    assert done.returncode == 0
    assert b"importing:" in drawn
    assert b"stored 3 records" in done.stdout
