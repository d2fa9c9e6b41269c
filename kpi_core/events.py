"""Canonical events (docs/EVENTS.md): parsing and validation into typed records.

Everything that enters the engine passes through :func:`parse_event`. It either returns an
:class:`Event` with every field type-checked and ``ts`` normalised to UTC epoch seconds, or
raises :class:`~kpi_core.errors.InvalidEventError` whose ``reason`` is machine-readable:

==========================  ==========================================================
reason                      when
==========================  ==========================================================
``invalid_json``            not UTF-8, not JSON, too deeply nested, a number too big
``not_an_object``           JSON, but not an object
``missing_field:<name>``    a required field is absent, null or empty
``invalid_field:<name>``    a field has the wrong type, an unknown value, or is too long
``unknown_type``            ``type`` is not one of :data:`EVENT_TYPES`
``bad_timestamp``           ``ts`` is neither RFC 3339 with an offset (strictly) nor epoch seconds
``negative_duration``       a ``*_seconds`` field is below zero
``score_out_of_range``      a survey score outside its scale
==========================  ==========================================================

The engine adds ``too_late`` (older than the state it keeps) and, later, ``too_many_series``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

from kpi_core.errors import InvalidEventError

CALL_TYPES = frozenset(
    {
        "call.offered",
        "call.answered",
        "call.abandoned",
        "call.timeout",
        "call.voicemail",
        "call.ring_no_answer",
        "call.transferred",
        "call.ended",
    }
)
EVENT_TYPES = CALL_TYPES | {
    "callback.requested",
    "callback.attempted",
    "agent.state",
    "ticket.created",
    "ticket.replied",
    "ticket.resolved",
    "ticket.reopened",
    "survey.response",
    "kb.viewed",
}

AGENT_STATES = ("available", "on_call", "acw", "away", "offline")
CHANNELS = frozenset({"voice", "chat", "email", "social", "sms"})
SURVEYS = frozenset({"csat", "nps", "ces", "esat", "enps"})
#: Employee pulse surveys: answered by agents (``agent_id`` required), exported only in batches
#: of answers from at least ``pulse_min_responses`` agents (kpi_core.engine.surveys, ``_pulse``).
PULSE_SURVEYS = frozenset({"esat", "enps"})
CSAT_SCALES = frozenset({3, 5, 7, 10})

#: Longest id (event, call, customer...) accepted. Longer ones are rejected, not truncated.
MAX_ID_LENGTH = 256
#: Longest name that may become a metric label value (tenant, queue, agent, state...).
MAX_NAME_LENGTH = 128
#: Epoch seconds accepted: 1970 up to (not including) 2100-01-01.
MAX_EPOCH_SECONDS = 4_102_444_800.0
#: Longest ``*_seconds`` duration accepted (366 days).
MAX_DURATION_SECONDS = 366 * 86400
#: Highest ``priority`` of a ``call.offered`` (0 = the least urgent, as Twilio and Genesys).
MAX_PRIORITY = 9
#: Queue names ccmon uses itself.
#: The ``queue`` label of a tenant's totals (every queue): no event may name it.
ALL = "_all"
RESERVED_QUEUES = frozenset({ALL})

_REQUIRED: dict[str, tuple[str, ...]] = {
    "call.offered": ("call_id", "queue"),
    "call.answered": ("call_id", "agent_id"),
    "call.abandoned": ("call_id",),
    "call.timeout": ("call_id",),
    "call.voicemail": ("call_id",),
    "call.ring_no_answer": ("call_id", "agent_id"),
    "call.transferred": ("call_id",),
    "call.ended": ("call_id", "talk_seconds"),
    "callback.requested": ("callback_id", "queue"),
    "callback.attempted": ("callback_id", "agent_id"),
    "agent.state": ("agent_id", "state"),
    "ticket.created": ("ticket_id", "queue"),
    "ticket.replied": ("ticket_id", "author"),
    "ticket.resolved": ("ticket_id",),
    "ticket.reopened": ("ticket_id",),
    "survey.response": ("survey", "score", "queue"),
    "kb.viewed": ("article_id", "session_id"),
}

_ID_FIELDS = (
    "call_id",
    "customer_id",
    "callback_id",
    "ticket_id",
    "contact_id",
    "article_id",
    "session_id",
    "kb_session_id",
)
_NAME_FIELDS = ("queue", "agent_id", "to_queue", "outcome")
_DURATION_FIELDS = ("wait_seconds", "talk_seconds", "hold_seconds", "acw_seconds")
_BOOL_FIELDS = ("resolved", "connected", "first_contact")


class Event(NamedTuple):
    """One validated canonical event. ``ts`` is UTC epoch seconds.

    A NamedTuple rather than a frozen dataclass: as immutable, and built several times faster
    (a frozen dataclass sets each of its 30 fields through ``object.__setattr__``), which
    matters at tens of thousands of events a second.

    Fields that do not apply to an event's ``type`` are ``None``. Unknown extra fields of the
    input are not kept here; the raw input is what goes to the dead-letter topic.
    """

    event_id: str
    type: str
    ts: float
    tenant: str = "default"
    queue: str | None = None
    channel: str | None = None
    call_id: str | None = None
    customer_id: str | None = None
    direction: str = "inbound"
    agent_id: str | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    hold_seconds: float | None = None
    acw_seconds: float | None = None
    resolved: bool | None = None
    outcome: str | None = None
    to_queue: str | None = None
    callback_id: str | None = None
    connected: bool | None = None
    state: str | None = None
    queues: tuple[str, ...] | None = None
    ticket_id: str | None = None
    author: str | None = None
    resolution: str | None = None
    first_contact: bool | None = None
    kb_session_id: str | None = None
    survey: str | None = None
    score: float | None = None
    scale_max: int | None = None
    contact_id: str | None = None
    article_id: str | None = None
    session_id: str | None = None
    #: ``agent.state``: the pause/aux code ("lunch", "training"...), meaningful with ``away``.
    reason: str | None = None
    #: ``call.offered`` (and ``ticket.created``): 0..9, higher = more urgent; None when absent.
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that was not accepted: the raw bytes (for the DLQ, unchanged) and why."""

    raw: bytes
    reason: str
    message: str


