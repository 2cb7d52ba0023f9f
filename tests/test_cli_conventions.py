"""The command line's conventions (issue 12 items 3 and 4), through `main()` in this
process: help texts and examples everywhere, `--version`, `--json` on every command
that prints (and on failures), `-` for stdout and stdin, amounts in major units with
the currency, times with their zone, memos and display names shown, and money a
payee could never spend refused at the source.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p2p_ledger import __version__
from p2p_ledger.build import build_kind
from p2p_ledger.cli.main import EXIT_CODES, EXIT_ERROR, EXIT_USAGE, build_parser, main
from p2p_ledger.storage.bundle import read_bundle
from p2p_ledger.storage.home import Home

PASSPHRASE = "correct horse battery staple"
ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Run:
    """`p2p-ledger ARGS` in this process: exit code, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys, self.monkeypatch = capsys, monkeypatch

    def __call__(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str, stdin: bytes | None = None) -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("P2P_LEDGER_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("P2P_LEDGER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return Run(capsys, monkeypatch)


@pytest.fixture
def site(run: Run) -> dict[str, str]:
    """Authority A (default tiers: tier 0 holds at most 2,000.00 AED per account), D1
    admitted and funded with 300.00, D2 joined but not admitted; D1 holds A's records."""
    run.ok("--home", "A", "network", "create", "--name", "Site 7")
    run.ok("--home", "A", "network", "export", "--out", "net.json")
    for home in ("D1", "D2"):
        run.ok("--home", home, "init", "--network", "net.json")
    ids = {h: run.ok("--home", h, "id").strip() for h in ("A", "D1", "D2")}
    run.ok("--home", "A", "admit", ids["D1"])
    run.ok("--home", "A", "issue", "--to", ids["D1"], "--amount", "300.00")
    run.ok("--home", "A", "export", "--out", "a.bundle")
    run.ok("--home", "D1", "import", "a.bundle")
    return ids


# ---------------------------------------------------------------- help and version

def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


def test_every_option_and_argument_has_help_and_every_command_an_example() -> None:
    commands = _commands(build_parser())
    assert len(commands) > 25
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (path, action.dest)
        if path:
            assert parser.epilog, path
            assert "example" in parser.epilog, path
            assert all(line.strip().startswith("p2p-ledger ")
                       for line in parser.epilog.splitlines()[1:]), path


def test_the_main_help_names_every_exit_code_and_the_formats(run: Run) -> None:
    with pytest.raises(SystemExit) as stop:
        run("--help")
    assert stop.value.code == 0
    out = run.capsys.readouterr().out
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", out, re.M), code
    assert "12.50" in out
    assert "DEVICE_ID/NAME" in out


def test_the_pay_help_explains_amounts_accounts_and_gives_an_example(run: Run) -> None:
    with pytest.raises(SystemExit):
        run("pay", "--help")
    out = " ".join(run.capsys.readouterr().out.split())
    assert "12.50 is twelve dirhams fifty fils" in out
    assert "DEVICE_ID/NAME" in out
    assert "example: p2p-ledger --home D1 pay --to" in out


def test_version(run: Run) -> None:
    with pytest.raises(SystemExit) as stop:
        run("--version")
    assert stop.value.code == 0
    assert run.capsys.readouterr().out.strip() == f"p2p-ledger {__version__} ({build_kind()})"


# ---------------------------------------------------------------- --json

def test_json_from_id_summary_and_network_export(run: Run, site: dict[str, str]) -> None:
    assert run.json("--home", "D1", "id") == {"device_id": site["D1"],
                                              "home": str(Path("D1"))}
    summary = run.json("--home", "D1", "summary", "--out", "d1.summary")
    assert summary == {"out": "d1.summary", "authors": 1}  # A's chain: D1 signed nothing
    exported = run.json("--home", "A", "network", "export", "--out", "again.json")
    assert exported["name"] == "Site 7"
    assert exported["currency"] == "AED"
    assert Path("again.json").read_text() == Path("net.json").read_text()


def test_a_failure_under_json_is_a_json_error_object_with_the_same_code(
        run: Run, site: dict[str, str]) -> None:
    code, out, err = run("--home", "D1", "pay", "--to", site["A"], "--amount", "9999.00",
                         "--json")
    assert code == EXIT_ERROR
    error = json.loads(out)["error"]
    assert error["exit_code"] == EXIT_ERROR
    assert "insufficient funds in main: 300.00 AED available, 9999.00 AED needed" in (
        error["message"])
    assert err.count("\n") == 1
    assert err.startswith("p2p-ledger: error: ")
    # Without --json: the same line, nothing on stdout.
    code, out, err = run("--home", "D1", "pay", "--to", site["A"], "--amount", "9999.00")
    assert (code, out) == (EXIT_ERROR, "")


def test_a_failed_sync_under_json_is_an_error_object_with_what_moved(
        run: Run, site: dict[str, str]) -> None:
    """A sync the peer refused (D2 is not admitted) exits 1. Under --json its stdout
    was the stats alone, `"synced": false` with no "error" object, and stderr had no
    error line: the one failure that broke the convention. Now it is the error object
    (same shape as every failure's) with the stats beside it, and the one line."""
    serve = f"exec:{sys.executable} -m p2p_ledger --home A serve --stdio"
    code, out, err = run("--home", "D2", "sync", serve, "--json")
    assert code == EXIT_ERROR
    data = json.loads(out)
    assert data["error"] == {
        "exit_code": EXIT_ERROR, "meaning": EXIT_CODES[EXIT_ERROR],
        "message": f"sync with {serve} failed: handshake failed: the peer shows no admit "
                   "record"}
    assert (data["synced"], data["records_out"]) == (False, 0)
    lines = [line for line in err.splitlines() if line.startswith("p2p-ledger: ")]
    assert lines == [f"p2p-ledger: error: {data['error']['message']}"], err


def test_a_usage_error_under_json_is_a_json_error_object_too(run: Run) -> None:
    with pytest.raises(SystemExit) as stop:
        run("--home", "A", "pay", "--amount", "1", "--json")
    assert stop.value.code == EXIT_USAGE
    out = run.capsys.readouterr().out
    error = json.loads(out)["error"]
    assert error["exit_code"] == EXIT_USAGE
    assert "--to" in error["message"]


# ---------------------------------------------------------------- - for stdout and stdin

def entry(*args: str, stdin: bytes = b"") -> tuple[bytes, str]:
    """The real `python -m p2p_ledger ARGS` with `stdin` piped in: (stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "p2p_ledger", *args], input=stdin,
                          capture_output=True, timeout=120, check=False,
                          env={**os.environ, "P2P_LEDGER_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout, done.stderr.decode()


def test_dash_is_stdout_and_stdin(run: Run, site: dict[str, str]) -> None:
    # network export --out - | init --network -
    descriptor, err = entry("--home", "A", "network", "export", "--out", "-")
    assert descriptor == Path("net.json").read_bytes()
    assert err == "wrote stdout\n"
    out, _ = entry("--home", "D3", "init", "--network", "-", stdin=descriptor)
    assert b"joined network 'Site 7'" in out
    # export --out - | import -: the report goes to stderr, as JSON if asked
    bundle, err = entry("--home", "A", "export", "--out", "-", "--json")
    assert json.loads(err)["out"] == "stdout"
    Path("copy.bundle").write_bytes(bundle)
    network_id = Home(Path("A")).network().network_id
    assert len(read_bundle(Path("copy.bundle"), network_id)) == 2  # the admit and the issue
    out, _ = entry("--home", "D3", "import", "-", "--json", stdin=bundle)
    assert json.loads(out)["stored"] == 2
    # summary --out - | export --since -
    summary, _ = entry("--home", "D3", "summary", "--out", "-")
    out, _ = entry("--home", "A", "export", "--since", "-", "--out", "none.bundle", "--json",
                   stdin=summary)
    assert json.loads(out)["records"] == 0
    # audit --out -
    rows, err = entry("--home", "A", "audit", "--out", "-")
    assert len(rows.splitlines()) == 2
    assert "wrote 2 records to stdout" in err


# ---------------------------------------------------------------- money at the source

def test_issue_over_the_payees_holding_limit_is_refused_saying_what_to_do(
        run: Run, site: dict[str, str]) -> None:
    code, _, err = run("--home", "A", "issue", "--to", site["D1"], "--amount", "10000.00")
    assert code == EXIT_ERROR
    assert "tier 0, whose accounts can hold at most 2000.00 AED" in err
    assert "move at most 2000.00 AED at a time, or admit it at tier 1 first" in err
    assert "nothing was signed" in err
    run.ok("--home", "A", "issue", "--to", site["D1"], "--amount", "2000.00")


def test_issue_to_a_device_not_admitted_is_refused(run: Run, site: dict[str, str]) -> None:
    code, _, err = run("--home", "A", "issue", "--to", site["D2"], "--amount", "5.00")
    assert code == EXIT_ERROR
    assert "is not a member of this network: admit it first" in err
    run.ok("--home", "A", "admit", site["D2"])
    run.ok("--home", "A", "issue", "--to", site["D2"], "--amount", "5.00")


def test_pay_to_a_device_this_one_holds_no_admit_of_needs_force(
        run: Run, site: dict[str, str]) -> None:
    code, _, err = run("--home", "D1", "pay", "--to", site["D2"], "--amount", "5.00")
    assert code == EXIT_ERROR
    assert "no admit of it is held here" in err
    assert "--force pays anyway" in err
    done = run.json("--home", "D1", "pay", "--to", site["D2"], "--amount", "5.00", "--force")
    assert done["verdict"] == "applied"
    assert ["--force" in w and "no admit of it is held here" in w
            for w in done["warnings"]] == [True]


def test_pay_to_a_new_account_name_warns(run: Run, site: dict[str, str]) -> None:
    code, _, err = run("--home", "D1", "pay", "--to", f"{site['A']}/savngs", "--amount",
                         "1.00")
    assert code == 0, err
    assert "p2p-ledger: warning:" in err
    assert "/savngs has never received anything here" in err
    # the default account of a new member is no surprise, and a name seen before neither
    code, _, err = run("--home", "D1", "pay", "--to", site["A"], "--amount", "1.00")
    assert (code, err) == (0, "")
    code, _, err = run("--home", "D1", "pay", "--to", f"{site['A']}/savngs", "--amount",
                         "1.00")
    assert (code, err) == (0, "")


# ---------------------------------------------------------------- what views show

def test_text_another_device_wrote_cannot_drive_the_terminal(
        run: Run, site: dict[str, str]) -> None:
    """Memos and display names are written by other devices and reach every replica.
    Printed as they were, an escape sequence cleared the payee's screen or recoloured
    it, and a newline in a memo forged a line of `history` (a fake movement). Text
    views escape what is not printable; --json keeps the text as signed."""
    memo = "\x1b[2J\x1b[31mpaid\x1b[0m\n2026-01-01T00:00:00Z  issue   9999.00 AED"
    shown = "\\x1b[2J\\x1b[31mpaid\\x1b[0m\\n2026-01-01T00:00:00Z  issue   9999.00 AED"
    run.ok("--home", "D1", "meta", "--field", "name", "--value", "Truck\x1b[8m 12")
    paid = run.json("--home", "D1", "pay", "--to", site["A"], "--amount", "1.00",
                    "--memo", memo)
    history = run.ok("--home", "D1", "history")
    balance = run.ok("--home", "D1", "balance")
    check = run.ok("--home", "D1", "check", paid["record_id"])
    for text in (history, balance, check):
        assert "\x1b" not in text, text
    assert f"memo: {shown}" in history
    assert not any(line.startswith("2026-01-01") for line in history.splitlines())
    assert "(Truck\\x1b[8m 12)" in history.splitlines()[0]
    assert "(Truck\\x1b[8m 12)" in balance
    assert f"memo      {shown}" in check
    moves = {m["record_id"]: m for m in run.json("--home", "D1", "history")["movements"]}
    assert moves[paid["record_id"]]["memo"] == memo


def test_memos_names_and_zoned_times_in_views(run: Run, site: dict[str, str]) -> None:
    run.ok("--home", "A", "meta", "--field", "name", "--value", "Site 7 cashier")
    run.ok("--home", "A", "export", "--out", "a2.bundle")
    run.ok("--home", "D1", "import", "a2.bundle")
    run.ok("--home", "D1", "meta", "--field", "name", "--value", "Truck 12")
    paid = run.json("--home", "D1", "pay", "--to", site["A"], "--amount", "12.50",
                    "--memo", "diesel, pump 3")
    history = run.json("--home", "D1", "history")
    assert history["name"] == "Truck 12"
    moves = {m["record_id"]: m for m in history["movements"]}
    move = moves[paid["record_id"]]
    assert move["memo"] == "diesel, pump 3"
    assert move["counterparty_name"] == "Site 7 cashier"
    assert all(ZONED.match(m["time"]) for m in history["movements"])
    text = run.ok("--home", "D1", "history")
    assert "(Truck 12)" in text.splitlines()[0]
    assert "(Site 7 cashier)  memo: diesel, pump 3" in text
    balance = run.json("--home", "D1", "balance")
    assert balance["names"][f"{site['D1']}/main"] == "Truck 12"
    assert "(Truck 12)" in run.ok("--home", "D1", "balance")
    check = run.json("--home", "D1", "check", paid["record_id"])
    assert check["memo"] == "diesel, pump 3"
    assert ZONED.match(check["time"])
    assert "memo      diesel, pump 3" in run.ok("--home", "D1", "check", paid["record_id"])
    run.ok("--home", "D1", "audit", "--out", "audit.jsonl")
    rows = [json.loads(line) for line in Path("audit.jsonl").read_text().splitlines()]
    assert [r["memo"] for r in rows if r["record_id"] == paid["record_id"]] == [
        "diesel, pump 3"]
    assert all(ZONED.match(r["time"]) for r in rows)
