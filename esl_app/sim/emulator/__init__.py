"""FreeSWITCH emulator: speaks the real ESL wire protocol (outbound and inbound modes).

Used by tests, ``ivr simulate``, ``ivr demo`` and the load generator in place of a real
FreeSWITCH. Import the pieces from their modules (``wire``, ``core``, ``outbound``,
``inbound``); nothing here runs at import time.
"""
