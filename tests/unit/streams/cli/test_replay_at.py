"""``ccmon replay`` without ``--at``: ``at`` is the newest event time that is not a mis-stamped
outlier (streams/cli/replay.py, the fence Q3 + 10 x IQR + max_future_seconds). One event stamped
2099 used to move ``at`` to 2099, and every real event was then rejected too_late (0 accepted,
exit 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.paths import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi_core.config import Config, config_from_dict
from kpi_core.events import parse_ts
from streams.cli.replay import FENCE_IQR, AtChoice, exclusion_note, replay, robust_at

AT = parse_ts("2026-11-20T10:00:00Z")
Y2099 = parse_ts("2099-06-01T12:00:00Z")


def by_minute(times: list[float]) -> dict[int, tuple[int, float, float]]:
    minutes: dict[int, tuple[int, float, float]] = {}
    for ts in times:
        count, low, high = minutes.get(int(ts // 60), (0, ts, ts))
        minutes[int(ts // 60)] = (count + 1, min(low, ts), max(high, ts))
    return minutes


def call(n: int, ts: float) -> list[str]:
    """An answered call offered at ``ts``: three events."""
    base = {"tenant": "acme", "queue": "support", "call_id": f"c{n}"}
    return [
        json.dumps({"event_id": f"o{n}", "type": "call.offered", "ts": ts, **base}),
        json.dumps({"event_id": f"a{n}", "type": "call.answered", "ts": ts + 10, "agent_id": "a1", **base}),
        json.dumps({"event_id": f"e{n}", "type": "call.ended", "ts": ts + 70, "talk_seconds": 60, **base}),
    ]


def a_morning(tmp_path: Path, *extra: str) -> Path:
    """40 calls, one every 90 s from 09:00, and ``extra`` lines at the end."""
    lines = [line for n in range(40) for line in call(n, AT - 3600 + 90 * n)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


def newest_real(path: Path) -> float:
    return max(ts for line in path.read_text().splitlines() if (ts := parse_ts(json.loads(line)["ts"])) < AT + 86400)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "replay", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_one_event_stamped_2099_no_longer_empties_the_replay(tmp_path: Path) -> None:
    outlier = json.dumps(
        {
            "event_id": "x",
            "type": "call.offered",
            "ts": "2099-06-01T12:00:00Z",
            "tenant": "acme",
            "queue": "support",
            "call_id": "x",
        }
    )
    path = a_morning(tmp_path, outlier)
    result = replay(str(path), Config())
    assert result.at == newest_real(path)
    assert result.accepted == 119  # 120 real events; the newest (ts == at) is left out, as ever
    assert not result.rejected
    assert result.choice == AtChoice(
        at=result.at, events=121, fence=result.choice.fence, excluded=1, excluded_range=(Y2099, Y2099)
    )
    # the same KPIs as with --at the newest real event time, given explicitly
    assert result.text == replay(str(path), Config(), newest_real(path)).text


@pytest.mark.slow
def test_the_cli_says_what_it_left_out_and_exits_0(tmp_path: Path) -> None:
    stamps = ("2099-06-01T12:00:00Z", "2031-01-01T00:00:00Z")
    outliers = [
        json.dumps({"event_id": f"x{i}", "type": "agent.state", "ts": ts, "agent_id": "a9", "state": "away"})
        for i, ts in enumerate(stamps)
    ]
    path = a_morning(tmp_path, *outliers)
    proc = run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    note = proc.stderr.splitlines()[0]
    assert note.startswith(
        "ccmon replay: 2 of 122 events left out as mis-stamped: "
        "stamped 2031-01-01T00:00:00Z .. 2099-06-01T12:00:00Z, later than 2026-11-20T"
    )
    assert "third quartile of the file's event times + 10 inter-quartile ranges + engine.max_future_seconds" in note
    assert "at = 2026-11-20T09:59:40Z" in note  # the last call's end: 09:00 + 39 x 90 s + 70 s
    assert "replayed: 119 accepted, 0 duplicates, 0 rejected, 3 at or after --at left out" in proc.stderr
    assert 'ccmon_calls_offered_total{tenant="acme",queue="support"} 40' in proc.stdout.replace(".0", "")
    # --quiet drops the summary, not the note
    quiet = run_cli(str(path), "--quiet")
    assert quiet.returncode == 0
    assert quiet.stderr.splitlines() == [note]
    assert quiet.stdout == proc.stdout


def test_nothing_is_said_when_nothing_is_left_out(tmp_path: Path) -> None:
    path = a_morning(tmp_path)
    proc = run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["replayed: 119 accepted, 0 duplicates, 0 rejected, 1 at or after --at left out"]
    choice = replay(str(path), Config()).choice
    assert choice is not None
    assert (choice.at, choice.events, choice.excluded, choice.excluded_range) == (newest_real(path), 120, 0, None)
    assert exclusion_note(choice) is None


def test_a_late_straggler_is_no_outlier(golden_lines: list[bytes]) -> None:
    """The golden file's last event comes 36 minutes after its third quartile, 50 after its
    first event: it stays the default ``at`` (Tukey's usual 3 x IQR would cut it)."""
    times = [float(json.loads(line)["ts"]) for line in golden_lines]
    choice = robust_at(by_minute(times), Config().max_future_seconds)
    assert choice.at == max(times)
    assert choice.excluded == 0
    tight = robust_at(by_minute(times), 0.0)
    assert tight.at == max(times)


def test_a_burst_keeps_max_future_seconds_after_it() -> None:
    """All events within one minute: the inter-quartile range is one minute, so the fence is
    that minute + 10 minutes + max_future_seconds, rounded up to a whole minute."""
    burst = [AT + i * 0.5 for i in range(100)]  # 10:00:00 .. 10:00:49.5
    for max_future in (0.0, 300.0):
        fence = AT + 60 + FENCE_IQR * 60 + max_future
        kept = robust_at(by_minute([*burst, fence - 1]), max_future)
        assert (kept.at, kept.excluded) == (fence - 1, 0)
        cut = robust_at(by_minute([*burst, fence, fence + 5]), max_future)
        assert (cut.at, cut.excluded, cut.excluded_range) == (burst[-1], 2, (fence, fence + 5))
        assert cut.fence == fence


def test_max_future_seconds_comes_from_the_config(tmp_path: Path) -> None:
    """Events within 10:00:00 .. 10:01:49 (quartile minutes 10:00 and 10:01: IQR 120 s, fence
    10:22 + max_future_seconds); one more at 10:25."""
    lines = [line for n in range(40) for line in call(n, AT + n)]
    late = json.dumps({"event_id": "late", "type": "agent.state", "ts": AT + 1500, "agent_id": "a9", "state": "away"})
    path = tmp_path / "burst.jsonl"
    path.write_text("\n".join([*lines, late]) + "\n")
    assert replay(str(path), Config()).at == AT + 1500  # within the default 300 s of slack
    strict = config_from_dict({"engine": {"max_future_seconds": 0}})
    assert replay(str(path), strict).at == AT + 39 + 70  # the last call's end
    assert replay(str(path), strict).choice.excluded == 1


def test_an_early_outlier_does_not_widen_the_fence() -> None:
    """A null date read as epoch 0 next to a 2099 stamp: quartiles ignore both."""
    times = [AT + 60 * i for i in range(50)]
    choice = robust_at(by_minute([0.0, *times, Y2099]), 300.0)
    assert choice.at == times[-1]
    assert choice.excluded_range == (Y2099, Y2099)


def test_no_valid_event_keeps_the_old_fallback() -> None:
    assert robust_at({}, 300.0) == AtChoice(at=None)
    assert exclusion_note(AtChoice(at=None)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=200))
def test_at_least_three_quarters_stay_and_at_is_an_event_time(times: list[float]) -> None:
    choice = robust_at(by_minute(times), 300.0)
    assert choice.at in times
    assert choice.events == len(times)
    assert choice.excluded <= len(times) // 4
    assert choice.excluded == sum(1 for ts in times if ts > choice.at and ts >= choice.fence)
    assert all(ts <= choice.at for ts in times if ts < choice.fence)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-W47-5T09:00:00Z", "ccmon replay: --at: ts is not RFC 3339: '2026-W47-5T09:00:00Z'"),
        ("2026-11-20T10:00:00", "ccmon replay: --at: ts has no UTC offset: '2026-11-20T10:00:00'"),
        ("\u00b2", "ccmon replay: --at: ts is not RFC 3339: '\u00b2'"),  # was a ValueError traceback
    ],
)
def test_at_is_parsed_like_an_event_ts(tmp_path: Path, value: str, message: str) -> None:
    proc = run_cli(str(a_morning(tmp_path)), "--at", value)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message]
    assert proc.stdout == ""
