"""Fit a device's efficiency parameters to measured latencies; save, load and apply the fitted calibration.

The analytical model stays analytical: a calibration only sets fields of a device's catalog entry
(``efficiency.*`` and link latencies), so it works for any grid and any scenario. Measurements are rows of a
CSV (or mappings) in the schema of :data:`MEASUREMENT_COLUMNS`, one operator per row:

- ``gemm``: ``m, n, k, dtype`` (``fp8_block``: block-scaled FP8, the device's ``block_scaled_*`` fields);
- ``context_attention`` (prefill): ``batch_size, tokens`` (new tokens per sequence), optional
  ``context_tokens`` (cached prefix per sequence, default 0), ``num_heads, num_kv_heads, head_dim, dtype,
  kv_dtype``;
- ``generation_attention`` (decode, one query token per sequence): ``batch_size, context_tokens`` (cached
  tokens per sequence), heads, dims and dtypes as above;
- ``all_reduce``, ``all_gather``, ``reduce_scatter``, ``all_to_all``: ``num_gpus, message_bytes``;
- ``layer_linear``: one layer's QKV, output projection and gated MLP on one TP shard: ``model, tp, tokens,
  dtype``;
- ``prefill_step``, ``decode_step``: a whole engine iteration: ``model, tp, pp, batch_size``, ``tokens``
  (prompt per sequence) and/or ``context_tokens`` (KV per sequence), ``dtype, kv_dtype``. They are predicted
  from the kernels (:func:`predict`); decode steps, whose kernels are short, fit the engine's host costs
  (``step_overhead_s``, ``step_overhead_per_tp_rank_s``, ``sequence_overhead_s``) on top of the kernels;
  prefill steps are only compared.

Every row has ``op, device, latency_s`` and may have ``backend`` and ``source``. :func:`calibrate` fits by
least squares on log(predicted / measured) over all but a deterministic held-back share of rows and reports
the error on the held-back rows per kernel family.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .config.base import ConfigError, close_match_hint, from_mapping, load_yaml, to_mapping
from .config.hardware import DTYPE_BYTES, DTYPES, AttentionResidual, Device
from .residuals import evaluate, fit_residual, residual_axes

__all__ = [
    "MEASUREMENT_COLUMNS",
    "OPS",
    "Calibration",
    "Measurements",
    "calibrate",
    "family_of",
    "load_calibration",
    "predict",
    "read_measurements",
    "shipped_calibrations",
]

# column -> (type, meaning); numbers are float64, names strings
MEASUREMENT_COLUMNS: dict[str, tuple[type, str]] = {
    "op": (str, "operator: " + ", ".join(()) or "see OPS"),
    "device": (str, "catalog device name (preset or scenario device)"),
    "backend": (str, "software stack label, e.g. trtllm-1.3.0rc20 (optional)"),
    "dtype": (str, "GEMM operand / attention compute format: fp32, fp16, bf16, fp8, int8, fp4, int4, fp8_block"),
    "kv_dtype": (str, "KV-cache format (attention and steps)"),
    "m": (float, "GEMM rows (tokens)"),
    "n": (float, "GEMM output width"),
    "k": (float, "GEMM inner dimension"),
    "batch_size": (float, "sequences"),
    "tokens": (float, "new tokens per sequence (prefill), tokens of a layer_linear call"),
    "context_tokens": (float, "cached tokens per sequence (decode KV length, prefill prefix)"),
    "num_heads": (float, "query heads on one device"),
    "num_kv_heads": (float, "KV heads on one device"),
    "head_dim": (float, "per-head dimension"),
    "num_gpus": (float, "devices in the collective"),
    "message_bytes": (float, "collective message size in bytes (the full buffer)"),
    "model": (str, "catalog model name (layer_linear, steps)"),
    "tp": (float, "tensor-parallel degree (layer_linear, steps)"),
    "pp": (float, "pipeline-parallel degree (steps)"),
    "latency_s": (float, "measured latency in seconds (> 0)"),
    "source": (str, "where the row comes from (free text)"),
}
_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
_ATTN = ("num_heads", "num_kv_heads", "head_dim", "dtype", "kv_dtype", "batch_size")
# op -> columns it requires (besides op, device, latency_s)
OPS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "dtype"),
    "context_attention": ("tokens", *_ATTN),
    "generation_attention": ("context_tokens", *_ATTN),
    **{c: ("num_gpus", "message_bytes") for c in _COLLECTIVES},
    "layer_linear": ("model", "tp", "tokens", "dtype"),
    "prefill_step": ("model", "tp", "batch_size", "tokens", "dtype", "kv_dtype"),
    "decode_step": ("model", "tp", "batch_size", "context_tokens", "dtype", "kv_dtype"),
}
MEASUREMENT_COLUMNS["op"] = (str, "operator: " + ", ".join(OPS))
_DEFAULTS = {"context_tokens": 0.0, "pp": 1.0, "tp": 1.0, "backend": "", "source": ""}
_GEMM_DTYPES = (*DTYPES, "fp8_block")


def family_of(op: str, dtype: str = "") -> str:
    """Kernel family an op is reported and fitted under: gemm, gemm_fp8_block, context_attention,
    generation_attention, collective, layer_linear, layer_linear_fp8_block, prefill_step, decode_step.
    Block-scaled FP8 GEMMs are a kernel of their own (fixed-cost plateaus; engines with
    ``dtypes.gemm_scaling: block``), apart from the plain ones, alone or in whole layers."""
    if op in ("gemm", "layer_linear") and dtype == "fp8_block":
        return f"{op}_fp8_block"
    return "collective" if op in _COLLECTIVES else op


@dataclass(frozen=True)
class Measurements:
    """Validated measurement rows as columns (float64 arrays for numbers, object arrays for names)."""

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["op"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def select(self, mask: np.ndarray) -> Measurements:
        return Measurements({k: v[mask] for k, v in self.columns.items()})

    def row_keys(self) -> list[str]:
        """A stable identity per row (every column but the latency), for the deterministic hold-out."""
        names = [c for c in MEASUREMENT_COLUMNS if c not in ("latency_s", "source")]
        cols = [self.columns[c] for c in names]
        return ["|".join(_fmt_key(v) for v in vals) for vals in zip(*cols, strict=True)]

    @property
    def family(self) -> np.ndarray:
        ops, dtypes = self.columns["op"], self.columns["dtype"]
        return np.array([family_of(o, d) for o, d in zip(ops, dtypes, strict=True)], dtype=object)

    def to_rows(self) -> list[dict[str, Any]]:
        out = []
        for i in range(len(self)):
            row = {}
            for c, v in self.columns.items():
                x = v[i]
                if isinstance(x, float) and math.isnan(x):
                    continue
                if x == "" and c not in ("op", "device"):
                    continue
                row[c] = x
            out.append(row)
        return out

    @staticmethod
    def concat(parts: Sequence[Measurements]) -> Measurements:
        return Measurements({c: np.concatenate([p.columns[c] for p in parts]) for c in MEASUREMENT_COLUMNS})


def _fmt_key(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.9g}"
    return str(v)


def _where(name: str, i: int) -> str:
    return f"{name}:row {i + 2}"  # CSV line number (header is line 1)


def read_measurements(source: str | Path | Iterable[Mapping[str, Any]] | Measurements) -> Measurements:
    """Validated measurements from a CSV path, or from an iterable of mappings (one per row).

    Raises
    ------
    ConfigError
        naming the row (``file.csv:row 7``, the line number) and column of the first bad value: an unknown
        column or op, a missing required column, a non-number, a non-positive latency or size.

    Examples
    --------
    >>> ms = read_measurements([{"op": "gemm", "device": "h100_sxm", "m": 64, "n": 4096, "k": 4096,
    ...                          "dtype": "bf16", "latency_s": 2.1e-5}])
    >>> len(ms)
    1
    """
    if isinstance(source, Measurements):
        return source
    if isinstance(source, (str, Path)):
        name = Path(source).name
        try:
            text = Path(source).read_text()
        except OSError as e:
            raise ConfigError("measurements", str(source), f"a readable CSV file ({e.strerror})") from None
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        for col in header:
            if col not in MEASUREMENT_COLUMNS:
                hint = close_match_hint(col, list(MEASUREMENT_COLUMNS))
                raise ConfigError(
                    f"{name}:header", col, f"a column of the schema{hint}: {', '.join(MEASUREMENT_COLUMNS)}"
                )
        rows: list[Mapping[str, Any]] = list(reader)
    else:
        name = "measurements"
        rows = list(source)
    if not rows:
        raise ConfigError(name, "no rows", "at least one measurement row")
    cols: dict[str, list] = {c: [] for c in MEASUREMENT_COLUMNS}
    for i, row in enumerate(rows):
        where = _where(name, i)
        if not isinstance(row, Mapping):
            raise ConfigError(where, row, "a mapping of column -> value")
        for key in row:
            if key not in MEASUREMENT_COLUMNS:
                hint = close_match_hint(str(key), list(MEASUREMENT_COLUMNS))
                raise ConfigError(f"{where}.{key}", row[key], f"a column of the schema{hint}")
        op = row.get("op")
        if op not in OPS:
            hint = close_match_hint(str(op), list(OPS))
            raise ConfigError(f"{where}.op", op, f"one of {', '.join(OPS)}{hint}")
        need = ("device", "latency_s", *OPS[op])
        for c, (tp, _) in MEASUREMENT_COLUMNS.items():
            v = row.get(c)
            blank = v is None or (isinstance(v, str) and not v.strip())
            if blank:
                if c in need and c not in _DEFAULTS:
                    raise ConfigError(f"{where}.{c}", v, f"a value ({op} rows need {', '.join(need)})")
                cols[c].append(_DEFAULTS.get(c, math.nan if tp is float else ""))
                continue
            if tp is float:
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}.{c}", v, "a number") from None
                if not math.isfinite(x) or x < 0 or (x == 0 and c not in ("context_tokens",)):
                    raise ConfigError(
                        f"{where}.{c}", v, "a finite number > 0" + (" (seconds)" if c == "latency_s" else "")
                    )
                cols[c].append(x)
            else:
                s = str(v).strip()
                if c in ("dtype", "kv_dtype") and s not in _GEMM_DTYPES:
                    raise ConfigError(f"{where}.{c}", s, f"one of {', '.join(_GEMM_DTYPES)}")
                if c == "kv_dtype" and s == "fp8_block":
                    raise ConfigError(f"{where}.{c}", s, f"one of {', '.join(DTYPES)}")
                cols[c].append(s)
    out = {c: np.array(v, dtype=np.float64 if MEASUREMENT_COLUMNS[c][0] is float else object) for c, v in cols.items()}
    return Measurements(out)


def write_measurements(ms: Measurements, path: str | Path) -> None:
    """Write measurements as a CSV in the schema (blank cells where a column does not apply)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(MEASUREMENT_COLUMNS))
        w.writeheader()
        for r in ms.to_rows():
            w.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in r.items()})


