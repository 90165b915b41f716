"""The entry points: :func:`sweep` checks its arguments, plans the grid, validates every point's scenario,
runs the chunks not yet done into memory or a zarr store and returns the Dataset; :func:`sweep_file` runs the
sweep a sweep YAML file describes."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from ..capacity import as_capacity
from ..config.base import ConfigError, convert_field, from_mapping, to_mapping
from ..config.files import load_yaml
from ..config.grid import parse_path, plain_value
from ..config.scenario import Scenario
from ..config.sweep import CapacitySearch, SweepSpec
from ..resolve import load_scenario
from .dataset import sweep_dataset
from .executors import Runner, check_not_spawned_import, progress_bar
from .lock import StoreLock
from .plan import SweepPlan, fingerprint_of, parse_grid
from .points import block_dims, layout_chunk, merge_layouts, run_chunk
from .store import STORE_FORMAT, MemorySink, ZarrSink, check_out_path

__all__ = ["sweep", "sweep_file"]

_MAX_POINTS = 10_000_000


def _base_mapping(scenario: Any) -> dict:
    if scenario is None:
        from importlib.resources import files

        scenario = Path(str(files("hermes_fast") / "scenarios" / "default.yaml"))
    if isinstance(scenario, Scenario):
        return to_mapping(scenario)
    raw = load_yaml(scenario, "a scenario") if isinstance(scenario, (str, Path)) else scenario
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
    scenario : Scenario, mapping, str, pathlib.Path or None, default None
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or text; None: the embedded default.
    grid : mapping or None, default None
        Mapping of dotted path -> list of values (each a dim named by its path; axes multiply), or of
        axis name -> ``{path: values, ..., "label": [...]}`` (zipped: the paths change together; equal
        lengths). Paths name fields as in the scenario file; list elements by name or index
        (``engines.decode.replicas``, ``workload.classes[0].prompt_tokens``, ``models[llama-3.1-8b].n_layers``).
    n_requests, replicates, seed : int, default 10000, 1, 0
        Per point, as in :func:`hermes_fast.simulate` (arrivals per replicate, repetitions, seed); point ``i``
        (flat C-order index over the grid) and replicate ``r`` draw from ``SeedSequence(seed, (i, r))``.
    capacity : CapacitySearch, mapping or None, default None
        A :class:`~hermes_fast.config.sweep.CapacitySearch` or mapping: search each point's largest arrival
        rate (requests/s) meeting these targets (adds ``capacity_request_per_s``; the summary is at that
        rate). The grid may then not sweep ``workload.rate_per_s``.
    out : str, pathlib.Path or None, default None
        Zarr directory written chunk by chunk; rerun with the same arguments to resume what is missing (chunks
        found missing or corrupt are recomputed, with a ``StoreWarning``). One sweep writes a store at a time
        (a lock file ``OUT.lock`` beside it). None: keep the results in memory only.
    workers : int or None, default None
        None/1: serial in this process; N: N dask worker processes (a ``LocalCluster``), or N threads in
        this process with ``processes=False``.
    scheduler : str, distributed.Client or None, default None
        A dask scheduler address (``tcp://HOST:8786``) or a ``distributed.Client`` (not with ``workers``).
    processes : bool, default True
        With ``workers``: worker processes (True) or threads in this process (False).
    chunk_size : int or None, default None
        Points per task and per zarr chunk (default: about 8 tasks per worker, at most 256).
    progress : bool or None, default None
        Progress bar (tqdm: a widget in Jupyter with ipywidgets, else text on stderr); None: when stderr is a
        terminal or in a notebook.
    overwrite : bool, default False
        Replace an ``out`` store written by a different sweep instead of refusing.
    fast_forward : bool, default True
        As in :func:`hermes_fast.simulate` (identical results, much faster).
    timeout_s : float, default 10.0
        Seconds to wait when connecting to a ``scheduler`` given by address.

    Returns
    -------
    xarray.Dataset
        Every simulation summary variable over (grid dims..., replicate, quantile/pool/...); pools, stages
        and links are the union over points (NaN where a point has none). Units in each variable's attrs.

    Raises
    ------
    ConfigError
        Before anything runs, for an invalid argument, base scenario or grid (an unknown path, a bad value,
        zipped lists of unequal length), any point's invalid scenario, a rate axis with ``capacity``, an
        unreachable ``scheduler`` address, an ``out`` it cannot write (a file, an unwritable or read-only
        place), an ``out`` store written by a different sweep (without ``overwrite``) or by a different version,
        an ``out`` that is neither a new path nor a sweep store (even with ``overwrite``), or an ``out`` store
        another sweep is writing (naming the process and host holding its lock), naming the path and value.

    Warns
    -----
    StoreWarning
        When resuming, for chunks marked done whose files are missing or corrupt (they are recomputed), and for
        a stale lock (its process gone) taken over.

    Examples
    --------
    >>> ds = hf.sweep(grid={"workload.rate_per_s": [2, 4]}, n_requests=100, seed=1)
    >>> ds.ttft_s.dims
    ('workload.rate_per_s', 'replicate', 'quantile')
    >>> ds["workload.rate_per_s"].values.tolist()
    [2, 4]
    >>> int(ds.completed_requests.sum())  # 100 requests at each of the 2 points
    200
    """
    check_not_spawned_import()
    for name, value in (("n_requests", n_requests), ("replicates", replicates), ("seed", seed)):
        convert_field(SweepSpec, name, value, name)
    if chunk_size is not None:
        convert_field(SweepSpec, "chunk_size", chunk_size, "chunk_size")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("workers", workers, "a positive integer")
    if workers is not None and scheduler is not None:
        raise ConfigError("workers", workers, "either workers (a local cluster) or scheduler, not both")
    out_path = check_out_path(out) if out is not None else None  # before any work
    base = _base_mapping(scenario)
    load_scenario(base)  # the base itself is valid
    cap = as_capacity(capacity) if capacity is not None else None
    axes = parse_grid(grid, base)
    if cap is not None and any(parse_path(p) == ["workload", "rate_per_s"] for a in axes for p in a.paths):
        raise ConfigError(
            "grid.workload.rate_per_s", "swept", "no rate axis with a capacity search (it finds the rate)"
        )
    plan = SweepPlan(base, axes, int(n_requests), int(replicates), int(seed), cap, bool(fast_forward))
    n = plan.n_points
    if n > _MAX_POINTS:
        raise ConfigError("grid", f"{n} points", f"at most {_MAX_POINTS} points per sweep; split it")
    fingerprint = fingerprint_of(plan.identity())
    meta = {
        "format": STORE_FORMAT,
        "fingerprint": fingerprint,
        "build": plan.build,
        "n_points": n,
        "axes": [{"name": a.name, "paths": list(a.paths), "values": a.values, "labels": list(a.labels)} for a in axes],
        "n_requests": plan.n_requests,
        "replicates": plan.replicates,
        "seed": plan.seed,
        "capacity": None if cap is None else to_mapping(cap),
    }
    meta = json.loads(json.dumps(meta))  # tuples -> lists, as the store gives them back
    sink: MemorySink | ZarrSink | None = None
    lock = StoreLock(out_path).acquire() if out_path is not None else None  # one writer, from here on
    try:
        if out_path is not None and not overwrite and out_path.exists():  # resume (refused if another sweep's)
            sink = ZarrSink(out_path, meta, overwrite=False, resume_only=True, lock=lock)
            if sink.resumed:
                plan.layout = sink.meta["layout"]
            else:  # an empty directory: a new store, planned below
                sink = None
        with Runner(workers, scheduler, processes, timeout_s) as runner:
            if sink is None:
                meta["chunk_points"] = chunk_size or _default_chunk(n, runner.parallelism)
                c = meta["chunk_points"]
                parts: dict[int, dict] = {}
                bar = progress_bar(progress, n, 0, "validating")

                def keep(start: int, stop: int, part: dict) -> None:
                    parts[start] = part
                    bar.update(stop - start)

                try:  # every point's scenario, before anything is simulated or written
                    runner.map(layout_chunk, plan, [(s, min(s + c, n)) for s in range(0, n, c)], keep)
                finally:
                    bar.close()
                plan.layout = meta["layout"] = merge_layouts([parts[s] for s in sorted(parts)])
                sink = ZarrSink(out_path, meta, overwrite, lock=lock) if out_path is not None else MemorySink(meta)
            chunk = sink.meta["chunk_points"]
            done = sink.done()
            chunks = [(s, min(s + chunk, n)) for s in range(0, n, chunk) if not done[s : min(s + chunk, n)].all()]
            bar = progress_bar(progress, n, n - sum(e - s for s, e in chunks), "sweep")

            def take(start: int, stop: int, block: dict) -> None:
                sink.write(start, stop, block, block_dims(plan, block))
                bar.update(stop - start)

            try:
                runner.map(run_chunk, plan, chunks, take)
            finally:
                bar.close()
        arrays, var_dims, done = sink.read()
    finally:
        if lock is not None:
            lock.release()
    order = sink.meta.get("variables") if isinstance(sink, ZarrSink) else list(arrays)
    return sweep_dataset(dict(sink.meta, order=order), arrays, var_dims, done)


