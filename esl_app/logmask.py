"""Masking of phone numbers and e-mail addresses in every log record, at every level.

Code is written not to log personal data, but a caller's words end up in
exception messages and debug traces; this filter is the safety net. It is
installed on the root logger's handlers by the ``ivr`` entry point.
"""

from __future__ import annotations

import logging
import re

__all__ = ["PiiFilter", "install", "mask_text"]

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# 7+ digits, possibly with +, spaces, dots, dashes or brackets between them.
_PHONE = re.compile(r"(?<![\w-])\+?\(?(?:\d[\s().-]{0,2}){6,14}\d(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _mask_phone(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    if len(digits) < 7 or _DATE.fullmatch(m.group(0).strip()):
        return m.group(0)
    return "…" + digits[-2:]


def mask_text(text: str) -> str:
    """``john.smith@gmail.com`` → ``j…@gmail.com``; ``+1 555 010 1234`` → ``…34``."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}…@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone, text)


class PiiFilter(logging.Filter):
    """Rewrites a record's message (args merged) with phones and e-mails masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is not ours to fix here
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (default: root), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, PiiFilter) for f in handler.filters):
            handler.addFilter(PiiFilter())
