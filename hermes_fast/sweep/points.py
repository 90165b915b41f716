"""Computing grid points: validating a chunk's scenarios and collecting their pools, stages and links (merged
into the sweep's union layout in point order), simulating or capacity-searching every replicate of a point,
and packing its summaries onto the union layout (NaN where a point has no such pool, stage or link).

:func:`layout_chunk` and :func:`run_chunk` are the units of work every executor runs.
"""

from __future__ import annotations

import numpy as np

from .._version import build_digest
from ..capacity import bound_code, check_rate_matters, search_rate
from ..config.base import ConfigError
from ..simulate import LINK_VARS, STAGE_VARS, prepare, simulate_replicate, summary_dims
from ..workload import rng_for
from .plan import SweepPlan

__all__ = ["block_dims", "layout_chunk", "merge_layouts", "run_chunk", "run_point"]


def _check_build(plan: SweepPlan) -> None:
    """A worker computes only with the build that planned the sweep: another build's points would mix in unseen
    (a remote worker with another install, or the package edited while the sweep runs)."""
    if plan.build != build_digest():
        raise ConfigError(
            "workers",
            f"hermes_fast build {build_digest()}",
            f"workers running the build that planned the sweep ({plan.build}): install the same hermes_fast on every "
            "worker",
        )


def layout_chunk(plan: SweepPlan, start: int, stop: int) -> dict:
    """Validate the scenarios of points start..stop-1; their pools, stages and links in first-seen order."""
    _check_build(plan)
    pools: dict[str, list[str]] = {}  # name -> roles
    stages: list[str] = []
    links: list[str] = []
    piped = False
    names: set[str] = set()
    for i in range(start, stop):
        resolved = plan.resolved(i)
        sc = resolved.scenario
        try:
            setup, pipe = prepare(resolved)
            if plan.capacity is not None:
                check_rate_matters(sc)
        except ConfigError as e:
            raise ConfigError(f"grid point {i} ({plan.coords_of(i)}): {e.path}", e.value, e.expected) from None
        names.add(sc.name)
        for p in setup.pools:
            roles = pools.setdefault(p.name, [])
            if p.role not in roles:
                roles.append(p.role)
        if pipe is not None:
            piped = True
            stages.extend(x for x in pipe.rows if x not in stages)
            links.extend(x for x in pipe.resources if x not in links)
    return {"pools": pools, "stages": stages, "links": links, "piped": piped, "names": sorted(names)}


def merge_layouts(parts: list[dict]) -> dict:
    """The union over chunks taken in point order: the same whatever the chunking or completion order."""
    pools: dict[str, list[str]] = {}
    stages: list[str] = []
    links: list[str] = []
    for part in parts:
        for name, roles in part["pools"].items():
            have = pools.setdefault(name, [])
            have.extend(r for r in roles if r not in have)
        stages.extend(x for x in part["stages"] if x not in stages)
        links.extend(x for x in part["links"] if x not in links)
    return {
        "pools": list(pools),
        "roles": pools,
        "stages": stages,
        "links": links,
        "piped": any(p["piped"] for p in parts),
        "names": sorted({n for p in parts for n in p["names"]}),
    }


def _pack(
    plan: SweepPlan, summaries: list[dict], setup, pipe, capacity: list[float] | None, bound: list[str] | None = None
) -> dict[str, np.ndarray]:
    """One point's replicates as arrays on the sweep's union of pools, stages and links (NaN where absent)."""
    lay = plan.layout
    where = {
        "pool": [lay["pools"].index(p.name) for p in setup.pools],
        "stage": [lay["stages"].index(s) for s in pipe.rows] if pipe is not None else [],
        "link": [lay["links"].index(r) for r in pipe.resources] if pipe is not None else [],
    }
    size = {"pool": len(lay["pools"]), "stage": len(lay["stages"]), "link": len(lay["links"])}
    out: dict[str, np.ndarray] = {}
    for name, first in summaries[0].items():
        values = np.stack([np.asarray(s[name]) for s in summaries])
        dims = summary_dims(name, first)
        if dims and dims[0] in where:
            full = np.full((len(summaries), size[dims[0]]), np.nan)
            full[:, where[dims[0]]] = values
            values = full
        out[name] = values
    if lay["piped"] and pipe is None:
        for name in STAGE_VARS:
            out[name] = np.full((len(summaries), size["stage"]), np.nan)
        for name in LINK_VARS:
            out[name] = np.full((len(summaries), size["link"]), np.nan)
    if capacity is not None:
        out["capacity_request_per_s"] = np.array(capacity, dtype=np.float64)
        out["capacity_bound"] = np.array([bound_code(b) for b in bound], dtype=np.int8)
    return out


def run_point(plan: SweepPlan, i: int) -> dict[str, np.ndarray]:
    """Simulate (or capacity-search) every replicate of grid point ``i``."""
    resolved = plan.resolved(i)
    sc = resolved.scenario
    setup, pipe = prepare(resolved)
    summaries: list[dict] = []
    if plan.capacity is None:
        for r in range(plan.replicates):
            rng = rng_for(plan.seed, i, r)
            summaries.append(simulate_replicate(sc, setup, pipe, plan.n_requests, rng, plan.fast_forward)[0])
        return _pack(plan, summaries, setup, pipe, None)
    found = [
        search_rate(resolved, plan.capacity, plan.n_requests, plan.seed, i, r, plan.fast_forward, (setup, pipe))
        for r in range(plan.replicates)
    ]
    summaries = [f.summary for f in found]
    return _pack(plan, summaries, setup, pipe, [f.capacity for f in found], [f.bound for f in found])


def run_chunk(plan: SweepPlan, start: int, stop: int) -> dict[str, np.ndarray]:
    """Points start..stop-1, stacked per variable (the unit of work of every executor)."""
    _check_build(plan)
    results = [run_point(plan, i) for i in range(start, stop)]
    return {name: np.stack([r[name] for r in results]) for name in results[0]}


def block_dims(plan: SweepPlan, block: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """The dims of each of a chunk's variables after its point axis (``replicate`` first), as sinks record them."""
    dims = {}
    for name, values in block.items():
        inner = summary_dims(name, values[0, 0]) if not name.startswith("capacity_") else ()
        dims[name] = ["replicate", *inner]
    return dims
