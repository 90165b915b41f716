"""Summary statistics of a simulated run: latency quantiles, throughput (answer, thinking and generated tokens),
goodput, per-pool busy fraction, MFU and MBU, energy, cost, prefix-cache figures, per-stage times and confidence
intervals.

Latency statistics cover the requests after the warm-up; pool figures, energy and cost cover the whole run,
from the first arrival to the last event. Whether a run can be trusted (the overload test, the validity flags and
warnings) is :mod:`hermes_fast.validity`'s; :func:`summarize` records its flags with the rest.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import stats

from .kernels import layout as L
from .kernels.serving.outcome import ITL_LOG_MIN, ITL_PER_DECADE, Outcome, Status
from .validity import (
    REASON_CODES,
    unstable_flags,
    validity_flags,
)
from .variables import VARIABLES

__all__ = [
    "QUANTILES",
    "summarize",
    "summarize_stages",
    "confidence_interval",
    "itl_quantiles",
    "add_derived",
    "slo_goodput",
    "request_tpot_s",
    "meets_slo",
    "pool_mfu_mbu",
]

QUANTILES = (0.5, 0.9, 0.95, 0.99)


def _quantiles(x: np.ndarray) -> np.ndarray:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.full(len(QUANTILES), np.nan)
    return np.quantile(x, QUANTILES)


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def itl_quantiles(hist: np.ndarray) -> np.ndarray:
    """Quantiles of the inter-token gaps from the loop's log-spaced histogram (1% bin resolution)."""
    total = hist.sum()
    if total <= 0:
        return np.full(len(QUANTILES), np.nan)
    cdf = np.cumsum(hist) / total
    out = []
    for q in QUANTILES:
        b = int(np.searchsorted(cdf, q, side="left"))
        below = cdf[b - 1] if b > 0 else 0.0
        frac = (q - below) / (cdf[b] - below) if cdf[b] > below else 0.5
        out.append(10 ** (ITL_LOG_MIN + (b + frac) / ITL_PER_DECADE))
    return np.array(out)


def request_tpot_s(first_token_s, completion_s, output_tokens):
    """Each request's time per output token: (completion - first answer token) / (answer tokens - 1); NaN for
    one-token answers and requests that did not complete. numpy arrays or DataArrays (the one formula of the
    summary, :func:`slo_goodput` and the plots)."""
    return (completion_s - first_token_s) / xr.where(output_tokens > 1, output_tokens - 1, np.nan)


def meets_slo(done, ttft_s, tpot_s, output_tokens, ttft_target_s, tpot_target_s):
    """Requests that completed within both targets (a one-token answer has no TPOT to meet): what goodput and
    SLO attainment count, in the summary and in :func:`slo_goodput` (targets broadcast against the requests)."""
    return done & (ttft_s <= ttft_target_s) & ((output_tokens <= 1) | (tpot_s <= tpot_target_s))


def pool_mfu_mbu(pool, run: Outcome, reps: np.ndarray) -> tuple[float, float]:
    """(MFU, MBU) of an engine pool's replicas ``reps`` over their busy time (NaN: search pools, no busy time).

    Model FLOPs: ``2 x active parameters`` outside the embedding table and LM head per prefilled or decoded token,
    ``2 x hidden x vocab`` (the LM head) per decoded token (the prefill's one logit row per sequence left out),
    and ``2 x (d_qk + d_v) x heads x layers`` (the layers with attention; a linear-attention mixer's own FLOPs and
    state traffic are left out) per attention query-key pair: ``attention_pairs`` for the
    prefill (full-context: sliding windows not capped) and ``kv_read_tokens - prefill_tokens`` for the decodes
    (the KV the loop's attention read less the prefill chunks' own tokens: exact without chunking or cached
    prefixes; with them it also counts the earlier chunks' and prefix KV a prefill chunk reads, one pair per
    token per chunk). MFU = FLOPs / (busy_s x devices x the device's dense peak for the activation dtype).
    Bytes: the weights once per iteration (``weights_bytes`` of the most loaded device x devices: for MoE at
    small batches an upper bound) + ``kv_read_tokens`` x KV bytes per token (all layers, every TP rank's
    copy; one copy under attention DP). MBU = bytes / (busy_s x devices x memory bandwidth)."""
    ce = pool.compiled
    busy = float(run.busy_s[reps].sum())
    if ce is None or not busy > 0:
        return math.nan, math.nan
    p = ce.params
    layers, tp = p[L.N_LAYERS] - p[L.N_LIN], p[L.TP]  # layers with attention and a KV cache
    kv_copies = tp / p[L.ATT_DP]  # devices holding a share of one token's KV (1 under attention DP)
    heads = p[L.HEADS] * kv_copies
    prefill = float(run.prefill_tokens[reps].sum())
    decode = float(run.decode_tokens[reps].sum())
    kv_read = float(run.kv_read_tokens[reps].sum())
    pairs = float(run.attention_pairs[reps].sum())
    flops = ce.body_flop_per_token * (prefill + decode)
    flops += 2.0 * p[L.HIDDEN] * p[L.VOCAB] * decode * p[L.HAS_LM_HEAD]
    flops += 2.0 * (p[L.ATT_QK_PREFILL] + p[L.ATT_V_PREFILL]) * heads * layers * pairs
    flops += 2.0 * (p[L.ATT_QK_DECODE] + p[L.ATT_V_DECODE]) * heads * layers * max(kv_read - prefill, 0.0)
    d = pool.device
    peak = d.peak_flop_per_s.resolve(pool.engine.dtypes.activation)[0]
    moved = float(run.iterations[reps].sum()) * ce.weights_bytes * ce.devices
    moved += kv_read * p[L.KV_TOKEN_BYTES] * kv_copies * layers
    return flops / (busy * ce.devices * peak), moved / (busy * ce.devices * d.memory_bandwidth_bytes_per_s)


