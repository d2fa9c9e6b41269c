"""Hostile input in process, where a fuzzer can shrink what it finds (issue #9 item 4; the
pipeline-level test is tests/integration/test_fuzz_pipeline.py):

* Hypothesis: any bytes and any JSON value through the worker's envelope splitter and the
  parser end as events or rejections with a documented reason (never another exception), the
  same as ``iter_envelope``; an accepted event's names can become label values; any label
  value renders to text that prometheus_client's parser reads back intact (and one batch of
  them passes ``promtool check metrics`` when promtool is installed).
* atheris (coverage-guided, libFuzzer): the same invariants for 20,000 runs in a subprocess.
  atheris 3.0.0 installs from PyPI as a manylinux wheel for CPython 3.11 and is in the test
  extra (Linux), so ``deploy/local/install.sh test`` (``make test``, CI) installs it; the test
  fails, never skips, where it is missing. Its harness check (``fuzz_one``) and seed corpus also
  run in process through Hypothesis, so the same invariants are exercised without atheris too.

Takes ~10 s on an idle machine (Hypothesis ~4 s, atheris ~6 s; the planted-failure run stops at its first input).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from harness.hostile import events, json_values
from harness.paths import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from kpi_core.errors import InvalidEventError
from kpi_core.events import MAX_NAME_LENGTH, Event, Rejection, iter_envelope, parse_event
from kpi_core.exposition import render
from kpi_core.kpis import MetricFamily
from streams.worker import split_envelope

#: Every reason the parser gives (the engine adds too_late, from_the_future, too_many_series).
REASON = re.compile(
    r"invalid_json|not_an_object|unknown_type|bad_timestamp|negative_duration|score_out_of_range|"
    r"(missing_field|invalid_field):[a-z_]+"
)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_item(raw: bytes, item: Event | Rejection) -> None:
    if isinstance(item, Rejection):
        assert REASON.fullmatch(item.reason), item.reason
        assert isinstance(item.raw, bytes) and isinstance(item.message, str)
        return
    for name in (item.tenant, item.queue, item.to_queue, *(item.queues or ())):
        if name is not None:  # these become label values
            assert 0 < len(name) <= MAX_NAME_LENGTH and not CONTROL.search(name), name
    assert 0 <= item.ts < 4_102_444_800


def check_message(raw: bytes) -> None:
    pairs = list(split_envelope(raw))
    assert [parsed for _raw, parsed in pairs] == list(iter_envelope(raw))
    for element_raw, parsed in pairs:
        assert isinstance(element_raw, bytes)
        check_item(element_raw, parsed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_any_bytes_end_as_events_or_rejections(raw: bytes) -> None:
    check_message(raw)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(events, json_values), max_size=5), st.sampled_from(["array", "ndjson", "one"]))
def test_any_json_ends_as_events_or_rejections(values: list[Any], shape: str) -> None:
    texts = [json.dumps(v, allow_nan=True) for v in values]
    if shape == "array":
        raw = ("[" + ",".join(texts) + "]").encode()
    elif shape == "ndjson":
        raw = "\n".join(texts).encode()
    else:
        raw = (texts[0] if texts else "{}").encode()
    check_message(raw)
    for value in values:
        try:
            check_item(b"", parse_event(value))
        except InvalidEventError as exc:
            assert REASON.fullmatch(exc.reason), exc.reason


label_values = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)  # no lone surrogates


@settings(max_examples=300, deadline=None)
@given(st.lists(label_values, min_size=1, max_size=5))
def test_any_label_value_survives_the_exposition(values: list[str]) -> None:
    family = MetricFamily("ccmon_calls_offered", "gauge", 'help with "quotes", \\ and a\nnewline')
    for i, value in enumerate(values):
        family.add((("tenant", value), ("queue", f"q{i}")), float(i))
    text = render([family])
    [parsed] = list(text_string_to_metric_families(text))
    assert [s.labels["tenant"] for s in parsed.samples] == values


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_takes_hostile_label_values() -> None:
    values = [
        '"',
        "\\",
        "\n",
        "}",
        "{",
        "=",
        ",",
        "📞",
        "\u200f",
        "\u200b",
        "\x00",
        "\r",
        "\u2028",
        "\ufeff",
        '"}\\n{a="b",',
        "\\n",
        '\\\\"',
        "x" * 1000,
    ]
    family = MetricFamily("ccmon_calls_offered", "gauge", "Calls.")
    for i, value in enumerate(values):
        family.add((("tenant", value), ("queue", f"q{i}")), 1.0)
    text = render([family])
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    [parsed] = list(text_string_to_metric_families(text))
    assert [s.labels["tenant"] for s in parsed.samples] == values


def fuzz_one(data: bytes) -> None:
    """One fuzz input: the atheris harness runs this function's source, and so does Hypothesis."""
    for raw, item in split_envelope(data):
        assert isinstance(raw, bytes)
        if isinstance(item, Rejection):
            assert item.reason and " " not in item.reason
            continue
        assert isinstance(item, Event)
        family = MetricFamily("ccmon_calls_offered", "gauge", "x")
        family.add((("tenant", item.tenant), ("queue", item.queue or "q")), 1.0)
        [parsed] = list(text_string_to_metric_families(render([family])))
        assert parsed.samples[0].labels["tenant"] == item.tenant


