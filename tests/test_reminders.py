"""Reminder calls end to end through the emulated switch: planned, claimed once, dialled
with ``originate`` over the inbound Event Socket, answered by scripted patients (people,
machines, busy lines, phones nobody answers) and talked to by the bot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import gevent
import pytest

from esl_app.config.tenants import parse_tenants
from esl_app.db import close_db
from esl_app.db.models import Appointment, CallRecord, ReminderCall, Slot
from esl_app.reminders import store
from esl_app.reminders.dialer import Dialer, originate_command
from esl_app.reminders.scheduler import ReminderScheduler
from esl_app.scheduling import service
from esl_app.sim.emulator.callees import Callee
from esl_app.sim.emulator.core import Switch
from esl_app.sim.emulator.inbound import InboundServer
from esl_app.sim.simulate import start_local_bot
from esl_app.sim.testing import make_db
from esl_app.telephony.server import TenantSource

PASSWORD = "ClueCon"
TENANTS = """
tenants:
  - id: sunrise
    name: Sunrise Family Clinic
    dids: ["1001", "+15550101001"]
    timezone: America/New_York
    hours: {mon-sun: "08:00-18:00"}
    slot_minutes: 30
    handoff: user/1000
    agent: local
    no_input_seconds: 2
    doctors: [{id: smith, name: Dr. Sarah Smith}, {id: patel, name: Dr. Raj Patel}]
    reminders:
      hours_before: [24]
      window: "00:00-23:59"
      max_attempts: 2
      retry_minutes: 30
      caller_id: "+15550101001"
      dial: "sofia/gateway/clinic/{number}"
      ring_seconds: 10
"""


@pytest.fixture
def world(tmp_path):
    """The clinic's database, the bot, the emulated switch and a scheduler."""
    tenants = make_db(tmp_path, TENANTS, days=4)
    bot = start_local_bot(TenantSource(tenants))
    switch = Switch(password=PASSWORD, time_scale=0.02)
    server = InboundServer(switch, "127.0.0.1", 0).start()
    dialer = Dialer(bot.address, host="127.0.0.1", port=server.address[1], password=PASSWORD)
    sched = ReminderScheduler(lambda: tenants, dialer, "test:1")
    yield tenants, bot, switch, sched
    server.stop()
    bot.stop()
    close_db()


def _book(name: str, phone: str, *, n: int = 0, **kw: str) -> service.AppointmentView:
    slot = service.search_slots("sunrise", limit=30)[10 + n]
    return service.book("sunrise", slot.slot_id, patient_name=name, phone=phone, **kw)


def _slot_at(appt: service.AppointmentView) -> Slot:
    """The slot an appointment view starts in (views carry times, not slot ids)."""
    from esl_app.db.models import Doctor, naive_utc

    return (Slot.select().join(Doctor)
            .where(Slot.start == naive_utc(appt.start), Doctor.slug == appt.doctor).get())


def _when(appt: service.AppointmentView) -> datetime:
    """A moment at which the appointment's 24-hour reminder is due."""
    return appt.start.astimezone(UTC) - timedelta(hours=23)


def _wait_done(ids: list[int], timeout: float = 30) -> dict[int, ReminderCall]:
    with gevent.Timeout(timeout):
        while True:
            rows = {r.id: r for r in ReminderCall.select().where(ReminderCall.id.in_(ids))}
            if all(r.state in (store.DONE, store.SKIPPED, store.DUE) and r.state != store.CALLING
                   for r in rows.values()):
                return rows
            gevent.sleep(0.05)


def test_a_patient_confirms_and_is_called_once(world):
    tenants, bot, switch, sched = world
    appt = _book("Ann Example", "+15550102001")
    switch.callees["5550102001"] = Callee("human", ["Hello?", "yes, speaking",
                                                    "yes, I'll be there"])
    now = _when(appt)
    report = sched.run_once(now)
    assert [r["code"] for r in report] == [appt.confirmation]
    rows = _wait_done([report[0]["id"]])
    row = rows[report[0]["id"]]
    assert row.state == store.DONE and row.outcome == "reminder_confirmed"
    assert row.attempts == 1
    call = CallRecord.get(CallRecord.call_id == row.call_id)
    assert call.outcome == "reminder_confirmed"
    said = " ".join(t["text"] for t in __import__("json").loads(call.turns)
                    if t["speaker"] == "bot")
    assert "reminder for Ann." in said and "Example" not in said.split("Ann", 1)[0]
    # again, later: nothing is called twice
    assert sched.run_once(now + timedelta(minutes=5)) == []
    assert switch.callees["5550102001"].calls == 1


