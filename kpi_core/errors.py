"""One root error for ccmon, with precise subclasses."""

from __future__ import annotations


class CcmonError(Exception):
    """Root of every error ccmon raises on purpose."""


class ConfigError(CcmonError, ValueError):
    """A configuration value is wrong. ``field`` names it, dotted (``tenants.acme.timezone``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config field {field!r}: {message}")
        self.field = field
        self.message = message


class InvalidEventError(CcmonError, ValueError):
    """An input event was rejected.

    ``reason`` is machine-readable (``missing_field:call_id``, ``bad_timestamp``...) and becomes
    the ``reason`` label of ``ccmon_events_rejected_total`` and the DLQ header; ``message`` is
    for humans and may echo (truncated) input.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