# ------------------------------------------------------------------------------------------- prediction


def _gemm_s(d: Device, m, k, n, dtype: str, block: bool = False) -> np.ndarray:
    """Vectorised twin of a GEMM's cost in the step kernel (compile.gemm_coefficients + roofline max + overhead,
    at least the floor of a block-scaled FP8 GEMM of m rows, ``block``)."""
    from .compile import device_rates

    r = device_rates(d, dtype, dtype, block)
    b = DTYPE_BYTES[dtype]
    flops = r.gemm_flops / (1.0 + r.gemm_saturation_n / n) / (1.0 + r.gemm_saturation_k / k)
    c1 = 2.0 * k * n / flops
    compute = c1 * (m + r.gemm_saturation_tokens)
    memory = (k * n * b + m * (k + n) * max(b, 1.0)) / r.gemm_memory_bw
    floor = np.where(m <= r.gemm_small_tokens, r.gemm_small_floor_s, r.gemm_floor_s)
    return np.maximum(np.maximum(compute, memory) + r.gemm_overhead_s, floor)


def _attention_s(d: Device, pairs, heads, head_dim, kv_tokens, kv_heads, q_tokens, dtype, kv_dtype, decode, seqs):
    """Vectorised twin of the step cost's attention: ``kernels.roofline.attention_cost``, the prefill or decode
    overhead and saturation terms, times the device's residual surface for the kernel (``seqs`` sequences)."""
    from .compile import device_rates

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
        from .compile import decode_attention_ramp

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
    from .compile import collective_ramp, group_link

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
    from .compile import layer_gemm_shapes

    shapes = layer_gemm_shapes(catalog.model(model), tp)
    return sum(_gemm_s(d, tokens, float(k), float(n), dtype, block) for k, n in shapes)


