"""The simulator's non-voice work: post-contact surveys and the employee pulse, tickets (their
whole life: replies, resolution, reopens) and knowledge-base sessions (some of which become a
ticket). ``docs/SIMULATOR.md`` has the model.
"""

from __future__ import annotations

from streams.sim.base import Agent, Call, Queue, SimBase
from streams.sim.params import hour_of_day, profile_share

KB_ARTICLES = (
    "reset-password",
    "update-billing-address",
    "invoice-explained",
    "router-setup",
    "cancel-subscription",
    "delivery-times",
    "refund-policy",
    "two-factor-login",
    "upgrade-plan",
    "mobile-app-sync",
    "data-export",
    "contact-hours",
)


class TicketsAndSurveys(SimBase):
    """Surveys, tickets and knowledge-base sessions, drawn from the model's random stream."""

    # -- surveys ------------------------------------------------------------------------------
    def _maybe_survey(self, call: Call, agent: Agent, resolved: bool) -> None:
        spec = self.queues[call.queue].spec
        rng = self._rng
        if rng.random() >= spec.survey_share:
            return
        # Satisfaction falls with the wait and with an unresolved issue.
        quality = 0.78 + (0.14 if resolved else -0.3) - min(0.3, call.wait / 1000.0) + rng.gauss(0.0, 0.22)
        self._survey(spec.name, agent.id, call.id, quality, self.now + rng.uniform(30.0, 900.0))

    def _survey(self, queue: str, agent_id: str | None, contact_id: str, quality: float, when: float) -> None:
        rng = self._rng
        p = min(1.0, max(0.0, quality))
        kind = rng.choices(("csat", "nps", "ces"), weights=(0.5, 0.3, 0.2))[0]
        if kind == "csat":
            score = min(5, max(1, round(1 + 4 * p + rng.gauss(0.0, 0.5))))
        elif kind == "nps":
            score = min(10, max(0, round(10 * p + rng.gauss(0.0, 1.0))))
        else:
            score = min(7, max(1, round(1 + 6 * p + rng.gauss(0.0, 0.7))))
        self._emit_at(
            when, "survey.response", survey=kind, score=score, queue=queue, agent_id=agent_id, contact_id=contact_id
        )

    def _maybe_pulse(self, agent: Agent) -> None:
        """The employee pulse (``esat`` 1-5 or ``enps`` 0-10) of an agent logging in, with
        probability ``pulse_share``, from its own random stream."""
        rng = self._pulse
        if not agent.queues or rng.random() >= self.params.pulse_share:
            return
        mood = min(1.0, max(0.0, rng.gauss(0.68, 0.2)))
        if rng.random() < 0.5:
            self._emit(
                "survey.response",
                survey="esat",
                score=min(5, max(1, round(1 + 4 * mood))),
                queue=agent.queues[0],
                agent_id=agent.id,
            )
        else:
            self._emit(
                "survey.response",
                survey="enps",
                score=min(10, max(0, round(10 * mood))),
                queue=agent.queues[0],
                agent_id=agent.id,
            )

    # -- tickets ------------------------------------------------------------------------------
    def _next_ticket(self, q: Queue) -> None:
        self._at(self.now + self._rng.expovariate(q.spec.tickets_per_hour / 3600.0), self._ticket_arrival, q)

    def _ticket_arrival(self, q: Queue) -> None:
        self._next_ticket(q)
        share = max(0.1, profile_share("office", hour_of_day(self.now)))
        if self._rng.random() < share:
            self._new_ticket(q, self._pick_customer(q.spec), None)

    def _new_ticket(self, q: Queue, customer: str | None, kb_session: str | None) -> None:
        """A ticket and its whole life: agent replies, customer replies, resolution, now and
        then a reopen, and sometimes a CSAT answer."""
        spec = q.spec
        rng = self._rng
        ticket_id = self._new_id("t")
        channel = spec.ticket_channel
        self._emit(
            "ticket.created",
            ticket_id=ticket_id,
            queue=spec.name,
            channel=channel,
            customer_id=customer,
            kb_session_id=kb_session,
        )
        t = self.now
        frt = spec.first_response_seconds
        rounds = 0
        while True:
            t += self._lognormal(frt, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="agent", queue=spec.name, channel=channel)
            rounds += 1
            if rounds >= 4 or rng.random() >= 0.45 / rounds:
                break
            t += self._lognormal(frt * 0.8, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="customer", queue=spec.name, channel=channel)
        t += self._lognormal(600.0, 1.0)
        resolution = "unresolvable" if rng.random() < 0.05 else "solved"
        self._emit_at(
            t, "ticket.resolved", ticket_id=ticket_id, resolution=resolution, queue=spec.name, channel=channel
        )
        if rng.random() < 0.1:
            quality = (0.85 if resolution == "solved" else 0.3) - 0.05 * rounds + rng.gauss(0.0, 0.2)
            self._survey(spec.name, None, ticket_id, quality, t + rng.uniform(300.0, 7200.0))
        if rng.random() < 0.05:
            t += self._lognormal(4 * 3600.0, 1.0)
            self._emit_at(t, "ticket.reopened", ticket_id=ticket_id, queue=spec.name, channel=channel)
            t += self._lognormal(frt, 1.0)
            self._emit_at(t, "ticket.replied", ticket_id=ticket_id, author="agent", queue=spec.name, channel=channel)
            t += self._lognormal(600.0, 1.0)
            self._emit_at(
                t, "ticket.resolved", ticket_id=ticket_id, resolution="solved", queue=spec.name, channel=channel
            )

    # -- knowledge base -----------------------------------------------------------------------
    def _kb_session(self) -> None:
        rng = self._rng
        rate = self.params.kb_sessions_per_hour / 3600.0
        self._at(self.now + rng.expovariate(rate), self._kb_session)
        if rng.random() >= max(0.1, profile_share("office", hour_of_day(self.now))):
            return
        session = self._new_id("s")
        t = self.now
        viewed = 1 + int(rng.expovariate(1.2))
        for _ in range(min(viewed, 4)):
            # Zipf-like: the first articles are read most.
            article = KB_ARTICLES[min(len(KB_ARTICLES) - 1, int(rng.expovariate(0.35)))]
            self._emit_at(t, "kb.viewed", article_id=article, session_id=session)
            t += rng.uniform(20.0, 240.0)
        ticket_queues = [q for q in self.queues.values() if q.spec.tickets_per_hour > 0]
        if ticket_queues and rng.random() < 0.12:
            q = ticket_queues[0]
            self._at(t, self._new_ticket, q, self._pick_customer(q.spec), session)
