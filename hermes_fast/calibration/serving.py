"""Measured serving runs against simulated ones: each run of :mod:`hermes_fast.calibration.serving_runs` (its
scenario and the requests its harness sent) is simulated a few times, and its metrics are computed as the harness
computes them.

- :func:`predict_serving` simulates runs (``num_prompts`` requests each, several replicates averaged),
  :func:`harness_metrics` computes one replicate's metrics, :func:`serving_errors` sets them beside the
  measured values and :func:`error_summary` gives median / p90 |error| and the signed mean per stack and metric.

Stack costs (``frontend_s``, ``step_overhead_s``, ...) come from the stack entries; ``costs=`` replaces them per
entry (what ``benchmarks/fit_stacks.py`` varies): :func:`prepare_run` builds a run's pools once and
:func:`simulate_prepared` re-runs them with other costs without rebuilding. The run side (reading the file,
scenarios, requests) is re-exported here, so ``serving.serving_runs`` and the rest keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..compile import step_host_s
from ..config.base import ConfigError
from ..config.stack import Stack, needs_sink_kernels
from ..kernels import layout as L
from ..kernels.serving import Outcome, Status
from ..kernels.serving import state as loop
from ..metrics import itl_quantiles
from ..pools import ServingSetup, build_serving
from ..resolve import HOST_COSTS, resolve_scenario
from ..simulate import run_serving
from ..sizes import attention_tp, query_heads_per_kv_head
from ..workload import rng_for
from .calibration import shipped_calibrations
from .serving_runs import (
    COST_FIELDS,
    FIT_METRICS,
    METRICS,
    REPORT_METRICS,
    RUN_KEY,
    SERVING_RUNS,
    SHAREGPT_LENGTHS,
    ServingRun,
    run_note,
    serving_runs,
    skip_reason,
    stack_entry,
)
from .serving_scenario import harness_draws, run_stack_fields, serving_scenario

__all__ = [
    "SERVING_RUNS",
    "SHAREGPT_LENGTHS",
    "METRICS",
    "FIT_METRICS",
    "REPORT_METRICS",
    "COST_FIELDS",
    "RUN_KEY",
    "ServingRun",
    "PreparedRun",
    "serving_runs",
    "stack_entry",
    "skip_reason",
    "run_note",
    "serving_scenario",
    "run_stack_fields",
    "harness_draws",
    "harness_metrics",
    "prepare_run",
    "simulate_prepared",
    "predict_serving",
    "serving_errors",
    "error_summary",
    "default_replicates",
]


def harness_metrics(run: Outcome) -> dict[str, float]:
    """One replicate's metrics as vLLM's ``benchmark_serving`` / SGLang's ``bench_serving`` compute them.

    Over completed requests: TTFT = first token - send (the front end included), E2E = completion - send; TPOT
    per request (E2E - TTFT) / (output - 1) for outputs over one token, then mean / median / p99 (numpy's linear
    percentile); ITL: every gap between a request's successive tokens pooled over requests (mean exact, median
    and p99 from the loop's histogram, 1% bins); throughputs over the benchmark's duration, t = 0 (the first
    send) to the last completion. Not harness metrics: ``queue_mean_s``, the mean wait from joining the engine's
    queue to first admission to a batch, and ``front_end_mean_s``, from send to joining it (the API front end's
    latency and the wait for its thread)."""
    done = run.status == Status.DONE
    sent, first, end = run.sent_s[done], run.first_token_s[done], run.done_s[done]
    out = run.answer_tokens[done].astype(np.float64)
    res = dict.fromkeys((*METRICS, "queue_mean_s", "front_end_mean_s"), math.nan)
    if not done.any():
        return res
    ttft, e2e = first - sent, end - sent
    res["ttft_mean_s"], res["ttft_median_s"] = float(ttft.mean()), float(np.median(ttft))
    res["ttft_p99_s"] = float(np.percentile(ttft, 99))
    many = out > 1
    if many.any():
        tpot = (e2e[many] - ttft[many]) / (out[many] - 1)
        res["tpot_mean_s"], res["tpot_median_s"] = float(tpot.mean()), float(np.median(tpot))
        res["tpot_p99_s"] = float(np.percentile(tpot, 99))
    if run.itl_count > 0:
        q = itl_quantiles(run.itl_histogram)  # QUANTILES = (0.5, 0.9, 0.95, 0.99)
        res["itl_mean_s"] = run.itl_sum_s / run.itl_count
        res["itl_median_s"], res["itl_p99_s"] = float(q[0]), float(q[3])
    res["e2e_median_s"] = float(np.median(e2e))
    res["queue_mean_s"] = float(np.mean(run.queue_wait_s[done]))
    res["front_end_mean_s"] = float(np.mean(run.enqueued_s[done] - sent))
    start = min(float(run.sent_s.min()), 0.0)
    duration = float(end.max()) - start
    res["benchmark_duration_s"] = duration
    res["output_throughput_token_per_s"] = float(out.sum()) / duration if duration > 0 else math.nan
    res["request_throughput_per_s"] = float(done.sum()) / duration if duration > 0 else math.nan
    return res


# ---------------------------------------------------------------------------------------------- simulating


def default_replicates(run: ServingRun) -> int:
    """Replicates for a run: about 1000 simulated requests in all, 2 to 8 (short runs are noisy: a 50-request
    run at 10 req/s is a 5-s ramp)."""
    n = int(float(run.settings["num_prompts"]))
    return int(min(8, max(2, round(1000 / n))))


def _calibration(run: ServingRun, calibration) -> object:
    """``calibration`` for this run: ``"stack"`` picks the device's ``-vllm`` calibration for vLLM runs where one is
    shipped (else the default); anything else passes through (``"default"``, ``"none"``, a name or file)."""
    if calibration != "stack":
        return calibration
    name = f"{run.settings['device']}-vllm"
    if stack_entry(run) in ("vllm", "vllm-0.8") and name in shipped_calibrations():
        return name
    return "default"


@dataclass(frozen=True)
class PreparedRun:
    """A run with its pools built once (:func:`prepare_run`): re-run with other stack costs by
    :func:`simulate_prepared` without rebuilding."""

    run: ServingRun
    setup: ServingSetup
    costs: Mapping[str, float]  # the stack costs the setup was built with (after the entry's and the run's own)
    n_layers: int
    step_ranks: int  # the ranks an iteration coordinates (TP x CP: compile.step_host_s)
    calibration: str
    stack: Stack  # the run's stack as its scenario resolved it (with_costs replaces its costs)
    attention_sinks: bool  # the run's model has attention sinks
    experts: str  # the run's experts' storage format (Dtypes.experts)
    compute_capability: float | None  # the run's device's
    query_group: float | None  # query heads per KV head on a device (sizes.query_heads_per_kv_head; None: MLA)
    kv_dtype: str  # the run's KV cache format (Dtypes.kv)
    run_fields: Mapping = field(default_factory=dict)  # the stack fields the run's flags set (run_stack_fields)

    @property
    def moe_extras_apply(self) -> bool:
        """Whether the stack's MoE extras describe the kernels of the run's experts (Stack.moe_extras_apply)."""
        return self.stack.moe_extras_apply(self.experts, self.compute_capability)

    @property
    def sink_kernels(self) -> bool:
        """Whether the run's model needs sink-capable attention kernels on its device (whatever the costs)."""
        return needs_sink_kernels(self.attention_sinks, self.compute_capability)

    @property
    def cuda_core_decode(self) -> bool:
        """Whether the run's stack runs its decode attention on CUDA cores (Stack.cuda_core_decode)."""
        return self.stack.cuda_core_decode(self.query_group, self.kv_dtype, self.compute_capability)


