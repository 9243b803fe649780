"""A TCP probe of the bot's ESL port (``ivrctl health``, a load balancer) is not a call.

Before: each probe was recorded as a call with outcome ``error``, counted in
``ivr_calls_total{outcome="error",tenant="-"}`` and logged as a WARNING
"ESL failure: connection closed by peer".
"""

from __future__ import annotations

import logging
import socket
import struct

from fakes.telephony import make_services, start_server, wait_until

from esl_app.http import metrics


def _errors() -> float:
    return metrics.CALLS_TOTAL.labels("-", "error")._value.get()


def test_connect_and_close_is_not_a_call(caplog):
    server = start_server(make_services())
    before = _errors()
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                with socket.create_connection(server.address, timeout=5):
                    pass  # what ivrctl health does: the port opens, then it closes
            wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        server.stop(timeout=2)
    assert _errors() == before
    assert server.completed == 0 and server.last_transcripts == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if "ended outcome" in r.getMessage()]


def test_a_probe_that_leaves_our_connect_unread_is_not_a_call(caplog):
    """A probe that closes once the bot's ``connect`` has reached it, unread, makes its
    kernel answer with a reset (not a clean close). Seen in CI as ``ivrctl health``
    counted as a call on the real switch's test bot, whenever the probe was slow."""
    import time

    server = start_server(make_services())
    before = _errors()
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                sock = socket.create_connection(server.address, timeout=5)
                sock.settimeout(5)
                assert sock.recv(64).startswith(b"connect")  # our command has arrived
                time.sleep(0.05)  # the rest of it, if any, stays unread
                # l_onoff 1, l_linger 0: close with a reset, as a kernel does for unread data
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            wait_until(lambda: server.active_calls == 0 and server.connections == 0)
    finally:
        server.stop(timeout=2)
    assert _errors() == before
    assert server.completed == 0 and server.last_transcripts == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
