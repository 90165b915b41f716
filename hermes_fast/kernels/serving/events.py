"""Event heaps: iteration ends, fixed-time KV hand-offs and timers, each a binary min-heap on (time, sequence).

The iteration heap keys ties on the replica index (its payload) and keeps each replica's position
(``RP_HEAP_POS``) so a fast-forwarded span can be cut short in place (:func:`heap_move_earlier`); the other
heaps break ties by push order. Timer payloads pack a subject (request or replica) with a ``TIMER_*`` kind.
"""

from __future__ import annotations

from .._jit import kernel
from .state import G_CUR, G_HEAP_SIZE, G_SEQ, HEAP_ITERATION, HEAP_PAYLOAD, HEAP_SEQ, INF, RP_HEAP_POS, TIMER_KINDS

__all__ = [
    "heap_push",
    "heap_pop",
    "heap_top",
    "heap_move_earlier",
    "ends_passed",
    "timer_payload",
    "timer_kind",
    "timer_subject",
]


@kernel(inline=True)
def heap_push(S, h, t, value):
    """Push an event at time t with payload ``value`` onto heap h."""
    g = S.glob
    k = g[G_HEAP_SIZE + h]
    g[G_HEAP_SIZE + h] = k + 1
    if h == HEAP_ITERATION:
        seq = value
    else:
        seq = g[G_SEQ]
        g[G_SEQ] = seq + 1
    _sift_up(S, h, k, t, seq, value)


@kernel(inline=True)
def _sift_up(S, h, k, t, seq, value):
    ht = S.heap_time
    hi = S.heap_int
    pos = S.rep_int[RP_HEAP_POS]
    while k > 0:
        parent = (k - 1) // 2
        pt = ht[h, parent]
        if pt < t or (pt == t and hi[h, HEAP_SEQ, parent] < seq):
            break
        ht[h, k] = pt
        hi[h, HEAP_SEQ, k] = hi[h, HEAP_SEQ, parent]
        hi[h, HEAP_PAYLOAD, k] = hi[h, HEAP_PAYLOAD, parent]
        if h == HEAP_ITERATION:
            pos[hi[h, HEAP_PAYLOAD, k]] = k
        k = parent
    ht[h, k] = t
    hi[h, HEAP_SEQ, k] = seq
    hi[h, HEAP_PAYLOAD, k] = value
    if h == HEAP_ITERATION:
        pos[value] = k


@kernel
def heap_move_earlier(S, r, t):
    """Move replica r's pending iteration end earlier, to t."""
    _sift_up(S, HEAP_ITERATION, S.rep_int[RP_HEAP_POS, r], t, r, r)


@kernel(inline=True)
def heap_pop(S, h):
    """Remove the earliest event of heap h; return its payload."""
    ht = S.heap_time
    hi = S.heap_int
    g = S.glob
    top = hi[h, HEAP_PAYLOAD, 0]
    size = g[G_HEAP_SIZE + h] - 1
    g[G_HEAP_SIZE + h] = size
    if size == 0:
        return top
    t = ht[h, size]
    seq = hi[h, HEAP_SEQ, size]
    val = hi[h, HEAP_PAYLOAD, size]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and (
            ht[h, c + 1] < ht[h, c] or (ht[h, c + 1] == ht[h, c] and hi[h, HEAP_SEQ, c + 1] < hi[h, HEAP_SEQ, c])
        ):
            c += 1
        if t < ht[h, c] or (t == ht[h, c] and seq < hi[h, HEAP_SEQ, c]):
            break
        ht[h, k] = ht[h, c]
        hi[h, HEAP_SEQ, k] = hi[h, HEAP_SEQ, c]
        hi[h, HEAP_PAYLOAD, k] = hi[h, HEAP_PAYLOAD, c]
        if h == HEAP_ITERATION:
            S.rep_int[RP_HEAP_POS, hi[h, HEAP_PAYLOAD, k]] = k
        k = c
    ht[h, k] = t
    hi[h, HEAP_SEQ, k] = seq
    hi[h, HEAP_PAYLOAD, k] = val
    if h == HEAP_ITERATION:
        S.rep_int[RP_HEAP_POS, val] = k
    return top


@kernel
def heap_top(heap_time, glob, h):
    """Time of heap h's earliest event (inf: empty)."""
    if glob[G_HEAP_SIZE + h] == 0:
        return INF
    return heap_time[h, 0]


@kernel(inline=True)
def timer_payload(subject, kind):
    return subject * TIMER_KINDS + kind


@kernel(inline=True)
def timer_kind(payload):
    return payload % TIMER_KINDS


@kernel(inline=True)
def timer_subject(payload):
    return payload // TIMER_KINDS


@kernel(inline=True)
def ends_passed(S, ends, n, r, t):
    """How many of replica r's ascending iteration ends ``ends[0 : n]`` one-iteration-per-event stepping has
    processed by the current event at t: those before t, and one at t unless the current event is another
    replica's iteration end at t with a lower index (the iteration heap's tie order)."""
    cur = S.glob[G_CUR]
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) // 2
        if ends[mid] < t or (ends[mid] == t and r < cur):
            lo = mid + 1
        else:
            hi = mid
    return lo
