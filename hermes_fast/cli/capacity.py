"""``hermes-fast capacity``: the largest arrival rate a scenario serves within latency targets, the target that
binds it, and the metrics at that rate.

Targets: ``--ttft-p99``, ``--tpot-p99``, ``--e2e-p99`` (durations: ``2``, ``2s``, ``500ms``, ``800us``; a bare
number is seconds), or ``--target METRIC:STAT:MAX`` for any statistic (``ttft:p90:300ms``, ``tpot:mean:40ms``,
``e2e:0.99:20s``; METRIC ttft, tpot or e2e; STAT p50, p90, p95, p99 or mean), and ``--min-slo-attainment`` (the
least share of arrivals within ``serving.slo``). One target per metric.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from ..config.base import ConfigError
from ..config.sweep import SUMMARY_QUANTILES

__all__ = ["cmd_capacity", "parse_duration", "parse_target", "print_capacity"]

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_METRICS = ("ttft", "tpot", "e2e")
_STATS = ", ".join(f"p{q * 100:g}" for q in SUMMARY_QUANTILES) + " or mean"


def parse_duration(text: str, flag: str) -> float:
    """Seconds from ``2``, ``2s``, ``500ms``, ``800us`` (ConfigError naming ``flag`` otherwise)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|ms|us|µs)?\s*", str(text))
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"] if m else None
    if value is None or not value > 0 or not np.isfinite(value):
        raise ConfigError(flag, text, "a positive duration: seconds, or a number with s, ms or us (e.g. 50ms)")
    return value


def _quantile(text: str, flag: str, given: str) -> float | None:
    t = text.strip().lower()
    if t == "mean":
        return None
    try:
        q = float(t[1:]) / 100 if t.startswith("p") else float(t)
    except ValueError:
        q = None
    if q not in SUMMARY_QUANTILES:
        raise ConfigError(flag, given, f"a statistic among {_STATS} (the quantiles a run reports)")
    return q


def parse_target(text: str, flag: str = "--target") -> tuple[str, float | None, float]:
    """``METRIC:STAT:MAX`` -> (metric, quantile or None for the mean, bound in seconds)."""
    parts = str(text).split(":")
    if len(parts) != 3:
        raise ConfigError(flag, text, "METRIC:STAT:MAX, e.g. ttft:p99:2s or tpot:mean:40ms")
    metric = parts[0].strip().lower()
    if metric not in _METRICS:
        raise ConfigError(flag, text, f"a metric among {', '.join(_METRICS)} (METRIC:STAT:MAX)")
    try:
        bound = parse_duration(parts[2], flag)
    except ConfigError as e:
        raise ConfigError(flag, text, f"METRIC:STAT:MAX with MAX {e.expected}") from None
    return metric, _quantile(parts[1], flag, text), bound


def _targets(args) -> tuple[dict, dict[str, str]]:
    """The CapacitySearch mapping from the flags, and the flag that set each field (for errors)."""
    if getattr(args, "rate", None) is not None:
        raise ConfigError(
            "--rate", args.rate, "no --rate: the capacity search finds the rate (bound it with --rate-min/--rate-max)"
        )
    given: list[tuple[str, str, str, float | None, float]] = []
    for metric in _METRICS:
        value = getattr(args, f"{metric}_p99", None)
        if value is not None:
            flag = f"--{metric}-p99"
            given.append((flag, value, metric, 0.99, parse_duration(value, flag)))
    for text in args.target or []:
        given.append(("--target", text, *parse_target(text)))
    targets: dict = {}
    flags: dict[str, str] = {}
    for flag, text, metric, q, bound in given:
        if metric in targets:
            raise ConfigError(
                flag, text, f"one target per metric ({metric} is already bounded by {flags[metric]}: drop one)"
            )
        targets[metric] = {"quantile": q, "max_s": bound}
        flags[metric] = flag
    if args.min_slo_attainment is not None:
        targets["min_slo_attainment"] = args.min_slo_attainment
        flags["min_slo_attainment"] = "--min-slo-attainment"
    if not targets:
        raise ConfigError(
            "targets", None, "at least one of --ttft-p99, --tpot-p99, --e2e-p99, --target, --min-slo-attainment "
            "(e.g. --ttft-p99 2s --tpot-p99 50ms)",
        )  # fmt: skip
    for field, flag in (("rate_min_per_s", "--rate-min"), ("rate_max_per_s", "--rate-max"), ("rel_tol", "--rel-tol")):
        value = getattr(args, field.replace("_per_s", ""), None)
        if value is not None:
            targets[field] = value
            flags[field] = flag
    if args.allow_unstable:
        targets["allow_unstable"] = True
    return targets, flags


