"""From stored components to KPI values.

:func:`snapshot` reads a :class:`~kpi_core.state.StateStore` at instant ``at`` and returns
:class:`MetricFamily` objects as the KPI catalog (:mod:`kpi_core.catalog`) declares them: names,
help texts, kinds and the order of families come from there, and so does the value of every
KPI that is a function of one scope's components; the others (live sets, occupancy,
quantiles, staffing, the histogram) are folded here, each by its catalog entry. It is used by
``ccmon replay``, the demo and the production exporter alike, so every path exports the same
names with the same meaning.

Tenant totals (``queue="_all"``) are computed from summed components (counts, sums, the
per-queue service-level numerator and denominator), never by averaging ratios. Agent series
for ``_all`` count each agent once, however many queues it serves.

Channel and priority breakdowns (``*_by_channel``, ``*_by_priority``) are families of their
own, so the existing ones keep their series: their components are the engine's
``<field>@c:<channel>`` and ``<field>@p:<priority>`` fields (kpi_core.engine.broken_down),
exported for the values a queue's lifetime totals hold, at most ``[limits] max_channels`` /
``max_priorities`` of them per tenant (:func:`kept_values`); the rest are summed into
``other``. Their ``_all`` and ``other`` come from summed components too.

A tenant's queues are folded together, window after window, over arrays
(:class:`kpi_core.columns.Columns`: rows = queues, or a breakdown's (queue, value) pairs;
columns = components): the catalog's counts, peaks and means (``Fold.op``), first contact
resolution, the wait quantiles and the histogram's running sums for every row at once, the
``_all`` sums as sequential column sums (the same bits as summing the dicts: see that
module), the rest (custom values, occupancy, logged-in time) per row. ``snapshot(...,
arrays=False)`` folds every queue's dict on its own: the reference the array path is tested
against (tests/unit/kpi_core/test_snapshot_arrays.py), sample for sample and bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, NamedTuple

import numpy as np

from kpi_core import catalog
from kpi_core.catalog import TARGET_METRICS, Fold, Kpi
from kpi_core.columns import Columns
from kpi_core.config import REASON_NONE, REASON_OTHER, Config, QueueConfig
from kpi_core.engine import (
    AGENT_CALLS,
    AGENTS,
    ALL,
    BUSY_STATES,
    CALLBACKS,
    CHANNEL_MARK,
    LOGGED_IN_STATES,
    PRIORITY_MARK,
    STAFFED_STATES,
    TICKETS,
    WAIT_BUCKETS,
    WAITING,
    Engine,
    split_state,
)
from kpi_core.engine.agents import agent_calls_today
from kpi_core.erlang import agents_required, erlang_a, queue_wait, service_level
from kpi_core.events import AGENT_STATES
from kpi_core.state import (
    KB_SCOPE_PREFIX,
    RETIRED_SCOPE,
    LiveSummary,
    StateStore,
    is_queue_scope,
    merge_into,
    present,
)
from kpi_core.windows import local_midnight, window_range

Components = dict[str, float]
Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class MetricFamily:
    """A metric and its samples. Histogram samples carry their suffix
    (``_bucket``/``_sum``/``_count``) in ``suffix``."""

    name: str
    kind: str  # gauge | counter | histogram
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, labels: Labels, value: float, suffix: str = "") -> None:
        self.samples.append((suffix, labels, value))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def service_level_parts(c: Components, formula: str) -> tuple[float, float]:
    """Numerator and denominator of a queue's service level (KPIS.md, four variants)."""
    within = c.get("answered_within", 0.0)
    answered = c.get("answered", 0.0)
    abandoned = c.get("abandoned", 0.0)
    if formula == "answered":
        return within, answered
    if formula == "offered":
        return within, answered + abandoned
    if formula == "removed_within":
        return within + c.get("abandoned_within", 0.0), answered + abandoned
    if formula == "abandoned_after":
        return within, answered + c.get("abandoned_after", 0.0)
    return within, answered + abandoned - c.get("short_abandoned", 0.0)


@functools.cache
def wait_fields(prefix: str) -> tuple[str, ...]:
    """The histogram's field names ``<prefix>0..<prefix>N``, one per bound of WAIT_BUCKETS
    (built once: a scrape of 1,000 queues asks ~16,000 times)."""
    return tuple(f"{prefix}{i}" for i in range(len(WAIT_BUCKETS)))


def wait_quantile(q: float, c: Components, prefix: str = "wa") -> float | None:
    """``q``-quantile of waits from histogram fields ``wa0..waN`` (linear within a bucket,
    like PromQL's histogram_quantile; error at most one bucket)."""
    counts = [c.get(name, 0.0) for name in wait_fields(prefix)]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if count > 0 and cumulative + count >= rank:
            lower = WAIT_BUCKETS[i - 1] if i > 0 else 0.0
            upper = WAIT_BUCKETS[i]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return None  # pragma: no cover - rank <= total always lands above


# The families folded by name below (the others are read from the catalog in a loop); looked
# up at import, so a name missing from the catalog stops the import.
_FCR = catalog.get("first_contact_resolution_ratio")
_QUANTILES = catalog.get("wait_seconds_quantile")
_OCCUPANCY = catalog.get("occupancy_ratio")
_KB_RATE = catalog.get("knowledge_base_transfer_ratio")
_LOGGED_IN = catalog.get("agent_logged_in_seconds")
_PER_HOUR = catalog.get("outbound_calls_per_agent_hour")
_WAITING = catalog.get("calls_waiting")
_LONGEST = catalog.get("longest_wait_seconds")
_PENDING = catalog.get("callbacks_pending")
_OLDEST = catalog.get("oldest_pending_callback_age_seconds")
_OVERDUE = catalog.get("callbacks_overdue")
_TICKETS_OPEN = catalog.get("tickets_open")
_TICKET_AGE = catalog.get("open_ticket_age_seconds")
_AGENTS = catalog.get("agents")
_THRESHOLD = catalog.get("service_level_threshold_seconds")
_QUEUE_OPEN = catalog.get("queue_open")
_AGENT_STATE = catalog.get("agent_state")
_REQUIRED = catalog.get("staffing_agents_required")
_FORECAST = catalog.get("staffing_service_level_forecast")
_ESTIMATED_WAIT = catalog.get("estimated_wait_seconds")
_FORECAST_A = catalog.get("staffing_service_level_forecast_erlang_a")
_WAIT_HISTOGRAM = catalog.get("call_wait_seconds")
#: The windowed KPIs folded from one scope's components, and their breakdown families.
WINDOWED = catalog.windowed()
BY_LABEL = {label: catalog.windowed(label) for label in catalog.BREAKDOWNS}
#: Lifetime counters.
COUNTERS = catalog.counters()
#: The per-channel target gauges: target name -> the KPI by channel it is compared with.
CHANNEL_TARGETS = {k.target.key: k for k in BY_LABEL[catalog.CHANNEL] if k.target is not None}


