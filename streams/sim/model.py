"""A realistic, seeded contact-center simulator that writes canonical events.

An event-driven model (a heap of future actions, one FIFO per queue, agents as servers) of
a day in a contact center: Poisson arrivals that follow an intraday profile (a morning peak,
a lunch dip, a quieter evening), agents on staggered shifts with breaks, lognormal talk
times with hold and after-call work, callers with exponential patience (abandon, leave a
voicemail or ask for a callback), queue maximum waits (timeout or voicemail), overflow and
transfers between queues, agents who miss rings, callbacks to missed callers and an outbound
sales campaign (this module); tickets, surveys and knowledge-base sessions
(:mod:`streams.sim.tickets`); the event loop and the shared draws (:mod:`streams.sim.base`),
the injected faults (:mod:`streams.sim.faults`), the parameters (:mod:`streams.sim.params`).
``docs/SIMULATOR.md`` has the model and its parameters.

Everything is reproducible: the same :class:`SimParams` (seed included) give the same
events, byte for byte, whatever the chunking of :meth:`Simulator.advance` or the speed of
the caller.

Use it in process::

    sim = Simulator(SimParams(start=..., hours=8, queues=default_queues(3)))
    for emit_at, record in sim.stream():
        ...  # record: an event dict, or a str (a malformed record, when injected)

Every event the simulator makes is stamped with the simulated time at which it is emitted
(``ts == emit time``), except where ``late_share`` delays its delivery. Injected malformed
records always fail :func:`kpi_core.events.parse_event` / ``parse_line``.

The Erlang C formulas (``kpi_core.erlang``) size the default staffing and are the reference the
simulator is validated against (``tests/unit/kpi_core/test_erlang.py``).
"""

from __future__ import annotations

import math
import random
from typing import Any

from streams.sim.base import Agent, Call, Queue
from streams.sim.clock import ms
from streams.sim.params import QueueSpec, SimParams, hour_of_day, profile_share
from streams.sim.tickets import TicketsAndSurveys


