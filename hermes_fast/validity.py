"""Whether a run's results can be trusted, and what to say when not: the overload test (the number in system over
the second half of the arrivals, a one-sided t test with a 1% false-alarm rate), the validity flags (overloaded,
more than :data:`LOST_TOLERANCE` of the arrivals rejected, dropped or unfinished, nothing completed) and the
warnings that say so in words for a run, a capacity search or a sweep."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import stats

from .kernels.serving.outcome import Reason, Status
from .workload import MAX_SPAN_S

__all__ = [
    "REASONS",
    "REASON_CODES",
    "INVALID_REASONS",
    "LOST_TOLERANCE",
    "OVERLOAD_ALPHA",
    "OVERLOAD_BATCHES",
    "in_system",
    "overload_test",
    "unstable_flags",
    "validity_flags",
    "validity_warnings",
]

REASON_CODES = {  # the rejected_by_reason dim
    "context_limit": Reason.CONTEXT,
    "kv_capacity": Reason.KV,
    "token_budget": Reason.TOKENS,
    "queue_full": Reason.QUEUE_FULL,
}


REASONS = tuple(REASON_CODES)


OVERLOAD_ALPHA = 0.01  # false-alarm rate of the overload test (one-sided)


OVERLOAD_BATCHES = 20  # equal-time batches the second half of the arrival window is cut into


OVERLOAD_MIN_ARRIVALS = 40  # admitted arrivals that window needs for the test to run


_T_CRITICAL = float(stats.t.ppf(1.0 - OVERLOAD_ALPHA, OVERLOAD_BATCHES - 1))  # 2.539 for 19 df


_T_WARN = float(stats.t.ppf(0.95, OVERLOAD_BATCHES - 1))  # 1.729: "possibly overloaded", a warning only


def in_system(arrival_s: np.ndarray, done_s: np.ndarray, admitted: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Requests in the system at each time ``t``: admitted arrivals up to ``t`` less completions up to ``t``
    (``arrival_s`` sorted; ``done_s`` NaN for a request that did not complete)."""
    arrived = np.searchsorted(arrival_s, t, side="right") - np.searchsorted(
        arrival_s[~admitted], t, side="right"
    )  # (rejected and dropped requests never enter)
    finished = np.sort(done_s[np.isfinite(done_s)])
    return arrived - np.searchsorted(finished, t, side="right")


