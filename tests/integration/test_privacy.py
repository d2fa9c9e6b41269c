"""Privacy on the real pipeline (issue #9 item 6): no customer id, phone number or free text in
a metric label, an API answer other than the callback worklist, a Redis key name, a
dead-letter header or a log line.

Events name customers by distinctive ids - a plain one, phone numbers (``+4915112345678``,
``004915112345679``), an e-mail address, a Cyrillic name - in every field that carries a
customer (``customer_id`` on calls, callbacks and tickets; ``contact_id`` on surveys) and carry
free text in extra fields (EVENTS.md defines none; unknown fields are ignored, so a source's
``note``, ``subject`` or ``comment`` is where free text arrives). Invalid events carry them too
(a bad ``ts``, a list-typed ``customer_id``, an over-long one, a stray string, broken JSON, a
bad queue name, a late event). One ``ccmon worker`` and the exporter run with ``--log-level
DEBUG``; the exporter with basic auth. Then every needle - raw, JSON-escaped, as the Redis key
encoding would write it, and the phone number's digits alone - is looked for in:

* ``/metrics``, ``/api/kpis``, ``/api/samples`` (and the wallboard page);
* Redis key *names* under the run's prefix (values may hold ids: they are state), and free
  text anywhere in Redis, values included (the engine keeps no unknown field); a customer
  record's name is the HMAC of the id with the worker's secret, which nothing recomputes
  without it (not a plain digest, not the public development key);
* the headers of every dead letter (the payloads are the events, unchanged, by design);
* every line the worker and the exporter logged.

``/api/callbacks/pending`` is the agents' callback worklist: it must name the customer (an
agent calls them back), so it is the one place that does. It is protected like everything the
exporter serves but ``/healthz``: by the exporter's basic auth (``--basic-auth-user`` and
``CCMON_EXPORTER_BASIC_AUTH_PASSWORD``, over HTTPS with ``--tls-cert-file``; docs/SECURITY.md).
The test checks that it answers 401 without credentials and names the customers with them.

Takes ~20 s (group join ~5 s, a few hundred events).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import read_topic
from harness.pipeline import Pipeline
from harness.processes import free_port
from harness.samples import samples_of

pytestmark = [pytest.mark.integration]

AT_EPOCH = 1795168800  # 2026-11-20T10:00:00Z
CUSTOMERS = ["cust-PRIV-91c2e7d4", "+4915112345678", "004915112345679", "jane.roe.priv@example.com", "ПРИВ-клиент-42"]
FREE_TEXT = "FREETEXT Jane Roe-Privacy says invoice 4711 is wrong"
SETTLE_TIMEOUT = 90.0


def valid_events() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, customer in enumerate(CUSTOMERS):
        t = AT_EPOCH - 1800 + 60 * i
        out += [
            {
                "event_id": f"pv{i}-1",
                "type": "call.offered",
                "ts": t,
                "queue": "support",
                "call_id": f"pc{i}",
                "customer_id": customer,
                "note": FREE_TEXT,
                "caller_name": FREE_TEXT,
            },
            {
                "event_id": f"pv{i}-3",
                "type": "callback.requested",
                "ts": t + 200,
                "queue": "sales",
                "callback_id": f"pcb{i}",
                "customer_id": customer,
                "comment": FREE_TEXT,
            },
            {
                "event_id": f"pv{i}-7",
                "type": "ticket.created",
                "ts": t + 5,
                "queue": "support",
                "ticket_id": f"pt{i}",
                "customer_id": customer,
                "channel": "email",
                "subject": FREE_TEXT,
                "body": FREE_TEXT,
            },
            {
                "event_id": f"pv{i}-8",
                "type": "ticket.replied",
                "ts": t + 600,
                "ticket_id": f"pt{i}",
                "author": "customer",
                "text": FREE_TEXT,
            },
            {
                "event_id": f"pv{i}-9",
                "type": "survey.response",
                "ts": t + 700,
                "survey": "csat",
                "score": 4,
                "queue": "support",
                "contact_id": customer,
                "comment": FREE_TEXT,
            },
        ]
        if i % 2:  # answered (no callback owed until the customer asks for one)
            out += [
                {"event_id": f"pv{i}-4", "type": "call.answered", "ts": t + 10, "call_id": f"pc{i}", "agent_id": "a1"},
                {
                    "event_id": f"pv{i}-5",
                    "type": "call.ended",
                    "ts": t + 100,
                    "call_id": f"pc{i}",
                    "talk_seconds": 90,
                    "resolved": True,
                    "summary": FREE_TEXT,
                },
            ]
        else:  # missed: a callback is owed from here (the request later is absorbed into it)
            out.append(
                {
                    "event_id": f"pv{i}-2",
                    "type": "call.abandoned",
                    "ts": t + 30,
                    "call_id": f"pc{i}",
                    "wait_seconds": 30,
                }
            )
    return out


def invalid_messages() -> list[tuple[bytes, str]]:
    """(message value, reason) - each one rejection that carries a customer id or free text."""
    out: list[tuple[bytes, str]] = []
    for i, customer in enumerate(CUSTOMERS):
        base = {
            "event_id": f"px{i}",
            "type": "callback.requested",
            "ts": AT_EPOCH - 900,
            "queue": "support",
            "callback_id": f"pxcb{i}",
            "customer_id": customer,
            "comment": FREE_TEXT,
        }
        out += [
            (json.dumps({**base, "ts": "yesterday"}).encode(), "bad_timestamp"),
            (json.dumps([{**base, "customer_id": [customer]}]).encode(), "invalid_field:customer_id"),
            (json.dumps([{**base, "customer_id": {"phone": customer}}]).encode(), "invalid_field:customer_id"),
            (json.dumps([{**base, "customer_id": customer + "0" * 300}]).encode(), "invalid_field:customer_id"),
            (json.dumps([f"please call {customer} back: {FREE_TEXT}"]).encode(), "not_an_object"),
            (json.dumps({**base, "queue": "sup\nport"}).encode(), "invalid_field:queue"),
            (json.dumps({**base, "ts": AT_EPOCH - 3 * 86400}).encode(), "too_late"),
            (
                json.dumps(
                    {**base, "score": 99, "type": "survey.response", "survey": "nps", "contact_id": customer}
                ).encode(),
                "score_out_of_range",
            ),
            (json.dumps(base).encode()[:-20], "invalid_json"),
            (json.dumps(base, ensure_ascii=False).encode().replace(b'"type"', b'"ty\xffpe"'), "invalid_json"),
        ]
    return out


def needles() -> dict[str, str]:
    """Every form a customer id or the free text could take in text: raw, JSON-escaped, the
    Redis key encoding (``~`` + urlsafe base64 of its UTF-8), plain base64, digits alone."""
    from streams.redis.keys import encode

    out: dict[str, str] = {}
    for value in [*CUSTOMERS, FREE_TEXT, "Jane Roe-Privacy"]:
        out[value] = value
        out[json.dumps(value)[1:-1]] = value
        out[encode(value)] = value
        out[base64.b64encode(value.encode()).decode().rstrip("=")] = value
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= 10:
            out[digits] = value
    return out


def leaks(text: str, where: str) -> list[str]:
    return [f"{where}: {form!r} (of {value!r})" for form, value in needles().items() if form in text]


class PrivacyRun(Pipeline):
    def __init__(self, kafka: str, redis_url: str, tmp: Path) -> None:
        super().__init__(kafka, redis_url, tmp)
        self.user = "ops"
        self.password = f"pw-{uuid.uuid4().hex}"

    def start_env(self, name: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            )
        self.processes.append(process)
        return process

    def get(self, path: str, auth: bool = True) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivacyRun]:
    import kafka

    p = PrivacyRun(kafka_bootstrap, redis_url, tmp_path_factory.mktemp("privacy"))
    admin = kafka.KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics(
        {
            p.topic: {"num_partitions": 2, "replication_factor": 1},
            p.dlq: {"num_partitions": 1, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    admin.close()
    producer = kafka.KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    events = valid_events()
    for i in range(0, len(events), 7):  # envelopes of 7, and the last few one by one
        producer.send(p.topic, key=b"k", value=json.dumps(events[i : i + 7], ensure_ascii=False).encode())
    for value, _reason in invalid_messages():
        producer.send(p.topic, key=b"bad", value=value)
    producer.flush(30)
    producer.close()

    p.start_env("worker", {}, *p.worker_args(at=AT_EPOCH, web_port=free_port(), batch_within="0.1", log_level="DEBUG"))
    password = {"CCMON_EXPORTER_BASIC_AUTH_PASSWORD": p.password}
    exporter_args = p.exporter_args(at=AT_EPOCH, host="127.0.0.1", basic_auth_user=p.user, log_level="DEBUG")
    p.start_env("exporter", password, *exporter_args)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        want = len(events) + len(invalid_messages())
        counted = 0.0
        while counted < want:
            assert time.monotonic() < deadline, f"not settled ({counted} of {want}):\n{p.log_tail()}"
            for process in p.processes:
                assert process.poll() is None, f"a process exited:\n{p.log_tail()}"
            try:
                status, body = p.get("/metrics")
            except OSError:  # not listening yet
                status, body = 0, b""
            if status == 200:
                samples = samples_of(body.decode())
                counted = sum(
                    v
                    for (name, _l), v in samples.items()
                    if name in ("ccmon_events_total", "ccmon_events_duplicate_total", "ccmon_events_rejected_total")
                )
            time.sleep(0.5)
        time.sleep(6)  # a lag measurement and an upkeep run, so their log lines are in too
        yield p
    finally:
        p.close()


def test_no_customer_data_in_what_the_exporter_serves(run: PrivacyRun) -> None:
    found: list[str] = []
    for path in (
        "/metrics",
        "/api/kpis",
        "/api/samples",
        "/api/samples?tenant=default&queue=support",
        "/",
        "/api/agents",
        "/agents",
    ):
        status, body = run.get(path)
        assert status == 200, (path, status)
        text = body.decode("utf-8")
        if path.startswith("/api/"):  # JSON: its strings as text, whatever the escaping
            text += json.dumps(json.loads(text), ensure_ascii=False)
        found += leaks(text, path)
    assert not found, found
    # The KPIs are there (so the scan looked at something): the survey, tickets, calls.
    samples = samples_of(run.get("/metrics")[1].decode())
    labels = {value for (_name, labels) in samples for _key, value in labels}
    assert {"support", "default"} <= labels
    assert samples[("ccmon_tickets_created", (("queue", "support"), ("tenant", "default"), ("window", "1h")))] == 5
    assert samples[("ccmon_calls_offered", (("queue", "support"), ("tenant", "default"), ("window", "1h")))] == 5


def test_the_callback_worklist_names_customers_only_behind_basic_auth(run: PrivacyRun) -> None:
    status, body = run.get("/api/callbacks/pending", auth=False)
    assert status == 401
    assert not leaks(body.decode("utf-8", "replace"), "401 body")
    status, body = run.get("/api/callbacks/pending")
    assert status == 200
    named = {item.get("customer_id") for item in json.loads(body)["callbacks"]}
    assert set(CUSTOMERS) <= named  # an agent needs them to call back
    assert FREE_TEXT not in body.decode("utf-8")
    # The waiting callers name them as the worklist does: behind basic auth only.
    assert run.get("/api/queues/_all/waiting", auth=False)[0] == 401
    status, _body = run.get("/healthz", auth=False)  # the one open path, and it names nobody
    assert status == 200


def test_no_customer_data_in_any_log_line(run: PrivacyRun) -> None:
    found: list[str] = []
    lines = 0
    for name, path in run.logs.items():
        text = path.read_text(encoding="utf-8", errors="replace")
        lines += text.count("\n")
        assert "DEBUG" in text, f"{name} did not log at DEBUG"
        for number, line in enumerate(text.splitlines(), start=1):
            found += leaks(line, f"{name}.log:{number}")
    assert lines > 50  # the scan read real logs
    assert not found, found[:20]


def test_no_customer_data_in_dead_letter_headers(run: PrivacyRun) -> None:
    records = read_topic(run.kafka, run.dlq)
    reasons = sorted(dict(r.headers)["ccmon-reason"].decode() for r in records)
    assert reasons == sorted(reason for _value, reason in invalid_messages())
    found: list[str] = []
    carried = 0
    for record in records:
        for name, value in record.headers:
            found += leaks(value.decode("utf-8", "replace"), f"DLQ header {name} at {record.offset}")
        carried += bool(leaks(record.value.decode("utf-8", "replace"), "payload"))
    assert not found, found
    assert carried == len(records)  # the payloads are the events, unchanged (the DLQ's purpose)


def test_no_free_text_anywhere_in_redis(run: PrivacyRun) -> None:
    """Values may hold customer ids (a customer record, the callback live set: state the KPIs
    and the worklist need) but never a field the engine does not use."""
    import redis

    client: Any = redis.Redis.from_url(run.redis_url)
    found: list[str] = []
    keys = list(client.scan_iter(match=f"{run.prefix}:*", count=1000))
    assert len(keys) > 20
    for key in keys:
        kind = client.type(key).decode()
        blobs: list[bytes]
        if kind == "string":
            blobs = [client.get(key) or b""]
        elif kind == "hash":
            blobs = [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == "zset":
            blobs = [m for m, _s in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            blobs = list(client.smembers(key))
        else:
            blobs = []
        text = b"\n".join(blobs).decode("utf-8", "replace")
        found += [f for f in leaks(text, key.decode("utf-8", "replace")) if "FREETEXT" in f or "Jane" in f]
    client.close()
    assert not found, found[:10]


def test_no_customer_id_in_redis_key_names(run: PrivacyRun) -> None:
    """Regression: a customer's record was named rec:customer:<customer id>."""
    import redis

    client = redis.Redis.from_url(run.redis_url)
    names = [key.decode("utf-8", "replace") for key in client.scan_iter(match=f"{run.prefix}:*", count=1000)]
    client.close()
    assert len(names) > 20
    found = [leak for name in names for leak in leaks(name, name)]
    assert not found, found[:10]


