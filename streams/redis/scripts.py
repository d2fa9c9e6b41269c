"""The Lua scripts ccmon runs in Redis, read once at import from the files in
``streams/redis/lua/`` (shipped as package data). Each file's header says its KEYS, ARGV and
reply; the text is sent to Redis as it is in the file (no formatting: every parameter is an
ARGV).

- :data:`APPLY_LUA` (``apply.lua``): a batch's writes, all-or-nothing (:mod:`streams.redis.write`).
- :data:`WINDOWS_LUA` (``windows.lua``): window sums of many scopes and windows, for a scrape.
- :data:`LIVE_LUA` (``live.lua``): live-set summaries (sizes, ages, agents by state).
- :data:`RETIRE_LUA` (``retire.lua``), :data:`RETIRE_TENANTS_LUA` (``retire_tenants.lua``):
  series retirement (:meth:`streams.redis.state.RedisState.series_retire`).
"""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of ``lua/<name>.lua``, this package's data."""
    return resources.files("streams.redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


APPLY_LUA = load("apply")
WINDOWS_LUA = load("windows")
LIVE_LUA = load("live")
RETIRE_LUA = load("retire")
RETIRE_TENANTS_LUA = load("retire_tenants")
