"""Process settings read once: argument → environment → default, and HOST:PORT addresses."""

from __future__ import annotations

import pytest

from esl_app.config import settings


def test_database_url_and_tenants_path(monkeypatch):
    monkeypatch.delenv("IVR_DATABASE_URL", raising=False)
    monkeypatch.delenv("IVR_TENANTS", raising=False)
    assert settings.database_url() == "sqlite:///ivr.db"
    assert settings.tenants_path() == "tenants.yaml"
    monkeypatch.setenv("IVR_DATABASE_URL", " ")  # blank is unset
    assert settings.database_url() == "sqlite:///ivr.db"
    monkeypatch.setenv("IVR_DATABASE_URL", "postgresql://db/ivr")
    monkeypatch.setenv("IVR_TENANTS", "/etc/ivr/tenants.yaml")
    assert settings.database_url() == "postgresql://db/ivr"
    assert settings.database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert settings.tenants_path() == "/etc/ivr/tenants.yaml"
    assert settings.tenants_path("t.yaml") == "t.yaml"
    assert settings.sqlite_url("/tmp/a.db") == "sqlite:////tmp/a.db"


def test_env_int(monkeypatch):
    monkeypatch.setenv("IVR_X", "-3")
    assert settings.env_int("IVR_X") == -3
    monkeypatch.setenv("IVR_X", "three")
    assert settings.env_int("IVR_X", 7) == 7
    monkeypatch.delenv("IVR_X")
    assert settings.env_int("IVR_X") is None


@pytest.mark.parametrize("value, default_port, expected", [
    ("10.0.0.5:8084", None, ("10.0.0.5", 8084)),
    (":8085", None, ("127.0.0.1", 8085)),
    ("[::1]:8086", None, ("[::1]", 8086)),
    ("127.0.0.1:0", None, ("127.0.0.1", 0)),
    ("localhost", 8021, ("localhost", 8021)),
    ("8021", 8084, ("127.0.0.1", 8021)),
    ("host:9", 8021, ("host", 9)),
])
def test_parse_hostport(value, default_port, expected):
    assert settings.parse_hostport(value, default_port=default_port) == expected


@pytest.mark.parametrize("value", ["localhost", "host:", "host:http", "host:70000", "", " "])
def test_parse_hostport_refuses(value):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        settings.parse_hostport(value)


def test_freeswitch_esl(monkeypatch):
    for name in ("FS_ESL_HOST", "FS_ESL_PORT", "FS_ESL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert settings.freeswitch_esl() == ("127.0.0.1", 8021, "ClueCon")
    monkeypatch.setenv("FS_ESL_HOST", "fs1")
    monkeypatch.setenv("FS_ESL_PORT", "9021")
    monkeypatch.setenv("FS_ESL_PASSWORD", "s3cret")
    assert settings.freeswitch_esl() == ("fs1", 9021, "s3cret")
    assert settings.freeswitch_esl("fs2", 1, "pw") == ("fs2", 1, "pw")
    monkeypatch.setenv("FS_ESL_PORT", "99999")
    assert settings.freeswitch_esl()[1] == 8021


def test_parse_hostport_with_a_default_port_still_needs_an_address():
    with pytest.raises(ValueError):
        settings.parse_hostport("", default_port=8084)
