"""An emulated FreeSWITCH call leg: what :mod:`.outbound`'s socket connection drives.

:class:`Channel` is the call leg: channel data, variables, the application queue that
``sendmsg`` feeds (applications run one after another, as with ``event-lock: true``),
media timing (playback/speak last their real duration x ``time_scale``), ASR in "text
mode" (``detect_speech`` -> DETECTED_SPEECH), DTMF, bridge outcomes and hang-up. Event
order and headers follow mod_event_socket.c and switch_core_session.c (see
``docs/call-wire-contract.md``); ``tests/test_emulator_golden_trace.py`` holds them to a
call recorded at the real FreeSWITCH.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid as _uuid
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from xml.sax.saxutils import escape as _xml_escape

import gevent
import gevent.event
from gevent.queue import Empty, Queue

from esl_app.media.pcm import wav_text
from esl_app.sim.emulator import wire
from esl_app.sim.emulator.core import Event, Switch

if TYPE_CHECKING:  # the connection drives the channel; only its type is needed here
    from esl_app.sim.emulator.outbound import OutboundConnection

__all__ = [
    "AudioForkHook",
    "BridgeOutcome",
    "Channel",
    "DTMF_DURATION_SAMPLES",
    "Playback",
    "SECONDS_PER_CHAR",
    "Turn",
    "VARIABLE_EVENTS",
    "prompt_info",
    "wav_duration",
]

log = logging.getLogger(__name__)

#: Realistic speech rate for ``speak`` and for the caller's own words.
SECONDS_PER_CHAR = 0.065
#: DTMF digit length in samples at 8 kHz (FS reports DTMF-Duration in samples).
DTMF_DURATION_SAMPLES = 2000

# Event-Calling-* as FreeSWITCH 1.10.12 stamps them (tests/freeswitch/golden, WIRE-FACTS.md)
_SOCKET_FILE = ("mod_event_socket.c", "parse_command", 2021)
_EXEC_FILE = ("switch_core_session.c", "switch_core_session_exec", 2944)
_EXEC_DONE_FILE = ("switch_core_session.c", "switch_core_session_exec", 2967)
_ANSWER_FILE = ("switch_channel.c", "switch_channel_perform_mark_answered", 3846)
_HANGUP_FILE = ("switch_channel.c", "switch_channel_perform_hangup", 3445)
_HANGUP_DONE_FILE = ("switch_core_state_machine.c", "switch_core_session_reporting_state", 943)
_DTMF_FILE = ("switch_channel.c", "switch_channel_dequeue_dtmf", 677)
_SPEECH_FILE = ("switch_ivr_async.c", "speech_thread", 4676)
_BRIDGE_FILE = ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1689)
_UNBRIDGE_FILE = ("switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1879)
_PARK_FILE = ("switch_ivr.c", "switch_ivr_park", 1002)
_UNPARK_FILE = ("switch_ivr.c", "switch_ivr_park", 1213)
_STATE_FILE = ("switch_channel.c", "switch_channel_perform_set_running_state", 2408)

#: Events that carry the channel variables (switch_channel_event_set_extended_data); the
#: others (DTMF, CHANNEL_STATE, DETECTED_SPEECH ...) have the basic channel data only.
VARIABLE_EVENTS = frozenset(
    """CHANNEL_CREATE CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_ANSWER CHANNEL_PARK
    CHANNEL_UNPARK CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA
    CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE REQUEST_PARAMS CHANNEL_DATA CHANNEL_EXECUTE
    CHANNEL_EXECUTE_COMPLETE CHANNEL_DESTROY SESSION_HEARTBEAT API RECORD_START RECORD_STOP
    PLAYBACK_START PLAYBACK_STOP CALL_UPDATE MEDIA_BUG_START MEDIA_BUG_STOP CUSTOM""".split())


#: mod_audio_fork's media-bug name when ``uuid_audio_fork … start`` names none
FORK_BUG = "audio_fork"


class AudioForkHook(Protocol):
    """What ``sim/emulator/audio.py`` plugs in to stream caller audio like mod_audio_fork."""

    def start(self, url: str, mix: str, rate: str, metadata: str | None, call: Channel) -> None:
        """Open the WebSocket and begin streaming (in its own greenlet)."""

    def stop(self) -> None:
        """Close the WebSocket (``uuid_audio_fork <uuid> stop`` or hang-up)."""


@dataclass(frozen=True)
class BridgeOutcome:
    """Scripted result of ``bridge``: answer (then the far end hangs up) or a failure."""

    kind: str = "answer"  # answer | busy | no_answer | fail
    ring_seconds: float = 1.0
    talk_seconds: float = 3.0
    cause: str = "USER_NOT_REGISTERED"  # for kind == "fail"
    caller_hangs_up_after: bool = True


@dataclass
class Turn:
    """One line of the transcript as the emulator saw it."""

    speaker: str
    text: str
    at_ms: int
    barged_in: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The turn shape of docs/contracts.md §1."""
        return {"speaker": self.speaker, "text": self.text, "at_ms": self.at_ms,
                "barged_in": self.barged_in}


