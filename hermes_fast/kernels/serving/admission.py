"""Admission: queue heads enter a replica's batch, FCFS, while batch slots, the token budget and KV allow."""

from __future__ import annotations

import math

from .._jit import kernel
from .batch import push_running
from .cache_table import tier_run
from .clients import client_done
from .fastforward import truncate_span
from .jobs import job_owner, spawn_branches
from .kv import blocks_for, kept_blocks, swap_time
from .links import fifo_wait
from .prefix_cache import pc_acquire, pc_applies, pc_lookup
from .queues import dequeue
from .state import (
    ADMIT_RATIO,
    ADMIT_RESERVE_ALL,
    PF_KV_BYTES,
    PF_NEW_TOKEN_RATIO,
    PF_PC2_BW,
    PF_PC2_LAT,
    PF_PC2_SHARED_BW,
    PIPELINES,
    PL_ADMIT,
    PL_BLOCK,
    PL_CHUNK,
    PL_COUNT,
    PL_FIRST,
    PL_MAX_BATCH,
    PL_MAX_TOKENS,
    PL_PC2_CAP,
    PL_PC2_GROUP,
    PL_RANK_CHUNK,
    PL_ROLE,
    PL_SCHED,
    PL_SPLIT,
    PREFIX_CACHE,
    Q_COUNT,
    Q_HEAD,
    RA_PC2_BUSY_UNTIL,
    RA_PC2_LOAD_S,
    RA_PC2_TOKENS,
    RA_PC2_WAIT_S,
    RA_PC_HIT_TOKENS,
    RA_PC_LOOKUP_TOKENS,
    REASON_TOKENS,
    RF_ADMIT,
    ROLE_DECODE,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_NRUN,
    RP_POOL,
    RQ_BLOCKS,
    RQ_BRANCHED,
    RQ_BRANCHES_LEFT,
    RQ_DECODE_REPLICA,
    RQ_ENTRY_REPLICA,
    RQ_GEN,
    RQ_HOLDERS,
    RQ_KEPT_BLOCKS,
    RQ_KV,
    RQ_OUTPUT,
    RQ_PC_HIT,
    RQ_PREFILLED,
    RQ_PROMPT,
    RQ_REASON,
    RQ_RESERVED,
    RQ_SHARED_BLOCKS,
    RQ_STATUS,
    RQ_SWAPPED,
    RQ_TARGET,
    SCHED_SHARED_QUEUE,
    STATUS_REJECTED,
)

__all__ = ["admit"]


@kernel
def _kept_for_running(S, r, ratio):
    """Tokens of KV an ADMIT_RATIO replica keeps free for its running requests: the rest of a prompt being
    prefilled in chunks and ``ratio`` of their remaining output, less what their blocks already hold beyond
    their KV."""
    ri = S.req_int
    block = S.pool_int[PL_BLOCK, S.rep_int[RP_POOL, r]]
    kept = 0.0
    for k in range(S.rep_int[RP_NRUN, r]):
        i = S.running[r, k]
        ahead = ri[RQ_TARGET, i] - ri[RQ_PREFILLED, i] + ratio * (ri[RQ_OUTPUT, i] - ri[RQ_GEN, i])
        ahead -= ri[RQ_BLOCKS, i] * block - ri[RQ_KV, i]
        kept += max(ahead, 0.0)
    return kept


@kernel(inline=True)
def _take_prefix(S, r, i, hit, loaded, block, first, start):
    """Request i, admitted on r, reuses the ``hit`` cached blocks its lookup found and loads the next ``loaded``
    from the cache's second-level tier: their tokens count as prefilled (no prefill for them), and the replica's
    counters (and the request's, at its first admission) record it. Returns the load's seconds (the iteration
    waits for it, as for a swap-in): it starts at ``start``, after the replica's earlier transfers, and where
    replicas share the tier instance, once the loads queued on it before are through (first come, first served;
    the instance is busy for a load's bytes at its own bandwidth, each replica's link for them at the slower)."""
    ri = S.req_int
    ra = S.rep_float
    ra[RA_PC_LOOKUP_TOKENS, r] += ri[RQ_TARGET, i]
    if first:
        ri[RQ_PC_HIT, i] = (hit + loaded) * block
    if hit > 0:
        pc_acquire(S, r, i, hit)
        ra[RA_PC_HIT_TOKENS, r] += hit * block
    ri[RQ_PREFILLED, i] = (hit + loaded) * block
    ri[RQ_KV, i] = (hit + loaded) * block
    if loaded == 0:
        return 0.0
    pf = S.pool_float
    pi = S.pool_int
    pool = S.rep_int[RP_POOL, r]
    nbytes = loaded * block * pf[PF_KV_BYTES, pool]
    load_s = pf[PF_PC2_LAT, pool] + nbytes / pf[PF_PC2_BW, pool]
    group = pi[PL_PC2_GROUP, pool]
    if group > 1:
        head = pi[PL_FIRST, pool] + (r - pi[PL_FIRST, pool]) // group * group
        wait = fifo_wait(ra, RA_PC2_BUSY_UNTIL, head, start, nbytes / pf[PF_PC2_SHARED_BW, pool])
        load_s += wait
        ra[RA_PC2_WAIT_S, r] += wait
    ra[RA_PC2_TOKENS, r] += loaded * block
    ra[RA_PC2_LOAD_S, r] += load_s
    return load_s


