"""The event loop: take the earliest event and dispatch it, until no work is left or the horizon passes.

Events: one pending iteration end per busy replica, fixed-time KV hand-offs, timers (stage delays,
batch-wait wake-ups, transfers joining a link after its latency), transfer completions on shared
resources, and the pre-drawn, sorted arrivals. At equal times iteration ends come first (by replica
index), then hand-offs, timers, transfer completions (by resource index) and arrivals; within a heap, the
earlier-pushed event. Each replica runs iterations back to back: at an iteration's end it retires finished
requests (:mod:`.completion`), then forms its next batch (:mod:`.boundary`).
"""

from __future__ import annotations

from .._jit import kernel, specialized
from .accounting import account_iteration
from .boundary import iteration_boundary
from .completion import finish_iteration, handoff_done
from .events import heap_pop, heap_push, heap_top, timer_kind, timer_payload, timer_subject
from .fastforward import plan_more, truncate_span
from .frontend import intake_done
from .links import next_transfer_end, ps_complete, ps_join
from .pipeline import arrive_pipeline, stage_done, start_service
from .routing import stage_pool
from .state import (
    G_CHILD0,
    G_CLOSED,
    G_CONCURRENCY,
    G_CUR,
    G_DONE_LIST,
    G_EVENTS,
    G_IN_FLIGHT,
    G_NEXT_ARRIVAL,
    G_NRES,
    G_PIPELINE,
    G_SENT,
    G_STOP_ARRIVAL,
    HEAP_HANDOFF,
    HEAP_ITERATION,
    HEAP_PAYLOAD,
    HEAP_TIMER,
    INF,
    IT_DECODE_KV,
    IT_DECODES,
    IT_SEQS,
    IT_SPAN_KV,
    IT_WAKE_DUE,
    PF_FRONTEND_S,
    PF_FRONTEND_SERIAL_S,
    PIPELINES,
    RF_ARRIVAL,
    RF_SENT,
    RF_TRANSFER,
    RP_BUSY,
    RP_FE_QUEUED,
    RP_NRUN,
    RP_POOL,
    RP_SPAN,
    RP_SPAN_PLANNED,
    RQ_CHUNK,
    RQ_RES,
    RQ_STAGE,
    RQ_XFER_KIND,
    RUN_END,
    RUN_HORIZON,
    SPAN_COST,
    SPAN_END,
    TIMER_DELAY,
    TIMER_FRONTEND,
    TIMER_INTAKE,
    TIMER_SEND,
    TIMER_TURN,
    TIMER_WAKE,
    XF_NEXT_T,
    XF_WAIT_S,
    XFER_KV_FETCH,
    XFER_STAGE,
)
from .submission import arrive, enter_pool

__all__ = ["serve", "compiled_serve"]


