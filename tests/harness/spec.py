"""The event spec's required fields (docs/EVENTS.md), written out here apart from
``kpi_core.events``: the tests that take them as their oracle (test_events, test_fuzz_pipeline)
then fail when the code's own table drifts from the spec."""

from __future__ import annotations

#: Event type -> the fields an event of that type must carry, besides event_id, type and ts.
REQUIRED: dict[str, tuple[str, ...]] = {
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
