"""An adaptive caller that drives ``ivr simulate --jsonl``: it listens to what the bot
asked and answers that, from a persona, in words drawn from varied phrasings.

Callers behave as callers do: some give everything in their first sentence, some open
with "hi", some ask the bot to repeat, stay silent, correct themselves or hang up. The
driver never follows a fixed script, so a change of wording in the bot's prompts does
not break it, but a bot that loops, forgets or misunderstands does.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

YES = ["yes", "yes please", "yeah", "that's right", "correct", "yep, that's fine", "sure"]
NO_MORE = ["no, that's all, thanks", "no thank you", "nope, that's it", "no, goodbye",
           "that's everything, thanks"]
REPEAT = ["sorry, could you repeat that?", "what was that?", "pardon?",
          "can you say that again please", "sorry, I missed that"]
GOALS = {
    "book": ["I'd like to book an appointment", "I need to make an appointment",
             "can I schedule a visit", "I want to see a doctor", "I'd like to come in"],
    "cancel": ["I need to cancel my appointment", "I want to cancel my visit",
               "please cancel my appointment", "I can't make my appointment, cancel it"],
    "reschedule": ["I need to move my appointment", "can I reschedule my appointment",
                   "I'd like to change the time of my appointment"],
    "handoff": ["can I speak to a person", "I'd like to talk to the receptionist",
                "put me through to someone please", "operator"],
    "hours": ["what are your opening hours", "when are you open", "what time do you close"],
    "address": ["where are you located", "what's your address", "where is the clinic"],
    "emergency": ["my husband has chest pain and can't breathe",
                  "I think I'm having a heart attack"],
    # a caller the bot cannot help: nothing they say is a request it knows
    "lost": ["the thing with the stuff", "purple elephants", "it's about my cousin's cat",
             "you know, the usual"],
}
ORDINALS = {"first": 0, "second": 1, "third": 2, "last": -1}


@dataclass
class Persona:
    """Who calls and what they want; loaded from callers.yaml."""

    id: str
    goal: str
    did: str = "1001"
    caller: str = "+15550100100"
    opener: str | None = None      # first sentence; default: a goal phrase
    hello_first: bool = False      # says "hi" before anything
    doctor: str | None = None      # words the caller uses for the doctor ("Dr. Patel")
    doctor_id: str | None = None   # what the booking must be with
    day: str | None = None         # "next Tuesday", "as soon as possible", …
    part: str | None = None        # morning | afternoon
    pick: str = "first"            # first | second | last | time
    name: str = "Ann Example"
    say_name: str | None = None    # how the name is said (spelled, with a correction …)
    phone: str | None = None       # a different number than the one calling, said so
    code: str | None = None        # a confirmation code the caller knows (cancel/move)
    new_day: str | None = None     # reschedule: the new day
    quirks: dict[str, str] = field(default_factory=dict)  # question kind → behaviour
    hang_up_at: str | None = None  # question kind at which the caller hangs up
    press: str | None = None       # DTMF instead of speech at the first question
    expect: str = "booked"         # the outcome the call must end with
    weekday: int | None = None     # checks on the booked slot: 0 = Monday
    no_doctor_question: bool = False  # "earliest, any doctor": the bot must not ask
    existing: dict[str, str] | None = None  # an appointment made before the call
    knows_code: bool = False       # the caller knows that appointment's code
    heard: str | None = None       # words the bot must have said (facts)
    declines: bool = False         # "no" to every yes/no question, for ever
    seed: int = 0


@dataclass
class Result:
    """What happened on the call, from the caller's side and the bot's transcript."""

    persona: Persona
    outcome: str | None = None
    transcript: dict[str, Any] = field(default_factory=dict)
    caller_turns: int = 0
    turns_to_book: int | None = None  # caller turns until the bot said it was booked
    bot_lines: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stderr: str = ""
    error: str | None = None


def classify(text: str) -> str:
    """The kind of question in what the bot just said (lower-cased), or ``other``."""
    t = text.lower()
    rules = [
        ("confirm_doctor", r"did you mean|do you mean"),
        ("confirm_cancel", r"(shall|should|do you want( me)?( to)?|want me to) (i )?cancel"),
        ("confirm_move", r"(shall|should) i (move|change|reschedule)|move it to"),
        ("confirm_booking", r"(shall|should) i book|book .* for .*\?|is that (right|correct)\?"),
        ("anything_else", r"anything else"),
        ("help", r"how can i help|what can i do for you|help you (with )?today|"
                 r"what would you like to do"),
        ("connect", r"(would you like|shall i|should i|do you want)( me)?( to)? "
                    r"(connect|transfer|put you through)|like to (speak|talk) (to|with)"),
        ("code", r"confirmation code"),
        ("appt_name", r"name .*appointment (is )?under|under what name|whose name"),
        ("spell", r"spell"),
        ("name", r"\bname\b"),
        ("phone", r"calling from|reach you|phone number|callback number|best number"),
        ("doctor", r"which doctor|what doctor|doctor would you|with dr\.? \w+ or dr"),
        ("part", r"morning or (the )?afternoon|afternoon or (the )?morning|time of day"),
        ("day", r"what day|which day|what date|when would you like|which date|day would"),
        ("pick", r"which (one|would you like|time|suits)|would you like\?|i have .*( or |, )"),
        ("help", r"how can i help|what can i do for you|help you (with )?today|book, change"),
        ("yes_no", r"yes or no"),
    ]
    for kind, pattern in rules:
        if re.search(pattern, t):
            return kind
    return "other"


class Caller:
    """Runs one persona through a ``simulate --jsonl`` process."""

    def __init__(self, persona: Persona, server: str | None, *, db: str | None = None,
                 tenants: str | None = None, time_scale: float = 0.05,
                 max_turns: int = 30, timeout: float = 90.0, audio: bool = False) -> None:
        self.p = persona
        self.rng = random.Random(f"{persona.id}:{persona.seed}")
        self.server, self.db, self.tenants = server, db, tenants
        self.time_scale, self.max_turns, self.timeout = time_scale, max_turns, timeout
        self.audio = audio  # spoken by espeak-ng over the audio fork: VAD and recogniser
        self.asked: dict[str, int] = {}
        self.quirks_done: set[str] = set()
        self.last_kind = "help"
        self.goal_said = False
        self.corrected = False

    # -- answers ------------------------------------------------------------------

    def _pick(self, options: list[str]) -> str:
        return self.rng.choice(options)

    def _goal(self) -> str:
        p = self.p
        if p.opener and not self.goal_said:
            self.goal_said = True
            return p.opener
        self.goal_said = True
        return self._pick(GOALS[p.goal])

    def _times(self, text: str) -> list[str]:
        return re.findall(r"\b(\d{1,2}(?::\d{2})? ?(?:AM|PM)|noon)\b", text, re.IGNORECASE)

    def answer(self, kind: str, text: str) -> str:
        """What this persona says to a question of ``kind`` (the bot said ``text``)."""
        p = self.p
        n = self.asked.get(kind, 0)
        self.asked[kind] = n + 1
        if p.hang_up_at == kind:
            return "#hangup now"
        if p.declines:  # says no to whatever it is offered, and nothing useful otherwise
            offered = kind in ("connect", "yes_no") or "leave a message" in text.lower()
            return "no" if offered else self._goal()
        quirk = p.quirks.get(kind)
        if quirk and kind not in self.quirks_done:
            self.quirks_done.add(kind)
            if quirk == "repeat":
                return self._pick(REPEAT)
            if quirk == "silence":
                return "#silence 2"
            if quirk == "mumble":
                return self._pick(["uh", "hmm, let me think", "one second"])
            if quirk.startswith("say:"):
                return quirk[4:]
        if kind == "help" or (kind == "other" and not self.goal_said):
            if p.press and not self.goal_said:
                self.goal_said = True
                return f"#dtmf {p.press}"
            if p.hello_first and n == 0 and not self.goal_said:
                return self._pick(["hi", "hello?", "hi there", "good morning"])
            return self._goal()
        if kind == "doctor":  # a caller who named one in their first sentence repeats it
            named = f"Dr. {p.doctor_id.title()}" if p.doctor_id else None
            return p.doctor or named or self._pick(["any doctor is fine", "I don't mind",
                                                    "whoever is available"])
        if kind == "confirm_doctor":
            return self._pick(YES)
        if kind == "day":
            if p.goal == "reschedule" and p.new_day:
                return p.new_day
            return p.day or self._pick(["as soon as possible", "whenever is earliest"])
        if kind == "part":
            return {"morning": self._pick(["morning", "in the morning", "mornings are best"]),
                    "afternoon": self._pick(["afternoon", "the afternoon please",
                                             "after lunch"])}.get(
                p.part or "", self._pick(["either is fine", "I don't mind"]))
        if kind == "pick":
            times = self._times(text)
            fits = [t for t in times if p.part and (
                (p.part == "afternoon") == (t.lower() == "noon" or t.upper().endswith("PM")))]
            if p.part and times and not fits and "asked_part" not in self.quirks_done:
                self.quirks_done.add("asked_part")  # none fits: ask for what they need
                return self._pick(["do you have anything in the {}?",
                                   "I need the {}, is there anything then?"]).format(p.part)
            if p.part and fits and len(fits) < len(times):  # take one that fits
                chosen = fits[-1] if p.pick == "last" else fits[0]
                return self._pick(["{} please", "the {} one", "{} works for me"]).format(chosen)
            if p.pick == "time" and times:
                return self._pick(["{} please", "{} works", "let's do {}"]).format(times[0])
            which = p.pick if p.pick in ORDINALS else "first"
            words = {"first": ["the first one", "the first", "the earliest one"],
                     "second": ["the second one", "the second", "the middle one"],
                     "third": ["the third one"], "last": ["the last one", "the last"]}
            return self._pick(words[which])
        if kind in ("name", "spell"):
            if kind == "spell" or n >= 1:
                return " ".join(p.name.split()[-1].upper())  # spell the surname
            return p.say_name or self._pick(["{}", "it's {}", "my name is {}"]).format(p.name)
        if kind == "appt_name":
            return (p.existing or {}).get("name") or p.name
        if kind == "phone":
            if p.phone:
                if n == 0 and "calling from" in text.lower():
                    return self._pick(["no, please use another number",
                                       f"no, call me on {p.phone}"])
                return p.phone
            return self._pick(YES + ["yes, this number is fine"])
        if kind == "code":
            if p.code:
                return " ".join(p.code.replace("-", ""))
            return self._pick(["I don't have it", "I don't know it", "I lost it"])
        if kind == "confirm_booking" and p.phone and "calling from" in text.lower():
            return self._pick([f"no, call me on {p.phone}", "no, please use another number",
                               f"yes, but my number is {p.phone}"])
        if kind in ("confirm_booking", "confirm_cancel", "confirm_move"):
            return self._pick(YES)
        if kind == "anything_else":
            return self._pick(NO_MORE)
        if kind == "connect":
            # a caller who asked for a person says yes; one still hoping to be served by
            # the bot declines once, then takes the front desk it is offered again
            if p.goal in ("handoff", "emergency") or n >= 1:
                return self._pick(YES)
            return "no thanks"
        if kind == "yes_no":
            return self._pick(YES)
        # something the caller did not follow: ask again, then restate what they want
        return self._pick(REPEAT) if n == 0 else self._goal()

    # -- the call -----------------------------------------------------------------

    def run(self) -> Result:
        p = self.p
        args = [sys.executable, "-m", "esl_app"]
        if self.db:
            args += ["--db", self.db]
        if self.tenants:
            args += ["--tenants", self.tenants]
        args += ["simulate", "--jsonl", "--did", p.did, "--caller", p.caller,
                 "--time-scale", str(self.time_scale)]
        if self.server:
            args += ["--server", self.server]
        if self.audio:
            args.append("--audio")
        res = Result(p)
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stdin is not None and proc.stdout is not None
        heard: list[str] = []
        try:
            for raw in proc.stdout:
                if time.monotonic() - t0 > self.timeout:
                    res.error = "timed out"
                    break
                ev = json.loads(raw)
                kind = ev.get("event")
                if kind == "bot_said":
                    heard.append(ev.get("text", ""))
                    res.bot_lines.append(ev.get("text", ""))
                    if res.turns_to_book is None and "You're booked" in ev.get("text", ""):
                        res.turns_to_book = res.caller_turns
                elif kind == "listening":
                    text = " ".join(heard)
                    heard = []
                    q = classify(text)
                    res.asked.append(q)
                    line = self.answer(q, text)
                    if not line.startswith("#silence"):
                        res.caller_turns += 1
                    res.said.append(line)
                    if res.caller_turns > self.max_turns:
                        line = "#hangup now"
                        res.error = f"over {self.max_turns} caller turns"
                    proc.stdin.write(line + "\n")
                    proc.stdin.flush()
                elif kind == "call_ended":
                    res.transcript = ev
                    res.outcome = ev.get("outcome")
                    break
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                res.error = res.error or "simulate did not exit after the call"
            res.stderr = proc.stderr.read() if proc.stderr else ""
        res.seconds = time.monotonic() - t0
        if res.outcome is None and res.error is None:
            res.error = f"no call_ended (exit {proc.returncode}): {res.stderr[-300:]}"
        return res
