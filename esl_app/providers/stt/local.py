"""Offline speech-to-text: pocketsphinx with a clinic-booking language model.

Design (why each choice):

- **Domain language model.** pocketsphinx's generic English model makes
  nonsense of telephone speech ("i would like to book an appointment" ->
  "like look at all you"); a small trigram model of what callers say to a
  booking line (built here, in ARPA format, from templates) plus the call's
  hints (doctor names, dates, options the agent just offered) recognises it
  nearly word for word. Hints become extra sentences, so they bias rather than
  restrict (a grammar would reject anything off-script). Words missing from the
  pronunciation dictionary are dropped from the model.
- **A shared pool of decoders.** With the generic model a decoder is ~90 MB;
  with the domain model and a dictionary of just its words it is a few MB and
  starts in ~50 ms, but decoding is CPU-bound, so only a few run at once and a
  call only needs one while the caller speaks. A stream leases a decoder (and the OS thread that
  drives it) when its own light voice gate opens, and returns it at
  :meth:`LocalSttStream.finalize`. Audio arriving while every decoder is busy is
  buffered and decoded as soon as one frees up.
- **Decoding in real threads** (``esl_app.bridge`` pool ``stt``), so the gevent
  hub never waits on pocketsphinx; results come back through a
  :class:`~esl_app.bridge.HubChannel` and ``on_event`` runs in a greenlet.
- **8 kHz input is upsampled to 16 kHz** (:class:`esl_app.media.pcm.Upsampler`,
  linear interpolation): the bundled acoustic model is 16 kHz only.

Feed all of a call's audio; the stream decides itself when to decode. The call
engine calls ``finalize()`` when its VAD sees the end of the turn: the final
result follows at once (one ``final`` event per finalize, ``""`` if nothing
was heard).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import gevent.event
from gevent import monkey

from esl_app import bridge
from esl_app.media.pcm import Upsampler
from esl_app.media.vad import VoiceDetector
from esl_app.providers.stt.base import SttCapabilities, SttError, TranscriptEvent

__all__ = [
    "DOMAIN_SENTENCES",
    "DecoderPool",
    "LocalStt",
    "LocalSttStream",
    "build_arpa",
    "normalize_words",
]

log = logging.getLogger(__name__)
_SimpleQueue = monkey.get_original("queue", "SimpleQueue")

# ----------------------------------------------------------------- text

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000 and n % 100 == 0:
        return _ONES[n // 100] + " hundred"
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize_words(text: str) -> str:
    """Text as recogniser words: lower case, ``dr.`` -> doctor, digits spelt out."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\bdr\b\.?", "doctor ", t)
    t = re.sub(r"(\d{1,2}):(\d{2})", lambda m: f"{m.group(1)} {m.group(2)}"
               if m.group(2) != "00" else m.group(1), t)
    t = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    return " ".join(w.strip("'") for w in t.split() if w.strip("'"))


# ----------------------------------------------------------------- domain corpus

_FIRST = ("john mary james linda robert patricia michael jennifer david susan william "
          "elizabeth richard sarah joseph karen thomas nancy daniel lisa maria anna "
          "peter emily jane paul mark laura kevin helen").split()
_LAST = ("smith johnson williams brown jones garcia miller davis wilson anderson taylor "
         "thomas moore martin jackson white harris clark lewis lee walker hall allen young "
         "king wright lopez hill green adams baker nelson carter patel chen").split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_ORD = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
        "twentieth").split()
_ORD += [f"twenty {o}" for o in _ORD[:9]] + ["thirtieth", "thirty first"]

