"""The on-disk prompt cache: synthesise a (provider, voice, rate, text) once.

Greetings and fixed prompts repeat on every call; synthesising them again would
add latency to each turn. Files live in a directory FreeSWITCH can read
(``playback /abs/path.wav``); each ``<key>.wav`` carries its plain text in a RIFF
INFO comment after the audio (:func:`esl_app.media.pcm.wav_text`), which the
emulator reads to report what the bot said. One file per prompt: creating files
is most of what storing a prompt costs.

Writes are atomic (temp file in the same directory, then ``os.replace``, so a
visible WAV is complete, text included). On a disk they run on a real thread,
never on the hub: creating a file on a journalled file system can wait for
milliseconds. On a memory file system (tmpfs, e.g. ``var/prompts`` mounted as
one) they run inline: a create there never waits on a device (~0.1 ms), while
handing the work to a thread and back costs two wake-ups, 2-20 ms on a busy box,
on the turn's critical path. Concurrent misses of one key in a process
synthesise once (single flight). Cleanup is explicit: :meth:`PromptCache.prune`
by age (last use) and total size.

:class:`PromptWarmer` synthesises fixed short prompts (the acknowledgements and
the filler) ahead of need, once per process and voice, so that playing one
later costs no synthesis latency: the call engine plays an acknowledgement only
when :meth:`PromptWarmer.ready` says it is already there.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import re
import time
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from esl_app.media.pcm import append_wav_text, wav_duration_ms, wav_with_text
from esl_app.providers.tts.base import PlayInstruction
from esl_app.support.bridge import run_in_thread

# temp-file numbers, process-wide: several caches (and workers, by pid) share a directory
_TMP_SEQ = itertools.count()

__all__ = ["WARMER", "CachedPrompt", "PromptCache", "PromptWarmer", "cache_key",
           "on_memory_fs"]

log = logging.getLogger(__name__)

DEFAULT_DIR = "./var/prompts"


_MEMORY_FS = frozenset({"tmpfs", "ramfs"})
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


def on_memory_fs(path: str | Path, mounts: str = "/proc/self/mounts") -> bool:
    """True when ``path`` lives on tmpfs or ramfs (Linux; False where that cannot be told).

    The mount point that is the longest prefix of the real path decides (the last
    one listed when several stack on it: that is the one on top).
    """
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            table = f.read().splitlines()
    except OSError:
        return False
    target = os.path.realpath(path)
    best, kind = "", ""
    for line in table:
        fields = line.split()
        if len(fields) < 3:
            continue
        # spaces, tabs and backslashes in a mount point are octal escapes (\040)
        point = _MOUNT_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind in _MEMORY_FS


def cache_key(provider: str, voice: str, rate: int, text: str) -> str:
    """sha256 over the four fields (unambiguous: NUL separated)."""
    raw = "\0".join((provider, voice, str(rate), text)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class CachedPrompt:
    """A synthesised prompt on disk."""

    path: Path
    cached: bool  # True when it was already there


_FILE_POOL = "prompt-files"  # real threads for the cache's file work
_TOUCH_EVERY_S = 600.0  # a hit refreshes its file's mtime at most this often (per process)
_MEMO_MAX = 4096  # remembered durations and touch times (cleared, not grown, beyond it)


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _store(final: str, plain_text: str, tmp_wav: str, data: bytes | None) -> int | None:
    """A miss's file work (on a thread, or inline on tmpfs); the WAV's duration if known.

    The text goes into the WAV (an INFO comment after the audio), then the file is
    renamed into place: one create per prompt, and a visible WAV always has its
    text. The temporary name is this process's id and a counter: unique across the
    workers sharing the directory without ``mkstemp``'s extra create and close. A
    directory removed under us (an operator cleaning up) is made again. Whatever
    fails leaves no temporary file behind.
    """
    try:
        if data is not None:
            data = wav_with_text(data, plain_text)
            try:
                _publish(tmp_wav, data, final)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                _publish(tmp_wav, data, final)
        else:  # the synthesiser wrote the file (in place: the directory exists)
            append_wav_text(tmp_wav, plain_text)
            _publish(tmp_wav, None, final)
    except BaseException:
        _unlink_quietly(tmp_wav)
        raise
    try:
        if data is not None:
            with wave.open(io.BytesIO(data), "rb") as w:
                return int(w.getnframes() * 1000 / w.getframerate())
        return wav_duration_ms(final)
    except (OSError, EOFError, wave.Error, ZeroDivisionError):
        return None  # not a WAV we can read: asked for, its duration fails then


def _put_bounded(memo: dict[str, Any], key: str, value: Any) -> None:
    """``memo[key] = value``, clearing ``memo`` first once it holds ``_MEMO_MAX`` keys."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value


def _publish(tmp: str, body: bytes | None, dest: str) -> None:
    """Write ``body`` to ``tmp`` (None: already written), then rename it to ``dest``."""
    if body is not None:
        with open(tmp, "wb") as f:
            f.write(body)
    os.chmod(tmp, 0o644)  # FreeSWITCH may run as another user
    os.replace(tmp, dest)


