"""Surveys (customer and employee pulse) and the knowledge base (:class:`SurveysMixin`)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from typing import Any

from kpi_core.engine.base import Contribution, Fold, trait
from kpi_core.events import PULSE_SURVEYS, Event
from kpi_core.native import mypyc_attr
from kpi_core.state import KB_SCOPE_PREFIX, Amount, Record, to_ms
from kpi_core.windows import local_midnight


@trait
@mypyc_attr(allow_interpreted_subclasses=True)
class SurveysMixin(Fold):
    """``kb.viewed`` (and a ticket's escalation of its session) and ``survey.response``."""

    def _kb(self, ev: Event) -> None:
        assert ev.session_id is not None and ev.article_id is not None
        self._kb_update(ev.tenant, ev.session_id, lambda rec: rec["views"].append([ev.ts, ev.event_id, ev.article_id]))

    def _kb_escalation(self, tenant: str, session: str, ticket_id: str, ts: float) -> None:
        def mutate(rec: Record) -> None:
            rec["tickets"][ticket_id] = ts

        self._kb_update(tenant, session, mutate)

    def _kb_update(self, tenant: str, session: str, mutate: Callable[[Record], None]) -> None:
        store = self.store
        record = store.get_record("kb", tenant, session) or {"views": [], "tickets": {}}
        mutate(record)
        desired: dict[str, Contribution] = {}
        articles = sorted({view[2] for view in record["views"]})
        for ts, eid, article in record["views"]:
            desired[f"v:{eid}"] = [KB_SCOPE_PREFIX + article, ts, {"kb_views": 1}]
        for ticket_id, ts in record["tickets"].items():
            for article in articles:
                desired[f"e:{ticket_id}:{article}"] = [KB_SCOPE_PREFIX + article, ts, {"kb_escalations": 1}]
        self._reconcile(tenant, record, desired)
        last = max([v[0] for v in record["views"]] + list(record["tickets"].values()))
        store.put_record("kb", tenant, session, record, last + self.horizon)

    # -- surveys ---------------------------------------------------------------------------
    def _survey(self, ev: Event) -> None:
        assert ev.queue is not None and ev.score is not None
        if ev.survey in PULSE_SURVEYS:
            self._pulse(ev)
            return
        score = ev.score
        fields: Mapping[str, Amount]
        if ev.survey == "csat":
            scale_max = ev.scale_max or 5
            fields = {"csat_n": 1, "csat_top": 1 if score >= scale_max - 1 else 0}
        elif ev.survey == "nps":
            fields = {"nps_n": 1, "nps_pro": 1 if score >= 9 else 0, "nps_det": 1 if score <= 6 else 0}
        else:
            fields = {"ces_n": 1, "ces_sum_ms": to_ms(score)}  # thousandths of a point
        self.store.add(ev.tenant, ev.queue, ev.ts, fields)

    def _pulse(self, ev: Event) -> None:
        """The employee pulse (``esat``, ``enps``: agents answer about their own work), released
        in batches so that no agent's answer can be read off any figure ccmon exports.

        The record of a queue's local day keeps its answers in time order. Walking them, a
        batch closes at the answer that brings it to ``pulse_min_responses`` different agents;
        the batch's sums are one contribution, at that answer's time, and the answers after the
        last closed batch contribute nothing (yet). So every window, the tenant's ``_all`` and
        every difference between two of them (two scrapes, two windows, a queue and ``_all``)
        holds whole batches: answers of at least that many agents, never fewer. A late answer
        may move later answers into another batch (the batches are recomputed, retracting what
        changed, as everywhere in the engine)."""
        assert ev.queue is not None and ev.score is not None and ev.agent_id is not None
        store = self.store
        tenant = ev.tenant
        queue = ev.queue
        key = f"{queue}\x1f{local_midnight(ev.ts, self.config.timezone(tenant)):.0f}"
        record = store.get_record("pulse", tenant, key) or {"answers": []}
        answers: list[list[Any]] = record["answers"]  # [ts, event id, survey, agent, {field: value}]
        score = ev.score
        if ev.survey == "esat":
            fields = {"esat_n": 1, "esat_top": 1 if score >= (ev.scale_max or 5) - 1 else 0}
        else:
            fields = {"enps_n": 1, "enps_pro": 1 if score >= 9 else 0, "enps_det": 1 if score <= 6 else 0}
        bisect.insort(answers, [ev.ts, ev.event_id, ev.survey, ev.agent_id, fields], key=lambda a: (a[0], a[1]))
        self._reconcile(tenant, record, pulse_batches(answers, queue, self.config.pulse_minimum(tenant)))
        store.put_record("pulse", tenant, key, record, answers[-1][0] + self.horizon)


def pulse_batches(answers: list[list[Any]], scope: str, minimum: int) -> dict[str, Contribution]:
    """The contributions of a day's pulse ``answers`` (``[ts, event id, survey, agent,
    fields]``, in time order): per survey, one per batch of consecutive answers from at least
    ``minimum`` different agents, at the time of its last answer; a batch not yet complete
    contributes nothing."""
    desired: dict[str, Contribution] = {}
    for survey in sorted(PULSE_SURVEYS):
        agents: set[str] = set()
        sums: dict[str, Amount] = {}
        batch = 0
        for ts, _eid, kind, agent, fields in answers:
            if kind != survey:
                continue
            agents.add(agent)
            for name, value in fields.items():
                sums[name] = sums.get(name, 0) + value
            if len(agents) >= minimum:
                desired[f"{survey}:{batch}"] = [scope, ts, sums]
                agents, sums, batch = set(), {}, batch + 1
    return desired
