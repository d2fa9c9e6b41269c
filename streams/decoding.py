"""JSON decoding of events at volume: orjson where it gives what ``json.loads`` gives.

:func:`loads` is the decoder the worker (whole Kafka messages, :func:`kpi_core.events.envelope_items`)
and ``ccmon replay`` (lines) pass to kpi_core, which stays free of third-party imports and keeps
``json.loads`` (:func:`kpi_core.events.decode_json`) as the reference. orjson decodes a usual
envelope several times faster (docs/BENCHMARKS.md); the result is the same value, or the same
``invalid_json`` rejection with the same message, because every input where the two could differ goes to ``json.loads``:

* what orjson refuses and ``json.loads`` takes (``NaN``/``Infinity`` literals, ``1e400``, lone
  surrogate escapes such as ``"\\ud800"``), and all it cannot read (not UTF-8, not JSON, NDJSON):
  any orjson failure is decoded again by ``json.loads``, for its value or its error message;
* what orjson reads differently, so it never sees it:

  - a run of 19 or more digits: an integer beyond 64 bits becomes a float
    in orjson (``2**64`` -> ``1.8446744073709552e+19``, a numeric ``call_id`` loses digits),
    an exact int in ``json.loads``;
  - :data:`ORJSON_MAX_BRACKETS` ``[`` and ``{`` or more: orjson (3.8) nests without a limit and
    crashes the process (a segmentation fault) on a value nested ~1,000,000 deep, where
    ``json.loads`` raises RecursionError (``invalid_json``) at the interpreter's recursion limit
    (~990 levels from a shallow stack). A value is nested no deeper than its count of brackets,
    so below the bound both decode it alike.

Duplicate keys: both keep the last value, at the first key's place.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kpi_core.events import decode_json

#: orjson only below this many ``[`` plus ``{`` (see the module's docstring): an envelope of up to
#: ~300 usual events (each has one ``{``, an ``agent.state`` one ``[`` more); larger ones are
#: decoded by ``json.loads``, as before orjson.
ORJSON_MAX_BRACKETS = 512
#: A number that may not fit 64 bits (``-9223372036854775808`` has 19 digits, ``2**64`` 20).
_LONG_DIGITS = b"9" * 19
_LONG_DIGITS_TEXT = re.compile(r"[0-9]{19}")
#: Bytes to look for both in one pass: digits become ``9``, ``[`` and ``{`` become ``[``, the rest
#: a space (``bytes.translate`` then ``in`` and ``count``: far cheaper than ``re.search`` of
#: ``[0-9]{19}``, which tries 19 digits from every digit of an envelope full of numbers).
_SHAPE = bytes(57 if 48 <= byte <= 57 else 91 if byte in b"[{" else 32 for byte in range(256))


def loads(raw: bytes | str) -> Any:
    """The JSON value of ``raw`` exactly as :func:`kpi_core.events.decode_json` (``json.loads``)
    gives it, or its InvalidEventError (``invalid_json``); orjson where that is the same."""
    if isinstance(raw, str):
        plain = _LONG_DIGITS_TEXT.search(raw) is None and raw.count("[") + raw.count("{") < ORJSON_MAX_BRACKETS
    else:
        shape = raw.translate(_SHAPE)
        plain = _LONG_DIGITS not in shape and shape.count(b"[") < ORJSON_MAX_BRACKETS
    if plain:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return decode_json(raw)
