"""The local NLU over a corpus of real-sounding caller utterances (tests/data/utterances.yaml).

Each utterance counts as understood when both the intent and every slot match
exactly; the misses are printed (run with ``-s`` to see them) and the accuracy
must stay at or above 97 %, so a change that helps one phrasing but breaks
others shows up as a number, not as a surprise on a call.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from esl_app.config.tenants import Doctor, VisitType
from esl_app.providers.agent.local import nlu

CORPUS = Path(__file__).parent / "data" / "utterances.yaml"
MIN_ACCURACY = 0.97
TZ = ZoneInfo("America/New_York")
EXPECTING = {None, "name", "phone", "code", "yes_no", "date", "part", "doctor", "offer",
             "visit_type"}


def _load() -> dict[str, Any]:
    return yaml.safe_load(CORPUS.read_text())


def _plain(value: Any) -> Any:
    """YAML reads 2026-11-25 as a date; the NLU's slots are strings."""
    if isinstance(value, date):
        return value.isoformat()
    return value


def _expected(entry: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    return entry.get("intent"), {k: _plain(v) for k, v in (entry.get("slots") or {}).items()}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    return _load()


def test_corpus_is_well_formed(corpus):
    entries = corpus["utterances"]
    assert len(entries) >= 400
    says = [e["say"] for e in entries]
    dupes = {(e["say"], e.get("expect")) for e in entries
             if sum(1 for f in entries if (f["say"], f.get("expect"))
                    == (e["say"], e.get("expect"))) > 1}
    assert not dupes, dupes
    assert all(isinstance(s, str) and s for s in says)
    assert {e.get("expect") for e in entries} <= EXPECTING
    # an unquoted yes/no in YAML is a boolean, not the intent "yes"/"no"
    assert all(e.get("intent") is None or isinstance(e["intent"], str) for e in entries)


def test_nlu_accuracy_on_the_corpus(corpus, capsys):
    today = _plain(corpus["today"])
    today = date.fromisoformat(today)
    doctors = tuple(Doctor(d["id"], d["name"], d.get("specialty", ""))
                    for d in corpus["doctors"])
    visits = tuple(VisitType(v["id"], v["name"], v["minutes"]) for v in corpus["visit_types"])
    offered = tuple(nlu.Option(datetime.fromisoformat(o["start"]).replace(tzinfo=TZ),
                               o["doctor"]) for o in corpus["offered"])
    misses: list[str] = []
    entries = corpus["utterances"]
    for e in entries:
        want_intent, want_slots = _expected(e)
        got = nlu.understand(e["say"], today=today, doctors=doctors, visit_types=visits,
                             expecting=e.get("expect"), offered=offered)
        got_slots = got.slots()
        if got.intent != want_intent or got_slots != want_slots:
            misses.append(f"  [{e.get('expect') or '-'}] {e['say']!r}\n"
                          f"      want {want_intent} {want_slots}\n"
                          f"      got  {got.intent} {got_slots}")
    accuracy = 1 - len(misses) / len(entries)
    with capsys.disabled():
        print(f"\nNLU corpus: {len(entries) - len(misses)}/{len(entries)} understood, "
              f"accuracy {accuracy:.1%}, {len(misses)} misses")
        for m in misses:
            print(m)
    assert accuracy >= MIN_ACCURACY