def test_cancel_move_machine_busy_no_answer_and_do_not_call(world):
    tenants, bot, switch, sched = world
    cases = {
        "5550102011": (Callee("human", ["Hi", "this is his mother", "please cancel it",
                                        "yes"]), "reminder_cancelled"),
        "5550102012": (Callee("human", ["Hello?", "yes", "I need to change it",
                                        "how about the day after tomorrow", "the first one",
                                        "yes"]),
                       "reminder_rescheduled"),
        # this bot has no media server, so no audio fork: a machine is known by its
        # words only and, with no beep to hear, gets no message
        "5550102013": (Callee("machine"), "reminder_no_answer"),
        "5550102014": (Callee("busy"), "reminder_busy"),
        "5550102015": (Callee("no_answer"), "reminder_no_answer"),
        "5550102016": (Callee("human", ["Hello", "yes", "please don't call me again"]),
                       "reminder_declined"),
        "5550102018": (Callee("human", ["Hello?", "yes", "can I talk to a person"]),
                       "reminder_handoff"),
    }
    appts = {}
    for i, (number, (callee, _)) in enumerate(cases.items()):
        switch.callees[number] = callee
        appts[number] = _book(f"Pat{i} Doe", "+1" + number, n=i, notify="sms")
    skipped = _book("Listed Person", "+15550102017", n=8)
    store.add_do_not_call("sunrise", "555-010-2017")
    now = max(_when(a) for a in (*appts.values(), skipped))
    report = sched.run_once(now)
    assert sorted(r["code"] for r in report) == sorted(a.confirmation for a in appts.values())
    rows = _wait_done([r["id"] for r in report])
    by_code = {r.appointment.code: r for r in rows.values()}
    for number, (_callee, outcome) in cases.items():
        row = by_code[appts[number].confirmation]
        rec = CallRecord.get_or_none(CallRecord.call_id == row.call_id) if row.call_id else None
        lines = [t["speaker"][0] + ": " + t["text"]
                 for t in __import__("json").loads(rec.turns)] if rec else None
        assert row.outcome == outcome, (number, row.outcome, lines)
        # every attempt has a call record with the outcome, answered or not (a transfer
        # is 'handoff' there, as for an inbound call's)
        expected = "handoff" if outcome == "reminder_handoff" else outcome
        assert rec is not None and rec.outcome == expected, (number, rec.outcome if rec else rec)
        assert rec.tenant_id == "sunrise" and number not in (rec.caller or "")
    # busy and no answer are retried (max_attempts 2); the rest (answered) are done
    assert by_code[appts["5550102014"].confirmation].state == store.DUE
    assert by_code[appts["5550102013"].confirmation].state == store.DONE
    cancelled = Appointment.get(Appointment.code == appts["5550102011"].confirmation)
    assert cancelled.status == "cancelled"
    moved = service.get_appointment("sunrise", appts["5550102012"].confirmation)
    assert moved.start != appts["5550102012"].start and moved.status == "booked"
    # the old slot is open again, the new one booked
    assert _slot_at(appts["5550102012"]).state == "open"
    assert _slot_at(moved).state == "booked"
    # the changes made in the call are confirmed by text (the outbox keeps them here)
    from esl_app.notify.outbox import list_messages
    from esl_app.notify.templates import format_time

    sent = {(m.code, m.event): m for m in list_messages("sunrise")}
    cancel_code, move_code = (appts[n].confirmation for n in ("5550102011", "5550102012"))
    assert sent[(cancel_code, "cancelled")].recipient == "+15550102011"
    assert sent[(move_code, "rescheduled")].body == (
        f"Sunrise Family Clinic: your appointment with {moved.doctor_name} has moved to "
        f"{format_time(moved.start)}. Confirmation code: {move_code}.")
    assert all(m.status == "kept" and m.channel == "sms" for m in sent.values())
    # and the call records say so: what was queued and how its delivery stands
    from esl_app.telephony.records import get_call

    for number, event in (("5550102011", "cancelled"), ("5550102012", "rescheduled")):
        rec = get_call(by_code[appts[number].confirmation].call_id)
        assert rec["confirmation"] == appts[number].confirmation
        assert rec["confirmations"] == [{"event": event, "channel": "sms",
                                         "provider": "outbox", "status": "kept",
                                         "attempts": 0, "sent_at": None}], rec
    assert not [k for k in sent if k[1] in ("cancelled", "rescheduled")
                and k[0] not in (cancel_code, move_code)]
    assert store.is_do_not_call("sunrise", "+15550102016")
    listed = (ReminderCall.select().join(Appointment)
              .where(Appointment.code == skipped.confirmation).get())
    assert (listed.state, listed.outcome, listed.attempts) == (
        store.SKIPPED, "reminder_declined", 0)  # on the do-not-call list: never dialled
    # the machine heard no word from the bot (its message needs a beep, heard on a fork)
    machine = by_code[appts["5550102013"].confirmation]
    rec = CallRecord.get(CallRecord.call_id == machine.call_id)
    assert not [t for t in __import__("json").loads(rec.turns) if t["speaker"] == "bot"]
    assert __import__("json").loads(rec.usage)["amd"] == {
        "decision": "fork_failed", "reason": "no media server", "words": "machine"}
    # the retry round: busy and no-answer get their second and last attempt
    report2 = sched.run_once(now + timedelta(minutes=31))
    assert sorted(r["code"] for r in report2) == sorted(
        appts[n].confirmation for n in ("5550102014", "5550102015"))
    assert sched.run_once(now + timedelta(minutes=62)) == []
    assert switch.callees["5550102014"].calls == 2 and switch.callees["5550102015"].calls == 2


