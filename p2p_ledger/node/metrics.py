"""Prometheus metrics and a health check for a running node (`serve --metrics`).

The figures are read from the node when a scrape arrives, by a collector registered
in a registry of the node's own (`metrics_registry`), and written in the exposition
format by prometheus_client (`generate_latest`): nothing here formats metrics text.
They are served over HTTP by a small trio server on the node's own thread, so a
scrape reads the node's tables and its SQLite connection between two of its steps and
never from another thread (prometheus_client's `start_http_server` would run the
collector on a thread of its own, beside the node's writes).

Paths: `/metrics` (the figures) and `/healthz` ("ok", 200, while the node answers and
its store reads; 503 and the reason otherwise). The server reads one request of at most
8 KiB within 5 s and closes the connection after each answer: it is meant for a
scraper on the loopback or a private network, never for the open internet.

Counters count since this node started; rates (records stored per second) are the
scraper's `rate()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ..core.ids import device_id
from ..errors import StoreError
from .node import Node
from .verifier import shared_verifier

__all__ = ["NodeCollector", "metrics_registry", "serve_metrics"]

log = logging.getLogger("p2p_ledger.node")
MAX_REQUEST = 8 << 10
REQUEST_TIMEOUT = 5.0


class NodeCollector(Collector):
    """Every figure of one node, read when collected."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[InfoMetricFamily | GaugeMetricFamily | CounterMetricFamily]:
        node, counters = self.node, self.node.counters
        store = node._store
        totals = store.totals()
        yield InfoMetricFamily("p2p_ledger_node", "this node", value={
            "device": device_id(node.device), "role": node.role,
            "network": node.replica.network_id.hex()[:16]})
        yield GaugeMetricFamily("p2p_ledger_records_held", "records in the store",
                                value=totals.records)
        stored = CounterMetricFamily(
            "p2p_ledger_records_stored", "records stored since start, by where they came "
            "from: a peer's session, or another process on this home (pay, import)",
            labels=["source"])
        for source in ("peer", "home"):
            stored.add_metric([source], counters.records_stored.get(source, 0))
        yield stored
        yield _by_reason("p2p_ledger_records_refused", "records refused (not stored), by "
                         "problem", counters.records_refused)
        yield _by_reason("p2p_ledger_frames_refused", "sessions closed on a peer's bad "
                         "input (a malformed or oversized frame, flooding, a failed "
                         "handshake ...), by the kind of reason", counters.frames_refused)
        sessions = GaugeMetricFamily("p2p_ledger_sessions", "sessions running now, by "
                                     "protocol state and the peer's role",
                                     labels=["state", "role"])
        counts: dict[tuple[str, str], int] = {}
        live_in = live_out = 0
        for peer in list(node.peers.values()):
            s = peer.session
            key = (s.state.value, s.peer_role or "unknown")
            counts[key] = counts.get(key, 0) + 1
            live_in += s.bytes_received
            live_out += s.bytes_sent
        for (state, role), n in sorted(counts.items()):
            sessions.add_metric([state, role], n)
        yield sessions
        yield CounterMetricFamily("p2p_ledger_received_bytes", "bytes received from peers",
                                  value=counters.bytes_in + live_in)
        yield CounterMetricFamily("p2p_ledger_sent_bytes", "bytes sent to peers",
                                  value=counters.bytes_out + live_out)
        yield CounterMetricFamily("p2p_ledger_sessions_ended", "sessions that have ended",
                                  value=counters.sessions_ended)
        lag = GaugeMetricFamily("p2p_ledger_peer_lag_records", "records stored here since "
                                "the last time in sync with the peer", labels=["peer"])
        for device, _, _, _, synced, _ in store.peers():
            if synced is not None:
                lag.add_metric([device_id(device)], max(0, totals.records - synced))
        yield lag
        replica = node.replica
        yield GaugeMetricFamily("p2p_ledger_pending_records", "records waiting for their "
                                "causal past", value=replica.pending_count)
        yield GaugeMetricFamily("p2p_ledger_pending_bytes", "their size by pending_cost",
                                value=replica.pending_bytes)
        verifier = shared_verifier()
        yield GaugeMetricFamily("p2p_ledger_verifier_queue", "batches sent to the signature "
                                "checker process and not answered yet", value=verifier.queued)
        yield CounterMetricFamily("p2p_ledger_verifier_records", "records sent to the "
                                  "signature checker process", value=verifier.records_sent)
        yield GaugeMetricFamily("p2p_ledger_verifier_up", "1 while signatures are checked in "
                                "the child process, 0 once checked in the node instead",
                                value=0 if verifier.broken else 1)


def _by_reason(name: str, doc: str, table: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, n in sorted(table.items()):
        family.add_metric([reason], n)
    return family


def metrics_registry(node: Node) -> CollectorRegistry:
    """A registry with this node's collector only (not the process-wide default, so
    that nodes in one process, as in tests, do not mix)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def _answer(node: Node, registry: CollectorRegistry, request: bytes) -> bytes:
    line = request.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = line.partition(" ")
    path = rest.split(" ", 1)[0].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response(405, "Method Not Allowed", b"GET only\n")
    if path == "/metrics":
        try:
            body = generate_latest(registry)
        except StoreError as exc:
            return _response(503, "Service Unavailable", f"store: {exc}\n".encode())
        return _response(200, "OK", body, CONTENT_TYPE_LATEST)
    if path == "/healthz":
        try:
            node._store.max_order()
        except StoreError as exc:
            return _response(503, "Service Unavailable", f"store: {exc}\n".encode())
        return _response(200, "OK", b"ok\n")
    return _response(404, "Not Found", b"/metrics or /healthz\n")


def _response(code: int, why: str, body: bytes,
              content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (f"HTTP/1.1 {code} {why}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


async def _handle(node: Node, registry: CollectorRegistry, stream: trio.SocketStream) -> None:
    async with stream:
        request = b""
        with trio.move_on_after(REQUEST_TIMEOUT):
            while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                try:
                    data = await stream.receive_some(MAX_REQUEST)
                except (trio.BrokenResourceError, OSError):
                    return
                if not data:
                    break
                request += data
        if not request:
            return
        answer = _answer(node, registry, request)
        if request.startswith(b"HEAD "):
            answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        try:
            await stream.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            log.debug("metrics: the scraper went away before the answer")


async def serve_metrics(node: Node, host: str, port: int, *,
                        task_status: trio.TaskStatus[list[trio.SocketListener]]
                        = trio.TASK_STATUS_IGNORED) -> None:
    """Serve /metrics and /healthz on HOST:PORT until cancelled (`nursery.start`
    returns the listeners, whose addresses give the port when 0 was asked)."""
    registry = metrics_registry(node)

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(node, registry, stream)

    await trio.serve_tcp(handler, port, host=host, task_status=task_status)
