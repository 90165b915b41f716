"""The engine's API server: one thread per replica that takes each request's intake (parsing, tokenising, input
processing: the stack's ``frontend_serial_s``) and streams every token the replica emits (``frontend_token_s``
each), as vLLM's OpenAI server does on one asyncio process per server.

- **Intake.** Requests go to the replicas' threads in turn (round robin, as a load balancer in front of the
  servers deals them; O(1) at any replica count); each thread takes them one at a time, first come, first served
  (a FIFO through ``RQ_NEXT`` per replica).
- **Streaming shares the thread.** While replica r's iterations emit n tokens each c seconds apart, streaming
  holds a share u = n x token_s / c of r's thread, so an intake started there takes serial / (1 - u) (the
  thread interleaves the two); with u near 1, serial x (n + 1): a thread whose callbacks take turns gives an
  intake at least one share in n + 1.
- **The thread bounds the iteration.** An iteration's tokens reach the client no faster than the thread streams
  them: it takes at least n x token_s (:func:`stream_floor`), so u <= 1; while intakes wait for the thread,
  at least the sum over its n tokens of token_s + serial / (that request's output tokens): a saturated thread's
  round, each streaming request's intake spread over its tokens (kvcached's Qwen3-0.6B burst: 5.7 ms by this
  rule, 5.6 ms measured between tokens).

Below the floor, a thread that always has an intake waiting passes one request per serial + output x token_s
(intakes take 1 - u of it, streaming u = rate x output x token_s): a burst reaches the engine at that pace, as
vLLM's do (benchmarks/RESULTS.md, serving stacks). The request then queues at the pool as any other (its replica
is chosen by the pool's scheduler, not by the thread it passed). Token times are the iterations' ends: a token's
wait for the thread within an iteration is not added."""

from __future__ import annotations

from .._jit import kernel
from .events import ends_passed, heap_push, timer_payload
from .queues import fifo_append, fifo_pop
from .state import (
    HEAP_TIMER,
    IT_INTAKE_SHARES,
    IT_LOGITS,
    PF_FRONTEND_SERIAL_S,
    PF_FRONTEND_TOKEN_S,
    PL_COUNT,
    PL_FE_RR,
    PL_FIRST,
    RA_FRONTEND_WAIT_S,
    RF_QUEUED,
    RP_BUSY,
    RP_FE_CURRENT,
    RP_FE_HEAD,
    RP_FE_QUEUED,
    RP_FE_TAIL,
    RP_POOL,
    RP_SPAN,
    RP_SPAN_PLANNED,
    SPAN_COST,
    SPAN_END,
    TIMER_INTAKE,
)

__all__ = ["stream_floor", "join_intake", "intake_done"]


@kernel(inline=True)
def stream_floor(S, r, cost):
    """Replica r's iteration of ``cost`` seconds (its IT_* totals marked): no shorter than the thread's streaming
    of its tokens, and while intakes wait for the thread, than that plus their share (each emitting request's
    intake spread over its output tokens: the round of a saturated thread that streams)."""
    rsf = S.rep_float
    pool = S.rep_int[RP_POOL, r]
    pf = S.pool_float
    floor = rsf[IT_LOGITS, r] * pf[PF_FRONTEND_TOKEN_S, pool]
    if floor > 0.0 and S.rep_int[RP_FE_QUEUED, r] > 0:
        floor += rsf[IT_INTAKE_SHARES, r] * pf[PF_FRONTEND_SERIAL_S, pool]
    return max(cost, floor)


@kernel(inline=True)
def _stream_share(S, r, t):
    """(share of replica r's thread its iteration in flight at t takes to stream its tokens, those tokens): 0, 0
    while it idles. A fast-forwarded span's iteration in flight is the one per-iteration stepping would run."""
    rs = S.rep_int
    per_token = S.pool_float[PF_FRONTEND_TOKEN_S, rs[RP_POOL, r]]
    if rs[RP_BUSY, r] == 0 or per_token == 0.0:
        return 0.0, 0.0
    k = 0
    if rs[RP_SPAN_PLANNED, r] > 1:
        k = ends_passed(S, S.span[SPAN_END, r], rs[RP_SPAN, r] - 1, r, t)
    cost = S.span[SPAN_COST, r, k]
    tokens = S.rep_float[IT_LOGITS, r]
    return (min(tokens * per_token / cost, 1.0) if cost > 0.0 else 0.0), tokens


@kernel(inline=True)
def _start_intake(S, r, i, t):
    """Replica r's thread takes request i's intake at t: its end is a timer."""
    rs = S.rep_int
    rsf = S.rep_float
    pool = rs[RP_POOL, r]
    take = S.pool_float[PF_FRONTEND_SERIAL_S, pool]
    share, tokens = _stream_share(S, r, t)
    if share > 0.0:
        take /= max(1.0 - share, 1.0 / (tokens + 1.0))
    rs[RP_FE_CURRENT, r] = i
    rsf[RA_FRONTEND_WAIT_S, S.pool_int[PL_FIRST, pool]] += t - S.req_float[RF_QUEUED, i]
    heap_push(S, HEAP_TIMER, t + take, timer_payload(r, TIMER_INTAKE))


@kernel
def join_intake(S, i, pool, t):
    """Request i reaches ``pool``'s API server at t: it joins a replica's thread, whose intake starts now if the
    thread is free. Returns the replica whose thread now has intakes waiting where it had none (its iterations'
    floor rises: the caller cuts its span), else -1."""
    rs = S.rep_int
    pi = S.pool_int
    r = pi[PL_FIRST, pool] + pi[PL_FE_RR, pool] % pi[PL_COUNT, pool]
    pi[PL_FE_RR, pool] += 1
    S.req_float[RF_QUEUED, i] = t
    if rs[RP_FE_CURRENT, r] < 0:
        _start_intake(S, r, i, t)
        return -1
    fifo_append(S, rs, RP_FE_HEAD, RP_FE_TAIL, r, i)
    rs[RP_FE_QUEUED, r] += 1
    return r if rs[RP_FE_QUEUED, r] == 1 else -1


@kernel
def intake_done(S, r, t):
    """Replica r's thread ends an intake at t: it takes the next one waiting. Returns the request it passed (when
    the last one waiting starts, r's iterations' floor falls: the caller cuts its span)."""
    rs = S.rep_int
    i = rs[RP_FE_CURRENT, r]
    rs[RP_FE_CURRENT, r] = -1
    if rs[RP_FE_QUEUED, r] > 0:
        j = fifo_pop(S, rs, RP_FE_HEAD, RP_FE_TAIL, r)
        rs[RP_FE_QUEUED, r] -= 1
        _start_intake(S, r, j, t)
    return i