@kernel
def serve(S):
    """Run the event loop over all arrivals until no work is left or the horizon passes (returns 0), or until the
    next event is arrival ``G_STOP_ARRIVAL`` (returns 1: a pause between events; calling again resumes exactly)."""
    g = S.glob
    arrivals = S.req_float[RF_ARRIVAL]
    acc = S.run
    horizon = acc[RUN_HORIZON]
    n = arrivals.size
    n_rep = S.rep_int.shape[1]
    g[G_CUR] = n_rep
    while True:
        t_step = heap_top(S.heap_time, S.glob, HEAP_ITERATION)
        t_hand = heap_top(S.heap_time, S.glob, HEAP_HANDOFF)
        t_timer = heap_top(S.heap_time, S.glob, HEAP_TIMER)
        t_xfer = next_transfer_end(S.pipe_float, g[G_NRES]) if PIPELINES and g[G_NRES] > 0 else INF
        k = g[G_NEXT_ARRIVAL]
        t_arr = arrivals[k] if k < n else INF
        t = min(min(t_step, t_hand), min(t_timer, t_xfer), t_arr)
        if t == INF or t > horizon:
            break
        if t_step == t:  # a span's last iteration planned so far ended: if it goes on (not an event), plan on
            r = S.heap_int[HEAP_ITERATION, HEAP_PAYLOAD, 0]
            if S.rep_int[RP_SPAN, r] < S.rep_int[RP_SPAN_PLANNED, r]:
                heap_pop(S, HEAP_ITERATION)
                plan_more(S, r)
                continue
        if t_arr == t and k >= g[G_STOP_ARRIVAL] and t_step > t and t_hand > t and t_timer > t and t_xfer > t:
            return 1
        acc[RUN_END] = t
        g[G_EVENTS] += 1
        if t_step == t:
            r = heap_pop(S, HEAP_ITERATION)
            g[G_CUR] = r
            finish_iteration(S, r, t)
            iteration_boundary(S, r, t, True)
            g[G_CUR] = n_rep
        elif t_hand == t:
            i = heap_pop(S, HEAP_HANDOFF)
            handoff_done(S, i, t)
        elif t_timer == t:
            _timer(S, heap_pop(S, HEAP_TIMER), t)
        elif PIPELINES and t_xfer == t:
            xf = S.pipe_float
            for res in range(g[G_NRES]):
                if xf[XF_NEXT_T, res] == t:
                    _transfer_done(S, ps_complete(S, res, t), t)
                    break
        else:
            g[G_NEXT_ARRIVAL] = k + 1
            if g[G_IN_FLIGHT] < g[G_CONCURRENCY]:  # (else it waits for its client to have a free slot)
                _send(S, t)
    if horizon < INF:
        for r in range(n_rep):
            _settle(S, r, horizon)
    return 0


@kernel(inline=True)
def _send(S, t):
    """The clients send their next request (in arrival order) at t: it enters the system."""
    g = S.glob
    i = g[G_SENT]
    g[G_SENT] = i + 1
    g[G_IN_FLIGHT] += 1
    S.req_float[RF_SENT, i] = t
    if PIPELINES and g[G_PIPELINE] != 0:
        arrive_pipeline(S, i, t)
    else:
        arrive(S, i, t)


@kernel(inline=True)
def _timer(S, payload, t):
    """A timer fired: a stage's delay ended, an idle replica's batch wait ended, or a transfer joins its link."""
    kind = timer_kind(payload)
    x = timer_subject(payload)
    if kind == TIMER_SEND:  # a client's slot freed, or a closed-loop client finished thinking
        g = S.glob
        if g[G_CLOSED] != 0:
            if g[G_SENT] < g[G_CHILD0]:  # (its arrival is now: the arrival pointer moves past it)
                S.req_float[RF_ARRIVAL, g[G_SENT]] = t
                g[G_NEXT_ARRIVAL] = g[G_SENT] + 1
                _send(S, t)
        elif g[G_SENT] < g[G_NEXT_ARRIVAL] and g[G_IN_FLIGHT] < g[G_CONCURRENCY]:
            _send(S, t)
    elif kind == TIMER_TURN:  # a session's user sends the next turn (plain serving; its RF_ARRIVAL stays inf,
        S.glob[G_IN_FLIGHT] += 1  # past the arrival pointer's end: the outcome's arrival is when it was sent)
        S.req_float[RF_SENT, x] = t
        arrive(S, x, t)
    elif kind == TIMER_FRONTEND:  # a job is through its engine's front end (plain serving: the entry pool)
        s = S.req_int[RQ_STAGE, x]
        enter_pool(S, x, 0 if s < 0 else stage_pool(S, x, s), t)
    elif kind == TIMER_INTAKE:  # replica x's API server thread passed a job: the rest of the front end, or its pool
        last = S.rep_int[RP_FE_QUEUED, x] == 1
        i = intake_done(S, x, t)
        if last:
            truncate_span(S, x, t)
        pool = S.rep_int[RP_POOL, x]
        through = t + (S.pool_float[PF_FRONTEND_S, pool] - S.pool_float[PF_FRONTEND_SERIAL_S, pool])
        if through > t:
            heap_push(S, HEAP_TIMER, through, timer_payload(i, TIMER_FRONTEND))
        else:
            enter_pool(S, i, pool, t)
    elif kind == TIMER_WAKE:
        if S.rep_float[IT_WAKE_DUE, x] == t:
            S.rep_float[IT_WAKE_DUE, x] = -1.0
            if S.rep_int[RP_BUSY, x] == 0:
                iteration_boundary(S, x, t, False)
    elif PIPELINES and kind == TIMER_DELAY:
        stage_done(S, x, t)
    elif PIPELINES:  # TIMER_JOIN
        ps_join(S, S.req_int[RQ_RES, x], x, t)


