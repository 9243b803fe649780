"""Dashboard sign-in: users, Argon2id passwords, sessions, CSRF tokens and lock-out.

Why each piece is the way it is:

- Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 low-memory profile): memory-hard,
  so a stolen table is expensive to crack. A hash costs ~50 ms of CPU and 64 MiB, so it
  runs in a real thread (:func:`esl_app.support.bridge.run_in_thread`; cffi releases the GIL) and
  at most :data:`HASH_SLOTS` at once per process: a burst of sign-ins neither stalls the
  calls on the worker's event loop nor its memory.
- Sessions live in the database (``web_session``), the cookie holds only a random token and
  the table only its SHA-256: a session is shared by every worker, revoked by deleting the
  row (removing a user signs them out) and useless to whoever reads the table.
- Lock-out counts failures in the database for the same reason (``--workers`` must not
  multiply the allowance): :data:`LOCK_FAILURES` failures within :data:`LOCK_WINDOW`, per
  username and per client address, refuse further attempts, even with the right password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from esl_app.db import database, write_txn
from esl_app.db.models import TenantRow, WebLoginFailure, WebSession, WebUser, utcnow
from esl_app.scheduling.errors import InvalidRequest, NotAllowed, NotFound

__all__ = [
    "LOCK_FAILURES",
    "LOCK_WINDOW",
    "ROLES",
    "LockedOut",
    "Session",
    "User",
    "add_user",
    "csrf_matches",
    "hash_password",
    "list_users",
    "new_token",
    "remove_user",
    "session_for",
    "set_hasher",
    "sign_in",
    "sign_out",
]

ROLES = ("staff", "operator")
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # Argon2 takes any length; a megabyte "password" is only a CPU sink
LOCK_FAILURES = 5
LOCK_WINDOW = timedelta(minutes=15)
SESSION_IDLE = timedelta(hours=2)
SESSION_MAX = timedelta(hours=12)  # a clinic's working day; then sign in again
SEEN_EVERY = timedelta(seconds=60)  # idle time is tracked to the minute: no write per page
HASH_SLOTS = 2

_hasher: Any = None
_dummy_hash: str | None = None
_slots: Any = None


def set_hasher(hasher: Any) -> None:
    """Use another ``argon2.PasswordHasher`` (tests: cheap parameters). None: the default."""
    global _hasher, _dummy_hash
    _hasher, _dummy_hash = hasher, None


def _get_hasher() -> Any:
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher()  # RFC 9106 low-memory: t=3, m=64 MiB, p=4
    return _hasher


def _in_slot(fn: Any, *args: Any) -> Any:
    """Run a hash in a real thread, at most HASH_SLOTS at once in this process."""
    global _slots
    from gevent.lock import BoundedSemaphore

    from esl_app.support.bridge import run_in_thread

    if _slots is None:
        _slots = BoundedSemaphore(HASH_SLOTS)
    with _slots:
        return run_in_thread(fn, *args, pool="web-auth")


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (encoded with its parameters and salt)."""
    return str(_in_slot(_get_hasher().hash, password))


