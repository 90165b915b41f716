"""The ``hermes-fast`` argument parser (every command's options) and :func:`main`: parse, run the command,
print a config error as one line on stderr and exit 2 (1 for an OS error); warnings print as one line each."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ..config.base import ConfigError
from .calibration import cmd_calibrate, cmd_measure, cmd_validate
from .capacity import cmd_capacity
from .estimate import cmd_estimate
from .knobs import add_knobs
from .plan import cmd_plan
from .plot import PLOT_KINDS, cmd_plot
from .presets import PRESET_KINDS, cmd_presets
from .run import cmd_run
from .sweep import cmd_sweep

__all__ = ["build_parser", "main"]

_OUT_HELP = "write the Dataset: .nc (netCDF), .zarr, .csv (a flat table, one row per value) or .json (summary)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hermes-fast", description="Fast simulator of multi-stage LLM serving.")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate serving of a scenario (default scenario if none given)")
    run.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: embedded scenario)")
    run.add_argument("--requests", type=int, default=10_000, metavar="N", help="arrivals per replicate (10000)")
    run.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    run.add_argument("--replicates", type=int, default=1, metavar="R", help="independent replicates (1)")
    run.add_argument("--per-request", action="store_true", help="also write per-request variables")
    run.add_argument("--out", metavar="FILE.nc|.zarr|.csv|.json", help=_OUT_HELP)
    run.add_argument("--calibration", action="append", metavar="NAME|FILE", help="default, none, or a calibration")
    add_knobs(run, "run")
    run.set_defaults(func=cmd_run)
    est = sub.add_parser("estimate", help="zero-load analytical estimate (default scenario if none given)")
    est.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: embedded scenario)")
    est.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="vary a short key (tp, batch_size, ...) or a dotted path (engines.NAME.parallel.tp) (repeatable)",
    )
    est.add_argument("--out", metavar="FILE.nc|.zarr|.csv|.json", help=_OUT_HELP)
    est.add_argument("--calibration", action="append", metavar="NAME|FILE", help="default, none, or a calibration")
    add_knobs(est, "estimate")
    est.set_defaults(func=cmd_estimate)
    cap = sub.add_parser(
        "capacity",
        help="the largest arrival rate meeting latency targets, the target that binds, the metrics there",
        description="Bisect the arrival rate (log scale) for the largest one whose run meets every target. "
        "Durations: 2, 2s, 500ms, 800us (a bare number is seconds).",
    )
    cap.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: embedded scenario)")
    tg = cap.add_argument_group("targets (at least one; one per metric)")
    tg.add_argument("--ttft-p99", metavar="DURATION", help="bound on the p99 time to first token")
    tg.add_argument("--tpot-p99", metavar="DURATION", help="bound on the p99 time per output token")
    tg.add_argument("--e2e-p99", metavar="DURATION", help="bound on the p99 end-to-end latency")
    tg.add_argument(
        "--target",
        action="append",
        metavar="METRIC:STAT:MAX",
        help="any bound: METRIC ttft|tpot|e2e, STAT p50|p90|p95|p99|mean, e.g. ttft:p90:300ms (repeatable)",
    )
    tg.add_argument(
        "--min-slo-attainment", type=float, metavar="F", help="least share of arrivals within serving.slo (0-1]"
    )
    tg.add_argument("--allow-unstable", action="store_true", help="accept a run flagged overloaded")
    cap.add_argument("--rate-min", type=float, metavar="R", help="low end of the search, requests/s (0.1)")
    cap.add_argument("--rate-max", type=float, metavar="R", help="high end of the search, requests/s (1000)")
    cap.add_argument("--rel-tol", type=float, metavar="F", help="stop when high / low - 1 is below this (0.01)")
    cap.add_argument("--requests", type=int, default=10_000, metavar="N", help="arrivals per run (10000)")
    cap.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    cap.add_argument("--replicates", type=int, default=1, metavar="R", help="independent searches (1)")
    cap.add_argument("--out", metavar="FILE.nc|.zarr|.csv|.json", help=_OUT_HELP)
    cap.add_argument("--calibration", action="append", metavar="NAME|FILE", help="default, none, or a calibration")
    cap.add_argument("--rate", type=float, help=argparse.SUPPRESS)  # refused by name, not as ambiguous
    add_knobs(cap, "capacity")
    cap.set_defaults(func=cmd_capacity)
    pln = sub.add_parser(
        "plan",
        help="which layout and how many replicas serve a model's traffic best within TTFT/TPOT targets",
        description="Enumerate TP x PP x EP (attention DP, CP) x replicas, colocated and disaggregated, formats and "
        "batching limits; "
        "prune with the analytical estimate; rank by a throughput bound; verify the best by simulated capacity "
        "search. Durations: 2, 2s, 500ms (a bare number is seconds). Flags win over the plan file's fields.",
    )
    pln.add_argument("plan", nargs="?", default=None, help="plan YAML (the PlanSpec fields); optional with flags")
    pln.add_argument("--model", help="catalog model, e.g. llama-3.1-70b")
    pln.add_argument("--devices", metavar="NAME:N,...", help="devices available, e.g. h100_sxm:16,h200_sxm:8")
    pln.add_argument("--budget", type=float, metavar="USD_PER_H", help="most a layout may cost per hour")
    pln.add_argument("--max-devices", type=int, metavar="N", help="most devices one layout uses (default: all)")
    pln.add_argument("--ttft", metavar="DURATION", help="TTFT target at the quantile (2s)")
    pln.add_argument("--tpot", metavar="DURATION", help="TPOT target at the quantile (50ms)")
    pln.add_argument("--quantile", type=float, metavar="Q", help="quantile the targets bound (0.99)")
    pln.add_argument("--prompt-tokens", type=int, metavar="N", help="prompt length (tokens)")
    pln.add_argument("--output-tokens", type=int, metavar="N", help="output length (tokens)")
    pln.add_argument("--tp", metavar="A,B", help="tensor-parallel degrees (1,2,4,8)")
    pln.add_argument("--pp", metavar="A,B", help="pipeline-parallel degrees (1,2,4)")
    pln.add_argument("--ep", metavar="A,B", help="expert-parallel degrees, MoE models (1)")
    pln.add_argument("--cp", metavar="A,B", help="context-parallel degrees, for long prompts (1,2,4)")
    pln.add_argument("--no-attention-dp", action="store_true", help="no attention data parallelism (MoE models)")
    pln.add_argument("--dtypes", metavar="A,B", help="weight/activation formats (bf16,fp8,fp4)")
    pln.add_argument("--max-batch-size", metavar="A,B", help="max batch sizes (128,512)")
    pln.add_argument("--max-batched-tokens", metavar="A,B", help="token budgets (2048,8192)")
    pln.add_argument("--no-colocated", action="store_true", help="disaggregated layouts only")
    pln.add_argument("--no-disaggregated", action="store_true", help="colocated layouts only")
    pln.add_argument("--objective", choices=("capacity", "per_device", "per_usd"), help="rank by (capacity)")
    pln.add_argument("--stack", help="serving stack simulated (vllm)")
    pln.add_argument("--top-k", type=int, metavar="K", help="layouts verified by simulation (10)")
    pln.add_argument("--per-group", type=int, metavar="N", help="verify at most N of each mode x devices x format")
    pln.add_argument("--requests", type=int, metavar="N", help="arrivals per simulated run (2000)")
    pln.add_argument("--replicates", type=int, metavar="R", help="capacity searches per layout (1)")
    pln.add_argument("--seed", type=int, metavar="S", help="random seed (0)")
    where_p = pln.add_mutually_exclusive_group()
    where_p.add_argument("--workers", type=int, metavar="N", help="N local dask worker processes (default: serial)")
    where_p.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler, e.g. tcp://HOST:8786")
    pln.add_argument("--export", metavar="DIR", help="write launch commands (vLLM, SGLang, trtllm-serve, Dynamo)")
    pln.add_argument("--export-top", type=int, default=1, metavar="N", help="layouts to export, best first (1)")
    pln.add_argument("--plot", metavar="FIG.png", help="Pareto front of the verified layouts: capacity vs cost")
    pln.add_argument("--out", metavar="FILE.nc|.zarr|.csv|.json", help=_OUT_HELP)
    pln.set_defaults(func=cmd_plan)
    val = sub.add_parser("validate", help="kernel errors vs shipped measurements, uncalibrated and calibrated")
    val.add_argument("--calibration", action="append", metavar="NAME|FILE", help="calibrations to check (all shipped)")
    val.add_argument("--measurements", metavar="FILE.csv", help="measurements to check instead of the shipped ones")
    val.add_argument("--out", metavar="FILE.csv", help="write the table as CSV")
    val.add_argument(
        "--serving",
        nargs="?",
        const="shipped",
        metavar="FILE.csv",
        help="simulate measured serving runs (default: the shipped serving_runs.csv) and compare their metrics",
    )
    val.add_argument(
        "--replicates", type=int, metavar="R", help="--serving: replicates per run (default: ~1000 requests)"
    )
    val.add_argument("--seed", type=int, default=0, metavar="S", help="--serving: random seed (0)")
    val.set_defaults(func=cmd_validate)
    cal = sub.add_parser("calibrate", help="fit a device's efficiency parameters to measured latencies")
    cal.add_argument("measurements", help="CSV in the measurement schema (see hermes_fast.calibration.measurements)")
    cal.add_argument("--device", required=True, help="catalog device name")
    cal.add_argument("--out", required=True, metavar="FILE.yaml|json", help="where to save the calibration")
    cal.add_argument("--name", default=None, help="calibration name (default: the device)")
    cal.add_argument("--source", default="", help="where the measurements come from")
    cal.add_argument("--holdout", type=float, default=0.25, help="share of rows held back (0.25)")
    cal.add_argument(
        "--calibration",
        default="none",
        metavar="NAME|FILE",
        help="calibration the fit starts from and carries over (none; 'default' fits decode-step rows' host "
        "costs on top of the shipped kernels)",
    )
    cal.set_defaults(func=cmd_calibrate)
    swp = sub.add_parser("sweep", help="simulate a scenario over a grid (a sweep YAML), resumable zarr output")
    swp.add_argument("sweep", help="sweep YAML: scenario, grid, n_requests, replicates, seed, capacity")
    swp.add_argument("--out", metavar="DIR.zarr", help="zarr store, written as chunks finish; rerun to resume")
    where = swp.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="N local dask worker processes (default: serial)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler, e.g. tcp://HOST:8786")
    swp.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="scheduler connection (10 s)")
    swp.add_argument("--chunk-size", type=int, metavar="N", help="points per task and zarr chunk (default: auto)")
    swp.add_argument("--requests", type=int, metavar="N", help="override the file's n_requests")
    swp.add_argument("--overwrite", action="store_true", help="replace a store written by a different sweep")
    swp.add_argument("--no-progress", action="store_true", help="no progress bar")
    swp.set_defaults(func=cmd_sweep)
    plt_ = sub.add_parser("plot", help="a figure from a sweep's zarr store")
    plt_.add_argument("results", help="zarr store written by `hermes-fast sweep`")
    plt_.add_argument("--kind", choices=PLOT_KINDS, required=True)
    plt_.add_argument("--x", help="pareto/latency: objective; goodput: SLO dim; breakdown: bar dim; heatmap: dim")
    plt_.add_argument("--y", help="pareto/latency/goodput: objective; cdf: ttft|e2e|queue|tpot; heatmap: dim")
    plt_.add_argument("--var", help="heatmap: the variable (e.g. 'utilization[pool=main]')")
    plt_.add_argument("--hue", help="dim drawn as separate lines")
    plt_.add_argument("--sel", action="append", metavar="DIM=VALUE", help="select a coordinate first (repeatable)")
    plt_.add_argument("--out", required=True, metavar="FIG.png", help="image file (png, svg, pdf, jpg, ...)")
    plt_.add_argument("--dpi", type=int, default=150)
    plt_.set_defaults(func=cmd_plot)
    mea = sub.add_parser("measure", help="time kernels and whole steps with PyTorch here (needs torch)")
    mea.add_argument("--out", required=True, metavar="FILE.csv", help="rows in the measurement schema (+ FILE.json)")
    mea.add_argument("--device", help="catalog device the rows are for (default: from the GPU's name)")
    mea.add_argument("--model", default="llama-3.1-8b", help="dense catalog decoder (llama-3.1-8b)")
    mea.add_argument("--ops", metavar="A,B", help="of gemm, attention, layer, step (default: all)")
    mea.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="bf16 on a GPU, fp32 on the CPU")
    mea.add_argument("--torch-device", choices=("cuda", "cpu"), help="default: cuda where there is one")
    mea.add_argument("--quick", action="store_true", help="a few small cases, to check the method")
    mea.add_argument("--trials", type=int, default=7, help="timed replays per case, median taken (7)")
    mea.add_argument("--seed", type=int, default=0, help="random weights and inputs (0)")
    mea.add_argument("--calibration", action="append", metavar="NAME|FILE", help="to compare with (default)")
    mea.set_defaults(func=cmd_measure)

    pre = sub.add_parser("presets", help="list catalog presets or output variables")
    pre.add_argument("kind", nargs="?", choices=PRESET_KINDS)
    pre.add_argument("--fields", action="store_true", help="also list the schema's fields with units")
    pre.set_defaults(func=cmd_presets)
    return ap


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"hermes-fast: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # warnings as one line each, without the source line
        warnings.showwarning = _one_line_warning
        try:
            return args.func(args)
        except ConfigError as e:
            print(f"hermes-fast: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"hermes-fast: error: {e}", file=sys.stderr)
            return 1