def sweep_file(path: str | Path, **kwargs) -> xr.Dataset:
    """Run the sweep described by a sweep YAML file (:class:`~hermes_fast.config.sweep.SweepSpec`).

    Parameters
    ----------
    path : str or pathlib.Path
        The sweep file: ``scenario`` (a path relative to the file, inline, or null for the default),
        ``grid``, ``n_requests``, ``replicates``, ``seed``, optional ``capacity`` and ``chunk_size``.
    **kwargs
        Arguments of :func:`sweep` (``out``, ``workers``, ``n_requests``...); they override the file's
        settings (None leaves the file's).

    Returns
    -------
    xarray.Dataset
        As :func:`sweep` returns.

    Raises
    ------
    ConfigError
        For an invalid sweep file (naming the field) and everything :func:`sweep` refuses.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "sweep.yaml"
    ...     _ = path.write_text("{grid: {workload.rate_per_s: [2, 4]}, n_requests: 1000, seed: 1}")
    ...     ds = hf.sweep_file(path, n_requests=100)  # 100 overrides the file's 1000
    >>> ds.attrs["n_requests"], ds.sizes["workload.rate_per_s"]
    (100, 2)
    """
    data = load_yaml(Path(path), "a sweep file")
    if "engines" in data and not data.keys() & {"grid", "scenario"}:
        raise ConfigError(
            str(path), f"a scenario file (keys {', '.join(map(str, data))})",
            "a sweep file (scenario, grid, ...): this is a scenario file (use hermes-fast run, or name it in a sweep "
            "file's scenario:)",
        )  # fmt: skip
    spec = from_mapping(SweepSpec, data)
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
