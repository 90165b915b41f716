"""Optional importer: measured kernel tables of NVIDIA's ``aiconfigurator`` package -> calibration measurements.

``pip install "hermes_fast[aiconfigurator]"`` brings the package (``aiconfigurator-core``, Apache-2.0) and
``pyarrow``; its databases cover B200, B300, GB200, GB300, H100, H200, A100, L40S and more. Layout, as
shipped in aiconfigurator-core 0.12.0 (checked against the wheel)::

    aiconfigurator_core/systems/data/<system>/<family>/<backend>/<version>/<table>.parquet
      family gemm:      gemm_perf                (gemm_dtype, m, n, k, latency)
      family attention: context_attention_perf, generation_attention_perf
                        (batch_size, isl, num_heads, num_key_value_heads, head_dim, window_size, beam_width,
                         attn_dtype, kv_cache_dtype, step, latency); decode KV length = isl + step
      family comm:      nccl/<version>/nccl_perf (nccl_dtype, num_gpus, message_size in elements, op_name, latency)

Older releases keep ``<system>/<backend>/<version>/<table>.txt`` (the same columns as CSV); both are read,
``.parquet`` before ``.txt``. Latencies are milliseconds there and become seconds here. Tables and dtypes
that the measurement schema has no counterpart for (MoE, MLA, custom all-reduce, weight-only int4, NVFP4)
are skipped.
"""

from __future__ import annotations

import csv
import importlib.util
import zlib
from pathlib import Path

from ..config.base import ConfigError
from .measurements import Measurements, read_measurements

__all__ = ["SYSTEM_DEVICES", "aiconfigurator_root", "import_aiconfigurator"]

# aiconfigurator system name -> hermes_fast catalog device
SYSTEM_DEVICES = {
    "h100_sxm": "h100_sxm",
    "h200_sxm": "h200_sxm",
    "b200_sxm": "b200",
    "gb200": "gb200",
    "a100_sxm": "a100_sxm_80gb",
    "l40s": "l40s",
}
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "fp8": "fp8", "fp8_block": "fp8_block"}
_ELEMENT_BYTES = {"half": 2, "bfloat16": 2, "float16": 2, "int8": 1, "fp8": 1, "float": 4, "float32": 4}
_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter"}
_OPS["alltoall"] = "all_to_all"
_MS = 1e-3


def aiconfigurator_root() -> Path:
    """The installed package's ``systems/data`` folder (aiconfigurator-core, or an older ``aiconfigurator``)."""
    for pkg in ("aiconfigurator_core", "aiconfigurator"):
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
            if root.is_dir():
                return root
    raise ConfigError(
        "aiconfigurator", None, "the aiconfigurator package installed (pip install 'hermes_fast[aiconfigurator]')"
    )


