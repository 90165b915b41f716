"""Shared links and tier instances: processor sharing of bandwidth among the transfers in flight; and servers that
take one job at a time, first come, first served (:func:`fifo_wait`: a shared prefix-cache tier).

A resource serves its n active transfers at ``XF_BW / n`` each. It keeps a virtual time ``XF_V`` (bytes
served to each active transfer so far); a transfer joining at virtual time v with b bytes finishes when
the virtual time reaches v + b (``RF_VFINISH``), so the earliest virtual finish is the next completion.
A search batch reading its index through a resource (a host's memory) is one more flow for its duration,
slowing the transfers meanwhile (:func:`ps_flow`). What a finished transfer was for is dispatched by the
loop (``RQ_XFER_KIND``).
"""

from __future__ import annotations

from .._jit import kernel
from .events import heap_push, timer_payload
from .state import (
    HEAP_TIMER,
    INF,
    RF_VFINISH,
    RQ_RES,
    RQ_RES_NEXT,
    RQ_XFER_KIND,
    TIMER_JOIN,
    XF_BUSY_S,
    XF_BW,
    XF_BYTES,
    XF_COUNT,
    XF_NEXT_T,
    XF_T,
    XF_V,
    XF_WAIT_S,
    XI_ACTIVE,
    XI_HEAD,
    XI_MIN,
)

__all__ = ["next_transfer_end", "ps_flow", "ps_join", "ps_complete", "start_transfer", "fifo_wait"]


@kernel
def next_transfer_end(pipe_float, n_res):
    """Time of the earliest transfer completion over all resources (inf: none in flight)."""
    best = INF
    for k in range(n_res):
        best = min(best, pipe_float[XF_NEXT_T, k])
    return best


@kernel(inline=True)
def _ps_advance(S, k, t):
    """Serve resource k's active transfers up to time t (each gets bandwidth / active)."""
    xf = S.pipe_float
    n = S.pipe_int[XI_ACTIVE, k]
    if n > 0:
        xf[XF_V, k] += (t - xf[XF_T, k]) * xf[XF_BW, k] / n
        xf[XF_BUSY_S, k] += t - xf[XF_T, k]
    xf[XF_T, k] = t


@kernel(inline=True)
def _ps_reschedule(S, k):
    """Find resource k's next completion after its set of transfers changed."""
    xi = S.pipe_int
    xf = S.pipe_float
    n = xi[XI_ACTIVE, k]
    if n == 0:
        xf[XF_NEXT_T, k] = INF
        xi[XI_MIN, k] = -1
        return
    rf = S.req_float
    ri = S.req_int
    j = xi[XI_HEAD, k]
    if j < 0:  # only search batches' flows
        xf[XF_NEXT_T, k] = INF
        xi[XI_MIN, k] = -1
        return
    best = j
    while j >= 0:
        if rf[RF_VFINISH, j] < rf[RF_VFINISH, best]:
            best = j
        j = ri[RQ_RES_NEXT, j]
    xi[XI_MIN, k] = best
    xf[XF_NEXT_T, k] = xf[XF_T, k] + max(rf[RF_VFINISH, best] - xf[XF_V, k], 0.0) * n / xf[XF_BW, k]


@kernel(inline=True)
def ps_flow(S, k, t, change):
    """A search batch starts (+1) or ends (-1) reading through resource k: the transfers' shares change."""
    _ps_advance(S, k, t)
    S.pipe_int[XI_ACTIVE, k] += change
    _ps_reschedule(S, k)


@kernel(inline=True)
def ps_join(S, k, i, t):
    """Request i's transfer (RF_VFINISH holds its bytes) starts sharing resource k at time t."""
    ri = S.req_int
    rf = S.req_float
    xi = S.pipe_int
    _ps_advance(S, k, t)
    S.pipe_float[XF_BYTES, k] += rf[RF_VFINISH, i]
    rf[RF_VFINISH, i] += S.pipe_float[XF_V, k]
    ri[RQ_RES_NEXT, i] = xi[XI_HEAD, k]
    xi[XI_HEAD, k] = i
    xi[XI_ACTIVE, k] += 1
    _ps_reschedule(S, k)


@kernel(inline=True)
def ps_complete(S, k, t):
    """The first transfer on resource k ends at t: remove it and return its request."""
    ri = S.req_int
    rf = S.req_float
    xi = S.pipe_int
    xf = S.pipe_float
    j = xi[XI_MIN, k]
    _ps_advance(S, k, t)
    xf[XF_V, k] = rf[RF_VFINISH, j]  # exact, whatever rounding the advance left
    prev = -1
    m = xi[XI_HEAD, k]
    while m != j:
        prev = m
        m = ri[RQ_RES_NEXT, m]
    if prev < 0:
        xi[XI_HEAD, k] = ri[RQ_RES_NEXT, j]
    else:
        ri[RQ_RES_NEXT, prev] = ri[RQ_RES_NEXT, j]
    xi[XI_ACTIVE, k] -= 1
    xf[XF_COUNT, k] += 1.0
    _ps_reschedule(S, k)
    return j


@kernel(inline=True)
def start_transfer(S, i, k, nbytes, kind, t, lat):
    """Move ``nbytes`` for request i over resource k: ``lat`` seconds, then a processor-shared transfer."""
    S.req_int[RQ_RES, i] = k
    S.req_int[RQ_XFER_KIND, i] = kind
    S.req_float[RF_VFINISH, i] = nbytes
    S.pipe_float[XF_WAIT_S, k] -= t
    if lat > 0.0:
        heap_push(S, HEAP_TIMER, t + lat, timer_payload(i, TIMER_JOIN))
    else:
        ps_join(S, k, i, t)


@kernel(inline=True)
def fifo_wait(ra, busy_row, head, t, service):
    """A server that takes one job at a time, first come, first served, its busy-until clock in ``S.rep_float``
    row ``busy_row`` of replica ``head``: a job reaching it at t (calls in time order) waits for the jobs before,
    then holds it ``service`` seconds. Returns the wait."""
    start = max(t, ra[busy_row, head])
    ra[busy_row, head] = start + service
    return start - t
