"""Decode fast-forward: plan a span of decode-only iterations at once, commit it, or cut it short.

When a replica's next batch is decode-only and nothing can be admitted, it plans a span of
identical-shape iterations up to the first request's last token (or its KV running out, or SPAN_CAP),
each step cost computed in a tight scalar loop with KV grown by one token per request, and pushes one
event at the span's end. Nothing outside the replica can change its batch except work joining its queue
or KV it gets back: those events *truncate* the span to the iteration in flight (:func:`truncate_span`),
so the replica forms its next batch at the same boundary as one-iteration-per-event stepping would.
Iterations are accounted when they are applied, thinking milestones inside a span take their iteration's
end time, and a run stopped by the horizon settles spans in flight (``loop._settle``), so both modes give
identical per-request times. A span's step costs are planned SPAN_CHUNK iterations at a time: its heap event sits
at the end of those planned so far and plans on (:func:`plan_more`) unless the span was cut before (under steady
arrivals most spans are, and a whole span's costs would mostly be computed for nothing); the span's iterations,
KV and ends are those of a span planned whole.
"""

from __future__ import annotations

from .._jit import kernel
from ..iteration import iteration_time
from .accounting import account_iteration, itl_add
from .events import ends_passed, heap_move_earlier, heap_push
from .frontend import stream_floor
from .kv import blocks_for
from .state import (
    G_SPANS,
    HEAP_ITERATION,
    IT_DECODE_KV,
    IT_DECODES,
    IT_END,
    IT_LOGITS,
    IT_SEQS,
    IT_SPAN_KV,
    PL_BLOCK,
    PL_POLICY,
    POLICY_STATIC,
    RP_BUSY,
    RP_FREE_BLOCKS,
    RP_NRUN,
    RP_POOL,
    RP_SPAN,
    RP_SPAN_PLANNED,
    RQ_BLOCKS,
    RQ_CHUNK,
    RQ_KV,
    RQ_RESERVED,
    SPAN_CAP,
    SPAN_COST,
    SPAN_END,
)

__all__ = ["plan_span", "plan_more", "span_blocks", "truncate_span", "commit_span"]

SPAN_CHUNK = 8  # a span's step costs planned at a time


