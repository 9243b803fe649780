"""Connect the way FreeSWITCH does: an IP literal needs no resolver.

gevent's ``create_connection`` (and websocket-client's) send every host, even
``127.0.0.1``, through ``getaddrinfo`` on gevent's thread pool: a hand-off to a
real thread and back, two wake-ups that FreeSWITCH's ``socket`` app and
mod_audio_fork's client do not make (they resolve in the channel's own thread,
and an IP literal costs them microseconds). On a busy box those wake-ups put
milliseconds of the load generator's own scheduling into the call set-up time it
measures. Names still go through the resolver.

For the same reason a connection the kernel has already established when
``connect`` returns (loopback: the handshake runs inside the call) is used at once,
without waiting for a turn of the event loop to report it writable.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
from urllib.parse import urlsplit

from gevent import monkey
from gevent import socket as gsocket

__all__ = ["connect", "connect_ws"]


def connect(address: tuple[str, int], timeout: float | None = None) -> gsocket.socket:
    """A connected TCP socket to ``address``; no resolver round trip for an IP literal."""
    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return gsocket.create_connection((host, port), timeout=timeout)
    family = gsocket.AF_INET6 if ip.version == 6 else gsocket.AF_INET
    sock = gsocket.socket(family, gsocket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if not _connected_at_once(sock, (host, port)):
            sock.connect((host, port))  # gevent skips getaddrinfo for a parsed address
    except BaseException:
        sock.close()
        raise
    return sock


def _connected_at_once(sock: gsocket.socket, address: tuple[str, int]) -> bool:
    """Start a non-blocking connect; True if it is complete already (a poll that does not wait)."""
    raw = getattr(sock, "_sock", None)  # gevent's socket wraps a non-blocking one
    if raw is None:
        return False
    err = raw.connect_ex(address)
    if err in (0, errno.EISCONN):
        return True
    if err not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
        raise OSError(err, os.strerror(err))
    poller = monkey.get_original("select", "poll")()
    poller.register(raw.fileno(), select.POLLOUT)
    if not poller.poll(0):
        return False  # still in progress: gevent's connect waits for it
    err = raw.getsockopt(gsocket.SOL_SOCKET, gsocket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))
    return True


def connect_ws(url: str, timeout: float | None = None) -> gsocket.socket | None:
    """The TCP socket for a plain ``ws://`` URL, with Nagle off as libwebsockets sets it.

    None for any other scheme (``wss``: TLS stays with websocket-client).
    """
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        return None
    sock = connect((parts.hostname, parts.port or 80), timeout=timeout)
    sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
    return sock
