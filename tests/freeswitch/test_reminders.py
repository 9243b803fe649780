"""Reminder calls through the real FreeSWITCH: ``ivr serve`` dials patients with
``originate`` over the inbound Event Socket; the patients are loopback extensions that
answer with a person's short "Hello?" or a machine's greeting and beep.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from freeswitch.harness import CONF, Bot, InboundEsl, speech_wav

PERSON, MACHINE = "5550107002", "5550107001"


def _wav_concat(out: Path, *parts: list[str]) -> Path:
    subprocess.run(["sox", *[str(p) for p in parts], str(out)], check=True,
                   capture_output=True, timeout=30)
    return out


def _machine_wav(folder: Path) -> Path:
    greeting = speech_wav("Hi, you've reached the Miller residence. We can't come to the "
                          "phone right now. Please leave a message after the tone.")
    pause = folder / "pause.wav"
    beep = folder / "beep.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(pause), "trim",
                    "0", "0.6"], check=True, capture_output=True, timeout=30)
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(beep), "synth",
                    "0.45", "sine", "1000", "vol", "0.3"], check=True, capture_output=True,
                   timeout=30)
    return _wav_concat(folder / "machine.wav", greeting, pause, beep)


@pytest.fixture
def patients(fs_esl: InboundEsl, fs_workdir: Path):
    """Two phones in a context of this test: a person and an answering machine."""
    ctx = f"ivrtest_{id(fs_esl) % 100000}_patients"
    hello = speech_wav("Hello?")
    machine = _machine_wav(fs_workdir)
    path = CONF / "dialplan" / f"{ctx}.xml"
    path.write_text(f"""<include>
  <context name="{ctx}">
    <extension name="person">
      <condition field="destination_number" expression="^\\+?1?{PERSON}$">
        <action application="answer"/>
        <action application="sleep" data="300"/>
        <action application="playback" data="{hello}"/>
        <action application="sleep" data="9000"/>
        <action application="hangup"/>
      </condition>
    </extension>
    <extension name="machine">
      <condition field="destination_number" expression="^\\+?1?{MACHINE}$">
        <action application="answer"/>
        <action application="playback" data="{machine}"/>
        <action application="sleep" data="12000"/>
        <action application="hangup"/>
      </condition>
    </extension>
  </context>
</include>
""")
    assert fs_esl.api("reloadxml").startswith("+OK")
    yield ctx
    path.unlink(missing_ok=True)
    fs_esl.api("reloadxml")


def test_reminders_reach_a_person_and_leave_a_machine_a_message_after_the_beep(
        fs_esl: InboundEsl, fs_workdir: Path, patients: str, tmp_path: Path):
    _reminders_to_a_person_and_a_machine(fs_esl, patients, tmp_path, stt="local")


def test_reminders_with_freeswitch_asr_hear_the_machine_and_its_beep_on_a_fork(
        fs_esl: InboundEsl, fs_workdir: Path, patients: str, tmp_path: Path):
    """``stt: freeswitch``: the conversation has no audio fork, yet the reminder opens one
    for the answering-machine detector (and stops it after): the same verdicts, and the
    message only after the beep."""
    _reminders_to_a_person_and_a_machine(fs_esl, patients, tmp_path, stt="freeswitch")


def _reminders_to_a_person_and_a_machine(fs_esl: InboundEsl, patients: str, tmp_path: Path,
                                         *, stt: str) -> None:
    tenants = {"tenants": [{
        "id": "remind", "name": "Reminder Clinic", "dids": ["2009"],
        "timezone": "America/New_York", "hours": {"mon-sun": "00:00-24:00"},
        "slot_minutes": 30, "handoff": "loopback/1005/public", "agent": "local",
        "stt": stt, "doctors": [{"id": "lee", "name": "Dr. Ann Lee"}],
        "reminders": {"hours_before": [24], "window": "00:00-23:59", "caller_id": "+15550102009",
                      "dial": f"loopback/{{number}}/{patients}", "ring_seconds": 15}}]}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(tenants, sort_keys=False))
    bot = Bot(tmp_path, path, days=2)
    bot.env.update(FS_ESL_PORT="8021", FS_ESL_PASSWORD="ClueCon", IVR_REMINDER_INTERVAL="0.5")
    bot.prepare()
    from esl_app.db import close_db, init_db
    from esl_app.db.models import CallRecord, ReminderCall
    from esl_app.scheduling import service

    init_db(f"sqlite:///{tmp_path / 'ivr.db'}")
    try:
        soon = service.search_slots("remind", limit=5,
                                    after=datetime.now(UTC) + timedelta(hours=3))
        for slot, number in zip(soon, (PERSON, MACHINE), strict=False):
            service.book("remind", slot.slot_id, patient_name="Pat Doe", phone="+1" + number)
    finally:
        close_db()
    mark = len(fs_esl.events)
    bot.start()
    try:
        init_db(f"sqlite:///{tmp_path / 'ivr.db'}")
        deadline = time.monotonic() + 90
        rows: list[ReminderCall] = []
        while time.monotonic() < deadline:
            rows = list(ReminderCall.select())
            if len(rows) == 2 and all(r.state == "done" for r in rows):
                break
            time.sleep(0.5)
        outcomes = {r.appointment.phone[-10:]: r for r in rows}
        assert set(outcomes) == {PERSON, MACHINE}, [(r.state, r.outcome) for r in rows]
        machine = outcomes[MACHINE]
        assert machine.call_id, ([(r.state, r.outcome, r.attempts) for r in rows],
                                 bot.log.read_text()[:6000])
        rec = CallRecord.get(CallRecord.call_id == machine.call_id)
        usage = json.loads(rec.usage)
        assert machine.outcome == "reminder_voicemail", (usage, rec.turns)
        assert usage["amd"]["decision"] == "machine"
        assert usage["usage"]["stt_provider"] == stt  # text mode: FreeSWITCH's recogniser
        said = [t for t in json.loads(rec.turns) if t["speaker"] == "bot"]
        assert said and said[0]["at_ms"] / 1000 > usage["amd"]["beep_at"]
        assert "Reminder Clinic" in said[0]["text"] and "Pat" not in said[0]["text"]
        person = outcomes[PERSON]
        rec = CallRecord.get(CallRecord.call_id == person.call_id)
        usage = json.loads(rec.usage)
        assert usage["amd"]["decision"] == "human", usage
        intro = [t["text"] for t in json.loads(rec.turns) if t["speaker"] == "bot"]
        assert any("calling with a reminder for Pat" in t for t in intro), intro
        assert all(r.attempts == 1 for r in rows)
    finally:
        close_db()
        bot.stop()
        fs_esl.wait_for(lambda e: e.name == "CHANNEL_HANGUP_COMPLETE", timeout=5, start=mark)