def _read_table(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(str(path), "parquet", "pyarrow installed to read it (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _find(system_dir: Path, family: str, backend: str, version: str | None, table: str) -> Path | None:
    """The table for ``backend`` (newest version unless given), family-first layout before the legacy one."""
    for base in (system_dir / family / backend, system_dir / backend):
        if not base.is_dir():
            continue
        versions = [version] if version else sorted((p.name for p in base.iterdir() if p.is_dir()), key=_version_key)
        for v in reversed(versions):
            for suffix in (".parquet", ".txt"):
                p = base / v / f"{table}{suffix}"
                if p.is_file():
                    return p
    return None


def _version_key(v: str) -> tuple:
    parts = []
    for chunk in v.replace("rc", ".-1.").replace("post", ".").split("."):
        parts.append(int(chunk) if chunk.lstrip("-").isdigit() else 0)
    return tuple(parts)


def _keep(key: str, share: float) -> bool:
    return share >= 1.0 or (zlib.crc32(key.encode()) % 10_000) < share * 10_000


def import_aiconfigurator(
    system: str,
    *,
    device: str | None = None,
    root: str | Path | None = None,
    backend: str = "trtllm",
    version: str | None = None,
    nccl_version: str | None = None,
    max_rows_per_table: int = 3000,
) -> Measurements:
    """Measurements of one aiconfigurator system (GEMM, prefill/decode attention, NCCL collectives).

    Needs the optional ``aiconfigurator-core`` package (``pip install 'hermes_fast[aiconfigurator]'``)
    unless ``root`` points at a copy of its data.

    Parameters
    ----------
    system : str
        aiconfigurator system folder, e.g. ``b200_sxm``, ``gb200``, ``l40s``.
    device : str or None, default None
        hermes_fast catalog device the rows are for (default: :data:`SYSTEM_DEVICES`).
    root : str, pathlib.Path or None, default None
        the ``systems/data`` folder (default: the installed package's).
    backend, version, nccl_version : str or None, default "trtllm", None, None
        software stack of the GEMM and attention tables (newest version unless given) and of NCCL.
    max_rows_per_table : int, default 3000
        a stable-hash subsample of each table (GEMM tables hold ~100,000 rows); 0 keeps all.

    Returns
    -------
    Measurements
        Kernel rows (latencies in seconds, message sizes in bytes) for :func:`hermes_fast.calibrate`.

    Raises
    ------
    ConfigError
        When the package is not installed (and no ``root``), the system folder is unknown (listing the known
        ones), it has no tables for ``backend``, a parquet table needs ``pyarrow``, or no catalog device is
        known for the system.

    Examples
    --------
    Skipped when the docstrings are tested: the optional aiconfigurator package is not a test dependency.

    >>> ms = hf.import_aiconfigurator("b200_sxm")  # doctest: +SKIP
    >>> cal = hf.calibrate(ms, "b200")  # doctest: +SKIP
    """
    base = Path(root) if root is not None else aiconfigurator_root()
    system_dir = base / system
    if not system_dir.is_dir():
        known = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise ConfigError("system", system, f"an aiconfigurator system folder under {base}: {', '.join(known)}")
    dev = device or SYSTEM_DEVICES.get(system)
    if dev is None:
        raise ConfigError("device", None, f"the catalog device for system {system!r} (no default mapping)")
    rows: list[dict] = []

    def add(table_rows: list[dict], convert, label: str) -> None:
        n = len(table_rows)
        share = 1.0 if not max_rows_per_table or n <= max_rows_per_table else max_rows_per_table / n
        for r in table_rows:
            key = "|".join(f"{k}={v}" for k, v in sorted(r.items()) if k != "latency")
            if not _keep(key, share):
                continue
            out = convert(r)
            if out is not None:
                out.update({"device": dev, "latency_s": float(r["latency"]) * _MS, "source": label})
                rows.append(out)

    found = _find(system_dir, "gemm", backend, version, "gemm_perf")
    if found is not None:

        def gemm(r):
            dt = _DTYPES.get(str(r["gemm_dtype"]))
            if dt is None:
                return None
            b = f"{backend}-{found.parent.name}"
            return {"op": "gemm", "backend": b, "dtype": dt, "m": r["m"], "n": r["n"], "k": r["k"]}

        add(_read_table(found), gemm, f"aiconfigurator/{system}/{found.name}")
    for kind in ("context", "generation"):
        found_a = _find(system_dir, "attention", backend, version, f"{kind}_attention_perf")
        if found_a is None:
            continue

        def attention(r, kind=kind, found_a=found_a):
            dt, kv = _DTYPES.get(str(r["attn_dtype"])), _DTYPES.get(str(r["kv_cache_dtype"]))
            if dt is None or kv is None or kv == "fp8_block" or int(r.get("window_size") or 0) != 0:
                return None
            if int(r.get("beam_width") or 1) != 1:
                return None
            row = {
                "op": f"{kind}_attention",
                "backend": f"{backend}-{found_a.parent.name}",
                "dtype": dt,
                "kv_dtype": kv,
                "batch_size": r["batch_size"],
                "num_heads": r["num_heads"],
                "num_kv_heads": r["num_key_value_heads"],
                "head_dim": r["head_dim"],
            }
            step = int(r.get("step") or 0)
            if kind == "context":
                if step != 0:
                    return None
                row["tokens"] = r["isl"]
            else:
                row["context_tokens"] = int(r["isl"]) + step
            return row

        add(_read_table(found_a), attention, f"aiconfigurator/{system}/{found_a.name}")
    found_n = _find(system_dir, "comm", "nccl", nccl_version, "nccl_perf")
    if found_n is not None:

        def nccl(r):
            op, size = _OPS.get(str(r["op_name"])), _ELEMENT_BYTES.get(str(r["nccl_dtype"]))
            if op is None or size is None:
                return None
            return {
                "op": op,
                "backend": f"nccl-{found_n.parent.name}",
                "num_gpus": r["num_gpus"],
                "message_bytes": float(r["message_size"]) * size,
            }

        add(_read_table(found_n), nccl, f"aiconfigurator/{system}/{found_n.name}")
    if not rows:
        raise ConfigError(
            "system", system, f"GEMM, attention or NCCL tables for backend {backend!r} under {system_dir}"
        )
    return read_measurements(rows)
