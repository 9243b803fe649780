"""peewee models: tenants, DIDs, doctors, slots, appointments, tokens, calls.

All times are stored as naive UTC datetimes; conversion to a clinic's zone
happens at the edges (scheduling views, API, speech). Double booking is made
impossible by the database, not by Python: a slot changes from ``open`` to
``booked`` only through a conditional UPDATE inside a transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

import peewee as pw

__all__ = [
    "ALL_MODELS",
    "ApiToken",
    "Appointment",
    "AuditLog",
    "CallbackTicket",
    "BaseModel",
    "CallRecord",
    "Did",
    "DoNotCall",
    "Doctor",
    "NotifyConsent",
    "OutboxMessage",
    "ReminderCall",
    "ReminderPause",
    "Slot",
    "TenantRow",
    "database_proxy",
    "naive_utc",
    "utcnow",
]

database_proxy = pw.DatabaseProxy()


def utcnow() -> datetime:
    """Naive UTC now, the form every stored timestamp has."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(dt: datetime | None = None) -> datetime:
    """``dt`` in the stored form (naive UTC) for comparing with stored times; ``None`` is now.

    An aware ``dt`` is converted; a naive one is taken to be UTC already.
    """
    if dt is None:
        return utcnow()
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


class BaseModel(pw.Model):
    """Binds every model to the database chosen at start-up."""

    class Meta:
        database = database_proxy
        legacy_table_names = False


class TenantRow(BaseModel):
    """A clinic; ``config`` holds its validated tenants.yaml entry as JSON."""

    id = pw.CharField(primary_key=True, max_length=64)
    name = pw.CharField(max_length=200)
    timezone = pw.CharField(max_length=64)
    config = pw.TextField()
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "tenant"


class Did(BaseModel):
    """A dialled number; each belongs to exactly one tenant."""

    number = pw.CharField(max_length=32, unique=True)
    tenant = pw.ForeignKeyField(TenantRow, backref="dids", on_delete="CASCADE")


class Doctor(BaseModel):
    """A practitioner; retired (``active=False``) instead of deleted so bookings stay valid."""

    tenant = pw.ForeignKeyField(TenantRow, backref="doctors", on_delete="CASCADE")
    slug = pw.CharField(max_length=64)
    name = pw.CharField(max_length=200)
    specialty = pw.CharField(max_length=200, default="")
    active = pw.BooleanField(default=True)

    class Meta:
        indexes = ((("tenant", "slug"), True),)


class Slot(BaseModel):
    """A bookable time of one doctor; ``state`` is open, booked, held or removed."""

    tenant = pw.ForeignKeyField(TenantRow, backref="slots", on_delete="CASCADE")
    doctor = pw.ForeignKeyField(Doctor, backref="slots", on_delete="CASCADE")
    start = pw.DateTimeField()
    end = pw.DateTimeField()
    local_minute = pw.SmallIntegerField(default=0)  # minutes after local midnight (part of day)
    state = pw.CharField(max_length=16, default="open")
    hold_until = pw.DateTimeField(null=True)
    hold_owner = pw.CharField(max_length=64, null=True)

    class Meta:
        indexes = (
            (("doctor", "start"), True),
            (("tenant", "state", "start"), False),
            (("hold_owner",), False),  # release_holds at every hang-up
        )


class Appointment(BaseModel):
    """A booking; cancelled ones are kept (status) for the audit trail."""

    tenant = pw.ForeignKeyField(TenantRow, backref="appointments", on_delete="CASCADE")
    slot = pw.ForeignKeyField(Slot, backref="appointments", on_delete="CASCADE")
    code = pw.CharField(max_length=16)
    patient_name = pw.CharField(max_length=200)
    phone = pw.CharField(max_length=32, null=True)
    email = pw.CharField(max_length=254, null=True)
    status = pw.CharField(max_length=16, default="booked")
    call_id = pw.CharField(max_length=64, null=True)
    visit_type = pw.CharField(max_length=64, null=True)
    slot_ids = pw.CharField(max_length=200, default="")  # every slot the visit occupies
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("tenant", "code"), True),
            (("tenant", "status"), False),
        )


