"""Analytical (zero-load) estimates over whole parameter grids -> xarray Dataset.

Grids speak :func:`hermes_fast.sweep`'s vocabulary (dotted paths of scenario fields, zipped axes with labels,
parsed by :mod:`hermes_fast.config.grid`) for the fields an estimate depends on, plus short keys (``tp``,
``batch_size``, ...) that stand for paths (:data:`GRID_ALIASES`).
"""

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
from .config.grid import axis_labels, element_index, parse_axis, parse_path, path_kinds
from .config.scenario import Dtypes, Engine, Parallel, Scenario, Workload, read_scenario
from .kernels.grid import estimate_points
from .resolve import ResolvedScenario, resolve_scenario
from .variables import data_array

__all__ = ["estimate", "GRID_KEYS", "GRID_ALIASES"]

# Fields a grid may vary, by their place in the scenario. Engine fields change the compiled engine: a class
# and field name to validate values as, or a catalog kind. Workload fields only change the request shape at
# each point. Everything else only matters to simulate (hf.sweep varies it).
_ENGINE_FIELDS: dict[tuple[str, ...], tuple[type, str] | str] = {
    ("device",): "device",
    ("model",): "model",
    ("parallel", "tp"): (Parallel, "tp"),
    ("parallel", "pp"): (Parallel, "pp"),
    ("parallel", "ep"): (Parallel, "ep"),
    ("dtypes", "weight"): (Dtypes, "weight"),
    ("dtypes", "activation"): (Dtypes, "activation"),
    ("dtypes", "kv"): (Dtypes, "kv"),
    ("dtypes", "gemm_scaling"): (Dtypes, "gemm_scaling"),
    ("memory_utilization",): (Engine, "memory_utilization"),
    ("max_batched_tokens",): (Engine, "max_batched_tokens"),
}
_WORKLOAD_FIELDS = ("batch_size", "prompt_tokens", "output_tokens", "context_tokens")
_VARIED = (
    "engines.<name>.device, .model, .parallel.tp|pp|ep, .dtypes.weight|activation|kv|gemm_scaling, "
    ".memory_utilization, .max_batched_tokens, or workload." + "|".join(_WORKLOAD_FIELDS)
)

# short grid key -> the paths it stands for; <each> is every engine of the scenario
GRID_ALIASES: dict[str, tuple[str, ...]] = {
    "device": ("engines.<each>.device",),
    "model": ("engines.<each>.model",),
    "tp": ("engines.<each>.parallel.tp",),
    "pp": ("engines.<each>.parallel.pp",),
    "ep": ("engines.<each>.parallel.ep",),
    "dtype": ("engines.<each>.dtypes.weight", "engines.<each>.dtypes.activation"),
    "weight_dtype": ("engines.<each>.dtypes.weight",),
    "activation_dtype": ("engines.<each>.dtypes.activation",),
    "kv_dtype": ("engines.<each>.dtypes.kv",),
    "gemm_scaling": ("engines.<each>.dtypes.gemm_scaling",),
    "memory_utilization": ("engines.<each>.memory_utilization",),
    **{k: (f"workload.{k}",) for k in _WORKLOAD_FIELDS},
}
GRID_KEYS = ("engine", *GRID_ALIASES)  # engine: a subset and order of the scenario's engines
_EVERY_ENGINE = -1
_MAX_POINTS = 20_000_000  # ~130 B per point in memory: ~2.6 GB
_MAX_ENGINE_COMBINATIONS = 100_000  # each is compiled in Python (~70 us)


@dataclasses.dataclass(frozen=True)
class _Target:
    """A field a grid column sets: of the workload (``engine`` None), of one engine (``engine``: its index in
    the scenario) or of every engine (``_EVERY_ENGINE``: a short key). ``field`` is the path below it."""

    engine: int | None
    field: tuple[str, ...]

    def sets_engine(self, index: int) -> bool:
        return self.engine is not None and self.engine in (index, _EVERY_ENGINE)

    def overlaps(self, other: _Target) -> bool:
        if self.field != other.field or (self.engine is None) != (other.engine is None):
            return False
        return self.engine == other.engine or _EVERY_ENGINE in (self.engine, other.engine)


@dataclasses.dataclass(frozen=True)
class _Column:
    """One path (or short key) of a grid axis, as written, with the fields it sets and its validated values."""

    key: str
    targets: tuple[_Target, ...]
    values: tuple
    where: str  # its place in the grid, for errors (grid.tp, grid.split.engines.x.device)


@dataclasses.dataclass(frozen=True)
class _GridAxis:
    """One dim of an estimate grid: its name, coordinates and columns (several when zipped)."""

    name: str
    labels: tuple
    columns: tuple[_Column, ...]
    zipped: bool

    @property
    def coordinate_columns(self) -> tuple[_Column, ...]:
        """The columns that become coordinates along a zipped axis (as in a sweep: all but one named as it)."""
        return tuple(c for c in self.columns if self.zipped and c.key != self.name)

    @property
    def sets_engines(self) -> bool:
        return any(t.engine is not None for c in self.columns for t in c.targets)

    def sets_workload(self, field: str) -> _Column | None:
        return next((c for c in self.columns for t in c.targets if t.engine is None and t.field == (field,)), None)


