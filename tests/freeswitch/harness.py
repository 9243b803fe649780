"""Drive a real FreeSWITCH from tests: the switch, an inbound ESL client, `ivr serve`, callers.

Why a harness of its own: the emulator is what the suite runs fast against, and the
real switch is the truth it is held to. Every call here goes through FreeSWITCH's
own dialplan (rendered by ``ivr dialplan render``), outbound socket, mod_audio_fork
and media paths into a real ``ivr serve`` subprocess.

Isolation: a test run renders the dialplan into a context of its own
(``ivrtest_<tag>``) and adds one public-context extension that sends
``ivrtest<tag>-<DID>`` there, so runs never touch the box's ``public`` DIDs or each
other. The caller is the a-leg of a call FreeSWITCH places itself (mod_loopback, or
SIP through mod_sofia to its own profile); the test plays the caller's lines into
that leg with ``uuid_broadcast`` once the bot has stopped talking, and reads what the
bot said from its playbacks (each prompt WAV carries its text).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from esl_app.media.pcm import wav_text
from esl_app.sim.emulator.wire import FrameParser

ROOT = Path(__file__).resolve().parents[2]
PREFIX = Path(os.environ.get("IVR_FREESWITCH_PREFIX", "/opt/freeswitch"))
FSCTL = Path(os.environ.get("IVR_FREESWITCH_CTL", "/opt/fs-test/fsctl.sh"))
CONF = PREFIX / "etc" / "freeswitch"
ESL_ADDR = ("127.0.0.1", 8021)
ESL_PASSWORD = os.environ.get("FS_ESL_PASSWORD", "ClueCon")
IVR = str(Path(sys.executable).with_name("ivr"))
SKIP_REASON = ("no FreeSWITCH here: install FreeSWITCH 1.10 with mod_audio_fork, mod_loopback "
               "and mod_sofia (docs/freeswitch.md), or the test kit (./dev test installs it "
               "when ../shared/freeswitch/install.sh exists)")


def available() -> bool:
    """A FreeSWITCH this harness can start and configure."""
    return (PREFIX / "bin" / "freeswitch").exists() and FSCTL.exists() and CONF.is_dir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the switch ------------------------------------------------------------------------

class Switch:
    """Start/stop the kit's FreeSWITCH; stops it only if this run started it."""

    def __init__(self) -> None:
        self.started_here = False

    def running(self) -> bool:
        return subprocess.run([str(FSCTL), "status"], capture_output=True,
                              timeout=20).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        out = subprocess.run([str(FSCTL), "start"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"FreeSWITCH did not start: {out.stdout}{out.stderr}")
        self.started_here = True

    def stop(self) -> None:
        if self.started_here:
            subprocess.run([str(FSCTL), "stop"], capture_output=True, timeout=60)


# -- inbound ESL -----------------------------------------------------------------------

@dataclass
class Event:
    """One event as the test saw it: decoded headers, body, local arrival time."""

    headers: dict[str, str]
    body: str | None
    at: float

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def uuid(self) -> str:
        return self.headers.get("Unique-ID", "")

    @property
    def fs_time(self) -> float:
        """FreeSWITCH's own clock for the event, in seconds (Event-Date-Timestamp is µs)."""
        return int(self.headers.get("Event-Date-Timestamp", "0")) / 1e6


class InboundEsl:
    """A small inbound-ESL client: ordered replies, and every event kept in a log.

    The log is what tests wait on (``wait_for``): events are never lost between a
    command and the wait that follows it, whatever order they arrive in.
    """

    EVENTS = ("CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE "
              "CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_BRIDGE CHANNEL_UNBRIDGE DTMF "
              "CUSTOM mod_audio_fork::connect mod_audio_fork::disconnect "
              "mod_audio_fork::connect_failed")

    def __init__(self, addr: tuple[str, int] = ESL_ADDR, password: str = ESL_PASSWORD) -> None:
        self.addr, self.password = addr, password
        self.events: list[Event] = []
        self.owned: set[str] = set()  # channels our callers made (other runs share the switch)
        self._changed = gevent.event.Event()
        self._replies: gevent.queue.Queue = gevent.queue.Queue()
        self._lock = gevent.lock.Semaphore()
        self._sock: socket.socket | None = None
        self._reader: gevent.Greenlet | None = None
        self.notices: list[str] = []  # why FreeSWITCH closed on us (disconnect-notice bodies)
        self.reconnects = 0

    def connect(self) -> InboundEsl:
        self._open()
        return self

    def _read(self) -> None:
        parser = FrameParser()
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._replies.put(None)
                return
            for frame in parser.feed(data):
                if frame.content_type == "text/event-plain":
                    headers, body = frame.event()
                    self.events.append(Event(headers, body, time.monotonic()))
                    self._changed.set()
                elif frame.content_type in ("command/reply", "api/response", "auth/request"):
                    self._replies.put(frame)
                elif frame.content_type == "text/disconnect-notice":
                    self.notices.append((frame.body or b"").decode("utf-8", "replace").strip())

    def _command(self, line: str, timeout: float = 15.0) -> Any:
        assert self._sock is not None
        with self._lock:
            frame = self._send(line, timeout)
            if frame is None:
                # The test's own connection, not the bot's: once seen closed between two
                # tests of a CI run. Say why, and go on over a new one if the switch lives.
                why = self.notices[-1] if self.notices else "no disconnect notice"
                sys.stderr.write(f"harness: FreeSWITCH closed the inbound ESL connection "
                                 f"({why}); reconnecting\n")
                running = Switch().running()
                if self.reconnects >= 3 or not running:
                    raise ConnectionError(f"FreeSWITCH closed the inbound ESL connection "
                                          f"({why}); switch running: {running}")
                self.reconnects += 1
                self._open()
                frame = self._send(line, timeout)
        if frame is None:
            raise ConnectionError("FreeSWITCH closed the inbound ESL connection again")
        return frame

    def _send(self, line: str, timeout: float) -> Any:
        assert self._sock is not None
        try:
            self._sock.sendall(line.encode() + b"\n\n")
        except OSError:
            return None
        return self._replies.get(timeout=timeout)

    def _open(self) -> None:
        """Connect (again), authenticate and subscribe to :data:`EVENTS`."""
        if self._sock is not None:
            self._sock.close()
        self._sock = socket.create_connection(self.addr, timeout=10)
        self._sock.settimeout(None)
        self._replies = gevent.queue.Queue()
        self._reader = gevent.spawn(self._read)
        first = self._replies.get(timeout=10)
        assert first is not None and first.content_type == "auth/request", first
        for line in (f"auth {self.password}", f"event plain {self.EVENTS}"):
            reply = self._send(line, 15)
            assert reply is not None and (reply.header("Reply-Text") or "").startswith("+OK"), \
                (line.split()[0], reply and reply.headers)

    def api(self, command: str, timeout: float = 15.0) -> str:
        """``api <command>``: the body FreeSWITCH answered with."""
        frame = self._command(f"api {command}", timeout)
        return (frame.body or b"").decode("utf-8", "replace")

    def wait_for(self, pred: Callable[[Event], bool], timeout: float, start: int = 0,
                 what: str = "event") -> Event:
        """The first logged event from index ``start`` on that matches; waits for it."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                ev = self.events[i]
                i += 1
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout:g}s")
            self._changed.clear()
            if i < len(self.events):
                continue
            self._changed.wait(min(left, 0.5))

    def ours(self, start: int) -> set[str]:
        """Channels created since event ``start`` by this run: our callers' legs, and every
        channel whose creation names one of them (a bridge's outbound leg, a loopback pair).
        """
        creates = [e for e in self.events[start:] if e.name == "CHANNEL_CREATE"]
        related = {e.uuid for e in creates if e.uuid in self.owned}
        grew = True
        while grew:
            grew = False
            for e in creates:
                if e.uuid not in related and any(v in related for v in e.headers.values()):
                    related.add(e.uuid)
                    grew = True
        return related

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.sendall(b"exit\n\n")
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.kill(block=False)


# -- dialplan --------------------------------------------------------------------------

class DialplanInstall:
    """The rendered dialplan in a context of this run, plus its public-context entry."""

    def __init__(self, esl: InboundEsl, tag: str) -> None:
        self.esl = esl
        self.tag = tag
        self.files: list[Path] = []

    def context(self, suffix: str = "") -> str:
        return f"ivrtest_{self.tag}{suffix}"

    def sip_user(self, did: str, suffix: str = "") -> str:
        """The SIP request user that reaches ``did`` in this run's context."""
        return f"ivrtest{self.tag}{suffix.replace('_', '')}-{did}"

    def install(self, tenants: Path, bot: str, suffix: str = "") -> None:
        """Render the dialplan for ``bot`` into context ``ivrtest_<tag><suffix>``, reload."""
        ctx = self.context(suffix)
        folder = CONF / "dialplan" / ctx
        folder.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([IVR, "dialplan", "render", "--tenants", str(tenants), "--bot", bot,
                              "--context", ctx, "--out", str(folder / "ivr.xml")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        wrapper = CONF / "dialplan" / f"{ctx}.xml"
        wrapper.write_text(f'<include>\n  <context name="{ctx}">\n'
                           f'    <X-PRE-PROCESS cmd="include" data="{ctx}/*.xml"/>\n'
                           "  </context>\n</include>\n")
        entry = CONF / "dialplan" / "public" / f"{ctx}.xml"
        prefix = self.sip_user("", suffix)
        entry.write_text(
            "<include>\n"
            f'  <extension name="{ctx}_entry">\n'
            f'    <condition field="destination_number" expression="^{re.escape(prefix)}(.+)$">\n'
            f'      <action application="transfer" data="$1 XML {ctx}"/>\n'
            "    </condition>\n  </extension>\n</include>\n")
        self.files += [folder, wrapper, entry]
        self.reload()

    def reload(self) -> None:
        reply = self.esl.api("reloadxml")
        assert reply.startswith("+OK"), reply

    def remove(self) -> None:
        for path in self.files:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.files.clear()
        self.reload()


# -- the bot ---------------------------------------------------------------------------

class Bot:
    """``ivr serve`` in a subprocess, on free ports, with its own database and prompts."""

    def __init__(self, workdir: Path, tenants: Path, days: int = 14) -> None:
        self.workdir = workdir
        self.tenants = tenants
        self.esl_port, self.media_port, self.http_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, "IVR_DATABASE_URL": f"sqlite:///{workdir / 'ivr.db'}",
                    "IVR_TENANTS": str(tenants)}
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "serve.log"
        self.days = days

    @property
    def esl(self) -> str:
        return f"127.0.0.1:{self.esl_port}"

    def ivr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([IVR, *args], capture_output=True, text=True, env=self.env,
                             cwd=self.workdir, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"ivr {' '.join(args)} failed: {out.stderr}")
        return out

    def prepare(self) -> None:
        self.ivr("db", "init")
        self.ivr("tenants", "import")
        for tenant in json.loads(self.ivr("tenants", "list", "--json").stdout):
            self.ivr("slots", "generate", "--tenant", tenant["id"], "--days", str(self.days))

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - the subprocess owns it
        self.proc = subprocess.Popen(
            [IVR, "serve", "--esl", self.esl, "--media", f"127.0.0.1:{self.media_port}",
             "--http", f"127.0.0.1:{self.http_port}", "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ivr ready " in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"ivr serve did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the server and its workers: a crash, not a drain."""
        if self.proc is None:
            return
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        for pid in (*kids, str(self.proc.pid)):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.proc = None

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples (all label sets) from /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def calls(self) -> list[dict[str, Any]]:
        return json.loads(self.ivr("calls", "list", "--json").stdout)

    def call(self, call_id: str) -> dict[str, Any]:
        return json.loads(self.ivr("calls", "show", call_id, "--json").stdout)

    def wait_call_record(self, call_id: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            out = self.ivr("calls", "show", call_id, "--json", check=False)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no call record for {call_id}: {out.stderr}")
            time.sleep(0.2)

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        return [ln for ln in text.splitlines()
                if " ERROR " in ln or "Traceback" in ln or " CRITICAL " in ln]


# -- callers ---------------------------------------------------------------------------

_SPEECH_CACHE: dict[tuple[str, str], Path] = {}
_SPEECH_DIR = Path(tempfile.mkdtemp(prefix="ivr-fs-caller-"))


def speech_wav(text: str, voice: str = "en-us", lead_ms: int = 0) -> Path:
    """The caller's line as an 8 kHz mono WAV (espeak-ng, resampled by sox)."""
    key = (text, f"{voice}:{lead_ms}")
    if key in _SPEECH_CACHE:
        return _SPEECH_CACHE[key]
    out = _SPEECH_DIR / f"{uuidlib.uuid4().hex}.wav"
    raw = out.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True,
                   capture_output=True, timeout=30)
    pad = ["pad", f"{lead_ms / 1000:.3f}", "0"] if lead_ms else []
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out), *pad],
                   check=True, capture_output=True, timeout=30)
    raw.unlink()
    _SPEECH_CACHE[key] = out
    return out


def speech_onset_ms(path: Path, threshold: float = 0.02) -> float:
    """Where speech starts in a 16-bit mono WAV: the first 10 ms window over ``threshold``."""
    import array
    import wave

    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    win = rate // 100
    for i in range(0, len(samples) - win, win):
        chunk = samples[i:i + win]
        rms = (sum(s * s for s in chunk) / win) ** 0.5 / 32768.0
        if rms > threshold:
            return i * 1000.0 / rate
    return 0.0


_PLAYS = ("playback", "speak")


@dataclass
class Caller:
    """One call into the bot; the test is the caller (the a-leg), the bot the b-leg."""

    esl: InboundEsl
    plan: DialplanInstall
    did: str
    via: str = "loopback"  # loopback | sip
    caller_id: str = "+15550100100"
    suffix: str = ""
    a: str = ""
    b: str = ""
    heard: list[str] = field(default_factory=list)  # what the bot said, in order
    start: int = 0  # index into esl.events where this call began
    _cursor: int = 0  # how far wait_bot_quiet has read esl.events
    _running: set[str] = field(default_factory=set)  # the bot's apps running now

    def dial(self, timeout: float = 20.0) -> Caller:
        self.start = self._cursor = len(self.esl.events)
        self.a = str(uuidlib.uuid4())
        vars_ = (f"origination_uuid={self.a},origination_caller_id_number={self.caller_id},"
                 f"origination_caller_id_name=Test,ignore_early_media=true,"
                 f"originate_timeout={int(timeout)}")
        if self.via == "sip":
            dest = f"sofia/internal/{self.plan.sip_user(self.did, self.suffix)}@127.0.0.1:5060"
        else:
            dest = f"loopback/{self.did}/{self.plan.context(self.suffix)}"
        self.esl.owned.add(self.a)
        reply = self.esl.api(f"originate {{{vars_}}}{dest} &park()", timeout=timeout + 5)
        if not reply.startswith("+OK"):
            raise RuntimeError(f"originate {dest}: {reply.strip()}")
        if self.via == "loopback":
            self.b = self.esl.api(f"uuid_getvar {self.a} other_loopback_leg_uuid").strip()
        else:
            call_id = self.esl.api(f"uuid_getvar {self.a} sip_call_id").strip()
            ev = self.esl.wait_for(
                lambda e: e.get("variable_sip_call_id") == call_id and e.uuid != self.a,
                10, self.start, "the SIP b-leg")
            self.b = ev.uuid
        self.esl.owned.update((self.a, self.b))
        return self

    # what the bot does
    def bot_events(self, start: int | None = None) -> list[Event]:
        return [e for e in self.esl.events[self.start if start is None else start:]
                if e.uuid == self.b]

    def wait_bot_quiet(self, quiet: float = 0.9, timeout: float = 30.0) -> list[str]:
        """Wait until the bot has said something new and then stayed silent ``quiet`` s.

        Returns the sentences it said since the last call (empty only if the call
        ended). A ringing transfer (``bridge``) counts as the bot still busy: it is not
        waiting for the caller.
        """
        deadline = time.monotonic() + timeout
        said: list[str] = []
        last_change = time.monotonic()
        while True:
            evs = self.esl.events
            while self._cursor < len(evs):
                ev = evs[self._cursor]
                self._cursor += 1
                if ev.uuid != self.b:
                    continue
                if ev.name == "CHANNEL_HANGUP_COMPLETE":
                    self.heard += said
                    return said
                app = ev.get("Application")
                if app not in _PLAYS and app != "bridge":
                    continue
                if ev.name == "CHANNEL_EXECUTE":
                    self._running.add(ev.get("Application-UUID"))
                    if app in _PLAYS:
                        said.append(self._text(ev))
                elif ev.name == "CHANNEL_EXECUTE_COMPLETE":
                    self._running.discard(ev.get("Application-UUID"))
                last_change = ev.at
            now = time.monotonic()
            if said and not self._running and now - last_change >= quiet:
                self.heard += said
                return said
            if now > deadline:
                raise TimeoutError(f"the bot did not say something and stop within "
                                   f"{timeout:g}s; said {said}")
            gevent.sleep(0.05)

    @staticmethod
    def _text(ev: Event) -> str:
        data = ev.get("Application-Data")
        if ev.get("Application") == "speak":
            return data.split("|", 2)[-1]
        try:
            return wav_text(data) or ""
        except OSError:
            return ""

    # what the caller does
    def say(self, text: str, *, wait: bool = True, lead_ms: int = 0) -> tuple[Event, Path]:
        """Play the caller's line into the call; returns the a-leg's playback start event."""
        wav = speech_wav(text, lead_ms=lead_ms)
        mark = len(self.esl.events)
        reply = self.esl.api(f"uuid_broadcast {self.a} {wav} aleg")
        assert reply.startswith("+OK"), reply
        started = self.esl.wait_for(
            lambda e: e.uuid == self.a and e.name == "CHANNEL_EXECUTE"
            and e.get("Application") == "playback" and e.get("Application-Data") == str(wav),
            10, mark, "the caller's playback")
        if wait:
            self.esl.wait_for(
                lambda e: e.uuid == self.a and e.name in ("CHANNEL_EXECUTE_COMPLETE",
                                                          "CHANNEL_HANGUP_COMPLETE")
                and (e.name != "CHANNEL_EXECUTE_COMPLETE"
                     or e.get("Application-Data") == str(wav)),
                60, mark, "the end of the caller's line")
        return started, wav

    def dtmf(self, digits: str) -> None:
        reply = self.esl.api(f"uuid_send_dtmf {self.a} {digits}")
        assert reply.startswith("+OK"), reply

    def hangup(self) -> None:
        self.esl.api(f"uuid_kill {self.a} NORMAL_CLEARING")

    def wait_ended(self, timeout: float = 30.0) -> Event:
        """The bot's leg is gone (CHANNEL_HANGUP_COMPLETE)."""
        return self.esl.wait_for(lambda e: e.uuid == self.b
                                 and e.name == "CHANNEL_HANGUP_COMPLETE",
                                 timeout, self.start, "the bot leg's hang-up")

    def ended(self) -> bool:
        return any(e.name == "CHANNEL_HANGUP_COMPLETE" for e in self.bot_events())


# -- barge-in --------------------------------------------------------------------------

BARGE_LINE = "I'd like to book an appointment please"


@dataclass
class BargeIn:
    """One barge-in as FreeSWITCH's own clock saw it."""

    reaction_ms: float  # caller's speech onset → the interrupted playback's completion
    reaction_rx_ms: float  # the same between the two events' arrival here (µs resolution)
    played_ms: float  # how long the bot's prompt had played when it stopped
    prompt_ms: float  # how long the prompt would have played uninterrupted


def barge_in_once(esl: InboundEsl, plan: DialplanInstall, did: str = "1001",
                  after_s: float = 0.6) -> BargeIn:
    """Call, talk over the greeting ``after_s`` into it, measure, hang up.

    Speech onset = the caller leg's playback start (CHANNEL_EXECUTE) plus where speech
    begins in the WAV; the end = CHANNEL_EXECUTE_COMPLETE of the bot's interrupted
    playback. Both are FreeSWITCH's Event-Date-Timestamp, so neither our clock nor our
    event delivery is in the figure; that clock ticks in 20 ms steps (FreeSWITCH's
    timer thread), so the same span is also taken between the two events' arrival
    here, which both travel the same inbound ESL connection.
    """
    import wave

    call = Caller(esl, plan, did).dial()
    try:
        greet = esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE"
                             and e.get("Application") == "playback", 20, call.start,
                             "the greeting")
        gevent.sleep(after_s)
        started, wav = call.say(BARGE_LINE, wait=False)
        onset = started.fs_time + speech_onset_ms(wav) / 1000.0
        done = esl.wait_for(lambda e: e.uuid == call.b and e.name == "CHANNEL_EXECUTE_COMPLETE"
                            and e.get("Application-UUID") == greet.get("Application-UUID"),
                            20, call.start, "the end of the interrupted greeting")
        with wave.open(greet.get("Application-Data")) as w:
            prompt_ms = w.getnframes() * 1000.0 / w.getframerate()
        onset_rx = started.at + speech_onset_ms(wav) / 1000.0
        return BargeIn((done.fs_time - onset) * 1000.0, (done.at - onset_rx) * 1000.0,
                       (done.fs_time - greet.fs_time) * 1000.0, prompt_ms)
    finally:
        call.hangup()
        call.wait_ended()