def _stack_costs(resolved) -> dict[str, float]:
    eng = resolved.engines[0]
    eff, st = eng.device.efficiency, eng.stack
    return {k: getattr(eff if k in HOST_COSTS else st, k) for k in COST_FIELDS}


def prepare_run(run: ServingRun, calibration="default", costs: Mapping[str, float] | None = None) -> PreparedRun:
    """Resolve and compile a run's scenario (:func:`serving_scenario`) once."""
    cal = _calibration(run, calibration)
    resolved = resolve_scenario(serving_scenario(run, costs), cal)
    setup = build_serving(resolved)
    eng = resolved.engines[0]
    return PreparedRun(
        run,
        setup,
        _stack_costs(resolved),
        eng.model.n_layers,
        eng.engine.parallel.tp * eng.engine.parallel.cp,
        resolved.describe_calibrations([eng.engine.device]),
        eng.stack,
        eng.model.attention_sinks,
        eng.engine.dtypes.experts,
        eng.device.compute_capability,
        query_heads_per_kv_head(eng.model, attention_tp(eng.engine.parallel)),
        eng.engine.dtypes.kv,
        run_stack_fields(run),
    )


def with_costs(prep: PreparedRun, costs: Mapping[str, float] | None) -> ServingSetup:
    """The prepared pools with stack costs replaced (fields of :data:`COST_FIELDS`; others kept): the slots
    :func:`hermes_fast.compile.compile_engine` and :func:`hermes_fast.pools.pool_arrays` fill from them."""
    if not costs:
        return prep.setup
    c = {**prep.costs, **costs}
    c.update((k, v) for k, v in prep.run_fields.items() if k in c)  # (the run's own flags win, as in its scenario)
    # the stack with these costs: its own rules pick the kernels' extras and the thread's share, as compile's do
    stack = replace(prep.stack, **{k: c[k] for k in COST_FIELDS if k not in HOST_COSTS})
    params, pf = prep.setup.params.copy(), prep.setup.pool_float.copy()
    params[0, L.OH_STEP] = step_host_s(c["step_overhead_s"], c["step_overhead_per_tp_rank_s"], prep.step_ranks)
    params[0, L.OH_SEQ] = c["sequence_overhead_s"]
    if params[0, L.GRAPH_COUNT] > 0:
        params[0, L.GRAPH_EAGER_S] = stack.eager_launch_s_per_layer * prep.n_layers
    params[0, L.PREFILL_ATTN_EXTRA] = stack.prefill_attention_extra_for(prep.attention_sinks, prep.compute_capability)
    params[0, L.DECODE_ATTN_EXTRA] = stack.decode_attention_extra_for(
        prep.query_group, prep.kv_dtype, prep.compute_capability
    )
    params[0, L.MOE_COMPUTE_EXTRA], params[0, L.MOE_MEMORY_EXTRA] = stack.moe_extras(
        prep.experts, prep.compute_capability
    )
    pf[loop.PF_FRONTEND_S, 0] = stack.frontend_s
    pf[loop.PF_FRONTEND_SERIAL_S, 0] = stack.thread_serial_s
    pf[loop.PF_FRONTEND_TOKEN_S, 0] = stack.thread_token_s
    return replace(prep.setup, params=params, pool_float=pf)