def test_a_failure_before_a_word_is_retried_a_told_patient_is_not(world, tmp_path):
    """An answered call that failed before the bot said anything (here: no media server,
    so no fork, and FreeSWITCH's recogniser heard no words: ``reminder_failed``) told
    the patient nothing: it is called again after ``retry_minutes``, up to
    ``max_attempts`` (2). A patient who heard the appointment and hung up is never
    called again."""
    tenants, bot, switch, sched = world
    failed = _book("Fay Led", "+15550102101")
    told = _book("Tol D", "+15550102102", n=1)
    # a recording means nothing to the emulated recogniser: no words, no verdict
    switch.callees["5550102101"] = Callee(
        "machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav"))
    switch.callees["5550102102"] = Callee("human", ["Hello?", "yes, speaking"])
    now = max(_when(failed), _when(told))
    report = sched.run_once(now)
    rows = _wait_done([r["id"] for r in report])
    by_code = {r.appointment.code: r for r in rows.values()}
    f, t = by_code[failed.confirmation], by_code[told.confirmation]
    assert (f.outcome, f.state, f.attempts) == ("reminder_failed", store.DUE, 1)
    assert f.next_at > datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=25)
    assert (t.outcome, t.state) == ("reminder_incomplete", store.DONE)
    heard = __import__("json").loads(CallRecord.get(CallRecord.call_id == t.call_id).turns)
    assert any("Dr. " in x["text"] for x in heard if x["speaker"] == "bot")  # was told
    first_call = f.call_id
    # the next round after retry_minutes calls the failed one again, and only it
    report2 = sched.run_once(max(now, f.next_at.replace(tzinfo=UTC)) + timedelta(minutes=1))
    assert [r["code"] for r in report2] == [failed.confirmation]
    f = _wait_done([f.id])[f.id]
    assert (f.outcome, f.state, f.attempts) == ("reminder_failed", store.DONE, 2)
    assert f.call_id != first_call  # each attempt has its own call record
    assert CallRecord.get(CallRecord.call_id == first_call).outcome == "reminder_failed"
    later = max(now, f.next_at.replace(tzinfo=UTC)) + timedelta(hours=2)
    assert sched.run_once(later) == []  # max_attempts reached; the told one is done
    assert (switch.callees["5550102101"].calls, switch.callees["5550102102"].calls) == (2, 1)


def test_two_schedulers_never_call_a_reminder_twice(world):
    tenants, bot, switch, sched = world
    numbers = [f"55501030{i:02d}" for i in range(6)]
    appts = []
    for i, number in enumerate(numbers):
        switch.callees[number] = Callee("human", ["Hello?", "yes", "yes"])
        appts.append(_book(f"Twin{i} Doe", "+1" + number, n=i))
    other = ReminderScheduler(lambda: tenants, sched.dialer, "test:2")
    now = max(_when(a) for a in appts)
    a, b = gevent.spawn(sched.run_once, now), gevent.spawn(other.run_once, now)
    gevent.joinall([a, b], raise_error=True)
    assert len(a.value) + len(b.value) == len(numbers)
    _wait_done([r["id"] for r in a.value + b.value])
    assert [switch.callees[n].calls for n in numbers] == [1] * len(numbers)


def test_window_pause_and_dry_run(world):
    tenants, bot, switch, sched = world
    appt = _book("Win Dow", "+15550104001")
    switch.callees["5550104001"] = Callee("human", ["Hello?", "yes", "yes"])
    now = _when(appt)
    preview = sched.run_once(now, dry_run=True)
    assert [(p["code"], p["would_call"]) for p in preview] == [(appt.confirmation, True)]
    assert ReminderCall.select().count() == 0 and switch.callees["5550104001"].calls == 0
    store.pause("sunrise")
    assert sched.run_once(now) == []
    assert sched.run_once(now, dry_run=True)[0]["why_not"] == "paused"
    store.resume("sunrise")
    assert len(sched.run_once(now)) == 1


