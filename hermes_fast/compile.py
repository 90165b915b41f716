"""Config -> flat arrays the kernels take: one float64 parameter vector per engine, plus memory figures.

Also the model's size arithmetic (parameter counts, weight and KV bytes), which depends only on the
configs and is shared by the estimate, the simulator and the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config.base import ConfigError
from .config.hardware import DTYPE_BYTES, AttentionResidual, Device
from .config.model import Model
from .config.scenario import Dtypes, Parallel
from .kernels import layout as L
from .kernels.roofline import gemm_coefficients

__all__ = [
    "CompiledEngine",
    "DeviceRates",
    "check_layout",
    "collective_ramp",
    "compile_engine",
    "device_rates",
    "group_link",
    "kv_bytes_per_token_layer",
    "layer_gemm_shapes",
    "pack_residual",
    "param_count",
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


def _ffn_matrices(m: Model) -> int:
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
        (h, (_ffn_matrices(m) - 1) * m.ffn_hidden_size / tp),
        (m.ffn_hidden_size / tp, h),
    )


def param_count(m: Model) -> dict[str, float]:
    """Parameter counts: total, active per token, and the parts (embedding, head, attention, FFN).

    Norm weights are included; biases and position embeddings of encoders are not (< 1%).
    """
    h = m.hidden_size
    nm = _ffn_matrices(m)
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


def check_layout(m: Model, par: Parallel, path: str) -> None:
    """Reject parallel layouts the model cannot be split into, naming the offending field."""
    if par.tp % par.ep:
        raise ConfigError(f"{path}.parallel.ep", par.ep, f"a divisor of tp ({par.tp})")
    if m.n_heads % par.tp:
        raise ConfigError(f"{path}.parallel.tp", par.tp, f"a divisor of the model's n_heads ({m.n_heads}, {m.name})")
    if m.mla is None and m.n_kv_heads % par.tp and par.tp % m.n_kv_heads:
        raise ConfigError(
            f"{path}.parallel.tp", par.tp, f"a divisor or multiple of n_kv_heads ({m.n_kv_heads}, {m.name})"
        )
    if m.n_layers < par.pp:
        raise ConfigError(f"{path}.parallel.pp", par.pp, f"<= the model's n_layers ({m.n_layers})")
    if par.ep > 1:
        if m.moe is None:
            raise ConfigError(f"{path}.parallel.ep", par.ep, f"1 ({m.name} has no experts)")
        if m.moe.n_experts % par.ep:
            raise ConfigError(f"{path}.parallel.ep", par.ep, f"a divisor of n_experts ({m.moe.n_experts})")
    widths = []
    if m.moe is None or m.moe.first_dense_layers:
        widths.append((m.ffn_hidden_size, par.tp))
    if m.moe is not None:
        widths.append((m.moe.expert_ffn_hidden_size, par.tp // par.ep))
    for f, shards in widths:
        if f % shards:
            raise ConfigError(f"{path}.parallel.tp", par.tp, f"a TP degree that splits the FFN width ({f}, {m.name})")


def group_link(d: Device, n: int, op: str = "all_gather", span: int | None = None) -> tuple[float, float]:
    """(alpha_s, effective large-message bus bandwidth) of collective ``op`` over a group of n devices: scale-up
    link if the group (or the ``span`` devices it is spread over) fits in one scale-up domain, else scale-out
    (the slowest hop sets a ring's pace).

    The bandwidth is link x collective_efficiency x n / (n + n_half) x the op's ratio to all-gather
    (``all_reduce``, ``all_to_all``; ``all_gather``, ``reduce_scatter`` and ``p2p``, a send between n = 2, have
    ratio 1). An all-to-all drives every peer link at once whatever n, so the group-size term leaves it out
    (measured: 2 and 8 H200s reach the same all-to-all bus bandwidth on 512 MB, rings gain 25% from 2 to 8).
    """
    e = d.efficiency
    link = d.scale_up if (n if span is None else span) <= d.scale_up_domain_devices else d.scale_out
    bw = link.bandwidth_bytes_per_s * e.collective_efficiency
    if e.collective_saturation_devices > 0.0 and op != "all_to_all":
        bw *= n / (n + e.collective_saturation_devices)
    if op == "all_reduce":
        bw *= e.all_reduce_bandwidth_ratio
    elif op == "all_to_all":
        bw *= e.all_to_all_bandwidth_ratio
    elif op not in ("all_gather", "reduce_scatter", "p2p"):
        raise ConfigError("collective.op", op, "all_reduce, all_gather, reduce_scatter, all_to_all or p2p")
    return link.latency_s, bw


def collective_ramp(d: Device, op: str = "all_gather") -> tuple[float, float]:
    """(S_half, small/large efficiency ratio) of collective ``op``'s message-size bandwidth ramp
    (see ``kernels.collectives.message_bandwidth``); S_half = 0 turns the ramp off."""
    e = d.efficiency
    small = e.collective_small_message_efficiency
    ratio = 1.0 if small is None else small / e.collective_efficiency
    ramp = e.collective_saturation_bytes
    if op == "all_to_all" and e.all_to_all_saturation_bytes is not None:
        ramp = e.all_to_all_saturation_bytes
    return ramp, ratio


def decode_attention_ramp(d: Device) -> tuple[float, float]:
    """(S_half, little-KV / large-KV bandwidth ratio) of decode attention's ramp in the KV bytes one kernel
    reads; S_half = 0 turns it off."""
    e = d.efficiency
    small = e.decode_attention_small_efficiency
    large = e.memory_efficiency if e.attention_memory_efficiency is None else e.attention_memory_efficiency
    return e.decode_attention_saturation_bytes, 1.0 if small is None else small / large


def attention_dtype(activation: str, kv: str) -> str:
    """Format attention computes in: 16/32-bit activations as they are; narrower activations keep
    attention in fp8 when the KV cache is fp8 (FP8 flash attention), in bf16 otherwise."""
    if DTYPE_BYTES[activation] >= 2.0:
        return activation
    return "fp8" if kv == "fp8" else "bf16"


@dataclass(frozen=True)
class DeviceRates:
    """Effective rates and fixed costs of one device for one choice of formats."""

    gemm_flops: float  # FLOP/s for large GEMMs: peak x (low-precision) compute efficiency
    gemm_saturation_tokens: float  # m, n and k at which a GEMM reaches half its efficiency
    gemm_saturation_n: float
    gemm_saturation_k: float
    gemm_memory_bw: float  # B/s GEMMs stream weights and activations at
    gemm_overhead_s: float
    gemm_floor_s: float  # least time of one GEMM (block-scaled FP8), 0: none
    gemm_small_floor_s: float  # least time of one GEMM with at most gemm_small_tokens rows
    gemm_small_tokens: float  # rows m up to which gemm_small_floor_s applies (0: none)
    attention_flops: float  # FLOP/s for attention: peak of the attention format x attention efficiency
    memory_bw: float  # B/s attention reads KV at
    elementwise_bw: float  # B/s x memory efficiency: norms, activations, embedding gathers
    attention_overhead_s: float  # per prefill attention kernel
    decode_attention_overhead_s: float  # per decode attention kernel
    attention_compute_bytes: float  # bytes per element of the format attention runs in

    def gemm_flops_for(self, k: float, n: float) -> float:
        """FLOP/s of a ``k x n`` GEMM at large m: the n and k saturation folded into the rate."""
        f = self.gemm_flops
        if n > 0.0:
            f /= 1.0 + self.gemm_saturation_n / n
        if k > 0.0:
            f /= 1.0 + self.gemm_saturation_k / k
        return f


def device_rates(d: Device, activation: str, kv: str, block_scaled: bool = False) -> DeviceRates:
    """The rates the kernels use on device ``d`` with GEMM operands in ``activation`` and KV in ``kv``;
    ``block_scaled``: 8-bit GEMMs with block scales (a device without 8-bit peak runs them as plain GEMMs)."""
    e = d.efficiency
    peak, run = d.peak_flop_per_s.resolve(activation)
    narrow = DTYPE_BYTES[run] <= 1.0
    block = block_scaled and narrow
    eff, m_half, n_half, k_half, gemm_mem, gemm_oh = e.gemm_profile(narrow, block)
    attn_peak, attn_run = d.peak_flop_per_s.resolve(attention_dtype(activation, kv))
    kv8 = DTYPE_BYTES[kv] <= 1.0
    if DTYPE_BYTES[attn_run] <= 1.0:  # FP8 flash attention
        attn_eff = e.low_precision_attention_compute_efficiency
    elif kv8:  # 16-bit attention dequantising an 8-bit KV cache
        attn_eff = e.kv8_attention_compute_efficiency
    else:
        attn_eff = None
    prefill_oh = e.attention_overhead_s
    if kv8 and e.kv8_attention_overhead_s is not None:
        prefill_oh = e.kv8_attention_overhead_s
    decode_oh = e.attention_overhead_s if e.decode_attention_overhead_s is None else e.decode_attention_overhead_s
    if kv8 and e.kv8_decode_attention_overhead_s is not None:
        decode_oh = e.kv8_decode_attention_overhead_s
    bw = d.memory_bandwidth_bytes_per_s
    floor = small_floor = small_tokens = 0.0
    if block:  # vLLM's block-FP8 path: one fixed-cost plateau for small launches, another above
        floor = small_floor = e.block_scaled_gemm_floor_s
        if e.block_scaled_small_gemm_floor_s is not None:
            small_floor = e.block_scaled_small_gemm_floor_s
        small_tokens = e.block_scaled_small_gemm_tokens
    return DeviceRates(
        gemm_flops=peak * eff,
        gemm_saturation_tokens=m_half,
        gemm_saturation_n=n_half,
        gemm_saturation_k=k_half,
        gemm_memory_bw=bw * (e.memory_efficiency if gemm_mem is None else gemm_mem),
        gemm_overhead_s=gemm_oh,
        gemm_floor_s=floor,
        gemm_small_floor_s=small_floor,
        gemm_small_tokens=small_tokens,
        attention_flops=attn_peak * (e.attention_compute_efficiency if attn_eff is None else attn_eff),
        memory_bw=bw
        * (e.memory_efficiency if e.attention_memory_efficiency is None else e.attention_memory_efficiency),
        elementwise_bw=bw * e.memory_efficiency,
        attention_overhead_s=prefill_oh,
        decode_attention_overhead_s=decode_oh,
        attention_compute_bytes=DTYPE_BYTES[attn_run],
    )


def pack_residual(r: AttentionResidual | None, p: np.ndarray, base: int) -> None:
    """Write surface ``r`` (None: no correction) into the kernels' parameter vector at ``p[base]``."""
    block = p[base : base + L.RES_SIZE]
    block[:] = 0.0
    if r is None:
        return
    ratios = np.exp(np.asarray(r.log_ratio, dtype=np.float64))
    nx, ny = ratios.shape
    block[L.RES_NX], block[L.RES_NY] = nx, ny
    block[L.RES_X_NODES : L.RES_X_NODES + nx] = 2.0 ** (r.log2_x0 + r.log2_step * np.arange(nx))
    block[L.RES_Y_NODES : L.RES_Y_NODES + ny] = 2.0 ** (r.log2_y0 + r.log2_step * np.arange(ny))
    block[L.RES_VALUES : L.RES_VALUES + ratios.size] = ratios.ravel()


@dataclass(frozen=True)
class CompiledEngine:
    """Kernel parameters and memory figures of one (model, device, layout, dtypes) combination."""

    params: np.ndarray  # float64[N_PARAMS], see kernels.layout
    devices: int  # devices per replica (tp x pp)
    weights_bytes: float  # on the most loaded device
    kv_bytes_per_token: float  # all layers of one stage, one device
    activation_reserve_bytes: float
    usable_bytes: float  # memory x memory_utilization
    generates: bool  # a causal decoder with an LM head (encoders and rerankers only prefill)
    max_context_tokens: int

    @property
    def kv_capacity_tokens(self) -> float:
        free = self.usable_bytes - self.weights_bytes - self.activation_reserve_bytes
        return max(0.0, math.floor(free / self.kv_bytes_per_token))

    @property
    def weights_fit(self) -> bool:
        return self.weights_bytes + self.activation_reserve_bytes < self.usable_bytes


def compile_engine(
    model: Model,
    device: Device,
    parallel: Parallel,
    dtypes: Dtypes,
    memory_utilization: float = 0.9,
    max_batched_tokens: int = 8192,
    path: str = "engine",
    check: bool = True,
) -> CompiledEngine:
    """Build the kernel parameter vector and memory figures; raise ConfigError for impossible layouts."""
    m, d, par = model, device, parallel
    if check:
        check_layout(m, par, path)
    tp, pp, ep = par.tp, par.pp, par.ep
    eff = d.efficiency
    rates = device_rates(d, dtypes.activation, dtypes.kv, dtypes.gemm_scaling == "block")
    wb = DTYPE_BYTES[dtypes.weight]
    # GEMM operands move in the activation format, at least a byte (fp4 GEMMs keep 8/16-bit outputs);
    # hidden states between kernels (norms, residuals, collectives, hand-offs) stay 16-bit (fp32 if asked)
    ab = max(DTYPE_BYTES[dtypes.activation], 1.0)
    hb = max(DTYPE_BYTES[dtypes.activation], 2.0)
    h = m.hidden_size
    nm = _ffn_matrices(m)
    p = np.zeros(L.N_PARAMS)
    p[L.ATTN_FLOPS] = rates.attention_flops
    p[L.ATTN_SAT] = eff.attention_saturation_keys
    p[L.PREFILL_SAT] = eff.prefill_attention_saturation_units
    p[L.DECODE_SAT] = eff.decode_attention_saturation_units
    p[L.DECODE_RAMP_BYTES], p[L.DECODE_RAMP_LOW] = decode_attention_ramp(d)
    p[L.KV_HEADS] = 1.0 if m.mla is not None else max(m.n_kv_heads / tp, 1.0)
    p[L.MEM_BW] = rates.memory_bw
    p[L.OH_GEMM] = rates.gemm_overhead_s
    p[L.GEMM_FLOOR_S] = rates.gemm_floor_s
    p[L.GEMM_SMALL_FLOOR_S] = rates.gemm_small_floor_s
    p[L.GEMM_SMALL_TOKENS] = rates.gemm_small_tokens
    p[L.OH_ATTN] = rates.attention_overhead_s
    p[L.OH_ATTN_DECODE] = rates.decode_attention_overhead_s
    # residual surfaces are fitted to causal GQA / MHA attention kernels' launch heuristics: MLA runs other
    # kernels, encoders non-causal ones
    for kernel, base in (("prefill", L.RES_PREFILL), ("decode", L.RES_DECODE)):
        r = eff.attention_residual(kernel, rates.attention_compute_bytes, DTYPE_BYTES[dtypes.kv])
        pack_residual(r if m.mla is None and m.causal else None, p, base)
    p[L.OH_ELEM] = eff.elementwise_overhead_s
    p[L.OH_COLL] = eff.collective_overhead_s
    p[L.OH_STEP] = eff.step_overhead_s + (tp - 1) * eff.step_overhead_per_tp_rank_s
    p[L.OH_SEQ] = eff.sequence_overhead_s
    p[L.A_BYTES] = ab
    p[L.H_BYTES] = hb
    kv_tok = kv_bytes_per_token_layer(m, tp, dtypes.kv)
    p[L.KV_TOKEN_BYTES] = kv_tok
    n_moe = 0 if m.moe is None else m.n_layers - m.moe.first_dense_layers
    p[L.N_LAYERS] = m.n_layers
    p[L.N_DENSE] = m.n_layers - n_moe
    p[L.N_MOE] = n_moe
    p[L.N_SWA] = m.sliding_window_layers
    p[L.SWA_WINDOW] = m.sliding_window_tokens or 0.0
    p[L.HIDDEN] = h
    p[L.CAUSAL] = 1.0 if m.causal else 0.0
    heads = m.n_heads / tp
    p[L.HEADS] = heads
    sat, gemm_bw, bw = rates.gemm_saturation_tokens, rates.gemm_memory_bw, rates.elementwise_bw

    def gemm(block: int, k: float, n: float) -> None:
        p[block : block + 4] = gemm_coefficients(k, n, rates.gemm_flops_for(k, n), sat, gemm_bw, wb, ab)

    qkv, out, up, down = layer_gemm_shapes(m, tp)
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        # fused, replicated down-projections: hidden -> [q_lora] + kv_lora + rope (or full q without q_lora)
        q_out = a.q_lora_rank if a.q_lora_rank else heads * qk
        gemm(L.G_QKV, h, q_out + a.kv_lora_rank + a.qk_rope_head_dim)
        if a.q_lora_rank:
            gemm(L.G_QB, a.q_lora_rank, heads * qk)
        gemm(L.G_KVB, a.kv_lora_rank, heads * (a.qk_nope_head_dim + a.v_head_dim))
        gemm(L.G_O, heads * a.v_head_dim, h)
        p[L.ATT_QK_PREFILL] = qk
        p[L.ATT_V_PREFILL] = a.v_head_dim
        p[L.ATT_QK_DECODE] = a.kv_lora_rank + a.qk_rope_head_dim  # weight-absorbed decode
        p[L.ATT_V_DECODE] = a.kv_lora_rank
    else:
        gemm(L.G_QKV, *qkv)
        gemm(L.G_O, *out)
        p[L.ATT_QK_PREFILL] = p[L.ATT_QK_DECODE] = m.head_dim
        p[L.ATT_V_PREFILL] = p[L.ATT_V_DECODE] = m.head_dim
    gemm(L.G_FFN_UP, *up)
    gemm(L.G_FFN_DOWN, *down)
    ffn_tp = tp // ep
    moe_f_dev = 0.0
    if m.moe is not None:
        e = m.moe
        p[L.N_EXPERTS] = e.n_experts
        p[L.TOP_K] = e.top_k
        # every expert is hit once top_k == n_experts: log(0) = -inf gives exactly that in the kernel
        p[L.EXPERT_LOG_MISS] = math.log1p(-e.top_k / e.n_experts) if e.top_k < e.n_experts else -math.inf
        gemm(L.G_ROUTER, h, e.n_experts)
        gemm(L.G_EXP_UP, h, (nm - 1) * e.expert_ffn_hidden_size / ffn_tp)
        gemm(L.G_EXP_DOWN, e.expert_ffn_hidden_size / ffn_tp, h)
        shared_f = e.n_shared_experts * (e.shared_expert_ffn_hidden_size or e.expert_ffn_hidden_size)
        if shared_f:
            gemm(L.G_SHARED_UP, h, (nm - 1) * shared_f / tp)
            gemm(L.G_SHARED_DOWN, shared_f / tp, h)
        moe_f_dev = e.top_k * e.expert_ffn_hidden_size / tp + shared_f / tp
    p[L.EP] = ep
    # two fused add+RMSNorm per layer (read residual and input, write both: 3h each) and the
    # activation (gated: read gate and up, write their product, 3f; plain: read and write, 2f)
    p[L.ELEM_DENSE_S] = (6.0 * h + nm * m.ffn_hidden_size / tp) * hb / bw
    p[L.ELEM_MOE_S] = (6.0 * h + nm * moe_f_dev) * hb / bw
    p[L.EMBED_S] = h * (wb + hb) / bw  # gather one embedding row, write one hidden state
    p[L.VOCAB] = m.vocab_size
    p[L.HAS_LM_HEAD] = 1.0 if m.has_lm_head else 0.0
    if m.has_lm_head:
        gemm(L.G_LM_HEAD, h, m.vocab_size / tp)
    p[L.TP] = tp
    p[L.TP_ALPHA], p[L.TP_BW] = group_link(d, tp)  # the logits all-gather
    p[L.TP_AR_BW] = group_link(d, tp, "all_reduce")[1]
    # expert shards and EP ranks are members of the TP group (its link level)
    p[L.FFN_AR_BW] = group_link(d, ffn_tp, "all_reduce", span=tp)[1]
    p[L.EP_ALPHA], p[L.EP_BW] = group_link(d, ep, "all_to_all", span=tp)
    p[L.FFN_TP] = ffn_tp
    p[L.PP] = pp
    # stages sit in different scale-up domains only when the replica outgrows one
    p[L.PP_ALPHA], p[L.PP_BW] = group_link(d, 2, "p2p", span=tp * pp)
    p[L.COLL_RAMP_BYTES], p[L.COLL_RAMP_LOW] = collective_ramp(d)
    p[L.EP_RAMP_BYTES] = collective_ramp(d, "all_to_all")[0]
    p[L.EP_PROTO_S] = eff.all_to_all_protocol_latency_s
    p[L.EP_PROTO_BYTES] = eff.all_to_all_protocol_bytes

    weights, kv_stage = _memory(m, par, wb, kv_tok)
    dense_f_dev = m.ffn_hidden_size / tp if p[L.N_DENSE] > 0 else 0.0
    reserve = max_batched_tokens * (4.0 * h + 3.0 * max(dense_f_dev, moe_f_dev)) * hb
    return CompiledEngine(
        params=p,
        devices=tp * pp,
        weights_bytes=weights,
        kv_bytes_per_token=kv_stage,
        activation_reserve_bytes=reserve,
        usable_bytes=d.memory_bytes * memory_utilization,
        generates=m.causal and m.has_lm_head,
        max_context_tokens=m.max_context_tokens,
    )


def _memory(m: Model, par: Parallel, wb: float, kv_tok: float) -> tuple[float, float]:
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
        nm = _ffn_matrices(m)
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