def overload_test(arrival_s: np.ndarray, done_s: np.ndarray, admitted: np.ndarray) -> tuple[float, float]:
    """(t statistic, growth of the number in system in requests/s) over the second half of the arrivals.

    The window from the middle arrival to the last is cut into ``OVERLOAD_BATCHES`` (k) equal spans; the
    increments D_j = N(b_j+1) - N(b_j) of the number in system N(t) over them are tested for a positive mean
    with Student's t, ``t = mean(D) / (sd(D) / sqrt(k))`` on k - 1 degrees of freedom, and the system is called
    overloaded when ``t`` exceeds the (1 - ``OVERLOAD_ALPHA``) quantile (2.54).

    Why this has false-alarm rate at most ``OVERLOAD_ALPHA`` for a stable system in steady state: the D_j
    are increments of a stationary process, so their sum telescopes to N(end) - N(start) and E[D_j] = 0. For a
    reversible queue (birth-death: M/M/1, M/M/c) the autocovariance C(s) of N is a mixture of decaying
    exponentials; then Var(sum D) = 2 (C(0) - C(kT)) <= k Var(D_j) = 2 k (C(0) - C(T)) (for each
    exponential 1 - e^(-kx) <= k (1 - e^(-x))), i.e. the increments are negatively correlated, and the sample
    variance over-estimates Var(D_j) (E[s^2] = Var(D_j) - 2/(k(k-1)) sum_i<j Cov(D_i, D_j)). The statistic's
    variance is at most 1, and it is exactly a t statistic when the increments are independent, so the t
    quantile is conservative (the measured rate at 0.9 x capacity is below 1%, tests/test_overload.py).
    Under overload (arrival rate lambda above the service rate mu) N grows by about (lambda - mu) T per span
    of length T with variance about (lambda c_a^2 + mu c_s^2) T (arrival and service counts, c: their
    coefficients of variation), independently from span to span, so with A arrivals in the window
    ``t ~ (1 - 1/rho) sqrt(A / (c_a^2 + c_s^2 / rho))``: M/M/1 at rho = 1.05 reaches 4.2 (95% detection)
    from A ~ 15,000 (30,000 requests), at 1.1 from A ~ 4,000 (8,000 requests), at 2 from A ~ 100.

    The first half of the arrivals is left out as a warm-up (the queue fills from empty); a system still
    relaxing after it (load close to 1) grows and is reported as overloaded for that run length.
    (NaN, NaN) when the window has fewer than ``OVERLOAD_MIN_ARRIVALS`` admitted arrivals.
    """
    n = arrival_s.size
    lo, hi = arrival_s[n // 2] if n else 0.0, arrival_s[-1] if n else 0.0
    if np.count_nonzero(admitted[n // 2 :]) < OVERLOAD_MIN_ARRIVALS or not hi > lo:
        return math.nan, math.nan
    edges = lo + (hi - lo) * np.arange(OVERLOAD_BATCHES + 1) / OVERLOAD_BATCHES
    edges[-1] = hi
    d = np.diff(in_system(arrival_s, done_s, admitted, edges)).astype(np.float64)
    growth = float(d.sum()) / (hi - lo)
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0.0:
        return (math.inf if mean > 0 else 0.0), growth
    return mean / (sd / math.sqrt(OVERLOAD_BATCHES)), growth


def unstable_flags(arrival: np.ndarray, done: np.ndarray, status: np.ndarray, end_s: float) -> dict:
    """The overload test of a run (:func:`overload_test`), plus the other ways it can fall behind: arrivals
    dropped by a full queue, or a horizon that cut the arrivals short."""
    admitted = (status != Status.REJECTED) & (status != Status.DROPPED)
    t_last = arrival[-1] if arrival.size else 0.0
    backlog = int(np.count_nonzero(admitted & ~(done <= t_last)))
    cut = end_s < t_last  # the horizon cut the arrivals short (no test: the later ones never arrived)
    t_stat, growth = overload_test(arrival, done, admitted) if not cut else (math.nan, math.nan)
    unstable = bool(t_stat > _T_CRITICAL or cut or np.any(status == Status.DROPPED))
    return {
        "unstable": unstable,
        "backlog_requests": backlog,
        "overload_statistic": t_stat,
        "backlog_growth_request_per_s": growth,
    }


# why a result is invalid: bit k of invalid_reason is INVALID_REASONS[k]
INVALID_REASONS = ("overloaded", "rejected", "dropped", "unfinished", "nothing_completed")


LOST_TOLERANCE = 0.001  # invalid when more than this share of the arrivals was rejected, dropped or unfinished


def validity_flags(out: dict) -> dict:
    """The shares of arrivals lost, and whether (and why not) the replicate's statistics can be read at face value:
    ``invalid_reason`` has bit k set for ``INVALID_REASONS[k]``."""
    arrived = max(out["arrived_requests"], 1)
    shares = {k: out[f"{k}_requests"] / arrived for k in ("rejected", "dropped", "unfinished")}
    code = 1 if out["unstable"] else 0
    for bit, key in enumerate(("rejected", "dropped", "unfinished"), start=1):
        if shares[key] > LOST_TOLERANCE:
            code |= 1 << bit
    if out["completed_requests"] == 0:
        code |= 1 << 4
    res: dict = {f"{k}_fraction": v for k, v in shares.items()}
    res["invalid_reason"] = np.int8(code)
    res["valid"] = code == 0
    return res


_REASON_TEXT = {  # why a request was rejected or dropped, as the warnings say it
    "context_limit": "prompt + output over the model's context",
    "kv_capacity": "more KV than a replica holds",
    "token_budget": "a prompt over max_batched_tokens with a policy that prefills whole prompts",
    "queue_full": "a full queue (max_queue_requests)",
}


def _percent(x: float) -> str:
    return f"{x:.2g}%" if x < 1 else f"{x:.1f}%"


def _point_issues(p: xr.Dataset) -> tuple[list[str], list[str]]:
    """(long, short) texts of what is wrong with one point (its replicates along ``replicate``)."""
    long, short = [], []
    total = lambda name: float(p[name].sum())  # noqa: E731
    arrived = max(total("arrived_requests"), 1.0)
    reps = p.sizes.get("replicate", 1)
    unstable = int(p.unstable.sum())
    if unstable:
        of = f" in {unstable} of {reps} replicates" if reps > 1 else ""
        t = float(p.overload_statistic.max()) if "overload_statistic" in p else math.nan
        growth = float(p.backlog_growth_request_per_s.mean()) if "backlog_growth_request_per_s" in p else math.nan
        if t > _T_CRITICAL:
            why = (
                f"the number in system grew by {growth:.3g} requests/s over the second half of the arrivals "
                f"(overload test t = {t:.3g} > {_T_CRITICAL:.3g})"
            )
        elif total("dropped_requests"):
            why = "a full queue dropped arrivals"
        else:
            why = "the horizon stopped the run before the last arrival"
        backlog = int(p.backlog_requests.max())
        long.append(
            f"overloaded{of}: {why}; {backlog:,} requests in the system at the last arrival: the latencies grow "
            "with the run's length (a lower rate, more replicas, or a capacity search)"
        )
        short.append("overloaded")
    elif "overload_statistic" in p and float(p.overload_statistic.max()) > _T_WARN:
        t = float(p.overload_statistic.max())
        growth = float(p.backlog_growth_request_per_s.mean())
        long.append(
            f"possibly overloaded: the number in system grew by {growth:.3g} requests/s over the second half of the "
            f"arrivals (overload test t = {t:.3g}, above the 5% level {_T_WARN:.3g} but not the 1% level "
            f"{_T_CRITICAL:.3g} that marks a run overloaded); a longer run would tell"
        )
        short.append(f"possibly overloaded (t = {t:.3g})")
    counts = p.rejected_by_reason.sum("replicate") if "replicate" in p.rejected_by_reason.dims else p.rejected_by_reason
    for key, what in (("rejected", "rejected: they could never run"), ("dropped", "dropped by a full queue")):
        n = total(f"{key}_requests")
        if not n:
            continue
        share = 100 * n / arrived
        names = [r for r in REASONS if (r == "queue_full") == (key == "dropped") and float(counts.sel(reason=r)) > 0]
        why = "; ".join(f"{r}: {_REASON_TEXT[r]}" for r in names)
        ok = "" if n / arrived > LOST_TOLERANCE else f" (within the {100 * LOST_TOLERANCE:g}% tolerance: still valid)"
        long.append(
            f"{_percent(share)} of the requests {what} ({why}); the latencies and throughputs cover only the others{ok}"
        )
        short.append(f"{_percent(share)} {key} ({', '.join(names)})")
    n = total("unfinished_requests")
    if n:
        share = 100 * n / arrived
        long.append(f"{_percent(share)} of the requests unfinished when the horizon (serving.horizon_s) stopped it")
        short.append(f"{_percent(share)} unfinished")
    if total("completed_requests") == 0:
        long.append("no request completed: every latency and throughput is NaN")
        short.append("nothing completed")
    span = float(p.duration_s.max()) if "duration_s" in p else math.nan
    if span > MAX_SPAN_S:  # (the arrivals' own span is refused before the run: this is the work's)
        long.append(
            f"the run spans {span:.3g} s of simulated time, where float64 times resolve latencies only to "
            f"{span * 2.0**-52:.2g} s (a step, tool or think time this long?)"
        )
        short.append(f"{span:.3g} s of simulated time")
    for name, what in (("mfu", "FLOP/s"), ("mbu", "memory bandwidth")):
        if name not in p or "pool" not in p[name].dims:
            continue
        top = p[name].max([d for d in p[name].dims if d != "pool"]) if p[name].ndim > 1 else p[name]
        for pool in p["pool"].values[np.asarray(top > _UTILIZATION_MAX)]:
            value = float(top.sel(pool=pool))
            long.append(
                f"pool {pool}: {name.upper()} {value:.3g}, above 1: more {what} than the device's peak (a "
                "fixed_step_time_s shorter than the device allows; for the MBU of a mixture-of-experts model, every "
                "expert's weights counted in each iteration: an upper bound)"
            )
            short.append(f"{name} {value:.3g} > 1 ({pool})")
    if "capacity_request_per_s" in p and bool(p.capacity_request_per_s.isnull().any()):
        long.append("no rate in the capacity search's bracket meets the targets (capacity NaN): rate_min_per_s fails")
        short.append("capacity NaN")
    return long, short


_UTILIZATION_MAX = 1.0 + 1e-9  # MFU or MBU above it is more than the hardware can do: a warning says why


def validity_warnings(ds: xr.Dataset, limit: int = 10) -> list[str]:
    """Human-readable warnings about a simulation, capacity-search or sweep Dataset's results: overloaded runs,
    requests rejected (with their reason), dropped or unfinished, runs where nothing completed, capacity
    searches that found no rate; for a sweep, how many points are invalid, then up to ``limit`` points.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset of :func:`hermes_fast.simulate`, :func:`hermes_fast.capacity_search` or :func:`hermes_fast.sweep`
        (one without ``valid``, e.g. an estimate, has no warnings).
    limit : int, default 10
        Points of a sweep listed one per line at most (the count of the others follows).

    Returns
    -------
    list of str
        One line per warning (empty when there is nothing to say); what Datasets carry as their ``warnings``
        attr and the CLI prints as ``WARNING: ...`` lines.

    Examples
    --------
    >>> over = {"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}], "workload": {"rate_per_s": 1000}}
    >>> lines = hf.validity.validity_warnings(hf.simulate(over, n_requests=500, seed=1))
    >>> lines[0][:40]
    'overloaded: the number in system grew by'
    """
    if "valid" not in ds or "arrived_requests" not in ds:
        return []
    grid = [d for d in ds.valid.dims if d != "replicate"]
    if not grid:
        return _point_issues(ds)[0]

    def over_reps(name: str, how: str = "sum") -> np.ndarray:
        da = ds[name]
        if "replicate" in da.dims:
            da = getattr(da, how)("replicate")
        return da.transpose(*grid).values.ravel()

    shape = [ds.sizes[d] for d in grid]
    done = ds["computed"].transpose(*grid).values.ravel() if "computed" in ds else np.ones(math.prod(shape), bool)
    valid = over_reps("valid", "all") | ~done
    issue = (over_reps("unstable", "any") | (over_reps("completed_requests") == 0)) & done
    if "overload_statistic" in ds:
        issue |= (over_reps("overload_statistic", "max") > _T_WARN) & done
    for name in ("rejected_requests", "dropped_requests", "unfinished_requests"):
        issue |= (over_reps(name) > 0) & done
    if "capacity_request_per_s" in ds:
        issue |= np.isnan(over_reps("capacity_request_per_s")) & done
    if "duration_s" in ds:
        issue |= (over_reps("duration_s", "max") > MAX_SPAN_S) & done
    for name in ("mfu", "mbu"):
        if name in ds:
            top = ds[name].max([d for d in ds[name].dims if d not in grid])
            issue |= (top.transpose(*grid).values.ravel() > _UTILIZATION_MAX) & done
    lines = []
    if not valid.all():
        code = np.bitwise_or.reduce(ds.invalid_reason.transpose(*grid, ...).values.reshape(valid.size, -1), axis=1)
        code = code[~valid]
        why = ", ".join(f"{r} {int(np.count_nonzero(code & (1 << k)))}" for k, r in enumerate(INVALID_REASONS)
                        if np.any(code & (1 << k)))  # fmt: skip
        lines.append(
            f"{int((~valid).sum())} of {int(done.sum())} points invalid ({why}): hf.pareto leaves them out "
            "(include_invalid=True keeps them) and the plots mark them"
        )
    flagged = np.flatnonzero(issue)
    for k in flagged[:limit]:
        at = dict(zip(grid, np.unravel_index(k, shape), strict=True))
        point = ds.isel(at)
        where = ", ".join(f"{d}={point[d].values.item()}" for d in grid)
        lines.append(f"{'valid' if valid[k] else 'invalid'} at {where}: {'; '.join(_point_issues(point)[1])}")
    if flagged.size > limit:
        lines.append(f"... and {flagged.size - limit} more points with warnings (variables valid, invalid_reason)")
    return lines