class Simulator(TicketsAndSurveys):
    """The event-driven model. Drive it with :meth:`advance` (or :meth:`stream`)."""

    def __init__(self, params: SimParams) -> None:
        super().__init__(params)
        self._plan_agents()
        start = self.now
        for q in self.queues.values():
            if q.spec.calls_per_hour > 0:
                self._next_arrival(q)
            if q.spec.tickets_per_hour > 0:
                self._next_ticket(q)
        if params.kb_sessions_per_hour > 0:
            self._at(start + self._rng.expovariate(params.kb_sessions_per_hour / 3600.0), self._kb_session)
        self._at(start, self._start_agents)

    # -- agents and shifts --------------------------------------------------------------------
    def _plan_agents(self) -> None:
        names = list(self.queues)
        for index, q in enumerate(self.queues.values()):
            headcount = q.spec.headcount(self.params.shifts)
            for i in range(headcount):
                queues = [q.spec.name]
                # About one agent in seven is blended: also serves the next queue.
                if len(names) > 1 and i % 7 == 3:
                    queues.append(names[(index + 1) % len(names)])
                agent = Agent(f"{q.spec.name}-{i + 1:02d}", queues)
                self.agents.append(agent)
                for name in queues:
                    self.queues[name].agents.append(agent)

    def _start_agents(self) -> None:
        """Without shifts every agent logs in now. With shifts the day is planned, and agents
        not on shift now are announced offline, so dashboards know them."""
        if not self.params.shifts:
            for agent in self.agents:
                self._login(agent)
            return
        on_now = self._plan_day(math.floor(self.now / 86400.0) * 86400.0)
        for agent in self.agents:
            if agent.id not in on_now:
                self._emit("agent.state", agent_id=agent.id, state="offline", queues=agent.queues)

    #: Shift patterns for queues open 07:00-20:00: (start hour, end hour, share of agents).
    SHIFTS = ((7.0, 15.5, 0.37), (8.5, 17.0, 0.33), (11.5, 20.0, 0.3))

    def _plan_day(self, day: float) -> set[str]:
        """Schedule a day of logins, breaks and logouts, and the next day's plan. Returns the
        agents whose shift is under way now."""
        rng = self._rng
        on_now: set[str] = set()
        for q in self.queues.values():
            primary = [a for a in q.agents if a.queues[0] == q.spec.name]
            n = len(primary)
            for i, agent in enumerate(primary):
                if q.spec.open_hours is None:
                    # Around the clock: three eight-hour shifts.
                    start_h = (0.0, 8.0, 16.0)[i % 3]
                    end_h = start_h + 8.0
                else:
                    bound, pattern = 0.0, self.SHIFTS[-1]
                    for candidate in self.SHIFTS:
                        bound += candidate[2]
                        if (i + 0.5) / n <= bound:
                            pattern = candidate
                            break
                    start_h, end_h = pattern[0], pattern[1]
                    jitter = rng.choice((-0.25, 0.0, 0.0, 0.25))
                    open_h, close_h = q.spec.open_hours
                    start_h = min(max(open_h, start_h + jitter), close_h - 1)
                    end_h = max(min(close_h, end_h + jitter), start_h + 1)
                login, logout = day + start_h * 3600, day + end_h * 3600
                if logout <= self.now:
                    continue
                if login <= self.now:
                    on_now.add(agent.id)
                self._at(max(login, self.now), self._login, agent)
                length = end_h - start_h
                for offset, minutes in ((0.25, 15), (0.5, 30), (0.72, 15)):
                    when = login + (offset * length + rng.uniform(-0.33, 0.33)) * 3600
                    if when > self.now:
                        self._at(when, self._break_due, agent, minutes * 60.0 * rng.uniform(0.9, 1.2))
                self._at(logout, self._logout_due, agent)
        self._at(day + 86400.0 - 1800.0, self._plan_day, day + 86400.0)
        return on_now

    def _set_state(self, agent: Agent, state: str, reason: str | None = None) -> None:
        if agent.state != state:
            agent.state = state
            extra = {"reason": reason} if reason is not None else {}
            self._emit("agent.state", agent_id=agent.id, state=state, queues=agent.queues, **extra)

    def _login(self, agent: Agent) -> None:
        if agent.on_shift:
            return
        agent.on_shift = True
        agent.logout_pending = False
        agent.breaks_pending.clear()
        if self.params.pulse_share > 0:
            self._maybe_pulse(agent)
        self._become_idle(agent)

    def _break_due(self, agent: Agent, seconds: float) -> None:
        if not agent.on_shift:
            return
        agent.breaks_pending.append(seconds)
        if agent.idle:
            self._next_activity(agent)

    def _logout_due(self, agent: Agent) -> None:
        if not agent.on_shift:
            return
        agent.logout_pending = True
        if agent.idle or agent.state == "away":
            self._next_activity(agent)

    def _next_activity(self, agent: Agent) -> None:
        """The agent has finished its work: log out, take a break due, or become idle."""
        agent.working = False
        if agent.logout_pending:
            agent.on_shift = False
            agent.logout_pending = False
            agent.breaks_pending.clear()
            self._set_state(agent, "offline")
            return
        if agent.breaks_pending:
            seconds = agent.breaks_pending.pop(0)
            self._set_state(agent, "away", "lunch" if seconds >= 25 * 60 else "break")

            agent.epoch += 1
            self._at(self.now + seconds, self._back_from_away, agent, agent.epoch)
            return
        self._become_idle(agent)

    def _back_from_away(self, agent: Agent, epoch: int) -> None:
        if agent.state == "away" and agent.epoch == epoch and agent.on_shift:
            self._next_activity(agent)

    def _become_idle(self, agent: Agent) -> None:
        agent.working = False
        agent.epoch += 1
        agent.idle_since = self.now
        self._set_state(agent, "available")
        self._pick_work(agent)

    def _pick_work(self, agent: Agent) -> None:
        """An idle agent takes the longest-waiting call of its queues, else a callback due,
        else (in a campaign queue) considers an outbound dial. A break or logout that fell
        due meanwhile comes first."""
        if not agent.idle:
            return
        if agent.logout_pending or agent.breaks_pending:
            self._next_activity(agent)
            return
        best: Call | None = None
        for name in agent.queues:
            waiting = self.queues[name].waiting
            if waiting:
                head = next(iter(waiting.values()))
                if best is None or head.offer_t < best.offer_t:
                    best = head
        if best is not None:
            self._ring(best, agent)
            return
        entry = self._workable_callback(agent)
        if entry is not None:
            self._make_callback(agent, entry)
            return
        if not agent.dial_pending and any(self.queues[n].spec.outbound_per_agent_hour > 0 for n in agent.queues):
            spec = next(self.queues[n].spec for n in agent.queues if self.queues[n].spec.outbound_per_agent_hour > 0)
            agent.dial_pending = True
            self._at(self.now + self._rng.expovariate(spec.outbound_per_agent_hour / 3600.0), self._maybe_dial, agent)

    # -- inbound calls ------------------------------------------------------------------------
    def _next_arrival(self, q: Queue) -> None:
        spec = q.spec
        t = self.now + self._arrival_rngs[spec.name].expovariate(spec.calls_per_hour / 3600.0)
        if not spec.is_open(t):
            t = self._next_opening(spec, t)
        self._at(t, self._arrival, q)

    @staticmethod
    def _next_opening(spec: QueueSpec, t: float) -> float:
        assert spec.open_hours is not None
        day = math.floor(t / 86400.0) * 86400.0
        opening = day + spec.open_hours[0] * 3600.0
        return opening if opening > t else opening + 86400.0

    def _arrival(self, q: Queue) -> None:
        self._next_arrival(q)
        spec = q.spec
        if not spec.is_open(self.now):
            return
        # Thinning: candidates come at the peak rate, kept with the profile's share.
        rng = self._arrival_rngs[spec.name]
        if rng.random() >= profile_share(spec.profile, hour_of_day(self.now)):
            return
        self._new_call(q, self._pick_customer(spec, rng), rng)

    def _new_call(self, q: Queue, customer: str | None, rng: random.Random | None = None) -> None:
        call = Call(self._new_id("c"), customer, self.now)
        self._arm_patience(call, q.spec.patience_seconds, rng)
        self._offer(call, q)

    def _arm_patience(self, call: Call, mean: float | None, rng: random.Random | None = None) -> None:
        call.patience_token += 1
        if mean is not None:
            patience = (rng or self._rng).expovariate(1.0 / mean)
            self._at(self.now + patience, self._patience_over, call, call.patience_token)

    def _offer(self, call: Call, q: Queue) -> None:
        spec = q.spec
        call.queue = spec.name
        call.offer_t = self.now
        call.leg += 1
        call.state = "waiting"
        call.agent = None
        self._emit("call.offered", call_id=call.id, queue=spec.name, customer_id=call.customer)
        q.waiting[call.id] = call
        if spec.max_wait_seconds is not None:
            self._at(self.now + spec.max_wait_seconds, self._max_wait, call, call.leg)
        if spec.overflow_to is not None and spec.overflow_to in self.queues:
            self._at(self.now + spec.overflow_after_seconds, self._overflow, call, call.leg)
        idle = self._idle_agents(q)
        if idle:
            agent = min(idle, key=lambda a: (a.idle_since, a.id))
            self._ring(call, agent)

    def _ring(self, call: Call, agent: Agent) -> None:
        q = self.queues[call.queue]
        spec = q.spec
        del q.waiting[call.id]
        call.state = "ringing"
        call.agent = agent
        agent.reserved = call
        rng = self._rng
        if spec.rona_share > 0 and rng.random() < spec.rona_share:
            self._at(self.now + spec.ring_timeout_seconds, self._ring_no_answer, call, agent)
        elif spec.ring_seconds > 0:
            self._at(self.now + rng.uniform(0.4, 1.6) * spec.ring_seconds, self._answer, call, agent)
        else:
            self._answer(call, agent)

    def _ring_no_answer(self, call: Call, agent: Agent) -> None:
        if call.state != "ringing" or call.agent is not agent:
            return
        self._emit("call.ring_no_answer", call_id=call.id, queue=call.queue, agent_id=agent.id)
        agent.reserved = None
        # The ACD sets the agent not-ready for a while; the call goes back to the queue head.
        self._set_state(agent, "away", "not_ready")
        agent.epoch += 1
        self._at(self.now + self._rng.uniform(60.0, 180.0), self._back_from_away, agent, agent.epoch)
        q = self.queues[call.queue]
        call.state = "waiting"
        call.agent = None
        q.waiting = {call.id: call, **q.waiting}
        idle = self._idle_agents(q)
        if idle:
            self._ring(call, min(idle, key=lambda a: (a.idle_since, a.id)))

    def _answer(self, call: Call, agent: Agent) -> None:
        if call.state != "ringing" or call.agent is not agent:
            return
        spec = self.queues[call.queue].spec
        rng = self._rng
        agent.reserved = None
        agent.working = True
        call.state = "talking"
        call.wait = self.now - call.offer_t
        self._emit(
            "call.answered",
            call_id=call.id,
            queue=call.queue,
            agent_id=agent.id,
            wait_seconds=ms(self.now - call.offer_t),
        )
        self._set_state(agent, "on_call")
        if call.customer is not None:
            self._drop_callback(call.customer)  # the customer got through: no callback needed
        talk = self._talk(spec)
        hold = (
            rng.expovariate(1.0 / spec.hold_seconds)
            if spec.hold_seconds > 0 and rng.random() < spec.hold_share
            else 0.0
        )
        targets = [t for t in spec.transfer_to if t in self.queues and t != spec.name]
        if targets and rng.random() < spec.transfer_share:
            part = talk * rng.uniform(0.2, 0.6)
            self._at(self.now + part + hold, self._transfer, call, agent, ms(part), ms(hold), rng.choice(targets))
        else:
            self._at(self.now + talk + hold, self._hang_up, call, agent, ms(talk), ms(hold))

    def _hang_up(self, call: Call, agent: Agent, talk: float, hold: float) -> None:
        spec = self.queues[call.queue].spec
        acw = self._acw(spec)
        resolved = self._rng.random() < spec.fcr_share
        self._emit(
            "call.ended",
            call_id=call.id,
            queue=call.queue,
            agent_id=agent.id,
            talk_seconds=talk,
            hold_seconds=hold,
            acw_seconds=acw,
            resolved=resolved,
        )
        call.state = "done"
        self._maybe_survey(call, agent, resolved)
        self._after_call(agent, acw)

    def _transfer(self, call: Call, agent: Agent, talk: float, hold: float, target: str) -> None:
        spec = self.queues[call.queue].spec
        acw = self._acw(spec) * 0.5
        self._emit("call.transferred", call_id=call.id, queue=call.queue, to_queue=target)
        self._emit(
            "call.ended",
            call_id=call.id,
            queue=call.queue,
            agent_id=agent.id,
            talk_seconds=talk,
            hold_seconds=hold,
            acw_seconds=ms(acw),
            resolved=False,
        )
        self._after_call(agent, ms(acw))
        target_q = self.queues[target]
        # A transferred caller is more patient than one who just called in.
        patience = target_q.spec.patience_seconds
        self._arm_patience(call, patience * 2 if patience is not None else None)
        call.arrival = self.now
        self._offer(call, target_q)

    def _after_call(self, agent: Agent, acw: float) -> None:
        if acw > 0:
            self._set_state(agent, "acw")
            self._at(self.now + acw, self._next_activity, agent)
        else:
            self._next_activity(agent)

    def _patience_over(self, call: Call, token: int) -> None:
        if call.patience_token != token or call.state not in ("waiting", "ringing"):
            return
        spec = self.queues[call.queue].spec
        choice = self._rng.random()
        if choice < spec.voicemail_share:
            self._missed(call, "call.voicemail")
        elif choice < spec.voicemail_share + spec.callback_share and call.customer is not None:
            # The caller pressed the callback key: the system takes the call out of the queue.
            self._missed(call, "call.timeout")
            callback_id = self._new_id("cb")
            self._emit(
                "callback.requested",
                callback_id=callback_id,
                queue=call.queue,
                customer_id=call.customer,
                call_id=call.id,
            )
            entry = self.queues[self._callback_of[call.customer]].callbacks.get(call.customer)
            if entry is not None and entry.get("callback_id") is None:
                entry["callback_id"] = callback_id
        else:
            self._missed(call, "call.abandoned")

    def _max_wait(self, call: Call, leg: int) -> None:
        if call.leg != leg or call.state != "waiting":
            return
        spec = self.queues[call.queue].spec
        kind = "call.voicemail" if self._rng.random() < spec.timeout_voicemail_share else "call.timeout"
        self._missed(call, kind)

    def _overflow(self, call: Call, leg: int) -> None:
        if call.leg != leg or call.state != "waiting":
            return
        q = self.queues[call.queue]
        target = q.spec.overflow_to
        assert target is not None
        del q.waiting[call.id]
        self._emit(
            "call.transferred",
            call_id=call.id,
            queue=call.queue,
            to_queue=target,
            wait_seconds=ms(self.now - call.offer_t),
        )
        self._offer(call, self.queues[target])

    def _missed(self, call: Call, event_type: str) -> None:
        q = self.queues[call.queue]
        if call.state == "ringing" and call.agent is not None:
            agent = call.agent
            agent.reserved = None
            call.agent = None
            self._pick_work(agent)
        else:
            q.waiting.pop(call.id, None)
        call.state = "done"
        self._emit(event_type, call_id=call.id, queue=call.queue, wait_seconds=ms(self.now - call.offer_t))
        customer = call.customer
        if customer is None:
            return
        if customer not in self._callback_of:
            q.callbacks[customer] = {"customer": customer, "queue": q.spec.name, "due": self.now, "callback_id": None}
            self._callback_of[customer] = q.spec.name
            self._at(self.now + self.params.callback_min_delay_seconds, self._offer_callbacks, q)
        if self._rng.random() < q.spec.redial_share:
            self._at(self.now + self._rng.expovariate(1.0 / 1200.0), self._redial, q, customer)

    def _redial(self, q: Queue, customer: str) -> None:
        if q.spec.is_open(self.now):
            self._new_call(q, customer)

    # -- callbacks ----------------------------------------------------------------------------
    def _drop_callback(self, customer: str) -> None:
        name = self._callback_of.pop(customer, None)
        if name is not None:
            self.queues[name].callbacks.pop(customer, None)

    def _offer_callbacks(self, q: Queue) -> None:
        for agent in sorted(self._idle_agents(q), key=lambda a: (a.idle_since, a.id)):
            self._pick_work(agent)

    def _workable_callback(self, agent: Agent) -> dict[str, Any] | None:
        ready_before = self.now - self.params.callback_min_delay_seconds
        best: dict[str, Any] | None = None
        for name in agent.queues:
            q = self.queues[name]
            if not q.callbacks or not q.spec.is_open(self.now):
                continue
            entry = next(iter(q.callbacks.values()))
            if entry["due"] <= ready_before and (best is None or entry["due"] < best["due"]):
                best = entry
        return best

    def _make_callback(self, agent: Agent, entry: dict[str, Any]) -> None:
        customer = entry["customer"]
        self._drop_callback(customer)
        q = self.queues[entry["queue"]]
        rng = self._rng
        connected = rng.random() < 0.75
        agent.working = True
        self._set_state(agent, "on_call")
        if entry.get("callback_id") is not None:
            self._emit(
                "callback.attempted",
                callback_id=entry["callback_id"],
                agent_id=agent.id,
                connected=connected,
                queue=q.spec.name,
            )
        call_id = self._new_id("o")
        self._emit(
            "call.offered",
            call_id=call_id,
            queue=q.spec.name,
            customer_id=customer,
            direction="outbound",
            agent_id=agent.id,
        )
        ring = rng.uniform(8.0, 25.0)
        if connected:
            talk = ms(self._talk(q.spec, 0.8))
            self._at(self.now + ring + talk, self._outbound_end, call_id, q, agent, talk, "callback")
        else:
            self._at(self.now + ring + 5.0, self._next_activity, agent)

    def _outbound_end(self, call_id: str, q: Queue, agent: Agent, talk: float, outcome: str) -> None:
        acw = self._acw(q.spec)
        self._emit(
            "call.ended",
            call_id=call_id,
            queue=q.spec.name,
            agent_id=agent.id,
            direction="outbound",
            talk_seconds=talk,
            acw_seconds=acw,
            outcome=outcome,
            resolved=(self._rng.random() < q.spec.fcr_share) if outcome == "callback" else None,
        )
        self._after_call(agent, acw)

    # -- outbound campaign --------------------------------------------------------------------
    def _maybe_dial(self, agent: Agent) -> None:
        agent.dial_pending = False
        if not agent.idle:
            return  # the next time the agent is idle, it considers dialling again
        campaign = [self.queues[n] for n in agent.queues if self.queues[n].spec.outbound_per_agent_hour > 0]
        q = campaign[0]
        spec = q.spec
        hour = hour_of_day(self.now)
        # Dial only in campaign hours, with nobody waiting, keeping two agents free for inbound.
        if (
            not spec.outbound_hours[0] <= hour < spec.outbound_hours[1]
            or any(self.queues[n].waiting for n in agent.queues)
            or len(self._idle_agents(q)) <= 2
        ):
            agent.dial_pending = True
            self._at(self.now + self._rng.expovariate(spec.outbound_per_agent_hour / 3600.0), self._maybe_dial, agent)
            return
        rng = self._rng
        agent.working = True
        self._set_state(agent, "on_call")
        call_id = self._new_id("o")
        lead = f"lead-{rng.randrange(1_000_000):06d}"
        self._emit(
            "call.offered", call_id=call_id, queue=spec.name, customer_id=lead, direction="outbound", agent_id=agent.id
        )
        ring = rng.uniform(10.0, 30.0)
        if rng.random() < spec.outbound_connect_share:
            talk = ms(self._talk(spec, 0.8))
            outcome = "sale" if rng.random() < spec.sale_share else "no_sale"
            self._at(self.now + ring + talk, self._outbound_end, call_id, q, agent, talk, outcome)
        else:
            self._at(self.now + ring, self._next_activity, agent)
