"""Exposure (issue item 6) on the real services and over real HTTP:

* ``ccmon exporter`` without ``--host`` listens on 127.0.0.1 only (the kernel's table of
  listening sockets says so, and the machine's other address refuses the connection);
* ``/api/callbacks/pending`` of an exporter listening on 0.0.0.0 without basic auth masks the
  customer ids (asked through loopback and through the machine's other address), while the
  rest of the API works; with basic auth, the authenticated request sees them; on 127.0.0.1,
  they are shown as before;
* customer records in Redis are named by HMAC-SHA256 of the id with
  ``CCMON_CUSTOMER_KEY_SECRET``, not a plain digest: a real ``ccmon worker`` writes them, and
  ``ccmon rebuild --clear`` with the same secret writes the very same names and values; with
  another secret (the rotation procedure) every name changes; without one both commands stop
  at once with one line naming the setting.

The module imports nothing the change added, so on the old code its tests fail on their
assertions. Takes ~30 s (a worker joining its group, two rebuilds).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import create_topics
from harness.pipeline import Pipeline, cli_args
from harness.processes import free_port, stop

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_event
from streams.exporter import build_app
from streams.redis.state import RedisState
from streams.security import require_basic_auth
from streams.web import serve

pytestmark = pytest.mark.integration

CONFIG = Config()
AT_EPOCH = 1795168800  # 2026-11-20T10:00:00Z
PHONE, EMAIL = "+4915112345678", "jane.roe.expo@example.com"
SECRET_A = "exposure-test-secret-A-" + "a1" * 16
SECRET_B = "exposure-test-secret-B-" + "b2" * 16


def other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    candidates: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the route
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    return next((a for a in candidates if not a.startswith("127.") and a != "0.0.0.0"), None)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux /proc/net/tcp*)."""
    found: set[str] = set()
    for name, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def environ(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key, value in changes.items():
        env.pop(key, None)
        if value is not None:
            env[key] = value
    return env


# -- the default address ---------------------------------------------------------------------------
def test_the_exporter_listens_on_loopback_by_default(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "exporter.log"
    with log.open("wb") as out:
        exporter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                *cli_args("exporter", port=port, redis=redis_url, redis_prefix=redis_prefix),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ(CCMON_EXPORTER_HOST=None),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert exporter.poll() is None, log.read_text()
            try:
                if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert listening_addresses(port) == {"127.0.0.1"}
        address = other_address()
        print(f"the machine's other address: {address}")
        if address is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()
    finally:
        stop(exporter)


# -- who sees customer ids ----------------------------------------------------------------------
@pytest.fixture
def state(redis_client: Any, redis_prefix: str) -> RedisState:
    """Three callbacks owed: two missed calls of named customers, one request without one."""
    day = AT_EPOCH - 36000
    store = RedisState(redis_client, CONFIG, prefix=redis_prefix, clock=lambda: AT_EPOCH)
    engine = Engine(CONFIG, store)
    events = [
        {
            "event_id": "x1",
            "type": "call.offered",
            "ts": day + 100,
            "call_id": "c1",
            "queue": "q",
            "customer_id": PHONE,
        },
        {"event_id": "x2", "type": "call.abandoned", "ts": day + 130, "call_id": "c1"},
        {
            "event_id": "x3",
            "type": "call.offered",
            "ts": day + 200,
            "call_id": "c2",
            "queue": "q",
            "customer_id": EMAIL,
        },
        {"event_id": "x4", "type": "call.abandoned", "ts": day + 230, "call_id": "c2"},
        {"event_id": "x5", "type": "callback.requested", "ts": day + 300, "callback_id": "cb-7", "queue": "q"},
    ]
    with store.batch():
        for event in events:
            engine.handle(parse_event(event), day + 400)
    return store


def worklist(base: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    status, body = get(base + "/api/callbacks/pending", auth)
    text = body.decode("utf-8")
    return status, (json.loads(text) if status == 200 else {}), text


def test_customer_ids_are_masked_off_loopback_without_auth(state: RedisState, redis_client: Any) -> None:
    app = build_app(CONFIG, state, lambda: AT_EPOCH, redis_client.ping)
    servers = {
        "all": serve(app, "0.0.0.0", 0),
        "all+auth": serve(require_basic_auth(app, "agent", "s3cret-pw"), "0.0.0.0", 0),
        "loopback": serve(app, "127.0.0.1", 0),
    }
    address = other_address()
    try:
        # 0.0.0.0, no auth: masked, whichever address the request came in on.
        bases = [f"http://127.0.0.1:{servers['all'].port}"]
        if address is not None:
            bases.append(f"http://{address}:{servers['all'].port}")
        for base in bases:
            status, document, text = worklist(base)
            assert status == 200, text
            assert PHONE not in text and EMAIL not in text and "jane" not in text, (base, text)
            assert document["count"] == 3 and document.get("customer_ids") == "masked"
            rows = document["callbacks"]
            assert [row.get("customer_id") for row in rows] == ["***78", "***om", None]
            assert [row.get("customer_id_masked") for row in rows] == [True, True, None]
            assert rows[2]["callback_id"] == "cb-7"  # a request id: not a customer
            assert all(row["queue"] == "q" and row["age_seconds"] > 0 for row in rows)  # the rest is intact
            # The rest of the API works as before (and never named customers).
            status, body = get(base + "/metrics")
            assert status == 200 and b"ccmon_callbacks_pending" in body
            status, body = get(base + "/api/kpis")
            assert (
                status == 200
                and json.loads(body)["tenants"]["default"]["queues"]["q"]["live"]["callbacks_pending"] == 3
            )
            assert get(base + "/healthz")[0] == 200

        # 0.0.0.0 behind basic auth: the authenticated request sees the ids; others get 401.
        base = f"http://127.0.0.1:{servers['all+auth'].port}"
        status, _document, text = worklist(base)
        assert status == 401 and PHONE not in text
        status, document, text = worklist(base, ("agent", "s3cret-pw"))
        assert status == 200 and document.get("customer_ids") == "shown"
        assert [row.get("customer_id") for row in document["callbacks"]] == [PHONE, EMAIL, None]

        # Loopback only: shown, as before.
        status, document, _text = worklist(f"http://127.0.0.1:{servers['loopback'].port}")
        assert status == 200 and [row.get("customer_id") for row in document["callbacks"]] == [PHONE, EMAIL, None]
    finally:
        for server in servers.values():
            server.stop()


# -- customer record keys ------------------------------------------------------------------------
def hmac_name(secret: str, customer: str) -> str:
    return hmac.new(secret.encode(), b"ccmon-customer\x00" + customer.encode(), hashlib.sha256).hexdigest()[:32]


def blake2b_name(customer: str) -> str:
    """The old name: a plain digest, which anyone can compute for every phone number."""
    return hashlib.blake2b(customer.encode(), digest_size=16, person=b"ccmon-customer").hexdigest()


CUSTOMERS = [PHONE, "004915112345679", EMAIL, "cust-EXPO-1"]


def customer_events() -> list[dict[str, Any]]:
    """Each customer calls twice (a repeat caller: the record carries history), one call missed."""
    out: list[dict[str, Any]] = []
    for i, customer in enumerate(CUSTOMERS):
        for n in range(2):
            t = AT_EPOCH - 3000 + 600 * n + 30 * i
            call = f"kc{i}-{n}"
            out.append(
                {
                    "event_id": f"{call}-o",
                    "type": "call.offered",
                    "ts": t,
                    "queue": "support",
                    "call_id": call,
                    "customer_id": customer,
                }
            )
            if n == 0 and i % 2:
                out.append({"event_id": f"{call}-x", "type": "call.abandoned", "ts": t + 20, "call_id": call})
            else:
                out += [
                    {"event_id": f"{call}-a", "type": "call.answered", "ts": t + 10, "call_id": call, "agent_id": "a1"},
                    {
                        "event_id": f"{call}-e",
                        "type": "call.ended",
                        "ts": t + 90,
                        "call_id": call,
                        "talk_seconds": 80,
                        "resolved": n == 1,
                    },
                ]
    return out


def customer_records(client: Any, prefix: str) -> dict[str, Any]:
    """Digest in the key name -> the record (JSON), for every customer record of ``prefix``."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*:rec:customer:*", count=1000):
        name = key.decode()
        out[name.rpartition("#")[2] if "#" in name else name] = json.loads(client.get(key))
    return out


@pytest.fixture
def run(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(kafka_bootstrap, p.topic, p.dlq, partitions=2)
    try:
        yield p
    finally:
        p.close()


def test_customer_record_keys_are_keyed_digests_shared_by_worker_and_rebuild(run: Pipeline, redis_client: Any) -> None:
    import kafka

    p = run
    events = customer_events()
    producer = kafka.KafkaProducer(bootstrap_servers=p.kafka, acks="all")
    for event in events:
        producer.send(p.topic, key=event["call_id"].encode(), value=json.dumps(event).encode())
    producer.flush(30)
    producer.close()

    # Without a secret, the worker and the rebuild stop at once, naming the setting.
    for command in (
        p.worker_args(at=AT_EPOCH, web_port=0),
        p.rebuild_args(at=AT_EPOCH),
    ):
        refused = subprocess.run(
            [sys.executable, "-m", "streams.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ(CCMON_CUSTOMER_KEY_SECRET=None),
        )
        assert refused.returncode == 2, (command[0], refused.returncode, refused.stderr[-2000:])
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "CCMON_CUSTOMER_KEY_SECRET" in lines[0] and "--insecure-dev" in lines[0], lines
    assert customer_records(redis_client, p.prefix) == {}

    # The worker, with secret A.
    p.logs["worker"] = p.tmp / "worker.log"
    with p.logs["worker"].open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                *p.worker_args(at=AT_EPOCH, web_port=0, batch_within="0.1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ(CCMON_CUSTOMER_KEY_SECRET=SECRET_A),
        )
    p.processes.append(worker)
    counter = RedisState(redis_client, CONFIG, prefix=p.prefix)
    deadline = time.monotonic() + 90
    while sum(counter.counts().get("events", {}).values()) < len(events):
        assert worker.poll() is None and time.monotonic() < deadline, p.log_tail()
        time.sleep(0.5)
    stop(worker)
    by_worker = customer_records(redis_client, p.prefix)
    assert set(by_worker) == {hmac_name(SECRET_A, c) for c in CUSTOMERS}, (sorted(by_worker), p.log_tail())
    assert not set(by_worker) & {blake2b_name(c) for c in CUSTOMERS}  # not recomputable without the secret
    assert all(len(record["calls"]) == 2 for record in by_worker.values())  # the repeat calls are in

    # `ccmon rebuild --clear` with the same secret: the very same names and records.
    def rebuild(secret: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "streams.cli", *p.rebuild_args("--clear", "--force", "--json", at=AT_EPOCH)],
            capture_output=True,
            text=True,
            timeout=180,
            env=environ(CCMON_CUSTOMER_KEY_SECRET=secret),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout)["events"] == len(events)

    rebuild(SECRET_A)
    assert customer_records(redis_client, p.prefix) == by_worker

    # Rotation: another secret, every record under a new name (hence: rebuild --clear, or lose
    # the repeat-caller history of the window), the same contents.
    rebuild(SECRET_B)
    rotated = customer_records(redis_client, p.prefix)
    assert set(rotated) == {hmac_name(SECRET_B, c) for c in CUSTOMERS}
    assert not set(rotated) & set(by_worker)
    assert sorted(map(json.dumps, rotated.values())) == sorted(map(json.dumps, by_worker.values()))
