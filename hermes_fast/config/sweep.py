"""Schemas of a sweep file (``hermes-fast sweep SWEEP.yaml``) and of a capacity search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import ConfigError, fld

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99)  # the quantiles a simulation summary reports (metrics.QUANTILES)


@dataclass(frozen=True, kw_only=True)
class LatencyTarget:
    """An upper bound on a latency statistic over the requests of a run."""

    quantile: float | None = fld(
        0.99, unit="1", doc="quantile over requests: 0.5, 0.9, 0.95 or 0.99 (None: the mean)", gt=0, lt=1
    )
    max_s: float = fld(unit="s", doc="the statistic must not exceed this", gt=0)

    def _validate(self, path: str) -> None:
        if self.quantile is not None and self.quantile not in SUMMARY_QUANTILES:
            raise ConfigError(
                f"{path}.quantile", self.quantile, f"one of {', '.join(map(str, SUMMARY_QUANTILES))} or null (mean)"
            )


@dataclass(frozen=True, kw_only=True)
class CapacitySearch:
    """The largest arrival rate whose run meets every target given, found by bisection on the simulator.

    Each (point, replicate) searches with its own seed stream; every rate tried reuses that stream, so the
    runs differ only by the rate (common random numbers) and meeting the targets is monotone in practice.
    """

    ttft: LatencyTarget | None = fld(None, doc="bound on a TTFT quantile (or mean)")
    tpot: LatencyTarget | None = fld(None, doc="bound on a TPOT quantile (or mean)")
    e2e: LatencyTarget | None = fld(None, doc="bound on an end-to-end latency quantile (or mean)")
    min_slo_attainment: float | None = fld(
        None, unit="1", doc="least share of arrivals completing within serving.slo (goodput / arrival rate)", gt=0, le=1
    )
    allow_unstable: bool = fld(False, doc="accept a run flagged overloaded (unstable) if it meets the targets")
    rate_min_per_s: float = fld(0.1, unit="request/s", doc="low end of the search bracket", gt=0, le=1e9)
    rate_max_per_s: float = fld(1000.0, unit="request/s", doc="high end of the search bracket", gt=0, le=1e9)
    rel_tol: float = fld(0.01, unit="1", doc="stop when the bracket's high / low - 1 is below this", gt=0, lt=1)

    def _validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        if self.ttft is None and self.tpot is None and self.e2e is None and self.min_slo_attainment is None:
            raise ConfigError(path or "capacity", {}, "at least one of ttft, tpot, e2e, min_slo_attainment")
        if self.rate_max_per_s <= self.rate_min_per_s:
            raise ConfigError(f"{p}rate_max_per_s", self.rate_max_per_s, f"> rate_min_per_s ({self.rate_min_per_s})")


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A sweep file: a base scenario, the grid over its fields, and the run settings.

    ``grid`` maps a dotted path of a scenario field (``engines.decode.parallel.tp``,
    ``workload.rate_per_s``) to its list of values (axes multiply: Cartesian product), or an axis name to
    a mapping of paths to equal-length lists (zipped: the paths change together), with an optional
    ``label`` list naming the axis's values.
    """

    scenario: Any = fld(None, doc="scenario YAML path (relative to the sweep file) or inline mapping; null: default")
    grid: dict[str, Any] = fld(factory=dict, doc="dotted path -> values, or axis name -> {path: values, label: [...]}")
    n_requests: int = fld(10_000, unit="request", doc="arrivals per replicate and point", ge=1, le=100_000_000)
    replicates: int = fld(1, unit="1", doc="independent repetitions per point", ge=1, le=1_000_000)
    seed: int = fld(
        0, unit="1", doc="point i, replicate r draws from SeedSequence(seed, (i, r))", ge=0, le=(1 << 63) - 1
    )
    capacity: CapacitySearch | None = fld(None, doc="search each point's largest rate meeting these targets")
    chunk_size: int | None = fld(
        None, unit="point", doc="points per task and per zarr chunk (None: automatic)", ge=1, le=10_000_000
    )
