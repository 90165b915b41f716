"""An iteration's end: tokens emitted, prompts done, jobs finished, KV handed off to the decode pool.

``finish_iteration`` applies a replica's ended iteration (or fast-forwarded span): decodes gain their
tokens, prefill chunks their KV; a finished prompt emits its first token and, on a prefill pool, starts its
KV hand-off; a finished job gives its KV back and the request completes or moves to its next stage once
the whole iteration is applied. ``handoff_done`` queues a handed-off request at a decode replica.
"""

from __future__ import annotations

from .._jit import kernel
from .accounting import itl_add
from .clients import client_done
from .events import heap_push
from .fastforward import commit_span
from .jobs import job_owner, spawn_branches
from .kv import release_kv
from .links import ps_flow, start_transfer
from .pipeline import stage_done
from .prefix_cache import pc_applies, pc_commit
from .queues import enqueue
from .routing import choose_queue
from .state import (
    DRAW_NEXT,
    G_DONE_COUNT,
    G_DONE_LIST,
    HEAP_HANDOFF,
    IT_FIRST_END,
    PAIRING_LOCAL,
    PF_KV_BYTES,
    PF_LINK_BW,
    PF_LINK_LAT,
    PIPELINES,
    PL_BLOCK,
    PL_COUNT,
    PL_FIRST,
    PL_KIND,
    PL_LINK_RES,
    PL_MEM_RES,
    PL_NEXT,
    PL_PAIRING,
    PL_ROLE,
    POOL_SEARCH,
    PREFIX_CACHE,
    RF_DONE,
    RF_FIRST_TOKEN,
    RF_LAST_TOKEN,
    RF_PREFILL_END,
    RF_REASON_END,
    RF_TRANSFER,
    ROLE_PREFILL,
    RP_BUSY,
    RP_KV_TOKENS,
    RP_NRUN,
    RP_POOL,
    RP_SPAN,
    RP_SPAN_PLANNED,
    RQ_BRANCHED,
    RQ_BRANCHES_LEFT,
    RQ_CHUNK,
    RQ_EMITTED,
    RQ_FIRST_AT,
    RQ_GEN,
    RQ_KV,
    RQ_OUTPUT,
    RQ_PREFILLED,
    RQ_REPLICA,
    RQ_STAGE,
    RQ_STATUS,
    RQ_STOP,
    RQ_TARGET,
    SG_KIND,
    SK_LLM,
    SPAN_END,
    STATUS_DONE,
    STATUS_TRANSFERRING,
    XF_LAT,
    XFER_HANDOFF,
)
from .submission import wake, wake_replica

__all__ = ["finish_iteration", "handoff_done", "thinking_milestone"]


@kernel
def finish_iteration(S, r, t):
    """Apply the ended iteration (or fast-forwarded span) of replica r at time t, retire and hand off."""
    ri = S.req_int
    rf = S.req_float
    rs = S.rep_int
    pi = S.pool_int
    run = S.running
    pool = rs[RP_POOL, r]
    span = rs[RP_SPAN, r]
    first_end = S.rep_float[IT_FIRST_END, r]
    acc = S.run
    if PIPELINES and pi[PL_KIND, pool] == POOL_SEARCH and pi[PL_MEM_RES, pool] >= 0:  # its memory flow ends
        ps_flow(S, pi[PL_MEM_RES, pool], t, -1)
    if span > 1:
        commit_span(S, r, 2, span)
    ends = S.span[SPAN_END, r]
    gap_run = -1.0  # requests that decoded in the previous iteration share one gap: add them at once
    gap_count = 0.0
    kv_added = 0
    keep = 0
    for k in range(rs[RP_NRUN, r]):
        i = run[r, k]
        c = ri[RQ_CHUNK, i]
        ri[RQ_CHUNK, i] = 0
        stays = True
        if c > 0:
            if ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i]:  # decode(s)
                gap = first_end - rf[RF_LAST_TOKEN, i]
                if gap != gap_run:
                    if gap_count > 0.0:
                        itl_add(acc, gap_run, gap_count)
                    gap_run = gap
                    gap_count = 0.0
                gap_count += 1.0
                g0 = ri[RQ_GEN, i]
                ri[RQ_GEN, i] += span
                ri[RQ_KV, i] += span
                kv_added += span
                rf[RF_LAST_TOKEN, i] = t
                while ri[RQ_STOP, i] < ri[RQ_OUTPUT, i] and ri[RQ_GEN, i] >= ri[RQ_STOP, i]:  # token j: ends[j - 1]
                    thinking_milestone(ri, rf, i, ends[ri[RQ_STOP, i] - g0 - 1])
            else:
                ri[RQ_PREFILLED, i] += c
                ri[RQ_KV, i] += c
                rs[RP_KV_TOKENS, r] += c
                # its prefilled blocks join the cache
                if PREFIX_CACHE and pc_applies(S, pool, i):
                    pc_commit(S, r, i, ri[RQ_KV, i] // pi[PL_BLOCK, pool])
                if ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i]:  # prompt done: it emits a token
                    ri[RQ_GEN, i] += 1
                    if ri[RQ_GEN, i] == 1:
                        rf[RF_PREFILL_END, i] = t
                        if ri[RQ_FIRST_AT, i] == 1 and (pi[PL_NEXT, pool] < 0 or ri[RQ_OUTPUT, i] == 1):
                            rf[RF_FIRST_TOKEN, i] = t
                    else:
                        itl_add(acc, t - rf[RF_LAST_TOKEN, i], 1.0)
                    rf[RF_LAST_TOKEN, i] = t
                    if ri[RQ_GEN, i] < ri[RQ_OUTPUT, i] and pi[PL_ROLE, pool] == ROLE_PREFILL:
                        stays = False  # hand off: KV stays held here until it has been sent
                        _start_handoff(S, i, pool, t)
                    if PIPELINES and stays and ri[RQ_BRANCHES_LEFT, i] > 1 and ri[RQ_BRANCHED, i] == 0:
                        spawn_branches(S, i, r, t)
                    while ri[RQ_STOP, i] < ri[RQ_OUTPUT, i] and ri[RQ_GEN, i] >= ri[RQ_STOP, i]:
                        thinking_milestone(ri, rf, i, t)
            if ri[RQ_GEN, i] >= ri[RQ_OUTPUT, i]:
                stays = False
                if ri[RQ_FIRST_AT, i] == ri[RQ_GEN, i] and ri[RQ_FIRST_AT, i] > 1:  # a one-token answer
                    rf[RF_FIRST_TOKEN, i] = t
                _count_emitted(S, i)
                release_kv(S, r, i)
                ri[RQ_REPLICA, i] = -1
                if PIPELINES and ri[RQ_STAGE, i] >= 0:  # its next stage starts once this iteration is applied
                    g = S.glob
                    g[G_DONE_LIST + g[G_DONE_COUNT]] = i
                    g[G_DONE_COUNT] += 1
                else:
                    ri[RQ_STATUS, i] = STATUS_DONE
                    rf[RF_DONE, i] = t
                    client_done(S, i, t)
        if stays:
            run[r, keep] = i
            keep += 1
    if gap_count > 0.0:
        itl_add(acc, gap_run, gap_count)
    rs[RP_KV_TOKENS, r] += kv_added
    rs[RP_NRUN, r] = keep
    rs[RP_SPAN, r] = 0
    rs[RP_SPAN_PLANNED, r] = 0
    g = S.glob
    if PIPELINES:
        for k in range(g[G_DONE_COUNT]):  # (r stays busy meanwhile: no stage it feeds may start its next iteration)
            _job_done(S, g[G_DONE_LIST + k], t)
        g[G_DONE_COUNT] = 0
    rs[RP_BUSY, r] = 0


