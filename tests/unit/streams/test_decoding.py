"""Decoding at volume (issue #16 item 6): one envelope splitter, orjson where it decodes as
``json.loads`` does, and a validation fast path that accepts what the full validation accepts.

* ``streams.decoding.loads`` against ``kpi_core.events.decode_json`` (``json.loads``): the same
  value, or the same ``invalid_json`` message, on any bytes and on JSON with the known
  differences (NaN/Infinity literals, big integers, duplicate keys, invalid UTF-8, lone
  surrogates, top-level scalars, deep nesting, which crashes orjson 3.8 unguarded);
* ``kpi_core.events._fast_event`` against the full validation ``_validate``: on random valid
  events (most of which it must take) and hostile ones, it returns the same Event or None;
  ``parse_event`` returns the same Event or raises with the same reason and message;
* ``kpi_core.events.envelope_items``, the one splitter (the worker's ``split_envelope`` is it with
  ``streams.decoding.loads``): the raw bytes of every event for the dead-letter topic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from harness.hostile import events as hostile_events
from harness.hostile import json_values as hostile_values
from harness.paths import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kpi_core.errors import InvalidEventError
from kpi_core.events import (
    EVENT_TYPES,
    Event,
    Rejection,
    _fast_event,
    _validate,
    decode_json,
    envelope_items,
    event_bytes,
    iter_envelope,
    parse_event,
)
from streams import decoding
from streams.worker import split_envelope

sys.path.insert(0, str(REPO / "bench"))
from gen_events import generate


def outcome(decode: Any, raw: bytes | str) -> tuple[str, str]:
    """What a decoder makes of ``raw``: ('value', repr) or ('invalid_json', message). repr tells
    an int from a float, keeps key order, and makes NaN equal to NaN."""
    try:
        return "value", repr(decode(raw))
    except InvalidEventError as exc:
        return exc.reason, exc.message


def same_decoding(raw: bytes | str) -> None:
    assert outcome(decoding.loads, raw) == outcome(decode_json, raw)


# -- orjson decodes as json.loads does -----------------------------------------------------------
KNOWN_DIFFERENCES = [
    b'{"wait_seconds": NaN}',
    b'{"ts": Infinity}',
    b"-Infinity",
    b"[1e400, -1e400]",
    b"1.7976931348623157e309",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"123456789012345678901234567890",
    b'{"call_id": 4915112345678901234567}',
    b"9223372036854775807",
    b"-9223372036854775808",
    b'{"a": 1, "b": 2, "a": 3}',
    b'"\\ud800"',
    b'{"queue": "sup\\udfffport"}',
    b'"\xed\xa0\x80"',
    b"\xff\xfe{}",
    b'{"queue": "\xc3"}',
    b"\xef\xbb\xbf{}",
    b"42",
    b'"x"',
    b"null",
    b"true",
    b"-0",
    b"-0.0",
    b"[" * 2000 + b"]" * 2000,
    b"[" * 100_000,
    b'{"a": 1}\n{"b": 2}',
    b"",
    b" \r\n",
    b'{"a": "\x01"}',
    b"1E5",
    b"0.1e-400",
    b"[1.0, 1e22, 5e-324]",
]


@pytest.mark.parametrize("raw", KNOWN_DIFFERENCES)
def test_known_orjson_differences_decode_as_json_loads(raw: bytes) -> None:
    same_decoding(raw)
    same_decoding(raw.decode("utf-8", "surrogatepass") if raw.isascii() else raw)


def test_a_big_numeric_id_stays_exact() -> None:
    """orjson alone would make the id a float (and the event invalid_field:call_id)."""
    raw = b'{"event_id": "e1", "type": "call.abandoned", "ts": 1795165200, "call_id": 4915112345678901234567}'
    [(source, event)] = list(split_envelope(raw))
    assert isinstance(event, Event) and event.call_id == "4915112345678901234567"
    assert source == raw


def test_nan_in_an_envelope_is_judged_per_event_as_before() -> None:
    """orjson refuses NaN; json.loads takes it and the event is rejected alone, by its field."""
    good = {"event_id": "e1", "type": "call.abandoned", "ts": 1795165200, "call_id": "c1"}
    raw = (
        "[" + json.dumps(good) + ', {"event_id": "e2", "type": "call.ended", "ts": 1795165200, '
        '"call_id": "c1", "talk_seconds": NaN}]'
    ).encode()
    items = [parsed for _raw, parsed in split_envelope(raw)]
    assert isinstance(items[0], Event)
    assert isinstance(items[1], Rejection) and items[1].reason == "invalid_field:talk_seconds"
    assert items == list(iter_envelope(raw))


def test_deep_nesting_does_not_crash_the_process() -> None:
    """orjson 3.8 has no nesting limit and dies of a segmentation fault ~1,000,000 levels deep;
    the bracket guard leaves such input to json.loads (invalid_json). In a subprocess, so a
    crash fails this test rather than killing the test run."""
    code = (
        "from streams.decoding import loads\nfrom kpi_core.errors import InvalidEventError\n"
        "try:\n    loads(b'[' * 1_000_000 + b']' * 1_000_000)\nexcept InvalidEventError as exc:\n"
        "    print(exc.reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert done.stdout.strip() == "invalid_json"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_decode_as_json_loads(raw: bytes) -> None:
    same_decoding(raw)


numbers = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400]),
)
texts = st.text(max_size=8) | st.sampled_from(["\ud800", "a\udfffb", "\x00", "ü", "📞"])


def to_json(value: Any, draw: Any) -> str:
    """JSON text of ``value`` with the liberties of real input: NaN/Infinity literals, big
    numbers, duplicate keys, escaped or raw non-ASCII, various whitespace."""
    if isinstance(value, dict):
        items = [(json.dumps(k, ensure_ascii=draw(st.booleans())), to_json(v, draw)) for k, v in value.items()]
        if items and draw(st.booleans()):
            items.append((items[0][0], to_json(draw(numbers), draw)))  # a duplicate key
        space = draw(st.sampled_from(["", " ", "\n", "\t\r\n "]))
        return "{" + ",".join(f"{space}{k}{space}:{v}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(v, draw) for v in value) + "]"
    return json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)


json_trees = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_trees, st.data())
def test_any_json_decodes_as_json_loads(value: Any, data: st.DataObject) -> None:
    text = to_json(value, data.draw)
    raw = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate is invalid UTF-8
    same_decoding(raw)
    same_decoding(text)


# -- the fast path accepts what the full validation accepts -------------------------------------------
def sample_events() -> list[dict[str, Any]]:
    """Valid events of every kind the generator makes, with RFC 3339 times, tenants, channels."""
    out = []
    for i, event in enumerate(generate(3000, 7, seed=5)):
        if i % 3 == 0:
            event["ts"] = f"2026-11-20T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}.{i % 1000:03d}Z"
        if i % 5 == 0:
            event["tenant"] = f"tenant-{i % 4}"
        out.append(event)
    out += [
        {"event_id": "k1", "type": "kb.viewed", "ts": 1795165200.5, "article_id": "a1", "session_id": "s1"},
        {"event_id": "t1", "type": "ticket.resolved", "ts": "2026-11-20T09:30:00+01:00", "ticket_id": "t1"},
        {
            "event_id": "x1",
            "type": "call.transferred",
            "ts": 1795165200,
            "call_id": "c1",
            "to_queue": "q2",
            "channel": "chat",
            "wait_seconds": 3.5,
        },
        {"event_id": "o1", "type": "call.offered", "ts": 1795165200, "call_id": "c1", "queue": "q", "priority": 9},
        {
            "event_id": "s1",
            "type": "agent.state",
            "ts": 1795165200,
            "agent_id": "a1",
            "state": "away",
            "reason": "lunch",
            "queues": ["q2", "q1", "q2"],
        },
    ]
    return out


SAMPLE = sample_events()


def same_validation(obj: Any) -> None:
    fast = _fast_event(obj) if type(obj) is dict else None
    try:
        full: Event | tuple[str, str] = _validate(obj)
    except InvalidEventError as exc:
        full = (exc.reason, exc.message)
    assert fast is None or fast == full
    try:
        assert parse_event(obj) == full
    except InvalidEventError as exc:
        assert (exc.reason, exc.message) == full


def test_the_fast_path_takes_the_usual_events() -> None:
    taken = [event for event in SAMPLE if _fast_event(event) is not None]
    assert {e["type"] for e in taken} == {e["type"] for e in SAMPLE} - {"survey.response"}
    assert len(taken) > 0.9 * len(SAMPLE)
    for event in SAMPLE:
        same_validation(event)


@pytest.mark.parametrize("scale_max", [[5], {"max": 5}, [], "5", 5.5])
def test_an_unhashable_scale_max_is_rejected_not_a_crash(scale_max: object) -> None:
    """``scale_max: [5]`` raised TypeError (unhashable, looked up in a set) out of parse_event:
    through the worker's splitter it failed the whole batch. Found by the test below."""
    event = {
        "event_id": "e1",
        "type": "survey.response",
        "ts": 1795165200,
        "queue": "q",
        "survey": "csat",
        "score": 4,
        "scale_max": scale_max,
    }
    with pytest.raises(InvalidEventError) as info:
        parse_event(event)
    assert info.value.reason == "invalid_field:scale_max"
    [(_raw, rejection)] = list(split_envelope(json.dumps([event]).encode()))
    assert isinstance(rejection, Rejection) and rejection.reason == "invalid_field:scale_max"


