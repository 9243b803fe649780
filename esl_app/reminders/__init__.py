"""Outbound reminder calls: plan them, claim each once, dial it, and talk to the patient.

- :mod:`esl_app.reminders.store`: the reminder rows (plan, claim, finish), the
  do-not-call list and pauses — every rule that keeps a patient from being called twice
  or against their wish lives in the database's conditional updates here.
- :mod:`esl_app.reminders.dialer`: ``originate`` through FreeSWITCH's inbound Event
  Socket, the call sent to the bot's outbound socket with the reminder's id.
- :mod:`esl_app.reminders.scheduler`: the loop inside ``ivr serve`` (and
  ``ivr reminders run-once``).
- :mod:`esl_app.reminders.agent`: the conversation once the patient answers.
"""