def test_originate_command_carries_ids_not_personal_data():
    tenants = parse_tenants(TENANTS)
    cmd = originate_command(tenants.get("sunrise").reminders, number="+1 (555) 010-2001",
                            reminder_id=7, tenant_id="sunrise", attempt=1,
                            bot=("127.0.0.1", 8084))
    assert cmd == ("{ivr_reminder=7,ivr_tenant=sunrise,ivr_attempt=1,originate_timeout=10,"
                   "ignore_early_media=true,hangup_after_bridge=true,"
                   "origination_caller_id_number=+15550101001}"
                   "sofia/gateway/clinic/+15550102001 '&socket(127.0.0.1:8084 async full)'")


def test_the_emulator_splits_originate_like_freeswitch(world):
    """Unquoted, '&socket(h:p async full)' reaches the socket application as 'h:p': the
    bot then meets a socket not in full mode and cannot drive the call (as on the real
    switch, where this was found); quoted, it can."""
    from esl_app.sim.emulator.core import split_args
    from esl_app.sim.emulator.outbound import EmulatedCall

    assert split_args("{a=1}loopback/1 '&socket(h:1 async full)' x") == [
        "{a=1}loopback/1", "&socket(h:1 async full)", "x"]
    assert split_args("{a=1}loopback/1 &socket(h:1 async full)")[1] == "&socket(h:1"
    tenants, bot, switch, sched = world
    host, port = bot.address
    call = EmulatedCall((host, port), "1001", variables={"ivr_stt": "freeswitch"},
                        time_scale=0.02, socket_data=f"{host}:{port}").start()
    assert call.wait_ended(10)
    assert not [t for t in call.channel.turns if t.speaker == "bot"]
    full = EmulatedCall((host, port), "1001", variables={"ivr_stt": "freeswitch"},
                        time_scale=0.02).start()
    assert full.wait_until_listening(10)
    full.hang_up()


# ------------------------------------------------------------- two `ivr serve` processes

# text mode (the emulator's FreeSWITCH ASR): `ivr serve` follows the tenant's setting
ALL_DAY = TENANTS.replace('hours: {mon-sun: "08:00-18:00"}', 'hours: {mon-sun: "00:00-24:00"}'
                          ).replace("    agent: local\n", "    agent: local\n    stt: freeswitch\n")


def _serve(db: str, tenants_file, fs_port: int, tmp_path, name: str
           ) -> tuple[object, dict]:
    """An ``ivr serve`` with two workers; its process and its ready report (pids)."""
    import json
    import os
    import subprocess
    import sys

    from esl_app.runtime.workers import READY_PREFIX

    env = dict(os.environ, FS_ESL_PORT=str(fs_port), FS_ESL_PASSWORD=PASSWORD,
               IVR_REMINDER_INTERVAL="0.3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "esl_app", "--db", db, "--tenants", str(tenants_file), "serve",
         "--workers", "2", "--esl", "127.0.0.1:0", "--media", "127.0.0.1:0", "--http",
         "127.0.0.1:0", "--drain-timeout", "5"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=tmp_path, text=True)
    ready: dict = {}
    with gevent.Timeout(60):
        for line in proc.stderr:
            if line.startswith(READY_PREFIX):
                ready = json.loads(line[len(READY_PREFIX):])
                break
    gevent.spawn(lambda: [None for _ in proc.stderr])  # keep the pipe drained
    return proc, ready


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_serve_processes_call_each_reminder_once(tmp_path, kind):
    """Two ``ivr serve`` hosts of two workers each on one database: every reminder is
    called once, and only each host's worker 0 (its leader) places calls."""
    import signal

    from fakes.scheduling import fresh_postgres_db, postgres_url

    base = postgres_url()
    if kind == "postgres" and not base:
        pytest.skip("IVR_TEST_POSTGRES_URL not set")
    from contextlib import nullcontext

    with (fresh_postgres_db(base) if kind == "postgres" else nullcontext(None)) as pg:
        db = pg or f"sqlite:///{tmp_path / 'ivr.db'}"
        tenants_file = tmp_path / "tenants.yaml"
        tenants_file.write_text(ALL_DAY)
        make_db(tmp_path, ALL_DAY, days=2, url=db)
        switch = Switch(password=PASSWORD, time_scale=0.02)
        server = InboundServer(switch, "127.0.0.1", 0).start()
        numbers = [f"55501050{i:02d}" for i in range(5)]
        soon = service.search_slots("sunrise", limit=50,
                                    after=datetime.now(UTC) + timedelta(hours=3))
        for i, number in enumerate(numbers):
            switch.callees[number] = Callee("human", ["Hello?", "yes", "yes, I'll be there"])
            service.book("sunrise", soon[i].slot_id, patient_name=f"Host{i} Doe",
                         phone="+1" + number)
        close_db()
        served = [_serve(db, tenants_file, server.address[1], tmp_path, n) for n in "ab"]
        procs = [p for p, _ in served]
        leaders = {str(ready["workers"][0]) for _, ready in served}
        others = {str(pid) for _, ready in served for pid in ready["workers"][1:]}
        try:
            with gevent.Timeout(60):
                while sum(c.calls for c in switch.callees.values()) < len(numbers):
                    gevent.sleep(0.1)
            gevent.sleep(2)  # several more rounds of both: nobody is called again
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)
            server.stop()
        assert [switch.callees[n].calls for n in numbers] == [1] * len(numbers)
        from esl_app.db import init_db

        init_db(db)
        try:
            outcomes = [r.outcome for r in ReminderCall.select()]
            claimed_by = {r.claimed_by.split(":")[1] for r in ReminderCall.select()}
        finally:
            close_db()
        assert outcomes == ["reminder_confirmed"] * len(numbers)
        # one leader per host places the calls: worker 0, never worker 1
        assert claimed_by and claimed_by <= leaders and not claimed_by & others, (
            claimed_by, leaders, others)


