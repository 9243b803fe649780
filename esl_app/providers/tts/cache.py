"""The on-disk prompt cache: synthesise a (provider, voice, rate, text) once.

Greetings and fixed prompts repeat on every call; synthesising them again would
add latency to each turn. Files live in a directory FreeSWITCH can read
(``playback /abs/path.wav``); beside every ``<key>.wav`` sits ``<key>.wav.txt``
with the plain text, which the emulator reads to report what the bot said.

Writes are atomic (temp file in the same directory, then ``os.replace``; the
text file is written before the WAV, so a visible WAV always has its text).
Concurrent misses of one key in a process synthesise once (single flight).
Cleanup is explicit: :meth:`PromptCache.prune` by age (last use) and total size.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gevent.event

__all__ = ["CachedPrompt", "PromptCache", "cache_key"]

DEFAULT_DIR = "./var/prompts"


def cache_key(provider: str, voice: str, rate: int, text: str) -> str:
    """sha256 over the four fields (unambiguous: NUL separated)."""
    raw = "\0".join((provider, voice, str(rate), text)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class CachedPrompt:
    """A synthesised prompt on disk."""

    path: Path
    text_path: Path
    cached: bool  # True when it was already there


class PromptCache:
    """Content-addressed WAV prompts with hit/miss counters."""

    def __init__(self, directory: str | Path = DEFAULT_DIR) -> None:
        self.directory = Path(directory).resolve()
        self.hits = 0
        self.misses = 0
        self._inflight: dict[str, gevent.event.AsyncResult] = {}

    def path_for(self, key: str) -> Path:
        """Where the WAV of ``key`` lives."""
        return self.directory / f"{key}.wav"

    def lookup(self, provider: str, voice: str, rate: int, text: str) -> Path | None:
        """The cached WAV, or None; counts nothing (see :meth:`get_or_create`)."""
        path = self.path_for(cache_key(provider, voice, rate, text))
        return path if path.exists() else None

    def get_or_create(self, provider: str, voice: str, rate: int, text: str,
                      plain_text: str, synth: Callable[[Path], None]) -> CachedPrompt:
        """Return the prompt, calling ``synth(tmp_wav_path)`` on a miss.

        ``synth`` must write a complete WAV to the path it is given (it may
        block the greenlet cooperatively). ``plain_text`` goes to the .txt file.
        """
        key = cache_key(provider, voice, rate, text)
        path = self.path_for(key)
        txt = Path(str(path) + ".txt")
        if path.exists():
            self.hits += 1
            try:
                os.utime(path)  # last use, for age-based pruning
            except OSError:
                pass
            return CachedPrompt(path, txt, True)
        pending = self._inflight.get(key)
        if pending is not None:  # another greenlet is synthesising it right now
            pending.get()
            self.hits += 1
            return CachedPrompt(path, txt, True)
        self.misses += 1
        result = self._inflight[key] = gevent.event.AsyncResult()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._atomic_write(txt, lambda p: p.write_text(plain_text + "\n", encoding="utf-8"))
            self._atomic_write(path, synth)
            result.set(path)
        except BaseException as exc:
            result.set_exception(exc)
            raise
        finally:
            del self._inflight[key]
        return CachedPrompt(path, txt, False)

    def _atomic_write(self, final: Path, write: Callable[[Path], None]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=final.suffix, dir=self.directory)
        os.close(fd)
        try:
            write(Path(tmp))
            os.chmod(tmp, 0o644)  # FreeSWITCH may run as another user
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

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

        ``max_age_s``: unused (mtime, refreshed on every hit) for longer is removed;
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
            for victim in (p, Path(str(p) + ".txt")):
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
