"""Kernel costs against hand computations, closed forms, Monte Carlo and the compiled twins."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numba.core import types
from numba.core.caching import NullCache

import hermes_fast as hf
from hermes_fast.kernels import (
    allgather_time,
    allreduce_time,
    attention_cost,
    causal_pairs,
    decode_step_time,
    expected_active_experts,
    gemm_cost,
    grouped_gemm_cost,
    p2p_time,
    step_cost,
)
from hermes_fast.kernels import layout as L
from hermes_fast.kernels._jit import kernel
from hermes_fast.kernels.grid import decode_step_times, estimate_points, pipelined_time
from hermes_fast.kernels.iteration import iteration_time
from hermes_fast.kernels.step import host_time

PEAK_BF16 = 989.0e12  # H100 SXM dense BF16, the ideal device's peak
BW = 3.35e12


def nvlink(dev):
    """(alpha_s, effective bandwidth, overhead_s) of a device's scale-up link for collectives."""
    eff = dev.efficiency
    return (
        dev.scale_up.latency_s,
        dev.scale_up.bandwidth_bytes_per_s * eff.collective_efficiency,
        eff.collective_overhead_s,
    )


def decode_comm(engine, batch, context):
    """Communication seconds of a pure-decode step."""
    return step_cost(engine.params, 0.0, 0.0, 0.0, batch, batch * context, batch)[3]


def hand_prefill_flop(model, batch, seq):
    """2 x (GEMM weights per layer) x tokens + causal attention + LM head on the last token of each prompt."""
    h, hd, nh, kv, f = model.hidden_size, model.head_dim, model.n_heads, model.n_kv_heads, model.ffn_hidden_size
    per_layer_weights = h * (nh + 2 * kv) * hd + nh * hd * h + 3 * h * f
    tokens = batch * seq
    pairs = batch * seq * (seq + 1) / 2
    attention = 2 * nh * (hd + hd) * pairs  # QK^T and PV
    return model.n_layers * (2 * per_layer_weights * tokens + attention) + 2 * batch * h * model.vocab_size


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-70b"])
@pytest.mark.parametrize("batch,seq", [(1, 1024), (4, 4096)])
def test_prefill_flop_matches_hand_count(catalog, build, name, batch, seq):
    model = catalog.model(name)
    p = build(name, device="ideal_compute").params
    tokens = batch * seq
    total, comp, mem, comm, oh = step_cost(p, tokens, batch * causal_pairs(seq, 0.0), tokens, 0.0, 0.0, batch)
    flop = comp * PEAK_BF16
    assert flop == pytest.approx(hand_prefill_flop(model, batch, seq), rel=1e-9)
    assert comm == 0.0 and oh == 0.0
    # and the textbook rule: 2 x non-embedding params x tokens, plus attention, within 1%
    from hermes_fast.sizes import param_count

    counts = param_count(model)
    non_embedding = counts["total"] - counts["embedding"] - counts["lm_head"] - model.n_layers * 2 * model.hidden_size
    attention = model.n_layers * 4 * model.n_heads * model.head_dim * batch * seq * (seq + 1) / 2
    assert flop == pytest.approx(2 * non_embedding * tokens + attention, rel=0.01)


def test_decode_batch1_is_memory_bound_at_weight_bytes_over_bandwidth(catalog, build):
    model = catalog.model("llama-3.1-8b")
    ce = build("llama-3.1-8b", device="ideal")
    total, comp, mem, comm, oh = step_cost(ce.params, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0)
    weights_read = ce.weights_bytes - model.vocab_size * model.hidden_size * 2  # embedding: one row gathered
    assert comp < 0.05 * mem
    assert total == pytest.approx(weights_read / BW, rel=0.02)
    # with the default (uncalibrated) efficiencies it is still memory-bound
    real = build("llama-3.1-8b")
    total, comp, mem, comm, oh = step_cost(real.params, 0.0, 0.0, 0.0, 1.0, 1024.0, 1.0)
    assert mem > 5 * comp and mem > oh
    assert mem == pytest.approx(weights_read / (BW * 0.8), rel=0.03)


def test_large_batch_prefill_is_compute_bound(build):
    p = build("llama-3.1-8b").params
    total, comp, mem, comm, oh = step_cost(p, 8 * 2048.0, 8 * causal_pairs(2048.0, 0.0), 8 * 2048.0, 0.0, 0.0, 8.0)
    assert comp > 5 * mem  # what memory time remains is norms/activations and the LM head
    assert comp > 0.85 * total


def test_allreduce_follows_alpha_beta():
    s, n, alpha, bw, oh = 8.0e6, 8.0, 0.8e-6, 382.5e9, 5e-6
    assert allreduce_time(s, n, alpha, bw, oh) == pytest.approx(oh + 2 * (n - 1) * (alpha + s / n / bw), rel=1e-15)
    assert allgather_time(s, n, alpha, bw, oh) == pytest.approx(oh + (n - 1) * (alpha + s / n / bw), rel=1e-15)
    assert allreduce_time(s, 1.0, alpha, bw, oh) == 0.0
    assert p2p_time(s, alpha, bw, oh) == pytest.approx(oh + alpha + s / bw)


def test_tp_step_communication_is_two_allreduces_per_layer(catalog, build):
    model = catalog.model("llama-3.1-70b")
    alpha, beta, oh = nvlink(catalog.device("h100_sxm"))
    batch = 16.0
    comm = decode_comm(build("llama-3.1-70b", tp=8), batch, 2048.0)
    s = batch * model.hidden_size * 2
    per_allreduce = oh + 2 * 7 * (alpha + s / 8 / beta)
    logits = batch * model.vocab_size * 2
    gather = oh + 7 * (alpha + logits / 8 / beta)
    assert comm == pytest.approx(2 * model.n_layers * per_allreduce + gather, rel=1e-12)


