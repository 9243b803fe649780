"""What callers say to a clinic booking line, as recogniser text and language models.

Why a module of its own: the sentences, the hint families and the n-gram
builder are pure data and text code, testable without pocketsphinx, and
:mod:`esl_app.providers.stt.local` only has to turn them into decoders.

- :data:`DOMAIN_SENTENCES` is the open "anything a caller may say" corpus.
  Hand-written phrases are repeated (:data:`BASE_WEIGHT`) so the generated
  date/name/time combinations do not swamp them, and every contraction also
  appears spelt out ("that's correct" / "that is correct"): espeak-ng and
  many callers say the long form.
- :func:`hint_sentences` turns an agent's hints (``AgentReply.hints``) into
  extra, weighted sentences: each hint in carrier phrases, plus the whole
  family of answers a hint stands for (``yes`` -> "yes please", "no thank
  you"…; digits -> phone numbers and spelled codes; ``morning`` -> parts
  of the day). This biases the next turn without restricting it: a caller
  who answers off-script is still recognised from the domain model.
- :func:`turn_sentences` is one turn's whole corpus: the domain sentences
  minus the answers the question rules out, plus the hint sentences
  (:data:`HINT_WEIGHT`). Measured on espeak-ng answers per state (offers,
  doctors, days, yes/no; 26 phrases x 3 speeds): 52/78 -> 58/78 recognised.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "BASE_WEIGHT",
    "DOMAIN_SENTENCES",
    "build_arpa",
    "expand_contractions",
    "hint_sentences",
    "normalize_words",
    "turn_sentences",
]

# ----------------------------------------------------------------- text

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000 and n % 100 == 0:
        return _ONES[n // 100] + " hundred"
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize_words(text: str) -> str:
    """Text as recogniser words: lower case, ``dr.`` -> doctor, digits spelt out."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\bdr\b\.?", "doctor ", t)
    t = re.sub(r"(\d{1,2}):(\d{2})", lambda m: f"{m.group(1)} {m.group(2)}"
               if m.group(2) != "00" else m.group(1), t)
    t = re.sub(r"\d+", lambda m: " " + _number_words(int(m.group())) + " ", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    return " ".join(w.strip("'") for w in t.split() if w.strip("'"))


# ----------------------------------------------------------------- domain corpus

_FIRST = ("john mary james linda robert patricia michael jennifer david susan william "
          "elizabeth richard sarah joseph karen thomas nancy daniel lisa maria anna "
          "peter emily jane paul mark laura kevin helen "
          # more of the most common given names (US census), so that callers' names
          # are in the model's vocabulary rather than heard as the nearest words
          "ann anne alice amy andrew angela anthony barbara betty brian carol carl "
          "catherine charles chris christopher claire dan deborah denise diana donald "
          "donna dorothy edward eric eve frank gary george grace gregory harry henry "
          "iris jack jacob jason jeff jessica joan jonathan joyce julia julie justin "
          "kate kathleen kenneth kim larry leo lucy margaret martha matthew megan "
          "melissa nicole olivia pamela rachel rebecca rose ruth ryan samuel sandra "
          "scott sharon stephen steven teresa timothy tom victoria walter").split()
_LAST = ("smith johnson williams brown jones garcia miller davis wilson anderson taylor "
         "thomas moore martin jackson white harris clark lewis lee walker hall allen young "
         "king wright lopez hill green adams baker nelson carter patel chen "
         "bailey bell bennett brooks butler campbell collins cole cook cooper cox "
         "cruz edwards evans fisher ford foster gonzalez gray griffin hayes howard "
         "hughes hunt jenkins kelly kennedy kim long marsh mason mills mitchell "
         "morgan morris murphy myers nguyen ortiz parker perez perry phillips powell "
         "price reed reyes richardson rivera roberts robinson rogers ross russell "
         "sanchez scott shaw stewart sullivan turner walsh ward watson webb wood").split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
_ORD = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
        "twentieth").split()
_ORD += [f"twenty {o}" for o in _ORD[:9]] + ["thirtieth", "thirty first"]

