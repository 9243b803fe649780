"""``ivr simulate``: one emulated phone call into the bot, scripted, piped or interactive.

The FreeSWITCH emulator dials the outbound ESL server exactly as FreeSWITCH
would, so a simulated call exercises the same code as a real one. With no
``--server`` an in-process server is started on an ephemeral port. In text
mode the call carries ``ivr_stt=freeswitch`` (as a dialplan ``set`` would), so
the bot uses FreeSWITCH-side recognition and the caller's lines arrive as
``DETECTED_SPEECH`` results.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import gevent
from gevent.queue import Empty

from esl_app.config.tenants import TenantSet
from esl_app.runtime.wiring import build_services
from esl_app.telephony.server import EslServer, TenantSource

__all__ = [
    "LocalBot",
    "SimCall",
    "prepare_database",
    "run_interactive",
    "run_lines",
    "start_local_bot",
]

log = logging.getLogger(__name__)


def prepare_database(db_url: str, tenants: TenantSet, days: int = 14, *,
                     must_exist: bool = False, keep_stored: bool = False) -> TenantSet:
    """Open the database and make sure it has clinics with the next ``days`` of slots.

    ``must_exist``: refuse a SQLite file that is not there (``ivr simulate``: only
    ``ivr db init`` creates an operator's database). ``keep_stored``: a database that
    already holds clinics is the source, as for ``ivr serve``: they are returned as
    they are, and neither the file's clinics nor new slots are written into it (a
    simulated call must not re-provision a live database). Otherwise ``tenants`` are
    imported and their slots topped up. Returns the clinics the bot should serve.
    """
    from esl_app.db import init_db
    from esl_app.scheduling.provisioning import import_tenants, load_tenant_set

    init_db(db_url, must_exist=must_exist, make_dirs=not must_exist)
    if keep_stored:
        stored = load_tenant_set()
        if len(stored):
            return stored
    from esl_app.scheduling.slots import generate_slots

    import_tenants(tenants)
    for tenant in tenants:
        generate_slots(tenant.id, days)
    return tenants


@dataclass
class LocalBot:
    """An in-process ``ivr serve`` (ESL only; plus the media server in audio mode)."""

    server: EslServer
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: Any = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def stop(self) -> None:
        self.server.stop(timeout=5)
        if self.media is not None:
            try:
                self.media.stop()
            except Exception:
                log.debug("media server stop failed", exc_info=True)


def start_local_bot(tenants: TenantSet | TenantSource, *, record: bool = True,
                    audio: bool = False, providers: Any = None) -> LocalBot:
    """Start the bot in-process on an ephemeral port; transcripts are kept by call id.

    ``providers`` is a :class:`~esl_app.runtime.wiring.ProviderCache` to use
    instead of the default one (tests inject agents with stubbed SDK clients).
    """
    source = tenants if isinstance(tenants, TenantSource) else TenantSource(tenants)
    transcripts: dict[str, dict[str, Any]] = {}

    def on_event(name: str, data: dict[str, Any]) -> None:
        if name == "call_ended" and data.get("call_id"):
            transcripts[data["call_id"]] = data

    audio_source_for = None
    media = None
    if audio:
        from esl_app.runtime.wiring import start_media_for_calls

        media, audio_source_for = start_media_for_calls()
    services = build_services(source, record=record, on_event=on_event,
                              listen_mode=None if audio else "text",
                              audio_source_for=audio_source_for, providers=providers)
    server = EslServer(services, "127.0.0.1", 0).start()
    return LocalBot(server, transcripts, media)


class SimCall:
    """One emulated call with a caller that speaks only when the bot listens."""

    def __init__(self, address: tuple[str, int], did: str, caller: str = "+15550100100", *,
                 audio: bool = False, time_scale: float = 0.25, **kw: Any) -> None:
        from esl_app.sim.emulator.outbound import EmulatedCall

        variables = dict(kw.pop("variables", None) or {})
        audio_fork = kw.pop("audio_fork", None)
        if not audio:
            variables.setdefault("ivr_stt", "freeswitch")
        elif audio_fork is None:
            audio_fork = default_audio_fork()
        self.call = EmulatedCall(address, did, caller, time_scale=time_scale,
                                 variables=variables, audio_fork=audio_fork, **kw)
        self.time_scale = time_scale

    def start(self) -> SimCall:
        self.call.start()
        return self

    def events(self, timeout: float = 0.05) -> Iterator[dict[str, Any]]:
        """Out-events available now (``bot_said``, ``listening``, ``transfer``, ``call_ended``)."""
        while True:
            try:
                yield self.call.events.get(timeout=timeout)
            except Empty:
                return

    def act(self, line: str, *, wait: float = 60.0) -> bool:
        """Perform one caller line once the bot listens; False when the call is over."""
        line = line.strip()
        if not line:
            return not self.call.ended
        if self.call.ended:
            return False
        if line.startswith("#hangup"):
            # after the bot stops talking, like every line; "#hangup now" cuts it off
            if line != "#hangup now":
                self.call.wait_until_listening(wait)
            self.call.hang_up()
            return False
        if line.startswith("#silence"):
            try:
                secs = float(line.split()[1])
            except (IndexError, ValueError):
                secs = 1.0
            self.call.channel._caller_input()
            gevent.sleep(secs)  # silence is wall-clock: the bot's timers are too
            return not self.call.ended
        if not self.call.wait_until_listening(wait):
            return False
        if line.startswith("#dtmf"):
            self.call.press(line[5:].strip())
        else:
            self.call.say(line)
        return True

    def finish(self, *, hang_up: bool = True, wait: float = 60.0) -> None:
        """After the script: hang up once the bot listens again (or let it end the call)."""
        if hang_up and not self.call.ended and self.call.wait_until_listening(wait):
            self.call.hang_up()
        self.call.wait_ended(wait)


def default_audio_fork() -> Callable[[], Any]:
    """The emulator's mod_audio_fork stand-in, or :class:`SimpleAudioFork` without it."""
    try:
        from esl_app.sim.emulator import audio as emulator_audio  # type: ignore[attr-defined]
    except ImportError:
        return SimpleAudioFork
    for name in ("AudioFork", "AudioForkClient", "EmulatedAudioFork"):
        if hasattr(emulator_audio, name):
            return getattr(emulator_audio, name)
    return SimpleAudioFork