def _step_s(d: Device, catalog, row: Mapping[str, Any]) -> float:
    """A whole prefill or decode iteration from the engine's compiled step cost, as ``estimate`` times it
    (PP micro-batches included)."""
    from .compile import compile_engine
    from .config.scenario import Dtypes, Parallel
    from .kernels.grid import pipelined_time

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
    catalog=None,
    calibration: Calibration | None = None,
) -> np.ndarray:
    """Predicted seconds for every measurement row, from the same formulas the step cost uses.

    Each row is predicted on ``device`` if given, else on its own ``device`` column resolved in ``catalog``
    (default: the shipped catalog with its default calibrations). ``calibration`` applies on top.
    """
    from .catalog import Catalog

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
        elif op in _COLLECTIVES:
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


# ------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Param:
    path: str  # device field path, e.g. efficiency.compute_efficiency
    lower: float
    upper: float
    scale: float  # typical magnitude: the optimiser works on value / scale
    groups: tuple[str, ...]  # row groups whose latency depends on it


_GEMM16 = (
    _Param("efficiency.compute_efficiency", 0.05, 1.0, 1.0, ("gemm16",)),
    _Param("efficiency.compute_saturation_tokens", 0.0, 1e4, 100.0, ("gemm16",)),
    _Param("efficiency.compute_saturation_n", 0.0, 1e5, 100.0, ("gemm16_shape",)),
    _Param("efficiency.compute_saturation_k", 0.0, 1e5, 100.0, ("gemm16_shape",)),
    _Param("efficiency.gemm_memory_efficiency", 0.05, 1.0, 1.0, ("gemm16",)),
    _Param("efficiency.gemm_overhead_s", 0.0, 1e-3, 1e-5, ("gemm16", "gemm8")),
)
_GEMM8 = (
    _Param("efficiency.low_precision_compute_efficiency", 0.05, 1.0, 1.0, ("gemm8",)),
    _Param("efficiency.low_precision_saturation_tokens", 0.0, 1e4, 100.0, ("gemm8",)),
    _Param("efficiency.low_precision_saturation_n", 0.0, 1e5, 100.0, ("gemm8_shape",)),
    _Param("efficiency.low_precision_saturation_k", 0.0, 1e5, 100.0, ("gemm8_shape",)),
    _Param("efficiency.low_precision_memory_efficiency", 0.05, 1.0, 1.0, ("gemm8",)),
    _Param("efficiency.low_precision_gemm_overhead_s", 0.0, 1e-3, 1e-5, ("gemm8",)),
)
_ATTENTION = (
    _Param("efficiency.attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn16",)),
    _Param("efficiency.kv8_attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn_kv8",)),
    _Param("efficiency.low_precision_attention_compute_efficiency", 0.02, 1.0, 1.0, ("attn8",)),
    _Param("efficiency.attention_saturation_keys", 0.0, 1e5, 100.0, ("attn16", "attn_kv8", "attn8")),
    _Param("efficiency.attention_memory_efficiency", 0.05, 1.0, 1.0, ("decode",)),
    _Param("efficiency.decode_attention_saturation_units", 0.0, 1e3, 1.0, ("decode",)),
    _Param("efficiency.decode_attention_small_efficiency", 0.01, 1.0, 1.0, ("decode",)),
    _Param("efficiency.decode_attention_saturation_bytes", 0.0, 1e10, 1e6, ("decode",)),
    _Param("efficiency.prefill_attention_saturation_units", 0.0, 1e7, 1e3, ("prefill",)),
    _Param("efficiency.attention_overhead_s", 0.0, 1e-3, 1e-5, ("prefill16",)),
    _Param("efficiency.kv8_attention_overhead_s", 0.0, 1e-3, 1e-5, ("prefill_kv8",)),
    _Param("efficiency.decode_attention_overhead_s", 0.0, 1e-3, 1e-5, ("decode16",)),
    _Param("efficiency.kv8_decode_attention_overhead_s", 0.0, 1e-3, 1e-5, ("decode_kv8",)),
)
_COLLECTIVE = (
    _Param("scale_up.latency_s", 0.0, 1e-4, 1e-6, ("coll_up",)),
    _Param("scale_out.latency_s", 0.0, 1e-3, 1e-6, ("coll_out",)),
    _Param("efficiency.collective_efficiency", 0.01, 1.0, 1.0, ("coll",)),
    _Param("efficiency.collective_small_message_efficiency", 0.01, 1.0, 1.0, ("coll_ramp",)),
    _Param("efficiency.collective_saturation_bytes", 0.0, 1e10, 1e6, ("coll_ramp",)),
    _Param("efficiency.collective_overhead_s", 0.0, 1e-3, 1e-5, ("coll",)),
    _Param("efficiency.collective_saturation_devices", 0.0, 64.0, 1.0, ("coll_sizes",)),
    _Param("efficiency.all_reduce_bandwidth_ratio", 0.25, 4.0, 1.0, ("coll_ar_vs_ring",)),
    _Param("efficiency.all_to_all_bandwidth_ratio", 0.25, 4.0, 1.0, ("coll_a2a_vs_ring",)),
    _Param("efficiency.all_to_all_protocol_latency_s", 0.0, 1e-4, 1e-6, ("coll_a2a",)),
    _Param("efficiency.all_to_all_saturation_bytes", 0.0, 1e10, 1e6, ("coll_a2a",)),
)
# the engine's host work, from whole decode steps once the kernels are fitted
_STEP = (
    _Param("efficiency.step_overhead_s", 0.0, 1.0, 1e-3, ("step",)),
    _Param("efficiency.step_overhead_per_tp_rank_s", 0.0, 0.1, 1e-3, ("step_tp",)),
    _Param("efficiency.sequence_overhead_s", 0.0, 0.1, 1e-4, ("step_seqs",)),
)
HOST_COSTS = tuple(p.path for p in _STEP)  # device field paths of the engine's host costs
# block-scaled FP8 GEMMs: a low-precision profile of their own (the block_scaled_* twins of _GEMM8) and a floor.
# Their saturation in m stays the 8-bit GEMM's: the floor hides small m (vLLM: up to m = 1024), so the rows leave
# it free (held-back errors alike from 0 to 138 tokens) while MoE experts pay it once each. A value the device or
# a prior calibration sets is kept.
_BLOCK = tuple(
    dataclasses.replace(
        p,
        path=p.path.replace("low_precision_", "block_scaled_"),
        groups=tuple(g.replace("gemm8", "gemm_block") for g in p.groups),
    )
    for p in _GEMM8
    if p.path != "efficiency.low_precision_saturation_tokens"
) + (
    _Param("efficiency.block_scaled_gemm_floor_s", 0.0, 1e-3, 1e-5, ("gemm_block",)),
    _Param("efficiency.block_scaled_small_gemm_floor_s", 0.0, 1e-3, 1e-5, ("gemm_block_sizes",)),
)
# a step in a fitted curve: its rows threshold is searched over the gaps between the measured m (not a least
# squares parameter), whenever its floor is fitted or fixed and the threshold is not fixed
_SMALL_TOKENS = "efficiency.block_scaled_small_gemm_tokens"
_SMALL_FLOOR = "efficiency.block_scaled_small_gemm_floor_s"


