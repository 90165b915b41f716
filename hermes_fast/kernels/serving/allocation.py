"""Allocating the loop's state for one run (plain numpy, called from Python)."""

from __future__ import annotations

import numpy as np

from .state import (
    CHAIN_ROWS,
    DRAW_STAGE0,
    G_BRANCH_SLOTS,
    G_CHILD0,
    G_CLASS_FIRST,
    G_CLOSED,
    G_CONCURRENCY,
    G_FAST_FORWARD,
    G_NRES,
    G_PC_BLOCK,
    G_PC_HASH_BLOCK,
    G_PIPELINE,
    G_STOP_ARRIVAL,
    G_WARMUP,
    GLOB_ROWS,
    INF,
    IT_WAKE_DUE,
    ITL_BINS,
    PC2_ROWS,
    PC_ROWS,
    PF_MAX_WAIT,
    PIPE_FLOAT_ROWS,
    PIPE_INT_ROWS,
    PL_CAP_BLOCKS,
    PL_MAX_BATCH,
    PL_PREFIX,
    PN_ROWS,
    Q_HEAD,
    Q_TAIL,
    QUEUE_ROWS,
    REP_FLOAT_ROWS,
    REP_INT_ROWS,
    REQ_FLOAT_ROWS,
    REQ_INT_ROWS,
    RF_ARRIVAL,
    RF_QUEUE_SUM,
    RF_THINK,
    RF_TRANSFER,
    ROUTE_TABLE,
    RP_FE_CURRENT,
    RP_FE_HEAD,
    RP_FE_TAIL,
    RP_FREE_BLOCKS,
    RP_PC2_HEAD,
    RP_PC2_TAIL,
    RP_PC_HEAD,
    RP_PC_TAIL,
    RP_PN_FREE,
    RP_POOL,
    RQ_ANSWER,
    RQ_BASE_PROMPT,
    RQ_BRANCHES_LEFT,
    RQ_CLASS,
    RQ_DECODE_REPLICA,
    RQ_ENTRY_REPLICA,
    RQ_FIRST_AT,
    RQ_NEXT,
    RQ_NEXT_TURN,
    RQ_OUTPUT,
    RQ_PC_LEN,
    RQ_PC_NODE,
    RQ_PREV_TURN,
    RQ_PROMPT,
    RQ_REPLICA,
    RQ_RES,
    RQ_RES_NEXT,
    RQ_SEQS,
    RQ_STAGE,
    RQ_STOP,
    RQ_TARGET,
    RUN_HORIZON,
    RUN_ROWS,
    SG_CLASS_MAP,
    SG_DRAW,
    SG_PAST_DRAW,
    SG_ROUTE,
    SGF_DELAY,
    SPAN_CAP,
    STAGE_FLOAT_ROWS,
    STAGE_INT_ROWS,
    TF_HIT,
    TI_RES,
    TIER_FLOAT_ROWS,
    TIER_INT_ROWS,
    XF_BW,
    XF_LAT,
    XF_NEXT_T,
    XI_HEAD,
    XI_MIN,
    State,
)

__all__ = ["new_state", "empty_pipeline"]


def empty_pipeline() -> dict:
    """Pipeline arrays of plain serving (no stage tables, no shared resources)."""
    return {
        "stages": np.zeros((STAGE_INT_ROWS, 0), dtype=np.int64),
        "stages_float": np.zeros((STAGE_FLOAT_ROWS, 0)),
        "class_first": np.zeros(1, dtype=np.int64),
        "route": np.zeros(1, dtype=np.int64),
        "route_float": np.zeros(1),
        "tiers": np.zeros((TIER_INT_ROWS, 0), dtype=np.int64),
        "tiers_float": np.zeros((TIER_FLOAT_ROWS, 0)),
        "resources": np.zeros((2, 0)),  # bandwidth (B/s), latency (s) of each shared resource
        "rows": 0,
        "draws": np.zeros((0,)),
        "request_class": None,
        "answer_tokens": None,
        "warmup": 0,
        "branch_slots": 0,  # per request: branches - 1 of its widest reason stage
    }


