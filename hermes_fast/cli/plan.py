"""``hermes-fast plan``: which layout of a model, on which devices and with how many replicas, serves the most
traffic within TTFT and TPOT targets; the ranked table, what was pruned and why, and the launch commands.

The question comes from a plan YAML (the fields of :class:`~hermes_fast.config.plan.PlanSpec`) and/or the flags
(``--model``, ``--devices h100_sxm:16,h200_sxm:8``, ``--budget``, lengths, ``--ttft``, ``--tpot``, the space);
a flag wins over the file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config.base import ConfigError
from ..config.files import load_yaml
from .capacity import parse_duration
from .warnings import print_warnings

__all__ = ["cmd_plan", "print_plan", "spec_fields"]


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(flag, text, "integers separated by commas, e.g. 1,2,4,8") from None


def _devices(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.strip().partition(":")
        try:
            n = int(count)
        except ValueError:
            n = None
        if not sep or not name or n is None:
            raise ConfigError("--devices", text, "NAME:COUNT[,NAME:COUNT...], e.g. h100_sxm:16,h200_sxm:8")
        out[name] = n
    return out


def spec_fields(args, base_workload=None) -> dict:
    """The PlanSpec fields the flags set (the file's, if any, are merged under them)."""
    fields: dict = {}
    if args.model:
        fields["model"] = args.model
    if args.devices:
        fields["devices"] = _devices(args.devices)
    if args.budget is not None:
        fields["budget_usd_per_hour"] = args.budget
    if args.max_devices is not None:
        fields["max_devices"] = args.max_devices
    if args.ttft is not None:
        fields["ttft_s"] = parse_duration(args.ttft, "--ttft")
    if args.tpot is not None:
        fields["tpot_s"] = parse_duration(args.tpot, "--tpot")
    for flag in ("tp", "pp", "ep", "cp", "max_batch_size", "max_batched_tokens"):
        value = getattr(args, flag)
        if value is not None:
            fields[flag] = _ints(value, f"--{flag.replace('_', '-')}")
    if args.dtypes:
        fields["dtypes"] = [v.strip() for v in args.dtypes.split(",") if v.strip()]
    for key in ("quantile", "objective", "stack", "seed", "top_k", "per_group", "replicates"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    if args.requests is not None:
        fields["n_requests"] = args.requests
    if args.prompt_tokens is not None or args.output_tokens is not None:
        wl = dict(base_workload) if isinstance(base_workload, dict) else {}
        for key in ("prompt_tokens", "output_tokens"):
            if getattr(args, key) is not None:
                wl[key] = getattr(args, key)
        fields["workload"] = wl
    if args.no_attention_dp:
        fields["attention_dp"] = [False]
    if args.no_colocated:
        fields["colocated"] = False
    if args.no_disaggregated:
        fields["disaggregated"] = False
    return fields


def print_plan(ds, seconds: float | None = None, out=None) -> None:
    """The question, what was searched and pruned (and why), and the ranked table of the verified layouts."""
    import pandas as pd

    from ..plan import plan_table

    out = out or sys.stdout
    spec = json.loads(ds.attrs["plan"])
    devs = ", ".join(f"{n} x {d}" for d, n in spec["devices"].items())
    budget = f", budget {spec['budget_usd_per_hour']:g} USD/h" if spec["budget_usd_per_hour"] else ""
    q = f"p{spec['quantile'] * 100:g}"
    print(f"# {ds.attrs['title']} on {devs}{budget}; stack {spec['stack']}", file=out)
    print(f"# targets: TTFT {q} <= {spec['ttft_s'] * 1e3:g} ms, TPOT {q} <= {spec['tpot_s'] * 1e3:g} ms; "
          f"ranked by {spec['objective']}", file=out)  # fmt: skip
    pruned = json.loads(ds.attrs["pruned"])
    why = ", ".join(f"{k} {v}" for k, v in pruned.items() if v) or "none"
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(
        f"# {ds.attrs['candidates']} candidate layouts: {ds.attrs['kept']} kept, "
        f"{ds.attrs['candidates'] - ds.attrs['kept']} pruned ({why}); {ds.attrs['verified']} verified by capacity "
        f"search ({spec['n_requests']} requests, seed {spec['seed']}){took}",
        file=out,
    )
    table = plan_table(ds).drop(columns=["mode"])
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 60):
        print(table.to_string(float_format=lambda v: f"{v:.4g}"), file=out)
    print(f"best: {ds.attrs['best'] or 'none'}", file=out)


def cmd_plan(args) -> int:
    from ..plan import EXPORT_STACKS, launch_commands, plan, plan_spec, plot_plan, verified_layouts
    from .outputs import check_figure_out, check_out, write_dataset

    out = check_out(args.out) if args.out else None  # before any work
    fig = check_figure_out(args.plot, "--plot") if args.plot else None
    export = Path(args.export) if args.export else None
    if export is not None and export.exists() and not export.is_dir():
        raise ConfigError("--export", str(export), "a directory (created if missing)")
    raw = load_yaml(args.plan, "a plan") if args.plan is not None else {}
    wl = raw.get("workload") if isinstance(raw, dict) else None
    spec = plan_spec(args.plan, **spec_fields(args, wl))
    start = time.perf_counter()
    ds = plan(spec, scheduler=args.scheduler, workers=args.workers)
    seconds = time.perf_counter() - start
    print_plan(ds, seconds)
    if export is not None and ds.attrs["best_candidate"] >= 0:
        export.mkdir(parents=True, exist_ok=True)
        v = verified_layouts(ds)
        for rank, i in enumerate(v.candidate.values[: args.export_top].tolist(), start=1):
            cmds = launch_commands(ds, i)
            for stack in EXPORT_STACKS:
                name = export / f"rank{rank}_{stack}.{'yaml' if stack == 'dynamo' else 'sh'}"
                name.write_text(cmds[stack])
        print(f"wrote launch commands of the {min(args.export_top, v.sizes['candidate'])} best layout(s) to {export}")
    if fig is not None:
        import matplotlib

        matplotlib.use("Agg")
        ax = plot_plan(ds)
        ax.figure.savefig(fig, dpi=150, bbox_inches="tight")
        print(f"wrote {fig}")
    if out is not None:
        write_dataset(ds, out)
        print(f"wrote {out}")
    print_warnings(ds)
    return 0
