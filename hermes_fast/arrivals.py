"""When requests are sent: the arrival processes (Poisson, gamma, deterministic, sinusoid, MMPP), a trace's
times, and a closed loop's think times."""

from __future__ import annotations

import numpy as np

from .config.base import ConfigError
from .config.workload import Arrival, Trace

__all__ = ["draw_arrivals", "trace_times", "draw_gamma", "think_times"]


MAX_MMPP_SWITCHES = 10_000_000  # expected state switches an MMPP draw may take (plus 10 per arrival)


def draw_arrivals(arrival: Arrival, rate_per_s: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted arrival times (s) of a process with mean rate ``rate_per_s``, the first after one gap."""
    if n == 0:
        return np.zeros(0)
    kind = arrival.process
    if kind == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    if kind == "deterministic":
        return np.arange(1, n + 1) / rate_per_s
    if kind == "gamma":
        shape = 1.0 / arrival.cv**2
        return np.cumsum(rng.gamma(shape, 1.0 / (rate_per_s * shape), n))
    if kind == "sinusoid":
        return _sinusoid(arrival, rate_per_s, n, rng)
    if kind == "mmpp":
        return _mmpp(arrival, rate_per_s, n, rng)
    raise ValueError(f"draw_arrivals: {kind!r} is replayed by draw_workload, not drawn")


def _sinusoid(a: Arrival, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Thinning of a Poisson process at the peak rate."""
    peak = rate * (1.0 + a.amplitude)
    out: list[np.ndarray] = []
    t0, have = 0.0, 0
    while have < n:
        batch = max(1024, int(1.2 * (n - have) * (1.0 + a.amplitude)))
        t = t0 + np.cumsum(rng.exponential(1.0 / peak, batch))
        keep = rng.random(batch) * peak < rate * (1.0 + a.amplitude * np.sin(2 * np.pi * t / a.period_s))
        out.append(t[keep])
        have += int(keep.sum())
        t0 = float(t[-1])
    return np.concatenate(out)[:n]


def _mmpp(a: Arrival, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Two-state Markov-modulated Poisson process starting in the calm state."""
    share = a.burst_mean_s / (a.burst_mean_s + a.calm_mean_s)
    high = rate * a.burst_factor
    low = (rate - high * share) / (1.0 - share)
    switches = 2.0 * n / (rate * (a.burst_mean_s + a.calm_mean_s))  # a cycle holds rate x its length on average
    if switches > MAX_MMPP_SWITCHES + 10 * n:  # (one Python step per switch: a run that would not end)
        raise ConfigError(
            "workload.arrival.calm_mean_s",
            a.calm_mean_s,
            f"sojourns long enough to hold arrivals: at {rate:g} requests/s with burst_mean_s {a.burst_mean_s:g}, "
            f"drawing {n} arrivals takes about {switches:.3g} state switches "
            f"(at most {MAX_MMPP_SWITCHES + 10 * n:.3g}); a process that switches this often is Poisson at "
            "rate_per_s (process: poisson)",
        )
    out: list[np.ndarray] = []
    t, have, burst = 0.0, 0, False
    while have < n:
        stay = rng.exponential(a.burst_mean_s if burst else a.calm_mean_s)
        k = rng.poisson((high if burst else low) * stay)
        if k > n - have + _MMPP_SPARE:  # a sojourn holding far more arrivals than the run needs (calm_mean_s 1e12)
            out.append(t + _first_order_statistics(k, n - have, rng) * stay)
            have = n
        elif k:
            out.append(t + np.sort(rng.random(k)) * stay)
            have += k
        t += stay
        burst = not burst
    return np.concatenate(out)[:n]


_MMPP_SPARE = 10_000_000  # arrivals of one sojourn drawn beyond the run's needs before only those are drawn


def _first_order_statistics(k: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """The m smallest of k uniforms on [0, 1), sorted, without drawing the k: exponential spacings over their sum
    (the k + 1 - m spacings after the m-th summed as one gamma draw)."""
    gaps = rng.exponential(1.0, m)
    rest = rng.gamma(k + 1 - m)
    cum = np.cumsum(gaps)
    return cum / (cum[-1] + rest)


def trace_times(tr: Trace, rows: list[dict], field_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(times from 0 in s, sorted; the row order that sorts them)."""
    col = tr.time_column
    if col not in rows[0]:
        raise ConfigError(f"{field_path}.time_column", col, f"a column of {tr.path}: one of {', '.join(rows[0])}")
    text = [(r[col] or "").strip() for r in rows]
    try:
        t = np.array([float(x) for x in text]) * tr.time_scale
    except ValueError:
        try:
            stamps = np.array(text, dtype="datetime64[ns]")
        except ValueError as e:
            raise ConfigError(f"{field_path}.time_column", col, f"numbers or ISO date-times ({e})") from None
        nat = np.isnat(stamps)  # (empty or 'NaT' cells)
        t = np.full(stamps.size, np.nan) if nat.all() else (stamps - stamps[~nat].min()).astype(np.float64) * 1e-9
        t[nat] = np.nan
    where = f"{field_path}.time_column ({tr.path} row {{}}, column {col})"  # (row 1 is the header)
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        raise ConfigError(where.format(bad[0] + 2), text[bad[0]], "a finite time")
    bad = np.flatnonzero(t < 0)
    if bad.size:
        raise ConfigError(where.format(bad[0] + 2), text[bad[0]], "a time >= 0")
    bad = np.flatnonzero(np.diff(t) < 0)
    if bad.size:
        k = bad[0] + 1
        raise ConfigError(where.format(k + 2), text[k], f"times in ascending order (row {k + 1} has {text[k - 1]})")
    order = np.argsort(t, kind="stable")
    return t[order] - t[order[0]], order


def draw_gamma(mean: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n think times (s): fixed, or gamma with the given mean and cv (1: exponential)."""
    if mean == 0.0 or cv == 0.0:
        return np.full(n, mean)
    shape = 1.0 / cv**2
    return rng.gamma(shape, mean / shape, n)


def think_times(arrival: Arrival, n: int, rng: np.random.Generator) -> np.ndarray:
    """A closed loop's think time after each request (s): fixed, or gamma with the given cv (1: exponential)."""
    mean, cv = arrival.think_time_s, arrival.think_time_cv
    if mean == 0.0 or cv == 0.0:
        return np.full(n, mean)
    shape = 1.0 / cv**2
    return rng.gamma(shape, mean / shape, n)
