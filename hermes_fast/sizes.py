"""The model's size arithmetic: parameter counts, the GEMM shapes of a layer on one TP shard, KV-cache bytes per
token, and the weight and KV bytes one device of a parallel layout holds. It depends only on the configs and is
shared by the compiled engines, the calibration's measurement plans and the tests."""

from __future__ import annotations

import math

from .config.hardware import DTYPE_BYTES
from .config.model import Model
from .config.scenario import Parallel

__all__ = [
    "attention_tp",
    "ffn_matrices",
    "kv_bytes_per_token_layer",
    "layer_gemm_shapes",
    "linear_attention_flop_per_token",
    "linear_attention_shapes",
    "linear_layers_per_stage",
    "memory_per_device",
    "param_count",
    "state_bytes_per_seq_layer",
]


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


def linear_attention_shapes(m: Model, tp: float = 1.0) -> tuple[tuple[float, float], tuple[float, float]]:
    """(k, n) of one linear-attention layer's input projection (hidden -> queries, keys, values, output gate and
    two scalars per value head) and output projection (values -> hidden) on one TP shard (heads shard)."""
    la = m.linear_attention
    assert la is not None
    h = m.hidden_size
    return (h, (2 * la.key_dim + 2 * la.value_dim + 2 * la.n_value_heads) / tp), (la.value_dim / tp, h)


def _linear_attention_params(m: Model) -> float:
    """Weights of one linear-attention layer (unsharded): both projections, the convolution's taps over queries,
    keys and values, and per value head its decay parameters (2) and the output norm's weights (value_head_dim
    shared by all heads)."""
    la = m.linear_attention
    assert la is not None
    (k_in, n_in), (k_out, n_out) = linear_attention_shapes(m)
    conv = la.conv_kernel * (2 * la.key_dim + la.value_dim)
    return k_in * n_in + k_out * n_out + conv + 2 * la.n_value_heads + la.value_head_dim


def linear_attention_flop_per_token(m: Model, tp: float = 1.0) -> float:
    """FLOP of one linear-attention layer's mixer (outside its projections) per token on one TP shard: the causal
    convolution (2 FLOP per tap and channel) and the state update and read-out, 7 FLOP per state element (decay
    1, recall of the value stored under the key 2, rank-1 delta update 2, read-out by the query 2), the recurrent
    form; work O(state) per token, whatever the context."""
    la = m.linear_attention
    assert la is not None
    recurrent = la.n_value_heads * la.key_head_dim * la.value_head_dim
    conv = 2 * la.key_dim + la.value_dim
    return (7.0 * recurrent + 2.0 * la.conv_kernel * conv) / tp


def state_bytes_per_seq_layer(m: Model, tp: float, state_dtype: str) -> float:
    """Bytes of one sequence's linear-attention state in one layer on one TP shard (heads and channels shard),
    stored in ``state_dtype``; 0 without linear attention."""
    if m.linear_attention is None:
        return 0.0
    return m.linear_attention.state_elements / tp * DTYPE_BYTES[state_dtype]


def linear_layers_per_stage(m: Model, pp: int) -> int:
    """Linear-attention layers on the busiest pipeline stage, spread evenly over the stages (the models interleave
    them with full-attention layers); 0 without linear attention."""
    if m.linear_attention is None:
        return 0
    return min(math.ceil(m.n_layers / pp), math.ceil(m.linear_attention.n_layers / pp))


def attention_tp(par: Parallel) -> int:
    """Devices one sequence's attention is sharded over: 1 under attention data parallelism (each device holds whole
    attention weights, and with them the shared experts and the embedding table, for its own sequences), else tp."""
    return 1 if par.attention_dp else par.tp


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
    n_lin = 0 if m.linear_attention is None else m.linear_attention.n_layers
    attn = (m.n_layers - n_lin) * _attention_params(m)
    if n_lin:
        attn += n_lin * _linear_attention_params(m)
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