def summarize(setup, draws, run: Outcome, serving) -> dict[str, np.ndarray | float]:
    """Summary variables of one replicate (names registered in :mod:`hermes_fast.variables`)."""
    n = draws.arrival_s.size
    w = min(serving.warmup_requests, max(n - 1, 0))
    arrival = run.sent_s[w:]  # latencies start when the client sends a request
    status = run.status[w:]
    output = run.answer_tokens[w:]
    prompt = run.base_prompt_tokens[w:]
    first = run.first_token_s[w:]
    done_t = run.done_s[w:]
    done = status == Status.DONE
    ttft = first - arrival
    e2e = np.where(done, done_t - arrival, np.nan)
    tpot = request_tpot_s(first, done_t, output)
    queue = run.queue_wait_s[w:]
    out: dict[str, np.ndarray | float] = {}
    for name, x in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e), ("queue", queue)):
        x = np.where(done, x, np.nan)
        out[f"{name}_s"] = _quantiles(x)
        out[f"{name}_mean_s"] = _mean(x)
    out["itl_s"] = itl_quantiles(run.itl_histogram)
    out["itl_mean_s"] = run.itl_sum_s / run.itl_count if run.itl_count > 0 else math.nan
    # throughput over the measured requests: from the first measured arrival to the last completion
    last = float(np.nanmax(done_t)) if done.any() else math.nan
    window = last - arrival[0] if done.any() else math.nan
    n_done = int(done.sum())
    out["duration_s"] = window
    out["throughput_request_per_s"] = n_done / window if window > 0 else math.nan
    out["throughput_input_token_per_s"] = float(prompt[done].sum()) / window if window > 0 else math.nan
    out["throughput_output_token_per_s"] = float(output[done].sum()) / window if window > 0 else math.nan
    emitted = float(run.emitted_tokens[w:][done].sum())  # thinking (parallel branches included) + answer
    out["throughput_thinking_token_per_s"] = (emitted - float(output[done].sum())) / window if window > 0 else math.nan
    out["throughput_generated_token_per_s"] = emitted / window if window > 0 else math.nan
    slo = serving.slo
    good = meets_slo(done, ttft, tpot, output, slo.ttft_s, slo.tpot_s)
    out["goodput_request_per_s"] = int(good.sum()) / window if window > 0 else math.nan
    out["slo_attainment"] = int(good.sum()) / arrival.size
    out["arrived_requests"] = arrival.size
    out["completed_requests"] = n_done
    out["rejected_requests"] = int(np.count_nonzero(status == Status.REJECTED))
    out["dropped_requests"] = int(np.count_nonzero(status == Status.DROPPED))
    out["unfinished_requests"] = arrival.size - n_done - out["rejected_requests"] - out["dropped_requests"]
    out["preempted_requests"] = int(np.count_nonzero(run.preemptions[w:] > 0))
    reasons = run.reason[w:]
    out["rejected_by_reason"] = np.array([np.count_nonzero(reasons == code) for code in REASON_CODES.values()])
    out.update(unstable_flags(run.arrival_s, run.done_s, run.status, run.end_s))
    out.update(validity_flags(out))
    # pools, energy and cost over the whole run
    run_s = max(run.end_s - run.arrival_s[0], 0.0) if n else 0.0
    pools = setup.pools
    util, batch, kv, preempt, mfu, mbu, frontend_wait = (np.zeros(len(pools)) for _ in range(7))
    energy = 0.0
    dollars = 0.0
    priced = True
    for k, pool in enumerate(pools):
        reps = setup.replica_pool == k
        busy = np.minimum(run.busy_s[reps], run_s)  # (an iteration in flight at the horizon: its time up to it)
        iters = run.iterations[reps].sum()
        util[k] = busy.sum() / (reps.sum() * run_s) if run_s > 0 else 0.0
        batch[k] = run.batch_sum[reps].sum() / iters if iters else 0.0
        cap = pool.kv_capacity_tokens
        kv_s = np.minimum(run.kv_token_s[reps], cap * run_s)  # (likewise)
        kv[k] = kv_s.sum() / (cap * reps.sum() * run_s) if run_s > 0 else 0.0
        if pool.search is not None:
            kv[k] = math.nan
        preempt[k] = run.replica_preemptions[reps].sum()
        frontend_wait[k] = run.frontend_wait_s[reps].sum()
        mfu[k], mbu[k] = pool_mfu_mbu(pool, run, reps)
        d = pool.device
        devices = pool.devices
        energy += devices * (d.power_idle_w * run_s * reps.sum() + (d.power_peak_w - d.power_idle_w) * busy.sum())
        if d.price_usd_per_hour is None:
            priced = False
        else:
            dollars += devices * reps.sum() * d.price_usd_per_hour * run_s / 3600.0
    out["busy_fraction"] = util
    out["mfu"] = mfu
    out["mbu"] = mbu
    out["mean_batch_size"] = batch
    out["kv_occupancy"] = kv
    out["preemptions"] = preempt
    out["frontend_wait_s"] = frontend_wait
    tokens = float(run.answer_tokens[run.status == Status.DONE].sum())
    out["energy_j"] = energy
    out["energy_j_per_token"] = energy / tokens if tokens else math.nan
    out["cost_usd_per_mtoken"] = dollars / tokens * 1e6 if tokens and priced else math.nan
    generated = float(run.emitted_tokens[run.status == Status.DONE].sum())
    out["energy_j_per_token_generated"] = energy / generated if generated else math.nan
    out["cost_usd_per_mtoken_generated"] = dollars / generated * 1e6 if generated and priced else math.nan
    out["events"] = run.events
    out["fast_forwarded_iterations"] = run.fast_forwarded_iterations
    if getattr(draws, "cached", False):
        out.update(_prefix_metrics(setup, run, w, done))
        turn = np.minimum(draws.turn[w:], TURN_BINS - 1)
        out["ttft_turn_mean_s"] = np.array(
            [_mean(np.where(done & (turn == k), ttft, np.nan)) for k in range(TURN_BINS)]
        )
    return out