#: Channels in the order they keep their own label (``[limits] max_channels``).
CHANNEL_ORDER = ("voice", "chat", "email", "social", "sms")
#: The label value the channels or priorities beyond the limits are summed into.
OTHER = "other"
#: The breakdown labels: label name -> the engine's field-name mark.
BREAKDOWN_MARKS = (("channel", CHANNEL_MARK), ("priority", PRIORITY_MARK))

BreakdownFamilies = list[tuple["MetricFamily", catalog.Fold]]
Family = Callable[[Kpi], "MetricFamily"]


def _breakdown_families(family: Family) -> dict[str, BreakdownFamilies]:
    """The windowed families of each breakdown label, with their values (as WINDOWED's)."""
    return {
        label: [(family(kpi), kpi.value) for kpi in kpis if kpi.value is not None] for label, kpis in BY_LABEL.items()
    }


def _channel_target_families(family: Family) -> dict[str, MetricFamily]:
    """Target name -> its per-channel gauge (CHANNEL_TARGET_METRICS)."""
    return {key: family(catalog.target_gauge(kpi)) for key, kpi in CHANNEL_TARGETS.items()}


#: Target name -> its gauge (TARGET_METRICS).
TARGET_GAUGES = {key: catalog.target_gauge(catalog.get(metric)) for key, metric in TARGET_METRICS.items()}


def split_breakdowns(c: Components) -> dict[str, dict[str, Components]]:
    """The components of each value of each breakdown, in one pass: ``{"offered@c:chat": 2,
    "offered@p:7": 2}`` -> ``{"@c:": {"chat": {"offered": 2}}, "@p:": {"7": {"offered": 2}}}``."""
    parts: dict[str, dict[str, Components]] = {mark: {} for _label, mark in BREAKDOWN_MARKS}
    for key, value in c.items():
        if "@" in key:
            name, at_sign, rest = key.partition("@")
            mark, label = at_sign + rest[:2], rest[2:]
            found = parts.get(mark)
            if found is not None:
                found.setdefault(label, {})[name] = value
    return parts


def breakdown_values(c: Components) -> dict[str, set[str]]:
    """mark -> the values of that breakdown that components ``c`` (a scope's lifetime
    totals) hold."""
    return {
        mark: {label for label, part in values.items() if any(abs(v) > 1e-9 for v in part.values())}
        for mark, values in split_breakdowns(c).items()
    }


def _value_key(label: str, value: str) -> tuple[int, str]:
    """Channels in CHANNEL_ORDER (then by name), priorities the most urgent first."""
    if label == "channel":
        return (CHANNEL_ORDER.index(value) if value in CHANNEL_ORDER else len(CHANNEL_ORDER), value)
    return (-int(value) if value.isdigit() else 1, value)


def kept_values(label: str, present: Iterable[str], limit: int) -> set[str]:
    """The values that keep their own label: the first ``limit`` present in their order
    (:func:`_value_key`)."""
    return set(sorted(present, key=lambda v: _value_key(label, v))[:limit])


def ordered_values(label: str, values: Iterable[str]) -> list[str]:
    """Breakdown values in the order their samples are exported: :func:`_value_key`, ``other``
    last, so every process renders the same state alike (a set's order follows the
    string-hash seed, which differs between processes)."""
    return sorted(values, key=lambda v: (v == OTHER, _value_key(label, v)))


def _breakdown_limit(config: Config, label: str) -> int:
    return config.limits.max_channels if label == "channel" else config.limits.max_priorities


def _breakdown_labels(
    config: Config, store: StateStore, tenant: str, queues: Iterable[str], scopes: set[str]
) -> dict[str, dict[str, set[str]]]:
    """label -> queue (and ``_all``) -> the label values it exports (kept ones, and
    ``other`` when a value beyond the limit is present)."""
    if config.limits.max_channels <= 0 and config.limits.max_priorities <= 0:
        return {}
    held = {q: breakdown_values(store.totals(tenant, q)) for q in queues if q in scopes}
    result: dict[str, dict[str, set[str]]] = {}
    for label, mark in BREAKDOWN_MARKS:
        limit = _breakdown_limit(config, label)
        if limit <= 0:
            continue
        present = {q: values[mark] for q, values in held.items()}
        kept = kept_values(label, set().union(*present.values()), limit)
        per_queue = {q: {v if v in kept else OTHER for v in values} for q, values in present.items() if values}
        if per_queue:
            per_queue[ALL] = set().union(*per_queue.values())
            result[label] = per_queue
    return result


def _breakdown_window(
    config: Config,
    tenant: str,
    window: str,
    per_queue: Mapping[str, Components],
    labels: Mapping[str, Mapping[str, set[str]]],
    families: Mapping[str, BreakdownFamilies],
    arrays: bool = True,
) -> None:
    """One window's breakdown series of a tenant's queues (``per_queue``: their components,
    without ``_all``), and of ``_all`` from the summed components (``arrays``: as
    :func:`snapshot`'s)."""
    split = {queue: split_breakdowns(comps) for queue, comps in per_queue.items()}
    for label, mark in BREAKDOWN_MARKS:
        queue_labels = labels.get(label)
        if not queue_labels:
            continue
        kept = queue_labels[ALL] - {OTHER}
        totals: dict[str, Components] = {value: {} for value in ordered_values(label, queue_labels[ALL])}
        rows: list[tuple[str, str, Components]] = []
        for queue in per_queue:
            values = queue_labels.get(queue)
            if not values:
                continue
            folded: dict[str, Components] = {value: {} for value in ordered_values(label, values)}
            for value, part in split[queue][mark].items():
                target = value if value in kept else OTHER
                if folded.get(target):
                    merge_into(folded[target], part)
                else:
                    folded[target] = part
            queue_config = config.queue(tenant, queue)
            for value, part in folded.items():
                _with_derived(part, queue_config)
                if not arrays:
                    merge_into(totals.setdefault(value, {}), part)
                rows.append((queue, value, part))
        if arrays:
            _breakdown_columns(tenant, window, label, rows, totals, families[label])
            continue
        rows += [(ALL, value, _with_derived(part, None)) for value, part in totals.items()]
        for queue, value, part in rows:
            sample_labels = _labels(tenant, queue, window=window, **{label: value})
            for fam, fn in families[label]:
                result = fn(part)
                if result is not None:
                    fam.add(sample_labels, result)


