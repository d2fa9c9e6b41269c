"""Prometheus and Alertmanager as processes of a test's own (:class:`Service`), the binaries
(Debian's packages: ``PROMETHEUS``, ``ALERTMANAGER``), and their JSON APIs (:func:`http_json`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.processes import stop, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = (
    shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "/usr/bin/prometheus-alertmanager"
)


def http_json(url: str, timeout: float = 10) -> Any:
    """GET ``url`` as JSON; Prometheus' error answers (HTTP 400/422) are JSON too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return json.loads(body)
        except ValueError:
            return {"status": "error", "error": f"HTTP {exc.code}: {body[:500]!r}"}


class Service:
    """``args`` started at once, its output to ``<workdir>/<name>.log``."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        wait_for(f"{self.name} at {url}", ready, timeout)

    def stop(self) -> None:
        stop(self.process)
