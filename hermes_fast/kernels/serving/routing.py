"""Where work goes: the replica (queue) a job joins in a pool, and the target a route stage picks."""

from __future__ import annotations

from .._jit import kernel
from .cache_table import tier_run
from .fastforward import truncate_span
from .prefix_cache import pc_applies, pc_lookup
from .state import (
    INF,
    PF_OVERLAP_WEIGHT,
    PL_BLOCK,
    PL_CAP_BLOCKS,
    PL_COUNT,
    PL_FIRST,
    PL_PC2_CAP,
    PL_ROLE,
    PL_RR,
    PL_SCHED,
    PREFIX_CACHE,
    Q_COUNT,
    Q_TOKENS,
    ROLE_DECODE,
    ROUTE_TABLE,
    RP_FREE_BLOCKS,
    RP_NRUN,
    RP_POOL,
    RQ_BASE_PROMPT,
    RQ_CLASS,
    RQ_DECODE_REPLICA,
    RQ_ENTRY_REPLICA,
    RQ_PREV_TURN,
    RQ_ROUTE,
    RQ_TARGET,
    RULE_CLASS,
    RULE_LENGTH,
    SCHED_KV_AWARE,
    SCHED_LEAST_KV,
    SCHED_LEAST_OUTSTANDING,
    SCHED_PREFIX_AFFINITY,
    SCHED_RANDOM,
    SCHED_ROUND_ROBIN,
    SCHED_SESSION_STICKY,
    SCHED_SHARED_QUEUE,
    SG_CLASS_MAP,
    SG_DRAW,
    SG_NTARGET,
    SG_POOL,
    SG_ROUTE,
    SG_ROUTE_F,
    SG_RULE,
)

__all__ = ["choose_queue", "route_pick", "stage_pool"]


@kernel
def _replica_load(S, r, sched):
    """Replica r's load as ``sched`` sees it: requests held (least_outstanding) or KV tokens (least_kv)."""
    rs = S.rep_int
    qs = S.queue
    if sched == SCHED_LEAST_OUTSTANDING:
        return float(rs[RP_NRUN, r] + qs[Q_COUNT, r])
    pool = rs[RP_POOL, r]
    pi = S.pool_int
    used = (pi[PL_CAP_BLOCKS, pool] - rs[RP_FREE_BLOCKS, r]) * pi[PL_BLOCK, pool]
    return float(used + qs[Q_TOKENS, r])


@kernel(inline=True)
def _cut_spans(S, first, count, t):
    """Cut the fast-forwarded spans of replicas ``first .. first + count - 1`` at t: a span holds the KV of its
    future iterations, which routing must not read as in use (nor a lookup evict for)."""
    for r in range(first, first + count):
        truncate_span(S, r, t)


