"""What arrives on a call's queue, and how raw ESL events map onto it.

Everything a call reacts to (ESL events, media-server speech events,
synthesis results, agent replies, timers) is a :class:`Msg` on one queue read
by the call's controller greenlet, so call state has exactly one writer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from html import unescape
from typing import Any

from esl_app.telephony.esl import EslEvent

__all__ = ["Kind", "Msg", "from_esl", "parse_nlsml"]


class Kind(StrEnum):
    """What a :class:`Msg` is about (a str, so logs and JSON read as before)."""

    STARTED = "started"  # an app began (``key`` = Application-UUID)
    COMPLETE = "complete"  # an app finished (``key`` = Application-UUID, ``text`` = response)
    SPEECH_START = "speech_start"  # the caller started speaking (``at`` = when)
    TRANSCRIPT = "transcript"  # a final transcript (``text``, ``confidence``, ``at``)
    DTMF = "dtmf"  # a key (``text`` = digit)
    HANGUP = "hangup"  # the channel hung up (``text`` = Hangup-Cause)
    CLOSED = "closed"  # the ESL connection closed
    TTS = "tts"  # a synthesis result (``key`` = request id, ``value`` = result or exception)
    AGENT = "agent"  # an agent reply (``key`` = turn, ``value`` = AgentReply or exception)
    AGENT_TEXT = "agent_text"  # a streamed agent sentence (``key`` = turn, ``text``)
    TIMER = "timer"  # a timer fired (``key`` = its name)
    ANSWER = "answer"  # the channel was answered
    LEFT = "left"  # the channel left the bot: its ``socket`` app completed, the call goes on
    OTHER = "other"  # any other ESL event (``event``)
    AMD = "amd"  # answering-machine detection's verdict (``key`` = which, ``value``)
    MEDIA_LOST = "media_lost"  # the audio fork or recogniser is gone (``key`` = why)
    # mod_audio_fork's own event for the call's fork (``key`` = connect_failed, connect,
    # disconnect, error; ``text`` = the body's reason); only a call that subscribed to
    # them gets any (``event plain CUSTOM mod_audio_fork::…``: a reminder call)
    FORK = "fork"
    SIGNAL = "signal"  # an agent asks the call engine for something (``key`` = "filler")


@dataclass
class Msg:
    """One thing that happened to the call (see :class:`Kind` for what each field holds)."""

    kind: Kind
    key: str = ""
    text: str = ""
    value: Any = None
    event: EslEvent | None = None
    confidence: float | None = None
    # time.monotonic() it happened, where known: our VAD's speech_start, a final transcript
    # (when the ESL reader or the recogniser delivered it)
    at: float = 0.0

    def __post_init__(self) -> None:
        if type(self.kind) is not Kind:  # a string from older code: fail loudly on a typo
            self.kind = Kind(self.kind)


_INPUT = re.compile(r"<input[^>]*>(.*?)</input>", re.S | re.I)
_CONF = re.compile(r'confidence="([0-9.]+)"', re.I)


def parse_nlsml(body: str) -> tuple[str, float | None]:
    """The caller's words and confidence (0..1) from a DETECTED_SPEECH NLSML body."""
    m = _INPUT.search(body or "")
    text = unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip() if m else ""
    c = _CONF.search(body or "")
    conf = None
    if c:
        value = float(c.group(1))
        conf = value / 100.0 if value > 1 else value
    return text, conf


def from_esl(event: EslEvent | str) -> Msg:
    """Translate one raw ESL event (or the reader's ``"closed"``) into a :class:`Msg`."""
    if isinstance(event, str):
        return Msg(Kind.CLOSED)
    name = event.name
    if name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        return Msg(Kind.HANGUP, text=event.get("Hangup-Cause", "") or "", event=event)
    if name == "DISCONNECT":
        return Msg(Kind.CLOSED, event=event)
    if name == "CHANNEL_EXECUTE":
        return Msg(Kind.STARTED, key=event.get("Application-UUID", "") or "", event=event)
    if name == "CHANNEL_EXECUTE_COMPLETE":
        if event.get("Application") == "socket":
            # the dialplan's socket app, not one of ours. Ended by a hang-up it says so
            # itself (Answer-State: hangup; its CHANNEL_HANGUP comes first, but a
            # loaded CI box once delivered this first); else the call was moved away
            if event.get("Answer-State") == "hangup":
                return Msg(Kind.HANGUP, text=event.get("Hangup-Cause", "") or "", event=event)
            return Msg(Kind.LEFT, event=event)
        return Msg(Kind.COMPLETE, key=event.get("Application-UUID", "") or "",
                   text=event.get("Application-Response", "") or "", event=event)
    if name == "DETECTED_SPEECH":
        kind = (event.get("Speech-Type", "") or "").lower()
        if kind == "begin-speaking":
            return Msg(Kind.SPEECH_START, event=event)
        if kind == "detected-speech":
            text, conf = parse_nlsml(event.body)
            return Msg(Kind.TRANSCRIPT, text=text, confidence=conf, event=event, at=event.at)
        return Msg(Kind.OTHER, event=event)
    if name == "DTMF":
        return Msg(Kind.DTMF, text=(event.get("DTMF-Digit", "") or "").strip(), event=event)
    if name == "CHANNEL_ANSWER":
        return Msg(Kind.ANSWER, event=event)
    if name == "CUSTOM":
        sub = event.get("Event-Subclass", "") or ""
        if sub.startswith("mod_audio_fork::"):
            return Msg(Kind.FORK, key=sub.removeprefix("mod_audio_fork::"),
                       text=_fork_reason(event.body), event=event)
    return Msg(Kind.OTHER, event=event)


def _fork_reason(body: str) -> str:
    """``reason`` from a mod_audio_fork event's JSON body (``connect_failed``), or ""."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:80]
    return str(data.get("reason", ""))[:80] if isinstance(data, dict) else ""
