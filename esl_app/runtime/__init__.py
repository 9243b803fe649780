"""The serving process behind ``ivr serve``.

Workers, the one place that wires providers into calls, hub health, file
descriptors, the thread-to-hub bridge and log privacy.
"""