def _breakdown_columns(
    tenant: str,
    window: str,
    label: str,
    rows: list[tuple[str, str, Components]],
    totals: dict[str, Components],
    families: BreakdownFamilies,
) -> None:
    """:func:`_breakdown_window`'s samples of one label from its queues' ``rows`` over
    arrays: ``totals`` (value -> {}) gets each value's summed components, in row order."""
    table = Columns([part for _queue, _value, part in rows])
    positions: dict[str, list[int]] = {}
    for i, (_queue, value, _part) in enumerate(rows):
        positions.setdefault(value, []).append(i)
    for value in [*totals, *(v for v in positions if v not in totals)]:
        found = positions.get(value)
        totals[value] = _with_derived(table.total(np.array(found)) if found else {}, None)
    # As _labels(tenant, queue, window=window, **{label: value}), without its keyword dicts.
    row_labels = [
        (("tenant", tenant), ("queue", queue), ("window", window), (label, value))
        for queue, value, _part in [*rows, *((ALL, v, {}) for v in totals)]
    ]
    for fam, fold in families:
        if fold.op:
            last = [math.nan if (v := fold.fn(part)) is None else v for part in totals.values()]
            _add_column(fam, row_labels, np.append(table.fold(fold), last))
        else:
            parts = [*(part for _queue, _value, part in rows), *totals.values()]
            fam.samples.extend(
                ("", labels, v)
                for labels, part in zip(row_labels, parts, strict=True)
                if (v := fold.fn(part)) is not None
            )


def _with_derived(c: Components, queue_config: QueueConfig | None) -> Components:
    if queue_config is not None:
        c["sl_num"], c["sl_den"] = service_level_parts(c, queue_config.sl_formula)
    c["survey_n"] = c.get("csat_n", 0.0) + c.get("nps_n", 0.0) + c.get("ces_n", 0.0)
    return c


def _sum_components(parts: Iterable[Components], skip_prefix: str = "occ_") -> Components:
    """The sum of ``parts``, without the fields starting with ``skip_prefix`` and the channel
    and priority fields (their ``_all`` is summed by :func:`_breakdown_window`)."""
    total: Components = {}
    for part in parts:
        merge_into(total, {k: v for k, v in part.items() if not k.startswith(skip_prefix) and "@" not in k})
    return total


def _occupancy(c: Components, states: Mapping[str, int], start: float, at: float) -> float | None:
    """Time-weighted busy / staffed agents over ``[start, at)`` from change deltas and the
    agents' current states (``states``: members of the live set by state)."""
    busy_now = sum(n for state, n in states.items() if state in BUSY_STATES)
    staffed_now = sum(n for state, n in states.items() if state in STAFFED_STATES)
    length = at - start

    def integral(now: int, key: str) -> float:
        return now * length - (c.get(f"{key}_t", 0.0) - start * c.get(key, 0.0))

    return _ratio(integral(busy_now, "occ_busy"), integral(staffed_now, "occ_staffed"))


def logged_in_seconds(c: Components, states: Mapping[str, int], start: float, at: float) -> float:
    """Agent-seconds logged in (any state but ``offline``) over ``[start, at)``: integrated
    from the change deltas like occupancy, closed by the agents' states at ``at``."""
    logged_now = sum(n for state, n in states.items() if state in LOGGED_IN_STATES)
    seconds = logged_now * (at - start) - (c.get("occ_logged_t", 0.0) - start * c.get("occ_logged", 0.0))
    return max(0.0, round(seconds, 3))  # the sums of d * ts leave float noise far below a millisecond


class _AgentStates:
    """Agents of a scope by state, asked of the store once per snapshot (every window's
    occupancy and the agents-by-state gauge need them): ``(every member, members since
    before at)``, by state (:meth:`__call__`) or by ``(state, reason label)`` (:meth:`by_reason`)."""

    def __init__(self, store: StateStore, at: float) -> None:
        self.store, self.at = store, at
        self._counted: dict[tuple[str, str], tuple[dict[str, int], dict[str, int]]] = {}
        self._by_state: dict[tuple[str, str], tuple[dict[str, int], dict[str, int]]] = {}

    def by_reason(self, tenant: str, scope: str) -> tuple[dict[str, int], dict[str, int]]:
        """Keys ``<state>`` or ``<state>\x1e<reason label>`` (:func:`kpi_core.engine.agent_member`)."""
        found = self._counted.get((tenant, scope))
        if found is None:
            found = self._counted[(tenant, scope)] = self.store.live_states(AGENTS, tenant, scope, self.at)
        return found

    def __call__(self, tenant: str, scope: str) -> tuple[dict[str, int], dict[str, int]]:
        found = self._by_state.get((tenant, scope))
        if found is None:
            merged: tuple[dict[str, int], dict[str, int]] = ({}, {})
            for source, target in zip(self.by_reason(tenant, scope), merged, strict=True):
                for key, n in source.items():
                    state = split_state(key)[0]
                    target[state] = target.get(state, 0) + n
            found = self._by_state[(tenant, scope)] = merged
        return found


def _labels(tenant: str, queue: str, **extra: str) -> Labels:
    return (("tenant", tenant), ("queue", queue), *extra.items())


def _has_state(store: StateStore, tenant: str, scope: str) -> bool:
    """A scope counts when it holds something: a non-zero total or a live member. (A scope
    whose contributions were all retracted, e.g. a call first seen in the wrong queue, is
    as if it never existed, whatever the arrival order.)"""
    if any(abs(v) > 1e-9 for k, v in store.totals(tenant, scope).items() if not k.startswith("max_")):
        return True
    return any(store.live_size(name, tenant, scope) for name in LIVE_SETS)


#: A scope's live sets (kpi_core.engine): what a snapshot sizes, and what retiring a scope drops.
LIVE_SETS = (WAITING, CALLBACKS, TICKETS, AGENTS)


def live_bounds(config: Config, tenant: str, queue: str, at: float) -> tuple[tuple[str, float, float], ...]:
    """The live-set summaries a snapshot at ``at`` reads of a queue, as ``(name, lo, hi)`` of
    ``StateStore.live_summary``: calls waiting (none older than ``max_call_age_seconds``),
    callbacks pending, callbacks overdue (due before ``at`` minus the target), tickets open.
    A store that prefetches a scrape (streams.redis.read.SnapshotReader) asks exactly these."""
    target = config.queue(tenant, queue).callback_target_seconds
    return (
        (WAITING, at - config.max_call_age_seconds, at),
        (CALLBACKS, -math.inf, at),
        (CALLBACKS, -math.inf, at - target),
        (TICKETS, -math.inf, at),
    )