PARAMETERS = _GEMM16 + _GEMM8 + _BLOCK + _ATTENTION + _COLLECTIVE + _STEP
# the keys of an older file's variants.fp8_block (8-bit paths then) -> today's block_scaled_* paths
_LEGACY_BLOCK = {
    **{p.path: p.path.replace("low_precision_", "block_scaled_") for p in _GEMM8},
    "efficiency.block_scaled_gemm_floor_s": "efficiency.block_scaled_gemm_floor_s",
}


def _row_groups(ms: Measurements, d: Device) -> list[set[str]]:
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
        elif op in _COLLECTIVES:
            g |= {"coll", "coll_ramp", "coll_up" if ms["num_gpus"][i] <= d.scale_up_domain_devices else "coll_out"}
            g.add({"all_reduce": "coll_ar", "all_to_all": "coll_a2a"}.get(op, "coll_ring"))
        elif op == "decode_step":
            g.add("step")
        out.append(g)
    return out


def _identifiable(ms: Measurements, groups: list[set[str]], rows: np.ndarray) -> set[str]:
    """Parameter groups the fitted ``rows`` can identify: those of the rows, plus the contrasts that need two
    kinds of rows (a group-size term needs two group sizes; an op's bandwidth ratio needs all-gather or
    reduce-scatter rows to be relative to, else it is confounded with collective_efficiency; a small-GEMM
    floor needs single block-scaled GEMMs of two sizes; the per-rank and per-sequence host costs need decode
    steps at two TP degrees and two batch sizes that do not move together)."""
    present = set().union(*(groups[i] for i in np.flatnonzero(rows)))
    coll = rows & np.isin(ms["op"], _COLLECTIVES)
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