def test_tp_beyond_scale_up_domain_uses_scale_out_link(catalog, build):
    dev = catalog.device("h100_sxm")
    inside = build("llama-3.1-405b", tp=8).params
    outside = build("llama-3.1-405b", tp=16).params
    assert inside[L.TP_BW] == pytest.approx(dev.scale_up.bandwidth_bytes_per_s * dev.efficiency.collective_efficiency)
    assert outside[L.TP_BW] == pytest.approx(dev.scale_out.bandwidth_bytes_per_s * dev.efficiency.collective_efficiency)


def test_expected_active_experts_matches_monte_carlo():
    rng = np.random.default_rng(7)
    n_experts, top_k = 64, 6
    for tokens in (1, 4, 16, 64):
        hits = []
        for _ in range(2000):
            chosen = np.concatenate([rng.choice(n_experts, top_k, replace=False) for _ in range(tokens)])
            hits.append(len(np.unique(chosen)))
        expected = expected_active_experts(float(tokens), float(n_experts), float(top_k))
        assert expected == pytest.approx(np.mean(hits), rel=0.01)


def test_moe_decode_reads_active_not_total_experts(catalog, build):
    from hermes_fast.sizes import param_count

    model = catalog.model("mixtral-8x7b")
    ce = build("mixtral-8x7b", device="ideal")
    counts = param_count(model)
    mem = step_cost(ce.params, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0)[2]
    active_read = (counts["active"] - counts["embedding"]) * 2  # bytes of the weights one token touches
    total_read = (counts["total"] - counts["embedding"]) * 2
    assert mem * BW == pytest.approx(active_read, rel=0.01)
    assert mem * BW < 0.4 * total_read
    # a large batch touches every expert: the step reads (almost) all weights
    big = 4096.0
    assert expected_active_experts(big, 8.0, 2.0) == pytest.approx(8.0)
    exp_bytes = grouped_gemm_cost(big * 2, 8.0, 4096.0, 2 * 14336.0, 1.0, 0.0, 1.0, 2.0, 0.0)[1]
    assert exp_bytes == pytest.approx(8 * 4096 * 2 * 14336 * 2.0)


def test_moe_flops_follow_top_k(catalog, build):
    model = catalog.model("mixtral-8x7b")
    p = build("mixtral-8x7b", device="ideal_compute").params
    tokens = 2048.0
    comp = step_cost(p, tokens, causal_pairs(tokens, 0.0), tokens, 0.0, 0.0, 1.0)[1]
    h, f = model.hidden_size, model.moe.expert_ffn_hidden_size
    expert_flop = model.n_layers * 2 * tokens * model.moe.top_k * 3 * h * f
    router_flop = model.n_layers * 2 * tokens * h * model.moe.n_experts
    attn_proj = (
        model.n_layers
        * 2
        * tokens
        * (h * (model.n_heads + 2 * model.n_kv_heads) * model.head_dim * 2 - 2 * model.n_kv_heads * model.head_dim * h)
    )
    attn = model.n_layers * 4 * model.n_heads * model.head_dim * causal_pairs(tokens, 0.0)
    head = 2 * h * model.vocab_size
    assert comp * PEAK_BF16 == pytest.approx(expert_flop + router_flop + attn_proj + attn + head, rel=1e-9)


def test_fp8_halves_weight_bytes_and_kv(build):
    bf16 = build("llama-3.1-70b", tp=4)
    fp8 = build("llama-3.1-70b", tp=4, weight="fp8", activation="fp8", kv="fp8")
    assert fp8.weights_bytes / bf16.weights_bytes == pytest.approx(0.5, rel=1e-12)
    assert fp8.kv_bytes_per_token / bf16.kv_bytes_per_token == pytest.approx(0.5, rel=1e-12)
    # fp8 GEMMs use the fp8 peak: the compute side of the roofline (per token) is cheaper
    assert fp8.params[L.G_FFN_UP + 1] < bf16.params[L.G_FFN_UP + 1]
    # fp4 keeps a scale byte per 32 elements beside them (MXFP4): (0.5 + 1/32) / 2 B a weight; int4 (GPTQ / AWQ,
    # group 128) an FP16 scale and a 4-bit zero per 128: (0.5 + 2.5/128) / 2
    fp4 = build("llama-3.1-70b", tp=4, weight="fp4")
    assert fp4.weights_bytes / bf16.weights_bytes == pytest.approx((0.5 + 1 / 32) / 2, rel=1e-12)
    int4 = build("llama-3.1-70b", tp=4, weight="int4")
    assert int4.weights_bytes / bf16.weights_bytes == pytest.approx((0.5 + 2.5 / 128) / 2, rel=1e-12)


def test_gqa_and_mla_kv_bytes(build):
    # Llama-3.1-8B: 2 (K,V) x 8 kv heads x 128 dims x 2 B x 32 layers
    assert build("llama-3.1-8b").kv_bytes_per_token == 2 * 8 * 128 * 2 * 32
    # TP8 leaves one KV head per device; TP16 would replicate it, never below one head
    assert build("llama-3.1-70b", tp=8).kv_bytes_per_token == 2 * 1 * 128 * 2 * 80
    # DeepSeek-V3 MLA: (kv_lora 512 + rope 64) x 2 B per layer, replicated on TP ranks
    assert build("deepseek-v3", tp=8).kv_bytes_per_token == (512 + 64) * 2 * 61