def guarded_names(config: Config, scopes: Mapping[str, Iterable[str]]) -> list[tuple[str, str, list[str], int]]:
    """The ``series_live`` questions :func:`exported_scopes` asks about ``scopes``:
    ``(kind, tenant, names, limit)`` for the tenants, then each tenant's queues and articles,
    leaving out the names the configuration declares (never guarded)."""
    limits = config.limits
    questions = [("tenant", "", [t for t in scopes if t not in config.tenants], limits.tenants)]
    for tenant, tenant_scopes in scopes.items():
        tenant_config = config.tenants.get(tenant)
        configured = tenant_config.queues if tenant_config is not None else {}
        listed = list(tenant_scopes)
        queues = [s for s in listed if is_queue_scope(s) and s != ALL and s not in configured]
        articles = [s[len(KB_SCOPE_PREFIX) :] for s in listed if s.startswith(KB_SCOPE_PREFIX)]
        questions += [
            ("queue", tenant, queues, limits.queues_per_tenant),
            ("article", tenant, articles, limits.articles_per_tenant),
        ]
    return questions


def exported_scopes(config: Config, store: StateStore) -> dict[str, list[str]]:
    """``store.scopes()`` without the names the cardinality guard has given up: a tenant,
    queue or article the configuration does not declare is exported only while it is among
    the ``[limits]`` newest of its kind (``StateStore.series_live``), so the series exported
    never exceed the limits, whatever retirement has not done yet. Names the guard never
    registered (state written directly) are kept."""
    return split_scopes(config, store)[0]


def split_scopes(config: Config, store: StateStore) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """:func:`exported_scopes`, and the scopes of exported tenants it leaves out (their
    lifetime totals still count in the tenant's ``_all`` until they retire)."""
    scopes = {tenant: list(tenant_scopes) for tenant, tenant_scopes in store.scopes().items()}
    questions = guarded_names(config, scopes)
    tenants = questions[0]
    live_tenants = store.series_live(*tenants[:2], tenants[2], tenants[3]) if tenants[2] else set()
    result: dict[str, list[str]] = {}
    left_out: dict[str, list[str]] = {}
    pairs = zip(questions[1::2], questions[2::2], strict=True)  # (queues, articles) of each tenant
    for (_k, tenant, queues, q_limit), (_a, _t, articles, a_limit) in pairs:
        if tenant not in config.tenants and tenant not in live_tenants:
            continue
        hidden = set(queues) - store.series_live("queue", tenant, queues, q_limit) if queues else set()
        if articles:
            live = store.series_live("article", tenant, articles, a_limit)
            hidden.update(KB_SCOPE_PREFIX + a for a in articles if a not in live)
        result[tenant] = [s for s in scopes[tenant] if s not in hidden]
        left_out[tenant] = [s for s in scopes[tenant] if s in hidden]
    return result, left_out


def queues_of(
    config: Config, store: StateStore, scopes: Mapping[str, Iterable[str]] | None = None
) -> dict[str, list[str]]:
    """tenant -> queue names with state or configuration (sorted, without ``_all``), of the
    exported scopes (:func:`exported_scopes`, or ``scopes`` when given)."""
    result: dict[str, set[str]] = {}
    for tenant, scopes_ in (scopes if scopes is not None else exported_scopes(config, store)).items():
        result.setdefault(tenant, set()).update(
            s for s in scopes_ if is_queue_scope(s) and s != ALL and _has_state(store, tenant, s)
        )
    for tenant, tenant_config in config.tenants.items():
        result.setdefault(tenant, set()).update(tenant_config.queues)
    return {tenant: sorted(queues) for tenant, queues in sorted(result.items()) if queues}


def _add_column(fam: MetricFamily, row_labels: Sequence[Labels], values: np.ndarray) -> None:
    """One sample per row whose value is not NaN (absent), in the rows' order."""
    if len(values) != len(row_labels):
        raise ValueError(f"{fam.name}: {len(values)} values for {len(row_labels)} label sets")
    kept = values == values
    if kept.all():
        fam.samples.extend(zip(repeat(""), row_labels, values.tolist()))
    else:
        fam.samples.extend(zip(repeat(""), compress(row_labels, kept.tolist()), values[kept].tolist()))


def _fold_rows(table: Columns, fold: Fold, last: Components | None = None) -> np.ndarray:
    """``fold`` of every row of ``table`` (NaN: absent), then of ``last`` (the ``_all``
    components, folded on their own) if given."""
    values = table.fold(fold)
    if last is None:
        return values
    value = fold.fn(last)
    return np.append(values, math.nan if value is None else value)


#: The bounds of the wait histogram's buckets, below and above (engine.WAIT_BUCKETS).
_UPPER = np.array(WAIT_BUCKETS)
_LOWER = np.array((0.0, *WAIT_BUCKETS[:-1]))


