"""Regressions found by the hostile-input and privacy work (issue #9 items 4 and 6), one test
each, no services:

* a rejected event of ~1 MB made the Faust agent crash on the DLQ send (the producer refused
  a record over its 1,000,000-byte default), so the batch was never acked and the offsets
  never committed: ``DeadLetter.fitted`` now cuts it to fit, with ``ccmon-truncated``;
* rejection messages (the DLQ's ``ccmon-error`` header) echoed a wrongly typed id (a
  customer's phone number) and a stray string (free text): they now name the type only;
* ``ts`` with a NUL in it was accepted: ``datetime.fromisoformat`` (CPython 3.11) stops reading
  at the NUL, so ``"2026-11-20T09:30:00Z\x00anything"`` passed as a timestamp.
"""

from __future__ import annotations

import json

import pytest

from kpi_core.errors import InvalidEventError
from kpi_core.events import Rejection, iter_envelope, parse_event, parse_line, parse_ts
from streams.worker import DLQ_MAX_RECORD_BYTES, DeadLetter, split_envelope

PHONE = "+4915112345678"


def dead(value: bytes, key: bytes | None = b"call-1") -> DeadLetter:
    return DeadLetter(key, value, "invalid_field:queue", "queue must be at most 128 printable characters", "t/0/7")


def record_size(letter: DeadLetter) -> int:
    return len(letter.key or b"") + len(letter.value) + sum(len(n) + len(v) for n, v in letter.headers)


def test_a_dead_letter_that_fits_is_sent_as_it_came() -> None:
    letter = dead(b"x" * 1_000_000)
    assert letter.fitted() is letter
    assert "ccmon-truncated" not in dict(letter.headers)


@pytest.mark.parametrize("size", [DLQ_MAX_RECORD_BYTES - 500, DLQ_MAX_RECORD_BYTES, 5 * DLQ_MAX_RECORD_BYTES])
def test_a_dead_letter_too_big_for_kafka_is_cut_to_fit(size: int) -> None:
    value = bytes(range(256)) * (size // 256 + 1)
    letter = dead(value[:size])
    fitted = letter.fitted()
    assert fitted is not letter
    assert record_size(fitted) <= DLQ_MAX_RECORD_BYTES - 1000  # room for Kafka's framing
    assert letter.value.startswith(fitted.value) and len(fitted.value) > DLQ_MAX_RECORD_BYTES - 2000
    headers = dict(fitted.headers)
    assert headers["ccmon-truncated"] == str(size).encode()
    assert headers["ccmon-reason"] == b"invalid_field:queue"
    assert fitted.key == b"call-1"


def test_a_huge_key_is_cut_too() -> None:
    fitted = dead(b"v" * 10, key=b"k" * (2 * DLQ_MAX_RECORD_BYTES)).fitted()
    assert record_size(fitted) <= DLQ_MAX_RECORD_BYTES - 1000
    assert fitted.value == b"v" * 10
    assert dict(fitted.headers)["ccmon-truncated"] == b"10"


ID_FIELDS = ["customer_id", "call_id", "callback_id", "ticket_id", "contact_id", "event_id"]


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("wrong", [[PHONE], {"number": PHONE}, 4915112345678.0])
def test_a_wrongly_typed_id_is_not_echoed(field: str, wrong: object) -> None:
    event = {
        "event_id": "e1",
        "type": "callback.requested",
        "ts": 1795165200,
        "queue": "q",
        "callback_id": "cb1",
        "call_id": "c1",
        "ticket_id": "t1",
        "contact_id": "k1",
        field: wrong,
    }
    with pytest.raises(InvalidEventError) as info:
        parse_event(event)
    assert info.value.reason == f"invalid_field:{field}"
    assert "4915112345678" not in info.value.message


@pytest.mark.parametrize("stray", [f"please call me back on {PHONE}", [PHONE], 4915112345678])
def test_a_non_object_is_not_echoed(stray: object) -> None:
    raw = json.dumps([stray]).encode()
    for items in (list(iter_envelope(raw)), [parsed for _raw, parsed in split_envelope(raw)]):
        [rejection] = items
        assert isinstance(rejection, Rejection)
        assert rejection.reason == "not_an_object"
        assert "4915112345678" not in rejection.message
        assert "4915112345678" in rejection.raw.decode()  # the DLQ payload itself is unchanged


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-20T09:30:00Z\x00",
        "2026-11-20T09:30:00Z\x00garbage",
        "2026-11-20T09:30:00\x00Z",
        "2026-11-20T09:30:00+01:00\x1b",
        "2026-11-20T09:30:00Z\n",
    ],
)
def test_a_timestamp_with_a_control_character_is_rejected(ts: str) -> None:
    with pytest.raises(InvalidEventError) as info:
        parse_ts(ts)
    assert info.value.reason == "bad_timestamp"
    raw = json.dumps({"event_id": "e1", "type": "call.offered", "ts": ts, "queue": "q", "call_id": "c"}).encode()
    with pytest.raises(InvalidEventError) as info:
        parse_line(raw)
    assert info.value.reason == "bad_timestamp"
    assert parse_ts("2026-11-20T09:30:00Z") == 1795167000.0  # the same without the control character
