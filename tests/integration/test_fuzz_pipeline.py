"""Hostile input through the real pipeline (issue #9 item 4): 100,000 generated records -
valid simulator events mixed with hostile ones of every kind - go to a topic of their own on
the shared Kafka; one ``ccmon worker`` and the exporter run on them. Then:

* the worker process is alive and its agent never crashed or restarted (its log says so);
* the dead-letter topic holds exactly the invalid records the generator made, each with its
  expected ``ccmon-reason`` (plus ``ccmon-error`` and ``ccmon-source``) and its payload
  unchanged: a raw message byte for byte, an array element as the same JSON value (it is
  re-serialised alone), an NDJSON line byte for byte; the one message too big for a Kafka
  record comes cut to fit with ``ccmon-truncated`` = its size;
* ``ccmon_events_rejected_total{reason}`` counts the same reasons;
* the KPIs equal ``ccmon replay`` of only the valid events, exactly;
* ``/metrics`` parses with prometheus_client's text parser and passes ``promtool check
  metrics``, with the label-breaking names read back intact;
* the group's consumer lag comes back to 0 (every offset committed: nothing stuck).

Why a hand-written generator (``random.Random(SEED)``) and not a Hypothesis strategy: the test
needs an oracle for every one of 100,000 records - valid, or rejected for exactly which
reason - and Hypothesis's value (shrinking to a minimal failing case) cannot work across a
Kafka topic and two processes. Each hostile kind below is built so its reason follows from
the parser's documented order of checks; in process, where shrinking works, Hypothesis and
atheris drive the same code (``tests/unit/kpi_core/test_hostile_properties.py``).

Decisions this test pins down:

* Label-breaking names in ``tenant``/``queue``: ``"``, ``\\``, ``{``, ``}``, ``=``, ``,``, emoji,
  right-to-left marks, zero-width characters and BOMs are *accepted* (valid UTF-8 label values;
  RTL and zero-width marks are needed in Hebrew, Arabic, Persian and emoji sequences) and
  escaped in the exposition; control characters (newline, CR, tab, NUL, ESC, DEL, C1) and lone
  surrogates are *rejected* as ``invalid_field:<name>``.
* Ids (``article_id`` becomes a label) may hold any text but lone surrogates; a newline or NUL
  in one is escaped (``\\n``) or passed through (NUL) in the exposition, which both parsers take.
* A message that is not JSON as a whole - invalid UTF-8, JSON nested deeper than the decoder's
  recursion limit, a number of more than 4,300 digits, truncated - is *one* rejection
  (``invalid_json``), even when it looked like an array of events: its events are in the DLQ
  message, unchanged, and none of them is applied. A bad element of a decodable array is
  rejected alone.

The corpus: 100,240 records in 1,283 messages (~60 MB): 32,828 valid events and 67,412
invalid ones. Takes ~65 s on 2 cores (generation ~6 s, producing ~7 s, the worker ~30 s
including the group join, replay ~3 s alongside, reading the dead letters ~15 s). Seed:
``CCMON_FUZZ_SEED`` (default 20261123).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import read_topic
from harness.pipeline import Pipeline
from harness.samples import diff, kpis_only, replay_samples, samples_of
from harness.spec import REQUIRED
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("CCMON_FUZZ_SEED", "20261123"))
RECORDS = 100_000
AT = "2026-11-20T10:00:00Z"
AT_EPOCH = 1795168800.0
SIM_START = AT_EPOCH - 50 * 60  # 09:10, 0.8 h of simulated traffic, all before AT
PARTITIONS = 2
#: What a valid event is mutated into (``Fuzzer.make``); each must be seen among the invalid records.
MUTATIONS = (
    "wrong_type",
    "missing",
    "unknown_type",
    "bad_ts",
    "negative",
    "huge_string",
    "huge_number",
    "deep",
    "control",
    "reserved",
    "not_object",
    "score",
    "late",
    "future",
)
SETTLE_TIMEOUT = 240.0
MB = 1_000_000
#: A Kafka record this big still goes to the events topic (broker default 1,048,588) but not,
#: with the headers, unchanged to the DLQ: the worker sends it cut to fit.
TOO_BIG_FOR_DLQ = 1_047_600

#: Valid but unusual queue (and tenant) names: accepted, escaped in the exposition.
ODD_NAMES = [
    'say "hi"',
    "back\\slash",
    "tail\\",
    "}close",
    "{open",
    "a=b",
    "a,b",
    '"}\\{=,',
    "📞 hotline 🎧",
    "תמיכה\u200f",
    "\u202eevil",
    "sup\u200bport",
    "zwj\u200d\u200c",
    "\ufeffbom",
    "客服 ünïcødé",
    "x" * 128,
    "le\u2028ls",
    "nbsp\u00a0q",
]
#: Names that must be rejected (control characters, lone surrogates): invalid_field:<name>.
BAD_NAMES = [
    "new\nline",
    "car\rriage",
    "tab\tq",
    "nul\x00q",
    "esc\x1b[31m",
    "del\x7f",
    "c1\x85",
    "c1\x9b",
    "lone\ud800",
    "lone\udfff",
]
#: Ids that become labels (KB articles): valid, however odd.
ODD_ARTICLES = ['art"1', "art\\2", "art\n3", "art\x00nul", "art}{=,", "art\r6"]

#: promtool's naming advice that METRICS.md's names keep on purpose: the spec's quantile gauge.
LINT_ADVICE = {
    'non-summary metrics should not have "quantile" label',
}
ID_FIELDS = (
    "call_id",
    "customer_id",
    "callback_id",
    "ticket_id",
    "contact_id",
    "article_id",
    "session_id",
    "kb_session_id",
)
NAME_FIELDS = ("queue", "agent_id", "to_queue", "outcome")
DURATIONS = ("wait_seconds", "talk_seconds", "hold_seconds", "acw_seconds")
BOOLS = ("resolved", "connected", "first_contact")
EVENT_TYPES = set(REQUIRED)


# -- the generator ------------------------------------------------------------------------------
@dataclass
class Item:
    """One record of the corpus. ``value`` is a decoded JSON value (an event or element) or,
    for ``raw``, bytes sent as they are (a message, or an NDJSON line). ``reason`` is None
    for a valid event, else the reason it must be dead-lettered with."""

    value: Any
    reason: str | None
    raw: bool = False
    kind: str = ""
    #: A raw message too big for the DLQ: expected there cut, with ccmon-truncated.
    truncated: bool = False


@dataclass
class Message:
    value: bytes
    key: bytes | None
    partition: int
    items: list[Item] = field(default_factory=list)


def simulated_events() -> list[dict[str, Any]]:
    """~34,000 valid events of two tenants (2 % re-sent as duplicates), all before AT."""
    from streams.sim import SimParams, Simulator, default_queues

    queues = tuple(
        replace(q, calls_per_hour=q.calls_per_hour * 8, tickets_per_hour=q.tickets_per_hour * 4, profile="flat")
        for q in default_queues(6)
    )
    out: list[dict[str, Any]] = []
    for tenant, seed in (("default", SEED % 1000), ("acme", SEED % 1000 + 1)):
        sim = Simulator(
            SimParams(
                start=SIM_START, hours=0.8, queues=queues, seed=seed, shifts=False, tenant=tenant, duplicate_share=0.02
            )
        )
        out.extend(r for _at, r in sim.stream() if isinstance(r, dict))
    from kpi_core.events import parse_ts

    return [e for e in out if parse_ts(e["ts"]) < AT_EPOCH - 1]


class Hostile:
    """Makes hostile records from valid events, each with the reason it must be rejected for."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def _copy(self, event: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        bad = dict(event)
        bad["event_id"] = f"{event['event_id']}~h{self.n}"
        return bad

    def big_text(self, low: int, high: int) -> str:
        """At least ``low`` characters, some multi-byte: log-uniform up to 4,096, and one time
        in 100 up to ``high`` (the corpus stays ~30 MB, which kafka-python moves in seconds)."""
        top = high if self.rng.random() < 0.01 else min(high, max(4096, low + 1))
        size = int(math.exp(self.rng.uniform(math.log(low), math.log(top))))
        if self.rng.random() < 0.3:
            return self.rng.choice("é客📞") * max(low, min(size, 50_000))
        return "y" * size

    def nested(self, depth: int) -> Any:
        value: Any = self.rng.choice([1, "x", None, []])
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"k": value}
        return value

    def make(self, event: dict[str, Any]) -> Item:
        rng = self.rng
        kind = rng.choice(("wrong_type", *MUTATIONS))  # a wrong type twice as often
        bad = self._copy(event)
        etype = event["type"]
        if kind == "wrong_type":
            fields = [f for f in bad if f not in ("event_id", "type", "ts")]
            name = rng.choice([*fields, "event_id", "type", "ts"])
            if name in ID_FIELDS or name == "event_id":
                bad[name] = rng.choice([True, False, 1.5, [], [bad[name]], {}, {"id": bad[name]}])
                reason = f"invalid_field:{name}"
            elif name == "type":
                bad[name], reason = rng.choice([1, [], {}, True, 0.5, [etype]]), "unknown_type"
            elif name == "ts":
                bad[name], reason = rng.choice([True, False, [], {}, [bad["ts"]], {"ts": 1}]), "bad_timestamp"
            elif name in NAME_FIELDS or name == "tenant":
                bad[name], reason = rng.choice([1, 1.5, True, [], {}, [bad[name]], 0]), f"invalid_field:{name}"
            elif name in DURATIONS:
                bad[name], reason = rng.choice(["3", True, False, [], {}, "NaN", [3]]), f"invalid_field:{name}"
            elif name in BOOLS:
                bad[name], reason = rng.choice(["true", 1, 0, [], "yes", {}]), f"invalid_field:{name}"
            elif name in ("state", "author", "survey", "resolution", "channel", "direction"):
                bad[name] = rng.choice(["sleeping", 1, "VOICE", "Available", "csat ", [], "agent\x00"])
                reason = f"invalid_field:{name}"
            elif name == "queues":
                bad[name] = rng.choice(
                    [
                        "support",
                        [1],
                        ["_all"],
                        [""],
                        ["a\nb"],
                        [["x"]],
                        {"q": 1},
                        [f"q{i}" for i in range(1001)],
                        ["q" * 129],
                    ]
                )
                reason = "invalid_field:queues"
            elif name == "score":
                bad[name], reason = rng.choice(["5", True, [], {}, "NaN"]), "invalid_field:score"
            elif name == "scale_max" and bad.get("survey") == "csat":
                bad[name], reason = rng.choice([4, "5", True, 5.5, 0, []]), "invalid_field:scale_max"
            else:  # unknown extras, or scale_max of a non-csat survey: change the type instead
                bad["type"], reason = rng.choice([7, [etype]]), "unknown_type"
        elif kind == "missing":
            name = rng.choice(["event_id", "type", "ts", *REQUIRED[etype]])
            how = rng.random()
            if how < 0.5:
                bad.pop(name)
            else:
                bad[name] = None if how < 0.75 else ""
            reason = f"missing_field:{name}"
        elif kind == "unknown_type":
            bad["type"] = rng.choice(
                [
                    "call.exploded",
                    etype.upper(),
                    etype + "\u200b",
                    etype + " ",
                    "\u202e" + etype,
                    etype.replace(".", "\u2024"),
                    etype + "\x00",
                    self.big_text(100, 20000),
                    "null",
                    "ticket.deleted",
                ]
            )
            reason = "unknown_type"
        elif kind == "bad_ts":
            bad["ts"] = rng.choice(
                [
                    "yesterday",
                    "2026-11-20T09:30:00",
                    "2026-11-20",
                    "2026-11-20T09:30:00+25:00",
                    "2026-13-45T09:30:00Z",
                    1e300,
                    -5,
                    -0.5,
                    4102444800,
                    "x" * 100,
                    self.big_text(65, 50000),
                    "NaN",
                    math.nan,
                    math.inf,
                    -math.inf,
                    "2026-11-20T09:30:00Z\x00",
                    10**400,
                    -(10**400),
                ]
            )
            reason = "bad_timestamp"
        elif kind == "negative":
            name = rng.choice(DURATIONS)
            bad[name] = rng.choice([-0.001, -1, -1e300, -(10**20), -5.5])
            reason = "negative_duration"
        elif kind == "huge_string":
            name = rng.choice(["queue", "agent_id", "tenant", "outcome", *ID_FIELDS, "event_id", "type", "ts"])
            if name in ID_FIELDS or name == "event_id":
                bad[name], reason = self.big_text(257, 200_000), f"invalid_field:{name}"
            elif name == "type":
                bad[name], reason = self.big_text(30, 200_000), "unknown_type"
            elif name == "ts":
                bad[name], reason = self.big_text(65, 200_000), "bad_timestamp"
            else:
                bad[name], reason = self.big_text(129, 200_000), f"invalid_field:{name}"
        elif kind == "huge_number":
            name = rng.choice(["ts", "wait_seconds", "talk_seconds", "call_id", "score"])
            if name == "ts":
                bad[name], reason = rng.choice([1e308, 10**300, 10**400, 2**64]), "bad_timestamp"
            elif name == "call_id":
                bad[name], reason = rng.choice([10**300, 10**1000]), "invalid_field:call_id"  # > 256 digits
            elif name == "score":
                bad["type"], bad["survey"], bad["queue"] = "survey.response", "nps", "support"
                finite = rng.random() < 0.5  # finite but huge: out of range; else not a number at all
                bad[name] = rng.choice([10**300, 1e308]) if finite else rng.choice([10**400, math.nan, -math.inf])
                reason = "score_out_of_range" if finite else "invalid_field:score"
            else:
                value = rng.choice([10**30, 1e300, 10**400, math.inf, math.nan, 366 * 86400 + 1])
                bad[name], reason = value, f"invalid_field:{name}"
        elif kind == "deep":
            depth = rng.randrange(2, 700)
            name = rng.choice(["queue", "ts", "type", "event_id", "call_id", "tenant"])
            bad[name] = self.nested(depth)
            reason = {"ts": "bad_timestamp", "type": "unknown_type"}.get(name, f"invalid_field:{name}")
        elif kind == "control":
            name = rng.choice(["queue", "tenant", "agent_id", "to_queue", "outcome", "call_id"])
            if name == "call_id":  # ids refuse lone surrogates only
                bad[name] = rng.choice(["c\ud800", "\udfffc", "a\udc00b"])
            else:
                bad[name] = rng.choice(BAD_NAMES)
            reason = f"invalid_field:{name}"
        elif kind == "reserved":
            name = rng.choice(["queue", "to_queue", "queues"])
            if name == "queues":
                bad["type"], bad["agent_id"], bad["state"] = "agent.state", "agent-r", "available"
                bad["queues"] = rng.choice([["_all"], ["support", "_all"]])
            else:
                bad[name] = "_all"
            reason = f"invalid_field:{name}"
        elif kind == "not_object":
            stray: Any = rng.choice(
                [
                    None,
                    0,
                    -1.5,
                    True,
                    "call.offered",
                    f"note: {self.big_text(10, 5000)}",
                    [],
                    [bad],
                    [[[]]],
                    [self.nested(rng.randrange(1, 600))],
                    "\u202e\x00",
                ]
            )
            return Item(stray, "not_an_object", kind=kind)
        elif kind == "score":
            bad["type"], bad["queue"] = "survey.response", "support"
            survey = rng.choice(["csat", "nps", "ces"])
            bad["survey"] = survey
            bad.pop("scale_max", None)
            bad["score"] = rng.choice({"csat": [0, 6, -1, 1e308], "nps": [11, -1, 10.5], "ces": [0, 8, 7.01]}[survey])
            reason = "score_out_of_range"
        elif kind == "late":
            bad["ts"] = rng.choice([AT_EPOCH - 2 * 86400, "2026-11-18T10:00:00Z", 0, 1.5])
            reason = "too_late"
        else:  # future: more than max_future_seconds (300) ahead of the worker's clock
            bad["ts"] = rng.choice([AT_EPOCH + 301, AT_EPOCH + 86400, "2027-01-01T00:00:00+14:00"])
            reason = "from_the_future"
        return Item(bad, reason, kind=kind)


