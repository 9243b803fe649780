"""Media-path benchmark: VAD reaction, end-of-turn delay, local STT accuracy, TTS cache.

Run: .venv/bin/python bench/bench_media.py [--voices en-us,en-us+m3] [--json]

Every caller utterance (clinic-booking domain) is synthesised with espeak-ng at
8 kHz, padded with silence, and fed in 20 ms frames. Positions are stream ms,
so VAD figures do not depend on this machine's speed; STT timings do.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from esl_app.media.endpoint import TurnDetector  # noqa: E402
from esl_app.media.pcm import rms, silence  # noqa: E402
from esl_app.providers.markup import say_characters  # noqa: E402
from esl_app.providers.stt.local import LocalStt, normalize_words  # noqa: E402
from esl_app.providers.tts.local import LocalTts, synthesize_pcm  # noqa: E402

UTTERANCES = [
    "I would like to book an appointment",
    "I need to see a doctor",
    "I want to make an appointment with doctor Smith",
    "Can I see doctor Patel next Monday",
    "Tomorrow morning please",
    "Next Tuesday afternoon",
    "Do you have anything on Friday",
    "Yes please",
    "No thank you",
    "Yes that works",
    "The first one",
    "The second one please",
    "Anything later",
    "My name is John Williams",
    "My name is Mary Johnson",
    "It is for my daughter",
    "I want to cancel my appointment",
    "I need to reschedule my appointment",
    "Can I talk to a real person",
    "What are your hours",
    "Where are you located",
    "That is correct",
    "At ten thirty",
    "In the afternoon",
    "The earliest available",
    "Any doctor is fine",
    "My phone number is five five five one two three four",
    "That is all thank you",
    "Goodbye",
    "I would like to see doctor Garcia on Wednesday",
    "Sounds good",
    "No preference",
]
HINTS = ["Dr. Sarah Smith", "Dr. Raj Patel", "Dr. Elena Garcia"]


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))
    return v[k]


def wer(ref, hyp):
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev = cur
    return d[len(h)], len(r)


def speech_bounds(pcm):
    loud = [i for i in range(0, len(pcm), 320) if rms(pcm[i:i + 320]) >= 100]
    return loud[0] // 16, loud[-1] // 16 + 20


def bench_vad(clips):
    reaction, eot, clicks_fired = [], [], 0
    for pcm in clips:
        det = TurnDetector(8000, vad_mode=2, min_speech_ms=120, end_silence_ms=600)
        lead = 500
        stream = silence(8000, lead) + pcm + silence(8000, 1500)
        events = []
        for i in range(0, len(stream), 320):
            events += det.feed(stream[i:i + 320])
        first, last = speech_bounds(pcm)
        starts = [e for e in events if e.kind == "speech_start"]
        ends = [e for e in events if e.kind == "speech_end"]
        if starts:
            reaction.append(starts[0].detected_ms - (lead + first))
        if ends:
            eot.append(ends[-1].detected_ms - (lead + last))
    import random
    import struct
    rnd = random.Random(7)
    for _ in range(30):
        n = 480  # 60 ms click
        click = struct.pack(f"<{n}h", *(rnd.randint(-20000, 20000) for _ in range(n)))
        det = TurnDetector(8000, 2, 120, 600)
        if det.feed(silence(8000, 300) + click + silence(8000, 800)):
            clicks_fired += 1
    return reaction, eot, clicks_fired


def bench_stt(clips, refs, use_hints=True):
    try:
        from esl_app.providers.agent.local.nlu import intent, normalize
    except Exception:  # pragma: no cover - agent not present
        intent = None

        def normalize(text):
            return text
    stt = LocalStt(decoders=2)
    stt.warm_up()
    errors = words = intents_ok = literal_errors = 0
    latencies, rows = [], []
    for pcm, ref in zip(clips, refs, strict=True):
        done = gevent.event.Event()
        out = []

        def on_event(ev, out=out, done=done):
            if ev.kind == "final":
                out.append(ev.text)
                done.set()

        s = stt.open_stream("bench", 8000, "en-US", on_event, HINTS if use_hints else ())
        audio = silence(8000, 300) + pcm + silence(8000, 600)
        # real-time pace would take minutes; feed at 10x and let the decoder keep up
        for i in range(0, len(audio), 320):
            s.feed(audio[i:i + 320])
            if i % 3200 == 0:
                gevent.sleep(0.02)
        gevent.sleep(0.1)
        t = time.perf_counter()
        s.finalize()
        done.wait(30)
        latencies.append((time.perf_counter() - t) * 1000)
        s.close()
        hyp = out[0] if out else ""
        ref_n = normalize_words(ref)
        # "that's" and "that is" are the same words to the agent (nlu.normalize expands both)
        e, n = wer(normalize(ref_n), normalize(hyp))
        literal_errors += wer(ref_n, hyp)[0]
        errors += e
        words += n
        if intent is not None:
            intents_ok += intent(ref_n) == intent(hyp)
        rows.append((ref_n, hyp))
    return (errors / max(1, words), intents_ok / len(refs) if intent else None, latencies, rows,
            literal_errors / max(1, len(" ".join(normalize_words(r) for r in refs).split())))


def bench_tts(calls=20):
    with tempfile.TemporaryDirectory() as d:
        tts = LocalTts(cache_dir=d)
        miss_ms, hit_ms = [], []
        fixed = ["Thank you for calling Sunrise Family Clinic.",
                 "How can I help you today?",
                 "Which doctor would you like to see?",
                 "What day works best for you?",
                 "Can I have your full name, please?",
                 "Is there anything else I can help you with?",
                 "Goodbye, and thank you for calling."]
        times = ["9 AM", "10:30 AM", "2 PM", "3:30 PM"]
        days = ["Monday", "Tuesday", "Wednesday"]
        for c in range(calls):
            prompts = fixed[:4] + [
                f"Doctor Smith is free on {days[c % 3]} at {times[c % 4]}. Does that work?",
                fixed[4],
                "You're booked. Your confirmation code is "
                + say_characters(f"K{c % 10}M-4Q{c % 7}") + ".",
                fixed[5], fixed[6]]
            for p in prompts:
                t = time.perf_counter()
                ins = tts.synthesize(p, voice="Joanna", sample_rate=8000)
                (hit_ms if ins.cached else miss_ms).append((time.perf_counter() - t) * 1000)
        return tts.cache.stats(), miss_ms, hit_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voices", default="en-us,en-us+m3")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    voices = args.voices.split(",")
    refs, clips = [], []
    for i, text in enumerate(UTTERANCES):
        for v in voices:
            refs.append(text)
            clips.append(synthesize_pcm(text, v, 8000, 150 + 10 * (i % 3)))
    reaction, eot, clicks = bench_vad(clips)
    w, ia, lat, rows, wl = bench_stt(clips, refs)
    w0, ia0, _, _, _ = bench_stt(clips, refs, use_hints=False)
    stats, miss_ms, hit_ms = bench_tts()
    result = {
        "utterances": len(clips),
        "vad_speech_start_after_onset_ms": {"p50": pct(reaction, 50), "p99": pct(reaction, 99),
                                            "detected": len(reaction)},
        "clicks_60ms_barged_in": f"{clicks}/30",
        "end_of_turn_after_speech_ms": {"p50": pct(eot, 50), "p99": pct(eot, 99)},
        "stt_wer": round(w, 3), "stt_wer_literal": round(wl, 3), "stt_intent_accuracy": ia,
        "stt_wer_without_hints": round(w0, 3), "stt_intent_accuracy_without_hints": ia0,
        "stt_final_after_finalize_ms": {"p50": round(pct(lat, 50), 1),
                                        "p99": round(pct(lat, 99), 1)},
        "tts_cache": stats,
        "tts_miss_ms_p50": round(statistics.median(miss_ms), 1),
        "tts_hit_ms_p50": round(statistics.median(hit_ms), 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for k, v in result.items():
        print(f"{k:40s} {v}")
    print("\nsample recognitions (ref -> hyp):")
    for ref, hyp in rows[:: max(1, len(rows) // 12)]:
        print(f"  {ref!r:55s} -> {hyp!r}")


if __name__ == "__main__":
    main()