# ------------------------------------------------------------------ audio: AMD and beep

AUDIO = TENANTS.replace("    no_input_seconds: 2\n", "    no_input_seconds: 3\n    stt: local\n")


def _machine_wav(path, rate: int = 8000, *, beep: bool = True) -> str:
    """A recorded greeting, a pause and a 1 kHz beep, as an answering machine plays."""
    import math
    import struct
    import wave

    from esl_app.sim.emulator.audio import synthesize_cached

    speech = synthesize_cached("Hi, you've reached the Miller residence. We can't come to "
                               "the phone right now. Please leave a message after the tone.",
                               "en-us", rate, 160)
    pause = b"\0\0" * (rate // 2)
    tone = b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 1000 * i / rate)))
                    for i in range(int(rate * 0.45))) if beep else b""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(speech + pause + tone + b"\0\0" * rate * 3)
    return str(path)


def test_audio_machine_gets_voicemail_after_the_beep_and_a_person_the_conversation(tmp_path):
    import json

    tenants = make_db(tmp_path, AUDIO, days=4)
    bot = start_local_bot(TenantSource(tenants), audio=True)
    switch = Switch(password=PASSWORD, time_scale=0.1)
    server = InboundServer(switch, "127.0.0.1", 0).start()
    try:
        dialer = Dialer(bot.address, host="127.0.0.1", port=server.address[1],
                        password=PASSWORD)
        sched = ReminderScheduler(lambda: tenants, dialer, "test:audio")
        machine = _book("Mac Hine", "+15550106001")
        person = _book("Pers On", "+15550106002", n=1)
        switch.callees["5550106001"] = Callee("machine",
                                              greeting="#wav " + _machine_wav(tmp_path / "m.wav"))
        switch.callees["5550106002"] = Callee("human", ["Hello?", "Yes.", "Yes."])
        report = sched.run_once(max(_when(machine), _when(person)))
        rows = _wait_done([r["id"] for r in report], timeout=90)
        by_code = {r.appointment.code: r for r in rows.values()}
        m, p = by_code[machine.confirmation], by_code[person.confirmation]
        m_rec = CallRecord.get(CallRecord.call_id == m.call_id)
        p_rec = CallRecord.get(CallRecord.call_id == p.call_id)
        m_usage, p_usage = json.loads(m_rec.usage), json.loads(p_rec.usage)
        assert m_usage["amd"]["decision"] == "machine", m_usage
        assert m.outcome == "reminder_voicemail"
        # the message started only after the beep
        bot_turns = [t for t in json.loads(m_rec.turns) if t["speaker"] == "bot"]
        assert bot_turns[0]["at_ms"] / 1000 > m_usage["amd"]["beep_at"] > 5.0, m_usage
        assert p_usage["amd"]["decision"] == "human", p_usage
        assert p.outcome == "reminder_confirmed", json.loads(p_rec.turns)
    finally:
        server.stop()
        bot.stop()
        close_db()


def test_a_machine_that_never_beeps_gets_no_message(tmp_path):
    """Voicemail only after a beep: a greeting with no tone after it is left alone
    (beep_wait_ms, tunable per tenant, is how long the bot waits for one)."""
    import json

    tenants = make_db(tmp_path, AUDIO + "      amd: {beep_wait_ms: 3000}\n", days=4)
    assert tenants.get("sunrise").reminders.amd == {"beep_wait_ms": 3000}
    bot = start_local_bot(TenantSource(tenants), audio=True)
    switch = Switch(password=PASSWORD, time_scale=0.1)
    server = InboundServer(switch, "127.0.0.1", 0).start()
    try:
        dialer = Dialer(bot.address, host="127.0.0.1", port=server.address[1],
                        password=PASSWORD)
        sched = ReminderScheduler(lambda: tenants, dialer, "test:nobeep")
        machine = _book("Mac Hine", "+15550106003")
        switch.callees["5550106003"] = Callee(
            "machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav", beep=False))
        report = sched.run_once(_when(machine))
        row = _wait_done([r["id"] for r in report], timeout=60)[report[0]["id"]]
        rec = CallRecord.get(CallRecord.call_id == row.call_id)
        usage = json.loads(rec.usage)
        assert usage["amd"]["decision"] == "machine" and "beep_at" not in usage["amd"]
        assert (row.outcome, rec.outcome) == ("reminder_no_answer", "reminder_no_answer")
        assert not [t for t in json.loads(rec.turns) if t["speaker"] == "bot"]  # said nothing
    finally:
        server.stop()
        bot.stop()
        close_db()


