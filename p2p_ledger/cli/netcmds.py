"""The bodies of `serve` and `sync`, kept apart from the parser so that commands that
do not touch the network never import trio.

Logs go to stderr, never stdout: with `serve --stdio` stdout carries the protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Never

import trio
from tqdm import tqdm

from ..core.ids import device_id
from ..errors import LocalError, TransportError, UsageError
from ..node.links import Link, parse_link, stdio_stream
from ..node.metrics import serve_metrics
from ..node.node import Node, SessionStats
from ..storage.home import Home
from . import config, live, logs, progress
from .commands import opened, passphrase, printable
from .main import EXIT_CODES, EXIT_ERROR
from .net import host_port

log = logging.getLogger("p2p_ledger.node")


def serve(args: argparse.Namespace) -> int:
    limits, base, log_format = config.resolve(args, host_port)
    logs.configure(logs.level_for(args, base), log_format)
    if not (args.listen or args.listen_ws or args.stdio or args.peer or args.upstream):
        raise UsageError("serve: nothing to do: give --listen, --listen-ws, --stdio or --peer")
    if args.discover and not args.listen:
        raise UsageError("serve: --discover needs --listen (peers connect to that port)")
    home = Home(args.home)
    with opened(home, signs=True) as replica:
        node = Node(replica, home.signing_key(passphrase), config=limits)
        if args.hub and node.role != "hub" and node.admit is None:
            log.info("--hub: this device holds no admit of its own yet; it takes the role "
                     "its admit gives once a peer (the authority) has synced it here")
        elif args.hub and node.role != "hub":
            log.warning("--hub: this device is admitted as %s; run `p2p-ledger admit "
                        "DEVICE_ID --role hub` on the authority for peers to see a hub",
                        node.role)
        try:
            stats = trio.run(_serve, node, args)
        finally:
            live.withdraw(args.home)
    if stats is not None and (stats.error or not stats.synced):
        # `--stdio` runs one session: when it fails, before reaching sync or after (its
        # link dropped, the peer's input broke it), fail as `sync` does (one line).
        print(f"p2p-ledger: error: session over stdio failed: {printable(stats.reason)}",
              file=sys.stderr)
        return EXIT_ERROR
    return 0


async def _serve(node: Node, args: argparse.Namespace) -> SessionStats | None:
    """Serve until stopped; with `--stdio`, the one session's stats."""
    if args.stdio:
        return await node.run_session(stdio_stream(), initiator=False, address="stdio")
    interrupted: list[bool] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signals, nursery.cancel_scope, interrupted)
        nursery.start_soon(node.watch_store)
        nursery.start_soon(node.report_unlogged)  # the log budget's counts, each minute
        if args.metrics:
            host, port = args.metrics
            with _listening("http://", host, port):
                listeners = await nursery.start(functools.partial(
                    serve_metrics, node, host, port))
            addr = listeners[0].socket.getsockname()
            live.announce(args.home, f"http://{_url_host(addr[0])}:{addr[1]}/metrics")
            print(f"metrics on http://{_url_host(addr[0])}:{addr[1]}/metrics",
                  file=sys.stderr, flush=True)
        for url in [*args.peer, *args.upstream]:
            nursery.start_soon(node.keep_dialing, parse_link(url))
        if args.listen:
            host, port = args.listen
            with _listening("", host, port):
                listeners = await nursery.start(functools.partial(
                    trio.serve_tcp, node.accept_tcp, port, host=host))
            for lst in listeners:
                addr = lst.socket.getsockname()
                print(f"listening on tcp://{addr[0]}:{addr[1]} as "
                      f"{device_id(node.device)}", file=sys.stderr, flush=True)
            if args.discover:
                tcp_port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(functools.partial(
                    node.discover, tcp_port, interface=args.discover_iface,
                    port=args.discover_port))
        if args.listen_ws:
            host, port = args.listen_ws
            with _listening("ws://", host, port):
                listeners = await nursery.start(functools.partial(
                    trio.serve_tcp, node.accept_ws, port, host=host))
            ws_port = listeners[0].socket.getsockname()[1]
            print(f"listening on ws://{host}:{ws_port}/", file=sys.stderr, flush=True)
    if interrupted:  # everything is closed: now say so (exit 130, "interrupted")
        raise KeyboardInterrupt
    return None


