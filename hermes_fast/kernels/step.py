"""Time of one engine iteration from the batch's composition, summed over the model's operators.

The batch is described by totals, so the cost is O(1) whatever its size:

- ``prefill_tokens``: new tokens prefilled this step (whole prompts or chunks);
- ``prefill_pairs``: their attention (query, key) pairs, e.g. a causal chunk of q tokens after p cached
  ones contributes q p + q (q + 1) / 2;
- ``prefill_kv_tokens``: keys those chunks read (p + q per chunk);
- ``decode_seqs``: requests decoding one token; ``decode_kv_tokens``: the KV tokens they read in all;
- ``logit_seqs``: sequences that emit a token this step (decodes plus prefills that complete).

Layers are identical within a kind, so each kind is costed once and multiplied by its count.
Sliding-window layers cap context at the window using the totals (exact for decode, an estimate for
mixed prefill batches). Linear-attention layers replace the attention block by their projections and a
recurrent mixer whose work is O(state) per token, whatever the context, and whose decode step reads and
writes each sequence's fixed-size state (a prefill chunk's one state read and write is left out: it is per
sequence, not per token, and small beside the chunk's GEMMs).

The step waits for its busiest device (:func:`.ranks.rank_work`). Under attention data parallelism each device
attends for its own sequences with whole attention weights (no all-reduce after attention; dense FFN layers gather
every rank's tokens and scatter them back; MoE layers dispatch each rank's tokens to the expert-parallel experts and
combine them, or, with the experts tensor-parallel (ep = 1), gather and scatter as the dense layers do). Under
context parallelism every sequence is split over CP groups: a prefill computes 1/CP of the pairs while the keys
pass round a ring (per layer max(attention, ring transfers): the transfers overlap the attention they feed), and a
decode sends each query to every group, reads 1/CP of its KV there and gathers the partial outputs back.
"""

from __future__ import annotations

from . import layout as L
from ._jit import kernel
from .collectives import allgather_time, allreduce_time, alltoall_time, message_bandwidth, p2p_time
from .ranks import prefill_chunk_tokens, rank_work
from .roofline import active_experts_from_log, attention_cost


@kernel
def _split(compute_s, memory_s):
    """Attribute an operator's roofline time to the side that bounds it."""
    if compute_s >= memory_s:
        return compute_s, 0.0
    return 0.0, memory_s


@kernel
def node_bracket(p, nodes, n, v):
    """(i, t): v lies between nodes i and i + 1 of the ``n`` ascending coordinates ``p[nodes:nodes + n]``, at
    fraction t of the way, linear in v; held at the end nodes. Counts the inner nodes at or below v without
    branching (batch figures vary from call to call: a search would mispredict)."""
    if n == 1:
        return 0, 0.0
    i = 0
    for j in range(1, n - 1):
        i += 1 if v >= p[nodes + j] else 0
    low = p[nodes + i]
    high = p[nodes + i + 1]
    return i, min(max((v - low) / (high - low), 0.0), 1.0)


@kernel
def residual_factor(p, base, x, y):
    """Measured / analytical time from the attention residual surface whose header starts at ``p[base]``, at
    batch figures (x, y): bilinear between the nodes (ratios at octaves of x and y), the edge value beyond
    them; 1 where there is none."""
    nx = int(p[base + L.RES_NX])
    if nx == 0:
        return 1.0
    ny = int(p[base + L.RES_NY])
    ix, tx = node_bracket(p, base + L.RES_X_NODES, nx, x)
    iy, ty = node_bracket(p, base + L.RES_Y_NODES, ny, y)
    v = base + L.RES_VALUES + ix * ny + iy
    dx = ny if nx > 1 else 0  # to the next x node
    dy = 1 if ny > 1 else 0
    low = (1.0 - ty) * p[v] + ty * p[v + dy]
    high = (1.0 - ty) * p[v + dx] + ty * p[v + dx + dy]
    return (1.0 - tx) * low + tx * high