TURN_BINS = 8  # ttft_turn_mean_s: turns 1 .. 7 of a session, then 8 and later together


def _prefix_metrics(setup, run: Outcome, w: int, done: np.ndarray) -> dict[str, np.ndarray | float]:
    """Prefix caching: hit rates of the measured completed requests' first admissions (device and tier), and per
    pool the prefill tokens the device cache spared over the run, its evictions, its entries at the end over its
    KV blocks, and the tokens loaded back from its second-level tier, the seconds those loads waited for a tier
    instance other replicas share, and the blocks spilled there."""
    hit = run.prefix_hit_tokens[w:][done]
    prompt = run.prompt_tokens[w:][done]
    out: dict[str, np.ndarray | float] = {
        "prefix_hit_rate_token": float(hit.sum() / prompt.sum()) if prompt.sum() else math.nan,
        "prefix_hit_rate_request": float(np.count_nonzero(hit) / hit.size) if hit.size else math.nan,
    }
    saved, evicted, occupancy, tier, wait, spills = (np.zeros(len(setup.pools)) for _ in range(6))
    for k, pool in enumerate(setup.pools):
        reps = setup.replica_pool == k
        saved[k] = run.prefix_saved_tokens[reps].sum()
        evicted[k] = run.prefix_evictions[reps].sum()
        occupancy[k] = run.prefix_entries[reps].sum() / (pool.kv_blocks * reps.sum())
        tier[k] = run.prefix_tier_tokens[reps].sum()
        wait[k] = run.prefix_tier_wait_s[reps].sum()
        spills[k] = run.prefix_tier_spills[reps].sum()
    out["prefix_saved_tokens"] = saved
    out["prefix_evictions"] = evicted
    out["prefix_cache_occupancy"] = occupancy
    out["prefix_tier_tokens"] = tier
    out["prefix_tier_wait_s"] = wait
    out["prefix_tier_spills"] = spills
    return out


