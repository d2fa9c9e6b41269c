"""Reading the files ccmon is given: the configuration (``--config``) and a source's mapping
(``--mapping``). The parsing is kpi_core's (:func:`kpi_core.config.parse_toml`,
:func:`kpi_core.config.config_from_toml`), which takes bytes and does no I/O; here a file that
cannot be read gets its ConfigError naming the flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kpi_core.config import Config, config_from_toml, parse_toml
from kpi_core.errors import ConfigError


def load_config(path: str | Path | None) -> Config:
    """The configuration in the TOML file at ``path`` (``None`` gives the defaults). Raises
    ConfigError naming the field, or naming the file (field ``--config``) when it cannot be read
    or is not UTF-8 TOML."""
    if path is None:
        return Config()
    return config_from_toml(read_bytes(path, "--config"), str(path))


def read_toml(path: str | Path, field: str, what: str = "a TOML file") -> dict[str, Any]:
    """The TOML document in ``path`` (the configuration, a source's mapping). Raises ConfigError
    naming ``field`` when it cannot be read or is not UTF-8 TOML (``what``: the kind of file)."""
    return parse_toml(read_bytes(path, field, what), field, str(path), what)


def read_bytes(path: str | Path, field: str, what: str = "a TOML file") -> bytes:
    """The bytes of the file at ``path``; ConfigError naming ``field`` when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ConfigError(field, f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(field, f"{path} is a directory, not {what}") from None
    except OSError as exc:  # permission denied, an I/O error...
        raise ConfigError(field, f"cannot read {path}: {exc.strerror or exc}") from None