_BASE = """
i would like to book an appointment
i'd like to book an appointment
i want to book an appointment
i need to book an appointment
i would like to make an appointment
i need to make an appointment
can i make an appointment
i need an appointment
i want to see a doctor
i need to see a doctor
i would like to see the doctor
can i see a doctor this week
i would like to schedule a checkup
i need a checkup
i want to cancel my appointment
i need to cancel my appointment
please cancel my appointment
i can't make it
i would like to reschedule my appointment
i need to reschedule
can i move my appointment
can i change my appointment to another day
i'd like to speak to a person
can i talk to someone
let me talk to a real person
operator
receptionist please
it's an emergency
i have chest pain
what are your hours
when are you open
are you open on saturday
where are you located
what is your address
yes
yes please
yeah
yeah that works
yes that's right
that's correct
that works for me
sounds good
okay
sure
perfect
great thank you
no
no thank you
no thanks
nope
that's not right
none of those
the first one
the second one
the third one
the first one please
the earlier one
the later one
anything later
anything earlier
the earliest available
as soon as possible
the next available appointment
any doctor is fine
it doesn't matter
no preference
in the morning
in the afternoon
in the evening
morning please
afternoon please
morning is better
afternoon works
today
tomorrow
tomorrow morning
tomorrow afternoon
the day after tomorrow
this week
next week
my name is john smith
my name is mary johnson
this is robert brown
it's for my daughter
the appointment is for my son
my phone number is five five five one two three four five six seven
my number is five five five zero one zero one
my email is john at example dot com
my confirmation code is k seven m four q two
that's all thank you
that's it goodbye
goodbye
bye
thank you bye
can you repeat that
sorry what was that
i didn't catch that
""".strip().splitlines()


def _domain_sentences() -> list[str]:
    out = list(_BASE)
    for d in _DAYS:
        out += [d, f"on {d}", f"next {d}", f"this {d}", f"{d} morning", f"{d} afternoon",
                f"next {d} morning", f"can i come in on {d}", f"do you have anything on {d}",
                f"i would like an appointment on {d}"]
    for m, o in zip(itertools.cycle(_MONTHS), _ORD, strict=False):
        out += [f"{m} {o}", f"on {m} {o}", f"the {o}", f"on the {o}"]
    for m in _MONTHS:
        out += [f"{m} first", f"in {m}"]
    for h in range(1, 13):
        hw = _number_words(h)
        out += [f"at {hw}", f"{hw} o'clock", f"{hw} thirty", f"at {hw} thirty",
                f"{hw} fifteen", f"{hw} forty five", f"{hw} a m", f"{hw} p m",
                f"at {hw} in the morning", f"at {hw} in the afternoon"]
    for i, first in enumerate(_FIRST):
        for last in (_LAST[i % len(_LAST)], _LAST[(i * 7 + 3) % len(_LAST)]):
            out += [f"my name is {first} {last}", f"{first} {last}", f"it's {first} {last}"]
    for last in _LAST:
        out += [f"doctor {last}", f"with doctor {last}", f"i want to see doctor {last}"]
    out += [" ".join(_ONES[int(c)] for c in f"{n:07d}") for n in (5550101, 5551234, 2025550)]
    out += [" ".join(chars) for chars in ("a b c", "d e f", "g h i", "j k l", "m n o",
                                           "p q r", "s t u", "v w x", "y z")]
    return out


DOMAIN_SENTENCES: tuple[str, ...] = tuple(_domain_sentences())

_CARRIERS = ("{h}", "{h} please", "with {h}", "i would like {h}", "yes {h}", "{h} is fine",
             "my name is {h}", "i want to see {h}", "on {h}", "at {h}")


def _hint_sentences(hints: Iterable[str]) -> list[str]:
    out: list[str] = []
    for h in hints:
        w = normalize_words(h)
        if w:
            out += [c.format(h=w) for c in _CARRIERS] + [w] * 3
    return out


