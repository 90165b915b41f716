"""The model's size arithmetic: parameter counts, the GEMM shapes of a layer on one TP shard, KV-cache bytes per
token, and the weight and KV bytes one device of a parallel layout holds. It depends only on the configs and is
shared by the compiled engines, the calibration's measurement plans and the tests."""

from __future__ import annotations

import math

from .config.hardware import DTYPE_BYTES
from .config.model import Model
from .config.scenario import Parallel

__all__ = ["ffn_matrices", "kv_bytes_per_token_layer", "layer_gemm_shapes", "memory_per_device", "param_count"]


def _attention_params(m: Model) -> float:
    """Attention weights of one layer (unsharded)."""
    h = m.hidden_size
    if m.mla is not None:
        a = m.mla
        q = h * m.n_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim)
        if a.q_lora_rank is not None:
            q = h * a.q_lora_rank + a.q_lora_rank * m.n_heads * (a.qk_nope_head_dim + a.qk_rope_head_dim)
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank * m.n_heads * (
            a.qk_nope_head_dim + a.v_head_dim
        )
        return q + kv + m.n_heads * a.v_head_dim * h
    return h * (m.n_heads + 2 * m.n_kv_heads) * m.head_dim + m.n_heads * m.head_dim * h


def ffn_matrices(m: Model) -> int:
    return 3 if m.ffn_gated else 2


def layer_gemm_shapes(m: Model, tp: float = 1.0) -> tuple[tuple[float, float], ...]:
    """(k, n) of one standard-attention layer's QKV, output projection, FFN up (gate+up when gated) and down
    GEMMs on one TP shard; KV heads are replicated when fewer than the ranks."""
    heads = m.n_heads / tp
    kv_heads = max(m.n_kv_heads / tp, 1.0)
    h = m.hidden_size
    return (
        (h, (heads + 2.0 * kv_heads) * m.head_dim),
        (heads * m.head_dim, h),
        (h, (ffn_matrices(m) - 1) * m.ffn_hidden_size / tp),
        (m.ffn_hidden_size / tp, h),
    )


def param_count(m: Model) -> dict[str, float]:
    """Parameter counts: total, active per token, and the parts (embedding, head, attention, FFN).

    Norm weights are included; biases and position embeddings of encoders are not (< 1%).
    """
    h = m.hidden_size
    nm = ffn_matrices(m)
    attn = m.n_layers * _attention_params(m)
    norms = m.n_layers * 2 * h + h
    embed = m.vocab_size * h
    head = m.vocab_size * h if (m.has_lm_head and not m.tied_embeddings) else 0.0
    if m.moe is None:
        ffn_total = ffn_active = m.n_layers * nm * h * m.ffn_hidden_size
    else:
        e = m.moe
        n_moe = m.n_layers - e.first_dense_layers
        dense = e.first_dense_layers * nm * h * m.ffn_hidden_size
        shared_f = e.shared_expert_ffn_hidden_size or e.expert_ffn_hidden_size
        shared = e.n_shared_experts * nm * h * shared_f
        one = nm * h * e.expert_ffn_hidden_size
        router = h * e.n_experts
        ffn_total = dense + n_moe * (e.n_experts * one + shared + router)
        ffn_active = dense + n_moe * (e.top_k * one + shared + router)
    total = attn + norms + embed + head + ffn_total
    active = attn + norms + embed + head + ffn_active
    return {"total": total, "active": active, "embedding": embed, "lm_head": head, "attention": attn, "ffn": ffn_total}


def kv_bytes_per_token_layer(m: Model, tp: int, kv_dtype: str) -> float:
    """KV-cache bytes per token per layer on one device (KV heads replicate when tp > n_kv_heads)."""
    b = DTYPE_BYTES[kv_dtype]
    if m.mla is not None:  # latent + shared RoPE key, replicated on every TP rank
        return (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * b
    kv_heads = max(m.n_kv_heads / tp, 1.0)
    return 2.0 * kv_heads * m.head_dim * b


def memory_per_device(m: Model, par: Parallel, wb: float, kv_tok: float) -> tuple[float, float]:
    """Weight bytes on the most loaded device, and KV bytes per token held by one device."""
    tp, pp, ep = par.tp, par.pp, par.ep
    counts = param_count(m)
    h = m.hidden_size
    layers_stage = math.ceil(m.n_layers / pp)
    if m.mla is not None:  # down-projections are replicated, not sharded
        a = m.mla
        repl = h * ((a.q_lora_rank or 0) + a.kv_lora_rank + a.qk_rope_head_dim)
        attn_dev = repl + (_attention_params(m) - repl) / tp
    else:  # Q and O shard by head; K and V shard until each rank holds one KV head, then replicate
        attn_dev = 2 * h * m.n_heads * m.head_dim / tp + 2 * h * max(m.n_kv_heads / tp, 1.0) * m.head_dim
    ffn_dev = counts["ffn"] / m.n_layers / tp
    if m.moe is not None:
        e = m.moe
        nm = ffn_matrices(m)
        shared_f = e.n_shared_experts * (e.shared_expert_ffn_hidden_size or e.expert_ffn_hidden_size)
        moe_layer = e.n_experts / ep * nm * h * e.expert_ffn_hidden_size / (tp // ep) + nm * h * shared_f / tp
        moe_layer += h * e.n_experts
        dense_layer = nm * h * m.ffn_hidden_size / tp
        n_moe = m.n_layers - e.first_dense_layers
        # the most loaded stage holds the most MoE layers
        moe_in_stage = min(layers_stage, n_moe)
        ffn_stage = moe_in_stage * moe_layer + (layers_stage - moe_in_stage) * dense_layer
    else:
        ffn_stage = layers_stage * ffn_dev
    layer_stage = layers_stage * (attn_dev + 2 * h) + ffn_stage
    embed = counts["embedding"] / tp
    head = counts["lm_head"] / tp
    final_norm = m.hidden_size
    ends = embed + head + final_norm if pp == 1 else max(embed, head + final_norm)  # first vs last stage
    weights = (layer_stage + ends) * wb
    return weights, kv_tok * layers_stage
