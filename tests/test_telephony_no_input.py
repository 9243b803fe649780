"""The no-input timer counts the caller's silence, never their speech.

Seen through a real FreeSWITCH: a caller who began a long sentence over the greeting
heard "Sorry, I didn't hear anything." while still talking. The barge-in's
``speech_start`` was consumed by the prompt, and the listen's window ran from its own
start, so any sentence longer than ``no_input_seconds`` was cut to a no-input.
"""

from __future__ import annotations

import shutil
import time
from types import SimpleNamespace

import gevent
import gevent.queue
import pytest
from fakes.telephony import TENANTS_YAML, local_bot, tenant_set, wait_until

from esl_app.media.endpoint import TurnDetector
from esl_app.media.pcm import silence
from esl_app.sim.emulator.audio import AudioFork
from esl_app.sim.simulate import SimCall, start_local_bot, transcript_for
from esl_app.sim.testing import make_db
from esl_app.telephony.audio import AudioListenSource
from esl_app.telephony.events import Msg
from esl_app.telephony.verbs import Listen

needs_voice = pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                                 reason="espeak-ng and sox are needed to speak as the caller")

# about 4.8 s of espeak-ng speech with no pause the VAD takes for a turn's end: far longer
# than the test clinics' no_input_seconds (1 s)
LONG_LINE = "I would like to book an appointment with doctor Smith next Tuesday morning please"
NO_INPUT = "didn't hear anything"


def _bot_lines(t):
    return [x["text"] for x in t["turns"] if x["speaker"] == "bot"]


def _caller_answered(t) -> str:
    """The caller's first recognised turn, which the bot must have answered."""
    speakers = [x["speaker"] for x in t["turns"]]
    assert "caller" in speakers, t["turns"]
    i = speakers.index("caller")
    assert "bot" in speakers[i + 1:], t["turns"]
    return t["turns"][i]["text"]


# -- whole calls through the emulator ------------------------------------------------------


@pytest.fixture
def audio_bot(tmp_path):
    yield from local_bot(tmp_path, audio=True)


@pytest.fixture
def text_bot(tmp_path):
    bot = start_local_bot(make_db(tmp_path, TENANTS_YAML))
    yield bot
    bot.stop()


def _fork_factory():
    made: list[AudioFork] = []

    def factory():
        made.append(AudioFork(lead_ms=0))
        return made[-1]

    return made, factory


@needs_voice
def test_a_long_sentence_begun_over_the_greeting_is_heard_not_timed_out(audio_bot):
    """Real audio through the VAD and the local recogniser (audio mode)."""
    forks, factory = _fork_factory()
    sim = SimCall(audio_bot.address, "1001", time_scale=1.0, audio=True,
                  audio_fork=factory).start()
    wait_until(lambda: bool(forks) and forks[0].connected.is_set()
               and sim.call.channel.current_playback is not None, 20)
    sim.call.say(LONG_LINE)  # over the greeting, and on for ~5 no-input windows
    wait_until(lambda: bool(forks[0].records) and forks[0].records[0].end_stream_ms is not None,
               30)
    assert sim.call.wait_until_listening(30)  # the bot answered the caller's words
    sim.call.hang_up()
    assert sim.call.wait_ended(20)
    t = transcript_for(sim, audio_bot)
    assert not any(NO_INPUT in line for line in _bot_lines(t)), t["turns"]
    said = _caller_answered(t)
    assert "appointment" in said or "book" in said, said
    assert t["turns"][0]["barged_in"] is True


@needs_voice
def test_a_silent_caller_still_hears_the_no_input_prompt_on_time(audio_bot):
    forks, factory = _fork_factory()
    sim = SimCall(audio_bot.address, "1001", time_scale=1.0, audio=True,
                  audio_fork=factory).start()
    assert sim.call.wait_until_listening(30)
    t0 = time.monotonic()
    wait_until(lambda: any(NO_INPUT in (x.text or "") for x in sim.call.channel.turns), 10)
    waited = time.monotonic() - t0
    assert 0.5 <= waited <= 1.8, waited  # no_input_seconds is 1 (the emulator settles first)
    sim.call.hang_up()
    assert sim.call.wait_ended(20)


