"""Emulated cloud latency: wrappers that make local providers wait like AWS would.

Why: the load test and ``bench/bench_turn.py`` must show what a caller would
wait with the real providers (the original design's estimate: Transcribe
100–300 ms from end of speech to the final transcript, the Bedrock agent
500–1500 ms, Polly 200–500 ms to the first audio) without calling AWS. The
wrappers sleep cooperatively (``gevent.sleep``), so a sleeping call costs
nothing but a timer, exactly like a call waiting on the network.

Profiles: ``local`` (no added latency), ``cloud``, and ``cloud-stt`` (only the
recogniser's latency: what a turn costs our own server under audio load). Draws
are uniform within each range and come from a seeded :class:`random.Random`, so
a run is repeatable (``--profile-seed``). Cached prompts (``PlayInstruction.cached``)
add no TTS latency: a cache hit never reaches Polly. In the cloud profile the
local TTS is replaced by :class:`EmulatedPolly` (silent prompts of the right
length), because espeak's CPU would otherwise be billed to our server when
in production that work happens at AWS.

Streaming agents (:meth:`SlowAgent.respond_stream`): the drawn 500–1500 ms
stays the time to the *complete* reply. Text is released back from that point
at :data:`STREAM_CHARS_PER_S` (about 100 tokens/s of a Claude-class model
at ~4 characters per token: faster than Sonnet-class output, about Haiku-class,
so the first sentence is credited with *less* head start, not more), and never
before :data:`STREAM_FIRST_S` (an agent's orchestration and the model's time to
first token). A 45-character second sentence thus lets the first one out about
110 ms early; nothing arrives later than without streaming, and nothing makes
the profile faster than the original design's figures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gevent

from esl_app.providers.agent.base import (
    AgentError,
    AgentReply,
    AgentStream,
    CallContext,
    Utterance,
    greet_stream,
    respond_stream,
)
from esl_app.providers.stt.base import TranscriptEvent
from esl_app.providers.tts.base import PlayInstruction

__all__ = [
    "CLOUD",
    "CLOUD_STT",
    "LOCAL",
    "EmulatedPolly",
    "PROFILES",
    "Delays",
    "LatencyProfile",
    "SlowAgent",
    "SlowStt",
    "SlowTts",
    "STREAM_CHARS_PER_S",
    "STREAM_FIRST_S",
    "get_profile",
    "make_provider_cache",
    "make_stt_factory",
]


@dataclass(frozen=True)
class LatencyProfile:
    """Added latency ranges in milliseconds (``None``: none added)."""

    name: str
    stt_final_ms: tuple[int, int] | None = None  # end of speech -> final transcript
    agent_ms: tuple[int, int] | None = None  # utterance -> agent reply
    tts_first_audio_ms: tuple[int, int] | None = None  # text -> first audio (cache miss)

    @property
    def adds_latency(self) -> bool:
        """True when any provider is slowed down."""
        return any((self.stt_final_ms, self.agent_ms, self.tts_first_audio_ms))


LOCAL = LatencyProfile("local")
CLOUD = LatencyProfile("cloud", stt_final_ms=(100, 300), agent_ms=(500, 1500),
                       tts_first_audio_ms=(200, 500))
#: Only the recogniser as in the cloud (emulated Transcribe in ``--audio`` load tests);
#: the agent answers at once and Polly's stand-in writes its prompts with no wait. The
#: turn then holds nothing but our own work, under the full load of real-time frames.
CLOUD_STT = LatencyProfile("cloud-stt", stt_final_ms=(100, 300), tts_first_audio_ms=(0, 0))
PROFILES: dict[str, LatencyProfile] = {p.name: p for p in (LOCAL, CLOUD, CLOUD_STT)}


def get_profile(name: str | LatencyProfile) -> LatencyProfile:
    """The profile called ``name``; ``ValueError`` naming the choices otherwise."""
    if isinstance(name, LatencyProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown latency profile '{name}' "
                         f"(choose {', '.join(sorted(PROFILES))})") from None


class Delays:
    """Seeded draws from a profile's ranges, plus what was drawn (for reports)."""

    def __init__(self, profile: LatencyProfile, seed: int | None = None) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.total_ms: dict[str, float] = {"stt": 0.0, "agent": 0.0, "tts": 0.0}
        self.count: dict[str, int] = {"stt": 0, "agent": 0, "tts": 0}

    def draw(self, kind: str) -> float:
        """Seconds to wait for ``kind`` (stt, agent, tts); 0 when the profile adds none."""
        span = {"stt": self.profile.stt_final_ms, "agent": self.profile.agent_ms,
                "tts": self.profile.tts_first_audio_ms}[kind]
        if span is None:
            return 0.0
        ms = self.rng.uniform(*span)
        self.total_ms[kind] += ms
        self.count[kind] += 1
        return ms / 1000.0


