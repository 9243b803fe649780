"""A load-test stand-in for Amazon Transcribe: cloud latency, exact-audio "recognition".

Why: in the cloud profile the decoding happens at AWS, so the load test must
not bill pocketsphinx's CPU (and ~2 MB per call) to our server, yet the bot
must still hear what each emulated caller actually said, or conversations
would not progress and the turn figures would mean nothing.

How it learns the words, honestly:

- The load generator synthesises each distinct caller line once and, before
  its first frame goes out, registers the line's **audio fingerprint -> text**
  in a :class:`LineTable`: a directory of append-only JSON-lines files (one per
  emulator process) that the server processes read.
- A fingerprint is taken over the line's PCM trimmed to its first and last
  non-zero sample: CRC-32 of the first ``HEAD_BYTES`` (the lookup key), the
  trimmed length, and CRC-32 of all of it.
- The recogniser sees only the bytes that reached the media server. It finds
  segment starts (the first non-zero sample after at least ``MIN_GAP`` zero
  bytes), looks up the CRC of the next ``HEAD_BYTES``, and on a hit keeps a
  running CRC until the candidate's length has arrived. Only when the complete
  line arrived bit-exact is its text "heard". Anything else (unregistered
  audio, a corrupted or truncated line, frames lost or reordered in the
  server) yields no words: at the end of the turn the final is empty with
  confidence 0, never the right answer by accident.

It consumes audio the way :class:`~esl_app.providers.stt.transcribe.TranscribeStream`
does: buffered to ``chunk_ms`` (100 ms) before any work, so per-frame cost is
one ``bytearray`` append. ``finalize()`` (our VAD heard the end of the turn)
delivers the final after the profile's drawn latency (100-300 ms in the cloud
profile), like Transcribe's time from end of speech to the final result.
Partials are not emitted (the call engine barges in on its own VAD), hints are
ignored (as by Transcribe). This measures our server, not recognition accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent

from esl_app.providers.stt.base import SttCapabilities, TranscriptEvent

__all__ = ["EmulatedTranscribe", "EmulatedTranscribeStream", "LineTable", "TABLE_ENV",
           "fingerprint"]

log = logging.getLogger(__name__)

TABLE_ENV = "IVR_EMULATED_STT_TABLE"
HEAD_BYTES = 1600  # 100 ms of 8 kHz L16: the lookup key's span
MIN_GAP = 40  # zero bytes (20 samples) that must precede a segment start
_GAP = bytes(MIN_GAP)


def _trim(pcm: bytes) -> tuple[int, int]:
    """(start, end) of ``pcm`` from its first to its last non-zero sample (whole samples)."""
    lead = len(pcm) - len(pcm.lstrip(b"\0"))
    if lead == len(pcm):
        return 0, 0
    last = len(pcm.rstrip(b"\0")) - 1
    return lead & ~1, (last | 1) + 1


def fingerprint(pcm: bytes) -> tuple[int, int, int] | None:
    """(head CRC, trimmed length, full CRC) of a line's PCM; None if too short to key."""
    start, end = _trim(pcm)
    if end - start < HEAD_BYTES:
        return None
    body = pcm[start:end]
    return zlib.crc32(body[:HEAD_BYTES]), len(body), zlib.crc32(body)


class LineTable:
    """Fingerprint -> text, shared through a directory of append-only JSONL files.

    Writers (emulator processes) append to their own ``<pid>.jsonl``; readers
    (server workers) read what was appended since their last look whenever a
    lookup misses, so a line registered before its audio is sent is always found.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._by_head: dict[int, list[tuple[int, int, str]]] = {}
        self._offsets: dict[str, int] = {}
        self._mine: set[tuple[int, int, int]] = set()

    def register(self, text: str, pcm: bytes) -> bool:
        """Publish one line (idempotent per process); False if it is too short to key."""
        fp = fingerprint(pcm)
        if fp is None:
            return False
        if fp in self._mine:
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"h": fp[0], "n": fp[1], "c": fp[2], "t": text}) + "\n"
        fd = os.open(self.path / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self._mine.add(fp)
        self._add(*fp, text)
        return True

    def _add(self, head: int, n: int, crc: int, text: str) -> None:
        cands = self._by_head.setdefault(head, [])
        if (n, crc, text) not in cands:
            cands.append((n, crc, text))
            cands.sort()

    def refresh(self) -> None:
        """Read lines appended since the last look (complete lines only)."""
        try:
            files = list(self.path.glob("*.jsonl"))
        except OSError:
            return
        for f in files:
            key = f.name
            off = self._offsets.get(key, 0)
            try:
                if f.stat().st_size <= off:
                    continue
                with f.open("rb") as fh:
                    fh.seek(off)
                    data = fh.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1
            for raw in data[:end].splitlines():
                try:
                    d = json.loads(raw)
                    self._add(int(d["h"]), int(d["n"]), int(d["c"]), str(d["t"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("emulated STT table %s: bad line skipped", key)
            self._offsets[key] = off + end

    def lookup(self, head: int) -> list[tuple[int, int, str]]:
        """Candidates (length, CRC, text) whose first ``HEAD_BYTES`` have this CRC."""
        cands = self._by_head.get(head)
        if cands is None:
            self.refresh()
            cands = self._by_head.get(head, [])
        return cands

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_head.values())


class EmulatedTranscribe:
    """An ``SttProvider``: Transcribe's batching and latency, words from a :class:`LineTable`."""

    name = "transcribe-emulated"
    capabilities = SttCapabilities(streaming=True, partials=False, sample_rates=(8000, 16000),
                                   hints=False)

    def __init__(self, table: LineTable | str | os.PathLike[str],
                 delay: Callable[[], float] | None = None, *, chunk_ms: int = 100) -> None:
        """``delay()`` draws the seconds from end of speech to the final (default: none)."""
        self.table = table if isinstance(table, LineTable) else LineTable(table)
        self.delay = delay or (lambda: 0.0)
        self.chunk_ms = chunk_ms
        self.heard = 0  # lines recognised (for benches)
        self.finals = 0

    def open_stream(self, call_id: str, sample_rate: int, language: str,
                    on_event: Callable[[TranscriptEvent], None],
                    hints: Sequence[str] = ()) -> EmulatedTranscribeStream:
        """One call's stream; nothing runs until audio arrives."""
        return EmulatedTranscribeStream(self, sample_rate, on_event)