@kernel
def prefill_residual(p, tokens, pairs, kv_tokens, window):
    """Residual factor of a (causal) prefill attention kernel: its surface at (sequences x query heads, KV tokens
    per sequence, at most ``window`` when > 0), both recovered from the batch's uncapped totals (exact for chunks
    of equal size and prefix)."""
    if p[L.RES_PREFILL + L.RES_NX] == 0.0 or pairs <= 0.0 or tokens <= 0.0:
        return 1.0
    chunk = prefill_chunk_tokens(tokens, pairs, kv_tokens)
    if chunk <= 0.0:  # no batch shape to look up
        return 1.0
    kv_per_seq = kv_tokens / tokens * chunk
    if window > 0.0:
        kv_per_seq = min(kv_per_seq, window)
    return residual_factor(p, L.RES_PREFILL, tokens / chunk * p[L.HEADS], kv_per_seq)


@kernel
def _attention_layer(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, window):
    """(compute_s, memory_s, overhead_s) of the attention kernels of one layer; window <= 0 means full."""
    heads = p[L.HEADS]
    kvb = p[L.KV_TOKEN_BYTES]
    ab = p[L.A_BYTES]
    fe = p[L.ATTN_FLOPS]
    sat = p[L.ATTN_SAT]
    bw = p[L.MEM_BW]
    comp = 0.0
    mem = 0.0
    oh = 0.0
    if prefill_tokens > 0.0:
        pairs = prefill_pairs
        kv = prefill_kv_tokens
        if window > 0.0:
            pairs = min(pairs, prefill_tokens * window)
            kv = min(kv, prefill_tokens + window)
        c, m = attention_cost(
            pairs, heads, p[L.ATT_QK_PREFILL], p[L.ATT_V_PREFILL], kv, kvb, prefill_tokens, ab, fe, sat, bw
        )
        # few query tokens x heads leave SMs without query tiles: the compute rate saturates in their number
        c *= 1.0 + p[L.PREFILL_SAT] / (prefill_tokens * heads)
        c, m = _split(c, m)
        f = prefill_residual(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, window)
        slower = 1.0 + p[L.PREFILL_ATTN_EXTRA]  # (the stack's attention backend against the calibrated kernels)
        comp += f * c * slower
        mem += f * m * slower
        oh += f * p[L.OH_ATTN]
    if decode_seqs > 0.0:
        kv = decode_kv_tokens
        if window > 0.0:
            kv = min(kv, decode_seqs * window)
        c, m = attention_cost(kv, heads, p[L.ATT_QK_DECODE], p[L.ATT_V_DECODE], kv, kvb, decode_seqs, ab, fe, sat, bw)
        # few (sequence, KV head) pairs cannot keep every SM streaming KV: bandwidth saturates in their number
        m *= 1.0 + p[L.DECODE_SAT] / (decode_seqs * p[L.KV_HEADS])
        ramp = p[L.DECODE_RAMP_BYTES]
        if ramp > 0.0:  # and in the KV bytes read: idle SMs, split-KV reductions (as message_bandwidth)
            kv_bytes = kv * kvb
            m *= (kv_bytes + ramp) / (kv_bytes + p[L.DECODE_RAMP_LOW] * ramp)
        c, m = _split(c, m)
        f = residual_factor(p, L.RES_DECODE, decode_seqs * p[L.KV_HEADS], kv / decode_seqs)
        slower = 1.0 + p[L.DECODE_ATTN_EXTRA]  # (the stack's decode kernel against the calibrated ones)
        comp += f * c * slower
        mem += f * m * slower
        oh += f * p[L.OH_ATTN_DECODE]
    return comp, mem, oh


@kernel
def _indexer_pass(p, queries, pairs, keys):
    """(compute_s, memory_s) of one indexer kernel: ``queries`` scoring ``pairs`` (query, cached key) pairs on
    ``IDX_HEADS`` heads of ``IDX_DIM`` against one key, at the FP8 attention rate, reading ``keys`` cached keys."""
    c, m = attention_cost(
        pairs, p[L.IDX_HEADS], p[L.IDX_DIM], 0.0, keys, p[L.IDX_KEY_BYTES], queries, p[L.A_BYTES], p[L.IDX_FLOPS],
        p[L.ATTN_SAT], p[L.MEM_BW],
    )  # fmt: skip
    return _split(c, m)


