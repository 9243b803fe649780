import json
import re
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta

import gevent
import pytest
from fakes.scheduling import TWO_TENANTS, on_both_databases

from esl_app.config.tenants import parse_tenants
from esl_app.db import SQLITE_BUSY_MS, close_db, init_db
from esl_app.db.models import Appointment, Slot
from esl_app.scheduling import service
from esl_app.scheduling.codes import ALPHABET, CODE_RE, new_code, normalize_code
from esl_app.scheduling.provisioning import import_tenants
from esl_app.scheduling.slots import generate_slots
from esl_app.sim.testing import make_db

# Tuesday 2026-11-24 10:00 in New York.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    yield from on_both_databases(request.param, tmp_path, TWO_TENANTS, 14, NOW)


def test_search_earliest_first_future_only(db):
    slots = service.search_slots("alpha", now=NOW, limit=3)
    assert len(slots) == 3
    assert [s.start for s in slots] == sorted(s.start for s in slots)
    assert all(s.start > NOW for s in slots)
    assert slots[0].start.isoformat() == "2026-11-24T10:30:00-05:00"


def test_search_filters(db):
    day = date(2026, 11, 26)
    afternoon = service.search_slots("alpha", date=day, part_of_day="afternoon", doctor="patel",
                                     limit=5, now=NOW)
    assert len(afternoon) == 5
    for s in afternoon:
        assert s.doctor == "patel" and s.start.date() == day and 12 <= s.start.hour < 17
    morning = service.search_slots("alpha", date=day, part_of_day="morning", now=NOW)
    assert all(s.start.hour < 12 for s in morning)
    assert service.search_slots("alpha", date=day, part_of_day="evening", now=NOW) == []
    # Saturday: only 09:00-12:00; Sunday closed.
    sat = service.search_slots("alpha", date=date(2026, 11, 28), limit=50, now=NOW)
    assert {s.start.hour for s in sat} == {9, 10, 11}
    assert service.search_slots("alpha", date=date(2026, 11, 29), now=NOW) == []
    after = service.search_slots("alpha", after=datetime(2026, 11, 25, 16, 0, tzinfo=UTC),
                                 now=NOW)
    assert after[0].start.isoformat() == "2026-11-25T11:00:00-05:00"
    rng = service.search_slots("alpha", date=date(2026, 11, 27), date_to=date(2026, 11, 30),
                               limit=50, now=NOW)
    assert {s.start.date() for s in rng} == {date(2026, 11, 27), date(2026, 11, 28),
                                            date(2026, 11, 30)}
    assert len([s for s in rng if s.start.date() == date(2026, 11, 28)]) == 12


def test_search_time_zone(db):
    slots = service.search_slots("beta", date=date(2026, 11, 25), now=NOW)
    assert slots[0].start.isoformat() == "2026-11-25T09:00:00+01:00"
    assert slots[0].to_dict()["end"] == "2026-11-25T09:20:00+01:00"


def test_search_bad_input(db):
    with pytest.raises(service.InvalidRequest):
        service.search_slots("alpha", part_of_day="night", now=NOW)
    with pytest.raises(service.InvalidRequest):
        service.search_slots("alpha", date=date(2026, 11, 30), date_to=date(2026, 11, 27))
    with pytest.raises(service.NotFound):
        service.search_slots("nobody", now=NOW)


def test_book_cancel_reschedule(db):
    a, b, c = service.search_slots("alpha", now=NOW)
    appt = service.book("alpha", a.slot_id, patient_name="  John   Smith ", phone="555 123 4567",
                        email="john.smith@example.com", call_id="call-1", now=NOW)
    assert CODE_RE.match(appt.confirmation)
    assert appt.patient_name == "John Smith" and appt.phone == "5551234567"
    assert a.slot_id not in {s.slot_id for s in service.search_slots("alpha", now=NOW)}
    with pytest.raises(service.SlotTaken):
        service.book("alpha", a.slot_id, patient_name="Mary", now=NOW)
    moved = service.reschedule("alpha", appt.confirmation, b.slot_id, now=NOW)
    assert moved.confirmation == appt.confirmation and moved.start == b.start
    open_ids = {s.slot_id for s in service.search_slots("alpha", limit=10, now=NOW)}
    assert a.slot_id in open_ids and b.slot_id not in open_ids
    with pytest.raises(service.NotAllowed):
        service.cancel("alpha", appt.confirmation, verify="Mary Jones", now=NOW)
    done = service.cancel("alpha", appt.confirmation.lower().replace("-", " "),
                          verify="john smith", now=NOW)
    assert done.status == "cancelled"
    assert b.slot_id in {s.slot_id for s in service.search_slots("alpha", limit=10, now=NOW)}
    with pytest.raises(service.NotAllowed, match="already cancelled"):
        service.cancel("alpha", appt.confirmation, now=NOW)
    assert service.get_appointment("alpha", appt.confirmation).status == "cancelled"