def summarize_stages(pipe, run: Outcome, summary: dict) -> dict[str, np.ndarray]:
    """Per stage (mean per completed request after the warm-up) and per shared link or tier instance.

    A stage's time runs from entering it (the data moving in included) to leaving it, so the stage
    times of a pipeline add up to the mean end-to-end latency when every request completes."""
    done = max(summary["completed_requests"], 1)
    arrival = run.arrival_s
    run_s = max(run.end_s - arrival[0], 0.0) if arrival.size else 0.0
    count = run.link_transfers
    return {
        "stage_time_s": run.stage_time_s / done,
        "stage_queue_s": run.stage_queue_s / done,
        "stage_transfer_s": run.stage_transfer_s / done,
        "stage_visits": run.stage_visits / done,
        "link_utilization": run.link_busy_s / run_s if run_s > 0 else np.zeros(count.size),
        "link_bytes": run.link_bytes.copy(),
        "link_transfers": count.copy(),
        "link_transfer_mean_s": np.where(count > 0, run.link_wait_s / np.maximum(count, 1), np.nan),
    }


def confidence_interval(ds: xr.Dataset, level: float = 0.95) -> xr.Dataset:
    """Student-t interval of the mean over ``replicate`` for every numeric variable that has that dim.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset with a ``replicate`` dim (:func:`hermes_fast.simulate` or :func:`hermes_fast.sweep` with
        ``replicates > 1``).
    level : float, default 0.95
        Confidence level, in (0, 1).

    Returns
    -------
    xarray.Dataset
        The variables that have the ``replicate`` dim, with it replaced by a ``bound`` dim (``low``, ``mean``,
        ``high``), in their own units; with one replicate low = high = mean (flags and codes such as ``valid``
        and ``invalid_reason`` left out). The ``confidence_level`` attr records ``level``.

    Raises
    ------
    ValueError
        When ``level`` is not in (0, 1).

    Examples
    --------
    >>> ds = hf.simulate(n_requests=200, seed=1, replicates=3)
    >>> ci = hf.confidence_interval(ds)
    >>> ci.goodput_request_per_s.dims
    ('bound',)
    >>> ci.goodput_request_per_s.round(2).values.tolist()  # requests/s: low, mean, high
    [8.33, 9.24, 10.16]
    """
    if not 0 < level < 1:
        raise ValueError(f"level: got {level!r}; expected a number in (0, 1)")
    n = ds.sizes.get("replicate", 1)
    half_t = stats.t.ppf(0.5 + level / 2, n - 1) if n > 1 else 0.0
    out = {}
    for name, da in ds.data_vars.items():
        if "replicate" not in da.dims or not np.issubdtype(da.dtype, np.number):
            continue
        if "flag_masks" in da.attrs or "flag_values" in da.attrs:  # codes (invalid_reason, ...): no mean
            continue
        mean = da.mean("replicate")
        half = half_t * da.std("replicate", ddof=1) / math.sqrt(n) if n > 1 else xr.zeros_like(mean)
        out[name] = xr.concat([mean - half, mean, mean + half], dim="bound").assign_attrs(da.attrs)
    res = xr.Dataset(out).assign_coords(bound=["low", "mean", "high"])
    res.attrs.update(ds.attrs, confidence_level=level)
    return res


DERIVED_OBJECTIVES = {  # name -> (source variable, numerator): name = numerator / source
    "output_token_per_usd": ("cost_usd_per_mtoken", 1e6),
    "output_token_per_j": ("energy_j_per_token", 1.0),
    "generated_token_per_usd": ("cost_usd_per_mtoken_generated", 1e6),
    "generated_token_per_j": ("energy_j_per_token_generated", 1.0),
}


