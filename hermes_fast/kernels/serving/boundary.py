"""A replica's iteration boundary: wait for a fuller batch, form the next iteration, cost it, push its end.

``iteration_boundary`` runs whenever a replica is free to start an iteration: at the end of its previous
one (``in_flight``: with pipeline parallelism its micro-batches keep the pipeline full, see
:mod:`hermes_fast.kernels.iteration`), or when work reaches an idle replica (the pipeline fills). A replica
whose running requests can make no progress (partial prompts with no KV room) preempts its newest request
until one can. ``_launch`` prices the iteration (the engine's step cost, or a vector search batch) and
fast-forwards a decode-only batch.
"""

from __future__ import annotations

from .._jit import kernel
from ..iteration import iteration_time
from ..stages import search_batch_time
from .accounting import account_iteration
from .events import heap_push, timer_payload
from .fastforward import plan_span
from .frontend import stream_floor
from .kv import preempt_newest
from .links import ps_flow
from .policies import form_iteration
from .state import (
    G_FAST_FORWARD,
    HEAP_ITERATION,
    HEAP_TIMER,
    IT_DECODE_KV,
    IT_DECODES,
    IT_END,
    IT_FIRST_END,
    IT_LOGITS,
    IT_MIN_LEFT,
    IT_PAIRS,
    IT_PREFILL_KV,
    IT_PREFILL_TOKENS,
    IT_SEQS,
    IT_SPAN_KV,
    IT_WAKE_DUE,
    PF_MAX_WAIT,
    PF_S_BW,
    PF_S_BYTES_FIXED,
    PF_S_BYTES_QUERY,
    PF_S_FLOP,
    PF_S_FLOPS,
    PF_S_OVERHEAD,
    PIPELINES,
    PL_KIND,
    PL_MAX_BATCH,
    PL_MEM_RES,
    PL_SCHED,
    POOL_SEARCH,
    Q_COUNT,
    Q_HEAD,
    RA_PREEMPTIONS,
    RA_SWAP_S,
    RF_QUEUED,
    RP_BUSY,
    RP_KV_TOKENS,
    RP_NRUN,
    RP_POOL,
    RP_SPAN,
    RP_SPAN_PLANNED,
    SCHED_SHARED_QUEUE,
    SPAN_COST,
    SPAN_END,
    TIMER_WAKE,
    XF_BW,
    XF_BYTES,
    XI_ACTIVE,
)

__all__ = ["iteration_boundary"]


@kernel
def _hold_for_batch(S, r, t):
    """True if idle replica r should wait for more requests: fewer than a full batch wait and the oldest
    has waited less than the pool's max wait (a wake-up timer is set for that moment)."""
    rs = S.rep_int
    pi = S.pool_int
    qs = S.queue
    pool = rs[RP_POOL, r]
    q = r if pi[PL_SCHED, pool] != SCHED_SHARED_QUEUE or qs[Q_COUNT, r] > 0 else rs.shape[1] + pool
    waiting = qs[Q_COUNT, q]
    if waiting == 0 or waiting >= pi[PL_MAX_BATCH, pool]:
        return False
    due = S.req_float[RF_QUEUED, qs[Q_HEAD, q]] + S.pool_float[PF_MAX_WAIT, pool]
    if due <= t:
        return False
    if S.rep_float[IT_WAKE_DUE, r] != due:
        S.rep_float[IT_WAKE_DUE, r] = due
        heap_push(S, HEAP_TIMER, due, timer_payload(r, TIMER_WAKE))
    return True


@kernel
def iteration_boundary(S, r, t, in_flight):
    """Form replica r's next iteration at time t and schedule its end (or leave it idle)."""
    rs = S.rep_int
    rsf = S.rep_float
    if rs[RP_NRUN, r] == 0 and S.pool_float[PF_MAX_WAIT, rs[RP_POOL, r]] > 0.0 and _hold_for_batch(S, r, t):
        rs[RP_BUSY, r] = 0
        return
    preempted_before = rsf[RA_PREEMPTIONS, r]
    swap_s = 0.0
    admitted = 0
    while True:
        s, a, tokens = form_iteration(S, r, t)
        swap_s += s
        admitted += a
        if tokens > 0 or rs[RP_NRUN, r] == 0:
            break
        swap_s += preempt_newest(S, r)
    _launch(S, r, t, swap_s, admitted == 0 and rsf[RA_PREEMPTIONS, r] == preempted_before, in_flight)