def _fallback(d: Device, path: str) -> float:
    """Current value of a field, or of the field it falls back to when it is None."""
    v = _get(d, path)
    if v is not None:
        return float(v)
    e = d.efficiency
    name = path.split(".")[-1]
    if path == _SMALL_FLOOR:
        return _fallback(d, "efficiency.block_scaled_gemm_floor_s")
    if name.startswith("block_scaled_"):  # the 8-bit GEMM's value
        return _fallback(d, "efficiency." + name.replace("block_scaled_", "low_precision_"))
    pairs = {
        "gemm_memory_efficiency": e.memory_efficiency,
        "low_precision_saturation_tokens": e.compute_saturation_tokens,
        "low_precision_saturation_n": e.compute_saturation_n,
        "low_precision_saturation_k": e.compute_saturation_k,
        "low_precision_memory_efficiency": e.gemm_memory_efficiency or e.memory_efficiency,
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


def _nest(values: Mapping[str, float]) -> dict:
    out: dict = {}
    for path, v in values.items():
        node = out
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _overrides(values: Mapping[str, float], residuals: tuple[AttentionResidual, ...] | None) -> dict:
    """Nested device mapping that sets the dotted fields in ``values`` and, unless None, the attention residual
    surfaces (all of them: the device's are replaced)."""
    out = _nest(values)
    if residuals is not None:
        out.setdefault("efficiency", {})["attention_residuals"] = [to_mapping(r) for r in residuals]
    return out


def _with_values(d: Device, values: Mapping[str, float], residuals: tuple[AttentionResidual, ...] | None = None):
    """A copy of device ``d`` with the dotted fields in ``values`` (and the residual surfaces) replaced, validated."""
    if not values and residuals is None:
        return d
    from .catalog import _deep_merge

    raw = _deep_merge(to_mapping(d), _overrides(values, residuals))
    return from_mapping(Device, raw, "calibration")


# ------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """Fitted device fields (dotted paths -> values), attention residual surfaces, and how well they fit.

    ``attention_residuals``: the device's surfaces once applied (:mod:`hermes_fast.residuals`); None leaves the
    device's own. ``report`` has one entry per kernel family: rows fitted and held back, and the median and
    90th-percentile absolute relative error of each part.
    """

    name: str
    device: str
    values: dict[str, float]
    source: str = ""
    holdout: float = 0.25
    seed: int = 0
    report: tuple[dict, ...] = ()
    attention_residuals: tuple[AttentionResidual, ...] | None = None

    def apply(self, device: Device) -> Device:
        """``device`` with the calibrated fields set."""
        return _with_values(device, self.values, self.attention_residuals)

    def device_overrides(self) -> dict:
        """The calibrated fields as a nested mapping (merged into a catalog entry)."""
        return _overrides(self.values, self.attention_residuals)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "device": self.device,
            "source": self.source,
            "holdout": self.holdout,
            "seed": self.seed,
            "values": dict(self.values),
        }
        if self.attention_residuals is not None:
            out["attention_residuals"] = [to_mapping(r) for r in self.attention_residuals]
        out["report"] = [dict(r) for r in self.report]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "calibration") -> Calibration:
        if not isinstance(data, Mapping):
            raise ConfigError(path, data, "a mapping with name, device and values")
        known = {"name", "device", "source", "holdout", "seed", "values", "variants", "report", "attention_residuals"}
        for k in data:
            if k not in known:
                raise ConfigError(f"{path}.{k}", data[k], f"one of {', '.join(sorted(known))}")
        for k in ("name", "device", "values"):
            if k not in data:
                raise ConfigError(f"{path}.{k}", None, "a value")
        values = data["values"]
        if not isinstance(values, Mapping):
            raise ConfigError(f"{path}.values", values, "a mapping of device field path -> number")
        # files written before engines could select block-scaled FP8 kept its fields as a variant
        variants = data.get("variants") or {}
        if not isinstance(variants, Mapping) or set(variants) - {"fp8_block"}:
            raise ConfigError(f"{path}.variants", variants, "only fp8_block (older files; now in values)")
        legacy = variants.get("fp8_block", {})
        for where, vals in (("values", values), ("variants.fp8_block", legacy)):
            if not isinstance(vals, Mapping):
                raise ConfigError(f"{path}.{where}", vals, "a mapping of device field path -> number")
            for k, v in vals.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise ConfigError(f"{path}.{where}.{k}", v, "a number")
        merged = {str(k): float(v) for k, v in values.items()}
        for k, v in legacy.items():
            new = _LEGACY_BLOCK.get(str(k))
            if new is None:
                raise ConfigError(f"{path}.variants.fp8_block.{k}", v, f"one of {', '.join(_LEGACY_BLOCK)}")
            if merged.get(new, float(v)) != float(v):
                raise ConfigError(f"{path}.variants.fp8_block.{k}", v, f"the value of values.{new} ({merged[new]})")
            merged[new] = float(v)
        cal = cls(
            name=str(data["name"]),
            device=str(data["device"]),
            values=merged,
            source=str(data.get("source", "")),
            holdout=float(data.get("holdout", 0.25)),
            seed=int(data.get("seed", 0)),
            report=tuple(dict(r) for r in data.get("report") or ()),
            attention_residuals=_read_residuals(data.get("attention_residuals"), f"{path}.attention_residuals"),
        )
        # the values must make a valid device: check against a neutral preset-shaped entry
        from .catalog import Catalog

        probe = Catalog(calibration="none").device("h100_sxm")
        try:
            _with_values(probe, cal.values, cal.attention_residuals)
        except ConfigError as e:
            field_path = e.path.removeprefix("calibration.")
            if field_path.startswith("efficiency.attention_residuals"):  # one surface per kernel and sizes
                raise ConfigError(path + field_path.removeprefix("efficiency"), e.value, e.expected) from None
            raise ConfigError(f"{path}.values.{field_path}", e.value, e.expected) from None
        return cal

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (``.json``); numbers round-trip exactly."""
        p = Path(path)
        data = self.to_dict()
        if p.suffix == ".json":
            p.write_text(json.dumps(data, indent=1) + "\n")
        else:
            import yaml

            class Dumper(yaml.SafeDumper):  # a surface's node rows on one line each
                pass

            Dumper.add_representer(_Row, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, True))
            for r in data.get("attention_residuals", ()):
                r["log_ratio"] = [_Row(row) for row in r["log_ratio"]]
            p.write_text(yaml.dump(data, Dumper=Dumper, sort_keys=False, width=120))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError("calibration", str(path), f"a readable calibration file ({e.strerror})") from None
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
        return cls.from_dict(data, p.name)

    def describe(self) -> str:
        return f"{self.name} ({self.source})" if self.source else self.name