def test_text_mode_a_barge_in_still_gives_the_recogniser_one_more_window(text_bot):
    """FreeSWITCH's ASR cannot say when speech ends: the barge-in's start is kept.

    The emulated ASR's result comes 1.3 s after the caller began (82 characters at a
    quarter of 65 ms): past the 1 s window counted from the listen, within two.
    """
    sim = SimCall(text_bot.address, "1001", time_scale=0.25).start()
    wait_until(lambda: sim.call.channel.current_playback is not None, 20)
    sim.call.say(LONG_LINE)  # over the greeting
    assert sim.call.wait_until_listening(20)
    sim.call.hang_up()
    assert sim.call.wait_ended(20)
    t = transcript_for(sim, text_bot)
    assert not any(NO_INPUT in line for line in _bot_lines(t)), t["turns"]
    assert _caller_answered(t) == LONG_LINE
    assert t["turns"][0]["barged_in"] is True


# -- Listen against a fake source -------------------------------------------------------------


class FakeCall:
    """The controller's queue and stash, nothing else."""

    def __init__(self) -> None:
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.session = SimpleNamespace(uuid="fake-call")

    def next(self, timeout=None):
        try:
            return self.queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return None

    def stash(self, msg):
        raise AssertionError("Listen never stashes")

    def post(self, msg):
        self.queue.put(msg)


class FakeSource:
    """A ListenSource whose VAD state the test sets; ``end_turn`` may post a final."""

    def __init__(self, call: FakeCall, state=(False, 0.0), final: str | None = None) -> None:
        self.call = call
        self.state = state
        self.final = final
        self.ended = 0

    def arm(self):
        pass

    def heard(self):
        pass

    def speaking(self, on):
        pass

    def speech_state(self):
        return self.state

    def end_turn(self):
        self.ended += 1
        self.state = (False, time.monotonic())
        if self.final is not None:
            self.call.post(Msg("transcript", text=self.final))

    def close(self):
        pass


WINDOW = 0.2
SLACK = 0.15  # timer and scheduling latency on a busy machine


def _listen(source, pending=(), **kw):
    t0 = time.monotonic()
    result = Listen(source.call, source, timeout=WINDOW, **kw).run(list(pending))
    return result, time.monotonic() - t0


def test_silence_times_out_after_the_window():
    call = FakeCall()
    result, took = _listen(FakeSource(call))
    assert result is None and WINDOW <= took < WINDOW + SLACK


def test_messages_that_mean_nothing_do_not_restart_the_window():
    call = FakeCall()

    def noise():
        for _ in range(20):
            call.post(Msg("complete", key="an-older-playback"))
            gevent.sleep(0.03)

    g = gevent.spawn(noise)
    result, took = _listen(FakeSource(call))
    g.kill()
    assert result is None and took < WINDOW + SLACK


def test_the_window_never_ends_while_the_caller_speaks():
    call = FakeCall()
    source = FakeSource(call, state=(True, time.monotonic() - 0.5))  # began over the prompt

    def talk():
        gevent.sleep(4 * WINDOW)  # four windows of speech
        source.state = (False, time.monotonic())
        gevent.sleep(0.1)  # the recogniser's final follows the end of the turn
        call.post(Msg("transcript", text="a long sentence"))

    gevent.spawn(talk)
    result, took = _listen(source)
    assert result is not None and result.text == "a long sentence"
    assert took >= 4 * WINDOW and source.ended == 0


def test_silence_counts_from_the_end_of_the_callers_turn():
    call = FakeCall()
    source = FakeSource(call, state=(True, time.monotonic()))
    ended: list[float] = []

    def talk():
        gevent.sleep(2 * WINDOW)
        ended.append(time.monotonic())
        source.state = (False, ended[0])  # no words came of it (the final is empty)
        call.post(Msg("transcript", text=""))

    gevent.spawn(talk)
    result, _took = _listen(source)
    quiet = time.monotonic() - ended[0]
    assert result is None and WINDOW <= quiet < WINDOW + SLACK


