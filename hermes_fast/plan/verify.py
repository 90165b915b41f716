"""The scenario of a candidate layout, and its simulated capacity under the plan's targets (serially, or on dask
through the sweeps' :class:`~hermes_fast.sweep.executors.Runner`).

Every candidate is searched with the same seed stream (``point`` 0: common random numbers), so two layouts are
compared on the same arrivals and lengths, and a brute-force search of any candidate with
:func:`hermes_fast.capacity_search` on :func:`candidate_scenario` gives the very same numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from ..capacity import capacity_search
from ..config.plan import PlanSpec
from ..sweep.executors import Runner
from .search import Candidates, EngineTable

__all__ = ["candidate_scenario", "capacity_targets", "verify"]


def _engine(t: EngineTable, c: int, name: str, spec: PlanSpec, replicas: int, max_batch: int) -> dict:
    dtype = str(t.dtype[c])
    kv = "bf16" if dtype in ("bf16", "fp16", "fp32") else "fp8"
    return {
        "name": name,
        "model": spec.model,
        "device": str(t.device[c]),
        "stack": spec.stack,
        "parallel": {
            "tp": int(t.tp[c]),
            "pp": int(t.pp[c]),
            "ep": int(t.ep[c]),
            "attention_dp": bool(t.attention_dp[c]),
            "cp": int(t.cp[c]),
        },
        "dtypes": {"weight": dtype, "activation": dtype, "kv": kv, "expert_weight": spec.expert_weight},
        "max_batched_tokens": int(t.budget[c]),
        "replicas": int(replicas),
        "batching": {"max_batch_size": int(max_batch)},
    }


def candidate_scenario(spec: PlanSpec, t: EngineTable, cands: Candidates, i: int) -> dict:
    """The scenario (a mapping) of candidate ``i``: its engines, the plan's workload and SLO, colocated serving
    on engine ``main`` or disaggregated serving from ``prefill`` to ``decode``."""
    m = spec.max_batch_size[int(cands.max_batch[i])]
    slo = {"ttft_s": spec.ttft_s, "tpot_s": spec.tpot_s}
    c = int(cands.config[i])
    if cands.prefill_config[i] < 0:
        engines = [_engine(t, c, "main", spec, cands.replicas[i], m)]
        serving = {"engine": "main", "slo": slo}
    else:
        p = int(cands.prefill_config[i])
        engines = [
            _engine(t, p, "prefill", spec, cands.prefill_replicas[i], m),
            _engine(t, c, "decode", spec, cands.replicas[i], m),
        ]
        serving = {"prefill_engine": "prefill", "decode_engine": "decode", "slo": slo}
    return {
        "name": f"plan candidate {i}",
        "stacks": spec.stacks,
        "engines": engines,
        "workload": spec.workload,
        "serving": serving,
    }


def capacity_targets(spec: PlanSpec, bound: float) -> dict:
    """The capacity search: TTFT and TPOT at the plan's quantile, bracketed around the analytic bound."""
    hi = max(2.0 * bound, 1e-2) if np.isfinite(bound) else 1000.0
    return {
        "ttft": {"quantile": spec.quantile, "max_s": spec.ttft_s},
        "tpot": {"quantile": spec.quantile, "max_s": spec.tpot_s},
        "rate_min_per_s": hi / 200.0,
        "rate_max_per_s": hi,
        "rel_tol": spec.rel_tol,
    }


class _Job(NamedTuple):
    scenarios: list
    targets: list
    n_requests: int
    seed: int
    replicates: int
    calibration: Any


def _run(job: _Job, start: int, stop: int) -> list[xr.Dataset]:
    return [
        capacity_search(
            job.scenarios[k],
            job.targets[k],
            n_requests=job.n_requests,
            seed=job.seed,
            replicates=job.replicates,
            calibration=job.calibration,
        )
        for k in range(start, stop)
    ]


def verify(
    spec: PlanSpec,
    t: EngineTable,
    cands: Candidates,
    chosen: np.ndarray,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    calibration: Any = "default",
) -> list[xr.Dataset]:
    """Capacity-search the candidates ``chosen`` (in that order): one Dataset each, as
    :func:`hermes_fast.capacity_search` returns; serially, or as one task per candidate on dask."""
    job = _Job(
        [candidate_scenario(spec, t, cands, int(i)) for i in chosen],
        [capacity_targets(spec, float(cands.bound[i])) for i in chosen],
        spec.n_requests,
        spec.seed,
        spec.replicates,
        calibration,
    )
    out: list = [None] * len(chosen)

    def take(start: int, stop: int, result: list) -> None:
        out[start:stop] = result

    with Runner(workers, scheduler, True, 10.0) as runner:
        runner.map(_run, job, [(k, k + 1) for k in range(len(chosen))], take)
    return out
