"""ccmon's KPI engine: pure domain logic, no I/O.

Imports nothing but the standard library and numpy, so the same code runs inside the Faust
worker (state in Redis), the embedded demo (state in memory) and ``ccmon replay``.
"""

from kpi_core.errors import CcmonError, ConfigError, InvalidEventError

__all__ = ["CcmonError", "ConfigError", "InvalidEventError"]
