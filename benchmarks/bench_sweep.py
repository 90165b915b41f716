"""Benchmark: a sweep of many simulated points, serial against a dask LocalCluster of worker processes.

Llama-3.1-8B on one H100, lognormal prompts/outputs (512/128 mean, cv 1); the grid multiplies 4 batching
policies x 5 max batch sizes x a Poisson arrival rate axis (geometric from 5 to 50 per second) with as many
values as make ``--points`` points. Each point simulates ``--requests`` requests (one replicate).

Run:  python benchmarks/bench_sweep.py [--points 10000] [--requests 10000] [--workers 2]

The serial and the cluster sweep must give identical Datasets (checked). JIT compile (or cache load) is
done by a warm-up point beforehand and excluded; the cluster's start-up (worker processes importing
hermes_fast and loading the compiled kernels from the disk cache) is included in its wall time and also
reported on its own. Zarr output goes to a temporary directory in both runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import xarray as xr

import hermes_fast as hf

POLICIES = ["static", "continuous", "chunked", "mixed"]
BATCH = [16, 32, 64, 128, 256]


def scenario() -> dict:
    return {
        "name": "bench-sweep",
        "engines": [{"name": "llama8b", "model": "llama-3.1-8b", "device": "h100_sxm"}],
        "workload": {
            "rate_per_s": 10.0,
            "classes": [
                {
                    "prompt_tokens": {"dist": "lognormal", "mean": 512, "cv": 1.0, "max": 8192},
                    "output_tokens": {"dist": "lognormal", "mean": 128, "cv": 1.0, "max": 8192},
                }
            ],
        },
    }


def grid(points: int) -> dict:
    n_rates = max(1, points // (len(POLICIES) * len(BATCH)))
    return {
        "engines.llama8b.batching.policy": POLICIES,
        "engines.llama8b.batching.max_batch_size": BATCH,
        "workload.rate_per_s": np.round(np.geomspace(5.0, 50.0, n_rates), 6).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    g = grid(args.points)
    n_points = int(np.prod([len(v) for v in g.values()]))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; {n_points:,} points x "
        f"{args.requests:,} requests; hermes_fast {hf.__version__}"
    )
    t0 = time.perf_counter()
    hf.sweep(scenario(), {"workload.rate_per_s": [5.0]}, n_requests=200)  # compile or load the kernels
    print(f"compile / cache load (one warm-up point): {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        serial = hf.sweep(scenario(), g, n_requests=args.requests, out=f"{tmp}/serial.zarr", progress=False)
        t_serial = time.perf_counter() - t0

        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        )
        client = Client(cluster)
        client.run(lambda: hf.sweep(scenario(), {"workload.rate_per_s": [5.0]}, n_requests=200))  # kernels loaded
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        parallel = hf.sweep(
            scenario(), g, n_requests=args.requests, out=f"{tmp}/dask.zarr", scheduler=client, progress=False
        )
        t_dask = time.perf_counter() - t0
        client.close()
        cluster.close()
    xr.testing.assert_identical(serial.drop_attrs(), parallel.drop_attrs())
    simulated = n_points * args.requests
    print(f"serial: {t_serial:.1f} s ({n_points / t_serial:.1f} points/s, {simulated / t_serial:,.0f} requests/s)")
    print(
        f"dask LocalCluster, {args.workers} worker processes: {t_dask:.1f} s after a {t_start:.1f} s start-up "
        f"({n_points / t_dask:.1f} points/s); speed-up {t_serial / t_dask:.2f}x "
        f"({t_serial / (t_dask + t_start):.2f}x with the start-up); results identical to serial"
    )


if __name__ == "__main__":
    main()
