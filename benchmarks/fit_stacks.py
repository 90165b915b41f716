"""Fit the serving stacks' host and front-end costs to the public serving runs, and report the held-back error.

Run:  python benchmarks/fit_stacks.py [--write] [--out errors.csv]     (about 8 minutes on one core)

For each catalog stack entry, the runs of ``hermes_fast/data/serving/serving_runs.csv`` marked ``split: fit`` that
can be simulated (:func:`hermes_fast.calibration.serving.skip_reason`) are simulated with the entry's costs as
free parameters (seeded replicates, so the objective is deterministic), and scipy's bounded least squares
minimises log(predicted / measured) over the metrics that identify the costs (:data:`FIT_METRICS`: mean and
median TTFT <-> the front end, mean TPOT and mean / median ITL <-> per-step and per-sequence costs, output
throughput <-> all of them), with a Cauchy loss (a residual beyond ~20% counts less and less, so a run no cost can
explain does not drag the others). Parameters a stack's runs cannot identify stay at 0 (see ``PARAMETERS``).
``--write --only ENTRY`` refits the entries a change to the loop affects and leaves the others' costs as shipped:
an entry with few runs sits in a flat valley of its loss (costs trading against each other), so a refit it does not
need moves its costs without fitting better.

The ``vllm`` entry (>= 0.11; async scheduling, off in the 0.11 runs without --async-scheduling): its per-step and
per-sequence costs are fitted to its dense-model ``fit`` runs (the FP8-KV blog's 20k-token prompts at concurrency 8,
GPUStack's and kvcached's Qwen3 runs; see ``DENSE_ONLY``), to the vLLM FP8-KV blog's single-request ITL fits
(``stack_facts.csv``: ITL = intercept + slope x input length on H100 and B200, BF16 and FP8 KV, each read at 1k and
32k input tokens) and to the ratios of its sync / async run pairs (:func:`async_pairs`, MoE ones included: the
kernels cancel in a ratio); then, those host costs held (``STAGES``), its MoE kernels' extras
(``moe_compute_extra``, ``moe_memory_extra``) on its MoE fit runs whose experts' format they describe
(``moe_extra_weights``: vLLM's fused-MoE kernels for BF16 and FP8 experts), and its sink-capable attention backend's
prefill extra (``sink_attention_extra``: TRITON_ATTN) on its runs of models with attention sinks on devices before
Hopper. Its front end's latency is fitted with the host costs on the TTFT of its low-load runs whose kernels'
prefill is a small part of it (``FRONT_END_ONLY_TTFT``); its API server thread's capacity is read off the fit runs
it limits (``FIXED``). No fit takes in a run with a ``run_note`` (a device known to be off its catalog entry,
``serving_runs.SLOW_DEVICE_SOURCES``; a sweep's first scenario on a cold server, ``serving_runs.COLD_SERVER_SWEEPS``).

The ``sglang`` entry's costs are kept as shipped (``KEPT``); its one later stage, the extra of FlashInfer's CUDA-core
decode kernel (``cuda_core_decode_extra``), is fitted on them, on its runs of models that kernel decodes: a plain run
fits a kept entry's later stages alone and writes only their costs, as ``--only ENTRY --stages-only`` does for any.

``--write`` puts the fitted values into hermes_fast/catalog/stacks.yaml (each with a ``sources`` entry); the
printed tables (fit and holdout rows apart, per stack and metric) are what benchmarks/RESULTS.md reports.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import re
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

import hermes_fast as hf
from hermes_fast.calibration import serving as S
from hermes_fast.calibration.serving_runs import catalog_model
from hermes_fast.config import ConfigError

# host time of one layer in an iteration run without CUDA graphs, at most: Python-driven eager execution (~15-20
# kernels a layer, each a Python call and a launch of 10-25 us); a fit that pushes against it is absorbing
# prefill time the kernels under-predict, not launch overhead (reported)
EAGER_MAX = 0.5
REPLICATES = 4  # per run in the fit (the validation afterwards uses default_replicates: ~1000 requests a run)
SEED = 0
# costs set from a published figure instead of fitted: (value s, source)
FIXED = {
    "trtllm": {
        "frontend_s": (
            15.563e-3,
            "not identifiable from its fit runs (the TTFT of the 4 trtllm-serve runs built from main, 2025-04, grows "
            "1.5-2.8 ms per prompt token, a queue in front of that build's context phase that no per-request constant "
            "represents); taken as BLIS / inference-sim's fitted QueueingTime of vLLM's API server on an H100 "
            "(stack_facts.csv blis.trained_physics.alpha0_queueing), trtllm-serve being the same kind of front end (a "
            "Python OpenAI-compatible server that tokenises and streams); not fitted, "
            "checked on the one held-back dense low-load run over HTTP (serving_runs.csv, GPUStack's Qwen3-8B page): "
            "TTFT -66% at 0, -37% at this value (benchmarks/RESULTS.md, serving stacks, twelfth step)",
        )
    },
    "vllm": {
        # the API server thread's capacity where it limits a fit run, from the run's measured request throughput
        # (a least-squares fit cannot see it: those runs' TTFT queues, and their ITL is the thread's delivery,
        # which the loop does not add); benchmarks/RESULTS.md, serving stacks, seventeenth step
        "frontend_serial_s": (
            5.3e-3,
            "the thread's time a request in the fit runs it limits, from their measured request throughput: "
            "GPUStack's 1000-request bursts of 128 / 4 tokens, gpt-oss-20b on one A100 (vLLM 0.11, serving_runs.csv, "
            "fit: 183.85 and 191.06 requests a second, 5.3 ms a request of 4 tokens, the tokens' 0.2 ms left in); "
            "vLLM's OpenAI server parses, tokenises and streams on one asyncio process per server (vllm-project/vllm "
            "PR 17546, --api-server-count), and vllm bench serve's client, one process too, is in every figure",
        ),
        "frontend_token_s": (
            4.2e-5,
            "the same, with kvcached's 500-request burst of 512 / 128 tokens of Qwen3-0.6B on an H100 (vLLM 0.19, "
            "serving_runs.csv, fit: 95.2 requests a second, 10.5 ms a request): (10.5 - 5.3) ms / 124 tokens. Check: "
            "vllm-project/vllm PR 17546's one API server before its scale-out passed 10,000 ShareGPT requests in "
            "130.74 s (76.5 a second), where 5.3 ms + ~200 tokens x 42 us reads 73 a second",
        ),
    },
}
# each fitted cost's bounds, in ms (the *_extra fractions as they are)
BOUNDS = {
    "frontend_s": (0.0, 200.0),
    "step_overhead_s": (0.0, 20.0),
    "sequence_overhead_s": (0.0, 0.5),
    "step_overhead_per_tp_rank_s": (0.0, 10.0),
    "eager_launch_s_per_layer": (0.0, EAGER_MAX),
    "prefill_attention_extra": (0.0, 3.0),
    "moe_compute_extra": (0.0, 3.0),
    "moe_memory_extra": (0.0, 3.0),
    "sink_attention_extra": (0.0, 10.0),
    "cuda_core_decode_extra": (0.0, 5.0),
}


def bounded(*names: str) -> dict[str, tuple[float, float]]:
    """The named costs with their BOUNDS, in order."""
    return {n: BOUNDS[n] for n in names}


HOST = ("step_overhead_s", "sequence_overhead_s")
# per stack entry: the costs fitted, in order, with their bounds; others stay at 0
PARAMETERS: dict[str, dict[str, tuple[float, float]]] = {
    "vllm-0.8": bounded(
        "frontend_s",
        *HOST,
        "step_overhead_per_tp_rank_s",
        "eager_launch_s_per_layer",
        "prefill_attention_extra",
        "moe_compute_extra",
    ),
    # (its front end at least the API server thread's share of it, FIXED's frontend_serial_s)
    "vllm": {"frontend_s": (FIXED["vllm"]["frontend_serial_s"][0] * 1e3, 200.0)} | bounded(*HOST),
    "sglang": bounded(
        "frontend_s", *HOST, "step_overhead_per_tp_rank_s", "eager_launch_s_per_layer", "prefill_attention_extra"
    ),
    "sglang-0.3": bounded("frontend_s", *HOST, "eager_launch_s_per_layer"),
    "trtllm": bounded(*HOST, "eager_launch_s_per_layer"),
    "trtllm-engine": bounded(*HOST),
}
# entries whose host costs are fitted on their dense-model runs only: fitted on all, the error of the experts' kernels
# (MXFP4 experts on Hopper and A100, which no shipped calibration measures, and the MoE stage's extras leave alone)
# lands in the host costs (a refit of vllm's step cost on all 50 of its fit runs put it at 9.6 ms, against 0.45 ms)
DENSE_ONLY = {"vllm"}
# entries' later fit stages, in order: (stage, costs fitted and their bounds), each on the entry's fit runs that
# stage_runs picks, the costs fitted before held (those runs cannot separate host work from the kernels the stage
# describes; the dense runs and the sync / async pairs can):
# - "moe": the MoE kernels' extras, on the MoE runs whose experts' format they describe (moe_extra_weights);
# - "sink": the sink-capable attention backend's prefill extra, on the runs of models with attention sinks on
#   devices before Hopper (config.stack.needs_sink_kernels: vLLM runs gpt-oss there on TRITON_ATTN);
# - "cuda_core_decode": the extra of the decode kernel a stack runs on CUDA cores, on the runs whose models it runs
#   it for (Stack.cuda_core_decode: SGLang's FlashInfer decode at <= 4 query heads per KV head, 16-bit KV)
STAGES: dict[str, list[tuple[str, dict[str, tuple[float, float]]]]] = {
    "vllm": [
        ("moe", bounded("moe_compute_extra", "moe_memory_extra")),
        ("sink", bounded("sink_attention_extra")),
    ],
    "sglang": [("cuda_core_decode", bounded("cuda_core_decode_extra"))],
}
# entries with later stages fit in sweeps: the first stage, then the later ones, each on the costs the others fitted
# last (block coordinate descent: the first stage's sync / async pairs include runs the later stages' costs touch,
# gpt-oss on A100 with the sink backend, so neither can be fitted once and held)
SWEEPS = 3
# sync / async pairs: vLLM runs alike but for --async-scheduling; their ratio (sync over async) of output
# throughput and mean TPOT is fitted as such, so the kernels' error (MoE ones included) cancels and the pair
# identifies the host work async scheduling hides
PAIR_METRICS = ("output_throughput_token_per_s", "tpot_mean_s")
# a pair's ratio carries no kernel error, only run-to-run noise (GPUStack's 32k-token pairs, where the host work is
# ~0.1% of a step, read sync / async 0.995 and 1.000): its residuals count on this scale, not LOSS_SCALE's
PAIR_LOSS_SCALE = 0.05
# entries whose shipped costs a plain `--write` keeps: their refit fails an independent check the project holds them
# to (tests/test_attention_dp.py: SGLang v0.4's published DP-attention decode gain, 1.9x, reads 1.22x after a refit
# on the 23 fit runs of 2026-12-07, 2.94x after one on 2026-12-06; 1.74x as shipped, 1.76x with the overlap
# scheduler's decode iterations), or their fit runs do not identify the costs (trtllm: with the 2025-04 DeepSeek
# 1000/2000 run noted as a cold server, its 5 fit runs put the step cost at 3.5 ms where the 6 put it at 0.1 ms, and
# at 19 ms, the bound, with the overlap scheduler's iterations; the held-back Qwen3-8B run's ITL goes -9% -> +36%;
# with GPUStack's tuned A100 runs added, its 14 fit runs put the step cost at 3.5 ms with the eager launch at its
# bound, 0.5 ms a layer, as the 1.2 runs were read then: no CUDA graphs, no overlap scheduler; read as 1.x runs them
# by default, both on, the step cost goes to its 20 ms bound, a floor under every iteration, and the eager launch
# to 0, which leaves the held-back Qwen3-8B run's TTFT -40% where the shipped 0.5 ms a layer reads it -3%), or a
# change left the runs they are fitted on where they were and a refit only slides along a flat valley of the loss
# (vllm: under the 2026-12-08 GEMM calibrations, fitted on the wide and narrow shapes too, its dense fit runs move
# by under 1%; a refit moves its step cost 0.56 -> 1.56 ms, its per-sequence cost 0.074 -> 0.061 ms and its front
# end 47.6 -> 49.2 ms, and reads its held-back runs worse: TTFT / p99 TTFT / TPOT / throughput median 18.5 / 21.6 /
# 10.6 / 14.3% against 18.0 / 21.6 / 9.4 / 12.0% with these costs kept and its MoE and sink extras refitted)
# (a kept entry's later stages are still fitted, on its shipped costs, and only their costs written)
KEPT = {
    "sglang": "its refit puts the independent SGLang v0.4 DP-attention check outside its tolerance",
    "sglang-0.3": "the other side of that check",
    "trtllm": "its 14 fit runs do not identify its step cost (it goes to its 20 ms bound, eager launch to 0)",
    "vllm": "the 2026-12-08 GEMM calibrations leave its dense fit runs within 1%; a refit slides along a flat valley",
}
LOSS = "cauchy"  # a run no cost can explain (a server warm-up stall, a kernel far off) loses its pull
LOSS_SCALE = 0.2  # in log units: residuals beyond ~20% count less and less
LOW_LOAD = 0.25  # TTFT counts where the simulated waits (batch, API thread) are under this share of it (lowest costs)
# entries whose fit of the front end has no prefill term beside it: there, in the fit that takes frontend_s, a TTFT
# counts only where it is, as simulated at the lowest costs, under FRONT_END_SHARE of the measured (the front end
# most of it). A long prompt's TTFT carries the kernels' prefill error, which only frontend_s could take up (fitted
# on every low-load TTFT, vllm's went to 108 ms, pulled by the FP8-KV blog's 20k-token prompts, their TTFT 0.1-0.17 s
# over the kernels')
FRONT_END_ONLY_TTFT = {"vllm"}
FRONT_END_SHARE = 0.5
# vLLM FP8-KV blog (2026-04-22, vLLM 0.19.1): single-request ITL = intercept + slope x input length (stack_facts.csv,
# 128 output tokens, vllm bench serve at concurrency 1): (device, kv dtype) -> (intercept s, slope s per token)
ITL_FITS = {
    ("h100_sxm", "bf16"): (6.44e-3, 4.37e-8),
    ("h100_sxm", "fp8"): (6.58e-3, 2.37e-8),
    ("b200", "bf16"): (3.93e-3, 1.80e-8),
    ("b200", "fp8"): (3.96e-3, 9.72e-9),
}
ITL_FIT_INPUTS = (1024, 32768)


def async_pairs(runs: list[S.ServingRun]) -> list[tuple[S.ServingRun, S.ServingRun]]:
    """(sync run, async run) pairs among ``runs``: the same version, model, device, layout and benchmark command,
    server flags alike but for --async-scheduling."""
    groups: dict[tuple, dict[bool, S.ServingRun]] = {}
    for r in runs:
        s = r.settings
        flags = s["server_args"].replace(" --async-scheduling", "")
        key = (s["stack_version"], s["model_hf"], s["device"], s["tp"], s["pp"], s["dtype"], s["harness"], flags)
        groups.setdefault(key, {})["--async-scheduling" in s["server_args"]] = r
    return [(g[False], g[True]) for g in groups.values() if len(g) == 2]


def fit_inputs(
    entry: str, runs: list[S.ServingRun]
) -> tuple[list[S.ServingRun], list[tuple[S.ServingRun, S.ServingRun]]]:
    """An entry's fit runs and sync / async pairs among ``runs`` (those that can be simulated): its ``split: fit``
    runs but those with a ``run_note``; under DENSE_ONLY the dense-model ones (the pairs keep MoE runs); for
    ``vllm`` the single-request ITL points too."""
    fit_runs = [r for r in runs if S.stack_entry(r) == entry and r.split == "fit" and not S.run_note(r)]
    pairs = async_pairs(fit_runs)
    if entry in DENSE_ONLY:
        fit_runs = [r for r in fit_runs if not _moe(r)]
    if entry == "vllm":
        fit_runs += itl_fact_runs()
    return fit_runs, pairs


def stage_runs(entry: str, stage: str, runs: list[S.ServingRun]) -> list[S.ServingRun]:
    """The entry's fit runs (no ``run_note``) a later stage fits: its MoE runs ("moe"), its runs of models with
    attention sinks ("sink"), of models without MLA ("cuda_core_decode"); :func:`fit_entry` keeps those whose
    kernels the stage's costs describe."""
    pick = STAGE_RUNS[stage]
    return [r for r in runs if S.stack_entry(r) == entry and r.split == "fit" and not S.run_note(r) and pick(r)]


