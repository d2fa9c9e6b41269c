"""Kafka security on a real broker of the test's own (tests/integration/private_kafka.py):
SASL (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) over TLS, and TLS with client certificates,
with certificates generated here. The broker has no plaintext client listener.

* the golden events, produced over SASL_SSL, go through ``ccmon worker`` (SCRAM-SHA-256, the
  password from a file) into Redis and out of ``ccmon exporter``'s /metrics with exactly the
  golden values; malformed ones reach the dead-letter topic (Faust's producer, over
  SASL_SSL); the worker's lag probe (kafka-python, over SASL_SSL) reports the lag;
* ``ccmon simulate --kafka`` and ``ccmon source``'s sink produce with the security settings
  of the environment (PLAIN, SCRAM-SHA-512);
* mutual TLS (security protocol SSL) for kafka-python and for Faust's aiokafka clients;
* a wrong password or an untrusted broker certificate stops the worker at once with one
  line naming the settings to fix: no retry loop, no traceback;
* no password, right or wrong, appears in any process's output.

Takes about 35 s (the broker starts in ~5 s; the worker joins its group in ~3 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.kafka_topics import entity_key, read_topic
from harness.pipeline import cli_args
from harness.private_kafka import PrivateKafka, start_private_kafka
from harness.processes import free_port, stop
from harness.samples import samples_of
from harness.tls import Tls, clean_environ, make_tls

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AT_EPOCH = 1795168800  # 2026-11-20T10:00:00Z, the golden data's evaluation instant
PASSWORD = "Sasl-pw-" + uuid.uuid4().hex[:12]
WRONG = "Wrong-pw-" + uuid.uuid4().hex[:12]
USER = "ccmon"
MALFORMED = [
    (b"{not json", "invalid_json"),
    (b'{"event_id": "m2", "type": "call.teleported", "ts": 1795165200, "queue": "support"}', "unknown_type"),
]
SETTLE_TIMEOUT = 45.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def broker(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    kafka = start_private_kafka(tmp_path_factory.mktemp("kafka"), tls, {USER: PASSWORD})
    try:
        yield kafka
    finally:
        kafka.stop()


def sasl_env(
    broker: PrivateKafka, tls: Tls, mechanism: str = "SCRAM-SHA-256", password: str = PASSWORD
) -> dict[str, str]:
    return {
        "CCMON_KAFKA_BOOTSTRAP": broker.sasl_bootstrap,
        "CCMON_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CCMON_KAFKA_SASL_MECHANISM": mechanism,
        "CCMON_KAFKA_USERNAME": USER,
        "CCMON_KAFKA_PASSWORD": password,
        "CCMON_KAFKA_CA_FILE": str(tls.ca),
    }


def client_kwargs(env: dict[str, str]) -> dict[str, Any]:
    from streams import security
    from streams.settings import from_args

    return security.kafka_client_kwargs(from_args(None, env))


def consume_all(bootstrap: str, topic: str, kwargs: dict[str, Any], want: int, timeout: float = 20) -> list[Any]:
    return read_topic(bootstrap, topic, at_least=want, timeout=timeout, **kwargs)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, "the Kafka password leaked into a log"
        assert WRONG not in text, "a (wrong) Kafka password leaked into a log"


# -- the pipeline over SASL_SSL ------------------------------------------------------------------
def test_worker_over_sasl_ssl_computes_the_golden_kpis(
    broker: PrivateKafka,
    tls: Tls,
    redis_url: str,
    redis_prefix: str,
    golden_lines: list[bytes],
    golden_expected: dict[Any, float],
    tmp_path: Path,
) -> None:
    import kafka

    env = sasl_env(broker, tls)
    kwargs = client_kwargs(env)
    run = uuid.uuid4().hex[:8]
    topic, dlq, group = f"sec-events-{run}", f"sec-dlq-{run}", f"sec-group-{run}"
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.sasl_bootstrap, **kwargs)
    admin.create_topics([kafka.admin.NewTopic(topic, 2, 1), kafka.admin.NewTopic(dlq, 1, 1)])
    admin.close()

    producer = kafka.KafkaProducer(bootstrap_servers=broker.sasl_bootstrap, acks="all", linger_ms=5, **kwargs)
    events = [json.loads(line) for line in golden_lines]
    envelopes: dict[bytes, list[dict[str, Any]]] = {}
    for i, event in enumerate(events):  # every third event alone, the rest in envelopes per entity
        if i % 3 == 0:
            producer.send(topic, key=entity_key(event), value=json.dumps(event).encode())
        else:
            envelopes.setdefault(entity_key(event), []).append(event)
    for key, group_events in envelopes.items():
        producer.send(topic, key=key, value=json.dumps(group_events).encode())
    for raw, _reason in MALFORMED:
        producer.send(topic, key=b"bad", value=raw)
    producer.flush(30)
    producer.close()

    # The worker: the password from a file (a flag may name the file; the password itself has none).
    password_file = tmp_path / "kafka.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    worker_env = clean_environ() | {k: v for k, v in env.items() if k != "CCMON_KAFKA_PASSWORD"}
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "exporter")}
    redis_flags = {"redis": redis_url, "redis_prefix": redis_prefix}
    kafka_flags = {"topic": topic, "dlq_topic": dlq, "group": group, "kafka_password_file": password_file}
    worker_args = cli_args("worker", **kafka_flags, web_port=0, batch_within="0.1", at=AT_EPOCH, **redis_flags)
    exporter_args = cli_args("exporter", host="127.0.0.1", port=port, at=AT_EPOCH, **redis_flags)
    processes: list[subprocess.Popen[bytes]] = []

    def tail() -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}" for name, path in logs.items())

    def metrics() -> dict[Any, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return samples_of(response.read().decode())

    try:
        with logs["worker"].open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", *worker_args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=worker_env,
                )
            )
        with logs["exporter"].open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams.cli", *exporter_args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                    env=clean_environ(),
                )
            )
        expected_events = len(golden_lines) + len(MALFORMED)
        got: dict[Any, float] = {}
        previous: dict[Any, float] | None = None
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), f"a process exited:\n{tail()}"
            try:
                current = {k: v for k, v in metrics().items() if not k[0].startswith("ccmon_exporter_")}
            except OSError:
                time.sleep(0.5)
                continue
            counted = sum(
                v for (name, _), v in current.items() if name in ("ccmon_events_total", "ccmon_events_rejected_total")
            )
            lag = [
                v
                for (name, labels), v in current.items()
                if name == "ccmon_consumer_lag" and ("topic", topic) in labels
            ]
            if counted >= expected_events and current == previous and len(lag) == 2 and not any(lag):
                got = current
                break
            previous = current
            time.sleep(1.0)
        else:
            pytest.fail(f"the KPIs did not settle within {SETTLE_TIMEOUT:.0f} s:\n{tail()}")

        for (name, labels), value in golden_expected.items():
            for queue in ("support", "_all"):
                sample = (name, tuple(sorted((k, queue if k == "queue" else v) for k, v in labels)))
                assert sample in got, f"missing {sample}"
                assert got[sample] == pytest.approx(value, rel=1e-12), sample
        assert sum(v for (name, _), v in got.items() if name == "ccmon_events_total") == len(golden_lines)
        assert sum(v for (name, _), v in got.items() if name == "ccmon_events_duplicate_total") == 0
        rejected = {
            dict(labels)["reason"]: v for (name, labels), v in got.items() if name == "ccmon_events_rejected_total"
        }
        assert rejected == {reason: 1 for _raw, reason in MALFORMED}
        # The consumer lag was measured over SASL_SSL by the worker's kafka-python probe.
        lags = {
            dict(labels)["partition"]: v
            for (name, labels), v in got.items()
            if name == "ccmon_consumer_lag" and dict(labels)["topic"] == topic
        }
        assert lags == {"0": 0, "1": 0}

        # The dead letters went out through Faust's producer, over SASL_SSL.
        dead = consume_all(broker.sasl_bootstrap, dlq, kwargs, len(MALFORMED))
        assert sorted(dict(r.headers)["ccmon-reason"].decode() for r in dead) == sorted(r for _raw, r in MALFORMED)
    finally:
        for process in processes:
            stop(process)
    worker_log = logs["worker"].read_text(errors="replace")
    assert "Authenticated as ccmon via SCRAM-SHA-256" in worker_log  # aiokafka's own line: SASL was used
    assert "'kafka_password': '***'" in worker_log  # the settings line shows that a password is set, not which
    assert "Traceback" not in worker_log
    assert_no_secret(worker_log, logs["exporter"].read_text(errors="replace"))


# -- the producers of ccmon simulate and ccmon source --------------------------------------------
def test_simulate_and_source_sink_produce_with_the_environment_settings(
    broker: PrivateKafka, tls: Tls, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kafka

    topic = f"sec-sim-{uuid.uuid4().hex[:8]}"
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.sasl_bootstrap, **client_kwargs(sasl_env(broker, tls)))
    admin.create_topics([kafka.admin.NewTopic(topic, 1, 1)])
    admin.close()

    # ccmon simulate: SASL PLAIN, everything from the environment (no security flags exist).
    simulate = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "simulate",
            "--kafka",
            broker.sasl_bootstrap,
            "--topic",
            topic,
            "--hours",
            "0.25",
            "--start",
            "2026-11-20T09:00:00Z",
            "--quiet",
        ],
        env=clean_environ() | sasl_env(broker, tls, mechanism="PLAIN"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert simulate.returncode == 0, simulate.stderr
    assert_no_secret(simulate.stdout, simulate.stderr)

    # ccmon source's sink (SCRAM-SHA-512), in this process.
    import argparse

    from streams.sources.common import Sink

    for name, value in sasl_env(broker, tls, mechanism="SCRAM-SHA-512").items():
        monkeypatch.setenv(name, value)
    sink = Sink(argparse.Namespace(kafka=broker.sasl_bootstrap, topic=topic, batch=10, out="-"), "ccmon-source-test")
    marker = {
        "event_id": f"sink-{uuid.uuid4().hex}",
        "type": "call.offered",
        "ts": AT_EPOCH,
        "queue": "support",
        "call_id": "sink-call",
    }
    sink.write([marker])
    sink.close()

    # Read back with yet another mechanism (SCRAM-SHA-256): both producers' messages are there.
    records = consume_all(broker.sasl_bootstrap, topic, client_kwargs(sasl_env(broker, tls)), want=2)
    events = [event for record in records for event in json.loads(record.value)]
    assert any(event["event_id"] == marker["event_id"] for event in events)
    assert len(events) > 10  # a quarter of an hour of simulated traffic


# -- mutual TLS (security protocol SSL) ---------------------------------------------------------
def test_mutual_tls_for_kafka_python_and_faust(broker: PrivateKafka, tls: Tls) -> None:
    import asyncio

    import aiokafka
    import kafka
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams import security
    from streams.settings import from_args

    env = {
        "CCMON_KAFKA_BOOTSTRAP": broker.ssl_bootstrap,
        "CCMON_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CCMON_KAFKA_CA_FILE": str(tls.ca),
        "CCMON_KAFKA_CERT_FILE": str(tls.client_cert),
        "CCMON_KAFKA_KEY_FILE": str(tls.client_key),
    }
    settings = from_args(None, env)
    topic = f"sec-mtls-{uuid.uuid4().hex[:8]}"
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.ssl_bootstrap, **security.kafka_client_kwargs(settings))
    admin.create_topics([kafka.admin.NewTopic(topic, 1, 1)])
    admin.close()

    producer = kafka.KafkaProducer(bootstrap_servers=broker.ssl_bootstrap, **security.kafka_client_kwargs(settings))
    producer.send(topic, b"from kafka-python").get(timeout=20)
    producer.close()

    async def faust_side() -> None:
        # What Faust hands aiokafka for these settings (its own conversion of the credentials).
        auth = credentials_to_aiokafka_auth(security.faust_credentials(settings))
        assert auth["security_protocol"] == "SSL"
        aio = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.ssl_bootstrap, **auth)
        await aio.start()
        try:
            await aio.send_and_wait(topic, b"from aiokafka")
        finally:
            await aio.stop()

    asyncio.run(faust_side())
    values = {r.value for r in consume_all(broker.ssl_bootstrap, topic, security.kafka_client_kwargs(settings), 2)}
    assert values == {b"from kafka-python", b"from aiokafka"}

    # Without the client certificate the broker refuses the connection.
    no_cert = from_args(
        None, {k: v for k, v in env.items() if k not in ("CCMON_KAFKA_CERT_FILE", "CCMON_KAFKA_KEY_FILE")}
    )
    with pytest.raises(kafka.errors.KafkaError):
        kafka.KafkaAdminClient(
            bootstrap_servers=broker.ssl_bootstrap, bootstrap_timeout_ms=3000, **security.kafka_client_kwargs(no_cert)
        )


# -- refused: stop at once, say what to fix, no secret -------------------------------------------
@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("wrong password", "CCMON_KAFKA_PASSWORD or CCMON_KAFKA_PASSWORD_FILE"),
        ("untrusted broker certificate", "--kafka-ca-file or CCMON_KAFKA_CA_FILE"),
    ],
)
def test_a_refused_worker_stops_with_one_clear_line(
    broker: PrivateKafka, tls: Tls, redis_url: str, case: str, names: str
) -> None:
    env = sasl_env(broker, tls, password=WRONG if case == "wrong password" else PASSWORD)
    if case == "untrusted broker certificate":
        env["CCMON_KAFKA_CA_FILE"] = str(tls.other_ca)
    started = time.monotonic()
    worker = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "worker",
            "--redis",
            redis_url,
            "--redis-prefix",
            f"sec-{uuid.uuid4().hex[:8]}",
            "--topic",
            "sec-refused",
            "--dlq-topic",
            "sec-refused-dlq",
            "--web-port",
            "0",
        ],
        env=clean_environ() | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    output = worker.stdout + worker.stderr
    assert worker.returncode == 2, output  # a configuration error: a supervisor should not restart it
    assert took < 30, f"took {took:.0f} s to give up"
    lines = [line for line in output.splitlines() if not line.startswith("20")]  # the one line besides the start-up log
    assert len(lines) == 1, output
    assert lines[0].startswith("ccmon worker: config field") and names in lines[0], lines[0]
    assert broker.sasl_bootstrap in lines[0]
    assert "Traceback" not in output and "cannot reach Kafka" not in output  # not taken for a broker still starting
    assert_no_secret(output)


def test_the_login_probe_reports_a_refused_password(broker: PrivateKafka, tls: Tls) -> None:
    """kafka-python sometimes loses the broker's refusal (it reads the answer and the close in
    one go and keeps only the close); the aiokafka login probe behind the worker's verdict
    must not."""
    from streams import security
    from streams.settings import from_args

    refused = security._sasl_refusal(from_args(None, sasl_env(broker, tls, password=WRONG)))
    assert refused is not None and type(refused).__name__ == "SaslAuthenticationFailed"
    assert security._sasl_refusal(from_args(None, sasl_env(broker, tls))) is None
    error = security.kafka_config_error(
        from_args(None, sasl_env(broker, tls, mechanism="SCRAM-SHA-512", password=WRONG)), []
    )
    assert error is not None and "refused the credentials of user 'ccmon' (SCRAM-SHA-512)" in str(error)
