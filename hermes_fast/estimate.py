"""Analytical (zero-load) estimates over whole parameter grids -> xarray Dataset.

The grid (:mod:`hermes_fast.estimate_grid`) is checked first; one parameter vector is compiled per engine-level
combination of its values, the kernels evaluate every point in one call, and memory figures, fits and the
Dataset follow.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._version import provenance
from .compile import CompiledEngine, check_layout, compile_engine
from .config.base import ConfigError
from .config.scenario import Engine, Scenario, read_scenario
from .estimate_grid import (
    GRID_ALIASES,
    GRID_KEYS,
    WORKLOAD_FIELDS,
    GridColumn,
    catalog_names,
    check_grid,
    engine_variant,
)
from .kernels._jit import compile_with_notice
from .kernels.grid import estimate_points
from .resolve import ResolvedScenario, device_with_stack, memory_utilization, resolve_scenario
from .variables import BOUND_NAMES, data_array

__all__ = ["estimate", "GRID_KEYS", "GRID_ALIASES"]

_MAX_POINTS = 20_000_000  # ~130 B per point in memory: ~2.6 GB
_MAX_ENGINE_COMBINATIONS = 100_000  # each is compiled in Python (~70 us)


def _compile(engine: Engine, resolved: ResolvedScenario, path: str, strict: bool) -> tuple[CompiledEngine, bool]:
    """Compile one engine variant; in grids an invalid layout is kept (fits = False) instead of raised, costed
    without expert, attention-data or context parallelism."""
    model = resolved.models[engine.model]
    stack = resolved.stacks[engine.stack]
    device = device_with_stack(resolved.devices[engine.device], stack)  # (the stack's host costs)
    par = engine.parallel
    try:
        check_layout(model, par, path)
        ok = True
    except ConfigError:
        if strict:
            raise
        ok = False
        par = dataclasses.replace(par, ep=1, attention_dp=False, cp=1)  # costs still computed, fractional shards
    mem = memory_utilization(dataclasses.replace(engine, parallel=par), stack, device, path)
    budget = engine.max_batched_tokens
    batch = engine.batching.max_batch_size  # (its logits, where the stack's memory profile samples a batch)
    ce = compile_engine(
        model, device, par, engine.dtypes, mem, budget, path, check=False, stack=stack, max_batch_size=batch
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
    scenario : Scenario, mapping, str, pathlib.Path or None, default None
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or text; ``None`` loads the
        embedded default scenario.
    grid : mapping or None, default None
        Mapping of a dotted path -> list of values, in :func:`hermes_fast.sweep`'s vocabulary, for the fields a
        zero-load estimate depends on: ``engines.<name>.device``, ``.model``, ``.parallel.tp``, ``.pp``,
        ``.ep``, ``.dtypes.weight``, ``.activation``, ``.kv``, ``.gemm_scaling`` (``block`` needs fp8 weights
        and activations at every point), ``.memory_utilization``, ``.max_batched_tokens`` (engines by name or
        index, ``engines[0]``), and ``workload.batch_size``, ``.prompt_tokens``, ``.output_tokens``,
        ``.context_tokens``, ``.prefix_hit`` (the share of each prompt found in the prefix cache: TTFT and prefill
        throughput at that hit share). Each path becomes a dim named by the path as written (as in a sweep); a path that
        names one engine leaves the others as they are along its dim. An axis name mapped to
        ``{path: values, ..., "label": [...]}`` is zipped: the paths change together along one dim named by
        the axis, each path a coordinate on it. Short keys stand for paths and keep their short dim name
        (:data:`GRID_ALIASES`): ``device``, ``model``, ``tp``, ``pp``, ``ep``, ``weight_dtype``,
        ``activation_dtype``, ``kv_dtype``, ``gemm_scaling``, ``memory_utilization`` set that field of every
        engine, ``dtype`` weights and activations together; ``batch_size``, ``prompt_tokens``,
        ``output_tokens``, ``context_tokens``, ``prefix_hit`` the workload's. ``engine`` picks a subset and order of the
        scenario's engines (``engine`` is always the first dim). Axes multiply; two axes may not set the same
        field, and a path estimate cannot vary (``workload.rate_per_s``, batching, ...: simulate's) is a
        :class:`ConfigError`.
    calibration : str, Calibration, pathlib.Path or list, default "default"
        ``"default"`` (shipped calibrations for H100, H200, A100), ``"none"`` (uncalibrated defaults), a
        :class:`~hermes_fast.calibration.calibration.Calibration`, a name or file, or a list (see
        :class:`~hermes_fast.resolve.Catalog`); the ``calibration`` attr names what each device used.

    Returns
    -------
    xarray.Dataset
        Variables registered in :mod:`hermes_fast.variables` (seconds, bytes, tokens), e.g.
        ``ttft_s``, ``tpot_s``, ``throughput_output_token_per_s``, ``kv_capacity_tokens``, ``fits``,
        ``decode_bound``.
        Times of points that do not fit are still computed (as if memory were unlimited); mask with
        ``fits``. Without a grid, a layout the model cannot be split into or a model that does not fit
        raises :class:`ConfigError` instead.

    Raises
    ------
    ConfigError
        For an invalid scenario, catalog name or grid (an unknown path or short key, a path an estimate does
        not depend on, two axes setting one field, a bad value), naming the dotted path; without a grid, also
        for a request longer than the model's context, weights that do not fit the device, or a batch whose KV
        does not fit.

    Examples
    --------
    >>> import hermes_fast as hf
    >>> ds = hf.estimate(grid={"batch_size": [1, 64], "tp": [1, 2]})
    >>> ds.tpot_s.dims
    ('engine', 'batch_size', 'tp')
    >>> bool((ds.tpot_s.sel(batch_size=64) > ds.tpot_s.sel(batch_size=1)).all())  # seconds per output token
    True
    >>> ds = hf.estimate(grid={"workload.batch_size": [1, 64], "engines.llama8b-h100.parallel.tp": [1, 2]})
    >>> ds.tpot_s.dims
    ('engine', 'workload.batch_size', 'engines.llama8b-h100.parallel.tp')
    """
    sc = read_scenario(scenario)
    strict = not grid
    subset, axes = check_grid(grid, sc)
    devices, models = catalog_names(axes, "device"), catalog_names(axes, "model")
    resolved = resolve_scenario(sc, calibration, devices=devices, models=models)
    index_of = {e.name: i for i, e in enumerate(sc.engines)}
    chosen = [index_of[n] for n in subset] if subset is not None else range(len(sc.engines))
    engines = [resolved.engines[i].engine for i in chosen]  # (the fields they leave unset from their stacks)
    dims = ["engine", *(a.name for a in axes)]
    shape = [len(engines)] + [len(a.labels) for a in axes]
    n_points = int(np.prod(shape, dtype=np.int64))
    if n_points > _MAX_POINTS:
        raise ConfigError("grid", f"{n_points} points", f"at most {_MAX_POINTS} points per call; split the grid")

    # --- one compiled parameter vector per engine-level combination
    eng_grid = [a for a in axes if a.sets_engines]
    eng_axes = [0] + [1 + axes.index(a) for a in eng_grid]
    n_combos = int(np.prod([shape[a] for a in eng_axes], dtype=np.int64))
    if n_combos > _MAX_ENGINE_COMBINATIONS:
        raise ConfigError(
            "grid", f"{n_combos} engine combinations", f"at most {_MAX_ENGINE_COMBINATIONS} per call; split the grid"
        )
    rows, ok_rows, compiled, frontends, streams = [], [], [], [], []
    cache: dict[Engine, int] = {}
    combo_index = np.empty([shape[a] for a in eng_axes], dtype=np.int64)
    for combo in itertools.product(*[range(shape[a]) for a in eng_axes]):
        index = index_of[engines[combo[0]].name]
        variant = engine_variant(engines[combo[0]], index, list(zip(eng_grid, combo[1:], strict=True)))
        if variant not in cache:
            ce, ok = _compile(variant, resolved, f"engines[{index}]", strict)
            cache[variant] = len(rows)
            rows.append(ce.params)
            ok_rows.append(ok)
            compiled.append(ce)
            frontends.append(resolved.stacks[variant.stack].frontend_s)
            streams.append(resolved.stacks[variant.stack].thread_token_s)
        combo_index[combo] = cache[variant]
    params = np.ascontiguousarray(np.stack(rows))

    # --- per-point inputs, broadcast from their own axis
    bshape = [1] * len(shape)
    for a in eng_axes:
        bshape[a] = shape[a]
    cfg = np.broadcast_to(combo_index.reshape(bshape), shape).ravel()
    wl = sc.workload
    point_columns: dict[str, tuple[int, GridColumn]] = {}  # workload field -> (its axis in dims, the column)
    for k, a in enumerate(axes, start=1):
        for f in WORKLOAD_FIELDS:
            if (c := a.sets_workload(f)) is not None:
                point_columns[f] = (k, c)

    def point(field: str, default: float) -> np.ndarray:
        if field not in point_columns:
            return np.full(n_points, float(default))
        k, column = point_columns[field]
        s = [1] * len(shape)
        s[k] = shape[k]
        return np.broadcast_to(np.asarray(column.values, dtype=np.float64).reshape(s), shape).ravel().copy()

    batch = point("batch_size", wl.batch_size)
    prompt = point("prompt_tokens", wl.prompt_tokens)
    output = point("output_tokens", wl.output_tokens)
    if "context_tokens" in point_columns or wl.context_tokens is not None:
        context = point("context_tokens", wl.context_tokens or 0)
    else:
        context = prompt + 0.5 * output
    cached = np.ascontiguousarray(point("prefix_hit", wl.prefix_hit) * prompt)  # (prompt tokens: no prefill)
    cfg = np.ascontiguousarray(cfg)

    prefill_s = np.empty(n_points)
    decode_s = np.empty(n_points)
    tpot_s = np.empty(n_points)
    bound = np.empty(n_points, dtype=np.int8)
    prefill_bound = np.empty(n_points, dtype=np.int8)
    args = (params, cfg, batch, prompt, output, context, cached, prefill_s, decode_s, tpot_s, bound, prefill_bound)
    compile_with_notice(estimate_points.jit, args, "the step-cost kernels")
    estimate_points.jit(*args)
    # the replica's API server thread streams every token: an iteration of B sequences takes at least B tokens'
    # streaming, as in simulate (kernels.serving.frontend.stream_floor; a queue of intakes adds to it there): host
    # work, so it binds as "overhead"
    generates = np.array([c.generates for c in compiled])[cfg]
    streaming = np.where(generates, batch * np.asarray(streams)[cfg], 0.0)
    for step, binds in ((prefill_s, prefill_bound), (tpot_s, bound)):
        thread = streaming > step
        step[thread] = streaming[thread]
        binds[thread] = BOUND_NAMES.index("overhead")
    decode_s[:] = np.maximum(decode_s, streaming)

    # --- memory: per engine-level combination, then per point. Encoders (embedding models, rerankers)
    # generate nothing: their decode variables are NaN (not applicable) and they keep no KV cache.
    weights = np.array([c.weights_bytes for c in compiled])
    kv_tok = np.array([c.kv_bytes_per_token for c in compiled])
    capacity = np.array([c.kv_capacity_tokens for c in compiled])
    state_tokens = np.array([c.state_tokens_per_seq for c in compiled])  # linear-attention state per request
    fits_cfg = np.array([ok and c.weights_fit for ok, c in zip(ok_rows, compiled, strict=True)])
    devices = np.array([c.devices for c in compiled], dtype=np.int64)
    max_context = np.array([c.max_context_tokens for c in compiled], dtype=np.float64)[cfg]
    # attention DP deals whole requests to ranks: the busiest holds ceil(batch / ranks) in its share of the capacity
    ranks = np.array([c.attention_dp for c in compiled], dtype=np.float64)[cfg]
    rank_capacity = capacity[cfg] / ranks
    length = np.where(generates, prompt + output, prompt)
    held = length + state_tokens[cfg]  # KV tokens' worth of memory one request holds
    need = np.where(generates, np.ceil(batch / ranks) * held, 0.0)
    fits = fits_cfg[cfg] & (rank_capacity >= need) & (length <= max_context)
    with np.errstate(divide="ignore", invalid="ignore"):
        max_batch = np.where(generates, np.floor(rank_capacity / held) * ranks, np.nan)
    for x in (decode_s, tpot_s):
        x[~generates] = np.nan
    bound[~generates] = -1
    # a request passes its stack's API front end before it is prefilled: once in TTFT and E2E, as in simulate
    ttft = prefill_s + np.asarray(frontends)[cfg]
    e2e = np.where(generates, ttft + (output - 1.0) * tpot_s, ttft)
    full = tuple(dims)
    cdims = tuple(dims[a] for a in eng_axes)
    coords: dict[str, Any] = {"engine": [e.name for e in engines]}
    coords.update({a.name: list(a.labels) for a in axes})
    for a in axes:  # a zipped axis: each of its paths is a coordinate along it, as in a sweep
        coords.update({c.key: (a.name, list(c.values)) for c in a.coordinate_columns})

    def grid_arr(x):
        return x.reshape(shape)

    def cfg_arr(x):
        return x[combo_index]

    ds = xr.Dataset(
        {
            "prefill_time_s": data_array("prefill_time_s", grid_arr(prefill_s), full),
            "ttft_s": data_array("ttft_s", grid_arr(ttft), full),
            "decode_step_time_s": data_array("decode_step_time_s", grid_arr(decode_s), full),
            "tpot_s": data_array("tpot_s", grid_arr(tpot_s), full),
            "e2e_s": data_array("e2e_s", grid_arr(e2e), full),
            "throughput_output_token_per_s": data_array(
                "throughput_output_token_per_s", grid_arr(np.where(generates, batch * output / e2e, np.nan)), full
            ),
            "decode_throughput_token_per_s": data_array(
                "decode_throughput_token_per_s", grid_arr(batch / tpot_s), full
            ),
            "prefill_throughput_token_per_s": data_array(
                "prefill_throughput_token_per_s", grid_arr(batch * prompt / prefill_s), full
            ),
            "weights_bytes": data_array("weights_bytes", cfg_arr(weights), cdims),
            "kv_bytes_per_token": data_array("kv_bytes_per_token", cfg_arr(kv_tok), cdims),
            "kv_capacity_tokens": data_array("kv_capacity_tokens", cfg_arr(capacity), cdims),
            "devices": data_array("devices", cfg_arr(devices), cdims),
            "max_batch_size": data_array("max_batch_size", grid_arr(max_batch), full),
            "fits": data_array("fits", grid_arr(fits), full),
            "decode_bound": data_array("decode_bound", grid_arr(bound), full),
            "prefill_bound": data_array("prefill_bound", grid_arr(prefill_bound), full),
        },
        coords=coords,
        attrs={
            "title": f"hermes_fast estimate: {sc.name}",
            **provenance(),
            "method": "analytical roofline, zero load, static batch",
            "calibration": resolved.describe_calibrations(variant.device for variant in cache),
        },
    )
    if strict:
        _raise_if_unfit(sc, engines, compiled, ds)
    return ds


def _raise_if_unfit(sc: Scenario, engines: list[Engine], compiled: list[CompiledEngine], ds: xr.Dataset) -> None:
    wl = sc.workload
    for e, ce in zip(engines, compiled, strict=True):
        path = f"engines[{[x.name for x in sc.engines].index(e.name)}]"
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
            held = wl.prompt_tokens + wl.output_tokens
            ranks = ce.attention_dp  # (each rank holds whole requests in its share)
            most = int((cap // ranks) // (held + ce.state_tokens_per_seq)) * ranks
            state = f" + {ce.state_tokens_per_seq:.0f} tokens' worth of state" if ce.state_bytes_per_seq else ""
            raise ConfigError(
                "workload.batch_size",
                wl.batch_size,
                f"a batch whose KV ({wl.batch_size} x {held} tokens{state}) fits the "
                f"{cap} tokens of KV capacity of {path} (at most {most})",
            )
