"""Prometheus text exposition (format 0.0.4) of :class:`~kpi_core.kpis.MetricFamily` lists.

Pure: families in, text out. The production exporter hands the same families to
prometheus_client instead; both are checked against each other in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from kpi_core.kpis import Labels, MetricFamily


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return repr(float(value))


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels) + "}"


def render(families: Iterable[MetricFamily]) -> str:
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for suffix, labels, value in fam.samples:
            lines.append(f"{fam.name}{suffix}{format_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n"
