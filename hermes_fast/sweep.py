"""Sweeps: simulate a scenario over a grid of any of its fields, serially, in threads or on dask.distributed.

A grid maps dotted paths of scenario fields (``engines.decode.parallel.tp``, ``workload.rate_per_s``,
``workload.classes[0].pipeline[1].engine``) to lists of values; axes multiply (Cartesian product), and a
zipped axis changes several paths together. Every point's scenario is the base scenario with its settings
applied, validated by the ordinary config loading before anything runs.

Point ``i`` (its flat C-order index in the full grid) and replicate ``r`` draw from
``SeedSequence(seed, (i, r))`` whatever the chunking, worker count or order of completion, so a sweep is
bit-identical to itself and to :func:`hermes_fast.simulate` run on the point with ``point=i``.

Results go, chunk by chunk, to memory or to a zarr store (a flat ``point`` axis chunked like the tasks,
plus a per-point ``_done`` flag written after the chunk's data): an interrupted sweep rerun with the same
arguments computes only the chunks not marked done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._version import __version__
from .capacity import as_capacity, check_rate_matters, search_rate
from .config.base import ConfigError, convert_field, from_mapping, load_yaml, to_mapping
from .config.grid import Axis, apply_settings, is_scalar, parse_axis, parse_path, plain_value
from .config.scenario import Scenario
from .config.sweep import CapacitySearch, SweepSpec
from .metrics import QUANTILES, REASONS
from .resolve import ResolvedScenario, load_scenario, resolve_scenario
from .simulate import LINK_VARS, STAGE_VARS, prepare, simulate_replicate, summary_dims
from .variables import data_array
from .workload import rng_for

__all__ = ["sweep", "sweep_file", "open_sweep", "Axis", "parse_path", "apply_settings"]

_MAX_POINTS = 10_000_000
_INNER_DIMS = ("replicate", "quantile", "reason", "pool", "stage", "link")
_FORMAT = 1  # version of the store layout


# --- grid axes ------------------------------------------------------------------------------------------


def parse_grid(grid: Any, base: dict) -> list[Axis]:
    """The axes of ``grid`` (see :func:`sweep`), each path checked against the schema and the base scenario."""
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", grid, "a mapping of dotted path -> values, or axis name -> {path: values}")
    axes: list[Axis] = []
    for key, spec in grid.items():
        key = str(key)
        if key in _INNER_DIMS:
            raise ConfigError(f"grid.{key}", spec, f"an axis name other than the output dims {', '.join(_INNER_DIMS)}")
        axis = parse_axis(key, spec)
        paths, values = axis.paths, axis.values
        for p in paths:
            segs = parse_path(p)
            apply_settings(base, [(p, values[0][paths.index(p)])])  # the path exists in the base scenario
            for other in (q for a in axes for q in a.paths):
                o = parse_path(other)
                if o[: len(segs)] == segs or segs[: len(o)] == o:
                    raise ConfigError(f"grid.{key}", p, f"a path that neither is nor contains another axis's ({other})")
        axes.append(axis)
    return axes


# --- the plan: what every task needs --------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
    base: dict
    axes: list[Axis]
    n_requests: int
    replicates: int
    seed: int
    capacity: CapacitySearch | None
    fast_forward: bool
    layout: dict = dataclasses.field(default_factory=dict)  # pools, roles, stages, links, piped

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.labels) for a in self.axes)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def settings(self, i: int) -> list[tuple[str, Any]]:
        idx = np.unravel_index(i, self.shape) if self.axes else ()
        return [(p, a.values[j][k]) for a, j in zip(self.axes, idx, strict=True) for k, p in enumerate(a.paths)]

    def coords_of(self, i: int) -> str:
        idx = np.unravel_index(i, self.shape) if self.axes else ()
        return ", ".join(f"{a.name}={a.labels[j]!r}" for a, j in zip(self.axes, idx, strict=True)) or "the base"

    def resolved(self, i: int) -> ResolvedScenario:
        """Grid point ``i``'s scenario, resolved (errors name the point)."""
        try:
            return resolve_scenario(apply_settings(self.base, self.settings(i)))
        except ConfigError as e:
            raise ConfigError(f"grid point {i} ({self.coords_of(i)}): {e.path}", e.value, e.expected) from None

    def identity(self) -> dict:
        """What determines the results (the store's fingerprint is its hash)."""
        return {
            "format": _FORMAT,
            "hermes_fast_version": __version__,
            "scenario": self.base,
            "grid": [{"name": a.name, "paths": a.paths, "values": a.values, "labels": a.labels} for a in self.axes],
            "n_requests": self.n_requests,
            "replicates": self.replicates,
            "seed": self.seed,
            "capacity": None if self.capacity is None else to_mapping(self.capacity),
            "fast_forward": self.fast_forward,
        }


