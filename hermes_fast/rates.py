"""What one device achieves: effective GEMM, attention and memory rates and fixed costs for a choice of formats
(:func:`device_rates`), collectives' link bandwidth by group size and operation (:func:`group_link`), and the
message-size ramps of collectives and of decode attention, all read from the device's efficiency figures."""

from __future__ import annotations

from dataclasses import dataclass

from .config.base import ConfigError
from .config.hardware import DTYPE_BYTES, Device

__all__ = [
    "DeviceRates",
    "attention_dtype",
    "collective_ramp",
    "decode_attention_ramp",
    "device_rates",
    "group_link",
]


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
    gemm_memory_bw: float  # B/s GEMMs stream weights and activations at, at large n
    gemm_memory_saturation_n: float  # n at which they stream at half of it
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

    def gemm_memory_bw_for(self, n):
        """B/s a GEMM of output width ``n`` (> 0; a number or an array) streams at: few output tiles leave
        multiprocessors idle."""
        return self.gemm_memory_bw * n / (n + self.gemm_memory_saturation_n)


def device_rates(d: Device, activation: str, kv: str, block_scaled: bool = False) -> DeviceRates:
    """The rates the kernels use on device ``d`` with GEMM operands in ``activation`` and KV in ``kv``;
    ``block_scaled``: 8-bit GEMMs with block scales (a device without 8-bit peak runs them as plain GEMMs)."""
    e = d.efficiency
    peak, run = d.peak_flop_per_s.resolve(activation)
    narrow = DTYPE_BYTES[run] <= 1.0
    block = block_scaled and narrow
    g = e.gemm_profile(narrow, block)
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
        gemm_flops=peak * g.efficiency,
        gemm_saturation_tokens=g.saturation_tokens,
        gemm_saturation_n=g.saturation_n,
        gemm_saturation_k=g.saturation_k,
        gemm_memory_bw=bw * (e.memory_efficiency if g.memory_efficiency is None else g.memory_efficiency),
        gemm_memory_saturation_n=g.memory_saturation_n,
        gemm_overhead_s=g.overhead_s,
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
