"""streams.redis.policy without a Redis: how the policy is read (CONFIG GET, else INFO memory,
else unknown), the start-up refusal and its override, the watch's logging and gauge. The real
redis-server cases are in tests/integration/test_redis_eviction.py."""

from __future__ import annotations

import argparse
import logging
from typing import Any

import pytest
import redis

from kpi_core.errors import ConfigError
from kpi_core.exposition import render
from streams import settings as s
from streams.redis import policy as rp


class FakeNode:
    """A redis.Redis stand-in: ``policy`` answers CONFIG GET and INFO; ``refuse`` names the
    commands that fail with a ResponseError (renamed or forbidden)."""

    def __init__(self, policy: str | None, refuse: tuple[str, ...] = (), port: int = 6379) -> None:
        self.policy = policy
        self.refuse = refuse
        self.down = False
        self.connection_pool = type("Pool", (), {"connection_kwargs": {"host": "10.0.0.1", "port": port}})()

    def config_get(self, pattern: str) -> dict[bytes, bytes]:
        if self.down:
            raise redis.ConnectionError("Connection refused")
        if "config" in self.refuse:
            raise redis.ResponseError("unknown command 'CONFIG', with args beginning with: 'GET'")
        return {b"maxmemory-policy": self.policy.encode()} if self.policy else {}

    def info(self, section: str) -> dict[str, Any]:
        assert section == "memory"
        if "info" in self.refuse:
            raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'info' command")
        return {"used_memory": 1, **({"maxmemory_policy": self.policy} if self.policy else {})}


class FakeCluster:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes = nodes

    def get_primaries(self) -> list[Any]:
        return [type("Node", (), {"name": name})() for name in self.nodes]

    def get_redis_connection(self, node: Any) -> FakeNode:
        return self.nodes[node.name]


def test_config_get_answers() -> None:
    assert rp.read_policy(FakeNode("allkeys-lru")) == ("allkeys-lru", None)
    assert rp.read_policy(FakeNode("noeviction")) == ("noeviction", None)


def test_info_memory_when_config_is_renamed_or_forbidden() -> None:
    assert rp.read_policy(FakeNode("volatile-lru", refuse=("config",))) == ("volatile-lru", None)


def test_unknown_when_neither_answers() -> None:
    policy, why = rp.read_policy(FakeNode("allkeys-lru", refuse=("config", "info")))
    assert policy is None
    assert "CONFIG GET refused: unknown command 'CONFIG'" in str(why)
    assert "INFO memory refused: this user has no permissions" in str(why)


def test_an_unreachable_node_is_no_answer() -> None:
    node = FakeNode("noeviction")
    node.down = True
    with pytest.raises(redis.ConnectionError):
        rp.read_policy(node)


@pytest.mark.parametrize(
    "policy",
    ["allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"],
)
def test_every_evicting_policy_is_refused_with_one_line(policy: str) -> None:
    with pytest.raises(rp.EvictingRedisError) as info:
        rp.check_at_start(FakeNode(policy), cluster=False, allow=False)
    assert str(info.value) == (
        f"Redis at 10.0.0.1:6379 evicts keys (maxmemory-policy {policy}): ccmon would count redelivered events again "
        "after an eviction; set maxmemory-policy noeviction, or pass --allow-evicting-redis yes "
        "(CCMON_ALLOW_EVICTING_REDIS=yes) to run anyway"
    )
    assert "\n" not in str(info.value)


def test_noeviction_passes() -> None:
    status = rp.check_at_start(FakeNode("noeviction"), cluster=False, allow=False)
    assert status.safe is True
    assert status.label == "noeviction"


