"""The one mapping dialect of the tabular sources (CSV/TSV, optionally inside a zip) and the
machinery they share: a TOML mapping read and validated field by field (each error naming the
dotted field, and the file when read from one: ``config field 'itsm.toml:time.format': ...``),
the table read row by row, and the values of a row's columns by role. A source is a mapper
(``set_header``, then ``map``: a row -> its events, or :class:`RowProblem`, or
:class:`RowSkipped`) over :func:`read`. docs/SOURCES.md describes the dialect.

Sections every mapping shares::

    [file]      delimiter (one character or "tab", default ","), encoding (default utf-8),
                member (the file inside a .zip; default: its only file), id_prefix
    [time]      timezone (IANA, default UTC) and the formats of the source's time columns:
                format (strptime; "epoch"; "iso"), or date_format and time_format (strptime)
                for a date column and time-of-day columns
    [columns]   role -> a column name (or a list of them, for the roles that take one)
    [none]      per source column: the values that mean "no value" ({"q_start" = ["0:00:00"]})
    [defaults]  per role: the value used when its column has no value

Accepted as well, one meaning each (the spelling of the first CDR mappings): the ``[time]``
settings under ``[file]`` (not under both), and ``[values]``: ``not_queued`` ([none] for
every time column), ``no_customer`` and ``no_agent`` ([none] for the customer_id and agent
columns), ``unknown_agent`` (the agent's [defaults]).

A source adds its own sections (``[states]``, ``[outcomes]``) and reads them with the same
helpers, so every mapping reports errors the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.errors import ConfigError
from streams.files import read_toml
from streams.sources import common
from streams.sources.common import Report, RowProblem, RowSkipped

#: The [time] settings; a mapping may write them under [file] instead.
TIME_KEYS = ("timezone", "format", "date_format", "time_format")
#: [values] (the first CDR mappings' spelling): key -> the role whose columns it gives [none]
#: values for ("time": every time column of the source).
VALUES_NONE = {"not_queued": "time", "no_customer": "customer_id", "no_agent": "agent"}
#: [values]: key -> the role it gives a [defaults] value for.
VALUES_DEFAULTS = {"unknown_agent": "agent"}


@dataclass(frozen=True)
class Spec:
    """A decoded mapping document and where it came from (``path`` "": a document not read from
    a file, whose errors name the field alone), with validating accessors."""

    raw: Mapping[str, Any]
    path: str

    def error(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}:{where}" if self.path else where, message)

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

    def fields(self, section: str, allowed: Collection[str]) -> Mapping[str, Any]:
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

    def roles(self, roles: Sequence[tuple[str, bool]], lists: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
        """``[columns]``: role -> its column names, for ``roles`` ((role, required), in the order
        they are checked); only the roles in ``lists`` may name several columns."""
        self.fields("columns", {role for role, _ in roles})
        columns = {role: self.columns("columns", role, required=required) for role, required in roles}
        for role, names in columns.items():
            if len(names) > 1 and role not in lists:
                raise self.error(f"columns.{role}", f"must name one column, got {list(names)!r}")
        return columns

    def strings(self, section: str, key: str) -> frozenset[str]:
        value = self.table(section)[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{section}.{key}", f"must be a list of strings, got {value!r}")
        return frozenset(value)

    def meanings(self, section: str, meanings: Sequence[str]) -> dict[str, str]:
        """``[section]`` (required): a source value -> what it means, one of ``meanings``."""
        table = self.table(section, required=True)
        for value, meaning in table.items():
            if meaning not in meanings:
                raise self.error(f"{section}.{value}", f"must be one of {', '.join(meanings)}, got {meaning!r}")
        return dict(table)

    def setting(self, key: str, sections: Sequence[str]) -> tuple[str, Any] | None:
        """``(dotted field, value)`` of ``key`` in the one of ``sections`` that holds it."""
        holding = [section for section in sections if key in self.table(section)]
        if len(holding) > 1:
            raise self.error(f"{holding[1]}.{key}", f"is already set as {holding[0]}.{key}: set it once")
        return (f"{holding[0]}.{key}", self.table(holding[0])[key]) if holding else None


def load_spec(path: str | Path) -> Spec:
    """Read a mapping file; a missing or malformed file names ``--mapping``."""
    return Spec(read_toml(path, "--mapping", "a mapping file"), Path(path).name)


# -- [file] ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileFormat:
    delimiter: str = ","
    encoding: str = "utf-8"
    member: str | None = None
    id_prefix: str = "src"


def file_format(spec: Spec, default_prefix: str) -> FileFormat:
    table = spec.fields("file", {"delimiter", "encoding", "member", "id_prefix", *TIME_KEYS})
    delimiter = table.get("delimiter", ",")
    if delimiter == "tab":
        delimiter = "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
        raise spec.error("file.delimiter", f'must be one character (or "tab"), got {delimiter!r}')
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
                raise ConfigError(
                    "file.member",
                    f"{path} holds {len(names)} files ({', '.join(names[:10])}): "
                    "name the one to read in the mapping's [file] member",
                )
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


def none_values(
    spec: Spec, columns: Mapping[str, tuple[str, ...]], time_roles: Sequence[str] = ()
) -> dict[str, frozenset[str]]:
    """``[none]``: source column -> values that mean "no value" (the empty string always does),
    with those [values] gives by role (``time_roles``: the source's time columns)."""
    out: dict[str, set[str]] = {}
    for column in spec.table("none"):
        out.setdefault(column, set()).update(spec.strings("none", column))
    for key in spec.table("values"):
        role = VALUES_NONE.get(key)
        if role is None:
            continue
        values = spec.strings("values", key)
        for name in (n for r in (time_roles if role == "time" else (role,)) for n in columns.get(r, ())):
            out.setdefault(name, set()).update(values)
    return {column: frozenset(values) for column, values in out.items()}


def defaults(spec: Spec, roles: Collection[str]) -> dict[str, str]:
    """``[defaults]``: role -> the value used when its column has no value (``roles``: those
    the source has defaults for), with those [values] gives."""
    spec.fields("defaults", roles)
    spec.fields("values", {*VALUES_NONE, *(key for key, role in VALUES_DEFAULTS.items() if role in roles)})
    out = {}
    for role in roles:
        value = spec.string("defaults", role)
        for key in (k for k, r in VALUES_DEFAULTS.items() if r == role and k in spec.table("values")):
            if value is not None:
                raise spec.error(f"values.{key}", f"is already set as defaults.{role}: set it once")
            value = spec.string("values", key)
        if value is not None:
            out[role] = value
    return out


@dataclass(frozen=True)
class TableMapping:
    """What every mapping declares: the document, ``[file]``, ``[columns]`` (role -> column
    names), ``[none]`` (column -> values meaning no value) and ``[defaults]`` (role -> value)."""

    spec: Spec
    file: FileFormat
    columns: dict[str, tuple[str, ...]]
    none: dict[str, frozenset[str]]
    defaults: dict[str, str]


def table_mapping(
    spec: Spec,
    *,
    sections: Collection[str],
    id_prefix: str,
    roles: Sequence[tuple[str, bool]],
    lists: Collection[str] = (),
    defaults_for: Collection[str] = (),
    time_roles: Sequence[str] = (),
) -> dict[str, Any]:
    """The shared sections of ``spec`` as :class:`TableMapping`'s fields (``sections``: the
    source's own sections; ``roles``, ``lists``: as :meth:`Spec.roles`; ``defaults_for``: the
    roles that may have a default; ``time_roles``: the source's time columns)."""
    spec.only({"file", "time", "columns", "none", "defaults", *sections})
    columns = spec.roles(roles, lists)
    return {
        "spec": spec,
        "file": file_format(spec, id_prefix),
        "columns": columns,
        "none": none_values(spec, columns, time_roles),
        "defaults": defaults(spec, defaults_for),
    }


@dataclass
class Columns:
    """A row's values by role, once the header is known."""

    spec: Spec
    roles: Mapping[str, tuple[str, ...]]
    none: Mapping[str, frozenset[str]]
    header: list[str] = field(default_factory=list)
    index: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def set_header(self, header: list[str], where: str) -> None:
        self.header = header
        self.index = {
            role: column_index(self.spec, header, role, names, where) for role, names in self.roles.items() if names
        }

    def column(self, role: str) -> str:
        return self.header[self.index[role][0]]

    def value(self, values: list[str], role: str) -> str | None:
        """The role's value, None when the column is not mapped or holds a "no value" value."""
        index = self.index.get(role)
        if not index:
            return None
        text = values[index[0]].strip()
        if text == "" or text in self.none.get(self.header[index[0]], ()):
            return None
        return text

    def parts(self, values: list[str], role: str) -> list[str]:
        """The values of every column of the role (an id made of several columns)."""
        return [values[i].strip() for i in self.index.get(role, ())]


class RowMapper(Protocol):
    """A source: told the header, then turns each row into its events (or raises RowProblem or
    RowSkipped)."""

    def set_header(self, header: list[str], where: str) -> None: ...

    def map(self, values: list[str]) -> list[dict[str, Any]]: ...


def read(path: str, fmt: FileFormat, mapper: RowMapper, report: Report) -> Iterator[list[dict[str, Any]]]:
    """The events of each row of ``path`` (a CSV, or a zip holding one); a row that cannot be
    mapped is reported with its line number and skipped, a row skipped is counted by kind."""
    with contextlib.ExitStack() as stack:
        table = open_table(path, fmt, stack)
        mapper.set_header(table.header, table.where)
        for line, values in table.rows:
            report.rows += 1
            try:
                if isinstance(values, RowProblem):
                    raise values
                if len(values) != len(table.header):
                    raise RowProblem(f"wrong_field_count: {len(values)} fields, the header has {len(table.header)}")
                events = mapper.map(values)
            except RowSkipped as exc:
                report.skip(str(exc))
                continue
            except RowProblem as exc:
                report.problem(table.where, line, str(exc))
                continue
            report.events += len(events)
            report.tick()
            yield events


def import_files(args: argparse.Namespace, prog: str, mapping: TableMapping, mapper: RowMapper) -> int:
    """Import ``args.files`` in order through one ``mapper`` (a ticket may continue in the next
    file), in batches of 1,000 events; Ctrl-C stops after writing what was mapped."""
    for path in args.files:
        if not Path(path).is_file():
            raise ConfigError("FILE", f"no such file: {path}")
    report = Report(prog, progress=common.progress_enabled(args))
    sink = common.Sink(args, prog)
    try:
        for path in args.files:
            batch: list[dict[str, Any]] = []
            for events in read(path, mapping.file, mapper, report):
                batch.extend(events)
                if len(batch) >= 1000:
                    sink.write(batch)
                    batch.clear()
            if batch:
                sink.write(batch)
        sink.flush()
    except KeyboardInterrupt:
        sink.flush()
    finally:
        sink.close()
        report.finish(sink.target)
    return 0


_M = TypeVar("_M", bound=TableMapping)


def mapped_command(
    prog: str, files: str, example: str, load: Callable[[str], _M], mapper: Callable[[_M, str], RowMapper]
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """A mapped source's command, ``(add_arguments, run)`` (streams.cli.source): its files
    (``files``: what they are), ``--mapping`` (``load``: read and validate it; ``example``: a ready
    one), where the events go; each file is imported through one ``mapper(mapping, tenant)``."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help=files)
        parser.add_argument("--mapping", required=True, metavar="TOML", help=f"the declared mapping, e.g. {example}")
        common.add_output_arguments(parser)

    def run(args: argparse.Namespace) -> int:
        mapping = load(args.mapping)
        return import_files(args, prog, mapping, mapper(mapping, args.tenant))

    return add_arguments, run


# -- [time] ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeSettings:
    """The validated [time] settings: the zone of wall-clock times and the formats by key."""

    timezone: str
    zone: ZoneInfo
    formats: Mapping[str, str]


def time_settings(spec: Spec, formats: Mapping[str, str]) -> TimeSettings:
    """``timezone`` and the source's ``formats`` (key -> default), under [time] (or [file]).
    ``format`` is a strptime format, "epoch" or "iso"; the others strptime formats."""
    keys = {"timezone", *formats}
    spec.fields("time", keys)
    for key in spec.table("file"):
        if key in TIME_KEYS and key not in keys:
            raise spec.error(
                f"file.{key}", f"unknown field (expected one of: {', '.join(sorted(keys))} or no time field)"
            )
    where, name = spec.setting("timezone", ("time", "file")) or ("time.timezone", "UTC")
    try:
        if not isinstance(name, str) or not name:
            raise ZoneInfoNotFoundError(name)
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise spec.error(where, f"unknown IANA time zone {name!r}") from None
    out = {}
    for key, default in formats.items():
        where, fmt = spec.setting(key, ("time", "file")) or (f"time.{key}", default)
        named = key == "format"  # a date-time column may also be "epoch" or "iso"
        kinds = 'a strptime format, "epoch" or "iso"' if named else "a strptime format"
        if not isinstance(fmt, str) or not fmt:
            raise spec.error(where, f"must be {kinds}, got {fmt!r}")
        if not (named and fmt in ("epoch", "iso")):
            if "%" not in fmt:
                raise spec.error(where, f"must be {kinds} (with % codes), got {fmt!r}")
            try:
                datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
            except ValueError as exc:
                raise spec.error(where, f"not a valid strptime format {fmt!r}: {exc}") from None
        out[key] = fmt
    return TimeSettings(name, zone, out)


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
    """The clock of a source whose time columns hold a date and time each (``[time] format``)."""
    settings = time_settings(spec, {"format": default_format})
    return Clock(settings.formats["format"], settings.zone, settings.timezone)


def rfc3339(moment: datetime) -> str:
    """``2016-02-29T01:16:00+00:00``: the local wall clock with its offset."""
    return moment.isoformat()
