"""FreeSWITCH's own text-to-speech (mod_flite): we only say what to speak.

No audio is made here, so there is nothing to cache: the instruction is the
``speak`` application with ``<engine>|<voice>|<text>``.
"""

from __future__ import annotations

from collections.abc import Mapping

from esl_app.providers.tts.base import PlayInstruction, TtsCapabilities
from esl_app.speech_markup import to_plain, to_spoken

__all__ = ["POLLY_TO_FLITE", "FreeswitchTts"]

# mod_flite voices: slt (female), rms / kal / awb (male).
POLLY_TO_FLITE: Mapping[str, str] = {
    "Joanna": "slt", "Salli": "slt", "Kimberly": "slt", "Kendra": "slt", "Ivy": "slt",
    "Ruth": "slt", "Amy": "slt", "Emma": "slt",
    "Matthew": "rms", "Joey": "kal", "Justin": "kal", "Kevin": "kal", "Stephen": "rms",
    "Brian": "awb", "Arthur": "awb",
}


class FreeswitchTts:
    """``speak flite|<voice>|<text>`` (implements ``TtsProvider``)."""

    name = "freeswitch"
    capabilities = TtsCapabilities(ssml=False, sample_rates=(8000, 16000))

    def __init__(self, engine: str = "flite") -> None:
        self.engine = engine

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """The ``speak`` instruction; '|' and newlines would break the argument."""
        fs_voice = POLLY_TO_FLITE.get(voice, voice if voice.islower() else "slt")
        spoken = " ".join(to_spoken(text).replace("|", " ").split())
        return PlayInstruction(app="speak", arg=f"{self.engine}|{fs_voice}|{spoken}",
                               text=to_plain(text).strip())
