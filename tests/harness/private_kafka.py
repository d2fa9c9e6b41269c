"""A private Apache Kafka broker for one test module: SASL over TLS, and mutual TLS.

The same jars and the same way of starting them as ``deploy/local/services.sh`` (KRaft,
one node that is broker and controller, ``kafka.tools.StorageTool format`` then
``kafka.Kafka``), on free ports, with data and logs in a directory of the test's own:

* ``SASL_SSL://127.0.0.1:<sasl_port>``: TLS with the test CA's server certificate (a PEM
  keystore, ``ssl.keystore.type=PEM``), SASL mechanisms SCRAM-SHA-256, SCRAM-SHA-512 and
  PLAIN. SCRAM users are created at format time (``--add-scram``), PLAIN users in the
  listener's JAAS line. Brokers talk to each other on this listener too, as ``admin``.
* ``SSL://127.0.0.1:<ssl_port>``: TLS that *requires* a client certificate signed by the
  test CA (``ssl.client.auth=required``), no SASL.
* the controller listener, plaintext, loopback only, used by the node itself.

No PLAINTEXT client listener: nothing reaches this broker without TLS.

    tls = make_tls(tmp / "tls")
    broker = start_private_kafka(tmp / "kafka", tls, {"ccmon": "secret"})
    ...
    broker.stop()
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.processes import free_port, stop
from harness.tls import Tls

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "deploy" / "local"
ADMIN_USER = "admin"
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
#: Passwords go into a JAAS line and StorageTool's --add-scram: keep them to these characters.
_SAFE_PASSWORD = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def kafka_libs() -> Path:
    """Apache Kafka's jars, where services.sh caches them (fetched by it when missing)."""
    version = re.search(r"<kafka.version>(.*)</kafka.version>", (LOCAL / "kafka-pom.xml").read_text())
    assert version is not None
    cache = Path(
        os.environ.get("CCMON_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ccmon"
    )
    libs = cache / f"kafka-{version.group(1)}" / "libs"
    if not (libs / ".complete").exists():
        fetched = subprocess.run(
            ["bash", str(LOCAL / "services.sh"), "fetch"], capture_output=True, text=True, timeout=900, check=False
        )
        if fetched.returncode != 0:
            pytest.fail(f"services.sh fetch failed:\n{fetched.stderr[-2000:]}")
    return libs


@dataclass
class PrivateKafka:
    directory: Path
    sasl_port: int
    ssl_port: int
    admin_password: str
    process: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def log(self) -> Path:
        return self.directory / "kafka.log"

    def log_tail(self, chars: int = 4000) -> str:
        text = ""
        for path in (self.log, self.directory / "stdout.log"):
            if path.exists():
                text += f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}\n"
        return text

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def _jaas(mechanism: str, admin_password: str, users: dict[str, str]) -> str:
    if mechanism == "PLAIN":
        extra = "".join(f' user_{name}="{password}"' for name, password in users.items())
        return (
            f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN_USER}" '
            f'password="{admin_password}" user_{ADMIN_USER}="{admin_password}"{extra};'
        )
    return (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{admin_password}";'
    )


def start_private_kafka(directory: Path, tls: Tls, users: dict[str, str], timeout: float = 60.0) -> PrivateKafka:
    """Format and start the broker; returns once it has started (``Kafka Server started``).
    ``users``: name -> password, each a SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN user."""
    admin_password = "admin-" + os.urandom(8).hex()
    for password in [admin_password, *users.values()]:
        assert _SAFE_PASSWORD.match(password), "test passwords: letters, digits, '.', '_', '-'"
    directory.mkdir(parents=True, exist_ok=True)
    broker = PrivateKafka(directory, free_port(), free_port(), admin_password, users=dict(users))
    controller_port = free_port()
    everyone = {ADMIN_USER: admin_password, **users}
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=SASL_SSL://127.0.0.1:{broker.sasl_port},SSL://127.0.0.1:{broker.ssl_port},"
        f"CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{broker.sasl_port},SSL://127.0.0.1:{broker.ssl_port}",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256",
        f"sasl.enabled.mechanisms={','.join(MECHANISMS)}",
        *(f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config={_jaas(m, admin_password, users)}" for m in MECHANISMS),
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls.server_bundle}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca}",
        "listener.name.ssl.ssl.client.auth=required",
        f"log.dirs={directory / 'data'}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
    ]
    config = directory / "server.properties"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    log4j = directory / "log4j.properties"
    log4j.write_text((LOCAL / "log4j.properties").read_text().replace("@KAFKA_LOG@", str(broker.log)))

    classpath = f"{kafka_libs()}/*"
    java = [
        "java",
        "-Xmx256m",
        "-Xms256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        classpath,
    ]
    scram = [
        arg
        for name, password in everyone.items()
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
    ]
    cluster_id = subprocess.run(
        [*java, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()[-1]
    formatted = subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if formatted.returncode != 0:
        pytest.fail(f"kafka storage format failed:\n{formatted.stdout[-2000:]}\n{formatted.stderr[-2000:]}")

    with (directory / "stdout.log").open("wb") as out:
        broker.process = subprocess.Popen(
            [*java, "kafka.Kafka", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            pytest.fail(f"the private Kafka broker exited ({broker.process.returncode}):\n{broker.log_tail()}")
        if broker.log.exists() and "Kafka Server started" in broker.log.read_text(errors="replace"):
            return broker
        time.sleep(0.25)
    broker.stop()
    pytest.fail(f"the private Kafka broker did not start within {timeout:.0f} s:\n{broker.log_tail()}")