class NotifyConsent(BaseModel):
    """What confirmations a patient agreed to for one appointment; no row means none.

    A table of its own rather than a column on ``appointment``: ``create_tables(safe=True)``
    adds it to an existing database with no ALTER TABLE (no migration step that could run
    half-way or race between workers), older code keeps working on the new schema, and
    the consent goes with the appointment (cascade).
    """

    appointment = pw.ForeignKeyField(Appointment, primary_key=True, on_delete="CASCADE")
    channels = pw.CharField(max_length=8)  # sms | email | both
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "notify_consent"


class OutboxMessage(BaseModel):
    """One confirmation to one address, and how delivering it went.

    ``status``: ``kept`` (the tenant sends nothing out: it stays here), ``queued`` (due at
    ``next_attempt_at``), ``sending`` (claimed by one sender with a conditional UPDATE
    until ``lease_until``), ``sent`` or ``failed``. ``last_error`` never holds the address
    or the text (provider error codes only).
    """

    tenant = pw.ForeignKeyField(TenantRow, backref="outbox", on_delete="CASCADE")
    code = pw.CharField(max_length=16)  # the appointment's confirmation code
    event = pw.CharField(max_length=16)  # booked | cancelled | rescheduled
    channel = pw.CharField(max_length=8)  # sms | email
    provider = pw.CharField(max_length=16)  # outbox | sns | ses | smtp (at enqueue)
    recipient = pw.CharField(max_length=254)
    subject = pw.CharField(max_length=300, default="")
    body = pw.TextField()
    status = pw.CharField(max_length=16, default="queued")
    attempts = pw.IntegerField(default=0)
    next_attempt_at = pw.DateTimeField(default=utcnow)
    lease_until = pw.DateTimeField(null=True)
    claimed_by = pw.CharField(max_length=128, null=True)
    provider_id = pw.CharField(max_length=200, default="")
    last_error = pw.CharField(max_length=200, default="")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    sent_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "outbox"
        indexes = (
            (("status", "next_attempt_at"), False),  # the sender's poll
            (("tenant", "created_at"), False),  # ivr outbox list --tenant
        )


class ApiToken(BaseModel):
    """A tenant's API bearer token, stored as a SHA-256 hash only."""

    tenant = pw.ForeignKeyField(TenantRow, backref="tokens", on_delete="CASCADE")
    token_hash = pw.CharField(max_length=64, unique=True)
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)


class CallRecord(BaseModel):
    """One call as the bot saw it: outcome, transcript turns, usage."""

    call_id = pw.CharField(max_length=64, unique=True)
    tenant_id = pw.CharField(max_length=64, null=True, index=True)
    did = pw.CharField(max_length=32, null=True)
    caller = pw.CharField(max_length=32, null=True)
    started_at = pw.DateTimeField(default=utcnow, index=True)
    ended_at = pw.DateTimeField(null=True)
    outcome = pw.CharField(max_length=32, null=True)
    confirmation = pw.CharField(max_length=16, null=True)
    transfer_to = pw.CharField(max_length=128, null=True)
    appointment = pw.TextField(null=True)  # JSON {"doctor", "start"} of what the call booked
    turns = pw.TextField(default="[]")
    usage = pw.TextField(default="{}")
    emergency = pw.BooleanField(default=False)


class CallbackTicket(BaseModel):
    """A message left by a caller whose transfer failed: the clinic calls back."""

    tenant = pw.ForeignKeyField(TenantRow, backref="callbacks", on_delete="CASCADE")
    call_id = pw.CharField(max_length=64, null=True)
    name = pw.CharField(max_length=200, default="")
    phone = pw.CharField(max_length=32, default="")
    reason = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="open")
    created_at = pw.DateTimeField(default=utcnow, index=True)
    done_at = pw.DateTimeField(null=True)


class AuditLog(BaseModel):
    """Append-only record of who read or changed an appointment (triggers forbid edits)."""

    at = pw.DateTimeField(default=utcnow, index=True)
    tenant_id = pw.CharField(max_length=64, index=True)
    actor = pw.CharField(max_length=128)
    action = pw.CharField(max_length=32)
    entity = pw.CharField(max_length=32)
    entity_id = pw.CharField(max_length=64, default="")
    detail = pw.TextField(default="{}")


