"""Confirmation codes that are easy to say and hear on the phone.

``K7M-4Q2``: six characters from an alphabet without look-alikes or
sound-alikes (no 0/O, 1/I/L), drawn from ``secrets`` so they cannot be
guessed in sequence; uniqueness per tenant is enforced by the database.
"""

from __future__ import annotations

import re
import secrets

__all__ = ["ALPHABET", "CODE_RE", "new_code", "normalize_code"]

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_RE = re.compile(rf"^[{ALPHABET}]{{3}}-[{ALPHABET}]{{3}}$")


def new_code() -> str:
    """A fresh random code (about 30 bits)."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(6))
    return f"{chars[:3]}-{chars[3:]}"


def normalize_code(text: str) -> str | None:
    """``k7m 4q2`` / ``K7M4Q2`` / ``k7m-4q2`` → ``K7M-4Q2``; None if it cannot be a code."""
    chars = re.sub(r"[^0-9A-Za-z]", "", text or "").upper()
    if len(chars) != 6 or any(c not in ALPHABET for c in chars):
        return None
    return f"{chars[:3]}-{chars[3:]}"
