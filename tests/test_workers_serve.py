"""Pre-fork workers: two worker processes on shared ephemeral ports, driven by the emulator."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import gevent
import pytest
import websocket
from gevent import subprocess

from esl_app.media.server import SUBPROTOCOL
from esl_app.runtime.workers import READY_PREFIX, SOCKETS_PER_CALL, WorkerConfig, media_port_for
from esl_app.sim.emulator.outbound import EmulatedCall
from esl_app.sim.loadmeasure import _children
from esl_app.sim.testing import REPO_TENANTS, make_db

BOOT = ("import esl_app.__main__, sys\nfrom esl_app.runtime.workers import main\n"
        "sys.exit(main(sys.argv[1:]))")
SCALE = 0.02


class Server:
    def __init__(self, tmp_path, *extra: str, tenants_yaml: str | None = None,
                 workers: int = 2) -> None:
        tenants = REPO_TENANTS
        if tenants_yaml is not None:
            tenants = tmp_path / "tenants.yaml"
            tenants.write_text(tenants_yaml)
        make_db(tmp_path, tenants_yaml, days=14)
        from esl_app.db import database

        database().close()
        args = [sys.executable, "-c", BOOT, "--db", f"sqlite:///{tmp_path / 'ivr-test.db'}",
                "--tenants", str(tenants), "--workers", str(workers), "--esl", "127.0.0.1:0",
                "--media", "127.0.0.1:0", "--http", "127.0.0.1:0", *extra]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     cwd=str(tmp_path))
        self.lines: list[str] = []
        self.ready: dict = {}
        got = gevent.event.Event()

        def read() -> None:
            for raw in self.proc.stderr:
                line = raw.decode().rstrip()
                self.lines.append(line)
                if line.startswith(READY_PREFIX):
                    self.ready = json.loads(line[len(READY_PREFIX):])
                    got.set()
            got.set()

        gevent.spawn(read)
        assert got.wait(60) and self.ready, self.lines
        self.esl = tuple(self.ready["esl"])
        self.media_ports = [m[1] for m in self.ready["media"]]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    srv.stop()


class RecordingFork:
    """An AudioForkHook that only remembers where the bot asked FreeSWITCH to stream."""

    def start(self, url, mix, rate, metadata, call) -> None:
        self.url, self.metadata = url, metadata

    def stop(self) -> None:
        pass


def _forked_call(srv: Server):
    hooks: list[RecordingFork] = []

    def factory() -> RecordingFork:
        hooks.append(RecordingFork())
        return hooks[-1]

    call = EmulatedCall(srv.esl, "1001", time_scale=SCALE, audio_fork=factory).start()
    with gevent.Timeout(20):
        while not hooks:
            gevent.sleep(0.02)
    return call, hooks[0]


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def test_media_port_scheme():
    avoid = (8084, 8086)
    assert [media_port_for(8085, i, avoid) for i in range(4)] == [8085, 8087, 8088, 8089]
    assert media_port_for(9000, 2) == 9002
    assert media_port_for(0, 3) == 0
    assert WorkerConfig().workers >= 1


def test_two_workers_share_esl_and_own_their_media(server):
    assert len(server.ready["workers"]) == 2 and len(set(server.media_ports)) == 2
    seen: dict[int, tuple] = {}
    placed = []
    for _ in range(8):  # the kernel picks the worker; keep calling until both answered
        batch = [gevent.spawn(_forked_call, server) for _ in range(6)]
        gevent.joinall(batch, raise_error=True)
        for g in batch:
            call, hook = g.value
            placed.append(call)
            seen.setdefault(_port(hook.url), (call, hook))
        if len(seen) == 2:
            break
    assert set(seen) == set(server.media_ports), seen.keys()
    # a call's frames are accepted only by the worker that owns its ESL connection
    call, hook = next(iter(seen.values()))
    owner = _port(hook.url)
    other = next(p for p in server.media_ports if p != owner)
    ws = websocket.create_connection(f"ws://127.0.0.1:{other}/fork/{call.uuid}",
                                     subprotocols=[SUBPROTOCOL], timeout=5)
    opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1008  # policy: unknown call
    ws = websocket.create_connection(hook.url, subprotocols=[SUBPROTOCOL], timeout=5)
    ws.send(hook.metadata)
    ws.send_binary(bytes(320))
    ws.close()
    for c in placed:
        c.close()


def test_a_database_of_many_clinics_starts_its_workers(tmp_path):
    """Stored clinics too many to validate on the hub go to a thread pool, in the worker.

    The supervisor reads them too, before it forks: a pool it made then never answered
    in the child, and every worker hung before it took a call (a 100-clinic database).
    """
    from esl_app.config.tenants import _INLINE_PARSE_CHARS
    from esl_app.sim.loadcallers import synthetic_tenants

    text = synthetic_tenants(100)
    assert len(text) > 2 * _INLINE_PARSE_CHARS  # the stored JSON is validated off the hub
    srv = Server(tmp_path, tenants_yaml=text, workers=1)
    try:
        assert len(srv.ready["workers"]) == 1
    finally:
        assert srv.stop() == 0


def test_crashed_worker_is_replaced(server):
    victim = server.ready["workers"][0]
    os.kill(victim, signal.SIGKILL)
    with gevent.Timeout(20):
        while True:
            kids = _children(server.ready["pid"])
            if len(kids) == 2 and victim not in kids:
                break
            gevent.sleep(0.1)
    call = EmulatedCall(server.esl, "1001", time_scale=SCALE,
                        variables={"ivr_stt": "freeswitch"}).start()
    t = call.run_script(["I'd like to book an appointment", "#hangup"], timeout=20)
    assert t["answered"]
    assert any("restarting" in line for line in server.lines)


def test_sigterm_drains_live_calls_then_exits_zero(tmp_path):
    srv = Server(tmp_path, "--drain-timeout", "20")
    try:
        call = EmulatedCall(srv.esl, "1001", time_scale=SCALE,
                            variables={"ivr_stt": "freeswitch"}).start()
        assert call.wait_until_listening(20)
        srv.proc.send_signal(signal.SIGTERM)
        # the port closes (FreeSWITCH would fall back to the human line) ...
        refused = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not refused:
            try:
                probe = gevent.socket.create_connection(srv.esl, timeout=1)
                probe.close()
                gevent.sleep(0.1)
            except OSError:
                refused = True
        assert refused
        # ... while the live call carries on to the end of its booking
        t = call.run_script(["I'd like to book an appointment with Dr. Smith",
                             "next Tuesday morning", "the first one", "John Smith", "yes",
                             "yes", "no thanks", "#hangup"], timeout=20)
        assert t["variables"].get("ivr_outcome") == "booked", t["turns"]
        assert srv.proc.wait(timeout=30) == 0
    finally:
        srv.stop()


def test_a_taken_media_port_stops_the_server_before_forking(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]  # worker 0's private media port is the base itself
    make_db(tmp_path, days=1)
    from esl_app.db import database

    database().close()
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, "--db", f"sqlite:///{tmp_path / 'ivr-test.db'}",
         "--tenants", str(REPO_TENANTS), "--workers", "1", "--esl", "127.0.0.1:0",
         "--media", f"127.0.0.1:{port}", "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    taken.close()
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port} (--media): "
                                   "address already in use")


# A worker whose start-up fails (here: made to raise, as a port taken between the
# parent's check and the worker's bind would) is restarted, then the server gives up.
FAILING_BOOT = ("import esl_app.__main__, sys\nimport esl_app.runtime.workers as w\n"
                "def boom(*a, **k):\n    raise RuntimeError('cannot start')\n"
                "w._worker_main = boom\nsys.exit(w.main(sys.argv[1:]))")


def test_worker_that_cannot_start_stops_the_server(tmp_path):
    make_db(tmp_path, days=1)
    from esl_app.db import database

    database().close()
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_BOOT, "--db", f"sqlite:///{tmp_path / 'ivr-test.db'}",
         "--tenants", str(REPO_TENANTS), "--workers", "1", "--esl", "127.0.0.1:0",
         "--media", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 1
    assert "keeps failing" in proc.stderr


def test_workers_size_their_fd_tables_for_max_calls(server):
    """Each worker's table holds two sockets per call from the start (esl_app/runtime/fds.py)."""
    for pid in server.ready["workers"]:
        with open(f"/proc/{pid}/status") as fh:
            size = next(int(line.split()[1]) for line in fh if line.startswith("FDSize:"))
        assert size >= SOCKETS_PER_CALL * WorkerConfig().max_calls


def test_a_worker_says_why_its_event_loop_stood_still(server):
    """A stopped worker (SIGSTOP: a paused machine looks the same) logs the stop and its
    cause once it runs again (esl_app/runtime/hubwatch.py), and keeps serving."""
    pid = server.ready["workers"][0]
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.8)
    os.kill(pid, signal.SIGCONT)
    with gevent.Timeout(10):
        while not any("event loop stopped for" in line for line in server.lines):
            gevent.sleep(0.05)
    line = next(line for line in server.lines if "event loop stopped for" in line)
    assert "WARNING esl_app.runtime.hubwatch" in line
    assert "the whole process was not run" in line
    assert 600 <= int(line.split("event loop stopped for ")[1].split(" ms")[0]) <= 3000
    assert server.proc.poll() is None and pid in _children(server.proc.pid)