class ReminderCall(BaseModel):
    """One reminder of one appointment (``hours_before`` it), and how calling it went.

    ``state``: ``due`` (to call at ``next_at``), ``calling`` (claimed by one process with
    a conditional UPDATE: nobody else may call it), ``done`` (``outcome`` says how it
    ended) or ``skipped`` (no number, do-not-call, appointment gone). The unique index
    makes planning idempotent: each reminder exists once, so it is called at most once.
    """

    tenant = pw.ForeignKeyField(TenantRow, backref="reminders", on_delete="CASCADE")
    appointment = pw.ForeignKeyField(Appointment, backref="reminders", on_delete="CASCADE")
    hours_before = pw.IntegerField()
    due_at = pw.DateTimeField()
    next_at = pw.DateTimeField(index=True)
    state = pw.CharField(max_length=16, default="due", index=True)
    attempts = pw.IntegerField(default=0)
    outcome = pw.CharField(max_length=32, null=True)
    claimed_by = pw.CharField(max_length=128, null=True)
    claimed_at = pw.DateTimeField(null=True)
    call_id = pw.CharField(max_length=64, null=True)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("appointment", "hours_before"), True),
            # the dashboard's reminders page: a tenant's newest first, without a sort
            (("tenant", "next_at"), False),
        )


class DoNotCall(BaseModel):
    """A number a clinic must never call again (the patient asked, or staff added it)."""

    tenant = pw.ForeignKeyField(TenantRow, backref="do_not_call", on_delete="CASCADE")
    phone = pw.CharField(max_length=32)  # digits only, as normalised at entry
    source = pw.CharField(max_length=32, default="cli")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "phone"), True),)


class ReminderPause(BaseModel):
    """A tenant whose reminder calls an operator paused (``ivr reminders pause``)."""

    tenant = pw.ForeignKeyField(TenantRow, primary_key=True, on_delete="CASCADE")
    paused_at = pw.DateTimeField(default=utcnow)


ALL_MODELS: tuple[type[BaseModel], ...] = (
    TenantRow, Did, Doctor, Slot, Appointment, ApiToken, CallRecord, CallbackTicket, AuditLog,
    NotifyConsent, OutboxMessage,
    ReminderCall, DoNotCall, ReminderPause,
)


# ---------------------------------------------------------------- dashboard (issue #29)
# Appended here so that ``init_db`` creates them with every other table (``create_tables``
# is idempotent: an existing database gains them on the next start, no migration step).


class WebUser(BaseModel):
    """A person who signs in to the dashboard (``/ui/``): a clinic's staff or an operator.

    ``role`` is ``staff`` (sees only ``tenant``) or ``operator`` (every tenant and the
    live page). Usernames are unique across tenants so that signing in needs no clinic
    field; the password is kept only as an Argon2id hash.
    """

    tenant = pw.ForeignKeyField(TenantRow, backref="web_users", on_delete="CASCADE")
    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    role = pw.CharField(max_length=16, default="staff")
    created_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "web_user"


class WebSession(BaseModel):
    """A signed-in browser; the cookie holds a random token, the table only its SHA-256."""

    token_hash = pw.CharField(max_length=64, unique=True)
    user = pw.ForeignKeyField(WebUser, backref="sessions", on_delete="CASCADE")
    csrf = pw.CharField(max_length=64)  # the token every form of this session carries
    created_at = pw.DateTimeField(default=utcnow)
    seen_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "web_session"


class WebLoginFailure(BaseModel):
    """One failed sign-in, keyed by a hash of the username or the client address.

    Shared by every worker (the lock-out must not multiply with ``--workers``); hashed so
    that the table holds no address; rows older than the lock-out window are deleted.
    """

    key = pw.CharField(max_length=64)
    at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "web_login_failure"
        indexes = ((("key", "at"), False),)


class Attendance(BaseModel):
    """Whether the patient of an appointment arrived or did not show (front desk, audited)."""

    appointment = pw.ForeignKeyField(Appointment, primary_key=True, on_delete="CASCADE")
    tenant = pw.ForeignKeyField(TenantRow, on_delete="CASCADE")
    state = pw.CharField(max_length=16)  # arrived | no_show
    marked_by = pw.CharField(max_length=128)
    marked_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "appointment_attendance"


__all__ += ["Attendance", "WebLoginFailure", "WebSession", "WebUser"]
ALL_MODELS = (*ALL_MODELS, WebUser, WebSession, WebLoginFailure, Attendance)
