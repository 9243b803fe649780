"""A minimal fake bot (outbound ESL server) that speaks raw ESL, for emulator tests."""

from __future__ import annotations

import gevent
from gevent import socket
from gevent.queue import Queue
from gevent.server import StreamServer

from esl_app.sim.emulator.wire import Frame, FrameParser


class FakeBot:
    """Accepts the emulator's connection; the test drives it command by command."""

    def __init__(self) -> None:
        self.conns: Queue[socket.socket] = Queue()
        self.server = StreamServer(("127.0.0.1", 0), self._accept)
        self.server.start()
        self.sock: socket.socket | None = None
        self.parser = FrameParser()
        self.frames: list[Frame] = []

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.server_port)

    def _accept(self, sock: socket.socket, addr: object) -> None:
        self.conns.put(sock)
        # keep the handler alive so StreamServer does not close the socket
        while not sock.closed:
            gevent.sleep(0.05)

    def accept(self, timeout: float = 5.0) -> None:
        self.sock = self.conns.get(timeout=timeout)

    def send(self, text: str | bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def read_frame(self, timeout: float = 5.0) -> Frame:
        assert self.sock is not None
        while not self.frames:
            self.sock.settimeout(timeout)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("emulator closed the socket")
            self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def read_raw_until_blank(self, timeout: float = 5.0) -> bytes:
        """Read the connect reply: a bare header block ended by a blank line."""
        assert self.sock is not None
        buf = b""
        self.sock.settimeout(timeout)
        while b"\n\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            buf += data
        end = buf.index(b"\n\n") + 2
        rest = buf[end:]
        if rest:
            self.frames.extend(self.parser.feed(rest))
        return buf[:end]

    def command(self, text: str) -> Frame:
        self.send(text)
        return self.read_frame()

    def next_event(self, name: str, timeout: float = 5.0) -> dict[str, str]:
        """Skip frames until an event called ``name``; return its decoded headers."""
        while True:
            fr = self.read_frame(timeout)
            if fr.content_type == "text/event-plain":
                hdrs, body = fr.event()
                if hdrs.get("Event-Name") == name:
                    if body is not None:
                        hdrs["_body"] = body
                    return hdrs

    def is_closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                self.read_frame(timeout)
        except EOFError:
            return True
        except TimeoutError:
            return False

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.server.stop(timeout=1)
