"""Predicted latency of every measurement row, from the same formulas the step cost uses: vectorised twins of
the kernels' GEMM, attention (with the device's residual surfaces) and collective costs, one layer's linear
layers, and whole prefill and decode iterations from the compiled engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..compile import compile_engine
from ..config.hardware import DTYPE_BYTES, Device, weight_bytes
from ..config.scenario import Dtypes, Parallel
from ..kernels.grid import pipelined_time
from ..rates import collective_ramp, decode_attention_ramp, device_rates, group_link
from ..resolve import Catalog
from ..sizes import layer_gemm_shapes
from .calibration import Calibration
from .measurements import COLLECTIVES, Measurements, read_measurements
from .residuals import evaluate, residual_axes

__all__ = ["predict"]


def _gemm_s(d: Device, m, k, n, dtype: str, block: bool = False) -> np.ndarray:
    """Vectorised twin of a GEMM's cost in the step kernel (compile.gemm_coefficients + roofline max + overhead,
    at least the floor of a block-scaled FP8 GEMM of m rows, ``block``)."""
    r = device_rates(d, dtype, dtype, block)
    b = DTYPE_BYTES[dtype]
    wb = weight_bytes(dtype)  # (the weights with their block scales, as compile stores them)
    flops = r.gemm_flops / (1.0 + r.gemm_saturation_n / n) / (1.0 + r.gemm_saturation_k / k)
    c1 = 2.0 * k * n / flops
    compute = c1 * (m + r.gemm_saturation_tokens)
    memory = (k * n * wb + m * (k + n) * max(b, 1.0)) / r.gemm_memory_bw_for(n)
    floor = np.where(m <= r.gemm_small_tokens, r.gemm_small_floor_s, r.gemm_floor_s)
    return np.maximum(np.maximum(compute, memory) + r.gemm_overhead_s, floor)


def _attention_s(d: Device, pairs, heads, head_dim, kv_tokens, kv_heads, q_tokens, dtype, kv_dtype, decode, seqs):
    """Vectorised twin of the step cost's attention: ``kernels.roofline.attention_cost``, the prefill or decode
    overhead and saturation terms, times the device's residual surface for the kernel (``seqs`` sequences)."""
    r = device_rates(d, dtype, kv_dtype)
    surface = d.efficiency.attention_residual(
        "decode" if decode else "prefill", r.attention_compute_bytes, DTYPE_BYTES[kv_dtype]
    )
    factor = evaluate(surface, *residual_axes(decode, seqs, heads, kv_heads, kv_tokens / seqs))
    sat = d.efficiency.attention_saturation_keys
    width = heads * 2.0 * head_dim
    kv_token_bytes = 2.0 * kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    compute = 2.0 * width * (pairs + sat * q_tokens) / r.attention_flops
    memory = (kv_tokens * kv_token_bytes + q_tokens * width * 2.0) / r.memory_bw
    if decode:
        memory = memory * (1.0 + d.efficiency.decode_attention_saturation_units / (q_tokens * kv_heads))
        ramp, low = decode_attention_ramp(d)
        if ramp > 0.0:
            kv_bytes = kv_tokens * kv_token_bytes
            memory = memory * (kv_bytes + ramp) / (kv_bytes + low * ramp)
        return factor * (np.maximum(compute, memory) + r.decode_attention_overhead_s)
    compute = compute * (1.0 + d.efficiency.prefill_attention_saturation_units / (q_tokens * heads))
    return factor * (np.maximum(compute, memory) + r.attention_overhead_s)


def _collective_s(d: Device, op: str, n, size_bytes) -> np.ndarray:
    """Vectorised twin of ``kernels.collectives`` with the message-size bandwidth ramp, per group size and op."""
    out = np.zeros(len(n))
    ramp, low = collective_ramp(d, op)
    for g in np.unique(n):
        sel = n == g
        alpha, bw = group_link(d, int(g), op)
        s = size_bytes[sel]
        if ramp > 0.0:
            bw = bw * (s + low * ramp) / (s + ramp)
        steps = 2.0 * (g - 1.0) if op == "all_reduce" else g - 1.0
        hops = 1.0 if op == "all_to_all" else steps  # all-to-all: concurrent peer sends, one latency
        t = d.efficiency.collective_overhead_s + hops * alpha + steps * s / g / bw
        if op == "all_to_all":
            t = t + np.where(
                s / g > d.efficiency.all_to_all_protocol_bytes, d.efficiency.all_to_all_protocol_latency_s, 0.0
            )
        out[sel] = np.where((g > 1.0) & (s > 0.0), t, 0.0)
    return out


