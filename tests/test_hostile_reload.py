"""Issue #31 items 2 and 3: a hostile or empty configuration reaching a serving worker.

Reported: through hot reload an alias bomb stalled a worker's event loop for 19 s and
each failure wrote a 312 MB log line, re-parsed for every new call (a failed reload did
not remember the version); and ``{"tenants": []}`` was accepted ("tenants reloaded:
0 tenant(s)", every DID "not in service") though ``serve`` refuses it at start. These
tests drive the workers' own tenant source (``_tenant_source``) in both of its modes:
the file while the database holds no tenant, and the database's rows.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from esl_app.config.tenants import ConfigError, TenantSet
from esl_app.db import close_db, init_db
from esl_app.runtime.workers import _tenant_source
from esl_app.sim.testing import REPO_TENANTS, make_db
from esl_app.telephony import server
from esl_app.telephony.server import TenantSource

CALLS = 10  # new calls placed after the bad change
LOGGER = "esl_app.telephony.server"


def _bomb(levels: int = 4, fan: int = 9) -> str:
    parts = ["&a0 [" + ", ".join(["lol"] * fan) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def _write(path, text: str, tick: list[int]) -> None:
    """Write and give the file a new mtime (two writes may share a coarse timestamp)."""
    path.write_text(text)
    tick[0] += 1
    os.utime(path, ns=(tick[0] * 10**9, tick[0] * 10**9))


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.ERROR]


@pytest.fixture
def file_served(tmp_path):
    """A worker's source over a database without tenants: the file is what it serves."""
    init_db(f"sqlite:///{tmp_path / 'ivr-test.db'}")
    path = tmp_path / "tenants.yaml"
    tick = [1]
    _write(path, REPO_TENANTS.read_text(), tick)
    source = _tenant_source(str(path))
    assert len(source.current()) == 2
    yield source, path, tick
    close_db()


def test_a_bomb_in_the_file_is_reported_once_in_a_short_line(file_served, caplog):
    source, path, tick = file_served
    before = source.current()
    bad = REPO_TENANTS.read_text().replace('dids: ["1001"', f'dids: [{_bomb()}, "1001"', 1)
    assert bad != REPO_TENANTS.read_text()
    _write(path, bad, tick)
    caplog.set_level(logging.INFO, logger=LOGGER)
    started = time.monotonic()
    for _ in range(CALLS):
        assert source.current() is before  # the valid set stays in force
    assert time.monotonic() - started < 2
    errors = _errors(caplog)
    assert len(errors) == 1, f"{len(errors)} error lines"
    assert len(errors[0]) < 400 and "\n" not in errors[0]
    assert "aliases are not allowed" in errors[0]


def test_an_empty_tenant_list_is_refused_and_the_set_stays(file_served, caplog):
    source, path, tick = file_served
    before = source.current()
    _write(path, '{"tenants": []}\n', tick)
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(CALLS):
        assert source.current() is before
        assert source.current().by_did("1001").id == "sunrise"
    errors = _errors(caplog)
    assert len(errors) == 1 and "would remove all 2 tenant(s)" in errors[0]
    assert not any("tenants reloaded" in r.getMessage() for r in caplog.records)
    _write(path, REPO_TENANTS.read_text(), tick)  # fixed: taken at the next call
    assert source.current() is not before and len(source.current()) == 2


def test_a_huge_file_is_refused_without_reading_it_all(file_served, caplog):
    source, path, tick = file_served
    _write(path, REPO_TENANTS.read_text() + "#" * 5_000_000 + "\n", tick)
    caplog.set_level(logging.INFO, logger=LOGGER)
    started = time.monotonic()
    assert len(source.current()) == 2
    assert time.monotonic() - started < 1
    assert ["file too large" in e for e in _errors(caplog)] == [True]


