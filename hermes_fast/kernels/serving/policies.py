"""Batching policies: which requests and tokens a replica's next iteration holds.

- static: a batch of requests admitted together (KV reserved for their whole life), run to its end;
- continuous (vLLM V0's prefill-first): admit whole prompts while the token budget lasts; without new
  prompts, decode every running request (preempting the newest ones if KV runs out);
- continuous_chunked (SGLang's chunked prefill): the same, but an iteration holds at most ``PL_CHUNK`` prompt
  tokens: the prompt cut to fit goes on first in the next iteration, and decodes wait until no prompt is left;
- chunked (Sarathi, decode-first): every running decode, then running partial prompts get chunks of at
  most ``PL_CHUNK`` tokens from the rest of the budget, then new prompts;
- mixed: every running decode, then whole new prompts within the rest of the budget.
"""

from __future__ import annotations

from .._jit import kernel
from .admission import admit
from .batch import mark
from .kv import blocks_for, ensure_decode_blocks
from .state import (
    INF,
    IT_DECODE_KV,
    IT_DECODES,
    IT_INTAKE_SHARES,
    IT_LOGITS,
    IT_MIN_LEFT,
    IT_PREFILL_TOKENS,
    IT_SEQS,
    PL_BLOCK,
    PL_CHUNK,
    PL_HOLD_AFTER_PREEMPT,
    PL_MAX_TOKENS,
    PL_POLICY,
    PL_RANK_CHUNK,
    POLICY_CHUNKED,
    POLICY_CONTINUOUS,
    POLICY_CONTINUOUS_CHUNKED,
    POLICY_STATIC,
    RA_PREEMPTIONS,
    RP_FREE_BLOCKS,
    RP_NRUN,
    RP_POOL,
    RQ_BLOCKS,
    RQ_CHUNK,
    RQ_GEN,
    RQ_KV,
    RQ_OUTPUT,
    RQ_PREFILLED,
    RQ_RESERVED,
    RQ_TARGET,
)

__all__ = ["schedule_decodes", "form_iteration"]


@kernel
def schedule_decodes(S, r):
    """Mark every running decode for this iteration and give it KV room for its token; return how many.

    (The per-iteration hot loop: it adds to the totals itself rather than through ``mark``.)"""
    ri = S.req_int
    rs = S.rep_int
    rsf = S.rep_float
    run = S.running
    block = S.pool_int[PL_BLOCK, rs[RP_POOL, r]]
    n = 0
    kv = 0.0
    shares = 0.0
    min_left = rsf[IT_MIN_LEFT, r]
    free = rs[RP_FREE_BLOCKS, r]
    for k in range(rs[RP_NRUN, r]):
        i = run[r, k]
        if ri[RQ_CHUNK, i] == 0 and ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i] and ri[RQ_GEN, i] > 0:
            ri[RQ_CHUNK, i] = 1
            n += 1
            kv += ri[RQ_KV, i] + 1.0
            shares += 1.0 / max(ri[RQ_OUTPUT, i], 1)
            min_left = min(min_left, float(ri[RQ_OUTPUT, i] - ri[RQ_GEN, i]))
            b = blocks_for(ri[RQ_KV, i] + 1, block)
            if b > ri[RQ_BLOCKS, i]:  # (static batches reserved theirs at admission)
                free -= b - ri[RQ_BLOCKS, i]
                ri[RQ_BLOCKS, i] = b
    rs[RP_FREE_BLOCKS, r] = free
    rsf[IT_SEQS, r] += n
    rsf[IT_DECODES, r] += n
    rsf[IT_DECODE_KV, r] += kv
    rsf[IT_LOGITS, r] += n
    rsf[IT_INTAKE_SHARES, r] += shares
    rsf[IT_MIN_LEFT, r] = min_left
    return n


@kernel(inline=True)
def _continue_chunks(S, r, budget):
    """Running partial prompts get chunks from the budget, oldest first (KV permitting)."""
    ri = S.req_int
    rs = S.rep_int
    run = S.running
    pi = S.pool_int
    pool = rs[RP_POOL, r]
    block = pi[PL_BLOCK, pool]
    used = 0
    for k in range(rs[RP_NRUN, r]):
        i = run[r, k]
        remaining = ri[RQ_TARGET, i] - ri[RQ_PREFILLED, i]
        if remaining <= 0 or budget - used <= 0:
            continue
        chunk = min(remaining, pi[PL_CHUNK, pool], pi[PL_RANK_CHUNK, pool], budget - used)
        room = (ri[RQ_BLOCKS, i] + rs[RP_FREE_BLOCKS, r]) * block - ri[RQ_PREFILLED, i]
        chunk = min(chunk, room)
        if chunk <= 0:
            continue
        b = max(blocks_for(ri[RQ_PREFILLED, i] + chunk, block), ri[RQ_RESERVED, i])  # (a reservation stays held)
        rs[RP_FREE_BLOCKS, r] -= b - ri[RQ_BLOCKS, i]
        ri[RQ_BLOCKS, i] = b
        mark(S, r, i, chunk)
        used += chunk
    return used


@kernel(inline=True)
def form_iteration(S, r, t):
    """Mark replica r's next iteration by its pool's policy. Returns (swap s, requests admitted, tokens marked)."""
    rs = S.rep_int
    pi = S.pool_int
    pool = rs[RP_POOL, r]
    policy = pi[PL_POLICY, pool]
    max_tokens = pi[PL_MAX_TOKENS, pool]
    rsf = S.rep_float
    for row in range(IT_PREFILL_TOKENS, IT_MIN_LEFT):
        rsf[row, r] = 0.0
    rsf[IT_MIN_LEFT, r] = INF
    swap_s = 0.0
    tokens = 0
    admitted = 0
    if policy == POLICY_STATIC:
        if rs[RP_NRUN, r] == 0:
            tokens, swap_s, admitted, _ = admit(S, r, t, max_tokens, True)
        if tokens == 0:
            tokens = schedule_decodes(S, r)
    elif policy == POLICY_CONTINUOUS or policy == POLICY_CONTINUOUS_CHUNKED:
        budget = max_tokens
        if policy == POLICY_CONTINUOUS_CHUNKED:  # a cut prompt goes on before new ones, within the chunk size
            budget = min(max_tokens, pi[PL_CHUNK, pool])
            tokens = _continue_chunks(S, r, budget)
        a, swap_s, admitted, _ = admit(S, r, t, budget - tokens, False)
        tokens += a
        if tokens == 0:
            swap_s += ensure_decode_blocks(S, r)
            tokens = schedule_decodes(S, r)
    else:  # chunked and mixed: decodes first, prompts fill the rest of the budget
        preempted_before = rsf[RA_PREEMPTIONS, r]
        swap_s += ensure_decode_blocks(S, r)
        n_dec = schedule_decodes(S, r)
        budget = max_tokens - n_dec
        if policy == POLICY_CHUNKED:
            tokens = _continue_chunks(S, r, budget)
            budget -= tokens
        tokens += n_dec
        if pi[PL_HOLD_AFTER_PREEMPT, pool] == 0 or rsf[RA_PREEMPTIONS, r] == preempted_before:
            a, s, admitted, ready_n = admit(S, r, t, budget, False)
            swap_s += s
            tokens += a
            if ready_n > 0:  # requests admitted with their prompt done decode now too
                tokens += schedule_decodes(S, r)
    return swap_s, admitted, tokens
