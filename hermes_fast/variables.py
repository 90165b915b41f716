"""Registry of every output variable: units, long_name and description, declared once.

Datasets built by hermes_fast take their attrs from here, so plots label themselves and units travel
with netCDF/zarr files. Look a variable up with ``VARIABLES[name]``; list them with ``hermes-fast
presets variables``. (The module is long because it declares every variable, one entry each.)

One quantity has one name whichever path produced it (``estimate``, ``simulate``, ``sweep``,
``capacity_search``), ending in its unit (``_s``, ``_bytes``, ``_tokens``, ``_per_s``, ...). Names changed to
keep to that are in :data:`RENAMED`: Datasets carry only the current name; where a variable is named by a
string (Pareto and plot objectives, the CLI's ``--x``/``--y``/``--var``) the old name still works, with a
``FutureWarning``, until the release after 0.1; :func:`rename_to_current` updates a Dataset saved before.

Examples
--------
``hf.VARIABLES`` maps each name to its :class:`Variable` (``units``, ``long_name``, ``description``):

>>> v = hf.VARIABLES["ttft_s"]
>>> v.units, v.long_name
('s', 'time to first token')
>>> hf.estimate().ttft_s.attrs["units"]  # Datasets carry those attrs
's'
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = [
    "Variable",
    "VARIABLES",
    "BOUND_NAMES",
    "CAPACITY_BOUND_NAMES",
    "PLAN_PRUNE_NAMES",
    "RENAMED",
    "current_name",
    "rename_to_current",
    "data_array",
]


@dataclass(frozen=True)
class Variable:
    name: str
    units: str
    long_name: str
    description: str
    extra: tuple[tuple[str, object], ...] = ()

    def attrs(self) -> dict:
        return {"units": self.units, "long_name": self.long_name, "description": self.description, **dict(self.extra)}


BOUND_NAMES = ("compute", "memory", "communication", "overhead")  # codes 0..3; -1: not applicable
_BOUND_ATTRS = (
    ("flag_values", np.arange(-1, len(BOUND_NAMES), dtype=np.int8)),
    ("flag_meanings", " ".join(("not_applicable", *BOUND_NAMES))),
)

VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        Variable("prefill_time_s", "s", "prefill time", "time to prefill the whole batch's prompts (zero load)"),
        Variable(
            "ttft_s",
            "s",
            "time to first token",
            "arrival to first token; estimate: zero-load (the batch's prefill); simulate: quantiles over requests",
        ),
        Variable(
            "decode_step_time_s", "s", "decode step time", "one decode iteration at context_tokens (NaN: encoders)"
        ),
        Variable(
            "tpot_s",
            "s",
            "time per output token",
            "estimate: decode iteration at the mean context, prompt + output/2 (NaN for encoders); simulate: "
            "quantiles over requests of (completion - first token) / (output tokens - 1)",
        ),
        Variable(
            "e2e_s",
            "s",
            "end-to-end latency",
            "estimate: ttft + (output_tokens - 1) x tpot (encoders: ttft); simulate: quantiles, arrival to completion",
        ),
        Variable(
            "throughput_output_token_per_s",
            "token/s",
            "output throughput",
            "answer tokens per second (thinking not included: see throughput_generated_token_per_s); estimate: of "
            "one replica over the whole static batch, prefill included (NaN: encoders); simulate: answer tokens of "
            "completed requests / s",
        ),
        Variable(
            "decode_throughput_token_per_s", "token/s", "decode throughput", "batch_size / tpot_s (NaN: encoders)"
        ),
        Variable("prefill_throughput_token_per_s", "token/s", "prefill throughput", "prompt tokens / prefill_time_s"),
        Variable("weights_bytes", "B", "weights per device", "weight bytes on the most loaded device of a replica"),
        Variable("kv_bytes_per_token", "B", "KV bytes per token", "KV-cache bytes one token occupies on one device"),
        Variable(
            "kv_capacity_tokens",
            "token",
            "KV capacity",
            "tokens of KV cache that fit per replica at memory_utilization, after weights and activations",
        ),
        Variable(
            "max_batch_size",
            "request",
            "largest batch that fits",
            "kv_capacity_tokens / (prompt + output) (NaN: encoders)",
        ),
        Variable("devices", "device", "devices per replica", "tp x pp x cp"),
        Variable(
            "fits",
            "1",
            "fits in memory",
            "layout valid for the model, weights fit, the batch's KV (prompt + output) fits, and each request is "
            "within the model's context",
        ),
        Variable(
            "decode_bound", "1", "decode step bound", "what dominates the decode step (-1: encoders)", _BOUND_ATTRS
        ),
        Variable("prefill_bound", "1", "prefill bound", "what dominates the prefill", _BOUND_ATTRS),
    ]
}

_SIM: list[Variable] = [
    Variable("ttft_mean_s", "s", "mean time to first token", "mean over completed requests"),
    Variable("tpot_mean_s", "s", "mean time per output token", "mean over completed requests with > 1 token"),
    Variable("e2e_mean_s", "s", "mean end-to-end latency", "mean over completed requests, arrival to completion"),
    Variable(
        "queue_s",
        "s",
        "queueing delay",
        "quantiles of the wait from joining an engine's queue (past its API front end) to first admission into an "
        "iteration; pipelines: the waits for batch slots summed over the stages",
    ),
    Variable("queue_mean_s", "s", "mean queueing delay", "mean of queue_s's wait over completed requests"),
    Variable(
        "itl_s",
        "s",
        "inter-token latency",
        "quantiles of the gap between consecutive tokens of a request, over all tokens (1% bins)",
    ),
    Variable("itl_mean_s", "s", "mean inter-token latency", "mean gap between consecutive tokens of a request"),
    Variable("duration_s", "s", "measured duration", "first measured arrival to last completion"),
    Variable("throughput_request_per_s", "request/s", "request throughput", "completed requests per second"),
    Variable("throughput_input_token_per_s", "token/s", "input throughput", "prompt tokens of completed requests / s"),
    Variable(
        "throughput_thinking_token_per_s",
        "token/s",
        "thinking throughput",
        "thinking tokens of completed requests / s: every token their LLM jobs generated (parallel branches "
        "included) less the answer's (0 without reasoning stages)",
    ),
    Variable(
        "throughput_generated_token_per_s",
        "token/s",
        "generated-token throughput",
        "every token the LLM jobs of completed requests generated / s: thinking (parallel branches included) + answer",
    ),
    Variable(
        "goodput_request_per_s",
        "request/s",
        "goodput",
        "completed requests per second that met both the TTFT and the TPOT SLO",
    ),
    Variable("slo_attainment", "1", "SLO attainment", "share of arrived requests that completed within both SLOs"),
    Variable("arrived_requests", "request", "arrived", "arrivals after the warm-up"),
    Variable("completed_requests", "request", "completed", "arrivals after the warm-up that completed"),
    Variable("rejected_requests", "request", "rejected", "requests that could never be served (see reason)"),
    Variable(
        "rejected_by_reason", "request", "rejected or dropped, by reason", "context, KV, token budget, full queue"
    ),
    Variable("dropped_requests", "request", "dropped", "arrivals turned away by a full queue (max_queue_requests)"),
    Variable(
        "unfinished_requests", "request", "unfinished", "requests still in the system when the run stopped (horizon)"
    ),
    Variable("preempted_requests", "request", "preempted", "requests preempted at least once"),
    Variable(
        "unstable",
        "1",
        "overloaded",
        "the system fell behind its arrivals: the number in system grew over the second half of the arrivals "
        "(one-sided t test on 20 equal-time increments, false-alarm rate 1%: validity.overload_test), a full "
        "queue dropped arrivals, or the horizon cut the arrivals short",
    ),
    Variable("backlog_requests", "request", "backlog at last arrival", "requests in the system at the last arrival"),
    Variable("rejected_fraction", "1", "rejected share", "rejected_requests / arrived_requests (after the warm-up)"),
    Variable("dropped_fraction", "1", "dropped share", "dropped_requests / arrived_requests (after the warm-up)"),
    Variable(
        "unfinished_fraction", "1", "unfinished share", "unfinished_requests / arrived_requests (after the warm-up)"
    ),
    Variable(
        "valid",
        "1",
        "valid result",
        "the statistics can be read at face value: not overloaded, at most 0.1% of the arrivals rejected, dropped "
        "or unfinished (validity.LOST_TOLERANCE), some request completed; invalid_reason says why not",
    ),
    Variable(
        "invalid_reason",
        "1",
        "why invalid",
        "bit field (0: valid): 1 overloaded (unstable), 2 rejected, 4 dropped, 8 unfinished (each: over 0.1% of "
        "the arrivals), 16 nothing completed",
        (
            ("flag_masks", np.array([1, 2, 4, 8, 16], dtype=np.int8)),
            ("flag_meanings", "overloaded rejected dropped unfinished nothing_completed"),
        ),
    ),
    Variable(
        "overload_statistic",
        "1",
        "overload test statistic",
        "t statistic of the growth of the number in system over the second half of the arrivals (overloaded "
        "above 2.54, the 99% quantile of Student's t on 19 df; NaN: under 40 admitted arrivals there, or a horizon "
        "cut the arrivals short)",
    ),
    Variable(
        "backlog_growth_request_per_s",
        "request/s",
        "backlog growth",
        "change in the number in system from the middle arrival to the last, per second (about arrival rate - "
        "service rate when overloaded; near 0 when stable)",
    ),
    Variable(
        "busy_fraction",
        "1",
        "pool busy fraction",
        "busy time of the pool's replicas / (replicas x run time): the share of time an iteration was running, "
        "however small (not how much of the hardware it used: see mfu, mbu); formerly utilization",
    ),
    Variable(
        "mfu",
        "1",
        "model FLOPs utilisation",
        "model FLOPs of the pool's iterations / (busy time x devices x the device's dense peak for the activation "
        "dtype): 2 x active parameters (embedding and LM head apart) per prefill or decode token, 2 x hidden x "
        "vocab per decode token, 2 x (d_qk + d_v) x heads x layers per attention query-key pair (prefill: "
        "attention pairs; decode: KV tokens read less prefill tokens); NaN: search pools (metrics.pool_mfu_mbu)",
    ),
    Variable(
        "mbu",
        "1",
        "memory-bandwidth utilisation",
        "bytes read / (busy time x devices x memory bandwidth): the weights once per iteration (weights_bytes x "
        "devices) + KV tokens attention read x KV bytes per token (all layers and TP ranks); NaN: search pools",
    ),
    Variable("mean_batch_size", "request", "mean batch size", "requests per iteration, averaged over iterations"),
    Variable("kv_occupancy", "1", "KV occupancy", "time-averaged resident KV tokens / KV capacity"),
    Variable("preemptions", "1", "preemptions", "preemption events in the pool"),
    Variable(
        "frontend_wait_s",
        "s",
        "front-end thread wait",
        "seconds requests waited for the pool's API server threads (stack frontend_serial_s), summed over the run",
    ),
    Variable(
        "prefix_hit_rate_token",
        "1",
        "prefix hit rate (tokens)",
        "prompt tokens found in the prefix cache (device or tier) at first admission / prompt tokens, measured "
        "completed requests",
    ),
    Variable(
        "prefix_hit_rate_request",
        "1",
        "prefix hit rate (requests)",
        "share of the measured completed requests whose first admission found a cached prefix",
    ),
    Variable(
        "ttft_turn_mean_s",
        "s",
        "mean TTFT per turn",
        "mean time to first token of the measured completed requests by session turn (turn 8: 8 and later)",
    ),
    Variable("prefix_saved_tokens", "token", "prefill tokens saved", "prompt tokens the prefix cache spared prefill"),
    Variable("prefix_evictions", "1", "prefix-cache evictions", "cached KV blocks evicted (LRU) for KV in the pool"),
    Variable(
        "prefix_tier_tokens",
        "token",
        "prefix tokens loaded from the tier",
        "prompt tokens loaded back from the prefix cache's second-level tier instead of prefilled",
    ),
    Variable(
        "prefix_tier_wait_s",
        "s",
        "tier loads' wait for a shared instance",
        "seconds loads from the prefix cache's tier waited for an instance other replicas share (summed over them)",
    ),
    Variable("prefix_tier_spills", "1", "prefix-cache spills", "evicted KV blocks copied to the second-level tier"),
    Variable(
        "prefix_cache_occupancy", "1", "prefix-cache occupancy", "cached KV blocks at the end / the pool's KV blocks"
    ),
    Variable("energy_j", "J", "energy", "device energy over the run: idle power + (peak - idle) x busy time"),
    Variable(
        "energy_j_per_token",
        "J/token",
        "energy per output token",
        "energy_j / answer tokens of the completed requests (thinking not counted: see energy_j_per_token_generated)",
    ),
    Variable(
        "energy_j_per_token_generated",
        "J/token",
        "energy per generated token",
        "energy_j / every token the completed requests' LLM jobs generated (thinking + answer)",
    ),
    Variable(
        "cost_usd_per_mtoken",
        "USD/Mtoken",
        "cost per million output tokens",
        "device-hours x price / answer tokens of the completed requests x 1e6 (thinking not counted: see "
        "cost_usd_per_mtoken_generated; NaN when a device has no price)",
    ),
    Variable(
        "cost_usd_per_mtoken_generated",
        "USD/Mtoken",
        "cost per million generated tokens",
        "device-hours x price / every token the completed requests' LLM jobs generated (thinking + answer) x 1e6 "
        "(NaN when a device has no price)",
    ),
    Variable(
        "stage_time_s",
        "s",
        "time in stage",
        "mean per completed request of the time from entering the stage (data transfer in included) to "
        "leaving it, summed over its visits; the stages add up to the mean end-to-end latency",
    ),
    Variable("stage_queue_s", "s", "queueing in stage", "mean per completed request of the wait for a batch slot"),
    Variable("stage_transfer_s", "s", "transfer into stage", "mean per completed request of moving the data in"),
    Variable("stage_visits", "1", "stage visits", "visits per completed request (reasoning rounds repeat)"),
    Variable("link_utilization", "1", "link utilisation", "share of the run a shared link or tier moved data"),
    Variable("link_bytes", "B", "bytes moved", "bytes moved over the shared link or tier instance"),
    Variable("link_transfers", "1", "transfers", "transfers completed on the shared link or tier instance"),
    Variable("link_transfer_mean_s", "s", "mean transfer time", "mean transfer duration, latency and sharing included"),
    Variable("events", "1", "events processed", "events the loop handled (iteration ends, hand-offs, arrivals)"),
    Variable(
        "fast_forwarded_iterations", "1", "fast-forwarded iterations", "decode iterations committed without an event"
    ),
    Variable("request_arrival_s", "s", "arrival time", "per request (a closed loop's: when its client sent it)"),
    Variable(
        "request_sent_s", "s", "send time", "its client sent it: latencies start here (after arrival under a cap)"
    ),
    Variable("request_class", "1", "request class", "index into workload.classes"),
    Variable(
        "request_context_tokens",
        "token",
        "context at the end",
        "pipelines: prefix, prompt, documents, tool results and outputs; otherwise the prompt",
    ),
    Variable("request_prompt_tokens", "token", "prompt tokens", "per request"),
    Variable(
        "request_output_tokens",
        "token",
        "output tokens",
        "answer tokens asked for, thinking not included (1 for encoders)",
    ),
    Variable(
        "request_queue_s",
        "s",
        "queueing delay",
        "joining an engine's queue (past its API front end) to first admission; pipelines: the waits for batch "
        "slots summed over the stages",
    ),
    Variable("request_prefill_start_s", "s", "prefill start", "first admission into an iteration"),
    Variable("request_prefill_end_s", "s", "prefill end", "prompt fully prefilled"),
    Variable("request_first_token_s", "s", "first token time", "first token delivered (after the KV hand-off)"),
    Variable("request_completion_s", "s", "completion time", "last token"),
    Variable("request_transfer_s", "s", "KV transfer time", "disaggregated KV hand-off duration (0: none)"),
    Variable("request_preemptions", "1", "preemptions", "times the request was preempted"),
    Variable("request_prefix_hit_tokens", "token", "prefix hit", "prompt tokens its first admission found cached"),
    Variable("request_session", "1", "session", "its session (token stream): the request itself without sessions"),
    Variable("request_turn", "1", "turn", "its turn in its session (0: the first, or no session)"),
    Variable(
        "request_status",
        "1",
        "status",
        "final state",
        (
            ("flag_values", np.arange(7, dtype=np.int8)),
            ("flag_meanings", "pending waiting running transferring done rejected dropped"),
        ),
    ),
    Variable("request_replica", "1", "replica", "replica that first admitted it (-1: none)"),
    Variable("request_decode_replica", "1", "decode replica", "disaggregated: replica that decoded it (-1: none)"),
]
VARIABLES.update({v.name: v for v in _SIM})

# what limits a capacity search, codes 1..6; 0: not computed (a sweep point not yet run)
CAPACITY_BOUND_NAMES = ("ttft", "tpot", "e2e", "slo_attainment", "unstable", "rate_max")
_CAPACITY_BOUND_ATTRS = (
    ("flag_values", np.arange(0, len(CAPACITY_BOUND_NAMES) + 1, dtype=np.int8)),
    ("flag_meanings", " ".join(("not_computed", *CAPACITY_BOUND_NAMES))),
)

_SWEEP: list[Variable] = [
    Variable(
        "capacity_request_per_s",
        "request/s",
        "capacity under SLO",
        "largest arrival rate whose run meets the capacity search's targets (bisection, within rel_tol; NaN: even "
        "the bracket's low end fails; equal to the bracket's high end when that meets them)",
    ),
    Variable(
        "capacity_bound",
        "1",
        "binding capacity target",
        "what limits capacity_request_per_s: the target most exceeded (value / bound) at the lowest rate that fails "
        "them (at rate_min_per_s when even it fails): ttft, tpot, e2e, slo_attainment, or unstable (overload "
        "alone); rate_max: the search bracket's high end meets every target",
        _CAPACITY_BOUND_ATTRS,
    ),
    Variable("output_token_per_usd", "token/USD", "output tokens per dollar", "1e6 / cost_usd_per_mtoken"),
    Variable("output_token_per_j", "token/J", "output tokens per joule", "1 / energy_j_per_token"),
    Variable(
        "generated_token_per_usd", "token/USD", "generated tokens per dollar", "1e6 / cost_usd_per_mtoken_generated"
    ),
    Variable("generated_token_per_j", "token/J", "generated tokens per joule", "1 / energy_j_per_token_generated"),
]
VARIABLES.update({v.name: v for v in _SWEEP})

# why the planner left a candidate layout out, codes 1..5; 0: kept (hermes_fast.plan.search.PRUNE_REASONS)
PLAN_PRUNE_NAMES = ("layout", "memory", "ttft", "tpot", "budget")
_PLAN_PRUNE_ATTRS = (
    ("flag_values", np.arange(0, len(PLAN_PRUNE_NAMES) + 1, dtype=np.int8)),
    ("flag_meanings", " ".join(("kept", *PLAN_PRUNE_NAMES))),
)

_PLAN: list[Variable] = [
    Variable("plan_devices", "device", "devices used", "devices the layout uses, every pool and replica"),
    Variable("plan_cost_usd_per_hour", "USD/h", "layout cost", "devices x their price per device-hour (NaN: no price)"),
    Variable(
        "plan_bound_request_per_s",
        "request/s",
        "throughput bound",
        "analytic bound from estimate: decode batch within the limits, KV and TPOT target / (TPOT x output tokens), "
        "prefill batch within the token budget / prefill time; colocated replicas / (1/prefill + 1/decode), "
        "disaggregated min(prefill pool, decode pool) (NaN: pruned)",
    ),
    Variable("plan_score", "1", "planner score", "what the planner ranks by: the bound, per device or per USD/h"),
    Variable(
        "plan_zero_load_ttft_s",
        "s",
        "zero-load TTFT",
        "one request's prefill and front end (+ KV hand-off if disaggregated)",
    ),
    Variable("plan_zero_load_tpot_s", "s", "zero-load TPOT", "one request's decode step at the mean context"),
    Variable("plan_decode_batch", "request", "decode batch of the bound", "per decode replica"),
    Variable("plan_pruned_by", "1", "prune reason", "why the layout was left out before simulation", _PLAN_PRUNE_ATTRS),
    Variable("plan_rank", "1", "rank by bound", "1: best score among the layouts kept; 0: pruned"),
    Variable("plan_verified", "1", "verified", "capacity-searched by simulation"),
    Variable("plan_verified_rank", "1", "rank by simulation", "1: best simulated capacity objective; 0: not verified"),
    Variable(
        "output_token_per_s_per_device",
        "token/s/device",
        "output tokens per second per device",
        "throughput_output_token_per_s at capacity / plan_devices",
    ),
]
VARIABLES.update({v.name: v for v in _PLAN})


# old name -> current name. throughput_token_per_s: estimate's name for what simulate calls
# throughput_output_token_per_s; kv_capacity_token: a count of tokens, named _tokens everywhere else;
# bound: also the low/mean/high dim of confidence_interval, and the decode step's twin of prefill_bound;
# utilization: a busy fraction (99% at a sixth of capacity), not how much of the hardware is used (mfu, mbu).
RENAMED: dict[str, str] = {
    "throughput_token_per_s": "throughput_output_token_per_s",
    "kv_capacity_token": "kv_capacity_tokens",
    "bound": "decode_bound",
    "utilization": "busy_fraction",
}


def current_name(name: str) -> str:
    """``name``, or the current name of a renamed variable (with a ``FutureWarning`` naming both).

    Parameters
    ----------
    name : str
        A variable name, current or old (:data:`RENAMED`).

    Returns
    -------
    str
        The current name.

    Examples
    --------
    >>> import warnings
    >>> from hermes_fast.variables import current_name
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     current_name("throughput_token_per_s")
    'throughput_output_token_per_s'
    >>> caught[0].category.__name__
    'FutureWarning'
    >>> current_name("ttft_s")  # a current name: unchanged, no warning
    'ttft_s'
    """
    new = RENAMED.get(name)
    if new is None:
        return name
    warnings.warn(f"variable {name!r} is now called {new!r}; the old name goes in the next release", FutureWarning, 3)
    return new


def rename_to_current(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (e.g. an estimate saved by hermes_fast 0.1) with its renamed variables under their current names.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset that may carry old variable names (:data:`RENAMED`); an old name whose current name is
        also in ``ds`` is left as it is.

    Returns
    -------
    xarray.Dataset
        ``ds`` with the old names renamed (no warning).

    Examples
    --------
    >>> from hermes_fast.variables import rename_to_current
    >>> old = hf.estimate().rename({"kv_capacity_tokens": "kv_capacity_token", "decode_bound": "bound"})
    >>> new = rename_to_current(old)
    >>> "kv_capacity_tokens" in new, "decode_bound" in new, "bound" in new
    (True, True, False)
    """
    return ds.rename({old: new for old, new in RENAMED.items() if old in ds.data_vars and new not in ds})


def data_array(name: str, data, dims: tuple[str, ...], coords: dict | None = None) -> xr.DataArray:
    """A DataArray named ``name`` with its registered attrs (KeyError for an unregistered name)."""
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=VARIABLES[name].attrs())
