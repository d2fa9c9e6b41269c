"""Asterisk ``queue_log`` -> canonical events: the classic pipe-delimited file
(``epoch|callid|queue|agent|event|data1|...``), live with ``--follow`` (like ``tail -F``:
survives rotation and truncation, resumes from ``--state`` after a restart), or a
``queue_log`` table export (CSV with a header: Asterisk's realtime table or PBXware's). The
mapping, event by event, is in docs/sources/asterisk.md. Unknown events are counted and
skipped; a row that cannot be mapped is reported with its line number and skipped."""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kpi_core.errors import CcmonError, ConfigError
from streams import logs
from streams.sources.common import (
    DeliveryError,
    Report,
    RowProblem,
    RowSkipped,
    Sink,
    add_output_arguments,
    progress_enabled,
)
from streams.sources.mapping import FileFormat, open_table

PROG = "ccmon source asterisk"
log = logging.getLogger("ccmon.source.asterisk")
#: Events that say nothing ccmon counts (server life, configuration): counted as skipped.
IGNORED = frozenset({"QUEUESTART", "CONFIGRELOAD", "INFO", "SYSCOMPAT", "DID", "NONE", "QUEUEEND"})
#: Outbound dial results (PBXware) that end an agent's dial without a conversation.
OUT_FAILED = frozenset({"OUTCANCEL", "OUTCHANUNAVAIL", "OUTCONGESTION", "OUTBUSY", "OUTNOANSWER", "OUTTRANSFER"})
#: Default: what a customer's number looks like (anonymised tokens, E.164, 7+ digits); shorter
#: numbers are internal extensions (an agent calling a colleague is not a callback).
CUSTOMER_PATTERN = r"^(tel-|\+|\d{7,})"
#: Rows between checkpoints (flush to Kafka or the file, then --state) inside a long read.
CHECKPOINT_ROWS = 50_000
#: Seconds between attempts when Kafka did not take what was sent (--follow).
RETRY_SECONDS = 5.0


@dataclass(slots=True)
class Row:
    """One queue_log entry, whatever file it came from."""

    line: int
    epoch: float
    callid: str
    queue: str
    agent: str
    event: str
    data: list[str]
    hold: float | None = None  # PBX columns (PBXware exports: htime, ttime), when present
    talk: float | None = None
    where: str = ""  # the file, for reports


def agent_id(channel: str) -> str | None:
    """``Agent/1127``, ``SIP/1127``, ``Local/1127@callback-agent/n`` -> ``1127``."""
    if not channel or channel.upper() == "NONE":
        return None
    name = channel.split("/", 1)[1] if "/" in channel else channel
    return name.split("@", 1)[0].split("/", 1)[0] or None


def _seconds(text: str, what: str, scale: float = 1.0) -> float:
    try:
        value = float(text) / scale
    except ValueError:
        raise RowProblem(f"invalid_field:{what}: not a number: {text[:40]!r}") from None
    if not value >= 0 or value > 366 * 86400:
        raise RowProblem(f"invalid_field:{what}: out of range: {text[:40]!r}")
    return value


