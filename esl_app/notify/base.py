"""The notifier interface: one message in, one delivery result out.

A provider never raises for a delivery problem: it answers a :class:`DeliveryResult`
saying whether retrying may help (a throttled API, a mail server down) or not (an
address the provider refuses). Errors are short provider codes, never the address or
the text, because they are stored and shown in ``ivr outbox list``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["DeliveryResult", "Message", "Notifier"]


@dataclass(frozen=True)
class Message:
    """One confirmation to one recipient (an E.164-ish number or an e-mail address)."""

    id: int
    tenant_id: str
    channel: str  # sms | email
    recipient: str
    subject: str
    body: str


@dataclass(frozen=True)
class DeliveryResult:
    """What became of one attempt."""

    ok: bool
    provider_id: str = ""  # the provider's message id, when sent
    error: str = ""  # short, without personal data ("sns: Throttling", "smtp: 550")
    permanent: bool = False  # retrying cannot help (the address is refused)


class Notifier(Protocol):
    """Sends one message; blocking network I/O is fine (cooperative under gevent)."""

    name: str
    channel: str

    def send(self, message: Message) -> DeliveryResult:
        """Deliver ``message``; never raises for a delivery failure."""
        ...
