"""Taking a message when no human answers: name, callback number, reason, stored as a ticket.

The call engine calls :func:`start_message` after a transfer failed (busy, no
answer within the tenant's timeout, bridge failure); :class:`GuardedAgent`
also starts it when the caller asks ("can I leave a message", "call me back
at …") and routes every later turn to :func:`take_message` while
``call.state["mode"] == "message"``. The sub-dialogue works the same whatever
agent serves the call, so a Bedrock outage cannot lose a message.

Its memory is ``call.state["message"]`` (JSON-able): ``step`` (offer, name,
phone_confirm, phone, reason, confirm, fix), ``name``, ``phone`` (candidate
digits), ``phone_ok``, ``reason``, ``urgent``, ``misses``. The callback number
defaults to the caller ID, read back digit by digit, because a mis-heard
number makes the whole message useless.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from esl_app.providers.agent.base import AgentReply, CallContext, Utterance
from esl_app.providers.agent.local import nlu

__all__ = [
    "failure_kind",
    "is_urgent",
    "parse_phone",
    "spell_phone",
    "start_message",
    "take_message",
    "wants_message",
]

log = logging.getLogger(__name__)

MAX_MISSES = 3
_YES_NO = ("yes", "no")
_DIGIT_HINTS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_DTMF_YES_NO = {"1": "yes", "2": "no"}

# ---------------------------------------------------------------- understanding

_MESSAGE = re.compile(
    r"\b(?:(?:leave|take|pass on|pass along|pass|give (?:them|him|her)|send) (?:a |them a |him a "
    r"|her a |my )?(?:message|voicemail|voice mail|note)"
    r"|(?:call|ring|phone) (?:me|us) (?:back|at|on)"
    r"|(?:have|get|ask|can|could|would|will) (?:someone|somebody|the doctor|the nurse|the office"
    r"|the front desk|a nurse|a doctor|them|she|he|they|you|one of you|anyone|anybody)"
    r" (?:please )?(?:to )?(?:call|ring|phone) (?:me|us)"
    r"|(?:a|get a|request a|want a|need a|like a) call ?back|callback"
    r"|get back to me|return my call)\b")
_NOT_MESSAGE = re.compile(
    r"\b(?:do not|does not|not|never|without) (?:[a-z]+ ){0,4}(?:message|call ?back|voicemail)"
    r"|\bno message\b|\b(?:i will|i am going to|i can|i should) call (?:you |them )?back\b")

_URGENT = re.compile(r"\b(?:urgent(?:ly)?(?! care)|urgency|(?:it|this) can not wait"
                     r"|(?:it is|this is) (?:really |very )?(?:pressing|time sensitive))\b")
_NOT_URGENT = re.compile(r"\b(?:not|no|nothing|never) (?:[a-z]+ )?(?:urgent|urgency)\b")


def _norm(text: str | None) -> str:
    return nlu.normalize(text, clock=False).replace("-", " ")


def wants_message(text: str | None) -> bool:
    """Whether the caller asks to leave a message or to be called back."""
    t = _norm(text)
    return bool(t and _MESSAGE.search(t) and not _NOT_MESSAGE.search(t))


def is_urgent(text: str | None) -> bool:
    """Whether the caller says the matter is urgent (not an emergency, not "urgent care")."""
    t = _norm(text)
    return bool(t and _URGENT.search(t) and not _NOT_URGENT.search(t))


_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
           "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "niner": "9"}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
          "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_HOMOPHONES = {"to": "2", "too": "2", "for": "4", "ate": "8"}  # only once digits have begun
_FILLER = {"uh", "um", "er", "dash", "hyphen", "and", "then", "area", "code", "is", "it",
           "the", "number", "oh", "o"}


def parse_phone(text: str | None) -> str | None:
    """Digits of a phone number said as digits or number words, or None if not 7-15 digits.

    Handles "five five five zero one zero one two three four", "555-010-1234",
    "double five", "fifty five", "eight hundred", "plus one …", and stops at
    the first word after the number ("… after 3 pm" does not add a digit).
    """
    t = _norm(text).replace("(", " ").replace(")", " ").replace(".", " ")
    toks = t.split()
    out: list[str] = []
    plus = False
    i = 0
    while i < len(toks):
        w = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if w.startswith("+") and w[1:].isdigit() and not out:
            plus = True
            out.append(w[1:])
        elif w == "plus" and not out:
            plus = True
        elif w.isdigit():
            out.append(w)
        elif w in ("double", "triple") and nxt in _DIGITS:
            out.append(_DIGITS[nxt] * (2 if w == "double" else 3))
            i += 1
        elif w in _TENS and nxt in _DIGITS and _DIGITS[nxt] != "0" and nxt not in ("oh", "o"):
            out.append(str(_TENS[w] + int(_DIGITS[nxt])))
            i += 1
        elif w in _TENS:
            out.append(str(_TENS[w]))
        elif w in _TEENS:
            out.append(str(_TEENS[w]))
        elif w == "hundred" and out:
            out.append("00")
        elif w == "thousand" and out:
            out.append("000")
        elif w in _DIGITS and (out or w not in ("o", "oh")):
            out.append(_DIGITS[w])
        elif w in _HOMOPHONES and out:
            out.append(_HOMOPHONES[w])
        elif out and w not in _FILLER:
            break
        i += 1
    digits = "".join(out)
    if not 7 <= len(digits) <= 15:
        return None
    return ("+" if plus else "") + digits


_SPOKEN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def spell_phone(number: str) -> str:
    """A number read back digit by digit in groups: "five five five, zero one zero, one two …".

    North-American numbers with a leading +1/1 are read as the ten digits
    callers know them by.
    """
    digits = "".join(c for c in number if c.isdigit())
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        groups = [digits[:3], digits[3:6], digits[6:]]
    elif len(digits) == 7:
        groups = [digits[:3], digits[3:]]
    else:
        groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
        if len(groups) > 1 and len(groups[-1]) == 1:
            groups[-2:] = [groups[-2] + groups[-1]]
    return ", ".join(" ".join(_SPOKEN[int(d)] for d in g) for g in groups)


# ---------------------------------------------------------------- the sub-dialogue

_OPENINGS = {
    "busy": "I'm sorry, the line is busy and nobody could answer right now.",
    "no_answer": "I'm sorry, nobody could answer right now.",
    "failed": "I'm sorry, I couldn't connect you, and nobody could answer right now.",
    "unavailable": "I'm sorry, nobody is available to take your call right now.",
    # the caller turned the front desk down twice and the bot could not help either
    "declined": "All right. I'm sorry I couldn't help you this time.",
}
_DECLINE = ("never mind", "nevermind", "forget it", "forget about it", "do not bother",
            "no message", "do not want to leave", "not leave a message", "cancel the message",
            "do not send it", "do not send")


def failure_kind(reason: str | None) -> str:
    """Map a bridge disposition / hang-up cause ("USER_BUSY", "NO_ANSWER", …) to an opening."""
    r = (reason or "").upper()
    if r in ("REQUESTED", "UNAVAILABLE", "DECLINED"):
        return r.lower()
    if "BUSY" in r:
        return "busy"
    if any(k in r for k in ("NO_ANSWER", "NO_USER_RESPONSE", "TIMEOUT", "ORIGINATOR_CANCEL",
                            "ALLOTTED_TIMEOUT")):
        return "no_answer"
    return "failed"


def start_message(call: CallContext, reason_of_failure: str = "", *, text: str | None = None,
                  urgent: bool = False, lead: str | None = None) -> AgentReply:
    """Begin the message sub-dialogue (``call.state["mode"] = "message"``) and say why.

    ``reason_of_failure`` is the bridge disposition or hang-up cause (or
    "requested" when the caller asked); ``text`` is the caller's request, from
    which a callback number ("call me back at …") is taken. After an emergency
    the urgent line failing must not end in a message: the caller is sent to
    the emergency number instead. ``lead``: what to say before the offer, instead of
    the opening for ``reason_of_failure``.
    """
    st = call.state
    if st.get("emergency"):
        number = call.tenant.emergency_number or "911"
        st["outcome"] = "emergency"
        return AgentReply(f"I'm sorry, I couldn't reach our urgent line. Please hang up and "
                          f"call {number} now.", action="hangup", outcome="emergency")
    kind = failure_kind(reason_of_failure)
    msg: dict[str, Any] = {"step": "offer", "why": kind, "name": None, "phone": None,
                           "phone_ok": False, "caller_id_refused": False, "reason": None,
                           "urgent": bool(urgent or st.get("urgent") or is_urgent(text)),
                           "misses": 0}
    st["mode"] = "message"
    st["message"] = msg
    log.info("call %s: message taking started (%s)", call.call_id, kind)
    if text and (number := parse_phone(text)):
        msg["phone"] = number
    if kind == "requested":
        return _next(call, "Sure, I can take a message for the clinic.")
    lead = lead or _OPENINGS[kind]
    if msg["urgent"]:
        lead += " I can take an urgent message for the clinic."
    return _ask(call, "offer", lead)


def take_message(call: CallContext, utterance: Utterance) -> AgentReply:
    """One caller turn of the message sub-dialogue."""
    msg = call.state.get("message")
    if not isinstance(msg, dict):
        return start_message(call, "requested")
    text = utterance.text or ""
    if utterance.dtmf:
        keys = utterance.dtmf.strip()
        if len(keys) >= 7 and keys.isdigit():
            text = keys
        elif keys in _DTMF_YES_NO and msg["step"] in ("offer", "phone_confirm", "confirm"):
            text = _DTMF_YES_NO[keys]
    t = _norm(text)
    if not t:
        return _miss(call, "Sorry, I didn't catch that.")
    if is_urgent(t):
        msg["urgent"] = True
    short = len(t.split()) <= 6
    if (short or msg["step"] in ("offer", "fix")) and nlu.has_any(t, *_DECLINE) \
            and not (msg["step"] == "offer" and wants_message(t)):
        return _declined(call)
    if short and nlu.has_any(t, "repeat", "say that again", "say again", "come again", "pardon"):
        # heard again, twice; after that a request to repeat is no answer either (asked
        # for ever, it would keep the caller at one question for ever)
        msg["repeats"] = msg.get("repeats", 0) + 1
        if msg["repeats"] > 2:
            return _miss(call, "")
        misses = msg["misses"]
        reply = _ask(call, msg["step"])
        msg["misses"] = misses
        return reply
    handler = _STEPS.get(msg["step"], _on_offer)
    return handler(call, msg, t)


def _on_offer(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    number = parse_phone(t)
    yn = nlu.yes_no(t)
    if number:
        msg["phone"], msg["phone_ok"] = number, False
    if wants_message(t) or number or yn is True or (is_urgent(t) and yn is not False):
        return _next(call, "Okay.")
    if yn is False:
        return _declined(call)
    return _miss(call, "Sorry, I didn't get that.")


def _on_name(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    number = parse_phone(t)
    if number and not msg["phone_ok"]:
        msg["phone"] = number
        t = _strip_number(t)
    name = _name_from(t)
    if name is None:
        if msg["misses"] + 1 >= MAX_MISSES - 1:  # a name is best effort: move on
            msg["name"] = ""
            return _next(call, "No problem.")
        return _miss(call, "Sorry, I didn't catch your name.")
    msg["name"] = name
    return _next(call, f"Thank you, {name}.")


def _on_phone_confirm(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    number = parse_phone(t)
    if number and number.lstrip("+") != (msg["phone"] or "").lstrip("+"):
        msg["phone"] = number
        return _ask(call, "phone_confirm", "Thanks.")
    yn = nlu.yes_no(t)
    if yn is True or number:
        msg["phone_ok"] = True
        return _next(call, "Great.")
    if yn is False:
        if msg["phone"] == _caller_id(call):
            msg["caller_id_refused"] = True
        msg["phone"] = None
        return _ask(call, "phone", "Okay.")
    return _miss(call, "Sorry, was that a yes or a no?")


def _on_phone(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    number = parse_phone(t)
    if number is None:
        if msg["misses"] + 1 >= MAX_MISSES:
            return _failed(call, "I'm sorry, I couldn't get a callback number.")
        return _miss(call, "Sorry, I didn't get the whole number.")
    msg["phone"], msg["phone_ok"] = number, False
    return _ask(call, "phone_confirm", "Thanks.")


def _on_reason(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    words = t.split()
    if len(words) <= 3 and (nlu.yes_no(t) is False or nlu.has_any(t, "nothing", "no reason")):
        msg["reason"] = ""
    else:
        msg["reason"] = " ".join(words)[:1000]
    return _next(call, "Got it.")


def _on_confirm(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    if parse_phone(t):
        return _on_phone(call, msg, t)
    yn = nlu.yes_no(t)
    if yn is True:
        return _store(call, msg)
    target = _which_field(t)
    if target:
        return _change(call, msg, target)
    if yn is False:
        return _ask(call, "fix", "Okay.")
    return _miss(call, "Sorry, should I send the message?")


def _on_fix(call: CallContext, msg: dict[str, Any], t: str) -> AgentReply:
    if parse_phone(t):
        return _on_phone(call, msg, t)
    target = _which_field(t)
    if target:
        return _change(call, msg, target)
    if nlu.yes_no(t) is True or nlu.has_any(t, "nothing", "it is fine", "all good"):
        return _ask(call, "confirm")
    return _miss(call, "Sorry, I didn't get that.")


_STEPS = {"offer": _on_offer, "name": _on_name, "phone_confirm": _on_phone_confirm,
          "phone": _on_phone, "reason": _on_reason, "confirm": _on_confirm, "fix": _on_fix}


def _which_field(t: str) -> str | None:
    if nlu.has_any(t, "number", "phone", "phone number", "callback number"):
        return "phone"
    if nlu.has_any(t, "name", "my name", "spelling"):
        return "name"
    if nlu.has_any(t, "message", "reason", "what it is about", "the details"):
        return "reason"
    return None


def _change(call: CallContext, msg: dict[str, Any], field: str) -> AgentReply:
    if field == "phone":
        msg["phone"], msg["phone_ok"], msg["caller_id_refused"] = None, False, True
        return _ask(call, "phone", "Sure.")
    msg[field] = None
    return _ask(call, field, "Sure.")


# ---------------------------------------------------------------- prompts and endings


def _name_from(t: str) -> str | None:
    """The name in a turn, also when more follows ("maria garcia and it's urgent")."""
    name = nlu.parse_name(t)
    if name is None:
        head = re.split(r" (?:and|but|it is|this is|i need|i want|i would|please) ", t)[0]
        name = nlu.parse_name(head) if head != t else None
    return name


def _caller_id(call: CallContext) -> str | None:
    """The caller's number if it can be called back (not anonymous, not an extension)."""
    raw = call.caller or ""
    digits = "".join(c for c in raw if c.isdigit())
    if not 7 <= len(digits) <= 15:
        return None
    return ("+" if raw.strip().startswith("+") else "") + digits


