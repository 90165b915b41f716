"""Monte Carlo path: pre-drawn workloads through the jitted serving loop -> xarray Dataset.

Scenarios whose request classes declare pipelines run through stage tables (:mod:`hermes_fast.pipeline`);
others through the serving section's pools (:mod:`hermes_fast.pools`). ``run_serving`` runs one
replicate over given draws; ``simulate`` draws, runs and summarises every replicate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from ._version import provenance
from .config.base import ConfigError
from .config.scenario import Scenario
from .config.serving import check_warmup
from .kernels.serving import Outcome, new_state, run_loop
from .kernels.serving.state import CHAIN_ROWS
from .metrics import QUANTILES, TURN_BINS, summarize, summarize_stages
from .pipeline import PipelineSetup, build_pipeline, draw_stage_values
from .pools import ServingSetup, build_serving
from .resolve import ResolvedScenario, resolve_scenario
from .sessions import block_chains
from .validity import REASONS, validity_warnings
from .variables import data_array
from .workload import Draws, draw_workload, rng_for

__all__ = [
    "simulate",
    "build_serving",
    "run_serving",
    "prepare",
    "simulate_replicate",
    "summary_dims",
    "assemble",
    "STAGE_VARS",
    "LINK_VARS",
    "ServingSetup",
    "Outcome",
]

_MAX_REQUESTS = 100_000_000  # ~390 B of loop state per request (46 request rows, 2 draws): 39 GB


def run_serving(
    setup: ServingSetup,
    draws: Draws,
    horizon_s: float | None = None,
    fast_forward: bool = True,
    jit: bool = True,
    pipeline: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one replicate of ``draws`` through the pools; ``jit=False`` runs the plain-Python twin (slow).

    ``pipeline``: the loop's pipeline arrays with this replicate's ``draws``, ``request_class``,
    ``answer_tokens`` and ``warmup`` (see :func:`run_pipeline`). ``progress``: called with the arrivals served
    so far, every hundredth of them (see :func:`hermes_fast.kernels.serving.run_loop`)."""
    output = draws.output_tokens
    if pipeline is None and not setup.generates:  # encoders and rerankers only prefill: a request ends there
        output = np.ones_like(output)
    cache = None
    if draws.cached:
        if pipeline is not None:
            raise ConfigError("workload.classes", "prefix or session", "plain serving (no pipeline) for now")
        cache = _cache_arrays(setup, draws, output)
    state = new_state(
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
        pipeline,
        draws.concurrency,
        draws.closed,
        draws.think_s,
        cache,
    )
    run_loop(state, jit, progress)
    rows, resources = (0, 0) if pipeline is None else (pipeline["rows"], pipeline["resources"].shape[1])
    return Outcome.of(state, draws.arrival_s.size, rows, resources)