class SimpleAudioFork:
    """A minimal mod_audio_fork: metadata frame, then real-time 20 ms L16 frames.

    The caller's lines (``channel.next_utterance``) are spoken with espeak-ng;
    silence fills the gaps, as on a real line.
    """

    def __init__(self) -> None:
        self.ws: Any = None
        self.greenlet: gevent.Greenlet | None = None
        self.frames = 0

    def start(self, url: str, mix: str, rate: str, metadata: str | None, call: Any) -> None:
        import websocket

        self.rate = 16000 if rate.startswith("16") else 8000
        self.ws = websocket.create_connection(url, subprotocols=["audio.drachtio.org"])
        if metadata:
            self.ws.send(metadata)
        self.greenlet = gevent.spawn(self._stream, call)

    def _stream(self, call: Any) -> None:
        import websocket

        from esl_app.providers.tts.local import synthesize_pcm

        frame = self.rate // 50 * 2
        silence = b"\0" * frame
        pending = b""
        next_at = time.monotonic()
        try:
            while not call.hung_up:
                if not pending:
                    text = call.next_utterance(timeout=0)
                    if text:
                        pending = synthesize_pcm(text, "en-us", self.rate) + silence * 40
                chunk, pending = (pending[:frame], pending[frame:]) if pending else (silence, b"")
                self.ws.send_binary(chunk.ljust(frame, b"\0"))
                self.frames += 1
                next_at += 0.02
                gevent.sleep(max(0.0, next_at - time.monotonic()))
        except (OSError, websocket.WebSocketException):
            return

    def stop(self) -> None:
        glet, self.greenlet = self.greenlet, None  # no cycle through its GreenletExit
        if glet is not None:
            glet.kill(block=False)
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                log.debug("audio fork close failed", exc_info=True)