def query_heads_per_kv_head(m: Model, tp: int) -> float | None:
    """Query heads that share one KV head on a device whose attention is sharded over ``tp`` (KV heads replicate
    when tp > n_kv_heads): what an attention backend reads to pick its decode kernel. None under MLA, whose heads
    all read one latent and which runs kernels of its own."""
    if m.mla is not None:
        return None
    return (m.n_heads / tp) / max(m.n_kv_heads / tp, 1.0)


def kv_bytes_per_token_layer(m: Model, tp: int, kv_dtype: str) -> float:
    """KV-cache bytes per token per layer on one device (KV heads replicate when tp > n_kv_heads)."""
    b = DTYPE_BYTES[kv_dtype]
    if m.mla is not None:  # latent + shared RoPE key, replicated on every TP rank
        return (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * b
    kv_heads = max(m.n_kv_heads / tp, 1.0)
    return 2.0 * kv_heads * m.head_dim * b


def memory_per_device(
    m: Model, par: Parallel, wb: float, kv_tok: float, expert_wb: float | None = None
) -> tuple[float, float]:
    """Weight bytes on the most loaded device (``wb`` bytes a weight, ``expert_wb`` for the routed experts' when
    they are stored apart), and KV bytes per token held by one device. Linear-attention layers
    (no KV) are spread evenly over the pipeline stages: a stage holds ceil(their count / pp) of them. Context-parallel
    groups hold the same weights (replicas); attention data parallelism keeps the attention whole on every device."""
    tp, pp, ep = par.tp, par.pp, par.ep
    attn_tp = attention_tp(par)
    counts = param_count(m)
    h = m.hidden_size
    layers_stage = math.ceil(m.n_layers / pp)
    if m.mla is not None:  # down-projections are replicated, not sharded
        a = m.mla
        repl = h * ((a.q_lora_rank or 0) + a.kv_lora_rank + a.qk_rope_head_dim)
        attn_dev = repl + (_attention_params(m) - repl) / attn_tp
    else:  # Q and O shard by head; K and V shard until each rank holds one KV head, then replicate
        attn_dev = 2 * h * m.n_heads * m.head_dim / attn_tp + 2 * h * max(m.n_kv_heads / attn_tp, 1.0) * m.head_dim
    ffn_dev = counts["ffn"] / m.n_layers / tp
    if m.moe is not None:
        e = m.moe
        nm = ffn_matrices(m)
        shared_f = e.n_shared_experts * (e.shared_expert_ffn_hidden_size or e.expert_ffn_hidden_size)
        experts_layer = e.n_experts / ep * nm * h * e.expert_ffn_hidden_size / (tp // ep)
        moe_layer = experts_layer + nm * h * shared_f / attn_tp + h * e.n_experts
        dense_layer = nm * h * m.ffn_hidden_size / tp
        n_moe = m.n_layers - e.first_dense_layers
        # the most loaded stage holds the most MoE layers
        moe_in_stage = min(layers_stage, n_moe)
        ffn_stage = moe_in_stage * moe_layer + (layers_stage - moe_in_stage) * dense_layer
        experts_stage = moe_in_stage * experts_layer
    else:
        experts_stage = 0.0
        ffn_stage = layers_stage * ffn_dev
    if m.linear_attention is None:
        layer_stage = layers_stage * (attn_dev + 2 * h) + ffn_stage
        kv_layers_stage = layers_stage
    else:
        lin_stage = linear_layers_per_stage(m, pp)
        kv_layers_stage = layers_stage - lin_stage
        lin_dev = _linear_attention_params(m) / attn_tp
        layer_stage = kv_layers_stage * attn_dev + lin_stage * lin_dev + layers_stage * 2 * h + ffn_stage
    embed = counts["embedding"] / attn_tp  # (each attention-DP rank embeds its own tokens)
    head = counts["lm_head"] / tp  # vocab-parallel over the tp devices whatever the attention
    final_norm = m.hidden_size
    ends = embed + head + final_norm if pp == 1 else max(embed, head + final_norm)  # first vs last stage
    weights = (layer_stage + ends) * wb
    if expert_wb is not None:  # (the experts counted at wb above)
        weights += experts_stage * (expert_wb - wb)
    return weights, kv_tok * kv_layers_stage
