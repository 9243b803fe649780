"""Confirmations by SMS and e-mail after a booking, cancellation or move.

The patient's consent is kept per appointment (``notify: none|sms|email|both``, set at
booking). A change enqueues its messages in the ``outbox`` table inside the booking's own
transaction (:mod:`esl_app.notify.outbox`), so a booking and its confirmation commit
together and sending never delays a caller. Worker 0 of ``ivr serve`` delivers them from
a background greenlet (:mod:`esl_app.notify.sender`) with retries and exponential backoff;
each message is claimed with a conditional UPDATE, so two senders never send one twice.

Providers (:mod:`esl_app.notify.base`'s ``Notifier``): Amazon SNS (SMS), Amazon SES and
SMTP (e-mail); the default ``outbox`` keeps messages in the table, nothing leaves the
machine. Nothing here imports a provider's SDK until a tenant uses it.
"""
