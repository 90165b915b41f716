"""Paged KV on a replica: blocks, giving them back, and preemption (recompute or swap) when they run out."""

from __future__ import annotations

from .._jit import kernel
from .jobs import job_owner
from .prefix_cache import pc_commit, pc_release, pc_trim, return_blocks
from .queues import enqueue
from .state import (
    G_BRANCH_SLOTS,
    G_CHILD0,
    INF,
    PF_KV_BYTES,
    PF_SWAP_BW,
    PF_SWAP_LAT,
    PL_BLOCK,
    PL_KEEP_PREEMPTED,
    PL_PREEMPT,
    PL_PREFIX,
    PREEMPT_SWAP,
    PREFIX_CACHE,
    RA_PREEMPTIONS,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_NRUN,
    RP_POOL,
    RP_RELEASED,
    RQ_BLOCKS,
    RQ_CHUNK,
    RQ_GEN,
    RQ_HOLDERS,
    RQ_KEPT_BLOCKS,
    RQ_KEPT_MARK,
    RQ_KEPT_REPLICA,
    RQ_KV,
    RQ_PC_LEN,
    RQ_PC_REF,
    RQ_PREEMPTIONS,
    RQ_PREFILLED,
    RQ_PROMPT,
    RQ_RESERVED,
    RQ_SHARED_BLOCKS,
    RQ_STAGE,
    RQ_SWAPPED,
    RQ_TARGET,
    SG_BRANCHES,
)

__all__ = ["blocks_for", "swap_time", "release_kv", "preempt_newest", "ensure_decode_blocks", "kept_blocks"]


@kernel
def blocks_for(tokens, block):
    """Paged-KV blocks that hold ``tokens`` tokens."""
    return (tokens + block - 1) // block


@kernel(inline=True)
def swap_time(S, pool, tokens):
    """Seconds to move ``tokens`` tokens' KV over the pool's host link (either way)."""
    pf = S.pool_float
    return pf[PF_SWAP_LAT, pool] + tokens * pf[PF_KV_BYTES, pool] / pf[PF_SWAP_BW, pool]