_BASE = """
i would like to book an appointment
i'd like to book an appointment
i want to book an appointment
i need to book an appointment
i would like to make an appointment
i need to make an appointment
can i make an appointment
i need an appointment
i want to see a doctor
i need to see a doctor
i would like to see the doctor
can i see a doctor this week
i would like to schedule a checkup
i need a checkup
i want to cancel my appointment
i need to cancel my appointment
please cancel my appointment
i can't make it
i would like to reschedule my appointment
i need to reschedule
can i move my appointment
can i change my appointment to another day
i'd like to speak to a person
can i talk to someone
let me talk to a real person
operator
receptionist please
it's an emergency
i have chest pain
what are your hours
when are you open
are you open on saturday
where are you located
what is your address
yes
yes please
yeah
yeah that works
yes that's right
that's correct
that works for me
sounds good
okay
sure
perfect
great thank you
no
no thank you
no thanks
nope
that's not right
none of those
the first one
the second one
the third one
the first one please
the earlier one
the later one
anything later
anything earlier
the earliest available
as soon as possible
the next available appointment
any doctor is fine
it doesn't matter
no preference
in the morning
in the afternoon
in the evening
morning please
afternoon please
morning is better
afternoon works
today
tomorrow
tomorrow morning
tomorrow afternoon
the day after tomorrow
this week
next week
my name is john smith
my name is mary johnson
this is robert brown
it's for my daughter
the appointment is for my son
my phone number is five five five one two three four five six seven
my number is five five five zero one zero one
my email is john at example dot com
my confirmation code is k seven m four q two
that's all thank you
that's it goodbye
goodbye
bye
thank you bye
can you repeat that
sorry what was that
i didn't catch that
can i talk to a real person
i want to talk to a person
can i speak to someone
yes that works
yes that's fine
no that doesn't work
that's fine
that's right
it's for my daughter
it's for me
any time
any time is fine
the last one
i don't have it
i don't have my code
nothing
the time
the name
the phone number
i want to change the time
the day after tomorrow
as early as possible
anything on friday
do you have anything tomorrow
i would like to come in tomorrow
""".strip().splitlines()


_CONTRACTIONS = {
    "i'd": "i would", "it's": "it is", "that's": "that is", "can't": "can not",
    "doesn't": "does not", "don't": "do not", "didn't": "did not", "what's": "what is",
    "i'm": "i am", "let's": "let us",
}
BASE_WEIGHT = 3  # hand-written phrases count this many times against generated ones


def expand_contractions(sentence: str) -> str:
    """The spelt-out form ("that's right" -> "that is right")."""
    return " ".join(_CONTRACTIONS.get(w, w) for w in sentence.split())


