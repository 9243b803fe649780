import shutil

import gevent
import gevent.event
import pytest

from esl_app.media.pcm import silence
from esl_app.providers.stt.lexicon import hint_sentences
from esl_app.providers.stt.local import LocalStt, build_arpa, normalize_words
from esl_app.providers.tts.local import synthesize_pcm
from esl_app.support import bridge


@pytest.fixture(scope="module")
def stt():
    return LocalStt(decoders=1)


def run_stream(stt, pcm, hints=(), pace=0.0):
    """Feed ``pcm`` in 20 ms frames, finalize right after the last one; all events."""
    events = []
    done = gevent.event.Event()

    def on_event(ev):
        events.append(ev)
        if ev.kind == "final":
            done.set()

    stream = stt.open_stream("call-1", 8000, "en-US", on_event, hints)
    for i in range(0, len(pcm), 320):
        stream.feed(pcm[i:i + 320])
        if pace and i % 3200 == 0:
            gevent.sleep(pace)
    stream.finalize()
    assert done.wait(30)
    stream.close()
    return events


def clip(text, voice="en-us", lead_ms=300, tail_ms=300):
    return silence(8000, lead_ms) + synthesize_pcm(text, voice, 8000, speed=150) + \
        silence(8000, tail_ms)


def final_text(events):
    finals = [e for e in events if e.kind == "final"]
    assert len(finals) == 1
    return finals[0].text


def recognise(stt, text, hints=(), voice="en-us"):
    return run_stream(stt, clip(text, voice), hints)


@pytest.mark.parametrize(("text", "hints", "must"), [
    ("I would like to book an appointment", (), {"book", "appointment"}),
    ("Tomorrow morning please", (), {"tomorrow", "morning"}),
    ("I need to reschedule my appointment", (), {"reschedule", "appointment"}),
    ("Doctor Patel please", ("Dr. Raj Patel",), {"patel"}),
    ("Yes please", ("yes", "no"), {"yes"}),
    ("My name is Robert Brown", (), {"robert", "brown"}),
])
def test_recognises_domain_utterances_at_8k(stt, text, hints, must):
    words = set(final_text(recognise(stt, text, hints)).split())
    assert must <= words, words


def test_same_audio_gives_same_text(stt):
    # A decoder is shared: what the previous turn decoded must not change this one.
    pcm = clip("I want to cancel my appointment", "en-us+m3")
    first = final_text(run_stream(stt, pcm))
    final_text(run_stream(stt, clip("Next Tuesday afternoon")))
    assert final_text(run_stream(stt, pcm, pace=0.001)) == first
    assert "cancel" in first


def test_finalize_right_after_last_frame_keeps_last_word(stt):
    # No trailing silence at all: finalize() races nothing, the last word is there.
    text = final_text(run_stream(stt, clip("I need to cancel my appointment", tail_ms=0)))
    assert text.split()[-1] == "appointment", text


def test_hints_bias_towards_doctor_names(stt):
    plain = final_text(recognise(stt, "with doctor Nakamura please"))
    hinted = final_text(recognise(stt, "with doctor Nakamura please",
                                  hints=["Dr. Kenji Nakamura"]))
    assert "nakamura" not in plain
    assert "doctor nakamura" in hinted


def test_finals_keep_finalize_order(stt):
    got = []
    done = gevent.event.Event()

    def on_event(ev):
        got.append(ev)
        if len([e for e in got if e.kind == "final"]) == 3:
            done.set()

    stream = stt.open_stream("call-3", 8000, "en-US", on_event)
    for text in ("I need to see a doctor", None, "Goodbye"):
        pcm = clip(text) if text else silence(8000, 200)
        for i in range(0, len(pcm), 320):
            stream.feed(pcm[i:i + 320])
        stream.finalize()
    assert done.wait(30)
    stream.close()
    finals = [e.text for e in got if e.kind == "final"]
    assert "doctor" in finals[0] and finals[1] == "" and "bye" in finals[2]