#: Values that make a field unusual or wrong (or, in the right field, usual).
ODD = [
    None,
    "",
    "_all",
    "ü",
    "a\x00",
    "\x7f",
    "a b",
    "x" * 128,
    "x" * 129,
    "x" * 256,
    "x" * 257,
    "\ud800",
    0,
    -1,
    -0.0,
    1.5,
    3.0,
    True,
    False,
    10,
    31_622_400,
    31_622_401,
    float("nan"),
    float("inf"),
    2**64,
    [],
    ["q"],
    ["_all"],
    ["ü"],
    ["q", ""],
    ["q"] * 1001,
    {"a": 1},
    "voice",
    "sms",
    "outbound",
    "away",
    "customer",
    "unresolvable",
    "csat",
    "enps",
    "2026-11-20T09:30:00Z",
    "2026-11-20t09:30:00z",
    "2026-11-20T09:30:00",
    4_102_444_800,
    1795165200,
    "call.ended",
    "agent.state",
]
FIELDS = sorted(
    {
        "event_id",
        "type",
        "ts",
        "tenant",
        "queue",
        "channel",
        "direction",
        "call_id",
        "customer_id",
        "agent_id",
        "wait_seconds",
        "talk_seconds",
        "hold_seconds",
        "acw_seconds",
        "resolved",
        "outcome",
        "to_queue",
        "callback_id",
        "connected",
        "state",
        "queues",
        "ticket_id",
        "author",
        "resolution",
        "first_contact",
        "kb_session_id",
        "contact_id",
        "article_id",
        "session_id",
        "reason",
        "priority",
        "survey",
        "score",
        "scale_max",
        "note",
    }
)
#: One valid event of each type (and shape) of the sample.
TEMPLATES = list({(e["type"], tuple(sorted(e))): e for e in SAMPLE}.values())


