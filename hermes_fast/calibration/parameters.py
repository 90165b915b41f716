"""The device fields a calibration fits: each one's bounds and scale, the kinds of measurement rows that identify
it, and the value it starts from (its own, or the field it falls back to while unset).

:func:`row_groups` says which parameter groups each row's prediction depends on, :func:`identifiable` which groups
a set of rows can pin down; :mod:`hermes_fast.calibration.fit` fits only those.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config.hardware import DTYPE_BYTES, Device
from .measurements import COLLECTIVES, Measurements

__all__ = [
    "ATTENTION",
    "BLOCK",
    "COLLECTIVE",
    "GEMM16",
    "GEMM8",
    "HOST_COSTS",
    "PARAMETERS",
    "SMALL_FLOOR",
    "SMALL_TOKENS",
    "STEP",
    "Param",
    "current_value",
    "identifiable",
    "row_groups",
]


@dataclass(frozen=True)
class Param:
    """One fitted device field."""

    path: str  # device field path, e.g. efficiency.compute_efficiency
    lower: float
    upper: float
    scale: float  # typical magnitude: the optimiser works on value / scale
    groups: tuple[str, ...]  # row groups whose latency depends on it


GEMM16 = (
    Param("efficiency.compute_efficiency", 0.05, 1.0, 1.0, ("gemm16",)),
    Param("efficiency.compute_saturation_tokens", 0.0, 1e4, 100.0, ("gemm16",)),
    Param("efficiency.compute_saturation_n", 0.0, 1e5, 100.0, ("gemm16_shape",)),
    Param("efficiency.compute_saturation_k", 0.0, 1e5, 100.0, ("gemm16_shape",)),
    Param("efficiency.gemm_memory_efficiency", 0.05, 1.0, 1.0, ("gemm16",)),
    Param("efficiency.gemm_memory_saturation_n", 0.0, 1e5, 100.0, ("gemm16_shape",)),
    Param("efficiency.gemm_overhead_s", 0.0, 1e-3, 1e-5, ("gemm16", "gemm8")),
)
GEMM8 = (
    Param("efficiency.low_precision_compute_efficiency", 0.05, 1.0, 1.0, ("gemm8",)),
    Param("efficiency.low_precision_saturation_tokens", 0.0, 1e4, 100.0, ("gemm8",)),
    Param("efficiency.low_precision_saturation_n", 0.0, 1e5, 100.0, ("gemm8_shape",)),
    Param("efficiency.low_precision_saturation_k", 0.0, 1e5, 100.0, ("gemm8_shape",)),
    Param("efficiency.low_precision_memory_efficiency", 0.05, 1.0, 1.0, ("gemm8",)),
    Param("efficiency.low_precision_memory_saturation_n", 0.0, 1e5, 100.0, ("gemm8_shape",)),
    Param("efficiency.low_precision_gemm_overhead_s", 0.0, 1e-3, 1e-5, ("gemm8",)),
)
ATTENTION = (
    Param("efficiency.attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn16",)),
    Param("efficiency.kv8_attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn_kv8",)),
    Param("efficiency.low_precision_attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn8",)),
    Param("efficiency.attention_saturation_keys", 0.0, 1e5, 100.0, ("attn16", "attn_kv8", "attn8")),
    Param("efficiency.attention_memory_efficiency", 0.05, 1.0, 1.0, ("decode",)),
    Param("efficiency.decode_attention_saturation_units", 0.0, 1e3, 1.0, ("decode",)),
    Param("efficiency.decode_attention_small_efficiency", 0.01, 1.0, 1.0, ("decode",)),
    Param("efficiency.decode_attention_saturation_bytes", 0.0, 1e10, 1e6, ("decode",)),
    Param("efficiency.prefill_attention_saturation_units", 0.0, 1e7, 1e3, ("prefill",)),
    Param("efficiency.attention_overhead_s", 0.0, 1e-3, 1e-5, ("prefill16",)),
    Param("efficiency.kv8_attention_overhead_s", 0.0, 1e-3, 1e-5, ("prefill_kv8",)),
    Param("efficiency.decode_attention_overhead_s", 0.0, 1e-3, 1e-5, ("decode16",)),
    Param("efficiency.kv8_decode_attention_overhead_s", 0.0, 1e-3, 1e-5, ("decode_kv8",)),
)
COLLECTIVE = (
    Param("scale_up.latency_s", 0.0, 1e-4, 1e-6, ("coll_up",)),
    Param("scale_out.latency_s", 0.0, 1e-3, 1e-6, ("coll_out",)),
    Param("efficiency.collective_efficiency", 0.01, 1.0, 1.0, ("coll",)),
    Param("efficiency.collective_small_message_efficiency", 0.01, 1.0, 1.0, ("coll_ramp",)),
    Param("efficiency.collective_saturation_bytes", 0.0, 1e10, 1e6, ("coll_ramp",)),
    Param("efficiency.collective_overhead_s", 0.0, 1e-3, 1e-5, ("coll",)),
    Param("efficiency.collective_saturation_devices", 0.0, 64.0, 1.0, ("coll_sizes",)),
    Param("efficiency.all_reduce_bandwidth_ratio", 0.25, 4.0, 1.0, ("coll_ar_vs_ring",)),
    Param("efficiency.all_to_all_bandwidth_ratio", 0.25, 4.0, 1.0, ("coll_a2a_vs_ring",)),
    Param("efficiency.all_to_all_protocol_latency_s", 0.0, 1e-4, 1e-6, ("coll_a2a",)),
    Param("efficiency.all_to_all_saturation_bytes", 0.0, 1e10, 1e6, ("coll_a2a",)),
)
# the engine's host work, from whole decode steps once the kernels are fitted
STEP = (
    Param("efficiency.step_overhead_s", 0.0, 1.0, 1e-3, ("step",)),
    Param("efficiency.step_overhead_per_tp_rank_s", 0.0, 0.1, 1e-3, ("step_tp",)),
    Param("efficiency.sequence_overhead_s", 0.0, 0.1, 1e-4, ("step_seqs",)),
)
HOST_COSTS = tuple(p.path for p in STEP)  # device field paths of the engine's host costs
# block-scaled FP8 GEMMs: a low-precision profile of their own (the block_scaled_* twins of GEMM8) and a floor.
# Their saturation in m stays the 8-bit GEMM's: the floor hides small m (vLLM: up to m = 1024), so the rows leave
# it free (held-back errors alike from 0 to 138 tokens) while MoE experts pay it once each. A value the device or
# a prior calibration sets is kept.
BLOCK = tuple(
    dataclasses.replace(
        p,
        path=p.path.replace("low_precision_", "block_scaled_"),
        groups=tuple(g.replace("gemm8", "gemm_block") for g in p.groups),
    )
    for p in GEMM8
    if p.path != "efficiency.low_precision_saturation_tokens"
) + (
    Param("efficiency.block_scaled_gemm_floor_s", 0.0, 1e-3, 1e-5, ("gemm_block",)),
    Param("efficiency.block_scaled_small_gemm_floor_s", 0.0, 1e-3, 1e-5, ("gemm_block_sizes",)),
)
# a step in a fitted curve: its rows threshold is searched over the gaps between the measured m (not a least
# squares parameter), whenever its floor is fitted or fixed and the threshold is not fixed
SMALL_TOKENS = "efficiency.block_scaled_small_gemm_tokens"
SMALL_FLOOR = "efficiency.block_scaled_small_gemm_floor_s"

PARAMETERS = GEMM16 + GEMM8 + BLOCK + ATTENTION + COLLECTIVE + STEP


def row_groups(ms: Measurements, d: Device) -> list[set[str]]:
    """Which parameter groups each row's prediction depends on (decides what a data set can identify)."""
    out = []
    for i in range(len(ms)):
        op, dt, kv = ms["op"][i], ms["dtype"][i], ms["kv_dtype"][i]
        g: set[str] = set()
        if op in ("gemm", "layer_linear"):
            if dt == "fp8_block":
                g |= {"gemm_block", "gemm_block_shape", "gemm16"}
            elif DTYPE_BYTES[d.peak_flop_per_s.resolve(dt)[1]] <= 1.0:
                g |= {"gemm8", "gemm8_shape", "gemm16"}
            else:
                g |= {"gemm16"} | ({"gemm16_shape"} if op == "gemm" else set())
        elif op in ("context_attention", "generation_attention"):
            kv8 = DTYPE_BYTES[kv] <= 1.0
            narrow = DTYPE_BYTES[dt] <= 1.0
            g.add("attn8" if narrow else ("attn_kv8" if kv8 else "attn16"))
            if op == "context_attention":
                g |= {"prefill", "prefill_kv8" if kv8 else "prefill16"}
            else:
                g |= {"decode", "decode_kv8" if kv8 else "decode16"}
        elif op in COLLECTIVES:
            g |= {"coll", "coll_ramp", "coll_up" if ms["num_gpus"][i] <= d.scale_up_domain_devices else "coll_out"}
            g.add({"all_reduce": "coll_ar", "all_to_all": "coll_a2a"}.get(op, "coll_ring"))
        elif op == "decode_step":
            g.add("step")
        out.append(g)
    return out


