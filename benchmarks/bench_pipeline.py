"""Benchmark: simulated requests per wall-second through a seven-stage pipeline on heterogeneous pools.

route (fixed cost, 50/50 by probability) -> embed (e5-base, 2 x L40S) -> retrieve (IVF-PQ, 1e9 vectors,
2 Grace CPUs) -> kv_retrieve (host DRAM per replica, then a shared remote store over one Ethernet
link) -> prefill -> reason (thinking tokens) -> decode, on Llama-3.1-8B: 4 x H100 or 4 x H200 as routed.
Query text, embeddings and prompts cross one shared PCIe link; fetched KV shares the tier instances.
Lognormal prompt/answer/thinking lengths; Poisson arrivals at the rate given (default: about 70% of
the LLM pools' capacity).

Run:  python benchmarks/bench_pipeline.py [--requests N] [--rate R] [--repeats K]
JIT compile (or cache load) time is measured on a small warm-up run and reported separately.
"""

from __future__ import annotations

import argparse
import platform
import time

import numba
import numpy as np

import hermes_fast as hf
from hermes_fast import load_scenario
from hermes_fast.kernels.serving import Status
from hermes_fast.pipeline import build_pipeline
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import run_pipeline
from hermes_fast.workload import draw_workload, rng_for


def scenario(rate: float):
    index = {"type": "ivf_pq", "vectors": 1e9, "dim": 768, "n_lists": 65536, "n_probe": 32, "pq_m": 64}
    stages = [
        {"kind": "route", "latency_s": 0.001, "targets": ["llama8b-h100", "llama8b-h200"]},
        {"kind": "embed", "engine": "e5", "link": "pcie"},
        {"kind": "retrieve", "device": "grace_cpu", "replicas": 2, "index": index, "top_k": 4, "doc_tokens": 128,
         "link": "pcie"},
        {"kind": "kv_retrieve", "past_tokens": {"dist": "uniform", "min": 512, "max": 2048},
         "tiers": [{"tier": "host_dram_ddr5", "hit_rate": 0.5, "instances": 8},
                   {"tier": "remote_rdma_pool", "hit_rate": 0.8, "link": "ethernet"}]},
        {"kind": "prefill", "engine": "routed", "link": "pcie"},
        {"kind": "reason", "engine": "routed", "thinking_tokens": {"dist": "lognormal", "mean": 64, "cv": 1.0,
                                                                   "max": 1024}},
        {"kind": "decode", "engine": "routed"},
    ]  # fmt: skip
    llm = {"model": "llama-3.1-8b", "replicas": 4, "batching": {"policy": "chunked"}}
    return load_scenario(
        {
            "engines": [
                {"name": "llama8b-h100", "device": "h100_sxm", **llm},
                {"name": "llama8b-h200", "device": "h200_sxm", **llm},
                {"name": "e5", "model": "e5-base", "device": "l40s", "replicas": 2},
            ],
            "links": [
                {"name": "pcie", "bandwidth_bytes_per_s": 32e9, "latency_s": 2e-6},
                {"name": "ethernet", "bandwidth_bytes_per_s": 12.5e9, "latency_s": 1e-5},
            ],
            "workload": {
                "rate_per_s": rate,
                "classes": [
                    {
                        "prompt_tokens": {"dist": "lognormal", "mean": 256, "cv": 1.0, "max": 4096},
                        "output_tokens": {"dist": "lognormal", "mean": 128, "cv": 1.0, "max": 2048},
                        "pipeline": stages,
                    }
                ],
            },
        }
    )


def timed_run(rate: float, n: int, seed: int = 0):
    sc = scenario(rate)
    setup = build_pipeline(resolve_scenario(sc))
    rng = rng_for(seed)
    draws = draw_workload(sc.workload, n, rng)
    t0 = time.perf_counter()
    run = run_pipeline(setup, draws, rng)
    return time.perf_counter() - t0, run, setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=100.0, help="arrivals per second")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numba {numba.__version__}, numpy {np.__version__}")
    t0 = time.perf_counter()
    hf.simulate(scenario(args.rate), n_requests=200, seed=1)  # compiles (or loads from the cache) the loop
    print(f"compile / cache load (first simulate call, 200 requests): {time.perf_counter() - t0:.1f} s")
    walls = []
    for _ in range(args.repeats):
        wall, run, setup = timed_run(args.rate, args.requests)
        walls.append(wall)
    status = run.status
    best = min(walls)
    util = {p.name: run.busy_s[setup.serving.replica_pool == k].sum() for k, p in enumerate(setup.serving.pools)}
    span = run.end_s - run.arrival_s[0]
    print(
        f"{args.requests:,} requests at {args.rate:g}/s through 7 stages, {len(setup.serving.pools)} pools, "
        f"{len(setup.resources)} shared resources: {', '.join(f'{w:.2f}' for w in walls)} s -> best "
        f"{args.requests / best:,.0f} req/s (events {run.events:,}, fast-forwarded iterations "
        f"{run.fast_forwarded_iterations:,}, completed {np.sum(status == Status.DONE):,}, rejected "
        f"{np.sum(status == Status.REJECTED):,})"
    )
    counts = {p.name: p.replicas for p in setup.serving.pools}
    print("pool utilisation: " + ", ".join(f"{k} {v / (counts[k] * span):.2f}" for k, v in util.items()))
    print(
        "link utilisation: "
        + ", ".join(f"{name} {run.link_busy_s[k] / span:.3f}" for k, name in enumerate(setup.resources[:2]))
    )


if __name__ == "__main__":
    main()