@kernel
def admit(S, r, t, budget, static_reserve):
    """:func:`_admit_heads`; if r took requests from its pool's shared queue and some remain, the other
    busy replicas see a new head at the end of their iteration in flight (their spans are cut there)."""
    pool = S.rep_int[RP_POOL, r]
    pi = S.pool_int
    shared = S.rep_int.shape[1] + pool
    before = S.queue[Q_COUNT, shared]
    out = _admit_heads(S, r, t, budget, static_reserve)
    if pi[PL_SCHED, pool] == SCHED_SHARED_QUEUE and before > S.queue[Q_COUNT, shared] > 0:
        for other in range(pi[PL_FIRST, pool], pi[PL_FIRST, pool] + pi[PL_COUNT, pool]):
            if other != r:
                truncate_span(S, other, t)
    return out


@kernel(inline=True)
def _admit_heads(S, r, t, budget, static_reserve):
    """Admit queue heads (own queue, then the pool's shared one) while they fit, FCFS.

    A request with its prompt prefilled (hand-off or swapped out) needs blocks for one more token; a
    prompt needs blocks for the tokens it prefills now (static: for its whole life) and ``budget`` tokens
    (whole prompts unless the pool splits them: ``PL_SPLIT``). Returns (prefill tokens admitted, swap seconds, requests,
    requests admitted with their prompt done: they decode in this iteration).
    """
    ri = S.req_int
    rf = S.req_float
    rs = S.rep_int
    pi = S.pool_int
    pool = rs[RP_POOL, r]
    block = pi[PL_BLOCK, pool]
    max_batch = pi[PL_MAX_BATCH, pool]
    chunked = pi[PL_SPLIT, pool] != 0
    chunk_cap = pi[PL_CHUNK, pool]
    reserve_all = static_reserve or pi[PL_ADMIT, pool] == ADMIT_RESERVE_ALL
    ratio = S.pool_float[PF_NEW_TOKEN_RATIO, pool] if pi[PL_ADMIT, pool] == ADMIT_RATIO else 0.0
    kept_free = _kept_for_running(S, r, ratio) if ratio > 0.0 else 0.0  # tokens kept free for running outputs
    n_rep = rs.shape[1]
    admitted_tokens = 0
    admitted = 0
    ready_n = 0
    swap_s = 0.0
    for pass_ in range(2):
        q = r if pass_ == 0 else n_rep + pool
        if pass_ == 1 and pi[PL_SCHED, pool] != SCHED_SHARED_QUEUE:
            break
        while S.queue[Q_COUNT, q] > 0 and rs[RP_NRUN, r] < max_batch:
            i = S.queue[Q_HEAD, q]
            ready = ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i] and ri[RQ_GEN, i] > 0
            hit = 0  # prefix cache: leading chain blocks cached here, and those others reference (free to it)
            hit_free = 0
            loaded = 0  # ... and the blocks after them its second-level tier holds (loaded back)
            own = 0  # preempted: its own blocks still cached on r (taken from the free ones again)
            done = 0  # prompt tokens it has without computing them now: prefilled, cached, loaded or kept
            if ready:
                most = ri[RQ_KV, i] + 1
                chunk = 0
                spend = 1  # its decode takes one token of the budget
            else:
                if PREFIX_CACHE and pc_applies(S, pool, i) and ri[RQ_KV, i] == 0:
                    hit, unref = pc_lookup(S, r, i, (ri[RQ_TARGET, i] - 1) // block)  # (one token left to compute)
                    hit_free = hit - unref
                    if pi[PL_PC2_CAP, pool] > 0:
                        loaded = tier_run(S, r, i, hit, (ri[RQ_TARGET, i] - 1) // block)
                if ri[RQ_KEPT_BLOCKS, i] > 0:  # preempted: what the cache kept of its KV is not computed again
                    own = min(kept_blocks(S, r, i), (ri[RQ_TARGET, i] - 1) // block)  # (one token left to compute)
                done = ri[RQ_PREFILLED, i] + (hit + loaded + own) * block
                chunk = ri[RQ_TARGET, i] - done
                if chunked:
                    chunk = min(chunk, chunk_cap, pi[PL_RANK_CHUNK, pool], budget)
                    if chunk <= 0:
                        return admitted_tokens, swap_s, admitted, ready_n
                elif PREFIX_CACHE and pc_applies(S, pool, i) and ri[RQ_GEN, i] == 0 and chunk > pi[PL_MAX_TOKENS, pool]:
                    # what the cache leaves to prefill is over the budget, and prompts are not split: never runs
                    dequeue(S, q)  # (submission left this check to here: see submission._reject_reason)
                    ri[RQ_STATUS, i] = STATUS_REJECTED
                    ri[RQ_REASON, i] = REASON_TOKENS
                    client_done(S, i, t)
                    continue
                elif chunk > budget and admitted_tokens > 0:  # the first prompt is never refused for the budget
                    return admitted_tokens, swap_s, admitted, ready_n
                most = max(done + chunk, ri[RQ_KV, i])  # (swapped: its KV)
                spend = chunk
            if reserve_all:
                most = max(most, ri[RQ_PROMPT, i] + ri[RQ_OUTPUT, i] - 1)
            need = blocks_for(most, block)
            held = ri[RQ_SHARED_BLOCKS, i]  # queued requests hold no blocks, but a new branch shares its prompt's
            held += hit_free
            keep = 0
            if ratio > 0.0:  # its own remaining output counts too, and the prompt after a chunk (all must fit)
                kept_after = kept_free + ratio * (ri[RQ_OUTPUT, i] - ri[RQ_GEN, i])
                if not ready:
                    kept_after += ri[RQ_TARGET, i] - done - chunk
                keep = blocks_for(int(math.ceil(kept_after)), block)
            if need - held + keep > rs[RP_FREE_BLOCKS, r] or (ready and budget < 1):
                return admitted_tokens, swap_s, admitted, ready_n
            if ratio > 0.0:
                kept_free = kept_after
            dequeue(S, q)
            if own > 0:  # its cached blocks back in use: computed, held
                ri[RQ_PREFILLED, i] += own * block
                ri[RQ_KV, i] = ri[RQ_PREFILLED, i]
            ri[RQ_KEPT_BLOCKS, i] = 0
            if ri[RQ_SWAPPED, i] == 1:
                swap_s += swap_time(S, pool, ri[RQ_KV, i])
                ri[RQ_SWAPPED, i] = 0
            budget -= spend
            admitted_tokens += chunk
            rs[RP_FREE_BLOCKS, r] -= need - held
            ri[RQ_BLOCKS, i] = need
            ri[RQ_RESERVED, i] = need if reserve_all else 0
            if PREFIX_CACHE and not ready and pc_applies(S, pool, i) and ri[RQ_KV, i] == 0:
                swap_s += _take_prefix(S, r, i, hit, loaded, block, math.isnan(rf[RF_ADMIT, i]), t + swap_s)
            rs[RP_KV_TOKENS, r] += ri[RQ_KV, i] - (ri[RQ_SHARED_BLOCKS, i] + hit_free) * block  # (shared: resident)
            if math.isnan(rf[RF_ADMIT, i]):
                rf[RF_ADMIT, i] = t
                ri[RQ_ENTRY_REPLICA, i] = r
            elif pi[PL_ROLE, pool] == ROLE_DECODE and ri[RQ_DECODE_REPLICA, i] < 0:
                ri[RQ_DECODE_REPLICA, i] = r
            push_running(S, r, i, chunk)
            admitted += 1
            if ready:
                ready_n += 1
            if held > 0:  # one more holder of the shared blocks
                ri[RQ_HOLDERS, job_owner(S, i)] += 1
            if PIPELINES and ready and ri[RQ_BRANCHES_LEFT, i] > 1 and ri[RQ_BRANCHED, i] == 0:  # KV handed over
                spawn_branches(S, i, r, t)
    return admitted_tokens, swap_s, admitted, ready_n