def identifiable(ms: Measurements, groups: list[set[str]], rows: np.ndarray) -> set[str]:
    """Parameter groups the fitted ``rows`` can identify: those of the rows, plus the contrasts that need two
    kinds of rows (a group-size term needs two group sizes; an op's bandwidth ratio needs all-gather or
    reduce-scatter rows to be relative to, else it is confounded with collective_efficiency; a small-GEMM
    floor needs single block-scaled GEMMs of two sizes; the per-rank and per-sequence host costs need decode
    steps at two TP degrees and two batch sizes that do not move together)."""
    present = set().union(*(groups[i] for i in np.flatnonzero(rows)))
    coll = rows & np.isin(ms["op"], COLLECTIVES)
    if len(np.unique(ms["num_gpus"][coll])) >= 2:
        present.add("coll_sizes")
    if len(np.unique(ms["m"][rows & (ms["op"] == "gemm") & (ms["dtype"] == "fp8_block")])) >= 2:
        present.add("gemm_block_sizes")
    steps = rows & (ms["op"] == "decode_step")
    ones, ranks, seqs = np.ones(int(steps.sum())), ms["tp"][steps] - 1.0, ms["batch_size"][steps]
    rank = np.linalg.matrix_rank
    separable = rank(np.column_stack([ones, ranks, seqs])) == 3
    if rank(np.column_stack([ones, ranks])) == 2 and (separable or len(np.unique(seqs)) == 1):
        present.add("step_tp")
    if rank(np.column_stack([ones, seqs])) == 2 and (separable or len(np.unique(ranks)) == 1):
        present.add("step_seqs")
    if "coll_ring" in present:
        present |= {f"{g}_vs_ring" for g in ("coll_ar", "coll_a2a") if g in present}
    return present