@kernel
def _affinity(S, pool, i, sched, t):
    """prefix_affinity: the replica of ``pool`` caching the longest prefix of request i's block chain (on the device,
    then in its second-level tier: those blocks load back instead of being prefilled); session_sticky: the replica
    that served its session's previous turn here; kv_aware: the least cost ``PF_OVERLAP_WEIGHT x blocks of its
    prompt not cached there + KV blocks in use there (reclaimable cache entries not counted) + blocks its queue will
    take`` (Dynamo's KV router). Ties, or nothing to go by: the fewest requests held (least_outstanding), then the
    lowest index. Routing that reads the caches or the KV in use cuts the replicas' spans first (:func:`_cut_spans`),
    as least_kv does."""
    pi = S.pool_int
    ri = S.req_int
    first = pi[PL_FIRST, pool]
    count = pi[PL_COUNT, pool]
    if sched == SCHED_SESSION_STICKY and ri[RQ_PREV_TURN, i] >= 0:
        prev = ri[RQ_PREV_TURN, i]
        r = ri[RQ_DECODE_REPLICA, prev] if pi[PL_ROLE, pool] == ROLE_DECODE else ri[RQ_ENTRY_REPLICA, prev]
        if first <= r < first + count:
            return r
    cached = False
    if PREFIX_CACHE:  # (a compile-time constant: the loop without prefix caches leaves the lookups out)
        cached = sched != SCHED_SESSION_STICKY and pc_applies(S, pool, i)
    if cached or sched == SCHED_KV_AWARE:
        _cut_spans(S, first, count, t)
    block = pi[PL_BLOCK, pool]
    most = (ri[RQ_TARGET, i] - 1) // block
    best = first
    best_score = INF
    best_load = 0.0
    for r in range(first, first + count):
        hit = 0
        if PREFIX_CACHE and cached:
            hit = pc_lookup(S, r, i, most)[0]
            if pi[PL_PC2_CAP, pool] > 0:
                hit += tier_run(S, r, i, hit, most)
        load = _replica_load(S, r, SCHED_LEAST_OUTSTANDING)
        score = -float(hit)  # prefix_affinity: the longest cached prefix
        if sched == SCHED_KV_AWARE:
            prefill = (ri[RQ_TARGET, i] + block - 1) // block - hit
            used = pi[PL_CAP_BLOCKS, pool] - S.rep_int[RP_FREE_BLOCKS, r] + S.queue[Q_TOKENS, r] // block
            score = S.pool_float[PF_OVERLAP_WEIGHT, pool] * prefill + used
        if score < best_score or (score == best_score and load < best_load):
            best = r
            best_score = score
            best_load = load
    return best


@kernel(inline=True)
def choose_queue(S, pool, i, u_row, t):
    """The queue request i joins in ``pool`` at time t: the pool's shared queue, or a replica's own
    (``u_row``: the row of S.draws with request i's uniform for a random choice)."""
    pi = S.pool_int
    sched = pi[PL_SCHED, pool]
    first = pi[PL_FIRST, pool]
    count = pi[PL_COUNT, pool]
    n_rep = S.rep_int.shape[1]
    if sched == SCHED_SHARED_QUEUE:
        return n_rep + pool
    if sched == SCHED_ROUND_ROBIN:
        k = pi[PL_RR, pool] % count
        pi[PL_RR, pool] += 1
        return first + k
    if sched == SCHED_RANDOM:
        return first + min(int(S.draws[u_row, i] * count), count - 1)
    if sched == SCHED_PREFIX_AFFINITY or sched == SCHED_SESSION_STICKY or sched == SCHED_KV_AWARE:
        return _affinity(S, pool, i, sched, t)
    if sched == SCHED_LEAST_KV:  # the KV a replica holds now: only what its iteration in flight took
        _cut_spans(S, first, count, t)
    best = first
    best_load = _replica_load(S, first, sched)
    for r in range(first + 1, first + count):
        load = _replica_load(S, r, sched)
        if load < best_load:
            best = r
            best_load = load
    return best


@kernel
def route_pick(S, i, s):
    """Index of the target the route stage s sends request i to."""
    st = S.pipe_int
    rule = st[SG_RULE, s]
    base = st[SG_ROUTE_F, s]
    n = st[SG_NTARGET, s]
    if rule == RULE_CLASS:
        return int(S.pipe_float[ROUTE_TABLE, st[SG_CLASS_MAP, s] + S.req_int[RQ_CLASS, i]])
    rtf = S.pipe_float[ROUTE_TABLE]
    if rule == RULE_LENGTH:  # bounds stored after the targets' n cumulative weights
        prompt = S.req_int[RQ_BASE_PROMPT, i]
        for k in range(n - 1):
            if prompt <= rtf[base + n + k]:
                return k
        return n - 1
    u = S.draws[st[SG_DRAW, s], i]
    for k in range(n - 1):
        if u < rtf[base + k]:
            return k
    return n - 1


@kernel(inline=True)
def stage_pool(S, i, s):
    """The pool that serves request i's job of stage s (a routed stage: the target its route picked)."""
    st = S.pipe_int
    pool = st[SG_POOL, s]
    if pool >= 0:
        return pool
    return int(S.pipe_float[ROUTE_TABLE, st[SG_ROUTE, s] + S.req_int[RQ_ROUTE, i]])
