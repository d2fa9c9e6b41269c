"""The simulator: reproducible, valid events, a consistent model, realistic shape, fault
injection that the engine absorbs, and its command line and Kafka envelopes."""

from __future__ import annotations

import collections
import io
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.errors import ConfigError, InvalidEventError
from kpi_core.events import EVENT_TYPES, parse_event, parse_line
from kpi_core.kpis import flatten, snapshot
from kpi_core.state import MemoryState
from streams.cli import main
from streams.cli.simulate import drive
from streams.kafka.produce import KafkaSink, Record, dumps, partition_key
from streams.sim import (
    Pacer,
    QueueSpec,
    SimParams,
    Simulator,
    default_queues,
    format_ts,
    parse_start,
    profile_share,
)

DAY = 1_795_132_800.0  # 2026-11-20T00:00:00Z


def day_params(**overrides: Any) -> SimParams:
    values: dict[str, Any] = {"start": DAY, "hours": 24.0, "queues": default_queues(4), "seed": 7}
    values.update(overrides)
    return SimParams(**values)


def to_event(record: Record) -> Any:
    return parse_event(record) if isinstance(record, dict) else parse_line(record)


@pytest.fixture(scope="module")
def day() -> list[tuple[float, Record]]:
    """A day of four queues, no injected faults."""
    return list(Simulator(day_params()).stream())


@pytest.fixture(scope="module")
def events(day: list[tuple[float, Record]]) -> list[dict[str, Any]]:
    records = [record for _emit_at, record in day]
    assert all(isinstance(r, dict) for r in records)
    return records  # type: ignore[return-value]


#: Evaluation instant for the day's KPIs: 23:59, so ``today`` is the whole day.
DAY_END = DAY + 86400 - 60


@pytest.fixture(scope="module")
def clean_metrics(day: list[tuple[float, Record]]) -> dict[Any, float]:
    return run_engine(day, DAY_END)


def run_engine(records: list[tuple[float, Record]], at: float, config: Config | None = None) -> dict[Any, float]:
    config = config or Config()
    store = MemoryState()
    engine = Engine(config, store)
    for emit_at, record in records:
        try:
            event = to_event(record)
        except InvalidEventError as exc:
            engine.reject(exc.reason)
            continue
        engine.handle(event, emit_at)
    return flatten(snapshot(config, store, at))


def lines(records: list[tuple[float, Record]]) -> bytes:
    return "".join(dumps(record) + "\n" for _t, record in records).encode("utf-8")


# -- reproducibility --------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_gives_byte_identical_output_whatever_the_chunking(day: list[tuple[float, Record]]) -> None:
    again = list(Simulator(day_params()).stream(step_seconds=7.3))
    assert lines(again) == lines(day)
    sim = Simulator(day_params())
    chunked: list[tuple[float, Record]] = []
    t = DAY
    while t < DAY + 86400:
        t = min(t + 601.0, DAY + 86400)
        chunked.extend(sim.advance(t))
    chunked.extend(sim.finish())
    assert lines(chunked) == lines(day)


def test_another_seed_gives_other_traffic(day: list[tuple[float, Record]]) -> None:
    other = list(Simulator(day_params(seed=8)).stream())
    assert lines(other) != lines(day)


def test_injection_leaves_the_valid_events_alone(events: list[dict[str, Any]]) -> None:
    faulty = [
        r for _t, r in Simulator(day_params(late_share=0.05, duplicate_share=0.05, malformed_share=0.02)).stream()
    ]
    valid: dict[str, dict[str, Any]] = {}
    for record in faulty:
        try:
            parse_event(record) if isinstance(record, dict) else parse_line(record)
        except InvalidEventError:
            continue
        assert isinstance(record, dict)
        valid.setdefault(record["event_id"], record)
    assert list(valid.values()) != events  # delivery order changed (late ones)...
    assert sorted(valid.values(), key=lambda e: e["event_id"]) == events  # ...the events did not