def build_arpa(sentences: Iterable[str], order: int = 3, discount: float = 0.5) -> str:
    """A backoff n-gram model (absolute discounting) in ARPA text format.

    Small and exact enough for a few thousand domain sentences; unigrams get
    add-one smoothing so every vocabulary word stays reachable.
    """
    counts: list[collections.Counter[tuple[str, ...]]] = [
        collections.Counter() for _ in range(order + 1)]
    for s in sentences:
        w = ["<s>", *s.split(), "</s>"]
        for n in range(1, order + 1):
            for i in range(len(w) - n + 1):
                counts[n][tuple(w[i:i + n])] += 1
    total = sum(c for (w,), c in counts[1].items() if w != "<s>")
    vocab = len(counts[1])
    probs: dict[tuple[str, ...], float | None] = {}
    for (w,), c in counts[1].items():
        probs[(w,)] = None if w == "<s>" else (c + 1) / (total + vocab)
    bows: dict[tuple[str, ...], float] = {}

    def full(ng: tuple[str, ...]) -> float:
        p = probs.get(ng)
        if p is not None:
            return p
        if len(ng) == 1:
            return 1.0 / (total + vocab)
        return bows.get(ng[:-1], 1.0) * full(ng[1:])

    for n in range(2, order + 1):
        by_hist: dict[tuple[str, ...], list[tuple[tuple[str, ...], int]]] = \
            collections.defaultdict(list)
        for ng, c in counts[n].items():
            by_hist[ng[:-1]].append((ng, c))
        for items in by_hist.values():
            tot = sum(c for _, c in items)
            for ng, c in items:
                probs[ng] = (c - discount) / tot
        for hist, items in by_hist.items():
            seen = sum(probs[ng] or 0.0 for ng, _ in items)
            lower = sum(full(ng[1:]) for ng, _ in items)
            bows[hist] = max(1e-9, (1 - seen) / max(1e-9, 1 - lower))
    lines = ["\\data\\"] + [f"ngram {n}={len(counts[n])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for ng in sorted(counts[n]):
            p = probs[ng]
            line = f"{-99.0 if p is None else math.log10(p):.4f} {' '.join(ng)}"
            if n < order:
                line += f" {math.log10(bows.get(ng, 1.0)):.4f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------- decoder pool

class _Slot:
    """One decoder (created lazily in its worker thread) and its loaded models."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.decoder: Any = None
        self.searches: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.words: set[str] = set()
        self.cmn0 = ""  # the fresh decoder's cepstral mean


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
            slot.decoder = Decoder(samprate=self.samprate, loglevel="FATAL", lm=lm, dict=dic)
            slot.cmn0 = slot.decoder.get_cmn(False)
            slot.words = set(vocab)
            slot.searches.clear()
            slot.searches["_default"] = None
        d = slot.decoder
        if not hints:
            name = "_default"
        else:
            name = "h" + hashlib.sha1("\n".join(sorted(hints)).encode()).hexdigest()[:16]
            if name not in slot.searches:
                lm, _dic, vocab = self._model_files(
                    name, itertools.chain(DOMAIN_SENTENCES, _hint_sentences(hints)))
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


# ----------------------------------------------------------------- streams

_FINAL = object()
_ABORT = object()


class LocalSttStream:
    """One call's recogniser (implements ``SttStream``)."""

    PREROLL_MS = 400
    GATE_MS = 60  # voiced audio that opens the gate (and leases a decoder)
    AUTO_END_MS = 4000  # close an utterance nobody finalised after this much silence
    PARTIAL_EVERY = 10  # chunks between partial hypotheses

    def __init__(self, provider: LocalStt, call_id: str, sample_rate: int,
                 on_event: Callable[[TranscriptEvent], None], hints: Sequence[str]) -> None:
        self.provider = provider
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.hints: tuple[str, ...] = tuple(hints)
        self._events = bridge.HubChannel()
        self._events.deliver_to(on_event)
        self._gate = VoiceDetector(sample_rate, 1, 20)
        self._preroll: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._preroll_ms = 0
        self._state = "idle"  # idle | waiting | active
        self._pending: list[bytes] = []
        self._final_pending = False
        self._voiced_run = 0
        self._silence = 0
        self._queue: Any = None
        self._closed = False
        self._waiter: Callable[[_Slot], None] | None = None
        self._cmn: str | None = None

    # -- SttStream ---------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Add caller audio; never blocks (decoding happens in a pool thread)."""
        if self._closed or not pcm:
            return
        frames = self._gate.process(pcm)
        voiced = any(f.voiced for f in frames)
        if self._state == "idle":
            self._preroll.append((pcm, voiced))
            self._preroll_ms += len(pcm) * 1000 // (2 * self.sample_rate)
            while self._preroll_ms > self.PREROLL_MS and len(self._preroll) > 1:
                old, _ = self._preroll.popleft()
                self._preroll_ms -= len(old) * 1000 // (2 * self.sample_rate)
            for f in frames:
                self._voiced_run = self._voiced_run + 20 if f.voiced else 0
            if self._voiced_run >= self.GATE_MS:
                self._open()
            return
        for f in frames:
            self._silence = 0 if f.voiced else self._silence + 20
        if self._state == "waiting":
            self._pending.append(pcm)
        else:
            self._queue.put(pcm)
        if self._silence >= self.AUTO_END_MS and not self._final_pending:
            self.finalize()

    def finalize(self) -> None:
        """End the utterance now: the ``final`` event follows as soon as decoded."""
        if self._closed:
            return
        if self._state == "idle":
            if not any(v for _, v in self._preroll):
                self._events.put(TranscriptEvent("final", ""))
                return
            self._open()
        if self._state == "waiting":
            self._final_pending = True
            return
        self._queue.put(_FINAL)
        self._reset_idle()

    def set_hints(self, hints: Sequence[str]) -> None:
        """Bias the next utterance toward these phrases."""
        self.hints = tuple(hints)

    def close(self) -> None:
        """Abort any decoding and release the decoder; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._state == "active":
                self._queue.put(_ABORT)
            elif self._state == "waiting" and self._waiter is not None:
                self.provider.pool.cancel(self._waiter)
            self._events.close()
        except Exception:  # noqa: BLE001 - close never raises
            log.exception("closing stt stream %s", self.call_id)

    # -- internals ---------------------------------------------------------------

    def _reset_idle(self) -> None:
        self._state = "idle"
        self._queue = None
        self._pending = []
        self._final_pending = False
        self._voiced_run = 0
        self._silence = 0
        self._preroll.clear()
        self._preroll_ms = 0

    def _open(self) -> None:
        self._state = "waiting"
        self._pending = [p for p, _ in self._preroll]
        self._preroll.clear()
        self._preroll_ms = 0
        self._silence = 0

        def granted(slot: _Slot) -> None:
            self._waiter = None
            if self._closed:
                self.provider.pool.release(slot)
                return
            q = _SimpleQueue()
            for p in self._pending:
                q.put(p)
            final = self._final_pending
            self._state = "active"
            self._queue = q
            self._pending = []
            bridge.spawn_in_thread(self._decode, slot, q, self.hints, pool="stt")
            if final:
                self.finalize()

        self._waiter = granted
        self.provider.pool.acquire(granted)

    def _decode(self, slot: _Slot, q: Any, hints: Sequence[str]) -> None:
        """Worker thread: decode one utterance from ``q`` until _FINAL or _ABORT."""
        pool = self.provider.pool
        up = Upsampler(self.sample_rate, pool.samprate)
        emit = self._events.put
        try:
            d = pool.prepare(slot, hints)
            # Channel normalisation adapts per call, never across calls sharing a decoder
            # (results would depend on who spoke before, and calls would leak into each other).
            first = self._cmn is None
            d.set_cmn(self._cmn or slot.cmn0)
            d.start_utt()
            n, last = 0, ""
            kept: list[bytes] = []
            while True:
                item = q.get()
                if item is _ABORT:
                    d.end_utt()
                    return
                if item is _FINAL:
                    d.end_utt()
                    self._cmn = d.get_cmn(False)
                    if first:
                        # The call's first utterance: decode again with the channel mean
                        # it taught us (the generic initial mean costs many words).
                        d.set_cmn(self._cmn)
                        d.start_utt()
                        d.process_raw(b"".join(kept), False, True)
                        d.end_utt()
                    hyp = d.hyp()
                    emit(TranscriptEvent("final", hyp.hypstr if hyp else ""))
                    return
                audio = up.process(item)
                if first:
                    kept.append(audio)
                d.process_raw(audio, False, False)
                n += 1
                if n % self.PARTIAL_EVERY == 0:
                    hyp = d.hyp()
                    text = hyp.hypstr if hyp else ""
                    if text and text != last:
                        last = text
                        emit(TranscriptEvent("partial", text))
        except Exception as exc:  # noqa: BLE001 - reported as an event
            log.exception("pocketsphinx failed for %s", self.call_id)
            emit(TranscriptEvent("error", str(exc)))
            try:
                slot.decoder = None  # rebuild it next time
            except Exception:  # noqa: BLE001
                pass
        finally:
            pool.release(slot)


class LocalStt:
    """pocketsphinx provider (implements ``SttProvider``); one per process."""

    name = "local"
    capabilities = SttCapabilities(streaming=True, partials=True, sample_rates=(8000, 16000),
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
