"""The voice agent asks once for a text confirmation, where the clinic sends texts, and
the answer is the booking's consent: the message is in the outbox only after a yes."""

from __future__ import annotations

import pytest

from esl_app.db import close_db
from esl_app.db.models import OutboxMessage
from esl_app.sim.simulate import SimCall, run_lines, start_local_bot, transcript_for
from esl_app.sim.testing import make_db
from esl_app.telephony.server import TenantSource

TENANTS = """
tenants:
  - id: texty
    name: Texting Clinic
    dids: ["1001"]
    timezone: America/New_York
    hours: {mon-sun: "08:00-18:00"}
    slot_minutes: 30
    handoff: user/1000
    agent: local
    doctors: [{id: smith, name: Dr. Sarah Smith}]
    notifications: {sms: sns, region: us-east-1}
  - id: quiet
    name: Quiet Clinic
    dids: ["1002"]
    timezone: America/New_York
    hours: {mon-sun: "08:00-18:00"}
    slot_minutes: 30
    handoff: user/1000
    agent: local
    doctors: [{id: lee, name: Dr. Ann Lee}]
"""


@pytest.fixture
def bot(tmp_path):
    tenants = make_db(tmp_path, TENANTS, days=4)
    b = start_local_bot(TenantSource(tenants))
    yield b
    b.stop()
    close_db()


def _call(bot, did: str, lines: list[str]) -> tuple[dict, list[str]]:
    """One booking call; returns the transcript and what the bot said."""
    sim = SimCall(bot.address, did, "+15550104444", time_scale=0.02).start()
    run_lines(sim, lines, lambda ev: None)
    t = transcript_for(sim, bot)
    return t, [x["text"] for x in t["turns"] if x["speaker"] == "bot"]


@pytest.mark.parametrize("answer,queued", [("yes please", 1), ("no thanks", 0)])
def test_a_texting_clinic_asks_once_and_the_answer_is_the_consent(bot, answer, queued):
    t, said = _call(bot, "1001", ["I'd like an appointment tomorrow", "the first one",
                                  "Ann Roe", answer, "yes", "no, that's all"])
    assert t["outcome"] == "booked", said
    assert sum("text message" in line for line in said) == 1
    rows = list(OutboxMessage.select().where(OutboxMessage.code == t["confirmation"]))
    assert len(rows) == queued
    if queued:
        assert rows[0].channel == "sms" and rows[0].event == "booked"
        assert "Texting Clinic" in rows[0].body


def test_a_clinic_that_sends_no_texts_does_not_ask(bot):
    t, said = _call(bot, "1002", ["I'd like an appointment tomorrow", "the first one",
                                  "Ann Roe", "yes", "no, that's all"])
    assert t["outcome"] == "booked", said
    assert not any("text message" in line for line in said)
    assert OutboxMessage.select().where(OutboxMessage.code == t["confirmation"]).count() == 0