def _verify(stored: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    def check() -> bool:
        try:
            return bool(_get_hasher().verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

    return bool(_in_slot(check))


def _dummy() -> str:
    """A hash to verify against for unknown usernames: the answer takes as long."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A random token for a cookie or a form (256 bits)."""
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; an empty expectation never matches."""
    if not expected or not given or len(given) > 256:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


# ---------------------------------------------------------------- users


@dataclass(frozen=True)
class User:
    """A signed-in person as the pages see them."""

    id: int
    username: str
    tenant_id: str
    role: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def actor(self) -> str:
        """How the audit log names them (a username, never a patient)."""
        return f"web:{self.username}"


@dataclass(frozen=True)
class Session:
    """A live session: who, and the CSRF token its forms must carry."""

    user: User
    csrf: str
    token_hash: str


def normalize_username(username: str) -> str:
    """Lower case, trimmed; refused unless it fits :data:`USERNAME`."""
    name = (username or "").strip().lower()
    if not USERNAME.match(name):
        raise InvalidRequest("a username is 2-64 characters: a-z, 0-9 and . _ @ - "
                             "(starting with a letter or digit)")
    return name


def check_password(password: str) -> None:
    """The password policy: long enough, not absurdly long, no control characters."""
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidRequest(f"the password must have at most {MAX_PASSWORD} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise InvalidRequest("the password must not contain control characters")


def add_user(tenant_id: str, username: str, password: str, *, operator: bool = False) -> User:
    """Create a user of ``tenant_id``; refuses a taken username or a weak password."""
    name = normalize_username(username)
    check_password(password)
    with database().connection_context():
        if TenantRow.get_or_none(TenantRow.id == tenant_id) is None:
            raise NotFound(f"unknown tenant '{tenant_id}'")
    digest = hash_password(password)  # outside the write lock: it takes a while
    role = "operator" if operator else "staff"
    with write_txn():
        if WebUser.select().where(WebUser.username == name).exists():
            raise NotAllowed(f"user '{name}' already exists")
        row = WebUser.create(tenant=tenant_id, username=name, password_hash=digest, role=role)
    return User(row.id, name, tenant_id, role)


def remove_user(tenant_id: str, username: str) -> None:
    """Delete a user of ``tenant_id``; their sessions end with them (cascade)."""
    name = (username or "").strip().lower()
    with write_txn():
        row = WebUser.get_or_none((WebUser.username == name) & (WebUser.tenant == tenant_id))
        if row is None:
            raise NotFound(f"no user '{name[:64]}' at tenant '{tenant_id}'")
        WebSession.delete().where(WebSession.user == row.id).execute()
        row.delete_instance()


def list_users(tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's users (never their hashes), by name."""
    with database().connection_context():
        return [{"username": u.username, "role": u.role,
                 "created": u.created_at.replace(microsecond=0).isoformat() + "Z"}
                for u in WebUser.select().where(WebUser.tenant == tenant_id)
                .order_by(WebUser.username)]


# ---------------------------------------------------------------- sign-in and sessions


class LockedOut(Exception):
    """Too many recent failures for this username or address."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after // 60 + 1} min")
        self.retry_after = retry_after


def _now(now: datetime | None) -> datetime:
    return now if now is not None else utcnow()


def _locked_for(keys: list[str], now: datetime) -> int:
    """Seconds until every key is under the limit again (0: not locked)."""
    since = now - LOCK_WINDOW
    wait = 0
    with database().connection_context():
        for key in keys:
            recent = [r.at for r in WebLoginFailure.select(WebLoginFailure.at)
                      .where((WebLoginFailure.key == key) & (WebLoginFailure.at > since))
                      .order_by(WebLoginFailure.at.desc()).limit(LOCK_FAILURES)]
            if len(recent) >= LOCK_FAILURES:
                free_at = recent[-1] + LOCK_WINDOW
                wait = max(wait, int((free_at - now).total_seconds()) + 1)
    return wait


def sign_in(username: str, password: str, address: str, *, now: datetime | None = None
            ) -> tuple[str, Session] | None:
    """A new session (cookie token, session) for the right password, else None.

    Raises :class:`LockedOut` before looking at the password once the username or the
    address has :data:`LOCK_FAILURES` failures within :data:`LOCK_WINDOW`.
    """
    at = _now(now)
    name = (username or "").strip().lower()[:64]
    user_key, addr_key = _sha("user:" + name), _sha("addr:" + (address or "-"))
    wait = _locked_for([user_key, addr_key], at)
    if wait:
        raise LockedOut(wait)
    with database().connection_context():
        row = WebUser.get_or_none(WebUser.username == name) if USERNAME.match(name) else None
    ok = (bool(password) and len(password) <= MAX_PASSWORD
          and _verify(row.password_hash if row else _dummy(), password) and row is not None)
    if not ok or row is None:
        with write_txn():
            WebLoginFailure.insert_many([{"key": user_key, "at": at},
                                         {"key": addr_key, "at": at}]).execute()
            WebLoginFailure.delete().where(WebLoginFailure.at < at - LOCK_WINDOW).execute()
        return None
    rehash = None
    try:
        if _get_hasher().check_needs_rehash(row.password_hash):
            rehash = hash_password(password)
    except Exception:  # noqa: BLE001 - an unreadable hash still verified: keep it
        rehash = None
    token, csrf = new_token(), new_token()
    with write_txn():
        WebLoginFailure.delete().where(WebLoginFailure.key == user_key).execute()
        WebSession.delete().where((WebSession.created_at < at - SESSION_MAX)
                                  | (WebSession.seen_at < at - SESSION_IDLE)).execute()
        if rehash:
            WebUser.update(password_hash=rehash).where(WebUser.id == row.id).execute()
        WebSession.create(token_hash=_sha(token), user=row.id, csrf=csrf, created_at=at,
                          seen_at=at)
    user = User(row.id, row.username, row.tenant_id, row.role)
    return token, Session(user, csrf, _sha(token))


def session_for(token: str | None, *, now: datetime | None = None) -> Session | None:
    """The live session a cookie token names, or None (unknown, idle too long, too old)."""
    if not token or len(token) > 128:
        return None
    at = _now(now)
    digest = _sha(token)
    with database().connection_context():
        found = list(WebSession.select(WebSession, WebUser).join(WebUser)
                     .where(WebSession.token_hash == digest).limit(1))
    if not found:
        return None
    s = found[0]
    if s.created_at < at - SESSION_MAX or s.seen_at < at - SESSION_IDLE:
        with write_txn():
            WebSession.delete().where(WebSession.id == s.id).execute()
        return None
    if at - s.seen_at > SEEN_EVERY:
        with write_txn():
            WebSession.update(seen_at=at).where(WebSession.id == s.id).execute()
    u = s.user
    return Session(User(u.id, u.username, u.tenant_id, u.role), s.csrf, digest)


def sign_out(token_hash: str) -> None:
    """End a session (its cookie is worthless from now on)."""
    with write_txn():
        WebSession.delete().where(WebSession.token_hash == token_hash).execute()