def test_fast_path_and_full_validation_agree_on_every_one_field_change() -> None:
    """Every template with one field changed to every odd value, or removed."""
    for event in TEMPLATES:
        for name in FIELDS:
            same_validation({k: v for k, v in event.items() if k != name})
            for value in ODD:
                same_validation({**event, name: value})


odd_values = st.one_of(st.sampled_from(ODD), hostile_values)
fields = st.sampled_from(FIELDS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLE), st.lists(st.tuples(fields, odd_values), max_size=3), st.booleans())
def test_fast_path_and_full_validation_agree_on_changed_events(
    event: dict[str, Any], changes: list[tuple[str, Any]], drop: bool
) -> None:
    changed = dict(event)
    for name, value in changes:
        if drop:
            changed.pop(name, None)
        else:
            changed[name] = value
    same_validation(changed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_events | hostile_values, st.sampled_from(sorted(EVENT_TYPES)))
def test_fast_path_and_full_validation_agree_on_hostile_input(value: Any, event_type: str) -> None:
    same_validation(value)
    if isinstance(value, dict):
        same_validation({**value, "type": event_type})


# -- the one splitter ---------------------------------------------------------------------------------
GOOD = {"event_id": "e1", "type": "call.offered", "ts": 1795165200, "queue": "q", "call_id": "c"}
BAD = {"event_id": "e2", "type": "call.offered", "ts": "yesterday", "queue": "q", "call_id": "c"}
CASES = [
    json.dumps(GOOD).encode(),
    json.dumps(BAD).encode(),
    json.dumps([GOOD, BAD, 3, None, {"type": "nope"}]).encode(),
    (json.dumps(GOOD) + "\n" + json.dumps(BAD) + "\n\nnot json\n").encode(),
    b"not json at all",
    b"\xff\xfe",
    b"[]",
    b"null",
    json.dumps([{**GOOD, "queue": "ü"}], ensure_ascii=False).encode(),
    b'[{"event_id": "e3", "type": "call.ended", "ts": 1795165200, "call_id": "c", "talk_seconds": NaN}]',
]


@pytest.mark.parametrize("raw", CASES)
def test_the_splitter_keeps_the_bytes_of_every_event(raw: bytes) -> None:
    items = list(envelope_items(raw))
    worker = list(split_envelope(raw))
    assert [parsed for _source, parsed in worker] == [parsed for _source, parsed in items] == list(iter_envelope(raw))
    assert [event_bytes(source) for source, _parsed in items] == [raw_bytes for raw_bytes, _parsed in worker]
    for source, parsed in items:
        if isinstance(parsed, Rejection):
            assert source == parsed.raw  # what the DLQ gets: just this event
        else:
            assert json.loads(event_bytes(source))["event_id"] == parsed.event_id


def test_accepted_array_elements_are_serialised_only_for_the_dlq() -> None:
    [(source, event)] = list(envelope_items(json.dumps([GOOD]).encode()))
    assert source == GOOD and isinstance(event, Event)  # the decoded object, not bytes yet
    assert json.loads(event_bytes(source)) == GOOD
    single = json.dumps(GOOD).encode()
    assert next(iter(envelope_items(single)))[0] == single


@given(
    st.lists(st.one_of(st.just(GOOD), st.just(BAD), hostile_values), max_size=5), st.sampled_from(["array", "ndjson"])
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_worker_splits_as_iter_envelope(items: list[object], shape: str) -> None:
    texts = [json.dumps(item, allow_nan=True) for item in items]
    raw = ("[" + ",".join(texts) + "]" if shape == "array" else "\n".join(texts)).encode()
    assert [parsed for _raw, parsed in split_envelope(raw)] == list(iter_envelope(raw))