async def _stop_on_signals(scope: trio.CancelScope, interrupted: list[bool], *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """SIGTERM (a service manager's stop, `kill`) ends `serve` cleanly, exit 0: sessions
    are cancelled, the store is closed and the metrics address withdrawn. SIGINT
    (Ctrl-C) ends it the same way, then exits as interrupted (130). Both arrive here
    through trio's signal receiver, never as an exception raised wherever Python code
    happens to run: a KeyboardInterrupt raised inside a destructor or a garbage
    collector callback is dropped by Python, and `serve` would go on running."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGINT:
                interrupted.append(True)
            else:
                log.info("SIGTERM: stopping")
            scope.cancel()
            return


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@contextlib.contextmanager
def _listening(scheme: str, host: str, port: int) -> Iterator[None]:
    """A listening socket that cannot be opened (port in use, an address not on this
    machine, a privileged port) is the operator's to fix: say which and why."""
    try:
        yield
    except* OSError as group:
        exc = group.exceptions[0]
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LocalError(f"cannot listen on {scheme}{host}:{port}: {why}") from None


async def _sync(node: Node, link: Link, args: argparse.Namespace) -> SessionStats:
    try:
        with progress.bar(args, "syncing") as shown:
            async with trio.open_nursery() as nursery:
                if not shown.disable:
                    nursery.start_soon(_progress, node, shown)
                stats = await node.sync_once(link)
                nursery.cancel_scope.cancel()
    except* TransportError as group:
        raise group.exceptions[0] from None
    return stats


async def _progress(node: Node, shown: tqdm[Never]) -> None:
    """Records moved both ways, and bytes, on the progress bar five times a second."""
    while True:
        await trio.sleep(0.2)
        for peer in list(node.peers.values()):
            s = peer.session
            shown.set_postfix_str(f"{s.state.value}, {s.records_received} in "
                                  f"({s.bytes_received / 1024:,.0f} KiB), {s.records_sent} out "
                                  f"({s.bytes_sent / 1024:,.0f} KiB)", refresh=False)
            shown.update(s.records_received + s.records_sent - shown.n)


def sync(args: argparse.Namespace) -> int:
    home = Home(args.home)
    link = parse_link(args.url)
    with opened(home, signs=True) as replica:
        node = Node(replica, home.signing_key(passphrase))
        stats = trio.run(_sync, node, link, args)
        state_hash = replica.state_hash().hex()
    data: dict[str, object] = {
            "peer": stats.peer, "synced": stats.synced, "records_in": stats.records_in,
            "records_out": stats.records_out, "stored_by_peer": stats.stored_by_peer,
            "unstored_by_peer": stats.unstored_by_peer, "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out, "seconds": round(stats.seconds, 3),
            "state_hash": state_hash, "reason": stats.reason}
    if not stats.synced:
        # A failure as every command's (cli/main.py): the one line on stderr, and under
        # --json the error object on stdout - here with what moved beside it.
        message = f"sync with {args.url} failed: {printable(stats.reason)}"
        print(f"p2p-ledger: error: {message}", file=sys.stderr)
        data["error"] = {"message": message, "exit_code": EXIT_ERROR,
                         "meaning": EXIT_CODES[EXIT_ERROR]}
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif stats.synced:
        print(f"in sync with {stats.peer}: received {stats.records_in} records, sent "
              f"{stats.records_out} ({stats.bytes_in} bytes in, {stats.bytes_out} out) in "
              f"{stats.seconds:.2f} s; state hash {state_hash[:16]}")
    return 0 if stats.synced else 1
