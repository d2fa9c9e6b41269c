"""What the security tests share: certificates generated on the spot with the ``openssl``
CLI, and the environment of a ccmon process without the test process's CCMON_ settings.

:func:`make_tls` writes, into a directory of its own:

* ``ca.pem`` / ``ca.key``: a throw-away certificate authority;
* ``server.pem`` / ``server.key``: a server certificate signed by it, valid for ``localhost``
  and ``127.0.0.1`` (so hostname verification is on and passes);
* ``client.pem`` / ``client.key``: a client certificate signed by it (mutual TLS);
* ``server-bundle.pem``: the server's key followed by its certificate (Kafka's PEM keystore);
* ``other-ca.pem``: a second, unrelated CA, for "the wrong CA must fail" cases.

Keys are unencrypted PKCS#8 PEM, certificates live for two days. Nothing here is a secret
outside the test that made it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def clean_environ() -> dict[str, str]:
    """This process's environment without any CCMON_ setting (each test sets its own) but the
    customer key secret tests/conftest.py gives every ccmon process."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CCMON_") or k == "CCMON_CUSTOMER_KEY_SECRET"} | {
        "PYTHONUNBUFFERED": "1"
    }


@dataclass(frozen=True)
class Tls:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def other_ca(self) -> Path:
        return self.directory / "other-ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def server_bundle(self) -> Path:
        return self.directory / "server-bundle.pem"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=ccmon test {name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )


def _leaf(directory: Path, name: str, usage: str) -> None:
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN=ccmon-{name}",
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        ext.name,
        cwd=directory,
    )


def make_tls(directory: Path) -> Tls:
    """A CA, a server and a client certificate in ``directory`` (created)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", "serverAuth,clientAuth")
    _leaf(directory, "client", "clientAuth")
    tls = Tls(directory)
    tls.server_bundle.write_text(tls.server_key.read_text() + tls.server_cert.read_text())
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return tls