def _strip_number(t: str) -> str:
    """Text without its number words, so "john smith five five five …" still gives a name."""
    numberish = set(_DIGITS) | set(_TEENS) | set(_TENS) | {"double", "triple", "hundred",
                                                          "at", "on", "call", "me", "back"}
    return " ".join(w for w in t.split() if w not in numberish and not w.isdigit())


def _next(call: CallContext, lead: str = "") -> AgentReply:
    """Ask for the first missing piece, or confirm when all are there."""
    msg = call.state["message"]
    if msg["name"] is None:
        return _ask(call, "name", lead)
    if not msg["phone_ok"]:
        if not msg["phone"] and not msg["caller_id_refused"]:
            msg["phone"] = _caller_id(call)
        return _ask(call, "phone_confirm" if msg["phone"] else "phone", lead)
    if msg["reason"] is None:
        return _ask(call, "reason", lead)
    return _ask(call, "confirm", lead)


def _prompt(call: CallContext, step: str) -> tuple[str, tuple[str, ...]]:
    msg = call.state["message"]
    if step == "offer":
        return ("Would you like to leave a message so the clinic can call you back?", _YES_NO)
    if step == "name":
        return "May I have your name, please?", ()
    if step == "phone_confirm":
        return (f"Should we call you back at {spell_phone(msg['phone'] or '')}?",
                _YES_NO + _DIGIT_HINTS)
    if step == "phone":
        return ("What number should we call you back on? You can say it digit by digit, "
                "or type it on your keypad.", _DIGIT_HINTS)
    if step == "reason":
        return "And briefly, what is your message for the clinic?", ()
    if step == "fix":
        return "What should I change: your name, the number, or the message?", (
            "name", "number", "message")
    who = f" from {msg['name']}" if msg["name"] else ""
    about = _short(msg["reason"] or "")
    about = f", about: {about}" if about else ""
    urgent = " urgent" if msg["urgent"] else ""
    return (f"So that's an{urgent} message{who}, to call back at "
            f"{spell_phone(msg['phone'] or '')}{about}. Shall I send it?", _YES_NO)


