"""Masking of personal data in every log record, at every level.

Code is written not to log personal data, but a caller's words end up in
exception messages and debug traces; this filter is the safety net. It is
installed on the root logger's handlers by the ``ivr`` entry point, and:

- masks phone numbers written as digits or said as words ("five five five, two two
  two, …": how a transcript holds them) and e-mail addresses;
- keeps the SQL of peewee's debug lines but drops their parameters, which carry patients'
  names, numbers and whole transcripts (``ivr -vv`` must be safe to run on a live box).
"""

from __future__ import annotations

import logging
import re

__all__ = ["PiiFilter", "install", "mask_text"]

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# 7+ digits, possibly with +, spaces, dots, dashes or brackets between them.
_PHONE = re.compile(r"(?<![\w-])\+?\(?(?:\d[\s().-]{0,2}){6,14}\d(?![\w-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGIT_WORDS = {"zero": 1, "oh": 1, "o": 1, "one": 1, "two": 1, "three": 1, "four": 1,
                "five": 1, "six": 1, "seven": 1, "eight": 1, "nine": 1, "double": 0,
                "triple": 0}
_WORD_DIGIT = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3",
               "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_SPOKEN_TOKEN = "(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple|\\d+)"
# a run of digit words (and digits), separated by spaces, commas, dots or dashes
_SPOKEN = re.compile(rf"\b{_SPOKEN_TOKEN}(?:[\s,.-]+{_SPOKEN_TOKEN})+\b", re.IGNORECASE)


def _mask_phone(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    if len(digits) < 7 or _DATE.fullmatch(m.group(0).strip()):
        return m.group(0)
    return "…" + digits[-2:]


def _spoken_digits(run: str) -> str:
    """The digits a spoken run stands for ("double five one" → "551")."""
    out: list[str] = []
    repeat = 1
    for word in re.split(r"[\s,.-]+", run.lower()):
        if word in ("double", "triple"):
            repeat = 2 if word == "double" else 3
            continue
        digit = word if word.isdigit() else _WORD_DIGIT.get(word, "")
        out.append(digit * repeat)
        repeat = 1
    return "".join(out)


def _mask_spoken(m: re.Match[str]) -> str:
    if not re.search(r"[A-Za-z]", m.group(0)):
        return m.group(0)  # digits only: _PHONE's call (it knows dates)
    digits = _spoken_digits(m.group(0))
    return m.group(0) if len(digits) < 7 else "…" + digits[-2:]


def mask_text(text: str) -> str:
    """Mask phones and e-mails in ``text``.

    ``john.smith@gmail.com`` → ``j…@gmail.com``; ``+1 555 010 1234`` → ``…34``;
    ``five five five, two two two, one two three four`` → ``…34``.
    """
    text = _EMAIL.sub(lambda m: f"{m.group(1)}…@{m.group(2)}", text)
    text = _PHONE.sub(_mask_phone, text)
    return _SPOKEN.sub(_mask_spoken, text)


class PiiFilter(logging.Filter):
    """Rewrites a record's message (args merged) with phones and e-mails masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "peewee" and isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            count = len(params) if isinstance(params, list | tuple) else 0
            record.msg, record.args = f"{sql} -- {count} parameter(s) not logged", None
            return True
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
