"""Adaptive callers for real-switch calls: they answer what the bot just asked.

Each caller picks its words by the question it heard (never by a turn number), in one
of several phrasings, so the test follows the bot wherever the conversation goes. The
phrasings are ones espeak-ng's voice and the local recogniser get right at 8 kHz: the
test is of the telephony path, the recogniser's accuracy is measured elsewhere.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from freeswitch.harness import Caller

OPENERS = ("Hi, I'd like to book an appointment", "I'd like to book an appointment")
DOCTORS = ("Dr. Smith, please",)
DAYS = ("next Tuesday morning",)
PICKS = ("the last one", "the first one")
NAMES = ("Mary Johnson",)
YES = ("yes",)
NO = ("no", "no thanks")
DONE = ("no, that's all, thanks",)
PHONE = "5550100100"


@dataclass
class BookingCaller:
    """Books with Dr. Smith next Tuesday morning; answers whatever the bot asks next."""

    call: Caller
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    keys: bool = False  # choose and confirm on the keypad (RFC 2833 DTMF) instead of words
    said: list[str] = field(default_factory=list)
    bot: list[str] = field(default_factory=list)
    picks: int = 0  # times the offer was answered (a second answer says the time)

    def reply(self, prompt: str) -> str | None:
        """The line for the bot's last words, or None when nothing is asked."""
        p = prompt.lower()
        if "goodbye" in p:
            return None
        if "anything else" in p:
            return self.rng.choice(DONE)
        if "front desk" in p or "leave a message" in p or "connect you" in p:
            return self.rng.choice(NO)  # a booking caller wants the bot, not a person
        # the read-back first: it names the time, the name and the number called from
        # ("Shall I book … for Mary Johnson, at the number you're calling from, ending
        # in 0 1 0 0?"), which the questions below would otherwise catch
        if "shall i book" in p or "is that right" in p or "correct" in p or "confirm" in p:
            return "#1" if self.keys else self.rng.choice(YES)
        if "which doctor" in p or "who would you like" in p:
            return self.rng.choice(DOCTORS)
        if "what day" in p or "which day" in p or "another day" in p or "no openings" in p:
            return self.rng.choice(DAYS)
        # times offered, for the day asked or across it (no "morning or afternoon?" first)
        if "which would you like" in p or "which one" in p or "which time" in p:
            if self.keys:
                return "#2"
            self.picks += 1
            times = re.findall(r"\b(\d{1,2}(?::\d{2})? [AP]M)\b", " ".join(self.bot[-4:]))
            if self.picks > 1 and times:  # not understood: say the time itself, as people do
                return f"{times[0]}, please"
            return self.rng.choice(PICKS)
        if "morning" in p and "afternoon" in p and "?" in p:
            return "the morning"  # asked for a part of the day, should the bot ever ask
        if "work?" in p:  # one time offered
            return "#1" if self.keys else self.rng.choice(YES)
        if "name" in p:
            return self.rng.choice(NAMES)
        if "number" in p and "?" in p:  # asked for one (no caller ID): keyed in
            return "#" + PHONE + "#"
        if "help you" in p or "book, change or cancel" in p or "how can i" in p:
            return self.rng.choice(OPENERS)
        return None

    def converse(self, max_turns: int = 14) -> None:
        """Talk until the bot hangs up, says goodbye, or ``max_turns`` caller lines."""
        for _ in range(max_turns):
            heard = self.call.wait_bot_quiet(timeout=40)
            self.bot += heard
            if self.call.ended():
                return
            line = self.reply(" ".join(heard[-2:]) if heard else "")
            if line is None:
                if self.call.ended() or any("goodbye" in h.lower() for h in heard):
                    return
                continue  # nothing was asked ("Please hold…"): the bot goes on by itself
            self.said.append(line)
            if line.startswith("#"):
                self.call.dtmf(line[1:])
            else:
                self.call.say(line)

    def until(self, pred: Callable[[str], bool], max_turns: int = 10) -> list[str]:
        """Converse until the bot says something ``pred`` accepts (not answered yet)."""
        for _ in range(max_turns):
            heard = self.call.wait_bot_quiet(timeout=40)
            self.bot += heard
            if any(pred(h) for h in heard) or self.call.ended():
                return heard
            line = self.reply(" ".join(heard[-2:]) if heard else "") or self.rng.choice(OPENERS)
            self.said.append(line)
            if line.startswith("#"):
                self.call.dtmf(line[1:])
            else:
                self.call.say(line)
        raise AssertionError(f"the bot never got there: {self.bot}")


@dataclass
class MessageCaller(BookingCaller):
    """Wants a person; when nobody answers, leaves a message (or declines with ``decline``)."""

    decline: bool = False

    def reply(self, prompt: str) -> str | None:
        p = prompt.lower()
        if "goodbye" in p:
            return None
        if "leave a message" in p:
            return "no" if self.decline else "yes"
        if "your name" in p or "name, please" in p:
            return "Mary Johnson"
        if "what number" in p:
            return "#5550100100#"
        if "message for the clinic" in p or "what is your message" in p:
            return "please call me back about my appointment"
        if "should we call you back" in p or "send" in p or "is that right" in p \
                or "correct" in p:
            return "yes"
        if "anything else" in p:
            return "no thanks"
        if "help you" in p or "book, change or cancel" in p:
            return "#0"
        if "didn't" in p or "sorry" in p:
            return self.said[-1] if self.said else "#0"
        return None
