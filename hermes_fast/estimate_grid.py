"""The grids :func:`hermes_fast.estimate` takes: parsing and validating them against the scenario.

Grids speak :func:`hermes_fast.sweep`'s vocabulary (dotted paths of scenario fields, zipped axes with labels,
parsed by :mod:`hermes_fast.config.grid`) for the fields an estimate depends on, plus short keys (``tp``,
``batch_size``, ...) that stand for paths (:data:`GRID_ALIASES`). Every value is validated as the field it sets;
two axes may not set the same field. :func:`engine_variant` applies one point's settings to an engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .config.base import ConfigError, close_match_hint, convert_field
from .config.grid import axis_labels, element_index, parse_axis, parse_path, path_kinds
from .config.scenario import Dtypes, Engine, Parallel, Scenario, Workload

__all__ = [
    "GRID_ALIASES",
    "GRID_KEYS",
    "WORKLOAD_FIELDS",
    "GridColumn",
    "catalog_names",
    "check_grid",
    "engine_variant",
]

# Fields a grid may vary, by their place in the scenario. Engine fields change the compiled engine: a class
# and field name to validate values as, or a catalog kind. Workload fields only change the request shape at
# each point. Everything else only matters to simulate (hf.sweep varies it).
_ENGINE_FIELDS: dict[tuple[str, ...], tuple[type, str] | str] = {
    ("device",): "device",
    ("model",): "model",
    ("parallel", "tp"): (Parallel, "tp"),
    ("parallel", "pp"): (Parallel, "pp"),
    ("parallel", "ep"): (Parallel, "ep"),
    ("parallel", "attention_dp"): (Parallel, "attention_dp"),
    ("parallel", "cp"): (Parallel, "cp"),
    ("dtypes", "weight"): (Dtypes, "weight"),
    ("dtypes", "activation"): (Dtypes, "activation"),
    ("dtypes", "kv"): (Dtypes, "kv"),
    ("dtypes", "gemm_scaling"): (Dtypes, "gemm_scaling"),
    ("memory_utilization",): (Engine, "memory_utilization"),
    ("max_batched_tokens",): (Engine, "max_batched_tokens"),
}
WORKLOAD_FIELDS = ("batch_size", "prompt_tokens", "output_tokens", "context_tokens", "prefix_hit")
_VARIED = (
    "engines.<name>.device, .model, .parallel.tp|pp|ep|attention_dp|cp, .dtypes.weight|activation|kv|gemm_scaling, "
    ".memory_utilization, .max_batched_tokens, or workload." + "|".join(WORKLOAD_FIELDS)
)

# short grid key -> the paths it stands for; <each> is every engine of the scenario
GRID_ALIASES: dict[str, tuple[str, ...]] = {
    "device": ("engines.<each>.device",),
    "model": ("engines.<each>.model",),
    "tp": ("engines.<each>.parallel.tp",),
    "pp": ("engines.<each>.parallel.pp",),
    "ep": ("engines.<each>.parallel.ep",),
    "attention_dp": ("engines.<each>.parallel.attention_dp",),
    "cp": ("engines.<each>.parallel.cp",),
    "dtype": ("engines.<each>.dtypes.weight", "engines.<each>.dtypes.activation"),
    "weight_dtype": ("engines.<each>.dtypes.weight",),
    "activation_dtype": ("engines.<each>.dtypes.activation",),
    "kv_dtype": ("engines.<each>.dtypes.kv",),
    "gemm_scaling": ("engines.<each>.dtypes.gemm_scaling",),
    "memory_utilization": ("engines.<each>.memory_utilization",),
    **{k: (f"workload.{k}",) for k in WORKLOAD_FIELDS},
}
GRID_KEYS = ("engine", *GRID_ALIASES)  # engine: a subset and order of the scenario's engines
_EVERY_ENGINE = -1


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
class GridColumn:
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
    columns: tuple[GridColumn, ...]
    zipped: bool

    @property
    def coordinate_columns(self) -> tuple[GridColumn, ...]:
        """The columns that become coordinates along a zipped axis (as in a sweep: all but one named as it)."""
        return tuple(c for c in self.columns if self.zipped and c.key != self.name)

    @property
    def sets_engines(self) -> bool:
        return any(t.engine is not None for c in self.columns for t in c.targets)

    def sets_workload(self, field: str) -> GridColumn | None:
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
    if segs[0] == "workload" and len(segs) == 2 and segs[1] in WORKLOAD_FIELDS:
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


def catalog_names(axes: list[_GridAxis], field: str) -> list[tuple[str, str]]:
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


def check_grid(grid: Any, sc: Scenario) -> tuple[list[str] | None, list[_GridAxis]]:
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
            columns.append(GridColumn(path, targets, values, where))
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


def engine_variant(engine: Engine, index: int, setting: list[tuple[_GridAxis, int]]) -> Engine:
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