def test_gemm_roofline_shape():
    # memory-bound at small m: time = weights / bw; compute-bound at large m: FLOP / rate
    c, m = gemm_cost(1.0, 8192.0, 8192.0, 1.0, 1e15, 0.0, 1e12, 2.0, 2.0)
    assert m == pytest.approx((8192 * 8192 * 2 + 2 * 8192 * 2) / 1e12)
    c, m = gemm_cost(16384.0, 8192.0, 8192.0, 1.0, 1e15, 0.0, 1e12, 2.0, 2.0)
    assert c == pytest.approx(2 * 16384 * 8192 * 8192 / 1e15)
    assert gemm_cost(0.0, 10.0, 10.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0) == (0.0, 0.0)


def test_attention_cost_counts_pairs_and_kv_reads():
    c, m = attention_cost(1000.0, 8.0, 128.0, 128.0, 500.0, 4096.0, 10.0, 2.0, 1e12, 0.0, 1e12)
    assert c == pytest.approx(2 * 1000 * 8 * 256 / 1e12)
    assert m == pytest.approx((500 * 4096 + 10 * 8 * 256 * 2) / 1e12)


def test_sliding_window_caps_decode_context(catalog, build):
    model = catalog.model("gpt-oss-120b")
    p = build("gpt-oss-120b").params
    full_only = p.copy()
    full_only[L.N_SWA] = 0.0
    batch, ctx, window = 8.0, 65536.0, float(model.sliding_window_tokens)
    mem_windowed = step_cost(p, 0.0, 0.0, 0.0, batch, batch * ctx, batch)[2]
    mem_full = step_cost(full_only, 0.0, 0.0, 0.0, batch, batch * ctx, batch)[2]
    # windowed layers read only the last `window` tokens of each request's KV (decode attention is memory-bound)
    saved = model.sliding_window_layers * batch * (ctx - window) * p[L.KV_TOKEN_BYTES] / p[L.MEM_BW]
    assert mem_full - mem_windowed == pytest.approx(saved, rel=1e-9)
    assert decode_step_time(p, batch, 64.0) < decode_step_time(p, batch, ctx)