@kernel(inline=True)
def _search_batch_cost(S, pool, n_seq, t):
    """Seconds of a batch of ``n_seq`` vector searches; reading the index through a shared resource makes
    the batch one more flow on it: its fair share now, for its duration."""
    pf = S.pool_float
    bw = pf[PF_S_BW, pool]
    k = S.pool_int[PL_MEM_RES, pool]
    if k >= 0:
        bw = min(bw, S.pipe_float[XF_BW, k] / (S.pipe_int[XI_ACTIVE, k] + 1))
        ps_flow(S, k, t, 1)
        S.pipe_float[XF_BYTES, k] += pf[PF_S_BYTES_FIXED, pool] + n_seq * pf[PF_S_BYTES_QUERY, pool]
    return search_batch_time(
        n_seq,
        pf[PF_S_FLOP, pool],
        pf[PF_S_BYTES_FIXED, pool],
        pf[PF_S_BYTES_QUERY, pool],
        pf[PF_S_FLOPS, pool],
        bw,
        pf[PF_S_OVERHEAD, pool],
    )


@kernel(inline=True)
def _launch(S, r, t, swap_s, nothing_admitted, in_flight):
    """Cost the marked iteration and push its end; fast-forward a decode-only batch."""
    rs = S.rep_int
    rsf = S.rep_float
    pool = rs[RP_POOL, r]
    p = S.params[pool]
    pre_tok = rsf[IT_PREFILL_TOKENS, r]
    n_dec = int(rsf[IT_DECODES, r])
    dec_kv = rsf[IT_DECODE_KV, r]
    logits = rsf[IT_LOGITS, r]
    n_seq = rsf[IT_SEQS, r]
    min_left = int(min(rsf[IT_MIN_LEFT, r], 1e18))
    if n_seq == 0.0:
        rs[RP_BUSY, r] = 0
        rs[RP_SPAN, r] = 0
        rs[RP_SPAN_PLANNED, r] = 0
        return
    if PIPELINES and S.pool_int[PL_KIND, pool] == POOL_SEARCH:
        cost = _search_batch_cost(S, pool, n_seq, t)
    else:
        pairs, pre_kv = rsf[IT_PAIRS, r], rsf[IT_PREFILL_KV, r]
        cost = stream_floor(
            S, r, iteration_time(p, pre_tok, pairs, pre_kv, float(n_dec), dec_kv, logits, n_seq, in_flight)
        )
    cost += swap_s
    rsf[RA_SWAP_S, r] += swap_s
    kv_tokens = float(rs[RP_KV_TOKENS, r]) + pre_tok
    end = t + cost
    # (the first iteration is accounted now, later ones of a span when applied)
    kv_read = rsf[IT_PREFILL_KV, r] + dec_kv
    account_iteration(rsf, r, cost, n_seq, pre_tok, n_dec, kv_tokens + n_dec, kv_read, rsf[IT_PAIRS, r])
    rsf[IT_FIRST_END, r] = end
    rsf[IT_SPAN_KV, r] = kv_tokens
    S.span[SPAN_COST, r, 0] = cost
    S.span[SPAN_END, r, 0] = end
    planned = span = 1
    decode_only = pre_tok == 0.0 and swap_s == 0.0 and nothing_admitted
    if decode_only and S.glob[G_FAST_FORWARD] != 0 and min_left > 1:
        planned, span, end = plan_span(S, r, end, min_left)
    rs[RP_SPAN, r] = planned
    rs[RP_SPAN_PLANNED, r] = span
    rs[RP_BUSY, r] = 1
    rsf[IT_END, r] = end
    heap_push(S, HEAP_ITERATION, end, r)
