"""``ccmon replay`` without ``--at`` reads its file once (issue #16 item 8): the events are kept
parsed and compact (``streams.cli.replay._Kept``) until the default ``at`` is known, and the result
is the one of a replay at that ``at`` (the golden tests check the output itself)."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
from harness.paths import TESTS

import streams.cli.replay as replay_module
from kpi_core.config import Config
from kpi_core.errors import InvalidEventError
from kpi_core.events import Event, parse_event
from streams.cli.replay import _Kept, replay

GOLDEN = TESTS / "golden" / "basic.jsonl"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files streams.cli.replay opens."""
    paths: list[str] = []

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        paths.append(str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(replay_module, "open", counting_open, raising=False)
    return paths


def messy_file(tmp_path: Path) -> Path:
    """The golden day with blank lines, bad lines and a mis-stamped event mixed in."""
    lines = GOLDEN.read_text().splitlines()
    lines[3:3] = ["", "not json", "   "]
    lines[10:10] = [
        '{"event_id": "x1", "type": "call.offered", "ts": "2099-01-01T00:00:00Z", "queue": "q", "call_id": "z"}',
        '{"event_id": "x2", "type": "call.exploded", "ts": 1795165200}',
        "",
    ]
    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_without_at_reads_the_file_once(tmp_path: Path, opened: list[str]) -> None:
    path = messy_file(tmp_path)
    result = replay(str(path), Config())
    assert opened == [str(path)]
    assert result.choice is not None and result.choice.excluded == 1  # the 2099 event
    assert result.rejected == {"invalid_json": 1, "unknown_type": 1}


def test_replay_without_at_is_the_replay_at_the_chosen_at(tmp_path: Path) -> None:
    path = messy_file(tmp_path)
    chosen = replay(str(path), Config())
    assert chosen.choice is not None
    given = replay(str(path), Config(), chosen.at)
    assert chosen.text == given.text
    assert chosen.first_errors == given.first_errors  # the same line numbers, blank lines counted
    assert (chosen.accepted, chosen.duplicates, chosen.left_out, chosen.rejected) == (
        given.accepted,
        given.duplicates,
        given.left_out,
        given.rejected,
    )
    assert any(error.startswith("line 5: invalid_json") for error in chosen.first_errors)


EVENTS = [
    {"event_id": "e1", "type": "call.offered", "ts": 1795165200, "queue": "q", "call_id": "c1", "priority": 0},
    {
        "event_id": "e2",
        "type": "call.ended",
        "ts": 1795165201.25,
        "call_id": "c1",
        "talk_seconds": 0,
        "hold_seconds": 0.0,
        "resolved": False,
        "tenant": "default",
        "direction": "inbound",
    },
    {
        "event_id": "e3",
        "type": "agent.state",
        "ts": "2026-11-20T09:30:00Z",
        "agent_id": "a",
        "state": "away",
        "queues": ["q2", "q1"],
        "reason": "lunch",
        "tenant": "t",
    },
    {
        "event_id": "e4",
        "type": "survey.response",
        "ts": 1795165200,
        "queue": "q",
        "survey": "csat",
        "score": 4,
        "scale_max": 5,
        "channel": "chat",
        "first_contact": True,
    },
    {"event_id": "e5", "type": "agent.state", "ts": 1795165200, "agent_id": "a", "state": "offline", "queues": []},
]


def test_kept_events_come_back_equal_in_order() -> None:
    kept = _Kept()
    items: list[tuple[int, Event | InvalidEventError]] = []
    for i, raw in enumerate(EVENTS * 2000):  # more than a chunk
        item: Event | InvalidEventError = parse_event(raw) if i % 7 else InvalidEventError("bad_timestamp", f"#{i}")
        number = i + 1 + i // 3  # a blank line after every third line
        kept.add(number, item)
        items.append((number, item))
    assert len(kept.chunks) > 1
    back = list(kept.items())
    assert [(n, e) for n, e in back if isinstance(e, Event)] == [(n, e) for n, e in items if isinstance(e, Event)]
    assert [(n, e.message) for n, e in back if not isinstance(e, Event)] == [
        (n, e.message) for n, e in items if not isinstance(e, Event)
    ]
    assert kept.chunks == [] and kept.strings == {}  # freed as read


def test_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    result = replay(str(path), Config())
    assert result.choice is not None and result.choice.at is None
    assert (result.accepted, sum(result.rejected.values()), result.first_errors) == (0, 0, [])