def _get(d: Device, path: str) -> float | None:
    obj: Any = d
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def current_value(d: Device, path: str) -> float:
    """Current value of a field, or of the field it falls back to when it is None."""
    v = _get(d, path)
    if v is not None:
        return float(v)
    e = d.efficiency
    name = path.split(".")[-1]
    if path == SMALL_FLOOR:
        return current_value(d, "efficiency.block_scaled_gemm_floor_s")
    if name.startswith("block_scaled_"):  # the 8-bit GEMM's value
        return current_value(d, "efficiency." + name.replace("block_scaled_", "low_precision_"))
    pairs = {
        "gemm_memory_efficiency": e.memory_efficiency,
        "low_precision_saturation_tokens": e.compute_saturation_tokens,
        "low_precision_saturation_n": e.compute_saturation_n,
        "low_precision_saturation_k": e.compute_saturation_k,
        "low_precision_memory_efficiency": e.gemm_memory_efficiency or e.memory_efficiency,
        "low_precision_memory_saturation_n": e.gemm_memory_saturation_n,
        "kv8_attention_compute_efficiency": e.attention_compute_efficiency,
        "low_precision_attention_compute_efficiency": e.attention_compute_efficiency,
        "attention_memory_efficiency": e.memory_efficiency,
        "decode_attention_small_efficiency": e.attention_memory_efficiency or e.memory_efficiency,
        "kv8_attention_overhead_s": e.attention_overhead_s,
        "decode_attention_overhead_s": e.attention_overhead_s,
        "kv8_decode_attention_overhead_s": e.decode_attention_overhead_s or e.attention_overhead_s,
        "collective_small_message_efficiency": e.collective_efficiency,
        "all_to_all_saturation_bytes": e.collective_saturation_bytes,
    }
    return float(pairs[name])