@kernel
def _indexer_layer(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens):
    """(compute_s, memory_s, overhead_s) of one layer's sparse-attention indexer: every query scores every cached
    key (all of them: the top-k it picks bounds the attention, not this pass) and it reads its key cache
    (``IDX_KEY_BYTES`` a token). One kernel for prefill, one for decode; the top-k selection and the indexer's
    projections (~0.1% of the weights) are left out."""
    comp = 0.0
    mem = 0.0
    oh = 0.0
    if prefill_tokens > 0.0:
        comp, mem = _indexer_pass(p, prefill_tokens, prefill_pairs, prefill_kv_tokens)
        oh += p[L.OH_ATTN]
    if decode_seqs > 0.0:
        c, m = _indexer_pass(p, decode_seqs, decode_kv_tokens, decode_kv_tokens)
        comp += c
        mem += m
        oh += p[L.OH_ATTN_DECODE]
    return comp, mem, oh


@kernel
def _linear_attention_layer(p, prefill_tokens, decode_seqs):
    """(compute_s, memory_s, overhead_s) of one linear-attention layer: input and output projections, then the
    mixer (convolution, state update and read-out): ``LIN_FLOP_TOKEN`` per token at the attention rate, its
    activations in and out per token, and per decoding sequence its state read and written once."""
    tokens = prefill_tokens + decode_seqs
    c, m = _gemm(p, L.G_LIN_IN, tokens)
    c2, m2 = _gemm(p, L.G_LIN_OUT, tokens)
    mix_c = tokens * p[L.LIN_FLOP_TOKEN] / p[L.ATTN_FLOPS]
    mix_m = (tokens * p[L.LIN_ACT_BYTES] + 2.0 * decode_seqs * p[L.LIN_STATE_BYTES]) / p[L.MEM_BW]
    mix_c, mix_m = _split(mix_c, mix_m)
    oh = 2.0 * p[L.OH_GEMM]
    if prefill_tokens > 0.0:
        oh += p[L.OH_ATTN]
    if decode_seqs > 0.0:
        oh += p[L.OH_ATTN_DECODE]
    return c + c2 + mix_c, m + m2 + mix_m, oh


@kernel
def _floored(p, compute_s, memory_s, rows):
    """A GEMM kernel's least time (block-scaled FP8: a fixed-cost path, not a roofline effect): the shortfall
    below ``GEMM_FLOOR_S`` (``GEMM_SMALL_FLOOR_S`` for a launch of at most ``GEMM_SMALL_TOKENS`` rows), fixed
    cost included, joins the side that bounds it. One side is 0 (``_split``)."""
    floor = p[L.GEMM_SMALL_FLOOR_S] if rows <= p[L.GEMM_SMALL_TOKENS] else p[L.GEMM_FLOOR_S]
    floor -= p[L.OH_GEMM]
    if compute_s + memory_s < floor:
        if compute_s > 0.0:
            return floor, 0.0
        return 0.0, floor
    return compute_s, memory_s


@kernel
def _gemm(p, g, m):
    """Roofline split of the GEMM whose coefficient block starts at ``p[g]``, for m tokens."""
    c, mem = _split(p[g] + p[g + 1] * m, p[g + 2] + p[g + 3] * m)
    return _floored(p, c, mem, m)


@kernel
def _grouped_gemm(p, g, tokens, active_sets):
    """MoE experts: ``tokens`` token-expert rows over ``active_sets`` experts sharing coefficient block g. One
    grouped launch: its floor is chosen by all its rows (a guess; the shipped measurements have no grouped
    block-scaled GEMMs). Its compute side takes the stack's MoE kernels' extra (``MOE_COMPUTE_EXTRA``)."""
    compute = (active_sets * p[g] + p[g + 1] * tokens) * (1.0 + p[L.MOE_COMPUTE_EXTRA])
    memory = (active_sets * p[g + 2] + p[g + 3] * tokens) * (1.0 + p[L.MOE_MEMORY_EXTRA])
    c, m = _split(compute, memory)
    return _floored(p, c, m, tokens)


@kernel
def host_time(p, logit_seqs):
    """The engine's host work in one iteration: once per step (all TP ranks) and per sequence that emits a
    token. Not pipelined: with PP micro-batches it is paid once for the whole batch."""
    return p[L.OH_STEP] + logit_seqs * p[L.OH_SEQ]