def _fingerprint(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _layout_chunk(plan: _Plan, start: int, stop: int) -> dict:
    """Validate the scenarios of points start..stop-1; their pools, stages and links in first-seen order."""
    pools: dict[str, list[str]] = {}  # name -> roles
    stages: list[str] = []
    links: list[str] = []
    piped = False
    names: set[str] = set()
    for i in range(start, stop):
        resolved = plan.resolved(i)
        sc = resolved.scenario
        try:
            setup, pipe = prepare(resolved)
            if plan.capacity is not None:
                check_rate_matters(sc)
        except ConfigError as e:
            raise ConfigError(f"grid point {i} ({plan.coords_of(i)}): {e.path}", e.value, e.expected) from None
        names.add(sc.name)
        for p in setup.pools:
            roles = pools.setdefault(p.name, [])
            if p.role not in roles:
                roles.append(p.role)
        if pipe is not None:
            piped = True
            stages.extend(x for x in pipe.rows if x not in stages)
            links.extend(x for x in pipe.resources if x not in links)
    return {"pools": pools, "stages": stages, "links": links, "piped": piped, "names": sorted(names)}


def _merge_layouts(parts: list[dict]) -> dict:
    """The union over chunks taken in point order: the same whatever the chunking or completion order."""
    pools: dict[str, list[str]] = {}
    stages: list[str] = []
    links: list[str] = []
    for part in parts:
        for name, roles in part["pools"].items():
            have = pools.setdefault(name, [])
            have.extend(r for r in roles if r not in have)
        stages.extend(x for x in part["stages"] if x not in stages)
        links.extend(x for x in part["links"] if x not in links)
    return {
        "pools": list(pools),
        "roles": pools,
        "stages": stages,
        "links": links,
        "piped": any(p["piped"] for p in parts),
        "names": sorted({n for p in parts for n in p["names"]}),
    }


def _pack(plan: _Plan, summaries: list[dict], setup, pipe, capacity: list[float] | None) -> dict[str, np.ndarray]:
    """One point's replicates as arrays on the sweep's union of pools, stages and links (NaN where absent)."""
    lay = plan.layout
    where = {
        "pool": [lay["pools"].index(p.name) for p in setup.pools],
        "stage": [lay["stages"].index(s) for s in pipe.rows] if pipe is not None else [],
        "link": [lay["links"].index(r) for r in pipe.resources] if pipe is not None else [],
    }
    size = {"pool": len(lay["pools"]), "stage": len(lay["stages"]), "link": len(lay["links"])}
    out: dict[str, np.ndarray] = {}
    for name, first in summaries[0].items():
        values = np.stack([np.asarray(s[name]) for s in summaries])
        dims = summary_dims(name, first)
        if dims and dims[0] in where:
            full = np.full((len(summaries), size[dims[0]]), np.nan)
            full[:, where[dims[0]]] = values
            values = full
        out[name] = values
    if lay["piped"] and pipe is None:
        for name in STAGE_VARS:
            out[name] = np.full((len(summaries), size["stage"]), np.nan)
        for name in LINK_VARS:
            out[name] = np.full((len(summaries), size["link"]), np.nan)
    if capacity is not None:
        out["capacity_request_per_s"] = np.array(capacity, dtype=np.float64)
    return out


def _run_point(plan: _Plan, i: int) -> dict[str, np.ndarray]:
    """Simulate (or capacity-search) every replicate of grid point ``i``."""
    resolved = plan.resolved(i)
    sc = resolved.scenario
    setup, pipe = prepare(resolved)
    summaries: list[dict] = []
    capacity = None
    if plan.capacity is None:
        for r in range(plan.replicates):
            rng = rng_for(plan.seed, i, r)
            summaries.append(simulate_replicate(sc, setup, pipe, plan.n_requests, rng, plan.fast_forward)[0])
    else:
        capacity = []
        for r in range(plan.replicates):
            rate, _, summary, _ = search_rate(
                resolved, plan.capacity, plan.n_requests, plan.seed, i, r, plan.fast_forward, (setup, pipe)
            )
            capacity.append(rate)
            summaries.append(summary)
    return _pack(plan, summaries, setup, pipe, capacity)


def _run_chunk(plan: _Plan, start: int, stop: int) -> dict[str, np.ndarray]:
    """Points start..stop-1, stacked per variable (the unit of work of every executor)."""
    results = [_run_point(plan, i) for i in range(start, stop)]
    return {name: np.stack([r[name] for r in results]) for name in results[0]}


# --- where results go -----------------------------------------------------------------------------------


def _fill(dtype: np.dtype):
    if np.issubdtype(dtype, np.floating):
        return np.nan
    return False if dtype == np.bool_ else 0


class _MemorySink:
    def __init__(self, meta: dict):
        self.meta = meta
        self.n = meta["n_points"]
        self.arrays: dict[str, np.ndarray] = {}
        self.var_dims: dict[str, list[str]] = {}

    def done(self) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def write(self, start: int, stop: int, block: dict[str, np.ndarray], var_dims: dict) -> None:
        for name, values in block.items():
            if name not in self.arrays:
                self.arrays[name] = np.full((self.n, *values.shape[1:]), _fill(values.dtype), dtype=values.dtype)
                self.var_dims[name] = var_dims[name]
            self.arrays[name][start:stop] = values

    def read(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray]:
        return self.arrays, self.var_dims, np.ones(self.n, dtype=bool)


class _ZarrSink:
    """A zarr group: one array per variable over (point, replicate, ...), chunked like the tasks, and
    ``_done`` (point) set after a chunk's variables are written. Only the calling process writes."""

    def __init__(self, path: str | Path, meta: dict, overwrite: bool):
        import zarr

        self.path = Path(path)
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        if self.path.exists():
            try:
                self.group = zarr.open_group(str(self.path), mode="a")
                old = dict(self.group.attrs.get("hermes_fast_sweep", {}))
            except Exception:  # noqa: BLE001 - anything unreadable is not one of our stores
                old = {}
            if not old:
                raise ConfigError("out", str(path), "a new path or a hermes_fast sweep store (this is neither)")
            if old.get("fingerprint") != meta["fingerprint"]:
                raise ConfigError(
                    "out",
                    str(path),
                    "a new path, or the store of this same sweep to resume (its scenario, grid, n_requests, "
                    "replicates, seed or capacity targets differ; pass overwrite=True / --overwrite to replace it)",
                )
            self.meta = old
        else:
            self.group = zarr.open_group(str(self.path), mode="w")
            self.meta = dict(meta, variables=[], var_dims={})
            self.group.attrs["hermes_fast_sweep"] = self.meta
            n, c = meta["n_points"], meta["chunk_points"]
            self.group.create_array("_done", shape=(n,), chunks=(c,), dtype=bool, fill_value=False)
        self.n, self.chunk = self.meta["n_points"], self.meta["chunk_points"]
        self.handles: dict = {}  # opened arrays: opening reads their metadata, ~1 ms each

    def _array(self, name: str):
        if name not in self.handles:
            self.handles[name] = self.group[name]
        return self.handles[name]

    def done(self) -> np.ndarray:
        flags = np.zeros(self.n, dtype=bool)
        arr = self._array("_done")
        for start in range(0, self.n, self.chunk):
            stop = min(start + self.chunk, self.n)
            try:  # a chunk file cut short by a crash reads as not done: it is recomputed
                flags[start:stop] = arr[start:stop]
            except Exception:  # noqa: BLE001
                flags[start:stop] = False
        return flags

    def write(self, start: int, stop: int, block: dict[str, np.ndarray], var_dims: dict) -> None:
        new = False
        for name, values in block.items():
            if name not in self.meta["variables"]:
                if name not in self.group:
                    self.group.create_array(
                        name,
                        shape=(self.n, *values.shape[1:]),
                        chunks=(self.chunk, *values.shape[1:]),
                        dtype=values.dtype,
                        fill_value=_fill(values.dtype),
                    )
                self.meta["variables"].append(name)
                self.meta["var_dims"][name] = var_dims[name]
                new = True
        self._write_all(slice(start, stop), block)
        if new:
            self.group.attrs["hermes_fast_sweep"] = self.meta
        self._array("_done")[start:stop] = True  # only after the chunk's data

    def _write_all(self, where: slice, block: dict[str, np.ndarray]) -> None:
        """All of a chunk's variables at once on zarr's event loop (2-3x faster than one after another)."""
        try:
            import asyncio

            from zarr.core.sync import sync

            targets = [(self._array(k)._async_array, v) for k, v in block.items()]  # opened outside the loop

            async def write() -> None:
                await asyncio.gather(*(a.setitem(where, v) for a, v in targets))

            sync(write())
        except (ImportError, AttributeError):  # a zarr without these internals: one by one
            for name, values in block.items():
                self._array(name)[where] = values

    def read(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray]:
        arrays = {name: self._array(name)[:] for name in self.meta["variables"]}
        return arrays, self.meta["var_dims"], self.done()


# --- executors ------------------------------------------------------------------------------------------


def _block_dims(plan: _Plan, block: dict[str, np.ndarray]) -> dict[str, list[str]]:
    dims = {}
    for name, values in block.items():
        inner = summary_dims(name, values[0, 0]) if name != "capacity_request_per_s" else ()
        dims[name] = ["replicate", *inner]
    return dims


def _dask_client(workers: int | None, scheduler: Any, processes: bool, timeout_s: float):
    """(client, whether we own it): a LocalCluster of ``workers`` processes, or the scheduler given."""
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, False
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False), True
        except Exception as e:  # noqa: BLE001 - unreachable, refused, malformed: one config error
            raise ConfigError(
                "scheduler", scheduler, f"a reachable dask scheduler address, e.g. tcp://HOST:8786 ({type(e).__name__})"
            ) from None
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0", silence_logs=40
    )
    return Client(cluster, set_as_default=False), True


