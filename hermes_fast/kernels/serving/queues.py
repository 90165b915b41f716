"""Waiting queues: FIFO linked lists through ``RQ_NEXT``, one per replica and one shared per pool."""

from __future__ import annotations

from .._jit import kernel
from .state import (
    Q_COUNT,
    Q_HEAD,
    Q_TAIL,
    Q_TOKENS,
    RF_QUEUED,
    RQ_GEN,
    RQ_NEXT,
    RQ_PROMPT,
    RQ_STATUS,
    STATUS_WAITING,
)

__all__ = ["enqueue", "dequeue"]


@kernel(inline=True)
def enqueue(S, q, i, front, t):
    """Request i joins queue q at time t, at its back (or its front: preempted requests and branches)."""
    ri = S.req_int
    qs = S.queue
    S.req_float[RF_QUEUED, i] = t
    if front:
        ri[RQ_NEXT, i] = qs[Q_HEAD, q]
        qs[Q_HEAD, q] = i
        if qs[Q_TAIL, q] < 0:
            qs[Q_TAIL, q] = i
    else:
        ri[RQ_NEXT, i] = -1
        if qs[Q_TAIL, q] < 0:
            qs[Q_HEAD, q] = i
        else:
            ri[RQ_NEXT, qs[Q_TAIL, q]] = i
        qs[Q_TAIL, q] = i
    qs[Q_COUNT, q] += 1
    qs[Q_TOKENS, q] += ri[RQ_PROMPT, i] + ri[RQ_GEN, i]
    ri[RQ_STATUS, i] = STATUS_WAITING


@kernel(inline=True)
def dequeue(S, q):
    """Remove and return the head of queue q."""
    ri = S.req_int
    qs = S.queue
    i = qs[Q_HEAD, q]
    qs[Q_HEAD, q] = ri[RQ_NEXT, i]
    if qs[Q_HEAD, q] < 0:
        qs[Q_TAIL, q] = -1
    qs[Q_COUNT, q] -= 1
    qs[Q_TOKENS, q] -= ri[RQ_PROMPT, i] + ri[RQ_GEN, i]
    return i