def valid_oddities(rng: random.Random) -> list[dict[str, Any]]:
    """Valid events with hostile-looking content: label-breaking queue and tenant names, odd
    article ids (labels too), junk extra fields (100 KB strings, deep nesting, NaN, lone
    surrogates), int ids, ``1e-3`` durations. All accepted and counted."""
    out: list[dict[str, Any]] = []
    base = AT_EPOCH - 40 * 60
    for i, name in enumerate(ODD_NAMES):
        tenant = "default" if i % 3 else name
        for j in range(3):
            cid = f"odd-{i}-{j}"
            t = base + 60 * i + 10 * j
            out += [
                {
                    "event_id": f"{cid}-o",
                    "type": "call.offered",
                    "ts": t,
                    "tenant": tenant,
                    "queue": name,
                    "call_id": cid,
                },
                {
                    "event_id": f"{cid}-a",
                    "type": "call.answered",
                    "ts": t + 5 + j,
                    "tenant": tenant,
                    "queue": name,
                    "call_id": cid,
                    "agent_id": f"odd-agent-{i}",
                },
                {
                    "event_id": f"{cid}-e",
                    "type": "call.ended",
                    "ts": t + 100,
                    "tenant": tenant,
                    "call_id": cid,
                    "talk_seconds": 90 + j,
                    "hold_seconds": 1e-3,
                    "acw_seconds": 0,
                },
            ]
        out.append(
            {
                "event_id": f"odd-{i}-agent",
                "type": "agent.state",
                "ts": base + i,
                "tenant": tenant,
                "agent_id": f"odd-agent-{i}",
                "state": "available",
                "queues": [name, "support"],
            }
        )
    for i, article in enumerate(ODD_ARTICLES):
        out.append(
            {
                "event_id": f"kb-odd-{i}",
                "type": "kb.viewed",
                "ts": base + i,
                "article_id": article,
                "session_id": f"sess-odd-{i}",
            }
        )
        out.append(
            {
                "event_id": f"kb-odd-t{i}",
                "type": "ticket.created",
                "ts": base + 30 + i,
                "queue": "support",
                "ticket_id": f"t-odd-{i}",
                "kb_session_id": f"sess-odd-{i}",
            }
        )
    extras: list[Any] = [
        "z" * 100_000,
        [[[[[[[[[[1]]]]]]]]]],
        {"a": {"b": {"c": None}}},
        math.nan,
        "lone \ud800",
        "\x00\x1b[2J\u202e",
        10**200,
        -math.inf,
    ]
    nested: Any = 0
    for _ in range(600):
        nested = [nested]
    extras.append(nested)
    for i, extra in enumerate(extras):
        out.append(
            {
                "event_id": 10**9 + i,
                "type": "call.offered",
                "ts": base + 600 + i,
                "queue": "support",
                "call_id": 7_000_000 + i,
                "customer_id": 4915112345000 + i,
                "note": extra,
            }
        )
    rng.shuffle(out)
    return out


