"""The engine's state in Redis: :class:`~streams.redis.state.RedisState` (the
:class:`~kpi_core.state.StateStore` the workers write and the exporter reads) and the Redis
eviction policy check (:mod:`streams.redis.policy`).

Modules: ``keys`` (the key layout: one place for every key name), ``write`` (the batch write:
its buffer and the one script call), ``read`` (the read side and the scrape's prefetching
:class:`~streams.redis.read.SnapshotReader`), ``state`` (``RedisState``, composing them, and
series retirement), ``scripts`` (the Lua scripts, files under ``lua/``), ``policy``.

``import redis`` anywhere in ccmon (absolute imports only) is redis-py, not this package; a
module under ``streams/`` is therefore never run as a script (``python streams/x.py`` would put
``streams/`` first on ``sys.path``): commands are ``python -m streams.cli`` or ``ccmon``.
"""