class _Row(list):
    """A list written in YAML flow style."""


def _read_residuals(data: Any, path: str) -> tuple[AttentionResidual, ...] | None:
    if data is None:
        return None
    if isinstance(data, (str, bytes)) or not isinstance(data, (list, tuple)):
        raise ConfigError(path, data, "a list of attention residual surfaces")
    return tuple(from_mapping(AttentionResidual, r, f"{path}[{i}]") for i, r in enumerate(data))


def _calibration_dir():
    return files("hermes_fast") / "data" / "calibrations"


def shipped_calibrations() -> dict[str, Calibration]:
    """Every calibration shipped with hermes_fast, by name (``h100_sxm``, ``h100_sxm-vllm``, ...)."""
    return dict(_shipped())


_SHIPPED: dict[str, Calibration] | None = None


def _shipped() -> dict[str, Calibration]:
    global _SHIPPED
    if _SHIPPED is None:
        out = {}
        for f in sorted(_calibration_dir().iterdir(), key=lambda x: x.name):
            if f.name.endswith(".yaml"):
                cal = Calibration.from_dict(load_yaml(f.read_text()), f.name)
                out[cal.name] = cal
        _SHIPPED = out
    return _SHIPPED


def default_calibrations() -> dict[str, Calibration]:
    """The shipped calibrations that are the default for their device (named after the device), by device."""
    return {c.device: c for c in _shipped().values() if c.name == c.device}


def load_calibration(source: str | Path | Calibration | Mapping) -> Calibration:
    """A calibration from a shipped name (see :func:`shipped_calibrations`), a YAML/JSON path or a mapping."""
    if isinstance(source, Calibration):
        return source
    if isinstance(source, Mapping):
        return Calibration.from_dict(source)
    shipped = _shipped()
    if isinstance(source, str) and source in shipped:
        return shipped[source]
    p = Path(source)
    if not p.exists():
        raise ConfigError(
            "calibration", str(source), f"a calibration file or a shipped name: {', '.join(sorted(shipped))}"
        )
    return Calibration.load(p)


# ------------------------------------------------------------------------------------------- fitting


def holdout_mask(ms: Measurements, holdout: float, seed: int = 0) -> np.ndarray:
    """Rows held back from a fit: a stable hash of each row's identity, so the same row is held back
    whatever file or order it comes in."""
    if holdout <= 0.0:
        return np.zeros(len(ms), dtype=bool)
    keys = ms.row_keys()
    h = np.array([zlib.crc32(f"{seed}|{k}".encode()) for k in keys], dtype=np.float64)
    return (h % 10_000) < holdout * 10_000


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    a = np.abs(pred / meas - 1.0)
    if a.size == 0:
        return {"median_abs_error": math.nan, "p90_abs_error": math.nan}
    return {"median_abs_error": float(np.median(a)), "p90_abs_error": float(np.quantile(a, 0.9))}


def error_report(ms: Measurements, pred: np.ndarray, held: np.ndarray) -> tuple[dict, ...]:
    """Per kernel family: rows fitted / held back and their median and p90 absolute relative errors."""
    fam = ms.family
    meas = ms["latency_s"]
    out = []
    for f in sorted(set(fam)):
        sel = fam == f
        fit_e = _errors(pred[sel & ~held], meas[sel & ~held])
        held_e = _errors(pred[sel & held], meas[sel & held])
        out.append(
            {
                "family": f,
                "rows_fit": int((sel & ~held).sum()),
                "rows_held": int((sel & held).sum()),
                "fit_median_abs_error": fit_e["median_abs_error"],
                "fit_p90_abs_error": fit_e["p90_abs_error"],
                "held_median_abs_error": held_e["median_abs_error"],
                "held_p90_abs_error": held_e["p90_abs_error"],
            }
        )
    return tuple(out)


# fitted in this order, each on the rows of its kernel families; a parameter belongs to the first block whose
# rows identify it (prefill attention sets the compute rate, decode attention then the KV bandwidth: decode reads
# the compute parameters only through a small term, and fitting both together let a few ragged decode rows move
# them; block-scaled GEMMs read only their own fields once these are fitted, so they are a block of their own)
_FIT_BLOCKS = (
    (_GEMM16 + _GEMM8, ("gemm", "layer_linear")),
    (_BLOCK, ("gemm_fp8_block", "layer_linear_fp8_block")),
    (_ATTENTION, ("context_attention",)),
    (_ATTENTION, ("generation_attention",)),
    (_COLLECTIVE, ("collective",)),
    (_STEP, ("decode_step",)),
)


# extra starts for parameters whose optimum lies in one of several basins: a ramp's knee and floor (e.g. H200
# TRT-LLM decode attention's knee near 300 MB, which neither default start reaches) and the 8-bit GEMM's saturation
# in m (H200 vLLM: near 0, where neither default start leads)
_BASIN_STARTS = {
    "efficiency.decode_attention_small_efficiency": (0.1, 0.3, 0.6),
    "efficiency.decode_attention_saturation_bytes": (1e7, 1e8, 1e9),
    "efficiency.low_precision_saturation_tokens": (1.0, 100.0),
}


