"""Free text at the boundary: what a patient's name or a message may hold.

Every text field stored from outside (the API, the Lambdas through the API, the agent's
tools, message taking) passes through :func:`clean_text`, so both databases store the
same thing: Postgres refuses NUL where SQLite keeps it, and an ESC or a bidi override
stored today is an operator's garbled terminal or a spoofed name tomorrow.
"""

from __future__ import annotations

import re
import unicodedata

from esl_app.scheduling.errors import InvalidRequest

__all__ = ["BadText", "clean_text", "field_text", "is_email", "printable"]

# joiners shape scripts (Indic, Arabic) and emoji: legitimate inside a name
_KEEP_FORMAT = {"\u200c", "\u200d"}
_LINE_BREAKS = {"\t", "\n", "\r", "\v", "\f", "\x85", "\u2028", "\u2029"}


class BadText(InvalidRequest):
    """Text refused at the boundary.

    ``reason`` comes without the field name, for APIs that phrase errors as
    ``field: reason``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


def clean_text(value: object, field: str, *, max_len: int, required: bool = False) -> str:
    """NFC text on one line, or :class:`BadText` naming ``field``.

    Line breaks and tabs become spaces and runs of spaces collapse; invisible format
    characters (bidi overrides, zero-width spaces, BOM) are removed; other control
    characters (NUL, ESC, DEL, C1) and lone surrogates are refused.
    """
    text = "" if value is None else str(value)
    out: list[str] = []
    for ch in text:
        if ch in _LINE_BREAKS:
            out.append(" ")
            continue
        category = unicodedata.category(ch)
        if category == "Cs":
            raise BadText(field, "is not valid text")
        if category == "Cc":
            raise BadText(field, "contains control characters")
        if category == "Cf" and ch not in _KEEP_FORMAT:
            continue
        out.append(ch)
    cleaned = " ".join(unicodedata.normalize("NFC", "".join(out)).split())
    if required and not cleaned:
        raise BadText(field, "is required")
    if len(cleaned) > max_len:
        raise BadText(field, f"is longer than {max_len} characters")
    return cleaned


def field_text(value: object, field: str, *, max_len: int, required: bool = False,
               empty: str = "required") -> str:
    """One text field of a request (the API's JSON body, the dashboard's forms).

    :func:`clean_text`, then the field's own limits; refusals are :class:`BadText`
    naming ``field``, with a ``reason`` the callers show as ``field: reason``:
    clean_text's ("contains control characters"), ``empty`` when a required field is
    blank, ``at most N characters``.
    """
    text = clean_text(value, field, max_len=1 << 20)
    if required and not text:
        raise BadText(field, empty)
    if len(text) > max_len:
        raise BadText(field, f"at most {max_len} characters")
    return text


# one @, no spaces nor the punctuation that splits a mail header's address list, a dotted
# domain ending in letters; the lengths of RFC 5321 (local part 64, address 254)
_EMAIL = re.compile(r'[^@\s<>,;"]{1,64}@[^@\s<>,;"]{1,185}\.[A-Za-z]{2,}')


def is_email(text: str) -> bool:
    """Whether ``text`` (already cleaned) is an e-mail address mail can be sent to.

    The one check for a patient's address (API, dashboard, agent tools through
    ``service.book``) and a clinic's ``notifications.from_email``.
    """
    return len(text) <= 254 and _EMAIL.fullmatch(text) is not None


def printable(value: object) -> str:
    """``value`` safe for a terminal: control and format characters shown escaped.

    For what the CLI prints of stored text (a row stored before :func:`clean_text`
    existed must not clear the operator's screen).
    """
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else
        (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text)
