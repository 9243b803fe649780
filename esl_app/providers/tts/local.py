"""Offline text-to-speech: espeak-ng, resampled by sox to the call's rate, cached.

Why two tools: espeak-ng only writes 22.05 kHz; sox resamples with a proper
low-pass filter (naive decimation to 8 kHz aliases audibly). Both run through
``gevent.subprocess``, so waiting for them never blocks the hub. Text goes in on
stdin, never argv (a reply starting with ``-`` must not become an option).

Every child is bounded: it is killed (and reaped) on timeout, on an error and when
the calling greenlet is killed (a hang-up), and at most :data:`MAX_AUDIO_SECONDS`
of audio is read from it. Issue #31: a 5.4 MB greeting kept espeak-ng running past
its timeout while the worker buffered its output, 55 MB to 3 GB in 75 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gevent
from gevent import subprocess

from esl_app.providers.markup import to_plain, to_spoken
from esl_app.providers.tts.base import PlayInstruction, TtsCapabilities, TtsError
from esl_app.providers.tts.cache import DEFAULT_DIR, PromptCache

__all__ = ["MAX_AUDIO_SECONDS", "MAX_TEXT_CHARS", "POLLY_TO_ESPEAK", "SYNTH_TIMEOUT_S",
           "LocalTts", "espeak_voice", "synthesize_pcm"]

#: How long one tool (espeak-ng, then sox) may run before it is killed.
SYNTH_TIMEOUT_S = 30.0
#: The most audio one synthesis may yield; a tool writing more is killed (bounds memory).
MAX_AUDIO_SECONDS = 300
#: The longest text synthesised in one go (about 5 minutes of speech at 160 wpm).
MAX_TEXT_CHARS = 5000
_ESPEAK_RATE = 22050  # espeak-ng's only output rate
_STDERR_CAP = 16 * 1024  # enough for any error message; the rest is dropped
_CHUNK = 64 * 1024

# Polly voice id -> espeak-ng voice+variant (accent and gender kept).
POLLY_TO_ESPEAK: Mapping[str, str] = {
    "Joanna": "en-us+f3", "Salli": "en-us+f2", "Kimberly": "en-us+f4", "Kendra": "en-us+f5",
    "Ivy": "en-us+f1", "Ruth": "en-us+f3", "Danielle": "en-us+f2",
    "Matthew": "en-us+m3", "Joey": "en-us+m1", "Justin": "en-us+m2", "Kevin": "en-us+m4",
    "Stephen": "en-us+m5", "Gregory": "en-us+m6",
    "Amy": "en-gb+f3", "Emma": "en-gb+f2", "Brian": "en-gb+m3", "Arthur": "en-gb+m2",
    "Olivia": "en-gb+f4", "Aria": "en-gb+f5",
}

_LANG_DEFAULT = {"en-US": "en-us", "en-GB": "en-gb", "en-AU": "en-gb", "en-IN": "en-gb"}


def espeak_voice(voice: str, language: str = "en-US") -> str:
    """The espeak-ng voice for a tenant's voice setting (Polly id or espeak name)."""
    if voice in POLLY_TO_ESPEAK:
        return POLLY_TO_ESPEAK[voice]
    if voice and voice[0].islower():  # already an espeak name such as "en-us+f2"
        return voice
    return _LANG_DEFAULT.get(language, "en-us")


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise TtsError(f"{tool} not found: install it (Debian: apt-get install espeak-ng sox)")
    return path


def _max_bytes(sample_rate: int) -> int:
    """The output cap for 16-bit mono audio at ``sample_rate`` (plus room for a header)."""
    return MAX_AUDIO_SECONDS * sample_rate * 2 + 4096


