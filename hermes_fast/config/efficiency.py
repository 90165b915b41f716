"""Efficiency schemas: the achievable fractions of a device's peaks and the fixed costs that turn its spec sheet
into kernel times (uncalibrated defaults; calibration replaces them), and the attention residual surfaces a
calibration fits. A device entry carries one :class:`Efficiency` (:class:`hermes_fast.config.hardware.Device`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from .base import ConfigError, fld


class GemmProfile(NamedTuple):
    """What one kind of GEMM (16-bit, 8-bit, block-scaled 8-bit) runs at: :meth:`Efficiency.gemm_profile`."""

    efficiency: float  # fraction of the format's dense peak at large m, n and k
    saturation_tokens: float  # m, n and k at which compute reaches half of it
    saturation_n: float
    saturation_k: float
    memory_efficiency: float | None  # fraction of memory bandwidth weights stream at (None: memory_efficiency)
    memory_saturation_n: float  # n at which streaming reaches half of that
    overhead_s: float  # fixed cost of one GEMM


# most nodes one attention residual surface may have, in all and along one axis (its slots in the kernels'
# parameter vector)
ATTENTION_RESIDUAL_NODES = 256
ATTENTION_RESIDUAL_AXIS_NODES = 64


@dataclass(frozen=True, kw_only=True)
class AttentionResidual:
    """Measured / analytical time of one attention kernel, on a regular grid in log2 of two batch figures.

    What no smooth roofline term follows: a kernel library's launch heuristics (split-KV in decode, tile shapes
    in prefill) make its time non-monotone in the batch. :func:`hermes_fast.calibrate` fits these surfaces to the
    residuals of the analytical model, smoothed (the smoothing chosen by leave-one-out error), and the step cost
    multiplies that kernel's time by the nodes' ratios ``exp(log_ratio)`` interpolated bilinearly (linear in x
    and y between nodes), held at the edge values beyond the grid. Axes, per device: x = sequences x KV heads
    (decode) or sequences x query heads (prefill); y = KV tokens per sequence. Not applied to MLA or non-causal
    models, whose attention runs other kernels.
    """

    kernel: Literal["prefill", "decode"] = fld(doc="the attention kernel it corrects")
    compute_bytes: float = fld(unit="B", doc="bytes per element of the attention format it applies to", gt=0, le=8)
    kv_bytes: float = fld(unit="B", doc="bytes per element of the KV cache it applies to", gt=0, le=8)
    log2_x0: float = fld(unit="1", doc="log2 of x at the first node", ge=-64, le=64)
    log2_y0: float = fld(unit="1", doc="log2 of y at the first node", ge=-64, le=64)
    log2_step: float = fld(1.0, unit="1", doc="node spacing on both axes, in octaves", gt=0, le=64)
    log_ratio: tuple[tuple[float, ...], ...] = fld(
        unit="1", doc="natural log of measured / analytical time at each node, one row per x node", ge=-5, le=5
    )

    def _validate(self, path: str) -> None:
        rows = self.log_ratio
        if not rows or not rows[0]:
            raise ConfigError(f"{path}.log_ratio", rows, "a non-empty list of equal-length lists")
        for i, r in enumerate(rows):
            if len(r) != len(rows[0]):
                raise ConfigError(f"{path}.log_ratio[{i}]", list(r), f"{len(rows[0])} values, as row 0")
        n = ATTENTION_RESIDUAL_AXIS_NODES
        if len(rows) * len(rows[0]) > ATTENTION_RESIDUAL_NODES or max(len(rows), len(rows[0])) > n:
            raise ConfigError(
                f"{path}.log_ratio",
                f"{len(rows)} x {len(rows[0])} nodes",
                f"at most {ATTENTION_RESIDUAL_NODES} nodes, {n} along an axis (a coarser log2_step)",
            )

    def key(self) -> tuple[str, float, float]:
        return self.kernel, self.compute_bytes, self.kv_bytes


@dataclass(frozen=True, kw_only=True)
class Efficiency:
    """Achievable fractions of peak and fixed overheads; defaults are uncalibrated, calibration replaces them.

    GEMM compute efficiency saturates in each dimension (tile under-use of small m, n, k):
    ``eta_c = compute_efficiency * m/(m + m_half) * n/(n + n_half) * k/(k + k_half)``; 8-bit and narrower
    GEMMs have their own set (``low_precision_*``, each ``None`` = the 16-bit value). Attention's efficiency
    saturates with the mean keys per query x: ``eta_a(x) = attention_compute_efficiency * x / (x +
    attention_saturation_keys)`` (short sequences leave the flash-attention tiles part empty), and prefill's
    also in the query tokens x heads u it has to spread over the SMs, ``u / (u +
    prefill_attention_saturation_units)``. Collectives
    reach ``collective_small_message_efficiency`` of the link for small messages and ``collective_efficiency``
    for large ones: ``eff(S) = eff_large (S + r S_half) / (S + S_half)``, r = small / large. Decode attention's
    KV bandwidth ramps the same way in the KV bytes S one kernel reads (``decode_attention_small_efficiency``,
    ``decode_attention_saturation_bytes``: little KV leaves SMs idle, split-KV kernels add a reduction); an
    all-to-all adds ``all_to_all_protocol_latency_s`` once each peer's share passes
    ``all_to_all_protocol_bytes`` (NCCL's protocol switch). Collectives' bus
    bandwidth also grows with the group size n, ``x n / (n + collective_saturation_devices)`` (NCCL drives
    more channels, hence more of each GPU's NVLink ports, in larger groups: 2 H100s reach ~57% of NVLink on
    512 MB all-gathers, 8 reach ~74%), and differs per operation (``*_bandwidth_ratio``, relative to all-gather
    and reduce-scatter at the same n and size).
    """

    compute_efficiency: float = fld(0.8, unit="1", doc="fraction of dense peak reached by large GEMMs", gt=0, le=1)
    compute_saturation_tokens: float = fld(
        16.0, unit="token", doc="m at which a GEMM reaches half of compute_efficiency", ge=0, le=1e7
    )
    compute_saturation_n: float = fld(0.0, unit="1", doc="GEMM output width n at half efficiency", ge=0, le=1e7)
    compute_saturation_k: float = fld(0.0, unit="1", doc="GEMM inner dimension k at half efficiency", ge=0, le=1e7)
    gemm_memory_efficiency: float | None = fld(
        None, unit="1", doc="fraction of memory bandwidth reached by GEMMs (None: memory_efficiency)", gt=0, le=1
    )
    gemm_memory_saturation_n: float = fld(
        0.0,
        unit="1",
        doc="GEMM output width n at which weights stream at half of gemm_memory_efficiency (few output tiles "
        "leave multiprocessors idle)",
        ge=0,
        le=1e7,
    )
    low_precision_compute_efficiency: float = fld(
        0.65, unit="1", doc="compute_efficiency for 8-bit and narrower GEMMs (scaling, quantisation)", gt=0, le=1
    )
    low_precision_saturation_tokens: float | None = fld(
        None, unit="token", doc="compute_saturation_tokens of 8-bit GEMMs (None: the 16-bit value)", ge=0, le=1e7
    )
    low_precision_saturation_n: float | None = fld(
        None, unit="1", doc="compute_saturation_n of 8-bit GEMMs (None: the 16-bit value)", ge=0, le=1e7
    )
    low_precision_saturation_k: float | None = fld(
        None, unit="1", doc="compute_saturation_k of 8-bit GEMMs (None: the 16-bit value)", ge=0, le=1e7
    )
    low_precision_memory_efficiency: float | None = fld(
        None, unit="1", doc="gemm_memory_efficiency of 8-bit GEMMs (None: the 16-bit value)", gt=0, le=1
    )
    low_precision_memory_saturation_n: float | None = fld(
        None, unit="1", doc="gemm_memory_saturation_n of 8-bit GEMMs (None: the 16-bit value)", ge=0, le=1e7
    )
    low_precision_gemm_overhead_s: float = fld(
        3e-6, unit="s", doc="extra fixed cost per 8-bit-or-narrower GEMM (activation quantisation)", ge=0, le=1
    )
    # block-scaled FP8 GEMMs (engine dtypes.gemm_scaling: block; 128-wide scale blocks as in DeepSeek-V3):
    # a kernel of their own, each field None = the 8-bit GEMM's value
    block_scaled_compute_efficiency: float | None = fld(
        None, unit="1", doc="low_precision_compute_efficiency of block-scaled FP8 GEMMs", gt=0, le=1
    )
    block_scaled_saturation_tokens: float | None = fld(
        None, unit="token", doc="saturation in m of block-scaled FP8 GEMMs (not fitted by calibrate)", ge=0, le=1e7
    )
    block_scaled_saturation_n: float | None = fld(
        None, unit="1", doc="saturation in n of block-scaled FP8 GEMMs", ge=0, le=1e7
    )
    block_scaled_saturation_k: float | None = fld(
        None, unit="1", doc="saturation in k of block-scaled FP8 GEMMs", ge=0, le=1e7
    )
    block_scaled_memory_efficiency: float | None = fld(
        None, unit="1", doc="gemm_memory_efficiency of block-scaled FP8 GEMMs", gt=0, le=1
    )
    block_scaled_memory_saturation_n: float | None = fld(
        None, unit="1", doc="gemm_memory_saturation_n of block-scaled FP8 GEMMs (None: the 8-bit value)", ge=0, le=1e7
    )
    block_scaled_gemm_overhead_s: float | None = fld(
        None, unit="s", doc="low_precision_gemm_overhead_s of block-scaled FP8 GEMMs (scale handling)", ge=0, le=1
    )
    block_scaled_gemm_floor_s: float = fld(
        0.0,
        unit="s",
        doc="least time of a block-scaled FP8 GEMM: vLLM's kernel takes ~85 us whatever the shape for 32 <= m <= 1024",
        ge=0,
        le=1,
    )
    block_scaled_small_gemm_floor_s: float | None = fld(
        None,
        unit="s",
        doc="block_scaled_gemm_floor_s of GEMMs with at most block_scaled_small_gemm_tokens rows (vLLM: ~60 us at "
        "m <= 8; None: the same floor)",
        ge=0,
        le=1,
    )
    block_scaled_small_gemm_tokens: float = fld(
        0.0,
        unit="token",
        doc="rows m up to which a block-scaled FP8 GEMM takes the small floor (0: none)",
        ge=0,
        le=1e7,
    )
    attention_compute_efficiency: float = fld(
        0.55, unit="1", doc="fraction of dense peak reached by (flash) attention on long sequences", gt=0, le=1
    )
    kv8_attention_compute_efficiency: float | None = fld(
        None,
        unit="1",
        doc="attention_compute_efficiency of 16-bit attention over an 8-bit KV cache (None: same)",
        gt=0,
        le=1,
    )
    low_precision_attention_compute_efficiency: float | None = fld(
        None, unit="1", doc="attention_compute_efficiency of 8-bit (FP8) attention (None: same)", gt=0, le=1
    )
    attention_saturation_keys: float = fld(
        512.0, unit="token", doc="keys per query at which attention reaches half its efficiency", ge=0, le=1e7
    )
    prefill_attention_saturation_units: float = fld(
        0.0,
        unit="token x head",
        doc="query tokens x query heads per device at which prefill attention reaches half its compute rate "
        "(few of them cannot fill every SM with query tiles; 0: off)",
        ge=0,
        le=1e9,
    )
    decode_attention_saturation_units: float = fld(
        0.0,
        unit="1",
        doc="sequences x KV heads per device at which decode attention reaches half its memory bandwidth",
        ge=0,
        le=1e6,
    )
    attention_memory_efficiency: float | None = fld(
        None, unit="1", doc="fraction of memory bandwidth reached reading KV (None: memory_efficiency)", gt=0, le=1
    )
    decode_attention_saturation_bytes: float = fld(
        0.0,
        unit="B",
        doc="KV bytes one decode attention kernel reads at which its bandwidth is halfway between "
        "decode_attention_small_efficiency and attention_memory_efficiency (0: no ramp)",
        ge=0,
        le=1e12,
    )
    decode_attention_small_efficiency: float | None = fld(
        None,
        unit="1",
        doc="fraction of memory bandwidth reached by decode attention reading little KV "
        "(None: attention_memory_efficiency)",
        gt=0,
        le=1,
    )
    memory_efficiency: float = fld(0.8, unit="1", doc="fraction of memory bandwidth reached", gt=0, le=1)
    gemm_overhead_s: float = fld(3e-6, unit="s", doc="fixed cost per GEMM kernel", ge=0, le=1)
    attention_overhead_s: float = fld(8e-6, unit="s", doc="fixed cost per attention kernel", ge=0, le=1)
    kv8_attention_overhead_s: float | None = fld(
        None, unit="s", doc="attention_overhead_s of prefill over an 8-bit KV cache (None: same)", ge=0, le=1
    )
    decode_attention_overhead_s: float | None = fld(
        None, unit="s", doc="fixed cost per decode attention kernel (None: attention_overhead_s)", ge=0, le=1
    )
    kv8_decode_attention_overhead_s: float | None = fld(
        None, unit="s", doc="decode_attention_overhead_s over an 8-bit KV cache (None: same)", ge=0, le=1
    )
    elementwise_overhead_s: float = fld(2e-6, unit="s", doc="fixed cost per fused norm/activation kernel", ge=0, le=1)
    step_overhead_s: float = fld(
        0.0,
        unit="s",
        doc="fixed cost per engine iteration outside the kernels (scheduling, input preparation, "
        "Python and launch gaps of a stack without CUDA graphs); fitted to measured decode steps by "
        "hermes_fast.calibrate (see hermes_fast.validate.fit_host_costs)",
        ge=0,
        le=10,
    )
    step_overhead_per_tp_rank_s: float = fld(
        0.0,
        unit="s",
        doc="added to step_overhead_s per tensor-parallel rank beyond the first (the host hands each "
        "iteration's batch to every worker rank and waits for the slowest)",
        ge=0,
        le=1,
    )
    sequence_overhead_s: float = fld(
        0.0,
        unit="s",
        doc="fixed cost per sequence that emits a token in an iteration (sampling, detokenisation, "
        "per-request bookkeeping)",
        ge=0,
        le=1,
    )
    collective_efficiency: float = fld(
        0.85, unit="1", doc="fraction of link bandwidth reached by collectives (large messages)", gt=0, le=1
    )
    collective_small_message_efficiency: float | None = fld(
        None,
        unit="1",
        doc="fraction of link bandwidth reached by small messages (None: collective_efficiency)",
        gt=0,
        le=1,
    )
    collective_saturation_bytes: float = fld(
        0.0, unit="B", doc="message size halfway between the small- and large-message bandwidth", ge=0, le=1e12
    )
    all_to_all_saturation_bytes: float | None = fld(
        None,
        unit="B",
        doc="collective_saturation_bytes of all-to-all (None: the same; its concurrent peer sends ramp up sooner)",
        ge=0,
        le=1e12,
    )
    collective_saturation_devices: float = fld(
        0.0, unit="device", doc="group size at which collectives reach half of their bus bandwidth", ge=0, le=1e3
    )
    all_reduce_bandwidth_ratio: float = fld(
        1.0,
        unit="1",
        doc="all-reduce bus bandwidth / all-gather's (NCCL's all-reduce kernels, NVLS in-switch reduction)",
        gt=0,
        le=4,
    )
    all_to_all_bandwidth_ratio: float = fld(
        1.0, unit="1", doc="all-to-all bus bandwidth / all-gather's (concurrent peer-to-peer sends)", gt=0, le=4
    )
    collective_overhead_s: float = fld(5e-6, unit="s", doc="fixed cost per collective call", ge=0, le=1)
    all_to_all_protocol_latency_s: float = fld(
        0.0,
        unit="s",
        doc="extra latency of an all-to-all whose per-peer share exceeds all_to_all_protocol_bytes "
        "(NCCL leaves its low-latency protocol for point-to-point sends there)",
        ge=0,
        le=1,
    )
    all_to_all_protocol_bytes: float = fld(
        16384.0,
        unit="B",
        doc="per-peer message size above which all_to_all_protocol_latency_s applies (NCCL_P2P_LL_THRESHOLD, "
        "16 KiB by default)",
        ge=0,
        le=1e12,
    )
    attention_residuals: tuple[AttentionResidual, ...] = fld(
        (),
        doc="fitted corrections of the attention kernels' time, one per (kernel, compute_bytes, kv_bytes)",
    )

    def _validate(self, path: str) -> None:
        seen = set()
        for i, r in enumerate(self.attention_residuals):
            if r.key() in seen:
                raise ConfigError(
                    f"{path}.attention_residuals[{i}]", r.key(), "one surface per (kernel, compute_bytes, kv_bytes)"
                )
            seen.add(r.key())

    def attention_residual(self, kernel: str, compute_bytes: float, kv_bytes: float) -> AttentionResidual | None:
        """The surface correcting ``kernel`` with these element sizes, or None."""
        return next((r for r in self.attention_residuals if r.key() == (kernel, compute_bytes, kv_bytes)), None)

    def gemm_profile(self, narrow: bool, block: bool = False) -> GemmProfile:
        """The profile of 16-bit or 8-bit GEMMs; ``block``: 8-bit GEMMs with block scales (their own fields,
        falling back to the 8-bit ones, which fall back to the 16-bit ones)."""
        if not narrow:
            return GemmProfile(
                self.compute_efficiency,
                self.compute_saturation_tokens,
                self.compute_saturation_n,
                self.compute_saturation_k,
                self.gemm_memory_efficiency,
                self.gemm_memory_saturation_n,
                self.gemm_overhead_s,
            )

        def pick(v, default):
            return default if v is None else v

        eff = self.low_precision_compute_efficiency
        m_half = pick(self.low_precision_saturation_tokens, self.compute_saturation_tokens)
        n_half = pick(self.low_precision_saturation_n, self.compute_saturation_n)
        k_half = pick(self.low_precision_saturation_k, self.compute_saturation_k)
        mem = pick(self.low_precision_memory_efficiency, self.gemm_memory_efficiency)
        mem_n_half = pick(self.low_precision_memory_saturation_n, self.gemm_memory_saturation_n)
        extra = self.low_precision_gemm_overhead_s
        if block:
            eff = pick(self.block_scaled_compute_efficiency, eff)
            m_half = pick(self.block_scaled_saturation_tokens, m_half)
            n_half = pick(self.block_scaled_saturation_n, n_half)
            k_half = pick(self.block_scaled_saturation_k, k_half)
            mem = pick(self.block_scaled_memory_efficiency, mem)
            mem_n_half = pick(self.block_scaled_memory_saturation_n, mem_n_half)
            extra = pick(self.block_scaled_gemm_overhead_s, extra)
        return GemmProfile(eff, m_half, n_half, k_half, mem, mem_n_half, self.gemm_overhead_s + extra)
