"""Requests moving through their class's stage table: entering a stage, its service, and leaving it.

A stage moves its data in over a link (if it has one), then serves: a fixed or drawn delay (route,
tool call, postprocess), a KV lookup over the memory tiers (kv_retrieve), or a job on a pool (a model pass,
a vector search, an LLM generation). Leaving a stage accounts its time per output row and enters the
next stage, or completes the request.
"""

from __future__ import annotations

import math

from .._jit import kernel
from ..stages import tier_outcome
from .clients import client_done
from .events import heap_push, timer_payload
from .jobs import longest_branch, set_job
from .links import start_transfer
from .routing import route_pick, stage_pool
from .state import (
    G_CLASS_FIRST,
    G_WARMUP,
    HEAP_TIMER,
    PL_MAX_CONTEXT,
    RF_ADMIT,
    RF_DONE,
    RF_ENTER,
    RF_PREFILL_END,
    RF_QUEUE_SUM,
    RF_READY,
    RF_REASON_END,
    RF_TRANSFER,
    ROUTE_TABLE,
    RQ_ANSWER,
    RQ_BASE_PROMPT,
    RQ_BRANCHED,
    RQ_BRANCHES_LEFT,
    RQ_CACHED,
    RQ_CLASS,
    RQ_CTX,
    RQ_FIRST_AT,
    RQ_OUTPUT,
    RQ_ROUTE,
    RQ_SEQS,
    RQ_STAGE,
    RQ_STATUS,
    SA_QUEUE_S,
    SA_TIME_S,
    SA_TRANSFER_S,
    SA_VISITS,
    SG_ADD_CTX,
    SG_BRANCHES,
    SG_DRAW,
    SG_END,
    SG_FINAL,
    SG_KIND,
    SG_LINK,
    SG_NTIER,
    SG_PAST_DRAW,
    SG_ROW,
    SG_ROW_DECODE,
    SG_ROW_REASON,
    SG_RULE,
    SG_SEQS,
    SG_TIER,
    SGF_BYTES,
    SGF_BYTES_ANSWER,
    SGF_BYTES_CTX,
    SGF_DELAY,
    SGF_JOB,
    SGF_JOB_ANSWER,
    SGF_JOB_CTX,
    SGF_JOB_PROMPT,
    SGF_KV_BYTES,
    SGF_PER_TOKEN,
    SK_DELAY,
    SK_KV,
    SK_LLM,
    SK_MODEL,
    SK_SEARCH,
    STATUS_DONE,
    STATUS_WAITING,
    TF_HIT,
    TF_LOOKUP_S,
    TI_INSTANCES,
    TI_RES,
    TIMER_DELAY,
    XF_LAT,
    XFER_KV_FETCH,
    XFER_STAGE,
)
from .submission import queue_job

__all__ = ["arrive_pipeline", "start_service", "stage_done"]


@kernel(inline=True)
def arrive_pipeline(S, i, t):
    """Request i arrives and enters its class's first stage."""
    ri = S.req_int
    ri[RQ_STAGE, i] = int(S.pipe_float[ROUTE_TABLE, S.glob[G_CLASS_FIRST] + ri[RQ_CLASS, i]])
    ri[RQ_CTX, i] = ri[RQ_BASE_PROMPT, i]
    ri[RQ_STATUS, i] = STATUS_WAITING
    _enter_stage(S, i, t)


@kernel(inline=True)
def _enter_stage(S, i, t):
    """Request i enters its current stage at t: move its data in (if the stage has a link), then serve."""
    ri = S.req_int
    s = ri[RQ_STAGE, i]
    S.req_float[RF_ENTER, i] = t
    st = S.pipe_int
    if st[SG_RULE, s] >= 0:
        ri[RQ_ROUTE, i] = route_pick(S, i, s)
    k = st[SG_LINK, s]
    if k >= 0:
        stf = S.pipe_float
        nbytes = stf[SGF_BYTES, s] + stf[SGF_BYTES_CTX, s] * ri[RQ_CTX, i] + stf[SGF_BYTES_ANSWER, s] * ri[RQ_ANSWER, i]
        if nbytes > 0.0:
            start_transfer(S, i, k, nbytes, XFER_STAGE, t, S.pipe_float[XF_LAT, k])
            return
    start_service(S, i, t)


@kernel(inline=True)
def start_service(S, i, t):
    """Request i's data is in: serve its current stage (a delay, a KV lookup, or a job on a pool)."""
    ri = S.req_int
    st = S.pipe_int
    stf = S.pipe_float
    s = ri[RQ_STAGE, i]
    S.req_float[RF_READY, i] = t
    kind = st[SG_KIND, s]
    if kind == SK_DELAY:
        d = stf[SGF_DELAY, s] + stf[SGF_PER_TOKEN, s] * ri[RQ_ANSWER, i]
        if st[SG_DRAW, s] >= 0 and st[SG_RULE, s] < 0:
            d += S.draws[st[SG_DRAW, s], i]
        heap_push(S, HEAP_TIMER, t + d, timer_payload(i, TIMER_DELAY))
    elif kind == SK_KV:
        _kv_lookup(S, i, s, t)
    else:
        _submit_job(S, i, s, t)