@dataclass
class _App:
    name: str
    arg: str
    app_uuid: str
    loops: int = 1


@dataclass
class Playback:
    """What the channel is playing now (for audio hooks that need to know)."""

    text: str
    source: str
    duration: float
    started: float = field(default_factory=time.monotonic)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def wav_duration(path: str) -> float:
    """Seconds of audio in a WAV file, from its header (falls back to 8 kHz L16 by size)."""
    try:
        with wave.open(path, "rb") as w:
            rate = w.getframerate() or 8000
            return w.getnframes() / float(rate)
    except (wave.Error, EOFError, OSError):
        size = os.path.getsize(path)
        return max(0, size - 44) / 16000.0


def _text_for(path: str) -> str:
    """What a prompt file says: the INFO comment our TTS cache puts in its WAV.

    Else a text file beside it (older caches, hand-made prompts), else nothing.
    """
    try:
        text = wav_text(path)
    except OSError:
        text = None
    if text is not None:
        return text.strip()
    for cand in (path + ".txt", str(Path(path).with_suffix(".txt"))):
        try:
            return Path(cand).read_text(encoding="utf-8").strip()
        except OSError:
            continue
    return ""


_PROMPT_MEMO: dict[tuple[str, int, int], tuple[float, str]] = {}
_PROMPT_MEMO_MAX = 4096