def test_the_override_warns_and_the_gauge_still_says_0(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ccmon.redis_policy"):
        status = rp.check_at_start(FakeNode("allkeys-lru"), cluster=False, allow=True)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert "Redis at 10.0.0.1:6379 evicts keys (maxmemory-policy allkeys-lru): running anyway" in record.getMessage()
    assert render([rp.metric_family(status)]).splitlines()[-1] == 'ccmon_redis_eviction_safe{policy="allkeys-lru"} 0'


def test_an_unreadable_policy_warns_once_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    node = FakeNode("allkeys-lru", refuse=("config", "info"))
    with caplog.at_level(logging.WARNING, logger="ccmon.redis_policy"):
        status = rp.check_at_start(node, cluster=False, allow=False)
        watch = rp.EvictionWatch(node, status=status)
        watch.refresh()
        watch.refresh()
    assert status.safe is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cannot read the maxmemory-policy of Redis at 10.0.0.1:6379" in caplog.records[0].getMessage()
    assert "make sure it is noeviction" in caplog.records[0].getMessage()
    assert rp.metric_family(status).samples == []  # no sample: the alert neither fires nor clears


def test_a_cluster_is_checked_on_every_primary() -> None:
    nodes = {
        "10.0.0.1:7000": FakeNode("noeviction"),
        "10.0.0.2:7000": FakeNode("volatile-ttl"),
        "10.0.0.3:7000": FakeNode("noeviction", refuse=("config",)),
    }
    status = rp.read_status(FakeCluster(nodes), cluster=True)
    assert status.policies == (
        ("10.0.0.1:7000", "noeviction"),
        ("10.0.0.2:7000", "volatile-ttl"),
        ("10.0.0.3:7000", "noeviction"),
    )
    assert status.safe is False
    assert status.describe() == "Redis at 10.0.0.2:7000 evicts keys (maxmemory-policy volatile-ttl)"
    nodes["10.0.0.1:7000"].policy = "allkeys-lru"
    status = rp.read_status(FakeCluster(nodes), cluster=True)
    assert status.describe() == (
        "Redis at 10.0.0.1:7000, 10.0.0.2:7000 evict keys (maxmemory-policy "
        "allkeys-lru on 10.0.0.1:7000, volatile-ttl on 10.0.0.2:7000)"
    )
    assert status.label == "allkeys-lru,volatile-ttl"
    nodes["10.0.0.1:7000"].policy = nodes["10.0.0.2:7000"].policy = "noeviction"
    assert rp.read_status(FakeCluster(nodes), cluster=True).safe is True


def test_the_watch_logs_a_change_once_and_keeps_the_last_status_while_redis_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = FakeNode("noeviction")
    watch = rp.EvictionWatch(node, status=rp.check_at_start(node, cluster=False, allow=False))
    with caplog.at_level(logging.INFO, logger="ccmon.redis_policy"):
        node.policy = "allkeys-lru"
        watch.refresh()
        watch.refresh()
        node.down = True
        assert watch.refresh() is watch.status
        node.down = False
        watch.refresh()
        node.policy = "noeviction"
        watch.refresh()
        watch.refresh()
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("ERROR", "Redis at 10.0.0.1"),
        ("WARNING", "Redis maxmemory-policy is noeviction again"),
    ]
    assert (
        caplog.records[0].getMessage().startswith("Redis at 10.0.0.1:6379 evicts keys (maxmemory-policy allkeys-lru)")
    )
    assert "this process goes on" in caplog.records[0].getMessage()


def test_the_exporter_rereads_at_most_every_max_age() -> None:
    node = FakeNode("allkeys-lru")
    watch = rp.EvictionWatch(node, max_age=3600)
    assert watch.family().samples == [("", (("policy", "allkeys-lru"),), 0.0)]  # first scrape reads
    node.policy = "noeviction"
    assert watch.family().samples == [("", (("policy", "allkeys-lru"),), 0.0)]  # cached
    watch.max_age = 0
    assert watch.family().samples == [("", (("policy", "noeviction"),), 1.0)]


def test_the_worker_registry_collects_without_io() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    node = FakeNode("volatile-lru")
    watch = rp.EvictionWatch(node, status=rp.read_status(node))
    registry = CollectorRegistry()
    registry.register(watch)
    node.down = True  # a scrape must not touch Redis (it runs on the worker's event loop)
    assert 'ccmon_redis_eviction_safe{policy="volatile-lru"} 0.0' in generate_latest(registry).decode()


def parse(argv: list[str], env: dict[str, str] | None = None) -> s.Settings:
    parser = argparse.ArgumentParser()
    s.add_arguments(parser, tuple(s.SOURCES))
    return s.from_args(parser.parse_args(argv), env or {})


def test_the_override_setting() -> None:
    assert parse([]).evicting_redis_allowed is False
    assert parse(["--allow-evicting-redis", "yes"]).evicting_redis_allowed is True
    assert parse([], {"CCMON_ALLOW_EVICTING_REDIS": "true"}).evicting_redis_allowed is True
    assert (
        parse(["--allow-evicting-redis", "no"], {"CCMON_ALLOW_EVICTING_REDIS": "yes"}).evicting_redis_allowed is False
    )
    with pytest.raises(ConfigError) as info:
        parse([], {"CCMON_ALLOW_EVICTING_REDIS": "maybe"})
    assert info.value.field == "CCMON_ALLOW_EVICTING_REDIS"
    assert "got 'maybe'" in str(info.value)