@kernel(inline=True)
def _count_emitted(S, i):
    """Request i's job ended: its tokens count as generated text, for the request it belongs to, if it ran an
    LLM stage (not an encoder, router, reward model or search; plain serving: always)."""
    s = S.req_int[RQ_STAGE, i]
    if not PIPELINES or s < 0 or S.pipe_int[SG_KIND, s] == SK_LLM:
        S.req_int[RQ_EMITTED, job_owner(S, i)] += S.req_int[RQ_OUTPUT, i]


@kernel(inline=True)
def _start_handoff(S, i, pool, t):
    """Request i's prompt is done on a prefill pool: send its KV to the decode pool (held here meanwhile)."""
    S.req_int[RQ_STATUS, i] = STATUS_TRANSFERRING
    sent = S.req_int[RQ_KV, i] * S.pool_float[PF_KV_BYTES, pool]
    res = S.pool_int[PL_LINK_RES, pool]
    if PIPELINES and res >= 0:  # a shared link (pipelines): its end is a transfer event
        S.req_float[RF_TRANSFER, i] = t
        start_transfer(S, i, res, sent, XFER_HANDOFF, t, S.pipe_float[XF_LAT, res])
    else:
        dur = S.pool_float[PF_LINK_LAT, pool] + sent / S.pool_float[PF_LINK_BW, pool]
        S.req_float[RF_TRANSFER, i] = dur
        heap_push(S, HEAP_HANDOFF, t + dur, i)


@kernel(inline=True)
def _job_done(S, i, t):
    """Request i's job ended; with parallel branches the stage ends when the last branch does."""
    ri = S.req_int
    p = job_owner(S, i)
    if p != i:
        ri[RQ_STATUS, i] = STATUS_DONE
    ri[RQ_BRANCHES_LEFT, p] -= 1
    if ri[RQ_BRANCHES_LEFT, p] == 0:
        stage_done(S, p, t)


@kernel
def thinking_milestone(req_int, req_float, i, t):
    """Request i emitted (at t) its last thinking token (stop next at the first answer token) or that one."""
    if req_int[RQ_STOP, i] < req_int[RQ_FIRST_AT, i]:
        req_float[RF_REASON_END, i] = t
        req_int[RQ_STOP, i] = req_int[RQ_FIRST_AT, i]
    else:
        req_float[RF_FIRST_TOKEN, i] = t
        req_int[RQ_STOP, i] = req_int[RQ_OUTPUT, i]


@kernel
def handoff_done(S, i, t):
    """Request i's KV has reached the decode pool: free it at the sender, queue it at a decode replica."""
    ri = S.req_int
    pi = S.pool_int
    src = ri[RQ_REPLICA, i]
    pool = S.rep_int[RP_POOL, src]
    release_kv(S, src, i)
    if ri[RQ_FIRST_AT, i] == 1:
        S.req_float[RF_FIRST_TOKEN, i] = t
    nxt = pi[PL_NEXT, pool]
    if pi[PL_PAIRING, pool] == PAIRING_LOCAL:
        q = pi[PL_FIRST, nxt] + (src - pi[PL_FIRST, pool]) % pi[PL_COUNT, nxt]
    else:
        q = choose_queue(S, nxt, i, DRAW_NEXT, t)
    ri[RQ_REPLICA, i] = -1
    enqueue(S, q, i, False, t)
    wake_replica(S, src, t)  # it got KV back
    wake(S, q, t)
