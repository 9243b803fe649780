"""Socket chores shared by the servers (the HTTP API and the audio-fork server)."""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["refuse"]


def refuse(sock: Any, response: bytes) -> None:
    """Send a whole refusal and close, without a greenlet or a wait.

    A fresh socket's send buffer takes ``response`` at once; what the client already
    sent is read before closing, because closing over unread data sends an RST.
    """
    try:
        sock.settimeout(0.0)
        sock.send(response)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(65536)
    except OSError:
        pass
    finally:
        sock.close()
