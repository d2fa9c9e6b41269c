"""Parsing and validation of canonical events (docs/EVENTS.md, kpi_core/events.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness.spec import REQUIRED

from kpi_core.errors import CcmonError, InvalidEventError
from kpi_core.events import EVENT_TYPES, Event, parse_event, parse_instant, parse_line, parse_ts

AT = 1795168800.0  # 2026-11-20T10:00:00Z


def valid(event_type: str = "call.offered", **extra: Any) -> dict[str, Any]:
    """A minimal valid event of ``event_type``."""
    base: dict[str, Any] = {"event_id": "e1", "type": event_type, "ts": AT - 60}
    required = {
        "call.offered": {"call_id": "c1", "queue": "support"},
        "call.answered": {"call_id": "c1", "agent_id": "a1"},
        "call.abandoned": {"call_id": "c1"},
        "call.timeout": {"call_id": "c1"},
        "call.voicemail": {"call_id": "c1"},
        "call.ring_no_answer": {"call_id": "c1", "agent_id": "a1"},
        "call.transferred": {"call_id": "c1"},
        "call.ended": {"call_id": "c1", "talk_seconds": 60},
        "callback.requested": {"callback_id": "cb1", "queue": "support"},
        "callback.attempted": {"callback_id": "cb1", "agent_id": "a1"},
        "agent.state": {"agent_id": "a1", "state": "available"},
        "ticket.created": {"ticket_id": "t1", "queue": "support"},
        "ticket.replied": {"ticket_id": "t1", "author": "agent"},
        "ticket.resolved": {"ticket_id": "t1"},
        "ticket.reopened": {"ticket_id": "t1"},
        "survey.response": {"survey": "csat", "score": 5, "queue": "support"},
        "kb.viewed": {"article_id": "kb1", "session_id": "s1"},
    }[event_type]
    return {**base, **required, **extra}


def reason_of(obj: Any) -> str:
    with pytest.raises(InvalidEventError) as info:
        parse_event(obj)
    return info.value.reason


# --------------------------------------------------------------------------------------
# timestamps
# --------------------------------------------------------------------------------------
SAME_INSTANT = [
    "2026-11-20T10:00:00Z",
    "2026-11-20T10:00:00+00:00",
    "2026-11-20T10:00:00-00:00",
    "2026-11-20T11:00:00+01:00",
    "2026-11-20T05:00:00-05:00",
    "2026-11-20T15:45:00+05:45",
    "2026-11-20T10:00:00.000Z",
    "2026-11-20T11:00:00.000000+01:00",
    "2026-11-21T00:00:00+14:00",
    1795168800,
    1795168800.0,
]


@pytest.mark.parametrize("value", SAME_INSTANT, ids=repr)
def test_timestamps_normalise_to_the_same_utc_epoch(value: Any) -> None:
    assert parse_ts(value) == AT
    assert parse_event(valid(ts=value)).ts == AT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T10:15:02.250+01:00", AT + 3 * 86400 - 3600 + 15 * 60 + 2.25),  # EVENTS.md's example
        ("2026-11-20T10:00:00.5Z", AT + 0.5),
        ("2026-11-20T10:00:00.123456Z", AT + 0.123456),
        (1795168800.25, AT + 0.25),
        ("2026-11-20T10:00:00.250-03:30", AT + 3.5 * 3600 + 0.25),
    ],
    ids=repr,
)
def test_fractional_seconds(value: Any, expected: float) -> None:
    assert parse_ts(value) == pytest.approx(expected, abs=1e-6)


def test_nanosecond_fractions_are_accepted() -> None:
    """RFC 3339 allows any number of fraction digits (Go and Java write nine)."""
    assert parse_ts("2026-11-20T10:00:00.123456789Z") == pytest.approx(AT + 0.123456789, abs=1e-6)


@pytest.mark.parametrize("value", ["2026-11-20T10:00:00z", "2026-11-20t10:00:00z"])
def test_lower_case_z_is_rfc3339(value: str) -> None:
    """RFC 3339 5.6: 'T' and 'Z' may be lower case (was rejected as bad_timestamp)."""
    assert parse_ts(value) == AT


def test_lower_case_t_is_rfc3339() -> None:
    assert parse_ts("2026-11-20t11:00:00+01:00") == AT


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T10:00:00",  # no offset
        "2026-11-20 10:00:00",
        "2026-11-20",
        "10:00:00Z",
        "yesterday",
        "",  # empty counts as missing (see below), not here
        "2026-13-01T00:00:00Z",
        "2026-11-20T25:00:00Z",
        "2026-11-20T10:00:00+24:00",
        "3000-01-01T00:00:00Z",  # year 3000: beyond 2100
        "2100-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        " 2026-11-20T10:00:00Z",
        "2026-11-20T10:00:00Z" + " " * 60,  # too long
        True,
        False,
        None,
        [AT],
        {"ts": AT},
        -1,
        -0.5,
        32503680000,  # year 3000 as epoch seconds
        4102444800,  # 2100-01-01 exactly
        float("nan"),
        float("inf"),
        float("-inf"),
        1e400,
    ],
    ids=repr,
)
def test_bad_timestamps(value: Any) -> None:
    if value in ("", None):
        assert reason_of(valid(ts=value)) == "missing_field:ts"
        return
    with pytest.raises(InvalidEventError) as info:
        parse_ts(value)
    assert info.value.reason == "bad_timestamp"
    assert reason_of(valid(ts=value)) == "bad_timestamp"


#: ISO 8601 forms that datetime.fromisoformat takes (and parse_ts accepted) but RFC 3339 does not.
NOT_RFC3339 = [
    "2026-W47-5T09:00:00Z",  # ISO week date (the example)
    "2026-W47-5T10:00:00+00:00",
    "2026W475T100000Z",
    "2026-324T10:00:00Z",  # ordinal date
    "20261120T100000Z",  # basic format
    "2026-11-20T100000Z",
    "2026-11-20T10:00Z",  # no seconds
    "2026-11-20T10Z",
    "2026-11-20T10:00:00,5Z",  # comma fraction
    "2026-11-20T10:00:00.Z",  # empty fraction
    "2026-11-20T10:00:00+0100",  # offset without a colon
    "2026-11-20T10:00:00+01",  # offset without minutes
    "2026-11-20T10:00:00+01:00:30",  # offset with seconds
    "2026-11-20T10:00:00+01:00.5",
    "2026-11-20T10:00:00.250",  # no offset at all
    "2026-11-20T10:00:00.25+01:00Z",
    "2026-11-20T10:00:00\u00a0Z",
    "\uff12\uff10\uff12\uff16-11-20T10:00:00Z",  # full-width digits
    "2026-11-20T10:00:00.\u0661Z",  # an Arabic-Indic digit in the fraction
    "+2026-11-20T10:00:00Z",
    "2026-11-20T10:00:00ZZ",
    "2026-11-20T10:00:00 Z",
    "2026-11-20T10:00:60Z",  # leap second: fromisoformat cannot represent it
    "2026-02-29T10:00:00Z",  # not a leap year
    "2026-11-31T10:00:00Z",
    "2026-11-20T10:00:00-24:00",
]


@pytest.mark.parametrize("value", NOT_RFC3339, ids=repr)
def test_iso8601_forms_outside_rfc3339_are_rejected(value: str) -> None:
    """They were accepted (datetime.fromisoformat takes ISO 8601); the reason stays bad_timestamp."""
    with pytest.raises(InvalidEventError) as info:
        parse_ts(value)
    assert info.value.reason == "bad_timestamp"
    assert reason_of(valid(ts=value)) == "bad_timestamp"
    assert json.dumps(value)[1:-1][:20] in info.value.message or value[:10] in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20 10:00:00Z", AT),  # RFC 3339 5.6 lets applications use a space
        ("2026-11-20 11:00:00+01:00", AT),
        ("2026-11-20T10:00:00.9999999999Z", AT + 0.999999),  # cut to microseconds, as before
        ("2026-11-20T10:00:00.1z", AT + 0.1),
        ("2024-02-29T10:00:00Z", 1709200800.0),  # a leap day
        ("1970-01-01T00:00:00Z", 0.0),
        ("1969-12-31T23:00:00-01:00", 0.0),  # an offset can bring a 1969 date into range
    ],
    ids=repr,
)
def test_rfc3339_forms_are_accepted(value: str, expected: float) -> None:
    assert parse_ts(value) == pytest.approx(expected, abs=1e-6)


def test_a_missing_offset_says_so() -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_ts("2026-11-20T10:00:00.250")
    assert info.value.message == "ts has no UTC offset: '2026-11-20T10:00:00.250'"
    with pytest.raises(InvalidEventError) as info:
        parse_ts("2026-W47-5T09:00:00Z")
    assert info.value.message == "ts is not RFC 3339: '2026-W47-5T09:00:00Z'"


def test_the_strict_parser_gives_what_fromisoformat_gave() -> None:
    """Same epoch seconds, bit for bit, for the shapes producers write (so a worker upgraded
    mid-stream computes identical windows)."""
    from datetime import datetime

    for value in (
        "2026-11-23T10:15:02.250Z",
        "2026-11-23T10:15:02Z",
        "2026-11-23T10:15:02.123456+05:45",
        "2026-11-23T10:15:02.1-03:30",
        "2026-03-29T01:59:59.999+00:00",
    ):
        assert parse_ts(value) == datetime.fromisoformat(value).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795168800", AT),
        ("1795168800.5", AT + 0.5),
        (" 1795168800 ", AT),
        ("2026-11-20T10:00:00Z", AT),
        ("2026-11-20T11:00:00+01:00", AT),
    ],
)
def test_parse_instant(text: str, expected: float) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize("text", ["2026-W47-5T09:00:00Z", "2026-11-20T10:00:00", "\u00b2", "1e9", "-5", "nan", "", "."])
def test_parse_instant_rejects(text: str) -> None:
    """The same rules as an event's ts. '\u00b2' (a superscript 2) passed str.isdigit() in the
    old --at parsing and then crashed float()."""
    with pytest.raises(InvalidEventError) as info:
        parse_instant(text)
    assert info.value.reason == "bad_timestamp"


def test_epoch_bounds() -> None:
    assert parse_ts(0) == 0.0
    assert parse_ts(4102444799) == 4102444799.0
    assert parse_ts("2099-12-31T23:59:59Z") == 4102444799.0


def test_huge_integer_timestamp_is_rejected_not_a_crash() -> None:
    """An integer json.loads accepts but a float cannot hold (10**400) used to crash parse_ts
    with OverflowError."""
    for value in (10**400, -(10**400)):
        with pytest.raises(InvalidEventError) as info:
            parse_ts(value)
        assert info.value.reason == "bad_timestamp"
    assert reason_of(valid("call.ended", talk_seconds=10**400)) == "invalid_field:talk_seconds"
    assert reason_of(valid("call.answered", wait_seconds=-(10**400))) == "invalid_field:wait_seconds"
    assert reason_of(valid("survey.response", survey="nps", score=10**400)) == "invalid_field:score"


# --------------------------------------------------------------------------------------
# required and invalid fields
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_minimal_valid_event_of_every_type(event_type: str) -> None:
    event = parse_event(valid(event_type))
    assert event.type == event_type
    assert event.event_id == "e1"


MISSING_CASES = [
    (event_type, name, how)
    for event_type, names in REQUIRED.items()
    for name in ("event_id", "ts", *names)
    for how in ("absent", "null", "empty")
]


@pytest.mark.parametrize(("event_type", "name", "how"), MISSING_CASES)
def test_missing_required_field(event_type: str, name: str, how: str) -> None:
    obj = valid(event_type)
    if how == "absent":
        del obj[name]
    else:
        obj[name] = None if how == "null" else ""
    assert reason_of(obj) == f"missing_field:{name}"


def test_missing_type() -> None:
    obj = valid()
    del obj["type"]
    assert reason_of(obj) == "missing_field:type"
    assert reason_of({**valid(), "type": None}) == "missing_field:type"
    assert reason_of({**valid(), "type": ""}) == "missing_field:type"


@pytest.mark.parametrize("value", ["call.made", "CALL.OFFERED", "call", 7, True, ["call.offered"], {"a": 1}])
def test_unknown_type(value: Any) -> None:
    assert reason_of({**valid(), "type": value}) == "unknown_type"


@pytest.mark.parametrize("value", [[1], {"x": 1}, True, 1.5, "x" * 257])
def test_invalid_event_id(value: Any) -> None:
    assert reason_of({**valid(), "event_id": value}) == "invalid_field:event_id"


@pytest.mark.parametrize(
    ("event_type", "field", "value", "reason"),
    [
        ("call.offered", "call_id", ["c1"], "invalid_field:call_id"),
        ("call.offered", "call_id", False, "invalid_field:call_id"),
        ("call.offered", "call_id", "c" * 257, "invalid_field:call_id"),
        ("call.offered", "queue", 5, "invalid_field:queue"),
        ("call.offered", "queue", "q" * 129, "invalid_field:queue"),
        ("call.offered", "queue", "sup\nport", "invalid_field:queue"),
        ("call.offered", "queue", "sup\x00port", "invalid_field:queue"),
        ("call.offered", "queue", "sup\x7fport", "invalid_field:queue"),
        ("call.offered", "queue", "sup\x85port", "invalid_field:queue"),
        ("call.offered", "queue", "_all", "invalid_field:queue"),
        ("call.offered", "tenant", 5, "invalid_field:tenant"),
        ("call.offered", "tenant", "acme\tcorp", "invalid_field:tenant"),
        ("call.offered", "customer_id", {"id": 1}, "invalid_field:customer_id"),
        ("call.offered", "direction", "sideways", "invalid_field:direction"),
        ("call.offered", "direction", True, "invalid_field:direction"),
        ("call.offered", "channel", "fax", "invalid_field:channel"),
        ("call.offered", "channel", "Voice", "invalid_field:channel"),
        ("call.answered", "wait_seconds", "12", "invalid_field:wait_seconds"),
        ("call.answered", "wait_seconds", True, "invalid_field:wait_seconds"),
        ("call.answered", "wait_seconds", -1, "negative_duration"),
        ("call.answered", "wait_seconds", -0.001, "negative_duration"),
        ("call.answered", "wait_seconds", 400 * 86400, "invalid_field:wait_seconds"),
        ("call.answered", "agent_id", ["a"], "invalid_field:agent_id"),
        ("call.ended", "talk_seconds", -5, "negative_duration"),
        ("call.ended", "talk_seconds", "60", "invalid_field:talk_seconds"),
        ("call.ended", "talk_seconds", False, "invalid_field:talk_seconds"),
        ("call.ended", "talk_seconds", [60], "invalid_field:talk_seconds"),
        ("call.ended", "hold_seconds", -1, "negative_duration"),
        ("call.ended", "acw_seconds", -1, "negative_duration"),
        ("call.ended", "resolved", "yes", "invalid_field:resolved"),
        ("call.ended", "resolved", 1, "invalid_field:resolved"),
        ("call.ended", "outcome", 3, "invalid_field:outcome"),
        ("callback.attempted", "connected", "true", "invalid_field:connected"),
        ("agent.state", "state", "busy", "invalid_field:state"),
        ("agent.state", "state", 1, "invalid_field:state"),
        ("agent.state", "queues", "support", "invalid_field:queues"),
        ("agent.state", "queues", ["support", 5], "invalid_field:queues"),
        ("agent.state", "queues", ["_all"], "invalid_field:queues"),
        ("agent.state", "queues", ["a\nb"], "invalid_field:queues"),
        ("agent.state", "queues", [""], "invalid_field:queues"),
        ("ticket.replied", "author", "bot", "invalid_field:author"),
        ("ticket.resolved", "resolution", "fixed", "invalid_field:resolution"),
        ("ticket.resolved", "first_contact", "no", "invalid_field:first_contact"),
        ("survey.response", "survey", "ces2", "invalid_field:survey"),
        ("survey.response", "score", "5", "invalid_field:score"),
        ("survey.response", "score", True, "invalid_field:score"),
        ("survey.response", "score", float("nan"), "invalid_field:score"),
        ("survey.response", "scale_max", 4, "invalid_field:scale_max"),
        ("survey.response", "scale_max", True, "invalid_field:scale_max"),
        ("survey.response", "scale_max", "5", "invalid_field:scale_max"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_invalid_fields(event_type: str, field: str, value: Any, reason: str) -> None:
    assert reason_of(valid(event_type, **{field: value})) == reason


def test_reserved_to_queue_names_the_field() -> None:
    """The reasons table says invalid_field:<name> (was invalid_field:queue)."""
    assert reason_of(valid("call.transferred", to_queue="_all")) == "invalid_field:to_queue"


@pytest.mark.parametrize(
    ("survey", "score", "scale_max"),
    [
        ("csat", 0, None),
        ("csat", 6, None),
        ("csat", 5.5, None),
        ("csat", 4, 3),
        ("csat", 8, 7),
        ("csat", 11, 10),
        ("csat", 0, 10),
        ("csat", -1, 5),
        ("nps", -1, None),
        ("nps", 11, None),
        ("nps", 10.5, None),
        ("ces", 0, None),
        ("ces", 8, None),
        ("ces", 7.01, None),
    ],
)
def test_scores_out_of_range(survey: str, score: float, scale_max: int | None) -> None:
    obj = valid("survey.response", survey=survey, score=score)
    if scale_max is not None:
        obj["scale_max"] = scale_max
    assert reason_of(obj) == "score_out_of_range"


# --------------------------------------------------------------------------------------
# defaults and kept values
# --------------------------------------------------------------------------------------
def test_defaults() -> None:
    offered = parse_event(valid("call.offered"))
    assert offered.tenant == "default"
    assert offered.channel == "voice"
    assert offered.direction == "inbound"
    for event_type in sorted(t for t in EVENT_TYPES if t.startswith("call.")):
        assert parse_event(valid(event_type)).channel == "voice", event_type
    assert parse_event(valid("ticket.resolved")).resolution == "solved"
    assert parse_event(valid("ticket.created")).channel is None
    assert parse_event(valid("call.offered", direction="outbound")).direction == "outbound"
    assert parse_event(valid("call.offered", channel="chat")).channel == "chat"
    assert parse_event(valid("ticket.resolved", resolution="unresolvable")).resolution == "unresolvable"
    assert parse_event(valid("call.offered", tenant="acme")).tenant == "acme"
    assert parse_event(valid("call.offered", tenant="")).tenant == "default"


def test_fields_are_typed() -> None:
    event = parse_event(
        valid(
            "call.ended",
            talk_seconds=61,
            hold_seconds=2.5,
            acw_seconds=0,
            resolved=False,
            outcome="sale",
            queue="support",
            extra_field={"kept": "in raw only"},
        )
    )
    assert event == Event(
        event_id="e1",
        type="call.ended",
        ts=AT - 60,
        queue="support",
        channel="voice",
        call_id="c1",
        talk_seconds=61.0,
        hold_seconds=2.5,
        acw_seconds=0.0,
        resolved=False,
        outcome="sale",
    )
    assert isinstance(event.talk_seconds, float)


def test_integer_ids_become_strings() -> None:
    event = parse_event(valid("call.offered", event_id=17, call_id=42, customer_id=7))
    assert (event.event_id, event.call_id, event.customer_id) == ("17", "42", "7")


def test_agent_queues_are_a_sorted_set() -> None:
    event = parse_event(valid("agent.state", queues=["sales", "support", "sales"]))
    assert event.queues == ("sales", "support")
    assert parse_event(valid("agent.state")).queues is None
    assert parse_event(valid("agent.state", queues=[])).queues == ()


@pytest.mark.parametrize(
    ("scale_max", "score", "expected"),
    [
        (3, 3, 3.0),
        (3, 1, 1.0),
        (5, 5, 5.0),
        (5, 1, 1.0),
        (7, 7, 7.0),
        (10, 10, 10.0),
        (10, 1, 1.0),
        (10.0, 9, 9.0),
        (None, 4, 4.0),
    ],
)
def test_csat_scales(scale_max: Any, score: float, expected: float) -> None:
    obj = valid("survey.response", survey="csat", score=score)
    if scale_max is not None:
        obj["scale_max"] = scale_max
    event = parse_event(obj)
    assert event.score == expected
    assert event.scale_max == (int(scale_max) if scale_max is not None else 5)


def test_nps_and_ces_ranges() -> None:
    assert parse_event(valid("survey.response", survey="nps", score=0)).score == 0.0
    assert parse_event(valid("survey.response", survey="nps", score=10)).score == 10.0
    assert parse_event(valid("survey.response", survey="ces", score=1)).score == 1.0
    assert parse_event(valid("survey.response", survey="ces", score=7)).score == 7.0
    assert parse_event(valid("survey.response", survey="nps", score=10)).scale_max is None


# --------------------------------------------------------------------------------------
# lines and errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b"null", "not_an_object"),
        (b'"call.offered"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"{}", "missing_field:type"),
    ],
)
def test_parse_line_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_line(raw)
    assert info.value.reason == reason


def test_parse_line_accepts_str_and_bytes_with_newline() -> None:
    line = json.dumps(valid())
    assert parse_line(line) == parse_line(line.encode() + b"\r\n")


def test_invalid_event_error_is_a_value_error_and_a_ccmon_error() -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_event({})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CcmonError)
    assert info.value.message
    assert str(info.value).startswith("missing_field:type")


def test_error_messages_are_bounded() -> None:
    """The human message may echo input, truncated: a 1 MB queue name does not end up in it."""
    with pytest.raises(InvalidEventError) as info:
        parse_event(valid(queue="q" * 1_000_000))
    assert len(info.value.message) < 500


@pytest.mark.parametrize("field", ["queue", "tenant", "agent_id", "event_id", "call_id", "customer_id"])
def test_lone_surrogates_in_names_are_rejected(field: str) -> None:
    """A lone surrogate escape is valid JSON but not text: accepted, it made `ccmon replay`
    crash printing the metrics (UnicodeEncodeError)."""
    raw = json.dumps(valid(**{field: "sup\ud800port"}))  # json.dumps escapes it as \ud800
    assert "\\ud800" in raw
    with pytest.raises(InvalidEventError) as info:
        parse_line(raw.encode())
    assert info.value.reason == f"invalid_field:{field}"
