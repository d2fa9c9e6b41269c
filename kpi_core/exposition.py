"""Prometheus text exposition (format 0.0.4) of :class:`~kpi_core.kpis.MetricFamily` lists.

Pure: families in, text out. The production exporter hands the same families to
prometheus_client instead; both are checked against each other in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from kpi_core.kpis import Labels, MetricFamily


def escape_label(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}"
    return repr(float(value))


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels) + "}"


def render(families: Iterable[MetricFamily]) -> str:
    """The text exposition of ``families``. A scrape of a thousand queues holds ~200,000
    samples that share a few thousand label sets, so each label set is formatted once."""
    lines: list[str] = []
    append = lines.append
    label_text: dict[Labels, str] = {}
    for fam in families:
        if not fam.samples:
            continue
        name = fam.name
        append(f"# HELP {name} {escape_help(fam.help)}")
        append(f"# TYPE {name} {fam.kind}")
        for suffix, labels, value in fam.samples:
            text = label_text.get(labels)
            if text is None:
                text = label_text[labels] = format_labels(labels)
            if value.__class__ is float and value.is_integer() and -1e15 < value < 1e15:
                append(f"{name}{suffix}{text} {int(value)}")
            else:
                append(f"{name}{suffix}{text} {format_value(value)}")
    return "\n".join(lines) + "\n"