@dataclass
class Mapper:
    """Turns rows into canonical events. Keeps what it must remember across rows (agents'
    queues and pauses, the queue of an outbound dial), serialisable for ``--state``."""

    tenant: str = "default"
    customer_pattern: str = CUSTOMER_PATTERN
    outbound_queue: str = "outbound"
    members: dict[str, list[str]] = field(default_factory=dict)  # agent -> queues
    paused: list[str] = field(default_factory=list)
    dials: dict[str, str] = field(default_factory=dict)  # outbound callid -> queue

    def __post_init__(self) -> None:
        self._customer = re.compile(self.customer_pattern)

    def state(self) -> dict[str, Any]:
        return copy.deepcopy({"members": self.members, "paused": self.paused, "dials": self.dials})

    def load(self, state: dict[str, Any]) -> None:
        self.members = {str(k): [str(q) for q in v] for k, v in state.get("members", {}).items()}
        self.paused = [str(a) for a in state.get("paused", [])]
        self.dials = {str(k): str(v) for k, v in state.get("dials", {}).items()}

    # -- helpers ---------------------------------------------------------------------------
    def _event(self, row: Row, kind: str, *, part: str = "", ts: float | None = None, **fields: Any) -> dict[str, Any]:
        digest = hashlib.blake2b(
            "\x1f".join([f"{row.epoch:.3f}", row.callid, row.queue, row.agent, row.event, *row.data]).encode(),
            digest_size=8,
        ).hexdigest()
        # One row may give several events (CONNECT: the answer and the agent's state): the
        # canonical type (and ``part`` when a row gives two of a type) is part of the id, so
        # each is its own event, and a re-import or a restart yields the same ids.
        event = {
            "event_id": f"ast-{row.callid}-{row.event.lower()}-{digest}-{kind}{part}",
            "type": kind,
            "ts": row.epoch if ts is None else ts,
            "tenant": self.tenant,
        }
        event.update({k: v for k, v in fields.items() if v is not None})
        return event

    def _customer_of(self, values: Iterable[str]) -> str | None:
        for value in values:
            if value and self._customer.match(value):
                return value
        return None

    def _agent_state(
        self, row: Row, agent: str, state: str, *, part: str = "", ts: float | None = None
    ) -> dict[str, Any]:
        queues = sorted(self.members.get(agent, []))
        return self._event(row, "agent.state", part=part, ts=ts, agent_id=agent, state=state, queues=queues or None)

    def _idle(self, agent: str) -> str:
        """What an agent is when not on a call: away while paused."""
        return "away" if agent in self.paused else "available"

    @staticmethod
    def _data_seconds(row: Row, index: int, scale: float = 1.0) -> float | None:
        if len(row.data) > index and row.data[index].strip() != "":
            return _seconds(row.data[index].strip(), f"data{index + 1}", scale)
        return None

    def _wait(self, row: Row, index: int) -> float | None:
        """The PBX's own wait: its hold column, else ``data[index]``."""
        return row.hold if row.hold is not None else self._data_seconds(row, index)

    @staticmethod
    def _need_agent(agent: str | None, event: str) -> str:
        if agent is None:
            raise RowProblem(f"missing_field:agent: {event} without an agent")
        return agent

    # -- the mapping -----------------------------------------------------------------------
    def map(self, row: Row) -> list[dict[str, Any]]:
        event = row.event.strip().upper()
        queue = row.queue if row.queue and row.queue.upper() != "NONE" else None
        agent = agent_id(row.agent)
        call: dict[str, Any] = {"call_id": row.callid, "queue": queue}
        if event in IGNORED:
            raise RowSkipped(event)  # known, but nothing ccmon counts: skipped, by name
        if event == "ENTERQUEUE":
            if queue is None:
                raise RowProblem("missing_field:queue: ENTERQUEUE without a queue")
            return [self._event(row, "call.offered", **call, customer_id=self._customer_of(row.data))]
        if event == "CONNECT":  # holdtime|bridged channel|ringtime
            agent = self._need_agent(agent, event)
            out = [self._event(row, "call.answered", **call, agent_id=agent, wait_seconds=self._wait(row, 0))]
            return [*out, self._agent_state(row, agent, "on_call")]
        if event == "ABANDON":  # position|origposition|waittime
            return [self._event(row, "call.abandoned", **call, wait_seconds=self._wait(row, 2))]
        if event in ("EXITWITHTIMEOUT", "EXITEMPTY"):  # position|origposition|waittime
            return [self._event(row, "call.timeout", **call, wait_seconds=self._wait(row, 2))]
        if event == "EXITWITHKEY":  # key|position|origposition|waittime
            return [self._event(row, "call.timeout", **call, wait_seconds=self._wait(row, 3))]
        if event == "RINGNOANSWER":  # ringtime in ms (PBXware: in its hold column)
            agent = self._need_agent(agent, event)
            ring = row.hold / 1000 if row.hold is not None else self._data_seconds(row, 0, scale=1000)
            return [self._event(row, "call.ring_no_answer", **call, agent_id=agent, ring_seconds=ring)]
        if event in ("COMPLETEAGENT", "COMPLETECALLER", "TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER"):
            # COMPLETE*: holdtime|calltime|origposition; (BLIND)TRANSFER: exten|context|holdtime|calltime|
            # origposition; ATTENDEDTRANSFER: BRIDGE|id or APP|app or LINK|chan|chan, then the same three.
            if event.startswith("COMPLETE"):
                index = 1
            else:
                index = len(row.data) - 2 if len(row.data) >= 5 else 3
            talk = row.talk if row.talk is not None else self._data_seconds(row, index)
            out = [
                self._event(row, "call.ended", **call, talk_seconds=talk if talk is not None else 0.0, agent_id=agent)
            ]
            if event.endswith("TRANSFER"):
                out.append(self._event(row, "call.transferred", **call))
            if agent is not None:
                out.append(self._agent_state(row, agent, self._idle(agent)))
            return out
        if event == "ADDMEMBER":
            agent = self._need_agent(agent, event)
            if queue is None:
                raise RowProblem("missing_field:queue: ADDMEMBER without a queue")
            queues = self.members.setdefault(agent, [])
            if queue not in queues:
                queues.append(queue)
            return [self._agent_state(row, agent, self._idle(agent))]
        if event == "REMOVEMEMBER":
            agent = self._need_agent(agent, event)
            queues = self.members.get(agent, [])
            if queue in queues:
                queues.remove(queue)
            if not queues:
                self.members.pop(agent, None)
            return [self._agent_state(row, agent, self._idle(agent) if queues else "offline")]
        if event in ("AGENTLOGIN", "AGENTCALLBACKLOGIN"):
            agent = self._need_agent(agent, event)
            return [self._agent_state(row, agent, self._idle(agent))]
        if event in ("AGENTLOGOFF", "AGENTCALLBACKLOGOFF"):
            agent = self._need_agent(agent, event)
            if agent in self.paused:
                self.paused.remove(agent)
            return [self._agent_state(row, agent, "offline")]
        if event in ("PAUSE", "PAUSEALL"):
            agent = self._need_agent(agent, event)
            if agent not in self.paused:
                self.paused.append(agent)
            return [self._agent_state(row, agent, "away")]
        if event in ("UNPAUSE", "UNPAUSEALL"):
            agent = self._need_agent(agent, event)
            if agent in self.paused:
                self.paused.remove(agent)
            return [self._agent_state(row, agent, "available")]
        if event == "OUTDIAL":  # PBXware: an agent dials out; data1 = the number
            customer = self._customer_of(row.data[:1])
            if agent is None or customer is None:
                return []  # an internal call (extension), not a call to a customer
            queues = self.members.get(agent, [])
            out_queue = queue or (queues[0] if len(queues) == 1 else self.outbound_queue)
            self.dials[row.callid] = out_queue
            if len(self.dials) > 10000:  # dials never answered: forget the oldest
                self.dials.pop(next(iter(self.dials)))
            return [
                self._event(
                    row,
                    "call.offered",
                    call_id=row.callid,
                    queue=out_queue,
                    direction="outbound",
                    customer_id=customer,
                    agent_id=agent,
                )
            ]
        if event == "OUTANSWER":  # PBXware: logged when the answered dial ends; ttime = talk
            out_queue = self.dials.pop(row.callid, "")
            if not out_queue:
                return []  # the answer of an internal call
            talk = row.talk if row.talk is not None else 0.0
            out = [
                self._event(row, "call.ended", call_id=row.callid, queue=out_queue, talk_seconds=talk, agent_id=agent)
            ]
            if agent is not None and talk > 0:  # busy on the call from its answer to now
                out += [
                    self._agent_state(row, agent, "on_call", part="-start", ts=row.epoch - talk),
                    self._agent_state(row, agent, self._idle(agent), part="-end"),
                ]
            return out
        if event in OUT_FAILED:
            self.dials.pop(row.callid, None)
            return []
        raise RowSkipped(event)


