"""Config -> flat arrays the kernels take: one float64 parameter vector per engine (a model on a device with a
parallel layout and dtypes, laid out as :mod:`hermes_fast.kernels.layout` says), plus its memory figures, and
the check that the model can be split into the layout.

The model's size arithmetic is in :mod:`hermes_fast.sizes`, the device's effective rates in
:mod:`hermes_fast.rates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config.base import ConfigError
from .config.efficiency import AttentionResidual
from .config.hardware import DTYPE_BYTES, Device, weight_bytes
from .config.model import Model
from .config.scenario import Dtypes, Parallel
from .config.stack import Stack
from .kernels import layout as L
from .kernels.roofline import gemm_coefficients
from .rates import collective_ramp, decode_attention_ramp, device_rates, group_link
from .sizes import (
    attention_tp,
    ffn_matrices,
    kv_bytes_per_token_layer,
    layer_gemm_shapes,
    linear_attention_flop_per_token,
    linear_attention_shapes,
    linear_layers_per_stage,
    memory_per_device,
    param_count,
    query_heads_per_kv_head,
    state_bytes_per_seq_layer,
)

__all__ = ["CompiledEngine", "check_layout", "compile_engine", "pack_residual"]

# vLLM V1's memory profile peaks in its dummy sampler run, max_num_seqs rows of the vocabulary put through top-k and
# top-p (the fp32 logits, their probabilities, sort values and int64 indices side by side): llm-d's vLLM logs of six
# models on one or two H100s at max_num_seqs 1024 read a peak of 38.4-39.6 bytes a (row, vocabulary entry)
# (gpt-oss-20b / -120b 7.38 GiB, Llama-3.1-8B 4.76, Llama-3.3-70B FP8 TP 2 4.84, Qwen3-0.6B 5.56, Qwen3-32B 5.64;
# llm-d/llm-d-benchmark config_explorer/empirical-vllm-memory-results.md @2593348, stack_facts.csv); their mean
SAMPLER_PROFILE_BYTES = 38.8


def check_layout(m: Model, par: Parallel, path: str) -> None:
    """Reject parallel layouts the model cannot be split into, naming the offending field."""
    par._validate(f"{path}.parallel")  # the layout's own rules (a grid point is not validated when it is built)
    attn_tp = attention_tp(par)  # (heads are not split under attention data parallelism)
    if m.n_heads % attn_tp:
        raise ConfigError(f"{path}.parallel.tp", par.tp, f"a divisor of the model's n_heads ({m.n_heads}, {m.name})")
    if m.mla is None and m.n_kv_heads % attn_tp and attn_tp % m.n_kv_heads:
        raise ConfigError(
            f"{path}.parallel.tp", par.tp, f"a divisor or multiple of n_kv_heads ({m.n_kv_heads}, {m.name})"
        )
    la = m.linear_attention
    if par.attention_dp and m.moe is None:
        raise ConfigError(
            f"{path}.parallel.attention_dp", True, f"false: {m.name} has no experts (attention data parallelism is "
            "modelled for MoE models, their experts expert- or tensor-parallel over the same devices)",
        )  # fmt: skip
    if par.cp > 1 and not m.causal:
        raise ConfigError(f"{path}.parallel.cp", par.cp, f"1: {m.name} is an encoder (no context to split over a ring)")
    if par.cp > 1 and la is not None:
        raise ConfigError(
            f"{path}.parallel.cp", par.cp, f"1: {m.name}'s linear-attention layers carry a recurrent state from "
            "token to token, which a split of the sequence over devices cannot share",
        )  # fmt: skip
    if la is not None and (la.n_key_heads % attn_tp or la.n_value_heads % attn_tp):
        raise ConfigError(
            f"{path}.parallel.tp",
            par.tp,
            f"a divisor of the linear-attention heads ({la.n_key_heads} key, {la.n_value_heads} value, {m.name})",
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
    devices: int  # devices per replica (tp x pp x cp)
    weights_bytes: float  # on the most loaded device
    kv_bytes_per_token: float  # all attention layers of one stage, one device
    activation_reserve_bytes: float
    usable_bytes: float  # memory (the runtime's total under a stack that budgets from it) x memory_utilization
    # (under a stack whose basis is free memory: weights + activations + memory_utilization x the rest)
    generates: bool  # a causal decoder with an LM head (encoders and rerankers only prefill)
    max_context_tokens: int
    body_flop_per_token: float = math.nan  # 2 x active parameters outside the embedding table and LM head (MFU)
    state_bytes_per_seq: float = 0.0  # linear-attention state of one sequence, its layers of one stage, one device
    attention_dp: int = 1  # devices the sequences are dealt to, each keeping its own sequences' KV (1: none)
    cp: int = 1  # context-parallel groups, each keeping 1/cp of every sequence's KV

    @property
    def kv_capacity_tokens(self) -> float:
        """KV tokens one replica's free memory holds (no room set aside for linear-attention states): a device's
        count times the groups the tokens are spread over (attention-DP ranks, context-parallel groups)."""
        free = self.usable_bytes - self.weights_bytes - self.activation_reserve_bytes
        return max(0.0, math.floor(free / self.kv_bytes_per_token)) * (self.attention_dp * self.cp)

    @property
    def replica_kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies over a whole replica (every device's share of it)."""
        return self.kv_bytes_per_token * self.devices / (self.attention_dp * self.cp)

    @property
    def kv_bytes_per_token_moved(self) -> float:
        """KV bytes of one token of a sequence that one device sends, swaps or loads (its 1/cp share)."""
        return self.kv_bytes_per_token / self.cp

    @property
    def state_tokens_per_seq(self) -> float:
        """A sequence's linear-attention state in KV tokens' worth of memory (0 without linear attention): what
        a request holds beside its KV."""
        return self.state_bytes_per_seq / self.kv_bytes_per_token

    def kv_tokens_beside_states(self, sequences: int) -> float:
        """KV tokens the free memory holds once ``sequences`` linear-attention states are set aside (serving
        engines reserve one per batch slot, as vLLM sizes its state cache by max_num_seqs)."""
        if self.state_bytes_per_seq == 0.0:
            return self.kv_capacity_tokens
        free = self.usable_bytes - self.weights_bytes - self.activation_reserve_bytes
        if self.attention_dp > 1:  # a rank sets aside the states of its share of the slots
            per_rank = math.ceil(sequences / self.attention_dp)
            return max(0.0, math.floor((free - per_rank * self.state_bytes_per_seq) / self.kv_bytes_per_token)) * (
                self.attention_dp
            )
        return max(0.0, math.floor((free - sequences * self.state_bytes_per_seq) / self.kv_bytes_per_token))

    @property
    def weights_fit(self) -> bool:
        return self.weights_bytes + self.activation_reserve_bytes < self.usable_bytes


