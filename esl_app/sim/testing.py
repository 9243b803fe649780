"""Helpers for tests and benchmarks: a ready database from tenants.yaml in one call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from esl_app.config.settings import sqlite_url
from esl_app.config.tenants import TenantSet, load_tenants, parse_tenants
from esl_app.db import init_db
from esl_app.scheduling.provisioning import import_tenants
from esl_app.scheduling.slots import generate_slots
from esl_app.sim.demo import EXAMPLE_TENANTS

__all__ = ["REPO_TENANTS", "make_db"]

# The example clinics, shipped in the package (tests keep them identical to the
# repository's tenants.yaml), so this works from an installed ivr too.
REPO_TENANTS = EXAMPLE_TENANTS


def make_db(tmp_path: Path | str, tenants_yaml_text: str | None = None, days: int = 14,
            now: datetime | None = None, url: str | None = None) -> TenantSet:
    """Fresh SQLite database (or ``url``) with tenants imported and slots generated."""
    db_url = url or sqlite_url(Path(tmp_path) / "ivr-test.db")
    init_db(db_url)
    tenants = (parse_tenants(tenants_yaml_text) if tenants_yaml_text
               else load_tenants(REPO_TENANTS))
    import_tenants(tenants)
    for tenant in tenants:
        generate_slots(tenant.id, days, now=now)
    return tenants
