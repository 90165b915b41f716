"""Capacity search: the largest arrival rate whose simulated run meets latency and goodput targets.

A separate module from :mod:`hermes_fast.metrics` (which the simulator itself imports): the search runs
the simulator. Bisection is in log-rate between ``rate_min_per_s`` and ``rate_max_per_s``; every rate
tried for one (point, replicate) draws from the same seed stream, so arrivals differ only by the time
scale (common random numbers) and "meets the targets" is monotone in the rate up to simulation noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import xarray as xr

from ._version import provenance
from .config.base import ConfigError, from_mapping, to_mapping
from .config.scenario import Scenario
from .config.serving import check_warmup
from .config.sweep import CapacitySearch
from .metrics import QUANTILES
from .resolve import ResolvedScenario, resolve_scenario
from .simulate import assemble, prepare, simulate_replicate
from .validity import validity_warnings
from .variables import CAPACITY_BOUND_NAMES, data_array
from .workload import rng_for

__all__ = [
    "CapacitySearch",
    "RateSearch",
    "as_capacity",
    "binding_target",
    "bound_code",
    "capacity_search",
    "check_rate_matters",
    "describe_target",
    "meets_targets",
    "search_rate",
]


def as_capacity(targets: CapacitySearch | Mapping, path: str = "capacity") -> CapacitySearch:
    """A validated :class:`CapacitySearch` from itself or a mapping (ConfigError naming ``path``)."""
    if isinstance(targets, CapacitySearch):
        return targets
    return from_mapping(CapacitySearch, targets, path)


def _statistic(summary: Mapping, name: str, tgt) -> float:
    if tgt.quantile is None:
        return float(summary[f"{name}_mean_s"])
    return float(np.asarray(summary[f"{name}_s"])[QUANTILES.index(tgt.quantile)])


def meets_targets(summary: Mapping, targets: CapacitySearch) -> bool:
    """Whether one replicate's summary meets every target (a NaN statistic, e.g. nothing completed, fails)."""
    for name in ("ttft", "tpot", "e2e"):
        tgt = getattr(targets, name)
        if tgt is None:
            continue
        if not _statistic(summary, name, tgt) <= tgt.max_s:
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


def binding_target(summary: Mapping, targets: CapacitySearch) -> str | None:
    """The target a run's summary misses most, as ``value / bound`` (``bound / value`` for the SLO attainment;
    a NaN statistic misses infinitely): ``ttft``, ``tpot``, ``e2e`` or ``slo_attainment``; ``unstable`` when only
    the overload flag fails it; None when it meets them all."""
    worst, name = 1.0, None
    for key in ("ttft", "tpot", "e2e"):
        tgt = getattr(targets, key)
        if tgt is None:
            continue
        value = _statistic(summary, key, tgt)
        if not value <= tgt.max_s:
            ratio = value / tgt.max_s if math.isfinite(value) else math.inf
            if name is None or ratio > worst:
                worst, name = ratio, key
    least = targets.min_slo_attainment
    if least is not None and not summary["slo_attainment"] >= least:
        got = float(summary["slo_attainment"])
        ratio = least / got if got > 0 else math.inf
        if name is None or ratio > worst:
            worst, name = ratio, "slo_attainment"
    if name is None and not targets.allow_unstable and summary["unstable"]:
        name = "unstable"
    return name


def bound_code(name: str | None) -> int:
    """``capacity_bound``'s code of a binding target name (see :data:`~hermes_fast.variables.CAPACITY_BOUND_NAMES`)."""
    return 0 if name is None else CAPACITY_BOUND_NAMES.index(name) + 1


def describe_target(name: str, targets: CapacitySearch) -> str:
    """A target in words: ``TPOT p99 <= 50 ms``, ``SLO attainment >= 90%``, ``not overloaded``."""
    if name in ("ttft", "tpot", "e2e"):
        tgt = getattr(targets, name)
        stat = "mean" if tgt.quantile is None else f"p{tgt.quantile * 100:g}"
        return f"{name.upper()} {stat} <= {tgt.max_s * 1e3:g} ms"
    if name == "slo_attainment":
        return f"SLO attainment >= {targets.min_slo_attainment * 100:g}% (serving.slo)"
    if name == "unstable":
        return "not overloaded (unstable)"
    return f"none: the search bracket's high end, {targets.rate_max_per_s:g} req/s, meets every target"


class RateSearch(NamedTuple):
    """One (point, replicate)'s search: the capacity (NaN when even the bracket's low end fails), the bracket's
    failing high end (inf when its top meets the targets), the summary at the capacity (of the low end's run
    when it fails), the runs simulated, and the target that binds (:func:`binding_target` at the lowest failing
    rate; ``rate_max`` when none fails)."""

    capacity: float
    high: float
    summary: dict
    runs: int
    bound: str


