"""Benchmark: the planner's best throughput against published tuned deployments it has never seen (issue 23).

For each row of ``hermes_fast/data/reference/published_throughput.csv`` (SemiAnalysis InferenceMAX nightly runs,
single-node, aggregated serving, no speculative decoding) the planner is asked the question the published point
answers: the most throughput of that model on the node's 8 devices of that kind, with that stack and format, for
the benchmark's request lengths (uniform integers in [0.8 L, L] for input and output, as InferenceMAX's
``--random-range-ratio 0.8``), at the latency the published deployment reached: median TPOT and median TTFT no worse
than its own (``quantile 0.5``). The planner searches TP 1/2/4/8 x EP 1/2/4/8 x attention DP off/on, one stage
(``pp 1``), colocated layouts only (the published ones are single-node aggregated), max batch 16..512 and token
budget 8192..32768; it picks the layout and the replica count itself. The same question is asked again with the
layout fixed to the published one (its TP / EP / attention DP) and the max batch fixed to the published concurrency
(the most requests the benchmark client ever had in flight; replicas and token budget still searched): the
published deployment simulated, which separates the step costs from the planner's choice of layout and limits.

InferenceMAX sweeps concurrency 4..64 (or 128) only, so a published point is the throughput at that concurrency, not
the most the deployment could carry at its TPOT: where the planner's free search runs larger batches it may beat
the published point legitimately.

Compared: total (input + output) tokens/s per device, InferenceMAX's ``tput_per_gpu``; for the planner the capacity
at the targets x the mean request length / devices of the layout. Nothing is fitted to the published values.

Open loop against closed loop: InferenceMAX holds a fixed number of requests in flight (``--max-concurrency``); the
planner's capacity search sends Poisson arrivals. At the same median TPOT the two need not carry the same batch.

Run:  python benchmarks/published_deployments.py [--requests 4000] [--top-k 12] [--only ID-substring]

``--requests`` arrivals per simulated run: few enough to keep the run to a few minutes on 2 cores, and the capacity
searches stop at 3% relative tolerance. Too few distort the answer where many replicas each hold large batches of
long outputs (a run then ends before the batches fill): gpt-oss-120b 1k/1k on B200 gave 14,086 tok/s/device with
1000 requests and 43,272 with 4000.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import hermes_fast as hf
from hermes_fast.calibration.serving_scenario import trt_graph_sizes

DATA = Path(hf.__file__).parent / "data" / "reference" / "published_throughput.csv"

SPACE = {
    "tp": [1, 2, 4, 8],
    "pp": [1],
    "ep": [1, 2, 4, 8],
    "attention_dp": [False, True],
    "cp": [1],
    "max_batch_size": [16, 32, 64, 128, 256, 512],
    "max_batched_tokens": [8192, 16384, 32768],
    "colocated": True,
    "disaggregated": False,
    "quantile": 0.5,
    "objective": "capacity",
}


def rows(path: Path = DATA) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def stack(row: dict) -> dict:
    """The plan's stack for a published point: the row's, and for trtllm-serve its launch's CUDA graphs (the script
    captures padded graphs up to the concurrency; the preset's defaults run other decode batches eagerly)."""
    if row["stack"] != "trtllm":
        return {"stack": row["stack"]}
    sizes = trt_graph_sizes(int(row["concurrency"]))
    graphs = {"base": "trtllm", "cuda_graph_padding": True, "cuda_graph_sizes": sizes}
    return {"stack": "trtllm-launched", "stacks": {"trtllm-launched": graphs}}


def formats(row: dict) -> dict:
    """The plan's formats for a published point: gpt-oss's release stores only its experts in MXFP4 (attention,
    router and embeddings BF16, the GEMMs at BF16 here), so BF16 with ``expert_weight: fp4``; the others their
    precision throughout."""
    if row["model"].startswith("gpt-oss") and row["precision"] == "fp4":
        return {"dtypes": ["bf16"], "expert_weight": "fp4"}
    return {"dtypes": [row["precision"]]}


def question(row: dict, n_requests: int, top_k: int) -> dict:
    """The plan question one published point answers."""
    lengths = {
        key: {"dist": "uniform", "min": int(row[f"{key}_min"]), "max": int(row[f"{key}_max"])}
        for key in ("input_tokens", "output_tokens")
    }
    return {
        **SPACE,
        "model": row["model"],
        "devices": {row["device"]: int(row["devices_in_node"])},
        "max_devices": int(row["devices_in_node"]),
        "workload": {
            "classes": [{"prompt_tokens": lengths["input_tokens"], "output_tokens": lengths["output_tokens"]}]
        },
        "ttft_s": float(row["median_ttft_s"]),
        "tpot_s": float(row["median_tpot_s"]),
        **stack(row),
        **formats(row),
        "top_k": top_k,
        "n_requests": n_requests,
    }


