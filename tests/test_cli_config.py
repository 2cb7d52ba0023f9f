"""`serve`'s configuration file: HOME/config.toml or --config FILE, flags over the
file, unknown keys and wrong types as errors; the example file and systemd unit in
specs/node.md section 10; a real `serve` run from a file alone."""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path

import pytest

from p2p_ledger.cli import config
from p2p_ledger.cli.main import build_parser, main
from p2p_ledger.cli.net import host_port
from p2p_ledger.errors import LocalError
from p2p_ledger.node.discovery import DISCOVERY_PORT
from tests import test_integration
from tests.test_integration import ok_json, serving

template = test_integration.template
homes = test_integration.homes
SPEC = Path(__file__).parent.parent / "specs" / "node.md"


def resolve(home: Path, *flags: str) -> tuple[object, ...]:
    args = build_parser().parse_args(["--home", str(home), "serve", *flags])
    args.home = Path(args.home)  # as main() makes it
    node, level, fmt = config.resolve(args, host_port)
    return args, node, level, fmt


def write(home: Path, text: str, name: str = config.FILE_NAME) -> Path:
    home.mkdir(exist_ok=True)
    (home / name).write_text(text, encoding="utf-8")
    return home / name


FILE = """
[serve]
listen = "0.0.0.0:7700"
peers = ["tcp://a:1", "tcp://b:2"]
hub = true
metrics = "127.0.0.1:9464"
[log]
level = "debug"
format = "json"
[limits]
max_sessions = 7
max_sessions_per_host = 3
idle_timeout = 5
"""


def test_without_a_file_the_flags_defaults(tmp_path: Path) -> None:
    args, node, level, fmt = resolve(tmp_path)
    assert (args.listen, args.peer, args.upstream, args.hub, args.discover) == (
        None, [], [], False, False)
    assert (args.discover_iface, args.discover_port, args.metrics) == (
        "0.0.0.0", DISCOVERY_PORT, None)
    assert (level, fmt) == (logging.INFO, None)
    assert node.max_sessions == 256
    assert node.session.packed


def test_the_homes_file_fills_what_no_flag_gives(tmp_path: Path) -> None:
    write(tmp_path, FILE)
    args, node, level, fmt = resolve(tmp_path)
    assert args.listen == ("0.0.0.0", 7700)
    assert args.peer == ["tcp://a:1", "tcp://b:2"]
    assert args.hub is True
    assert args.metrics == ("127.0.0.1", 9464)
    assert (level, fmt) == (logging.DEBUG, "json")
    assert (node.max_sessions, node.max_sessions_per_host) == (7, 3)
    assert node.max_sessions_per_device == 4  # not in the file: the default
    assert node.session.idle_timeout == 5
    assert node.session.packed


def test_flags_override_the_file(tmp_path: Path) -> None:
    write(tmp_path, FILE)
    args, _, level, fmt = resolve(tmp_path, "--listen", "127.0.0.1:9", "--peer", "tcp://c:3",
                                  "--no-hub", "--log-format", "text", "--discover-port",
                                  str(DISCOVERY_PORT))
    assert args.listen == ("127.0.0.1", 9)
    assert args.peer == ["tcp://c:3"]
    assert args.hub is False
    assert fmt == "text"
    assert level == logging.DEBUG  # -v / -q step from it (logs.level_for)
    assert args.metrics == ("127.0.0.1", 9464)