def _sinks(run: S.ServingRun) -> bool:
    """Whether the run's model has attention sinks."""
    name = catalog_model(run)
    return name is not None and hf.Catalog().model(name).attention_sinks


def _dense_attention(run: S.ServingRun) -> bool:
    """Whether the run's model has query heads grouped over KV heads (not MLA): the CUDA-core decode kernel's
    candidates (:func:`fit_entry` keeps those the stack runs it for)."""
    name = catalog_model(run)
    return name is not None and hf.Catalog().model(name).mla is None


def _moe(run: S.ServingRun) -> bool:
    """Whether the run's model routes to experts."""
    name = catalog_model(run)
    return name is not None and hf.Catalog().model(name).moe is not None


# a stage's name -> which runs it fits (a name not here is an error)
STAGE_RUNS = {"moe": _moe, "sink": _sinks, "cuda_core_decode": _dense_attention}


def unit(name: str) -> float:
    """A cost's unit in PARAMETERS' bounds: ms for the seconds fields, the value itself for the fractions."""
    return 1e-3 if name.endswith("_s") or name.endswith("_s_per_layer") else 1.0


def itl_fact_runs() -> list[S.ServingRun]:
    """The blog's ITL fits as runs: concurrency 1, the given input length, 128 output tokens, mean ITL measured."""
    runs = []
    for k, ((device, kv), (a, b)) in enumerate(ITL_FITS.items()):
        for j, tokens in enumerate(ITL_FIT_INPUTS):
            settings = {c: "" for c in S.RUN_KEY}
            settings.update(
                stack="vllm",
                stack_version="0.19.1 (V1)",
                device=device,
                n_devices="1",
                model="llama-3.1-8b",
                model_hf="meta-llama/Llama-3.1-8B",
                dtype="bf16",
                kv_dtype=kv,
                tp="1",
                pp="1",
                input_tokens=str(tokens),
                output_tokens="128",
                dataset="random",
                arrival="concurrency",
                concurrency="1",
                num_prompts="4",
                frontend="http",
                source="stack_facts.csv itl_at_zero_context / itl_slope (vLLM FP8-KV blog, 2026-04-22)",
                split="fit",
            )
            runs.append(S.ServingRun(1000 + 2 * k + j, settings, {"itl_mean_s": a + b * tokens}, "ITL fit"))
    return runs