def mean_tokens(row: dict) -> float:
    """Mean input + output tokens of a request (uniform integers on [min, max])."""
    return sum((int(row[f"{k}_min"]) + int(row[f"{k}_max"])) / 2 for k in ("input_tokens", "output_tokens"))


def published_layout(row: dict) -> str:
    tp, ep, dp = int(row["published_tp"]), int(row["published_ep"]), row["published_dp_attention"] == "true"
    return f"TP{tp}" + (f"EP{ep}" if ep > 1 else "") + (" DP-attn" if dp else "") + f" conc {row['concurrency']}"


def best(ds, row: dict) -> dict:
    """The planner's best verified layout: total tokens/s per device at capacity (None where no layout met the
    targets), its layout and binding target."""
    table = hf.plan_table(ds)
    table = table[table.valid]
    if table.empty:
        return {"tok_s_per_device": None, "layout": "none met the targets", "binding": "", "ttft": 0, "tpot": 0}
    top = table.iloc[0]
    return {
        "tok_s_per_device": float(top.capacity_req_s) * mean_tokens(row) / float(top.devices),
        "layout": str(top.layout),
        "binding": str(top.binding),
        "ttft": float(top.ttft_p50_ms),
        "tpot": float(top.tpot_p50_ms),
    }


def error(found: dict, published: float) -> float | None:
    """(planned - published) / published, None where no layout met the targets."""
    tok = found["tok_s_per_device"]
    return None if tok is None else (tok - published) / published


def throughput(found: dict) -> str:
    return "-" if found["tok_s_per_device"] is None else f"{found['tok_s_per_device']:,.0f}"


def percent(err: float | None) -> str:
    return "-" if err is None else f"{err:+.0%}"


def shown(found: dict, err: float | None) -> str:
    return "none" if err is None else f"{throughput(found)} ({percent(err)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000, help="arrivals per simulated run")
    ap.add_argument("--top-k", type=int, default=12, help="layouts verified by simulation per question")
    ap.add_argument("--only", default="", help="run only rows whose id contains this")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {DATA.relative_to(Path(hf.__file__).parent.parent)}; {args.requests} requests a run, top {args.top_k}")
    start = time.perf_counter()
    skipped = []
    lines = []
    for row in rows():
        if args.only not in row["id"]:
            continue
        if row["compared"] != "yes":
            skipped.append((row["id"], row["why_not"]))
            continue
        t0 = time.perf_counter()
        spec = question(row, args.requests, args.top_k)
        free = best(hf.plan(spec), row)
        fixed_spec = {
            **spec,
            "tp": [int(row["published_tp"])],
            "ep": [int(row["published_ep"])],
            "attention_dp": [row["published_dp_attention"] == "true"],
            "max_batch_size": [int(row["concurrency"])],
        }
        fixed = best(hf.plan(fixed_spec), row)
        pub = float(row["value"])
        err, err_fixed = error(free, pub), error(fixed, pub)
        lines.append((row, pub, free, err, fixed, err_fixed))
        print(
            f"{row['id']}: published {pub:,.0f} tok/s/device ({published_layout(row)}, TPOT p50 "
            f"{1e3 * float(row['median_tpot_s']):.1f} ms, TTFT p50 {1e3 * float(row['median_ttft_s']):.0f} ms); "
            f"planner {shown(free, err)} with {free['layout']} [binds {free['binding']}: "
            f"TTFT {free['ttft']:.0f} ms, TPOT {free['tpot']:.1f} ms]; published layout "
            f"{shown(fixed, err_fixed)} with {fixed['layout']}; {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    print()
    print("| row | stack (image) | device | model, format | in / out | published (layout) | planner best (layout) "
          "| error | published layout, planned | error |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row, pub, free, err, fixed, err_fixed in lines:
        print(
            f"| {row['id']} | {row['stack']} ({row['stack_image'].split('/')[-1]}) | 8 x {row['device']} | "
            f"{row['model']} {row['precision']} | {row['isl']} / {row['osl']} | "
            f"{pub:,.0f} ({published_layout(row)}) | "
            f"{throughput(free)} ({free['layout']}) | {percent(err)} | {throughput(fixed)} ({fixed['layout']}) | "
            f"{percent(err_fixed)} |"
        )
    if lines:
        print()
    for what, k in (("the planner's best", 3), ("the published layout, planned", 5)):
        errs = sorted(abs(x[k]) for x in lines if x[k] is not None)
        none = sum(x[k] is None for x in lines)
        met = f"median {errs[len(errs) // 2]:.0%}, max {errs[-1]:.0%}, " if errs else ""
        print(f"|error| of {what}: {met}n {len(errs)}" + (f" ({none} met no target)" if none else ""))
    for rid, why in skipped:
        print(f"not compared: {rid}: {why}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
