"""Monte Carlo path: pre-drawn workloads through the jitted serving loop -> xarray Dataset.

``build_serving`` turns a scenario's serving section into pool arrays (one pool for colocated serving,
a prefill and a decode pool for disaggregated serving); ``run_serving`` runs one replicate over given
draws; ``simulate`` draws, runs and summarises every replicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import __version__
from .catalog import Catalog
from .compile import CompiledEngine, compile_engine
from .config.base import ConfigError
from .config.hardware import Device, Link
from .config.scenario import Engine, Scenario, load_scenario
from .config.serving import SCHEDULERS
from .kernels import layout as L
from .kernels import serving as K
from .metrics import QUANTILES, REASONS, summarize
from .variables import data_array
from .workload import Draws, draw_workload, rng_for

__all__ = ["simulate", "build_serving", "run_serving", "ServingSetup", "RunState"]

_POLICY_CODES = {"static": K.POLICY_STATIC, "continuous": K.POLICY_CONTINUOUS, "chunked": K.POLICY_CHUNKED}
_POLICY_CODES["mixed"] = K.POLICY_MIXED
_SCHED_CODES = dict(zip(SCHEDULERS, range(len(SCHEDULERS)), strict=True))
_MAX_REQUESTS = 100_000_000  # ~200 B of state per request: 20 GB


@dataclass(frozen=True)
class Pool:
    """One pool of identical replicas, as the loop sees it, plus what the summary needs."""

    name: str  # the engine's name
    role: str  # "colocated", "prefill" or "decode"
    engine: Engine
    device: Device
    compiled: CompiledEngine
    kv_blocks: int  # paged-KV blocks per replica


@dataclass(frozen=True)
class ServingSetup:
    """Pool arrays for :func:`hermes_fast.kernels.serving.new_state`, and the pools they came from."""

    pools: tuple[Pool, ...]
    params: np.ndarray  # float64[n_pools, N_PARAMS]
    pool_int: np.ndarray  # int64[NPI, n_pools]
    pool_float: np.ndarray  # float64[NPF, n_pools]
    replica_pool: np.ndarray  # int64[R]

    @property
    def generates(self) -> bool:
        return all(p.compiled.generates for p in self.pools)


def _engine_index(sc: Scenario, name: str | None) -> int:
    if name is None:
        return 0
    return next(i for i, e in enumerate(sc.engines) if e.name == name)


def build_serving(scenario: Scenario, catalog: Catalog | None = None) -> ServingSetup:
    """Compile the serving engines of ``scenario`` into pool arrays; ConfigError for what cannot serve."""
    sc = scenario
    cat = catalog if catalog is not None else Catalog.for_scenario(sc)
    sv = sc.serving
    if sv.disaggregated:
        chosen = [(_engine_index(sc, sv.prefill_engine), "prefill"), (_engine_index(sc, sv.decode_engine), "decode")]
    else:
        chosen = [(_engine_index(sc, sv.engine), "colocated")]
    pools = []
    for idx, role in chosen:
        e = sc.engines[idx]
        path = f"engines[{idx}]"
        model = cat.model(e.model, f"{path}.model")
        device = cat.device(e.device, f"{path}.device")
        ce = compile_engine(model, device, e.parallel, e.dtypes, e.memory_utilization, e.max_batched_tokens, path)
        if not ce.weights_fit:
            raise ConfigError(
                f"{path}.parallel",
                {"tp": e.parallel.tp, "pp": e.parallel.pp},
                f"a layout whose weights ({ce.weights_bytes / 1e9:.1f} GB per device) and activations fit in "
                f"{ce.usable_bytes / 1e9:.1f} GB ({device.name} x memory_utilization {e.memory_utilization:g})",
            )
        cap_blocks = int(ce.kv_capacity_tokens // e.batching.block_size_tokens)
        if cap_blocks < 1:
            raise ConfigError(f"{path}.memory_utilization", e.memory_utilization, "room for at least one KV block")
        if role != "prefill" and not ce.generates and sv.disaggregated:
            raise ConfigError(f"{path}.model", e.model, "a generating (decoder) model for a decode engine")
        if e.batching.preemption == "swap" and device.host_link is None:
            raise ConfigError(f"{path}.batching.preemption", "swap", f"recompute: {device.name} has no host_link")
        pools.append(Pool(e.name, role, e, device, ce, cap_blocks))
    n_pools = len(pools)
    params = np.zeros((n_pools, L.N_PARAMS))
    pi = np.zeros((K.NPI, n_pools), dtype=np.int64)
    pf = np.zeros((K.NPF, n_pools))
    first = 0
    replica_pool = []
    for k, pool in enumerate(pools):
        e, ce, d = pool.engine, pool.compiled, pool.device
        params[k] = ce.params
        params[k, L.FIXED_STEP_S] = e.fixed_step_time_s or 0.0
        b = e.batching
        pi[K.P_ROLE, k] = {"colocated": K.ROLE_BOTH, "prefill": K.ROLE_PREFILL, "decode": K.ROLE_DECODE}[pool.role]
        pi[K.P_POLICY, k] = _POLICY_CODES[b.policy]
        pi[K.P_MAX_BATCH, k] = b.max_batch_size
        pi[K.P_MAX_TOKENS, k] = e.max_batched_tokens
        pi[K.P_CHUNK, k] = b.chunk_size if b.chunk_size is not None else e.max_batched_tokens
        pi[K.P_BLOCK, k] = b.block_size_tokens
        pi[K.P_PREEMPT, k] = 1 if b.preemption == "swap" else 0
        pi[K.P_SCHED, k] = _SCHED_CODES[e.scheduler]
        pi[K.P_FIRST, k] = first
        pi[K.P_COUNT, k] = e.replicas
        pi[K.P_MAX_QUEUE, k] = -1 if b.max_queue_requests is None else b.max_queue_requests
        pi[K.P_NEXT, k] = k + 1 if pool.role == "prefill" else -1
        pi[K.P_PAIRING, k] = 1 if sc.serving.pairing == "local" else 0
        pi[K.P_MAX_CONTEXT, k] = ce.max_context_tokens
        pi[K.P_CAP_BLOCKS, k] = pool.kv_blocks
        pf[K.PF_KV_BYTES, k] = ce.kv_bytes_per_token
        host: Link | None = d.host_link
        pf[K.PF_SWAP_BW, k] = host.bandwidth_bytes_per_s if host else 1.0
        pf[K.PF_SWAP_LAT, k] = host.latency_s if host else 0.0
        link = sc.serving.kv_link or d.scale_out
        pf[K.PF_LINK_BW, k] = link.bandwidth_bytes_per_s
        pf[K.PF_LINK_LAT, k] = link.latency_s
        replica_pool += [k] * e.replicas
        first += e.replicas
    return ServingSetup(tuple(pools), params, pi, pf, np.array(replica_pool, dtype=np.int64))


@dataclass
class RunState:
    """The loop's state arrays after a run (see ``kernels.serving`` for the row layout)."""

    state: tuple

    def __getitem__(self, slot: int) -> np.ndarray:
        return self.state[slot]