# ---------------------------------------- FreeSWITCH's recogniser: AMD from a fork anyway

# the clinic's words are recognised by FreeSWITCH (no audio fork for the conversation),
# and `ivr serve` has its media server: the reminder's AMD forks the audio there anyway
TEXT_AMD = TENANTS.replace("    no_input_seconds: 2\n",
                           "    no_input_seconds: 3\n    stt: freeswitch\n")


def _remind(tmp_path, tenants_yaml: str, callees: dict[str, Callee], *,
            break_media: bool = False, timeout: float = 90) -> dict[str, tuple]:
    """Call each number's reminder through a bot with a media server, as `ivr serve` runs.

    ``break_media``: the media server is gone (its port closed) before the calls, so
    every audio fork FreeSWITCH opens fails to connect. Returns, per number, the
    reminder row, its call record, the record's usage and its turns.
    """
    import json

    tenants = make_db(tmp_path, tenants_yaml, days=4)
    bot = start_local_bot(TenantSource(tenants), audio=True)
    switch = Switch(password=PASSWORD, time_scale=0.1)
    server = InboundServer(switch, "127.0.0.1", 0).start()
    try:
        if break_media:
            bot.media.stop()
        dialer = Dialer(bot.address, host="127.0.0.1", port=server.address[1],
                        password=PASSWORD)
        sched = ReminderScheduler(lambda: tenants, dialer, "test:text-amd")
        appts = {}
        for i, (number, callee) in enumerate(callees.items()):
            switch.callees[number] = callee
            appts[number] = _book(f"Pat{i} Doe", "+1" + number, n=i)
        report = sched.run_once(max(_when(a) for a in appts.values()))
        assert len(report) == len(callees)
        rows = _wait_done([r["id"] for r in report], timeout=timeout)
        by_code = {r.appointment.code: r for r in rows.values()}
        out = {}
        for number, appt in appts.items():
            row = by_code[appt.confirmation]
            rec = CallRecord.get(CallRecord.call_id == row.call_id)
            out[number] = (row, rec, json.loads(rec.usage), json.loads(rec.turns))
        # every fork the reminders opened is closed again (none left registered)
        assert len(bot.server.services.audio_source_for.registry) == 0
        return out
    finally:
        server.stop()
        bot.stop()
        close_db()


def test_freeswitch_asr_tenant_machine_gets_voicemail_after_the_beep_from_a_fork(tmp_path):
    """``stt: freeswitch``: the conversation's words come from FreeSWITCH's recogniser,
    yet who answered and the beep are decided from an audio fork the reminder opens for
    the detector alone; the message starts after the beep. A person's fork is closed once
    they are known to be a person: the conversation then goes on by FreeSWITCH's words
    (the emulator sends a line to the fork only while one is open)."""
    got = _remind(tmp_path, TEXT_AMD, {
        "5550106101": Callee("machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav")),
        "5550106102": Callee("human", ["Hello?", "Yes.", "Yes."]),
    })
    row, rec, usage, turns = got["5550106101"]
    assert usage["amd"]["decision"] == "machine", usage
    assert (row.outcome, rec.outcome) == ("reminder_voicemail", "reminder_voicemail")
    said = [t for t in turns if t["speaker"] == "bot"]
    assert said and said[0]["at_ms"] / 1000 > usage["amd"]["beep_at"] > 5.0, (usage, said)
    # the voicemail names the clinic and a call-back number only
    message = " ".join(t["text"] for t in said)
    assert "Sunrise Family Clinic" in message and "5 5 5, 0 1 0, 1 0 0 1" in message
    assert "Pat0" not in message and "Dr." not in message
    row, rec, usage, turns = got["5550106102"]
    assert usage["amd"]["decision"] == "human", usage
    assert row.outcome == "reminder_confirmed", turns
    assert usage["usage"]["stt_provider"] == "freeswitch"


def test_freeswitch_asr_tenant_machine_without_a_beep_gets_no_message(tmp_path):
    got = _remind(tmp_path, TEXT_AMD + "      amd: {beep_wait_ms: 3000}\n", {
        "5550106103": Callee("machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav",
                                                                       beep=False)),
    })
    row, rec, usage, turns = got["5550106103"]
    assert usage["amd"]["decision"] == "machine" and "beep_at" not in usage["amd"], usage
    assert (row.outcome, rec.outcome) == ("reminder_no_answer", "reminder_no_answer")
    assert not [t for t in turns if t["speaker"] == "bot"]  # said nothing


