"""Process settings: argument → environment → default, and ``HOST:PORT`` addresses.

The one place for a setting read by more than one module (the database URL, the tenants
file, the serving profile, FreeSWITCH's inbound event socket) and for parsing the
addresses given on command lines and in variables. Standard library only and cheap to
import: the CLI imports it before any command runs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_PROFILE",
    "DEFAULT_TENANTS",
    "database_url",
    "env",
    "env_int",
    "freeswitch_esl",
    "parse_hostport",
    "sqlite_url",
    "tenants_path",
]

DEFAULT_DATABASE_URL = "sqlite:///ivr.db"
DEFAULT_TENANTS = "tenants.yaml"
DEFAULT_PROFILE = "local"
_LOCALHOST = "127.0.0.1"


def env(name: str, default: str = "") -> str:
    """The environment variable ``name``, or ``default`` when it is unset or blank."""
    value = os.environ.get(name)
    return value if value and value.strip() else default


def env_int(name: str, default: int | None = None) -> int | None:
    """The variable ``name`` as a (possibly negative) integer, else ``default``."""
    value = os.environ.get(name, "").strip()
    return int(value) if value and value.lstrip("-").isdigit() else default


def database_url(url: str | None = None) -> str:
    """``--db`` → IVR_DATABASE_URL → ``sqlite:///ivr.db``."""
    return url or env("IVR_DATABASE_URL", DEFAULT_DATABASE_URL)


def sqlite_url(path: str | Path) -> str:
    """The database URL of the SQLite file at ``path``."""
    return f"sqlite:///{path}"


def tenants_path(path: str | None = None) -> str:
    """``--tenants`` → IVR_TENANTS → ``tenants.yaml``."""
    return path or env("IVR_TENANTS", DEFAULT_TENANTS)


def parse_hostport(value: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``; an empty host is 127.0.0.1 (``:8084``).

    With ``default_port`` a bare host (``localhost``) or bare port (``8021``) is accepted
    too. Anything else raises :class:`ValueError` saying ``expected HOST:PORT, got '…'``.
    """
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not text:
        port = ""
    elif not sep and default_port is not None:
        host, port = ("", text) if text.isdigit() else (text, str(default_port))
    elif not sep:
        port = ""
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got '{value}'")
    return host or _LOCALHOST, int(port)


def freeswitch_esl(host: str | None = None, port: int | None = None,
                   password: str | None = None) -> tuple[str, int, str]:
    """FreeSWITCH's inbound event socket (reminder dials, the dashboard's switch probe).

    Arguments, else FS_ESL_HOST, FS_ESL_PORT and FS_ESL_PASSWORD, else
    127.0.0.1:8021 with ``ClueCon``; an FS_ESL_PORT that is not a port is 8021.
    """
    if port is None:
        raw = env("FS_ESL_PORT", "8021").strip()
        port = int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else 8021
    return (host or env("FS_ESL_HOST", _LOCALHOST), port,
            password or env("FS_ESL_PASSWORD", "ClueCon"))
