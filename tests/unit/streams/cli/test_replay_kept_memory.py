"""``ccmon replay`` keeps its file's events while it chooses ``at`` (streams.cli.replay._Kept): in
deflated marshal chunks, a few bytes an event, so that what the file held is freed in large
blocks as it is replayed and does not stay in the allocator's pages under the engine's state
(issue #16: 300,000 events within 150 MiB)."""

from __future__ import annotations

import tracemalloc

from kpi_core.events import Event, parse_event
from streams.cli.replay import _Kept

T0 = 1795143600


def day(n: int) -> list[Event]:
    """``n`` events shaped like a day's (bench/gen_events.py): offers, answers, ends."""
    events = []
    for i in range(n):
        call = f"c{i // 3}"
        if i % 3 == 0:
            raw = {"type": "call.offered", "call_id": call, "queue": f"q{i % 17:03}", "customer_id": f"cust{i % 5003}"}
        elif i % 3 == 1:
            raw = {"type": "call.answered", "call_id": call, "agent_id": f"a{i % 97}"}
        else:
            raw = {"type": "call.ended", "call_id": call, "talk_seconds": 180 + i % 50, "resolved": i % 2 == 0}
        events.append(parse_event({**raw, "event_id": f"e{i}", "ts": T0 + i // 4}))
    return events


def test_kept_events_take_a_few_bytes_each_and_come_back_equal() -> None:
    events = day(30_000)
    kept = _Kept()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number, event in enumerate(events, start=1):
            kept.add(number, event)
        held = (tracemalloc.get_traced_memory()[0] - before) / len(events)
    finally:
        tracemalloc.stop()
    # Kept as lists of their fields with shared strings, they took ~90 bytes each here (~230 in
    # a real file's mix); in deflated marshal chunks ~27, most of it the last chunk, still open.
    assert held < 45, held
    assert [event for _number, event in kept.items()] == events
