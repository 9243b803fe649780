"""Offline speech-to-text: pocketsphinx with a clinic-booking language model.

Design (why each choice; figures from ``bench/bench_media.py``):

- **Domain language model** (:mod:`esl_app.providers.stt.lexicon`). The generic
  English model makes nonsense of telephone speech; a small trigram model of
  what callers say to a booking line, plus the call's hints (doctor names,
  yes/no, digits… with the family of answers each stands for), recognises it
  nearly word for word.
- **One model per dialogue state** (:func:`~esl_app.providers.stt.lexicon.turn_sentences`):
  the agent's hints say what was asked (yes/no, a choice among offers, a day,
  a doctor, digits). That turn's model weights the hints 10x and leaves out
  the alternatives the question cannot have (un-offered ordinals, names of
  other doctors, person names in a yes/no or day answer): the acoustic model
  hears espeak's /s/ weakly ("Smith" as "Lee", "first" as "third"), and
  only removing the competitor fixes that. The rest of the domain model
  stays, so an off-script answer is still heard. Models are built once per
  distinct hint set and cached per decoder (``MAX_SEARCHES``).
- **One batch decode per turn.** The stream buffers the turn's audio and
  decodes it whole when ``finalize()`` is called. Why: the acoustic model wants
  batch cepstral mean normalisation (live CMN starts from a generic mean and
  loses the first words; pocketsphinx also silently switches a decoder to live
  CMN for good after one streamed utterance, which made results depend on
  which decoder a call got). A whole-utterance decode needs no CMN warm-up, has
  no race between the last frames and the final result (the audio is complete
  before decoding starts), and gives the same text for the same audio. Cost:
  no partial hypotheses (the call engine does not use them) and the final
  comes ~0.1-0.3 s after finalize instead of at once.
- **A noise floor.** espeak-ng (and any digitally silent line) produces exact
  zeros; their log filter-bank energies are far outside what the model was
  trained on, and the telephone band leaves 4-8 kHz empty. Adding a fixed,
  seeded white noise (std :data:`NOISE_STD`) before decoding cut the word error
  rate from 0.55 to 0.21 on the espeak set; real lines already carry this
  much noise, so it costs them nothing. Seeded: same audio, same text.
- **8 kHz input is upsampled to 16 kHz** (:class:`esl_app.media.pcm.Upsampler`):
  the bundled acoustic model is 16 kHz only; decoding at 8 kHz with narrowed
  filter banks (edited ``feat.params``) was measured far worse (WER 0.95).
- **A shared pool of decoders** (:class:`DecoderPool`): each is a few MB with
  the domain model; decoding is CPU-bound, so only ``decoders`` run at once,
  in the ``esl_app.support.bridge`` thread pool ``stt``; a turn waits for a free one.
  Results return through a :class:`~esl_app.support.bridge.HubChannel`, so
  ``on_event`` runs in a greenlet, in finalize order, one ``final`` per
  ``finalize()`` (``""`` if nothing was heard).
"""

from __future__ import annotations

import array
import collections
import hashlib
import logging
import os
import random
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.event
from gevent import monkey

from esl_app.media.pcm import Upsampler
from esl_app.media.vad import VoiceDetector
from esl_app.providers.stt.base import SttCapabilities, SttError, TranscriptEvent
from esl_app.providers.stt.lexicon import (
    DOMAIN_SENTENCES,
    build_arpa,
    normalize_words,
    turn_sentences,
)
from esl_app.support import bridge

try:  # stdlib up to 3.12, the audioop-lts backport after
    import audioop as _audioop  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover
    _audioop = None

__all__ = [
    "DOMAIN_SENTENCES",
    "NOISE_STD",
    "DecoderPool",
    "LocalStt",
    "LocalSttStream",
    "build_arpa",
    "normalize_words",
]

log = logging.getLogger(__name__)

NOISE_STD = 200  # white noise floor added before decoding (16-bit sample units)
DECODER_OPTIONS: dict[str, Any] = {"lw": 9.0}  # LM weight: 9 beat 6.5 (default) and 12


# ----------------------------------------------------------------- audio conditioning

_NOISE: bytes | None = None


def _noise(nbytes: int) -> bytes:
    """``nbytes`` of the fixed noise floor (one seeded second, repeated)."""
    global _NOISE
    if _NOISE is None:
        rnd = random.Random(20240607)
        a = array.array("h", (max(-32768, min(32767, round(rnd.gauss(0, NOISE_STD))))
                              for _ in range(16000)))
        if sys.byteorder == "big":
            a.byteswap()
        _NOISE = a.tobytes()
    reps = nbytes // len(_NOISE) + 1
    return (_NOISE * reps)[:nbytes]


