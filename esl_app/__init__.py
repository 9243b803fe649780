"""ivr: a multi-tenant AI voice appointment bot for clinics, driven by FreeSWITCH."""

__all__ = ["__version__"]
__version__ = "0.1.0"