def wait_quantiles(q: float, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`wait_quantile` of every row of ``counts`` (rows x the histogram's buckets), NaN
    where it is absent; the same bits (the same operations in the same order on each row:
    the running sum is a sequential ``cumsum``). And the rows whose quantile is in the +Inf
    bucket, for which :func:`wait_quantile` returns its lower bound as WAIT_BUCKETS holds it
    (an int: the JSON API writes ``14400``, not ``14400.0``)."""
    cumulative = np.cumsum(counts, axis=1)  # whole numbers: exact, as the loop's running sum
    total = cumulative[:, -1]
    rank = q * total
    hit = (counts > 0) & (cumulative >= rank[:, None])  # the loop's `count > 0 and cumulative + count >= rank`
    first = hit.argmax(axis=1)
    rows = np.arange(len(counts))
    count_ = counts[rows, first]
    before = np.where(first > 0, cumulative[rows, first - 1], 0.0)
    lower, upper = _LOWER[first], _UPPER[first]
    upper = np.where(np.isinf(upper), lower, upper)  # the +Inf bucket: its lower bound (+ 0.0, exact)
    with np.errstate(divide="ignore", invalid="ignore"):  # rows without a hit, left out below
        values = lower + (upper - lower) * (rank - before) / count_
    found = (total > 0) & hit.any(axis=1)
    return np.where(found, values, np.nan), found & np.isinf(_UPPER[first])


#: First contact resolution's channel label values and their folds.
_FCR_FOLDS = _FCR.parts
#: The quantiles of ``ccmon_wait_seconds_quantile``.
QUANTILES = (0.5, 0.9)


def _interleave(columns: list[np.ndarray]) -> np.ndarray:
    """``[a, b]`` -> ``a0, b0, a1, b1...``: the samples of a family with one label more, in
    the per-row order (every value of the label for a row, then the next row)."""
    return np.column_stack(columns).ravel()


def _fcr_and_quantiles(
    table: Columns, total: Components, row_labels: list[Labels], fcr: MetricFamily, quantiles: MetricFamily
) -> None:
    """The first contact resolution and wait quantile samples of the rows of ``table`` and
    ``total`` (``_all``), as the per-row loop adds them."""
    labels = [(*labels, ("channel", channel)) for labels in row_labels for channel, _fold in _FCR_FOLDS]
    _add_column(fcr, labels, _interleave([_fold_rows(table, fold, total) for _channel, fold in _FCR_FOLDS]))
    counts = np.vstack(
        [
            np.column_stack([table.column(name) for name in wait_fields("wa")]),
            [[total.get(name, 0.0) for name in wait_fields("wa")]],
        ]
    )
    labels = [(*labels, ("quantile", str(q))) for labels in row_labels for q in QUANTILES]
    found = [wait_quantiles(q, counts) for q in QUANTILES]
    values: list[float] = _interleave([v for v, _top in found]).tolist()
    for i in np.flatnonzero(_interleave([top for _v, top in found])).tolist():
        values[i] = WAIT_BUCKETS[-2]  # as wait_quantile returns it
    quantiles.samples.extend(("", labels, v) for labels, v in zip(labels, values, strict=True) if v == v)


def snapshot(config: Config, store: StateStore, at: float, arrays: bool = True) -> list[MetricFamily]:
    """Every KPI of every tenant and queue at instant ``at``.

    ``arrays``: fold the catalog's simple values (counts, peaks, means) and sum ``_all``
    over all of a tenant's queues at once (:class:`kpi_core.columns.Columns`); False folds
    every queue's dict on its own (the reference the array path is tested against: both
    give the same samples, bit for bit, in the same order)."""
    families: dict[str, MetricFamily] = {}

    def family(name: str, kind: str, help_text: str) -> MetricFamily:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = MetricFamily(name, kind, help_text)
        return fam

    def kpi_family(kpi: Kpi) -> MetricFamily:
        return family(kpi.name, kpi.kind, kpi.help)

    windowed = [(kpi_family(kpi), kpi.value) for kpi in WINDOWED if kpi.value is not None]
    by_column = [(fam, fold) for fam, fold in windowed if arrays and fold.op]
    by_row = [(fam, fold.fn) for fam, fold in windowed if not (arrays and fold.op)]
    fcr, quantiles, occupancy, kb_rate, logged_in, per_hour = map(
        kpi_family, (_FCR, _QUANTILES, _OCCUPANCY, _KB_RATE, _LOGGED_IN, _PER_HOUR)
    )

    breakdown_families = _breakdown_families(kpi_family)
    all_scopes, hidden = split_scopes(config, store)
    agent_states = _AgentStates(store, at)
    for tenant, queues in queues_of(config, store, all_scopes).items():
        zone = config.timezone(tenant)
        scopes = set(all_scopes.get(tenant, ()))
        breakdown_labels = _breakdown_labels(config, store, tenant, queues, scopes)
        staffing_comps: dict[str, Components] | None = None
        for window in config.windows:
            start, end = window_range(window, at, zone)
            per_queue: dict[str, Components] = {}
            for queue in queues:
                comps = store.read_window(tenant, queue, start, end) if queue in scopes else {}
                per_queue[queue] = _with_derived(comps, config.queue(tenant, queue))
            if breakdown_labels:
                _breakdown_window(config, tenant, window.name, per_queue, breakdown_labels, breakdown_families, arrays)
            table = Columns(list(per_queue.values())) if arrays else None
            total = _with_derived(table.total() if table is not None else _sum_components(per_queue.values()), None)
            if ALL in scopes:
                total.update(
                    {k: v for k, v in store.read_window(tenant, ALL, start, end).items() if k.startswith("occ_")}
                )
            per_queue[ALL] = total
            if window.seconds == STAFFING_WINDOW_SECONDS:
                staffing_comps = per_queue
            row_labels = [_labels(tenant, queue, window=window.name) for queue in per_queue]
            if table is not None:
                for fam, fold in by_column:
                    _add_column(fam, row_labels, _fold_rows(table, fold, total))
                _fcr_and_quantiles(table, total, row_labels, fcr, quantiles)
            for (queue, comps), labels in zip(per_queue.items(), row_labels, strict=True):
                for fam, fn in by_row:
                    value = fn(comps)
                    if value is not None:
                        fam.add(labels, value)
                if table is None:
                    for channel, fcr_fold in _FCR_FOLDS:
                        value = fcr_fold(comps)
                        if value is not None:
                            fcr.add(_labels(tenant, queue, window=window.name, channel=channel), value)
                    for q in QUANTILES:
                        value = wait_quantile(q, comps)
                        if value is not None:
                            quantiles.add(_labels(tenant, queue, window=window.name, quantile=str(q)), value)
                live_scope = queue if queue != ALL else ALL
                states = agent_states(tenant, live_scope)[0] if live_scope in scopes else {}
                value = _occupancy(comps, states, start, end)
                if value is not None:
                    occupancy.add(labels, value)
                seconds = logged_in_seconds(comps, states, start, end)
                logged_in.add(labels, seconds)
                value = _ratio(comps.get("out_placed", 0.0), seconds / 3600.0)
                if value is not None:
                    per_hour.add(labels, value)
            for scope in sorted(s for s in scopes if s.startswith(KB_SCOPE_PREFIX)):
                comps = store.read_window(tenant, scope, start, end)
                value = _ratio(comps.get("kb_escalations", 0.0), comps.get("kb_views", 0.0))
                if value is not None:
                    article = scope[len(KB_SCOPE_PREFIX) :]
                    kb_rate.add((("tenant", tenant), ("article", article), ("window", window.name)), value)
        scrape = _Scrape(config, store, tenant, queues, scopes, at, kpi_family, agent_states)
        _live_families(scrape)
        _staffing_families(scrape, staffing_comps)
        _counter_families(scrape, hidden.get(tenant, ()), arrays)
    _pipeline_families(store, at, family)
    return list(families.values())


class _Scrape(NamedTuple):
    """One tenant's part of a snapshot, as its family builders read it."""

    config: Config
    store: StateStore
    tenant: str
    queues: list[str]
    scopes: set[str]
    at: float
    family: Family
    agent_states: _AgentStates


def _live_families(scrape: _Scrape) -> None:
    config, store, tenant, queues, scopes, at, family, agent_states = scrape
    waiting, longest, pending, oldest, overdue, tickets_open, ticket_age, agents, threshold = map(
        family, (_WAITING, _LONGEST, _PENDING, _OLDEST, _OVERDUE, _TICKETS_OPEN, _TICKET_AGE, _AGENTS, _THRESHOLD)
    )
    channel_targets = _channel_target_families(family)

    totals = {
        "waiting": 0.0,
        "longest": 0.0,
        "pending": 0.0,
        "oldest": 0.0,
        "overdue": 0.0,
        "open": 0.0,
        "age_sum": 0.0,
    }
    for queue in [*queues, ALL]:
        labels = _labels(tenant, queue)
        queue_config = config.queue(tenant, queue) if queue != ALL else config.defaults
        if queue != ALL:
            if queue in scopes:
                bounds = live_bounds(config, tenant, queue, at)
                calls, callbacks, overdue_now, tickets = (
                    store.live_summary(n, tenant, queue, lo, hi, at) for n, lo, hi in bounds
                )
                overdue_count = overdue_now.size
            else:
                calls = callbacks = tickets = LiveSummary(0, None, 0.0)
                overdue_count = 0
            values = {
                "waiting": float(calls.size),
                "longest": at - calls.oldest if calls.oldest is not None else 0.0,
                "pending": float(callbacks.size),
                "oldest": at - callbacks.oldest if callbacks.oldest is not None else 0.0,
                "overdue": float(overdue_count),
                "open": float(tickets.size),
                "age_sum": tickets.age_sum,
            }
            for key in ("waiting", "pending", "overdue", "open", "age_sum"):
                totals[key] += values[key]
            for key in ("longest", "oldest"):
                totals[key] = max(totals[key], values[key])
            threshold.add(labels, queue_config.sl_threshold_seconds)
            if queue_config.has_opening_hours:
                # Local opening hours, read at `at` on the tenant's wall clock: the paging
                # gate of the alert rules (docs/ALERTS.md, "Paging hours").
                family(_QUEUE_OPEN).add(labels, 1.0 if queue_config.is_open(at, config.timezone(tenant)) else 0.0)
        else:
            values = totals
        waiting.add(labels, values["waiting"])
        longest.add(labels, values["longest"])
        pending.add(labels, values["pending"])
        oldest.add(labels, values["oldest"])
        overdue.add(labels, values["overdue"])
        tickets_open.add(labels, values["open"])
        if values["open"]:
            ticket_age.add(labels, values["age_sum"] / values["open"])
        # Every state with reason none, and away with each configured reason and other, even
        # at 0 (a panel by reason shows 0, not a gap); a reason label no longer configured
        # while agents still hold it, as long as they do.
        by_state = dict.fromkeys(((state, REASON_NONE) for state in AGENT_STATES), 0.0)
        by_state.update(dict.fromkeys((("away", r) for r in (*config.pause_reasons(tenant), REASON_OTHER)), 0.0))
        scope = queue if queue != ALL else ALL
        if scope in scopes:
            for key, members in agent_states.by_reason(tenant, scope)[1].items():
                pair = split_state(key)
                by_state[pair] = by_state.get(pair, 0.0) + members
        for (state, reason), count in by_state.items():
            agents.add(_labels(tenant, queue, state=state, reason=reason), count)
        for target_name, value in sorted(queue_config.targets.items()):
            family(TARGET_GAUGES[target_name]).add(labels, value)
        for channel, channel_config in sorted(queue_config.channels.items()):
            for target_name, value in sorted(channel_config.items()):
                channel_targets[target_name].add(_labels(tenant, queue, channel=channel), value)

    per_agent = config.limits.agent_series_per_tenant
    if per_agent and ALL in scopes:
        family_ = family(_AGENT_STATE)
        latest = store.live(AGENTS, tenant, ALL)
        newest = sorted(latest.items(), key=lambda item: (-item[1], item[0]))[:per_agent]
        for member, _since in sorted(newest, key=lambda item: item[0].partition("\x1f")[2]):
            key, _sep, agent = member.partition("\x1f")
            state, reason = split_state(key)
            family_.add((("tenant", tenant), ("agent", agent), ("state", state), ("reason", reason)), 1.0)


# -- staffing and estimated wait (docs/KPIS.md, "Staffing and estimated wait") -------------------
#: The window whose offered calls and handle time give a queue's load: lambda = offered / 900 s.
STAFFING_WINDOW_SECONDS = 900


@dataclass(frozen=True, slots=True)
class QueueOutlook:
    """A queue's live staffing figures at one instant (None: not defined then)."""

    arrivals_per_second: float  # lambda: calls offered in the last 15 minutes / 900 s
    aht_seconds: float | None  # mean handle time of the calls ended in the last 15 minutes
    staffed: int  # agents available, on_call or acw now
    agents_required: int | None
    service_level_forecast: float | None
    estimated_wait_seconds: float | None
    #: Erlang A's forecast (callers hang up after an exponential patience, its mean estimated
    #: from the 15 minutes: total wait of every caller / abandons); Erlang C's without abandons.
    service_level_forecast_erlang_a: float | None = None


def queue_outlook(
    comps: Mapping[str, float], states: Mapping[str, int], waiting: int, queue_config: QueueConfig
) -> QueueOutlook:
    """Staffing and estimated wait of a queue from its last 15 minutes' components
    (``offered``, ``handled``, ``handle_sum``, ``answered``), its agents by state now and the
    calls waiting now.

    * A = lambda x AHT Erlangs; required agents: the least N > A whose Erlang C service level
      SL(N) (the queue's threshold) reaches the queue's ``service_level`` target; forecast:
      SL(staffed) (0 when staffed <= A); and Erlang A's forecast with the callers' patience
      estimated from the 15 minutes (total wait of every caller / abandons: the exponential
      patience's maximum-likelihood estimate, answered callers counting as censored), which
      is Erlang C's when nobody abandoned. All None when lambda or AHT is 0.
    * Estimated wait of a caller joining now behind the ``waiting`` calls: 0 while an agent is
      free for them, else ``(waiting - free + 1) x AHT / staffed`` (the queue-length
      predictor, :func:`kpi_core.erlang.queue_wait`); with no agent staffed (a source of
      call records only has no agent states) the mean wait of the calls answered in the 15
      minutes (the delay history); None when neither is defined. bench/bench_staffing.py
      measures both against the waits callers then had.
    """
    lam = comps.get("offered", 0.0) / STAFFING_WINDOW_SECONDS
    handled = comps.get("handled", 0.0)
    aht = comps.get("handle_sum", 0.0) / handled if handled > 0 else None
    staffed = sum(n for state, n in states.items() if state in STAFFED_STATES)
    free = states.get("available", 0)
    required = forecast = forecast_a = None
    if lam > 0 and aht is not None and aht > 0:
        load = lam * aht
        threshold = queue_config.sl_threshold_seconds
        target = queue_config.targets.get("service_level")
        if target is not None:
            required = agents_required(load, aht, threshold, target)
        forecast = forecast_a = service_level(staffed, load, aht, threshold)
        abandoned, wait_sum = comps.get("abandoned", 0.0), comps.get("wait_sum", 0.0)
        if abandoned > 0 and wait_sum > 0:
            forecast_a = erlang_a(staffed, load, aht, wait_sum / abandoned, threshold)[0]
    wait = queue_wait(waiting, free, staffed, aht) if aht is not None else (0.0 if waiting < free else None)
    if wait is None and staffed == 0:
        wait = _ratio(comps.get("asa_sum", 0.0), comps.get("asa_n", 0.0))
    return QueueOutlook(lam, aht, staffed, required, forecast, wait, forecast_a)


def _staffing_families(scrape: _Scrape, window_comps: Mapping[str, Components] | None) -> None:
    """Per queue: required agents, forecast service level, estimated wait
    (:func:`queue_outlook`). ``window_comps``: the queues' components over the last 15
    minutes when the snapshot read them (a ``15m`` window is configured), else they are read
    here.

    The tenant's ``_all`` is not one Erlang C queue (its queues are staffed and served
    apart): its required agents are the queues' sum, its forecast and estimated wait the
    queues' figures weighted by their arrival rates (the share of the tenant's next calls
    answered within their queue's threshold, the expected wait of its next caller)."""
    config, store, tenant, queues, scopes, at, family, agent_states = scrape
    required, forecast, wait, forecast_a = map(family, (_REQUIRED, _FORECAST, _ESTIMATED_WAIT, _FORECAST_A))
    required_sum = 0
    weighted = {"forecast": [0.0, 0.0], "wait": [0.0, 0.0], "erlang_a": [0.0, 0.0]}  # [sum lambda x value, sum lambda]
    for queue in queues:
        if queue not in scopes:
            continue
        if window_comps is not None:
            comps = window_comps.get(queue, {})
        else:
            comps = store.read_window(tenant, queue, at - STAFFING_WINDOW_SECONDS, at)
        # The same reads as _live_families (ccmon_calls_waiting, ccmon_agents).
        name, lo, hi = live_bounds(config, tenant, queue, at)[0]
        waiting = store.live_summary(name, tenant, queue, lo, hi, at).size
        outlook = queue_outlook(comps, agent_states(tenant, queue)[1], waiting, config.queue(tenant, queue))
        labels = _labels(tenant, queue)
        lam = outlook.arrivals_per_second
        if outlook.agents_required is not None:
            required.add(labels, float(outlook.agents_required))
            required_sum += outlook.agents_required
        for key, fam, value in (
            ("forecast", forecast, outlook.service_level_forecast),
            ("wait", wait, outlook.estimated_wait_seconds),
            ("erlang_a", forecast_a, outlook.service_level_forecast_erlang_a),
        ):
            if value is not None:
                fam.add(labels, value)
                weighted[key][0] += lam * value
                weighted[key][1] += lam
    all_labels = _labels(tenant, ALL)
    if required_sum:
        required.add(all_labels, float(required_sum))
    for key, fam in (("forecast", forecast), ("wait", wait), ("erlang_a", forecast_a)):
        total, weight = weighted[key]
        if weight > 0:
            fam.add(all_labels, total / weight)


def _counter_families(scrape: _Scrape, hidden: Iterable[str] = (), arrays: bool = True) -> None:
    config, store, tenant, queues, scopes, _at, family, _agent_states = scrape
    per_queue = {
        q: _with_derived(store.totals(tenant, q) if q in scopes else {}, config.queue(tenant, q)) for q in queues
    }
    # The tenant's counters keep what queues no longer exported (displaced, not yet retired)
    # and retired ones (RETIRED_SCOPE) counted: they never go down when a queue retires.
    gone = [_with_derived(store.totals(tenant, q), config.queue(tenant, q)) for q in hidden if is_queue_scope(q)]
    if RETIRED_SCOPE in scopes:
        gone.append(_with_derived(store.totals(tenant, RETIRED_SCOPE), config.queue(tenant, RETIRED_SCOPE)))
    rows = [*per_queue.values(), *gone]
    table = Columns(rows) if arrays else None
    per_queue[ALL] = _with_derived(table.total() if table is not None else _sum_components(rows), None)
    hist = family(_WAIT_HISTOGRAM)
    counters = [(family(kpi), kpi.value) for kpi in COUNTERS if kpi.value is not None]
    by_row = [(fam, fold.fn) for fam, fold in counters if table is None or fold.op != "count"]
    if table is not None:
        row_labels = [_labels(tenant, queue) for queue in per_queue]
        for fam, fold in counters:
            if fold.op == "count":  # never NaN
                values = _fold_rows(table, fold)[: len(per_queue) - 1]
                last = fold.fn(per_queue[ALL])
                _add_column(fam, row_labels, np.append(values, last if last is not None else 0.0))
        _histogram_rows(table, per_queue[ALL], row_labels, hist)
    for queue, comps in per_queue.items():
        labels = _labels(tenant, queue)
        for fam, fn in by_row:
            value = fn(comps)
            fam.add(labels, value if value is not None else 0.0)
        if table is not None:
            continue
        for outcome, prefix, total_key in _HISTOGRAM_PARTS:
            cumulative = 0.0
            outcome_labels = (*labels, ("outcome", outcome))
            for field_name, le in zip(wait_fields(prefix), _LE_LABELS, strict=True):
                cumulative += comps.get(field_name, 0.0)
                hist.add((*outcome_labels, le), cumulative, "_bucket")
            hist.add(outcome_labels, comps.get(total_key, 0.0), "_sum")
            hist.add(outcome_labels, cumulative, "_count")


#: The histogram's ``le`` labels, one per bound of WAIT_BUCKETS.
_LE_LABELS = tuple(("le", "+Inf" if math.isinf(bound) else f"{bound:g}") for bound in WAIT_BUCKETS)
#: The histogram's outcomes: label, bucket field prefix, sum field.
_HISTOGRAM_PARTS = (("answered", "wa", "asa_sum"), ("abandoned", "wb", "ab_wait_sum"))


def _histogram_rows(table: Columns, total: Components, row_labels: list[Labels], hist: MetricFamily) -> None:
    """The histogram samples of the first ``len(row_labels) - 1`` rows of ``table`` (the
    queues), then of ``total`` (``_all``), as :func:`_counter_families`' per-row loop adds
    them: its running sum is a sequential ``cumsum`` of whole numbers (+ 0.0: it starts at 0.0)."""
    n = len(row_labels) - 1
    outcomes = []
    for outcome, prefix, total_key in _HISTOGRAM_PARTS:
        fields = wait_fields(prefix)
        counts = np.vstack(
            [np.column_stack([table.column(name)[:n] for name in fields]), [[total.get(name, 0.0) for name in fields]]]
        )
        cumulative: list[list[float]] = (np.cumsum(counts, axis=1) + 0.0).tolist()
        sums: list[float] = np.append(table.column(total_key)[:n], total.get(total_key, 0.0)).tolist()
        outcomes.append((("outcome", outcome), cumulative, sums))
    samples = hist.samples
    for i, labels in enumerate(row_labels):
        for outcome_label, cumulative, sums in outcomes:
            outcome_labels = (*labels, outcome_label)
            row = cumulative[i]
            samples.extend(zip(repeat("_bucket"), [(*outcome_labels, le) for le in _LE_LABELS], row))
            samples.append(("_sum", outcome_labels, sums[i]))
            samples.append(("_count", outcome_labels, row[-1]))


def _pipeline_families(store: StateStore, at: float, family: Callable[[str, str, str], MetricFamily]) -> None:
    counts = store.counts()
    events = family("ccmon_events_total", "counter", "Events accepted, by type.")
    for label, value in sorted(counts.get("events", {}).items()):
        events.add((("type", label),), value)
    rejected = family("ccmon_events_rejected_total", "counter", "Events rejected, by reason.")
    for label, value in sorted(counts.get("rejected", {}).items()):
        rejected.add((("reason", label),), value)
    duplicates = family("ccmon_events_duplicate_total", "counter", "Duplicate events ignored, by type.")
    for label, value in sorted(counts.get("duplicates", {}).items()):
        duplicates.add((("type", label),), value)
    retired = family(
        "ccmon_series_retired_total",
        "counter",
        "Guarded names (tenant, queue, agent, article) retired with their state, by kind.",
    )
    for label, value in sorted(counts.get("series_retired", {}).items()):
        retired.add((("kind", label),), value)
    last = counts.get("last_event_ts", {}).get("")
    if last is not None:
        family("ccmon_last_event_timestamp_seconds", "gauge", "Event time of the newest event processed.").add((), last)
        family("ccmon_event_lag_seconds", "gauge", "Evaluation time minus the newest event time.").add(
            (), max(0.0, at - last)
        )


def flatten(families: Iterable[MetricFamily]) -> dict[tuple[str, Labels], float]:
    """``(name + suffix, labels) -> value`` for tests and the JSON API."""
    return {(fam.name + suffix, labels): value for fam in families for suffix, labels, value in fam.samples}


# -- live detail: the board's agents and waiting callers -------------------------------------
def live_agents(
    config: Config, store: StateStore, at: float, tenant: str | None = None, queue: str | None = None
) -> list[dict[str, Any]]:
    """Every agent of the agents live sets at ``at`` (of ``tenant``, and of ``queue``: the
    agents serving it), read through any :class:`StateStore`, sorted by tenant and agent.

    Each row: ``tenant``, ``agent``, ``state``, ``reason`` (as sent, or None), ``reason_label``
    (its ``ccmon_agents`` label), ``since`` (when the state began, as far as the agent's record
    goes back) and ``time_in_state_seconds``, ``queues``, ``current_call`` and
    ``current_queue`` (the call the agent answered and has not ended, while ``on_call`` or
    ``acw``; else None), ``handled_today`` (calls it answered that ended today, local day of
    the tenant), ``missed_today`` (rung and did not pick up), ``occupancy_today``
    (time-weighted busy / staffed since local midnight, None before any staffed time) and
    ``away_alert`` (``away`` longer than the tenant's ``away_alert_seconds``)."""
    rows: list[dict[str, Any]] = []
    tenants = [tenant] if tenant is not None else sorted(store.scopes())
    for name in tenants:
        midnight = local_midnight(at, config.timezone(name))
        day_key = str(int(midnight))
        away_limit = config.away_alert_seconds(name)
        members = store.live(AGENTS, name, queue if queue is not None else ALL)
        for member in sorted(members, key=lambda m: m.partition("\x1f")[2]):
            key, _sep, agent = member.partition("\x1f")
            state, label = split_state(key)
            record = store.get_record("agent", name, agent) or {"changes": []}
            changes: list[list[Any]] = record["changes"]
            reason = None
            since = members[member]
            queues: list[str] = []
            occupancy = None
            if changes:
                last = changes[-1]
                reason = (last[4] if len(last) > 4 else "") or None
                i = len(changes) - 1
                while i > 0 and changes[i - 1][2] == last[2] and (changes[i - 1][4:5] or [""]) == (last[4:5] or [""]):
                    i -= 1
                since = changes[i][0]
                queues = list(Engine._agent_queues(changes, len(changes), record.get("base")))
                day = present(record.get("days", {}).get(day_key, {}))
                occupancy = _occupancy(day, {state: 1}, midnight, at)
            handled, missed, talk = agent_calls_today(store.get_record(AGENT_CALLS, name, agent), midnight, at)
            if state not in BUSY_STATES:
                talk = None
            in_state = max(0.0, at - since)
            rows.append(
                {
                    "tenant": name,
                    "agent": agent,
                    "state": state,
                    "reason": reason,
                    "reason_label": label,
                    "since": since,
                    "time_in_state_seconds": in_state,
                    "queues": queues,
                    "current_call": talk[3] if talk else None,
                    "current_queue": talk[2] if talk else None,
                    "handled_today": handled,
                    "missed_today": missed,
                    "occupancy_today": occupancy,
                    "away_alert": state == "away" and in_state > away_limit,
                }
            )
    return rows


def waiting_calls(
    config: Config, store: StateStore, at: float, tenant: str | None = None, queue: str | None = None
) -> list[dict[str, Any]]:
    """The calls waiting at ``at`` in each queue (of ``tenant``; ``queue``: that one only), as
    ``ccmon_calls_waiting`` counts them (offered before ``at``, within ``max_call_age``), read
    through any :class:`StateStore`, in the order they will be served: higher ``priority``
    first (none given counts as 0), then by offer time.

    Each row: ``tenant``, ``queue``, ``position`` (1 = next), ``call_id``, ``offered_at``,
    ``wait_seconds`` (so far), ``priority`` (None if not given), ``channel`` and
    ``customer_id`` (None if not given: a caller's id, never a metric label; mask it for a
    request that may not see it)."""
    rows: list[dict[str, Any]] = []
    oldest = at - config.max_call_age_seconds
    tenants = [tenant] if tenant is not None else sorted(store.scopes())
    for name in tenants:
        scopes = store.scopes().get(name, ())
        queues = [queue] if queue is not None else [s for s in scopes if is_queue_scope(s) and s != ALL]
        for queue_name in queues:
            found = []
            for member, offered in store.live(WAITING, name, queue_name).items():
                if not oldest <= offered < at:
                    continue
                _queue, call_id, leg = [*member.split("\x1f"), "", ""][:3]
                record = store.get_record("call", name, call_id) or {}
                offer = next((o for o in record.get("offers", ()) if o[1] == leg), None)
                channel = (offer[4] if offer is not None and len(offer) > 4 else None) or "voice"
                priority = offer[5] if offer is not None and len(offer) > 5 else None
                found.append(
                    {
                        "tenant": name,
                        "queue": queue_name,
                        "call_id": call_id,
                        "offered_at": offered,
                        "wait_seconds": at - offered,
                        "priority": priority,
                        "channel": channel,
                        "customer_id": record.get("customer"),
                    }
                )
            found.sort(key=lambda r: (-int(r["priority"] or 0), r["offered_at"], str(r["call_id"])))
            for position, row in enumerate(found, 1):
                rows.append({"position": position, **row})
    return rows