def _layer_linear_s(d: Device, catalog, model: str, tp: float, tokens, dtype: str, block: bool) -> np.ndarray:
    """QKV + output projection + gated MLP (gate+up, down) of one layer on one TP shard."""
    shapes = layer_gemm_shapes(catalog.model(model), tp)
    return sum(_gemm_s(d, tokens, float(k), float(n), dtype, block) for k, n in shapes)


def _step_s(d: Device, catalog, row: Mapping[str, Any]) -> float:
    """A whole prefill or decode iteration from the engine's compiled step cost, as ``estimate`` times it
    (PP micro-batches included)."""
    dt, scaling = (row["dtype"], "tensor") if row["dtype"] != "fp8_block" else ("fp8", "block")
    ce = compile_engine(
        catalog.model(row["model"]),
        d,
        Parallel(tp=int(row["tp"]), pp=int(row["pp"])),
        Dtypes(weight=dt, activation=dt, kv=row["kv_dtype"], gemm_scaling=scaling),
        check=False,
    )
    b, past = float(row["batch_size"]), float(row["context_tokens"])
    if row["op"] == "decode_step":
        return float(pipelined_time.jit(ce.params, b, 0.0, past, True)[0])
    return float(pipelined_time.jit(ce.params, b, float(row["tokens"]), past, False)[0])


def predict(
    measurements: Measurements | str | Path | Iterable[Mapping[str, Any]],
    device: Device | None = None,
    *,
    catalog: Catalog | None = None,
    calibration: Calibration | None = None,
) -> np.ndarray:
    """Predicted seconds for every measurement row, from the same formulas the step cost uses.

    Parameters
    ----------
    measurements
        Rows in the :data:`~hermes_fast.calibration.measurements.MEASUREMENT_COLUMNS` schema (a CSV path,
        mappings or :class:`~hermes_fast.calibration.measurements.Measurements`).
    device
        Predict every row on this device; None: each row on its own ``device`` column resolved in ``catalog``.
    catalog
        Resolves device and model names (default: the shipped catalog with its default calibrations).
    calibration
        Applied on top of each row's device.

    Returns
    -------
    numpy.ndarray
        float64 seconds, one per row.

    Examples
    --------
    >>> row = {"op": "gemm", "device": "h100_sxm", "m": 64, "n": 4096, "k": 4096, "dtype": "bf16", "latency_s": 1e-5}
    >>> float(predict([row])[0]) > 0
    True
    """
    ms = read_measurements(measurements)
    cat = catalog if catalog is not None else Catalog()
    out = np.full(len(ms), np.nan)
    ops, devs, dts = ms["op"], ms["device"], ms["dtype"]
    kvd = ms["kv_dtype"]
    keys = {}
    for i in range(len(ms)):
        keys.setdefault((devs[i], ops[i], dts[i], kvd[i]), []).append(i)
    resolved: dict[str, Device] = {}

    def device_for(dev_name: str) -> Device:
        if dev_name not in resolved:
            d = device if device is not None else cat.device(dev_name, f"measurements.device ({dev_name})")
            resolved[dev_name] = calibration.apply(d) if calibration is not None else d
        return resolved[dev_name]

    for (dev_name, op, dt, kv_dt), idx in keys.items():
        idx = np.array(idx)
        d = device_for(dev_name)
        block = dt == "fp8_block"
        if block:
            dt = "fp8"
        col = {c: ms[c][idx] for c in ("m", "n", "k", "batch_size", "tokens", "context_tokens")}
        if op == "gemm":
            out[idx] = _gemm_s(d, col["m"], col["k"], col["n"], dt, block)
        elif op in ("context_attention", "generation_attention"):
            b = col["batch_size"]
            heads, kvh, hd = ms["num_heads"][idx], ms["num_kv_heads"][idx], ms["head_dim"][idx]
            if op == "context_attention":
                q, past = col["tokens"], col["context_tokens"]
                pairs = b * (q * past + 0.5 * q * (q + 1.0))
                out[idx] = _attention_s(d, pairs, heads, hd, b * (q + past), kvh, b * q, dt, kv_dt, False, b)
            else:
                kv = col["context_tokens"]
                out[idx] = _attention_s(d, b * kv, heads, hd, b * kv, kvh, b, dt, kv_dt, True, b)
        elif op in COLLECTIVES:
            out[idx] = _collective_s(d, op, ms["num_gpus"][idx], ms["message_bytes"][idx])
        elif op == "layer_linear":
            for j in idx:
                tokens = np.array([ms["tokens"][j]])
                out[j] = _layer_linear_s(d, cat, ms["model"][j], ms["tp"][j], tokens, dt, block)[0]
        else:
            rows = ms.select(idx).to_rows()
            for j, row in zip(idx, rows, strict=True):
                row.setdefault("context_tokens", 0.0)
                row.setdefault("pp", 1.0)
                out[j] = _step_s(d, cat, row)
    return out