#: Emulated generation rate of a streamed reply (characters per second, ~100 tokens/s).
STREAM_CHARS_PER_S = 400.0
#: A streamed reply's first text never comes sooner than this after the request.
STREAM_FIRST_S = 0.35
_PIECE_CHARS = 16  # released in pieces of about four tokens


def release_schedule(text: str, total_s: float, *, rate: float = STREAM_CHARS_PER_S,
                     first_s: float = STREAM_FIRST_S) -> list[tuple[float, str]]:
    """(seconds after the request, piece) so that the last piece arrives at ``total_s``.

    Pieces end at word boundaries; piece *i* is due when its last character has been
    generated at ``rate``, counted back from ``total_s``; when that would put the
    first piece before ``first_s`` the generation is squeezed (never the total).
    """
    pieces: list[str] = []
    at = 0
    while at < len(text):
        cut = text.find(" ", at + _PIECE_CHARS)
        end = len(text) if cut < 0 else cut + 1
        pieces.append(text[at:end])
        at = end
    n = len(text)
    if not pieces or n == 0:
        return [(total_s, text)]
    gen = n / rate
    start = total_s - gen
    first_end = len(pieces[0])
    first_at = start + first_end / rate
    floor = min(first_s, total_s)
    if first_at < floor:  # squeeze: the first piece at the floor, the last still at total
        span = max(n - first_end, 1)
        out, pos = [], 0
        for p in pieces:
            pos += len(p)
            out.append((floor + (total_s - floor) * (pos - first_end) / span, p))
        return out
    out, pos = [], 0
    for p in pieces:
        pos += len(p)
        out.append((start + pos / rate, p))
    return out


