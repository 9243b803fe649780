"""EslSession subclasses greenswitch's OutboundSession and uses its private attributes.

setup.cfg pins the one greenswitch release they were read from; on any other, this
fails first and says which attribute moved, instead of calls failing in odd ways.
"""

from __future__ import annotations

import socket
from importlib.metadata import version

import greenswitch.esl as g

PINNED = "0.0.19"
# what esl_app/telephony/esl.py reads or writes of the base classes
BASE_ATTRIBUTES = ("_lingering", "_run", "_outbound_connected", "_process_events_greenlet",
                   "_receive_events_greenlet", "connected", "event_handlers", "session_data",
                   "sock", "sock_file")
BASE_METHODS = ("on_disconnect", "register_handle", "start_event_handlers")


def test_the_pinned_greenswitch_is_installed() -> None:
    assert version("greenswitch") == PINNED, (
        f"greenswitch {version('greenswitch')} is installed; EslSession was written against "
        f"{PINNED}: check the attributes below against its source, then move the pin")


def test_the_base_session_has_what_eslsession_relies_on() -> None:
    a, b = socket.socketpair()
    try:
        session = g.OutboundSession(("127.0.0.1", 0), a)
        missing = [n for n in BASE_ATTRIBUTES if not hasattr(session, n)]
        missing += [n for n in BASE_METHODS if not callable(getattr(session, n, None))]
        assert missing == []
    finally:
        a.close()
        b.close()
