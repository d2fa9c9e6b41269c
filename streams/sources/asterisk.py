"""Asterisk ``queue_log`` -> canonical events: the classic pipe-delimited file
(``epoch|callid|queue|agent|event|data1|...``), live with ``--follow`` (like ``tail -F``:
survives rotation and truncation, resumes from ``--state`` after a restart), or a
``queue_log`` table export (CSV with a header, e.g. PBXware's). The mapping, event by event,
is in docs/sources/asterisk.md. Unknown events are counted and skipped; a row that cannot be
mapped is reported with its line number and skipped."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpi_core.errors import ConfigError
from streams.sources.common import Report, Sink, add_output_arguments, progress_enabled

#: Events that say nothing ccmon counts (server life, configuration): skipped silently.
IGNORED = frozenset({"QUEUESTART", "CONFIGRELOAD", "INFO", "SYSCOMPAT", "DID", "NONE", "QUEUEEND"})
#: Outbound dial results that end an agent's dial without a conversation.
OUT_FAILED = frozenset({"OUTCANCEL", "OUTCHANUNAVAIL", "OUTCONGESTION", "OUTBUSY", "OUTNOANSWER"})
#: Default: what a customer's number looks like (anonymised tokens, E.164, 7+ digits); shorter
#: numbers are internal extensions (an agent calling a colleague is not a callback).
CUSTOMER_PATTERN = r"^(tel-|\+|\d{7,})"


class RowProblem(Exception):
    """A row that cannot be mapped; the message is the reason."""


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
        return {"members": self.members, "paused": self.paused, "dials": self.dials}

    def load(self, state: dict[str, Any]) -> None:
        self.members = {str(k): list(v) for k, v in state.get("members", {}).items()}
        self.paused = list(state.get("paused", []))
        self.dials = dict(state.get("dials", {}))

    # -- helpers ---------------------------------------------------------------------------
    def _event(self, row: Row, kind: str, **fields: Any) -> dict[str, Any]:
        digest = hashlib.blake2b(
            "\x1f".join([f"{row.epoch:.3f}", row.callid, row.queue, row.agent, row.event, *row.data]).encode(),
            digest_size=8,
        ).hexdigest()
        # One row may give several events (CONNECT: the answer and the agent's state): the
        # canonical type is part of the id, so each is its own event and a re-import dedupes.
        event = {"event_id": f"ast-{row.callid}-{row.event.lower()}-{digest}-{kind}", "type": kind, "ts": row.epoch,
                 "tenant": self.tenant}  # fmt: skip
        event.update({k: v for k, v in fields.items() if v is not None})
        return event

    def _customer_of(self, values: Iterable[str]) -> str | None:
        for value in values:
            if value and self._customer.match(value):
                return value
        return None

    def _agent_state(self, row: Row, agent: str, state: str) -> dict[str, Any]:
        queues = sorted(self.members.get(agent, []))
        return self._event(row, "agent.state", agent_id=agent, state=state, queues=queues or None)

    def _wait(self, row: Row, index: int) -> float | None:
        """The PBX's own wait: its hold column, else ``data[index]``."""
        if row.hold is not None:
            return row.hold
        if len(row.data) > index and row.data[index] != "":
            return _seconds(row.data[index], f"data{index + 1}")
        return None

    # -- the mapping -----------------------------------------------------------------------
    def map(self, row: Row) -> list[dict[str, Any]]:
        event = row.event.upper()
        queue = row.queue if row.queue and row.queue.upper() != "NONE" else None
        agent = agent_id(row.agent)
        call = {"call_id": row.callid, "queue": queue}
        if event in IGNORED:
            raise _Unknown(event)  # known, but nothing ccmon counts: skipped, by name
        if event == "ENTERQUEUE":
            if queue is None:
                raise RowProblem("missing_field:queue: ENTERQUEUE without a queue")
            return [self._event(row, "call.offered", **call, customer_id=self._customer_of(row.data))]
        if event == "CONNECT":
            if agent is None:
                raise RowProblem("missing_field:agent: CONNECT without an agent")
            out = [self._event(row, "call.answered", **call, agent_id=agent, wait_seconds=self._wait(row, 0))]
            return [*out, self._agent_state(row, agent, "on_call")]
        if event == "ABANDON":
            return [self._event(row, "call.abandoned", **call, wait_seconds=self._wait(row, 2))]
        if event in ("EXITWITHTIMEOUT", "EXITEMPTY"):
            return [self._event(row, "call.timeout", **call, wait_seconds=self._wait(row, 2))]
        if event == "EXITWITHKEY":
            return [self._event(row, "call.timeout", **call, wait_seconds=self._wait(row, 3))]
        if event == "RINGNOANSWER":
            if agent is None:
                raise RowProblem("missing_field:agent: RINGNOANSWER without an agent")
            return [self._event(row, "call.ring_no_answer", **call, agent_id=agent)]
        if event in ("COMPLETEAGENT", "COMPLETECALLER", "BLINDTRANSFER", "ATTENDEDTRANSFER"):
            talk = row.talk
            if talk is None:
                index = 1 if event.startswith("COMPLETE") else 3
                talk = _seconds(row.data[index], f"data{index + 1}") if len(row.data) > index and row.data[index] else 0.0
            out = [self._event(row, "call.ended", **call, talk_seconds=talk, agent_id=agent)]
            if event.endswith("TRANSFER"):
                out.append(self._event(row, "call.transferred", **call))
            if agent is not None and agent not in self.paused:
                out.append(self._agent_state(row, agent, "available"))
            return out
        if event == "ADDMEMBER" and agent is not None and queue is not None:
            queues = self.members.setdefault(agent, [])
            if queue not in queues:
                queues.append(queue)
            return [self._agent_state(row, agent, "away" if agent in self.paused else "available")]
        if event == "REMOVEMEMBER" and agent is not None and queue is not None:
            queues = self.members.get(agent, [])
            if queue in queues:
                queues.remove(queue)
            return [self._agent_state(row, agent, "available" if queues else "offline")]
        if event in ("AGENTLOGIN", "AGENTCALLBACKLOGIN") and agent is not None:
            return [self._agent_state(row, agent, "available")]
        if event in ("AGENTLOGOFF", "AGENTCALLBACKLOGOFF") and agent is not None:
            if agent in self.paused:
                self.paused.remove(agent)
            return [self._agent_state(row, agent, "offline")]
        if event in ("PAUSE", "PAUSEALL") and agent is not None:
            if agent not in self.paused:
                self.paused.append(agent)
            return [self._agent_state(row, agent, "away")]
        if event in ("UNPAUSE", "UNPAUSEALL") and agent is not None:
            if agent in self.paused:
                self.paused.remove(agent)
            return [self._agent_state(row, agent, "available")]
        if event == "OUTDIAL":
            customer = self._customer_of(row.data[:1])
            if agent is None or customer is None:
                return []  # an internal call (extension), not a call to a customer
            queues = self.members.get(agent, [])
            out_queue = queue or (queues[0] if len(queues) == 1 else self.outbound_queue)
            self.dials[row.callid] = out_queue
            if len(self.dials) > 10000:  # dials never answered: forget the oldest
                self.dials.pop(next(iter(self.dials)))
            return [self._event(row, "call.offered", call_id=row.callid, queue=out_queue, direction="outbound",
                                customer_id=customer, agent_id=agent)]  # fmt: skip
        if event == "OUTANSWER":
            out_queue = self.dials.pop(row.callid, "")
            if not out_queue:
                return []  # the answer of an internal call
            talk = row.talk if row.talk is not None else 0.0
            return [self._event(row, "call.ended", call_id=row.callid, queue=out_queue, talk_seconds=talk,
                                agent_id=agent)]  # fmt: skip
        if event in OUT_FAILED or event == "OUTTRANSFER":
            self.dials.pop(row.callid, None)
            return []
        raise _Unknown(event)