def transcript_for(sim: SimCall, bot: LocalBot | None, wait: float = 5.0) -> dict[str, Any]:
    """The transcript of docs/contracts.md §1: the bot's own, or rebuilt from the channel."""
    if bot is not None:
        with gevent.Timeout(wait, False):
            while sim.call.uuid not in bot.transcripts:
                gevent.sleep(0.01)
        found = bot.transcripts.get(sim.call.uuid)
        if found is not None:
            return found
    summary = sim.call.transcript
    v = summary.get("variables", {})
    appointment = None
    if v.get("ivr_appointment"):
        try:
            appointment = json.loads(v["ivr_appointment"])
        except ValueError:
            appointment = None
    return {
        "call_id": summary.get("call_id"), "did": summary.get("did"),
        "tenant": v.get("ivr_tenant"),
        "outcome": v.get("ivr_outcome") or ("handoff" if summary.get("transfer_to")
                                            else "caller_hangup"),
        "confirmation": v.get("ivr_confirmation"), "appointment": appointment,
        "transfer_to": summary.get("transfer_to"), "turns": summary.get("turns", []),
    }


def run_lines(sim: SimCall, lines: Iterable[str], emit: Callable[[dict[str, Any]], None], *,
              hang_up_at_end: bool = True) -> None:
    """Drive ``sim`` with caller lines, forwarding out-events to ``emit`` as they happen.

    An ``emit`` that fails (the reader of stdout went away: ``| head``) hangs the call up
    and the error is raised here, in the caller's greenlet, rather than printed by the hub.
    """
    done = gevent.event.Event()
    failed: list[BaseException] = []

    def pump() -> None:
        while not (done.is_set() and sim.call.events.empty()):
            for ev in sim.events(0.05):
                if ev.get("event") != "call_ended":
                    try:
                        emit(ev)
                    except Exception as exc:  # noqa: BLE001 - re-raised by run_lines
                        failed.append(exc)
                        return

    pumper = gevent.spawn(pump)
    try:
        for line in lines:
            if failed or not sim.act(line):
                break
        sim.finish(hang_up=hang_up_at_end or bool(failed))
    finally:
        done.set()
        pumper.join(timeout=2)
        pumper.kill()
    if failed:
        raise failed[0]


def run_interactive(sim: SimCall, first: Iterable[str], stream: IO[str] | None,
                    emit: Callable[[dict[str, Any]], None]) -> None:
    """``simulate --jsonl``: stream events out while caller lines are read as they come.

    Each line from ``stream`` (after the ``first`` ones, the ``--say`` lines) is acted on
    when it arrives, so a driver can wait for ``listening`` before it answers. The
    call's end returns at once, whatever the stream is doing (still open, silent);
    the end of the stream hangs up once the bot listens. Reading is cooperative (no
    thread left blocked on stdin), so the process can exit right after.
    """
    from gevent.queue import Queue

    inbox: Queue = Queue()

    def read() -> None:
        for line in first:
            inbox.put(line)
        if stream is not None:
            for line in _cooperative_lines(stream):
                inbox.put(line)
        inbox.put(None)

    reader = gevent.spawn(read)

    def lines() -> Iterator[str]:
        while not sim.call.ended:
            try:
                line = inbox.get(timeout=0.05)
            except Empty:
                continue
            if line is None:
                return
            yield line

    try:
        run_lines(sim, lines(), emit)
    finally:
        reader.kill(block=False)


def _cooperative_lines(stream: IO[str]) -> Iterator[str]:
    """Lines of a pipe, file or terminal read without blocking the hub or a thread."""
    from gevent.fileobject import FileObjectPosix

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests)
        yield from (line.rstrip("\n") for line in stream)
        return
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)  # O_NONBLOCK is shared with the terminal's
    f = FileObjectPosix(os.dup(fd), "r", close=True)
    try:
        while True:
            line = f.readline()
            if not line:
                return
            yield line.rstrip("\n")
    finally:
        f.close()
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)  # leave the caller's shell as we found it


def stdin_lines(stream: IO[str] | None = None) -> Iterator[str]:
    """Lines from stdin without blocking the gevent hub (read in a thread)."""
    from gevent.fileobject import FileObjectThread

    f = FileObjectThread(stream or sys.stdin, "r", close=False)
    while True:
        line = f.readline()
        if not line:
            return
        yield line.rstrip("\n")


def readable(ev: dict[str, Any], t0: float | None = None) -> str:
    """One out-event as a chat line."""
    kind = ev.get("event")
    if kind == "bot_said":
        return f"BOT: {ev.get('text', '')}"
    if kind == "transfer":
        return f"--- transferred to {ev.get('to')}"
    return ""
