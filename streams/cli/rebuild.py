"""Recompute the KPI state in Redis from the events topic, after Redis lost it (or part of
it). Reads every partition from the start of the horizon (the earliest of now minus the
longest sliding window and the local midnight of each tenant time zone: the oldest events
the engine still accepts) up to the end offsets at the start, and runs them through the
worker's own processing into Redis. Idempotent: events Redis already holds (by event id) are
duplicates and change nothing, so it may run over partial state and while workers consume.
--clear deletes the prefix's keys first, and refuses while workers of the group are running.
Rejected events are counted, not dead-lettered again; nothing is committed to the group.
Exit status: 0 done, 2 on a bad setting or when Kafka, Redis or the topic cannot be used."""

from __future__ import annotations

import argparse
import sys

from streams import settings as settings_module

FLAGS = (
    "kafka_bootstrap", "redis_url", "redis_cluster", "events_topic", "group_id", "config_path", "redis_prefix",
    "batch_size", "clock", "log_level", "log_format",
    "evicting_redis_allowed",  # refuse a Redis that may evict keys: streams/redis_policy.py
    # security, as the worker's (docs/SECURITY.md); passwords come from the environment or a file only
    "kafka_security_protocol", "kafka_sasl_mechanism", "kafka_username", "kafka_password_file", "kafka_ca_file",
    "kafka_cert_file", "kafka_key_file", "redis_password_file", "redis_ca_file", "redis_cert_file", "redis_key_file",
    # the customer key, the workers' own (docs/SECURITY.md)
    "customer_key_secret_file", "insecure_dev",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_module.add_arguments(parser, FLAGS)
    parser.add_argument("--clear", action="store_true",
                        help="delete every key of the Redis prefix before rebuilding (refused while "
                        "workers of --group are running, unless --force)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="with --clear: clear even though workers of the group are running")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr (default: when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    from kpi_core.config import load_config

    if args.force and not args.clear:
        print("ccmon rebuild: --force only makes sense with --clear", file=sys.stderr)
        return 2
    settings = settings_module.from_args(args)
    settings_module.setup_logging(settings)
    from streams.rebuild import print_report, rebuild

    config = load_config(settings.config_path)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    report = rebuild(settings, config, clear=args.clear, force=args.force, progress=progress)
    print_report(report, args.json, print)
    return 0