def _with_long_forms(sentences: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in sentences:
        out.append(s)
        long = expand_contractions(s)
        if long != s:
            out.append(long)
    return out


def _digit_strings(count: int, length: int, seed: int) -> list[str]:
    """Deterministic pseudo-random digit strings (phone numbers, code fragments)."""
    out, x = [], seed
    for _ in range(count):
        digits = []
        for _ in range(length):
            x = (x * 1103515245 + 12345) % 2**31
            digits.append(_ONES[(x >> 16) % 10])
        out.append(" ".join(digits))
    return out


_LETTERS = "a b c d e f g h j k l m n p q r s t u v w x y z".split()


def _codes(count: int) -> list[str]:
    """Spelled confirmation codes: alternating letters and digits ("k seven m four q two")."""
    out, x = [], 7
    for _ in range(count):
        chars = []
        for i in range(6):
            x = (x * 1103515245 + 12345) % 2**31
            r = (x >> 16)
            chars.append(_LETTERS[r % len(_LETTERS)] if i % 2 == 0 else _ONES[r % 10])
        out.append(" ".join(chars))
    return out


_FAMILIES: dict[str, list[str]] = {
    "yes_no": """yes
yes please
yeah
yep
yes that works
yes that's right
yes that's correct
that's correct
that's right
that works
that works for me
sounds good
okay
sure
perfect
correct
no
no thank you
no thanks
nope
no that's not right
that's not right
no that doesn't work""".splitlines(),
    "choice": ["the first one", "the second one", "the third one", "the last one",
               "the first one please", "the second one please", "the earlier one",
               "the later one", "anything later", "anything earlier", "none of those",
               "the earliest available", "yes", "no"],
    "part": ["morning", "afternoon", "in the morning", "in the afternoon", "morning please",
             "afternoon please", "any time", "any time is fine", "the morning",
             "the afternoon", "morning is better", "afternoon works"],
    "date": ["today", "tomorrow", "tomorrow morning", "tomorrow afternoon",
             "the day after tomorrow", "next week", "this week", "the earliest",
             "as soon as possible", "the earliest available"]
    + [f"{p}{d}" for d in _DAYS for p in ("", "on ", "next ", "this ")],
    "digits": [f"{p}{n}" for n, p in zip(_digit_strings(40, 10, 3) + _digit_strings(20, 7, 5)
                                        + _digit_strings(20, 4, 9),
                                        itertools.cycle(("", "my number is ",
                                                         "my phone number is ", "it's ")),
                                        strict=False)],
    "code": [f"{p}{c}" for c, p in zip(_codes(40), itertools.cycle(
        ("", "my code is ", "my confirmation code is ", "it's ")), strict=False)]
    + ["i don't have it", "i don't have my code", "i don't know"],
}
FAMILY_WEIGHT = 4  # a family counts this many times when its trigger is among the hints


#: A hint that asks for no phrase but the spelling family: the caller is asked to spell
#: (their name): letter sequences become likely, so "w a l s h" is heard as letters.
SPELLING_HINT = "#spelling"
_ALL_LETTERS = "a b c d e f g h i j k l m n o p q r s t u v w x y z".split()


def _spellings(count: int) -> list[str]:
    """Letter sequences of 2 to 9 letters, a third of them after "it's"."""
    out, x = [], 11
    for i in range(count):
        length = 2 + i % 8
        chars = []
        for _ in range(length):
            x = (x * 1103515245 + 12345) % 2**31
            chars.append(_ALL_LETTERS[(x >> 16) % 26])
        word = " ".join(chars)
        out.append(word if i % 3 else f"it's {word}")
    return out


_FAMILIES["spelling"] = _spellings(240)


def _families_for(words: set[str]) -> list[str]:
    """Families triggered by hint words (hint phrases already normalised)."""
    names = []
    if SPELLING_HINT in words:
        names.append("spelling")
    if words & {"yes", "no"}:
        names.append("yes_no")
    if words & {"first", "second", "last", "later"}:
        names.append("choice")
    if words & {"morning", "afternoon"}:
        names.append("part")
    if words & (set(_DAYS) | {"tomorrow", "today", "week"}):
        names.append("date")
    if len(words & set(_ONES[:10])) >= 5:
        names += ["digits", "code"]
    return names


def _domain_sentences() -> list[str]:
    out = list(_BASE) * BASE_WEIGHT
    for d in _DAYS:
        out += [d, f"on {d}", f"next {d}", f"this {d}", f"{d} morning", f"{d} afternoon",
                f"next {d} morning", f"can i come in on {d}", f"do you have anything on {d}",
                f"i would like an appointment on {d}"]
    for m, o in zip(itertools.cycle(_MONTHS), _ORD, strict=False):
        out += [f"{m} {o}", f"on {m} {o}", f"the {o}", f"on the {o}"]
    for m in _MONTHS:
        out += [f"{m} first", f"in {m}"]
    for h in range(1, 13):
        hw = _number_words(h)
        out += [f"at {hw}", f"{hw} o'clock", f"{hw} thirty", f"at {hw} thirty",
                f"{hw} fifteen", f"{hw} forty five", f"{hw} a m", f"{hw} p m",
                f"at {hw} in the morning", f"at {hw} in the afternoon"]
    for i, first in enumerate(_FIRST):
        for last in (_LAST[i % len(_LAST)], _LAST[(i * 7 + 3) % len(_LAST)]):
            out += [f"my name is {first} {last}", f"{first} {last}", f"it's {first} {last}"]
    for last in _LAST:
        out += [f"doctor {last}", f"with doctor {last}", f"i want to see doctor {last}"]
    out += _FAMILIES["digits"][:12] + _FAMILIES["code"][:8]
    return _with_long_forms(out)


DOMAIN_SENTENCES: tuple[str, ...] = tuple(_domain_sentences())

_CARRIERS = ("{h}", "{h} please", "with {h}", "i would like {h}", "yes {h}", "{h} is fine",
             "my name is {h}", "i want to see {h}", "on {h}", "at {h}")


_BARE = frozenset({"yes", "no", *_ONES[:10]})


def hint_sentences(hints: Sequence[str]) -> list[str]:
    """Extra language-model sentences that bias recognition toward ``hints``.

    Each hint appears alone and in carrier phrases; hints that stand for a kind
    of answer (yes/no, digits, a choice among offers, a day, a part of the day)
    also bring that answer family, repeated :data:`FAMILY_WEIGHT` times.
    """
    out: list[str] = []
    words: set[str] = set()
    for h in hints:
        if h == SPELLING_HINT:
            words.add(SPELLING_HINT)
            continue
        w = normalize_words(h)
        if w in _BARE:  # an answer word: its family carries it, carriers would be noise
            words.add(w)
            out.append(w)
        elif w:
            words.update(w.split())
            out += [c.format(h=w) for c in _CARRIERS] + [w] * 3
    for name in _families_for(words):
        out += _FAMILIES[name] * FAMILY_WEIGHT
    return _with_long_forms(out)


_PERSON_NAMES = frozenset(_FIRST) | frozenset(_LAST)
_ORDINAL_CHOICES = frozenset(_ORD[:10]) | {"last"}
_CARDINALS = frozenset(_ONES[1:]) | frozenset(_TENS[2:])
HINT_WEIGHT = 10  # hint and family sentences count this many times more in a turn's model


def _excluded(hint_words: set[str], families: list[str]) -> set[str]:
    """Words the turn's model leaves out: the alternatives the agent did not offer.

    Why: for the caller's answer to a question the agent knows the candidates
    (its doctors, the offered choices, days); the bundled acoustic model
    hears espeak's and many callers' /s/ weakly, so "Smith" scores as "Lee",
    "first" as "third", "Tuesday" as "two". Biasing the counts is not enough
    against that; removing the competitors the question cannot have is.
    Everything else of the domain model stays, so an off-script answer
    ("I want to cancel") is still heard.
    """
    out: set[str] = set()
    if families:
        out |= _PERSON_NAMES  # a yes/no, choice, day or digits question: nobody's name
    if "choice" in families:
        out |= _ORDINAL_CHOICES
    if "date" in families and "digits" not in families:
        out |= _CARDINALS
    return out - hint_words


def turn_sentences(hints: Sequence[str]) -> list[str]:
    """The whole language-model corpus for one turn with ``hints``.

    The domain corpus minus the alternatives :func:`_excluded` rules out, plus
    the hint sentences weighted :data:`HINT_WEIGHT` times.
    """
    extra = hint_sentences(hints)
    words = {w for h in hints for w in normalize_words(h).split()}
    families = _families_for(words)
    banned = _excluded(words, families)
    doctors = _PERSON_NAMES - words if "doctor" in words else set()

    def keep(sentence: str) -> bool:
        w = sentence.split()
        if banned and not banned.isdisjoint(w):
            return False
        # The agent named its doctors: "doctor <someone else>" is not an answer.
        return not doctors or not any(a == "doctor" and b in doctors
                                      for a, b in zip(w, w[1:], strict=False))

    return [s for s in (*DOMAIN_SENTENCES, *extra * HINT_WEIGHT) if keep(s)]


def build_arpa(sentences: Iterable[str], order: int = 3, discount: float = 0.5) -> str:
    """A backoff n-gram model (absolute discounting) in ARPA text format.

    Small and exact enough for a few thousand domain sentences; unigrams get
    add-one smoothing so every vocabulary word stays reachable.
    """
    counts: list[collections.Counter[tuple[str, ...]]] = [
        collections.Counter() for _ in range(order + 1)]
    for s in sentences:
        w = ["<s>", *s.split(), "</s>"]
        for n in range(1, order + 1):
            for i in range(len(w) - n + 1):
                counts[n][tuple(w[i:i + n])] += 1
    total = sum(c for (w,), c in counts[1].items() if w != "<s>")
    vocab = len(counts[1])
    probs: dict[tuple[str, ...], float | None] = {}
    for (w,), c in counts[1].items():
        probs[(w,)] = None if w == "<s>" else (c + 1) / (total + vocab)
    bows: dict[tuple[str, ...], float] = {}

    def full(ng: tuple[str, ...]) -> float:
        p = probs.get(ng)
        if p is not None:
            return p
        if len(ng) == 1:
            return 1.0 / (total + vocab)
        return bows.get(ng[:-1], 1.0) * full(ng[1:])

    for n in range(2, order + 1):
        by_hist: dict[tuple[str, ...], list[tuple[tuple[str, ...], int]]] = \
            collections.defaultdict(list)
        for ng, c in counts[n].items():
            by_hist[ng[:-1]].append((ng, c))
        for items in by_hist.values():
            tot = sum(c for _, c in items)
            for ng, c in items:
                probs[ng] = (c - discount) / tot
        for hist, items in by_hist.items():
            seen = sum(probs[ng] or 0.0 for ng, _ in items)
            lower = sum(full(ng[1:]) for ng, _ in items)
            bows[hist] = max(1e-9, (1 - seen) / max(1e-9, 1 - lower))
    lines = ["\\data\\"] + [f"ngram {n}={len(counts[n])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for ng in sorted(counts[n]):
            p = probs[ng]
            line = f"{-99.0 if p is None else math.log10(p):.4f} {' '.join(ng)}"
            if n < order:
                line += f" {math.log10(bows.get(ng, 1.0)):.4f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