class EmulatedTranscribeStream:
    """One call: a small state machine over 100 ms chunks (see the module notes)."""

    __slots__ = ("provider", "_on_event", "_buf", "_chunk", "_zeros", "_head", "_cands",
                 "_crc", "_got", "_heard", "_pos", "_timer", "closed", "bytes_fed", "_match",
                 "_after", "_after_at")

    def __init__(self, provider: EmulatedTranscribe, sample_rate: int,
                 on_event: Callable[[TranscriptEvent], None]) -> None:
        self.provider = provider
        self._on_event = on_event
        self._buf = bytearray()
        self._chunk = max(320, sample_rate * 2 * provider.chunk_ms // 1000)
        self._zeros = MIN_GAP  # the stream starts as if after silence
        self._head: bytearray | None = None
        self._cands: list[tuple[int, int, str]] | None = None
        self._crc = 0
        self._got = 0
        self._heard: list[str] = []
        self._match: str | None = None  # matched; longer candidates with its start still open
        self._after: bytearray | None = None  # audio read since that match
        self._after_at = 0
        self._pos = 0  # stream bytes scanned (sample alignment)
        self._timer: Any = None
        self.closed = False
        self.bytes_fed = 0

    def feed(self, pcm: bytes) -> None:
        """Buffer audio; scan a chunk once ``chunk_ms`` have gathered."""
        if self.closed:
            return
        self._buf += pcm
        if len(self._buf) >= self._chunk:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self.bytes_fed += len(data)
            self._scan(data, self._pos)
            self._pos += len(data)

    def _scan(self, data: bytes, base: int) -> None:
        """Advance the state machine over ``data`` (stream offset ``base``)."""
        i, n = 0, len(data)
        while i < n:
            if self._head is not None:
                take = data[i:i + HEAD_BYTES - len(self._head)]
                self._head += take
                i += len(take)
                if len(self._head) == HEAD_BYTES:
                    crc, self._head = zlib.crc32(self._head), None
                    cands = self.provider.table.lookup(crc)
                    if cands:
                        self._cands = list(cands)
                        self._crc = crc
                        self._got = HEAD_BYTES
                        self._check(base + i)
                    else:
                        self._zeros = 0
            elif self._cands is not None:
                take = data[i:i + self._cands[0][0] - self._got]
                self._crc = zlib.crc32(take, self._crc)
                self._got += len(take)
                i += len(take)
                if self._after is not None:
                    self._after += take
                self._check(base + i)
            else:
                seg = data[i:] if i else data
                lead = len(seg) - len(seg.lstrip(b"\0"))
                if lead == len(seg):
                    self._zeros += lead
                    return
                if self._zeros + lead >= MIN_GAP:
                    start = i + lead
                    if (base + start) & 1:
                        start -= 1  # the sample whose high byte is the first non-zero one
                    self._head = bytearray()
                    i = start
                    continue
                j = seg.find(_GAP, lead)
                if j < 0:
                    self._zeros = len(seg) - len(seg.rstrip(b"\0"))
                    return
                self._zeros = 0
                i += j

    def _check(self, at: int) -> None:
        """Settle candidates whose length has arrived (``at``: stream offset now).

        A match with longer candidates still open (their audio starts the same) waits
        for them; if they fail, it stands, and the audio read meanwhile is scanned again
        (the caller's next line may have begun in it).
        """
        cands = self._cands
        assert cands is not None
        while cands and cands[0][0] <= self._got:
            n, crc, text = cands.pop(0)
            if n == self._got and crc == self._crc:
                self._match = text
                self._after = bytearray() if cands else None
                self._after_at = at
        if not cands:
            self._cands = None
            self._zeros = 0
            self._commit()

    def _commit(self) -> None:
        self._cands = None
        if self._match is None:
            return
        self._heard.append(self._match)
        self.provider.heard += 1
        self._match = None
        after, self._after = self._after, None
        if after:
            self._zeros = 0
            self._scan(bytes(after), self._after_at)

    def finalize(self) -> None:
        """End of the caller's turn: the complete lines heard since the last one, late."""
        if self.closed:
            return
        self._flush()
        if self._match is not None:  # longer candidates still open: the turn ended first
            self._commit()
        text = " ".join(self._heard)
        self._heard.clear()
        ev = TranscriptEvent("final", text, 0.95 if text else 0.0)
        self.provider.finals += 1
        wait = self.provider.delay()

        prev = self._timer

        def deliver() -> None:
            if prev is not None and not prev.dead:  # an earlier final still waits: keep order
                prev.join()
            if not self.closed:
                self._on_event(ev)
            if self._timer is g:
                self._timer = None

        g = self._timer = gevent.spawn_later(wait, deliver)

    def set_hints(self, hints: Sequence[str]) -> None:
        """Ignored, as by Transcribe (custom vocabularies are fixed at stream start)."""

    def close(self) -> None:
        """Drop everything; a final still waiting is not delivered."""
        if self.closed:
            return
        self.closed = True
        self._buf = bytearray()
        if self._timer is not None:
            self._timer.kill(block=False)
            self._timer = None
