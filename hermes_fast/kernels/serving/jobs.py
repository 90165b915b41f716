"""A request's current job, and the parallel branches a reasoning job fans out into.

A request runs one job at a time on a pool (a prompt with some KV at hand, then tokens to emit). A job of
a ``reason`` stage with ``branches: n`` runs as n requests: the request itself and n - 1 branch slots
after the arrivals (``G_CHILD0 + i * G_BRANCH_SLOTS - 1 + b``), which share the prompt's full KV blocks.
"""

from __future__ import annotations

from .._jit import kernel
from .queues import enqueue
from .state import (
    G_BRANCH_SLOTS,
    G_CHILD0,
    PL_BLOCK,
    RF_ADMIT,
    RF_LAST_TOKEN,
    RP_POOL,
    RQ_BLOCKS,
    RQ_BRANCHED,
    RQ_BRANCHES_LEFT,
    RQ_EMITTED,
    RQ_GEN,
    RQ_HOLDERS,
    RQ_KV,
    RQ_OUTPUT,
    RQ_PREFILLED,
    RQ_PROMPT,
    RQ_SHARED_BLOCKS,
    RQ_STAGE,
    RQ_STATUS,
    RQ_STOP,
    RQ_TARGET,
    SG_BRANCHES,
    SG_DRAW,
    STATUS_DONE,
)

__all__ = ["set_job", "job_owner", "longest_branch", "spawn_branches"]


@kernel
def set_job(req_int, i, prompt, cached, emitted, output, stop):
    """Request i's next job: a prompt with ``cached`` tokens' KV at hand, ``emitted`` of ``output`` tokens."""
    req_int[RQ_PROMPT, i] = prompt
    req_int[RQ_TARGET, i] = prompt
    req_int[RQ_PREFILLED, i] = cached
    req_int[RQ_KV, i] = cached
    req_int[RQ_GEN, i] = emitted
    req_int[RQ_OUTPUT, i] = output
    req_int[RQ_STOP, i] = stop


@kernel(inline=True)
def job_owner(S, i):
    """The request whose job branch i belongs to (i itself for a request)."""
    g = S.glob
    return i if i < g[G_CHILD0] else (i - g[G_CHILD0]) // g[G_BRANCH_SLOTS]


@kernel
def longest_branch(draws, row, n, i):
    """Which of request i's n branch draws (rows ``row..row + n - 1``) is the longest."""
    best = 0
    for b in range(1, n):
        if draws[row + b, i] > draws[row + best, i]:
            best = b
    return best


@kernel
def spawn_branches(S, i, r, t):
    """Start the sibling branches of request i's job on replica r, where its prompt's KV now is.

    As in parallel sampling, each branch got its first token from the shared prompt pass; it shares the
    prompt's full KV blocks and thinks for its own drawn length (request i took the longest of the draws,
    so the job is checked against the engine's limits at its longest). The branches go to the front of
    r's own queue and compete for batch slots and KV like any request."""
    ri = S.req_int
    rf = S.req_float
    u = S.draws
    g = S.glob
    s = ri[RQ_STAGE, i]
    n = S.pipe_int[SG_BRANCHES, s]
    draw = S.pipe_int[SG_DRAW, s]
    longest = longest_branch(u, draw, n, i)
    prompt = ri[RQ_PROMPT, i]
    shared = prompt // S.pool_int[PL_BLOCK, S.rep_int[RP_POOL, r]]
    ri[RQ_BRANCHED, i] = 1
    ri[RQ_SHARED_BLOCKS, i] = shared
    ri[RQ_HOLDERS, i] = 1
    first = g[G_CHILD0] + i * g[G_BRANCH_SLOTS] - 1
    for b in range(n - 1, 0, -1):  # (pushed to the front in reverse: admitted in order)
        c = first + b
        out = max(int(u[draw + (0 if b == longest else b), i]), 1)
        ri[RQ_STAGE, c] = s
        set_job(ri, c, prompt, prompt, 1, out, out)
        ri[RQ_BLOCKS, c] = 0
        ri[RQ_SHARED_BLOCKS, c] = shared if out > 1 else 0
        rf[RF_ADMIT, c] = t
        rf[RF_LAST_TOKEN, c] = t
        if out == 1:  # nothing more to think: its one token came from the shared prompt pass
            ri[RQ_BRANCHES_LEFT, i] -= 1
            ri[RQ_STATUS, c] = STATUS_DONE
            ri[RQ_EMITTED, i] += 1
        else:
            enqueue(S, r, c, True, t)