class _Unknown(Exception):
    """An event ccmon does not map: counted by name and skipped."""


# -- reading files ---------------------------------------------------------------------------
#: CSV header names -> Row fields (Asterisk's realtime table and PBXware's export).
_CSV_COLUMNS = {
    "epoch": ("date_time", "time", "timestamp"),
    "callid": ("callid", "call_id", "uniqueid"),
    "queue": ("queuename", "queue_name", "queue"),
    "agent": ("agent", "type"),
    "event": ("event", "verb"),
}


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _epoch(text: str, what: str) -> float:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        raise RowProblem(f"bad_timestamp: {what} is not epoch seconds: {text[:40]!r}") from None
    if not 0 < value < 4102444800:
        raise RowProblem(f"bad_timestamp: {what} out of range: {text[:40]!r}")
    return value


def parse_pipe_line(line: str, number: int) -> Row:
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 5:
        raise RowProblem(f"too_few_fields: {len(parts)} of at least 5 (epoch|callid|queue|agent|event)")
    return Row(number, _epoch(parts[0], "epoch"), parts[1], parts[2], parts[3], parts[4], parts[5:])


class CsvExport:
    """Rows of a CSV export with a header (column names as Asterisk's ``queue_log`` table or
    PBXware's: ``date_time``/``time`` epoch, ``callid``, ``queue_name``, ``type``/``agent``,
    ``event``, ``data1..5``/``param1..3``, optional ``htime``/``ttime`` hold and talk seconds)."""

    def __init__(self, header: list[str]) -> None:
        self.header = [h.strip().lower() for h in header]
        self.index = {name: _pick(self.header, names) for name, names in _CSV_COLUMNS.items()}
        missing = [name for name, i in self.index.items() if i is None]
        if missing:
            raise ConfigError("FILE", f"the CSV header has no column for {', '.join(missing)}: {header}")
        self.data = [i for i, h in enumerate(self.header) if re.fullmatch(r"(data|param)\d", h)]
        self.hold = _pick(self.header, ("htime", "holdtime"))
        self.talk = _pick(self.header, ("ttime", "calltime"))

    def row(self, values: list[str], number: int) -> Row:
        if len(values) != len(self.header):
            raise RowProblem(f"wrong_field_count: {len(values)} fields, the header has {len(self.header)}")
        idx = self.index
        epoch_index = idx["epoch"]
        assert epoch_index is not None
        row = Row(number, _epoch(values[epoch_index], self.header[epoch_index]),
                  values[idx["callid"] or 0], values[idx["queue"] or 0], values[idx["agent"] or 0],
                  values[idx["event"] or 0], [values[i] for i in self.data])  # fmt: skip
        event = row.event.upper()
        if self.hold is not None and event in _HOLD_EVENTS:
            row.hold = _seconds(values[self.hold], self.header[self.hold])
        if self.talk is not None and event in _TALK_EVENTS:
            row.talk = _seconds(values[self.talk], self.header[self.talk])
        return row


