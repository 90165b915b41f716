"""Benchmark: analytical estimates over a >= 1,000,000-point grid, and raw decode-step evaluations.

Run:  python benchmarks/bench_estimate.py [--points-per-step N]
Prints JIT compile (or cache-load) time separately from steady-state figures. Single-threaded unless
HERMES_PARALLEL=1 is set in the environment.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import hermes_fast as hf
from hermes_fast.kernels.grid import decode_step_times

GRID = {
    "model": ["llama-3.1-8b", "llama-3.1-70b"],
    "device": ["h100_sxm", "h200_sxm", "b200", "a100_sxm_80gb", "mi300x", "mi325x", "gaudi3", "l40s"],
    "tp": [1, 2, 4, 8],
    "batch_size": [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024],
    "prompt_tokens": [128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 65536],
    "output_tokens": [64, 256, 1024, 4096],
    "context_tokens": [
        256,
        512,
        1024,
        2048,
        4096,
        6144,
        8192,
        12288,
        16384,
        24576,
        32768,
        49152,
        65536,
        98304,
        131072,
        200000,
    ],
}
SCENARIO = {"engines": [{"name": "bench", "model": "llama-3.1-8b", "device": "h100_sxm"}]}


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10_000_000, help="decode-step evaluations to time")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}",
        f"python={platform.python_version()}",
    )
    print(
        f"HERMES_PARALLEL={os.environ.get('HERMES_PARALLEL', '0')} HERMES_CACHE={os.environ.get('HERMES_CACHE', '1')}"
    )

    # --- JIT compile (or on-disk cache load), measured on a one-point call
    t = time.perf_counter()
    hf.estimate(SCENARIO)
    print(f"first estimate call (JIT compile or cache load + imports): {time.perf_counter() - t:.2f} s")

    # --- whole estimate() over the grid: config compile, kernels, Dataset assembly
    n_points = int(np.prod([len(v) for v in GRID.values()]))
    ds = hf.estimate(SCENARIO, grid=GRID)
    wall = best_of(lambda: hf.estimate(SCENARIO, grid=GRID), args.repeats)
    assert ds.tpot_s.size == n_points
    print(
        f"estimate grid: {n_points:,} points in {wall:.3f} s -> {n_points / wall:,.0f} points/s "
        f"(3 step-cost evaluations per point, {3 * n_points / wall:,.0f} step evaluations/s end to end)"
    )

    # --- raw decode-step cost: the call the event loop makes, over contiguous arrays
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    params = np.stack(
        [
            compile_engine(cat.model(m), cat.device(d), Parallel(tp=tp), Dtypes()).params
            for m, tp in [("llama-3.1-8b", 1), ("llama-3.1-70b", 4), ("mixtral-8x7b", 2), ("deepseek-v3", 8)]
            for d in ["h100_sxm", "h200_sxm"]
        ]
    )
    rng = np.random.default_rng(0)
    n = args.steps
    cfg = rng.integers(0, params.shape[0], n).astype(np.int64)
    batch = rng.integers(1, 512, n).astype(np.float64)
    context = rng.integers(1, 32768, n).astype(np.float64)
    out = np.empty(n)
    decode_step_times.jit(params, cfg[:10], batch[:10], context[:10], out[:10])  # compile
    wall = best_of(lambda: decode_step_times.jit(params, cfg, batch, context, out), args.repeats)
    print(
        f"decode step cost: {n:,} evaluations in {wall:.3f} s -> {n / wall / 1e6:.1f} million/s "
        f"({wall / n * 1e9:.0f} ns each; dense, MoE and MLA engines mixed)"
    )
    # --- one engine at a time: how the model's structure (MoE, MLA, sliding window) costs
    per_engine = []
    for m, tp in [
        ("llama-3.1-8b", 1),
        ("llama-3.1-70b", 4),
        ("mixtral-8x7b", 2),
        ("deepseek-v3", 8),
        ("gpt-oss-120b", 2),
    ]:
        one = compile_engine(cat.model(m), cat.device("h100_sxm"), Parallel(tp=tp), Dtypes()).params[None, :]
        zeros = np.zeros(n, dtype=np.int64)
        wall = best_of(
            lambda one=one, zeros=zeros: decode_step_times.jit(one, zeros, batch, context, out), args.repeats
        )
        per_engine.append(f"{m} tp{tp}: {wall / n * 1e9:.0f} ns")
    print("decode step cost per engine (H100): " + ", ".join(per_engine))


if __name__ == "__main__":
    main()