def _short(reason: str, words: int = 12) -> str:
    parts = reason.split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


def _ask(call: CallContext, step: str, lead: str = "") -> AgentReply:
    msg = call.state["message"]
    if msg["step"] != step:
        msg["misses"] = 0
    msg["step"] = step
    prompt, hints = _prompt(call, step)
    text = f"{lead} {prompt}".strip()
    call.state["last_text"] = text
    return AgentReply(text, hints=hints)


def _miss(call: CallContext, rephrase: str) -> AgentReply:
    msg = call.state["message"]
    msg["misses"] += 1
    if msg["misses"] >= MAX_MISSES:
        if msg["step"] in ("offer", "fix"):
            return _declined(call)
        if msg["step"] == "reason":
            msg["reason"] = ""
            return _next(call, "Let's keep it short then.")
        if msg["step"] == "confirm":
            return _store(call, msg)
        if msg["step"] == "phone_confirm":  # not a yes to this number: ask for one
            msg["phone"], msg["caller_id_refused"] = None, True
            return _ask(call, "phone", rephrase)
        if msg["misses"] >= 2 * MAX_MISSES:  # no step may ask for ever
            return _failed(call, "I'm sorry, I couldn't take your message.")
    misses = msg["misses"]
    reply = _ask(call, msg["step"], rephrase)
    msg["misses"] = misses
    return reply


