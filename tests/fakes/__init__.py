"""Shared test fakes and fixtures: scripted agents and call services (telephony), an
emulated switch (emulator), the HTTP API under test (api), databases on SQLite and
Postgres (scheduling), and reference-cycle checks (memory).
"""