def simulate_prepared(
    prep: PreparedRun,
    costs: Mapping[str, float] | None = None,
    replicates: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The run's metrics (:func:`harness_metrics`) averaged over replicates; replicate ``r`` draws from
    ``rng_for(seed, run.key, r)``, so the objective of a fit is deterministic and common to every cost tried."""
    setup = with_costs(prep, costs)
    reps = default_replicates(prep.run) if replicates is None else replicates
    per = []
    for r in range(reps):
        draws = harness_draws(prep.run, rng_for(seed, prep.run.key, r))
        per.append(harness_metrics(run_serving(setup, draws)))
    return {
        m: float(np.nanmean([p[m] for p in per])) if any(np.isfinite(p[m]) for p in per) else math.nan for m in per[0]
    }


def predict_serving(
    runs: Iterable[ServingRun],
    calibration="default",
    costs: Mapping[str, Mapping[str, float]] | None = None,
    replicates: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Simulate measured runs.

    Parameters
    ----------
    runs : iterable of ServingRun
        From :func:`serving_runs`.
    calibration : str, default "default"
        Kernel calibrations: ``"default"`` (the devices' shipped ones), ``"none"``, ``"stack"`` (the ``-vllm``
        calibrations for vLLM runs), or a calibration name or file.
    costs : mapping or None, default None
        Per stack entry, host and front-end costs replacing the entry's (fields of :data:`COST_FIELDS`).
    replicates : int or None, default None
        Replicates per run (None: :func:`default_replicates`).
    seed : int, default 0

    Returns
    -------
    list of dict
        Per run: ``run`` (the ServingRun), ``skip`` (why it was not simulated, else None), ``predicted``
        (metric -> value), ``calibration`` (what the device used), ``replicates``.
    """
    out = []
    for run in runs:
        why = skip_reason(run)
        if why is not None:
            out.append({"run": run, "skip": why, "predicted": {}, "calibration": "", "replicates": 0})
            continue
        entry_costs = (costs or {}).get(stack_entry(run))
        try:
            prep = prepare_run(run, calibration, entry_costs)
        except ConfigError as e:  # e.g. the modelled memory holds less KV than one of the run's requests needs
            out.append({"run": run, "skip": f"the scenario cannot be built: {e}", "predicted": {}, "calibration": "",
                        "replicates": 0})  # fmt: skip
            continue
        reps = default_replicates(run) if replicates is None else replicates
        pred = simulate_prepared(prep, None, reps, seed)
        out.append({"run": run, "skip": None, "predicted": pred, "calibration": prep.calibration, "replicates": reps})
    return out


# ---------------------------------------------------------------------------------------------- errors


def serving_errors(predictions: Sequence[Mapping]) -> list[dict]:
    """One row per run and measured metric: predicted beside measured, ``error`` = predicted / measured - 1,
    ``run_note`` what is known against the run measuring what is simulated (:func:`run_note`); skipped runs give
    one row each with their ``skip`` reason."""
    rows = []
    for p in predictions:
        run = p["run"]
        base = {
            "run": run.index,
            "stack": run.stack,
            "stack_entry": stack_entry(run) or "",
            "stack_version": run.settings["stack_version"],
            "split": run.split,
            "label": run.label,
            "run_note": run_note(run),
        }
        if p["skip"]:
            rows.append({**base, "metric": "", "measured": math.nan, "predicted": math.nan, "error": math.nan,
                         "skip": p["skip"]})  # fmt: skip
            continue
        for metric, measured in run.metrics.items():
            pred = p["predicted"].get(metric, math.nan)
            err = pred / measured - 1.0 if measured > 0 and np.isfinite(pred) else math.nan
            rows.append({**base, "metric": metric, "measured": measured, "predicted": pred, "error": err, "skip": ""})
    return rows


def _report_rows(rows: Sequence[Mapping]) -> list[tuple[str, Mapping]]:
    """(report metric, row): each run counts once per report metric, by the first of its run metrics it has."""
    by_run: dict[int, dict[str, Mapping]] = {}
    for r in rows:
        if not r["skip"] and np.isfinite(r["error"]):
            by_run.setdefault(r["run"], {})[r["metric"]] = r
    out = []
    for metrics in by_run.values():
        for name, options in REPORT_METRICS.items():
            pick = next((metrics[m] for m in options if m in metrics), None)
            if pick is not None:
                out.append((name, pick))
    return out


def error_summary(rows: Sequence[Mapping], by: str = "report") -> list[dict]:
    """Median and p90 |error| and the signed mean, per stack entry, split and metric.

    ``by="report"``: the issue's four metrics (:data:`REPORT_METRICS`: a run without mean TTFT counts its median
    TTFT, without mean ITL its mean TPOT or medians); ``by="metric"``: every run metric apart."""
    groups: dict[tuple, list[float]] = {}
    if by == "report":
        items = _report_rows(rows)
    else:
        items = [(r["metric"], r) for r in rows if not r["skip"] and np.isfinite(r["error"])]
    for name, r in items:
        groups.setdefault((r["stack_entry"], r["split"], name), []).append(r["error"])
    order = list(REPORT_METRICS) if by == "report" else list(METRICS)
    out = []
    for (entry, split, name), errs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]) if kv[0][2] in order else 99)
    ):
        e = np.asarray(errs)
        out.append(
            {
                "stack_entry": entry,
                "split": split,
                "metric": name,
                "runs": int(e.size),
                "median_abs_error": float(np.median(np.abs(e))),
                "p90_abs_error": float(np.percentile(np.abs(e), 90)),
                "signed_mean_error": float(e.mean()),
            }
        )
    return out
