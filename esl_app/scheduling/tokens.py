"""Per-tenant API bearer tokens: issued once, stored as SHA-256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from esl_app.db import database, write_txn
from esl_app.db.models import ApiToken, TenantRow, utcnow
from esl_app.scheduling.errors import NotFound

__all__ = ["hash_token", "issue_token", "revoke_tokens", "verify_token"]

_PREFIX = "ivr_"


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(tenant_id: str) -> str:
    """A new token for ``tenant_id``; the plaintext is returned once and never stored."""
    token = _PREFIX + tenant_id + "_" + secrets.token_urlsafe(32)
    with write_txn():
        if TenantRow.get_or_none(TenantRow.id == tenant_id) is None:
            raise NotFound(f"unknown tenant '{tenant_id}'")
        ApiToken.create(tenant=tenant_id, token_hash=hash_token(token))
    return token


def verify_token(token: str | None) -> str | None:
    """The tenant id a valid, unrevoked token belongs to, else None."""
    if not token or len(token) > 512:
        return None
    digest = hash_token(token)
    with database().connection_context():
        row = ApiToken.get_or_none((ApiToken.token_hash == digest)
                                   & (ApiToken.revoked_at.is_null(True)))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row.tenant_id


def revoke_tokens(tenant_id: str) -> int:
    """Revoke every token of a tenant; returns how many were live."""
    with write_txn():
        return (ApiToken.update(revoked_at=utcnow())
                .where((ApiToken.tenant == tenant_id) & (ApiToken.revoked_at.is_null(True)))
                .execute())
