"""``hermes-fast plot``: one figure of a sweep's zarr store, of the kinds :mod:`hermes_fast.plot` draws, in any
format matplotlib writes (by ``--out``'s extension, checked first)."""

from __future__ import annotations

from ..config.base import ConfigError

__all__ = ["PLOT_KINDS", "cmd_plot"]

PLOT_KINDS = ("pareto", "latency", "goodput", "breakdown", "cdf", "heatmap")
_NO_HUE = {  # kinds that cannot use --hue, and what to use instead
    "breakdown": "a bar per value of --x; pick the other dims with --sel",
    "heatmap": "it draws --var over --x and --y; pick the other dims with --sel",
}


def cmd_plot(args) -> int:
    from .outputs import check_figure_out

    check_figure_out(args.out)  # a format matplotlib writes, in a writable place: before the store is read
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plot
    from ..pareto import coord_value
    from ..sweep import open_sweep

    ds = open_sweep(args.results)
    for item in args.sel or []:
        dim, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--sel {item}", item, "DIM=VALUE")
        ds = ds.sel({dim: coord_value(ds, dim, value)})
    kind = args.kind
    if args.hue and kind in _NO_HUE:
        raise ConfigError("--hue", args.hue, f"no --hue with --kind {kind} ({_NO_HUE[kind]})")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if kind == "pareto":
        x, y = args.x or "ttft_s[quantile=0.99]", args.y or "output_token_per_usd"
        plot.pareto_front(ds, x, y, hue=args.hue, ax=ax)
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
    try:
        fig.savefig(args.out, dpi=args.dpi)
    except (RuntimeError, ValueError, ImportError) as e:  # a writer this machine lacks
        raise ConfigError("--out", args.out, f"a format this machine can write ({type(e).__name__}: {e})") from None
    print(f"wrote {args.out}")
    return 0
