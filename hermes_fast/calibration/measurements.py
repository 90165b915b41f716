"""Measured latencies as calibration rows: the schema (:data:`MEASUREMENT_COLUMNS`, :data:`OPS`), reading and
writing them, and the kernel family each row is fitted and reported under.

Measurements are rows of a CSV (or mappings), one operator per row:

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
  (prompt per sequence) and/or ``context_tokens`` (KV per sequence), ``dtype, kv_dtype``.

Every row has ``op, device, latency_s`` and may have ``backend`` and ``source``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.base import ConfigError, close_match_hint
from ..config.hardware import DTYPES

__all__ = [
    "COLLECTIVES",
    "MEASUREMENT_COLUMNS",
    "OPS",
    "Measurements",
    "family_of",
    "read_measurements",
    "write_measurements",
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
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
_ATTN = ("num_heads", "num_kv_heads", "head_dim", "dtype", "kv_dtype", "batch_size")
# op -> columns it requires (besides op, device, latency_s)
OPS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "dtype"),
    "context_attention": ("tokens", *_ATTN),
    "generation_attention": ("context_tokens", *_ATTN),
    **{c: ("num_gpus", "message_bytes") for c in COLLECTIVES},
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
    return "collective" if op in COLLECTIVES else op


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

    Parameters
    ----------
    source : str, pathlib.Path, iterable of mappings or Measurements
        A CSV file with a header, rows as mappings, or Measurements (returned as they are). Columns are
        :data:`MEASUREMENT_COLUMNS`: every row has ``op``, ``device`` and ``latency_s`` (seconds), and the
        columns its op needs (:data:`OPS`; sizes in elements, tokens or bytes, e.g. ``message_bytes``).

    Returns
    -------
    Measurements
        The rows as columns: float64 arrays for numbers (NaN where a row has none), object arrays for names;
        ``len`` is the number of rows, ``ms["latency_s"]`` a column.

    Raises
    ------
    ConfigError
        naming the row (``file.csv:row 7``, the line number) and column of the first bad value: an unknown
        column or op, a missing required column, a non-number, a non-positive latency or size.

    Examples
    --------
    >>> ms = hf.read_measurements([{"op": "gemm", "device": "h100_sxm", "m": 64, "n": 4096, "k": 4096,
    ...                             "dtype": "bf16", "latency_s": 2.1e-5}])
    >>> len(ms), ms["latency_s"].tolist()
    (1, [2.1e-05])
    >>> hf.read_measurements([{"op": "gemm", "device": "h100_sxm", "m": 64, "latency_s": 2.1e-5}])
    Traceback (most recent call last):
        ...
    hermes_fast.config.base.ConfigError: measurements:row 2.dtype: got None; expected a value (gemm rows need ...)
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