@kernel(inline=True)
def _transfer_done(S, i, t):
    """Request i's transfer on a shared resource ended: its stage's service starts, its KV fetch ends
    the kv_retrieve stage, or its KV hand-off reached the decode pool."""
    ri = S.req_int
    S.pipe_float[XF_WAIT_S, ri[RQ_RES, i]] += t
    kind = ri[RQ_XFER_KIND, i]
    ri[RQ_RES, i] = -1
    if kind == XFER_STAGE:
        start_service(S, i, t)
    elif kind == XFER_KV_FETCH:
        stage_done(S, i, t)
    else:
        S.req_float[RF_TRANSFER, i] = t - S.req_float[RF_TRANSFER, i]
        handoff_done(S, i, t)


@kernel
def _settle(S, r, horizon):
    """The run stopped at the horizon: apply the iterations of replica r's span that ended by then, and
    account the one in flight (as stepping would have: it accounts an iteration when it starts it)."""
    truncate_span(S, r, horizon)
    m = S.rep_int[RP_SPAN, r] - 1  # (0 unless a span is in flight)
    if m <= 0:
        return
    rs = S.rep_int
    rs[RP_SPAN, r] = m
    rs[RP_SPAN_PLANNED, r] = m
    ri = S.req_int
    run = S.running
    g = S.glob
    for k in range(rs[RP_NRUN, r]):  # (the ended-jobs list as scratch: the marks of the iteration in flight)
        g[G_DONE_LIST + k] = ri[RQ_CHUNK, run[r, k]]
    finish_iteration(S, r, S.span[SPAN_END, r, m - 1])  # nothing finishes inside a span: only tokens advance
    for k in range(rs[RP_NRUN, r]):
        ri[RQ_CHUNK, run[r, k]] = g[G_DONE_LIST + k]
    rsf = S.rep_float
    n_dec = rsf[IT_DECODES, r]
    kv_end = rsf[IT_SPAN_KV, r] + (m + 1) * n_dec
    kv_read = rsf[IT_DECODE_KV, r] + m * n_dec
    account_iteration(rsf, r, S.span[SPAN_COST, r, m], rsf[IT_SEQS, r], 0.0, n_dec, kv_end, kv_read, 0.0)
    rs[RP_BUSY, r] = 1
    rs[RP_SPAN, r] = 1
    rs[RP_SPAN_PLANNED, r] = 1


_SERVE_PLAIN = specialized(serve, PIPELINES=False, PREFIX_CACHE=False)
_SERVE_PLAIN_CACHED = specialized(serve, PIPELINES=False)
_SERVE_PIPELINES = specialized(serve, PREFIX_CACHE=False)


def compiled_serve(pipelines: bool, prefix_cache: bool = False):
    """The compiled loop for what a scenario reaches: without the code only stage tables reach (stages, shared
    links and tiers, search pools, parallel branches) unless ``pipelines``, and without the prefix cache's unless
    ``prefix_cache`` (pipelines never cache prefixes). Each specialisation compiles in a fraction of the whole
    loop's time and gives identical results."""
    if pipelines:
        return serve.jit if prefix_cache else _SERVE_PIPELINES
    return _SERVE_PLAIN_CACHED if prefix_cache else _SERVE_PLAIN
