"""Token lengths drawn from their laws, and their moments: the integers a length law (fixed, uniform, normal,
lognormal, gamma, Zipf, empirical) draws once truncated to [min, max] and rounded, read from a CSV or JSON-lines
column where the law is empirical."""

from __future__ import annotations

import csv
import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import stats

from .config.base import ConfigError
from .config.files import check_path_length
from .config.lengths import MAX_ZIPF_SUPPORT
from .config.workload import Length

__all__ = ["length_moments", "length_min", "draw_lengths", "zipf_draws", "read_rows", "int_column", "hash_column"]


_EXACT_SUPPORT = 2_000_000  # integer support up to which moments are summed exactly over the pmf


_MAX_TOKENS = 1_000_000_000  # the longest length drawn or read (Length.max's bound)


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
    rows = read_rows(path, field_path)
    return int_column(rows, column, path, field_path)


def read_rows(path: str, field_path: str) -> list[dict]:
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


def int_column(rows: list[dict], column: str, path: str, field_path: str) -> np.ndarray:
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


def zipf_draws(low: int, high: int, alpha: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` integers in ``low`` .. ``high`` with probability proportional to k^-alpha: Zipf lengths, and the
    popularity of shared prefixes (k - 1 is the prefix drawn from 1 .. distinct).

    Examples
    --------
    >>> from hermes_fast.length_draws import zipf_draws
    >>> k = zipf_draws(1, 3, 0.0, 30_000, np.random.default_rng(1))
    >>> np.bincount(k)[1:].round(-3).tolist()  # uniform when alpha = 0
    [10000, 10000, 10000]
    """
    cdf = _zipf_cdf(low, high, alpha)
    idx = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
    return low + np.minimum(idx, cdf.size - 1).astype(np.int64)


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
        return zipf_draws(lg.min, lg.max, lg.alpha, n, rng)
    law = _continuous(lg)
    lo, hi = _cdf_bounds(law, lg, field_path)
    x = law.ppf(lo + (hi - lo) * rng.random(n))
    if np.isnan(x).any():  # (never a NaN cast to -9.2e18 tokens: the loop would not end)
        raise ConfigError(field_path, lg, "a length law whose draws are numbers (check mean, std or cv)")
    top = lg.max if lg.max is not None else _MAX_TOKENS
    return np.clip(np.rint(x), lg.min, top).astype(np.int64)


def hash_column(rows: list[dict], column: str, path: str, field_path: str) -> list[np.ndarray]:
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