def fit_metrics(prep: S.PreparedRun, front_end_only: bool = False) -> list[str]:
    """The run's metrics the fit uses: all of FIT_METRICS it has, TTFT only at low load (the simulated waits for a
    batch and for the API thread under LOW_LOAD of TTFT at the lowest costs: TTFT is then front end + prefill, not a
    queue), and with ``front_end_only`` (FRONT_END_ONLY_TTFT) only where the front end is most of it."""
    pred = S.simulate_prepared(prep, None, REPLICATES, SEED)
    # the waits for a batch and for the API server's thread (a burst's queue), not the front end's own latency
    wait = pred["queue_mean_s"] + pred["front_end_mean_s"] - prep.costs["frontend_s"]
    low = wait < LOW_LOAD * pred["ttft_mean_s"]
    if front_end_only:  # (the mean where the run gives it, else the median)
        ttft = "ttft_mean_s" if "ttft_mean_s" in prep.run.metrics else "ttft_median_s"
        low &= ttft in prep.run.metrics and pred[ttft] < FRONT_END_SHARE * prep.run.metrics[ttft]
    return [m for m in S.FIT_METRICS if m in prep.run.metrics and (low or not m.startswith("ttft"))]


def residuals(
    preps: list[S.PreparedRun],
    metrics: list[list[str]],
    costs: dict[str, float],
    pairs: list[tuple[S.PreparedRun, S.PreparedRun]] = (),
) -> np.ndarray:
    """log(predicted / measured) per run and metric, then per sync / async pair and PAIR_METRICS the log of the
    predicted sync-over-async ratio over the measured one."""
    out = []
    for prep, names in zip(preps, metrics, strict=True):
        pred = S.simulate_prepared(prep, costs, REPLICATES, SEED)
        for m in names:
            ok = np.isfinite(pred[m]) and pred[m] > 0
            out.append(np.log(pred[m] / prep.run.metrics[m]) if ok else 5.0)
    for sync, async_ in pairs:
        ps, pa = (S.simulate_prepared(p, costs, REPLICATES, SEED) for p in (sync, async_))
        for m in PAIR_METRICS:
            if m in sync.run.metrics and m in async_.run.metrics:
                z = np.log(ps[m] / pa[m]) - np.log(sync.run.metrics[m] / async_.run.metrics[m])
                out.append(z * LOSS_SCALE / PAIR_LOSS_SCALE)
    return np.asarray(out)


