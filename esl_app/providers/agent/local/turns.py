"""How the local agent keeps a conversation moving: no loops, no fillers on repeat, small talk.

A caller who does not get through must never hear the same question word for
word until they hang up. :func:`progress_signature` captures what the caller
has told the bot so far; the dialogue compares it turn by turn and, when the
same question comes round again without progress, rephrases it (shorter, with
an example), then offers the front desk or the keypad. A caller who asks to hear
something again gets the content without "Thank you." or "Great." in front of it
(:func:`content`). Pure functions; the dialogue owns the state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.state import ASKED_KEYS

__all__ = [
    "EXPECTING",
    "content",
    "informative_lead",
    "keypad_hint",
    "menu",
    "progress_signature",
    "small_talk_lead",
]

#: What each stage's question expects, for :func:`nlu.understand`.
EXPECTING: dict[str, str | None] = {
    "start": None, "done": None, "transferred": None,
    "name": "name", "verify_name": "name", "lookup_name": "name", "name_spell": "name",
    "phone": "phone", "lookup_phone": "phone",
    "code": "code",
    "confirm": "yes_no", "notify": "yes_no", "cancel_confirm": "yes_no",
    "resched_confirm": "yes_no",
    "anything_else": "yes_no", "offer_handoff": "yes_no",
    "late_handoff": "yes_no", "doctor_check": "yes_no", "name_check": "yes_no",
    "date": "date", "doctor": "doctor", "offer": "offer",
    "visit_type": "visit_type", "change": None, "pick_appt": None,
}

# What the caller has told us; a question asked again with all of these unchanged
# is asked "without progress".
_PROGRESS_KEYS = ASKED_KEYS

_ACKS = re.compile(
    r"^(?:(?:thank you|thanks|great|okay|ok|sure|alright|all right|no problem|got it|perfect"
    r"|good|sorry|sorry about that|okay, let's try again|hi|hi there)[.!]"
    r"|thank you, [^.?!]{1,60}[.!]"
    r"|sorry, (?:i didn't (?:get|catch) (?:that|the day|the code|the number|the whole number)"
    r"|which (?:doctor was that|time would you like|appointment)|could you say your name again"
    r"|please say yes or no)[^.?!]*[.?!]"
    r"|you can also (?:key it in|spell it)[.!]"
    r"|please say yes or no[.!])\s*", re.I)


def progress_signature(state: Mapping[str, Any]) -> str:
    """A stable digest of everything the caller has told the bot (JSON of the known keys)."""
    picked: dict[str, Any] = {}
    for key in _PROGRESS_KEYS:
        value = state.get(key)
        if key in ("offered", "candidates") and isinstance(value, list):
            value = [v.get("slot_id") or v.get("confirmation") for v in value
                     if isinstance(v, dict)]
        elif key == "chosen" and isinstance(value, dict):
            value = value.get("slot_id")
        picked[key] = value
    return json.dumps(picked, sort_keys=True, default=str)


def content(text: str) -> str:
    """``text`` without the acknowledgements and apologies in front ("Thank you. Great.")."""
    out = text.strip()
    while True:
        m = _ACKS.match(out)
        if not m or m.end() >= len(out):
            return out
        out = out[m.end():]


def informative_lead(text: str, prompt: str) -> str:
    """What ``text`` says before its question ``prompt``, minus acknowledgements and apologies.

    "If you haven't been seen here before, it's a new patient visit. Is this …?"
    keeps its first sentence when the question is rephrased; "Sorry. Which …?"
    keeps nothing.
    """
    text = text.strip()
    if prompt and text.endswith(prompt):
        text = text[:-len(prompt)].strip()
    elif prompt:
        return ""
    if not text:
        return ""
    rest = content(text + " \x00")
    return rest.removesuffix("\x00").strip()


def menu(tenant: Tenant) -> str:
    """What the bot can do, as one sentence."""
    desk = ", or connect you with the front desk" if tenant.handoff else ""
    return f"I can book, change or cancel an appointment{desk}."


def small_talk_lead(kind: str, t: str, tenant: Tenant, *, mid_call: bool) -> str:
    """A friendly first sentence for a greeting or a question about the bot itself."""
    padded = f" {t} "
    if kind == "greeting":
        if any(f" {p} " in padded for p in ("can you hear me", "are you there", "anybody there",
                                            "anyone there", "hello hello", "is this working")):
            return "Yes, I can hear you."
        return "Hi there!" if not mid_call else "Hi, I'm still here."
    if any(f" {p} " in padded for p in ("how are you", "how is it going", "how are things",
                                        "how do you do")):
        return "I'm doing well, thank you for asking."
    if any(f" {p} " in padded for p in ("what can you do", "what are my options",
                                        "how does this work", "what do you do",
                                        "what can i do")):
        return ""
    return f"I'm the automated assistant at {tenant.name}."


def keypad_hint(stage: str, n_options: int = 0) -> str | None:
    """How the caller can answer the current question with the keypad, if they can."""
    if stage in ("confirm", "cancel_confirm", "resched_confirm", "anything_else",
                 "doctor_check", "name_check", "late_handoff"):
        return "You can also press 1 for yes or 2 for no."
    if stage in ("phone", "lookup_phone"):
        return "You can also key in the number on your phone's keypad."
    if stage in ("offer", "doctor", "visit_type") and n_options > 1:
        keys = ", ".join(str(i) for i in range(1, n_options)) + f" or {n_options}"
        return f"You can also press {keys} on your keypad, in the order I read them."
    return None