def fresh_calls(tag: str, n: int, t0: float) -> list[dict[str, Any]]:
    """``n`` complete calls of their own (offer, answer, end) in queue support."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        cid, t = f"{tag}-{i}", t0 + 7 * i
        out += [
            {"event_id": f"{cid}-o", "type": "call.offered", "ts": t, "queue": "support", "call_id": cid},
            {"event_id": f"{cid}-a", "type": "call.answered", "ts": t + 3, "call_id": cid, "agent_id": "x-agent"},
            {"event_id": f"{cid}-e", "type": "call.ended", "ts": t + 60, "call_id": cid, "talk_seconds": 57},
        ]
    return out


def entity(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("call_id", "callback_id", "ticket_id", "agent_id", "session_id", "contact_id", "event_id"):
            v = value.get(key)
            if isinstance(v, str) and v:
                return v
    return ""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def raw_messages(rng: random.Random, valid: list[dict[str, Any]], hostile: Hostile) -> list[Message]:
    """Whole messages that are hostile as messages (each one record, unless noted)."""
    out: list[Message] = []

    def one(value: bytes, reason: str, kind: str, truncated: bool = False, key: bytes | None = b"raw") -> None:
        out.append(
            Message(
                value, key, rng.randrange(PARTITIONS), [Item(value, reason, raw=True, kind=kind, truncated=truncated)]
            )
        )

    for _ in range(300):  # random bytes: never valid UTF-8, never a line break
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))).replace(b"\n", b"").replace(b"\r", b"")
        one(junk + b"\xff", "invalid_json", "random_bytes", key=junk[:16] or None)
    for i in range(100):  # an event with invalid UTF-8 inside a string
        event = dict(rng.choice(valid), event_id=f"bad-utf8-{i}")
        text = json.dumps(event, ensure_ascii=True).encode()
        broken = rng.choice([b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"])
        one(text.replace(b'"type"', b'"ty' + broken + b'pe"', 1), "invalid_json", "invalid_utf8")
    one(b"\xef\xbb\xbf" + json.dumps(valid[0]).encode(), "invalid_json", "bom")
    for value in (b"", b" \t ", b"\n\n\r\n", b"{", b"[", b"]", b"{}}", b"nul\x00l", b"[1,]", b"{'a': 1}"):
        one(value, "invalid_json", "short_junk")
    for value, reason in (
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"true", "not_an_object"),
        (b"{}", "missing_field:type"),
        (b"-0.0", "not_an_object"),
    ):
        one(value, reason, "json_scalar")
    # deep nesting beyond the decoder's recursion limit: one invalid_json each
    for depth in (1_000, 5_000, 100_000):
        one(b"[" * depth + b"]" * depth, "invalid_json", "deep")
        one(b'{"a":' * depth + b"1" + b"}" * depth, "invalid_json", "deep")
    deep_field = dict(valid[1], event_id="deep-field", note="@@")
    one(json.dumps(deep_field).replace('"@@"', "[" * 50_000 + "]" * 50_000).encode(), "invalid_json", "deep")
    # an array envelope holding valid events and one element nested too deep: one rejection
    envelope = fresh_calls("lost", 2, AT_EPOCH - 1800)
    deep_envelope = json.dumps([*envelope, "@@"]).replace('"@@"', "[" * 3000 + "]" * 3000)
    one(deep_envelope.encode(), "invalid_json", "deep_envelope")
    # numbers with more than 4,300 digits: not JSON Python can decode; one rejection each
    one(
        json.dumps(dict(valid[2], event_id="bigint", wait_seconds="@@")).replace('"@@"', "9" * 5000).encode(),
        "invalid_json",
        "bigint",
    )
    one(json.dumps([valid[3], "@@"]).replace('"@@"', "1" * 10_000).encode(), "invalid_json", "bigint_envelope")
    # ~1 MB messages
    junk = "".join(rng.choice('abcdefghij{}[]",:0123456789 ') for _ in range(1000)).encode()
    one(b"{" + junk * 1000, "invalid_json", "1MB_junk")
    one(json.dumps(dict(valid[4], event_id="mb-queue", queue="q" * MB)).encode(), "invalid_field:queue", "1MB_event")
    one(b"x" * TOO_BIG_FOR_DLQ, "invalid_json", "too_big_for_dlq", truncated=True)
    # ~1 MB array envelope: valid neighbours count, the 1 MB element alone is rejected
    neighbours = fresh_calls("mb", 7, AT_EPOCH - 1700)
    huge = dict(valid[5], event_id="mb-customer", customer_id="c" * MB)
    items = [Item(e, None, kind="valid") for e in neighbours]
    items.insert(7, Item(huge, "invalid_field:customer_id", kind="1MB_element"))
    out.append(Message(json.dumps([i.value for i in items]).encode(), b"mb", 0, items))
    # an empty array: a valid envelope of no events
    out.append(Message(b"[]", None, 0, []))
    out.append(Message(b" [ ] ", None, 1, []))
    return out


def build_corpus(rng: random.Random) -> tuple[list[Message], list[dict[str, Any]]]:
    """The messages to send and the valid events (for the replay): RECORDS records, plus the
    junk lines packing puts into NDJSON messages."""
    sim = simulated_events()
    hostile = Hostile(rng)
    messages = raw_messages(rng, sim, hostile)
    odd = valid_oddities(rng)
    for name in ("\nnewline", "nul\x00", "cr\r"):  # label-breaking names that are rejected
        odd_bad = {
            "event_id": f"bad-name-{name!r}",
            "type": "call.offered",
            "ts": AT_EPOCH - 600,
            "queue": name,
            "call_id": "bad-name",
        }
        messages.append(
            Message(json.dumps([odd_bad]).encode(), None, 0, [Item(odd_bad, "invalid_field:queue", kind="bad_name")])
        )
    used = sum(len(m.items) for m in messages)
    items: list[Item] = [Item(e, None, kind="valid") for e in [*sim, *odd]]
    while len(items) + used < RECORDS:
        items.append(hostile.make(rng.choice(sim)))
    # Valid events keep their relative order (per entity) on one partition; hostile records
    # are scattered among them.
    valid_keys = sorted(rng.random() for item in items if item.reason is None)
    keyed, v = [], 0
    for item in items:
        if item.reason is None:
            keyed.append((valid_keys[v], item))
            v += 1
        else:
            keyed.append((rng.random(), item))
    keyed.sort(key=lambda pair: pair[0])  # hostile records spread among the valid ones, kept in order
    lanes: dict[int, list[Item]] = {lane: [] for lane in range(PARTITIONS)}
    for _key, item in keyed:
        lane = (hash_key(entity(item.value)) if item.reason is None else rng.randrange(1 << 30)) % PARTITIONS
        lanes[lane].append(item)
    per_partition = {lane: list(pack(rng, lane, lane_items)) for lane, lane_items in lanes.items()}
    for message in messages:  # the hostile whole messages, at random places in their partition
        packed = per_partition[message.partition]
        packed.insert(rng.randrange(len(packed) + 1), message)
    messages = [m for lane in sorted(per_partition) for m in per_partition[lane]]
    valid = [i.value for m in messages for i in m.items if i.reason is None]
    assert sum(len(m.items) for m in messages) >= RECORDS  # NDJSON junk lines come on top
    return messages, valid


def hash_key(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def pack(rng: random.Random, lane: int, items: list[Item]) -> Iterator[Message]:
    """Messages of one partition: array envelopes (most), NDJSON envelopes, single events."""
    i = 0
    while i < len(items):
        shape = rng.random()
        if isinstance(items[i].value, list):  # alone in a message, an array would be an envelope
            shape = 0.0
        if shape < 0.75:  # JSON array of 1..300 elements, at most ~700 KB
            n = rng.randrange(1, 300)
            chunk: list[Item] = []
            size = 0
            while i < len(items) and len(chunk) < n:
                item_size = len(json.dumps(items[i].value, allow_nan=True))  # ASCII: an upper bound
                if chunk and size + item_size > 700_000:
                    break
                chunk.append(items[i])
                size += item_size
                i += 1
            ascii_only = rng.random() < 0.5 or not all(
                _encodable(json.dumps(c.value, ensure_ascii=False, allow_nan=True)) for c in chunk
            )
            body = json.dumps([c.value for c in chunk], ensure_ascii=ascii_only, allow_nan=True)
            yield Message(
                body.encode("utf-8"), entity(chunk[0].value).encode("utf-8", "surrogatepass")[:100] or None, lane, chunk
            )
        elif shape < 0.9:  # NDJSON: 2..50 lines (some CRLF, some blank), plus a junk line now and then
            chunk = []
            lines: list[bytes] = []
            for _ in range(rng.randrange(2, 50)):
                if i >= len(items) or isinstance(items[i].value, list):
                    break
                item = items[i]
                i += 1
                text = json.dumps(item.value, ensure_ascii=True, allow_nan=True).encode()
                chunk.append(Item(text, item.reason, raw=True, kind=item.kind) if item.reason else item)
                lines.append(text)
                if rng.random() < 0.1:
                    junk = bytes(rng.randrange(33, 256) for _ in range(rng.randrange(1, 200))).replace(b"\x85", b"")
                    chunk.append(Item(junk + b"\xff", "invalid_json", raw=True, kind="ndjson_junk"))
                    lines.append(junk + b"\xff")
                if rng.random() < 0.1:
                    lines.append(rng.choice([b"", b"   ", b"\t"]))  # blank: skipped, not a record
            while len(chunk) < 2:  # two lines at least, or it would be a one-event message
                lines.append(b"junk-line\xff")
                chunk.append(Item(b"junk-line\xff", "invalid_json", raw=True, kind="ndjson_junk"))
            sep = b"\r\n" if rng.random() < 0.3 else b"\n"
            yield Message(sep.join(lines) + sep, None, lane, chunk)
        else:  # one event alone in its message
            item = items[i]
            i += 1
            value = json.dumps(item.value, ensure_ascii=True, allow_nan=True).encode()
            key = entity(item.value).encode("utf-8", "surrogatepass")[:100] or None
            if item.reason is not None:
                item = replace(item, value=value, raw=True)  # the message itself is the payload
            yield Message(value, key, lane, [item])


# -- reading the results --------------------------------------------------------------------------
def canonical(payload: bytes) -> str:
    """A DLQ payload as comparable text: its JSON value re-serialised with sorted keys, or the
    bytes themselves when they are not JSON."""
    try:
        return "J" + json.dumps(
            json.loads(payload.decode("utf-8", "surrogatepass")), sort_keys=True, ensure_ascii=True, allow_nan=True
        )
    except (ValueError, RecursionError):
        return "B" + payload.hex() if len(payload) < 4096 else f"B{len(payload)}:{hash(payload)}"


def expected_dead(messages: list[Message]) -> Counter[tuple[str, str]]:
    want: Counter[tuple[str, str]] = Counter()
    for message in messages:
        for item in message.items:
            if item.reason is None:
                continue
            if item.truncated:
                want[(f"T{len(item.value)}", item.reason)] += 1
            elif item.raw:
                want[(canonical(item.value), item.reason)] += 1
            else:
                text = json.dumps(item.value, allow_nan=True).encode("utf-8", "surrogatepass")
                want[(canonical(text), item.reason)] += 1
    return want


def read_dlq(kafka: str, topic: str, count: int, originals: dict[int, bytes]) -> Counter[tuple[str, str]]:
    records = read_topic(
        kafka,
        topic,
        at_least=count,
        timeout=120,
        max_partition_fetch_bytes=4 * MB,
        fetch_max_bytes=64 * MB,
        check_crcs=False,  # kafka-python checks CRCs in pure Python
    )
    assert len(records) == count, f"{len(records)} dead letters, expected {count}"  # and nothing more
    got: Counter[tuple[str, str]] = Counter()
    for record in records:
        headers = dict(record.headers or [])
        assert headers.get("ccmon-reason"), f"no ccmon-reason on {record.offset}"
        assert headers.get("ccmon-error") and headers.get("ccmon-source"), headers
        reason = headers["ccmon-reason"].decode()
        value = record.value or b""
        if "ccmon-truncated" in headers:
            size = int(headers["ccmon-truncated"])
            assert originals[size].startswith(value) and len(value) > size - 4096
            got[(f"T{size}", reason)] += 1
        else:
            got[(canonical(value), reason)] += 1
    return got


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return str(response.read().decode("utf-8"))


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus() -> tuple[list[Message], list[dict[str, Any]]]:
    return build_corpus(random.Random(SEED))


def test_hostile_corpus_through_the_pipeline(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, corpus: tuple[list[Message], list[dict[str, Any]]]
) -> None:
    import kafka

    messages, valid = corpus
    invalid = [i for m in messages for i in m.items if i.reason is not None]
    total = len(valid) + len(invalid)
    assert total >= RECORDS
    kinds = Counter(i.kind for i in invalid)
    for kind in (
        *MUTATIONS,
        "random_bytes",
        "invalid_utf8",
        "1MB_junk",
        "1MB_event",
        "1MB_element",
        "too_big_for_dlq",
        "deep_envelope",
        "bigint",
        "ndjson_junk",
        "bad_name",
        "short_junk",
        "json_scalar",
        "bom",
    ):
        assert kinds[kind] > 0, kind  # every kind of hostility is there

    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        {
            p.topic: {"num_partitions": PARTITIONS, "replication_factor": 1},
            p.dlq: {"num_partitions": 1, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    admin.close()
    try:
        producer = kafka.KafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20, max_request_size=1_048_576, batch_size=262_144
        )
        for message in messages:
            producer.send(p.topic, key=message.key, value=message.value, partition=message.partition)
        producer.flush(120)
        producer.close()
        phase("produce")

        at = f"{AT_EPOCH:.0f}"
        worker = p.start("worker", *p.worker_args(at=at, web_port=0, batch_within="0.2"))
        p.start("exporter", *p.exporter_args(at=at, host="127.0.0.1"))
        path = tmp_path / "valid.jsonl"
        path.write_bytes(b"".join(json.dumps(e, ensure_ascii=True, allow_nan=True).encode() + b"\n" for e in valid))
        want = replay_samples(path, AT_EPOCH)
        phase("replay")

        # Settle: every record counted (accepted, duplicate or rejected), and the lag at 0.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        text = ""
        while True:
            assert worker.poll() is None, f"the worker exited:\n{p.log_tail()}"
            assert time.monotonic() < deadline, f"not settled in {SETTLE_TIMEOUT:.0f} s:\n{p.log_tail()}"
            try:
                text = scrape(p.port)
            except OSError:
                time.sleep(1)
                continue
            samples = samples_of(text)
            counted = sum(
                v
                for (name, _l), v in samples.items()
                if name in ("ccmon_events_total", "ccmon_events_duplicate_total", "ccmon_events_rejected_total")
            )
            lag = [
                v
                for (name, labels), v in samples.items()
                if name == "ccmon_consumer_lag" and dict(labels)["topic"] == p.topic
            ]
            if counted >= total and len(lag) == PARTITIONS and not any(lag):
                break
            time.sleep(1)
        assert counted == total
        phase("settle")

        # The worker never crashed: its agent was not restarted, no traceback, no internal_error.
        log = p.logs["worker"].read_text(errors="replace")
        for sign in ("Restarting dead", "crashed", "Traceback", "internal_error", "[ERROR]", "[CRITICAL]"):
            assert sign not in log, f"{sign!r} in the worker's log:\n{p.log_tail()}"
        assert worker.poll() is None

        # Rejections by reason, as generated.
        want_reasons = Counter(i.reason for i in invalid)
        rejected = {
            dict(labels)["reason"]: v for (name, labels), v in samples.items() if name == "ccmon_events_rejected_total"
        }
        assert rejected == dict(want_reasons)

        # The KPIs equal the replay of the valid events alone: the same series, every count
        # exactly, fractional values to 1e-9 relative. The worker adds in another order than the
        # file's (two partitions interleave), so a float sum may differ in its last bit, and
        # occupancy (an integral kept as sums of d * ts, ts ~ 1.8e9) by ~1e-11.
        got = {k: v for k, v in kpis_only(samples).items() if k[0] != "ccmon_events_rejected_total"}
        want = {k: v for k, v in want.items() if k[0] != "ccmon_events_rejected_total"}
        assert not diff(got, want), diff(got, want)
        inexact = {
            k: (v, want[k])
            for k, v in got.items()
            if v != want[k] and (v.is_integer() or want[k].is_integer() or not math.isclose(v, want[k], rel_tol=1e-9))
        }
        assert not inexact, list(inexact.items())[:10]
        assert sum(v for (name, _l), v in got.items() if name == "ccmon_events_total") == len(
            {(e.get("tenant", "default"), str(e["event_id"])) for e in valid}
        )

        # The exposition text is valid for both parsers, and the odd names came back intact.
        families = list(text_string_to_metric_families(text))
        assert families
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text.encode("utf-8"), capture_output=True, timeout=60
        )
        # Exit 1 and "text format parsing error" is invalid text; exit 3 is its linter's naming
        # advice about the names METRICS.md fixes (ccmon_kb_* read as kilobytes, the
        # quantile label of the ccmon_wait_seconds_quantile gauge, gauges named *_sum and
        # *_count), printed once per metric.
        report = (check.stdout + check.stderr).decode()
        assert check.returncode in (0, 3) and "error" not in report, report[-3000:]
        lint = {line.split(" ", 1)[1] for line in report.splitlines() if " " in line}
        assert lint <= LINT_ADVICE, lint - LINT_ADVICE
        queues = {dict(labels).get("queue") for (_n, labels) in samples}
        tenants = {dict(labels).get("tenant") for (_n, labels) in samples}
        articles = {dict(labels).get("article") for (_n, labels) in samples}
        for i, name in enumerate(ODD_NAMES):
            assert name in queues, name
            if i % 3 == 0:
                assert name in tenants, name
        assert set(ODD_ARTICLES) <= articles
        for bad in BAD_NAMES:
            assert bad not in queues and bad not in tenants

        # The dead-letter topic: exactly the invalid records, each with its reason, unchanged.
        originals = {len(i.value): i.value for i in invalid if i.truncated}
        dead = read_dlq(kafka_bootstrap, p.dlq, len(invalid), originals)
        want_dead = expected_dead(messages)
        missing, extra = want_dead - dead, dead - want_dead
        assert not missing and not extra, (
            f"missing {sum(missing.values())}: {list(missing.items())[:3]}\n"
            f"unexpected {sum(extra.values())}: {list(extra.items())[:3]}"
        )
        truncated = [line for line in log.splitlines() if "ccmon-truncated" in line]
        assert len(truncated) == 1, truncated
        phase("dlq")
        print(
            f"{total} records ({len(valid)} valid, {len(invalid)} invalid) in {len(messages)} messages; "
            f"seconds: {phases}"
        )
    finally:
        p.close()
