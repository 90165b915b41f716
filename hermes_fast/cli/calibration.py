"""``hermes-fast validate``, ``measure`` and ``calibrate``: kernel predictions against measurements (shipped
or the user's), measured serving runs against their simulation (``validate --serving``), PyTorch timings taken
here, and the fit of a device's calibration, with their tables."""

from __future__ import annotations

import sys
from pathlib import Path

from .args import calibration_arg

__all__ = [
    "cmd_calibrate",
    "cmd_measure",
    "cmd_validate",
    "print_measured_errors",
    "print_serving_validation",
    "print_step_comparison",
    "print_validation",
]


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


def _summary_line(s: dict) -> str:
    """One row of the serving validation table: entry, split, metric, runs, median and p90 |error|, signed mean."""
    return (
        f"{s['stack_entry']:15s}{s['split']:9s}{s['metric']:19s}{s['runs']:5d}{s['median_abs_error']:9.1%}"
        f"{s['p90_abs_error']:8.1%}{s['signed_mean_error']:+9.1%}"
    )


def print_serving_validation(rows: list[dict], out=None) -> None:
    """Measured serving runs against their simulation: per stack entry and metric, median and p90 |error| and the
    signed mean, held-back and fitted runs apart; then the runs that were not simulated and why."""
    from ..calibration.serving import error_summary

    out = out or sys.stdout
    summary = error_summary(rows)
    print(
        "# serving runs simulated as their benchmark ran them vs measured: error = predicted / measured - 1", file=out
    )
    print("# per stack entry and metric: median and p90 |error|, signed mean (runs: how many runs have it)", file=out)
    head = f"{'stack':15s}{'split':9s}{'metric':19s}{'runs':>5s}{'median':>9s}{'p90':>8s}{'signed':>9s}"
    print(head, file=out)
    for split in ("holdout", "fit"):
        for s in summary:
            if s["split"] == split:
                print(_summary_line(s), file=out)
    noted = {r["run"]: r for r in rows if r["run_note"] and not r["skip"]}
    if noted:  # (their rows stay in the table above; here the held-back medians without them)
        held = sorted(n for n, r in noted.items() if r["split"] == "holdout")
        print(f"# {len(noted)} runs known to measure something the simulator does not model, {len(held)} of them held "
              f"back (runs {', '.join(map(str, held))}):", file=out)  # fmt: skip
        for note in sorted({r["run_note"] for r in noted.values()}):
            count = sum(r["run_note"] == note for r in noted.values())
            print(f"#   {count} {note}", file=out)
        print("# held back without them:", file=out)
        entries = {r["stack_entry"] for r in noted.values()}
        for s in error_summary([r for r in rows if not r["run_note"]]):
            if s["split"] == "holdout" and s["stack_entry"] in entries:
                print(_summary_line(s), file=out)
    skipped = [r for r in rows if r["skip"]]
    if skipped:
        print(f"# {len(skipped)} runs not simulated:", file=out)
        for r in skipped:
            print(f"#   run {r['run']} ({r['label']}): {r['skip']}", file=out)


def _validate_serving(args) -> int:
    import csv

    from ..calibration.serving import predict_serving, serving_errors, serving_runs

    path = None if args.serving == "shipped" else args.serving
    cal = args.calibration[-1] if args.calibration else "default"
    rows = serving_errors(predict_serving(serving_runs(path), cal, replicates=args.replicates, seed=args.seed))
    print_serving_validation(rows)
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {args.out}")
    return 0


def cmd_validate(args) -> int:
    import csv

    from ..calibration.calibration import load_calibration

    if getattr(args, "serving", None):
        return _validate_serving(args)
    from ..calibration.measurements import read_measurements
    from ..calibration.validate import step_comparison, validation_table

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


def cmd_measure(args) -> int:
    from ..calibration.measure import OP_GROUPS, measure
    from ..calibration.validate import error_summary, reference_errors

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
    calibrated = error_summary(reference_errors(calibration=calibration_arg(args), measurements=ms))
    print_measured_errors(plain, calibrated)
    return 0


def cmd_calibrate(args) -> int:
    from ..calibration.fit import calibrate
    from ..resolve import Catalog

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