def add_derived(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the derived objectives whose sources it has, for Pareto fronts and plots.

    ``output_token_per_usd`` (1e6 / ``cost_usd_per_mtoken``) and ``output_token_per_j`` (1 /
    ``energy_j_per_token``); attrs from the registry (:data:`hermes_fast.VARIABLES`). A derived variable
    already in ``ds`` is kept as it is.

    Parameters
    ----------
    ds : xarray.Dataset
        A simulation or sweep Dataset (one without the source variables comes back unchanged).

    Returns
    -------
    xarray.Dataset
        A copy of ``ds`` with the derived variables added.

    Examples
    --------
    >>> ds = hf.add_derived(hf.simulate(n_requests=200, seed=1))
    >>> ds.output_token_per_usd.attrs["units"], ds.output_token_per_j.attrs["units"]
    ('token/USD', 'token/J')
    >>> round(float(ds.output_token_per_usd[0] * ds.cost_usd_per_mtoken[0]))  # tokens/USD x USD/Mtoken
    1000000
    """
    out = ds.copy()
    for name, (source, numerator) in DERIVED_OBJECTIVES.items():
        if source in ds and name not in ds:
            out[name] = (numerator / ds[source]).assign_attrs(VARIABLES[name].attrs())
    return out


def slo_goodput(ds: xr.Dataset, ttft_s=None, tpot_s=None, warmup_requests: int = 0) -> xr.Dataset:
    """Goodput and SLO attainment of simulated runs under other TTFT and TPOT targets, from the per-request
    times of :func:`hermes_fast.simulate` with ``keep_requests=True`` (the same runs, every target).

    As in the summary: requests after ``warmup_requests``, goodput over the first measured arrival to the
    last completion, TPOT over the answer's tokens after the first.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`hermes_fast.simulate` Dataset with per-request variables (``keep_requests=True``).
    ttft_s, tpot_s : float, sequence of float or None, default None
        Targets in seconds, each becoming a dim (``ttft_slo_s``, ``tpot_slo_s``); None leaves that latency
        unconstrained.
    warmup_requests : int, default 0
        Requests (in arrival order) left out of the count, as ``serving.warmup_requests`` in the summary.

    Returns
    -------
    xarray.Dataset
        ``goodput_request_per_s`` (requests/s meeting every target) and ``slo_attainment`` (their share of
        the requests), over (``ttft_slo_s``, ``tpot_slo_s``, the other dims of ``ds``).

    Raises
    ------
    ValueError
        When ``ds`` has no per-request variables.

    Examples
    --------
    >>> sim = hf.simulate(n_requests=200, seed=1, keep_requests=True)
    >>> slo = hf.slo_goodput(sim, ttft_s=[0.1, 0.5], tpot_s=[0.01, 0.05])
    >>> slo.slo_attainment.dims
    ('ttft_slo_s', 'tpot_slo_s', 'replicate')
    >>> slo.slo_attainment.sel(replicate=0).values.tolist()
    [[0.375, 0.905], [0.42, 1.0]]
    """
    if "request_arrival_s" not in ds:
        raise ValueError("slo_goodput: needs per-request variables (simulate(..., keep_requests=True))")
    w = min(warmup_requests, max(ds.sizes["request"] - 1, 0))  # as the summary: at least one request measured
    d = ds.isel(request=slice(w, None))
    sent = d.request_sent_s if "request_sent_s" in d else d.request_arrival_s  # (older runs: sent at arrival)
    arrival, first, done_t = sent, d.request_first_token_s, d.request_completion_s
    out_tok = d.request_output_tokens
    done = d.request_status == Status.DONE
    window = done_t.where(done).max("request") - arrival.isel(request=0)
    targets, dims = [], []
    for name, values in (("ttft_slo_s", ttft_s), ("tpot_slo_s", tpot_s)):
        if values is None:  # unconstrained
            targets.append(np.inf)
            continue
        target = xr.DataArray(np.atleast_1d(np.asarray(values, dtype=np.float64)), dims=(name,))
        target = target.assign_coords({name: target.values})
        long = "TTFT target" if name.startswith("ttft") else "TPOT target"
        target[name].attrs.update(units="s", long_name=long)
        targets.append(target)
        dims.append(name)
    good = meets_slo(done, first - arrival, request_tpot_s(first, done_t, out_tok), out_tok, *targets).sum("request")
    res = xr.Dataset(
        {
            "goodput_request_per_s": (good / window).where(window > 0),
            "slo_attainment": good / d.sizes["request"],
        }
    )
    for name in res.data_vars:
        res[name].attrs.update(VARIABLES[name].attrs())
    return res.transpose(*dims, ...)
