"""`-v`/`-q` on every command, before or after its name, and `--log-format json`:
one JSON object per log line on stderr."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2p_ledger.cli import logs
from p2p_ledger.cli.main import build_parser, main

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2P_LEDGER_PASSPHRASE", PASSPHRASE)
    monkeypatch.chdir(tmp_path)
    assert main(["--home", "A", "network", "create", "--name", "Site"]) == 0
    return tmp_path / "A"


@pytest.mark.parametrize(("argv", "base", "level"), [
    (["status"], logging.WARNING, logging.WARNING),
    (["-v", "status"], logging.WARNING, logging.INFO),
    (["status", "-vv"], logging.WARNING, logging.DEBUG),
    (["-q", "balance"], logging.WARNING, logging.ERROR),
    (["network", "export", "--out", "x", "-v"], logging.WARNING, logging.INFO),
    (["serve"], logging.INFO, logging.INFO),
    (["serve", "-q"], logging.INFO, logging.WARNING),
    (["serve", "--quiet", "--quiet"], logging.INFO, logging.ERROR),
    (["-vvvv", "serve"], logging.INFO, logging.DEBUG),
    (["-qqqqqq", "serve"], logging.INFO, logging.CRITICAL),
])
def test_levels_count_from_the_commands_base(argv: list[str], base: int, level: int) -> None:
    args = build_parser().parse_args(argv)
    assert logs.level_for(args, base) == level


def test_every_command_takes_the_logging_options() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        if name == "network":
            continue  # its actions take them: network export -v (above)
        args = parser.parse_args([*_minimal(name), "-v", "--log-format", "json"])
        assert (args.verbose, args.log_format) == (1, "json"), name


def _minimal(name: str) -> list[str]:
    """The fewest arguments each command needs to parse."""
    needs = {"admit": ["X"], "issue": ["--to", "X", "--amount", "1"],
             "pay": ["--to", "X", "--amount", "1"], "redeem": ["--amount", "1"],
             "summary": ["--out", "x"], "export": ["--out", "x"], "import": ["x"],
             "sync": ["tcp://h:1"], "revoke": ["X"], "check": ["X"], "audit": ["--out", "x"],
             "meta": ["--field", "f", "--value", "v"]}
    return [name, *needs.get(name, [])]


def _serve_stdio_closed(home: Path, *options: str) -> list[str]:
    """stderr of `serve --stdio` whose peer closes at once: one WARNING log line (the
    session closed during its handshake), then the command's own error line."""
    done = subprocess.run([sys.executable, "-m", "p2p_ledger", "--home", str(home),
                           *options, "serve", "--stdio"], input=b"", capture_output=True,
                          timeout=120, check=False,
                          env={**os.environ, "P2P_LEDGER_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 1, done.stderr
    err = done.stderr.decode().splitlines()
    assert err[-1].startswith("p2p-ledger: error: session over stdio failed"), err
    return err[:-1]


def test_text_logs_by_default(home: Path) -> None:
    err = _serve_stdio_closed(home)
    assert len(err) == 1, err
    assert "WARNING session ?@stdio closed by the peer: the peer closed" in err[0], err


def test_json_lines_on_request(home: Path) -> None:
    err = _serve_stdio_closed(home, "--log-format", "json")
    assert len(err) == 1, err
    line = json.loads(err[0])
    assert line["level"] == "warning"
    assert line["logger"] == "p2p_ledger.node"
    assert line["message"].startswith("session ?@stdio closed by the peer")
    assert line["time"].endswith("Z")
    assert line["time"][:2] == "20"


def test_quiet_hides_warnings(home: Path) -> None:
    assert _serve_stdio_closed(home, "-qq") == []


def test_a_traceback_is_one_json_field(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(logging.DEBUG, "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("p2p_ledger.test").exception("it failed")
    line = json.loads(capsys.readouterr().err)
    assert line["message"] == "it failed"
    assert line["level"] == "error"
    assert "ValueError: boom" in line["exception"]
    assert "\n" in line["exception"]


def test_logs_follow_stderr_when_it_is_replaced(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    logs.configure(logging.INFO, "text")
    caught = io.StringIO()
    monkeypatch.setattr(sys, "stderr", caught)
    logging.getLogger("p2p_ledger.test").info("after the swap")
    assert "INFO after the swap" in caught.getvalue()