#: Events whose PBX hold column is the caller's wait in the queue.
_HOLD_EVENTS = frozenset({"CONNECT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY"})
#: Events whose PBX talk column is the conversation.
_TALK_EVENTS = frozenset({"COMPLETEAGENT", "COMPLETECALLER", "BLINDTRANSFER", "ATTENDEDTRANSFER", "OUTANSWER"})


def read_csv(path: str, report: Report) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        export = CsvExport(header)
        for values in reader:
            number = reader.line_num
            if not values:
                continue
            try:
                yield export.row(values, number)
            except RowProblem as exc:
                report.rows += 1
                report.problem(path, number, str(exc))


def is_csv(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    return "," in first and "|" not in first and "event" in first.lower()


# -- following a live file -------------------------------------------------------------------
@dataclass
class Position:
    """Where reading stopped: the file (by inode) and the byte offset after the last whole line."""

    inode: int = 0
    offset: int = 0
    line: int = 0


class Follower:
    """Reads whole lines appended to ``path``, across rotation (rename + new file: the old
    file is read to its end first) and truncation (read from the start again)."""

    def __init__(self, path: str, position: Position) -> None:
        self.path = path
        self.position = position
        self.handle: io.BufferedReader | None = None
        self.pending = b""

    def _open(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return
        if self.position.inode != stat.st_ino:
            rotated = self._rotated_copy(self.position.inode)
            if rotated is not None and self.position.inode:
                self.handle = open(rotated, "rb")  # noqa: SIM115 - kept open while following
                self.handle.seek(self.position.offset)
                return
            self.position = Position(stat.st_ino, 0, 0)
        self.handle = open(self.path, "rb")  # noqa: SIM115
        if stat.st_size < self.position.offset:
            self.position.offset = 0  # truncated while we were away
        self.handle.seek(self.position.offset)

    def _rotated_copy(self, inode: int) -> str | None:
        """After a restart: the file we were reading may now be ``path.1`` (or similar)."""
        if not inode:
            return None
        for candidate in sorted(Path(self.path).parent.glob(Path(self.path).name + "*")):
            try:
                if candidate.stat().st_ino == inode:
                    return str(candidate)
            except FileNotFoundError:
                continue
        return None

    def lines(self) -> Iterator[tuple[int, str]]:
        """Lines available now (whole ones only)."""
        if self.handle is None:
            self._open()
            if self.handle is None:
                return
        while True:
            chunk = self.handle.read(1 << 20)
            if chunk:
                self.pending += chunk
                *whole, self.pending = self.pending.split(b"\n")
                for raw in whole:
                    self.position.offset += len(raw) + 1
                    self.position.line += 1
                    if raw.strip():
                        yield self.position.line, raw.decode("utf-8", "replace")
                continue
            # At the end of what is there: has the path moved on (rotated) or shrunk?
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                return
            current = os.fstat(self.handle.fileno())
            if stat.st_ino != current.st_ino:
                self.handle.close()
                self.pending = b""
                self.position = Position(stat.st_ino, 0, 0)
                self.handle = open(self.path, "rb")  # noqa: SIM115
                continue
            if stat.st_size < self.position.offset:
                self.handle.seek(0)
                self.pending = b""
                self.position = Position(stat.st_ino, 0, 0)
                continue
            if self.position.inode != current.st_ino:
                self.position.inode = current.st_ino
            return


def load_state(path: str | None) -> tuple[Position, dict[str, Any]]:
    if not path or not os.path.exists(path):
        return Position(), {}
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        return Position(int(doc["inode"]), int(doc["offset"]), int(doc.get("line", 0))), dict(doc.get("mapper", {}))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError("--state", f"{path} is not a ccmon source state file: {exc}") from None


def save_state(path: str | None, position: Position, mapper: Mapper) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"inode": position.inode, "offset": position.offset, "line": position.line,
                   "mapper": mapper.state()}, handle)  # fmt: skip
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- the command -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="queue_log file (pipe-delimited) or queue_log table export (CSV)")
    parser.add_argument("--format", choices=("auto", "pipe", "csv"), default="auto",
                        help="file format (default: auto, a CSV has a header line)")
    parser.add_argument("--follow", action="store_true",
                        help="keep reading what is appended, across log rotation (pipe format), until stopped")
    parser.add_argument("--state", metavar="FILE", default=None,
                        help="where to remember the position (and agents' queues) so a restart resumes "
                        "without loss or repeats; written after each flush")
    parser.add_argument("--poll", type=float, default=0.5, metavar="S", help="--follow: seconds between polls (default 0.5)")
    parser.add_argument("--customer-pattern", default=CUSTOMER_PATTERN, metavar="REGEX",
                        help=f"what a customer's number looks like (default: {CUSTOMER_PATTERN})")
    parser.add_argument("--outbound-queue", default="outbound", metavar="QUEUE",
                        help="queue of agents' outbound calls when the agent is not in exactly one queue")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    prog = "ccmon source asterisk"
    try:
        re.compile(args.customer_pattern)
    except re.error as exc:
        raise ConfigError("--customer-pattern", f"not a regular expression: {exc}") from None
    if not os.path.exists(args.file) and not args.follow:
        raise ConfigError("FILE", f"no such file: {args.file}")
    csv_format = args.format == "csv" or (args.format == "auto" and os.path.exists(args.file) and is_csv(args.file))
    if csv_format and args.follow:
        raise ConfigError("--follow", "follows a pipe-delimited queue_log file, not a CSV export")
    mapper = Mapper(tenant=args.tenant, customer_pattern=args.customer_pattern, outbound_queue=args.outbound_queue)
    position, mapper_state = load_state(args.state)
    mapper.load(mapper_state)
    report = Report(prog, progress=progress_enabled(args))
    sink = Sink(args, prog)
    stopped = threading.Event()
    if args.follow:
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        if csv_format:
            _emit(read_csv(args.file, report), mapper, sink, report, args.file)
            sink.flush()
        else:
            follower = Follower(args.file, position)
            while True:
                rows = _pipe_rows(follower.lines(), report, args.file)
                _emit(rows, mapper, sink, report, args.file)
                sink.flush()
                save_state(args.state, follower.position, mapper)
                if not args.follow or stopped.wait(args.poll):
                    break
    except KeyboardInterrupt:
        sink.flush()
    finally:
        sink.close()
        report.finish(sink.target)
    return 0


