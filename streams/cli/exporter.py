"""Serve the KPIs from Redis: /metrics (Prometheus text), /api/kpis (JSON, optional
?tenant=&queue= filters), /api/callbacks/pending, /livez (liveness), /readyz (readiness:
Redis answers) and /healthz (= /readyz, kept for compatibility). Every scrape reads Redis at
that instant (the clock: wall, or fixed for tests). Each value comes from its flag, else its
environment variable, else the default."""

from __future__ import annotations

import argparse

from streams import settings as settings_module
from streams.cli import configured

FLAGS = (
    "exporter_port",
    "exporter_host",
    "redis_url",
    "redis_cluster",
    "redis_prefix",
    "config_path",
    "clock",
    "log_level",
    "log_format",
    # security (docs/SECURITY.md); passwords come from the environment or a file only
    "redis_password_file",
    "redis_ca_file",
    "redis_cert_file",
    "redis_key_file",
    "exporter_auth_user",
    "exporter_auth_password_file",
    "exporter_tls_cert_file",
    "exporter_tls_key_file",
    "alertmanager_url",
    # the board's "vs last week" indicator (streams/web/week_over_week.py)
    "prometheus_url",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_module.add_arguments(parser, FLAGS)


def run(args: argparse.Namespace) -> int:
    settings = configured(args)
    from streams.exporter import serve

    return serve(settings)
