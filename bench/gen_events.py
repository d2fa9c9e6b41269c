"""Synthetic load for benchmarks: a day of contact-center events, seeded, as JSONL.

Not the simulator (that one models patience, shifts and Erlang behaviour); this only makes
a realistic *mix* of event types at volume, fast: calls (offer, answer/abandon/voicemail,
ring-no-answer, end), callbacks, outbound calls, tickets, surveys and agent states, in time
order, across many queues and customers.

    python bench/gen_events.py --events 1000000 --queues 20 --out /tmp/day.jsonl
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from collections.abc import Iterator
from typing import Any

DAY_START = 1_795_132_800  # 2026-11-20T00:00:00Z


def generate(n_events: int, queues: int, seed: int, start: int = DAY_START) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    queue_names = [f"q{i:03d}" for i in range(queues)]
    customers = max(1000, n_events // 20)
    units = max(1, int(n_events / 2.5))  # ~2.5 events per unit, spread over 20 hours
    step = 20 * 3600 / units
    counter = 0
    pending: list[tuple[float, int, dict[str, Any]]] = []

    seq = 0

    def push(item: tuple[float, dict[str, Any]]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(pending, (item[0], seq, item[1]))

    def eid() -> str:
        nonlocal counter
        counter += 1
        return f"e{counter}"

    emitted = 0
    t = float(start + 3 * 3600)
    unit = 0
    while emitted < n_events:
        t += rng.expovariate(1 / step)
        ts = int(t)
        unit += 1
        queue = rng.choice(queue_names)
        kind = rng.random()
        if kind < 0.70:
            call = f"c{unit}"
            cust = f"cust{rng.randrange(customers)}"
            push((ts, {"type": "call.offered", "call_id": call, "queue": queue, "customer_id": cust}))
            wait = int(rng.expovariate(1 / 25))
            outcome = rng.random()
            if outcome < 0.85:
                agent = f"a{rng.randrange(200)}"
                if rng.random() < 0.1:
                    push((ts + wait // 2, {"type": "call.ring_no_answer", "call_id": call, "agent_id": agent}))
                push((ts + wait, {"type": "call.answered", "call_id": call, "agent_id": agent}))
                talk = int(rng.lognormvariate(5, 0.6))
                push(
                    (
                        ts + wait + talk,
                        {
                            "type": "call.ended",
                            "call_id": call,
                            "talk_seconds": talk,
                            "hold_seconds": rng.choice([0, 0, 0, 30]),
                            "acw_seconds": 20,
                            "resolved": rng.random() < 0.8,
                        },
                    )
                )
            elif outcome < 0.95:
                push((ts + wait, {"type": "call.abandoned", "call_id": call}))
            else:
                push((ts + wait, {"type": "call.voicemail", "call_id": call}))
        elif kind < 0.76:
            cust = f"cust{rng.randrange(customers)}"
            push(
                (
                    ts,
                    {
                        "type": "call.offered",
                        "call_id": f"o{unit}",
                        "queue": queue,
                        "customer_id": cust,
                        "direction": "outbound",
                    },
                )
            )
            push(
                (
                    ts + 120,
                    {
                        "type": "call.ended",
                        "call_id": f"o{unit}",
                        "talk_seconds": 100,
                        "outcome": "sale" if rng.random() < 0.2 else "no_sale",
                    },
                )
            )
        elif kind < 0.82:
            ticket = f"t{unit}"
            push((ts, {"type": "ticket.created", "ticket_id": ticket, "queue": queue, "channel": "email"}))
            push((ts + rng.randrange(60, 7200), {"type": "ticket.replied", "ticket_id": ticket, "author": "agent"}))
            if rng.random() < 0.7:
                push((ts + rng.randrange(7200, 20000), {"type": "ticket.resolved", "ticket_id": ticket}))
        elif kind < 0.90:
            survey = rng.choice(["csat", "nps", "ces"])
            score = {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10), "ces": rng.randint(1, 7)}[survey]
            push((ts, {"type": "survey.response", "survey": survey, "score": score, "queue": queue}))
        elif kind < 0.95:
            cb = f"cb{unit}"
            push(
                (
                    ts,
                    {
                        "type": "callback.requested",
                        "callback_id": cb,
                        "queue": queue,
                        "customer_id": f"cust{rng.randrange(customers)}",
                    },
                )
            )
            push((ts + rng.randrange(60, 3600), {"type": "callback.attempted", "callback_id": cb, "agent_id": "a1"}))
        else:
            push(
                (
                    ts,
                    {
                        "type": "agent.state",
                        "agent_id": f"a{rng.randrange(200)}",
                        "state": rng.choice(["available", "on_call", "acw", "away"]),
                        "queues": [queue],
                    },
                )
            )
        while pending and pending[0][0] <= ts and emitted < n_events:
            when, _seq, event = heapq.heappop(pending)
            event["event_id"] = eid()
            event["ts"] = when
            yield event
            emitted += 1
    while pending and emitted < n_events:
        when, _seq, event = heapq.heappop(pending)
        event["event_id"] = eid()
        event["ts"] = when
        yield event
        emitted += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="-")
    args = parser.parse_args(argv)
    out = sys.stdout if args.out == "-" else open(args.out, "w")  # noqa: SIM115 - closed below
    try:
        for event in generate(args.events, args.queues, args.seed):
            out.write(json.dumps(event, separators=(",", ":")))
            out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