def _pipe_rows(lines: Iterable[tuple[int, str]], report: Report, where: str) -> Iterator[Row]:
    for number, line in lines:
        try:
            yield parse_pipe_line(line, number)
        except RowProblem as exc:
            report.rows += 1
            report.problem(where, number, str(exc))


def _emit(rows: Iterable[Row], mapper: Mapper, sink: Sink, report: Report, where: str) -> None:
    batch: list[dict[str, Any]] = []
    for row in rows:
        report.rows += 1
        try:
            events = mapper.map(row)
        except _Unknown as exc:
            report.skip(str(exc))
            continue
        except RowProblem as exc:
            report.problem(where, row.line, str(exc))
            continue
        batch.extend(events)
        report.events += len(events)
        if len(batch) >= 1000:
            sink.write(batch)
            batch.clear()
        report.tick()
    if batch:
        sink.write(batch)


def map_file(path: str, *, tenant: str = "default", report: Report | None = None) -> list[dict[str, Any]]:
    """Every event of a whole file (for tests and tools)."""
    report = report or Report("asterisk", stream=io.StringIO())
    mapper = Mapper(tenant=tenant)
    events: list[dict[str, Any]] = []
    rows = read_csv(path, report) if is_csv(path) else _pipe_rows(Follower(path, Position()).lines(), report, path)
    for row in rows:
        report.rows += 1
        try:
            events.extend(mapper.map(row))
        except _Unknown as exc:
            report.skip(str(exc))
        except RowProblem as exc:
            report.problem(path, row.line, str(exc))
    return events

