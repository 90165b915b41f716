"""Work reaching a pool: the checks that reject it, the queue it joins (or a drop), and waking replicas."""

from __future__ import annotations

import math

from .._jit import kernel
from .boundary import iteration_boundary
from .clients import client_done
from .events import heap_push, timer_payload
from .fastforward import truncate_span
from .frontend import join_intake
from .kv import blocks_for
from .prefix_cache import pc_applies
from .queues import enqueue
from .routing import choose_queue
from .state import (
    DRAW_ENTRY,
    HEAP_TIMER,
    PF_FRONTEND_S,
    PF_FRONTEND_SERIAL_S,
    PL_BLOCK,
    PL_CAP_BLOCKS,
    PL_COUNT,
    PL_FIRST,
    PL_MAX_CONTEXT,
    PL_MAX_QUEUE,
    PL_MAX_TOKENS,
    PL_NEXT,
    PL_ROLE,
    PL_SPLIT,
    PREFIX_CACHE,
    Q_COUNT,
    REASON_CONTEXT,
    REASON_KV,
    REASON_NONE,
    REASON_QUEUE_FULL,
    REASON_TOKENS,
    RF_ENQUEUED,
    ROLE_DECODE,
    ROLE_PREFILL,
    RP_BUSY,
    RQ_OUTPUT,
    RQ_PREFILLED,
    RQ_PROMPT,
    RQ_REASON,
    RQ_SEQS,
    RQ_STATUS,
    RQ_TARGET,
    STATUS_DROPPED,
    STATUS_REJECTED,
    TIMER_FRONTEND,
)

__all__ = ["queue_job", "enter_pool", "arrive", "wake", "wake_replica"]


@kernel(inline=True)
def wake(S, q, t):
    """Work joined queue q: idle replicas serving it may start an iteration, busy ones see it at the end
    of their iteration in flight (a fast-forwarded span is cut there)."""
    n_rep = S.rep_int.shape[1]
    if q < n_rep:
        wake_replica(S, q, t)
        return
    pool = q - n_rep
    pi = S.pool_int
    for r in range(pi[PL_FIRST, pool], pi[PL_FIRST, pool] + pi[PL_COUNT, pool]):
        if S.queue[Q_COUNT, q] == 0:
            break
        wake_replica(S, r, t)


@kernel(inline=True)
def wake_replica(S, r, t):
    """Replica r has work (or KV) it did not have: start an iteration if idle, else cut its span."""
    if S.rep_int[RP_BUSY, r] == 0:
        iteration_boundary(S, r, t, False)
    else:
        truncate_span(S, r, t)


@kernel(inline=True)
def _reject_reason(S, pool, i):
    """Why request i's job can never run on ``pool`` (REASON_NONE: it can)."""
    ri = S.req_int
    pi = S.pool_int
    prompt = ri[RQ_PROMPT, i]
    out = ri[RQ_OUTPUT, i]
    if (prompt + ri[RQ_SEQS, i] - 1) // ri[RQ_SEQS, i] + out > pi[PL_MAX_CONTEXT, pool]:  # (each sequence)
        return REASON_CONTEXT
    new = prompt - ri[RQ_PREFILLED, i]  # (a cached prefix is not prefilled)
    unsplit = pi[PL_SPLIT, pool] == 0 and pi[PL_ROLE, pool] != ROLE_DECODE
    # (a replica's prefix cache may hold most of it: then admission, after its lookup, checks the budget)
    if unsplit and new > pi[PL_MAX_TOKENS, pool] and not (PREFIX_CACHE and pc_applies(S, pool, i)):
        return REASON_TOKENS
    # the most KV it ever holds here: the whole prompt (prefill-only) or prompt + output - 1
    most = prompt if pi[PL_ROLE, pool] == ROLE_PREFILL else prompt + out - 1
    if blocks_for(most, pi[PL_BLOCK, pool]) > pi[PL_CAP_BLOCKS, pool]:
        return REASON_KV
    return REASON_NONE


@kernel
def queue_job(S, i, pool, t):
    """Request i's job reaches ``pool``: it passes the engine's API front end (a delay, if the pool has one; the
    part of it on an API server thread waits for the thread: :mod:`~hermes_fast.kernels.serving.frontend`), then
    :func:`enter_pool`."""
    pf = S.pool_float
    if pf[PF_FRONTEND_SERIAL_S, pool] > 0.0:
        r = join_intake(S, i, pool, t)
        if r >= 0:
            truncate_span(S, r, t)
        return
    through = t + pf[PF_FRONTEND_S, pool]
    if through > t:
        heap_push(S, HEAP_TIMER, through, timer_payload(i, TIMER_FRONTEND))
        return
    enter_pool(S, i, pool, t)


@kernel
def enter_pool(S, i, pool, t):
    """Queue request i's job at ``pool`` (and wake a replica), or reject or drop it."""
    ri = S.req_int
    pi = S.pool_int
    reason = _reject_reason(S, pool, i)
    nxt = pi[PL_NEXT, pool]
    if reason == REASON_NONE and nxt >= 0 and ri[RQ_OUTPUT, i] > 1:
        reason = _reject_reason(S, nxt, i)
    if reason != REASON_NONE:
        ri[RQ_STATUS, i] = STATUS_REJECTED
        ri[RQ_REASON, i] = reason
        client_done(S, i, t)
        return
    q = choose_queue(S, pool, i, DRAW_ENTRY, t)
    limit = pi[PL_MAX_QUEUE, pool]
    if limit >= 0 and S.queue[Q_COUNT, q] >= limit:
        ri[RQ_STATUS, i] = STATUS_DROPPED
        ri[RQ_REASON, i] = REASON_QUEUE_FULL
        client_done(S, i, t)
        return
    if math.isnan(S.req_float[RF_ENQUEUED, i]):  # (queueing counts from here; once: a pipeline's stages enter again)
        S.req_float[RF_ENQUEUED, i] = t
    enqueue(S, q, i, False, t)
    wake(S, q, t)


@kernel
def arrive(S, i, t):
    """Request i arrives (plain serving): its job is its prompt and output at the entry pool."""
    S.req_int[RQ_TARGET, i] = S.req_int[RQ_PROMPT, i]
    queue_job(S, i, 0, t)