def test_reschedule_to_taken_slot_changes_nothing(db):
    a, b, _ = service.search_slots("alpha", now=NOW)
    mine = service.book("alpha", a.slot_id, patient_name="Ann", now=NOW)
    service.book("alpha", b.slot_id, patient_name="Bob", now=NOW)
    with pytest.raises(service.SlotTaken):
        service.reschedule("alpha", mine.confirmation, b.slot_id, now=NOW)
    still = service.get_appointment("alpha", mine.confirmation)
    assert still.status == "booked" and still.start == a.start
    assert Appointment.select().where(Appointment.status == "booked").count() == 2


def test_book_validation(db):
    s = service.search_slots("alpha", now=NOW)[0]
    for kwargs in ({"patient_name": ""}, {"patient_name": "A", "phone": "abc"},
                   {"patient_name": "A", "email": "not-an-email"}, {"patient_name": "x" * 201}):
        with pytest.raises(service.InvalidRequest):
            service.book("alpha", s.slot_id, now=NOW, **kwargs)
    for bad in ("abc", "-1", "0", "99999999999999999999999", ""):
        with pytest.raises(service.NotFound):
            service.book("alpha", bad, patient_name="A", now=NOW)
    with pytest.raises(service.NotAllowed):
        service.book("alpha", s.slot_id, patient_name="A", now=NOW + timedelta(days=30))


def test_cross_tenant_access_refused(db):
    alpha_slot = service.search_slots("alpha", now=NOW)[0]
    beta_slot = service.search_slots("beta", now=NOW)[0]
    with pytest.raises(service.NotFound):
        service.book("beta", alpha_slot.slot_id, patient_name="Eve", now=NOW)
    appt = service.book("alpha", alpha_slot.slot_id, patient_name="Ann Lee", phone="5551112222",
                        now=NOW)
    for call in (
        lambda: service.get_appointment("beta", appt.confirmation),
        lambda: service.cancel("beta", appt.confirmation),
        lambda: service.reschedule("beta", appt.confirmation, beta_slot.slot_id, now=NOW),
        lambda: service.reschedule("alpha", appt.confirmation, beta_slot.slot_id, now=NOW),
    ):
        with pytest.raises(service.NotFound):
            call()
    assert service.find_appointments("beta", phone="5551112222", now=NOW) == []
    assert [a.confirmation for a in service.find_appointments("alpha", phone="+1 555 111 2222",
                                                              now=NOW)] == [appt.confirmation]
    assert service.get_appointment("alpha", appt.confirmation).status == "booked"


def test_race_50_callers_one_slot_greenlets(db):
    """50 greenlets on a pooled database: exactly one wins (Postgres: ≥20 connections)."""
    slot = service.search_slots("alpha", now=NOW)[0]
    results = []

    def caller(i):
        try:
            results.append(("ok", service.book("alpha", slot.slot_id, patient_name=f"Caller {i}",
                                               now=NOW).confirmation))
        except service.SlotTaken:
            results.append(("taken", None))

    from esl_app.db import database

    pool = database()
    pool.close_all()
    gevent.joinall([gevent.spawn(caller, i) for i in range(50)], raise_error=True)
    if db == "postgres":  # the callers really held many connections at once
        assert len(pool._connections) + len(pool._in_use) >= 20
    assert sorted(r[0] for r in results).count("ok") == 1
    assert [r[0] for r in results].count("taken") == 49
    assert Appointment.select().where(Appointment.slot == int(slot.slot_id)).count() == 1
    assert Slot.get_by_id(int(slot.slot_id)).state == "booked"


RACE_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time, json
    from datetime import datetime, UTC
    from esl_app.db import init_db
    from esl_app.scheduling import service
    init_db(sys.argv[1], create=False)
    slot, go, now = sys.argv[2], sys.argv[3], datetime.fromisoformat(sys.argv[4])
    results = []
    def caller(i):
        while not os.path.exists(go):
            time.sleep(0.001)
        try:
            service.book("alpha", slot, patient_name=f"P{os.getpid()}-{i}", now=now)
            results.append("ok")
        except service.SlotTaken:
            results.append("taken")
        except Exception as exc:
            results.append(f"error:{type(exc).__name__}:{exc}")
    ts = [threading.Thread(target=caller, args=(i,)) for i in range(10)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps(results))