def fit_entry(
    entry: str,
    runs: list[S.ServingRun],
    fixed: dict[str, float],
    calibration: str = "default",
    pairs: list[tuple[S.ServingRun, S.ServingRun]] = (),
    parameters: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, float], dict]:
    """Least-squares fit of one entry's costs (``parameters``, default PARAMETERS[entry]) on its fit runs and
    sync / async pairs (a cost not fitted 0 or ``fixed``'s, a fitted one at its lower bound where the runs' load is
    judged; the sink backend's and the CUDA-core decode kernel's extras None, no such kernels). Fitting MoE extras,
    a MoE run counts only where they describe its experts' kernels; fitting the sink backend's or the CUDA-core
    decode kernel's extra, a run counts only where the stack runs that kernel for it."""
    parameters = PARAMETERS[entry] if parameters is None else parameters
    names = list(parameters)
    lo = np.array([parameters[n][0] for n in names])
    hi = np.array([parameters[n][1] for n in names])
    base = {f: 0.0 for f in S.COST_FIELDS} | {"sink_attention_extra": None, "cuda_core_decode_extra": None} | fixed

    def in_units(x: np.ndarray) -> dict[str, float]:
        return {n: float(v) * unit(n) for n, v in zip(names, x, strict=True)}

    base |= in_units(lo)  # (each fitted cost at its lowest)
    moe_extras = any(n.startswith("moe_") for n in names)
    sink_extra = "sink_attention_extra" in names
    if sink_extra:  # (a value, so the runs that take it build that backend)
        base["sink_attention_extra"] = 0.0
    cuda_core_extra = "cuda_core_decode_extra" in names
    if cuda_core_extra:  # (likewise)
        base["cuda_core_decode_extra"] = 0.0
    preps = []
    for r in runs:
        try:
            prep = S.prepare_run(r, calibration, base)
        except ConfigError:  # (the scenario cannot be built: validation lists such a run as not simulated)
            continue
        if moe_extras and _moe(r) and not prep.moe_extras_apply:  # (its experts run kernels the extras leave alone)
            continue
        if sink_extra and not prep.sink_kernels:  # (the stack runs its usual attention backend for it)
            continue
        if cuda_core_extra and not prep.cuda_core_decode:  # (its decode runs on tensor cores)
            continue
        preps.append(prep)
    front_end_only = entry in FRONT_END_ONLY_TTFT and "frontend_s" in names
    metrics = [fit_metrics(p, front_end_only) for p in preps]
    pair_preps = [tuple(S.prepare_run(r, calibration, base) for r in pair) for pair in pairs]

    def costs_of(x: np.ndarray) -> dict[str, float]:
        return base | in_units(x)

    def f(x: np.ndarray) -> np.ndarray:
        return residuals(preps, metrics, costs_of(x), pair_preps)

    t = time.perf_counter()
    # the simulated metrics are piecewise smooth in the costs (events reorder): start from a few corners of the
    # box (every cost small, every cost a fifth of its range, and two seeded draws) and keep the best end point
    rng = np.random.default_rng(SEED)
    starts = [lo + 0.01 * (hi - lo), lo + 0.2 * (hi - lo)] + [
        lo + rng.uniform(0, 0.3, lo.size) * (hi - lo) for _ in range(2)
    ]
    best = None
    for x0 in starts:
        res = least_squares(f, x0, bounds=(lo, hi), loss=LOSS, f_scale=LOSS_SCALE, diff_step=0.05, max_nfev=40)
        if best is None or res.cost < best.cost:
            best = res
    res = best
    ttft = [p.run.label for p, ms in zip(preps, metrics, strict=True) if any(m.startswith("ttft") for m in ms)]
    info = {"runs": len(preps), "pairs": len(pairs), "low_load": len(ttft), "residuals": res.fun.size, "nfev": res.nfev}
    info["ttft_runs"] = ttft
    info["seconds"] = time.perf_counter() - t
    return costs_of(res.x), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--write",
        action="store_true",
        help="write the fitted costs into hermes_fast/catalog/stacks.yaml (with --only: those entries' alone)",
    )
    ap.add_argument("--out", help="per-run, per-metric errors as CSV")
    ap.add_argument(
        "--calibration",
        default="default",
        help="kernel calibrations the costs sit on: default (shipped), none, or stack (the -vllm ones for vLLM runs)",
    )
    ap.add_argument("--only", action="append", metavar="ENTRY", help="fit only these stack entries")
    ap.add_argument(
        "--stages-only",
        action="store_true",
        help="fit only the entries' later stages, on their shipped costs (what a plain run does for a kept entry)",
    )
    args = ap.parse_args()
    if args.write and args.calibration != "default":
        ap.error("--write ships costs fitted on the default calibrations: no --calibration")
    runs = S.serving_runs()
    usable = [r for r in runs if S.skip_reason(r) is None]
    fitted: dict[str, dict[str, float]] = {}
    infos = {}
    for entry in args.only or PARAMETERS:
        if (entry in KEPT and not args.only) or args.stages_only:  # (named with --only, a kept entry is refitted)
            print(f"{entry}: costs as shipped ({KEPT.get(entry, '--stages-only')})", flush=True)
            if entry in STAGES:  # its later stages on the shipped costs
                fitted[entry], infos[entry] = fit_stages_on_shipped(entry, usable, args.calibration)
            continue
        fit_runs, pairs = fit_inputs(entry, usable)
        fixed = {k: v for k, (v, _) in FIXED.get(entry, {}).items()}
        fitted[entry], infos[entry] = fit_entry(entry, fit_runs, fixed, args.calibration, pairs)
        infos[entry]["stage_runs"] = {}
        staged = {n for _, parameters in STAGES.get(entry, ()) for n in parameters}
        for sweep in range(SWEEPS if staged else 1):
            if sweep:  # (the first stage again, on the later stages' costs: its pairs' runs take them too)
                held = fixed | {n: fitted[entry][n] for n in staged}
                fitted[entry], first = fit_entry(entry, fit_runs, held, args.calibration, pairs)
                infos[entry]["seconds"] += first["seconds"]
            fitted[entry] = fit_later_stages(entry, usable, fitted[entry], args.calibration, infos[entry])
            if staged:
                print(f"{entry} sweep {sweep + 1}: " + ", ".join(f"{k} {fitted[entry][k] / unit(k):.4g}"
                      for k in list(PARAMETERS[entry]) + sorted(staged)), flush=True)  # fmt: skip
        shown = ", ".join(
            f"{k} {v / unit(k):.3f}{' ms' if unit(k) < 1.0 else ''}"
            for k, v in fitted[entry].items()
            if k in PARAMETERS[entry] or k in staged or k in fixed
        )
        later = "".join(f", {n} {stage} runs" for stage, n in infos[entry]["stage_runs"].items())
        print(f"{entry}: {shown}  ({infos[entry]['runs']} runs{later}, {infos[entry]['pairs']} sync / async "
              f"pairs, TTFT from {infos[entry]['low_load']}, "
              f"{infos[entry]['nfev']} evaluations, "
              f"{infos[entry]['seconds']:.0f} s)", flush=True)  # fmt: skip
    chosen = [r for r in runs if args.only is None or S.stack_entry(r) in args.only]
    preds = S.predict_serving(chosen, calibration=args.calibration, costs=fitted)  # (kept entries: shipped costs)
    rows = S.serving_errors(preds)
    print_tables(rows)
    if args.out:
        write_rows(rows, args.out)
    if args.write:
        write_stacks(fitted, infos)


