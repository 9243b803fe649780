"""The hot scheduling queries run SQL compiled once per shape: same answers as peewee's
own compilation, on SQLite and Postgres, and a hold/booking still has exactly one winner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes.scheduling import TWO_TENANTS, on_both_databases

from esl_app.scheduling import service
from esl_app.scheduling.errors import SlotTaken

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    yield from on_both_databases(request.param, tmp_path, TWO_TENANTS, 10, NOW)


class _Uncached(dict):
    """Every shape misses: each query goes through peewee's compilation."""

    def get(self, key, default=None):
        return None


CASES = [
    {},
    {"doctor": "smith"},
    {"part_of_day": "afternoon"},
    {"doctor": "patel", "part_of_day": "morning", "limit": 5},
    {"date": (NOW + timedelta(days=2)).date()},
    {"after": NOW + timedelta(days=3), "limit": 7},
]


def test_compiled_search_matches_peewee(db, monkeypatch):
    found = 0
    for tenant in ("alpha", "beta"):
        for kw in CASES:
            if kw.get("doctor") and tenant == "beta":
                continue
            fast = service.search_slots(tenant, now=NOW, **kw)
            fast_again = service.search_slots(tenant, now=NOW, **kw)  # from the cache
            with monkeypatch.context() as m:
                m.setattr(service, "_COMPILED", _Uncached())
                slow = service.search_slots(tenant, now=NOW, **kw)
            assert fast == slow == fast_again, (tenant, kw)
            found += bool(slow)
    assert found >= 8  # beta has no afternoons; everything else finds slots
    from esl_app.db import database

    shapes = {k[2:]: v for k, v in service._COMPILED[database()].items()}
    assert all(v is not None for v in shapes.values())  # every shape verified and cached
    assert ("search", True, True) in shapes


def test_compiled_hold_and_book_keep_one_winner(db):
    slot = service.search_slots("alpha", now=NOW, limit=1)[0]
    held = service.hold_slot("alpha", slot.slot_id, owner="call-a", now=NOW)
    assert held.doctor == slot.doctor and held.start == slot.start
    with pytest.raises(SlotTaken):
        service.hold_slot("alpha", slot.slot_id, owner="call-b", now=NOW)
    with pytest.raises(SlotTaken):
        service.book("alpha", slot.slot_id, patient_name="Bea Other", call_id="call-b",
                     now=NOW)
    booked = service.book("alpha", slot.slot_id, patient_name="Ann Caller",
                          call_id="call-a", now=NOW)
    assert booked.doctor == slot.doctor and booked.status == "booked"
    assert service.get_appointment("alpha", booked.confirmation).patient_name == "Ann Caller"
    assert slot.slot_id not in {s.slot_id for s in service.search_slots("alpha", now=NOW)}


def test_tenant_stamp_check_sees_an_import(db):
    """Another process imported: this one's expired cache entry is re-read, not reused."""
    from esl_app.config.tenants import parse_tenants
    from esl_app.scheduling.provisioning import import_tenants

    before = service.get_tenant("beta")
    key = next(k for k in service._TENANT_CACHE if k[1] == "beta")
    stale = (-1e9, *service._TENANT_CACHE[key][1:])
    service._TENANT_CACHE[key] = stale
    assert service.get_tenant("beta") is before  # expired, stamp unchanged: kept
    import_tenants(parse_tenants(TWO_TENANTS.replace("Beta Clinic", "Beta Health")))
    service._TENANT_CACHE[key] = stale  # as if the import ran elsewhere
    assert service.get_tenant("beta").name == "Beta Health"


def test_compiled_release_frees_only_the_owners_holds(db):
    a, b = service.search_slots("alpha", now=NOW, limit=2)
    service.hold_slot("alpha", a.slot_id, owner="call-a", now=NOW)
    service.hold_slot("alpha", b.slot_id, owner="call-b", now=NOW)
    assert service.release_holds("call-a") == 1
    assert service.release_holds("call-a") == 0
    free = {s.slot_id for s in service.search_slots("alpha", now=NOW, limit=5)}
    assert a.slot_id in free and b.slot_id not in free


def test_compiled_sql_belongs_to_its_database_object(tmp_path):
    """A database opened later (even at a reused address) never gets another's SQL.

    CI once ran Postgres with SQLite's '?' placeholders: the cache was keyed by id(db),
    and a new Postgres database object took a collected SQLite object's address.
    """
    import gc

    import peewee as pw

    lite = pw.SqliteDatabase(str(tmp_path / "a.db"))
    pg = pw.PostgresqlDatabase("nowhere")  # never connected: only its dialect matters
    calls = []

    def build(placeholder):
        class Q:
            def sql(self):
                calls.append(placeholder)
                return f"SELECT {placeholder}", [1]
        return Q()

    assert service._sql(lite, ("probe",), lambda: build("?"), [1]) == ("SELECT ?", [1])
    assert service._sql(pg, ("probe",), lambda: build("%s"), [1]) == ("SELECT %s", [1])
    assert service._sql(lite, ("probe",), lambda: build("?"), [1]) == ("SELECT ?", [1])
    assert calls == ["?", "%s"]  # each compiled once, for its own database
    del lite
    gc.collect()
    assert not any(isinstance(db, pw.SqliteDatabase) and str(getattr(db, "database", ""))
                   .endswith("a.db") for db in list(service._COMPILED.keys()))