# -- reading files ---------------------------------------------------------------------------
#: CSV header names -> Row fields (Asterisk's realtime table and PBXware's export).
_CSV_COLUMNS = {
    "epoch": ("date_time", "time", "timestamp"),
    "callid": ("callid", "call_id", "uniqueid"),
    "queue": ("queuename", "queue_name", "queue"),
    "agent": ("agent", "type"),
    "event": ("event", "verb"),
}
#: Events whose PBX hold column is the caller's wait in the queue (RINGNOANSWER: ring ms).
_HOLD_EVENTS = frozenset({"CONNECT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY", "RINGNOANSWER"})
#: Events whose PBX talk column is the conversation.
_TALK_EVENTS = frozenset(
    {"COMPLETEAGENT", "COMPLETECALLER", "TRANSFER", "BLINDTRANSFER", "ATTENDEDTRANSFER", "OUTANSWER"}
)


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _when(text: str, what: str, zone: tzinfo | None = None) -> float:
    """Epoch seconds, or (CSV exports only, ``zone`` given) a date and time such as
    Asterisk's realtime ``2012-07-03 15:27:23.896208``, in ``zone`` unless it has an offset."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        if zone is None:
            raise RowProblem(f"bad_timestamp: {what} is not epoch seconds: {text[:40]!r}") from None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RowProblem(
                f"bad_timestamp: {what} is neither epoch seconds nor a date and time: {text[:40]!r}"
            ) from None
        value = (moment if moment.tzinfo else moment.replace(tzinfo=zone)).timestamp()
    if not 0 < value < 4102444800:
        raise RowProblem(f"bad_timestamp: {what} out of range: {text[:40]!r}")
    return value


def parse_pipe_line(line: str, number: int) -> Row:
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 5:
        raise RowProblem(f"too_few_fields: {len(parts)} of at least 5 (epoch|callid|queue|agent|event)")
    return Row(number, _when(parts[0], "epoch"), parts[1], parts[2], parts[3], parts[4], parts[5:])


class CsvExport:
    """Rows of a CSV export with a header (column names as Asterisk's ``queue_log`` table or
    PBXware's: ``date_time`` epoch or ``time`` epoch or date and time, ``callid``,
    ``queue_name``/``queuename``, ``type``/``agent``, ``event``, ``data1..5``/``param1..3`` or
    one pipe-joined ``data``, optional ``htime``/``ttime`` hold and talk seconds)."""

    def __init__(self, header: list[str], zone: tzinfo) -> None:
        self.header = [h.strip().lower() for h in header]
        self.zone = zone
        index = {name: _pick(self.header, names) for name, names in _CSV_COLUMNS.items()}
        missing = [name for name, i in index.items() if i is None]
        if missing:
            raise ConfigError("FILE", f"the CSV header has no column for {', '.join(missing)}: {header}")
        self.index: dict[str, int] = {name: i for name, i in index.items() if i is not None}
        self.data = [i for i, h in enumerate(self.header) if re.fullmatch(r"(data|param)\d", h)]
        self.joined = self.header.index("data") if not self.data and "data" in self.header else None
        self.hold = _pick(self.header, ("htime", "holdtime"))
        self.talk = _pick(self.header, ("ttime", "calltime"))

    def row(self, values: list[str], number: int) -> Row:
        if len(values) != len(self.header):
            raise RowProblem(f"wrong_field_count: {len(values)} fields, the header has {len(self.header)}")
        idx = self.index
        data = values[self.joined].split("|") if self.joined is not None else [values[i] for i in self.data]
        row = Row(
            number,
            _when(values[idx["epoch"]], self.header[idx["epoch"]], self.zone),
            values[idx["callid"]],
            values[idx["queue"]],
            values[idx["agent"]],
            values[idx["event"]],
            data,
        )
        event = row.event.strip().upper()
        if self.hold is not None and event in _HOLD_EVENTS:
            row.hold = _seconds(values[self.hold], self.header[self.hold])
        if self.talk is not None and event in _TALK_EVENTS:
            row.talk = _seconds(values[self.talk], self.header[self.talk])
        return row


def read_csv(path: str, report: Report, zone: tzinfo) -> Iterator[Row]:
    """The rows of a ``queue_log`` table export, read as every tabular source reads its file."""
    with contextlib.ExitStack() as stack:
        table = open_table(path, FileFormat(encoding="utf-8-sig"), stack)
        if not table.header:
            return
        export = CsvExport(table.header, zone)
        yield from _rows(((table.where, number, values) for number, values in table.rows), export.row, report)


_Line = TypeVar("_Line", str, list[str])


def _rows(
    lines: Iterable[tuple[str, int, _Line | RowProblem]], parse: Callable[[_Line, int], Row], report: Report
) -> Iterator[Row]:
    """The rows ``parse`` makes of ``(file, line number, line)``; a line it cannot parse (or
    the reader could not read) is counted, reported with its number and skipped."""
    for where, number, line in lines:
        try:
            if isinstance(line, RowProblem):
                raise line
            row = parse(line, number)
        except RowProblem as exc:
            report.rows += 1
            report.problem(where, number, str(exc))
            continue
        row.where = where
        yield row


def is_csv(path: str) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
    return "," in first and "|" not in first and "event" in first.lower()


# -- following a live file -------------------------------------------------------------------
#: Bytes of the first line that identify a file (with its inode), so a reused inode or a file
#: rewritten in place is not mistaken for the one we were reading.
HEAD_BYTES = 1024
#: What logrotate and Asterisk append to a rotated queue_log: .1, -20181130, .2018-11-30...
ROTATED_SUFFIX = re.compile(r"[.\-_][0-9][0-9.\-_T:]*")


def _head(first_line: bytes) -> str:
    return hashlib.blake2b(first_line[:HEAD_BYTES], digest_size=8).hexdigest()


def fingerprint(fd: int) -> str:
    """The file's identity beyond its inode: a digest of its first line ("" until it has one)."""
    data = os.pread(fd, HEAD_BYTES, 0)
    end = data.find(b"\n")
    if end < 0:
        if len(data) < HEAD_BYTES:
            return ""
        end = len(data)
    return _head(data[:end])