HARNESS = (
    textwrap.dedent("""
    import sys
    import atheris

    with atheris.instrument_imports():
        from kpi_core.events import Event, Rejection
        from kpi_core.exposition import render
        from kpi_core.kpis import MetricFamily
        from streams.worker import split_envelope

    from prometheus_client.parser import text_string_to_metric_families

""")
    + inspect.getsource(fuzz_one)
    + textwrap.dedent("""

    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()
""")
)
SEEDS = [
    b'[{"event_id":"e","type":"call.offered","ts":1795165200,"queue":"q","call_id":"c","tenant":"t\\"x"}]',
    b'{"event_id":"e","type":"agent.state","ts":"2026-11-20T09:30:00Z","agent_id":"a","state":"acw"}\n[1]',
    b'{"event_id":"e","type":"survey.response","ts":1795165200,"queue":"q","survey":"csat","score":5}',
]
ATHERIS_MISSING = (
    "atheris is not installed: it is in the test extra (Linux), so run `bash deploy/local/"
    "install.sh test` (make test and CI do); this test must not be skipped"
)


#: Byte edits of a seed, the kind libFuzzer makes: (where, as a fraction of the length; bytes put there; bytes cut).
edits = st.lists(st.tuples(st.floats(0, 1), st.binary(max_size=8), st.integers(0, 8)), max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), edits)
def test_fuzz_corpus_mutations_in_process(seed: bytes, changes: list[tuple[float, bytes, int]]) -> None:
    data = seed
    for where, put, cut in changes:
        at = int(where * len(data))
        data = data[:at] + put + data[at + cut :]
    fuzz_one(data)


def run_atheris(tmp_path: Path, harness_text: str, runs: int) -> tuple[int, str]:
    harness = tmp_path / "harness.py"
    harness.write_text(harness_text)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    done = subprocess.run(
        [
            sys.executable,
            str(harness),
            f"-runs={runs}",
            "-max_len=4096",
            "-seed=20261123",
            "-timeout=10",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        timeout=300,
        cwd=REPO,
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.slow
def test_atheris_finds_nothing_in_20000_runs(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(ATHERIS_MISSING)
    returncode, output = run_atheris(tmp_path, HARNESS, 20000)
    assert returncode == 0, output[-4000:]
    assert "Done 20000 runs" in output, output[-2000:]


@pytest.mark.slow
def test_atheris_harness_reports_a_planted_failure(tmp_path: Path) -> None:
    """The same harness with a check that every event breaks: atheris must stop and say so (not pass)."""
    if importlib.util.find_spec("atheris") is None:
        pytest.fail(ATHERIS_MISSING)
    planted = HARNESS.replace("assert isinstance(item, Event)", "assert not isinstance(item, Event), 'planted'")
    assert planted != HARNESS
    returncode, output = run_atheris(tmp_path, planted, 20000)
    assert returncode != 0, output[-2000:]
    assert "AssertionError: planted" in output, output[-4000:]
    assert "Done 20000 runs" not in output