def _alias_targets(key: str) -> tuple[_Target, ...]:
    out = []
    for path in GRID_ALIASES[key]:
        head, _, rest = path.partition(".")
        if head == "workload":
            out.append(_Target(None, (rest,)))
        else:
            out.append(_Target(_EVERY_ENGINE, tuple(rest.split(".")[1:])))
    return tuple(out)


def _targets(key: str, where: str, values: list, sc: Scenario) -> tuple[_Target, ...]:
    """The fields a grid column sets: a short key's, or those of a dotted path (sweep's vocabulary) that a
    zero-load estimate depends on; ConfigError for any other key or path."""
    if key in GRID_ALIASES:
        return _alias_targets(key)
    if "." not in key and "[" not in key:
        hint = close_match_hint(key, list(GRID_KEYS))
        raise ConfigError(where, values, f"a grid key{hint}; valid: {', '.join(GRID_KEYS)}; or a path: {_VARIED}")
    segs = parse_path(key)
    path_kinds(segs, key)  # a path outside the schema: the field's valid names and a close match
    if segs[0] == "engines" and len(segs) > 2 and tuple(segs[2:]) in _ENGINE_FIELDS:
        index = element_index([{"name": e.name} for e in sc.engines], segs[1], "engines", key)
        return (_Target(index, tuple(segs[2:])),)
    if segs[0] == "workload" and len(segs) == 2 and segs[1] in _WORKLOAD_FIELDS:
        return (_Target(None, (segs[1],)),)
    raise ConfigError(
        where, values, f"a field a zero-load estimate depends on: {_VARIED} (hf.sweep simulates any field)"
    )


def _convert(target: _Target, value: Any, path: str) -> Any:
    """A grid value validated as the field it sets (device and model names are resolved with the scenario's)."""
    if target.engine is None:
        return convert_field(Workload, target.field[0], value, path)
    spec = _ENGINE_FIELDS[target.field]
    if not isinstance(spec, str):
        return convert_field(*spec, value, path)
    if not isinstance(value, str):
        raise ConfigError(path, value, f"a {spec} name (string)")
    return value


def _catalog_names(axes: list[_GridAxis], field: str) -> list[tuple[str, str]]:
    """(name, grid path) of every device or model name the grid sets, for :func:`resolve_scenario`."""
    return [
        (v, f"{c.where}[{j}]")
        for a in axes
        for c in a.columns
        if c.targets[0].field == (field,) and c.targets[0].engine is not None
        for j, v in enumerate(c.values)
    ]


def _check_engines(values: Any, sc: Scenario) -> list[str]:
    """The ``engine`` key: a subset and order of the scenario's engines."""
    names = [e.name for e in sc.engines]
    if isinstance(values, Mapping):
        raise ConfigError("grid.engine", values, "a list of engine names (engine is always a dim, never zipped)")
    axis = parse_axis("engine", values)
    for i, (v,) in enumerate(axis.values):
        if not isinstance(v, str):
            raise ConfigError(f"grid.engine[{i}]", v, "an engine name (string)")
        if v not in names:
            hint = close_match_hint(v, names)
            raise ConfigError(f"grid.engine[{i}]", v, f"an engine name{hint}; engines: {', '.join(names)}")
    return [v for (v,) in axis.values]


def _check_grid(grid: Any, sc: Scenario) -> tuple[list[str] | None, list[_GridAxis]]:
    """(the ``engine`` key's names or None, the other axes in grid order), every value validated."""
    if grid is None:
        return None, []
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", grid, "a mapping of grid key or dotted path -> list of values")
    engines: list[str] | None = None
    axes: list[_GridAxis] = []
    for key, spec in grid.items():
        key = str(key)
        if key == "engine":
            engines = _check_engines(spec, sc)
            continue
        axis = parse_axis(key, spec)
        zipped = isinstance(spec, Mapping)  # labels given or joined from the values, the paths as coordinates
        columns = []
        for p, path in enumerate(axis.paths):
            where = f"grid.{key}.{path}" if zipped else f"grid.{key}"
            raw = [row[p] for row in axis.values]
            targets = _targets(path, where, raw, sc)
            values = tuple(_convert(targets[0], v, f"{where}[{j}]") for j, v in enumerate(raw))
            for t in targets:
                for other in [*(c for a in axes for c in a.columns), *columns]:
                    if any(t.overlaps(u) for u in other.targets):
                        raise ConfigError(where, path, f"a field no other grid axis sets ({other.key} sets it too)")
            columns.append(_Column(path, targets, values, where))
        labels = axis.labels if zipped else tuple(axis_labels(list(columns[0].values)))
        if len(set(labels)) != len(labels):  # 1 and 1.0 are one value
            raise ConfigError(f"grid.{key}", list(labels), "distinct values (each becomes a coordinate)")
        axes.append(_GridAxis(key, labels, tuple(columns), zipped))
    names = ["engine", *(a.name for a in axes)]
    for a in axes:
        for c in a.coordinate_columns:
            if c.key in names:
                raise ConfigError(f"grid.{a.name}.{c.key}", c.key, "a path that is not also the name of a grid dim")
    return engines, axes