def test_a_turn_that_ended_before_the_listen_does_not_stretch_it():
    call = FakeCall()
    result, took = _listen(FakeSource(call, state=(False, time.monotonic() - 0.05)))
    assert result is None and WINDOW <= took < WINDOW + SLACK


def test_an_endless_turn_is_ended_and_its_words_answered():
    call = FakeCall()
    source = FakeSource(call, state=(True, time.monotonic()), final="words and more words")
    result, took = _listen(source, max_utterance=0.5)
    assert source.ended == 1
    assert result is not None and result.text == "words and more words"
    assert 0.5 <= took < 0.5 + SLACK


def test_an_endless_turn_with_nothing_intelligible_is_a_no_input():
    call = FakeCall()
    source = FakeSource(call, state=(True, time.monotonic()), final="")
    result, took = _listen(source, max_utterance=0.5)
    assert result is None and source.ended == 1
    assert took < 0.5 + SLACK  # at once, not a window later


def test_an_endless_turn_whose_final_never_comes_ends_a_window_later():
    call = FakeCall()
    source = FakeSource(call, state=(True, time.monotonic()))

    def end_turn():  # the VAD goes on hearing "speech" (a television, line noise)
        source.ended += 1

    source.end_turn = end_turn
    result, took = _listen(source, max_utterance=0.5)
    assert result is None and source.ended == 1 and 0.5 + WINDOW <= took < 0.5 + WINDOW + SLACK


def test_text_mode_a_start_of_speech_gives_one_more_window_once():
    call = FakeCall()
    result, took = _listen(FakeSource(call, state=None), [Msg("speech_start")])
    assert result is None and 2 * WINDOW <= took < 2 * WINDOW + SLACK
    result, took = _listen(FakeSource(call, state=None))
    assert result is None and WINDOW <= took < WINDOW + SLACK


# -- the audio source's view of the VAD ----------------------------------------------------


class _Stream:
    def __init__(self) -> None:
        self.fed = 0
        self.finals = 0

    def feed(self, pcm):
        self.fed += len(pcm)

    def finalize(self):
        self.finals += 1

    def set_hints(self, hints):
        pass

    def close(self):
        pass


def _audio_source():
    call = FakeCall()
    tenant = tenant_set().get("sunrise")
    session = SimpleNamespace(uuid="fake-call", channel_up=False)
    registry = SimpleNamespace(register=lambda uuid, sink: "token",
                               unregister=lambda uuid: None)
    stream = _Stream()
    stt = SimpleNamespace(open_stream=lambda *a, **kw: stream)
    source = AudioListenSource(call, tenant, session, registry=registry,
                               media_url="ws://127.0.0.1:1", stt=stt)
    source.on_stream_start({})
    return call, source, stream


@needs_voice
def test_the_audio_source_reports_the_callers_speech_and_can_end_their_turn():
    from esl_app.providers.tts.local import synthesize_pcm

    call, source, stream = _audio_source()
    assert source.speech_state() == (False, 0.0)
    speech = synthesize_pcm(LONG_LINE, "en-us", 8000)
    source.on_audio(silence(8000, 200) + speech[:16000])  # one second of the sentence
    speaking, since = source.speech_state()
    assert speaking and since <= time.monotonic()
    assert call.next(0).kind == "speech_start"
    source.end_turn()  # the listen's limit: the recogniser gets its final now
    assert stream.finals == 1 and source.speech_state()[0] is False
    source.end_turn()
    assert stream.finals == 1  # not in speech: nothing to end
    source.on_audio(speech[16000:32000])  # they go on: a new turn
    assert source.speech_state()[0] is True
    source.on_audio(silence(8000, 1000))
    speaking, ended = source.speech_state()
    assert not speaking and stream.finals == 2 and time.monotonic() - ended < 0.5


def test_the_detector_ends_a_turn_on_request():
    det = TurnDetector(8000, 2, 100, 600)
    assert det.end_turn() is None
    det._core.in_speech = True  # as after a speech_start
    det.feed(silence(8000, 200))
    ev = det.end_turn()
    assert ev is not None and ev.kind == "speech_end"
    assert (ev.at_ms, ev.detected_ms) == (0, 200)  # the silence had begun at 0
    assert not det.in_speech and not det.onset_pending