def _fit_block(
    rows: Measurements,
    base: Device,
    cat,
    device: str,
    params: list[_Param],
    search_small_tokens: bool = False,
) -> dict[str, float]:
    """Least squares on log(predicted / measured) of one kernel family's rows over its parameters, best of
    several starts: the device's values, halfway to the geometric middle of each parameter's bounds (a ramp
    that starts switched off has no gradient), and a grid over the parameters in :data:`_BASIN_STARTS` the
    block fits.

    ``search_small_tokens``: also choose the rows threshold of the small-GEMM floor. The fit without one
    comes first; each gap between two measured block-scaled GEMM m (at its geometric middle) is then tried
    from it, and kept when it lowers the cost by 1% with two floors 1% apart."""
    from scipy.optimize import least_squares

    log_meas = np.log(rows["latency_s"])
    block_gemm = (rows["op"] == "gemm") & (rows["dtype"] == "fp8_block")
    steps = [{}]
    if search_small_tokens:
        m = np.unique(rows["m"][block_gemm])
        steps = [{_SMALL_TOKENS: 0.0}] + [{_SMALL_TOKENS: float(t)} for t in np.sqrt(m[:-1] * m[1:])]

    def unpack(x: np.ndarray, step: dict[str, float]) -> dict[str, float]:
        return {**step, **{p.path: float(v * p.scale) for p, v in zip(params, x, strict=True)}}

    def residuals(x: np.ndarray, step: dict[str, float]) -> np.ndarray:
        cal = Calibration("fit", device, unpack(x, step))
        return np.log(predict(rows, base, catalog=cat, calibration=cal)) - log_meas

    x0 = np.array([np.clip(_fallback(base, p.path), p.lower, p.upper) / p.scale for p in params])
    # a floor below every measurement has no gradient: start it at the fastest block-scaled GEMM measured
    block_layer = (rows["op"] == "layer_linear") & (rows["dtype"] == "fp8_block")  # four GEMMs in a row
    block_meas = np.concatenate([rows["latency_s"][block_gemm], rows["latency_s"][block_layer] / 4.0])
    for j, p in enumerate(params):
        if p.path in ("efficiency.block_scaled_gemm_floor_s", _SMALL_FLOOR) and block_meas.size:
            x0[j] = np.clip(block_meas.min(), p.lower, p.upper) / p.scale
    lower = np.array([p.lower / p.scale for p in params])
    upper = np.array([p.upper / p.scale for p in params])
    middle = np.sqrt(np.maximum(lower, 1e-3) * upper)
    inside = 1e-9 * (upper - lower)  # the trust-region method needs starts strictly inside the bounds
    starts = [x0, 0.5 * (x0 + middle)]
    paths = [p.path for p in params]
    basins = [path for path in _BASIN_STARTS if path in paths]
    if basins:
        for combo in itertools.product(*(_BASIN_STARTS[path] for path in basins)):
            x = x0.copy()
            for path, value in zip(basins, combo, strict=True):
                j = paths.index(path)
                x[j] = value / params[j].scale
            starts.append(x)

    def solve(x: np.ndarray, step: dict[str, float]):
        start = np.clip(x, lower + inside, upper - inside)
        return least_squares(
            residuals, start, args=(step,), bounds=(lower, upper), loss="soft_l1", f_scale=0.05, x_scale=1.0
        )

    best = min((solve(x, steps[0]) for x in starts), key=lambda r: r.cost)
    best_step = steps[0]
    # each threshold starts from the best fit without one, its small floor back at the start value. Two
    # plateaus are kept only when they lower the cost by 1% and differ by 1% (else they are one)
    refine = best.x.copy()
    for j, p in enumerate(params):
        if p.path == _SMALL_FLOOR:
            refine[j] = x0[j]
    floors = ("efficiency.block_scaled_gemm_floor_s", _SMALL_FLOOR)
    for step in steps[1:]:
        res = solve(refine, step)
        v = {**{path: _fallback(base, path) for path in floors}, **unpack(res.x, step)}  # fitted or fixed
        large, small = (v[path] for path in floors)
        distinct = abs(large - small) > 0.01 * max(large, small)
        if distinct and res.cost < (0.99 if best_step is steps[0] else 1.0) * best.cost:
            best, best_step = res, step
    values = unpack(best.x, best_step)
    if not best_step.get(_SMALL_TOKENS, 1.0):  # no threshold: the small floor is not used
        values.pop(_SMALL_FLOOR, None)
    return values


_RESIDUAL_KERNELS = {"context_attention": "prefill", "generation_attention": "decode"}


def _fit_residuals(rows: Measurements, d: Device, cat) -> tuple[AttentionResidual, ...]:
    """A residual surface per attention kernel and element sizes of the attention ``rows``, on top of ``d``'s
    analytical prediction (where it is worth keeping, :func:`hermes_fast.residuals.fit_residual`)."""
    from .compile import device_rates

    log_ratio = np.log(rows["latency_s"] / predict(rows, d, catalog=cat))
    groups: dict[tuple[str, float, float], list[int]] = {}
    for i in range(len(rows)):
        rates = device_rates(d, rows["dtype"][i], rows["kv_dtype"][i])
        key = (_RESIDUAL_KERNELS[rows["op"][i]], rates.attention_compute_bytes, DTYPE_BYTES[rows["kv_dtype"][i]])
        groups.setdefault(key, []).append(i)
    out = []
    for (kernel, compute_bytes, kv_bytes), idx in sorted(groups.items()):
        sub = rows.select(np.array(idx))
        decode = kernel == "decode"
        per_seq = sub["context_tokens"] + (0.0 if decode else sub["tokens"])
        x, y = residual_axes(decode, sub["batch_size"], sub["num_heads"], sub["num_kv_heads"], per_seq)
        r = fit_residual(kernel, compute_bytes, kv_bytes, x, y, log_ratio[np.array(idx)])
        if r is not None:
            out.append(r)
    return tuple(out)


