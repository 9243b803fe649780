"""Scheduling core: slots, bookings, codes, provisioning — no I/O framework, no gevent."""