class _Runner:
    """Runs ``fn(plan, start, stop)`` over chunks: serially, in threads, or on a dask cluster (created once for
    the validation and the simulation passes); results are handed to ``take`` in the calling thread."""

    def __init__(self, workers: int | None, scheduler: Any, processes: bool, timeout_s: float):
        self.workers, self.scheduler, self.processes, self.timeout_s = workers, scheduler, processes, timeout_s
        self.mode = "dask" if scheduler is not None or (workers and workers > 1 and processes) else "local"
        self.client = None
        self.owned = False

    def __enter__(self) -> _Runner:
        if self.mode == "dask":
            self.client, self.owned = _dask_client(self.workers, self.scheduler, self.processes, self.timeout_s)
        return self

    def __exit__(self, *exc) -> None:
        if self.owned:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()

    @property
    def parallelism(self) -> int:
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return self.workers or 1

    def map(self, fn: Callable, plan: _Plan, chunks: list[tuple[int, int]], take: Callable) -> None:
        if self.client is not None:
            self._map_dask(fn, plan, chunks, take)
        elif (self.workers or 1) <= 1:
            for start, stop in chunks:
                take(start, stop, fn(plan, start, stop))
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                pending = {pool.submit(fn, plan, s, e): (s, e) for s, e in chunks}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            s, e = pending.pop(fut)
                            take(s, e, fut.result())
                finally:
                    for fut in pending:
                        fut.cancel()

    def _map_dask(self, fn: Callable, plan: _Plan, chunks: list[tuple[int, int]], take: Callable) -> None:
        from distributed import as_completed

        client = self.client
        shared = client.scatter(plan, broadcast=True, hash=False)
        futures = {client.submit(fn, shared, s, e, pure=False): (s, e) for s, e in chunks}
        try:
            for fut in as_completed(list(futures), loop=client.loop):
                s, e = futures[fut]
                take(s, e, fut.result())
        finally:
            client.cancel(list(futures))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(show: bool | None, total: int, initial: int, desc: str):
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="point", file=sys.stderr, dynamic_ncols=True)


