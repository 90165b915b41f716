"""Kernel predictions against the measured latencies shipped in ``hermes_fast/data/reference``.

Each measured row (a GEMM, a prefill or decode attention call, a collective, a layer's linear ops) is
predicted with the same roofline kernels the step cost uses, from the device's catalog entry and its
(default or calibrated) efficiency parameters. :func:`reference_errors` returns one row per
measurement; :func:`error_summary` the median and 90th-percentile absolute relative error per kernel
family and device.
"""

from __future__ import annotations

import csv
from importlib.resources import files

import numpy as np
import xarray as xr

from .catalog import Catalog
from .compile import device_rates, group_link
from .config.hardware import DTYPE_BYTES, Device
from .kernels.collectives import allgather_time, allreduce_time
from .kernels.roofline import attention_cost, gemm_cost

__all__ = ["reference_errors", "error_summary", "read_reference"]

_MS = 1e-3
_GPU = {"h100_sxm": "h100_sxm", "h200_sxm": "h200_sxm", "A100 80GB SXM": "a100_sxm_80gb", "H100 80GB SXM": "h100_sxm"}
_DTYPE = {"bfloat16": "bf16", "half": "fp16", "fp8": "fp8", "fp8_block": "fp8", "int8": "int8"}


def read_reference(name: str) -> list[dict[str, str]]:
    """Rows of one shipped reference CSV (``aiconfigurator_gemm``, ``vidur_operator_profiles``, ...)."""
    text = (files("hermes_fast") / "data" / "reference" / f"{name}.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def _gemm_s(d: Device, m: float, k: float, n: float, dtype: str) -> float:
    r = device_rates(d, dtype, dtype)
    b = DTYPE_BYTES[dtype]
    c, mem = gemm_cost(m, k, n, 1.0, r.gemm_flops, d.efficiency.compute_saturation_tokens, r.memory_bw, b, max(b, 1.0))
    return max(c, mem) + r.gemm_overhead_s


def _attention_s(d, pairs, heads, head_dim, kv_tokens, kv_heads, kv_dtype, q_tokens, dtype) -> float:
    r = device_rates(d, dtype, kv_dtype)
    sat = d.efficiency.attention_saturation_keys
    kv_token_bytes = 2.0 * kv_heads * head_dim * DTYPE_BYTES[kv_dtype]
    c, m = attention_cost(
        pairs, heads, head_dim, head_dim, kv_tokens, kv_token_bytes, q_tokens, 2.0, r.attention_flops, sat, r.memory_bw
    )
    return max(c, m) + d.efficiency.attention_overhead_s


def _collective_s(d: Device, op: str, n: int, size_bytes: float) -> float:
    alpha, bw = group_link(d, n)
    fn = allreduce_time if op == "all_reduce" else allgather_time  # all-gather, reduce-scatter, all-to-all
    return fn(size_bytes, float(n), alpha, bw, d.efficiency.collective_overhead_s)


def _layer_linear_s(d: Device, cat: Catalog, model: str, tp: int, tokens: float) -> float:
    """QKV + output projection + gated MLP (gate+up, down) of one layer on one TP shard, fp16."""
    m = cat.model(model)
    h, hd = m.hidden_size, m.head_dim
    kv = max(m.n_kv_heads / tp, 1.0)
    shapes = [
        (h, (m.n_heads / tp + 2 * kv) * hd),
        (m.n_heads / tp * hd, h),
        (h, 2 * m.ffn_hidden_size / tp),
        (m.ffn_hidden_size / tp, h),
    ]
    return sum(_gemm_s(d, tokens, k, n, "fp16") for k, n in shapes)


def reference_errors(catalog: Catalog | None = None) -> xr.Dataset:
    """Predicted vs measured latency for every shipped reference row, on dim ``row``.

    Variables: ``family`` (gemm, context_attention, generation_attention, collective, layer_linear),
    ``device`` (catalog name), ``source``, ``measured_s``, ``predicted_s``, ``relative_error``
    ((predicted - measured) / measured).
    """
    cat = catalog or Catalog()
    fam, dev, src, meas, pred = [], [], [], [], []

    def add(family, device, source, measured_s, predicted_s):
        fam.append(family)
        dev.append(device)
        src.append(source)
        meas.append(measured_s)
        pred.append(predicted_s)

    for r in read_reference("aiconfigurator_gemm"):
        d = cat.device(_GPU[r["gpu"]])
        dt = _DTYPE[r["gemm_dtype"]]
        p = _gemm_s(d, float(r["m"]), float(r["k"]), float(r["n"]), dt)
        add("gemm", _GPU[r["gpu"]], f"aiconfigurator/{r['backend']}/{r['gemm_dtype']}", float(r["latency_ms"]) * _MS, p)
    for r in read_reference("aiconfigurator_context_attention"):
        d = cat.device(_GPU[r["gpu"]])
        b, s = float(r["batch_size"]), float(r["isl"])
        pairs = b * s * (s + 1.0) / 2.0
        p = _attention_s(
            d,
            pairs,
            float(r["num_heads"]),
            float(r["head_dim"]),
            b * s,
            float(r["num_key_value_heads"]),
            _DTYPE[r["kv_cache_dtype"]],
            b * s,
            _DTYPE[r["attn_dtype"]],
        )
        add("context_attention", _GPU[r["gpu"]], f"aiconfigurator/{r['backend']}", float(r["latency_ms"]) * _MS, p)
    for r in read_reference("aiconfigurator_generation_attention"):
        d = cat.device(_GPU[r["gpu"]])
        b, kv = float(r["batch_size"]), float(r["kv_len"])
        p = _attention_s(
            d,
            b * kv,
            float(r["num_heads"]),
            float(r["head_dim"]),
            b * kv,
            float(r["num_key_value_heads"]),
            _DTYPE[r["kv_cache_dtype"]],
            b,
            _DTYPE[r["attn_dtype"]],
        )
        add("generation_attention", _GPU[r["gpu"]], f"aiconfigurator/{r['backend']}", float(r["latency_ms"]) * _MS, p)
    for r in read_reference("aiconfigurator_comm"):
        if r["source"] != "nccl":
            continue  # custom all-reduce kernels are a different algorithm; calibration handles them
        d = cat.device(_GPU[r["gpu"]])
        p = _collective_s(d, r["op_name"], int(r["num_gpus"]), float(r["bytes"]))
        add("collective", _GPU[r["gpu"]], f"nccl/{r['op_name']}", float(r["latency_ms"]) * _MS, p)
    for r in read_reference("vidur_operator_profiles"):
        value = float(r["value"]) * _MS
        if r["metric"] == "per_layer_linear_ops_time_ms":
            name = _GPU[r["hardware"]]
            model = {"Llama-2-7B": "llama-2-7b", "Llama-2-70B": "llama-2-70b"}[r["model"]]
            tp = int(r["parallelism"].split()[0][2:])
            p = _layer_linear_s(cat.device(name), cat, model, tp, float(r["isl"]))
            add("layer_linear", name, "vidur", value, p)
        else:
            name = "h100_sxm" if r["hardware"].startswith("H100") else "a100_sxm_80gb"
            size = float(r["notes"].split("message size ")[1].split()[0])
            add(
                "collective",
                name,
                "vidur/all_reduce",
                value,
                _collective_s(cat.device(name), "all_reduce", int(r["n_devices"]), size),
            )
    measured = np.array(meas)
    predicted = np.array(pred)
    return xr.Dataset(
        {
            "family": ("row", np.array(fam)),
            "device": ("row", np.array(dev)),
            "source": ("row", np.array(src)),
            "measured_s": ("row", measured, {"units": "s", "long_name": "measured latency"}),
            "predicted_s": ("row", predicted, {"units": "s", "long_name": "predicted latency"}),
            "relative_error": (
                "row",
                (predicted - measured) / measured,
                {"units": "1", "long_name": "(predicted - measured) / measured"},
            ),
        }
    )


def error_summary(errors: xr.Dataset) -> list[dict]:
    """Median and 90th-percentile absolute relative error per (family, device), plus the signed median."""
    out = []
    fam = errors.family.values
    dev = errors.device.values
    rel = errors.relative_error.values
    for f, d in sorted(set(zip(fam, dev, strict=True))):
        sel = (fam == f) & (dev == d)
        a = np.abs(rel[sel])
        out.append(
            {
                "family": f,
                "device": d,
                "rows": int(sel.sum()),
                "median_abs_error": float(np.median(a)),
                "p90_abs_error": float(np.quantile(a, 0.9)),
                "median_signed_error": float(np.median(rel[sel])),
            }
        )
    return out
