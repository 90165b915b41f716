"""Token-count distributions (request lengths, thinking tokens, prefix lengths)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld

MIN_CV = 1e-6  # smallest coefficient of variation of a normal or lognormal length
MAX_ZIPF_SUPPORT = 50_000_000  # most integers a Zipf length ranges over (its pmf is listed)


@dataclass(frozen=True, kw_only=True)
class Length:
    """A token-count distribution; draws are integers in [min, max] (the law is truncated, then rounded).

    - ``fixed``: always ``value``;
    - ``uniform``: integers min..max, equally likely;
    - ``normal``: mean, std (or cv), truncated to [min, max];
    - ``lognormal``: mean, std (or cv) of the lognormal itself, truncated to [min, max] (for both, cv = std /
      mean is at least 1e-6: a constant length is ``fixed``);
    - ``exponential``: mean (rounded up to whole tokens: geometric);
    - ``zipf``: P(k) proportional to k^-alpha on min..max;
    - ``empirical``: the values of a CSV column (``path``, ``column``), resampled uniformly.
    """

    dist: Literal["fixed", "uniform", "normal", "lognormal", "exponential", "zipf", "empirical"] = fld(
        doc="distribution family"
    )
    value: int | None = fld(None, unit="token", doc="the value of a fixed length", ge=1, le=1e9)
    mean: float | None = fld(None, unit="token", doc="mean (normal, lognormal, exponential)", gt=0, le=1e9)
    std: float | None = fld(None, unit="token", doc="standard deviation (normal, lognormal)", gt=0, le=1e9)
    cv: float | None = fld(None, unit="1", doc="coefficient of variation std/mean, instead of std", gt=0, le=100)
    min: int = fld(1, unit="token", doc="smallest length drawn", ge=1, le=1e9)
    max: int | None = fld(None, unit="token", doc="largest length drawn (None: unbounded)", ge=1, le=1e9)
    alpha: float | None = fld(None, unit="1", doc="Zipf exponent", gt=0, le=100)
    path: str | None = fld(None, doc="CSV file of an empirical distribution")
    column: str | None = fld(None, doc="CSV column of an empirical distribution")

    def _validate(self, path: str) -> None:
        needs = {
            "fixed": ("value",),
            "uniform": ("max",),
            "normal": ("mean",),
            "lognormal": ("mean",),
            "exponential": ("mean",),
            "zipf": ("alpha", "max"),
            "empirical": ("path", "column"),
        }[self.dist]
        for name in needs:
            if getattr(self, name) is None:
                raise ConfigError(f"{path}.{name}", None, f"a value: a {self.dist} length needs {', '.join(needs)}")
        if self.dist in ("normal", "lognormal") and (self.std is None) == (self.cv is None):
            raise ConfigError(f"{path}.std", self.std, f"exactly one of std and cv for a {self.dist} length")
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"{path}.max", self.max, f">= min ({self.min})")
        if self.mean is not None and (self.mean < self.min or (self.max is not None and self.mean > self.max)):
            raise ConfigError(f"{path}.mean", self.mean, f"a mean within [min, max] = [{self.min}, {self.max}]")
        if self.dist in ("normal", "lognormal"):  # a spread the law can represent (cv^2 underflows below ~1e-154)
            key = "std" if self.std is not None else "cv"
            cv = self.std / self.mean if self.std is not None else self.cv
            if cv < MIN_CV:
                shown = f"{MIN_CV * self.mean:g} tokens ({MIN_CV:g} x mean)" if key == "std" else f"{MIN_CV:g}"
                raise ConfigError(
                    f"{path}.{key}", getattr(self, key), f">= {shown}; use dist: fixed for a constant length"
                )
        if self.dist == "zipf" and self.max - self.min + 1 > MAX_ZIPF_SUPPORT:
            raise ConfigError(f"{path}.max", self.max, f"a Zipf support (max - min + 1) <= {MAX_ZIPF_SUPPORT:g}")