def fit_later_stages(
    entry: str, usable: list[S.ServingRun], costs: dict[str, float], calibration: str, info: dict
) -> dict[str, float]:
    """The entry's later stages (``STAGES``) in turn, each on the costs fitted or held before it; their runs and time
    go into ``info`` (``stage_runs``, ``seconds``)."""
    for stage, parameters in STAGES.get(entry, ()):
        runs = stage_runs(entry, stage, usable)
        costs, stage_info = fit_entry(entry, runs, costs, calibration, parameters=parameters)
        info["stage_runs"][stage] = stage_info["runs"]
        info["seconds"] += stage_info["seconds"]
    return costs


def fit_stages_on_shipped(entry: str, usable: list[S.ServingRun], calibration: str) -> tuple[dict[str, float], dict]:
    """A kept entry's later stages fitted on its shipped costs (the others held as shipped); ``info`` names the
    costs fitted (``written``: :func:`write_stacks` writes those alone)."""
    stack = hf.Catalog().stack(entry)
    shipped = {f: v for f in S.COST_FIELDS if (v := getattr(stack, f)) is not None}
    written = [n for _, parameters in STAGES[entry] for n in parameters]
    info = {"runs": 0, "pairs": 0, "low_load": 0, "nfev": 0, "seconds": 0.0, "stage_runs": {}, "written": written}
    costs = fit_later_stages(entry, usable, shipped, calibration, info)
    runs = ", ".join(f"{n} {stage} runs" for stage, n in info["stage_runs"].items())
    print(f"{entry} later stages: " + ", ".join(f"{n} {costs[n] / unit(n):.4g}" for n in written)
          + f"  ({runs}, {info['seconds']:.0f} s)", flush=True)  # fmt: skip
    return costs, info