# --- the Dataset ----------------------------------------------------------------------------------------


def _coord(values: Sequence) -> list:
    return list(values) if all(is_scalar(v) for v in values) else [json.dumps(v, sort_keys=True) for v in values]


def _dataset(meta: dict, arrays: dict, var_dims: dict, done: np.ndarray) -> xr.Dataset:
    axes = meta["axes"]
    shape = tuple(len(a["labels"]) for a in axes)
    grid_dims = tuple(a["name"] for a in axes)
    lay = meta["layout"]
    coords: dict[str, Any] = {a["name"]: list(a["labels"]) for a in axes}
    coords |= {
        "replicate": np.arange(meta["replicates"]),
        "quantile": np.array(QUANTILES),
        "reason": list(REASONS),
        "pool": lay["pools"],
        "pool_role": ("pool", ["|".join(lay["roles"][p]) for p in lay["pools"]]),
    }
    if lay["piped"]:
        coords["stage"] = lay["stages"]
        coords["link"] = lay["links"]
    for a in axes:
        if a["paths"] != [a["name"]]:
            for k, p in enumerate(a["paths"]):
                coords[p] = (a["name"], _coord([row[k] for row in a["values"]]))
    ds = xr.Dataset(coords=coords)
    for name in meta.get("order") or list(arrays):
        values = arrays[name].reshape(shape + arrays[name].shape[1:])
        ds[name] = data_array(name, values, grid_dims + tuple(var_dims[name]))
    if not done.all():
        ds["computed"] = xr.DataArray(
            done.reshape(shape), dims=grid_dims, attrs={"long_name": "point computed", "units": "1"}
        )
    ds.attrs.update(
        {
            "title": f"hermes_fast sweep: {', '.join(lay['names'])}",
            "scenario": ", ".join(lay["names"]),
            "grid": json.dumps([{k: a[k] for k in ("name", "paths", "labels")} for a in axes]),
            "n_requests": meta["n_requests"],
            "replicates": meta["replicates"],
            "seed": meta["seed"],
            "capacity": json.dumps(meta["capacity"]),
            "points": int(done.size),
            "points_done": int(done.sum()),
            "fingerprint": meta["fingerprint"],
            "hermes_fast_version": __version__,
            "calibration": "default: the shipped calibrations (h100_sxm, h200_sxm, a100_sxm_80gb and devices based on"
            " them); other devices uncalibrated",
        }
    )
    return ds