@dataclass
class Position:
    """Where reading stopped: the file (inode and first-line digest) and the byte offset and
    line number after the last whole line read."""

    inode: int = 0
    offset: int = 0
    line: int = 0
    head: str = ""


class Follower:
    """Reads whole lines appended to ``path``, like ``tail -F``:

    * rotation (the path names a new file): the old file is read to its end, and left only once
      the new file has something in it (lines the writer still adds to the old file until it
      reopens are not lost), then the new file from its start;
    * truncation or a rewrite in place (size below what was read, or another first line, as
      logrotate's ``copytruncate`` does): the rest of the file is read from its copy when a
      rotated file has the same first line, then the file again from its start;
    * a restart from a saved :class:`Position`: the file is found by inode and first line
      among ``path`` and its rotated copies (``path.1``, ``path-20181130``...), or by its first
      line alone (a copy); files rotated after it are read next, then ``path``. If it is gone
      (compressed, deleted), the rotated files modified after ``since`` (when the position was
      saved) are read, then ``path``, and a warning says what may be lost.
    """

    def __init__(
        self, path: str, position: Position, *, since: float | None = None, warn: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.position = position
        self.since = since
        self.warn = warn or (lambda message: None)
        self.handle: BinaryIO | None = None
        self.name = path  # the file being read
        self.pending = b""
        self.after: list[str] = []  # files to read before going back to ``path``, in order

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def rotated(self) -> list[tuple[float, str, int]]:
        """Rotated copies of ``path``: (mtime, path, inode), oldest first."""
        directory, base = os.path.split(self.path)
        out = []
        try:
            entries = list(os.scandir(directory or "."))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.startswith(base) and ROTATED_SUFFIX.fullmatch(entry.name[len(base) :]):
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                out.append((stat.st_mtime, entry.path, stat.st_ino))
        return sorted(out)

    def _open(self, name: str, position: Position) -> bool:
        try:
            handle = open(name, "rb")  # noqa: SIM115 - kept open while following, closed in close()
        except FileNotFoundError:
            return False
        self.close()
        if not position.inode:
            position.inode = os.fstat(handle.fileno()).st_ino
        self.handle, self.name, self.position, self.pending = handle, name, position, b""
        handle.seek(position.offset)
        return True

    @staticmethod
    def _identity(name: str) -> tuple[int, int, str] | None:
        """(inode, size, first-line digest) of a file, None when it is not there."""
        try:
            with open(name, "rb") as handle:
                stat = os.fstat(handle.fileno())
                return stat.st_ino, stat.st_size, fingerprint(handle.fileno())
        except FileNotFoundError:
            return None

    def _find(self, saved: Position, *, by_inode: bool) -> str | None:
        """Among ``path`` and its rotated copies: the file of ``saved`` (same inode and, when
        known, first line), or with ``by_inode=False`` a copy of it (same first line, at least
        as long)."""
        for name in [self.path, *(n for _m, n, _i in reversed(self.rotated()))]:
            identity = self._identity(name)
            if identity is None:
                continue
            inode, size, head = identity
            if by_inode and inode == saved.inode and (not saved.head or head == saved.head):
                return name
            if not by_inode and saved.head and head == saved.head and size >= saved.offset:
                return name
        return None

    def _newer_than(self, name: str) -> list[str]:
        """Rotated files modified after ``name`` (which is one of them), oldest first."""
        rotated = self.rotated()
        mtime = next((m for m, n, _i in rotated if n == name), float("inf"))
        return [n for m, n, _i in rotated if m >= mtime and n != name]

    def _start(self) -> None:
        saved = self.position
        if not saved.inode:
            self._open(self.path, Position())
            return
        found = self._find(saved, by_inode=True) or self._find(saved, by_inode=False)
        saved.inode = 0  # _open takes the inode of the file found (a copy has another)
        if found == self.path:
            if os.stat(self.path).st_size < saved.offset:
                self.warn(f"{self.path} is shorter than where reading stopped (truncated): reading it from the start")
                saved = Position()
            self._open(self.path, saved)
            return
        if found is not None:
            self.after = self._newer_than(found)
            self.warn(
                f"{self.path} was rotated while stopped: resuming in {found} at line {saved.line:,}"
                + (f", then {', '.join(self.after)}" if self.after else "")
            )
            self._open(found, saved)
            return
        self.after = [n for m, n, _i in self.rotated() if self.since is not None and m > self.since]
        self.warn(
            f"the file read before (inode {saved.inode}, {saved.line:,} lines read) is gone (compressed "
            f"or deleted?): what it got after that is lost; reading {', '.join([*self.after, self.path])} "
            f"from the start"
        )
        self.position = Position()  # do not look for it again
        self._open(self.after.pop(0) if self.after else self.path, Position())

    def _split(self, chunk: bytes) -> Iterator[tuple[str, int, str]]:
        self.pending += chunk
        *whole, self.pending = self.pending.split(b"\n")
        for raw in whole:
            if self.position.offset == 0:
                self.position.head = _head(raw)
            self.position.offset += len(raw) + 1
            self.position.line += 1
            if raw.strip():
                yield self.name, self.position.line, raw.decode("utf-8", "replace")

    def _next(self) -> str | None:
        """At the end of the file being read: the file to read next, "" to go on reading (the
        file was truncated and reading starts over), or None to wait."""
        assert self.handle is not None
        if self.after:
            return self.after[0]
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None  # rotated, the new file not there yet
        if stat.st_ino != os.fstat(self.handle.fileno()).st_ino:
            # Rotated. Until the new file has something in it, the writer may still be adding
            # to the old one (logrotate ``create`` makes it before Asterisk reopens).
            return self.path if stat.st_size > 0 else None
        return self._rewritten(stat)

    def _rewritten(self, stat: os.stat_result) -> str | None:
        """Whether ``path``, the file being read, was truncated or rewritten in place (shorter
        than what was read, or another first line): then the copy of it to read the rest
        from, or "" (reading starts over). None when it was not."""
        assert self.handle is not None
        fd = self.handle.fileno()
        if stat.st_size >= self.handle.tell() and (not self.position.head or fingerprint(fd) == self.position.head):
            return None
        copy_of_it = self._find(self.position, by_inode=False)
        if copy_of_it is not None and copy_of_it != self.path:
            self.warn(f"{self.path} was truncated (copytruncate): reading the rest of it from {copy_of_it}")
            return copy_of_it
        self.warn(f"{self.name} was truncated or rewritten: reading it from the start")
        self.handle.seek(0)
        self.pending = b""
        self.position = Position(stat.st_ino)
        return ""

    def _switch(self, name: str) -> bool:
        """Go on in ``name``: the next file from its start, or the copy of a truncated file
        where we were."""
        if name == self.path or (self.after and name == self.after[0]):
            if self.after and name == self.after[0]:
                self.after.pop(0)
            position = Position()
        else:
            position = Position(0, self.position.offset, self.position.line, self.position.head)
        if not self._open(name, position):
            return False
        self.warn(f"now reading {name}")
        return True

    def lines(self) -> Iterator[tuple[str, int, str]]:
        """(file, line number, line) of every whole line there is now."""
        if self.handle is None:
            self._start()
        elif not self.after and self.name == self.path:
            # Before reading on: rewritten in place since the last poll (copytruncate, then
            # written past where we were)? Reading on at our offset would give garbage.
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                stat = None
            if stat is not None and stat.st_ino == os.fstat(self.handle.fileno()).st_ino:
                copy_of_it = self._rewritten(stat)
                if copy_of_it:
                    self._switch(copy_of_it)
        if self.handle is None:
            return
        try:
            while True:
                assert self.handle is not None
                chunk = self.handle.read(1 << 20)
                if chunk:
                    yield from self._split(chunk)
                    continue
                upcoming = self._next()
                if upcoming is None:
                    return
                if upcoming == "":
                    continue
                if upcoming == self.path or (self.after and upcoming == self.after[0]):
                    chunk = self.handle.read(1 << 20)  # the last lines the writer added before moving on
                    if chunk:
                        yield from self._split(chunk)
                        continue
                if not self._switch(upcoming):
                    return
        finally:
            # Between calls the handle stands at ``position.offset``: a partial last line, or
            # lines a caller stopped before taking, are read again next time.
            if self.handle is not None:
                self.handle.seek(self.position.offset)
                self.pending = b""


# -- state -------------------------------------------------------------------------------------
@dataclass
class Saved:
    """What ``--state`` holds: the position, the mapper's memory, when it was written."""

    position: Position = field(default_factory=Position)
    mapper: dict[str, Any] = field(default_factory=dict)
    at: float | None = None
    file: str | None = None


def load_state(path: str | None) -> Saved:
    if not path or not os.path.exists(path):
        return Saved()
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        position = Position(int(doc["inode"]), int(doc["offset"]), int(doc.get("line", 0)), str(doc.get("head", "")))
        mapper = doc.get("mapper", {})
        if not isinstance(mapper, dict) or position.offset < 0:
            raise ValueError("bad 'mapper' or 'offset'")
        at = doc.get("saved_at")
        return Saved(position, mapper, float(at) if at is not None else None, doc.get("file"))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError("--state", f"{path} is not a ccmon source state file: {exc}") from None


def save_state(path: str | None, position: Position, mapper: Mapper, file: str, at: float | None = None) -> None:
    """Atomically (write, fsync, rename). ``at``: when the position was reached (default now)."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(
            {**asdict(position), "file": file, "saved_at": time.time() if at is None else at, "mapper": mapper.state()},
            handle,
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- the command -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="queue_log file (pipe-delimited) or queue_log table export (CSV)")
    parser.add_argument(
        "--format",
        choices=("auto", "pipe", "csv"),
        default="auto",
        help="file format (default: auto, a CSV has a header line)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep reading what is appended, across log rotation (pipe format), until stopped",
    )
    parser.add_argument(
        "--state",
        metavar="FILE",
        default=None,
        help="pipe format: where to remember the position (and agents' queues) so a restart "
        "resumes without loss or repeats; written after each flush; --out is then appended to",
    )
    parser.add_argument(
        "--poll", type=float, default=0.5, metavar="S", help="--follow: seconds between polls (default 0.5)"
    )
    parser.add_argument(
        "--timezone",
        default="UTC",
        metavar="ZONE",
        help="CSV exports: zone of a date-and-time column without offset (default UTC)",
    )
    parser.add_argument(
        "--customer-pattern",
        default=CUSTOMER_PATTERN,
        metavar="REGEX",
        help=f"what a customer's number looks like (default: {CUSTOMER_PATTERN})",
    )
    parser.add_argument(
        "--outbound-queue",
        default="outbound",
        metavar="QUEUE",
        help="queue of agents' outbound calls when the agent is not in exactly one queue",
    )
    add_output_arguments(parser)
    logs.add_format_argument(parser)


def run(args: argparse.Namespace) -> int:
    # json: what the source says on stderr (problems, warnings, the summary) as JSON log lines.
    json_logs = logs.format_from(args) == "json"
    try:
        re.compile(args.customer_pattern)
    except re.error as exc:
        raise ConfigError("--customer-pattern", f"not a regular expression: {exc}") from None
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("--timezone", f"unknown IANA time zone {args.timezone!r}") from None
    if not args.poll > 0:
        raise ConfigError("--poll", f"must be > 0 seconds, got {args.poll}")
    if os.path.isdir(args.file) or (not os.path.exists(args.file) and not args.follow):
        raise ConfigError("FILE", f"no such file: {args.file}")
    csv_format = args.format == "csv" or (args.format == "auto" and os.path.exists(args.file) and is_csv(args.file))
    if csv_format and args.follow:
        raise ConfigError("--follow", "follows a pipe-delimited queue_log file, not a CSV export")
    if csv_format and args.state:
        raise ConfigError("--state", "applies to the pipe-delimited queue_log file; a CSV export is imported whole")
    mapper = Mapper(tenant=args.tenant, customer_pattern=args.customer_pattern, outbound_queue=args.outbound_queue)
    if json_logs:
        logs.configure("INFO", "json")
    report = Report(PROG, progress=progress_enabled(args), log=log if json_logs else None)
    stopped = threading.Event()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in handlers:  # a clean stop: what was read is flushed and the position saved
        signal.signal(sig, lambda *_: stopped.set())
    from kafka.errors import KafkaError

    try:
        if csv_format:
            sink = Sink(args, PROG)
            try:
                _emit(read_csv(args.file, report, zone), mapper, sink, report, stopped=stopped)
                sink.flush()
            finally:
                _close(sink)
                report.finish(sink.target)
        else:
            _read_pipe(args, mapper, report, stopped)
    except KafkaError as exc:  # e.g. no metadata for the topic within 15 s
        raise DeliveryError(f"Kafka: {exc!r}") from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stopped.is_set() and not args.follow:
        logs.say(log, f"{PROG}: stopped by a signal before the end of {args.file}", sys.stderr, logging.WARNING)
        return 130
    return 0


def _close(sink: Sink) -> None:
    try:
        sink.close()
    except Exception:  # already failing: do not hide the first error
        sink.abort()


def _read_pipe(args: argparse.Namespace, mapper: Mapper, report: Report, stopped: threading.Event) -> None:
    from kafka.errors import KafkaError

    path = os.path.abspath(args.file)
    saved = load_state(args.state)
    if saved.file and saved.file != path:
        raise ConfigError(
            "--state",
            f"{args.state} holds the position in {saved.file}, not {path}: "
            "use another state file (or delete it to read from the start)",
        )
    mapper.load(saved.mapper)
    if args.state:  # fail now, not after the first read, when it cannot be written
        try:
            save_state(args.state, saved.position, mapper, path, saved.at)
        except OSError as exc:
            raise ConfigError("--state", f"cannot write {args.state}: {exc}") from None

    def warn(message: str) -> None:
        logs.say(log, f"{PROG}: {message}", sys.stderr, logging.WARNING)

    sink = Sink(args, PROG, append=bool(args.state))
    follower = Follower(args.file, copy.copy(saved.position), since=saved.at, warn=warn)
    last = (copy.copy(saved.position), mapper.state())  # what is durable: where to go back to

    def checkpoint() -> None:
        nonlocal last
        sink.flush()
        save_state(args.state, follower.position, mapper, path)
        last = (copy.copy(follower.position), mapper.state())

    try:
        while True:
            try:
                _emit(
                    _pipe_rows(follower.lines(), report), mapper, sink, report, stopped=stopped, checkpoint=checkpoint
                )
                checkpoint()
            except (DeliveryError, KafkaError) as exc:
                if not args.follow:
                    where = (
                        f"the position in {args.file} was saved before this (run again to go on from there)"
                        if args.state
                        else "without --state nothing remembers how far it got"
                    )
                    raise DeliveryError(f"{exc}; {where}") from None
                warn(
                    f"Kafka did not take what was read ({exc}); going back to the last saved position "
                    f"({last[0].line:,} lines into the file) in {RETRY_SECONDS:.0f} s"
                )
                sink.abort()
                follower.close()
                sink = _reconnect(args, stopped, warn)
                follower = Follower(args.file, copy.copy(last[0]), since=saved.at, warn=warn)
                mapper.load(copy.deepcopy(last[1]))
                continue
            if not args.follow or stopped.is_set() or stopped.wait(args.poll):
                break
    finally:
        follower.close()
        _close(sink)
        report.finish(sink.target)


def _reconnect(args: argparse.Namespace, stopped: threading.Event, warn: Callable[[str], None]) -> Sink:
    while True:
        stopped.wait(RETRY_SECONDS)
        try:
            return Sink(args, PROG, append=bool(args.state))
        except CcmonError as exc:
            if stopped.is_set():
                raise
            warn(f"{exc}; retrying in {RETRY_SECONDS:.0f} s")


def _pipe_rows(lines: Iterable[tuple[str, int, str]], report: Report) -> Iterator[Row]:
    return _rows(lines, parse_pipe_line, report)


def _emit(
    rows: Iterable[Row],
    mapper: Mapper,
    sink: Sink,
    report: Report,
    *,
    stopped: threading.Event | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> None:
    """Map and write every row; every :data:`CHECKPOINT_ROWS` rows, ``checkpoint()`` (flush and
    save the position). Stops after the row in hand when ``stopped`` is set."""
    batch: list[dict[str, Any]] = []
    since_checkpoint = 0
    for row in rows:
        report.rows += 1
        since_checkpoint += 1
        try:
            events = mapper.map(row)
        except RowSkipped as exc:  # an event ccmon does not map: counted by name
            report.skip(str(exc))
        except RowProblem as exc:
            report.problem(row.where, row.line, str(exc))
        else:
            batch.extend(events)
            report.events += len(events)
        if len(batch) >= 1000 or (checkpoint is not None and since_checkpoint >= CHECKPOINT_ROWS):
            sink.write(batch)
            batch.clear()
        if checkpoint is not None and since_checkpoint >= CHECKPOINT_ROWS:
            checkpoint()
            since_checkpoint = 0
        report.tick()
        if stopped is not None and stopped.is_set():
            break
    if batch:
        sink.write(batch)


def map_file(
    path: str, *, tenant: str = "default", report: Report | None = None, zone: tzinfo | None = None
) -> list[dict[str, Any]]:
    """Every event of a whole file (for tests and tools)."""
    report = report or Report("asterisk", stream=io.StringIO())
    mapper = Mapper(tenant=tenant)
    rows = (
        read_csv(path, report, zone or ZoneInfo("UTC"))
        if is_csv(path)
        else _pipe_rows(Follower(path, Position()).lines(), report)
    )
    events: list[dict[str, Any]] = []

    class _ListSink:
        def write(self, batch: list[dict[str, Any]]) -> None:
            events.extend(batch)

    _emit(rows, mapper, _ListSink(), report)  # type: ignore[arg-type]
    return events
