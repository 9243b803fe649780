"""Red-flag detection: a caller describing an emergency stops the booking flow at once.

The text comes from a speech recogniser (lower case, little punctuation, numbers
possibly as words), at any turn of the call, and is checked *before* any agent
sees it, so the local and Bedrock agents behave alike.

Decisions, tested by the phrasing table in ``tests/test_safety_emergency.py``:

* Present symptoms trigger, and so does a bare symptom without tense ("chest
  pain", "slurred speech"): when in doubt, trigger.  Recent past counts as
  present ("an hour ago", "last night", "yesterday", "just had a seizure").
* Past history does not: a symptom phrase next to a history marker ("last
  year", "three months ago", "history of", "follow up", "sometimes")
  is ignored unless the caller also says it is happening now
  ("right now", "still", "it is back", "I am having", "I have …").  "I had a
  stroke" on its own is history; "having a stroke" / "I think he had a
  stroke" / "just had a stroke" trigger.
* A negation right before the phrase ("no chest pain", "I do not have trouble
  breathing", "she is not having a seizure", "I am not suicidal") suppresses
  it; a leading answer word does not ("no, I can't breathe" triggers).
* Ordinary booking talk and names never match: phrases are whole words
  ("chester" is not "chest"), and exam words ("my chest x-ray", "a breathing
  test") are not symptoms.

It never gives medical advice: :func:`emergency_reply` only sends the caller to
the emergency number or the clinic's urgent line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from esl_app.config.tenants import Tenant
from esl_app.providers.agent.base import AgentReply
from esl_app.providers.agent.contractions import expand

__all__ = ["CATEGORIES", "EmergencyMatch", "detect_emergency", "emergency_reply", "normalize"]


@dataclass(frozen=True)
class EmergencyMatch:
    """Which red flag was heard, and the words that raised it (for the call record only)."""

    category: str
    phrase: str


def normalize(text: str | None) -> str:
    """Lower case, contractions expanded, hyphens and punctuation turned into spaces."""
    t = (text or "").lower().replace("\u2019", "'")
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    words = [expand(w) for w in (w.strip("'") for w in t.split()) if w]
    return " ".join(words).replace("'", "")


_POSS = r"(?:my|his|her|their|the|our|your|its)"
_BIG = (r"(?:\d{2,}|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen"
        r"|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|a hundred"
        r"|one hundred|hundred)(?: [a-z]+)?")
_MINUTES = r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|twenty|a few)"
_MEDS = (r"(?:pills?|tablets?|medications?|medicine|meds|capsules|painkillers|tylenol|advil"
         r"|aspirin|ibuprofen|acetaminophen|paracetamol|xanax|opioids|oxy[a-z]*|insulin"
         r"|heroin|fentanyl)")

_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("not_breathing", (
        r"(?:not|stopped|stop|quit) breathing",
        r"turning blue", r"going blue", r"blue lips",
        r"(?:lips|face|skin) (?:is |are )?(?:turning |going |all )?blue",
    )),
    ("unconscious", (
        r"unconscious", r"unresponsive", r"passed out", r"collapsed", r"out cold",
        r"not waking up",
        r"(?:will|does|is|would) not (?:wake up|come to)",
        r"can not (?:wake|rouse) (?:him|her|them|my [a-z]+|the [a-z]+)",
    )),
    ("breathing", (
        rf"can not (?:breathe|breath|catch {_POSS} breath|get (?:any )?air)",
        r"(?:trouble|difficulty|problems?|struggling|hard time|a hard time) "
        r"(?:breathing|to breathe|getting air)",
        r"(?:hard|difficult) to breathe", r"short(?:ness)? of breath",
        r"gasping", r"choking", r"(?:fighting|struggling) for (?:air|breath)",
    )),
    ("chest_pain", (
        r"chest (?:pains?|pressure|tightness|is tight|feels (?:tight|heavy)|hurts|is hurting"
        r"|is killing me|(?:has|have|had) been (?:hurting|aching|tight|killing me))",
        rf"(?:pain|pressure|tightness|squeezing|heaviness) (?:in|on) {_POSS} chest",
        r"tight chest", r"crushing (?:chest )?pain",
        r"(?:having|just had) a heart attack", r"(?:is|be) a heart attack",
        r"think (?:[a-z]+ ){0,4}heart attack",
    )),
    ("stroke", (
        r"(?:face|mouth|smile) (?:is )?(?:drooping|droopy|sagging|lopsided|drooped)",
        r"drooping (?:face|mouth)", r"(?:face|mouth) droop",
        r"slurred (?:speech|words)", rf"slurr?ing (?:{_POSS} )?(?:words|speech)",
        r"(?:speech|words) (?:is |are )?slurr?(?:ed|ing)",
        rf"can not get {_POSS} words out",
        rf"(?:one|left|right) side (?:of {_POSS} (?:body|face) )?(?:is |went |feels |has gone )?"
        r"(?:numb|weak|paralyzed|limp|dead)",
        r"(?:numb|numbness|weak|weakness|paralyzed) (?:on|in|down) (?:one|the left|the right"
        r"|my left|my right|his left|his right|her left|her right) side",
        rf"(?:can not|unable to) (?:move|feel|lift) {_POSS} (?:left |right )?(?:arm|leg|face|side)",
        r"sudden(?:ly)? (?:very )?confus(?:ed|ion)",
        r"all of a sudden (?:[a-z]+ ){0,3}confused",
        r"(?:having|just had) a stroke", r"(?:is|be) a stroke", r"signs of a stroke",
        r"stroke symptoms", r"think (?:[a-z]+ ){0,4}stroke",
    )),
    ("seizure", (
        r"seizures? (?:that |which )?(?:will not|does not|would not|has not|is not) stop",
        r"(?:having|just had|keeps having|in the middle of) (?:a |another )?(?:seizures?|fit"
        r"|convulsions?)",
        r"seizing", r"convuls(?:ing|ions?)",
        rf"(?:seizure|seizing|shaking|convulsing) for (?:over |more than |about )?{_MINUTES} "
        r"minutes",
        r"(?:will not|can not|does not) stop (?:shaking|seizing|jerking)",
    )),
    ("allergic", (
        r"(?:severe|bad|serious|major|really bad) allergic reaction",
        r"having (?:an? )?(?:[a-z]+ )?allergic reaction",
        r"anaphyla(?:xis|ctic)",
        r"throat (?:is )?(?:closing|swelling|tightening|closed)",
        rf"swelling (?:in|of) {_POSS} throat",
        r"(?:tongue|lips) (?:is |are )?(?:swelling|swollen)",
        r"epi ?pen",
    )),
    ("bleeding", (
        r"(?:severe|heavy|serious|bad|lots of|a lot of|uncontrolled) bleeding",
        r"bleeding (?:heavily|badly|a lot|so much|everywhere|really bad|profusely|like crazy|out)",
        r"(?:will not|can not|does not|would not|has not|is not) stop(?:ped)? (?:the )?bleeding",
        r"bleeding (?:that |which )?(?:will|does|would) not stop",
        r"(?:blood|bleeding) (?:is )?(?:everywhere|pouring|gushing|spurting)",
        r"losing (?:a lot of |so much |lots of )?blood",
        r"(?:gushing|pouring|spurting) blood", r"(?:coughing|throwing|vomiting) (?:up )?blood",
    )),
    ("overdose", (
        r"overdos(?:e|ed|es|ing)",
        rf"(?:took|taken|swallowed|ate) (?:way )?(?:too many|too much|a whole bottle"
        rf"|the whole bottle|an entire bottle|a bottle|a handful|{_BIG})"
        rf"(?: of)?(?: {_POSS})?(?: [a-z]+){{0,2}} {_MEDS}",
        r"(?:drank|swallowed|ate) (?:some )?(?:bleach|poison|antifreeze|drain cleaner"
        r"|cleaning (?:fluid|product))",
        r"(?<!food )poison(?:ed|ing)",
    )),
    ("self_harm", (
        r"suicid(?:al|e)", r"kill (?:myself|himself|herself|themselves)",
        rf"end (?:{_POSS} (?:own )?life|it all)", rf"take {_POSS} (?:own )?life",
        r"(?:want|wants|going) to die",
        r"(?:hurt|harm|cut|hurting|harming|cutting) (?:myself|himself|herself|themselves)",
        r"self harm(?:ing)?",
        r"(?:do|does) not want to (?:live|be alive|be here anymore)",
        r"better off dead", r"no reason to live",
    )),
    ("declared", (
        r"(?:an|a medical) emergency(?! (?:appointment|visit|slot|booking|contact|number|room"
        r"|line|department|dentist))",
        r"(?:call|calling|need|send|get) (?:me |us )?(?:an |the )?ambulance",
        r"(?:call|dial|calling) (?:nine one one|911)",
    )),
)

CATEGORIES: tuple[str, ...] = tuple(name for name, _ in _PATTERNS)
_COMPILED = tuple((name, re.compile(r"\b(?:" + "|".join(ps) + r")\b")) for name, ps in _PATTERNS)

_NEGATORS = {"no", "not", "never", "without", "denies", "deny", "nor", "neither"}
# words that start a new subject/clause: a negation behind them does not reach the phrase
_SCOPE_BREAK = {"i", "he", "she", "they", "we", "you", "it", "my", "his", "her", "our",
                "but", "and", "so", "because", "now", "yes", "yeah", "please", "help"}
_CLAUSE_BREAK = {"but", "and", "so", "because", "however", "though", "although", "now"}
_RESOLVED = re.compile(r"^(?:is |has )?(?:gone|went away|gone away|resolved|free|is better"
                       r"|has stopped|stopped)\b")
_HISTORY = re.compile(
    r"\b(?:last (?:week|month|year|spring|summer|fall|autumn|winter|time)"
    r"|(?:[a-z]+ )?(?:weeks|months|years) ago|a (?:week|month|year) ago|history of|in the past"
    r"|used to|previous(?:ly)?|a while (?:ago|back)|back in|follow ?up|recover(?:ed|ing)"
    r"|after (?:my|his|her)|sometimes|occasionally|when i was|in (?:19|20)[0-9]{2}|years)\b")
_PRESENT = re.compile(
    r"\b(?:right now|and now|now (?:i|it|he|she|my|his|her|they|the)|currently|at the moment"
    r"|still|is back|are back|came back|coming back|started|starting|keeps|just (?:had|started"
    r"|now|took|passed)|am having|is having|are having|having|this (?:morning|afternoon|evening)"
    r"|minutes ago|an hour ago|hours ago|last night|yesterday)\b")
_PRESENT_VERBS = {"have", "has", "am", "is", "are", "feel", "feels", "getting", "got", "having"}


def _negated(before: list[str], after: str) -> bool:
    """A negator within four words before the phrase (same clause), or "… is gone" after it."""
    if _RESOLVED.match(after):
        return True
    for word in reversed(before[-4:]):
        if word in _NEGATORS:
            return True
        if word in _SCOPE_BREAK:
            return False
    return False


def _clause(words: list[str], limit: int) -> list[str]:
    """Up to ``limit`` words, stopping at a clause break."""
    out: list[str] = []
    for w in words[:limit]:
        if w in _CLAUSE_BREAK:
            break
        out.append(w)
    return out


def _is_history(text: str, before: list[str], match: str, after: list[str]) -> bool:
    """A history marker next to the phrase, and nothing saying it is happening now."""
    pre = list(reversed(_clause(list(reversed(before)), 5)))
    post = _clause(after, 6)
    near = " ".join(pre + [match] + post)
    if not _HISTORY.search(near):
        return False
    if _PRESENT.search(text):
        return False
    return not (set(pre[-2:]) & _PRESENT_VERBS) or bool(_HISTORY.search(" ".join(pre[-2:])))


def detect_emergency(text: str | None) -> EmergencyMatch | None:
    """The first red flag in an utterance, or None (see the module docstring for the rules)."""
    t = normalize(text)
    if not t:
        return None
    for category, pattern in _COMPILED:
        for m in pattern.finditer(t):
            before = t[:m.start()].split()
            after_text = t[m.end():].strip()
            if _negated(before, after_text):
                continue
            if _is_history(t, before, m.group(0), after_text.split()):
                continue
            return EmergencyMatch(category, m.group(0))
    return None


def emergency_reply(tenant: Tenant, match: EmergencyMatch | None = None) -> AgentReply:
    """Send the caller to help: the clinic's urgent line if it has one, else the emergency number.

    No advice, no questions: one short sentence, then the call leaves the bot.
    """
    if tenant.urgent_line:
        return AgentReply("I'm transferring you to our urgent line now.", action="transfer",
                          transfer_to=tenant.urgent_line, outcome="emergency")
    number = tenant.emergency_number or "911"
    return AgentReply(f"This may be an emergency. Please hang up and call {number} now.",
                      action="hangup", outcome="emergency")