def test_customer_record_names_cannot_be_recomputed_without_the_secret(run: PrivacyRun) -> None:
    """A customer's record is named by HMAC-SHA256 of the id with CCMON_CUSTOMER_KEY_SECRET
    (the worker's, from this process's environment: tests/conftest.py). Regression: it was a
    plain blake2b of the id, which a digest of every phone number finds (one was reversed)."""
    import hashlib
    import hmac

    import redis

    from streams.redis.keys import INSECURE_DEV_CUSTOMER_KEY

    secret = os.environ["CCMON_CUSTOMER_KEY_SECRET"].encode()

    def keyed(key: bytes, customer: str) -> str:
        return hmac.new(key, b"ccmon-customer\x00" + customer.encode(), hashlib.sha256).hexdigest()[:32]

    client = redis.Redis.from_url(run.redis_url)
    names = {key.decode().rpartition("#")[2] for key in client.scan_iter(match=f"{run.prefix}:*:rec:customer:*")}
    client.close()
    assert names == {keyed(secret, c) for c in CUSTOMERS}  # every customer, under the secret's names
    guesses = {hashlib.blake2b(c.encode(), digest_size=16, person=b"ccmon-customer").hexdigest() for c in CUSTOMERS}
    guesses |= {keyed(INSECURE_DEV_CUSTOMER_KEY, c) for c in CUSTOMERS}  # the public development key
    guesses |= {hashlib.sha256(c.encode()).hexdigest()[:32] for c in CUSTOMERS}
    assert not names & guesses