def calibrate(
    measurements: Measurements | str | Path | Iterable[Mapping[str, Any]],
    device: str,
    *,
    catalog=None,
    name: str | None = None,
    source: str = "",
    holdout: float = 0.25,
    seed: int = 0,
    fix: Mapping[str, float] | None = None,
    residuals: bool = True,
) -> Calibration:
    """Fit ``device``'s efficiency parameters (and link latencies) to its measured kernel latencies, then the
    engine's host costs to its measured decode steps.

    Parameters
    ----------
    measurements
        A CSV path, rows (mappings) or :class:`Measurements` in the :data:`MEASUREMENT_COLUMNS` schema; rows of
        other devices are ignored. Kernel rows fit the kernels' parameters, then ``decode_step`` rows the
        engine's host costs on top of them; ``prefill_step`` rows are only predicted and reported.
    device
        Catalog device name (preset or ``catalog``'s own); the fit starts from its entry in ``catalog``
        (default: the uncalibrated catalog). To fit only the host costs to measured decode steps on top of the
        shipped kernel calibration, pass decode-step rows alone with ``catalog=Catalog()``.
    holdout, seed
        Share of rows held back from the fit (chosen by a stable hash of each row with ``seed``); the report
        gives the error on them.
    fix
        Device field paths to keep at given values instead of fitting them.
    residuals
        Fit an attention residual surface per attention kernel and element sizes on top of the analytical
        attention parameters (:mod:`hermes_fast.residuals`), each kept only when it beats no correction on
        leave-one-out error; False: the analytical model alone. Either way, once attention rows are fitted (or
        an attention parameter is fixed) the device's earlier surfaces are dropped.

    Returns
    -------
    Calibration
        Only parameters that the rows can identify are fitted (e.g. no fp8 parameters without fp8 rows);
        the others keep the device's values. A calibration ``catalog`` already applies to the device carries
        over into the result, so the result alone reproduces the fitted device. ``report`` holds the fit and
        held-back errors per family.

    Examples
    --------
    >>> from hermes_fast.validate import reference_measurements
    >>> cal = calibrate(reference_measurements().select(reference_measurements()["op"] == "gemm"), "h100_sxm")
    >>> 0 < cal.values["efficiency.compute_efficiency"] <= 1
    True
    """
    from .catalog import Catalog

    ms = read_measurements(measurements)
    cat = catalog if catalog is not None else Catalog(calibration="none")
    base = cat.device(device, "device")
    ms = ms.select(ms["device"] == device)
    families = ms.family
    if not np.isin(families, [f for _, fams in _FIT_BLOCKS for f in fams]).any():
        raise ConfigError("device", device, "a device with kernel or decode-step measurement rows")
    if fix:
        base = _with_values(base, dict(fix))
    held = holdout_mask(ms, holdout, seed)
    train = ~held
    groups = _row_groups(ms, base)
    present = _identifiable(ms, groups, train)
    fixed = set(fix or {})
    params = [p for p in PARAMETERS if p.path not in fixed and present.intersection(p.groups)]
    vals: dict[str, float] = {}
    # attention surfaces sit on the analytical attention parameters (some shared by prefill and decode): once
    # attention rows refit them or fix= sets one, every old surface is stale
    attention = train & np.isin(families, list(_RESIDUAL_KERNELS))
    refit = attention.any() or bool(fixed & {p.path for p in _ATTENTION})
    surfaces = () if refit else base.efficiency.attention_residuals
    base = _with_values(base, {}, surfaces)
    for fam_params, fams in _FIT_BLOCKS:
        if fam_params is _STEP and residuals and attention.any():  # before the host costs: steps include them
            surfaces += _fit_residuals(ms.select(attention), _with_values(base, vals), cat)
        fam_rows = train & np.isin(families, fams)
        if not fam_rows.any():
            continue
        seen = _identifiable(ms, groups, fam_rows)
        own = [p for p in params if p in fam_params and p.path not in vals and seen.intersection(p.groups)]
        # the small-GEMM floor's threshold: searched when that floor is fitted or fixed, unless it is fixed
        small = _SMALL_FLOOR in fixed or any(p.path == _SMALL_FLOOR for p in own)
        search = small and _SMALL_TOKENS not in fixed and "gemm_block_sizes" in seen
        if own:
            vals.update(_fit_block(ms.select(fam_rows), _with_values(base, vals, surfaces), cat, device, own, search))
    if fix:
        vals.update({k: float(v) for k, v in fix.items()})
    prior = getattr(cat, "calibrations", {}).get(device)
    if prior is not None:
        vals = {**prior.values, **vals}
    fitted = Calibration(name or device, device, vals, source, holdout, seed, attention_residuals=surfaces)
    pred = predict(ms, cat.device(device, "device"), catalog=cat, calibration=fitted)
    out_of_fit = held | (ms["op"] == "prefill_step")  # prefill steps are reported, never fitted
    return dataclasses.replace(fitted, report=error_report(ms, pred, out_of_fit))
