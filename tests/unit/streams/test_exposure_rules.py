"""Exposure (issue item 6), without servers: the exporter's default address is loopback; the
rule that decides whether the callback worklist shows customer ids (authenticated, or a server
on loopback only), and the masking otherwise; the customer key secret's settings and errors;
the name of a customer record in Redis (HMAC-SHA256 with that secret, no longer a plain
blake2b of the id). Over real HTTP and Redis: tests/integration/test_exposure.py."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
from harness.settings import error, parse
from harness.web import wsgi_call

from kpi_core.config import Config
from kpi_core.errors import ConfigError
from streams import security
from streams import settings as s
from streams.redis.keys import INSECURE_DEV_CUSTOMER_KEY
from streams.redis.state import RedisState
from streams.web import api
from streams.web.app import make_wsgi_app

SECRET = "unit-test-customer-key-" + "ab" * 16


# -- where the exporter and the demo listen ------------------------------------------------------
def test_the_exporter_listens_on_loopback_by_default() -> None:
    assert s.Settings().exporter_host == "127.0.0.1"
    assert parse([]).exporter_host == "127.0.0.1"
    assert parse([], {"CCMON_EXPORTER_HOST": "0.0.0.0"}).exporter_host == "0.0.0.0"  # all: said explicitly
    from streams.cli import build_parser

    parser = build_parser()
    exporter_help = next(
        action
        for action in parser._subparsers._group_actions[0].choices["exporter"]._actions
        if action.dest == "exporter_host"
    ).help
    assert "else 127.0.0.1)" in exporter_help and "0.0.0.0" in exporter_help  # --help says so
    assert parser.parse_args(["demo"]).host == "127.0.0.1"  # ccmon demo stays on loopback


# -- who sees customer ids -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.0.2.2", False),
        ("10.1.2.3", False),
        ("fd00::2", False),
        ("exporter.example", False),
        ("localhost.example", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert api.is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("host", "authenticated", "visible"),
    [
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("localhost", False, True),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("192.0.2.2", False, False),
        ("0.0.0.0", True, True),
        ("192.0.2.2", True, True),
        (None, False, True),  # not served by streams.web.serve: whoever serves it answers for access
    ],
)
def test_customer_ids_visible_only_authenticated_or_on_loopback(
    host: str | None, authenticated: bool, visible: bool
) -> None:
    assert api.customer_ids_visible(host, authenticated) is visible


def test_masking_keeps_two_characters_of_long_ids_only() -> None:
    assert api.mask_customer_id("+4915112345678") == "***78"
    assert api.mask_customer_id("jane.roe@example.com") == "***om"
    assert api.mask_customer_id("k1234567") == "***67"  # 8 characters: the shortest that keeps any
    assert api.mask_customer_id("k123456") == "***"
    assert api.mask_customer_id("k1") == "***"
    items = [
        {"tenant": "t", "queue": "q", "customer_id": "+4915112345678", "due": 1.0},
        {"tenant": "t", "queue": "q", "callback_id": "cb-7", "due": 2.0},
    ]
    assert api.mask_callbacks(items) == [
        {"tenant": "t", "queue": "q", "customer_id": "***78", "customer_id_masked": True, "due": 1.0},
        {"tenant": "t", "queue": "q", "callback_id": "cb-7", "due": 2.0},  # a request id, not a customer
    ]
    assert items[0]["customer_id"] == "+4915112345678"  # the input is left alone


WORKLIST = [
    {"tenant": "default", "queue": "q", "customer_id": "+4915112345678", "due": 10.0, "age_seconds": 5.0},
    {"tenant": "default", "queue": "q", "customer_id": "c2", "due": 11.0, "age_seconds": 4.0},
]


def call(app: Any, path: str, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    status, _headers, body = wsgi_call(app, path, **environ)
    return status, json.loads(body)


def test_the_app_masks_the_worklist_off_loopback_without_auth() -> None:
    app = make_wsgi_app(lambda: [], lambda: WORKLIST, get_info=lambda: {"at": 15.0})
    _status, shown = call(app, "/api/callbacks/pending", {api.LISTEN_HOST_ENVIRON: "127.0.0.1"})
    assert [i["customer_id"] for i in shown["callbacks"]] == ["+4915112345678", "c2"]
    assert shown["customer_ids"] == "shown"
    status, masked = call(app, "/api/callbacks/pending?limit=1", {api.LISTEN_HOST_ENVIRON: "0.0.0.0"})
    assert status == "200 OK" and masked["customer_ids"] == "masked"
    assert masked["count"] == 2 and masked["callbacks"] == [
        {
            "tenant": "default",
            "queue": "q",
            "customer_id": "***78",
            "customer_id_masked": True,
            "due": 10.0,
            "age_seconds": 5.0,
        }
    ]
    # Basic auth let the request in: the ids are the agents' worklist.
    _status, authed = call(
        app, "/api/callbacks/pending", {api.LISTEN_HOST_ENVIRON: "0.0.0.0", security.AUTH_USER_ENVIRON: "agent"}
    )
    assert [i["customer_id"] for i in authed["callbacks"]] == ["+4915112345678", "c2"]


def test_basic_auth_marks_the_requests_it_lets_through() -> None:
    seen: list[Any] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ.get(security.AUTH_USER_ENVIRON))
        start_response("200 OK", [])
        return [b""]

    app = security.require_basic_auth(inner, "agent", "pw")
    token = base64.b64encode(b"agent:pw").decode()
    list(app({"PATH_INFO": "/api/callbacks/pending", "HTTP_AUTHORIZATION": f"Basic {token}"}, lambda *_a: None))
    list(app({"PATH_INFO": "/healthz"}, lambda *_a: None))  # open path, no credentials: not marked
    list(app({"PATH_INFO": "/api/callbacks/pending"}, lambda *_a: None))  # 401: never reaches inner
    assert seen == ["agent", None]


# -- the customer key secret ---------------------------------------------------------------------
def test_the_customer_key_secret_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert parse([]).customer_key_secret is None
    settings = parse([], {"CCMON_CUSTOMER_KEY_SECRET": SECRET})
    assert settings.customer_key_secret == SECRET
    assert SECRET not in repr(settings) and settings.redacted()["customer_key_secret"] == "***"
    assert "customer_key_secret" in s.SECRETS and s.SOURCES["customer_key_secret"][0] == ""  # no flag
    path = tmp_path / "customer-key"
    path.write_text(SECRET + "\n")
    assert parse(["--customer-key-secret-file", str(path)]).customer_key_secret == SECRET
    assert parse([], {"CCMON_CUSTOMER_KEY_SECRET_FILE": str(path)}).customer_key_secret == SECRET
    assert security.customer_key(parse([], {"CCMON_CUSTOMER_KEY_SECRET": SECRET}), "ccmon worker") == SECRET.encode()


def test_customer_key_secret_errors_name_the_setting_and_never_the_secret(tmp_path: Path) -> None:
    short = "too-short-Secret"
    exc = error([], {"CCMON_CUSTOMER_KEY_SECRET": short})
    assert exc.field == "CCMON_CUSTOMER_KEY_SECRET" and "at least 32 characters" in str(exc) and short not in str(exc)
    path = tmp_path / "short"
    path.write_text(short)
    exc = error(["--customer-key-secret-file", str(path)])
    assert exc.field == "--customer-key-secret-file" and short not in str(exc)
    exc = error(["--customer-key-secret-file", str(tmp_path / "missing")])
    assert exc.field == "--customer-key-secret-file" and "cannot read" in str(exc)
    path.write_text(SECRET)
    exc = error(["--customer-key-secret-file", str(path)], {"CCMON_CUSTOMER_KEY_SECRET": SECRET})
    assert "give the secret one way" in str(exc) and SECRET not in str(exc)


def test_the_customer_key_secret_has_no_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    s.add_arguments(parser, tuple(s.SOURCES))
    with pytest.raises(SystemExit):
        parser.parse_args(["--customer-key-secret", "hunter2-hunter2-hunter2-hunter2-x"])
    err = capsys.readouterr().err
    assert "--customer-key-secret: a secret has no flag" in err and "$CCMON_CUSTOMER_KEY_SECRET" in err
    assert "hunter2" not in err


def test_worker_and_rebuild_require_the_secret_unless_insecure_dev(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError) as info:
        security.customer_key(parse([]), "ccmon worker")
    assert info.value.field == "CCMON_CUSTOMER_KEY_SECRET or CCMON_CUSTOMER_KEY_SECRET_FILE"
    assert "required by ccmon worker" in str(info.value) and "--insecure-dev" in str(info.value)
    assert "\n" not in str(info.value)
    assert parse(["--insecure-dev"]).insecure_dev is True  # the flag alone means yes
    assert parse([], {"CCMON_INSECURE_DEV": "yes"}).insecure_dev is True
    assert error(["--insecure-dev", "maybe"]).field == "--insecure-dev"
    with caplog.at_level("WARNING", logger="ccmon.security"):
        assert security.customer_key(parse(["--insecure-dev"]), "ccmon rebuild") is None
    assert "development only" in caplog.text
    # A secret wins over --insecure-dev.
    assert (
        security.customer_key(parse(["--insecure-dev"], {"CCMON_CUSTOMER_KEY_SECRET": SECRET}), "x") == SECRET.encode()
    )


# -- the name of a customer record ---------------------------------------------------------------
def record_key(customer_key: bytes | None, customer: str, tenant: str = "default") -> str:
    # The client is never used: naming a key sends nothing to Redis.
    return RedisState(redis.Redis(), Config(), prefix="p", customer_key=customer_key)._record_key(
        "customer", tenant, customer
    )


def test_a_customer_record_is_named_by_an_hmac_of_the_id_with_the_secret() -> None:
    customer = "+4915112345678"
    name = record_key(SECRET.encode(), customer)
    digest = re.fullmatch(r"p:\{t:default\}:rec:customer:#([0-9a-f]{32})", name)
    assert digest is not None, name
    plain = hashlib.blake2b(customer.encode(), digest_size=16, person=b"ccmon-customer").hexdigest()
    assert digest.group(1) != plain  # the old name: anyone could hash every phone number and look it up
    assert (
        digest.group(1)
        == hmac.new(SECRET.encode(), b"ccmon-customer\x00" + customer.encode(), hashlib.sha256).hexdigest()[:32]
    )
    assert record_key(SECRET.encode(), customer) == name  # stable: worker and rebuild agree
    assert record_key(b"another-secret-" + b"x" * 32, customer) != name  # changes with the secret
    assert record_key(None, customer) == record_key(INSECURE_DEV_CUSTOMER_KEY, customer) != name
    assert record_key(SECRET.encode(), customer + "0") != name
    # Other records keep their readable names.
    state = RedisState(redis.Redis(), Config(), prefix="p", customer_key=SECRET.encode())
    assert state._record_key("call", "default", "c1") == "p:{t:default}:rec:call:c1"
    with pytest.raises(ValueError, match="customer_key"):
        RedisState(redis.Redis(), Config(), prefix="p", customer_key=b"")


def test_the_process_environment_cannot_pose_as_basic_auth(tmp_path: Path) -> None:
    """wsgiref copies the process environment into every request's environ: a variable named
    like the basic-auth mark must not make a request look authenticated (the server drops it)."""
    import os
    import subprocess
    import sys

    script = """
import json, urllib.request
from streams.web import make_wsgi_app, serve
items = [{"tenant": "t", "queue": "q", "customer_id": "+4915112345678", "due": 1.0}]
server = serve(make_wsgi_app(lambda: [], lambda: items), "0.0.0.0", 0)
with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/callbacks/pending", timeout=10) as response:
    print(json.loads(response.read())["callbacks"][0]["customer_id"])
server.stop()
"""
    env = {**os.environ, security.AUTH_USER_ENVIRON: "intruder", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "***78"