def new_state(
    params: np.ndarray,
    pool_int: np.ndarray,
    pool_float: np.ndarray,
    replica_pool: np.ndarray,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    route_u: np.ndarray,
    horizon_s: float = INF,
    fast_forward: bool = True,
    pipeline: dict | None = None,
    concurrency: int = 0,
    closed: bool = False,
    think_s: np.ndarray | None = None,
    cache: dict | None = None,
) -> State:
    """Allocate and initialise the loop's :class:`~.state.State` for one run of ``serve``.

    ``pipeline`` (see :func:`empty_pipeline` for the keys) switches requests to stage tables. ``concurrency``
    (0: none) caps the requests in flight; ``closed``: that many clients in a closed loop, each sending its next
    request ``think_s[i]`` seconds after request i completes (``arrival_s``: 0 for the first requests, inf after).

    ``cache`` (prefix caching and sessions): ``chains`` (int64[n_arrivals, CHAIN_ROWS]: what names each request's
    KV blocks, :func:`~.block_keys.chain_rows`), ``lengths`` (int64[n_arrivals]: its full blocks), ``ids`` (trace
    hash ids; may be empty), ``block`` and ``hash_block`` (tokens per KV block and per hash id), ``slots`` (the
    table size per replica: a power of two; 1: no cache), ``tier_slots`` (the same for the second-level tier;
    default 1: none), ``pools`` (int64[n_pools]: 1 where the replicas cache), and ``next_turn`` / ``prev_turn``
    (int64[n_arrivals], -1: none) linking a session's turns, with ``think_s[i]`` the think time after turn i (a later
    turn's ``arrival_s`` is inf: it is sent when its user has read the previous answer)."""
    pl = pipeline if pipeline is not None else empty_pipeline()
    piped = pl["stages"].shape[1] > 0
    n_arr = arrival_s.size
    n_branch = n_arr * pl["branch_slots"]  # request slots of parallel reasoning branches, after the arrivals
    n = n_arr + n_branch
    if n_branch:
        pad = np.zeros(n_branch, dtype=np.int64)
        prompt_tokens, output_tokens = np.concatenate([prompt_tokens, pad]), np.concatenate([output_tokens, pad])
        arrival_s = np.concatenate([arrival_s, np.full(n_branch, INF)])
    n_rep = replica_pool.size
    n_pools = pool_int.shape[1]
    ri = np.zeros((REQ_INT_ROWS, n), dtype=np.int64)
    ri[RQ_PROMPT] = prompt_tokens
    ri[RQ_OUTPUT] = output_tokens
    ri[RQ_TARGET] = prompt_tokens
    ri[RQ_BASE_PROMPT] = prompt_tokens
    ri[RQ_ANSWER, :n_arr] = output_tokens[:n_arr] if pl["answer_tokens"] is None else pl["answer_tokens"]
    if pl["request_class"] is not None:
        ri[RQ_CLASS, :n_arr] = pl["request_class"]
    ri[RQ_FIRST_AT] = 1
    ri[RQ_STOP] = ri[RQ_OUTPUT]
    ri[RQ_SEQS] = 1
    ri[RQ_BRANCHES_LEFT] = 1
    for row in (
        RQ_NEXT_TURN,
        RQ_PREV_TURN,
        RQ_NEXT,
        RQ_REPLICA,
        RQ_ENTRY_REPLICA,
        RQ_DECODE_REPLICA,
        RQ_STAGE,
        RQ_RES,
        RQ_RES_NEXT,
    ):
        ri[row] = -1
    rf = np.full((REQ_FLOAT_ROWS, n), np.nan)
    rf[RF_TRANSFER] = 0.0
    rf[RF_QUEUE_SUM] = 0.0
    rf[RF_ARRIVAL] = arrival_s
    if think_s is not None:
        rf[RF_THINK, :n_arr] = think_s
    rs = np.zeros((REP_INT_ROWS, n_rep), dtype=np.int64)
    rs[RP_POOL] = replica_pool
    rs[RP_FREE_BLOCKS] = pool_int[PL_CAP_BLOCKS, replica_pool]
    rs[RP_FE_CURRENT] = rs[RP_FE_HEAD] = rs[RP_FE_TAIL] = -1
    rsf = np.zeros((REP_FLOAT_ROWS, n_rep))
    rsf[IT_WAKE_DUE] = -1.0
    qs = np.zeros((QUEUE_ROWS, n_rep + n_pools), dtype=np.int64)
    qs[Q_HEAD] = -1
    qs[Q_TAIL] = -1
    max_batch = int(pool_int[PL_MAX_BATCH].max(initial=1))
    running = np.full((n_rep, max_batch), -1, dtype=np.int64)
    cap = max(n_rep, n) + 1
    if piped or np.any(pool_float[PF_MAX_WAIT] > 0):  # timers: one per request, wake-ups one per queued head
        cap = 2 * n + n_rep + 16
    glob = np.zeros(GLOB_ROWS + max_batch, dtype=np.int64)
    glob[G_FAST_FORWARD] = 1 if fast_forward else 0
    glob[G_PIPELINE] = 1 if piped else 0
    glob[G_WARMUP] = pl["warmup"]
    glob[G_CHILD0] = n_arr
    glob[G_BRANCH_SLOTS] = pl["branch_slots"]
    glob[G_STOP_ARRIVAL] = n  # (no pause: simulate sets it to report progress)
    glob[G_CONCURRENCY] = concurrency if concurrency > 0 else n
    glob[G_CLOSED] = 1 if closed else 0
    run = np.zeros(RUN_ROWS + ITL_BINS)
    run[RUN_HORIZON] = horizon_s
    # pipeline tables, one array per dtype
    stages = pl["stages"]
    n_st, n_tier, n_res = stages.shape[1], pl["tiers"].shape[1], pl["resources"].shape[1]
    route_table = np.concatenate([pl["route_float"], pl["route"], pl["class_first"]]).astype(np.float64)
    width = max(n_st, n_tier, n_res, pl["rows"], route_table.size, 1)
    pt = np.zeros((PIPE_INT_ROWS, width), dtype=np.int64)
    ptf = np.zeros((PIPE_FLOAT_ROWS, width))
    pt[:STAGE_INT_ROWS, :n_st] = stages
    pt[TI_RES : TI_RES + TIER_INT_ROWS, :n_tier] = pl["tiers"]
    pt[XI_HEAD] = -1
    pt[XI_MIN] = -1
    ptf[SGF_DELAY : SGF_DELAY + STAGE_FLOAT_ROWS, :n_st] = pl["stages_float"]
    ptf[TF_HIT : TF_HIT + TIER_FLOAT_ROWS, :n_tier] = pl["tiers_float"]
    ptf[XF_BW, :n_res], ptf[XF_LAT, :n_res] = pl["resources"]
    ptf[XF_NEXT_T] = INF
    glob[G_NRES] = n_res
    # route tables: floats, then target pools and class maps, then each class's first stage
    ptf[ROUTE_TABLE, : route_table.size] = route_table
    n_f = pl["route_float"].size
    pt[SG_ROUTE, :n_st] += n_f
    pt[SG_CLASS_MAP, :n_st] += n_f
    glob[G_CLASS_FIRST] = n_f + pl["route"].size
    for row in (SG_DRAW, SG_PAST_DRAW):  # stage draws follow the rows of replica-choice uniforms
        pt[row, :n_st] = np.where(stages[row] >= 0, stages[row] + DRAW_STAGE0, -1)
    draws = np.concatenate([np.asarray(route_u, dtype=np.float64).reshape(2, n_arr), pl["draws"].reshape(-1, n_arr)])
    pc_chain, pc_ids = np.zeros((1, CHAIN_ROWS), dtype=np.int64), np.zeros(1, dtype=np.int64)
    slots = 1
    if cache is not None:
        ri[RQ_PC_LEN, :n_arr] = cache["lengths"]
        pc_chain = np.ascontiguousarray(cache["chains"], dtype=np.int64)
        if cache["ids"].size:
            pc_ids = np.ascontiguousarray(cache["ids"], dtype=np.int64)
        glob[G_PC_BLOCK], glob[G_PC_HASH_BLOCK] = cache["block"], cache["hash_block"]
        slots = int(cache["slots"])
        pool_int = np.array(pool_int, dtype=np.int64)
        pool_int[PL_PREFIX] = cache["pools"]
        if cache.get("next_turn") is not None:
            ri[RQ_NEXT_TURN, :n_arr] = cache["next_turn"]
            ri[RQ_PREV_TURN, :n_arr] = cache["prev_turn"]
    pc = np.zeros((n_rep, slots, PC_ROWS), dtype=np.int64)  # (entry-major: see cache_table)
    nodes = int(pool_int[PL_CAP_BLOCKS].max(initial=0)) + 1 if slots > 1 else 1  # (a node holds a block at least)
    pcn = np.zeros((n_rep, nodes, PN_ROWS), dtype=np.int64)
    pc2 = np.zeros((n_rep, int(cache.get("tier_slots", 1)) if cache is not None else 1, PC2_ROWS), dtype=np.int64)
    for row in (RP_PC_HEAD, RP_PC_TAIL, RP_PC2_HEAD, RP_PC2_TAIL, RP_PN_FREE):
        rs[row] = -1
    ri[RQ_PC_NODE] = -1
    return State(
        req_int=ri,
        req_float=rf,
        rep_int=rs,
        rep_float=rsf,
        queue=qs,
        running=running,
        pool_int=np.array(pool_int, dtype=np.int64),  # a copy: the loop advances its round-robin counters
        pool_float=np.ascontiguousarray(pool_float, dtype=np.float64),
        params=np.ascontiguousarray(params, dtype=np.float64),
        draws=np.ascontiguousarray(draws),
        heap_time=np.zeros((3, cap)),
        heap_int=np.zeros((3, 2, cap), dtype=np.int64),
        glob=glob,
        run=run,
        pipe_int=pt,
        pipe_float=ptf,
        span=np.zeros((2, n_rep, SPAN_CAP)),
        pc_chain=pc_chain,
        pc_ids=pc_ids,
        pc=pc,
        pcn=pcn,
        pc2=pc2,
    )
