"""Consume events from Kafka, fold them into KPI state in Redis, and send rejected events to
the dead-letter topic. Run several with the same --group to split the topic's partitions.
Each value comes from its flag, else its environment variable, else the default. Keeps
retrying (with one clear log line per attempt) while Kafka or Redis cannot be reached."""

from __future__ import annotations

import argparse

from streams import settings as settings_module
from streams.cli import configured

#: Security (docs/SECURITY.md), the worker's and ``ccmon rebuild``'s: passwords come from the environment
#: or a file only; so does the customer key's secret.
SECURITY_FLAGS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_username",
    "kafka_password_file",
    "kafka_ca_file",
    "kafka_cert_file",
    "kafka_key_file",
    "redis_password_file",
    "redis_ca_file",
    "redis_cert_file",
    "redis_key_file",
    "customer_key_secret_file",
    "insecure_dev",
)

FLAGS = (
    "kafka_bootstrap",
    "redis_url",
    "redis_cluster",
    "events_topic",
    "dlq_topic",
    "group_id",
    "config_path",
    "redis_prefix",
    "batch_size",
    "batch_within",
    "pipeline_chunk",
    "session_timeout",
    "worker_web_port",
    "offset_reset",
    "clock",
    "log_level",
    "log_format",
    "stuck_partition_seconds",
    "evicting_redis_allowed",
    "redis_policy_recheck_seconds",  # refuse a Redis that may evict keys: streams/redis/policy.py
    *SECURITY_FLAGS,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_module.add_arguments(parser, FLAGS)


def run(args: argparse.Namespace) -> int:
    settings = configured(args)
    from streams.worker import run_worker

    return run_worker(settings)
