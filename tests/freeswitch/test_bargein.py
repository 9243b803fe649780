"""Barge-in through the real switch: caller speech over a prompt stops it at once.

The figures at scale (20+ barge-ins, p50/p99) come from
bench/bench_freeswitch_bargein.py and are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

from freeswitch.harness import Bot, DialplanInstall, InboundEsl, barge_in_once


def test_caller_speech_stops_the_prompt(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                        fs_bot: Bot) -> None:
    results = [barge_in_once(fs_esl, fs_plan) for _ in range(3)]
    for r in results:
        # cut well before its end, and within a second of the caller starting to talk
        assert r.played_ms < r.prompt_ms - 500, r
        assert 0 < r.reaction_ms < 1000, r
    calls = fs_bot.calls()[:3]
    for c in calls:
        turns = fs_bot.call(c["call_id"])["turns"]
        assert turns[0]["speaker"] == "bot" and turns[0]["barged_in"], turns[:2]
    assert not fs_bot.log_problems()