def search_rate(
    resolved: ResolvedScenario,
    targets: CapacitySearch,
    n_requests: int,
    seed: int,
    point: int = 0,
    replicate: int = 0,
    fast_forward: bool = True,
    setup=None,
) -> RateSearch:
    """Bisect one (point, replicate): a :class:`RateSearch` (capacity, the bracket's failing high end, summary at
    capacity, runs, binding target).

    The capacity is NaN when even ``rate_min_per_s`` fails (the summary is then that run's); it equals
    ``rate_max_per_s`` (high end inf, bound ``rate_max``) when the bracket's top meets the targets; ``setup``:
    the resolved scenario's (pools, pipeline) from :func:`~hermes_fast.simulate.prepare`, if already built."""
    sc = resolved.scenario
    check_rate_matters(sc)
    setup, pipe = setup if setup is not None else prepare(resolved)
    runs = 0

    def run(rate: float) -> dict:
        nonlocal runs
        runs += 1
        at_rate = dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, rate_per_s=rate))
        rng = rng_for(seed, point, replicate)  # the same stream at every rate
        try:
            return simulate_replicate(at_rate, setup, pipe, n_requests, rng, fast_forward)[0]
        except ConfigError as e:  # (a rate too low for the run's length: the bracket's, not the scenario's)
            if e.path != "workload.rate_per_s":
                raise
            key = "rate_min_per_s" if rate == targets.rate_min_per_s else "rate_max_per_s"
            raise ConfigError(f"capacity.{key}", rate, e.expected) from None

    lo, hi = targets.rate_min_per_s, targets.rate_max_per_s
    s_lo = run(lo)
    if not meets_targets(s_lo, targets):
        return RateSearch(math.nan, lo, s_lo, runs, binding_target(s_lo, targets) or "unstable")
    s_hi = run(hi)
    if meets_targets(s_hi, targets):
        return RateSearch(hi, math.inf, s_hi, runs, "rate_max")
    while hi / lo > 1.0 + targets.rel_tol:
        mid = math.sqrt(lo * hi)
        s = run(mid)
        if meets_targets(s, targets):
            lo, s_lo = mid, s
        else:
            hi, s_hi = mid, s
    return RateSearch(lo, hi, s_lo, runs, binding_target(s_hi, targets) or "unstable")


def capacity_search(
    scenario: Scenario | Mapping | str | None,
    targets: CapacitySearch | Mapping,
    n_requests: int = 10_000,
    seed: int = 0,
    replicates: int = 1,
    point: int = 0,
    fast_forward: bool = True,
    calibration=None,
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
    calibration : str, Calibration, pathlib.Path, list or None, default None
        As in :func:`hermes_fast.simulate` (None: the shipped calibrations).

    Returns
    -------
    xarray.Dataset
        ``capacity_request_per_s`` (requests/s; NaN when even the bracket's low end fails), ``capacity_bound``
        (the binding target's code: ``flag_meanings`` names them, ``describe_target`` words them) and the
        simulation summary of the run at that rate (of the low end's run when it fails), per replicate; the
        targets as JSON in the ``capacity`` attr.

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
    >>> from hermes_fast.variables import CAPACITY_BOUND_NAMES
    >>> CAPACITY_BOUND_NAMES[int(ds.capacity_bound[0]) - 1]  # what stopped it: overload, before the TTFT bound
    'unstable'
    """
    resolved = resolve_scenario(scenario, "default" if calibration is None else calibration)
    sc = resolved.scenario
    check_warmup(sc.serving, n_requests)
    cap = as_capacity(targets)
    setup = prepare(resolved)
    found = [search_rate(resolved, cap, n_requests, seed, point, rep, fast_forward, setup) for rep in range(replicates)]
    ds = assemble([f.summary for f in found], *setup)
    ds["capacity_request_per_s"] = data_array(
        "capacity_request_per_s", np.array([f.capacity for f in found]), ("replicate",)
    )
    codes = np.array([bound_code(f.bound) for f in found], dtype=np.int8)
    ds["capacity_bound"] = data_array("capacity_bound", codes, ("replicate",))
    ds.attrs.update(
        {
            "title": f"hermes_fast capacity search: {sc.name}",
            "scenario": sc.name,
            "n_requests": n_requests,
            "seed": seed,
            "capacity": json.dumps(to_mapping(cap)),
            **provenance(),
        }
    )
    ds.attrs["warnings"] = validity_warnings(ds)
    return ds
