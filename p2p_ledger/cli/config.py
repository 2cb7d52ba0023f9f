"""The node's configuration file: what `serve` takes as flags, in TOML, so that a hub
can be run by a service manager with a bare `p2p-ledger --home DIR serve`.

`serve` reads `HOME/config.toml` if it exists, or the file given by `--config FILE`
instead (which must exist). A flag given on the command line overrides the file's
value for that setting (`--peer`, given once or more, replaces the file's `peers`
list; `--no-hub` and `--no-discover` turn off what the file turns on); `-v`/`-q` count
from the file's log level. Tables and keys that are not listed in TABLES are errors
naming the key, as are values of the wrong type: a misspelt limit is never silently
ignored. specs/node.md section 10 shows a full file and a systemd unit.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LocalError
from ..node.discovery import DISCOVERY_PORT
from ..node.node import NodeConfig
from ..protocol.session import SessionConfig
from .logs import FORMATS, LEVELS

__all__ = ["FILE_NAME", "TABLES", "load", "resolve"]

FILE_NAME = "config.toml"

# [serve] key -> the serve option's dest; its default when neither file nor flag sets it
SERVE: dict[str, tuple[str, object]] = {
    "listen": ("listen", None), "listen_ws": ("listen_ws", None), "peers": ("peer", []),
    "upstream": ("upstream", []), "hub": ("hub", False), "discover": ("discover", False),
    "discover_iface": ("discover_iface", "0.0.0.0"),
    "discover_port": ("discover_port", DISCOVERY_PORT), "metrics": ("metrics", None)}
# [limits] key -> whether it is a NodeConfig field (else SessionConfig) and its kind
LIMITS = {"max_sessions": (True, int), "max_sessions_per_device": (True, int),
          "max_sessions_per_host": (True, int), "max_handshakes": (True, int),
          "max_handshakes_per_host": (True, int), "max_invalid_records": (True, int),
          "max_send_buffer": (True, int), "max_send_buffer_total": (True, int),
          "summary_tips_total": (True, int), "backoff_initial": (True, float),
          "backoff_max": (True, float), "handshake_timeout": (False, float),
          "idle_timeout": (False, float), "max_summary_tips": (False, int),
          "max_frames_per_second": (False, int)}
TABLES: dict[str, tuple[str, ...]] = {"serve": tuple(SERVE), "log": ("level", "format"),
                                      "limits": tuple(LIMITS)}


def load(path: Path) -> dict[str, dict[str, object]]:
    """The file's tables, checked: unknown tables or keys and wrong types are errors."""
    try:
        with path.open("rb") as fp:
            data = tomllib.load(fp)
    except OSError as exc:
        raise LocalError(f"cannot read the configuration {path}: {exc.strerror or exc}"
                         ) from None
    except tomllib.TOMLDecodeError as exc:
        raise LocalError(f"{path}: not valid TOML: {exc}") from None
    for table, body in data.items():
        if table not in TABLES:
            raise LocalError(f"{path}: unknown key {table!r} (the tables are "
                             f"{', '.join(f'[{t}]' for t in TABLES)})")
        if not isinstance(body, dict):
            raise LocalError(f"{path}: {table!r} must be a table, [{table}]")
        for key, value in body.items():
            if key not in TABLES[table]:
                raise LocalError(f"{path}: unknown key {key!r} in [{table}] (known: "
                                 f"{', '.join(TABLES[table])})")
            _check(path, table, key, value)
    return data


def _check(path: Path, table: str, key: str, value: object) -> None:
    where = f"{path}: [{table}] {key}"
    if table == "serve":
        if key in ("hub", "discover"):
            ok = type(value) is bool
            want = "true or false"
        elif key == "peers" or key == "upstream":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            want = 'a list of URLs, ["tcp://HOST:PORT", ...]'
        elif key == "discover_port":
            ok = type(value) is int and 0 < value < 65536
            want = "a port number"
        else:
            ok = isinstance(value, str)
            want = '"HOST:PORT"' if key != "discover_iface" else "an IP address"
    elif table == "log":
        choices = tuple(LEVELS) if key == "level" else FORMATS
        ok, want = value in choices, " or ".join(f'"{c}"' for c in choices)
    else:
        kind = LIMITS[key][1]
        ok = (type(value) is int or (kind is float and type(value) is float)) and value > 0
        want = "a number above 0" if kind is float else "a whole number above 0"
    if not ok:
        raise LocalError(f"{where} = {value!r}: expected {want}")


def resolve(args: argparse.Namespace, host_port: Callable[[str], tuple[str, int]]
            ) -> tuple[NodeConfig, int, str | None]:
    """Fill `args` (serve's) from the configuration where no flag was given, then the
    defaults; return the node's limits, the base log level and the log format."""
    path = args.config if args.config is not None else args.home / FILE_NAME
    data = load(path) if args.config is not None or path.is_file() else {}
    serve = data.get("serve", {})
    for key, (dest, default) in SERVE.items():
        if getattr(args, dest) is not None:
            continue  # a flag given: it wins
        value = serve.get(key, default)
        if key in ("listen", "listen_ws", "metrics") and isinstance(value, str):
            try:
                value = host_port(value)
            except argparse.ArgumentTypeError as exc:
                raise LocalError(f"{path}: [serve] {key}: {exc}") from None
        setattr(args, dest, list(value) if isinstance(value, list) else value)
    log = data.get("log", {})
    level = LEVELS[str(log.get("level", "info"))]
    fmt = args.log_format or log.get("format")
    limits: dict[str, Any] = data.get("limits", {})  # checked by load()
    session = SessionConfig(packed=True, **{k: v for k, v in limits.items() if not LIMITS[k][0]})
    node = dataclasses.replace(NodeConfig(session=session),
                               **{k: v for k, v in limits.items() if LIMITS[k][0]})
    return node, level, None if fmt is None else str(fmt)
