"""Prometheus text exposition (format 0.0.4) of :class:`~kpi_core.kpis.MetricFamily` lists.

Pure: families in, text out. The production exporter hands the same families to
prometheus_client instead; both are checked against each other in the tests.

:func:`render` is on the scrape's path: a thousand queues make ~260,000 samples (~20 MB of
text) with ~80,000 distinct label sets but only a few thousand distinct label pairs and
values (nearly all values are whole numbers, most of them 0). So it formats each label
*pair* (``queue="q001"``) and each value once per rendering and builds a sample's line from
those texts; :func:`render_reference` is the plain per-sample version it must equal byte for
byte (tests/unit/kpi_core/test_exposition_fast.py).
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
    """The text exposition of ``families``: each label set's text is built once from its
    pairs' texts (each pair formatted once), each distinct value formatted once.

    Values are cached by equality, which is safe because the text depends only on the
    number: equal numbers (``0.0``, ``-0.0``, ``0``, ``False``) format alike, and a NaN,
    equal to nothing, is formatted each time."""
    lines: list[str] = []
    append = lines.append
    label_text: dict[Labels, str] = {}
    pair_text: dict[tuple[str, str], str] = {}
    value_text: dict[float, str] = {}
    get_labels, get_pair, get_value = label_text.get, pair_text.get, value_text.get
    for fam in families:
        samples = fam.samples
        if not samples:
            continue
        name = fam.name
        append(f"# HELP {name} {escape_help(fam.help)}")
        append(f"# TYPE {name} {fam.kind}")
        for suffix, labels, value in samples:
            text = get_labels(labels)
            if text is None:
                if labels:
                    parts = []
                    for pair in labels:
                        part = get_pair(pair)
                        if part is None:
                            part = pair_text[pair] = f'{pair[0]}="{escape_label(pair[1])}"'
                        parts.append(part)
                    text = "{" + ",".join(parts) + "}"
                else:
                    text = ""
                label_text[labels] = text
            number = get_value(value)
            if number is None:
                number = value_text[value] = format_value(value)
            append(f"{name}{suffix}{text} {number}")
    if not lines:
        return "\n"
    append("")  # the page's final newline, without copying the page once more (``+ "\n"``)
    return "\n".join(lines)


def render_reference(families: Iterable[MetricFamily]) -> str:
    """:func:`render` the plain way, every sample formatted on its own: the specification
    the fast one is tested against."""
    lines: list[str] = []
    for fam in families:
        if not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for suffix, labels, value in fam.samples:
            lines.append(f"{fam.name}{suffix}{format_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n"
