"""LAN discovery: nodes of one network find each other by UDP multicast.

Every few seconds a node sends one datagram to the multicast group (time-to-live 1,
so it never leaves the local link):

    msgpack [b"p2pl-disc", 1, network_tag: bin 16, device: bin 32, tcp_port: int]

`network_tag` is a keyed BLAKE2b of the network id, so nodes of other networks can
tell the datagram is not for them without learning the id. A node that hears a peer
of its own network, and whose device key is the smaller of the two (so that only one
side dials), connects to it over TCP; the session's handshake then proves everything.
A datagram proves nothing by itself: a forged one costs a failed handshake at most.
Datagrams that do not decode are dropped; this is not a session, there is no one to
close.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgpack

__all__ = ["DISCOVERY_GROUP", "DISCOVERY_PORT", "Announcement", "announce", "listen"]

DISCOVERY_GROUP = "239.255.77.77"
DISCOVERY_PORT = 47700
_MAGIC = b"p2pl-disc"
_MAX_DATAGRAM = 256

log = logging.getLogger("p2p_ledger.node")


def network_tag(network_id: bytes) -> bytes:
    return hashlib.blake2b(network_id, digest_size=16, person=b"p2pl-discover").digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    tag: bytes
    device: bytes
    port: int

    def encode(self) -> bytes:
        return bytes(msgpack.packb([_MAGIC, 1, self.tag, self.device, self.port],
                                   use_bin_type=True))

    @classmethod
    def decode(cls, data: bytes) -> Announcement | None:
        """The announcement, or None for anything else (dropped)."""
        if len(data) > _MAX_DATAGRAM:
            return None
        try:
            msg = msgpack.unpackb(data, raw=False, max_bin_len=64, max_str_len=64,
                                  max_array_len=8, max_map_len=0)
        except (msgpack.UnpackException, ValueError, TypeError):
            return None
        if (not isinstance(msg, list) or len(msg) != 5 or msg[0] != _MAGIC or msg[1] != 1
                or type(msg[2]) is not bytes or len(msg[2]) != 16
                or type(msg[3]) is not bytes or len(msg[3]) != 32
                or type(msg[4]) is not int or not 0 < msg[4] < 65536):
            return None
        return cls(tag=msg[2], device=msg[3], port=msg[4])


async def announce(message: Announcement, *, interface: str = "0.0.0.0",
                   group: str = DISCOVERY_GROUP, port: int = DISCOVERY_PORT,
                   interval: float = 5.0) -> None:
    """Send `message` to the group every `interval` seconds, forever."""
    import trio  # here, so that the CLI can read DISCOVERY_PORT without loading trio

    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        data = message.encode()
        while True:
            try:
                await sock.sendto(data, (group, port))
            except OSError as exc:
                log.warning("discovery: cannot announce on %s: %s", interface, exc)
            await trio.sleep(interval)


async def listen(on_announcement: Callable[[Announcement, str], Awaitable[None] | None], *,
                 interface: str = "0.0.0.0", group: str = DISCOVERY_GROUP,
                 port: int = DISCOVERY_PORT) -> None:
    """Call `on_announcement(message, sender_host)` for every well-formed datagram."""
    import trio

    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        await sock.bind(("", port))
        membership = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        while True:
            data, sender = await sock.recvfrom(_MAX_DATAGRAM + 1)
            message = Announcement.decode(data)
            if message is None:
                log.debug("discovery: dropped a datagram from %s", sender[0])
                continue
            result = on_announcement(message, sender[0])
            if result is not None:
                await result