def _cache_arrays(setup: ServingSetup, draws: Draws, output: np.ndarray) -> dict:
    """The loop's prefix-cache and session arrays (:func:`~hermes_fast.kernels.serving.new_state`'s ``cache``):
    what names each request's blocks, at the entry pool's block size, when a pool that is not a decode pool caches;
    a table of four times the most entries a replica can hold (its KV blocks, or every block of the run if fewer: a
    quarter full at most, a probe seldom goes past the home slot, whose branch then predicts well)."""
    pools = np.array(
        [int(p.engine is not None and bool(p.engine.prefix_cache) and p.role != "decode") for p in setup.pools]
    )
    n = draws.arrival_s.size
    chains, lengths, ids = np.zeros((1, CHAIN_ROWS), dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(0)
    block, slots, tier_slots = 1, 1, 1
    if pools.any():
        block = int(setup.pools[0].engine.batching.block_size_tokens)
        chains, lengths, ids = block_chains(
            draws.prompt_tokens, output, block, draws.stream, draws.prefix_key, draws.prefix_tokens,
            draws.hash_ids, draws.hash_block_tokens,
        )  # fmt: skip
        total = int(lengths.sum())
        entries = min(max(p.kv_blocks for p, on in zip(setup.pools, pools, strict=True) if on), total)
        slots = 1 << int(4 * entries + 1).bit_length()
        tier = min(max(p.tier_blocks for p in setup.pools), total)  # (a second-level tier's table)
        tier_slots = 1 << int(2 * tier + 1).bit_length() if tier > 0 else 1
    return {
        "chains": chains,
        "lengths": lengths,
        "ids": ids,
        "block": block,
        "hash_block": draws.hash_block_tokens,
        "slots": slots,
        "tier_slots": tier_slots,
        "pools": pools,
        "next_turn": draws.next_turn,
        "prev_turn": draws.prev_turn,
    }


def _in_send_order(draws: Draws, run: Outcome) -> tuple[Draws, Outcome]:
    """Sessions' later turns are sent as earlier answers are read: the requests reordered by the time they were
    sent (never sent: last), as the metrics read them."""
    order = np.argsort(np.where(np.isnan(run.sent_s), np.inf, run.sent_s), kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    moved = {f: getattr(run, f)[order] for f in Outcome.REQUEST_FIELDS}
    moved["arrival_s"] = np.where(np.isinf(run.arrival_s), run.sent_s, run.arrival_s)[order]  # (a turn's: sent)

    def link(x):
        return np.where(x >= 0, inv[np.maximum(x, 0)], -1)[order]

    d = {f: getattr(draws, f)[order] for f in ("request_class", "prompt_tokens", "output_tokens", "stream")}
    d["prefix_key"], d["arrival_s"] = draws.prefix_key[order], moved["arrival_s"]
    d.update(prefix_tokens=draws.prefix_tokens[order], turn=draws.turn[order], route_u=draws.route_u[:, order])
    d.update(think_s=draws.think_s[order], next_turn=link(draws.next_turn), prev_turn=link(draws.prev_turn))
    return replace(draws, **d), replace(run, **moved)


def run_pipeline(
    setup: PipelineSetup,
    draws: Draws,
    rng: np.random.Generator,
    horizon_s: float | None = None,
    fast_forward: bool = True,
    warmup: int = 0,
    jit: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Run one replicate of a pipeline scenario; stage draws come from ``rng`` after the workload's."""
    arrays = dict(setup.arrays)
    arrays["draws"] = draw_stage_values(setup, draws.arrival_s.size, rng)
    arrays["request_class"] = draws.request_class
    arrays["answer_tokens"] = draws.output_tokens
    arrays["warmup"] = warmup
    return run_serving(setup.serving, draws, horizon_s, fast_forward, jit, arrays, progress)


def simulate(
    scenario: Scenario | Mapping | str | None = None,
    n_requests: int = 10_000,
    seed: int = 0,
    replicates: int = 1,
    keep_requests: bool = False,
    fast_forward: bool = True,
    point: int = 0,
    calibration=None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Simulate ``n_requests`` arrivals of the scenario's workload on its serving engines.

    Parameters
    ----------
    scenario : Scenario, mapping, str, pathlib.Path or None, default None
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or YAML text; None: the embedded
        default scenario (Llama-3.1-8B on one H100, Poisson arrivals at 10 requests/s).
    n_requests : int, default 10000
        Arrivals per replicate (requests, at most 1e8).
    seed : int, default 0
        The run's seed (>= 0); replicate ``r`` of grid point ``point`` draws from
        ``SeedSequence(seed, (point, r))``.
    replicates : int, default 1
        Independent repetitions (a ``replicate`` dim; see :func:`hermes_fast.confidence_interval`).
    keep_requests : bool, default False
        Also return per-request variables (``request_*``: times in seconds, token counts; dims replicate x
        request), as :func:`hermes_fast.slo_goodput` and :func:`hermes_fast.plot.latency_cdf` need.
    fast_forward : bool, default True
        Commit runs of decode-only iterations at once (identical results, much faster).
    point : int, default 0
        The grid point index whose seed stream to draw from (what :func:`hermes_fast.sweep` passes: a sweep's
        point ``i`` equals ``simulate(point scenario, seed=seed, point=i)``).
    calibration : str, Calibration, pathlib.Path, list or None, default None
        None or ``"default"`` (shipped calibrations), ``"none"`` (uncalibrated), a Calibration, name or
        file, or a list (see :class:`~hermes_fast.resolve.Catalog`); named in the ``calibration`` attr.
    progress : bool or None, default None
        A progress bar of requests served (``tqdm.auto``: a widget in notebooks, stderr elsewhere): None shows
        it once the run has taken two seconds, True from the start, False never. A first run's compile is
        announced on stderr either way.

    Returns
    -------
    xarray.Dataset
        Latency quantiles in seconds (``ttft_s``, ``tpot_s``, ``itl_s``, ``e2e_s``, ``queue_s``, dim
        ``quantile``) and their means, throughput (requests and tokens per second), goodput, per-pool
        utilisation (dim ``pool``), request counts, energy (joules) and cost (USD per million tokens), per
        replicate; pipeline scenarios add per-stage (dim ``stage``) and per-link (dim ``link``) variables.
        Units are in each variable's attrs.

    Raises
    ------
    ConfigError
        For an invalid scenario or catalog reference (naming the dotted path), or an ``n_requests``,
        ``replicates`` or ``seed`` that is not an integer in range.

    Examples
    --------
    >>> ds = hf.simulate(n_requests=200, seed=1)
    >>> ds.ttft_s.dims
    ('replicate', 'quantile')
    >>> int(ds.completed_requests.sel(replicate=0))
    200
    >>> bool(ds.ttft_s.sel(quantile=0.99, replicate=0) > ds.ttft_s.sel(quantile=0.5, replicate=0))
    True
    """
    resolved = resolve_scenario(scenario, "default" if calibration is None else calibration)
    sc = resolved.scenario
    for name, value, low in (("n_requests", n_requests, 1), ("replicates", replicates, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(name, value, f"an integer >= {low}")
    if n_requests > _MAX_REQUESTS:
        raise ConfigError("n_requests", n_requests, f"at most {_MAX_REQUESTS:g} requests per replicate")
    check_warmup(sc.serving, n_requests)
    setup, pipe = prepare(resolved)
    per_rep = []
    requests = []
    bar = None if progress is False else _ProgressBar(n_requests * replicates, 0.0 if progress else 2.0)
    for rep in range(replicates):
        report = None if bar is None else bar.reporter(rep * n_requests)
        rng = rng_for(seed, point, rep)
        summary, draws, run = simulate_replicate(sc, setup, pipe, n_requests, rng, fast_forward, report)
        per_rep.append(summary)
        if keep_requests:
            requests.append(_request_vars(draws, run))
    if bar is not None:
        bar.close()
    ds = assemble(per_rep, setup, pipe)
    if keep_requests:
        for name in requests[0]:
            ds[name] = data_array(name, np.stack([r[name] for r in requests]), ("replicate", "request"))
    ds.attrs.update(
        {
            "title": f"hermes_fast simulation: {sc.name}",
            "scenario": sc.name,
            "serving": ", ".join(f"{p.name} ({p.role}, {p.replicas} replica(s))" for p in setup.pools),
            "n_requests": n_requests,
            "seed": seed,
            "fast_forward": int(fast_forward),
            **provenance(),
            "calibration": resolved.describe_calibrations(_devices(sc)),
        }
    )
    ds.attrs["warnings"] = validity_warnings(ds)
    return ds


class _ProgressBar:
    """Requests served over all replicates, shown (``tqdm.auto``) once the serving has taken ``delay_s``: the bar
    starts at the first report, after the loop is compiled, so a first run's compile does not count."""

    def __init__(self, total: int, delay_s: float):
        self.total, self.delay_s, self.bar = total, delay_s, None

    def reporter(self, before: int) -> Callable[[int], None]:
        def report(served: int) -> None:
            if self.bar is None:
                self.bar = tqdm(total=self.total, unit="req", unit_scale=True, delay=self.delay_s, desc="simulate")
            self.bar.update(before + served - self.bar.n)

        return report

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _devices(sc: Scenario) -> list[str]:
    """Every device the scenario's engines and pipeline stages run on."""
    names = [e.device for e in sc.engines]
    names += [st.device for c in sc.workload.classes for st in c.pipeline if st.device is not None]
    return names


def prepare(resolved: ResolvedScenario) -> tuple[ServingSetup, PipelineSetup | None]:
    """The pools (and, for pipeline scenarios, the stage tables) of a resolved scenario."""
    if any(c.pipeline for c in resolved.scenario.workload.classes):
        pipe = build_pipeline(resolved)
        return pipe.serving, pipe
    return build_serving(resolved), None


def simulate_replicate(
    sc: Scenario,
    setup: ServingSetup,
    pipe: PipelineSetup | None,
    n_requests: int,
    rng: np.random.Generator,
    fast_forward: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, Draws, Outcome]:
    """Draw, run and summarise one replicate: (summary variables, draws, final loop state)."""
    draws = draw_workload(sc.workload, n_requests, rng)
    if pipe is not None:
        warm = min(sc.serving.warmup_requests, max(n_requests - 1, 0))
        run = run_pipeline(pipe, draws, rng, sc.serving.horizon_s, fast_forward, warm, progress=progress)
    else:
        run = run_serving(setup, draws, sc.serving.horizon_s, fast_forward, progress=progress)
        if draws.sessions:
            draws, run = _in_send_order(draws, run)
    summary = summarize(setup, draws, run, sc.serving)
    if pipe is not None:
        summary.update(summarize_stages(pipe, run, summary))
    return summary, draws, run


def _request_vars(draws: Draws, run: Outcome) -> dict[str, np.ndarray]:
    extra = {}
    if draws.cached:
        extra = {
            "request_prefix_hit_tokens": run.prefix_hit_tokens.copy(),
            "request_session": draws.stream,
            "request_turn": draws.turn,
        }
    return extra | {
        "request_arrival_s": run.arrival_s.copy(),
        "request_sent_s": run.sent_s.copy(),
        "request_class": draws.request_class,
        "request_prompt_tokens": draws.prompt_tokens,
        "request_context_tokens": run.context_tokens.copy(),  # (copies: the run's tables can go)
        "request_output_tokens": run.answer_tokens.copy(),
        "request_queue_s": run.queue_wait_s.copy(),
        "request_prefill_start_s": run.admit_s.copy(),
        "request_prefill_end_s": run.prefill_end_s.copy(),
        "request_first_token_s": run.first_token_s.copy(),
        "request_completion_s": run.done_s.copy(),
        "request_transfer_s": run.transfer_s.copy(),
        "request_preemptions": run.preemptions.copy(),
        "request_status": run.status.astype(np.int8),
        "request_replica": run.entry_replica.copy(),
        "request_decode_replica": run.decode_replica.copy(),
    }


STAGE_VARS = ("stage_time_s", "stage_queue_s", "stage_transfer_s", "stage_visits")
LINK_VARS = ("link_utilization", "link_bytes", "link_transfers", "link_transfer_mean_s")


def summary_dims(name: str, value) -> tuple[str, ...]:
    """The dims of summary variable ``name`` of one replicate (``value``: its value there)."""
    if np.ndim(value) == 0:
        return ()
    if name in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
        return ("quantile",)
    if name == "rejected_by_reason":
        return ("reason",)
    if name in STAGE_VARS:
        return ("stage",)
    if name in LINK_VARS:
        return ("link",)
    if name == "ttft_turn_mean_s":
        return ("turn",)
    return ("pool",)


def assemble(per_rep: list[dict], setup: ServingSetup, pipe: PipelineSetup | None = None) -> xr.Dataset:
    """One Dataset from per-replicate summaries (a ``replicate`` dim; pools, stages and links as coordinates)."""
    coords = {
        "replicate": np.arange(len(per_rep)),
        "quantile": np.array(QUANTILES),
        "pool": [p.name for p in setup.pools],
        "reason": list(REASONS),
    }
    if "ttft_turn_mean_s" in per_rep[0]:
        coords["turn"] = np.arange(1, TURN_BINS + 1)
    if pipe is not None:
        coords["stage"] = list(pipe.rows)
        coords["link"] = list(pipe.resources)
    ds = xr.Dataset(coords=coords)
    for name, first in per_rep[0].items():
        values = np.stack([r[name] for r in per_rep])
        ds[name] = data_array(name, values, ("replicate", *summary_dims(name, first)))
    roles = xr.DataArray([p.role for p in setup.pools], dims=("pool",), attrs={"long_name": "pool role"})
    return ds.assign_coords(pool_role=roles)  # a coordinate along pool, as in a sweep
