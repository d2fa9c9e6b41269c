"""Hypothesis strategies for hostile input: JSON values of every shape (NaN, huge numbers,
lone surrogates, control characters, reserved names...) and event-like objects built of them.
Used by the hostile-input properties (tests/unit/kpi_core/test_hostile_properties.py) and the decoding
comparisons (tests/unit/streams/test_decoding.py)."""

from __future__ import annotations

from hypothesis import strategies as st

TYPES = [
    "call.offered",
    "call.answered",
    "call.abandoned",
    "call.ended",
    "callback.requested",
    "agent.state",
    "ticket.created",
    "ticket.replied",
    "survey.response",
    "kb.viewed",
    "call.exploded",
]
FIELDS = [
    "event_id",
    "type",
    "ts",
    "tenant",
    "queue",
    "call_id",
    "customer_id",
    "agent_id",
    "wait_seconds",
    "talk_seconds",
    "resolved",
    "state",
    "queues",
    "author",
    "survey",
    "score",
    "scale_max",
    "article_id",
    "session_id",
    "channel",
    "direction",
    "to_queue",
    "outcome",
    "note",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "_all",
            "support",
            "2026-11-20T09:30:00Z",
            "2026-11-20T09:30:00Z\x00x",
            "csat",
            "nps",
            "available",
            "agent",
            "sale",
            "\u202e",
            "a\nb",
            "\ud800",
        ]
    ),
    st.sampled_from(TYPES),
    st.just(1795165200),
    st.just(1e308),
    st.just(10**400),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
events = st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=12)
