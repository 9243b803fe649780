"""Jinja2 templates and the package's static files, loaded on first use.

Autoescaping is on for every template: names, transcripts and reasons are a caller's
own words and must never become markup. Static files are read once from the package and
served with a content hash in their URL, so a browser may cache them for a year and
still gets a new version the moment one is deployed.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from importlib import resources
from typing import Any

__all__ = ["STATIC_TYPES", "render", "static_file", "static_url"]

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}

_env: Any = None
_static: dict[str, tuple[bytes, str]] = {}
_urls: dict[str, str] = {}


def _time(value: datetime | None) -> str:
    """``9:30 AM``: the way a US front desk reads a time."""
    if value is None:
        return ""
    return value.strftime("%I:%M %p").lstrip("0")


def _day(value: date | datetime | None) -> str:
    """``Mon 7 Dec 2026``."""
    if value is None:
        return ""
    return f"{value:%a} {value.day} {value:%b %Y}"


def _day_month(value: date | datetime | None) -> str:
    """``Mon 7 Dec``: a column head where the year is plain."""
    if value is None:
        return ""
    return f"{value:%a} {value.day} {value:%b}"


def _seconds(value: int | float | None) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 60}:{value % 60:02d}" if value >= 60 else f"{value} s"


def _label(value: str | None) -> str:
    """``caller_hangup`` → ``caller hangup``."""
    return (value or "").replace("_", " ")


def environment() -> Any:
    """The shared Jinja2 environment (created on first use: no work at import)."""
    global _env
    if _env is None:
        from jinja2 import Environment, PackageLoader, StrictUndefined

        env = Environment(loader=PackageLoader("esl_app.web", "templates"), autoescape=True,
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                          auto_reload=False)
        env.filters.update(hm=_time, day=_day, dm=_day_month, secs=_seconds, label=_label)
        env.globals["static_url"] = static_url
        _env = env
    return _env


def render(name: str, **context: Any) -> str:
    """A template rendered with ``context``."""
    return str(environment().get_template(name).render(**context))


def static_file(name: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of a packaged static file; None for anything else."""
    hit = _static.get(name)
    if hit is not None:
        return hit
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix not in STATIC_TYPES or "/" in name or "\\" in name or name.startswith("."):
        return None
    try:
        data = resources.files("esl_app.web").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    _static[name] = (data, STATIC_TYPES[suffix])
    return _static[name]


def static_url(name: str) -> str:
    """The URL of a static file, with a hash of its content as cache-buster."""
    url = _urls.get(name)
    if url is None:
        found = static_file(name)
        tag = hashlib.sha256(found[0]).hexdigest()[:10] if found else "missing"
        url = _urls[name] = f"/ui/static/{name}?v={tag}"
    return url
