"""The measured latencies shipped in ``hermes_fast/data/reference`` as calibration rows.

The shipped files (NVIDIA aiconfigurator databases, microsoft/vidur profiles, Splitwise's measured steps; see
SOURCES.md there) converted to the measurement schema of :mod:`hermes_fast.calibration.measurements`:
:func:`reference_measurements` (kernels and collectives) and :func:`step_measurements` (Splitwise's Llama-2-70B
prefill and decode steps).
"""

from __future__ import annotations

import csv
from functools import cache
from importlib.resources import files

import numpy as np

from .measurements import Measurements, read_measurements

__all__ = ["read_reference", "reference_measurements", "step_measurements"]


_MS = 1e-3
_GPU = {"h100_sxm": "h100_sxm", "h200_sxm": "h200_sxm", "A100 80GB SXM": "a100_sxm_80gb", "H100 80GB SXM": "h100_sxm"}
_DTYPE = {"bfloat16": "bf16", "half": "fp16", "fp8": "fp8", "fp8_block": "fp8_block", "int8": "int8"}
_COMM_OP = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter"}
_COMM_OP["alltoall"] = "all_to_all"


def read_reference(name: str) -> list[dict[str, str]]:
    """Rows of one shipped reference CSV (``aiconfigurator_gemm``, ``vidur_operator_profiles``, ...)."""
    text = (files("hermes_fast") / "data" / "reference" / f"{name}.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def _backend(r: dict[str, str]) -> str:
    return f"{r['backend']}-{r['db_version']}"


@cache
def _reference_rows() -> tuple[dict, ...]:
    rows: list[dict] = []
    for r in read_reference("aiconfigurator_gemm"):
        rows.append(
            {
                "op": "gemm",
                "device": _GPU[r["gpu"]],
                "backend": _backend(r),
                "dtype": _DTYPE[r["gemm_dtype"]],
                "m": r["m"],
                "n": r["n"],
                "k": r["k"],
                "latency_s": float(r["latency_ms"]) * _MS,
                "source": "aiconfigurator_gemm.csv",
            }
        )
    for kind in ("context", "generation"):
        for r in read_reference(f"aiconfigurator_{kind}_attention"):
            row = {
                "op": f"{kind}_attention",
                "device": _GPU[r["gpu"]],
                "backend": _backend(r),
                "dtype": _DTYPE[r["attn_dtype"]],
                "kv_dtype": _DTYPE[r["kv_cache_dtype"]],
                "batch_size": r["batch_size"],
                "num_heads": r["num_heads"],
                "num_kv_heads": r["num_key_value_heads"],
                "head_dim": r["head_dim"],
                "latency_s": float(r["latency_ms"]) * _MS,
                "source": f"aiconfigurator_{kind}_attention.csv",
            }
            if kind == "context":
                row["tokens"] = r["isl"]
            else:
                row["context_tokens"] = r["kv_len"]
            rows.append(row)
    for r in read_reference("aiconfigurator_comm"):
        if r["source"] != "nccl":
            continue  # custom all-reduce kernels are a different algorithm, not the ring the step cost assumes
        rows.append(
            {
                "op": _COMM_OP[r["op_name"]],
                "device": _GPU[r["gpu"]],
                "backend": f"nccl-{r['db_version']}",
                "num_gpus": r["num_gpus"],
                "message_bytes": r["bytes"],
                "latency_s": float(r["latency_ms"]) * _MS,
                "source": "aiconfigurator_comm.csv",
            }
        )
    for r in read_reference("vidur_operator_profiles"):
        value = float(r["value"]) * _MS
        if r["metric"] == "per_layer_linear_ops_time_ms":
            rows.append(
                {
                    "op": "layer_linear",
                    "device": _GPU[r["hardware"]],
                    "backend": "vidur-pytorch",
                    "dtype": "fp16",
                    "model": {"Llama-2-7B": "llama-2-7b", "Llama-2-70B": "llama-2-70b"}[r["model"]],
                    "tp": r["parallelism"].split()[0][2:],
                    "tokens": r["isl"],
                    "latency_s": value,
                    "source": "vidur_operator_profiles.csv",
                }
            )
        else:
            rows.append(
                {
                    "op": "all_reduce",
                    "device": "h100_sxm" if r["hardware"].startswith("H100") else "a100_sxm_80gb",
                    "backend": "vidur-pytorch",
                    "num_gpus": r["n_devices"],
                    "message_bytes": r["notes"].split("message size ")[1].split()[0],
                    "latency_s": value,
                    "source": "vidur_operator_profiles.csv",
                }
            )
    return tuple(rows)


def reference_measurements() -> Measurements:
    """Every shipped reference row in the :data:`~hermes_fast.calibration.measurements.MEASUREMENT_COLUMNS` schema
    (seconds), with ``backend`` naming the software stack (``trtllm-1.3.0rc20``, ``nccl-2.29.2``, ...)."""
    return read_measurements(_reference_rows())


# Splitwise's DGX machines -> catalog devices; its h100-80gb-pcap rows are not measurements (they are the
# h100-80gb rows with prompt times x 1.3) and BLOOM-176B is not in the catalog, so both are left out
_SPLITWISE_DEVICE = {"a100-80gb": "a100_sxm_80gb", "h100-80gb": "h100_sxm"}


@cache
def _step_rows() -> tuple[dict, ...]:
    prefill: dict[tuple, list[float]] = {}
    decode: dict[tuple, list[float]] = {}
    seen = set()
    for r in read_reference("splitwise_perf_model"):
        if r["model"] != "llama2-70b" or r["hardware"] not in _SPLITWISE_DEVICE or tuple(r.values()) in seen:
            continue  # (the base setting is listed once per sweep: its copies are one set of repeats)
        seen.add(tuple(r.values()))
        tp, batch = int(r["tensor_parallel"]), int(r["batch_size"])
        if tp == 2 and batch == 64:
            continue  # prompt time falls 4x while e2e reaches 160 s: two GPUs' KV cache overflowed, not one step
        setting = (r["hardware"], tp, batch, int(r["prompt_size"]))
        prefill.setdefault(setting, []).append(float(r["prompt_time"]))
        decode.setdefault((*setting, int(r["token_size"])), []).append(float(r["token_time"]))
    rows = []
    for ops, op in ((prefill, "prefill_step"), (decode, "decode_step")):
        for key, times in sorted(ops.items()):
            hw, tp, batch, prompt = key[:4]
            row = {"op": op, "device": _SPLITWISE_DEVICE[hw], "backend": "splitwise-2023", "model": "llama-2-70b"}
            row.update({"tp": tp, "batch_size": batch, "dtype": "fp16", "kv_dtype": "fp16"})
            if op == "prefill_step":
                row["tokens"] = prompt
            else:  # the mean step of a generation of key[4] tokens reads the prompt and half the output
                row["context_tokens"] = prompt + key[4] / 2.0
            row["latency_s"] = float(np.median(times)) * _MS
            row["source"] = "splitwise_perf_model.csv"
            rows.append(row)
    return tuple(rows)


def step_measurements() -> Measurements:
    """Measured whole iterations shipped with hermes_fast: Splitwise's (Patel et al., ISCA 2024) Llama-2-70B
    fp16 prefill and mean decode steps on DGX-A100 and DGX-H100 at TP 2, 4 and 8, one row per setting (the
    median of its repeats; a decode row's ``context_tokens`` is the prompt plus half the output)."""
    return read_measurements(_step_rows())
