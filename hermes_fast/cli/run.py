"""``hermes-fast run``: simulate serving of a scenario and print its summary: a header with the workload (rate,
lengths) and the serving engines (model, device, layout, replicas, batching policy), then aligned tables."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from .args import calibration_arg
from .knobs import apply_knobs, flag_errors
from .outputs import check_out, write_dataset
from .warnings import print_warnings

__all__ = ["cmd_run", "describe_scenario", "format_table", "print_simulation"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], first_width: int = 14) -> list[str]:
    """Lines of a table: the first column left-aligned, the others right-aligned, every column as wide as its
    widest cell (at least 10, two spaces apart), so large values never run together."""
    widths = [max(first_width, *(len(r[0]) + 1 for r in rows), len(header[0]) + 1)]
    widths += [max(10, len(h) + 2, *(len(r[j]) + 2 for r in rows)) for j, h in enumerate(header) if j]
    return [
        "".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in (header, *rows)
    ]


def _length(x) -> str:
    if isinstance(x, int):
        return f"{x}"
    d = x.dist
    if d == "fixed":
        return f"{x.value}"
    if d == "uniform":
        return f"uniform {x.min}-{x.max}"
    if d == "empirical":
        text = f"empirical {x.path}:{x.column}"
    elif d == "zipf":
        text = f"zipf alpha {x.alpha:g}"
    elif d == "exponential":
        text = f"exponential mean {x.mean:g}"
    else:
        spread = f"cv {x.cv:g}" if x.cv is not None else f"std {x.std:g}"
        text = f"{d} mean {x.mean:g} {spread}"
    return text + (f" in [{x.min}, {x.max}]" if x.max is not None else "")


def _engine_text(e) -> str:
    p = e.parallel
    layout = f"tp {p.tp}" + (f" pp {p.pp}" if p.pp > 1 else "") + (f" ep {p.ep}" if p.ep > 1 else "")
    b = e.batching
    return (
        f"{e.name}: {e.model} on {p.tp * p.pp} x {e.device} ({layout}), {e.replicas} replica(s), "
        f"{b.policy} batching (max batch {b.max_batch_size}), stack {e.stack}"
    )


def describe_scenario(sc, rate: bool = True) -> list[str]:
    """Header lines: the arrival process and rate (``rate``: False for a capacity search, which finds it), the
    request lengths per class, and the engines serving them."""
    from .knobs import _serving_engines

    w = sc.workload
    arr = w.arrival
    if arr.process == "trace":
        how = f"trace {arr.trace.path}" + (
            f" rescaled to {w.rate_per_s:g} req/s" if arr.trace.rescale_to_rate else " (its own times)"
        )
    elif rate:
        unit = "sessions/s" if any(c.session is not None for c in w.classes) else "req/s"
        how = f"{'Poisson' if arr.process == 'poisson' else arr.process} arrivals at {w.rate_per_s:g} {unit}"
    else:
        how = f"{'Poisson' if arr.process == 'poisson' else arr.process} arrivals"
    if not w.classes:
        lengths = f"prompt {w.prompt_tokens} tokens, output {w.output_tokens} tokens"
    else:
        total = sum(c.weight for c in w.classes)
        lengths = "; ".join(
            (f"{c.name} {c.weight / total:.0%}: " if len(w.classes) > 1 else "")
            + f"prompt {_length(c.prompt_tokens)}, output {_length(c.output_tokens)} tokens"
            + (f" ({' > '.join(st.label for st in c.pipeline)})" if c.pipeline else "")
            + (f", {c.prefix.distinct} prefix(es) of {_length(c.prefix.tokens)} tokens" if c.prefix else "")
            + (f", sessions of {_length(c.session.turns)} turns" if c.session else "")
            for c in w.classes
        )
    engines = {e.name: e for e in sc.engines}
    lines = [f"# workload: {how}; {lengths}"]
    lines += [f"# engine {_engine_text(engines[name])}" for name in _serving_engines(sc)]
    return lines


def _front_end_lines(sc) -> list[str]:
    """One line per serving stack with an API front end: its latency, which a request pays on entering an engine of
    that stack, is in TTFT and E2E, and not in queueing (the wait from joining the engine's queue to first
    admission), so the table's parts do not add up to TTFT without it."""
    from ..resolve import resolve_scenario
    from .knobs import _serving_engines

    serving = set(_serving_engines(sc))
    stacks = {r.engine.stack: r.stack.frontend_s for r in resolve_scenario(sc).engines if r.engine.name in serving}
    return [
        f"front end     {frontend_s * 1e3:.1f} ms a request entering an engine on stack {name}, "
        "in TTFT and E2E, not in queueing"
        for name, frontend_s in stacks.items()
        if frontend_s
    ]


def print_simulation(ds, out=None, scenario=None, header: bool = True) -> None:
    """A readable summary of a simulation Dataset: latency percentiles, throughput, pools, counts (to ``out``,
    default stdout); with the :class:`~hermes_fast.config.Scenario`, its workload and engines first (``header``
    False: no header lines)."""
    out = out or sys.stdout
    rep = ds.sizes["replicate"]
    mean = ds.mean("replicate") if rep > 1 else ds.isel(replicate=0)
    if header:
        print(f"# {ds.attrs.get('title', '')}: {ds.attrs.get('serving', '')}", file=out)
        for line in describe_scenario(scenario) if scenario is not None else []:
            print(line, file=out)
        print(f"# {ds.attrs.get('n_requests')} requests x {rep} replicate(s), seed {ds.attrs.get('seed')}", file=out)
    qs = [f"p{q * 100:g}" for q in ds["quantile"].values]
    rows = []
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E"), ("queue", "queueing")):
        values = [float(mean[f"{name}_mean_s"]), *mean[f"{name}_s"].values]
        rows.append([label, *(f"{v * 1e3:.2f}" for v in values)])
    for line in format_table(["latency (ms)", "mean", *qs], rows):
        print(line, file=out)
    for line in _front_end_lines(scenario) if scenario is not None else []:
        print(line, file=out)
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
    warmup = scenario.serving.warmup_requests if scenario is not None else 0
    after = f" (after the {warmup} warm-up requests)" if warmup else ""
    print("requests      " + ", ".join(f"{v} {k}" for k, v in counts.items()) + after, file=out)
    if bool(ds.unstable.any()):
        print(
            f"UNSTABLE: arrivals exceed capacity (backlog of {int(ds.backlog_requests.max())} requests at the last "
            f"arrival; {counts['dropped']} dropped, {counts['unfinished']} unfinished); latencies grow with run length",
            file=out,
        )


def cmd_run(args) -> int:
    from ..resolve import resolve_scenario
    from ..simulate import simulate

    out = check_out(args.out) if args.out else None  # before any work
    scenario, settings, base = apply_knobs(args.scenario, args, "run")
    with flag_errors(settings, base, args.scenario):
        sc = resolve_scenario(scenario).effective_scenario  # (the fields left to the stack, filled)
        ds = simulate(
            scenario,
            n_requests=args.requests,
            seed=args.seed,
            replicates=args.replicates,
            keep_requests=args.per_request,
            calibration=calibration_arg(args),
        )
    print_simulation(ds, scenario=sc)
    print_warnings(ds)
    if out is not None:
        write_dataset(ds, out)
        print(f"wrote {out}")
    return 0