def test_pipeline_iteration_fills_from_idle_and_stays_full_back_to_back(build):
    """PP 4, by hand from one micro-batch's step cost: an iteration from an idle engine lasts one traversal
    plus a stage per further micro-batch; back to back, max(traversal, micro-batches x stage)."""
    p = build("llama-3.1-70b", tp=2, pp=4).params
    for n_seq in (1.0, 2.0, 4.0, 12.0):
        n_mb = min(4.0, n_seq)
        mb = n_seq / n_mb
        mb_s = step_cost(p, 0.0, 0.0, 0.0, mb, mb * 3000.0, mb)[0]
        traversal = mb_s - host_time(p, mb)
        hand = p2p_time(mb * p[L.HIDDEN] * p[L.H_BYTES], p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
        stage = (traversal - 3 * hand) / 4 + hand
        args = (0.0, 0.0, 0.0, n_seq, n_seq * 3000.0, n_seq, n_seq)
        for f in (iteration_time, iteration_time.jit):
            fill = f(p, *args, False)
            assert fill == pytest.approx(traversal + (n_mb - 1) * stage + host_time(p, n_seq), rel=1e-12)
            full = f(p, *args, True)
            assert full == pytest.approx(max(traversal, n_mb * stage) + host_time(p, n_seq), rel=1e-12)
            assert full <= fill  # keeping the pipeline full never costs more
        if n_seq >= 4.0:  # four micro-batches fill four stages: one stage per micro-batch, hand-offs included
            assert full == pytest.approx(4 * stage + host_time(p, n_seq), rel=1e-12)


def test_pipeline_parallel_adds_hand_offs(catalog, build):
    model = catalog.model("llama-3.1-70b")
    alpha, beta, oh = nvlink(catalog.device("h100_sxm"))
    one = build("llama-3.1-70b", tp=4)
    two = build("llama-3.1-70b", tp=4, pp=2)
    batch = 8.0
    hand_off = oh + alpha + batch * model.hidden_size * 2 / beta
    assert decode_comm(two, batch, 1000.0) - decode_comm(one, batch, 1000.0) == pytest.approx(hand_off, rel=1e-9)
    assert two.weights_bytes < 0.55 * one.weights_bytes


def test_host_costs_are_paid_once_per_iteration(catalog):
    """The engine's host costs add once per step (and per TP rank, per emitting sequence), whatever the
    layers or PP."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.kernels import prefill_time

    base = catalog.device("h100_sxm")
    host = {"step_overhead_s": 0.015, "step_overhead_per_tp_rank_s": 0.002, "sequence_overhead_s": 1e-4}
    slow = dataclasses.replace(base, efficiency=dataclasses.replace(base.efficiency, **host))
    for pp in (1, 2):
        engines = [
            compile_engine(catalog.model("llama-3.1-70b"), d, Parallel(tp=4, pp=pp), Dtypes()).params
            for d in (base, slow)
        ]
        # per step, per TP rank beyond the first (3 at TP 4), per sequence that emits a token; once for the
        # batch also where PP splits it into micro-batches (the estimate's and the serving loop's steps)
        cases = (
            (decode_step_time, (64.0, 3000.0), 64),
            (prefill_time, (2.0, 1000.0, 0.0), 2),
            (pipelined_time, (64.0, 0.0, 3000.0, True), 64),
            (pipelined_time, (2.0, 1000.0, 0.0, False), 2),
            (iteration_time, (0.0, 0.0, 0.0, 64.0, 64.0 * 3000.0, 64.0, 64.0, True), 64),
            (iteration_time, (0.0, 0.0, 0.0, 64.0, 64.0 * 3000.0, 64.0, 64.0, False), 64),
            (iteration_time, (2000.0, 2.0 * causal_pairs(1000.0, 0.0), 2000.0, 0.0, 0.0, 2.0, 2.0, False), 2),
            (iteration_time, (2000.0, 2.0 * causal_pairs(1000.0, 0.0), 2000.0, 0.0, 0.0, 2.0, 2.0, True), 2),
        )
        for f, args, seqs in cases:
            t0, t1 = (f(p, *args) for p in engines)
            if isinstance(t0, tuple):  # pipelined_time: (seconds, bound)
                t0, t1 = t0[0], t1[0]
            assert t1 - t0 == pytest.approx(0.015 + 3 * 0.002 + seqs * 1e-4, rel=1e-9), (f.__name__, pp)
            assert step_cost(engines[1], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)[0] == 0.0  # an empty step costs nothing


def test_encoder_prefill_is_bidirectional(build):
    from hermes_fast.kernels import prefill_pairs

    enc = build("e5-large", device="ideal_compute").params
    dec = build("llama-3.1-8b").params
    assert enc[L.CAUSAL] == 0.0 and enc[L.HAS_LM_HEAD] == 0.0
    assert prefill_pairs(enc, 512.0, 0.0) == 512.0 * 512.0  # every token sees every token
    assert prefill_pairs(dec, 512.0, 0.0) == causal_pairs(512.0, 0.0)
    # attention FLOPs of a 512-token encoder pass: 2 x heads x (d + d) x 512^2 per layer, no LM head
    with_attention = step_cost(enc, 512.0, 512.0**2, 512.0, 0.0, 0.0, 0.0)[1]
    without = step_cost(enc, 512.0, 0.0, 512.0, 0.0, 0.0, 0.0)[1]
    assert (with_attention - without) * PEAK_BF16 == pytest.approx(24 * 2 * 16 * (64 + 64) * 512.0**2, rel=1e-9)


# --- plain-Python and compiled twins agree ------------------------------------------------------

TWIN_ENGINES = [
    ("llama-3.1-8b", {}),
    ("llama-3.1-70b", {"tp": 8, "pp": 2}),
    ("mixtral-8x7b", {"tp": 2, "ep": 2}),
    ("deepseek-v3", {"tp": 8, "ep": 8, "weight": "fp8", "activation": "fp8"}),
    ("gpt-oss-120b", {"tp": 2, "weight": "fp4"}),
    ("e5-base", {}),
    ("qwen3-235b-a22b", {"tp": 4, "pp": 2}),
    ("deepseek-v3", {"tp": 8, "ep": 8, "attention_dp": True, "weight": "fp8", "activation": "fp8"}),
    ("llama-3.1-70b", {"tp": 4, "cp": 2}),
]


@pytest.mark.parametrize("name,kw", TWIN_ENGINES)
def test_step_cost_twins_agree(build, name, kw):
    rng = np.random.default_rng(hash(name) % 2**32)
    p = build(name, **kw).params
    for _ in range(50):
        tp_ = float(rng.integers(0, 9000)) * float(rng.random() < 0.7)
        past = float(rng.integers(0, 4000))
        nd = float(rng.integers(0, 300))
        args = (p, tp_, causal_pairs(tp_, past), tp_ + past, nd, nd * float(rng.integers(1, 8000)), nd + 1.0)
        slow = step_cost(*args)
        fast = step_cost.jit(*args)
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0.0)


def test_leaf_kernel_twins_agree():
    rng = np.random.default_rng(3)
    for _ in range(200):
        x = rng.uniform(1.0, 1e6, size=11)
        for fn, args in [
            (gemm_cost, (x[0], x[1], x[2], 1.0, x[3] * 1e9, x[4] / 1e3, x[5] * 1e6, 2.0, 2.0)),
            (grouped_gemm_cost, (x[0], x[1] / 1e3 + 1.0, x[2], x[3], x[4] * 1e9, 16.0, x[5] * 1e6, 1.0, 2.0)),
            (attention_cost, (x[0], 8.0, 128.0, 128.0, x[1], x[2], x[3], 2.0, x[4] * 1e9, 512.0, x[5] * 1e6)),
            (allreduce_time, (x[6], float(int(x[7]) % 16 + 1), 1e-6, x[8] * 1e5, 5e-6)),
            (allgather_time, (x[6], float(int(x[7]) % 16 + 1), 1e-6, x[8] * 1e5, 5e-6)),
            (expected_active_experts, (x[9] / 100.0, 256.0, 8.0)),
        ]:
            np.testing.assert_allclose(fn.jit(*args), fn(*args), rtol=1e-12, atol=0.0)


def test_grid_kernel_twins_agree(build):
    params = np.stack([build("llama-3.1-8b").params, build("llama-3.1-70b", tp=4, pp=2).params])
    rng = np.random.default_rng(11)
    n = 64
    cfg = rng.integers(0, 2, n).astype(np.int64)
    batch = rng.integers(1, 256, n).astype(float)
    prompt = rng.integers(1, 8192, n).astype(float)
    output = rng.integers(1, 2048, n).astype(float)
    context = prompt + 0.5 * output
    context[::3] += 100.0
    outs = []
    for fn in (estimate_points, estimate_points.jit):
        o = [np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int8), np.empty(n, np.int8)]
        fn(params, cfg, batch, prompt, output, context, np.floor(0.5 * prompt) * (cfg == 0), *o)
        outs.append(o)
    for slow, fast in zip(outs[0], outs[1], strict=True):
        np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0.0)
    slow, fast = np.empty(n), np.empty(n)
    decode_step_times(params, cfg, batch, context, slow)
    decode_step_times.jit(params, cfg, batch, context, fast)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=0.0)


def test_expert_parallel_exchange_and_busiest_rank(catalog, build):
    model = catalog.model("mixtral-8x7b")
    dev = catalog.device("h100_sxm")
    alpha, beta, oh = nvlink(dev)
    ep = build("mixtral-8x7b", tp=8, ep=8)
    batch = 64.0
    c_tp = decode_comm(build("mixtral-8x7b", tp=8), batch, 512.0)
    c_ep = decode_comm(ep, batch, 512.0)
    act = batch * model.hidden_size * 2
    allreduce = oh + 2 * 7 * (alpha + act / 8 / beta)
    alltoall = oh + alpha + 7 * act * model.moe.top_k / 8 / 8 / beta  # peer sends overlap: one latency
    # EP replaces the post-MoE all-reduce (tp/ep = 1) by a dispatch and a combine all-to-all
    assert c_ep - c_tp == pytest.approx(model.n_layers * (2 * alltoall - allreduce), rel=1e-9)
    # at batch 1 the busiest EP rank still reads a whole expert, not 2/8 of one
    one = step_cost(ep.params, 0.0, 0.0, 0.0, 1.0, 512.0, 1.0)[2]
    per_expert = 3 * model.hidden_size * model.moe.expert_ffn_hidden_size * 2 / (dev.memory_bandwidth_bytes_per_s * 0.8)
    assert one > model.n_layers * per_expert


def test_kv_capacity_and_weights_by_hand(catalog, build):
    model = catalog.model("llama-3.1-8b")
    ce = build("llama-3.1-8b")
    weights = 2.0 * 8_030_261_248  # bf16, every parameter on one device
    reserve = 8192 * (4 * 4096 + 3 * 14336) * 2
    assert ce.weights_bytes == pytest.approx(weights, rel=1e-12)
    assert ce.kv_capacity_tokens == (80e9 * 0.9 - weights - reserve) // (2 * 8 * 128 * 2 * 32)
    assert model.n_layers == 32
    # TP16 on 8 KV heads: Q/O shard 16 ways, K/V stop at one head per device and replicate
    big = catalog.model("llama-3.1-405b")
    tp16 = build("llama-3.1-405b", tp=16)
    h, hd = big.hidden_size, big.head_dim
    attn = 2 * h * big.n_heads * hd / 16 + 2 * h * 1 * hd
    ffn = 3 * h * big.ffn_hidden_size / 16
    per_device = big.n_layers * (attn + ffn + 2 * h) + 2 * big.vocab_size * h / 16 + h  # + final norm
    assert tp16.weights_bytes == pytest.approx(per_device * 2, rel=1e-12)
    # PP2: half the layers per stage, and the larger of embedding / LM head on the busiest stage
    pp2 = build("llama-3.1-8b", pp=2)
    m8 = catalog.model("llama-3.1-8b")
    layer = 4096 * (32 + 16) * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336 + 2 * 4096
    # last stage: LM head + final norm
    assert pp2.weights_bytes == pytest.approx((16 * layer + m8.vocab_size * 4096 + 4096) * 2, rel=1e-12)


def test_attention_dtype_follows_kv(catalog):
    from hermes_fast.rates import attention_dtype, device_rates

    b200 = catalog.device("b200")
    assert attention_dtype("fp4", "bf16") == "bf16" and attention_dtype("fp4", "fp8") == "fp8"
    assert attention_dtype("bf16", "fp8") == "bf16"
    eff = b200.efficiency.attention_compute_efficiency
    assert device_rates(b200, "fp4", "bf16").attention_flops == pytest.approx(b200.peak_flop_per_s.bf16 * eff)
    assert device_rates(b200, "fp4", "bf16").gemm_flops > device_rates(b200, "fp8", "bf16").gemm_flops


def test_mla_moe_prefill_flop_and_kv_reads_by_hand(catalog, build):
    m = catalog.model("deepseek-v3")
    a, e, h = m.mla, m.moe, m.hidden_size
    p = build("deepseek-v3", device="ideal_compute").params
    t = 1024.0
    comp = step_cost(p, t, causal_pairs(t, 0.0), t, 0.0, 0.0, 1.0)[1]
    qk, heads = a.qk_nope_head_dim + a.qk_rope_head_dim, m.n_heads
    projections = (
        h * (a.q_lora_rank + a.kv_lora_rank + a.qk_rope_head_dim)  # fused down-projections
        + a.q_lora_rank * heads * qk  # query up-projection
        + a.kv_lora_rank * heads * (a.qk_nope_head_dim + a.v_head_dim)  # KV up-projection of the t context tokens
        + heads * a.v_head_dim * h  # output projection
    )
    attention = 2 * heads * (qk + a.v_head_dim) * causal_pairs(t, 0.0)
    dense_ffn = 3 * h * m.ffn_hidden_size
    moe_ffn = h * e.n_experts + (e.top_k + e.n_shared_experts) * 3 * h * e.expert_ffn_hidden_size
    flop = (
        m.n_layers * (2 * t * projections + attention)
        + e.first_dense_layers * 2 * t * dense_ffn
        + (m.n_layers - e.first_dense_layers) * 2 * t * moe_ffn
        + 2 * h * m.vocab_size
    )
    assert comp * PEAK_BF16 == pytest.approx(flop, rel=1e-9)
    # weight-absorbed decode reads the 576-wide latent per cached token and layer, shared by all heads
    real = build("deepseek-v3", tp=8, ep=8, weight="fp8", activation="fp8")
    mem = [step_cost(real.params, 0.0, 0.0, 0.0, 32.0, 32.0 * c, 32.0)[2] for c in (20_000.0, 30_000.0)]
    per_token = (a.kv_lora_rank + a.qk_rope_head_dim) * 2  # bf16 KV
    assert mem[1] - mem[0] == pytest.approx(m.n_layers * 32 * 10_000 * per_token / real.params[L.MEM_BW], rel=1e-9)


# ---------------------------------------------------------------- compile-time behaviour of the twins


@kernel
def _literal_probe_callee(x, scale):
    return x * scale


@kernel
def _literal_probe_caller(x):
    return _literal_probe_callee(x, 2) + _literal_probe_callee(x, 3)


def test_calls_between_kernels_compile_one_version_per_argument_type():
    """numba would compile the callee once per literal (2 and 3); the twins compile it once per type."""
    for twin in (_literal_probe_caller.jit, _literal_probe_callee.jit):  # compile here, not load from a cache
        twin._cache = NullCache()
    assert _literal_probe_caller.jit(1.5) == _literal_probe_caller(1.5) == 7.5
    signatures = list(_literal_probe_callee.jit.overloads)
    assert len(signatures) == 1 and not any(isinstance(a, types.Literal) for a in signatures[0])


_PROBE_SWITCH = True


@kernel
def _probe_untypable(x):
    return x.no_such_attribute  # a float has none: typing this fails


@kernel
def _probe_switched(x):
    if _PROBE_SWITCH and x > 1e300:
        return _probe_untypable(x)
    return x + 1.0


def test_a_specialized_twin_never_compiles_the_pruned_branch():
    """With the switch off the branch is pruned before typing: the call that cannot type is never compiled."""
    from hermes_fast.kernels._jit import specialized

    assert specialized(_probe_switched, _PROBE_SWITCH=False)(1.0) == 2.0
    assert not _probe_untypable.jit.overloads
    with pytest.raises(Exception, match="no_such_attribute"):  # the whole twin does type the branch
        _probe_switched.jit(1.0)
    with pytest.raises(ValueError, match="no kernel reads a global named 'NOT_A_SWITCH'"):
        specialized(_probe_switched, NOT_A_SWITCH=False)


def test_specialized_twins_prune_only_the_kernels_that_read_the_constant():
    from hermes_fast.kernels._jit import specialized
    from hermes_fast.kernels.serving import completion, loop, pipeline

    plain = specialized(loop.serve, PIPELINES=False)
    assert plain is not loop.serve.jit and plain is specialized(loop.serve, PIPELINES=False)
    # finish_iteration reads PIPELINES: specialized; the step cost does not: shared with the whole loop
    assert specialized(completion.finish_iteration, PIPELINES=False) is not completion.finish_iteration.jit
    assert specialized(iteration_time, PIPELINES=False) is iteration_time.jit
    assert specialized(pipeline.stage_done, PIPELINES=False) is not pipeline.stage_done.jit


def test_the_shared_cache_needs_no_home_directory(monkeypatch, tmp_path):
    """An arbitrary user id in a container has no home: no shared cache (numba's own places), no crash."""
    from pathlib import Path

    from hermes_fast.kernels import _jit

    for name in ("HERMES_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert _jit._cache_dir() is None
    monkeypatch.setenv("HERMES_CACHE_DIR", str(tmp_path))
    assert _jit._cache_dir() == tmp_path


# ---------------------------------------------------------------- today's models: decode FLOP and KV by hand

# config.json figures typed here (not read from the catalog): layers, hidden, q heads, kv heads, head dim, vocab,
# experts per token (routed, shared) and their width, dense FFN layers and width, windowed layers and window
HAND_CONFIGS = {
    "llama-4-scout": dict(L=48, h=5120, nh=40, nkv=8, hd=128, V=202048, k=1, s=1, fe=8192, dense=0, fd=16384,
                          swa=36, win=8192, E=16),
    "llama-4-maverick": dict(L=48, h=5120, nh=40, nkv=8, hd=128, V=202048, k=1, s=1, fe=8192, dense=24, fd=16384,
                             swa=36, win=8192, E=128),
    "gpt-oss-20b": dict(L=24, h=2880, nh=64, nkv=8, hd=64, V=201088, k=4, s=0, fe=2880, dense=0, fd=2880,
                        swa=12, win=128, E=32),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HAND_CONFIGS))
@pytest.mark.parametrize("context", [100.0, 20_000.0])
def test_decode_flop_and_kv_bytes_of_new_models_by_hand(build, name, context):
    """One decode token: 2 FLOP per weight of every GEMM it passes (attention projections, router, the top-k and
    shared experts, dense FFN, LM head) + 2 (d_qk + d_v) per head and attended key (windowed layers see at most
    their window); KV per token: 2 x kv heads x head dim x 2 B per layer."""
    c = HAND_CONFIGS[name]
    h, nh, nkv, hd = c["h"], c["nh"], c["nkv"], c["hd"]
    attn_w = h * (nh + 2 * nkv) * hd + nh * hd * h
    moe_w = h * c["E"] + (c["k"] + c["s"]) * 3 * h * c["fe"]
    gemm = c["L"] * attn_w + c["dense"] * 3 * h * c["fd"] + (c["L"] - c["dense"]) * moe_w + h * c["V"]
    keys = (c["L"] - c["swa"]) * context + c["swa"] * min(context, c["win"])
    flop = 2 * gemm + 2 * nh * 2 * hd * keys
    p = build(name, device="ideal_compute").params
    comp = step_cost(p, 0.0, 0.0, 0.0, 1.0, context, 1.0)[1]
    assert comp * PEAK_BF16 == pytest.approx(flop, rel=1e-9)
    assert build(name).kv_bytes_per_token == 2 * nkv * hd * 2 * c["L"]


def test_deepseek_v32_sparse_attention_caps_keys_at_top_k(build):
    """DSA: the attention reads the 2048 keys the indexer selects, as a 2048-token window. With the indexer's own
    pass left out, beyond 2048 cached tokens a decode reads 2048 latents per layer (576 x 2 B) and its FLOP stop
    growing, and below it is DeepSeek-V3; the indexer's pass grows with the whole context (tests/test_indexer.py)."""
    v3, v32 = build("deepseek-v3", device="ideal").params, build("deepseek-v3.2", device="ideal").params
    attention = v32.copy()
    attention[L.IDX_HEADS] = 0.0
    assert step_cost(attention, 0.0, 0.0, 0.0, 1.0, 1000.0, 1.0)[0] == step_cost(v3, 0.0, 0.0, 0.0, 1.0, 1000.0, 1.0)[0]
    far = [step_cost(attention, 0.0, 0.0, 0.0, 8.0, 8.0 * c, 8.0)[0] for c in (4096.0, 65536.0)]
    assert far[0] == far[1]
    read = (
        step_cost(v3, 0.0, 0.0, 0.0, 8.0, 8.0 * 65536.0, 8.0)[0]
        - step_cost(attention, 0.0, 0.0, 0.0, 8.0, 8.0 * 65536.0, 8.0)[0]
    )
    assert read == pytest.approx(61 * 8 * (65536 - 2048) * 576 * 2 / BW, rel=1e-6)
    whole = [step_cost(v32, 0.0, 0.0, 0.0, 8.0, 8.0 * c, 8.0)[0] for c in (4096.0, 65536.0)]
    assert whole[1] > whole[0]


# ------------------------------------------------------- the hybrid: linear-attention layers, a state per sequence

# Qwen3-Next-80B-A3B config.json, typed here: 48 layers, every 4th full attention (16 q / 2 kv heads of 256),
# 36 Gated DeltaNet layers (16 key heads, 32 value heads, 128 x 128 each, conv 4), hidden 2048, 512 experts top-10
# of width 512 plus one shared, vocab 151936
QN = dict(L=48, full=12, lin=36, h=2048, nh=16, nkv=2, hd=256, nk=16, nv=32, dk=128, dv=128, conv=4, E=512,
          k=10, fe=512, V=151936)  # fmt: skip
QN_STATE = QN["nv"] * QN["dk"] * QN["dv"] + (QN["conv"] - 1) * (2 * QN["nk"] * QN["dk"] + QN["nv"] * QN["dv"])


@pytest.fixture(scope="module")
def flat(catalog):
    """The ideal H100 with no decode-attention saturation or bandwidth ramp: every operator a plain roofline."""
    ideal = catalog.device("ideal")
    no_ramp = {"decode_attention_saturation_units": 0.0, "decode_attention_saturation_bytes": 0.0}
    return dataclasses.replace(ideal, efficiency=dataclasses.replace(ideal.efficiency, **no_ramp))


def _compile(model, device, tp=1, **dt):
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel

    return compile_engine(model, device, Parallel(tp=tp), Dtypes(**dt))


def test_hybrid_kv_state_and_capacity_by_hand(catalog):
    """KV only in the 12 attention layers; per sequence a fixed state in the 36 linear layers; the KV capacity and
    what estimate's fits and max batch use, from the config figures (tp=2, fp8 weights, bf16 KV and state)."""
    m = catalog.model("qwen3-next-80b-a3b")
    ce = _compile(m, catalog.device("h100_sxm"), tp=2, weight="fp8")
    c = QN
    h, tp = c["h"], 2
    kv_tok = c["full"] * 2 * max(c["nkv"] / tp, 1) * c["hd"] * 2  # 12 layers x K and V x 1 head x 256 x 2 B
    state = c["lin"] * QN_STATE / tp * 2  # 36 layers x 548,864 elements / 2 ranks x 2 B
    assert QN_STATE == 548_864 and kv_tok == 12_288 and state == pytest.approx(19_759_104)
    assert ce.kv_bytes_per_token == kv_tok and ce.state_bytes_per_seq == state
    assert ce.state_tokens_per_seq == 1608.0  # a sequence's state weighs as much as 1608 tokens of its KV
    # weights per device, fp8 (1 B): attention Q/O shard, K/V one head per rank; linear layers shard by head
    attn = 2 * h * c["nh"] * c["hd"] / tp + 2 * h * 1 * c["hd"]
    kd, vd = c["nk"] * c["dk"], c["nv"] * c["dv"]
    lin = (h * (2 * kd + 2 * vd + 2 * c["nv"]) + vd * h + c["conv"] * (2 * kd + vd) + 2 * c["nv"] + c["dv"]) / tp
    moe = c["E"] * 3 * h * c["fe"] / tp + 3 * h * c["fe"] / tp + h * c["E"]
    weights = c["full"] * attn + c["lin"] * lin + c["L"] * (moe + 2 * h) + 2 * c["V"] * h / tp + h
    assert ce.weights_bytes == pytest.approx(weights, rel=1e-12)
    free = 80e9 * 0.9 - weights - 8192 * (4 * h + 3 * 11 * c["fe"] / tp) * 2
    assert ce.kv_capacity_tokens == math.floor(free / kv_tok)
    assert ce.kv_tokens_beside_states(256) == math.floor((free - 256 * state) / kv_tok)  # one state per slot
    # estimate: a request holds its prompt + output of KV and its state
    sc = {
        "engines": [
            {
                "name": "q",
                "model": "qwen3-next-80b-a3b",
                "device": "h100_sxm",
                "stack": "ideal",
                "parallel": {"tp": 2},
                "dtypes": {"weight": "fp8"},
            }
        ],
        "workload": {"batch_size": 1, "prompt_tokens": 1000, "output_tokens": 392},
    }
    ds = hf.estimate(sc, calibration="none")
    assert int(ds.max_batch_size.item()) == math.floor(math.floor(free / kv_tok) / (1392 + 1608))


def test_hybrid_decode_step_against_all_attention_by_hand(catalog, flat):
    """A decode step of the hybrid less the same model with 48 attention layers: 36 x (linear layer - attention
    layer), each operator a roofline max(FLOP / peak, bytes / bandwidth), bf16 on the flat ideal H100."""
    m = catalog.model("qwen3-next-80b-a3b")
    full = dataclasses.replace(m, linear_attention=None)
    hyb, att = _compile(m, flat), _compile(full, flat)
    c = QN
    h, kd, vd = c["h"], c["nk"] * c["dk"], c["nv"] * c["dv"]

    def gemm(b, k, n):
        return max(2 * b * k * n / PEAK_BF16, (k * n * 2 + b * (k + n) * 2) / BW)

    for b, ctx in ((1.0, 1000.0), (64.0, 4096.0), (256.0, 32768.0)):
        kv_read = b * ctx * 2 * c["nkv"] * c["hd"] * 2 + b * c["nh"] * 2 * c["hd"] * 2  # KV in, queries and out
        attention = (
            gemm(b, h, (c["nh"] + 2 * c["nkv"]) * c["hd"])
            + gemm(b, c["nh"] * c["hd"], h)
            + max(2 * c["nh"] * 2 * c["hd"] * b * ctx / PEAK_BF16, kv_read / BW)
        )
        mixer_flop = 7 * c["nv"] * c["dk"] * c["dv"] + 2 * c["conv"] * (2 * kd + vd)  # per token: O(state)
        mixer_bytes = (2 * kd + 2 * vd) * 2 + 2 * QN_STATE * 2  # activations in and out, state read and written
        linear = (
            gemm(b, h, 2 * kd + 2 * vd + 2 * c["nv"])
            + gemm(b, vd, h)
            + max(b * mixer_flop / PEAK_BF16, b * mixer_bytes / BW)
        )
        got = (
            step_cost(hyb.params, 0.0, 0.0, 0.0, b, b * ctx, b)[0]
            - step_cost(att.params, 0.0, 0.0, 0.0, b, b * ctx, b)[0]
        )
        assert got == pytest.approx(c["lin"] * (linear - attention), rel=1e-9, abs=1e-15)
        # the hybrid's step grows with context through its 12 attention layers only
        more = (
            step_cost(hyb.params, 0.0, 0.0, 0.0, b, b * (ctx + 1000.0), b)[2]
            - step_cost(hyb.params, 0.0, 0.0, 0.0, b, b * ctx, b)[2]
        )
        if b * ctx * 2048 / BW > 2 * c["nh"] * 2 * c["hd"] * b * ctx / PEAK_BF16:  # memory-bound attention
            assert more == pytest.approx(c["full"] * b * 1000.0 * 2 * c["nkv"] * c["hd"] * 2 / BW, rel=1e-9)


def test_hybrid_prefill_mixer_is_linear_in_tokens(catalog, flat):
    """Prefill: the linear layers' mixer costs the same per token at any prompt length (no pairs), so doubling
    the prompt doubles it while the 12 attention layers grow quadratically."""
    m = catalog.model("qwen3-next-80b-a3b")
    p = _compile(m, catalog.device("ideal_compute")).params
    full = _compile(dataclasses.replace(m, linear_attention=None), catalog.device("ideal_compute")).params
    c = QN
    kd, vd = c["nk"] * c["dk"], c["nv"] * c["dv"]
    for t in (1024.0, 8192.0):
        pairs = causal_pairs(t, 0.0)
        diff = step_cost(p, t, pairs, t, 0.0, 0.0, 1.0)[1] - step_cost(full, t, pairs, t, 0.0, 0.0, 1.0)[1]
        linear = 2 * t * (c["h"] * (2 * kd + 2 * vd + 2 * c["nv"]) + vd * c["h"])
        linear += t * (7 * c["nv"] * c["dk"] * c["dv"] + 2 * c["conv"] * (2 * kd + vd))
        attention = 2 * t * (c["h"] * (c["nh"] + 2 * c["nkv"]) * c["hd"] + c["nh"] * c["hd"] * c["h"])
        attention += 2 * c["nh"] * 2 * c["hd"] * pairs
        assert diff * PEAK_BF16 == pytest.approx(c["lin"] * (linear - attention), rel=1e-9)


def test_hybrid_rejects_a_layout_that_splits_its_heads_unevenly(catalog):
    from hermes_fast.compile import check_layout
    from hermes_fast.config import ConfigError, Parallel

    m = catalog.model("qwen3-next-80b-a3b")
    check_layout(m, Parallel(tp=8), "engines[0]")
    few = dataclasses.replace(m, linear_attention=dataclasses.replace(m.linear_attention, n_key_heads=4))
    with pytest.raises(ConfigError, match="linear-attention heads"):
        check_layout(few, Parallel(tp=8), "engines[0]")