# -- every event is valid -----------------------------------------------------------------------------
def test_every_event_parses_and_every_type_appears(events: list[dict[str, Any]]) -> None:
    types = collections.Counter(parse_event(e).type for e in events)
    assert set(types) == set(EVENT_TYPES)
    assert types["call.offered"] > 3000
    assert len({e["event_id"] for e in events}) == len(events)


def test_events_come_in_time_order_stamped_at_their_delivery(day: list[tuple[float, Record]]) -> None:
    previous = -math.inf
    for emit_at, record in day:
        assert isinstance(record, dict)
        ts = parse_event(record).ts
        assert ts == pytest.approx(emit_at, abs=1e-3)
        assert ts >= previous
        previous = ts
    assert DAY <= previous < DAY + 86400


def test_format_ts_is_rfc3339_utc_with_milliseconds() -> None:
    assert format_ts(DAY + 36000.25) == "2026-11-20T10:00:00.250Z"
    assert format_ts(DAY + 59.9996) == "2026-11-20T00:01:00.000Z"


# -- the model is consistent ----------------------------------------------------------------------
def test_call_lifecycles_are_consistent(events: list[dict[str, Any]]) -> None:
    """Per call and queue leg: one offer, then exactly one outcome; rings and ends only
    where they make sense; waits equal the time from the offer."""
    legs: dict[tuple[str, str], dict[str, Any]] = {}
    terminal = {"call.answered", "call.abandoned", "call.timeout", "call.voicemail", "call.transferred"}
    for e in events:
        if not e["type"].startswith("call.") or e["call_id"].startswith("o"):
            continue
        ev = parse_event(e)
        key = (e["call_id"], e["queue"])
        if ev.type == "call.offered":
            legs[key] = {"offer": ev.ts, "outcome": None, "ended": 0}
            continue
        leg = legs[key]
        if ev.type in terminal:
            if leg["outcome"] == "call.answered" and ev.type == "call.transferred":
                leg["transferred_after_answer"] = True  # an agent passed the caller on
                continue
            assert leg["outcome"] is None, (e, leg)
            leg["outcome"] = ev.type
            assert ev.wait_seconds == pytest.approx(ev.ts - leg["offer"], abs=2e-3)
        elif ev.type == "call.ring_no_answer":
            assert leg["outcome"] is None  # the call keeps waiting
        elif ev.type == "call.ended":
            assert leg["outcome"] == "call.answered"
            leg["ended"] += 1
    outcomes = collections.Counter(leg["outcome"] for leg in legs.values())
    assert outcomes[None] < 5  # only calls still in progress at the end of the day
    assert {"call.answered", "call.abandoned", "call.voicemail"} <= set(outcomes)
    assert sum(1 for leg in legs.values() if leg.get("transferred_after_answer")) > 30
    assert all(
        leg["ended"] == 1 for leg in legs.values() if leg["outcome"] == "call.answered" and leg["offer"] < DAY + 86000
    )


def test_agent_states_follow_the_calls(events: list[dict[str, Any]]) -> None:
    """An agent answers only when available, is on a call while talking, in after-call work
    or available right after, and never holds two calls at once. (An outbound dial nobody
    picks up has no ``call.ended``: the agent is simply free again.)"""
    state: dict[str, str] = {}
    talking: dict[str, str | None] = {}
    seen_states: set[str] = set()
    for e in events:
        kind = e["type"]
        if kind == "agent.state":
            state[e["agent_id"]] = e["state"]
            seen_states.add(e["state"])
            if e["state"] in ("available", "away", "offline"):
                current = talking.get(e["agent_id"])
                assert current is None or current.startswith("o"), e
                talking[e["agent_id"]] = None
        elif kind == "call.answered":
            agent = e["agent_id"]
            assert state.get(agent) == "available", (e, state.get(agent))
            assert talking.get(agent) is None
            talking[agent] = e["call_id"]
        elif kind == "call.offered" and e.get("direction") == "outbound":
            agent = e["agent_id"]
            assert state.get(agent) == "on_call"
            assert talking.get(agent) is None
            talking[agent] = e["call_id"]
        elif kind == "call.ended":
            agent = e["agent_id"]
            assert talking.get(agent) == e["call_id"]
            assert state.get(agent) == "on_call"
            talking[agent] = None
        elif kind == "call.ring_no_answer":
            assert state.get(e["agent_id"]) == "available"
    assert seen_states == {"available", "on_call", "acw", "away", "offline"}