@kernel(inline=True)
def _span_limit(S, r, min_left):
    """Most decode iterations the batch can run before a request finishes or its KV blocks run out."""
    ri = S.req_int
    rs = S.rep_int
    run = S.running
    pool = rs[RP_POOL, r]
    if S.pool_int[PL_POLICY, pool] == POLICY_STATIC:
        return min_left
    block = S.pool_int[PL_BLOCK, pool]
    free = rs[RP_FREE_BLOCKS, r]
    n = rs[RP_NRUN, r]
    if free >= n * (min_left // block + 1):  # even the worst case fits
        return min_left
    lo = 1  # feasible: its blocks are held
    hi = min_left
    while lo < hi:
        mid = (lo + hi + 1) // 2
        need = 0
        for k in range(n):
            i = run[r, k]
            if ri[RQ_CHUNK, i] > 0:
                need += max(blocks_for(ri[RQ_KV, i] + mid, block) - ri[RQ_BLOCKS, i], 0)
        if need <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo


@kernel(inline=True)
def _plan_costs(S, r, first, last, end):
    """Step costs and ends of iterations ``first..last`` of replica r's span, the one before ending at ``end``:
    its first iteration's decodes, KV grown by one token per request and iteration. Returns the last end."""
    rsf = S.rep_float
    p = S.params[S.rep_int[RP_POOL, r]]
    n_dec = rsf[IT_DECODES, r]
    dec_kv = rsf[IT_DECODE_KV, r]
    logits = rsf[IT_LOGITS, r]
    n_seq = rsf[IT_SEQS, r]
    sp = S.span
    for j in range(first, last + 1):
        cost = stream_floor(
            S, r, iteration_time(p, 0.0, 0.0, 0.0, n_dec, dec_kv + (j - 1.0) * n_dec, logits, n_seq, True)
        )
        end += cost
        sp[SPAN_COST, r, j - 1] = cost
        sp[SPAN_END, r, j - 1] = end
    return end


@kernel(inline=True)
def plan_span(S, r, end, min_left):
    """Plan replica r's decode-only span after its first iteration (ending at ``end``): its length, its KV blocks
    taken, and the step costs and ends of its first chunk of iterations 2.. in S.span. Returns (iterations planned
    so far, in the span, the last planned end)."""
    span = min(_span_limit(S, r, min_left), SPAN_CAP)
    planned = min(span, SPAN_CHUNK)
    end = _plan_costs(S, r, 2, planned, end)
    if span > 1:
        span_blocks(S, r, span)
    return planned, span, end


@kernel
def plan_more(S, r):
    """Replica r's span goes on past the last iteration planned so far (its heap event, popped): plan the next
    chunk and push its end."""
    rs = S.rep_int
    n = rs[RP_SPAN, r]
    last = min(rs[RP_SPAN_PLANNED, r], n + SPAN_CHUNK)
    end = _plan_costs(S, r, n + 1, last, S.span[SPAN_END, r, n - 1])
    rs[RP_SPAN, r] = last
    S.rep_float[IT_END, r] = end
    heap_push(S, HEAP_ITERATION, end, r)


@kernel
def span_blocks(S, r, span):
    """Give each decode of replica r's span the KV blocks for ``span`` more tokens (the first iteration's
    are held already; static batches reserved theirs at admission)."""
    ri = S.req_int
    rs = S.rep_int
    pool = rs[RP_POOL, r]
    if S.pool_int[PL_POLICY, pool] == POLICY_STATIC:
        return
    block = S.pool_int[PL_BLOCK, pool]
    run = S.running
    for k in range(rs[RP_NRUN, r]):
        i = run[r, k]
        if ri[RQ_CHUNK, i] > 0:
            b = max(blocks_for(ri[RQ_KV, i] + span, block), ri[RQ_RESERVED, i])  # (a reservation stays held)
            rs[RP_FREE_BLOCKS, r] -= b - ri[RQ_BLOCKS, i]
            ri[RQ_BLOCKS, i] = b


@kernel
def truncate_span(S, r, t):
    """Cut replica r's fast-forwarded span to the iteration in flight at the current event (time t).

    One-iteration-per-event stepping has processed r's iteration ends before t, and the one at t too
    unless the current event is another replica's iteration end at t with a lower index (the iteration
    heap's tie order); r forms its next batch at the end of the next iteration."""
    rs = S.rep_int
    n = rs[RP_SPAN, r]  # (an end past those planned so far has not come: its event at ends[n - 1] has not fired)
    if rs[RP_BUSY, r] == 0 or rs[RP_SPAN_PLANNED, r] <= 1:
        return
    ends = S.span[SPAN_END, r]
    k = ends_passed(S, ends, n - 1, r, t) + 1  # (of ends[0 : n - 1]; the one in flight is the k-th)
    if k >= rs[RP_SPAN_PLANNED, r]:
        return
    rs[RP_SPAN, r] = k
    rs[RP_SPAN_PLANNED, r] = k
    S.rep_float[IT_END, r] = ends[k - 1]
    span_blocks(S, r, k)  # (gives back the blocks of the iterations cut)
    heap_move_earlier(S, r, ends[k - 1])


@kernel(inline=True)
def commit_span(S, r, first, last):
    """Account iterations ``first..last`` (2 or later) of replica r's span, in order."""
    rsf = S.rep_float
    sp = S.span
    n_dec = rsf[IT_DECODES, r]
    n_seq = rsf[IT_SEQS, r]
    kv_tokens = rsf[IT_SPAN_KV, r]
    dec_kv = rsf[IT_DECODE_KV, r]  # (the first iteration's: one token more per decode each iteration)
    for j in range(first, last + 1):
        kv_read = dec_kv + (j - 1.0) * n_dec
        account_iteration(rsf, r, sp[SPAN_COST, r, j - 1], n_seq, 0.0, n_dec, kv_tokens + j * n_dec, kv_read, 0.0)
        itl_add(S.run, sp[SPAN_END, r, j - 1] - sp[SPAN_END, r, j - 2], n_dec)
    S.glob[G_SPANS] += last - first + 1