def test_a_hostile_database_row_is_reported_once_in_a_short_line(tmp_path, caplog):
    """The database mode (``ivr serve`` after an import): a row no import would write."""
    from esl_app.db.models import TenantRow, utcnow

    make_db(tmp_path, REPO_TENANTS.read_text(), days=1)
    try:
        source = _tenant_source(str(tmp_path / "absent.yaml"))
        before = source.current()
        row = TenantRow.get_by_id("sunrise")
        config = json.loads(row.config)
        config["dids"] = ["9" * 1_000_000]
        TenantRow.update(config=json.dumps(config), updated_at=utcnow()).where(
            TenantRow.id == "sunrise").execute()
        caplog.set_level(logging.INFO, logger=LOGGER)
        for _ in range(CALLS):
            assert source.current() is before
        errors = _errors(caplog)
        assert len(errors) == 1, f"{len(errors)} error lines"
        assert len(errors[0]) < 400
    finally:
        close_db()


def test_a_passing_failure_is_retried_after_a_while(monkeypatch, caplog):
    """The database down while loading (not a bad configuration): tried again later."""
    monkeypatch.setattr(server, "RELOAD_RETRY_S", 0.2, raising=False)
    good = TenantSet(())
    loads: list[int] = []
    failing = [True]

    def loader() -> TenantSet:
        loads.append(1)
        if failing[0] and len(loads) > 1:
            raise RuntimeError("database is locked")
        return good

    version = [1]
    source = TenantSource(loader=loader, version=lambda: version[0])
    version[0] = 2
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(CALLS):
        source.current()
    assert len(loads) == 2 and len(_errors(caplog)) == 1
    failing[0] = False
    time.sleep(0.25)
    source.current()
    assert len(loads) == 3 and source.reloads == 1


def test_a_bad_configuration_is_not_retried_until_it_changes():
    loads: list[int] = []

    def loader() -> TenantSet:
        loads.append(1)
        if len(loads) > 1:
            raise ConfigError("tenants.yaml: tenant 'a': key 'dids' is required")
        return TenantSet(())

    version = [1]
    source = TenantSource(loader=loader, version=lambda: version[0])
    version[0] = 2
    for _ in range(CALLS):
        source.current()
    assert len(loads) == 2
    version[0] = 3
    source.current()
    assert len(loads) == 3


def test_an_import_taking_every_did_of_a_clinic_with_bookings_is_refused(tmp_path):
    """Item 3's other half: a clinic with upcoming bookings keeps a number its patients
    can call (an import replacing all of its DIDs would make them "not in service")."""
    from esl_app.config.tenants import parse_tenants
    from esl_app.db.models import Did
    from esl_app.scheduling import service
    from esl_app.scheduling.errors import NotAllowed
    from esl_app.scheduling.provisioning import import_tenants

    text = REPO_TENANTS.read_text()
    make_db(tmp_path, text, days=3)
    try:
        before = {d.number for d in Did.select().where(Did.tenant == "sunrise")}
        moved = parse_tenants(text.replace('dids: ["1001"', 'dids: ["1991"', 1)
                              .replace('"+15550101001"', '"+15550101991"'))
        assert not set(moved.get("sunrise").dids) & before  # every number replaced
        import_tenants(moved)  # no bookings yet: allowed
        import_tenants(parse_tenants(text))  # and back
        slot = service.search_slots("sunrise", limit=1)[0]
        service.book("sunrise", slot.slot_id, patient_name="Ann Roe")
        with pytest.raises(NotAllowed, match="remove all of its DIDs .* 1 upcoming"):
            import_tenants(moved)
        assert {d.number for d in Did.select().where(Did.tenant == "sunrise")} == before
        keep_one = parse_tenants(text.replace('"+15550101001"', '"+15550101991"'))
        import_tenants(keep_one)  # one number kept: allowed
        import_tenants(moved, force=True)  # the operator insists
        assert not {d.number for d in Did.select().where(Did.tenant == "sunrise")} & before
    finally:
        close_db()
