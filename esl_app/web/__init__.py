"""The clinic's dashboard (issue #29): server-rendered pages under ``/ui/`` of the HTTP port.

- :mod:`esl_app.web.routes` — the falcon app: sign-in, tenant scope, CSRF, pages, SSE;
- :mod:`esl_app.web.auth` — users, Argon2id passwords, sessions, lock-out;
- :mod:`esl_app.web.data` — the pages' queries (always scoped by tenant);
- :mod:`esl_app.web.live` — the operators' live page: health, drain, metrics;
- :mod:`esl_app.web.render` — Jinja2 templates (``templates/``) and ``static/`` files;
- :mod:`esl_app.web.cli` — ``ivr users add|remove|list``.

:func:`mount` puts the dashboard beside the appointments API in one WSGI callable, so
``ivr serve`` needs no second port and the API keeps its own JSON error handling.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Mounted", "mount"]

PREFIX = "/ui"


class Mounted:
    """A WSGI app sending ``/ui`` and ``/ui/…`` to the dashboard, the rest to the API.

    Attribute access falls through to the API app, so code that adds routes or reads
    options of the API's falcon app keeps working on the mounted one.
    """

    def __init__(self, api: Any, web: Any) -> None:
        self.api = api
        self.web = web

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO") or ""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return self.web(environ, start_response)
        return self.api(environ, start_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)


def mount(api: Any, *, registry: Any = None) -> Mounted:
    """``api`` with the dashboard mounted under ``/ui/`` (settings from the environment)."""
    from esl_app.web.routes import create_web_app, web_config

    return Mounted(api, create_web_app(web_config(registry)))
