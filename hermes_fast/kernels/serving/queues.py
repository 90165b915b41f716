"""Waiting queues: FIFO linked lists through ``RQ_NEXT``, one per replica and one shared per pool. The list links
themselves (:func:`fifo_append`, :func:`fifo_pop`) serve any head / tail pair of rows: an API server thread's
intakes too (:mod:`~hermes_fast.kernels.serving.frontend`)."""

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

__all__ = ["enqueue", "dequeue", "fifo_append", "fifo_pop"]


@kernel(inline=True)
def fifo_append(S, rows, head, tail, col, i):
    """Request i joins the back of the list whose first and last requests are ``rows[head, col]`` and
    ``rows[tail, col]`` (-1: empty), linked through RQ_NEXT."""
    ri = S.req_int
    ri[RQ_NEXT, i] = -1
    if rows[tail, col] < 0:
        rows[head, col] = i
    else:
        ri[RQ_NEXT, rows[tail, col]] = i
    rows[tail, col] = i


@kernel(inline=True)
def fifo_pop(S, rows, head, tail, col):
    """Remove and return the first request of that list (not empty)."""
    i = rows[head, col]
    rows[head, col] = S.req_int[RQ_NEXT, i]
    if rows[head, col] < 0:
        rows[tail, col] = -1
    return i


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
        fifo_append(S, qs, Q_HEAD, Q_TAIL, q, i)
    qs[Q_COUNT, q] += 1
    qs[Q_TOKENS, q] += ri[RQ_PROMPT, i] + ri[RQ_GEN, i]
    ri[RQ_STATUS, i] = STATUS_WAITING


@kernel(inline=True)
def dequeue(S, q):
    """Remove and return the head of queue q."""
    ri = S.req_int
    qs = S.queue
    i = fifo_pop(S, qs, Q_HEAD, Q_TAIL, q)
    qs[Q_COUNT, q] -= 1
    qs[Q_TOKENS, q] -= ri[RQ_PROMPT, i] + ri[RQ_GEN, i]
    return i