def print_tables(rows: list[dict]) -> None:
    summary = S.error_summary(rows)
    for split in ("holdout", "fit"):
        print(f"\n# {split} rows: |predicted / measured - 1| median, p90; signed mean")
        print(f"{'stack':15s}{'metric':20s}{'runs':>5s}{'median':>9s}{'p90':>8s}{'signed':>9s}")
        for s in summary:
            if s["split"] == split:
                print(
                    f"{s['stack_entry']:15s}{s['metric']:20s}{s['runs']:5d}{s['median_abs_error']:9.1%}"
                    f"{s['p90_abs_error']:8.1%}{s['signed_mean_error']:+9.1%}"
                )


def write_rows(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_stacks(fitted: dict[str, dict[str, float]], infos: dict) -> None:
    """Set each fitted field of each entry in stacks.yaml (replacing its line, or adding one before ``sources:``)
    and its ``sources`` line; remove the entry's other cost fields (the fit held them at 0) and the sources this
    script wrote for them (a source saying why a cost is 0 stays)."""
    path = Path(S.__file__).resolve().parent.parent / "catalog" / "stacks.yaml"
    text = path.read_text()
    today = datetime.date.today().isoformat()
    for entry, costs in fitted.items():
        block_re = re.compile(rf"^{re.escape(entry)}:\n(?:^[ #].*\n|^\n)*", re.M)
        m = block_re.search(text)
        block = m.group(0)
        stage_of = {n: stage for stage, parameters in STAGES.get(entry, ()) for n in parameters}
        names = infos[entry].get("written") or list(PARAMETERS[entry]) + list(stage_of) + list(FIXED.get(entry, {}))
        for name in S.COST_FIELDS:  # a cost the fit held at 0 leaves the entry, with a source this script wrote
            if name not in names and "written" not in infos[entry]:
                block = re.sub(rf"^  {name}: .*\n", "", block, flags=re.M)
                block = re.sub(rf'^    {name}: "fitted to .*\n', "", block, flags=re.M)
        for name in names:  # the values, in order before `sources:`
            line = f"  {name}: {round(costs[name], 7):.4g}\n"
            if re.search(rf"^  {name}: .*\n", block, re.M):
                block = re.sub(rf"^  {name}: .*\n", line, block, flags=re.M)
            else:
                block = re.sub(
                    r"^  sources:\n", lambda _m, line=line: line + "  sources:\n", block, count=1, flags=re.M
                )
        swept = f" ({SWEEPS} sweeps of the stages in turn)" if stage_of else ""
        # what a later stage's costs were fitted on: the shipped costs (a kept entry) or the first stage's
        held = "the host costs held at those fitted" + (" on the dense runs" if entry in DENSE_ONLY else "") + swept
        if "written" in infos[entry]:
            held = "the other costs as shipped"
        for name in reversed(names):  # their sources, each first under `sources:` (reversed: they end in order)
            if name in FIXED.get(entry, {}):
                src = FIXED[entry][name][1]
            elif stage_of.get(name) == "moe":
                formats = ", ".join(hf.Catalog().stack(entry).moe_extra_weights or ("every format",))
                src = (
                    f"fitted to {infos[entry]['stage_runs']['moe']} MoE runs of serving_runs.csv (split: fit; experts "
                    f"in {formats}), {held}, "
                    f"benchmarks/fit_stacks.py, {today}"
                )
            elif stage_of.get(name) == "cuda_core_decode":
                src = (
                    f"fitted to {infos[entry]['stage_runs']['cuda_core_decode']} runs of serving_runs.csv (split: "
                    f"fit) whose models the stack decodes on CUDA cores (a 16-bit KV cache, at most "
                    f"{hf.Catalog().stack(entry).cuda_core_decode_max_group} query heads per KV head), {held}, "
                    f"benchmarks/fit_stacks.py, {today}"
                )
            elif stage_of.get(name) == "sink":
                src = (
                    f"fitted to {infos[entry]['stage_runs']['sink']} runs of serving_runs.csv (split: fit) of models "
                    f"with attention sinks on devices before Hopper, whose FlashAttention 2 has no sinks (vLLM runs "
                    f"gpt-oss on TRITON_ATTN there: vllm-project/recipes GPT-OSS.md), {held}, "
                    f"benchmarks/fit_stacks.py, {today}"
                )
            elif name == "frontend_s" and entry in FRONT_END_ONLY_TTFT:
                src = (
                    f"fitted with the step costs on their runs{swept}: the mean and median TTFT of the "
                    f"{infos[entry]['low_load']} runs of serving_runs.csv (split: fit) at low load whose TTFT at the "
                    f"lowest costs is under {FRONT_END_SHARE:.0%} of the measured ("
                    + "; ".join(infos[entry]["ttft_runs"])
                    + f"), benchmarks/fit_stacks.py, {today}. Bounded below by frontend_serial_s, the thread's share "
                    "of it; BLIS / inference-sim's fitted QueueingTime for vLLM on an H100 is 15.6 ms (stack_facts.csv "
                    "blis.trained_physics.alpha0_queueing)"
                )
            else:
                extra = " + 8 single-request ITL points (stack_facts.csv)" if entry == "vllm" else ""
                if infos[entry]["pairs"]:
                    extra += f" + {infos[entry]['pairs']} sync / async run pairs (their ratios)"
                n = infos[entry]["runs"] - (8 if entry == "vllm" else 0)
                src = f"fitted to {n} runs of serving_runs.csv (split: fit){extra}{swept}, benchmarks/fit_stacks.py, "
                src += today
            sline = f'    {name}: "{src}"\n'
            if re.search(rf"^    {name}: .*\n", block, re.M):
                block = re.sub(rf"^    {name}: .*\n", lambda _m, line=sline: line, block, flags=re.M)
            else:
                block = re.sub(
                    r"^  sources:\n", lambda _m, sline=sline: "  sources:\n" + sline, block, count=1, flags=re.M
                )
        text = text[: m.start()] + block + text[m.end() :]
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