@pytest.mark.parametrize("stt", ["freeswitch", "local"])
def test_a_fork_that_cannot_connect_leaves_no_voicemail(tmp_path, stt, monkeypatch):
    """The media server cannot be reached: FreeSWITCH accepts the fork, then raises
    ``mod_audio_fork::connect_failed`` (the reminder call subscribes to it). The bot
    reacts to it at once, not to the silence after it (the no-audio check is pushed
    out of reach here). Nobody can tell who answered or hear a beep, so the machine
    (which beeps) gets no message and no word at all; the call record says why
    (``fork_failed``), and, nothing having been said, the reminder is tried again."""
    from esl_app.reminders import call as reminder_call

    monkeypatch.setattr(reminder_call, "FORK_START_S", 60.0)
    yaml_text = TEXT_AMD if stt == "freeswitch" else AUDIO
    got = _remind(tmp_path, yaml_text, {
        "5550106104": Callee("machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav")),
    }, break_media=True, timeout=60)
    row, rec, usage, turns = got["5550106104"]
    assert usage["amd"]["reason"] == "connect failed: Unable to connect", usage
    assert usage["amd"]["decision"] == "fork_failed", usage
    assert (row.outcome, rec.outcome) == ("reminder_failed", "reminder_failed")
    assert not [t for t in turns if t["speaker"] == "bot"]
    # ended on FreeSWITCH's word: within a second (text mode also listens for words,
    # HELLO_WAIT_S), far from the 60 s the no-audio check would take
    assert usage["duration_ms"] < (reminder_call.HELLO_WAIT_S + 2.0) * 1000, usage
    if stt == "local":
        assert usage["duration_ms"] < 1500, usage
    assert (row.state, row.attempts) == (store.DUE, 1)  # retried: max_attempts is 2


@pytest.mark.parametrize("stt", ["freeswitch", "local"])
def test_a_fork_freeswitch_refuses_leaves_no_voicemail(tmp_path, stt):
    """FreeSWITCH answers ``uuid_audio_fork … start`` with ``-ERR Operation Failed`` (a
    fork of that name is already on the channel). No sound, no verdict, no message. With
    FreeSWITCH's recogniser the words still tell: a person ("Hello?") gets the
    conversation, a machine's greeting ends the call without a word
    (``reminder_no_answer``, final); with the fork as the only ear the call ends without
    a word (``reminder_failed``: nothing was said, so it is tried again)."""
    wav = "#wav " + _machine_wav(tmp_path / "m.wav")
    if stt == "local":
        got = _remind(tmp_path, AUDIO, {
            "5550106105": Callee("machine", greeting=wav, fork_refused=True),
        }, timeout=60)
        row, rec, usage, turns = got["5550106105"]
        assert usage["amd"] == {"decision": "fork_failed",
                                "reason": "refused: -ERR Operation Failed"}, usage
        assert (row.outcome, rec.outcome) == ("reminder_failed", "reminder_failed")
        assert not [t for t in turns if t["speaker"] == "bot"]
        assert (row.state, row.attempts) == (store.DUE, 1)
        return
    got = _remind(tmp_path, TEXT_AMD, {
        "5550106105": Callee("machine", fork_refused=True),  # its greeting as words
        "5550106106": Callee("human", ["Hello?", "Yes.", "Yes."], fork_refused=True),
    }, timeout=60)
    row, rec, usage, turns = got["5550106105"]
    assert usage["amd"] == {"decision": "fork_failed", "words": "machine",
                            "reason": "refused: -ERR Operation Failed"}, usage
    assert (row.outcome, rec.outcome, row.state) == (
        "reminder_no_answer", "reminder_no_answer", store.DONE)
    assert not [t for t in turns if t["speaker"] == "bot"]
    row, rec, usage, turns = got["5550106106"]
    assert usage["amd"] == {"decision": "fork_failed", "words": "person",
                            "reason": "refused: -ERR Operation Failed"}, usage
    assert (row.outcome, row.state) == ("reminder_confirmed", store.DONE), turns


@pytest.mark.parametrize("stt", ["freeswitch", "local"])
def test_a_fork_lost_while_waiting_for_the_beep_leaves_no_voicemail(tmp_path, stt):
    """The machine was recognised, then the fork's connection breaks (the far end drops
    it, FreeSWITCH raises ``mod_audio_fork::disconnect``) before the greeting's beep
    (at about 8 s): a beep never heard. No message, not a word; ``reminder_no_answer``
    and ``usage.amd.fork_lost`` says why. Final, as any answered machine's."""
    yaml_text = TEXT_AMD if stt == "freeswitch" else AUDIO
    got = _remind(tmp_path, yaml_text, {
        "5550106107": Callee("machine", greeting="#wav " + _machine_wav(tmp_path / "m.wav"),
                             fork_drop_after_ms=4500),
    }, timeout=60)
    row, rec, usage, turns = got["5550106107"]
    assert usage["amd"]["decision"] == "machine", usage
    # the media server saw the socket close without a WebSocket close
    assert usage["amd"]["fork_lost"] == "disconnected" and "beep_at" not in usage["amd"], usage
    assert (row.outcome, rec.outcome, row.state) == (
        "reminder_no_answer", "reminder_no_answer", store.DONE)
    assert not [t for t in turns if t["speaker"] == "bot"]


