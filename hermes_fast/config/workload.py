"""Schemas of the simulated workload: arrival process, token-length distributions and request classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld


@dataclass(frozen=True, kw_only=True)
class Length:
    """A token-count distribution; draws are integers in [min, max] (the law is truncated, then rounded).

    - ``fixed``: always ``value``;
    - ``uniform``: integers min..max, equally likely;
    - ``normal``: mean, std (or cv), truncated to [min, max];
    - ``lognormal``: mean, std (or cv) of the lognormal itself, truncated to [min, max];
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


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Replay of a CSV request trace: arrival times and, optionally, prompt and output lengths.

    The Azure LLM inference trace columns (``TIMESTAMP, ContextTokens, GeneratedTokens``) are the
    defaults; timestamps may be numbers (seconds) or date-times.
    """

    path: str = fld(doc="CSV file")
    time_column: str = fld("TIMESTAMP", doc="arrival time column (seconds, or ISO date-times)")
    prompt_column: str | None = fld("ContextTokens", doc="prompt tokens column (None: from the request class)")
    output_column: str | None = fld("GeneratedTokens", doc="output tokens column (None: from the request class)")
    time_scale: float = fld(1.0, unit="s", doc="seconds per unit of a numeric time column", gt=0)
    rescale_to_rate: bool = fld(
        False, doc="compress or stretch the trace's times so its mean rate equals workload.rate_per_s"
    )


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """The arrival process; its mean rate is ``workload.rate_per_s`` (a trace has its own unless rescaled).

    - ``poisson``: exponential gaps;
    - ``gamma``: gamma gaps with coefficient of variation ``cv`` (cv > 1 is burstier than Poisson);
    - ``deterministic``: equal gaps;
    - ``mmpp``: two-state Markov-modulated Poisson: rates ``rate_per_s * burst_factor`` and a lower one,
      with mean sojourns ``burst_mean_s`` and ``calm_mean_s``, the low rate set so the mean stays rate_per_s;
    - ``sinusoid``: rate_per_s * (1 + amplitude sin(2 pi t / period_s)) (thinning);
    - ``trace``: replay of ``trace``.
    """

    process: Literal["poisson", "gamma", "deterministic", "mmpp", "sinusoid", "trace"] = fld(
        "poisson", doc="arrival process"
    )
    cv: float = fld(1.0, unit="1", doc="gamma: coefficient of variation of the gaps", gt=0, le=100)
    burst_factor: float = fld(4.0, unit="1", doc="mmpp: burst rate / mean rate", gt=1, le=1e6)
    burst_mean_s: float = fld(1.0, unit="s", doc="mmpp: mean time in the burst state", gt=0)
    calm_mean_s: float = fld(9.0, unit="s", doc="mmpp: mean time in the calm state", gt=0)
    amplitude: float = fld(0.5, unit="1", doc="sinusoid: relative amplitude", ge=0, le=1)
    period_s: float = fld(60.0, unit="s", doc="sinusoid: period", gt=0)
    trace: Trace | None = fld(None, doc="trace replay settings (process: trace)")

    def _validate(self, path: str) -> None:
        if self.process == "trace" and self.trace is None:
            raise ConfigError(f"{path}.trace", None, "a trace mapping (path, columns) for process: trace")
        if self.process == "mmpp":
            share = self.burst_mean_s / (self.burst_mean_s + self.calm_mean_s)
            if self.burst_factor * share >= 1.0:
                raise ConfigError(
                    f"{path}.burst_factor",
                    self.burst_factor,
                    f"< {1 / share:g} (1 / the burst share of time), so the calm rate stays positive",
                )


@dataclass(frozen=True, kw_only=True)
class RequestClass:
    """A kind of request with its share of the traffic and its length distributions."""

    name: str = fld("default", doc="label")
    weight: float = fld(1.0, unit="1", doc="relative share of arrivals", gt=0)
    prompt_tokens: int | Length = fld(
        1024, unit="token", doc="prompt length: an integer or a distribution", ge=1, le=1e9
    )
    output_tokens: int | Length = fld(
        256, unit="token", doc="output length: an integer or a distribution", ge=1, le=1e9
    )