def print_capacity(ds, targets, scenario=None, out=None) -> None:
    """The capacity per replicate (and mean), the binding target and the summary at that rate."""
    from ..capacity import describe_target
    from ..variables import CAPACITY_BOUND_NAMES
    from .run import describe_scenario, print_simulation

    out = out or sys.stdout
    rep = ds.sizes["replicate"]
    print(f"# {ds.attrs.get('title', '')}", file=out)
    for line in describe_scenario(scenario, rate=False) if scenario is not None else []:
        print(line, file=out)
    words = [describe_target(k, targets) for k in (*_METRICS, "slo_attainment") if _set(targets, k)]
    if not targets.allow_unstable:
        words.append("not overloaded")
    print(
        f"# targets: {', '.join(words)}; rates {targets.rate_min_per_s:g} to {targets.rate_max_per_s:g} req/s, "
        f"to {targets.rel_tol:.0%}",
        file=out,
    )
    print(f"# {ds.attrs.get('n_requests')} requests x {rep} replicate(s), seed {ds.attrs.get('seed')}", file=out)
    caps = ds.capacity_request_per_s.values
    names = [CAPACITY_BOUND_NAMES[c - 1] if c > 0 else None for c in ds.capacity_bound.values.tolist()]
    each = f" (replicates: {', '.join(f'{c:.3f}' for c in caps)})" if rep > 1 else ""
    if np.isnan(caps).all():
        print(f"capacity      none: even {targets.rate_min_per_s:g} req/s misses the targets{each}", file=out)
    else:
        print(f"capacity      {np.nanmean(caps):.3f} req/s{' mean' if rep > 1 else ''}{each}", file=out)
    distinct = list(dict.fromkeys(n for n in names if n))
    bound = "; ".join(
        describe_target(n, targets) + (f" (replicate(s) {', '.join(str(r) for r, m in enumerate(names) if m == n)})"
                                       if len(distinct) > 1 else "")
        for n in distinct
    )  # fmt: skip
    print(f"binding       {bound}", file=out)
    if np.isnan(caps).all():
        print(f"# at {targets.rate_min_per_s:g} req/s (the bracket's low end):", file=out)
    else:
        print(f"# at that rate{' (mean over replicates, each at its own)' if rep > 1 else ''}:", file=out)
    print_simulation(ds, out=out, header=False)


def _set(targets, key: str) -> bool:
    return (targets.min_slo_attainment if key == "slo_attainment" else getattr(targets, key)) is not None


def cmd_capacity(args) -> int:
    from ..capacity import as_capacity, capacity_search
    from ..resolve import resolve_scenario
    from .args import calibration_arg
    from .knobs import apply_knobs, flag_errors
    from .outputs import check_out, write_dataset

    out = check_out(args.out) if args.out else None  # before any work
    mapping, flags = _targets(args)
    try:
        targets = as_capacity(mapping, "capacity")
    except ConfigError as e:
        field = e.path.removeprefix("capacity.").split(".")[0]
        flag = flags.get(field)
        if flag is None:
            raise
        raise ConfigError(f"{flag} ({e.path})", e.value, e.expected) from None
    scenario, settings, base = apply_knobs(args.scenario, args, "capacity")
    with flag_errors(settings, base, args.scenario):
        sc = resolve_scenario(scenario).effective_scenario  # (the fields left to the stack, filled)
        ds = capacity_search(
            scenario,
            targets,
            n_requests=args.requests,
            seed=args.seed,
            replicates=args.replicates,
            calibration=calibration_arg(args),
        )
    print_capacity(ds, targets, scenario=sc)
    if out is not None:
        write_dataset(ds, out)
        print(f"wrote {out}")
    return 0