def prompt_info(path: str) -> tuple[float, str] | None:
    """(seconds, words) of a prompt file to play, or None if there is no such file.

    Memoised by (path, mtime, size): every call of a load test plays the same
    greetings and acknowledgements, and reading a WAV's header and its comment took
    two opens per playback in the load generator, on the cores it shares with the
    server. A rewritten WAV is read again, as FreeSWITCH would; a ``.txt`` beside a
    WAV (older caches) is read with it, not watched.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    info = _PROMPT_MEMO.get(key)
    if info is None:
        info = (wav_duration(path), _text_for(path))
        if len(_PROMPT_MEMO) >= _PROMPT_MEMO_MAX:
            _PROMPT_MEMO.clear()
        _PROMPT_MEMO[key] = info
    return info


class Channel:
    """One emulated call leg: state, variables, events and application execution."""

    def __init__(
        self,
        switch: Switch,
        did: str,
        caller: str,
        *,
        caller_name: str | None = None,
        variables: dict[str, str] | None = None,
        time_scale: float | None = None,
        bridge_outcome: BridgeOutcome | None = None,
        audio_fork: Callable[[], AudioForkHook] | None = None,
        context: str = "public",
        socket_data: str = "127.0.0.1:8084 async full",
        listen_settle: float = 0.2,
        uuid: str | None = None,
    ) -> None:
        self.switch = switch
        self.uuid = uuid or str(_uuid.uuid4())
        self.did = did
        self.caller = caller
        self.caller_name = caller_name or caller
        self.context = context
        self.time_scale = switch.time_scale if time_scale is None else time_scale
        self.bridge_outcome = bridge_outcome or BridgeOutcome()
        self.audio_fork_factory = audio_fork
        self.listen_settle = listen_settle
        self.name = f"sofia/external/{caller}@{switch.ipv4}"
        self.created_us = _now_us()
        self.created_mono = time.monotonic()
        self.answered_us = 0
        self.hangup_us = 0
        self.bridged_us = 0
        self.transfer_us = 0
        self.state = "CS_EXECUTE"
        self.state_number = 4
        self.call_state = "RINGING"
        self.answer_state = "ringing"
        self.hung_up = False
        self.destroyed = False
        self.hangup_cause: str | None = None
        self.hangup_by: str | None = None
        self.transfer_to: str | None = None
        self.resumed = False
        self.conn: OutboundConnection | None = None
        self.socket_app_uuid = ""  # set once the ``socket`` application has parked us
        self.other_leg: list[tuple[str, str]] = []  # the bridged party, once bridged
        self.variables: dict[str, str] = {
            "direction": "inbound",
            "uuid": self.uuid,
            "session_id": str(switch.sessions_since_start + 1),
            "sip_from_user": caller,
            "sip_from_host": switch.ipv4,
            "sip_to_user": did,
            "sip_to_host": switch.ipv4,
            "sip_req_user": did,
            "channel_name": self.name,
            "sip_call_id": f"{_uuid.uuid4().hex}@{switch.ipv4}",
            "read_codec": "PCMU",
            "read_rate": "8000",
            "write_codec": "PCMU",
            "write_rate": "8000",
            "dtmf_type": "rfc2833",
            "call_uuid": self.uuid,
        }
        self.variables.update(variables or {})
        host, _, _ = socket_data.split(" ")[0].rpartition(":")
        self.socket_data = socket_data
        self.variables.update({
            "current_application_data": socket_data,
            "current_application": "socket",
            "socket_host": host or "127.0.0.1",
        })
        # driver-facing state
        self.out_events: Queue[dict[str, Any]] = Queue()
        self.turns: list[Turn] = []
        self.ended = gevent.event.Event()
        self.listening = gevent.event.Event()
        self.playback_idle = gevent.event.Event()
        self.playback_idle.set()
        self.current_playback: Playback | None = None
        self.caller_speech: Queue[str] = Queue()
        self.fork_hook: AudioForkHook | None = None
        self.fork_url: str | None = None
        self.fork_bug = FORK_BUG  # the media-bug name of our fork (fork_url)
        # media-bug names of forks attached by someone else (a recorder, the dialplan):
        # mod_audio_fork refuses a second fork of a name already on the channel
        self.held_fork_bugs: set[str] = set()
        # ASR ("text mode")
        self.asr_active = False
        self.asr_paused = False
        self.asr_grammar = "ivr"
        # application queue
        self._apps: Queue[_App] = Queue()
        self._app_running: _App | None = None
        self._app_idle = gevent.event.Event()
        self._app_idle.set()
        self._break = gevent.event.Event()
        self._bot_spoke = False
        self._asr_resumed = False
        self._listen_timer: gevent.Greenlet | None = None
        # dead air: a playback ended with nothing queued behind it, and the next one came
        # later with no caller input and no other application between (seconds, real time)
        self.playback_gaps: list[float] = []
        self._quiet_since: float | None = None
        self._runner = gevent.spawn(self._run_apps)
        self._bg: list[gevent.Greenlet] = []
        switch.register(self)

    # -- event construction ------------------------------------------------------------
    def _profile(self, prefix: str) -> list[tuple[str, str]]:
        p = prefix
        return [
            (f"{p}-Direction", "inbound"),
            (f"{p}-Logical-Direction", "inbound"),
            (f"{p}-Username", self.caller),
            (f"{p}-Dialplan", "XML"),
            (f"{p}-Caller-ID-Name", self.caller_name),
            (f"{p}-Caller-ID-Number", self.caller),
            (f"{p}-Orig-Caller-ID-Name", self.caller_name),
            (f"{p}-Orig-Caller-ID-Number", self.caller),
            (f"{p}-Network-Addr", self.switch.ipv4),
            (f"{p}-ANI", self.caller),
            (f"{p}-Destination-Number", self.did),
            (f"{p}-Unique-ID", self.uuid),
            (f"{p}-Source", "mod_sofia"),
            (f"{p}-Context", self.context),
            (f"{p}-Channel-Name", self.name),
            (f"{p}-Profile-Index", "1"),
            (f"{p}-Profile-Created-Time", str(self.created_us)),
            (f"{p}-Channel-Created-Time", str(self.created_us)),
            (f"{p}-Channel-Answered-Time", str(self.answered_us)),
            (f"{p}-Channel-Progress-Time", "0"),
            (f"{p}-Channel-Progress-Media-Time", "0"),
            (f"{p}-Channel-Hangup-Time", str(self.hangup_us)),
            (f"{p}-Channel-Transfer-Time", str(self.transfer_us)),
            (f"{p}-Channel-Resurrect-Time", "0"),
            (f"{p}-Channel-Bridged-Time", str(self.bridged_us)),
            (f"{p}-Channel-Last-Hold", "0"),
            (f"{p}-Channel-Hold-Accum", "0"),
            (f"{p}-Screen-Bit", "true"),
            (f"{p}-Privacy-Hide-Name", "false"),
            (f"{p}-Privacy-Hide-Number", "false"),
        ]

    def _other_leg(self, b_uuid: str, target: str) -> list[tuple[str, str]]:
        """The bridged party's profile: FreeSWITCH puts it in every event from the bridge on."""
        over = {"Direction": "outbound", "Destination-Number": target.rsplit("/", 1)[-1],
                "Unique-ID": b_uuid, "Channel-Name": target,
                "Channel-Answered-Time": str(_now_us())}
        cut = len("Other-Leg-")
        return [("Other-Type", "originatee"),
                *((k, over.get(k[cut:], v)) for k, v in self._profile("Other-Leg"))]

    def channel_data(self, variables: bool = True) -> list[tuple[str, str]]:
        """switch_channel_event_set_data: state, identity, codecs, caller profile, variables.

        A hung-up channel says why (``Hangup-Cause``) right after its Answer-State.
        """
        hdrs = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", "inbound"),
            ("Presence-Call-Direction", "inbound"),
            ("Channel-HIT-Dialplan", "true"),
            ("Channel-Call-UUID", self.uuid),
            ("Answer-State", self.answer_state),
            *([("Hangup-Cause", self.hangup_cause)] if self.hangup_cause else []),
            ("Channel-Read-Codec-Name", "PCMU"),
            ("Channel-Read-Codec-Rate", "8000"),
            ("Channel-Read-Codec-Bit-Rate", "64000"),
            ("Channel-Write-Codec-Name", "PCMU"),
            ("Channel-Write-Codec-Rate", "8000"),
            ("Channel-Write-Codec-Bit-Rate", "64000"),
        ]
        hdrs += self._profile("Caller")
        hdrs += self.other_leg
        if variables:
            hdrs += [(f"variable_{k}", v) for k, v in self.variables.items()]
        return hdrs

    @property
    def socket_full(self) -> bool:
        """The ``socket`` application was given ``full`` (``host:port async full``)."""
        return "full" in self.socket_data.split()[1:]

    def connect_reply(self, async_: bool = True, full: bool = True) -> bytes:
        """The serialized CHANNEL_DATA event FS writes in answer to ``connect``."""
        hdrs = self.switch.base_headers("CHANNEL_DATA", _SOCKET_FILE)
        hdrs += self._profile("Channel")
        hdrs += self.channel_data()
        hdrs += [
            ("Content-Type", "command/reply"),
            ("Reply-Text", "+OK\n"),
            ("Socket-Mode", "async" if async_ else "static"),
            ("Control", "full" if full else "single-channel"),
        ]
        return wire.serialize_event(hdrs)

    def fire(
        self,
        name: str,
        calling: tuple[str, str, int],
        *,
        before: Iterable[tuple[str, str]] = (),
        after: Iterable[tuple[str, str]] = (),
        body: str | None = None,
        subclass: str | None = None,
    ) -> Event:
        """Build and fire a channel event: base, ``before``, channel data, ``after``."""
        hdrs = self.switch.base_headers(name, calling, subclass)
        hdrs += list(before)
        hdrs += self.channel_data(variables=name in VARIABLE_EVENTS)
        hdrs += list(after)
        ev = Event(name, hdrs, body, subclass)
        self.switch.fire(ev)
        return ev

    def fire_custom(
        self, subclass: str, headers: Iterable[tuple[str, str]] = (), body: str | None = None
    ) -> Event:
        """Raise a CUSTOM event (e.g. ``mod_audio_fork::connect``) for this channel."""
        return self.fire("CUSTOM", ("mod_audio_fork.c", "responseHandler", 58),
                         before=headers, body=body, subclass=subclass)

    def get_variable(self, name: str) -> str | None:
        """Channel variable lookup including a few built-ins FS resolves."""
        if name in self.variables:
            return self.variables[name]
        builtin = {
            "caller_id_number": self.caller,
            "caller_id_name": self.caller_name,
            "destination_number": self.did,
            "context": self.context,
            "state": self.state,
        }
        return builtin.get(name)

    def socket_parked(self) -> None:
        """The ``socket`` application connected and parks the channel (switch_ivr_park).

        Its CHANNEL_PARK fires before the bot can have sent ``myevents``, so the bot does
        not get it (FreeSWITCH's usually beats it too); UNPARK comes at the hang-up.
        """
        self.socket_app_uuid = str(_uuid.uuid4())
        self.fire("CHANNEL_PARK", _PARK_FILE)

    # -- driver helpers ------------------------------------------------------------------
    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self.created_mono) * 1000)

    def _emit(self, obj: dict[str, Any]) -> None:
        self.out_events.put(obj)

    def sleep(self, seconds: float) -> None:
        """Sleep scaled emulated time."""
        gevent.sleep(max(0.0, seconds * self.time_scale))

    # -- applications ---------------------------------------------------------------------
    def execute(self, name: str, arg: str, app_uuid: str | None = None, loops: int = 1) -> None:
        """Queue an application (sendmsg call-command: execute)."""
        if self.hung_up:
            return
        self._cancel_listen()
        self._apps.put(_App(name, arg, app_uuid or str(_uuid.uuid4()), max(1, loops)))

    def _run_apps(self) -> None:
        while True:
            app = self._apps.get()
            if app is None:  # type: ignore[comparison-overlap]
                return
            if self.hung_up:
                continue
            self._app_running = app
            self._app_idle.clear()
            try:
                for _ in range(app.loops):
                    self._exec(app)
                    if self.hung_up:
                        break
            except Exception:
                log.exception("emulator application %s failed", app.name)
            finally:
                self._app_running = None
                self._app_idle.set()
            if app.name in self._MEDIA and self._apps.qsize() == 0:
                self._quiet_since = time.monotonic()  # the channel plays nothing now
            self._maybe_listening()

    _APPS = frozenset({"answer", "pre_answer", "ring_ready", "playback", "speak",
                       "detect_speech", "bridge", "hangup", "sleep", "set", "export",
                       "unset", "multiset", "log", "park", "transfer", "info",
                       "playback_terminators"})

    _MEDIA = frozenset({"playback", "speak"})

    def _exec(self, app: _App) -> None:
        quiet, self._quiet_since = self._quiet_since, None
        if quiet is not None and app.name in self._MEDIA:
            self.playback_gaps.append(time.monotonic() - quiet)
        if app.name not in self._APPS:
            # switch_core_session_execute_application: "Invalid Application" → hang up
            self.hangup("DESTINATION_OUT_OF_ORDER", by="invalid_application")
            return
        self.variables["current_application"] = app.name
        if app.arg:
            self.variables["current_application_data"] = app.arg
        else:
            self.variables.pop("current_application_data", None)
        self.variables.pop("current_application_response", None)
        # switch_core_session_exec adds Application-Data only when there is an argument
        data = [("Application-Data", app.arg)] if app.arg else []
        self.fire("CHANNEL_EXECUTE", _EXEC_FILE, after=[
            ("Application", app.name), *data, ("Application-UUID", app.app_uuid)])
        self._break.clear()
        handler = getattr(self, "_app_" + app.name, None)
        if handler is not None:
            handler(app)
        resp = self.variables.get("current_application_response") or "_none_"
        self.fire("CHANNEL_EXECUTE_COMPLETE", _EXEC_DONE_FILE, after=[
            ("Application", app.name), *data,
            ("Application-Response", resp), ("Application-UUID", app.app_uuid)])

    def _app_answer(self, app: _App) -> None:
        if self.answered_us:
            return
        self.answered_us = _now_us()
        self.answer_state = "answered"
        self.variables["endpoint_disposition"] = "ANSWER"
        self.fire("CHANNEL_ANSWER", _ANSWER_FILE)
        self.call_state = "ACTIVE"  # CHANNEL_ANSWER itself still says RINGING

    def _app_pre_answer(self, app: _App) -> None:
        self.call_state = "EARLY"
        self.answer_state = "early"

    def _app_ring_ready(self, app: _App) -> None:
        self.call_state = "RINGING"

    def _app_set(self, app: _App) -> None:
        name, _, val = app.arg.partition("=")
        if name:
            if val:
                self.variables[name] = val
            else:
                self.variables.pop(name, None)

    _app_export = _app_set

    def _app_unset(self, app: _App) -> None:
        self.variables.pop(app.arg.strip(), None)

    def _app_multiset(self, app: _App) -> None:
        for part in app.arg.split():
            self._app_set(_App("set", part, app.app_uuid))

    def _app_sleep(self, app: _App) -> None:
        try:
            ms = int(app.arg.strip() or "0")
        except ValueError:
            ms = 0
        self._wait(ms / 1000.0)

    def _app_hangup(self, app: _App) -> None:
        self.hangup(app.arg.strip() or "NORMAL_CLEARING", by="bot")

    def _wait(self, seconds: float | None) -> str:
        """Wait scaled media time; return 'done', 'break' or 'hangup'."""
        timeout = None if seconds is None else max(0.0, seconds * self.time_scale)
        broke = self._break.wait(timeout)
        if self.hung_up:
            return "hangup"
        if broke:
            self._break.clear()
            return "break"
        return "done"

    def _play(self, text: str, source: str, duration: float | None) -> str:
        turn = None
        if text:
            turn = Turn("bot", text, self._elapsed_ms())
            self.turns.append(turn)
            self._bot_spoke = True
            self._emit({"event": "bot_said", "text": text})
        self.current_playback = Playback(text, source, duration if duration is not None else -1)
        self.playback_idle.clear()
        try:
            result = self._wait(duration)
        finally:
            self.current_playback = None
            self.playback_idle.set()
        if result == "break" and turn is not None:
            turn.barged_in = True
        return result

    def _app_playback(self, app: _App) -> None:
        path = app.arg.strip()
        if path.startswith("silence_stream://"):
            try:
                ms = int(path[len("silence_stream://"):].split(",")[0])
            except ValueError:
                ms = 0
            result = self._play("", path, None if ms < 0 else ms / 1000.0)
        elif (info := prompt_info(path)) is None:
            self.variables["current_application_response"] = "FILE NOT FOUND"
            return
        else:
            dur, text = info
            result = self._play(text, path, dur)
            samples = int(dur * 8000)
            self.variables["playback_seconds"] = str(int(dur))
            self.variables["playback_ms"] = str(int(dur * 1000))
            self.variables["playback_samples"] = str(samples)
        self.variables["current_application_response"] = (
            "PLAYBACK ERROR" if result == "hangup" else "FILE PLAYED")

    def _app_speak(self, app: _App) -> None:
        parts = app.arg.split("|", 2)
        text = parts[2] if len(parts) == 3 else app.arg
        self._play(text, app.arg, max(0.3, len(text) * SECONDS_PER_CHAR))

    def _app_detect_speech(self, app: _App) -> None:
        words = app.arg.split()
        verb = words[0].lower() if words else ""
        if verb == "stop":
            self.asr_active = False
            self.asr_paused = False
        elif verb == "pause":
            self.asr_paused = True
        elif verb == "resume":
            if self.asr_active:
                self.asr_paused = False
                self._asr_resumed = True
        elif verb in ("grammar", "nogrammar", "grammaron", "grammaroff", "grammarsalloff",
                      "param", "start_input_timers", "init"):
            if verb == "grammar" and len(words) > 1:
                self.asr_grammar = words[1]
        elif len(words) >= 2:
            self.asr_active = True
            self.asr_paused = False
            self.asr_grammar = words[1]
            self._asr_resumed = True

    def _app_bridge(self, app: _App) -> None:
        target = app.arg.strip()
        self.transfer_to = target
        self._emit({"event": "transfer", "to": target})
        out = self.bridge_outcome
        if out.kind == "answer":
            if self._wait(out.ring_seconds) == "hangup":
                self.variables["originate_disposition"] = "ORIGINATOR_CANCEL"
                return
            b_uuid = str(_uuid.uuid4())
            self.bridged_us = _now_us()
            self.variables.update({"originate_disposition": "SUCCESS", "DIALSTATUS": "SUCCESS",
                                   "bridge_channel": target, "bridge_uuid": b_uuid,
                                   "signal_bond": b_uuid, "last_bridge_to": b_uuid})
            self.other_leg = self._other_leg(b_uuid, target)
            self.fire("CHANNEL_BRIDGE", _BRIDGE_FILE, before=[
                ("Bridge-A-Unique-ID", self.uuid), ("Bridge-B-Unique-ID", b_uuid)])
            legs = [("Bridge-A-Unique-ID", self.uuid), ("Bridge-B-Unique-ID", b_uuid)]
            end = time.monotonic() + out.talk_seconds * self.time_scale
            while not self.hung_up and (left := end - time.monotonic()) > 0:
                self._break.wait(left)  # set by a hang-up (a uuid_break does not unbridge)
                if not self.hung_up:
                    self._break.clear()
            if self.hung_up:
                # the caller hung up on the human: UNBRIDGE, then the bridge completes
                self.fire("CHANNEL_UNBRIDGE", _UNBRIDGE_FILE, before=legs)
                return
            self.variables["bridge_hangup_cause"] = "NORMAL_CLEARING"
            self.variables["last_bridge_hangup_cause"] = "NORMAL_CLEARING"
            self.variables["last_bridge_role"] = "originator"
            self.fire("CHANNEL_UNBRIDGE", _UNBRIDGE_FILE, before=legs)
            if out.caller_hangs_up_after:
                self._later(0, lambda: self.hangup("NORMAL_CLEARING", by="caller"))
            elif self.variables.get("hangup_after_bridge", "").lower() == "true":
                self.hangup("NORMAL_CLEARING", by="bridge_end")
            return
        cause = {"busy": "USER_BUSY", "no_answer": "NO_ANSWER"}.get(out.kind, out.cause)
        dial = {"USER_BUSY": "BUSY", "NO_ANSWER": "NOANSWER"}.get(cause, "CHANUNAVAIL")
        if self._wait(out.ring_seconds if out.kind == "no_answer" else 0.1) == "hangup":
            return
        self.variables.update({"originate_disposition": cause, "DIALSTATUS": dial,
                               "originate_failed_cause": cause})
        cof = self.variables.get("continue_on_fail", "")
        keep = cof.lower() == "true" or cause in [c.strip() for c in cof.split(",")]
        if not keep:
            # switch_channel_handle_cause: without continue_on_fail the A-leg hangs up
            self.hangup(cause, by="bridge_failed")

    def _app_transfer(self, app: _App) -> None:
        parts = app.arg.split()
        if parts:
            self.transfer(parts[0], *(parts[1:3]))

    def _app_park(self, app: _App) -> None:
        pass

    _app_log = _app_park
    _app_info = _app_park
    _app_playback_terminators = _app_park

    # -- API-driven actions ---------------------------------------------------------------
    def do_break(self, all_: bool = False) -> None:
        """uuid_break: stop the media now; ``all`` also drops queued applications."""
        if all_:
            while True:
                try:
                    self._apps.get_nowait()
                except Empty:
                    break
        self._break.set()
        self._maybe_listening()

    def transfer(self, dest: str, dialplan: str = "XML", context: str = "default") -> None:
        """uuid_transfer: the call leaves the bot for ``dest`` (then ends after the talk).

        As FreeSWITCH 1.10 does: the ``socket`` application completes at once (the
        bot's connection stays open and keeps receiving the channel's events), then
        the new extension's applications run.
        """
        self.transfer_us = _now_us()
        self.transfer_to = dest
        # set before the break: the broken playback's completion already carries it
        self.variables["transfer_source"] = (
            f"{int(time.time())}:{_uuid.uuid4()}:bl_xfer:{dest}/{context}/{dialplan}")
        self.variables["transfer_history"] = self.variables["transfer_source"]
        self._emit({"event": "transfer", "to": dest})
        # Only the running application is broken: what the bot queued behind it (sendmsg
        # executes) stays in the channel's queue and runs after the transfer, for whoever
        # has the call now, as on FreeSWITCH 1.10.12 (tests/freeswitch/test_ivrctl.py).
        self.do_break()

        def left() -> None:
            self._app_idle.wait(timeout=2.0)  # the broken app reports first, as on FS
            self.fire("CHANNEL_EXECUTE_COMPLETE", _EXEC_DONE_FILE, after=[
                ("Application", "socket"), ("Application-Data", self.socket_data),
                ("Application-Response",
                 self.variables.get("current_application_response") or "_none_"),
                ("Application-UUID", str(_uuid.uuid4()))])

        self._bg.append(gevent.spawn(left))
        talk = self.bridge_outcome.talk_seconds
        self._later(talk, lambda: self.hangup("NORMAL_CLEARING", by="caller"))

    def audio_fork(self, action: str, args: list[str]) -> str:
        """uuid_audio_fork start/stop/...; hands streaming to the installed hook."""
        action = action.lower()
        if action == "start":
            if len(args) < 3:
                return "-USAGE: start <wss-url> <mix-type> <sampling-rate> [bugname] [metadata]\n"
            url, mix, rate = args[0], args[1], args[2]
            rest = args[3:]
            metadata = None
            bug = FORK_BUG
            if rest and not rest[0].startswith(("{", "'")):
                bug = rest[0]
            if bug in self.held_fork_bugs or (self.fork_url is not None and bug == self.fork_bug):
                # start_capture: "bug %s already attached!" (the fork of that name goes on)
                return "-ERR Operation Failed\n"
            if rest:
                joined = " ".join(rest)
                if rest[0].startswith(("{", "'")):
                    metadata = joined
                elif len(rest) > 1:
                    metadata = " ".join(rest[1:])
            if metadata and metadata.startswith("'") and metadata.endswith("'"):
                metadata = metadata[1:-1]
            self.fork_url = url
            self.fork_bug = bug
            if self.audio_fork_factory is not None:
                hook = self.audio_fork_factory()
                self.fork_hook = hook
                hook.start(url, mix, rate, metadata, self)
            self._maybe_listening()
            return "+OK Success\n"
        if action == "stop":
            self._stop_fork()
            return "+OK Success\n"
        if action in ("pause", "resume", "send_text", "graceful-shutdown"):
            return "+OK Success\n"
        return "-ERR Operation Failed\n"

    def _stop_fork(self) -> None:
        hook, self.fork_hook = self.fork_hook, None
        self.fork_url = None
        if hook is not None:
            try:
                hook.stop()
            except Exception:
                log.exception("audio fork hook stop failed")

    # -- the caller ----------------------------------------------------------------------
    @property
    def input_ready(self) -> bool:
        """True when something is listening to the caller (ASR or an audio fork)."""
        return (self.asr_active and not self.asr_paused) or self.fork_url is not None

    @property
    def idle(self) -> bool:
        """No application running or queued."""
        return self._app_running is None and self._apps.qsize() == 0

    def _cancel_listen(self) -> None:
        if self._listen_timer is not None:
            self._listen_timer.kill(block=False)
            self._listen_timer = None
        self.listening.clear()

    def _maybe_listening(self) -> None:
        if self.hung_up or self.listening.is_set() or self._listen_timer is not None:
            return
        if self.idle and self.input_ready and (self._bot_spoke or self._asr_resumed):
            self._listen_timer = gevent.spawn_later(self.listen_settle, self._settle)

    def _settle(self) -> None:
        self._listen_timer = None
        if (not self.hung_up and self.idle and self.input_ready
                and (self._bot_spoke or self._asr_resumed)):
            self.listening.set()
            self._emit({"event": "listening"})

    def _caller_input(self) -> None:
        self._quiet_since = None  # what the bot says next answers the caller: not dead air
        self._cancel_listen()
        self._bot_spoke = False
        self._asr_resumed = False

    def say(self, text: str) -> None:
        """The caller speaks ``text`` now (through ASR events or the audio fork)."""
        if self.hung_up:
            return
        self.turns.append(Turn("caller", text, self._elapsed_ms()))
        self._caller_input()
        if self.fork_url is not None:
            self.caller_speech.put(text)
            return
        if text.startswith("#wav "):
            return  # a recording: the emulated recogniser has no words for it
        if self.asr_active and not self.asr_paused:
            self._bg.append(gevent.spawn(self._recognise, text))

    def _recognise(self, text: str) -> None:
        self.fire("DETECTED_SPEECH", _SPEECH_FILE, before=[("Speech-Type", "begin-speaking")])
        gevent.sleep(max(0.05, len(text) * SECONDS_PER_CHAR) * self.time_scale)
        if self.hung_up or not self.asr_active or self.asr_paused:
            return
        g = _xml_escape(self.asr_grammar, {'"': "&quot;"})
        body = (f'<?xml version="1.0"?><result grammar="{g}">'
                f'<interpretation grammar="{g}" confidence="90">'
                f'<input mode="speech">{_xml_escape(text)}</input>'
                "</interpretation></result>")
        self.asr_paused = True  # the ASR waits for "detect_speech resume" after a result
        self.fire("DETECTED_SPEECH", _SPEECH_FILE, before=[("Speech-Type", "detected-speech")],
                  body=body)

    def next_utterance(self, timeout: float | None = None) -> str | None:
        """For audio hooks: block until the caller's next line (None on timeout/hang-up)."""
        try:
            text = self.caller_speech.get(timeout=timeout)
        except Empty:
            return None
        return text or None

    def press(self, digits: str) -> None:
        """The caller presses keys: one DTMF event per digit at a human pace."""
        if self.hung_up:
            return
        self.turns.append(Turn("caller", f"#dtmf {digits}", self._elapsed_ms()))
        self._caller_input()

        def run() -> None:
            for d in digits:
                if self.hung_up:
                    return
                self.fire("DTMF", _DTMF_FILE, after=[
                    ("DTMF-Digit", d), ("DTMF-Duration", str(DTMF_DURATION_SAMPLES)),
                    ("DTMF-Source", "RTP")])
                gevent.sleep(0.35 * self.time_scale)

        self._bg.append(gevent.spawn(run))

    # -- hang-up ----------------------------------------------------------------------------
    def _later(self, seconds: float, fn: Callable[[], None]) -> None:
        self._bg.append(gevent.spawn_later(max(0.0, seconds * self.time_scale), fn))

    def hangup(self, cause: str = "NORMAL_CLEARING", by: str = "caller") -> None:
        """Hang the channel up (caller BYE, sendmsg hangup, uuid_kill, ...)."""
        if self.hung_up:
            return
        self.hung_up = True
        self.hangup_cause = cause
        self.hangup_by = by
        self.hangup_us = _now_us()
        self.answer_state = "hangup"
        self.state_number = 10  # CS_HANGUP; Channel-State (the running state) follows later
        self.variables["sip_hangup_disposition"] = "recv_bye" if by == "caller" else "send_bye"
        self._cancel_listen()
        self.fire("CHANNEL_HANGUP", _HANGUP_FILE)  # Hangup-Cause is in the channel data now
        self._break.set()
        self.caller_speech.put("")
        gevent.spawn(self._finish_hangup)

    def _finish_hangup(self) -> None:
        """What follows CHANNEL_HANGUP, in FreeSWITCH's order (tests/freeswitch/golden).

        The running application reports its completion, the ``socket`` application ends
        (CHANNEL_UNPARK, its CHANNEL_EXECUTE_COMPLETE), the state machine moves on
        (CHANNEL_STATE CS_HANGUP, CS_REPORTING), CHANNEL_HANGUP_COMPLETE, and only then
        does the bot's socket get its disconnect notice.
        """
        self._app_idle.wait()
        self._stop_fork()
        if self.socket_app_uuid and not self.transfer_us:  # a transfer ended the socket app
            self.fire("CHANNEL_UNPARK", _UNPARK_FILE)
            self.fire("CHANNEL_EXECUTE_COMPLETE", _EXEC_DONE_FILE, after=[
                ("Application", "socket"), ("Application-Data", self.socket_data),
                ("Application-Response",
                 self.variables.get("current_application_response") or "_none_"),
                ("Application-UUID", self.socket_app_uuid)])
        for state, number in (("CS_HANGUP", 10), ("CS_REPORTING", 11)):
            self.state, self.state_number = state, number
            if state == "CS_REPORTING":
                self.call_state = "HANGUP"
            self.fire("CHANNEL_STATE", _STATE_FILE)
        self.variables["hangup_cause"] = self.hangup_cause or ""
        self.fire("CHANNEL_HANGUP_COMPLETE", _HANGUP_DONE_FILE, before=[("Hangup-Cause",
                                                                      self.hangup_cause or "")])
        if self.conn is not None:
            self.conn.channel_down()
        self.destroyed = True
        self.switch.unregister(self)
        self._apps.put(None)  # type: ignore[arg-type]
        bg, self._bg = self._bg, []  # a killed greenlet's traceback would point back here
        for g in bg:
            g.kill(block=False)
        self._emit(self.summary())
        self.ended.set()

    def summary(self) -> dict[str, Any]:
        """The ``call_ended`` event: what the emulator observed of the call."""
        return {
            "event": "call_ended",
            "call_id": self.uuid,
            "did": self.did,
            "hangup_cause": self.hangup_cause,
            "hangup_by": self.hangup_by,
            "transfer_to": self.transfer_to,
            "answered": bool(self.answered_us),
            "variables": {k: v for k, v in self.variables.items() if k.startswith("ivr_")},
            "turns": [t.as_dict() for t in self.turns],
        }

    def show_row(self) -> dict[str, str]:
        """A ``show channels`` row."""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_us / 1e6))
        app = self._app_running
        return {
            "uuid": self.uuid, "direction": "inbound", "created": created,
            "created_epoch": str(int(self.created_us / 1e6)), "name": self.name,
            "state": self.state, "cid_name": self.caller_name, "cid_num": self.caller,
            "ip_addr": self.switch.ipv4, "dest": self.did,
            "application": app.name if app else "socket",
            "application_data": app.arg if app else self.variables.get(
                "current_application_data", ""),
            "dialplan": "XML", "context": self.context, "read_codec": "PCMU",
            "read_rate": "8000", "read_bit_rate": "64000", "write_codec": "PCMU",
            "write_rate": "8000", "write_bit_rate": "64000", "secure": "",
            "hostname": self.switch.hostname, "presence_id": "", "presence_data": "",
            "accountcode": "", "callstate": self.call_state, "callee_name": "",
            "callee_num": "", "callee_direction": "", "call_uuid": self.uuid,
            "sent_callee_name": "", "sent_callee_num": "",
            "initial_cid_name": self.caller_name, "initial_cid_num": self.caller,
            "initial_ip_addr": self.switch.ipv4, "initial_dest": self.did,
            "initial_dialplan": "XML", "initial_context": self.context,
        }