def condition(pcm: bytes, sample_rate: int, out_rate: int = 16000) -> bytes:
    """Turn audio as the decoder wants it: 16 kHz, with the noise floor added."""
    audio = Upsampler(sample_rate, out_rate).process(pcm)
    audio = audio[: len(audio) - len(audio) % 2]
    noise = _noise(len(audio))
    if _audioop is not None:
        return bytes(_audioop.add(audio, noise, 2))
    a, n = array.array("h", audio), array.array("h", noise)
    if sys.byteorder == "big":
        a.byteswap()
        n.byteswap()
    out = array.array("h", (max(-32768, min(32767, x + y)) for x, y in zip(a, n, strict=True)))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


# ----------------------------------------------------------------- decoder pool

class _Slot:
    """One decoder (created lazily in its worker thread) and its loaded models."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.decoder: Any = None
        self.searches: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.words: set[str] = set()


class DecoderPool:
    """A bounded set of pocketsphinx decoders shared by every stream (hub-side).

    ``acquire(callback)`` calls ``callback(slot)`` on the hub as soon as a decoder
    is free (at once if one is); ``release(slot)`` may be called from any thread.
    """

    MAX_SEARCHES = 8  # hint models kept loaded per decoder

    def __init__(self, size: int = 2, samprate: int = 16000) -> None:
        self.size = size
        self.samprate = samprate
        self._free: list[_Slot] = [_Slot(i) for i in range(size)]
        self._waiters: collections.deque[Callable[[_Slot], None]] = collections.deque()
        self._releases: bridge.HubChannel | None = None
        self._pron: dict[str, str] | None = None
        self._lm_lock = monkey.get_original("threading", "Lock")()  # real: used by threads
        self._tmpdir = tempfile.mkdtemp(prefix="ivr-stt-")
        self.busy = 0

    def _channel(self) -> bridge.HubChannel:
        if self._releases is None:
            self._releases = bridge.HubChannel()
            self._releases.deliver_to(self._release_on_hub)
        return self._releases

    def acquire(self, callback: Callable[[_Slot], None]) -> None:
        """Lease a decoder; ``callback`` runs on the hub when one is available."""
        self._channel()
        if self._free:
            self.busy += 1
            callback(self._free.pop())
        else:
            self._waiters.append(callback)

    def cancel(self, callback: Callable[[_Slot], None]) -> None:
        """Withdraw a pending :meth:`acquire`."""
        try:
            self._waiters.remove(callback)
        except ValueError:
            pass

    def release(self, slot: _Slot) -> None:
        """Return a decoder (any thread)."""
        self._channel().put(slot)

    def _release_on_hub(self, slot: _Slot) -> None:
        if self._waiters:
            self._waiters.popleft()(slot)
        else:
            self.busy -= 1
            self._free.append(slot)

    # -- in worker threads ------------------------------------------------------

    def _pronunciations(self) -> dict[str, str]:
        """The cmudict as word -> phones, read once (0.3 s, in a worker thread).

        Why: a decoder loaded with the full 135k-word dictionary takes 5-20 s to
        attach a small language model; with only the model's words it takes ms.
        """
        with self._lm_lock:
            if self._pron is None:
                from pocketsphinx import get_model_path

                pron: dict[str, str] = {}
                path = os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        word, _, phones = line.partition(" ")
                        pron.setdefault(word, phones.strip())
                self._pron = pron
            return self._pron

    def _model_files(self, name: str, sentences: Iterable[str]) -> tuple[str, str, set[str]]:
        """Write (once) the ARPA model and its dictionary; returns paths and vocabulary."""
        pron = self._pronunciations()
        kept: list[str] = []
        for s in sentences:
            run: list[str] = []
            for w in s.split():  # split at words the dictionary cannot pronounce
                if w in pron:
                    run.append(w)
                elif run:
                    kept.append(" ".join(run))
                    run = []
            if run:
                kept.append(" ".join(run))
        vocab = {w for s in kept for w in s.split()}
        lm = os.path.join(self._tmpdir, f"{name}.arpa")
        dic = os.path.join(self._tmpdir, f"{name}.dict")
        with self._lm_lock:
            if not os.path.exists(lm):
                for path, text in ((dic, "".join(f"{w} {pron[w]}\n" for w in sorted(vocab))),
                                   (lm, build_arpa(kept))):
                    tmp = f"{path}.{threading.get_ident()}"
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(text)
                    os.replace(tmp, path)
        return lm, dic, vocab

    def prepare(self, slot: _Slot, hints: Sequence[str]) -> Any:
        """Make the slot's decoder exist and select the model for ``hints`` (thread)."""
        from pocketsphinx import Decoder  # lazy: heavy import, optional at runtime

        if slot.decoder is None:
            lm, dic, vocab = self._model_files("base", DOMAIN_SENTENCES)
            slot.decoder = Decoder(samprate=self.samprate, loglevel="FATAL", lm=lm, dict=dic,
                                   **DECODER_OPTIONS)
            slot.words = set(vocab)
            slot.searches.clear()
            slot.searches["_default"] = None
        d = slot.decoder
        if not hints:
            name = "_default"
        else:
            name = "h" + hashlib.sha1("\n".join(sorted(hints)).encode()).hexdigest()[:16]
            if name not in slot.searches:
                lm, _dic, vocab = self._model_files(name, turn_sentences(hints))
                pron = self._pronunciations()
                for w in sorted(vocab - slot.words):
                    d.add_word(w, pron[w], False)
                    slot.words.add(w)
                d.add_lm_file(name, lm)
                slot.searches[name] = None
                while len(slot.searches) > self.MAX_SEARCHES + 1:
                    old = next(k for k in slot.searches if k != "_default")
                    del slot.searches[old]
                    d.remove_search(old)
        slot.searches.move_to_end(name)
        if d.current_search() != name:
            d.activate_search(name)
        return d

    def decode(self, slot: _Slot, pcm: bytes, sample_rate: int, hints: Sequence[str]) -> str:
        """Recognise one whole utterance (worker thread); deterministic for the same input.

        ``full_utt=True`` makes pocketsphinx normalise with the utterance's own
        cepstral mean and reset its search, so nothing carries over from the
        previous caller who used this decoder.
        """
        d = self.prepare(slot, hints)
        audio = condition(pcm, sample_rate, self.samprate)
        d.start_utt()
        d.process_raw(audio, False, True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp else ""


# ----------------------------------------------------------------- streams

_DONE = object()  # a worker finished a turn (after its events)

class LocalSttStream:
    """One call's recogniser (implements ``SttStream``)."""

    PREROLL_MS = 400  # audio kept from before the gate opened (soft onsets)
    TAIL_MS = 500  # audio kept after the last voiced frame (soft endings: "th", "s")
    GATE_MS = 60  # voiced audio that opens the gate (an utterance has begun)
    MIN_SPEECH_MS = 100  # less voiced audio than this is a click or a cough: "" undecoded
    MIN_RMS = 100.0  # a voiced frame this quiet is webrtcvad's hangover after a burst
    AUTO_END_MS = 4000  # close an utterance nobody finalised after this much silence
    MAX_UTTERANCE_MS = 30000  # bound on buffered audio per turn

    def __init__(self, provider: LocalStt, call_id: str, sample_rate: int,
                 on_event: Callable[[TranscriptEvent], None], hints: Sequence[str]) -> None:
        self.provider = provider
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.hints: tuple[str, ...] = tuple(hints)
        self._on_event = on_event
        self._results = bridge.HubChannel()
        self._results.deliver_to(self._deliver)
        self._gate = VoiceDetector(sample_rate, 1, 20)
        self._bytes_per_ms = 2 * sample_rate // 1000
        self._preroll: collections.deque[tuple[bytes, int]] = collections.deque()
        self._preroll_bytes = 0
        self._utt: list[bytes] | None = None  # None until the gate opens
        self._utt_bytes = 0
        self._voiced_end = 0  # byte offset in the utterance just after the last voiced frame
        self._voiced_run = 0
        self._voiced_ms = 0  # voiced audio in the current utterance
        self._jobs: collections.deque[tuple[bytes, tuple[str, ...]] | None] = \
            collections.deque()
        self._busy = False
        self._waiter: Callable[[_Slot], None] | None = None
        self._closed = False

    # -- SttStream ---------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Add caller audio; never blocks (decoding happens in a pool thread)."""
        if self._closed or not pcm:
            return
        frames = self._gate.process(pcm, with_level=True)
        voiced_ms = 20 * sum(f.voiced and (f.level or 0.0) >= self.MIN_RMS for f in frames)
        if self._utt is None:
            self._preroll.append((pcm, voiced_ms))
            self._preroll_bytes += len(pcm)
            limit = self.PREROLL_MS * self._bytes_per_ms
            while self._preroll_bytes - len(self._preroll[0][0]) >= limit:
                self._preroll_bytes -= len(self._preroll.popleft()[0])
            for f in frames:
                self._voiced_run = self._voiced_run + 20 if f.voiced else 0
            if self._voiced_run >= self.GATE_MS:
                self._utt = [p for p, _ in self._preroll]
                self._voiced_ms = sum(v for _, v in self._preroll)
                self._utt_bytes = self._preroll_bytes
                self._voiced_end = self._utt_bytes
                self._preroll.clear()
                self._preroll_bytes = 0
            return
        self._utt.append(pcm)
        self._utt_bytes += len(pcm)
        self._voiced_ms += voiced_ms
        if any(f.voiced for f in frames):
            self._voiced_end = self._utt_bytes
        silent_ms = (self._utt_bytes - self._voiced_end) // self._bytes_per_ms
        if silent_ms >= self.AUTO_END_MS or \
                self._utt_bytes >= self.MAX_UTTERANCE_MS * self._bytes_per_ms:
            self.finalize()

    def finalize(self) -> None:
        """End the utterance now: the ``final`` event follows as soon as decoded.

        Everything fed before this call is part of the utterance (the buffer is
        handed over whole), so the last word cannot be lost to a race.
        """
        if self._closed:
            return
        if self._utt is None or self._voiced_ms < self.MIN_SPEECH_MS:
            # Nothing heard, or only a click: an empty final, in order. Decoding a click
            # would make the language model guess a word, and a word barges in.
            self._jobs.append(None)
        else:
            audio = b"".join(self._utt)
            end = min(len(audio), self._voiced_end + self.TAIL_MS * self._bytes_per_ms)
            self._jobs.append((audio[:end], self.hints))
        self._utt = None
        self._utt_bytes = self._voiced_end = self._voiced_run = self._voiced_ms = 0
        self._preroll.clear()
        self._preroll_bytes = 0
        self._pump()

    def set_hints(self, hints: Sequence[str]) -> None:
        """Bias the next utterance toward these phrases."""
        self.hints = tuple(hints)

    def close(self) -> None:
        """Abort pending decoding and release the decoder; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._jobs.clear()
            if self._waiter is not None:
                self.provider.pool.cancel(self._waiter)
                self._waiter = None
            self._results.close()
        except Exception:  # noqa: BLE001 - close never raises
            log.exception("closing stt stream %s", self.call_id)

    # -- internals (hub) ---------------------------------------------------------

    def _pump(self) -> None:
        """Start the next queued turn unless one is being decoded (keeps finals in order)."""
        while not self._busy and self._jobs and not self._closed:
            job = self._jobs.popleft()
            if job is None:
                self._results.put(TranscriptEvent("final", ""))
                continue
            self._busy = True
            audio, hints = job

            def granted(slot: _Slot, audio: bytes = audio, hints: tuple[str, ...] = hints
                        ) -> None:
                self._waiter = None
                if self._closed:
                    self.provider.pool.release(slot)
                    return
                bridge.spawn_in_thread(self._decode, slot, audio, hints, pool="stt")

            self._waiter = granted
            self.provider.pool.acquire(granted)

    def _deliver(self, item: Any) -> None:
        """Hub greenlet: hand a result to the caller, then start the next turn."""
        if item is _DONE:
            self._busy = False
            self._pump()
            return
        self._on_event(item)

    def _decode(self, slot: _Slot, audio: bytes, hints: Sequence[str]) -> None:
        """Worker thread: decode one utterance, report it, return the decoder."""
        pool = self.provider.pool
        try:
            text = pool.decode(slot, audio, self.sample_rate, hints)
            self._results.put(TranscriptEvent("final", text))
        except Exception as exc:  # noqa: BLE001 - reported as an event
            log.exception("pocketsphinx failed for %s", self.call_id)
            slot.decoder = None  # rebuild it next time
            self._results.put(TranscriptEvent("error", str(exc)))
            self._results.put(TranscriptEvent("final", ""))
        finally:
            pool.release(slot)
            self._results.put(_DONE)


class LocalStt:
    """pocketsphinx provider (implements ``SttProvider``); one per process."""

    name = "local"
    capabilities = SttCapabilities(streaming=True, partials=False, sample_rates=(8000, 16000),
                                   hints=True)

    def __init__(self, decoders: int = 2) -> None:
        self.pool = DecoderPool(decoders)
        bridge.get_pool("stt", decoders)

    def open_stream(self, call_id: str, sample_rate: int, language: str,
                    on_event: Callable[[TranscriptEvent], None],
                    hints: Sequence[str] = ()) -> LocalSttStream:
        """Start recognising one call (English only: the bundled model)."""
        if sample_rate not in (8000, 16000):
            raise SttError(f"unsupported sample rate {sample_rate}")
        if not language.lower().startswith("en"):
            raise SttError(f"local stt only knows English, not {language}")
        return LocalSttStream(self, call_id, sample_rate, on_event, hints)

    def warm_up(self) -> None:
        """Create every decoder now (from a greenlet; ~0.5 s each in a thread)."""
        slots: list[_Slot] = []
        ready = gevent.event.Event()

        def got(slot: _Slot) -> None:
            slots.append(slot)
            if len(slots) == self.pool.size:
                ready.set()

        for _ in range(self.pool.size):
            self.pool.acquire(got)
        ready.wait()
        for slot in slots:
            bridge.run_in_thread(self.pool.prepare, slot, (), pool="stt")
            self.pool.release(slot)
