"""Declared mappings for tabular sources (CSV/TSV, optionally inside a zip): the parts every
mapping file shares, read from TOML and validated field by field, each error naming the
dotted field and the file (``config field 'itsm.toml:time.format': ...``).

Sections shared by every mapping::

    [file]      delimiter (one character or "tab", default ","), encoding (default utf-8),
                member (the file inside a .zip; default: its only file), id_prefix
    [time]      timezone (IANA, default UTC) and format (strptime; "epoch"; "iso")
    [none]      per source column: the values that mean "no value" ({"q_start" = ["0:00:00"]})
    [defaults]  values used when a column has no value (source-specific keys)

A source adds its own sections (``[columns]``, ``[states]``...) and reads them with the same
helpers, so every mapping reports errors the same way.
"""

from __future__ import annotations

import csv
import io
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.errors import ConfigError
from streams.sources.common import RowProblem


@dataclass(frozen=True)
class Spec:
    """A decoded mapping document and where it came from, with validating accessors."""

    raw: Mapping[str, Any]
    path: str

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{where}", message)

    def table(self, name: str, *, required: bool = False) -> Mapping[str, Any]:
        if name not in self.raw:
            if required:
                raise self.error(name, "is required")
            return {}
        value = self.raw[name]
        if not isinstance(value, dict):
            raise self.error(name, f"must be a table, got {value!r}")
        return value

    def only(self, allowed: set[str]) -> None:
        """The document has no section outside ``allowed``."""
        for key in self.raw:
            if key not in allowed:
                raise self.error(key, f"unknown section (expected one of: {', '.join(sorted(allowed))})")

    def fields(self, section: str, allowed: set[str]) -> Mapping[str, Any]:
        """``[section]`` holding only ``allowed`` keys."""
        table = self.table(section)
        for key in table:
            if key not in allowed:
                raise self.error(f"{section}.{key}", f"unknown field (expected one of: {', '.join(sorted(allowed))})")
        return table

    def string(self, section: str, key: str, default: str | None = None) -> str | None:
        table = self.table(section)
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.error(f"{section}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def columns(self, section: str, key: str, *, required: bool = False) -> tuple[str, ...]:
        """A column name, or a list of them (first with a value wins, or parts of an id)."""
        table = self.table(section)
        if key not in table:
            if required:
                raise self.error(f"{section}.{key}", "is required")
            return ()
        value = table[key]
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise self.error(f"{section}.{key}", f"must be a column name or a list of column names, got {value!r}")
        return tuple(names)


def load_spec(path: str | Path) -> Spec:
    """Read a mapping file; a missing or malformed file names ``--mapping``."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--mapping", f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError("--mapping", f"{path} is a directory, not a mapping file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--mapping", f"{path} is not valid TOML: {exc}") from None
    return Spec(raw, Path(path).name)


# -- [file] ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileFormat:
    delimiter: str = ","
    encoding: str = "utf-8"
    member: str | None = None
    id_prefix: str = "src"


def file_format(spec: Spec, default_prefix: str) -> FileFormat:
    table = spec.fields("file", {"delimiter", "encoding", "member", "id_prefix"})
    delimiter = table.get("delimiter", ",")
    if delimiter == "tab":
        delimiter = "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise spec.error("file.delimiter", f"must be one character (or \"tab\"), got {delimiter!r}")
    encoding = spec.string("file", "encoding", "utf-8")
    assert encoding is not None
    try:
        "".encode(encoding)
    except LookupError:
        raise spec.error("file.encoding", f"unknown encoding {encoding!r}") from None
    prefix = spec.string("file", "id_prefix", default_prefix)
    assert prefix is not None
    if any(c.isspace() for c in prefix):
        raise spec.error("file.id_prefix", f"must not contain spaces, got {prefix!r}")
    return FileFormat(delimiter, encoding, spec.string("file", "member"), prefix)


@dataclass
class Table:
    """An open table: its header and its rows with their line numbers."""

    where: str  # the path (and zip member) for messages
    header: list[str]
    rows: Iterator[tuple[int, list[str] | RowProblem]]  # a row the CSV reader rejects is a RowProblem


def open_table(path: str, fmt: FileFormat, stack: Any) -> Table:
    """Open ``path`` (a zip is read directly: ``fmt.member`` or its only file). ``stack`` is a
    ``contextlib.ExitStack`` that closes what is opened. Undecodable bytes become U+FFFD
    (the row is then reported where a value cannot be read), never an exception."""
    if not Path(path).is_file():
        raise ConfigError("FILE", f"no such file: {path}")
    where = path
    if zipfile.is_zipfile(path):
        archive = stack.enter_context(zipfile.ZipFile(path))
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        member = fmt.member
        if member is None:
            if len(names) != 1:
                raise ConfigError("file.member", f"{path} holds {len(names)} files ({', '.join(names[:10])}): "
                                  "name the one to read in the mapping's [file] member")  # fmt: skip
            member = names[0]
        elif member not in names:
            raise ConfigError("file.member", f"{path} has no file {member!r} (it holds {', '.join(names[:10])})")
        binary = stack.enter_context(archive.open(member))
        handle = stack.enter_context(io.TextIOWrapper(binary, encoding=fmt.encoding, errors="replace", newline=""))
        where = f"{path}:{member}"
    else:
        handle = stack.enter_context(open(path, encoding=fmt.encoding, errors="replace", newline=""))  # noqa: SIM115
    reader = csv.reader(handle, delimiter=fmt.delimiter)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ConfigError("FILE", f"{where}: the header line cannot be read: {exc}") from None
    if header is None:
        header = []
    header = [h.strip().lstrip("\ufeff") for h in header]

    def rows() -> Iterator[tuple[int, list[str] | RowProblem]]:
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over the size limit, a NUL byte...
                yield reader.line_num, RowProblem(f"unreadable_row: {exc}")
                continue
            if values and any(v.strip() for v in values):
                yield reader.line_num, values

    return Table(where, header, rows())


def column_index(spec: Spec, header: list[str], role: str, names: tuple[str, ...], where: str) -> tuple[int, ...]:
    """Header positions of ``names``; a name the header lacks stops the import, naming the role."""
    found = []
    for name in names:
        if name not in header:
            shown = ", ".join(header[:40])
            raise spec.error(f"columns.{role}", f"no column {name!r} in the header of {where} ({shown})")
        found.append(header.index(name))
    return tuple(found)


def none_values(spec: Spec) -> dict[str, frozenset[str]]:
    """``[none]``: source column -> values that mean "no value" (the empty string always does)."""
    out: dict[str, frozenset[str]] = {}
    for column, values in spec.table("none").items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise spec.error(f"none.{column}", f"must be a list of strings, got {values!r}")
        out[column] = frozenset(values)
    return out


# -- [time] ---------------------------------------------------------------------------------
@dataclass
class Clock:
    """Parses a source's date-times (wall clock in ``zone``) into aware datetimes."""

    format: str
    zone: ZoneInfo
    timezone: str
    _cache: dict[str, datetime] = field(default_factory=dict, repr=False)

    def parse(self, text: str, column: str) -> datetime:
        """An aware datetime, or RowProblem ``bad_timestamp`` naming the column."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        try:
            if self.format == "epoch":
                value = datetime.fromtimestamp(float(text), UTC).astimezone(self.zone)
            elif self.format == "iso":
                value = datetime.fromisoformat(text)
                value = value.replace(tzinfo=self.zone) if value.tzinfo is None else value
            else:
                value = datetime.strptime(text, self.format).replace(tzinfo=self.zone)
        except (ValueError, OverflowError, OSError):
            raise RowProblem(f"bad_timestamp: {column} {text[:40]!r} does not match {self.format!r}") from None
        if not 1970 <= value.year < 2100:
            raise RowProblem(f"bad_timestamp: {column} {text[:40]!r} is outside 1970..2099")
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[text] = value
        return value


def clock(spec: Spec, *, default_format: str = "iso") -> Clock:
    table = spec.fields("time", {"format", "timezone"})
    name = table.get("timezone", "UTC")
    try:
        if not isinstance(name, str) or not name:
            raise ZoneInfoNotFoundError(name)
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise spec.error("time.timezone", f"unknown IANA time zone {name!r}") from None
    fmt = table.get("format", default_format)
    if not isinstance(fmt, str) or not fmt:
        raise spec.error("time.format", f"must be a strptime format, \"epoch\" or \"iso\", got {fmt!r}")
    if fmt not in ("epoch", "iso"):
        if "%" not in fmt:
            raise spec.error("time.format", f"must be a strptime format (with % codes), \"epoch\" or \"iso\", got {fmt!r}")
        try:
            datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
        except ValueError as exc:
            raise spec.error("time.format", f"not a valid strptime format {fmt!r}: {exc}") from None
    return Clock(fmt, zone, name)


def rfc3339(moment: datetime) -> str:
    """``2016-02-29T01:16:00+00:00``: the local wall clock with its offset."""
    return moment.isoformat()
