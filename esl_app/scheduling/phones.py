"""The one form phone numbers are compared in (reminders, do-not-call, the emulator's callees).

Standard library only, so the offline kit's FreeSWITCH emulator can use it without
pulling the database models in.
"""

from __future__ import annotations

import re

__all__ = ["phone_key"]


def phone_key(number: str | None) -> str:
    """Digits only, and the 10 digits of a North-American 1+10 number.

    ``+1 (555) 010-2001``, ``15550102001`` and ``555.010.2001`` are all ``5550102001``.
    """
    digits = re.sub(r"[^0-9]", "", number or "")
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits
