"""Hostile input: it is rejected with the documented reason, counted, and never changes a KPI
or stops the stream (docs/EVENTS.md, "Bad input").

The hostile lines are generated here (no fixture file): binary junk, invalid UTF-8, NaN and
Infinity, enormous numbers, 100,000-deep nesting, 1 MB strings, wrong types for every field,
unknown types, negative durations, out-of-range scores, control characters in names, the
reserved queue ``_all``, non-objects, bad timestamps. They are mixed into the golden file and
``ccmon replay`` must print exactly the golden-only KPIs.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness.paths import REPO
from prometheus_client.parser import text_string_to_metric_families

from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, Rejection, iter_envelope, parse_line

GOLDEN = REPO / "tests" / "golden" / "basic.jsonl"
AT = "2026-11-20T10:00:00Z"
TS = 1795165300  # inside the golden file's hour
MB = 1_000_000

#: Pipeline series that are allowed (and expected) to differ.
PIPELINE = ("ccmon_events_rejected_total", "ccmon_events_duplicate_total")


def ev(event_type: str = "call.offered", **fields: Any) -> dict[str, Any]:
    """A valid event of ``event_type`` (in a queue of its own), to be broken one field at a time."""
    required: dict[str, dict[str, Any]] = {
        "call.offered": {"call_id": "hx", "queue": "hostile"},
        "call.answered": {"call_id": "hx", "agent_id": "a1", "queue": "hostile"},
        "call.abandoned": {"call_id": "hx", "queue": "hostile"},
        "call.transferred": {"call_id": "hx", "queue": "hostile"},
        "call.ended": {"call_id": "hx", "talk_seconds": 10, "queue": "hostile"},
        "callback.requested": {"callback_id": "hcb", "queue": "hostile", "customer_id": "cust11"},
        "callback.attempted": {"callback_id": "hcb", "agent_id": "a1"},
        "agent.state": {"agent_id": "ha", "state": "available", "queues": ["hostile"]},
        "ticket.created": {"ticket_id": "ht", "queue": "hostile"},
        "ticket.replied": {"ticket_id": "t1", "author": "agent"},
        "ticket.resolved": {"ticket_id": "t2"},
        "survey.response": {"survey": "csat", "score": 5, "queue": "hostile"},
        "kb.viewed": {"article_id": "kb1", "session_id": "s1"},
    }
    return {"event_id": "h", "type": event_type, "ts": TS, **required[event_type], **fields}


def line(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def raw_with(obj: dict[str, Any], name: str, literal: str) -> bytes:
    """``obj`` as JSON with field ``name`` set to a raw JSON ``literal`` (NaN, 1e400...)."""
    obj = {**obj, name: "@@"}
    return json.dumps(obj).replace('"@@"', literal).encode()


WRONG_TYPES: list[tuple[str, str, Any, str]] = [
    # (event type, field, wrong value, reason)
    ("call.offered", "event_id", ["h"], "invalid_field:event_id"),
    ("call.offered", "type", 5, "unknown_type"),
    ("call.offered", "ts", {"s": 1}, "bad_timestamp"),
    ("call.offered", "tenant", 5, "invalid_field:tenant"),
    ("call.offered", "queue", 5, "invalid_field:queue"),
    ("call.offered", "channel", 5, "invalid_field:channel"),
    ("call.offered", "call_id", [], "invalid_field:call_id"),
    ("call.offered", "customer_id", {}, "invalid_field:customer_id"),
    ("call.offered", "direction", 1, "invalid_field:direction"),
    ("call.answered", "agent_id", 1, "invalid_field:agent_id"),
    ("call.answered", "wait_seconds", "3", "invalid_field:wait_seconds"),
    ("call.ended", "talk_seconds", "3", "invalid_field:talk_seconds"),
    ("call.ended", "hold_seconds", [], "invalid_field:hold_seconds"),
    ("call.ended", "acw_seconds", {}, "invalid_field:acw_seconds"),
    ("call.ended", "resolved", "true", "invalid_field:resolved"),
    ("call.ended", "outcome", 1, "invalid_field:outcome"),
    ("call.transferred", "to_queue", 1, "invalid_field:to_queue"),
    ("callback.requested", "callback_id", [], "invalid_field:callback_id"),
    ("callback.attempted", "connected", 1, "invalid_field:connected"),
    ("agent.state", "state", 1, "invalid_field:state"),
    ("agent.state", "queues", "hostile", "invalid_field:queues"),
    ("ticket.created", "ticket_id", [], "invalid_field:ticket_id"),
    ("ticket.created", "kb_session_id", [], "invalid_field:kb_session_id"),
    ("ticket.replied", "author", 1, "invalid_field:author"),
    ("ticket.resolved", "resolution", 1, "invalid_field:resolution"),
    ("ticket.resolved", "first_contact", "x", "invalid_field:first_contact"),
    ("survey.response", "survey", 1, "invalid_field:survey"),
    ("survey.response", "score", "5", "invalid_field:score"),
    ("survey.response", "scale_max", "5", "invalid_field:scale_max"),
    ("survey.response", "contact_id", [], "invalid_field:contact_id"),
    ("kb.viewed", "article_id", [], "invalid_field:article_id"),
    ("kb.viewed", "session_id", {}, "invalid_field:session_id"),
]


def hostile_lines() -> list[tuple[str, bytes, list[str]]]:
    """(what, raw bytes of one line or more, the reason each resulting line is rejected with)."""
    cases: list[tuple[str, bytes, list[str]]] = [
        ("binary junk", bytes(range(256)).replace(b"\n", b""), ["invalid_json"]),
        ("NUL bytes", b"\x00" * 64, ["invalid_json"]),
        ("invalid UTF-8 in a string", line(ev()).replace(b"hostile", b"host\xffile"), ["invalid_json"]),
        ("overlong UTF-8", line(ev()).replace(b"hostile", b"host\xc0\xafile"), ["invalid_json"]),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + line(ev()), ["invalid_json"]),
        ("truncated JSON", line(ev())[:-5], ["invalid_json"]),
        ("trailing garbage", line(ev()) + b" ,x", ["invalid_json"]),
        ("two objects on a line", line(ev()) + line(ev(event_id="h2")), ["invalid_json"]),
        ("single quotes", line(ev()).replace(b'"', b"'"), ["invalid_json"]),
        ("NaN ts", raw_with(ev(), "ts", "NaN"), ["bad_timestamp"]),
        ("Infinity ts", raw_with(ev(), "ts", "Infinity"), ["bad_timestamp"]),
        ("-Infinity ts", raw_with(ev(), "ts", "-Infinity"), ["bad_timestamp"]),
        ("NaN wait", raw_with(ev("call.answered"), "wait_seconds", "NaN"), ["invalid_field:wait_seconds"]),
        ("Infinity talk", raw_with(ev("call.ended"), "talk_seconds", "Infinity"), ["invalid_field:talk_seconds"]),
        ("-Infinity hold", raw_with(ev("call.ended"), "hold_seconds", "-Infinity"), ["invalid_field:hold_seconds"]),
        ("NaN score", raw_with(ev("survey.response"), "score", "NaN"), ["invalid_field:score"]),
        ("10^5000 ts", raw_with(ev(), "ts", "1" + "0" * 5000), ["invalid_json"]),
        ("10^5000 score", raw_with(ev("survey.response"), "score", "1" + "0" * 5000), ["invalid_json"]),
        ("10^5000 call id", raw_with(ev(), "call_id", "9" * 5000), ["invalid_json"]),
        ("1e400 ts", raw_with(ev(), "ts", "1e400"), ["bad_timestamp"]),
        ("1e400 wait", raw_with(ev("call.answered"), "wait_seconds", "1e400"), ["invalid_field:wait_seconds"]),
        ("-1e400 talk", raw_with(ev("call.ended"), "talk_seconds", "-1e400"), ["invalid_field:talk_seconds"]),
        ("1e400 score", raw_with(ev("survey.response", survey="nps"), "score", "1e400"), ["invalid_field:score"]),
        ("1e-400 ts (underflows to 0: 1970)", raw_with(ev(), "ts", "1e-400"), ["too_late"]),
        ("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, ["invalid_json"]),
        ("100k nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, ["invalid_json"]),
        ("100k nested in a field", raw_with(ev(), "extra", "[" * 100_000 + "]" * 100_000), ["invalid_json"]),
        ("1 MB queue", line(ev(queue="q" * MB)), ["invalid_field:queue"]),
        ("1 MB event id", line(ev(event_id="e" * MB)), ["invalid_field:event_id"]),
        ("1 MB customer id", line(ev(customer_id="c" * MB)), ["invalid_field:customer_id"]),
        ("1 MB ts", line(ev(ts="2" * MB)), ["bad_timestamp"]),
        ("1 MB type", line(ev(type="t" * MB)), ["unknown_type"]),
        ("1 MB of spaces then junk", b" " * MB + b"x", ["invalid_json"]),
        ("unknown type", line(ev(type="call.exploded")), ["unknown_type"]),
        ("type in capitals", line(ev(type="CALL.OFFERED")), ["unknown_type"]),
        ("type null", line(ev(type=None)), ["missing_field:type"]),
        ("bool ts", line(ev(ts=True)), ["bad_timestamp"]),
        ("bool false ts", line(ev(ts=False)), ["bad_timestamp"]),
        ("bool wait", line(ev("call.answered", wait_seconds=True)), ["invalid_field:wait_seconds"]),
        ("bool talk", line(ev("call.ended", talk_seconds=False)), ["invalid_field:talk_seconds"]),
        ("bool score", line(ev("survey.response", score=True)), ["invalid_field:score"]),
        ("bool scale", line(ev("survey.response", scale_max=True)), ["invalid_field:scale_max"]),
        ("bool call id", line(ev(call_id=True)), ["invalid_field:call_id"]),
        ("negative wait", line(ev("call.answered", wait_seconds=-1)), ["negative_duration"]),
        ("negative talk", line(ev("call.ended", talk_seconds=-5)), ["negative_duration"]),
        ("negative hold", line(ev("call.ended", hold_seconds=-0.5)), ["negative_duration"]),
        ("negative acw", line(ev("call.ended", acw_seconds=-1)), ["negative_duration"]),
        ("csat 6 of 5", line(ev("survey.response", score=6)), ["score_out_of_range"]),
        ("csat 0", line(ev("survey.response", score=0)), ["score_out_of_range"]),
        ("csat 4 of 3", line(ev("survey.response", score=4, scale_max=3)), ["score_out_of_range"]),
        ("nps 11", line(ev("survey.response", survey="nps", score=11)), ["score_out_of_range"]),
        ("nps -1", line(ev("survey.response", survey="nps", score=-1)), ["score_out_of_range"]),
        ("ces 0", line(ev("survey.response", survey="ces", score=0)), ["score_out_of_range"]),
        ("ces 8", line(ev("survey.response", survey="ces", score=8)), ["score_out_of_range"]),
        ("csat scale 4", line(ev("survey.response", scale_max=4)), ["invalid_field:scale_max"]),
        ("newline in queue", line(ev(queue="sup\nport")), ["invalid_field:queue"]),
        ("tab in tenant", line(ev(tenant="de\tfault")), ["invalid_field:tenant"]),
        ("bell in queue", line(ev(queue="sup\x07port")), ["invalid_field:queue"]),
        ("DEL in queue", line(ev(queue="sup\x7fport")), ["invalid_field:queue"]),
        ("C1 control in agent id", line(ev("call.answered", agent_id="a\x9b1")), ["invalid_field:agent_id"]),
        ("CR in agent queues", line(ev("agent.state", queues=["hos\rtile"])), ["invalid_field:queues"]),
        ("raw CR in a JSON string", line(ev()).replace(b"hostile", b"host\rile"), ["invalid_json"]),
        # a raw newline inside a string splits the line in two: both halves are rejected
        ("raw newline in a JSON string", line(ev()).replace(b"hostile", b"host\nile"), ["invalid_json"] * 2),
        ("_all as queue", line(ev(queue="_all")), ["invalid_field:queue"]),
        ("_all in agent queues", line(ev("agent.state", queues=["support", "_all"])), ["invalid_field:queues"]),
        ("_all as callback queue", line(ev("callback.requested", queue="_all")), ["invalid_field:queue"]),
        ("null", b"null", ["not_an_object"]),
        ("array", b"[]", ["not_an_object"]),
        ("array of events (a .jsonl line is one event)", line([ev(event_id="h-arr")]), ["not_an_object"]),
        ("number", b"42", ["not_an_object"]),
        ("string", b'"call.offered"', ["not_an_object"]),
        ("true", b"true", ["not_an_object"]),
        ("empty object", b"{}", ["missing_field:type"]),
        ("no event id", line({k: v for k, v in ev().items() if k != "event_id"}), ["missing_field:event_id"]),
        ("empty event id", line(ev(event_id="")), ["missing_field:event_id"]),
        ("null ts", line(ev(ts=None)), ["missing_field:ts"]),
        ("no call id", line({k: v for k, v in ev().items() if k != "call_id"}), ["missing_field:call_id"]),
        ("no queue on offer", line({k: v for k, v in ev().items() if k != "queue"}), ["missing_field:queue"]),
        (
            "no talk_seconds",
            line({k: v for k, v in ev("call.ended").items() if k != "talk_seconds"}),
            ["missing_field:talk_seconds"],
        ),
        ("no agent on answer", line(ev("call.answered", agent_id=None)), ["missing_field:agent_id"]),
        ("no queue on survey", line(ev("survey.response", queue="")), ["missing_field:queue"]),
        ("ts without offset", line(ev(ts="2026-11-20T09:00:00")), ["bad_timestamp"]),
        ("ts date only", line(ev(ts="2026-11-20")), ["bad_timestamp"]),
        ("ts in year 3000", line(ev(ts="3000-01-01T00:00:00Z")), ["bad_timestamp"]),
        ("epoch in year 3000", line(ev(ts=32503680000)), ["bad_timestamp"]),
        ("negative epoch", line(ev(ts=-1)), ["bad_timestamp"]),
        ("ts words", line(ev(ts="now")), ["bad_timestamp"]),
        # (a survey answer: replay carries call, callback, agent and ticket events that old)
        ("ts older than every window", line(ev("survey.response", ts=TS - 86400)), ["too_late"]),
        ("ts on 1970-01-01", line(ev(ts=0)), ["too_late"]),
    ]
    for event_type, field, value, reason in WRONG_TYPES:
        cases.append((f"wrong type: {event_type}.{field}", line(ev(event_type, **{field: value})), [reason]))
    return cases


HOSTILE = hostile_lines()


# --------------------------------------------------------------------------------------
# each hostile line on its own
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("what", "raw", "reasons"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_line_reason(what: str, raw: bytes, reasons: list[str]) -> None:
    got = []
    for piece in raw.split(b"\n"):
        try:
            parse_line(piece)
            got.append("too_late")  # parses: only the engine's lateness check rejects it
        except InvalidEventError as exc:
            got.append(exc.reason)
    assert got == reasons


# --------------------------------------------------------------------------------------
# the golden file with hostile lines mixed in, through `ccmon replay`
# --------------------------------------------------------------------------------------
def ccmon_command() -> list[str]:
    exe = shutil.which("ccmon")
    if exe is not None:
        return [exe]
    return [sys.executable, "-c", "import sys; from streams.cli import main; sys.exit(main())"]


def run_replay(path: Path) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    proc = subprocess.run(
        [*ccmon_command(), "replay", str(path), "--at", AT], capture_output=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    samples = {}
    for family in text_string_to_metric_families(proc.stdout.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, proc.stderr.decode(errors="replace")


def duplicates_of_golden() -> list[bytes]:
    """Golden events sent again, with junk extra fields: duplicates change nothing."""
    out = []
    for raw in GOLDEN.read_bytes().splitlines()[:10]:
        obj = json.loads(raw)
        obj["extra"] = {"note": "x" * 10_000, "nested": [[[1]]]}
        out.append(line(obj))
    return out


@pytest.fixture(scope="module")
def golden_only(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, float]:
    if not GOLDEN.exists():
        pytest.skip(f"no golden file at {GOLDEN}")
    samples, stderr = run_replay(GOLDEN)
    assert "0 rejected" in stderr
    return samples


def test_hostile_lines_mixed_into_golden_change_no_kpi(tmp_path: Path, golden_only: dict[Any, float]) -> None:
    golden = GOLDEN.read_bytes().splitlines()
    extra: list[bytes] = [raw for _what, raw, _reasons in HOSTILE] + duplicates_of_golden()
    extra += [b"", b"   ", b"\t"]  # blank lines are skipped, not rejected
    rng = random.Random(20261120)
    mixed = list(golden)
    for raw in extra:
        mixed.insert(rng.randrange(len(mixed) + 1), raw)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(mixed) + b"\n")

    samples, stderr = run_replay(path)

    kpis = {k: v for k, v in samples.items() if k[0] not in PIPELINE}
    want = {k: v for k, v in golden_only.items() if k[0] not in PIPELINE}
    assert kpis.keys() == want.keys()
    changed = {k: (kpis[k], want[k]) for k in want if kpis[k] != pytest.approx(want[k], abs=1e-9)}
    assert not changed
    expected = Counter(reason for _what, _raw, reasons in HOSTILE for reason in reasons)
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "ccmon_events_rejected_total"
    }
    assert rejected == dict(expected)
    duplicates = sum(v for (name, _l), v in samples.items() if name == "ccmon_events_duplicate_total")
    assert duplicates == 10
    assert f"{sum(expected.values())} rejected" in stderr


def test_rejections_never_stop_the_stream(tmp_path: Path) -> None:
    """A file of nothing but hostile lines: exit 0, every line counted."""
    path = tmp_path / "only-hostile.jsonl"
    path.write_bytes(b"\n".join(raw for _w, raw, _r in HOSTILE) + b"\n")
    samples, _stderr = run_replay(path)
    rejected = sum(v for (name, _l), v in samples.items() if name == "ccmon_events_rejected_total")
    assert rejected == sum(len(r) for _w, _raw, r in HOSTILE)
    assert not any(name == "ccmon_calls_offered" for name, _l in samples)


# --------------------------------------------------------------------------------------
# regressions: inputs that used to crash (OverflowError, UnicodeEncodeError)
# --------------------------------------------------------------------------------------
CRASHERS = [
    ("10^400 ts", raw_with(ev(), "ts", "1" + "0" * 400), "bad_timestamp"),
    ("-10^400 ts", raw_with(ev(), "ts", "-1" + "0" * 400), "bad_timestamp"),
    ("10^400 talk", raw_with(ev("call.ended"), "talk_seconds", "1" + "0" * 400), "invalid_field:talk_seconds"),
    ("10^400 score", raw_with(ev("survey.response", survey="nps"), "score", "1" + "0" * 400), "invalid_field:score"),
    ("lone surrogate in a queue", json.dumps(ev(queue="sup\ud800port")).encode(), "invalid_field:queue"),
    ("lone surrogate in a tenant", json.dumps(ev(tenant="t\udfff")).encode(), "invalid_field:tenant"),
    ("lone surrogate in an id", json.dumps(ev(call_id="c\udc00")).encode(), "invalid_field:call_id"),
]


@pytest.mark.parametrize(("what", "raw", "reason"), CRASHERS, ids=[c[0] for c in CRASHERS])
def test_former_crashers_are_rejected(what: str, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_line(raw)
    assert info.value.reason == reason
    [item] = list(iter_envelope(raw))
    assert isinstance(item, Rejection) and item.reason == reason


def test_replay_survives_former_crashers(tmp_path: Path, golden_only: dict[Any, float]) -> None:
    path = tmp_path / "crashers.jsonl"
    path.write_bytes(GOLDEN.read_bytes() + b"".join(raw + b"\n" for _w, raw, _r in CRASHERS))
    samples, _stderr = run_replay(path)
    assert {k: v for k, v in samples.items() if k[0] not in PIPELINE} == {
        k: v for k, v in golden_only.items() if k[0] not in PIPELINE
    }
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "ccmon_events_rejected_total"
    }
    assert rejected == dict(Counter(reason for _w, _raw, reason in CRASHERS))


def test_unusual_but_valid_names_survive_the_exposition(tmp_path: Path) -> None:
    """Quotes, backslashes and non-ASCII in queue and tenant names are escaped in the text
    format and read back intact."""
    names = ['we"ird', "back\\slash", "客服 ünïcødé", "emoji 📞", "{braces}=,"]
    events = [ev(event_id=f"n{i}", queue=name, tenant=f"t-{name}", call_id=f"c{i}") for i, name in enumerate(names)]
    path = tmp_path / "names.jsonl"
    path.write_bytes(b"\n".join(line(e) for e in events) + b"\n")
    samples, _stderr = run_replay(path)
    for name in names:
        key = ("ccmon_calls_offered", tuple(sorted({"tenant": f"t-{name}", "queue": name, "window": "1h"}.items())))
        assert samples.get(key) == 1, name


# --------------------------------------------------------------------------------------
# envelopes (Kafka message values)
# --------------------------------------------------------------------------------------
def good(i: int) -> dict[str, Any]:
    return {"event_id": f"g{i}", "type": "call.offered", "ts": TS + i, "queue": "q", "call_id": f"c{i}"}


def test_array_envelope_rejects_only_the_bad_element() -> None:
    bad = {"event_id": "b", "type": "call.offered", "ts": TS, "queue": "q"}  # no call_id
    raw = json.dumps([good(1), bad, good(2), None, good(3)]).encode()
    items = list(iter_envelope(raw))
    assert [type(i).__name__ for i in items] == ["Event", "Rejection", "Event", "Rejection", "Event"]
    assert [i.event_id for i in items if isinstance(i, Event)] == ["g1", "g2", "g3"]
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert rejections[0].reason == "missing_field:call_id"
    assert json.loads(rejections[0].raw) == bad  # the raw bytes of that element alone
    assert rejections[1].reason == "not_an_object"
    assert rejections[1].raw == b"null"


def test_array_envelope_keeps_non_ascii_in_rejected_raw() -> None:
    bad = {"event_id": "b", "type": "call.offered", "ts": TS, "queue": "客服\n", "call_id": "c"}
    [item] = list(iter_envelope(json.dumps([bad]).encode()))
    assert isinstance(item, Rejection)
    assert item.reason == "invalid_field:queue"
    assert json.loads(item.raw.decode("utf-8")) == bad


def test_ndjson_envelope_rejects_only_the_bad_line() -> None:
    lines = [line(good(1)), b'{"event_id": "b", "type": "call.offered"', line(good(2)), b"\xff\xfe", line(good(3))]
    items = list(iter_envelope(b"\n".join(lines) + b"\n"))
    assert [type(i).__name__ for i in items] == ["Event", "Rejection", "Event", "Rejection", "Event"]
    assert items[1].raw == lines[1]  # type: ignore[union-attr]
    assert items[1].reason == "invalid_json"  # type: ignore[union-attr]
    assert items[3].raw == lines[3]  # type: ignore[union-attr]
    assert [i.event_id for i in items if isinstance(i, Event)] == ["g1", "g2", "g3"]


def test_ndjson_envelope_with_crlf_and_blank_lines() -> None:
    raw = b"\r\n".join([line(good(1)), b"", b"  ", line(good(2)), b"[1]"]) + b"\r\n"
    items = list(iter_envelope(raw))
    assert [type(i).__name__ for i in items] == ["Event", "Event", "Rejection"]
    assert items[2].reason == "not_an_object"  # type: ignore[union-attr]


def test_single_object_envelopes() -> None:
    [item] = list(iter_envelope(line(good(1))))
    assert isinstance(item, Event)
    [item] = list(iter_envelope(line(good(1)) + b"\n"))
    assert isinstance(item, Event)
    [item] = list(iter_envelope(b"{not json"))
    assert isinstance(item, Rejection) and item.reason == "invalid_json" and item.raw == b"{not json"
    [item] = list(iter_envelope(b"[" * 100_000))
    assert isinstance(item, Rejection) and item.reason == "invalid_json"
    assert list(iter_envelope(b"[]")) == []


def test_envelope_of_many_events_with_one_bad_counts_right() -> None:
    events = [good(i) for i in range(1000)]
    events[500] = {**events[500], "ts": "not a time"}
    items = list(iter_envelope(json.dumps(events).encode()))
    assert sum(isinstance(i, Event) for i in items) == 999
    [rejection] = [i for i in items if isinstance(i, Rejection)]
    assert rejection.reason == "bad_timestamp"
    assert json.loads(rejection.raw)["event_id"] == "g500"
