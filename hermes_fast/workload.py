"""Pre-drawn, vectorised workloads: arrival times, request classes and token lengths.

Everything random about a run is drawn here, up front, from one ``numpy.random.Generator`` per
(grid point, replicate) (DESIGN 7.5), so the event loop itself is deterministic and a run is
reproducible from its seed whatever the chunking or worker count.

Continuous length laws are truncated to [min, max] and rounded to the nearest integer; the moments
reported by :func:`length_moments` are those of the integers actually drawn.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import stats

from .config.base import ConfigError
from .config.files import check_path_length
from .config.lengths import MAX_ZIPF_SUPPORT
from .config.workload import Arrival, Length, RequestClass, Trace
from .sessions import session_layout, zipf_choice

__all__ = [
    "Draws",
    "draw_workload",
    "length_moments",
    "length_min",
    "draw_lengths",
    "draw_arrivals",
    "rng_for",
    "classes_of",
]

_EXACT_SUPPORT = 2_000_000  # integer support up to which moments are summed exactly over the pmf
_MAX_TOKENS = 1_000_000_000  # the longest length drawn or read (Length.max's bound)
MAX_SPAN_S = 2.0**32  # simulated seconds the arrivals may span: float64 times there resolve 2^-20 s (about 1 us)
MAX_MMPP_SWITCHES = 10_000_000  # expected state switches an MMPP draw may take (plus 10 per arrival)


def rng_for(seed: int, point: int = 0, replicate: int = 0) -> np.random.Generator:
    """The generator of one (grid point, replicate): independent streams by global index, never by chunk.

    ``PCG64(SeedSequence(seed, spawn_key=(point, replicate)))``: what :func:`hermes_fast.simulate` and
    :func:`hermes_fast.sweep` draw a replicate's workload (and stage values) from, so a run is reproducible
    from its seed whatever the chunking, worker count or order of completion.

    Parameters
    ----------
    seed : int
        The run's seed (>= 0).
    point : int, default 0
        Flat C-order index of the grid point.
    replicate : int, default 0
        Replicate index.

    Returns
    -------
    numpy.random.Generator

    Examples
    --------
    >>> a = hf.rng_for(1, point=2).random(3)
    >>> b = hf.rng_for(1, point=2).random(3)
    >>> c = hf.rng_for(1, point=2, replicate=1).random(3)
    >>> bool((a == b).all()), bool((a == c).any())
    (True, False)
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(point, replicate))))


def _as_length(v: int | Length) -> Length:
    return Length(dist="fixed", value=v) if isinstance(v, int) else v


def _continuous(lg: Length):
    """The frozen scipy law of a normal / lognormal / exponential length (before truncation and rounding)."""
    if lg.dist == "exponential":
        return stats.expon(scale=lg.mean)
    std = lg.std if lg.std is not None else lg.cv * lg.mean
    if lg.dist == "normal":
        return stats.norm(loc=lg.mean, scale=std)
    sigma2 = math.log1p((std / lg.mean) ** 2)
    return stats.lognorm(s=math.sqrt(sigma2), scale=math.exp(math.log(lg.mean) - sigma2 / 2))


def _cdf_bounds(law, lg: Length, field_path: str) -> tuple[float, float]:
    """The law's cdf at min - 0.5 and max + 0.5; ConfigError unless finite with mass between them."""
    lo = float(law.cdf(lg.min - 0.5))
    hi = 1.0 if lg.max is None else float(law.cdf(lg.max + 0.5))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(field_path, lg, "a length law with a finite distribution function (check mean, std or cv)")
    if hi - lo < 1e-12:
        raise ConfigError(f"{field_path}.mean", lg.mean, "a law with probability mass inside [min, max]")
    return lo, hi


@lru_cache(maxsize=256)
def _empirical_values(path: str, column: str, field_path: str) -> np.ndarray:
    rows = _read_csv(path, field_path)
    return _int_column(rows, column, path, field_path)


