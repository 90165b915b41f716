"""A sweep's plan: its grid axes, each path checked against the base scenario, and what every task needs to
compute a point (the base, the axes, the run settings, the union layout): point ``i``'s settings, coordinates
and resolved scenario, and the identity whose hash fingerprints a store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._version import __version__, build_digest
from ..config.base import ConfigError, to_mapping
from ..config.grid import Axis, apply_settings, parse_axis, parse_path
from ..config.serving import check_warmup
from ..config.sweep import CapacitySearch
from ..resolve import ResolvedScenario, resolve_scenario
from .store import STORE_FORMAT

__all__ = ["SweepPlan", "fingerprint_of", "parse_grid"]

_INNER_DIMS = ("replicate", "quantile", "reason", "pool", "stage", "link")


# --- grid axes ------------------------------------------------------------------------------------------


def parse_grid(grid: Any, base: dict) -> list[Axis]:
    """The axes of ``grid`` (see :func:`sweep`), each path checked against the schema and the base scenario."""
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", grid, "a mapping of dotted path -> values, or axis name -> {path: values}")
    axes: list[Axis] = []
    for key, spec in grid.items():
        key = str(key)
        if key in _INNER_DIMS:
            raise ConfigError(f"grid.{key}", spec, f"an axis name other than the output dims {', '.join(_INNER_DIMS)}")
        axis = parse_axis(key, spec)
        paths, values = axis.paths, axis.values
        for p in paths:
            segs = parse_path(p)
            apply_settings(base, [(p, values[0][paths.index(p)])])  # the path exists in the base scenario
            for other in (q for a in axes for q in a.paths):
                o = parse_path(other)
                if o[: len(segs)] == segs or segs[: len(o)] == o:
                    raise ConfigError(f"grid.{key}", p, f"a path that neither is nor contains another axis's ({other})")
        axes.append(axis)
    return axes


# --- the plan: what every task needs --------------------------------------------------------------------


@dataclasses.dataclass
class SweepPlan:
    base: dict
    axes: list[Axis]
    n_requests: int
    replicates: int
    seed: int
    capacity: CapacitySearch | None
    fast_forward: bool
    layout: dict = dataclasses.field(default_factory=dict)  # pools, roles, stages, links, piped
    build: str = dataclasses.field(default_factory=build_digest)  # the planner's: every worker must run it too

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.labels) for a in self.axes)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def settings(self, i: int) -> list[tuple[str, Any]]:
        idx = np.unravel_index(i, self.shape) if self.axes else ()
        return [(p, a.values[j][k]) for a, j in zip(self.axes, idx, strict=True) for k, p in enumerate(a.paths)]

    def coords_of(self, i: int) -> str:
        idx = np.unravel_index(i, self.shape) if self.axes else ()
        return ", ".join(f"{a.name}={a.labels[j]!r}" for a, j in zip(self.axes, idx, strict=True)) or "the base"

    def resolved(self, i: int) -> ResolvedScenario:
        """Grid point ``i``'s scenario, resolved (errors name the point)."""
        try:
            resolved = resolve_scenario(apply_settings(self.base, self.settings(i)))
            check_warmup(resolved.scenario.serving, self.n_requests)
            return resolved
        except ConfigError as e:
            raise ConfigError(f"grid point {i} ({self.coords_of(i)}): {e.path}", e.value, e.expected) from None

    def identity(self) -> dict:
        """What determines the results (the store's fingerprint is its hash)."""
        return {
            "format": STORE_FORMAT,
            "hermes_fast_version": __version__,
            "hermes_fast_build": self.build,  # a fix or a refit that moves results moves it
            "scenario": self.base,
            "grid": [{"name": a.name, "paths": a.paths, "values": a.values, "labels": a.labels} for a in self.axes],
            "n_requests": self.n_requests,
            "replicates": self.replicates,
            "seed": self.seed,
            "capacity": None if self.capacity is None else to_mapping(self.capacity),
            "fast_forward": self.fast_forward,
        }


def fingerprint_of(identity: dict) -> str:
    text = json.dumps(identity, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()