def _engine_variant(engine: Engine, index: int, setting: list[tuple[_GridAxis, int]]) -> Engine:
    """``engine`` (the scenario's engine ``index``) with the fields the grid sets at one point."""
    changes: dict[tuple[str, ...], Any] = {}
    for axis, j in setting:
        for c in axis.columns:
            for t in c.targets:
                if t.sets_engine(index):
                    changes[t.field] = c.values[j]
    par = dataclasses.replace(engine.parallel, **{f[1]: v for f, v in changes.items() if f[0] == "parallel"})
    dt = dataclasses.replace(engine.dtypes, **{f[1]: v for f, v in changes.items() if f[0] == "dtypes"})
    top = {f[0]: v for f, v in changes.items() if len(f) == 1}
    try:  # the dtypes' own cross-field rules (block scaling: fp8 only), named by the grid point
        dt._validate("dtypes")
    except ConfigError as e:
        point = ", ".join(f"{axis.name}={axis.labels[j]}" for axis, j in setting)
        raise ConfigError(f"grid[{point}].{e.path}", e.value, e.expected) from None
    return dataclasses.replace(engine, parallel=par, dtypes=dt, **top)


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
        Mapping of a dotted path -> list of values, in :func:`hermes_fast.sweep`'s vocabulary, for the fields a
        zero-load estimate depends on: ``engines.<name>.device``, ``.model``, ``.parallel.tp``, ``.pp``,
        ``.ep``, ``.dtypes.weight``, ``.activation``, ``.kv``, ``.gemm_scaling`` (``block`` needs fp8 weights
        and activations at every point), ``.memory_utilization``, ``.max_batched_tokens`` (engines by name or
        index, ``engines[0]``), and ``workload.batch_size``, ``.prompt_tokens``, ``.output_tokens``,
        ``.context_tokens``. Each path becomes a dim named by the path as written (as in a sweep); a path that
        names one engine leaves the others as they are along its dim. An axis name mapped to
        ``{path: values, ..., "label": [...]}`` is zipped: the paths change together along one dim named by
        the axis, each path a coordinate on it. Short keys stand for paths and keep their short dim name
        (:data:`GRID_ALIASES`): ``device``, ``model``, ``tp``, ``pp``, ``ep``, ``weight_dtype``,
        ``activation_dtype``, ``kv_dtype``, ``gemm_scaling``, ``memory_utilization`` set that field of every
        engine, ``dtype`` weights and activations together; ``batch_size``, ``prompt_tokens``,
        ``output_tokens``, ``context_tokens`` the workload's. ``engine`` picks a subset and order of the
        scenario's engines (``engine`` is always the first dim). Axes multiply; two axes may not set the same
        field, and a path estimate cannot vary (``workload.rate_per_s``, batching, ...: simulate's) is a
        :class:`ConfigError`.
    calibration
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

    Examples
    --------
    >>> import hermes_fast as hf
    >>> ds = hf.estimate(grid={"batch_size": [1, 64], "tp": [1, 2]})
    >>> ds.tpot_s.dims
    ('engine', 'batch_size', 'tp')
    >>> ds = hf.estimate(grid={"workload.batch_size": [1, 64], "engines.llama8b-h100.parallel.tp": [1, 2]})
    >>> ds.tpot_s.dims
    ('engine', 'workload.batch_size', 'engines.llama8b-h100.parallel.tp')
    """
    sc = read_scenario(scenario)
    strict = not grid
    subset, axes = _check_grid(grid, sc)
    devices, models = _catalog_names(axes, "device"), _catalog_names(axes, "model")
    resolved = resolve_scenario(sc, calibration, devices=devices, models=models)
    index_of = {e.name: i for i, e in enumerate(sc.engines)}
    engines = [sc.engines[index_of[n]] for n in subset] if subset is not None else list(sc.engines)
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
    rows, ok_rows, compiled = [], [], []
    cache: dict[Engine, int] = {}
    combo_index = np.empty([shape[a] for a in eng_axes], dtype=np.int64)
    for combo in itertools.product(*[range(shape[a]) for a in eng_axes]):
        index = index_of[engines[combo[0]].name]
        variant = _engine_variant(engines[combo[0]], index, list(zip(eng_grid, combo[1:], strict=True)))
        if variant not in cache:
            ce, ok = _compile(variant, resolved, f"engines[{index}]", strict)
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
    point_columns: dict[str, tuple[int, _Column]] = {}  # workload field -> (its axis in dims, the column)
    for k, a in enumerate(axes, start=1):
        for f in _WORKLOAD_FIELDS:
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
            "ttft_s": data_array("ttft_s", grid_arr(prefill_s), full),
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
            "hermes_fast_version": __version__,
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
