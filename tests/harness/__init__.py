"""The test harness: the machinery the test modules share, so that no test module imports
another one and no helper is written twice.

``tests/`` is on ``sys.path`` for every test (pytest's default ``prepend`` import mode puts the
directory of ``tests/conftest.py`` there), so any test imports ``from harness.<module> import ...``.
This package holds no tests; the fixtures built on it that several modules use live in
``tests/conftest.py`` (``redis_prefix``, ``own_redis``, ``cluster``...), never imported from a
test module.

* :mod:`harness.processes`: free ports, stopping a process (a signal, then SIGKILL; its exit
  status), HTTP GETs, waiting for a condition.
* :mod:`harness.kafka_topics`: topics of a test's own (create, delete), entity keys, producing
  events as keyed envelopes (:class:`~harness.kafka_topics.Flow` spreads them over time), a
  simulated day, a worker's partition assignment.
* :mod:`harness.samples`: Prometheus text as ``(name, labels) -> value``, the KPIs without the
  pipeline-health series (``NOT_KPIS``), ``ccmon replay`` and Redis read the same way, diffs.
* :mod:`harness.pipeline`: ``ccmon worker`` + ``ccmon exporter`` as subprocesses on topics,
  a consumer group and a Redis key prefix of their own (:class:`~harness.pipeline.Pipeline`),
  and an exporter over the golden data in this process.
* :mod:`harness.redis_servers`: ``redis-server`` processes of a test's own (one, or a
  3-primary cluster); deleting a key prefix on the shared Redis.
* :mod:`harness.tls` and :mod:`harness.private_kafka`: a test CA and certificates, a private
  SASL/TLS Kafka broker.
* :mod:`harness.monitoring`: Prometheus and Alertmanager binaries as :class:`~harness.monitoring.Service`.
* :mod:`harness.browser`: Debian's Chromium through playwright (``chromium_page``,
  ``needs_chromium``) and where screenshots go (``ARTIFACTS``).
* :mod:`harness.dashboards`: the PromQL of the Grafana dashboards (queries, metric names).
* :mod:`harness.web`: ccmon's WSGI apps called in-process, answers against the OpenAPI document.
* :mod:`harness.settings`: the commands' settings from flags and environment.
* :mod:`harness.hostile`: Hypothesis strategies for hostile JSON and event-like objects.
* :mod:`harness.queueing`: an independent Erlang A model; :mod:`harness.bank`: the Anonymous Bank
  records' daily figures from the raw rows. (``realdata.py`` and ``unit/reference.py`` stay where
  they are: the real data sets, and the unit tests' reference engine.)
"""