class PromptCache:
    """Content-addressed WAV prompts with hit/miss counters."""

    def __init__(self, directory: str | Path = DEFAULT_DIR) -> None:
        self.directory = Path(directory).resolve()
        self.hits = 0
        self.misses = 0
        self._inflight: dict[str, gevent.event.Event] = {}
        self._dir_ready = False
        # on a memory file system the file work runs on the hub (see the module notes)
        self._inline = on_memory_fs(self.directory)
        self._touched: dict[str, float] = {}  # key -> when this process last touched it
        self._durations: dict[str, int] = {}  # path -> WAV duration (ms)

    def path_for(self, key: str) -> Path:
        """Where the WAV of ``key`` lives."""
        return self.directory / f"{key}.wav"

    def lookup(self, provider: str, voice: str, rate: int, text: str) -> Path | None:
        """The cached WAV, or None; counts nothing (see :meth:`get_or_create`)."""
        path = self.path_for(cache_key(provider, voice, rate, text))
        return path if path.exists() else None

    def get_ready(self, provider: str, voice: str, rate: int, text: str, plain_text: str,
                  *, duration_ms: int | None = None) -> PlayInstruction | None:
        """The cached prompt's ``playback`` when it needs no wait, else None.

        Why: a call speaks a cached sentence from its own greenlet instead of handing it
        to its synthesis greenlet and back (two loop iterations on a busy worker). Unless
        the provider knows the duration (``duration_ms``), only a prompt whose duration
        this process already read qualifies: reading a WAV header on a journalled disk
        is a thread job (:meth:`duration_ms`). Counts a hit like :meth:`get_or_create`;
        a None counts nothing.
        """
        key = cache_key(provider, voice, rate, text)
        path = self.path_for(key)
        ms = self._durations.get(str(path)) if duration_ms is None else duration_ms
        if ms is None or key in self._inflight or not os.path.exists(path):
            return None
        self.hits += 1
        self._touch(key, path)
        return PlayInstruction(app="playback", arg=str(path), text=plain_text,
                               duration_ms=ms, cached=True)

    def get_or_create(self, provider: str, voice: str, rate: int, text: str,
                      plain_text: str, synth: Callable[[Path], Any]) -> CachedPrompt:
        """Return the prompt, calling ``synth(tmp_wav_path)`` on a miss.

        ``synth`` runs on the calling greenlet (it may wait cooperatively: a request
        to Polly, a subprocess) and either returns the complete WAV file's bytes, for
        the cache to write, or writes ``tmp_wav_path`` itself (and returns anything
        else: None, a byte count).
        ``plain_text`` goes into the WAV (see :func:`esl_app.media.pcm.wav_text`).

        The miss's file work (the WAV with its text, mode, rename) is one job on a
        real thread: creating a file on a journalled file system costs 0.2-3 ms of
        kernel time (tens of ms at worst), and on the hub every call of the worker
        would wait it out. On a memory file system it runs inline instead (~0.1 ms,
        cheaper than the hand-over). A hit costs a ``stat`` on the hub.

        Concurrent misses of one prompt synthesise it once; the others wait and look
        again, and synthesise it themselves if that failed or its call hung up.
        """
        key = cache_key(provider, voice, rate, text)
        path = self.path_for(key)
        while True:
            if os.path.exists(path):
                self.hits += 1
                self._touch(key, path)
                return CachedPrompt(path, True)
            pending = self._inflight.get(key)
            if pending is None:
                break
            # another greenlet is synthesising it right now: wait, then look again.
            # If it failed or was killed (its call hung up), this one tries itself; no
            # exception crosses greenlets (one shared would tie every waiter's frames
            # into a reference cycle through its traceback)
            pending.wait()
        self.misses += 1
        done = self._inflight[key] = gevent.event.Event()
        tmp = self.directory / f".tmp-{os.getpid()}-{next(_TMP_SEQ)}.wav"
        try:
            if not self._dir_ready:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._inline = on_memory_fs(self.directory)
                self._dir_ready = True
            try:
                data = synth(tmp)
            except BaseException:
                _unlink_quietly(str(tmp))
                raise
            if not isinstance(data, (bytes, bytearray, memoryview)):
                data = None  # synth wrote the file
            if self._inline:
                duration = _store(str(path), plain_text, str(tmp), data)
            else:
                duration = run_in_thread(_store, str(path), plain_text, str(tmp), data,
                                         pool=_FILE_POOL)
            if duration is not None:
                _put_bounded(self._durations, str(path), duration)
            _put_bounded(self._touched, key, time.monotonic())
        except OSError:
            self._dir_ready = False  # the directory may be gone: make it again next time
            raise
        finally:
            del self._inflight[key]
            done.set()
        return CachedPrompt(path, False)

    def duration_ms(self, path: str | Path) -> int:
        """The WAV's duration, from memory after the first time.

        The header is read off the hub, except on a memory file system, where
        reading it cannot wait on a disk.
        """
        name = str(path)
        ms = self._durations.get(name)
        if ms is None:
            ms = (wav_duration_ms(name) if self._inline
                  else run_in_thread(wav_duration_ms, name, pool=_FILE_POOL))
            _put_bounded(self._durations, name, ms)
        return ms

    def _touch(self, key: str, path: Path) -> None:
        """Refresh the last-use time for age pruning, at most every ``_TOUCH_EVERY_S``.

        The greeting is a hit on every call: an ``utime`` each time would be a
        journalled metadata write per call for a clock that pruning reads in hours.
        """
        now = time.monotonic()
        last = self._touched.get(key)
        if last is not None and now - last < _TOUCH_EVERY_S:
            return
        _put_bounded(self._touched, key, now)
        try:
            os.utime(path)
        except OSError:
            pass

    def stats(self) -> dict[str, float | int]:
        """Counters for metrics: hits, misses, hit_ratio, files, bytes."""
        files, size = 0, 0
        if self.directory.exists():
            for p in self.directory.glob("*.wav"):
                try:
                    size += p.stat().st_size
                    files += 1
                except OSError:
                    pass
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses,
                "hit_ratio": self.hits / total if total else 0.0,
                "files": files, "bytes": size}

    def prune(self, max_bytes: int | None = None, max_age_s: float | None = None) -> int:
        """Delete old prompts, then the least recently used beyond a size; return the count.

        ``max_age_s``: unused (mtime, refreshed by a hit at most every 10 minutes per
        process) for longer is removed;
        ``max_bytes``: the WAVs left total at most this.
        """
        if not self.directory.exists():
            return 0
        now = time.time()
        entries: list[tuple[float, int, Path]] = []
        for p in self.directory.glob("*.wav"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        entries.sort()
        removed = 0
        total = sum(e[1] for e in entries)
        for mtime, size, p in entries:
            too_old = max_age_s is not None and now - mtime > max_age_s
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            for victim in (p, Path(str(p) + ".txt")):  # the text file of older caches too
                try:
                    victim.unlink()
                except FileNotFoundError:
                    pass
            total -= size
            removed += 1
        # Temp files left by a crash mid-write.
        for tmp in self.directory.glob(".tmp-*"):
            try:
                if now - tmp.stat().st_mtime > 3600:
                    tmp.unlink()
            except OSError:
                pass
        return removed


class PromptWarmer:
    """Fixed prompts synthesised ahead, per (provider, voice, rate, language, text).

    A prompt counts as ready once one synthesis succeeded and a repeat costs
    nothing: the provider caches its output (a ``cache`` attribute, as the local
    TTS and Polly have) or the instruction needs no file at all (FreeSWITCH
    ``speak``). Warming runs in its own greenlets, not the call's, so a caller
    hanging up never leaves a half-written prompt behind (the cache is atomic
    anyway) and the next call finds it ready.
    """

    def __init__(self) -> None:
        self._ready: set[tuple[Any, ...]] = set()
        self._busy: set[tuple[Any, ...]] = set()

    @staticmethod
    def _key(tts: Any, text: str, voice: str, sample_rate: int, language: str
             ) -> tuple[Any, ...]:
        # by provider name and cache, not object: some providers are made per call
        return (getattr(tts, "name", "?"), id(getattr(tts, "cache", None)), voice, sample_rate,
                language, text)

    def ready(self, tts: Any, text: str, *, voice: str, sample_rate: int,
              language: str) -> bool:
        """True when playing ``text`` costs no synthesis latency now."""
        return self._key(tts, text, voice, sample_rate, language) in self._ready

    def warm(self, tts: Any, texts: Iterable[str], *, voice: str, sample_rate: int,
             language: str) -> list[gevent.Greenlet]:
        """Start synthesising whichever of ``texts`` is not ready yet (returns at once)."""
        jobs = []
        for text in texts:
            key = self._key(tts, text, voice, sample_rate, language)
            if key in self._ready or key in self._busy:
                continue
            self._busy.add(key)
            jobs.append(gevent.spawn(self._one, tts, key, text, voice, sample_rate, language))
        return jobs

    def _one(self, tts: Any, key: tuple[Any, ...], text: str, voice: str, sample_rate: int,
             language: str) -> None:
        try:
            out = tts.synthesize(text, voice=voice, sample_rate=sample_rate, language=language)
            if out.app == "speak" or out.cached or getattr(tts, "cache", None) is not None:
                self._ready.add(key)
        except Exception as exc:  # noqa: BLE001 - without it the bot just says no "Okay."
            log.warning("could not pre-synthesise a prompt: %s", type(exc).__name__)
        finally:
            self._busy.discard(key)


#: The process's warmer (providers are shared by the process's calls).
WARMER = PromptWarmer()
