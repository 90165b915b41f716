"""Analytical (zero-load) estimates over whole parameter grids -> xarray Dataset."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._version import __version__
from .compile import CompiledEngine, check_layout, compile_engine
from .config.base import ConfigError, close_match_hint, convert_field
from .config.scenario import Dtypes, Engine, Parallel, Scenario, Workload, read_scenario
from .kernels.grid import estimate_points
from .resolve import ResolvedScenario, resolve_scenario
from .variables import data_array

__all__ = ["estimate", "GRID_KEYS"]

# grid key -> the schema field its values are validated as; engine keys change the compiled engine,
# point keys only the request shape at each point
_ENGINE_KEYS = {
    "engine": None,  # a name among the scenario's engines
    "device": None,  # a catalog name
    "model": None,  # a catalog name
    "tp": (Parallel, "tp"),
    "pp": (Parallel, "pp"),
    "ep": (Parallel, "ep"),
    "dtype": (Dtypes, "weight"),
    "weight_dtype": (Dtypes, "weight"),
    "activation_dtype": (Dtypes, "activation"),
    "kv_dtype": (Dtypes, "kv"),
    "gemm_scaling": (Dtypes, "gemm_scaling"),
    "memory_utilization": (Engine, "memory_utilization"),
}
_POINT_KEYS = {k: (Workload, k) for k in ("batch_size", "prompt_tokens", "output_tokens", "context_tokens")}
GRID_KEYS = tuple(_ENGINE_KEYS) + tuple(_POINT_KEYS)
_MAX_POINTS = 20_000_000  # ~130 B per point in memory: ~2.6 GB
_MAX_ENGINE_COMBINATIONS = 100_000  # each is compiled in Python (~70 us)


def _check_grid(grid: Any, scenario: Scenario) -> dict[str, list]:
    """The grid's keys and values validated (device and model names are resolved with the scenario's)."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", grid, "a mapping of grid key -> list of values")
    if "dtype" in grid and ("weight_dtype" in grid or "activation_dtype" in grid):
        raise ConfigError("grid.dtype", grid["dtype"], "either dtype or weight_dtype/activation_dtype, not both")
    out: dict[str, list] = {}
    engine_names = [e.name for e in scenario.engines]
    for key, values in grid.items():
        path = f"grid.{key}"
        if key not in GRID_KEYS:
            hint = close_match_hint(str(key), list(GRID_KEYS))
            raise ConfigError(path, values, f"a grid key{hint}; valid: {', '.join(GRID_KEYS)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            values = [values]
        values = list(values.tolist() if isinstance(values, np.ndarray) else values)
        if not values:
            raise ConfigError(path, values, "a non-empty list of values")
        field = _ENGINE_KEYS.get(key) or _POINT_KEYS.get(key)
        clean = []
        for i, v in enumerate(values):
            vpath = f"{path}[{i}]"
            if field is not None:
                v = convert_field(*field, v, vpath)
            elif not isinstance(v, str):
                raise ConfigError(vpath, v, f"a {key} name (string)")
            elif key == "engine" and v not in engine_names:  # (device and model names: resolve_scenario's)
                hint = close_match_hint(v, engine_names)
                raise ConfigError(vpath, v, f"an engine name{hint}; engines: {', '.join(engine_names)}")
            clean.append(v)
        if len(set(clean)) != len(clean):
            raise ConfigError(path, values, "distinct values (each becomes a coordinate)")
        out[key] = clean
    return out


def _engine_variant(engine: Engine, setting: dict[str, Any]) -> Engine:
    par, dt = engine.parallel, engine.dtypes
    changes: dict[str, Any] = {}
    for key, v in setting.items():
        if key in ("device", "model", "memory_utilization"):
            changes[key] = v
        elif key in ("tp", "pp", "ep"):
            par = dataclasses.replace(par, **{key: v})
        elif key == "dtype":
            dt = dataclasses.replace(dt, weight=v, activation=v)
        elif key.endswith("_dtype"):
            dt = dataclasses.replace(dt, **{key[: -len("_dtype")]: v})
        elif key == "gemm_scaling":
            dt = dataclasses.replace(dt, gemm_scaling=v)
    try:  # the dtypes' own cross-field rules (block scaling: fp8 only), named by the grid point
        dt._validate("dtypes")
    except ConfigError as e:
        point = ", ".join(f"{k}={v}" for k, v in setting.items())
        raise ConfigError(f"grid[{point}].{e.path}", e.value, e.expected) from None
    return dataclasses.replace(engine, parallel=par, dtypes=dt, **changes)


def _compile(engine: Engine, resolved: ResolvedScenario, path: str, strict: bool) -> tuple[CompiledEngine, bool]:
    """Compile one engine variant; in grids an invalid layout is kept (fits = False) instead of raised."""
    model = resolved.models[engine.model]
    device = resolved.devices[engine.device]
    par = engine.parallel
    try:
        check_layout(model, par, path)
        ok = True
    except ConfigError:
        if strict:
            raise
        ok = False
        par = dataclasses.replace(par, ep=1)  # costs still computed, with fractional shards
    ce = compile_engine(
        model, device, par, engine.dtypes, engine.memory_utilization, engine.max_batched_tokens, path, check=False
    )
    return ce, ok


def estimate(
    scenario: Scenario | Mapping | str | None = None,
    grid: Mapping[str, Sequence] | None = None,
    calibration: Any = "default",
) -> xr.Dataset:
    """Zero-load prefill, decode, TTFT/TPOT, throughput and memory over a parameter grid.

    Parameters
    ----------
    scenario
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or text; ``None`` loads the
        embedded default scenario.
    grid
        Mapping of grid key -> list of values; each key becomes a dimension (after ``engine``).
        Engine keys: ``engine``, ``device``, ``model``, ``tp``, ``pp``, ``ep``, ``dtype`` (weights and
        activations), ``weight_dtype``, ``activation_dtype``, ``kv_dtype``, ``gemm_scaling`` (``block`` needs
        fp8 weights and activations at every point), ``memory_utilization``.
        Point keys: ``batch_size``, ``prompt_tokens``, ``output_tokens``, ``context_tokens``.
    calibration
        ``"default"`` (shipped calibrations for H100, H200, A100), ``"none"`` (uncalibrated defaults), a
        :class:`~hermes_fast.calibration.calibration.Calibration`, a name or file, or a list (see
        :class:`~hermes_fast.resolve.Catalog`); the ``calibration`` attr names what each device used.

    Returns
    -------
    xarray.Dataset
        Variables registered in :mod:`hermes_fast.variables` (seconds, bytes, tokens), e.g.
        ``ttft_s``, ``tpot_s``, ``throughput_token_per_s``, ``kv_capacity_token``, ``fits``, ``bound``.
        Times of points that do not fit are still computed (as if memory were unlimited); mask with
        ``fits``. Without a grid, a layout the model cannot be split into or a model that does not fit
        raises :class:`ConfigError` instead.

    Examples
    --------
    >>> import hermes_fast as hf
    >>> ds = hf.estimate(grid={"batch_size": [1, 64], "tp": [1, 2]})
    >>> ds.tpot_s.dims
    ('engine', 'batch_size', 'tp')
    """
    sc = read_scenario(scenario)
    strict = not grid
    g = _check_grid(grid, sc)
    named = {key: [(v, f"grid.{key}[{i}]") for i, v in enumerate(g.get(key, ()))] for key in ("device", "model")}
    resolved = resolve_scenario(sc, calibration, devices=named["device"], models=named["model"])
    by_name = {e.name: e for e in sc.engines}
    engines = [by_name[n] for n in g["engine"]] if "engine" in g else list(sc.engines)
    keys = [k for k in g if k != "engine"]
    dims = ["engine", *keys]
    shape = [len(engines)] + [len(g[k]) for k in keys]
    n_points = int(np.prod(shape, dtype=np.int64))
    if n_points > _MAX_POINTS:
        raise ConfigError("grid", f"{n_points} points", f"at most {_MAX_POINTS} points per call; split the grid")

    # --- one compiled parameter vector per engine-level combination
    eng_keys = [k for k in keys if k in _ENGINE_KEYS]
    eng_axes = [0] + [1 + keys.index(k) for k in eng_keys]
    n_combos = int(np.prod([shape[a] for a in eng_axes], dtype=np.int64))
    if n_combos > _MAX_ENGINE_COMBINATIONS:
        raise ConfigError(
            "grid", f"{n_combos} engine combinations", f"at most {_MAX_ENGINE_COMBINATIONS} per call; split the grid"
        )
    rows, ok_rows, compiled = [], [], []
    cache: dict[Engine, int] = {}
    combo_index = np.empty([shape[a] for a in eng_axes], dtype=np.int64)
    for combo in itertools.product(*[range(shape[a]) for a in eng_axes]):
        e_i = combo[0]
        setting = {k: g[k][combo[j + 1]] for j, k in enumerate(eng_keys)}
        variant = _engine_variant(engines[e_i], setting)
        if variant not in cache:
            path = f"engines[{sc.engines.index(engines[e_i])}]"
            ce, ok = _compile(variant, resolved, path, strict)
            cache[variant] = len(rows)
            rows.append(ce.params)
            ok_rows.append(ok)
            compiled.append(ce)
        combo_index[combo] = cache[variant]
    params = np.ascontiguousarray(np.stack(rows))

    # --- per-point inputs, broadcast from their own axis
    bshape = [1] * len(shape)
    for a in eng_axes:
        bshape[a] = shape[a]
    cfg = np.broadcast_to(combo_index.reshape(bshape), shape).ravel()
    wl = sc.workload

    def point(key: str, default: float) -> np.ndarray:
        if key not in g:
            return np.full(n_points, float(default))
        s = [1] * len(shape)
        s[dims.index(key)] = shape[dims.index(key)]
        return np.broadcast_to(np.asarray(g[key], dtype=np.float64).reshape(s), shape).ravel().copy()

    batch = point("batch_size", wl.batch_size)
    prompt = point("prompt_tokens", wl.prompt_tokens)
    output = point("output_tokens", wl.output_tokens)
    if "context_tokens" in g or wl.context_tokens is not None:
        context = point("context_tokens", wl.context_tokens or 0)
    else:
        context = prompt + 0.5 * output
    cfg = np.ascontiguousarray(cfg)

    prefill_s = np.empty(n_points)
    decode_s = np.empty(n_points)
    tpot_s = np.empty(n_points)
    bound = np.empty(n_points, dtype=np.int8)
    prefill_bound = np.empty(n_points, dtype=np.int8)
    estimate_points.jit(params, cfg, batch, prompt, output, context, prefill_s, decode_s, tpot_s, bound, prefill_bound)

    # --- memory: per engine-level combination, then per point. Encoders (embedding models, rerankers)
    # generate nothing: their decode variables are NaN (not applicable) and they keep no KV cache.
    weights = np.array([c.weights_bytes for c in compiled])
    kv_tok = np.array([c.kv_bytes_per_token for c in compiled])
    capacity = np.array([c.kv_capacity_tokens for c in compiled])
    fits_cfg = np.array([ok and c.weights_fit for ok, c in zip(ok_rows, compiled, strict=True)])
    devices = np.array([c.devices for c in compiled], dtype=np.int64)
    generates = np.array([c.generates for c in compiled])[cfg]
    max_context = np.array([c.max_context_tokens for c in compiled], dtype=np.float64)[cfg]
    length = np.where(generates, prompt + output, prompt)
    need = np.where(generates, batch * length, 0.0)
    fits = fits_cfg[cfg] & (capacity[cfg] >= need) & (length <= max_context)
    with np.errstate(divide="ignore", invalid="ignore"):
        max_batch = np.where(generates, np.floor(capacity[cfg] / length), np.nan)
    for x in (decode_s, tpot_s):
        x[~generates] = np.nan
    bound[~generates] = -1
    e2e = np.where(generates, prefill_s + (output - 1.0) * tpot_s, prefill_s)
    full = tuple(dims)
    cdims = tuple(dims[a] for a in eng_axes)
    coords: dict[str, Any] = {"engine": [e.name for e in engines]}
    coords.update({k: g[k] for k in keys})

    def grid_arr(x):
        return x.reshape(shape)

    def cfg_arr(x):
        return x[combo_index]

    ds = xr.Dataset(
        {
            "prefill_time_s": data_array("prefill_time_s", grid_arr(prefill_s), full),
            "ttft_s": data_array("ttft_s", grid_arr(prefill_s), full),
            "decode_step_time_s": data_array("decode_step_time_s", grid_arr(decode_s), full),
            "tpot_s": data_array("tpot_s", grid_arr(tpot_s), full),
            "e2e_s": data_array("e2e_s", grid_arr(e2e), full),
            "throughput_token_per_s": data_array(
                "throughput_token_per_s", grid_arr(np.where(generates, batch * output / e2e, np.nan)), full
            ),
            "decode_throughput_token_per_s": data_array(
                "decode_throughput_token_per_s", grid_arr(batch / tpot_s), full
            ),
            "prefill_throughput_token_per_s": data_array(
                "prefill_throughput_token_per_s", grid_arr(batch * prompt / prefill_s), full
            ),
            "weights_bytes": data_array("weights_bytes", cfg_arr(weights), cdims),
            "kv_bytes_per_token": data_array("kv_bytes_per_token", cfg_arr(kv_tok), cdims),
            "kv_capacity_token": data_array("kv_capacity_token", cfg_arr(capacity), cdims),
            "devices": data_array("devices", cfg_arr(devices), cdims),
            "max_batch_size": data_array("max_batch_size", grid_arr(max_batch), full),
            "fits": data_array("fits", grid_arr(fits), full),
            "bound": data_array("bound", grid_arr(bound), full),
            "prefill_bound": data_array("prefill_bound", grid_arr(prefill_bound), full),
        },
        coords=coords,
        attrs={
            "title": f"hermes_fast estimate: {sc.name}",
            "hermes_fast_version": __version__,
            "method": "analytical roofline, zero load, static batch",
            "calibration": resolved.describe_calibrations(g.get("device") or [e.device for e in engines]),
        },
    )
    if strict:
        _raise_if_unfit(sc, engines, compiled, ds)
    return ds


def _raise_if_unfit(sc: Scenario, engines: list[Engine], compiled: list[CompiledEngine], ds: xr.Dataset) -> None:
    wl = sc.workload
    for e, ce in zip(engines, compiled, strict=True):
        path = f"engines[{sc.engines.index(e)}]"
        length = wl.prompt_tokens + (wl.output_tokens if ce.generates else 0)
        if length > ce.max_context_tokens:
            raise ConfigError(
                "workload.prompt_tokens",
                wl.prompt_tokens,
                f"a request of at most {ce.max_context_tokens} tokens (the context of {e.model}, {path}); "
                f"prompt + output is {length}",
            )
        if not ce.weights_fit:
            raise ConfigError(
                path,
                f"{e.model} on {e.device} tp={e.parallel.tp} pp={e.parallel.pp}",
                f"a layout whose weights ({ce.weights_bytes / 1e9:.1f} GB/device) and activations "
                f"({ce.activation_reserve_bytes / 1e9:.1f} GB) fit in {ce.usable_bytes / 1e9:.1f} GB usable; "
                "raise tp/pp, use a narrower dtype or a larger device",
            )
        fits = bool(ds.fits.sel(engine=e.name).all())
        if not fits:
            cap = int(ce.kv_capacity_tokens)
            raise ConfigError(
                "workload.batch_size",
                wl.batch_size,
                f"a batch whose KV ({wl.batch_size} x {wl.prompt_tokens + wl.output_tokens} tokens) fits the "
                f"{cap} tokens of KV capacity of {path} (at most {cap // (wl.prompt_tokens + wl.output_tokens)})",
            )
