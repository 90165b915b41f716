"""Measure kernel and whole-step latencies with PyTorch on this machine, as calibration rows.

:func:`measure` (``hermes-fast measure``) times, for one dense catalog decoder:

- ``gemm``: ``F.linear`` over token counts x the model's four projection shapes, and per-tensor-scaled FP8
  (``torch._scaled_mm``, fast accumulation) where the GPU has it;
- ``context_attention`` and ``generation_attention``: ``scaled_dot_product_attention`` (FlashAttention on a
  GPU), causal prefill and one query token per sequence against a KV cache, at the model's heads on one and on
  several TP shards;
- ``layer_linear``: one layer's QKV, output projection and gated MLP;
- ``prefill_step`` and ``decode_step``: a whole iteration of a random-weight copy of the model: embedding
  gather, every layer (RMSNorm, QKV, RoPE, KV-cache write, attention, output projection, gated MLP), the
  final norm, the LM head on each sequence's last token and greedy sampling.

Method. On CUDA a case runs ``reps`` times inside one CUDA graph, replayed between two CUDA events: the
figure is the GPU's time without Python's launches, which is what the kernel model predicts (an engine's
host work is fitted separately, from its own decode steps). ``reps`` is chosen so one replay lasts about
5 ms and visits every operand copy, and the row's latency is the median over ``trials`` replays divided by
``reps``. The copies together exceed twice the L2 cache, so weights and KV stream from memory as they do in
serving. On the CPU (to check the method, not to calibrate) a wall-clock loop does the same.

Rows are in the measurement schema of :mod:`hermes_fast.calibration.measurements`, with the software stack in
``backend``; a JSON file beside the CSV records the machine, the software versions and the method. PyTorch is not
a dependency of hermes_fast: this module imports it only when asked to measure. The plan of shapes is in
:mod:`~hermes_fast.calibration.measure_plan`, the cases and their timing in
:mod:`~hermes_fast.calibration.measure_cases`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..config.base import ConfigError
from ..config.hardware import DTYPE_BYTES
from ..resolve import Catalog
from .measure_cases import REPLAY_S, WARM_S, Session, attention_rows, gemm_rows, layer_rows, step_rows
from .measure_plan import check_measurable, device_for_gpu, measurement_plan
from .measurements import Measurements, read_measurements, write_measurements

__all__ = ["OP_GROUPS", "environment", "measure"]

OP_GROUPS = ("gemm", "attention", "layer", "step")
_TORCH_DTYPES = ("bf16", "fp16", "fp32")


# ------------------------------------------------------------------------------------------- driver


def _nvidia_smi(query: str, uuid: str) -> str:
    """One nvidia-smi query of the GPU with this UUID ('' where nvidia-smi is missing or fails)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-i", uuid, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def environment(torch, device) -> dict[str, Any]:
    """The machine and software a measurement ran on."""
    env: dict[str, Any] = {
        "hermes_fast": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        uuid = str(getattr(props, "uuid", ""))
        uuid = uuid if uuid.startswith("GPU-") or not uuid else f"GPU-{uuid}"
        env.update(
            {
                "gpu": torch.cuda.get_device_name(device),
                "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
                "sm_count": props.multi_processor_count,
                "gpu_memory_bytes": props.total_memory,
                "l2_cache_bytes": getattr(props, "L2_cache_size", None),
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "uuid": uuid,
                "driver": _nvidia_smi("driver_version", uuid) if uuid else "",
                "max_clocks_sm_mem": _nvidia_smi("clocks.max.sm,clocks.max.mem", uuid) if uuid else "",
                "power_limit": _nvidia_smi("power.limit", uuid) if uuid else "",
            }
        )
    else:
        env["threads"] = torch.get_num_threads()
    return env


def measure(
    out: str | Path,
    device: str | None = None,
    *,
    model: str = "llama-3.1-8b",
    ops: Sequence[str] = OP_GROUPS,
    dtype: str | None = None,
    torch_device: str | None = None,
    quick: bool = False,
    trials: int = 7,
    seed: int = 0,
    catalog=None,
    log=sys.stderr,
) -> Measurements:
    """Time kernels and whole steps of ``model`` with PyTorch and write them to ``out`` (a CSV in the
    measurement schema) and ``out`` with suffix ``.json`` (machine, versions, method, cases per op).

    ``device``: the catalog device the rows are for (default: the one the GPU's name stands for);
    ``ops``: which of :data:`OP_GROUPS`; ``dtype``: bf16, fp16 or fp32 (default bf16 on a GPU, fp32 on the
    CPU); ``torch_device``: ``cuda`` (default where there is one) or ``cpu``; ``quick``: a few small cases.
    Returns the rows, validated.
    """
    cat = catalog if catalog is not None else Catalog()
    mo = cat.model(model, "measure.model")
    check_measurable(mo, model)
    ops = [o.strip() for o in (ops.split(",") if isinstance(ops, str) else ops)]
    unknown = [o for o in ops if o not in OP_GROUPS]
    if unknown or not ops:
        raise ConfigError("measure.ops", ",".join(ops), f"one or more of {', '.join(OP_GROUPS)}")
    if dtype is not None and dtype not in _TORCH_DTYPES:
        raise ConfigError("measure.dtype", dtype, f"one of {', '.join(_TORCH_DTYPES)}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError("measure.trials", trials, "an integer >= 1")
    if device is not None:
        cat.device(device, "measure.device")
    try:
        import torch
    except ImportError:
        raise ConfigError("measure", "torch", "PyTorch installed (pip install torch) to measure") from None
    where = torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    if where not in ("cuda", "cpu") or (where == "cuda" and not torch.cuda.is_available()):
        raise ConfigError("measure.torch_device", where, "cuda (with a visible GPU) or cpu")
    tdev = torch.device(where)
    if device is None:
        device = device_for_gpu(torch.cuda.get_device_name(tdev)) if where == "cuda" else None
        if device is None:
            raise ConfigError("measure.device", None, "the catalog device these rows are for (--device)")
        cat.device(device, "measure.device")
    dtype = dtype or ("bf16" if where == "cuda" else "fp32")
    if where == "cuda":
        memory = float(torch.cuda.mem_get_info(tdev)[0])  # free now: the GPU may be shared
    else:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    plan = measurement_plan(mo, memory, DTYPE_BYTES[dtype], quick)
    s = Session(torch, tdev, dtype, device, trials, seed)
    rows: list[dict] = []
    started = time.perf_counter()
    cases = {
        "gemm": lambda: gemm_rows(s, plan),
        "attention": lambda: attention_rows(s, mo, plan),
        "layer": lambda: layer_rows(s, mo, plan, model),
        "step": lambda: step_rows(s, mo, plan, model),
    }
    matmul = torch.backends.cuda.matmul
    flag, exact = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
    before = getattr(matmul, flag)
    setattr(matmul, flag, exact)  # fp32 rows are fp32 GEMMs, not TF32
    try:
        with torch.inference_mode():
            for group in (g for g in OP_GROUPS if g in ops):
                t0 = time.perf_counter()
                new = cases[group]()
                rows += new
                print(f"measured {len(new):4d} {group} rows in {time.perf_counter() - t0:7.1f} s", file=log)
                if where == "cuda":
                    torch.cuda.empty_cache()
    finally:
        setattr(matmul, flag, before)
    if not rows:
        raise ConfigError("measure", model, "at least one case that fits in memory")
    ms = read_measurements(rows)
    out = Path(out)
    write_measurements(ms, out)
    meta = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device,
        "model": model,
        "dtype": dtype,
        "rows": len(ms),
        "seconds": round(time.perf_counter() - started, 1),
        "environment": environment(torch, tdev),
        "method": {
            "timing": (
                "each case captured reps times in one CUDA graph and replayed between CUDA events; latency is "
                "the median over trials replays / reps"
                if where == "cuda"
                else "wall clock over reps calls; latency is the median over trials / reps"
            ),
            "reps": f"enough for about {REPLAY_S * 1e3:g} ms per replay and to visit every operand copy",
            "warm_up": f"3 eager calls, then replays for {WARM_S * 1e3:g} ms",
            "trials": trials,
            "operands": f"copies exceeding 2x the cache ({s.cache_bytes:.0f} bytes), all visited per replay",
            "gemm": "F.linear, weights [n, k]; FP8: torch._scaled_mm, per-tensor scales, fast accumulation",
            "attention": s.attention_path + "; decode folds each KV head's query heads into the query axis",
            "steps": "unfused eager PyTorch forward in one CUDA graph (no host work): embedding, per layer "
            "RMSNorm, QKV, RoPE, KV-cache write, attention, output projection, residual add, RMSNorm, gate+up, "
            "SiLU x up, down, residual add; final RMSNorm, LM head on the last tokens, argmax",
            "weights": f"random, seed {seed}",
        },
        "rows_per_op": {op: int((ms["op"] == op).sum()) for op in dict.fromkeys(ms["op"])},
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return ms