@pytest.mark.parametrize("setting,message", [
    ('{dial: "sofia/gateway/x"}', "key 'dial' must hold {number}"),
    ('{dial: "sofia/gateway/x/{number}", window: "19:00-09:00"}', "is not a range within a day"),
    ('{dial: "sofia/gateway/x/{number}", hours_before: [0]}', "key 'hours_before'"),
    ('{dial: "sofia/gateway/x/{number}", days: "mon-funday"}', "key 'days'"),
    ('{dial: "sofia/gateway/x/{number} &park()"}', "one FreeSWITCH endpoint"),
    ('{dial: "sofia/gateway/x/{number}", amd: {bogus: 1}}', "amd: unknown setting"),
    ('{dial: "sofia/gateway/x/{number}", colour: red}', "key 'reminders.colour' is unknown"),
    ('{dial: "sofia/gateway/x/{number}", enabled: "yes"}', "key 'enabled' must be true or"),
    ('{dial: "sofia/gateway/x/{number}", caller_id: clinic}', "key 'caller_id' must be a phone"),
    ('{dial: "sofia/gateway/x/{number}", max_attempts: 0}', "key 'max_attempts' must be a whole"),
    ('{dial: "sofia/gateway/x/{number}", retry_minutes: 1}', "key 'retry_minutes' must be"),
    ('{dial: "sofia/gateway/x/{number}", ring_seconds: 500}', "key 'ring_seconds' must be"),
    ('{dial: "sofia/gateway/x/{number}", window: "9-17"}', "is not HH:MM-HH:MM"),
    ("[1]", "key 'reminders' must be a mapping"),
])
def test_bad_reminder_settings_are_one_line_errors(setting, message):
    from esl_app.config.tenants import ConfigError

    text = TENANTS.split("    reminders:")[0] + f"    reminders: {setting}\n"
    with pytest.raises(ConfigError, match="tenant 'sunrise': (key 'reminders|reminders)") as e:
        parse_tenants(text)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("answer,told", [
    ("no, this is her sister", False),
    ("I'm not him", False),
    ("nope, I am the neighbour", False),
    ("I'm not her mother", False),
    ("no", False),
    ("yes, speaking", True),
    ("that's me", True),
    ("this is his mother", True),
    ("no, this is her mother", True),
])
def test_the_appointment_is_told_only_to_the_patient_or_a_parent(answer, told):
    """Whoever answers hears the clinic and a first name; the doctor and the time only
    once they say they are the patient or a parent ("this is" after a "no" is not)."""
    from esl_app.providers.agent.base import CallContext, Utterance
    from esl_app.reminders.agent import ReminderAgent, ReminderInfo

    tenant = parse_tenants(TENANTS).get("sunrise")
    start = datetime(2026, 12, 8, 9, 0, tzinfo=tenant.tz)
    agent = ReminderAgent(ReminderInfo(
        reminder_id=1, tenant_id="sunrise", code="K7M-4Q2", first_name="Ann",
        doctor="smith", doctor_name="Dr. Sarah Smith", start=start, callback="+15550101001"))
    call = CallContext(call_id="c1", tenant=tenant)
    assert "Dr. Sarah Smith" not in agent.greet(call).text
    reply = agent.respond(call, Utterance(text=answer))
    assert ("Dr. Sarah Smith" in reply.text and "December 8" in reply.text) is told, reply
    if not told:
        assert (reply.action, reply.outcome) == ("hangup", "reminder_incomplete")


def test_reminder_settings_survive_export_and_import():
    """``ivr tenants export`` writes back what was read (every key the issue names)."""
    import yaml

    tenant = parse_tenants(TENANTS.replace("      ring_seconds: 10\n",
                                           "      ring_seconds: 10\n      days: mon-fri\n"
                                           "      amd: {greeting_max_ms: 1800}\n")
                           ).get("sunrise")
    exported = tenant.to_dict()["reminders"]
    assert set(exported) == {"enabled", "hours_before", "window", "days", "max_attempts",
                             "retry_minutes", "caller_id", "dial", "ring_seconds", "amd"}
    again = parse_tenants(yaml.safe_dump({"tenants": [tenant.to_dict()]})).get("sunrise")
    assert again.reminders == tenant.reminders
    assert tenant.reminders.days == ("mon", "tue", "wed", "thu", "fri")