def _feed(pipe: Any, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; a child that quit early is fine."""
    with contextlib.suppress(OSError, ValueError):
        pipe.write(data)
    with contextlib.suppress(OSError, ValueError):
        pipe.close()


def _drain(pipe: Any, cap: int) -> tuple[bytes, bool]:
    """Read to EOF but keep at most ``cap`` bytes; True when the child wrote more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = pipe.read(_CHUNK)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > cap:
            return b"", True
        chunks.append(chunk)


def _reap(proc: Any, jobs: list[Any]) -> None:
    """Kill the child if it still runs, stop its pipe greenlets, wait for its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    gevent.killall(jobs, block=True, timeout=2)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(Exception):
            pipe.close()
    proc.wait()  # SIGKILL was sent: returns at once (gevent's child watcher reaps it)


def _run(args: list[str], data: bytes, max_out: int, timeout: float | None = None) -> bytes:
    """Run one tool with ``data`` on stdin; its stdout, at most ``max_out`` bytes.

    Why not ``communicate``: on timeout it leaves the child running and its reader
    greenlets buffering (unbounded) output, and a killed caller leaves the child too.
    """
    name = Path(args[0]).name
    limit = SYNTH_TIMEOUT_S if timeout is None else timeout
    try:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise TtsError(f"cannot run {args[0]}: {exc}") from None
    jobs = [gevent.spawn(_drain, proc.stdout, max_out),
            gevent.spawn(_drain, proc.stderr, _STDERR_CAP),
            gevent.spawn(_feed, proc.stdin, data)]
    timer = gevent.Timeout.start_new(limit)
    try:
        out, too_much = jobs[0].get()
        if too_much:
            raise TtsError(f"{name} output exceeds {max_out} bytes (more than "
                           f"{MAX_AUDIO_SECONDS} s of audio): refused")
        err, _ = jobs[1].get()
        returncode = proc.wait()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise TtsError(f"{name} timed out after {limit:g} s and was killed") from None
    finally:
        timer.close()
        _reap(proc, jobs)
    if returncode:
        raise TtsError(f"{name} failed ({returncode}): "
                       f"{err.decode(errors='replace').strip()[:200]}")
    return out


_synth_slots: Any = None


def _slots() -> Any:
    """A bound on concurrent synthesis pipelines (about one per core).

    A burst of new prompts under load must queue, not fork hundreds of
    espeak-ng/sox processes that starve the calls' CPU.
    """
    global _synth_slots
    if _synth_slots is None:
        from gevent.lock import BoundedSemaphore

        _synth_slots = BoundedSemaphore(max(2, os.cpu_count() or 2))
    return _synth_slots


def _espeak_sox(text: str, voice: str, sample_rate: int, speed: int, out: str) -> bytes:
    if len(text) > MAX_TEXT_CHARS:
        raise TtsError(f"text too long to speak: {len(text)} characters "
                       f"(at most {MAX_TEXT_CHARS})")
    with _slots():
        return _espeak_sox_now(text, voice, sample_rate, speed, out)


def _espeak_sox_now(text: str, voice: str, sample_rate: int, speed: int, out: str) -> bytes:
    wav = _run([_need("espeak-ng"), "-v", voice, "-s", str(speed), "--stdout"],
               text.encode("utf-8"), _max_bytes(_ESPEAK_RATE))
    return _run([_need("sox"), "-q", "-t", "wav", "-", "-r", str(sample_rate), "-c", "1",
                 "-b", "16", "-e", "signed-integer", "-t", out.split(":")[0],
                 out.split(":", 1)[1] if ":" in out else "-"], wav, _max_bytes(sample_rate))


def synthesize_pcm(text: str, voice: str = "en-us", sample_rate: int = 8000,
                   speed: int = 160) -> bytes:
    """Raw L16 mono PCM of ``text`` (plain text; used by the emulator and benches)."""
    return _espeak_sox(text, voice, sample_rate, speed, "raw")


class LocalTts:
    """espeak-ng provider behind the prompt cache (implements ``TtsProvider``)."""

    name = "local"
    capabilities = TtsCapabilities(ssml=False, sample_rates=(8000, 16000))

    def __init__(self, cache: PromptCache | None = None, cache_dir: str | Path = DEFAULT_DIR,
                 speed: int = 160) -> None:
        self.cache = cache or PromptCache(cache_dir)
        self.speed = speed

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """Synthesise (or reuse) one sentence; returns a ``playback`` instruction."""
        spoken, plain, ev = self._request(text, voice, sample_rate, language)

        def synth(tmp: Path) -> None:
            _espeak_sox(spoken, ev, sample_rate, self.speed, f"wav:{tmp}")

        prompt = self.cache.get_or_create(self.name, f"{ev}@{self.speed}", sample_rate, spoken,
                                          plain, synth)
        return PlayInstruction(app="playback", arg=str(prompt.path), text=plain,
                               duration_ms=self.cache.duration_ms(prompt.path),
                               cached=prompt.cached)

    def instant(self, text: str, *, voice: str, sample_rate: int,
                language: str = "en-US") -> PlayInstruction | None:
        """The cached prompt when playing it needs no wait, else None (never runs espeak)."""
        spoken, plain, ev = self._request(text, voice, sample_rate, language)
        return self.cache.get_ready(self.name, f"{ev}@{self.speed}", sample_rate, spoken, plain)

    @staticmethod
    def _request(text: str, voice: str, sample_rate: int, language: str
                 ) -> tuple[str, str, str]:
        """(what espeak says, the plain text, espeak's voice); TtsError for what it cannot."""
        if sample_rate not in (8000, 16000):
            raise TtsError(f"unsupported sample rate {sample_rate}")
        spoken = to_spoken(text).strip()
        if not spoken:
            raise TtsError("nothing to say")
        return spoken, to_plain(text).strip(), espeak_voice(voice, language)
