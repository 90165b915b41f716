"""Benchmark: the deployment planner on Llama-3.1-70B over H100, H200 and B200 with up to 16 devices.

The question: 16 of each device available, at most 16 in one layout; prompts 2000 and outputs 300 tokens; TTFT p99
<= 2 s and TPOT p99 <= 50 ms; TP 1/2/4/8, PP 1/2/4, formats bf16/fp8 (and fp4 on B200), max batch 128/512, token
budget 2048/8192, colocated and disaggregated. The planner enumerates every layout, prunes with one estimate call,
ranks by the analytic bound and capacity-searches the best ``--top-k`` (2000 requests a run, seed 0).

Run:  python benchmarks/bench_plan.py [--top-k 20] [--repeats 3] [--workers N]

A warm-up plan of the same model on one device first loads (or compiles) the kernels; its time is reported apart.
Each timed run is end to end (enumeration, estimate, pruning, ranking, simulations, Dataset); the best of
``--repeats`` is reported, with the time of the enumeration + estimate part alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

import hermes_fast as hf
from hermes_fast.plan import plan_spec
from hermes_fast.plan.search import candidates, engine_table

QUESTION = {
    "model": "llama-3.1-70b",
    "devices": {"h100_sxm": 16, "h200_sxm": 16, "b200": 16},
    "max_devices": 16,
    "workload": {"prompt_tokens": 2000, "output_tokens": 300},
    "ttft_s": 2.0,
    "tpot_s": 0.05,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--per-group", type=int, default=None)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")

    start = time.perf_counter()
    hf.plan(QUESTION, devices={"h200_sxm": 4}, tp=[4], pp=[1], dtypes=["fp8"], top_k=1, n_requests=200)
    print(f"warm-up (kernels loaded or compiled): {time.perf_counter() - start:.1f} s")

    spec = plan_spec(QUESTION, top_k=args.top_k, per_group=args.per_group)
    search, total = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        t = engine_table(spec)
        c = candidates(spec, t)
        search.append(time.perf_counter() - start)
        start = time.perf_counter()
        ds = hf.plan(spec, workers=args.workers)
        total.append(time.perf_counter() - start)
    pruned = ", ".join(f"{k} {v}" for k, v in json.loads(ds.attrs["pruned"]).items() if v)
    print(f"engine configurations estimated: {len(t.device)}, each over a ladder of batch sizes")
    print(f"candidate layouts: {c.size} ({int(c.disaggregated.sum())} disaggregated); kept {ds.attrs['kept']}; "
          f"pruned {c.size - ds.attrs['kept']} ({pruned})")  # fmt: skip
    print(f"enumerate + estimate + prune + bound: {min(search):.2f} s (best of {args.repeats})")
    print(f"plan end to end with {ds.attrs['verified']} capacity searches: {min(total):.2f} s (best of "
          f"{args.repeats}; all: {', '.join(f'{x:.2f}' for x in total)})")  # fmt: skip
    table = hf.plan_table(ds)
    print(table.head(5)[["layout", "devices", "bound_req_s", "capacity_req_s", "tok_s_per_device"]].to_string())
    ratio = table.bound_req_s / table.capacity_req_s
    ratio = table.bound_req_s / table.capacity_req_s
    print(f"best: {ds.attrs['best']}; bound / simulated capacity over the verified: median "
          f"{np.nanmedian(ratio):.2f}, {np.nanmin(ratio):.2f} to {np.nanmax(ratio):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
