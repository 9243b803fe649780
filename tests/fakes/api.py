"""Shared setup for the HTTP API and Lambda tests: a real DB and a real server on loopback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from esl_app.config.tenants import TenantSet
from esl_app.db import close_db
from esl_app.http.app import serve_http
from esl_app.scheduling.tokens import issue_token
from esl_app.sim.testing import make_db


@dataclass
class LiveApi:
    url: str
    port: int
    tenants: TenantSet
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[tenant]}"}


@contextmanager
def live_api(tmp: Path, days: int = 10) -> Iterator[LiveApi]:
    """make_db + a token per tenant + serve_http on an ephemeral loopback port."""
    tenants = make_db(tmp, days=days)
    server = serve_http("127.0.0.1", 0)
    try:
        api = LiveApi(url=f"http://127.0.0.1:{server.server_port}", port=server.server_port,
                      tenants=tenants)
        for t in tenants:
            api.tokens[t.id] = issue_token(t.id)
        yield api
    finally:
        server.stop(timeout=2)
        close_db()


ROOT = Path(__file__).resolve().parent.parent


def lambda_modules() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """(common, search_slots, confirm_appointment, handoff_human) from the repo's lambdas/."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return tuple(importlib.import_module(f"lambdas.{name}") for name in (  # type: ignore
        "common", "search_slots", "confirm_appointment", "handoff_human"))
