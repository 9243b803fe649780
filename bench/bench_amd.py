"""Answering-machine detection: accuracy, decision time and per-frame cost (issue #28).

Run: .venv/bin/python bench/bench_amd.py [--workers 2] [--cache DIR] [--repeat 5] [--json]

The labelled synthetic answers of bench/amd_corpus.py (espeak-ng + sox, made into a
temporary directory, or ``--cache DIR`` to keep them between runs) go frame by frame
through esl_app/media/amd.py as the reminder-call flow will feed them (amd_corpus.run_case).

Printed:
- accuracy and the confusion matrix (rows: label, columns: decision), misses listed;
- decision time, seconds from answer, p50/p95 (all cases and per label);
- beeps: found / present, |found end - true end| p50/max, end -> learnt (the settle
  time), and beeps reported where there is none (a BeepDetector fed each whole answer);
- CPU per 20 ms frame (process time / frames, best of ``--repeat``): the detector until
  its verdict, the beep detector alone, each with audioop (CPython <= 3.12) and with
  the pure-Python path that 3.13 will use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import amd_corpus as corpus

from esl_app.media import amd as amd_mod
from esl_app.media.amd import AnsweringMachineDetector, BeepDetector

LABELS = ("human", "machine", "silence")
DECISIONS = ("human", "machine", "silence", "unknown")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q * (len(values) - 1))))
    return values[k]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _per_frame_us(work: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        n = work()
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def cpu_costs(audio: dict[str, tuple[bytes, float | None]], repeat: int) -> dict[str, float]:
    """Microseconds of CPU per frame, with and without audioop."""
    cases = [(c, list(corpus.frames(audio[c.name][0], c.rate))) for c in corpus.CASES]

    def detector() -> int:
        n = 0
        for case, frames in cases:
            det = AnsweringMachineDetector(case.rate)
            for i, f in enumerate(frames):
                n += 1
                if det.feed(f, (i + 1) * 0.02) is not None:
                    break
        return n

    def beep() -> int:
        n = 0
        for case, frames in cases:
            det = BeepDetector(case.rate)
            feed = det.feed
            for f in frames:
                feed(f)
            n += len(frames)
        return n

    out = {"detector_us": _per_frame_us(detector, repeat),
           "beep_us": _per_frame_us(beep, repeat)}
    saved = amd_mod._audioop
    amd_mod._audioop = None
    try:
        out["detector_pure_python_us"] = _per_frame_us(detector, repeat)
        out["beep_pure_python_us"] = _per_frame_us(beep, repeat)
    finally:
        amd_mod._audioop = saved
    out["audioop"] = saved is not None
    return out


def false_beeps(audio: dict[str, tuple[bytes, float | None]]) -> list[str]:
    """Beeps a BeepDetector fed each whole answer reports away from the true beep."""
    out = []
    for case in corpus.CASES:
        pcm, truth = audio[case.name]
        det = BeepDetector(case.rate)
        for f in corpus.frames(pcm, case.rate):
            if det.feed(f) and (truth is None or abs(det.beep_end_ms / 1000 - truth) > 0.1):
                out.append(f"{case.name} at {det.beep_end_ms / 1000:.2f}s "
                           f"({det.beep_hz:.0f} Hz, {det.beep_ms} ms)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="espeak-ng/sox jobs at once")
    ap.add_argument("--cache", help="keep the generated audio here (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=5, help="CPU timing runs (best kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args()
    if not corpus.tools_available():
        sys.exit("espeak-ng and sox are needed (Debian: apt-get install espeak-ng sox)")

    with tempfile.TemporaryDirectory(prefix="amd-corpus-") as tmp:
        t0 = time.monotonic()
        audio = corpus.build(args.cache or tmp, workers=args.workers)
        gen_s = time.monotonic() - t0
        outcomes = [corpus.run_case(c, *audio[c.name]) for c in corpus.CASES]
        costs = cpu_costs(audio, args.repeat)
        fakes = false_beeps(audio)

    confusion = Counter((o.case.label, o.result.decision) for o in outcomes)
    correct = sum(o.correct for o in outcomes)
    times = [o.result.at for o in outcomes]
    by_label = {lab: [o.result.at for o in outcomes if o.case.label == lab] for lab in LABELS}
    with_beep = [o for o in outcomes if o.beep_truth is not None]
    found = [o for o in with_beep if o.beep_end is not None]
    errors_ms = [abs(o.beep_end - o.beep_truth) * 1000 for o in found]  # type: ignore[operator]
    settle_ms = [(o.beep_heard_at - o.beep_truth) * 1000 for o in found]  # type: ignore[operator]
    report = {
        "cases": len(outcomes),
        "by_label": {lab: sum(o.case.label == lab for o in outcomes) for lab in LABELS},
        "accuracy": correct / len(outcomes),
        "confusion": {lab: {d: confusion[(lab, d)] for d in DECISIONS} for lab in LABELS},
        "misses": [f"{o.case.name} ({o.case.label}{', ' + o.case.note if o.case.note else ''})"
                   f" -> {o.result.decision}/{o.result.reason} at {o.result.at:.2f}s"
                   for o in outcomes if not o.correct],
        "decision_s": {"p50": _pct(times, 0.5), "p95": _pct(times, 0.95), "max": max(times),
                       **{f"{lab}_p50": _pct(v, 0.5) for lab, v in by_label.items()}},
        "beeps": {"present": len(with_beep), "found": len(found),
                  "end_error_ms_p50": _pct(errors_ms, 0.5),
                  "end_error_ms_max": max(errors_ms, default=float("nan")),
                  "learnt_after_end_ms_p50": _pct(settle_ms, 0.5),
                  "false": fakes},
        "cpu_us_per_frame": costs,
        "corpus_generation_s": round(gen_s, 2),
        "machine": {"cpus": os.cpu_count(), "model": _cpu_model(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    r = report
    print(f"AMD corpus: {r['cases']} answers {r['by_label']}, generated in "
          f"{r['corpus_generation_s']} s")
    print(f"accuracy: {correct}/{r['cases']} = {r['accuracy']:.1%}")
    print("confusion (rows: label, columns: decision):")
    print(f"  {'':8}" + "".join(f"{d:>9}" for d in DECISIONS))
    for lab in LABELS:
        print(f"  {lab:8}" + "".join(f"{r['confusion'][lab][d]:>9}" for d in DECISIONS))
    for miss in r["misses"]:
        print(f"  miss: {miss}")
    d = r["decision_s"]
    print(f"decision time from answer: p50 {d['p50']:.2f} s, p95 {d['p95']:.2f} s, "
          f"max {d['max']:.2f} s (p50 human {d['human_p50']:.2f}, machine "
          f"{d['machine_p50']:.2f}, silence {d['silence_p50']:.2f})")
    b = r["beeps"]
    print(f"beeps: {b['found']}/{b['present']} found, end error p50 "
          f"{b['end_error_ms_p50']:.0f} ms, max {b['end_error_ms_max']:.0f} ms; learnt "
          f"{b['learnt_after_end_ms_p50']:.0f} ms after the end (p50); false beeps: "
          f"{len(b['false'])} {b['false'] if b['false'] else ''}")
    c = r["cpu_us_per_frame"]
    print(f"CPU per 20 ms frame: detector {c['detector_us']:.1f} us, beep detector "
          f"{c['beep_us']:.1f} us (audioop: {c['audioop']}); pure Python: detector "
          f"{c['detector_pure_python_us']:.1f} us, beep {c['beep_pure_python_us']:.1f} us")
    m = r["machine"]
    print(f"machine: {m['cpus']} CPUs, {m['model']}, Python {m['python']}, {r['date']}")


if __name__ == "__main__":
    main()
