"""Benchmark: simulated requests per wall-second of the serving loop.

Llama-3.1-8B on one H100, continuous batching, Poisson arrivals at 80% of capacity (capacity: the
throughput of the same engine flooded with requests), prompt/output lengths fixed 512/128 and lognormal
with those means (cv 1). 1,000,000 requests each; then one 10,000,000-request run with its peak memory.

Run:  python benchmarks/bench_simulate.py [--requests N] [--big N]
JIT compile (or cache load) time is measured on a small warm-up run and reported separately.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numba
import numpy as np

import hermes_fast as hf
from hermes_fast import load_scenario
from hermes_fast.kernels.serving import Status
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import build_serving, run_serving
from hermes_fast.workload import draw_workload, rng_for

LENGTHS = {
    "fixed 512/128": {"prompt_tokens": 512, "output_tokens": 128},
    "lognormal 512/128": {
        "prompt_tokens": {"dist": "lognormal", "mean": 512, "cv": 1.0, "max": 8192},
        "output_tokens": {"dist": "lognormal", "mean": 128, "cv": 1.0, "max": 8192},
    },
}


STACK = "ideal"  # --stack: the serving stack the engine runs


def scenario(lengths: dict, rate: float):
    return load_scenario(
        {
            "engines": [{"name": "llama8b", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": STACK}],
            "workload": {"rate_per_s": rate, "classes": [lengths]},
        }
    )


def capacity_per_s(lengths: dict) -> float:
    """Completed requests per second with the engine flooded (20,000 arrivals at 10,000/s)."""
    ds = hf.simulate(scenario(lengths, 10_000.0), n_requests=20_000, seed=99, progress=False)
    return float(ds.throughput_request_per_s.item())


def timed_run(lengths: dict, rate: float, n: int, seed: int = 0):
    sc = scenario(lengths, rate)
    setup = build_serving(resolve_scenario(sc))
    draws = draw_workload(sc.workload, n, rng_for(seed))
    t0 = time.perf_counter()
    run = run_serving(setup, draws)
    wall = time.perf_counter() - t0
    return wall, run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=10_000_000, help="requests of the memory run (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stack", default="ideal", help="serving stack of the engine (ideal, vllm, sglang, trtllm)")
    args = ap.parse_args()
    global STACK
    STACK = args.stack
    print(f"# {platform.processor() or platform.machine()}, numba {numba.__version__}, numpy {np.__version__}")
    print(f"# stack {STACK}")
    t0 = time.perf_counter()
    hf.simulate(n_requests=200, seed=1)  # compiles (or loads from the cache) the serving loop
    print(f"compile / cache load (first simulate call, 200 requests): {time.perf_counter() - t0:.1f} s")
    for label, lengths in LENGTHS.items():
        cap = capacity_per_s(lengths)
        rate = 0.8 * cap
        walls = []
        for _ in range(args.repeats):
            wall, run = timed_run(lengths, rate, args.requests)
            walls.append(wall)
        status = run.status
        best = min(walls)
        print(
            f"{label}: capacity {cap:.1f} req/s, rate {rate:.1f} req/s; {args.requests:,} requests in "
            f"{', '.join(f'{w:.2f}' for w in walls)} s -> best {args.requests / best:,.0f} req/s "
            f"(events {run.events:,}, fast-forwarded iterations {run.fast_forwarded_iterations:,}, "
            f"iterations {run.iterations.sum():,.0f}, mean batch "
            f"{run.batch_sum.sum() / run.iterations.sum():.1f}, completed {np.sum(status == Status.DONE):,}, "
            f"rejected {np.sum(status == Status.REJECTED):,})"
        )
    if args.big:
        lengths = LENGTHS["lognormal 512/128"]
        rate = 0.8 * capacity_per_s(lengths)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        ds = hf.simulate(scenario(lengths, rate), n_requests=args.big, seed=3)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(
            f"{args.big:,} lognormal requests via hf.simulate (draws + loop + summary): {wall:.1f} s "
            f"({args.big / wall:,.0f} req/s); peak RSS {peak / 1e6:.2f} GB (before: {before / 1e6:.2f} GB); "
            f"p99 TTFT {ds.ttft_s.sel(quantile=0.99).item() * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