def run_serving(
    setup: ServingSetup, draws: Draws, horizon_s: float | None = None, fast_forward: bool = True, jit: bool = True
) -> RunState:
    """Run one replicate of ``draws`` through the pools; ``jit=False`` runs the plain-Python twin (slow)."""
    output = draws.output_tokens
    if not setup.generates:  # encoders and rerankers only prefill: each request ends at its prompt
        output = np.ones_like(output)
    state = K.new_state(
        setup.params,
        setup.pool_int,
        setup.pool_float,
        setup.replica_pool,
        draws.arrival_s,
        draws.prompt_tokens,
        output,
        draws.route_u,
        math.inf if horizon_s is None else horizon_s,
        fast_forward,
    )
    (K.serve.jit if jit else K.serve)(state)
    return RunState(state)


def simulate(
    scenario: Scenario | Mapping | str | None = None,
    n_requests: int = 10_000,
    seed: int = 0,
    replicates: int = 1,
    keep_requests: bool = False,
    fast_forward: bool = True,
    point: int = 0,
) -> xr.Dataset:
    """Simulate ``n_requests`` arrivals of the scenario's workload on its serving engines.

    Parameters
    ----------
    scenario : Scenario, mapping, YAML path or text, or None for the embedded default.
    n_requests : arrivals per replicate.
    seed : the run's seed; replicate r of grid point ``point`` draws from ``SeedSequence(seed, (point, r))``.
    replicates : independent repetitions (a ``replicate`` dim; see :func:`hermes_fast.confidence_interval`).
    keep_requests : also return per-request variables (``request_*``, dims replicate x request).
    fast_forward : commit runs of decode-only iterations at once (identical results, much faster).

    Returns
    -------
    xarray.Dataset with latency quantiles (dim ``quantile``), throughput, goodput, per-pool utilisation
    (dim ``pool``), request counts, energy and cost, per replicate; units in each variable's attrs.

    Examples
    --------
    >>> ds = simulate(n_requests=1000, seed=1)
    >>> float(ds.ttft_s.sel(quantile=0.5, replicate=0)) > 0
    True
    """
    sc = load_scenario(scenario)
    for name, value, low in (("n_requests", n_requests, 1), ("replicates", replicates, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(name, value, f"an integer >= {low}")
    if n_requests > _MAX_REQUESTS:
        raise ConfigError("n_requests", n_requests, f"at most {_MAX_REQUESTS:g} requests per replicate")
    setup = build_serving(sc)
    per_rep = []
    requests = []
    for rep in range(replicates):
        draws = draw_workload(sc.workload, n_requests, rng_for(seed, point, rep))
        run = run_serving(setup, draws, sc.serving.horizon_s, fast_forward)
        per_rep.append(summarize(setup, draws, run, sc.serving))
        if keep_requests:
            requests.append(_request_vars(draws, run))
    ds = _assemble(per_rep, setup)
    if keep_requests:
        for name in requests[0]:
            ds[name] = data_array(name, np.stack([r[name] for r in requests]), ("replicate", "request"))
    ds.attrs.update(
        {
            "title": f"hermes_fast simulation: {sc.name}",
            "scenario": sc.name,
            "serving": ", ".join(f"{p.name} ({p.role}, {p.engine.replicas} replica(s))" for p in setup.pools),
            "n_requests": n_requests,
            "seed": seed,
            "fast_forward": int(fast_forward),
            "hermes_fast_version": __version__,
        }
    )
    return ds


def _request_vars(draws: Draws, run: RunState) -> dict[str, np.ndarray]:
    ri, rf = run[K.K_RI], run[K.K_RF]
    return {
        "request_arrival_s": draws.arrival_s,
        "request_class": draws.request_class,
        "request_prompt_tokens": draws.prompt_tokens,
        "request_output_tokens": ri[K.R_OUTPUT].copy(),
        "request_queue_s": rf[K.F_ADMIT] - draws.arrival_s,
        "request_prefill_start_s": rf[K.F_ADMIT].copy(),
        "request_prefill_end_s": rf[K.F_PREFILL_END].copy(),
        "request_first_token_s": rf[K.F_FIRST_TOKEN].copy(),
        "request_completion_s": rf[K.F_DONE].copy(),
        "request_transfer_s": rf[K.F_TRANSFER].copy(),
        "request_preemptions": ri[K.R_PREEMPTIONS].copy(),
        "request_status": ri[K.R_STATUS].astype(np.int8),
        "request_replica": ri[K.R_ENTRY_REPLICA].copy(),
        "request_decode_replica": ri[K.R_DECODE_REPLICA].copy(),
    }


def _assemble(per_rep: list[dict], setup: ServingSetup) -> xr.Dataset:
    coords = {
        "replicate": np.arange(len(per_rep)),
        "quantile": np.array(QUANTILES),
        "pool": [p.name for p in setup.pools],
        "reason": list(REASONS),
    }
    ds = xr.Dataset(coords=coords)
    for name, first in per_rep[0].items():
        values = np.stack([r[name] for r in per_rep])
        if np.ndim(first) == 0:
            dims = ("replicate",)
        elif name in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
            dims = ("replicate", "quantile")
        elif name == "rejected_by_reason":
            dims = ("replicate", "reason")
        else:
            dims = ("replicate", "pool")
        ds[name] = data_array(name, values, dims)
    ds["pool_role"] = xr.DataArray([p.role for p in setup.pools], dims=("pool",), attrs={"long_name": "pool role"})
    return ds