def test_every_requested_callback_is_attempted_with_its_id(events: list[dict[str, Any]]) -> None:
    requested = {e["callback_id"] for e in events if e["type"] == "callback.requested"}
    attempted = {e["callback_id"] for e in events if e["type"] == "callback.attempted"}
    assert requested
    assert attempted <= requested
    assert len(attempted) >= 0.6 * len(requested)  # the rest: recontacted, or still due


# -- the shape of the day -----------------------------------------------------------------------------
def test_intraday_profile_peak_dip_and_closed_hours(events: list[dict[str, Any]]) -> None:
    per_hour = collections.Counter(
        int((parse_event(e).ts - DAY) // 3600)
        for e in events
        if e["type"] == "call.offered" and e.get("direction") != "outbound"
    )
    assert all(per_hour[h] == 0 for h in (*range(0, 7), *range(20, 24)))  # queues open 07-20
    assert per_hour[10] > 2 * per_hour[7]  # the morning ramp
    assert per_hour[12] < per_hour[10]  # the lunch dip
    assert per_hour[10] > per_hour[18]  # a quieter evening
    assert profile_share("office", 10.0) == 1.0 and profile_share("flat", 3.0) == 1.0


@pytest.mark.slow
def test_kpis_of_a_day_are_plausible(clean_metrics: dict[Any, float]) -> None:
    m = clean_metrics

    def value(name: str, queue: str = "_all", **labels: str) -> float:
        return m[(name, (("tenant", "default"), ("queue", queue), *labels.items()))]

    assert 0.6 < value("ccmon_service_level_ratio", window="today") < 0.97
    assert 0.005 < value("ccmon_abandon_rate_ratio", window="today") < 0.12
    assert 180 < value("ccmon_average_handle_time_seconds", window="today") < 600
    assert 0.3 < value("ccmon_occupancy_ratio", window="today") < 0.9
    assert value("ccmon_callbacks_made", window="today") > 20
    assert value("ccmon_callbacks_pending") < 5  # the evening cleared the worklist
    assert 0.05 < value("ccmon_outbound_conversion_ratio", "sales", window="today") < 0.4
    assert 0.5 < value("ccmon_csat_ratio", window="today") < 0.95
    assert -60 < value("ccmon_nps_score", window="today") < 80
    assert value("ccmon_tickets_created", window="today") > 300
    assert 0 < value("ccmon_ticket_reopen_rate_ratio", window="today") < 0.15
    assert value("ccmon_agent_missed_rings", window="today") > 10
    assert value("ccmon_transfers_out", window="today") > 30
    assert value("ccmon_calls_missed", window="today") > value("ccmon_calls_voicemail", window="today") > 0
    assert value("ccmon_agents", state="offline", reason="none") > 0  # after the shifts ended


@pytest.mark.slow
def test_faults_are_absorbed_by_the_engine(day: list[tuple[float, Record]], clean_metrics: dict[Any, float]) -> None:
    """Late, duplicated and malformed deliveries change no KPI (order independence,
    idempotence, rejection), only the pipeline counters."""
    faulty = list(Simulator(day_params(late_share=0.05, duplicate_share=0.05, malformed_share=0.02)).stream())
    clean, dirty = clean_metrics, run_engine(faulty, DAY_END)
    pipeline = ("ccmon_events_", "ccmon_event_lag", "ccmon_last_event")

    def kpis(m: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in m.items() if not k[0].startswith(pipeline)}

    # Exactly, maxima included: whole-number sums and retractable maxima (kpi_core.state).
    assert kpis(dirty) == kpis(clean)
    rejected = {dict(k[1])["reason"]: v for k, v in dirty.items() if k[0] == "ccmon_events_rejected_total"}
    duplicates = sum(v for k, v in dirty.items() if k[0] == "ccmon_events_duplicate_total")
    n = len(day)
    assert 0.01 * n < sum(rejected.values()) < 0.03 * n
    assert {
        "invalid_json",
        "missing_field:event_id",
        "bad_timestamp",
        "unknown_type",
        "negative_duration",
        "invalid_field:queue",
    } == set(rejected)
    assert 0.04 * n < duplicates < 0.06 * n


def test_late_events_arrive_minutes_late() -> None:
    records = list(Simulator(day_params(hours=6.0, late_share=0.1)).stream())
    delays = [emit_at - parse_event(r).ts for emit_at, r in records if isinstance(r, dict)]
    late = [d for d in delays if d > 0]
    assert 0.08 < len(late) / len(delays) < 0.12
    assert min(late) >= 60 and max(late) <= 900


# -- parameters -----------------------------------------------------------------------------------
def test_queue_selection_and_staffing() -> None:
    assert [q.name for q in default_queues(2)] == ["support", "sales"]
    assert [q.name for q in default_queues(8)][-2:] == ["queue-07", "queue-08"]
    assert [q.name for q in default_queues(["billing", "claims"])] == ["billing", "claims"]
    assert all(q.agents == 3 for q in default_queues(3, agents=3))
    support = default_queues(1)[0]
    assert support.headcount(shifts=False) < support.headcount(shifts=True)
    sim = Simulator(day_params(queues=default_queues(2, agents=5), hours=1.0))
    assert len(sim.agents) == 10


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: QueueSpec("q", calls_per_hour=-1), "queues.q.calls_per_hour"),
        (lambda: QueueSpec("q", calls_per_hour=10, voicemail_share=1.5), "queues.q.voicemail_share"),
        (lambda: QueueSpec("_all", calls_per_hour=10), "queues"),
        (lambda: QueueSpec("q", calls_per_hour=10, open_hours=(20.0, 7.0)), "queues.q.open_hours"),
        (lambda: day_params(late_share=0.9), "--late-share"),
        (lambda: day_params(hours=0.0), "--hours"),
        (lambda: default_queues(0), "--queues"),
        (lambda: default_queues(["a", "a"]), "--queues"),
    ],
)
def test_bad_parameters_name_the_field(build: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.field == field


def test_parse_start() -> None:
    now = DAY + 12345.6
    assert parse_start("today", now) == DAY
    assert parse_start("08:30", now) == DAY + 8.5 * 3600
    assert parse_start("now", now) == round(now)
    assert parse_start("2026-11-20T10:00:00+01:00") == DAY + 9 * 3600
    assert parse_start(str(DAY)) == DAY
    with pytest.raises(ConfigError):
        parse_start("tomorrow-ish", now)


def test_parse_start_before_now() -> None:
    now = DAY + 12345.6
    assert parse_start("now-2h", now) == round(now - 7200)
    assert parse_start("now-90m", now) == round(now - 5400)
    assert parse_start("now-30s", now) == round(now - 30)
    for bad in ("now-2d", "now-h", "now-200h", "now - 2h", "-2h"):
        with pytest.raises(ConfigError) as info:
            parse_start(bad, now)
        assert info.value.field == "--start", bad


def test_pacer_maps_wall_time_to_simulated_time() -> None:
    wall = [100.0]
    pacer = Pacer(DAY, 60.0, clock=lambda: wall[0])
    wall[0] = 102.5
    assert pacer.sim_now() == DAY + 150.0
    assert Pacer(DAY, 0.0).sim_now() == math.inf
    with pytest.raises(ConfigError):
        Pacer(DAY, -1.0)


def test_paced_drive_follows_the_clock() -> None:
    """At --speed 600 an hour takes six (fake) seconds, delivered in small steps."""
    wall = [0.0]
    batches: list[int] = []
    sim = Simulator(day_params(start=DAY + 10 * 3600, hours=1.0))

    def sleep(seconds: float) -> None:
        wall[0] += seconds

    drive(sim, lambda records: batches.append(len(list(records))), 600.0, sleep=sleep, clock=lambda: wall[0])
    assert 5.5 <= wall[0] <= 6.5
    assert len(batches) > 50 and sum(batches) == sim.delivered


def test_live_drive_never_runs_ahead_of_the_wall_clock() -> None:
    """--live: two hours before now at --speed 600 catch up in 12 (fake) seconds, then follow
    the wall clock; no record is handed over before the wall clock has reached its time."""
    wall = [DAY + 12 * 3600.0]
    sim = Simulator(day_params(start=wall[0] - 2 * 3600, hours=3.0))
    ahead: list[float] = []
    caught_up: list[float] = []

    def write(records: Iterable[tuple[float, Any]]) -> None:
        for emit_at, _record in records:
            ahead.append(emit_at - wall[0])
        if sim.now >= wall[0] and not caught_up:
            caught_up.append(wall[0])

    def sleep(seconds: float) -> None:
        wall[0] += seconds

    drive(sim, write, 600.0, sleep=sleep, clock=lambda: wall[0], ceiling=lambda: wall[0])
    assert ahead and max(ahead) <= 0.0
    assert caught_up and caught_up[0] - (DAY + 12 * 3600.0) == pytest.approx(12.0, abs=0.5)
    assert wall[0] == pytest.approx(DAY + 13 * 3600.0, abs=0.5)  # the last hour in real time
    assert sim.now == sim.params.end


def test_live_drive_at_full_speed_sends_the_past_at_once() -> None:
    wall = [DAY + 12 * 3600.0]
    sim = Simulator(day_params(start=wall[0] - 3600, hours=1.5))
    sent: list[float] = []
    drive(
        sim,
        lambda records: sent.extend(t for t, _r in records),
        0.0,
        sleep=lambda s: wall.__setitem__(0, wall[0] + s),
        ceiling=lambda: wall[0],
    )
    assert max(sent) <= sim.params.end and wall[0] == pytest.approx(DAY + 12.5 * 3600.0, abs=0.5)


# -- output ---------------------------------------------------------------------------------------
class FakeProducer:
    def __init__(self, partitions: int = 4) -> None:
        self._partitions = set(range(partitions))
        self.sent: list[dict[str, Any]] = []
        self.flushed = 0

    def partitions_for(self, topic: str) -> set[int]:
        return self._partitions

    def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "partition": partition})

    def flush(self) -> None:
        self.flushed += 1


