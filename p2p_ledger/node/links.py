"""Links: every way two nodes can exchange bytes, as trio streams.

    tcp://HOST:PORT          a TCP connection
    ws://HOST:PORT/PATH      a WebSocket (binary messages), for hubs behind HTTP proxies
    exec:COMMAND ...         a child process's stdin/stdout: ssh, socat to a serial radio,
                             or `p2p-ledger serve --stdio` directly
    stdio                    this process's own stdin/stdout (`serve --stdio`)

The session above a link sees only `send_all` and `receive_some`, so all links carry
the same protocol.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..errors import LocalError, TransportError

__all__ = ["LATE_CONNECT_ERRORS", "Link", "WebSocketStream", "cannot_reach", "open_link",
           "parse_link", "stdio_stream"]

_CONNECT_ERRORS = (OSError, trio.BrokenResourceError, trio_websocket.HandshakeError,
                   trio_websocket.ConnectionClosed)
# A WebSocket server's refusal (an HTTP server that is not ours answers 404, say) is
# raised by the connection's reader task, in the caller's nursery, not by open_link.
LATE_CONNECT_ERRORS = (trio_websocket.HandshakeError,)


# What a dialer turned away by a node's handshakes bound (or WebSocket upgrades bound)
# is told, after what it saw: why, and what to do.
BUSY = ("as it may (by default, 16 at most from one address - devices behind one NAT "
        "share one - and 256 in all): try again in a moment, or ask its operator to raise "
        "max_handshakes_per_host")


def cannot_reach(link: Link, exc: BaseException) -> TransportError:
    """The TransportError for a failed connection, in one line."""
    if isinstance(exc, trio_websocket.ConnectionRejected) and exc.status_code == 503:
        return TransportError(f"cannot reach {link}: the server is busy (HTTP 503); a node "
                              f"answers so when it runs as many WebSocket upgrades {BUSY}")
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return TransportError(f"cannot reach {link}: the server answered HTTP "
                              f"{exc.status_code}, not a WebSocket upgrade")
    return TransportError(f"cannot reach {link}: {exc}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    scheme: str  # "tcp", "ws" or "exec"
    host: str = ""
    port: int = 0
    path: str = "/"
    command: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.scheme == "exec":
            return "exec:" + shlex.join(self.command)
        if self.scheme == "ws":
            return f"ws://{self.host}:{self.port}{self.path}"
        return f"tcp://{self.host}:{self.port}"


def parse_link(url: str) -> Link:
    """Parse a peer URL; LocalError with the accepted forms if it is none of them."""
    if url.startswith("exec:"):
        try:
            command = tuple(shlex.split(url[5:]))
        except ValueError as exc:  # an unclosed quote
            raise LocalError(f"{url!r}: the exec: command does not parse ({exc})") from None
        if not command:
            raise LocalError("exec: needs a command, e.g. exec:'ssh site p2p-ledger serve --stdio'")
        return Link(scheme="exec", command=command)
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a bracket left open
        parts = urlsplit("")
    try:
        port = parts.port  # ValueError when out of 0..65535 or not a number
    except ValueError:
        raise LocalError(f"{url!r}: the port must be a number from 1 to 65535") from None
    if parts.scheme in ("tcp", "ws") and parts.hostname and port:
        return Link(scheme=parts.scheme, host=parts.hostname, port=port,
                    path=parts.path or "/")
    raise LocalError(f"{url!r} is not a peer address (tcp://HOST:PORT, ws://HOST:PORT/PATH "
                     "or exec:COMMAND)")


class WebSocketStream(trio.abc.Stream):
    """A WebSocket connection seen as a byte stream: one binary message per send."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._ws.send_message(bytes(data))
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("websocket closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        return None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            msg = await self._ws.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        return msg if isinstance(msg, bytes) else msg.encode("utf-8")

    async def aclose(self) -> None:
        await self._ws.aclose()


class _ProcessStream(trio.abc.Stream):
    """A child process's stdin/stdout; closing it ends the process."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        self.process = process

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stdin.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stdin.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self._stdout.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self._stdin.aclose()
        with trio.move_on_after(2):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self._stdout.aclose()


async def open_link(link: Link, nursery: trio.Nursery, *,
                    connect_timeout: float = 10.0) -> trio.abc.Stream:
    """Connect; TransportError if the other end cannot be reached. A WebSocket's reader
    task runs in `nursery`."""
    try:
        if link.scheme == "tcp":
            return await trio.open_tcp_stream(link.host, link.port)
        if link.scheme == "exec":
            process = await trio.lowlevel.open_process(
                list(link.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            return _ProcessStream(process)
        with trio.fail_after(connect_timeout):
            return WebSocketStream(await _open_websocket(link, nursery))
    except _CONNECT_ERRORS as exc:
        raise cannot_reach(link, exc) from None
    except trio.TooSlowError:
        raise TransportError(f"cannot reach {link}: timed out") from None


async def _open_websocket(link: Link,
                          nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
    """A WebSocket over a TCP stream of our own, so that we can close it when the
    handshake fails: a server that refuses the upgrade (an HTTP server that is not
    ours) is reported by the connection's reader task in `nursery`, which cancels us
    here, and trio-websocket leaves the socket open."""
    stream = await trio.open_tcp_stream(link.host, link.port)
    host = link.host if link.port in (80, 443) else f"{link.host}:{link.port}"
    try:
        return await trio_websocket.wrap_client_stream(nursery, stream, host, link.path)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def stdio_stream() -> trio.abc.Stream:
    """This process's stdin and stdout as one stream (for `serve --stdio`)."""
    sys.stdout.flush()
    return trio.StapledStream(trio.lowlevel.FdStream(sys.stdout.fileno()),
                              trio.lowlevel.FdStream(sys.stdin.fileno()))