def open_sweep(path: str | Path) -> xr.Dataset:
    """The Dataset of a sweep's zarr store, complete or not (a partial one has a ``computed`` mask, and
    no data variables before its first chunk is stored).

    Examples
    --------
    >>> ds = open_sweep("results.zarr")  # doctest: +SKIP
    """
    import zarr

    p = Path(path)
    try:
        group = zarr.open_group(str(p), mode="r")
        meta = dict(group.attrs["hermes_fast_sweep"])
    except Exception:  # noqa: BLE001
        raise ConfigError("path", str(path), "a hermes_fast sweep store (a zarr directory written by sweep)") from None
    sink = _ZarrSink.__new__(_ZarrSink)
    sink.group, sink.meta, sink.path = group, meta, p
    sink.n, sink.chunk, sink.handles = meta["n_points"], meta["chunk_points"], {}
    arrays, var_dims, done = sink.read()
    return _dataset(dict(meta, order=meta["variables"]), arrays, var_dims, done)


# --- entry points ---------------------------------------------------------------------------------------


def _base_mapping(scenario: Any) -> dict:
    if scenario is None:
        from importlib.resources import files

        scenario = Path(str(files("hermes_fast") / "scenarios" / "default.yaml"))
    if isinstance(scenario, Scenario):
        return to_mapping(scenario)
    raw = load_yaml(scenario) if isinstance(scenario, (str, Path)) else scenario
    if not isinstance(raw, Mapping):
        raise ConfigError("scenario", raw, "a scenario mapping, YAML path or text")
    return plain_value(raw)