def test_kafka_envelopes_group_events_per_partition() -> None:
    records = [r for _t, r in Simulator(day_params(hours=3.0, start=DAY + 9 * 3600, malformed_share=0.02)).stream()]
    producer = FakeProducer(4)
    sink = KafkaSink(producer, "ccmon.events", batch=50)
    sink.write(records)
    sink.flush()
    assert producer.flushed == 1
    delivered = 0
    for message in producer.sent:
        assert message["topic"] == "ccmon.events"
        items = json.loads(message["value"])
        assert isinstance(items, list) and 1 <= len(items) <= 50
        for item in items:
            key = partition_key(item) if isinstance(item, dict) else None
            if key is not None:
                assert sink.partition_for(key) == message["partition"]
        delivered += len(items)
    assert delivered == len(records)
    assert {m["partition"] for m in producer.sent} == {0, 1, 2, 3}
    # Each call's events stay in one partition.
    by_call = collections.defaultdict(set)
    for message in producer.sent:
        for item in json.loads(message["value"]):
            if isinstance(item, dict) and "call_id" in item:
                by_call[item["call_id"]].add(message["partition"])
    assert all(len(parts) == 1 for parts in by_call.values())


def test_kafka_sink_needs_an_existing_topic() -> None:
    producer = FakeProducer()
    producer._partitions = set()
    with pytest.raises(ConfigError):
        KafkaSink(producer, "missing")