def _preview(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float(value: int | float) -> float:
    """``float(value)``, with integers too large for a float mapped to infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


#: RFC 3339 ``date-time`` (section 5.6), the only string form of ``ts``: a full date, ``T`` (or
#: ``t``, or the space section 5.6 lets applications use), a full time with seconds and an
#: optional fraction of any length, and ``Z`` or a ``+hh:mm`` / ``-hh:mm`` offset, in ASCII.
#: What ISO 8601 (and ``datetime.fromisoformat``) also takes is rejected: week dates
#: (``2026-W47-5T09:00:00Z``), ordinal dates (``2026-324T...``), the basic format
#: (``20261120T100000Z``), missing seconds, a comma or empty fraction, ``+0100``/``+01`` offsets,
#: offsets with seconds, no offset. Ranges (month 13, hour 24, offset +24:00) are left to
#: ``fromisoformat``, which parses what this lets through.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
#: The same without the offset, only to say what is missing.
_RFC3339_LOCAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?")


def parse_ts(value: Any) -> float:
    """RFC 3339 with an offset (strictly: see :data:`_RFC3339`), or epoch seconds (int or
    float), to UTC epoch seconds. On the hot path: one regular expression and one
    ``fromisoformat`` for the usual string (about as fast as ``fromisoformat`` alone was with
    its control-character check)."""
    if isinstance(value, str):
        if len(value) > 64:
            raise InvalidEventError("bad_timestamp", f"ts too long: {_preview(value)}")
        if _RFC3339.fullmatch(value) is None:  # also rejects control characters
            if _RFC3339_LOCAL.fullmatch(value):
                raise InvalidEventError("bad_timestamp", f"ts has no UTC offset: {_preview(value)}")
            raise InvalidEventError("bad_timestamp", f"ts is not RFC 3339: {_preview(value)}")
        try:
            ts = datetime.fromisoformat(value.upper()).timestamp()  # 't' and 'z' may be lower case
        except ValueError:  # month 13, February 30, hour 24, offset +24:00...
            raise InvalidEventError("bad_timestamp", f"ts is not a valid date and time: {_preview(value)}") from None
        if not 0 <= ts < MAX_EPOCH_SECONDS:
            raise InvalidEventError("bad_timestamp", f"ts out of range: {_preview(value)}")
        return ts
    if isinstance(value, bool):
        raise InvalidEventError("bad_timestamp", f"ts must be RFC 3339 or epoch seconds, got {value!r}")
    if isinstance(value, int | float):
        ts = _float(value)
        if not math.isfinite(ts) or not 0 <= ts < MAX_EPOCH_SECONDS:
            raise InvalidEventError("bad_timestamp", f"epoch ts out of range: {_preview(value)}")
        return ts
    raise InvalidEventError("bad_timestamp", f"ts must be RFC 3339 or epoch seconds, got {_preview(value)}")


_EPOCH_TEXT = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def parse_instant(text: str) -> float:
    """An instant given on the command line (``--at``, ``--start``): epoch seconds
    (``1795168800``, ``1795168800.5``) or RFC 3339 with an offset, by the rules of an event's
    ``ts`` (:func:`parse_ts`). Raises InvalidEventError (``bad_timestamp``)."""
    text = text.strip()
    return parse_ts(float(text) if _EPOCH_TEXT.fullmatch(text) else text)


#: Control characters (C0, DEL, C1) and lone surrogates (valid JSON escapes that are not text).
# Raw patterns: ``re`` reads the escapes (mypyc compiles no surrogate in a string literal).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _has_control(text: str) -> bool:
    """Control characters, or lone surrogates (valid JSON escapes that are not text)."""
    return _CONTROL.search(text) is not None


def _id(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        # The type, not the value: an id may identify a customer (a phone number), and this
        # message travels in the dead-letter topic's ccmon-error header.
        raise InvalidEventError(f"invalid_field:{name}", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        return None
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEventError(f"invalid_field:{name}", f"{name} longer than {MAX_ID_LENGTH} characters")
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise InvalidEventError(f"invalid_field:{name}", f"{name} holds a lone surrogate, not text")
    return value


def _name(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"invalid_field:{name}", f"{name} must be a string, got {_preview(value)}")
    if not value:
        return None
    if len(value) > MAX_NAME_LENGTH or _has_control(value):
        raise InvalidEventError(
            f"invalid_field:{name}",
            f"{name} must be at most {MAX_NAME_LENGTH} printable characters, got {_preview(value)}",
        )
    return value


def _duration(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError(f"invalid_field:{name}", f"{name} must be a number, got {_preview(value)}")
    seconds = _float(value)
    if not math.isfinite(seconds):
        raise InvalidEventError(f"invalid_field:{name}", f"{name} must be finite, got {_preview(value)}")
    if seconds < 0:
        raise InvalidEventError("negative_duration", f"{name} is negative: {_preview(value)}")
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidEventError(f"invalid_field:{name}", f"{name} longer than a year: {_preview(value)}")
    return seconds


def _bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidEventError(f"invalid_field:{name}", f"{name} must be true or false, got {_preview(value)}")


#: The optional fields the full validation reads, each with its reader, in the order it reads them.
_FIELD_READERS: tuple[tuple[tuple[str, ...], Callable[[dict[str, Any], str], Any]], ...] = (
    (_ID_FIELDS, _id),
    (_NAME_FIELDS, _name),
    (_DURATION_FIELDS, _duration),
    (_BOOL_FIELDS, _bool),
)


def _choice(obj: dict[str, Any], name: str, allowed: frozenset[str] | tuple[str, ...]) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidEventError(
            f"invalid_field:{name}", f"{name} must be one of {sorted(allowed)}, got {_preview(value)}"
        )
    return value


def _priority(obj: dict[str, Any]) -> int | None:
    """``priority`` of a ``call.offered`` or ``ticket.created``: a whole number 0..9, higher =
    more urgent (``3.0`` counts as 3, as JSON numbers are one type), else
    ``invalid_field:priority``."""
    value = obj.get("priority")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise InvalidEventError(
            "invalid_field:priority", f"priority must be a whole number in 0..{MAX_PRIORITY}, got {_preview(value)}"
        )
    return value


def _score(obj: dict[str, Any], survey: str) -> tuple[float, int | None]:
    value = obj.get("score")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(_float(value)):
        raise InvalidEventError("invalid_field:score", f"score must be a number, got {_preview(value)}")
    scale_max: int | None = None
    if survey in ("csat", "esat"):
        raw_scale = obj.get("scale_max", 5)
        if isinstance(raw_scale, float) and raw_scale.is_integer():
            raw_scale = int(raw_scale)
        # not an int: also a list or an object, which the set lookup would fail on (unhashable)
        if isinstance(raw_scale, bool) or not isinstance(raw_scale, int) or raw_scale not in CSAT_SCALES:
            raise InvalidEventError(
                "invalid_field:scale_max",
                f"scale_max must be one of {sorted(CSAT_SCALES)}, got {_preview(raw_scale)}",
            )
        scale_max = int(raw_scale)
        low, high = 1, scale_max
    elif survey in ("nps", "enps"):
        low, high = 0, 10
    else:  # ces
        low, high = 1, 7
    if not low <= value <= high:
        raise InvalidEventError(
            "score_out_of_range", f"{survey} score must be within {low}..{high}, got {_preview(value)}"
        )
    return float(value), scale_max


def parse_event(obj: Any) -> Event:
    """Validate one decoded JSON value into an :class:`Event` or raise InvalidEventError.

    The usual event takes the fast path (:func:`_fast_event`); everything else, and every
    event to reject, the full validation (:func:`_validate`), which alone gives reasons."""
    if obj.__class__ is dict:
        event = _fast_event(obj)
        if event is not None:
            return event
    return _validate(obj)


# -- the fast path ------------------------------------------------------------------------------
#: How :func:`_fast_event` checks a field (``type`` and ``ts`` are read apart).
_ID, _NAME, _CHOICE, _DURATION, _BOOL, _QUEUES, _PRIORITY, _APART = range(8)
_COMMON_KINDS = {
    "event_id": _ID,
    "type": _APART,
    "ts": _APART,
    "tenant": _NAME,
    "channel": _CHOICE,
    "direction": _CHOICE,
    **dict.fromkeys(_ID_FIELDS, _ID),
    **dict.fromkeys(_NAME_FIELDS, _NAME),
    **dict.fromkeys(_DURATION_FIELDS, _DURATION),
    **dict.fromkeys(_BOOL_FIELDS, _BOOL),
}
#: The fields only some types read (the full validation ignores them elsewhere; the fast path
#: then leaves the event to it).
_TYPE_KINDS = {
    "agent.state": {"state": _CHOICE, "queues": _QUEUES, "reason": _NAME},
    "call.offered": {"priority": _PRIORITY},
    "ticket.created": {"priority": _PRIORITY},
    "ticket.replied": {"author": _CHOICE},
    "ticket.resolved": {"resolution": _CHOICE},
}
_CHOICES = {
    "channel": CHANNELS,
    "direction": frozenset({"inbound", "outbound"}),
    "state": frozenset(AGENT_STATES),
    "author": frozenset({"agent", "customer"}),
    "resolution": frozenset({"solved", "unresolvable"}),
}
#: An Event's fields, as a list to fill by position (an input field is the Event field of its
#: name): ``Event._make`` of it is faster than ``Event(**fields)``'s 34 keyword parameters.
_DEFAULTS = [Event._field_defaults.get(name) for name in Event._fields]
_INDEX = {name: index for index, name in enumerate(Event._fields)}
_TYPE_AT, _TS_AT, _CHANNEL_AT, _RESOLUTION_AT = _INDEX["type"], _INDEX["ts"], _INDEX["channel"], _INDEX["resolution"]
#: Per event type: the kind and Event position of every field the fast path handles, and the
#: Event positions of the fields it needs besides type and ts (event_id and at least one more:
#: the getter returns a tuple). ``survey.response`` (a score on a scale per survey) always takes
#: the full validation.
_FAST: dict[str, tuple[dict[str, tuple[int, int]], itemgetter[Any]]] = {
    event_type: (
        {name: (kind, _INDEX[name]) for name, kind in {**_COMMON_KINDS, **_TYPE_KINDS.get(event_type, {})}.items()},
        itemgetter(*(_INDEX[name] for name in ("event_id", *_REQUIRED[event_type]))),
    )
    for event_type in EVENT_TYPES - {"survey.response"}
}


def _fast_event(obj: dict[str, Any]) -> Event | None:
    """The usual event validated in a few Python calls (one loop over its fields, no call per
    field), or None for anything else, which :func:`_validate` then decides: a field this
    path does not handle, a value not of the plain type (an int id, ``3.0`` as priority, a null,
    an empty string), a non-ASCII name or id, anything to reject. What it returns is what
    :func:`_validate` returns (tests/unit/streams/test_decoding.py compares the two on random events)."""
    event_type = obj.get("type")
    if event_type.__class__ is not str:
        return None
    spec = _FAST.get(event_type)
    if spec is None:
        return None
    kinds, required = spec
    values = _DEFAULTS.copy()
    for name, value in obj.items():
        field = kinds.get(name)
        if field is None:  # a field this path does not handle
            return None
        kind, index = field
        if kind == _ID:
            if value.__class__ is not str or not 0 < len(value) <= MAX_ID_LENGTH or not value.isascii():
                return None
        elif kind == _NAME:  # ASCII and printable: no control character
            if (
                value.__class__ is not str
                or not 0 < len(value) <= MAX_NAME_LENGTH
                or not value.isascii()
                or not value.isprintable()
                or value in RESERVED_QUEUES
            ):
                return None
        elif kind == _CHOICE:
            if value.__class__ is not str or value not in _CHOICES[name]:
                return None
        elif kind == _DURATION:
            if (value.__class__ is not int and value.__class__ is not float) or not 0 <= value <= MAX_DURATION_SECONDS:
                return None  # also NaN, which no comparison holds for
            value = float(value)
        elif kind == _BOOL:
            if value.__class__ is not bool:
                return None
        elif kind == _QUEUES:
            if value.__class__ is not list or len(value) > 1000:
                return None
            for item in value:
                if (
                    item.__class__ is not str
                    or not 0 < len(item) <= MAX_NAME_LENGTH
                    or not item.isascii()
                    or not item.isprintable()
                    or item in RESERVED_QUEUES
                ):
                    return None
            value = tuple(sorted(set(value)))
        elif kind == _PRIORITY:
            if value.__class__ is not int or not 0 <= value <= MAX_PRIORITY:
                return None
        else:  # type, ts
            continue
        values[index] = value
    if None in required(values):  # a required field is missing (every one's default is None)
        return None
    try:
        values[_TS_AT] = parse_ts(obj.get("ts"))
    except InvalidEventError:  # also a missing ts
        return None
    values[_TYPE_AT] = event_type
    if values[_CHANNEL_AT] is None and event_type in CALL_TYPES:
        values[_CHANNEL_AT] = "voice"
    if event_type == "ticket.resolved" and values[_RESOLUTION_AT] is None:
        values[_RESOLUTION_AT] = "solved"
    return Event._make(values)


# -- the full validation --------------------------------------------------------------------------
def _validate(obj: Any) -> Event:
    """Every event, with the reason of the first problem found (the module's docstring)."""
    if not isinstance(obj, dict):
        # The type only: a stray string may be free text (a note, a phone number).
        raise InvalidEventError("not_an_object", f"an event must be a JSON object, got {type(obj).__name__}")
    event_type = obj.get("type")
    if event_type is None or event_type == "":
        raise InvalidEventError("missing_field:type", "type is required")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise InvalidEventError("unknown_type", f"unknown event type {_preview(event_type)}")
    event_id = _id(obj, "event_id")
    if event_id is None:
        raise InvalidEventError("missing_field:event_id", "event_id is required")
    if "ts" not in obj or obj["ts"] is None or obj["ts"] == "":
        raise InvalidEventError("missing_field:ts", "ts is required")
    ts = parse_ts(obj["ts"])
    for name in _REQUIRED[event_type]:
        value = obj.get(name)
        if value is None or value == "":
            raise InvalidEventError(f"missing_field:{name}", f"{event_type} needs {name}")

    fields: dict[str, Any] = {}
    for group, read in _FIELD_READERS:
        for name in group:
            if name in obj:
                fields[name] = read(obj, name)

    tenant = _name(obj, "tenant") or "default"
    for name in ("queue", "to_queue"):
        if fields.get(name) in RESERVED_QUEUES:
            raise InvalidEventError(f"invalid_field:{name}", f"queue name {fields[name]!r} is reserved")
    channel = _choice(obj, "channel", CHANNELS)
    if channel is None and event_type in CALL_TYPES:
        channel = "voice"
    direction = _choice(obj, "direction", ("inbound", "outbound")) or "inbound"

    if event_type == "agent.state":
        fields["state"] = _choice(obj, "state", AGENT_STATES)
        raw_queues = obj.get("queues")
        if raw_queues is not None:
            if not isinstance(raw_queues, list) or len(raw_queues) > 1000:
                raise InvalidEventError("invalid_field:queues", "queues must be a list of names")
            names = []
            for item in raw_queues:
                if not isinstance(item, str) or not item or len(item) > MAX_NAME_LENGTH or _has_control(item):
                    raise InvalidEventError("invalid_field:queues", f"bad queue name {_preview(item)}")
                if item in RESERVED_QUEUES:
                    raise InvalidEventError("invalid_field:queues", f"queue name {item!r} is reserved")
                names.append(item)
            fields["queues"] = tuple(sorted(set(names)))
        fields["reason"] = _name(obj, "reason")
    elif event_type in ("call.offered", "ticket.created"):
        fields["priority"] = _priority(obj)
    elif event_type == "ticket.replied":
        fields["author"] = _choice(obj, "author", ("agent", "customer"))
    elif event_type == "ticket.resolved":
        fields["resolution"] = _choice(obj, "resolution", ("solved", "unresolvable")) or "solved"
    elif event_type == "survey.response":
        survey = _choice(obj, "survey", SURVEYS)
        assert survey is not None  # required above
        fields["survey"] = survey
        if survey in PULSE_SURVEYS and fields.get("agent_id") is None:
            raise InvalidEventError("missing_field:agent_id", f"survey.response with survey {survey} needs agent_id")
        fields["score"], fields["scale_max"] = _score(obj, survey)

    return Event(
        event_id=event_id,
        type=event_type,
        ts=ts,
        tenant=tenant,
        channel=channel,
        direction=direction,
        **fields,
    )


def decode_json(raw: bytes | str) -> Any:
    """``json.loads`` with every failure mapped to ``invalid_json``. The reference decoder: the
    worker and ``ccmon replay`` decode with ``streams.decoding.loads`` (orjson where it gives
    the same value), which falls back to this one for everything else."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        return json.loads(text)
    except UnicodeDecodeError:
        raise InvalidEventError("invalid_json", "not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, deep nesting
        raise InvalidEventError("invalid_json", _preview(str(exc), 120)) from None


#: A JSON decoder: the value of ``raw``, or InvalidEventError (``invalid_json``).
Loads = Callable[[bytes | str], Any]


def parse_line(raw: bytes | str, loads: Loads = decode_json) -> Event:
    """One JSON event (a line of a ``.jsonl`` file, or a one-event Kafka message)."""
    return parse_event(loads(raw))


#: Where an event came from, for the dead-letter topic: its bytes, or (an element of a JSON-array
#: envelope) its decoded object, serialised by :func:`event_bytes` only when it is needed.
Source = bytes | dict[str, Any]


def envelope_items(raw: bytes, loads: Loads = decode_json) -> Iterator[tuple[Source, Event | Rejection]]:
    """The events of one Kafka message value, each with its :data:`Source`: a JSON object, a
    JSON array of objects, or newline-delimited objects. The one envelope splitter (the worker,
    ``ccmon report`` and :func:`iter_envelope` use it); the message is decoded once, whole, by
    ``loads`` (the worker passes ``streams.decoding.loads``, orjson where it is the same).

    A bad event inside an envelope is rejected alone. A rejection carries the raw bytes of just
    the bad event (re-serialised for array elements) so the dead-letter topic receives what
    was wrong, not its neighbours. An accepted event may still be rejected later (by the engine,
    e.g. ``too_late``): its source then goes to the dead-letter topic (:func:`event_bytes`)."""
    try:
        decoded = loads(raw)
    except InvalidEventError as exc:
        if b"\n" not in raw.strip():
            yield bytes(raw), Rejection(bytes(raw), exc.reason, exc.message)
            return
        for line in raw.splitlines():
            if line.strip():
                yield line, _parse_or_reject(line, loads)
        return
    if decoded.__class__ is list:
        for element in decoded:
            try:
                yield element, parse_event(element)
            except InvalidEventError as exc:
                element_raw = _dump(element)
                yield element_raw, Rejection(element_raw, exc.reason, exc.message)
        return
    raw = bytes(raw)
    try:
        yield raw, parse_event(decoded)
    except InvalidEventError as exc:
        yield raw, Rejection(raw, exc.reason, exc.message)


def event_bytes(source: Source) -> bytes:
    """The bytes of an event as it came (an array element re-serialised), for the DLQ."""
    return source if isinstance(source, bytes) else _dump(source)


def iter_envelope(raw: bytes, loads: Loads = decode_json) -> Iterator[Event | Rejection]:
    """The events (and rejections) of one Kafka message value (:func:`envelope_items`)."""
    for _source, parsed in envelope_items(raw, loads):
        yield parsed


def _parse_or_reject(raw: bytes, loads: Loads) -> Event | Rejection:
    try:
        return parse_line(raw, loads)
    except InvalidEventError as exc:
        return Rejection(bytes(raw), exc.reason, exc.message)


def _dump(item: Any) -> bytes:
    try:
        return json.dumps(item, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError, RecursionError):
        return repr(item).encode("utf-8", "replace")
