"""Benchmark: simulated requests per wall-second with prefix caching on, multi-turn chat sessions.

Llama-3.1-8B on one H100 under the vllm stack (prefix caching on), sessions of 1-8 turns (uniform), 5 s think
time (cv 1), 20 system prompts of 500-2000 tokens (Zipf 1), lognormal user turns (mean 200, cv 1) and answers
(mean 200, cv 1), at a session rate giving the busy fraction printed. Times ``run_serving`` (the loop, with the
few numbers per request its block keys are computed from) and, apart, drawing the workload. Caching off is timed
on the same draws.

Run:  python benchmarks/bench_prefix.py [--requests N] [--rate SESSIONS_PER_S]
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

CHAT = {
    "prompt_tokens": {"dist": "lognormal", "mean": 200, "cv": 1.0, "max": 4000},
    "output_tokens": {"dist": "lognormal", "mean": 200, "cv": 1.0, "max": 4000},
    "prefix": {"distinct": 20, "zipf_alpha": 1.0, "tokens": {"dist": "uniform", "min": 500, "max": 2000}},
    "session": {"turns": {"dist": "uniform", "min": 1, "max": 8}, "think_time_s": 5.0, "think_time_cv": 1.0},
}


def scenario(rate: float, cache: bool):
    engine = {"name": "llama8b", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "vllm"}
    return load_scenario(
        {"engines": [{**engine, "prefix_cache": cache}], "workload": {"rate_per_s": rate, "classes": [CHAT]}}
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=1.5, help="sessions per second")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numba {numba.__version__}, numpy {np.__version__}")
    t0 = time.perf_counter()
    hf.simulate(scenario(args.rate, True), n_requests=200, seed=1, progress=False)
    print(f"compile / cache load (first simulate call, 200 requests): {time.perf_counter() - t0:.1f} s")
    for cache in (True, False):
        sc = scenario(args.rate, cache)
        setup = build_serving(resolve_scenario(sc))
        t0 = time.perf_counter()
        draws = draw_workload(sc.workload, args.requests, rng_for(0))
        t_draw = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = run_serving(setup, draws)
        wall = time.perf_counter() - t0
        done = run.status == Status.DONE
        hit = run.prefix_hit_tokens[done].sum() / run.prompt_tokens[done].sum()
        span = run.end_s - np.nanmin(run.arrival_s)
        print(
            f"prefix_cache {'on ' if cache else 'off'}: {args.requests:,} requests, loop {wall:.2f} s "
            f"({args.requests / wall / 1e3:.0f}k req/s), draws {t_draw:.2f} s; completed {done.mean():.4f}, "
            f"token hit rate {hit:.3f}, busy {run.busy_s.sum() / span:.2f}, "
            f"evictions {int(run.prefix_evictions.sum()):,}"
        )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
