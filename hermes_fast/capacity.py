"""Capacity search: the largest arrival rate whose simulated run meets latency and goodput targets.

A separate module from :mod:`hermes_fast.metrics` (which the simulator itself imports): the search runs
the simulator. Bisection is in log-rate between ``rate_min_per_s`` and ``rate_max_per_s``; every rate
tried for one (point, replicate) draws from the same seed stream, so arrivals differ only by the time
scale (common random numbers) and "meets the targets" is monotone in the rate up to simulation noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

from ._version import __version__
from .config.base import ConfigError, from_mapping
from .config.scenario import Scenario
from .config.serving import check_warmup
from .config.sweep import CapacitySearch
from .metrics import QUANTILES
from .resolve import ResolvedScenario, resolve_scenario
from .simulate import assemble, prepare, simulate_replicate
from .variables import data_array
from .workload import rng_for

__all__ = ["CapacitySearch", "capacity_search", "meets_targets", "search_rate", "as_capacity", "check_rate_matters"]


def as_capacity(targets: CapacitySearch | Mapping, path: str = "capacity") -> CapacitySearch:
    """A validated :class:`CapacitySearch` from itself or a mapping (ConfigError naming ``path``)."""
    if isinstance(targets, CapacitySearch):
        return targets
    return from_mapping(CapacitySearch, targets, path)


def meets_targets(summary: Mapping, targets: CapacitySearch) -> bool:
    """Whether one replicate's summary meets every target (a NaN statistic, e.g. nothing completed, fails)."""
    for name in ("ttft", "tpot", "e2e"):
        tgt = getattr(targets, name)
        if tgt is None:
            continue
        if tgt.quantile is None:
            value = float(summary[f"{name}_mean_s"])
        else:
            value = float(summary[f"{name}_s"][QUANTILES.index(tgt.quantile)])
        if not value <= tgt.max_s:
            return False
    if targets.min_slo_attainment is not None and not summary["slo_attainment"] >= targets.min_slo_attainment:
        return False
    return bool(targets.allow_unstable or not summary["unstable"])


def check_rate_matters(sc: Scenario) -> None:
    """ConfigError when the arrival times do not follow ``workload.rate_per_s`` (a trace replayed as is)."""
    arr = sc.workload.arrival
    if arr.process == "trace" and (arr.trace is None or not arr.trace.rescale_to_rate):
        raise ConfigError(
            "workload.arrival.trace.rescale_to_rate", False, "true for a capacity search (the rate must set the times)"
        )


def search_rate(
    resolved: ResolvedScenario,
    targets: CapacitySearch,
    n_requests: int,
    seed: int,
    point: int = 0,
    replicate: int = 0,
    fast_forward: bool = True,
    setup=None,
) -> tuple[float, float, dict, int]:
    """Bisect one (point, replicate): (capacity, the bracket's failing high end, summary at capacity, runs).

    The capacity is NaN when even ``rate_min_per_s`` fails (the summary is then that run's); it equals
    ``rate_max_per_s`` (high end inf) when the bracket's top meets the targets; ``setup``: the resolved
    scenario's (pools, pipeline) from :func:`~hermes_fast.simulate.prepare`, if already built."""
    sc = resolved.scenario
    check_rate_matters(sc)
    setup, pipe = setup if setup is not None else prepare(resolved)
    runs = 0

    def run(rate: float) -> dict:
        nonlocal runs
        runs += 1
        at_rate = dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, rate_per_s=rate))
        rng = rng_for(seed, point, replicate)  # the same stream at every rate
        return simulate_replicate(at_rate, setup, pipe, n_requests, rng, fast_forward)[0]

    lo, hi = targets.rate_min_per_s, targets.rate_max_per_s
    s_lo = run(lo)
    if not meets_targets(s_lo, targets):
        return math.nan, lo, s_lo, runs
    s_hi = run(hi)
    if meets_targets(s_hi, targets):
        return hi, math.inf, s_hi, runs
    while hi / lo > 1.0 + targets.rel_tol:
        mid = math.sqrt(lo * hi)
        s = run(mid)
        if meets_targets(s, targets):
            lo, s_lo = mid, s
        else:
            hi = mid
    return lo, hi, s_lo, runs


def capacity_search(
    scenario: Scenario | Mapping | str | None,
    targets: CapacitySearch | Mapping,
    n_requests: int = 10_000,
    seed: int = 0,
    replicates: int = 1,
    point: int = 0,
    fast_forward: bool = True,
) -> xr.Dataset:
    """The largest request rate whose run meets ``targets``, per replicate, with the summary at that rate.

    Bisection in log-rate between ``rate_min_per_s`` and ``rate_max_per_s`` to ``rel_tol``; every rate tried
    for one replicate draws from the same seed stream (common random numbers).

    Parameters
    ----------
    scenario : Scenario, mapping, str, pathlib.Path or None
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or text; None: the embedded default.
    targets : CapacitySearch or mapping
        A :class:`~hermes_fast.config.sweep.CapacitySearch` or a mapping, e.g.
        ``{"ttft": {"quantile": 0.99, "max_s": 2.0}, "min_slo_attainment": 0.9, "rate_max_per_s": 100}``:
        latency bounds in seconds (``ttft``, ``tpot``, ``e2e``; a quantile or the mean), the least share of
        arrivals meeting ``serving.slo``, and the search bracket in requests/s.
    n_requests, seed, replicates, point : int, default 10000, 0, 1, 0
        As in :func:`hermes_fast.simulate`: arrivals per run, seed, repetitions, grid point of the seed stream.
    fast_forward : bool, default True
        As in :func:`hermes_fast.simulate` (identical results, much faster).

    Returns
    -------
    xarray.Dataset
        ``capacity_request_per_s`` (requests/s; NaN when even the bracket's low end fails) and the
        simulation summary of the run at that rate (of the low end's run when it fails), per replicate.

    Raises
    ------
    ConfigError
        For an invalid scenario or targets (no target at all, a quantile the summary does not report,
        ``rate_max_per_s <= rate_min_per_s``), naming the field.

    Examples
    --------
    >>> ds = hf.capacity_search(None, {"ttft": {"quantile": 0.9, "max_s": 0.5}, "rate_max_per_s": 200}, 300)
    >>> ds.capacity_request_per_s.dims
    ('replicate',)
    >>> bool(ds.capacity_request_per_s[0] > 1)  # requests/s
    True
    >>> bool(ds.ttft_s.sel(quantile=0.9, replicate=0) <= 0.5)  # the run at that rate meets the target
    True
    """
    resolved = resolve_scenario(scenario)
    sc = resolved.scenario
    check_warmup(sc.serving, n_requests)
    cap = as_capacity(targets)
    setup = prepare(resolved)
    found, summaries = [], []
    for rep in range(replicates):
        rate, _, summary, _ = search_rate(resolved, cap, n_requests, seed, point, rep, fast_forward, setup)
        found.append(rate)
        summaries.append(summary)
    ds = assemble(summaries, *setup)
    ds["capacity_request_per_s"] = data_array("capacity_request_per_s", np.array(found), ("replicate",))
    ds.attrs.update(
        {
            "title": f"hermes_fast capacity search: {sc.name}",
            "scenario": sc.name,
            "n_requests": n_requests,
            "seed": seed,
            "hermes_fast_version": __version__,
        }
    )
    return ds