@kernel
def release_kv(S, r, i):
    """Request i gives up its KV blocks on replica r (its full blocks stay in r's prefix cache, if any). Prompt
    blocks shared with sibling branches go back when no branch holds them any more; branches still queued then
    lose them and recompute their prompt."""
    ri = S.req_int
    rs = S.rep_int
    pool = rs[RP_POOL, r]
    block = S.pool_int[PL_BLOCK, pool]
    shared = ri[RQ_SHARED_BLOCKS, i]
    refs = 0  # prefix cache: its computed full blocks stay cached; the entries it references are not its own,
    still = 0  # and those other requests still reference stay resident
    if PREFIX_CACHE and S.pool_int[PL_PREFIX, pool] != 0:
        pc_trim(S, r)  # (the evictions its allocations made, before any block comes back: eager LRU exactly)
        if ri[RQ_PC_LEN, i] > 0:
            pc_commit(S, r, i, ri[RQ_KV, i] // block)
            refs = ri[RQ_PC_REF, i]
            if refs > 0:
                still = pc_release(S, r, i)
    return_blocks(rs, r, ri[RQ_BLOCKS, i] - shared - refs)
    rs[RP_KV_TOKENS, r] -= ri[RQ_KV, i] - (shared + still) * block
    ri[RQ_BLOCKS, i] = 0
    ri[RQ_RESERVED, i] = 0
    ri[RQ_SHARED_BLOCKS, i] = 0
    if shared == 0:
        return
    p = job_owner(S, i)
    ri[RQ_HOLDERS, p] -= 1
    if ri[RQ_HOLDERS, p] > 0:
        return
    return_blocks(rs, r, shared)
    rs[RP_KV_TOKENS, r] -= shared * block
    first = S.glob[G_CHILD0] + p * S.glob[G_BRANCH_SLOTS] - 1
    for b in range(1, S.pipe_int[SG_BRANCHES, ri[RQ_STAGE, p]]):
        c = first + b
        if ri[RQ_SHARED_BLOCKS, c] > 0:  # queued, never admitted: its prompt's KV is gone
            ri[RQ_SHARED_BLOCKS, c] = 0
            ri[RQ_TARGET, c] = ri[RQ_PROMPT, c] + ri[RQ_GEN, c]
            ri[RQ_PREFILLED, c] = 0
            ri[RQ_KV, c] = 0


@kernel
def preempt_newest(S, r):
    """Preempt the newest running request of replica r (vLLM's victim): recompute or swap. Returns swap s."""
    ri = S.req_int
    rs = S.rep_int
    pool = rs[RP_POOL, r]
    rs[RP_NRUN, r] -= 1
    i = S.running[r, rs[RP_NRUN, r]]
    keep = S.pool_int[PL_KEEP_PREEMPTED, pool] != 0 and ri[RQ_PC_LEN, i] == 0 and ri[RQ_SHARED_BLOCKS, i] == 0
    if keep:  # (a chain's blocks stay in the prefix cache itself; shared prompt blocks are its job's)
        ri[RQ_KEPT_BLOCKS, i] = ri[RQ_KV, i] // S.pool_int[PL_BLOCK, pool]
        ri[RQ_KEPT_MARK, i] = rs[RP_RELEASED, r]
        ri[RQ_KEPT_REPLICA, i] = r
    release_kv(S, r, i)
    ri[RQ_CHUNK, i] = 0
    ri[RQ_PREEMPTIONS, i] += 1
    S.rep_float[RA_PREEMPTIONS, r] += 1.0
    swap_s = 0.0
    if S.pool_int[PL_PREEMPT, pool] == PREEMPT_SWAP:
        ri[RQ_SWAPPED, i] = 1
        swap_s = swap_time(S, pool, ri[RQ_KV, i])
    else:  # recompute the prompt and every token emitted so far
        ri[RQ_TARGET, i] = ri[RQ_PROMPT, i] + ri[RQ_GEN, i]
        ri[RQ_PREFILLED, i] = 0
        ri[RQ_KV, i] = 0
    enqueue(S, r, i, True, -INF)
    return swap_s


@kernel
def ensure_decode_blocks(S, r):
    """Preempt the newest requests until every running decode has room for its next token.

    The blocks themselves are taken by :func:`~.policies.schedule_decodes`; returns the swap seconds."""
    ri = S.req_int
    rs = S.rep_int
    run = S.running
    block = S.pool_int[PL_BLOCK, rs[RP_POOL, r]]
    swap_s = 0.0
    if rs[RP_FREE_BLOCKS, r] >= rs[RP_NRUN, r]:  # each decode needs at most one new block
        return swap_s
    while True:
        need = 0
        for k in range(rs[RP_NRUN, r]):
            i = run[r, k]
            if ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i] and ri[RQ_GEN, i] > 0:
                need += max(blocks_for(ri[RQ_KV, i] + 1, block) - ri[RQ_BLOCKS, i], 0)
        if need <= rs[RP_FREE_BLOCKS, r]:
            break
        swap_s += preempt_newest(S, r)
    return swap_s


@kernel
def kept_blocks(S, r, i):
    """Leading blocks of preempted request i's computed KV still cached on replica r (0 elsewhere).

    Its blocks went back to the free pool cached, behind those already free, and allocations take free blocks
    oldest-returned first (vLLM's free block queue: a freed request's blocks join its tail, last block first).
    Of the blocks returned since (its own first), the newest ``free`` are still free, so allocations have taken
    every one of its blocks beyond those."""
    ri = S.req_int
    kept = ri[RQ_KEPT_BLOCKS, i]
    if kept == 0 or ri[RQ_KEPT_REPLICA, i] != r:
        return 0
    rs = S.rep_int
    taken = rs[RP_RELEASED, r] - ri[RQ_KEPT_MARK, i] - rs[RP_FREE_BLOCKS, r]
    return kept - min(max(taken, 0), kept)