def _default_chunk(n_points: int, parallelism: int) -> int:
    # ~8 tasks per worker balance the load; 256 points keep zarr chunks few and tasks short enough to resume
    return max(1, min(256, math.ceil(n_points / (8 * max(parallelism, 1)))))


def sweep(
    scenario: Scenario | Mapping | str | Path | None = None,
    grid: Mapping[str, Any] | None = None,
    *,
    n_requests: int = 10_000,
    replicates: int = 1,
    seed: int = 0,
    capacity: CapacitySearch | Mapping | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    processes: bool = True,
    chunk_size: int | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
    fast_forward: bool = True,
    timeout_s: float = 10.0,
) -> xr.Dataset:
    """Simulate ``scenario`` at every point of ``grid``; one Dataset with a dim per axis plus ``replicate``.

    Parameters
    ----------
    scenario : Scenario, mapping, YAML path or text, or None for the embedded default.
    grid : mapping of dotted path -> list of values (each a dim named by its path; axes multiply), or of
        axis name -> ``{path: values, ..., "label": [...]}`` (zipped: the paths change together; equal
        lengths). Paths name fields as in the scenario file; list elements by name or index
        (``engines.decode.replicas``, ``workload.classes[0].prompt_tokens``, ``models[llama-3.1-8b].n_layers``).
    n_requests, replicates, seed : per point, as in :func:`hermes_fast.simulate`; point ``i`` (flat C-order
        index over the grid) and replicate ``r`` draw from ``SeedSequence(seed, (i, r))``.
    capacity : :class:`~hermes_fast.config.sweep.CapacitySearch` or mapping: search each point's largest
        arrival rate meeting these targets (adds ``capacity_request_per_s``; the summary is at that rate).
    out : zarr directory written chunk by chunk; rerun with the same arguments to resume what is missing.
    workers : None/1: serial in this process; N: N dask worker processes (a ``LocalCluster``), or N
        threads in this process with ``processes=False``.
    scheduler : a dask scheduler address (``tcp://HOST:8786``) or a ``distributed.Client``.
    chunk_size : points per task and per zarr chunk (default: about 8 tasks per worker, at most 256).
    progress : progress bar on stderr (None: when stderr is a terminal).
    overwrite : replace an ``out`` store written by a different sweep instead of refusing.

    Returns
    -------
    xarray.Dataset: every simulation summary variable over (grid dims..., replicate, quantile/pool/...);
    pools, stages and links are the union over points (NaN where a point has none).

    Examples
    --------
    >>> ds = sweep(grid={"workload.rate_per_s": [2, 4]}, n_requests=500, seed=1)
    >>> ds.ttft_s.dims
    ('workload.rate_per_s', 'replicate', 'quantile')
    """
    for name, value in (("n_requests", n_requests), ("replicates", replicates), ("seed", seed)):
        convert_field(SweepSpec, name, value, name)
    if chunk_size is not None:
        convert_field(SweepSpec, "chunk_size", chunk_size, "chunk_size")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("workers", workers, "a positive integer")
    if workers is not None and scheduler is not None:
        raise ConfigError("workers", workers, "either workers (a local cluster) or scheduler, not both")
    base = _base_mapping(scenario)
    load_scenario(base)  # the base itself is valid
    cap = as_capacity(capacity) if capacity is not None else None
    axes = parse_grid(grid, base)
    if cap is not None and any(parse_path(p) == ["workload", "rate_per_s"] for a in axes for p in a.paths):
        raise ConfigError(
            "grid.workload.rate_per_s", "swept", "no rate axis with a capacity search (it finds the rate)"
        )
    plan = _Plan(base, axes, int(n_requests), int(replicates), int(seed), cap, bool(fast_forward))
    n = plan.n_points
    if n > _MAX_POINTS:
        raise ConfigError("grid", f"{n} points", f"at most {_MAX_POINTS} points per sweep; split it")
    fingerprint = _fingerprint(plan.identity())
    meta = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "n_points": n,
        "axes": [{"name": a.name, "paths": list(a.paths), "values": a.values, "labels": list(a.labels)} for a in axes],
        "n_requests": plan.n_requests,
        "replicates": plan.replicates,
        "seed": plan.seed,
        "capacity": None if cap is None else to_mapping(cap),
    }
    meta = json.loads(json.dumps(meta))  # tuples -> lists, as the store gives them back
    sink: _MemorySink | _ZarrSink | None = None
    if out is not None and Path(out).exists() and not overwrite:  # resume (refused early if another sweep's)
        sink = _ZarrSink(out, meta, overwrite=False)
        plan.layout = sink.meta["layout"]
    with _Runner(workers, scheduler, processes, timeout_s) as runner:
        if sink is None:
            meta["chunk_points"] = chunk_size or _default_chunk(n, runner.parallelism)
            c = meta["chunk_points"]
            parts: dict[int, dict] = {}
            bar = _bar(progress, n, 0, "validating")

            def keep(start: int, stop: int, part: dict) -> None:
                parts[start] = part
                bar.update(stop - start)

            try:  # every point's scenario, before anything is simulated or written
                runner.map(_layout_chunk, plan, [(s, min(s + c, n)) for s in range(0, n, c)], keep)
            finally:
                bar.close()
            plan.layout = meta["layout"] = _merge_layouts([parts[s] for s in sorted(parts)])
            sink = _ZarrSink(out, meta, overwrite) if out is not None else _MemorySink(meta)
        chunk = sink.meta["chunk_points"]
        done = sink.done()
        chunks = [(s, min(s + chunk, n)) for s in range(0, n, chunk) if not done[s : min(s + chunk, n)].all()]
        bar = _bar(progress, n, n - sum(e - s for s, e in chunks), "sweep")

        def take(start: int, stop: int, block: dict) -> None:
            sink.write(start, stop, block, _block_dims(plan, block))
            bar.update(stop - start)

        try:
            runner.map(_run_chunk, plan, chunks, take)
        finally:
            bar.close()
    arrays, var_dims, done = sink.read()
    order = sink.meta.get("variables") if isinstance(sink, _ZarrSink) else list(arrays)
    return _dataset(dict(sink.meta, order=order), arrays, var_dims, done)


def sweep_file(path: str | Path, **kwargs) -> xr.Dataset:
    """Run the sweep described by a sweep YAML file (:class:`~hermes_fast.config.sweep.SweepSpec`);
    a relative scenario path is taken relative to the file. ``kwargs`` go to :func:`sweep` (out, workers...)
    and override the file's settings (None leaves the file's)."""
    spec = from_mapping(SweepSpec, load_yaml(Path(path)))
    scenario = spec.scenario
    if isinstance(scenario, str) and "\n" not in scenario:
        here = Path(path).parent / scenario
        scenario = here if here.exists() else Path(scenario)
    settings = {
        "n_requests": spec.n_requests,
        "replicates": spec.replicates,
        "seed": spec.seed,
        "capacity": spec.capacity,
        "chunk_size": spec.chunk_size,
    }
    settings.update({k: v for k, v in kwargs.items() if v is not None or k not in settings})
    return sweep(scenario, spec.grid, **settings)