""")


def test_race_50_callers_processes_and_threads_sqlite(tmp_path):
    """5 processes × 10 OS threads race for one slot on one SQLite file: one winner."""
    make_db(tmp_path, TWO_TENANTS, days=3, now=NOW)
    url = f"sqlite:///{tmp_path / 'ivr-test.db'}"
    slot = service.search_slots("alpha", now=NOW)[0]
    close_db()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, url, slot.slot_id, str(go),
                               NOW.isoformat()], stdout=subprocess.PIPE, text=True)
             for _ in range(5)]
    gevent.sleep(1.0)
    go.write_text("go")
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results += json.loads(out.strip().splitlines()[-1])
    assert len(results) == 50
    assert results.count("ok") == 1, results
    assert results.count("taken") == 49, results
    init_db(url)
    assert Appointment.select().count() == 1
    close_db()


def test_codes_format_and_space():
    draws = [new_code() for _ in range(5000)]
    # new_code promises a random draw from the whole 31^6 space; the database, not the draw,
    # promises uniqueness (test_book_retries_a_colliding_code). Every character must appear
    # at every position: a missing one has odds of (30/31)^5000 ≈ e^-164.
    for pos in range(6):
        assert {c.replace("-", "")[pos] for c in draws} == set(ALPHABET)
    # Collisions within the birthday bound: 5000 draws from 887 M expect 0.014; three or more
    # have odds below 1e-6, where a generator with a small or skewed space fails at once.
    assert len(draws) - len(set(draws)) <= 2
    codes = set(draws)
    for c in list(codes)[:200]:
        assert CODE_RE.match(c)
        assert not set(c) & set("01OIL")
    assert not set(ALPHABET) & set("01OIL")
    assert normalize_code("k7m 4q2") == "K7M-4Q2"
    assert normalize_code("K7M4Q2") == "K7M-4Q2"
    assert normalize_code("K0M4Q2") is None
    assert normalize_code("short") is None


def test_book_retries_a_colliding_code(db, monkeypatch):
    slots = service.search_slots("alpha", limit=3, now=NOW)
    first = service.book("alpha", slots[0].slot_id, patient_name="A", now=NOW).confirmation
    fresh = iter([first, first, "ZZZ-ZZ9"])
    monkeypatch.setattr(service, "new_code", lambda: next(fresh))
    second = service.book("alpha", slots[1].slot_id, patient_name="B", now=NOW)
    assert second.confirmation == "ZZZ-ZZ9"
    assert next(fresh, None) is None  # two collisions were retried, each in its savepoint
    # The same code in another tenant is no collision: uniqueness is per tenant.
    monkeypatch.setattr(service, "new_code", lambda: first)
    other = service.search_slots("beta", limit=1, now=NOW)[0]
    assert service.book("beta", other.slot_id, patient_name="C", now=NOW).confirmation == first


def test_book_gives_up_cleanly_when_every_code_collides(db, monkeypatch):
    slots = service.search_slots("alpha", limit=2, now=NOW)
    taken = service.book("alpha", slots[0].slot_id, patient_name="A", now=NOW).confirmation
    monkeypatch.setattr(service, "new_code", lambda: taken)
    with pytest.raises(service.SchedulingError, match="confirmation code"):
        service.book("alpha", slots[1].slot_id, patient_name="B", now=NOW)
    # Nothing half-done: no second appointment, and the slot is still free to book.
    assert Appointment.select().where(Appointment.tenant == "alpha").count() == 1
    monkeypatch.undo()
    assert service.book("alpha", slots[1].slot_id, patient_name="B", now=NOW).confirmation != taken


def test_codes_not_sequential(db):
    slots = service.search_slots("alpha", limit=10, now=NOW)
    codes = [service.book("alpha", s.slot_id, patient_name="A", now=NOW).confirmation
             for s in slots]
    assert len(set(codes)) == 10
    # consecutive bookings do not yield neighbouring codes
    idx = [int("".join(str(ALPHABET.index(ch)).zfill(2) for ch in c.replace("-", "")))
           for c in codes]
    assert all(abs(a - b) > 1 for a, b in zip(idx, idx[1:], strict=False))


def _tenant_yaml(tz: str, hours: str, minutes: int = 30) -> str:
    return textwrap.dedent(f"""
        tenants:
          - id: dst
            name: DST Clinic
            dids: ["4001"]
            timezone: {tz}
            hours: {{{hours}}}
            slot_minutes: {minutes}
            doctors: [{{id: d1, name: Dr. One}}, {{id: d2, name: Dr. Two}}]
    """)


def test_generation_idempotent_and_inside_hours(tmp_path):
    make_db(tmp_path, TWO_TENANTS, days=7, now=NOW)
    count = Slot.select().where(Slot.tenant == "alpha").count()
    assert generate_slots("alpha", 7, now=NOW) == 0
    assert Slot.select().where(Slot.tenant == "alpha").count() == count
    assert generate_slots("alpha", 8, now=NOW) > 0
    # every slot starts inside the hours, in the future
    for s in service.search_slots("alpha", limit=50, now=NOW):
        assert 8 <= s.start.hour < 17 and s.end.hour <= 17
    close_db()


def test_generation_across_fall_back(tmp_path):
    # DST ends in New York on Sunday 2026-11-01.
    now = datetime(2026, 10, 29, 0, 0, tzinfo=UTC)
    hours = 'mon-fri: "08:00-10:00", sun: "00:30-02:30"'
    make_db(tmp_path, _tenant_yaml("America/New_York", hours), days=6, now=now)
    slots = service.search_slots("dst", limit=50, now=now, doctor="d1")
    local = [s.start.strftime("%a %H:%M %z") for s in slots]
    assert "Thu 08:00 -0400" in local and "Mon 08:00 -0500" in local
    sunday = [s for s in slots if s.start.weekday() == 6]
    # 00:30, 01:00, 01:30 (first occurrence only), 02:00 — no duplicated hour
    assert [s.start.strftime("%H:%M") for s in sunday] == ["00:30", "01:00", "01:30", "02:00"]
    utc = [s.start.astimezone(UTC) for s in sunday]
    assert utc == sorted(set(utc))
    close_db()


def test_generation_across_spring_forward(tmp_path):
    # DST starts in New York on Sunday 2027-03-14: 02:00-03:00 does not exist.
    now = datetime(2027, 3, 13, 12, 0, tzinfo=UTC)
    make_db(tmp_path, _tenant_yaml("America/New_York", 'sun: "01:00-04:00"'), days=2, now=now)
    slots = service.search_slots("dst", limit=50, now=now, doctor="d2")
    assert [s.start.strftime("%H:%M%z") for s in slots] == [
        "01:00-0500", "01:30-0500", "03:00-0400", "03:30-0400"]
    close_db()


def test_generation_skips_past_times(tmp_path):
    make_db(tmp_path, TWO_TENANTS, days=1, now=NOW)
    slots = service.search_slots("alpha", limit=50, now=NOW - timedelta(hours=5))
    assert all(s.start > NOW for s in slots)
    close_db()


def test_import_idempotent_and_keeps_bookings(tmp_path):
    tenants = make_db(tmp_path, TWO_TENANTS, days=7, now=NOW)
    report = import_tenants(tenants)
    assert not report.changed and report.unchanged == ["alpha", "beta"]
    slot = service.search_slots("alpha", doctor="patel", now=NOW)[0]
    appt = service.book("alpha", slot.slot_id, patient_name="Kept", now=NOW)
    changed = TWO_TENANTS.replace('mon-fri: "08:00-17:00", sat: "09:00-12:00"',
                                  'mon-fri: "10:00-16:00"').replace(
        "{id: smith, name: Dr. Sarah Smith}, {id: patel, name: Dr. Raj Patel}",
        "{id: smith, name: Dr. Sarah Smith}, {id: lee, name: Dr. Kim Lee}")
    report = import_tenants(parse_tenants(changed))
    assert report.updated == ["alpha"]
    assert report.doctors_added == ["alpha/lee"] and report.doctors_retired == ["alpha/patel"]
    kept = service.get_appointment("alpha", appt.confirmation)
    assert kept.status == "booked" and kept.doctor == "patel"
    assert all(s.doctor != "patel" for s in service.search_slots("alpha", limit=50, now=NOW))
    assert all(10 <= s.start.hour < 16
               for s in service.search_slots("alpha", limit=50, now=NOW))
    close_db()


def test_import_refuses_did_of_other_tenant(tmp_path):
    make_db(tmp_path, TWO_TENANTS, days=1, now=NOW)
    other = textwrap.dedent("""
        tenants:
          - id: gamma
            name: Gamma
            dids: ["5550103001"]
            timezone: UTC
            hours: {mon: "09:00-10:00"}
            doctors: [{id: d, name: D}]
    """)
    from esl_app.config.tenants import ConfigError

    with pytest.raises(ConfigError, match="already belongs to tenant 'alpha'"):
        import_tenants(parse_tenants(other))
    close_db()


def test_sqlite_wal_and_busy_timeout(tmp_path):
    db = init_db(f"sqlite:///{tmp_path / 'w.db'}")
    with db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == SQLITE_BUSY_MS
    close_db()


def test_code_regex_matches_docs():
    assert re.match(CODE_RE, "K7M-4Q2")


def test_pool_size_from_environment(tmp_path, monkeypatch):
    from esl_app.db import DatabaseError

    monkeypatch.setenv("IVR_DB_POOL", "7")
    db = init_db(f"sqlite:///{tmp_path / 'p.db'}")
    assert db._max_connections == 7
    monkeypatch.setenv("IVR_DB_POOL", "lots")
    with pytest.raises(DatabaseError, match="IVR_DB_POOL"):
        init_db(f"sqlite:///{tmp_path / 'p.db'}")
    close_db()
