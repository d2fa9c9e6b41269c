"""Kafka clients of ccmon: :mod:`streams.kafka.produce` writes event envelopes."""