def _read_csv(path: str, field_path: str) -> list[dict]:
    """The rows of a CSV file, or of JSON lines (``.jsonl``: scalars as text, lists kept) by column name."""
    check_path_length(path, field_path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(field_path, path, "an existing CSV file")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            if p.suffix == ".jsonl":
                rows = [
                    {k: v if isinstance(v, list) else str(v) for k, v in json.loads(line).items()}
                    for line in f
                    if line.strip()
                ]
            else:
                rows = list(csv.DictReader(f))
    except (ValueError, AttributeError) as e:
        raise ConfigError(field_path, path, f"JSON lines, one object per request ({e})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(field_path, path, f"a readable UTF-8 CSV file ({e})") from None
    if not rows:
        raise ConfigError(field_path, path, "a CSV file with a header and at least one row")
    return rows


def _int_column(rows: list[dict], column: str, path: str, field_path: str) -> np.ndarray:
    if column not in rows[0]:
        raise ConfigError(field_path, column, f"a column of {path}: one of {', '.join(rows[0])}")
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        text = (row[column] or "").strip()
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not (math.isfinite(v) and 1 <= v <= _MAX_TOKENS and v.is_integer()):
            raise ConfigError(
                f"{field_path} ({path} row {i + 2}, column {column})", text,
                f"a positive integer token count <= {_MAX_TOKENS:g}",
            )  # fmt: skip
        out[i] = int(v)
    return out


def _support_pmf(lg: Length, field_path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, probabilities) of the integers drawn, or None when the support is too large to list."""
    if lg.dist == "fixed":
        return np.array([lg.value]), np.array([1.0])
    if lg.dist == "empirical":
        v, c = np.unique(_empirical_values(lg.path, lg.column, field_path), return_counts=True)
        return v, c / c.sum()
    if lg.dist == "uniform":
        if lg.max - lg.min + 1 > _EXACT_SUPPORT:
            return None
        k = np.arange(lg.min, lg.max + 1)
        return k, np.full(k.size, 1.0 / k.size)
    if lg.dist == "zipf":
        if lg.max - lg.min + 1 > MAX_ZIPF_SUPPORT:
            raise ConfigError(f"{field_path}.max", lg.max, f"a Zipf support (max - min + 1) <= {MAX_ZIPF_SUPPORT:g}")
        k = np.arange(lg.min, lg.max + 1)
        w = k.astype(float) ** -lg.alpha
        return k, w / w.sum()
    law = _continuous(lg)
    lo, hi = _cdf_bounds(law, lg, field_path)
    top = lg.max if lg.max is not None else int(math.ceil(law.isf(1e-13))) + 1
    if top - lg.min + 1 > _EXACT_SUPPORT:
        return None
    k = np.arange(lg.min, top + 1)
    edges = law.cdf(np.append(k - 0.5, k[-1] + 0.5))
    pmf = np.diff(edges)
    return k, pmf / pmf.sum()


@lru_cache(maxsize=2)
def _zipf_cdf(low: int, high: int, alpha: float) -> np.ndarray:
    """Cumulative probabilities of a Zipf law on low..high (as _support_pmf's pmf sums them), computed once per law:
    a support of 5e7 integers takes seconds, and a sweep draws it for every point and replicate."""
    w = np.arange(low, high + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(w / w.sum())
    cdf.flags.writeable = False
    return cdf


def length_moments(length: int | Length, field_path: str = "length") -> tuple[float, float]:
    """(mean, variance) in tokens of the integers :func:`draw_lengths` returns.

    Exact (summed over the pmf) unless the support exceeds 2e6 integers; then those of the truncated
    continuous law plus 1/12 for the rounding (without a ``max``, draws past 1e9 tokens are 1e9, in the
    moments too).

    Parameters
    ----------
    length : int or Length
        A fixed length in tokens, or a :class:`~hermes_fast.config.Length` distribution (``fixed``,
        ``uniform``, ``normal``, ``lognormal``, ``exponential``, ``zipf``, ``empirical``; truncated to
        [min, max] and rounded to integers).
    field_path : str, default "length"
        Dotted path of the length in the scenario, for error messages.

    Returns
    -------
    tuple of (float, float)
        Mean (tokens) and variance (tokens squared).

    Raises
    ------
    ConfigError
        For a Zipf support over 5e7 integers, a law with no probability mass inside [min, max], or an
        empirical CSV file or column that is missing or holds something other than positive integers.

    Examples
    --------
    >>> from hermes_fast.config import Length
    >>> hf.length_moments(Length(dist="uniform", min=1, max=3))
    (2.0, 0.6666666666666666)
    >>> hf.length_moments(200)  # a fixed length
    (200.0, 0.0)
    >>> mean, var = hf.length_moments(Length(dist="lognormal", mean=500, cv=1.0, max=4096))
    >>> 400 < mean < 500  # truncation at 4096 tokens lowers the mean
    True
    """
    lg = _as_length(length)
    sp = _support_pmf(lg, field_path)
    if sp is not None:
        k, pmf = sp
        mean = float(np.dot(k, pmf))
        return mean, float(np.dot((k - mean) ** 2, pmf))
    if lg.dist == "uniform":
        n = lg.max - lg.min + 1
        return (lg.min + lg.max) / 2, (n * n - 1) / 12
    law = _continuous(lg)
    lo = lg.min - 0.5
    if lg.max is None and float(law.cdf(_MAX_TOKENS + 0.5)) < 1.0:  # draws past 1e9 tokens are clipped there
        top = float(_MAX_TOKENS)
        mass = float(law.sf(lo))
        tail = float(law.sf(top + 0.5)) / mass
        m1 = law.expect(lambda x: x, lb=lo, ub=top + 0.5) / mass + top * tail
        m2 = law.expect(lambda x: x * x, lb=lo, ub=top + 0.5) / mass + top * top * tail
        return float(m1), float(m2 - m1 * m1 + 1 / 12)
    hi = np.inf if lg.max is None else lg.max + 0.5
    m1 = law.expect(lambda x: x, lb=lo, ub=hi, conditional=True)
    m2 = law.expect(lambda x: x * x, lb=lo, ub=hi, conditional=True)
    return float(m1), float(m2 - m1 * m1 + 1 / 12)


def length_min(length: int | Length, field_path: str = "length") -> int:
    """The shortest length :func:`draw_lengths` can return (tokens): the fixed value, the smallest value of an
    empirical column, else the law's ``min``; ConfigError for a law that cannot be drawn."""
    lg = _as_length(length)
    if lg.dist == "fixed":
        return lg.value
    if lg.dist == "empirical":
        return int(_empirical_values(lg.path, lg.column, field_path).min())
    if lg.dist in ("normal", "lognormal", "exponential"):
        _cdf_bounds(_continuous(lg), lg, field_path)
    return lg.min


def draw_lengths(length: int | Length, n: int, rng: np.random.Generator, field_path: str = "length") -> np.ndarray:
    """``n`` integer token counts (int64) from ``length``."""
    lg = _as_length(length)
    if lg.dist == "fixed":
        return np.full(n, lg.value, dtype=np.int64)
    if lg.dist == "uniform":
        return rng.integers(lg.min, lg.max + 1, size=n, dtype=np.int64)
    if lg.dist == "empirical":
        values = _empirical_values(lg.path, lg.column, field_path)
        return values[rng.integers(0, values.size, size=n)]
    if lg.dist == "zipf":
        if lg.max - lg.min + 1 > MAX_ZIPF_SUPPORT:
            raise ConfigError(f"{field_path}.max", lg.max, f"a Zipf support (max - min + 1) <= {MAX_ZIPF_SUPPORT:g}")
        cdf = _zipf_cdf(lg.min, lg.max, lg.alpha)
        idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return lg.min + np.minimum(idx, cdf.size - 1).astype(np.int64)
    law = _continuous(lg)
    lo, hi = _cdf_bounds(law, lg, field_path)
    x = law.ppf(lo + (hi - lo) * rng.random(n))
    if np.isnan(x).any():  # (never a NaN cast to -9.2e18 tokens: the loop would not end)
        raise ConfigError(field_path, lg, "a length law whose draws are numbers (check mean, std or cv)")
    top = lg.max if lg.max is not None else _MAX_TOKENS
    return np.clip(np.rint(x), lg.min, top).astype(np.int64)


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


def _trace_times(tr: Trace, rows: list[dict], field_path: str) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass(frozen=True)
class Draws:
    """One replicate's pre-drawn requests, sorted by arrival (struct of arrays)."""

    arrival_s: np.ndarray  # float64[n]; a closed loop: 0 for its clients' first requests, inf for the rest
    request_class: np.ndarray  # int64[n]
    prompt_tokens: np.ndarray  # int64[n]
    output_tokens: np.ndarray  # int64[n]
    route_u: np.ndarray  # float64[2, n]: uniforms for random replica choices (entry pool, next pool)
    think_s: np.ndarray | None = None  # float64[n]: a closed loop's think time after each request completes
    concurrency: int = 0  # most requests in flight (0: no cap); a closed loop's clients
    closed: bool = False  # the clients send their next request when the previous completes (and they thought)
    # prefixes, sessions and trace block hashes (None: none; :mod:`hermes_fast.sessions` makes the block chains)
    stream: np.ndarray | None = None  # int64[n]: the token stream (session) each request belongs to
    prefix_key: np.ndarray | None = None  # int64[n]: its shared prefix (-1: none)
    prefix_tokens: np.ndarray | None = None  # int64[n]: tokens of that prefix at the start of its prompt
    turn: np.ndarray | None = None  # int64[n]: its turn in its session (0: the first)
    next_turn: np.ndarray | None = None  # int64[n]: the request of its session's next turn (-1: none)
    prev_turn: np.ndarray | None = None  # int64[n]: ... of the previous turn (-1: none)
    hash_ids: tuple[np.ndarray, np.ndarray] | None = None  # a trace's prompt block hashes: (offsets[n + 1], ids)
    hash_block_tokens: int = 512  # prompt tokens per hash id

    @property
    def cached(self) -> bool:
        """The requests share prompt blocks (prefixes, sessions or trace hashes): the prefix cache has work."""
        return self.stream is not None

    @property
    def sessions(self) -> bool:
        """Some requests are later turns of sessions (sent when the previous turn's answer is read)."""
        return self.next_turn is not None and bool((self.next_turn >= 0).any())


def classes_of(workload) -> tuple[RequestClass, ...]:
    """The workload's request classes (one from the fixed prompt/output lengths when none are given)."""
    if workload.classes:
        return workload.classes
    return (RequestClass(prompt_tokens=workload.prompt_tokens, output_tokens=workload.output_tokens),)


def draw_workload(workload, n: int, rng: np.random.Generator) -> Draws:
    """Draw ``n`` requests of ``workload`` (arrivals, classes, lengths, routing uniforms) from ``rng``.

    What :func:`hermes_fast.simulate` runs through the serving loop, drawn up front.

    Parameters
    ----------
    workload : Workload
        A scenario's ``workload`` (:class:`~hermes_fast.config.Workload`): the arrival process at
        ``rate_per_s`` requests/s (or a trace replay), the request classes with their weights and prompt and
        output lengths in tokens.
    n : int
        Requests to draw.
    rng : numpy.random.Generator
        The stream to draw from (:func:`rng_for`).

    Returns
    -------
    Draws
        Arrays of length ``n`` sorted by arrival: ``arrival_s`` (arrival times, seconds), ``request_class``,
        ``prompt_tokens`` and ``output_tokens`` (tokens), and ``route_u`` (2 x n uniforms for random replica
        choices).

    Raises
    ------
    ConfigError
        For a trace or empirical length CSV that is missing or malformed, or a length law that cannot be drawn
        (see :func:`length_moments`).

    Examples
    --------
    >>> sc = hf.load_scenario()  # Poisson arrivals at 10 requests/s, 1024-token prompts, 256-token answers
    >>> draws = hf.draw_workload(sc.workload, 5, hf.rng_for(1))
    >>> draws.arrival_s.round(3).tolist()  # seconds
    [0.06, 0.317, 0.384, 0.493, 0.658]
    >>> draws.prompt_tokens.tolist()
    [1024, 1024, 1024, 1024, 1024]
    """
    classes = classes_of(workload)
    arr = workload.arrival
    if any(c.prefix is not None or c.session is not None for c in classes):
        return _draw_sessions(workload, classes, n, rng)
    trace_prompt = trace_output = None
    trace_hashes = None
    if arr.process == "trace":
        fp = "workload.arrival.trace"
        rows = _read_csv(arr.trace.path, f"{fp}.path")
        times, order = _trace_times(arr.trace, rows, fp)
        rows = [rows[i] for i in order]
        if arr.trace.rescale_to_rate and times.size > 1 and times[-1] > 0:
            times = times * ((times.size - 1) / times[-1]) / workload.rate_per_s
        period = times[-1] + (times[-1] / (times.size - 1) if times.size > 1 else 1.0 / workload.rate_per_s)
        reps = np.arange(n) // times.size
        arrival = times[np.arange(n) % times.size] + reps * period
        if arr.trace.prompt_column is not None:
            trace_prompt = _int_column(rows, arr.trace.prompt_column, arr.trace.path, f"{fp}.prompt_column")
        if arr.trace.output_column is not None:
            trace_output = _int_column(rows, arr.trace.output_column, arr.trace.path, f"{fp}.output_column")
        if arr.trace.hash_ids_column is not None:
            trace_hashes = _hash_column(rows, arr.trace.hash_ids_column, arr.trace.path, f"{fp}.hash_ids_column")
    elif arr.process == "closed":  # the clients send their first requests at once, the rest as they complete
        arrival = np.where(np.arange(n) < arr.concurrency, 0.0, np.inf)
    else:
        arrival = draw_arrivals(arr, workload.rate_per_s, n, rng)
    weights = np.array([c.weight for c in classes])
    if len(classes) == 1:
        cls = np.zeros(n, dtype=np.int64)
    else:
        cls = rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int64)
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for c, rc in enumerate(classes):
        idx = np.flatnonzero(cls == c)
        base = f"workload.classes[{c}]" if workload.classes else "workload"
        prompt[idx] = draw_lengths(rc.prompt_tokens, idx.size, rng, f"{base}.prompt_tokens")
        output[idx] = draw_lengths(rc.output_tokens, idx.size, rng, f"{base}.output_tokens")
    if trace_prompt is not None:
        prompt = trace_prompt[np.arange(n) % trace_prompt.size]
    if trace_output is not None:
        output = trace_output[np.arange(n) % trace_output.size]
    route_u = rng.random((2, n))
    think = None
    closed = arr.process == "closed"
    if closed:
        think = _think_times(arr, n, rng)
    concurrency = arr.concurrency if closed else (arr.max_concurrency or 0)
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    _check_span(workload, arrival, think, n)
    if trace_hashes is not None:  # the trace's rows repeat: so do their hashes (a replay's requests are new ones)
        rows_of = np.arange(n) % len(trace_hashes)
        counts = np.array([trace_hashes[k].size for k in rows_of], dtype=np.int64)
        ids = np.concatenate([trace_hashes[k] for k in rows_of]) if n else np.zeros(0, dtype=np.int64)
        h_off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        none = np.full(n, -1, dtype=np.int64)
        return Draws(
            arrival, cls, prompt, output, route_u, think, concurrency, closed, stream=np.arange(n, dtype=np.int64),
            prefix_key=none, prefix_tokens=np.zeros(n, dtype=np.int64), turn=np.zeros(n, dtype=np.int64),
            hash_ids=(h_off, ids), hash_block_tokens=arr.trace.hash_block_tokens,
        )  # fmt: skip
    return Draws(arrival, cls, prompt, output, route_u, think, concurrency, closed)


def _check_span(workload, arrival: np.ndarray, think: np.ndarray | None, n: int) -> None:
    """ConfigError when the arrivals (a closed loop: its clients' think times) span more than :data:`MAX_SPAN_S`:
    beyond it the loop's float64 times cannot resolve a latency to a microsecond (at 1e300 s every latency is 0)."""
    arr = workload.arrival
    finite = arrival[np.isfinite(arrival)]
    span = float(finite.max()) if finite.size else 0.0
    if think is not None:  # each client's requests follow one another, a think time apart
        span = max(span, float(think.sum()) / arr.concurrency)
    if span <= MAX_SPAN_S:
        return
    if arr.process == "closed":
        where, value = "workload.arrival.think_time_s", arr.think_time_s
    elif arr.process == "trace":
        rescaled = arr.trace.rescale_to_rate
        where = "workload.rate_per_s" if rescaled else "workload.arrival.trace.time_scale"
        value = workload.rate_per_s if rescaled else arr.trace.time_scale
    else:
        where, value = "workload.rate_per_s", workload.rate_per_s
    raise ConfigError(
        where, value,
        f"a value for which the {n} arrivals span at most {MAX_SPAN_S:.3g} s of simulated time (they span "
        f"{span:.3g} s, where float64 times resolve latencies only to {span * 2.0**-52:.2g} s)",
    )  # fmt: skip


def _draw_sessions(workload, classes, n: int, rng: np.random.Generator) -> Draws:
    """Draws of a workload with shared prefixes or multi-turn sessions: arrivals are sessions (a class without
    ``session`` has one turn); turn k's prompt is its prefix, the earlier turns' prompts and answers, and its
    own user tokens; later turns are sent a think time after the previous answer (arrival inf until then)."""
    arr = workload.arrival
    fp = "workload.arrival"
    if arr.process in ("trace", "closed") or arr.max_concurrency is not None:
        key = "process" if arr.max_concurrency is None else "max_concurrency"
        raise ConfigError(
            f"{fp}.{key}",
            getattr(arr, key),
            "an open arrival process without max_concurrency with prefixes or sessions",
        )
    units = draw_arrivals(arr, workload.rate_per_s, n, rng)  # (at most n sessions)
    weights = np.array([c.weight for c in classes])
    ucls = (
        np.zeros(n, dtype=np.int64)
        if len(classes) == 1
        else rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int64)
    )
    turns = np.ones(n, dtype=np.int64)
    for c, rc in enumerate(classes):
        if rc.session is not None:
            idx = np.flatnonzero(ucls == c)
            turns[idx] = draw_lengths(rc.session.turns, idx.size, rng, f"workload.classes[{c}].session.turns")
    sess, turn, index = session_layout(turns, n)
    n_sess = int(sess.max()) + 1 if n else 0
    cls = ucls[sess]
    user = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    think = np.zeros(n)
    prefix_of = np.full(n_sess, -1, dtype=np.int64)  # each session's prefix (a global key) and its length
    prefix_len = np.zeros(n_sess, dtype=np.int64)
    key0 = 0
    for c, rc in enumerate(classes):
        base = f"workload.classes[{c}]" if workload.classes else "workload"
        idx = np.flatnonzero(cls == c)
        user[idx] = draw_lengths(rc.prompt_tokens, idx.size, rng, f"{base}.prompt_tokens")
        output[idx] = draw_lengths(rc.output_tokens, idx.size, rng, f"{base}.output_tokens")
        if rc.session is not None:
            think[idx] = _gamma(rc.session.think_time_s, rc.session.think_time_cv, idx.size, rng)
        if rc.prefix is not None:
            px = rc.prefix
            lengths = draw_lengths(px.tokens, px.distinct, rng, f"{base}.prefix.tokens")
            s_idx = np.flatnonzero(ucls[:n_sess] == c)
            k = zipf_choice(px.distinct, px.zipf_alpha, s_idx.size, rng)
            prefix_of[s_idx] = key0 + k
            prefix_len[s_idx] = lengths[k]
            key0 += px.distinct
    # prompts: in session-major order, turn k's = prefix + sum of earlier (user + output) + its user tokens
    sm = index  # the request at each session-major position
    u_sm, o_sm, s_sm = user[sm], output[sm], sess[sm]
    before = np.cumsum(u_sm + o_sm) - (u_sm + o_sm)  # tokens of earlier requests, all sessions
    start = np.zeros(n_sess, dtype=np.int64)
    first = np.flatnonzero(turn[sm] == 0)
    start[s_sm[first]] = before[first]
    prompt_sm = prefix_len[s_sm] + before - start[s_sm] + u_sm
    prompt = np.empty(n, dtype=np.int64)
    prompt[sm] = prompt_sm
    nxt_sm = np.where(np.append(s_sm[1:] == s_sm[:-1], False), np.append(sm[1:], -1), -1)
    next_turn = np.empty(n, dtype=np.int64)
    next_turn[sm] = nxt_sm
    prev_turn = np.full(n, -1, dtype=np.int64)
    has = next_turn >= 0
    prev_turn[next_turn[has]] = np.flatnonzero(has)
    arrival = np.where(turn == 0, units[np.minimum(sess, n - 1)], np.inf)
    return Draws(
        np.ascontiguousarray(arrival, dtype=np.float64), cls, prompt, output, rng.random((2, n)), think,
        stream=sess.astype(np.int64), prefix_key=prefix_of[sess], prefix_tokens=prefix_len[sess],
        turn=turn.astype(np.int64), next_turn=next_turn, prev_turn=prev_turn,
    )  # fmt: skip


def _gamma(mean: float, cv: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n think times (s): fixed, or gamma with the given mean and cv (1: exponential)."""
    if mean == 0.0 or cv == 0.0:
        return np.full(n, mean)
    shape = 1.0 / cv**2
    return rng.gamma(shape, mean / shape, n)


def _hash_column(rows: list[dict], column: str, path: str, field_path: str) -> list[np.ndarray]:
    """Each row's prompt block hash ids: a JSON list (JSON lines) or integers separated by spaces or commas."""
    if column not in rows[0]:
        raise ConfigError(field_path, column, f"a column of {path}: one of {', '.join(rows[0])}")
    out = []
    for i, row in enumerate(rows):
        v = row[column]
        try:
            vals = v if isinstance(v, list) else str(v or "").strip("[] ").replace(",", " ").split()
            out.append(np.array([int(x) for x in vals], dtype=np.int64))
        except (TypeError, ValueError):
            raise ConfigError(f"{field_path} ({path} row {i + 2}, column {column})", v, "a list of integers") from None
    return out


def _think_times(arrival: Arrival, n: int, rng: np.random.Generator) -> np.ndarray:
    """A closed loop's think time after each request (s): fixed, or gamma with the given cv (1: exponential)."""
    mean, cv = arrival.think_time_s, arrival.think_time_cv
    if mean == 0.0 or cv == 0.0:
        return np.full(n, mean)
    shape = 1.0 / cv**2
    return rng.gamma(shape, mean / shape, n)
