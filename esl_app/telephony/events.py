"""What arrives on a call's queue, and how raw ESL events map onto it.

Everything a call reacts to (ESL events, media-server speech events,
synthesis results, agent replies, timers) is a :class:`Msg` on one queue read
by the call's controller greenlet, so call state has exactly one writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from typing import Any

from esl_app.telephony.esl import EslEvent

__all__ = ["Msg", "from_esl", "parse_nlsml"]


@dataclass
class Msg:
    """One thing that happened to the call.

    kinds: ``started`` / ``complete`` (an app began / finished; ``key`` =
    Application-UUID), ``speech_start``,
    ``transcript`` (``text``), ``dtmf`` (``text`` = digit), ``hangup``, ``closed``,
    ``tts``/``agent`` (``key`` = request id, ``value`` = result or exception),
    ``timer`` (``key`` = timer name), ``answer``, ``left`` (the channel left the bot:
    its ``socket`` application completed while the call goes on, e.g. an operator's
    ``uuid_transfer``), ``other``.
    """

    kind: str
    key: str = ""
    text: str = ""
    value: Any = None
    event: EslEvent | None = None
    confidence: float | None = None
    # time.monotonic() it happened, where known: our VAD's speech_start, a final transcript
    # (when the ESL reader or the recogniser delivered it)
    at: float = 0.0


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
        return Msg("closed")
    name = event.name
    if name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        return Msg("hangup", text=event.get("Hangup-Cause", "") or "", event=event)
    if name == "DISCONNECT":
        return Msg("closed", event=event)
    if name == "CHANNEL_EXECUTE":
        return Msg("started", key=event.get("Application-UUID", "") or "", event=event)
    if name == "CHANNEL_EXECUTE_COMPLETE":
        if event.get("Application") == "socket":
            # the dialplan's socket app, not one of ours (a hang-up comes before it)
            return Msg("left", event=event)
        return Msg("complete", key=event.get("Application-UUID", "") or "",
                   text=event.get("Application-Response", "") or "", event=event)
    if name == "DETECTED_SPEECH":
        kind = (event.get("Speech-Type", "") or "").lower()
        if kind == "begin-speaking":
            return Msg("speech_start", event=event)
        if kind == "detected-speech":
            text, conf = parse_nlsml(event.body)
            return Msg("transcript", text=text, confidence=conf, event=event, at=event.at)
        return Msg("other", event=event)
    if name == "DTMF":
        return Msg("dtmf", text=(event.get("DTMF-Digit", "") or "").strip(), event=event)
    if name == "CHANNEL_ANSWER":
        return Msg("answer", event=event)
    return Msg("other", event=event)