class SlowAgent:
    """An agent that answers after the emulated cloud round trip.

    ``respond``/``greet`` return the whole reply after the drawn delay; the stream
    forms release its text piece by piece as a streaming model would (module doc).
    """

    #: it waits like a model service, so the call engine gives it a helper greenlet
    in_process = False

    def __init__(self, inner: Any, delays: Delays) -> None:
        self.inner = inner
        self.delays = delays
        self.name = getattr(inner, "name", "agent")

    def greet(self, call: CallContext) -> AgentReply:
        """The inner greeting, late."""
        gevent.sleep(self.delays.draw("agent"))
        return self.inner.greet(call)

    def respond(self, call: CallContext, utterance: Utterance) -> AgentReply:
        """The inner reply, late."""
        gevent.sleep(self.delays.draw("agent"))
        return self.inner.respond(call, utterance)

    def greet_stream(self, call: CallContext) -> AgentStream:
        """The inner greeting, released like a streamed model answer."""
        return self._released(lambda: greet_stream(self.inner, call))

    def respond_stream(self, call: CallContext, utterance: Utterance) -> AgentStream:
        """The inner reply, released like a streamed model answer."""
        return self._released(lambda: respond_stream(self.inner, call, utterance))

    def _released(self, make: Callable[[], Iterator[str | AgentReply]]) -> AgentStream:
        hub = gevent.get_hub().loop
        start = hub.now()
        total = self.delays.draw("agent")
        pieces: list[str] = []
        reply: AgentReply | None = None
        for item in make():  # the real work, done now; its time counts into the draw
            if isinstance(item, AgentReply):
                reply = item
                break
            pieces.append(item)
        if reply is None:
            raise AgentError("the agent's stream ended without a reply")
        text = "".join(pieces)
        if text:
            for due, piece in release_schedule(text, total):
                gevent.sleep(max(0.0, start + due - hub.now()))
                yield piece
        gevent.sleep(max(0.0, start + total - hub.now()))
        yield reply

    def end(self, call: CallContext) -> None:
        """Release at once (no latency on hang-up)."""
        self.inner.end(call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SlowTts:
    """A TTS whose uncached prompts take the emulated time to first audio."""

    def __init__(self, inner: Any, delays: Delays) -> None:
        self.inner = inner
        self.delays = delays
        self.name = getattr(inner, "name", "tts")
        self.capabilities = getattr(inner, "capabilities", None)

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """Synthesise; a cache miss waits the drawn latency (minus the real work done)."""
        start = gevent.get_hub().loop.now()
        out = self.inner.synthesize(text, voice=voice, sample_rate=sample_rate,
                                    language=language)
        if not out.cached:
            spent = gevent.get_hub().loop.now() - start
            gevent.sleep(max(0.0, self.delays.draw("tts") - spent))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class EmulatedPolly:
    """Cloud TTS stand-in: Polly's time to first audio, no local synthesis CPU.

    Writes a silent WAV as long as the sentence would take to say (plus its
    ``.txt``, so the emulator reports the words) through the prompt cache, so
    cache hits behave exactly like Polly prompts cached by :class:`PromptCache`.
    """

    name = "polly-emulated"
    SECONDS_PER_CHAR = 0.065

    def __init__(self, delays: Delays, cache: Any = None) -> None:
        from esl_app.providers.tts.base import TtsCapabilities
        from esl_app.providers.tts.cache import PromptCache

        self.delays = delays
        self.cache = cache or PromptCache()
        self.capabilities = TtsCapabilities(ssml=True, sample_rates=(8000, 16000))

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """A cached prompt at once; a new one after the drawn latency."""
        from esl_app.media.pcm import wav_bytes

        spoken, plain, seconds = self._request(text)

        def synth(_tmp: Any) -> bytes:
            gevent.sleep(self.delays.draw("tts"))
            return wav_bytes(bytes(2 * int(seconds * sample_rate)), sample_rate)

        prompt = self.cache.get_or_create(self.name, voice, sample_rate, spoken, plain, synth)
        return PlayInstruction(app="playback", arg=str(prompt.path), text=plain,
                               duration_ms=int(seconds * 1000), cached=prompt.cached)

    def instant(self, text: str, *, voice: str, sample_rate: int,
                language: str = "en-US") -> PlayInstruction | None:
        """A cached prompt, as :class:`PollyTts` gives it; None for a new one."""
        spoken, plain, seconds = self._request(text)
        return self.cache.get_ready(self.name, voice, sample_rate, spoken, plain,
                                    duration_ms=int(seconds * 1000))

    def _request(self, text: str) -> tuple[str, str, float]:
        from esl_app.providers.markup import to_plain, to_spoken

        plain = to_plain(text).strip()
        return (to_spoken(text).strip(), plain,
                max(0.3, len(plain) * self.SECONDS_PER_CHAR))


class _SlowStream:
    """Delivers the final transcript late; everything else passes straight through."""

    def __init__(self, delays: Delays) -> None:
        self.delays = delays
        self.inner: Any = None
        self.closed = False
        self._pending: set[gevent.Greenlet] = set()

    def relay(self, on_event: Callable[[TranscriptEvent], None]
              ) -> Callable[[TranscriptEvent], None]:
        def deliver(ev: TranscriptEvent) -> None:
            if ev.kind != "final":
                on_event(ev)
                return
            wait = self.delays.draw("stt")

            def late() -> None:
                if not self.closed:
                    on_event(ev)

            g = gevent.spawn_later(wait, late)
            self._pending.add(g)
            g.link(self._pending.discard)

        return deliver

    def feed(self, pcm: bytes) -> None:
        self.inner.feed(pcm)

    def finalize(self) -> None:
        self.inner.finalize()

    def set_hints(self, hints: Sequence[str]) -> None:
        self.inner.set_hints(hints)

    def close(self) -> None:
        self.closed = True
        for g in list(self._pending):
            g.kill(block=False)
        self.inner.close()


class SlowStt:
    """A recogniser whose final transcripts arrive after the emulated delay."""

    def __init__(self, inner: Any, delays: Delays) -> None:
        self.inner = inner
        self.delays = delays
        self.name = getattr(inner, "name", "stt")
        self.capabilities = getattr(inner, "capabilities", None)

    def open_stream(self, call_id: str, sample_rate: int, language: str,
                    on_event: Callable[[TranscriptEvent], None],
                    hints: Sequence[str] = ()) -> _SlowStream:
        """Open the inner stream with a relay that holds finals back."""
        stream = _SlowStream(self.delays)
        stream.inner = self.inner.open_stream(call_id, sample_rate, language,
                                               stream.relay(on_event), hints)
        return stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_provider_cache(profile: str | LatencyProfile = "local", *,
                        seed: int | None = None) -> Any:
    """A :class:`~esl_app.runtime.wiring.ProviderCache` whose agents/TTS follow ``profile``."""
    from esl_app.runtime.wiring import ProviderCache, _make_tts

    prof = get_profile(profile)
    if not prof.adds_latency:
        return ProviderCache()
    delays = Delays(prof, seed)
    polly: list[EmulatedPolly] = []

    def wrap_agent(agent: Any) -> Any:
        return agent if prof.agent_ms is None else SlowAgent(agent, delays)

    def make_tts(tenant: Any, name: str) -> Any:
        if prof.tts_first_audio_ms is None:
            return SlowTts(_make_tts(tenant, name), delays)
        if not polly:  # Polly stand-in: latency, no CPU; one for every tenant
            polly.append(EmulatedPolly(delays))
        return polly[0]

    cache = ProviderCache(wrap_agent=wrap_agent, make_tts=make_tts)
    cache.delays = delays  # type: ignore[attr-defined]
    return cache


def make_stt_factory(profile: str | LatencyProfile = "local", *, seed: int | None = None,
                     base: Callable[[Any], Any] | None = None,
                     table: str | None = None, stt: Any = None) -> Callable[[Any], Any] | None:
    """``stt_for`` for :func:`~esl_app.runtime.wiring.start_media_for_calls` (None: default).

    In a profile with recogniser latency and a caller-line table (``table`` or
    ``$IVR_EMULATED_STT_TABLE``, which ``ivr loadtest --audio`` sets), every call
    gets the emulated Transcribe (:mod:`esl_app.sim.emulated_stt`): like
    :class:`EmulatedPolly` for TTS, the decoding that happens at AWS in production
    is not billed to our server as pocketsphinx CPU. Without a table (e.g. real
    callers) the tenant's own recogniser (``base``, else ``stt``'s, an
    :class:`~esl_app.runtime.wiring.SttCache`) is used, its finals held back by the
    drawn latency.
    """
    import os

    prof = get_profile(profile)
    if prof.stt_final_ms is None:
        return base
    delays = Delays(prof, None if seed is None else seed + 7919)
    table = table or os.environ.get("IVR_EMULATED_STT_TABLE")
    if table and base is None:
        from esl_app.sim.emulated_stt import EmulatedTranscribe

        emulated = EmulatedTranscribe(table, lambda: delays.draw("stt"))
        return lambda tenant: emulated
    if base is None:
        from esl_app.runtime.wiring import SttCache

        base = (stt or SttCache()).stt_for
    pick = base
    wrapped: dict[int, SlowStt] = {}

    def stt_for(tenant: Any) -> SlowStt:
        inner = pick(tenant)
        slow = wrapped.get(id(inner))
        if slow is None:
            slow = wrapped[id(inner)] = SlowStt(inner, delays)
        return slow

    return stt_for