def test_config_flag_replaces_the_homes_file(tmp_path: Path) -> None:
    write(tmp_path / "home", FILE)
    other = write(tmp_path, '[serve]\nupstream = ["tcp://up:7"]\n', "site.toml")
    args, node, _, _ = resolve(tmp_path / "home", "--config", str(other))
    assert args.upstream == ["tcp://up:7"]
    assert args.listen is None
    assert node.max_sessions == 256


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match=r"cannot read the configuration .*nope.toml"):
        resolve(tmp_path, "--config", str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(("text", "message"), [
    ("[serve]\nlisten = \n", r"not valid TOML"),
    ("[server]\nlisten = \"h:1\"\n", r"unknown key 'server' \(the tables are \[serve\]"),
    ("listen = \"h:1\"\n", r"unknown key 'listen' \(the tables are"),
    ("[limits]\nmax_session = 3\n", r"unknown key 'max_session' in \[limits\] \(known: "
                                    r"max_sessions, "),
    ("[serve]\npeer = [\"tcp://a:1\"]\n", r"unknown key 'peer' in \[serve\]"),
    ("[limits]\nmax_sessions = \"many\"\n", r"\[limits\] max_sessions = 'many': expected a "
                                            r"whole number above 0"),
    ("[limits]\nmax_sessions = 0\n", r"max_sessions = 0: expected a whole number above 0"),
    ("[limits]\nmax_sessions = true\n", r"max_sessions = True: expected a whole number"),
    ("[limits]\nmax_sessions = 2.5\n", r"max_sessions = 2.5: expected a whole number"),
    ("[limits]\nidle_timeout = -1.0\n", r"idle_timeout = -1.0: expected a number above 0"),
    ("[serve]\nhub = \"yes\"\n", r"\[serve\] hub = 'yes': expected true or false"),
    ("[serve]\npeers = \"tcp://a:1\"\n", r"\[serve\] peers = 'tcp://a:1': expected a list"),
    ("[serve]\nlisten = \"nocolon\"\n", r"\[serve\] listen: 'nocolon' is not HOST:PORT"),
    ("[serve]\ndiscover_port = 70000\n", r"discover_port = 70000: expected a port number"),
    ("[log]\nlevel = \"loud\"\n", r"\[log\] level = 'loud': expected \"debug\" or \"info\""),
    ("serve = 3\n", r"'serve' must be a table"),
])
def test_bad_files_are_errors_that_name_the_key(tmp_path: Path, text: str,
                                                message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(LocalError, match=re.escape(str(path)) + ".*" + message):
        resolve(tmp_path)


def test_serve_with_a_bad_file_is_one_line_before_the_store_is_opened(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "A", "[limits]\nmax_sesions = 3\n")  # a home with no store at all
    assert main(["--home", str(tmp_path / "A"), "serve"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("p2p-ledger: error: ")
    assert "unknown key 'max_sesions' in [limits]" in err[0]


def _block(language: str, after: str) -> str:
    text = SPEC.read_text(encoding="utf-8")
    found = re.search(rf"```{language}\n({re.escape(after)}.*?)```", text, re.S)
    assert found, (language, after)
    return found.group(1)


def test_the_example_file_in_the_spec_loads(tmp_path: Path) -> None:
    path = write(tmp_path, _block("toml", "# HOME/config.toml"))
    tables = config.load(path)
    assert set(tables) == set(config.TABLES)
    for table, keys in config.TABLES.items():
        assert set(tables[table]) == set(keys), table  # it shows every key
    args, node, level, fmt = resolve(tmp_path)
    assert args.upstream == ["tcp://cloud.example:7700"]
    assert (node.max_sessions_per_host, level, fmt) == (64, logging.INFO, "json")


def test_the_systemd_unit_in_the_spec_runs_serve(tmp_path: Path) -> None:
    unit = _block("ini", "# /etc/systemd/system/p2p-ledger.service")
    (line,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    program, *argv = shlex.split(line.removeprefix("ExecStart="))
    assert program.endswith("/bin/p2p-ledger")
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    assert args.home == "/var/lib/p2p-ledger"
    assert "ReadWritePaths=/var/lib/p2p-ledger" in unit


def test_a_real_serve_from_its_file_alone(homes: dict[str, Path]) -> None:
    """listen, metrics, the hub role and JSON logs, all from HOME/config.toml."""
    hub, dev1 = homes["hub"], homes["dev1"]
    write(hub, '[serve]\nlisten = "127.0.0.1:0"\nhub = true\nmetrics = "127.0.0.1:0"\n'
               '[log]\nformat = "json"\n[limits]\nmax_sessions = 2\n')
    with serving(hub) as server:
        server.wait_line(r"metrics on http://127\.0\.0\.1:\d+/metrics")
        url = f"tcp://127.0.0.1:{server.port()}"
        out = ok_json(dev1, "sync", url)
        assert out["synced"] is True
        server.wait_line(r'"message": "session .*: in sync"')
    logged = [line for line in server.log
              if not line.startswith(("listening on", "metrics on"))]
    assert logged
    for line in logged:
        record = json.loads(line)
        assert set(record) >= {"time", "level", "logger", "message"}
    assert ok_json(dev1, "status")["peers"][0]["role"] == "hub"
