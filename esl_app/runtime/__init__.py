"""The serving process behind ``ivr serve``.

Workers, the one place that wires providers into calls (wiring.py), hub health
and file descriptors.
"""
