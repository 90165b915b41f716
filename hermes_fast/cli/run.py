"""``hermes-fast run``: simulate serving of a scenario and print its summary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .args import calibration_arg
from .warnings import print_warnings

__all__ = ["cmd_run", "print_simulation"]


def print_simulation(ds, out=None) -> None:
    """A readable summary of a simulation Dataset: latency percentiles, throughput, pools, counts."""
    out = out or sys.stdout
    rep = ds.sizes["replicate"]
    mean = ds.mean("replicate") if rep > 1 else ds.isel(replicate=0)
    print(f"# {ds.attrs.get('title', '')}: {ds.attrs.get('serving', '')}", file=out)
    print(f"# {ds.attrs.get('n_requests')} requests x {rep} replicate(s), seed {ds.attrs.get('seed')}", file=out)
    qs = [f"p{q * 100:g}" for q in ds["quantile"].values]
    print(f"{'latency (ms)':14s}{'mean':>10s}" + "".join(f"{q:>10s}" for q in qs), file=out)
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E"), ("queue", "queueing")):
        row = f"{label:14s}{float(mean[f'{name}_mean_s']) * 1e3:10.2f}"
        row += "".join(f"{v * 1e3:10.2f}" for v in mean[f"{name}_s"].values)
        print(row, file=out)
    thinking = float(mean.throughput_thinking_token_per_s)  # reasoning: tokens beyond the answer's
    print(
        f"throughput    {float(mean.throughput_request_per_s):.3f} req/s, "
        f"{float(mean.throughput_output_token_per_s):.1f} output tok/s, "
        + (f"{thinking:.1f} thinking tok/s, " if thinking else "")
        + f"{float(mean.throughput_input_token_per_s):.1f} input tok/s",
        file=out,
    )
    print(
        f"goodput       {float(mean.goodput_request_per_s):.3f} req/s; SLO attainment "
        f"{float(mean.slo_attainment) * 100:.1f}%",
        file=out,
    )
    for k, pool in enumerate(ds["pool"].values):
        kv = float(mean.kv_occupancy[k])
        kv_text = f"KV occupancy {kv * 100:.1f}%, " if np.isfinite(kv) else ""
        print(
            f"pool {pool} ({ds.pool_role.values[k]}): busy {float(mean.busy_fraction[k]) * 100:.1f}%, "
            f"mean batch {float(mean.mean_batch_size[k]):.1f}, {kv_text}preemptions {float(mean.preemptions[k]):.0f}",
            file=out,
        )
    if "stage" in ds.dims:  # pipelines: where the end-to-end time goes
        for k, stage in enumerate(ds["stage"].values):
            print(
                f"stage {stage}: {float(mean.stage_time_s[k]) * 1e3:.2f} ms per request (queueing "
                f"{float(mean.stage_queue_s[k]) * 1e3:.2f}, transfer in {float(mean.stage_transfer_s[k]) * 1e3:.3f})",
                file=out,
            )
        for k, link in enumerate(ds["link"].values):
            print(f"link {link}: utilisation {float(mean.link_utilization[k]) * 100:.2f}%", file=out)
    energy = float(mean.energy_j_per_token)
    cost = float(mean.cost_usd_per_mtoken)
    cost_text = f"${cost:.3f} per million output tokens" if np.isfinite(cost) else "cost n/a (a device has no price)"
    print(f"energy        {energy:.3f} J per output token; {cost_text}", file=out)
    counts = {k: int(ds[f"{k}_requests"].sum()) for k in ("arrived", "completed", "rejected", "dropped", "unfinished")}
    print("requests      " + ", ".join(f"{v} {k}" for k, v in counts.items()), file=out)
    if bool(ds.unstable.any()):
        print(
            f"UNSTABLE: arrivals exceed capacity (backlog of {int(ds.backlog_requests.max())} requests at the last "
            f"arrival; {counts['dropped']} dropped, {counts['unfinished']} unfinished); latencies grow with run length",
            file=out,
        )


def cmd_run(args) -> int:
    from ..simulate import simulate

    ds = simulate(
        Path(args.scenario) if args.scenario else None,
        n_requests=args.requests,
        seed=args.seed,
        replicates=args.replicates,
        keep_requests=args.per_request,
        calibration=calibration_arg(args),
    )
    print_simulation(ds)
    print_warnings(ds)
    if args.out:
        ds.to_netcdf(args.out)
        print(f"wrote {args.out}")
    return 0
