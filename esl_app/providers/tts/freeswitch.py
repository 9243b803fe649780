"""FreeSWITCH's own text-to-speech (mod_flite): we only say what to speak.

No audio is made here, so there is nothing to cache: the instruction is the
``speak`` application with ``<engine>|<voice>|<text>``. This is the one FreeSWITCH
speaker: tenants with ``tts: freeswitch`` use it, and so does the apology for a number
no tenant serves.
"""

from __future__ import annotations

from collections.abc import Mapping

from esl_app.providers.markup import to_plain, to_spoken
from esl_app.providers.tts.base import PlayInstruction, TtsCapabilities

__all__ = ["FLITE_VOICES", "POLLY_TO_FLITE", "FreeswitchTts", "flite_voice"]

#: The only voices mod_flite has: slt (female), rms / kal / awb (male). Given any other
#: name, ``speak`` logs "Valid voice names are awb, rms, slt or kal" and plays nothing.
FLITE_VOICES = frozenset({"awb", "kal", "rms", "slt"})

#: Tenants name Polly voices (tenants.yaml ``voice``); the nearest flite voice for each.
POLLY_TO_FLITE: Mapping[str, str] = {
    "Joanna": "slt", "Salli": "slt", "Kimberly": "slt", "Kendra": "slt", "Ivy": "slt",
    "Ruth": "slt", "Danielle": "slt", "Amy": "slt", "Emma": "slt", "Olivia": "slt",
    "Matthew": "rms", "Gregory": "rms", "Stephen": "rms", "Joey": "kal", "Justin": "kal",
    "Kevin": "kal", "Brian": "awb", "Arthur": "awb",
}


def flite_voice(voice: str) -> str:
    """A voice mod_flite has: flite's own names pass, Polly's are mapped, others get slt."""
    if voice.lower() in FLITE_VOICES:
        return voice.lower()
    return POLLY_TO_FLITE.get(voice, "slt")


class FreeswitchTts:
    """``speak flite|<voice>|<text>`` (implements ``TtsProvider``).

    Another engine (``tts_commandline``, ``unimrcp``) gets the voice name unchanged:
    only flite's voice list is known here.
    """

    name = "freeswitch"
    capabilities = TtsCapabilities(ssml=False, sample_rates=(8000, 16000))

    def __init__(self, engine: str = "flite") -> None:
        self.engine = engine

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """The ``speak`` instruction; '|' and newlines would break the argument."""
        fs_voice = flite_voice(voice) if self.engine == "flite" else voice
        spoken = " ".join(to_spoken(text).replace("|", " ").split())
        return PlayInstruction(app="speak", arg=f"{self.engine}|{fs_voice}|{spoken}",
                               text=to_plain(text).strip())

    def instant(self, text: str, *, voice: str, sample_rate: int,
                language: str = "en-US") -> PlayInstruction | None:
        """Ready at once: FreeSWITCH synthesises as it plays, nothing is made here.

        A subclass that changes :meth:`synthesize` (a wrapper that waits or fails) is
        another provider: its sentences go through it.
        """
        if type(self).synthesize is not FreeswitchTts.synthesize:
            return None
        return self.synthesize(text, voice=voice, sample_rate=sample_rate, language=language)