def _end(call: CallContext, text: str, outcome: str) -> AgentReply:
    call.state["mode"] = "message_done"
    call.state["message"]["step"] = "done"
    call.state["outcome"] = outcome
    return AgentReply(text, action="hangup", outcome=outcome)


def _declined(call: CallContext) -> AgentReply:
    log.info("call %s: caller declined to leave a message", call.call_id)
    return _end(call, f"All right. Thank you for calling {call.tenant.name}. Goodbye!",
                "message_declined")


def _failed(call: CallContext, lead: str) -> AgentReply:
    return _end(call, f"{lead} Please call again later. Goodbye.", "message_failed")


def _store(call: CallContext, msg: dict[str, Any]) -> AgentReply:
    from esl_app.scheduling.callbacks import create_ticket  # the DB stack only when needed

    reason = msg["reason"] or ""
    if msg["urgent"]:
        reason = f"URGENT: {reason}".strip()
    try:
        ticket = create_ticket(call.tenant.id, name=msg["name"] or "", phone=msg["phone"] or "",
                               reason=reason, call_id=call.call_id,
                               actor=f"call:{call.call_id}")
    except Exception:  # noqa: BLE001 - the caller must hear an ending whatever broke
        log.exception("call %s: could not store the callback ticket", call.call_id)
        return _failed(call, "I'm sorry, I couldn't save your message.")
    msg["ticket_id"] = ticket.id
    log.info("call %s: callback ticket %s stored", call.call_id, ticket.id)
    return _end(call, "Thank you. Your message has been passed on, and the clinic will call "
                "you back as soon as they can. Goodbye!", "message_taken")