def step_host_s(step_overhead_s: float, per_rank_s: float, ranks: int) -> float:
    """An iteration's host time on top of its kernels: the per-step work and each rank beyond the first that the
    step coordinates (TP x CP ranks; efficiency.step_overhead_per_tp_rank_s)."""
    return step_overhead_s + (ranks - 1) * per_rank_s


def compile_engine(
    model: Model,
    device: Device,
    parallel: Parallel,
    dtypes: Dtypes,
    memory_utilization: float = 0.9,
    max_batched_tokens: int = 8192,
    path: str = "engine",
    check: bool = True,
    stack: Stack | None = None,
    max_batch_size: int = 0,
) -> CompiledEngine:
    """Build the kernel parameter vector and memory figures; raise ConfigError for impossible layouts. ``stack``:
    the serving stack whose CUDA graphs the step cost follows (its host costs come with ``device``, see
    :func:`hermes_fast.resolve.device_with_stack`); ``max_batch_size``: the sequences a stack whose memory profile
    samples them (``sampler_profile``) holds logits for (0: none)."""
    m, d, par = model, device, parallel
    if check:
        check_layout(m, par, path)
    tp, pp, ep, cp = par.tp, par.pp, par.ep, par.cp
    attn_tp = attention_tp(par)  # tp, or 1 under attention data parallelism
    eff = d.efficiency
    rates = device_rates(d, dtypes.activation, dtypes.kv, dtypes.gemm_scaling == "block")
    wb = weight_bytes(dtypes.weight)  # (with its block scales)
    if dtypes.expert_weight is not None and m.moe is None:
        raise ConfigError(f"{path}.dtypes.expert_weight", dtypes.expert_weight, f"null: {m.name} has no experts")
    ewb = weight_bytes(dtypes.experts)
    # GEMM operands move in the activation format, at least a byte (fp4 GEMMs keep 8/16-bit outputs);
    # hidden states between kernels (norms, residuals, collectives, hand-offs) stay 16-bit (fp32 if asked)
    ab = max(DTYPE_BYTES[dtypes.activation], 1.0)
    hb = max(DTYPE_BYTES[dtypes.activation], 2.0)
    h = m.hidden_size
    nm = ffn_matrices(m)
    p = np.zeros(L.N_PARAMS)
    p[L.ATTN_FLOPS] = rates.attention_flops
    p[L.ATTN_SAT] = eff.attention_saturation_keys
    p[L.PREFILL_SAT] = eff.prefill_attention_saturation_units
    p[L.DECODE_SAT] = eff.decode_attention_saturation_units
    p[L.DECODE_RAMP_BYTES], p[L.DECODE_RAMP_LOW] = decode_attention_ramp(d)
    p[L.KV_HEADS] = 1.0 if m.mla is not None else max(m.n_kv_heads / attn_tp, 1.0)
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
    p[L.OH_STEP] = step_host_s(eff.step_overhead_s, eff.step_overhead_per_tp_rank_s, tp * cp)
    p[L.OH_SEQ] = eff.sequence_overhead_s
    p[L.A_BYTES] = ab
    p[L.H_BYTES] = hb
    kv_tok = kv_bytes_per_token_layer(m, attn_tp, dtypes.kv)
    p[L.KV_TOKEN_BYTES] = kv_tok
    n_moe = 0 if m.moe is None else m.n_layers - m.moe.first_dense_layers
    p[L.N_LAYERS] = m.n_layers
    p[L.N_DENSE] = m.n_layers - n_moe
    p[L.N_MOE] = n_moe
    p[L.N_SWA] = m.sliding_window_layers
    p[L.SWA_WINDOW] = m.sliding_window_tokens or 0.0
    idx_key = 0.0
    if m.indexer is not None:  # replicated on every TP rank; scores in FP8 where the device has it
        p[L.IDX_HEADS] = m.indexer.heads
        p[L.IDX_DIM] = m.indexer.head_dim
        idx_key = p[L.IDX_KEY_BYTES] = m.indexer.key_bytes
        p[L.IDX_FLOPS] = device_rates(d, "fp8", "fp8").attention_flops
    la = m.linear_attention
    n_lin = 0 if la is None else la.n_layers
    p[L.N_LIN] = n_lin
    p[L.HIDDEN] = h
    p[L.CAUSAL] = 1.0 if m.causal else 0.0
    heads = m.n_heads / attn_tp
    p[L.HEADS] = heads
    sat, bw = rates.gemm_saturation_tokens, rates.elementwise_bw

    def gemm(block: int, k: float, n: float, w_bytes: float = wb, full_rate: bool = False) -> None:
        # full_rate: a grouped launch (routed experts) tiles every active expert's output at once, so its width is
        # not one expert's n (what its experts' kernels lose is moe_*_extra's); the router's n (the expert count,
        # 8-512) lies at or below every calibrated width (512 up), where the saturation would be an extrapolation
        gemm_bw = rates.gemm_memory_bw if full_rate or n <= 0.0 else rates.gemm_memory_bw_for(n)
        p[block : block + 4] = gemm_coefficients(k, n, rates.gemm_flops_for(k, n), sat, gemm_bw, w_bytes, ab)

    qkv, out = layer_gemm_shapes(m, attn_tp)[:2]
    up, down = layer_gemm_shapes(m, tp)[2:]
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
    state_layer = state_bytes_per_seq_layer(m, attn_tp, dtypes.kv)  # the state is kept in the KV cache's format
    if la is not None:
        lin_in, lin_out = linear_attention_shapes(m, attn_tp)
        gemm(L.G_LIN_IN, *lin_in)
        gemm(L.G_LIN_OUT, *lin_out)
        p[L.LIN_FLOP_TOKEN] = linear_attention_flop_per_token(m, attn_tp)
        # the mixer reads queries, keys, values and gate and writes its output, in the activation format
        p[L.LIN_ACT_BYTES] = (2.0 * la.key_dim + 2.0 * la.value_dim) / attn_tp * ab
        p[L.LIN_STATE_BYTES] = state_layer
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
        gemm(L.G_ROUTER, h, e.n_experts, full_rate=True)
        gemm(L.G_EXP_UP, h, (nm - 1) * e.expert_ffn_hidden_size / ffn_tp, ewb, full_rate=True)
        gemm(L.G_EXP_DOWN, e.expert_ffn_hidden_size / ffn_tp, h, ewb, full_rate=True)
        shared_f = e.n_shared_experts * (e.shared_expert_ffn_hidden_size or e.expert_ffn_hidden_size)
        # shared experts run beside the attention: whole on each attention-DP rank, for its own tokens
        if shared_f:
            gemm(L.G_SHARED_UP, h, (nm - 1) * shared_f / attn_tp)
            gemm(L.G_SHARED_DOWN, shared_f / attn_tp, h)
        # activation width per token (attention DP: per token of the rank, which receives ~top_k expert rows each)
        moe_f_dev = e.top_k * e.expert_ffn_hidden_size / attn_tp + shared_f / attn_tp
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
    p[L.ATT_DP] = tp / attn_tp
    p[L.CP] = cp
    # a CP group's peers are the same TP rank of the other groups: the replica's span sets the link level
    p[L.CP_ALPHA], p[L.CP_BW] = group_link(d, 2, "p2p", span=tp * cp)
    p[L.CP_AG_BW] = group_link(d, cp, "all_gather", span=tp * cp)[1]
    p[L.COLL_RAMP_BYTES], p[L.COLL_RAMP_LOW] = collective_ramp(d)
    p[L.EP_RAMP_BYTES] = collective_ramp(d, "all_to_all")[0]
    p[L.EP_PROTO_S] = eff.all_to_all_protocol_latency_s
    p[L.EP_PROTO_BYTES] = eff.all_to_all_protocol_bytes

    weights, kv_stage = memory_per_device(m, par, wb, kv_tok + idx_key, ewb)  # (the indexer's keys beside the KV)
    dense_f_dev = m.ffn_hidden_size / tp if p[L.N_DENSE] > 0 else 0.0
    tokens_dev = max_batched_tokens  # tokens whose hidden states a device holds in one iteration
    if par.attention_dp:  # its own share of them, and as many rows of FFN activations (1/tp of every token's)
        tokens_dev = max_batched_tokens / tp
        dense_f_dev *= tp
    reserve = tokens_dev * (4.0 * h + 3.0 * max(dense_f_dev, moe_f_dev)) * hb
    if stack is not None and stack.sampler_profile and m.has_lm_head and max_batch_size > 0:
        # the profile then samples a batch: each sequence's logits, top-k / top-p'd over the whole vocabulary
        rows = math.ceil(max_batch_size / (tp // attn_tp))  # (each attention-DP rank samples its own sequences)
        reserve = max(reserve, rows * m.vocab_size * SAMPLER_PROFILE_BYTES)
    if stack is not None and not stack.activation_reserve:  # (activations live outside the stack's budget)
        reserve = 0.0
    capacity = d.memory_bytes if stack is None else stack.capacity_bytes(d)
    usable = capacity * memory_utilization
    if stack is not None and stack.memory_basis == "free":  # KV takes that share of what weights and activations leave
        usable = weights + reserve + memory_utilization * max(capacity - weights - reserve, 0.0)
    counts = param_count(m)
    if stack is not None and stack.extra_kernels:
        # per token and layer: write its K and V; rotate its queries' and keys' RoPE dims (read and write)
        rope_dim = m.mla.qk_rope_head_dim if m.mla is not None else m.head_dim
        rope_bytes = 2.0 * (heads + (1.0 if m.mla is not None else p[L.KV_HEADS])) * rope_dim * hb
        p[L.EXTRA_TOKEN_S] = (m.n_layers - n_lin) * (kv_tok + idx_key + rope_bytes) / bw  # (none in linear layers)
        p[L.EXTRA_SEQ_S] = 2.0 * m.vocab_size * 4.0 / bw if m.has_lm_head else 0.0  # fp32 logits: softmax, sample
        p[L.EXTRA_KERNELS] = 2.0 * m.n_layers + (2.0 if m.has_lm_head else 0.0)
    if stack is not None:
        p[L.PREFILL_ATTN_EXTRA] = stack.prefill_attention_extra_for(m.attention_sinks, d.compute_capability)
        p[L.DECODE_ATTN_EXTRA] = stack.decode_attention_extra_for(
            query_heads_per_kv_head(m, attn_tp), dtypes.kv, d.compute_capability
        )
        p[L.MOE_COMPUTE_EXTRA], p[L.MOE_MEMORY_EXTRA] = stack.moe_extras(dtypes.experts, d.compute_capability)
        p[L.DECODE_HOST_OVERLAP] = 1.0 if stack.decode_host_overlap else 0.0
        p[L.ASYNC_SCHEDULING] = 1.0 if stack.async_scheduling else 0.0
    if stack is not None and stack.cuda_graph_sizes:
        sizes = stack.cuda_graph_sizes
        p[L.GRAPH_COUNT] = len(sizes)
        p[L.GRAPH_SIZES : L.GRAPH_SIZES + len(sizes)] = sizes
        p[L.GRAPH_MIXED] = 1.0 if stack.cuda_graph_mixed else 0.0
        p[L.GRAPH_EXACT] = 0.0 if stack.cuda_graph_padding else 1.0
        p[L.GRAPH_EAGER_S] = stack.eager_launch_s_per_layer * m.n_layers  # (a micro-batch passes every layer)
    return CompiledEngine(
        params=p,
        devices=tp * pp * cp,
        weights_bytes=weights,
        kv_bytes_per_token=kv_stage,
        activation_reserve_bytes=reserve,
        usable_bytes=usable,
        generates=m.causal and m.has_lm_head,
        max_context_tokens=m.max_context_tokens,
        body_flop_per_token=2.0 * (counts["active"] - counts["embedding"] - counts["lm_head"]),
        state_bytes_per_seq=state_layer * linear_layers_per_stage(m, pp),
        attention_dp=tp // attn_tp,
        cp=cp,
    )
