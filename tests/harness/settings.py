"""The settings every ccmon command reads (``streams.settings``), from flags and environment as
a command's parser gives them (:func:`parse`), or the ``ConfigError`` they fail with (:func:`error`)."""

from __future__ import annotations

import argparse

import pytest

from kpi_core.errors import ConfigError
from streams import settings as s


def parse(argv: list[str], env: dict[str, str] | None = None) -> s.Settings:
    parser = argparse.ArgumentParser()
    s.add_arguments(parser, tuple(s.SOURCES))
    return s.from_args(parser.parse_args(argv), env or {})


def error(argv: list[str], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(argv, env)
    return info.value
