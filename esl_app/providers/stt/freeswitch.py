"""Marker provider: recognition runs inside FreeSWITCH (``detect_speech``).

With ``stt: freeswitch`` no audio reaches us. The call engine runs
``detect_speech <args>`` and handles ``DETECTED_SPEECH`` events itself (see
docs/call-wire-contract.md); :func:`parse_detected_speech` turns their NLSML
body into a :class:`TranscriptEvent`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from html import unescape

from esl_app.providers.stt.base import SttCapabilities, SttError, SttStream, TranscriptEvent

__all__ = ["FreeswitchStt", "parse_detected_speech"]

_INPUT = re.compile(r"<input[^>]*>(.*?)</input>", re.S)
_CONF = re.compile(r'confidence="([0-9.]+)"')


class FreeswitchStt:
    """Capabilities say: not streamed to us; recognised FreeSWITCH-side."""

    name = "freeswitch"
    capabilities = SttCapabilities(streaming=False, partials=False, hints=False)
    server_side = True  # the call engine uses detect_speech instead of open_stream
    detect_speech_args = "pocketsphinx ivr ivr"

    def open_stream(self, call_id: str, sample_rate: int, language: str,
                    on_event: Callable[[TranscriptEvent], None],
                    hints: Sequence[str] = ()) -> SttStream:
        """Never used: audio does not reach us with this provider."""
        raise SttError("stt 'freeswitch' recognises inside FreeSWITCH (detect_speech)")


def parse_detected_speech(speech_type: str, body: str = "") -> TranscriptEvent | None:
    """A ``DETECTED_SPEECH`` event as a transcript event (None for other types)."""
    if speech_type == "begin-speaking":
        return TranscriptEvent("speech_start")
    if speech_type != "detected-speech":
        return None
    m = _INPUT.search(body or "")
    text = unescape(m.group(1)).strip() if m else ""
    c = _CONF.search(body or "")
    conf = float(c.group(1)) / 100 if c else None
    return TranscriptEvent("final", text, conf)
