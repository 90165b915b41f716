"""Command line: ``hermes-fast run|estimate|sweep|plot|presets|validate|calibrate``. Config errors print one
line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config.base import ConfigError, field_docs

_PRESET_KINDS = ("devices", "models", "memory_tiers", "variables")


def _grid_value(text: str):
    """A --grid value: an integer, a number, or else a name (no YAML: '1:2' must not become 62)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_grid(items: Sequence[str]) -> dict[str, list]:
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(
                f"--grid {item}", item, "KEY=V1,V2,... (e.g. batch_size=1,8,64 or engines.main.parallel.tp=1,2)"
            )
        if key.strip() in grid:
            raise ConfigError(f"--grid {item}", item, f"each grid key once (combine values: {key.strip()}=A,B,...)")
        grid[key.strip()] = [_grid_value(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v * 1e3:10.3f}"
    if unit == "GB":
        return f"{v / 1e9:8.2f}"
    if unit == "int":
        return f"{int(v):>10d}"
    return f"{v:10.1f}"


def print_estimate(ds, out=None, max_rows: int = 60) -> None:
    """A readable table of an estimate Dataset, one row per grid point (to ``out``, default stdout)."""
    from .variables import BOUND_NAMES

    out = out or sys.stdout
    columns = [
        ("ttft_s", "TTFT ms", "ms"),
        ("tpot_s", "TPOT ms", "ms"),
        ("e2e_s", "E2E s", "f"),
        ("throughput_output_token_per_s", "tok/s", "f"),
        ("weights_bytes", "GB/dev", "GB"),
        ("kv_capacity_tokens", "KV tokens", "int"),
    ]
    dims = list(ds.tpot_s.dims)
    flat = {name: ds[name].broadcast_like(ds.tpot_s).transpose(*dims).values.ravel() for name, _, _ in columns}
    fits = ds.fits.transpose(*dims).values.ravel()
    bound = ds.decode_bound.transpose(*dims).values.ravel()
    index = np.array(list(np.ndindex(*ds.tpot_s.shape))) if ds.tpot_s.ndim else np.zeros((1, 0), int)
    coords = [[str(v) for v in ds[d].values] for d in dims]
    widths = [max(len(d), *(len(c) for c in cs)) for d, cs in zip(dims, coords, strict=True)]
    head = "  ".join(d.ljust(w) for d, w in zip(dims, widths, strict=True))
    head += "".join(f"{label:>11s}" for _, label, _ in columns) + "  fits   bound"
    print(f"# {ds.attrs.get('title', '')} ({ds.attrs.get('method', '')})", file=out)
    print(head, file=out)
    n = len(fits)
    for r in range(min(n, max_rows)):
        row = "  ".join(coords[j][index[r, j]].ljust(widths[j]) for j in range(len(dims)))
        row += "".join(" " + _fmt(flat[name][r], unit) for name, _, unit in columns)
        row += f"  {'yes' if fits[r] else 'NO ':5s}  {BOUND_NAMES[bound[r]] if bound[r] >= 0 else 'n/a'}"
        print(row, file=out)
    if n > max_rows:
        print(f"... {n - max_rows} more rows (write them all with --out FILE.nc)", file=out)


def _cmd_estimate(args) -> int:
    from .estimate import estimate

    grid = _parse_grid(args.grid) if args.grid else None
    ds = estimate(Path(args.scenario) if args.scenario else None, grid=grid, calibration=_calibration_arg(args))
    print_estimate(ds)
    if args.out:
        ds.to_netcdf(args.out)
        print(f"wrote {args.out}")
    return 0


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
    print(
        f"throughput    {float(mean.throughput_request_per_s):.3f} req/s, "
        f"{float(mean.throughput_output_token_per_s):.1f} output tok/s, "
        f"{float(mean.throughput_input_token_per_s):.1f} input tok/s",
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
            f"pool {pool} ({ds.pool_role.values[k]}): utilisation {float(mean.utilization[k]) * 100:.1f}%, "
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


def _cmd_run(args) -> int:
    from .simulate import simulate

    ds = simulate(
        Path(args.scenario) if args.scenario else None,
        n_requests=args.requests,
        seed=args.seed,
        replicates=args.replicates,
        keep_requests=args.per_request,
        calibration=_calibration_arg(args),
    )
    print_simulation(ds)
    if args.out:
        ds.to_netcdf(args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import sweep_file

    extra = {"n_requests": args.requests} if args.requests is not None else {}
    ds = sweep_file(
        args.sweep,
        out=args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        progress=False if args.no_progress else None,
        timeout_s=args.connect_timeout,
        **extra,
    )
    dims = ", ".join(f"{d}={ds.sizes[d]}" for d in ds.ttft_s.dims if d not in ("replicate", "quantile"))
    print(f"# {ds.attrs['title']}: {ds.attrs['points']} points ({dims or 'one point'}) x {ds.sizes['replicate']} "
          f"replicate(s) of {ds.attrs['n_requests']} requests, seed {ds.attrs['seed']}")  # fmt: skip
    if "capacity_request_per_s" in ds:
        cap = ds.capacity_request_per_s.mean("replicate")
        print(f"capacity under the targets: {float(cap.min()):.3f} to {float(cap.max()):.3f} request/s")
    p99 = ds.ttft_s.sel(quantile=0.99).mean("replicate")
    print(f"p99 TTFT: {float(p99.min()) * 1e3:.2f} to {float(p99.max()) * 1e3:.2f} ms over the points")
    print(f"wrote {args.out}" if args.out else "(no --out: results not saved)")
    return 0


_PLOTS = ("pareto", "latency", "goodput", "breakdown", "cdf", "heatmap")


def _cmd_plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot
    from .pareto import _coord_value
    from .sweep import open_sweep

    ds = open_sweep(args.results)
    for item in args.sel or []:
        dim, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--sel {item}", item, "DIM=VALUE")
        ds = ds.sel({dim: _coord_value(ds, dim, value)})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kind = args.kind
    if kind == "pareto":
        plot.pareto_front(ds, args.x or "ttft_s[quantile=0.99]", args.y or "output_token_per_usd", ax=ax)
    elif kind == "latency":
        plot.latency_throughput(
            ds, args.y or "ttft_s[quantile=0.99]", args.x or "throughput_output_token_per_s", hue=args.hue, ax=ax
        )
    elif kind == "goodput":
        if not args.x:
            raise ConfigError("--x", None, "the swept SLO dim for --kind goodput (e.g. serving.slo.ttft_s)")
        plot.goodput_vs_slo(ds, args.x, args.y or "goodput_request_per_s", hue=args.hue, ax=ax)
    elif kind == "breakdown":
        plot.stage_breakdown(ds, args.x, ax=ax)
    elif kind == "cdf":
        plot.latency_cdf(ds, args.y or "ttft", hue=args.hue, ax=ax)
    else:
        if not (args.var and args.x and args.y):
            raise ConfigError("--var", args.var, "--var, --x and --y (two swept dims) for --kind heatmap")
        plot.heatmap(ds, args.var, args.x, args.y, ax=ax)
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0


def _cmd_presets(args) -> int:
    from .catalog import preset_names
    from .config.hardware import Device, MemoryTier
    from .config.model import Model
    from .resolve import Catalog
    from .variables import RENAMED, VARIABLES

    kinds = [args.kind] if args.kind else list(_PRESET_KINDS[:3])
    cat = Catalog()
    for kind in kinds:
        if kind == "variables":
            print("# variables")
            for v in VARIABLES.values():
                print(f"{v.name:32s} [{v.units}] {v.long_name}: {v.description}")
            print("# renamed variables: old name -> current name (objectives take old names until the next release)")
            for old, new in RENAMED.items():
                print(f"{old:32s} -> {new}")
            continue
        print(f"# {kind}")
        for name in preset_names(kind):
            x = cat.get(kind, name)
            if kind == "devices":
                bf16 = x.peak_flop_per_s.resolve("bf16")[0]
                print(
                    f"{name:16s} {x.name:42s} bf16 {bf16 / 1e12:7.1f} TFLOP/s  mem {x.memory_bytes / 1e9:6.1f} GB"
                    f"  {x.memory_bandwidth_bytes_per_s / 1e12:5.2f} TB/s  {x.power_peak_w:5.0f} W"
                )
            elif kind == "models":
                moe = f" MoE {x.moe.n_experts}x top-{x.moe.top_k}" if x.moe else ""
                mla = " MLA" if x.mla else ""
                print(
                    f"{name:18s} {x.name:24s} {x.kind:13s} layers {x.n_layers:3d} hidden {x.hidden_size:6d}"
                    f" heads {x.n_heads:3d}/{x.n_kv_heads:<3d}{moe}{mla}"
                )
            else:
                print(
                    f"{name:20s} {x.name:48s} {x.capacity_bytes / 1e9:9.0f} GB"
                    f" {x.bandwidth_bytes_per_s / 1e9:8.1f} GB/s {x.latency_s * 1e6:9.2f} us"
                )
        if args.fields:
            schema = {"devices": Device, "models": Model, "memory_tiers": MemoryTier}[kind]
            for fname, unit, doc in field_docs(schema):
                print(f"    {fname:32s} [{unit}] {doc}")
    return 0


def _calibration_arg(args):
    """--calibration values: 'default', 'none', shipped names or files (repeatable)."""
    values = getattr(args, "calibration", None)
    return values if values else "default"


def print_validation(rows: list[dict], out=None, own: bool = False) -> None:
    """The validation table: uncalibrated vs calibrated error on held-back rows (``own``: on every row of the
    user's measurements), per family, device, backend."""
    out = out or sys.stdout
    what = "these measurements, every row" if own else "shipped measurements, rows held back from each fit"
    print(f"# kernel predictions vs {what}", file=out)
    print("# |predicted - measured| / measured: median and 90th percentile", file=out)
    print("# analytic: the calibration's fitted parameters without its attention residual surfaces", file=out)
    head = f"{'family':22s}{'device':15s}{'backend':9s}{'calibration':16s}{'rows':>6s}"
    head += f"{'default med':>13s}{'p90':>8s}{'analytic med':>14s}{'p90':>8s}{'calibrated med':>16s}{'p90':>8s}"
    print(head, file=out)
    for r in rows:
        print(
            f"{r['family']:22s}{r['device']:15s}{r['backend']:9s}{r['calibration']:16s}{r['rows_held']:6d}"
            f"{r['default_median']:13.1%}{r['default_p90']:8.1%}{r['analytic_median']:14.1%}{r['analytic_p90']:8.1%}"
            f"{r['calibrated_median']:16.1%}{r['calibrated_p90']:8.1%}",
            file=out,
        )


def print_step_comparison(rows: list[dict], out=None) -> None:
    """Whole-step predictions (shipped default calibrations) against Splitwise's measured Llama-2-70B steps,
    then with the host costs fitted to the other decode steps (held-back rows), and the fitted costs."""
    out = out or sys.stdout
    print("# whole steps built from the kernels vs measured (Splitwise, Llama-2-70B fp16, DGX-A100/H100)", file=out)
    print("# gap: median measured - predicted; +host: with host costs fitted to a device's decode steps,", file=out)
    print("# error on the rows out of that fit (held: held-back decode steps, every prefill step)", file=out)
    head = f"{'family':14s}{'device':15s}{'tp':>3s}{'rows':>6s}{'default med':>13s}"
    head += f"{'calibrated med':>16s}{'p90':>8s}{'signed':>9s}{'gap ms':>9s}{'held':>6s}{'+host med':>11s}{'p90':>8s}"
    print(head, file=out)
    for r in rows:
        host = "-" if r["rows_held"] == 0 else None
        print(
            f"{r['family']:14s}{r['device']:15s}{r['tp']:3d}{r['rows']:6d}{r['uncalibrated_median']:13.1%}"
            f"{r['calibrated_median']:16.1%}{r['calibrated_p90']:8.1%}{r['calibrated_signed']:+9.1%}"
            f"{r['median_gap_s'] * 1e3:9.1f}{r['rows_held']:6d}"
            + (f"{host:>11s}{host:>8s}" if host else f"{r['host_median']:11.1%}{r['host_p90']:8.1%}"),
            file=out,
        )
    fitted = {r["device"]: r for r in rows if "step_overhead_s" in r}
    for device, r in sorted(fitted.items()):
        print(
            f"# {device} host costs: {r['step_overhead_s'] * 1e3:.2f} ms per step"
            f" + {r['step_overhead_per_tp_rank_s'] * 1e3:.2f} ms per TP rank beyond the first"
            f" + {r['sequence_overhead_s'] * 1e3:.3f} ms per sequence",
            file=out,
        )


def _cmd_validate(args) -> int:
    import csv

    from .calibration.calibration import load_calibration
    from .calibration.measurements import read_measurements
    from .calibration.validate import step_comparison, validation_table

    cals = [load_calibration(c) for c in args.calibration] if args.calibration else None
    ms = read_measurements(args.measurements) if args.measurements else None
    rows = validation_table(cals, ms)
    print_validation(rows, own=ms is not None)
    if ms is None and cals is None:
        print(file=sys.stdout)
        print_step_comparison(step_comparison())
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["family"])
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.out}")
    return 0


def print_measured_errors(plain: list[dict], calibrated: list[dict], out=None) -> None:
    """Per family and device: the error of uncalibrated and calibrated predictions on measured rows."""
    out = out or sys.stdout
    print("# predictions vs these measurements: |predicted - measured| / measured, median and p90", file=out)
    print("# signed: median (predicted - measured) / measured of the calibrated prediction", file=out)
    head = f"{'family':22s}{'device':15s}{'rows':>6s}{'default med':>13s}{'p90':>8s}"
    print(head + f"{'calibrated med':>16s}{'p90':>8s}{'signed':>9s}", file=out)
    for p, c in zip(plain, calibrated, strict=True):
        print(
            f"{c['family']:22s}{c['device']:15s}{c['rows']:6d}{p['median_abs_error']:13.1%}{p['p90_abs_error']:8.1%}"
            f"{c['median_abs_error']:16.1%}{c['p90_abs_error']:8.1%}{c['median_signed_error']:+9.1%}",
            file=out,
        )


def _cmd_measure(args) -> int:
    from .calibration.measure import OP_GROUPS, measure
    from .calibration.validate import error_summary, reference_errors

    ms = measure(
        args.out,
        args.device,
        model=args.model,
        ops=args.ops or OP_GROUPS,
        dtype=args.dtype,
        torch_device=args.torch_device,
        quick=args.quick,
        trials=args.trials,
        seed=args.seed,
    )
    print(f"wrote {args.out} ({len(ms)} rows) and {Path(args.out).with_suffix('.json')}")
    plain = error_summary(reference_errors(calibration="none", measurements=ms))
    calibrated = error_summary(reference_errors(calibration=_calibration_arg(args), measurements=ms))
    print_measured_errors(plain, calibrated)
    return 0


def _cmd_calibrate(args) -> int:
    from .calibration.fit import calibrate
    from .resolve import Catalog

    start = Catalog(calibration=args.calibration)
    cal = calibrate(
        args.measurements, args.device, catalog=start, name=args.name, source=args.source, holdout=args.holdout
    )
    for r in cal.report:
        print(
            f"{r['family']:22s} fit {r['rows_fit']:5d} rows: median {r['fit_median_abs_error']:.1%}"
            f" p90 {r['fit_p90_abs_error']:.1%} | held back {r['rows_held']:5d}: median"
            f" {r['held_median_abs_error']:.1%} p90 {r['held_p90_abs_error']:.1%}"
        )
    cal.save(args.out)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hermes-fast", description="Fast simulator of multi-stage LLM serving.")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate serving of a scenario (default scenario if none given)")
    run.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: embedded scenario)")
    run.add_argument("--requests", type=int, default=10_000, metavar="N", help="arrivals per replicate (10000)")
    run.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    run.add_argument("--replicates", type=int, default=1, metavar="R", help="independent replicates (1)")
    run.add_argument("--per-request", action="store_true", help="also write per-request variables")
    run.add_argument("--out", metavar="FILE.nc", help="write the Dataset as netCDF")
    run.add_argument("--calibration", action="append", metavar="NAME|FILE", help="default, none, or a calibration")
    run.set_defaults(func=_cmd_run)
    est = sub.add_parser("estimate", help="zero-load analytical estimate (default scenario if none given)")
    est.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: embedded scenario)")
    est.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2",
        help="vary a short key (tp, batch_size, ...) or a dotted path (engines.NAME.parallel.tp) (repeatable)",
    )
    est.add_argument("--out", metavar="FILE.nc", help="write the Dataset as netCDF")
    est.add_argument("--calibration", action="append", metavar="NAME|FILE", help="default, none, or a calibration")
    est.set_defaults(func=_cmd_estimate)
    val = sub.add_parser("validate", help="kernel errors vs shipped measurements, uncalibrated and calibrated")
    val.add_argument("--calibration", action="append", metavar="NAME|FILE", help="calibrations to check (all shipped)")
    val.add_argument("--measurements", metavar="FILE.csv", help="measurements to check instead of the shipped ones")
    val.add_argument("--out", metavar="FILE.csv", help="write the table as CSV")
    val.set_defaults(func=_cmd_validate)
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
    cal.set_defaults(func=_cmd_calibrate)
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
    swp.set_defaults(func=_cmd_sweep)
    plt_ = sub.add_parser("plot", help="a figure from a sweep's zarr store")
    plt_.add_argument("results", help="zarr store written by `hermes-fast sweep`")
    plt_.add_argument("--kind", choices=_PLOTS, required=True)
    plt_.add_argument("--x", help="pareto/latency: objective; goodput: SLO dim; breakdown: bar dim; heatmap: dim")
    plt_.add_argument("--y", help="pareto/latency/goodput: objective; cdf: ttft|e2e|queue|tpot; heatmap: dim")
    plt_.add_argument("--var", help="heatmap: the variable (e.g. 'utilization[pool=main]')")
    plt_.add_argument("--hue", help="dim drawn as separate lines")
    plt_.add_argument("--sel", action="append", metavar="DIM=VALUE", help="select a coordinate first (repeatable)")
    plt_.add_argument("--out", required=True, metavar="FIG.png", help="image file (png, svg, pdf)")
    plt_.add_argument("--dpi", type=int, default=150)
    plt_.set_defaults(func=_cmd_plot)
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
    mea.set_defaults(func=_cmd_measure)

    pre = sub.add_parser("presets", help="list catalog presets or output variables")
    pre.add_argument("kind", nargs="?", choices=_PRESET_KINDS)
    pre.add_argument("--fields", action="store_true", help="also list the schema's fields with units")
    pre.set_defaults(func=_cmd_presets)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"hermes-fast: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"hermes-fast: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