@kernel
def step_cost(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, logit_seqs):
    """One iteration's time and its split: (total_s, compute_s, memory_s, comm_s, overhead_s).

    ``p`` is an engine parameter vector (see :mod:`hermes_fast.kernels.layout`); the split attributes
    each operator to compute or memory by its roofline, collectives to comm, and fixed kernel costs to
    overhead. Allocation-free; all arguments are float64 scalars apart from ``p``.
    """
    tokens = prefill_tokens + decode_seqs
    if tokens <= 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    hidden = p[L.HIDDEN]
    oh_gemm = p[L.OH_GEMM]
    dp = p[L.ATT_DP]
    cp = p[L.CP]
    # the busiest device's share (the whole batch under plain tensor parallelism)
    own_pre, pairs, keys, own_dec, queries, dec_kv, lm_rows = rank_work(
        p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, logit_seqs
    )
    own = own_pre + own_dec  # tokens whose attention block runs on it
    ffn_tokens = tokens if dp > 1.0 else own  # attention DP: the FFN layers see every rank's tokens
    act_bytes = ffn_tokens * hidden * p[L.H_BYTES]  # one hidden-state tensor for the FFN's tokens

    # --- attention block: projections (every attention layer) + attention kernels (full or windowed), and the
    #     linear-attention layers' own block
    a_c, a_m = _gemm(p, L.G_QKV, own)
    c, m = _gemm(p, L.G_O, own)
    a_c += c
    a_m += m
    a_oh = 2.0 * oh_gemm
    if p[L.G_QB + 1] > 0.0:
        c, m = _gemm(p, L.G_QB, own)
        a_c += c
        a_m += m
        a_oh += oh_gemm
    if p[L.G_KVB + 1] > 0.0:
        c, m = _gemm(p, L.G_KVB, keys + own_dec)
        a_c += c
        a_m += m
        a_oh += oh_gemm
    n_attn = p[L.N_LAYERS] - p[L.N_LIN]  # layers with attention (all but the linear-attention ones)
    n_full = n_attn - p[L.N_SWA]
    comm = 0.0
    if cp > 1.0:
        # prefill: each group's chunk attends to every key as the KV blocks pass round the ring (cp - 1 transfers of
        # a group's share), overlapping the attention they feed: the layer takes the longer of the two
        f_c, f_m, f_oh = _attention_layer(p, own_pre, pairs, keys, 0.0, 0.0, 0.0)
        ring = (cp - 1.0) * p2p_time(keys / cp * p[L.KV_TOKEN_BYTES], p[L.CP_ALPHA], p[L.CP_BW], p[L.OH_COLL])
        comm += n_full * max(0.0, ring - (f_c + f_m + f_oh))
        c, m, o = _attention_layer(p, 0.0, 0.0, 0.0, queries, dec_kv, 0.0)
        f_c += c
        f_m += m
        f_oh += o
        if queries > 0.0:  # decode: queries out to every group, partial outputs (and log-sum-exps) back
            heads = p[L.HEADS] * queries
            q_bytes = heads * p[L.ATT_QK_DECODE] * p[L.H_BYTES]
            o_bytes = heads * (p[L.ATT_V_DECODE] * p[L.H_BYTES] + 4.0)
            alpha, bw, oh_coll = p[L.CP_ALPHA], p[L.CP_AG_BW], p[L.OH_COLL]
            comm += n_attn * (
                allgather_time(q_bytes, cp, alpha, bw, oh_coll) + allgather_time(o_bytes, cp, alpha, bw, oh_coll)
            )
    else:
        f_c, f_m, f_oh = _attention_layer(p, own_pre, pairs, keys, queries, dec_kv, 0.0)
    comp = n_attn * a_c + n_full * f_c
    mem = n_attn * a_m + n_full * f_m
    oh = n_attn * a_oh + n_full * f_oh
    if p[L.N_SWA] > 0.0:
        s_c, s_m, s_oh = _attention_layer(p, own_pre, pairs, keys, queries, dec_kv, p[L.SWA_WINDOW])
        comp += p[L.N_SWA] * s_c
        mem += p[L.N_SWA] * s_m
        oh += p[L.N_SWA] * s_oh
    if p[L.IDX_HEADS] > 0.0:
        i_c, i_m, i_oh = _indexer_layer(p, own_pre, pairs, keys, queries, dec_kv)
        comp += n_attn * i_c
        mem += n_attn * i_m
        oh += n_attn * i_oh
    if p[L.N_LIN] > 0.0:
        l_c, l_m, l_oh = _linear_attention_layer(p, own_pre, own_dec)
        comp += p[L.N_LIN] * l_c
        mem += p[L.N_LIN] * l_m
        oh += p[L.N_LIN] * l_oh
    tp = p[L.TP]
    ramp = p[L.COLL_RAMP_BYTES]
    low = p[L.COLL_RAMP_LOW]
    ar_bw = message_bandwidth(act_bytes, p[L.TP_AR_BW], ramp, low)
    allreduce = allreduce_time(act_bytes, tp, p[L.TP_ALPHA], ar_bw, p[L.OH_COLL])
    if dp > 1.0:
        # each rank's attention output is whole: no all-reduce after attention; a dense FFN layer all-gathers every
        # rank's tokens and reduce-scatters its output back to them (ring costs, the all-gather's bandwidth)
        ag_bw = message_bandwidth(act_bytes, p[L.TP_BW], ramp, low)
        dense_comm = 2.0 * allgather_time(act_bytes, tp, p[L.TP_ALPHA], ag_bw, p[L.OH_COLL])
    else:
        dense_comm = allreduce
        comm += p[L.N_LAYERS] * allreduce

    # --- dense FFN layers: gate+up, down, elementwise, all-reduce
    if p[L.N_DENSE] > 0.0:
        d_c, d_m = _gemm(p, L.G_FFN_UP, ffn_tokens)
        c, m = _gemm(p, L.G_FFN_DOWN, ffn_tokens)
        d_c += c
        d_m += m + ffn_tokens * p[L.ELEM_DENSE_S]
        comp += p[L.N_DENSE] * d_c
        mem += p[L.N_DENSE] * d_m
        oh += p[L.N_DENSE] * (2.0 * oh_gemm + 3.0 * p[L.OH_ELEM])
        comm += p[L.N_DENSE] * dense_comm

    # --- MoE layers: router, routed experts (distinct active ones read), shared experts, exchange
    if p[L.N_MOE] > 0.0:
        ep = p[L.EP]
        e_c, e_m = _gemm(p, L.G_ROUTER, own)
        e_oh = 3.0 * oh_gemm + 3.0 * p[L.OH_ELEM]
        # the step waits for the busiest EP rank: an even share, but at least one expert (and its rows)
        routed_all = ffn_tokens * p[L.TOP_K]
        active_all = active_experts_from_log(ffn_tokens, p[L.N_EXPERTS], p[L.EXPERT_LOG_MISS])
        routed = max(routed_all / ep, min(routed_all, p[L.TOP_K]))
        active = max(active_all / ep, min(active_all, 1.0))
        c, m = _grouped_gemm(p, L.G_EXP_UP, routed, active)
        e_c += c
        e_m += m
        c, m = _grouped_gemm(p, L.G_EXP_DOWN, routed, active)
        e_c += c
        e_m += m
        if p[L.G_SHARED_UP + 1] > 0.0:
            c, m = _gemm(p, L.G_SHARED_UP, own)
            e_c += c
            e_m += m
            c, m = _gemm(p, L.G_SHARED_DOWN, own)
            e_c += c
            e_m += m
            e_oh += 2.0 * oh_gemm
        e_m += own * p[L.ELEM_MOE_S]
        # same message as the TP all-reduce, so the same point on the size ramp: rescale to the smaller group
        ffn_bw = ar_bw * (p[L.FFN_AR_BW] / p[L.TP_AR_BW])
        if dp > 1.0 and ep == 1.0:  # tensor-parallel experts under attention DP: gathered as a dense FFN layer is
            e_comm = dense_comm
        else:
            e_comm = allreduce_time(act_bytes, p[L.FFN_TP], p[L.TP_ALPHA], ffn_bw, p[L.OH_COLL])
        if ep > 1.0:  # dispatch and combine: each rank exchanges its share of token-expert vectors
            if dp > 1.0:  # (its own tokens' vectors)
                a2a = own * hidden * p[L.H_BYTES] * p[L.TOP_K]
            else:  # (1/ep of the group's)
                a2a = act_bytes * p[L.TOP_K] / ep
            ep_bw = message_bandwidth(a2a, p[L.EP_BW], p[L.EP_RAMP_BYTES], low)
            e_comm += 2.0 * alltoall_time(
                a2a, ep, p[L.EP_ALPHA], ep_bw, p[L.OH_COLL], p[L.EP_PROTO_S], p[L.EP_PROTO_BYTES]
            )
        comp += p[L.N_MOE] * e_c
        mem += p[L.N_MOE] * e_m
        oh += p[L.N_MOE] * e_oh
        comm += p[L.N_MOE] * e_comm

    # --- input embedding: a gather of the device's tokens' rows (memory only), on the first stage; the engine's own
    #     host work once per step (scheduling, launches) and per sequence that emits a token (sampling)
    mem += own * p[L.EMBED_S]
    host = host_time(p, logit_seqs)  # (added last: an overlapping scheduler hides some or all of it behind the kernels)
    oh += p[L.OH_ELEM]
    # --- what a serving stack adds: KV-cache writes, rotary embeddings, sampling (none under the ideal stack)
    mem += own * p[L.EXTRA_TOKEN_S] + lm_rows * p[L.EXTRA_SEQ_S]
    oh += p[L.EXTRA_KERNELS] * p[L.OH_ELEM]
    # --- LM head on the sequences that emit a token, then gather the vocab shards (attention DP: the ranks' hidden
    #     states of those sequences are gathered first)
    if p[L.HAS_LM_HEAD] > 0.0 and logit_seqs > 0.0:
        c, m = _gemm(p, L.G_LM_HEAD, lm_rows)
        comp += c
        mem += m
        oh += oh_gemm
        logits_bytes = lm_rows * p[L.VOCAB] * p[L.H_BYTES]
        lg_bw = message_bandwidth(logits_bytes, p[L.TP_BW], ramp, low)
        comm += allgather_time(logits_bytes, tp, p[L.TP_ALPHA], lg_bw, p[L.OH_COLL])
        if dp > 1.0:
            rows_bytes = lm_rows * hidden * p[L.H_BYTES]
            rows_bw = message_bandwidth(rows_bytes, p[L.TP_BW], ramp, low)
            comm += allgather_time(rows_bytes, tp, p[L.TP_ALPHA], rows_bw, p[L.OH_COLL])
    # --- pipeline stages hand the hidden states on
    comm += (p[L.PP] - 1.0) * p2p_time(act_bytes, p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
    if p[L.PP] <= 1.0:
        kernels = comp + mem + comm + oh
        if p[L.ASYNC_SCHEDULING] > 0.0:
            # the host prepares this iteration while the previous one's kernels run: the longer of the two sets the pace
            host = max(0.0, host - kernels)
        elif p[L.DECODE_HOST_OVERLAP] > 0.0 and prefill_tokens == 0.0:
            # an overlap scheduler prepares the next decode batch while this one runs: its per-step work hides behind
            # the kernels, the per-sequence work stays
            host -= min(p[L.OH_STEP], kernels)
    oh += host
    return comp + mem + comm + oh, comp, mem, comm, oh


@kernel
def step_time(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, logit_seqs):
    """Total seconds of one iteration (see :func:`step_cost`); what the event loop calls."""
    return step_cost(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, logit_seqs)[0]


@kernel
def causal_pairs(new_tokens, past_tokens):
    """Attention pairs of a causal chunk of ``new_tokens`` after ``past_tokens`` cached: q p + q (q + 1) / 2."""
    return new_tokens * past_tokens + 0.5 * new_tokens * (new_tokens + 1.0)


@kernel
def prefill_pairs(p, new_tokens, past_tokens):
    """Attention pairs of one prefill chunk: causal for decoders, all-to-all (q (p + q)) for encoders."""
    if p[L.CAUSAL] > 0.0:
        return causal_pairs(new_tokens, past_tokens)
    return new_tokens * (new_tokens + past_tokens)


@kernel
def decode_step_time(p, batch, context_tokens):
    """A pure-decode iteration: ``batch`` requests each attending to ``context_tokens`` KV tokens."""
    return step_cost(p, 0.0, 0.0, 0.0, batch, batch * context_tokens, batch)[0]


@kernel
def prefill_time(p, batch, prompt_tokens, past_tokens):
    """A pure-prefill iteration of ``batch`` prompts of ``prompt_tokens`` after ``past_tokens`` cached each."""
    logits = batch if p[L.HAS_LM_HEAD] > 0.0 else 0.0
    pairs = batch * prefill_pairs(p, prompt_tokens, past_tokens)
    return step_cost(p, batch * prompt_tokens, pairs, batch * (prompt_tokens + past_tokens), 0.0, 0.0, logits)[0]