@kernel(inline=True)
def _kv_lookup(S, i, s, t):
    """Look the prefix up tier by tier; a hit fetches its KV over the tier, a miss everywhere recomputes."""
    ri = S.req_int
    st = S.pipe_int  # (stage and tier rows share this table)
    tf = S.pipe_float
    past = int(S.draws[st[SG_PAST_DRAW, s], i])
    first = st[SG_TIER, s]
    n = st[SG_NTIER, s]
    level = tier_outcome(S.draws[st[SG_DRAW, s], i], tf[TF_HIT, first : first + n], n)
    lookup = 0.0
    last = n - 1 if level < 0 else level
    for k in range(first, first + last + 1):
        lookup += tf[TF_LOOKUP_S, k]
    ri[RQ_CTX, i] += past  # the prefix goes in front of the prompt
    if level < 0:  # recomputed with the prompt
        ri[RQ_CACHED, i] = 0
        heap_push(S, HEAP_TIMER, t + lookup, timer_payload(i, TIMER_DELAY))
        return
    if ri[RQ_CACHED, i] == 0:
        ri[RQ_CACHED, i] = past
    lv = first + level
    res = st[TI_RES, lv] + i % st[TI_INSTANCES, lv]
    start_transfer(S, i, res, past * S.pipe_float[SGF_KV_BYTES, s], XFER_KV_FETCH, t, lookup)


@kernel(inline=True)
def _submit_job(S, i, s, t):
    """Queue request i's job of stage s (a model pass, a search, or an LLM generation) at its pool."""
    ri = S.req_int
    rf = S.req_float
    st = S.pipe_int
    stf = S.pipe_float
    kind = st[SG_KIND, s]
    pool = stage_pool(S, i, s)
    seqs = 1
    cached = 0
    first_at = 0
    if kind == SK_LLM:
        think = 0
        if st[SG_DRAW, s] >= 0:  # (with branches: the longest, see jobs.spawn_branches)
            d = st[SG_DRAW, s]
            think = int(S.draws[d + longest_branch(S.draws, d, st[SG_BRANCHES, s], i), i])
        answer = ri[RQ_ANSWER, i] if st[SG_FINAL, s] == 1 else 0
        prompt = ri[RQ_CTX, i]
        cached = min(ri[RQ_CACHED, i], prompt - 1)  # the last prompt token is always computed
        output = max(think + answer, 1)
        if answer > 0:
            first_at = think + 1
    elif kind == SK_MODEL:
        tokens = stf[SGF_JOB, s] + stf[SGF_JOB_PROMPT, s] * ri[RQ_BASE_PROMPT, i] + stf[SGF_JOB_CTX, s] * ri[RQ_CTX, i]
        prompt = max(int(tokens + stf[SGF_JOB_ANSWER, s] * ri[RQ_ANSWER, i]), 1)
        output = 1
        seqs = st[SG_SEQS, s]
        prompt = min(prompt, seqs * (S.pool_int[PL_MAX_CONTEXT, pool] - 1))  # encoders truncate their inputs
    else:  # a vector search: one query
        prompt = 1
        output = 1
    set_job(ri, i, prompt, cached, 0, output, first_at - 1 if first_at > 1 else output)
    ri[RQ_SEQS, i] = seqs
    ri[RQ_FIRST_AT, i] = first_at
    ri[RQ_BRANCHES_LEFT, i] = st[SG_BRANCHES, s]
    ri[RQ_BRANCHED, i] = 0
    rf[RF_ADMIT, i] = math.nan
    rf[RF_PREFILL_END, i] = math.nan
    rf[RF_REASON_END, i] = math.nan
    rf[RF_TRANSFER, i] = 0.0  # (this job's KV hand-off, if it has one)
    queue_job(S, i, pool, t)


@kernel
def stage_done(S, i, t):
    """Request i leaves its current stage at t: account the stage, then enter the next or finish."""
    ri = S.req_int
    rf = S.req_float
    st = S.pipe_int
    s = ri[RQ_STAGE, i]
    kind = st[SG_KIND, s]
    job = kind == SK_MODEL or kind == SK_SEARCH or kind == SK_LLM
    if job:
        rf[RF_QUEUE_SUM, i] += rf[RF_ADMIT, i] - rf[RF_READY, i]
    if i >= S.glob[G_WARMUP]:
        sa = S.pipe_float
        row = st[SG_ROW, s]
        sa[SA_VISITS, row] += 1.0
        sa[SA_TRANSFER_S, row] += rf[RF_READY, i] - rf[RF_ENTER, i]
        if job:
            sa[SA_QUEUE_S, row] += rf[RF_ADMIT, i] - rf[RF_READY, i]
        end = t
        if kind == SK_LLM:  # split into prefill | thinking | answer rows
            end = rf[RF_PREFILL_END, i]
            r2 = st[SG_ROW_REASON, s]
            r3 = st[SG_ROW_DECODE, s]
            think_end = t  # (a job without the answer thinks to its end)
            if r3 >= 0:
                think_end = rf[RF_REASON_END, i] if not math.isnan(rf[RF_REASON_END, i]) else end
                sa[SA_VISITS, r3] += 1.0
                sa[SA_TIME_S, r3] += t - think_end
            if r2 >= 0:
                sa[SA_VISITS, r2] += 1.0
                sa[SA_TIME_S, r2] += think_end - end
            else:
                end = think_end
            after_prefill = r2 if r2 >= 0 else r3  # a KV hand-off moves the prompt's KV into that part
            if after_prefill >= 0:
                sa[SA_TRANSFER_S, after_prefill] += rf[RF_TRANSFER, i]
        sa[SA_TIME_S, row] += end - rf[RF_ENTER, i]
    if kind == SK_LLM:  # what it generated stays in the context, its KV cached for a later round
        ri[RQ_CTX, i] += ri[RQ_OUTPUT, i]
        ri[RQ_CACHED, i] = ri[RQ_CTX, i]
    ri[RQ_CTX, i] += st[SG_ADD_CTX, s]
    if s + 1 < st[SG_END, s]:
        ri[RQ_STAGE, i] = s + 1
        _enter_stage(S, i, t)
    else:
        ri[RQ_STATUS, i] = STATUS_DONE
        rf[RF_DONE, i] = t
        client_done(S, i, t)
