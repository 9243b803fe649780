"""Tenant provisioning: tenants.yaml → database, idempotently.

Import is an upsert of the tenants in the file; tenants absent from the file
are left alone (``ivr tenants remove`` deletes). Doctors that disappear are
retired, never deleted, so booked appointments always keep their doctor;
their open future slots are withdrawn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import peewee as pw

from esl_app.config.tenants import ConfigError, Tenant, TenantSet, did_forms, tenants_from_json
from esl_app.db import database, write_txn
from esl_app.db.models import Appointment, Did, Doctor, Slot, TenantRow, utcnow
from esl_app.scheduling.errors import NotAllowed, NotFound
from esl_app.scheduling.service import forget_tenants

__all__ = ["ImportReport", "import_tenants", "load_tenant_set", "remove_tenant",
           "tenant_set_version"]


@dataclass
class ImportReport:
    """What an import changed, for the operator."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    doctors_added: list[str] = field(default_factory=list)
    doctors_retired: list[str] = field(default_factory=list)
    dids_added: list[str] = field(default_factory=list)
    dids_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)

    def lines(self) -> list[str]:
        out = [f"added tenant {t}" for t in self.added]
        out += [f"updated tenant {t}" for t in self.updated]
        out += [f"added doctor {d}" for d in self.doctors_added]
        out += [f"retired doctor {d}" for d in self.doctors_retired]
        out += [f"added DID {d}" for d in self.dids_added]
        out += [f"removed DID {d}" for d in self.dids_removed]
        out += [f"unchanged tenant {t}" for t in self.unchanged]
        return out


def import_tenants(tenants: TenantSet, *, force: bool = False) -> ImportReport:
    """Upsert every tenant of the set in one transaction; reports what changed.

    Refused (:class:`NotAllowed`, nothing written) when it would take away every number
    of a clinic with upcoming appointments, unless ``force``: its patients could no
    longer call to cancel or move them (issue #31; removing the clinic is
    :func:`remove_tenant`, refused the same way).
    """
    report = ImportReport()
    with write_txn():
        for tenant in tenants:
            _check_dids(tenant)
            if not force:
                _check_reachable(tenant)
        for tenant in tenants:
            _upsert(tenant, report)
    forget_tenants()
    return report


def _check_dids(tenant: Tenant) -> None:
    forms = {f for did in tenant.dids for f in did_forms(did)}
    for row in Did.select().where(Did.tenant != tenant.id):
        if forms & set(did_forms(row.number)):
            raise ConfigError(f"tenant '{tenant.id}': key 'dids': DID {row.number} already "
                              f"belongs to tenant '{row.tenant_id}'")


def _upcoming(tenant_id: str) -> int:
    """How many booked appointments of the tenant are still ahead."""
    return (Appointment.select().join(Slot)
            .where((Appointment.tenant == tenant_id) & (Appointment.status == "booked")
                   & (Slot.start > utcnow())).count())


def _check_reachable(tenant: Tenant) -> None:
    """Refuse replacing all of a stored tenant's DIDs while it has upcoming bookings."""
    stored = {d.number for d in Did.select().where(Did.tenant == tenant.id)}
    if not stored:
        return
    kept = {f for did in tenant.dids for f in did_forms(did)}
    if any(kept & set(did_forms(n)) for n in stored):
        return
    upcoming = _upcoming(tenant.id)
    if upcoming:
        raise NotAllowed(f"tenant '{tenant.id}': the import would remove all of its DIDs "
                         f"({', '.join(sorted(stored))}) while it has {upcoming} upcoming "
                         "appointment(s); keep one, or use --force")


def _upsert(tenant: Tenant, report: ImportReport) -> None:
    config = json.dumps(tenant.to_dict(), sort_keys=True)
    row = TenantRow.get_or_none(TenantRow.id == tenant.id)
    if row is None:
        TenantRow.create(id=tenant.id, name=tenant.name, timezone=tenant.timezone, config=config)
        report.added.append(tenant.id)
    elif row.config != config or row.name != tenant.name or row.timezone != tenant.timezone:
        TenantRow.update(name=tenant.name, timezone=tenant.timezone, config=config,
                         updated_at=utcnow()).where(TenantRow.id == tenant.id).execute()
        report.updated.append(tenant.id)
    else:
        report.unchanged.append(tenant.id)
        return
    existing = {d.number: d for d in Did.select().where(Did.tenant == tenant.id)}
    for did in tenant.dids:
        if did not in existing:
            Did.create(number=did, tenant=tenant.id)
            report.dids_added.append(did)
    for number in set(existing) - set(tenant.dids):
        existing[number].delete_instance()
        report.dids_removed.append(number)
    doctors = {d.slug: d for d in Doctor.select().where(Doctor.tenant == tenant.id)}
    for doc in tenant.doctors:
        row_d = doctors.get(doc.id)
        if row_d is None:
            Doctor.create(tenant=tenant.id, slug=doc.id, name=doc.name, specialty=doc.specialty)
            report.doctors_added.append(f"{tenant.id}/{doc.id}")
        elif (row_d.name, row_d.specialty, row_d.active) != (doc.name, doc.specialty, True):
            Doctor.update(name=doc.name, specialty=doc.specialty, active=True).where(
                Doctor.id == row_d.id).execute()
    wanted = {d.id for d in tenant.doctors}
    for slug, row_d in doctors.items():
        if slug not in wanted and row_d.active:
            Doctor.update(active=False).where(Doctor.id == row_d.id).execute()
            Slot.delete().where((Slot.doctor == row_d.id) & (Slot.state == "open")
                                & (Slot.start > utcnow())).execute()
            report.doctors_retired.append(f"{tenant.id}/{slug}")


def load_tenant_set() -> TenantSet:
    """Every tenant stored in the database, as a TenantSet (for routing without a file)."""
    with database().connection_context():
        rows = list(TenantRow.select().order_by(TenantRow.id))
    return tenants_from_json([r.config for r in rows], source="database")


def tenant_set_version() -> tuple[object, ...]:
    """A cheap fingerprint of the stored tenants (one aggregate query, no parsing).

    Every change goes through :func:`import_tenants` (new rows; ``updated_at`` bumped
    with the config) or :func:`remove_tenant` (the count), so servers poll this and
    re-read the whole set only when it changed.
    """
    with database().connection_context():
        row = TenantRow.select(
            pw.fn.COUNT(TenantRow.id), pw.fn.MAX(TenantRow.updated_at),
            pw.fn.MAX(TenantRow.created_at), pw.fn.SUM(pw.fn.LENGTH(TenantRow.config)),
        ).tuples().get()
    return tuple(str(v) if v is not None else None for v in row)


def remove_tenant(tenant_id: str, *, force: bool = False) -> None:
    """Delete a tenant; refuses while it has upcoming bookings unless ``force``."""
    with write_txn():
        if TenantRow.get_or_none(TenantRow.id == tenant_id) is None:
            raise NotFound(f"unknown tenant '{tenant_id}'")
        upcoming = _upcoming(tenant_id)
        if upcoming and not force:
            raise NotAllowed(f"tenant '{tenant_id}' has {upcoming} upcoming appointment(s); "
                             "use --force to remove it anyway")
        TenantRow.delete().where(TenantRow.id == tenant_id).execute()
    forget_tenants()
