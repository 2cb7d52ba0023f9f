"""The networked commands' arguments: `serve` (run a node until stopped) and `sync`
(once). Their bodies live in `netcmds.py`, imported only when one of them runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..node.discovery import DISCOVERY_PORT
from .helptext import add_command


def _port(text: str) -> int:
    """A TCP or UDP port. The socket layer would silently take 70000 as 4464."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return int(text)


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, _port(port)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                data: argparse.ArgumentParser) -> None:
    s = add_command(sub, "serve", help="run this node: accept and dial peers until stopped",
                    description="Run this node: accept and dial peers until stopped (Ctrl-C). "
                    "It logs to stderr; it prints no data, so it takes no --json.",
                    example=["p2p-ledger --home HUB serve --listen 0.0.0.0:7700 --hub",
                             "p2p-ledger --home D1 serve --listen 127.0.0.1:7701 "
                             "--peer tcp://hub.local:7700"])
    s.add_argument("--listen", type=host_port, metavar="HOST:PORT", help="TCP address")
    s.add_argument("--listen-ws", type=host_port, metavar="HOST:PORT",
                   help="WebSocket address (peers dial ws://HOST:PORT/)")
    s.add_argument("--stdio", action="store_true",
                   help="serve one session over stdin/stdout, then exit")
    s.add_argument("--peer", action="append", metavar="URL",
                   help="stay connected to this peer (repeatable)")
    s.add_argument("--upstream", action="append", metavar="URL",
                   help="a hub or the cloud to forward to (repeatable)")
    s.add_argument("--hub", action=argparse.BooleanOptionalAction,
                   help="act as a hub relaying many devices")
    s.add_argument("--discover", action=argparse.BooleanOptionalAction,
                   help="find peers of this network on the LAN by UDP multicast (needs --listen)")
    s.add_argument("--discover-iface", metavar="IP",
                   help="interface address for discovery (default: the system's choice)")
    s.add_argument("--discover-port", type=_port, metavar="PORT",
                   help=f"UDP port for discovery (default {DISCOVERY_PORT})")
    s.add_argument("--metrics", type=host_port, metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics and a health "
                        "check at /healthz (e.g. 127.0.0.1:9464)")
    s.add_argument("--config", type=Path, metavar="FILE",
                   help="read settings from FILE instead of HOME/config.toml; flags given "
                        "here override it (specs/node.md section 10)")
    s.set_defaults(func=cmd_serve)

    s = add_command(sub, "sync", parents=[data], help="connect once, reconcile both ways, exit",
                    example=["p2p-ledger --home D1 sync tcp://hub.local:7700",
                             "p2p-ledger --home D1 sync exec:'ssh site p2p-ledger --home HUB "
                             "serve --stdio'"])
    s.add_argument("url", metavar="URL",
                   help="the peer: tcp://HOST:PORT, ws://HOST:PORT/PATH or exec:COMMAND (a "
                        "command whose stdin and stdout carry the session)")
    s.set_defaults(func=cmd_sync)


def cmd_serve(args: argparse.Namespace) -> int:
    from .netcmds import serve

    return serve(args)


def cmd_sync(args: argparse.Namespace) -> int:
    from .netcmds import sync

    return sync(args)
