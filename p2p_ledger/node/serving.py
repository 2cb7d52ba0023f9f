"""Dialing and serving, the `Node`'s part that makes sessions: `sync` once with a
peer, `keep_dialing` it, `discover` peers on the LAN, and accept peers (`serve_tcp`,
`accept_ws`, `serve_stream`). Each connection is run by `Node.run_session`
(node/node.py).

`Serving` is a mixin of `Node`: its methods use the node's state, declared below for
the type checker only. Moved out of node/node.py unchanged; `_turn_away` (a
connection closed before its handshake, node/logbudget.py budgets its log line) later.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
import trio.testing
import trio_websocket

from ..core.ids import device_id
from ..core.ledger import Replica
from ..errors import StoreError, SyncFailed, TransportError
from .config import NodeConfig
from .discovery import DISCOVERY_PORT, Announcement, announce, listen, network_tag
from .links import BUSY, LATE_CONNECT_ERRORS, Link, WebSocketStream, cannot_reach, parse_link
from .logbudget import LogBudget
from .peer import SessionStats, _Peer

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Connector", "Serving"]

log = logging.getLogger("p2p_ledger.node")

Connector = Callable[[Link, trio.Nursery], Awaitable[trio.abc.Stream]]

# A WebSocket upgrade refused (the node runs as many as it may) is answered with this,
# unless MAX_WS_REFUSING refusals are being answered at once (beyond: closed without a
# word); each waits at most REFUSAL_WAIT s for the request, of at most REFUSAL_READ bytes.
BUSY_503 = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n")
MAX_WS_REFUSING = 64
REFUSAL_WAIT = 1.0
REFUSAL_READ = 8192


class Serving:
    """Dialing peers and accepting them, for `Node`."""

    _ws_refusing = 0  # WebSocket upgrades being refused with an answer (each node its own)

    if TYPE_CHECKING:  # the node's state these methods use (node/node.py)
        replica: Replica
        device: bytes
        config: NodeConfig
        peers: dict[int, _Peer]
        dial_pauses: list[float]
        _upgrading: Counter[str]
        _rng: random.Random
        _connect: Connector
        _log_budget: LogBudget

        def _ended(self, stats: SessionStats) -> None: ...

        async def run_session(self, stream: trio.abc.Stream, *, initiator: bool,
                              address: str, until_synced: bool = False) -> SessionStats: ...

    async def sync(self, peer: str | Link | Node | trio.abc.Stream) -> SessionStats:
        """Sync once with `peer`: connect, send what it lacks, take what we lack, and
        close once the peer has acknowledged storing everything we sent.

        `peer` is a URL (tcp://HOST:PORT, ws://HOST:PORT/PATH or exec:COMMAND), a
        `Link`, another `Node` of this process (joined by an in-memory stream, that
        node answering), or a connected `trio.abc.Stream` whose other end runs a
        node's session. Returns the session's stats (`synced` is True). Raises
        `SyncFailed` (with the stats) if the session ended before that
        acknowledgement, `TransportError` if the peer cannot be reached, and
        `LocalError` for a malformed URL. Records received are stored, and published to
        the feeds, as they arrive, also when the sync then fails."""
        from .node import Node  # here: node.py imports this module

        if isinstance(peer, Node):
            stats = _explain_closed_at_once(await self._sync_with_node(peer))
        elif isinstance(peer, trio.abc.Stream):
            stats = _explain_closed_at_once(await self.run_session(
                peer, initiator=True, address="stream", until_synced=True))
        else:
            stats = await self.sync_once(parse_link(peer) if isinstance(peer, str) else peer)
        if not stats.synced:
            raise SyncFailed(stats)
        return stats

    async def _sync_with_node(self, other: Node) -> SessionStats:
        if other is self:
            raise ValueError("a node cannot sync with itself")
        ours, theirs = trio.testing.memory_stream_pair()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(
                    other.run_session, theirs, initiator=False,
                    address=f"mem://{device_id(self.device)[:12]}"))
                return await self.run_session(
                    ours, initiator=True, address=f"mem://{device_id(other.device)[:12]}",
                    until_synced=True)
        except* StoreError as group:  # either store failed: as from a sync over a link
            raise group.exceptions[0] from None

    async def sync_once(self, link: Link) -> SessionStats:
        """Connect, reconcile both ways, close; the stats, whether or not in sync
        (`sync` raises instead). TransportError if unreachable."""
        try:
            async with trio.open_nursery() as nursery:
                stream = await self._connect(link, nursery)
                stats = await self.run_session(stream, initiator=True, address=str(link),
                                               until_synced=True)
                nursery.cancel_scope.cancel()
        except* TransportError as group:
            raise group.exceptions[0] from None
        except* LATE_CONNECT_ERRORS as group:
            raise cannot_reach(link, group.exceptions[0]) from None
        # A command (exec:) is no node with a handshakes bound; when it ends, it says why.
        return stats if link.scheme == "exec" else _explain_closed_at_once(stats)

    async def keep_dialing(self, link: Link | str, *, attempts: int | None = None) -> None:
        """Stay connected to a peer (a `Link` or a URL, as `sync` takes): each session
        stays LIVE, pushing new records both ways, until the link drops; then redial
        with exponential backoff and jitter (`NodeConfig.backoff_initial` up to
        `backoff_max`), forever or `attempts` times. The delay starts again from the
        shortest after a session that reached sync. An unreachable peer is logged, not
        raised: this is how a device waits for a hub to appear."""
        if isinstance(link, str):
            link = parse_link(link)
        delay = self.config.backoff_initial
        for _ in itertools.count() if attempts is None else range(attempts):
            try:
                async with trio.open_nursery() as nursery:
                    stream = await self._connect(link, nursery)
                    stats = await self.run_session(stream, initiator=True, address=str(link))
                    nursery.cancel_scope.cancel()
                if stats.synced:
                    delay = self.config.backoff_initial
            except* TransportError as group:
                log.info("peer %s unreachable: %s", link, group.exceptions[0])
            except* LATE_CONNECT_ERRORS as group:
                log.info("peer %s unreachable: %s", link, cannot_reach(link, group.exceptions[0]))
            pause = delay * self._rng.uniform(0.5, 1.5)
            self.dial_pauses.append(pause)
            await trio.sleep(pause)
            delay = min(delay * 2, self.config.backoff_max)

    async def discover(self, tcp_port: int, *, interface: str = "0.0.0.0",
                       port: int = DISCOVERY_PORT, interval: float = 5.0) -> None:
        """Announce this node on the LAN and connect to the peers of this network that
        announce themselves (the one with the smaller device key dials)."""
        tag = network_tag(self.replica.network_id)
        me = Announcement(tag=tag, device=self.device, port=tcp_port)
        dialing: set[bytes] = set()
        async with trio.open_nursery() as nursery:

            async def dial(link: Link, device: bytes) -> None:
                try:
                    await self.keep_dialing(link, attempts=1)
                finally:
                    dialing.discard(device)

            def heard(msg: Announcement, host: str) -> None:
                if (msg.tag != tag or msg.device <= self.device or msg.device in dialing
                        or any(p.session.peer == msg.device for p in self.peers.values())):
                    return
                dialing.add(msg.device)
                log.info("discovered %s at %s:%d", device_id(msg.device), host, msg.port)
                nursery.start_soon(dial, Link(scheme="tcp", host=host, port=msg.port),
                                   msg.device)

            nursery.start_soon(functools.partial(announce, me, interface=interface,
                                                 port=port, interval=interval))
            await listen(heard, interface=interface, port=port)

    async def accept_tcp(self, stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection, named by the peer's address."""
        try:
            name = stream.socket.getpeername()
            address = f"tcp://{name[0]}:{name[1]}"
        except OSError:
            address = "tcp://?"
        await self.serve_stream(stream, address)

    async def accept_ws(self, stream: trio.SocketStream) -> None:
        """Serve one connection accepted on a WebSocket listener (`serve --listen-ws`,
        with `trio.serve_tcp`). Its HTTP upgrade is a handshake, bounded as one: at
        most `max_handshakes_per_host` from one address and `max_handshakes` in all at
        once (beyond, the connection is answered HTTP 503 and closed: `_refuse_upgrade`),
        each within the session's `handshake_timeout`. trio-websocket's own server held
        an upgrade 60 s, with no bound on how many (specs/node.md section 8)."""
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            host, port = "?", "?"
        address, most = f"ws://{host}:{port}", self.config.max_handshakes_per_host
        if sum(self._upgrading.values()) >= self.config.max_handshakes or (
                self._upgrading[host] >= most):
            answer = self._ws_refusing < MAX_WS_REFUSING
            self._log_budget.log(
                "refused connections", logging.WARNING, "refused a connection from %s "
                "%s: node busy: %d WebSocket upgrades in progress (%d from ws://%s)", address,
                "with HTTP 503" if answer else "without a word",
                sum(self._upgrading.values()), self._upgrading[host], host,
                source=f"ws://{host}")
            await self._refuse_upgrade(stream, answer=answer)
            return
        ws: trio_websocket.WebSocketConnection | None = None
        async with trio.open_nursery() as nursery:  # the WebSocket's reader runs here
            self._upgrading[host] += 1
            try:
                with trio.move_on_after(self.config.session.handshake_timeout):
                    request = await trio_websocket.wrap_server_stream(nursery, stream)
                    ws = await request.accept()
            except trio_websocket.ConnectionClosed:
                ws = None
            finally:
                self._upgrading[host] -= 1
                if not self._upgrading[host]:
                    del self._upgrading[host]
            if ws is None:
                log.info("connection from %s closed: no WebSocket upgrade within %s s",
                         address, self.config.session.handshake_timeout)
                nursery.cancel_scope.cancel()
                await stream.aclose()  # cancelled: it closes at once
                return
            try:
                await self.serve_stream(WebSocketStream(ws), address)
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
            nursery.cancel_scope.cancel()

    async def _refuse_upgrade(self, stream: trio.SocketStream, *, answer: bool) -> None:
        """Close a connection whose WebSocket upgrade the node will not run now. HTTP has
        a word for it before the upgrade, unlike the sync protocol before its handshake:
        unless MAX_WS_REFUSING refusals are already being answered, a 503 is sent, then
        the request is read (at most REFUSAL_READ bytes, within REFUSAL_WAIT seconds) so
        that closing does not reset the connection and lose the answer. The dialer then
        fails at once, saying the hub is busy; without the answer it waited for its
        10 s connect timeout ("timed out")."""
        with trio.move_on_after(REFUSAL_WAIT), contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if answer:
                self._ws_refusing += 1
                try:
                    await stream.send_all(BUSY_503)
                    await stream.send_eof()
                    read = b""
                    while b"\r\n\r\n" not in read and len(read) < REFUSAL_READ:
                        chunk = await stream.receive_some(REFUSAL_READ)
                        if not chunk:
                            break
                        read += chunk
                finally:
                    self._ws_refusing -= 1
        with trio.move_on_after(2), contextlib.suppress(trio.BrokenResourceError,
                                                        trio.ClosedResourceError, OSError):
            await stream.aclose()

    async def serve_stream(self, stream: trio.abc.Stream, address: str) -> None:
        """Accept one incoming connection."""
        await self.run_session(stream, initiator=False, address=address)

    async def serve_tcp(self, port: int, *, host: str = "127.0.0.1",
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept peers on TCP `host`:`port` until cancelled, each session LIVE until
        its peer leaves. Start it with `port = await nursery.start(node.serve_tcp, 0)`
        to learn the port (0: any free one). OSError if the address cannot be listened
        on (in use, not on this machine)."""

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.report_unlogged)
            listeners = await nursery.start(functools.partial(trio.serve_tcp, self.accept_tcp,
                                                              port, host=host))
            task_status.started(listeners[0].socket.getsockname()[1])

    async def report_unlogged(self) -> None:
        """Log, as each minute ends, how many lines about connections that proved
        nothing the log budget held back in it, and from which hosts (node/logbudget.py);
        without it, that count waits for the next such line. Runs until cancelled:
        `serve_tcp` runs it, as does `p2p-ledger serve`."""
        await self._log_budget.run()

    async def _turn_away(self, stream: trio.abc.Stream, address: str,
                         reason: str) -> SessionStats:
        """Close a connection at once, before its handshake: the node is crowded. The
        protocol has no word for it: a CLOSE is sealed, with keys the handshake makes
        (the dialer's `sync` says what such a close likely means). The log budget counts
        the lines it holds back by host, so the host that hit a bound is named."""
        from .node import _host  # here: node.py imports this module

        self._log_budget.log("refused connections", logging.WARNING,
                             "refused a connection from %s without a word: %s", address, reason,
                             source=_host(address))
        with trio.move_on_after(2), contextlib.suppress(trio.BrokenResourceError,
                                                        trio.ClosedResourceError, OSError):
            await stream.aclose()
        stats = SessionStats(address=address, reason=reason, error=True)
        self._ended(stats)
        return stats


# What a dialer reads when the peer closed the link before sending a byte.
CLOSED_AT_ONCE = "the peer closed the connection"


def _explain_closed_at_once(stats: SessionStats) -> SessionStats:
    """A node closes a connection before its handshake, without a word (the protocol
    has none before the keys exist), when it runs as many handshakes as it may: from
    one address (devices behind one NAT share it) or in all. The dialer only saw the
    link close, or fail, before a byte came: its reason says what that likely means."""
    if stats.peer is None and stats.bytes_in == 0 and (
            stats.reason == CLOSED_AT_ONCE or stats.reason.startswith("link failed")):
        stats.reason += (" before the handshake, without a word: the peer is likely busy, "
                         f"running as many handshakes {BUSY}")
    return stats
