"""The exporter with HTTP basic auth and TLS, as a real ``ccmon exporter`` process over the
shared Redis, with certificates generated here:

* 401 with a ``WWW-Authenticate`` challenge without credentials, with a wrong password, a wrong
  user or a malformed header, on every path but ``/healthz``; 200 with the right ones, over
  HTTPS verified against the generated CA (host name included);
* the TLS side: plain HTTP to the port gets no answer, a client that does not trust the CA
  refuses the server, and a client that connects and never says anything holds up nobody;
* the scrape-config example in deploy/prometheus/prometheus.yml, uncommented, lets a real
  Prometheus scrape it (``up == 1`` and a golden KPI in its database);
* the password (from a file) never appears in the exporter's output; a bad combination of
  settings stops start-up naming the setting.

Takes about 10 s (Prometheus's first scrapes are most of it).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.pipeline import cli_args
from harness.processes import free_port, stop
from harness.redis_servers import delete_prefix
from harness.samples import samples_of
from harness.tls import Tls, clean_environ, make_tls

from kpi_core.config import Config
from kpi_core.engine import Engine
from kpi_core.events import parse_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_FILE = REPO / "deploy" / "prometheus" / "prometheus.yml"
USER = "prometheus"  # the user of the example scrape config
PASSWORD = "Exporter-pw-" + uuid.uuid4().hex[:12]
AT_EPOCH = 1795168800  # 2026-11-20T10:00:00Z


@dataclass
class SecureExporter:
    port: int
    tls: Tls
    log: Path
    process: subprocess.Popen[bytes]
    password_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))  # verifies the chain and 127.0.0.1

    def get(self, path: str, auth: str | None = None, header: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path)
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        if header is not None:
            request.add_header("Authorization", header)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context()) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def exporter(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureExporter]:
    import redis

    from streams.redis.state import RedisState

    workdir = tmp_path_factory.mktemp("secure-exporter")
    tls = make_tls(workdir / "tls")
    prefix = f"sec-exp-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    process: subprocess.Popen[bytes] | None = None
    try:
        config = Config()
        state = RedisState(client, config, prefix=prefix, clock=lambda: AT_EPOCH)
        engine = Engine(config, state)
        golden = REPO / "tests" / "golden" / "basic.jsonl"
        with state.batch():
            for line in golden.read_bytes().splitlines():
                if line.strip():
                    engine.process(parse_line(line), AT_EPOCH)

        password_file = workdir / "exporter.password"
        password_file.write_text(PASSWORD + "\n")
        password_file.chmod(0o600)
        port = free_port()
        exporter_args = cli_args(
            "exporter",
            host="127.0.0.1",
            port=port,
            redis=redis_url,
            redis_prefix=prefix,
            at=AT_EPOCH,
            basic_auth_user=USER,
            basic_auth_password_file=password_file,
            tls_cert_file=tls.server_cert,
            tls_key_file=tls.server_key,
        )
        log = workdir / "exporter.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", *exporter_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=clean_environ(),
            )
        secure = SecureExporter(port, tls, log, process, password_file)
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if secure.get("/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the exporter did not answer:\n{log.read_text()}"
            time.sleep(0.2)
        yield secure
    finally:
        if process is not None:
            stop(process)
        delete_prefix(client, prefix)
        client.close()


def test_basic_auth(exporter: SecureExporter) -> None:
    refusals = {
        "no credentials": exporter.get("/metrics"),
        "wrong password": exporter.get("/metrics", auth=f"{USER}:{PASSWORD}x"),
        "password prefix": exporter.get("/metrics", auth=f"{USER}:{PASSWORD[:-1]}"),
        "wrong user": exporter.get("/metrics", auth=f"someone:{PASSWORD}"),
        "empty": exporter.get("/metrics", auth=":"),
        "not base64": exporter.get("/metrics", header="Basic !!!notbase64"),
        "another scheme": exporter.get("/metrics", header=f"Bearer {PASSWORD}"),
        "the JSON API": exporter.get("/api/kpis"),
        "the wallboard": exporter.get("/"),
    }
    for case, (status, headers, body) in refusals.items():
        assert status == 401, case
        assert headers.get("WWW-Authenticate") == 'Basic realm="ccmon", charset="UTF-8"', case
        assert b"ccmon_" not in body, case

    status, _headers, body = exporter.get("/metrics", auth=f"{USER}:{PASSWORD}")
    assert status == 200
    offered = {
        dict(labels).get("window"): value
        for (name, labels), value in samples_of(body.decode()).items()
        if name == "ccmon_calls_offered" and dict(labels).get("queue") == "support"
    }
    assert offered["1h"] == 10  # the golden value
    status, _headers, body = exporter.get("/api/kpis", auth=f"{USER}:{PASSWORD}")
    assert status == 200 and json.loads(body)

    # /healthz stays open, for liveness probes; it tells nothing but readiness.
    status, _headers, body = exporter.get("/healthz")
    assert status == 200 and b"ccmon_" not in body


def test_tls(exporter: SecureExporter) -> None:
    # A client that does not trust our CA refuses the server.
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(exporter.url + "/healthz", timeout=10, context=ssl.create_default_context())
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    # Plain HTTP gets no HTTP answer.
    plain = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/healthz")
        plain.getresponse()
    plain.close()
    # A client that connects and never handshakes holds up nobody.
    idle = socket.create_connection(("127.0.0.1", exporter.port))
    try:
        started = time.monotonic()
        assert exporter.get("/metrics", auth=f"{USER}:{PASSWORD}")[0] == 200
        assert time.monotonic() - started < 5
    finally:
        idle.close()
    # The negotiated protocol is TLS 1.2 or later.
    with (
        socket.create_connection(("127.0.0.1", exporter.port)) as sock,
        exporter.context().wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock,
    ):
        assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")


def example_scrape_job() -> dict[str, Any]:
    """The commented example of deploy/prometheus/prometheus.yml, uncommented and parsed."""
    lines = PROMETHEUS_FILE.read_text().splitlines()
    start = lines.index("  # BEGIN secure-exporter-example")
    end = lines.index("  # END secure-exporter-example")
    block = "\n".join(line.replace("# ", "", 1) for line in lines[start + 1 : end])
    jobs = yaml.safe_load(block)
    assert isinstance(jobs, list) and len(jobs) == 1
    job: dict[str, Any] = jobs[0]
    return job


def test_prometheus_scrapes_it_with_the_example_config(exporter: SecureExporter, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    job = example_scrape_job()
    assert job["scheme"] == "https" and job["basic_auth"]["username"] == USER
    # Only the paths and the target change: the test's files, this exporter.
    job["basic_auth"]["password_file"] = str(exporter.password_file)
    job["tls_config"]["ca_file"] = str(exporter.tls.ca)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter.port}"]}]
    job["scrape_interval"] = "1s"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def query(expr: str) -> list[Any]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[Any] = json.loads(response.read())["data"]["result"]
            return result

    try:
        deadline = time.monotonic() + 40
        offered: list[Any] = []
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                up = query(f'up{{job="{job["job_name"]}"}}')
                offered = query('ccmon_calls_offered{queue="support",window="1h"}')
            except OSError:
                up = []
            if up and up[0]["value"][1] == "1" and offered:
                break
            time.sleep(0.5)
        else:
            targets = ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as response:
                    targets = response.read().decode()
            except OSError:
                pass
            pytest.fail(f"Prometheus did not scrape the secure exporter: {targets}\n{log.read_text()[-2000:]}")
        assert float(offered[0]["value"][1]) == 10
    finally:
        stop(process)


def test_the_password_never_reaches_the_log(exporter: SecureExporter) -> None:
    exporter.get("/metrics", auth=f"{USER}:{PASSWORD}")
    exporter.get("/metrics", auth=f"{USER}:wrong")
    text = exporter.log.read_text()
    assert PASSWORD not in text
    assert f"serving {exporter.url}/metrics" in text and "basic auth as 'prometheus'" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--tls-key-file", "{key}"], {}, "--tls-key-file"),
        (["--tls-cert-file", "{missing}"], {}, "--tls-cert-file"),
        (
            ["--basic-auth-user", "prometheus"],
            {},
            "CCMON_EXPORTER_BASIC_AUTH_PASSWORD or CCMON_EXPORTER_BASIC_AUTH_PASSWORD_FILE",
        ),
        ([], {"CCMON_EXPORTER_BASIC_AUTH_PASSWORD": "x"}, "CCMON_EXPORTER_BASIC_AUTH_PASSWORD"),
    ],
)
def test_a_bad_combination_stops_start_up(
    exporter: SecureExporter, args: list[str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    args = [a.format(key=exporter.tls.server_key, missing=tmp_path / "missing.pem") for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "exporter", "--port", str(free_port()), *args],
        env=clean_environ() | env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert f"ccmon exporter: config field '{named}'" in result.stderr
    assert "Traceback" not in result.stderr