def test_cli_writes_jsonl_and_a_summary(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "day.jsonl"
    argv = [
        "simulate",
        "--start",
        "2026-11-20T08:00:00Z",
        "--hours",
        "2",
        "--queues",
        "support,sales",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    first = out.read_bytes()
    assert main(argv) == 0
    assert out.read_bytes() == first
    rows = first.decode().splitlines()
    assert len(rows) > 500
    assert all(parse_line(row) for row in rows)
    assert "simulated 2026-11-20T08:00Z + 2 h" in capsys.readouterr().err


def test_cli_streams_to_stdout_and_replays(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--start", "2026-11-20T09:00:00Z", "--hours", "1", "--queues", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    path = tmp_path / "hour.jsonl"
    path.write_text(captured.out)
    assert main(["replay", str(path), "--quiet"]) == 0
    assert 'ccmon_calls_offered{tenant="default",queue="support",window="1h"}' in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--hours", "0"]) == 2
    assert main(["simulate", "--start", "yesterday-ish", "--hours", "1"]) == 2
    assert "--start" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--late-share", "2"])


def test_progress_goes_to_stderr() -> None:
    from streams.cli.simulate import _Progress

    sim = Simulator(day_params(hours=1.0))
    stream = io.StringIO()
    meter = _Progress(sim, True, stream)
    sim.advance(DAY + 1800)
    meter.update(force=True)
    meter.done()
    text = stream.getvalue()
    assert "simulating 2026-11-20T00:30:00Z" in text and "50.0%" in text


def iter_records(sim: Simulator) -> Iterator[Record]:
    for _t, record in sim.stream():
        yield record


def test_endless_simulation_keeps_going_day_after_day() -> None:
    sim = Simulator(day_params(hours=None, queues=default_queues(1)))
    first = sim.advance(DAY + 86400)
    second = sim.advance(DAY + 2 * 86400)
    offered = [
        sum(1 for _t, r in batch if isinstance(r, dict) and r["type"] == "call.offered") for batch in (first, second)
    ]
    assert offered[0] > 500 and offered[1] > 500
    with pytest.raises(ValueError):
        next(iter_records(sim))


def test_the_employee_pulse_is_opt_in_and_adds_only_its_answers(events: list[dict[str, Any]]) -> None:
    """``pulse_share`` 0 (the default) emits no esat/enps answer; with a share, agents answer
    as they log in, each answer a valid event naming the agent and one of its queues, and
    every other event is unchanged (its own random stream); the bigger queues get enough
    answers for the pulse to show (``pulse_min_responses`` 5)."""
    assert not any(e["type"] == "survey.response" and e["survey"] in ("esat", "enps") for e in events)
    with_pulse = [r for _t, r in Simulator(day_params(pulse_share=0.6)).stream()]
    pulse = [
        r
        for r in with_pulse
        if isinstance(r, dict) and r["type"] == "survey.response" and r["survey"] in ("esat", "enps")
    ]
    others = [r for r in with_pulse if r not in pulse]
    strip = ("event_id",)  # ids count every event emitted, answers included
    assert [{k: v for k, v in e.items() if k not in strip} for e in others] == [
        {k: v for k, v in e.items() if k not in strip} for e in events
    ]
    agents = {e["agent_id"]: set(e.get("queues", ())) for e in events if e["type"] == "agent.state"}
    assert pulse and all(
        parse_event(e).agent_id == e["agent_id"] and e["queue"] in agents[e["agent_id"]] for e in pulse
    )
    per_queue = collections.Counter(e["queue"] for e in pulse)
    assert sum(1 for n in per_queue.values() if n >= 5) >= 2, per_queue
    with pytest.raises(ConfigError, match="pulse_share"):
        day_params(pulse_share=1.5)