def test_hint_families():
    yes_no = hint_sentences(["yes", "no"])
    assert "no thank you" in yes_no and "that is correct" in yes_no
    assert not any(s.startswith("my name is yes") for s in yes_no)
    digits = hint_sentences(["zero", "one", "two", "three", "four", "five", "six"])
    assert any(len(s.split()) == 10 for s in digits)  # phone numbers


def test_finalize_without_speech_gives_empty_final(stt):
    got = []
    stream = stt.open_stream("call-2", 8000, "en-US", got.append)
    stream.feed(silence(8000, 500))
    stream.finalize()
    gevent.sleep(0.05)
    stream.close()
    assert [(e.kind, e.text) for e in got] == [("final", "")]


def test_normalize_and_arpa():
    expected = "doctor smith at nine thirty nov twenty four"
    assert normalize_words("Dr. Smith at 9:30, Nov 24") == expected
    arpa = build_arpa(["yes please", "no thanks"])
    assert "\\data\\" in arpa and "ngram 3=" in arpa and "yes please" in arpa


def test_bridge_thread_channel_and_asyncio():
    import asyncio

    assert bridge.run_in_thread(sum, [1, 2, 3]) == 6
    ch = bridge.HubChannel()
    bridge.spawn_in_thread(lambda: [ch.put(i) for i in range(3)])
    assert [ch.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    ch.close()
    with pytest.raises(bridge.ChannelClosed):
        ch.get(timeout=1)
    loop = bridge.AsyncioLoopThread().start()
    try:
        async def work(x):
            await asyncio.sleep(0.01)
            return x * 2

        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.001)) for _ in range(5)])
        assert loop.run(work(21), timeout=5) == 42
        ticker.join()
        assert len(ticks) == 5  # the hub kept running meanwhile

        async def fail():
            raise ValueError("boom")

        with pytest.raises(ValueError):
            loop.wait(loop.submit(fail()), timeout=5)
    finally:
        loop.stop()


def test_a_click_gives_an_empty_final(stt):
    import math
    import struct

    click = b"".join(struct.pack("<h", int(12000 * math.copysign(1, math.sin(i / 3))))
                     for i in range(480))
    assert final_text(run_stream(stt, silence(8000, 300) + click + silence(8000, 800))) == ""


@pytest.mark.skipif(not shutil.which("espeak-ng") or not shutil.which("sox"),
                    reason="espeak-ng and sox are needed to speak as the caller")
def test_audio_call_books_end_to_end(tmp_path):
    # The whole path: emulator speaks the caller (espeak-ng), VAD + pocketsphinx with
    # the agent's hints hear it, the local agent books, the bot's prompts are espeak-ng.
    from esl_app.sim.demo import AUDIO_DEMO_SCRIPT
    from esl_app.sim.simulate import SimCall, run_lines, start_local_bot, transcript_for
    from esl_app.sim.testing import make_db

    tenants = make_db(tmp_path)
    bot = start_local_bot(tenants, audio=True)
    try:
        sim = SimCall(bot.address, "1001", "+15550100100", audio=True,
                      time_scale=0.15).start()
        run_lines(sim, AUDIO_DEMO_SCRIPT, lambda ev: None)
        t = transcript_for(sim, bot)
    finally:
        bot.stop()
    heard = [x["text"] for x in t["turns"] if x["speaker"] == "caller"]
    assert t["outcome"] == "booked", heard
    assert t["confirmation"], t


def test_turn_model_leaves_out_what_the_question_cannot_have():
    from esl_app.providers.stt.lexicon import turn_sentences

    offer = turn_sentences(["the first one", "the second one", "the last one"])
    assert "the first one" in offer and not any("third" in s for s in offer)
    doctor = turn_sentences(["Dr. Smith", "Dr. Raj Patel"])
    assert "with doctor smith" in doctor and "doctor lee" not in doctor
    assert "my name is mary johnson" in doctor  # names stay outside "doctor ..."
    yes_no = turn_sentences(["yes", "no"])
    assert not any("johnson" in s for s in yes_no)
    assert "i want to cancel my appointment" in yes_no  # off-script still heard
