"""The worker's envelope splitter agrees with kpi_core.events.iter_envelope and keeps the raw
bytes of every event (for the dead-letter topic)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpi_core.events import Rejection, iter_envelope
from streams.worker import split_envelope

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
]


@pytest.mark.parametrize("raw", CASES)
def test_same_items_as_iter_envelope(raw: bytes) -> None:
    pairs = list(split_envelope(raw))
    assert [item for _raw, item in pairs] == list(iter_envelope(raw))
    for element_raw, item in pairs:
        if isinstance(item, Rejection):
            assert element_raw == item.raw


def test_raw_bytes_of_accepted_events() -> None:
    pairs = list(split_envelope(json.dumps([GOOD, GOOD]).encode()))
    assert [json.loads(raw) for raw, _ in pairs] == [GOOD, GOOD]
    single = json.dumps(GOOD).encode()
    assert next(iter(split_envelope(single)))[0] == single


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(st.one_of(st.just(GOOD), st.just(BAD), json_values), max_size=5), st.sampled_from(["array", "ndjson"]))
def test_property_agrees_with_iter_envelope(items: list[object], shape: str) -> None:
    if shape == "array":
        raw = json.dumps(items).encode()
    else:
        raw = "\n".join(json.dumps(item) for item in items).encode()
    assert [item for _raw, item in split_envelope(raw)] == list(iter_envelope(raw))
