"""Whole calls through the real FreeSWITCH into a real ``ivr serve``."""

from __future__ import annotations

import random

import gevent

from freeswitch.callers import BookingCaller
from freeswitch.harness import Bot, Caller, DialplanInstall, InboundEsl


def _appointment(bot: Bot, tenant: str, code: str) -> dict:
    import json

    rows = json.loads(bot.ivr("appointments", "list", "--tenant", tenant, "--all",
                              "--json").stdout)
    return next((r for r in rows if r.get("confirmation") == code), {})


def _book(via: str, esl: InboundEsl, plan: DialplanInstall, bot: Bot) -> None:
    call = Caller(esl, plan, "1001", via=via).dial()
    caller = BookingCaller(call, rng=random.Random(via))
    caller.converse()
    if not call.ended():
        call.hangup()
    call.wait_ended()
    record = bot.wait_call_record(call.b)
    assert record["outcome"] == "booked", (record["outcome"], caller.bot, caller.said)
    code = record["confirmation"]
    assert code and _appointment(bot, "sunrise", code), code
    # the code was read back to the caller
    assert any(code.replace("-", "")[:3].lower() in h.replace("-", "").replace(" ", "").lower()
               or "confirmation" in h.lower() for h in caller.bot), caller.bot


def test_booking_by_voice_over_loopback_and_sip(fs_esl: InboundEsl, fs_plan: DialplanInstall,
                                               fs_bot: Bot) -> None:
    """Two callers at once, one through mod_loopback, one over SIP/RTP (PCMU) via sofia."""
    jobs = [gevent.spawn(_book, via, fs_esl, fs_plan, fs_bot) for via in ("loopback", "sip")]
    gevent.joinall(jobs, raise_error=True)
    assert not fs_bot.log_problems()
