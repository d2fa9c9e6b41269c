"""Kafka clients of ccmon: :mod:`streams.kafka.produce` writes event envelopes,
:mod:`streams.kafka.read` reads a topic's past (``ccmon rebuild``), :mod:`streams.kafka.admin`
asks about consumer groups (lag, members)."""
