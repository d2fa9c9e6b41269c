"""Components of many scopes as one matrix, for :func:`kpi_core.kpis.snapshot`.

A snapshot folds the same KPIs from the components of every queue of a tenant (and of every
channel or priority of them), window after window: :class:`Columns` holds those components
as a float matrix (rows = the scopes, in the order given; columns = the component names
they hold, in the order first met), so that the catalog's simple values (``count``,
``peak``, ``mean``: :attr:`kpi_core.catalog.Fold.op`) are computed for every row at once
(:meth:`Columns.fold`), and the tenant's ``_all`` from the column sums (:meth:`Columns.total`).

**Same bits as the per-scope dicts.** The values are the presented components (seconds are
``ms / 1000``, so they are not whole numbers and a float sum depends on its order). The
dict path (:func:`kpi_core.kpis._sum_components`, ``merge_into``) adds each field's values
row by row, in the rows' order, starting from 0.0, skipping the rows without it.
:meth:`Columns.total` computes ``np.cumsum(axis=0)``, a strictly sequential accumulation in
the same order (numpy sums pairwise in ``sum``, never in ``cumsum``), over a matrix whose
missing fields are 0.0: adding 0.0 leaves every float as it is but -0.0, and the final
``+ 0.0`` maps a -0.0 to 0.0 as the dict path's start at 0.0 does. A maximum is the same
whatever the order (missing fields are NaN, which ``fmax`` skips). A field no row holds has
no column, so it is absent from the total as from the dict's. Division is IEEE in both
(``x / y`` on Python floats is numpy's on float64), and every value leaves as a Python
float (``tolist``), so the exposition renders the same text. ``tests/unit/kpi_core/test_snapshot_arrays.py``
checks the whole snapshot against the per-scope path (``snapshot(..., arrays=False)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

from kpi_core.catalog import Fold

#: Fields that take the maximum over scopes (``merge_into``), NaN where a scope has none.
MAX_PREFIX = "max_"


class Columns:
    """The components of ``rows`` (one mapping per scope) as :attr:`matrix`; :attr:`index`:
    component name -> its column."""

    __slots__ = ("index", "matrix")

    def __init__(self, rows: Sequence[Mapping[str, float]]) -> None:
        index: dict[str, int] = {}
        layouts: dict[tuple[str, ...], list[int]] = {}  # scopes mostly hold the same fields in the same order
        cols: list[int] = []
        lengths: list[int] = []
        for row in rows:
            keys = tuple(row)
            layout = layouts.get(keys)
            if layout is None:
                layout = layouts[keys] = [index.setdefault(k, len(index)) for k in keys]
            cols += layout
            lengths.append(len(layout))
        self.index = index
        self.matrix = matrix = np.zeros((len(rows), len(index)))
        maxima = [j for name, j in index.items() if name.startswith(MAX_PREFIX)]
        if maxima:
            matrix[:, maxima] = np.nan
        if cols:
            values = np.fromiter(chain.from_iterable(row.values() for row in rows), float, len(cols))
            matrix[np.repeat(np.arange(len(rows)), lengths), cols] = values

    def __len__(self) -> int:
        return len(self.matrix)

    def column(self, name: str) -> np.ndarray:
        """The values of ``name`` (0.0 where a row lacks it; NaN for a ``max_*`` field)."""
        j = self.index.get(name)
        if j is None:
            return np.full(len(self.matrix), np.nan if name.startswith(MAX_PREFIX) else 0.0)
        return self.matrix[:, j]

    def fold(self, fold: Fold) -> np.ndarray:
        """``fold`` (op ``count``, ``peak`` or ``mean``) of every row; NaN where it is absent."""
        if fold.op == "count" or fold.op == "peak":
            return self.column(fold.components[0])
        if fold.op == "mean":
            numerator, denominator = (self.column(name) for name in fold.components)
            out = np.full(len(self.matrix), np.nan)
            np.divide(numerator, denominator, out=out, where=denominator > 0)
            return out
        raise ValueError(f"Columns.fold: op must be count, peak or mean, got {fold.op!r}")

    def total(self, rows: np.ndarray | None = None, skip_prefix: str = "occ_") -> dict[str, float]:
        """The sum of the rows (``rows``: those indexes only, in that order) as
        :func:`kpi_core.kpis._sum_components` computes it, bit for bit (see the module's doc):
        without the fields starting with ``skip_prefix`` and the channel and priority fields."""
        sums: list[tuple[str, int]] = []
        maxima: list[tuple[str, int]] = []
        for name, j in self.index.items():
            if not name.startswith(skip_prefix) and "@" not in name:
                (maxima if name.startswith(MAX_PREFIX) else sums).append((name, j))
        matrix = self.matrix if rows is None else self.matrix[rows]
        out: dict[str, float] = {}
        if not len(matrix):
            return out
        if sums:
            summed = np.cumsum(matrix[:, [j for _name, j in sums]], axis=0)[-1] + 0.0
            out.update(zip((name for name, _j in sums), summed.tolist(), strict=True))
        if maxima:
            peaks = np.fmax.reduce(matrix[:, [j for _name, j in maxima]], axis=0)
            out.update(
                (name, value) for (name, _j), value in zip(maxima, peaks.tolist(), strict=True) if value == value
            )
        return out
