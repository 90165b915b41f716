"""Where the time goes and how it spreads: the stage breakdown, latency CDFs, heatmaps of one variable over two
sweep axes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ..config.base import ConfigError
from ..metrics import request_tpot_s
from ..pareto import objective
from .axes import (
    _DECADES_FOR_LOG,
    _axes,
    _dim_label,
    _hue_dim,
    _log_if_wide,
    _only,
    _shown,
    _title,
    _valid_like,
    label,
)

__all__ = ["stage_breakdown", "latency_cdf", "heatmap"]


def stage_breakdown(ds: xr.Dataset, by: str | None = None, *, variable: str = "stage_time_s", ax=None):
    """Stacked bars of the time per stage (mean per completed request), one bar per value of ``by``.

    Parameters
    ----------
    ds : xarray.Dataset
        A simulation or sweep Dataset of a pipeline scenario (with a ``stage`` dim).
    by : str or None, default None
        A dim with a bar per value (None: the one other dim, if there is exactly one; else a single bar).
    variable : str, default "stage_time_s"
        The per-stage variable stacked (``stage_time_s``, ``stage_queue_s``, ``stage_transfer_s``: seconds).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For a variable without a ``stage`` dim, or dims left besides ``by`` and ``stage``.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> rag = {"engines": [{"name": "e5", "model": "e5-base", "device": "h100_sxm"},
    ...                    {"name": "llm", "model": "llama-3.1-8b", "device": "h100_sxm"}],
    ...        "workload": {"rate_per_s": 4, "classes": [{"name": "rag", "prompt_tokens": 64, "output_tokens": 128,
    ...            "pipeline": [{"kind": "embed", "engine": "e5"}, {"kind": "prefill", "engine": "llm"},
    ...                         {"kind": "decode", "engine": "llm"}]}]}}
    >>> ax = plot.stage_breakdown(hf.simulate(rag, n_requests=100, seed=1))
    >>> ax.get_ylabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('time in stage [ms]', ['embed', 'prefill', 'decode'])
    """
    ax = _axes(ax)
    da = objective(ds, variable)
    if "stage" not in da.dims:
        raise ConfigError("variable", variable, "a variable with a stage dim (pipeline scenarios)")
    if by is None:
        rest = [d for d in da.dims if d != "stage"]
        by = rest[0] if len(rest) == 1 else None
    dims = [by, "stage"] if by else ["stage"]
    da = _only(da, dims, variable)
    ok = _valid_like(ds, da.isel(stage=0, drop=True))
    if by is None:
        da = da.expand_dims(_by=[""])
        ok = ok.reshape(1)
        by_name = "_by"
    else:
        by_name = by
    values = np.nan_to_num(_shown(da), nan=0.0)
    names = [str(v) for v in da[by_name].values]
    bottom = np.zeros(len(names))
    for k, stage in enumerate(da["stage"].values):
        bars = ax.bar(names, values[:, k], bottom=bottom, label=str(stage))
        for bar, good in zip(bars, ok, strict=True):
            if not good:  # invalid points: hatched
                bar.set_hatch("//")
                bar.set_edgecolor("0.4")
        bottom += values[:, k]
    if not ok.all():
        from matplotlib.patches import Patch

        ax.add_artist(ax.legend(handles=[Patch(facecolor="w", edgecolor="0.4", hatch="//", label="invalid")],
                                frameon=False, fontsize="small", loc="upper left"))  # fmt: skip
    ax.set_ylabel(label(da))
    if by:
        ax.set_xlabel(_dim_label(ds, by))
    _title(ax, ds, f"{da.attrs.get('long_name', variable)} per stage")
    ax.legend(title="stage", frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


_CDF = {  # latency name -> (per-request function, long name)
    "ttft": (lambda d: d.request_first_token_s - d.request_sent_s, "time to first token"),
    "e2e": (lambda d: d.request_completion_s - d.request_sent_s, "end-to-end latency"),
    "queue": (lambda d: d.request_queue_s, "queueing delay"),
    "tpot": (
        lambda d: request_tpot_s(d.request_first_token_s, d.request_completion_s, d.request_output_tokens),
        "time per output token",
    ),
}


def latency_cdf(data, latency: str = "ttft", *, hue: str | None = None, ax=None):
    """Empirical CDF of a per-request latency (``ttft``, ``e2e``, ``queue``, ``tpot``).

    Parameters
    ----------
    data : xarray.Dataset or mapping of str to xarray.Dataset
        A Dataset of :func:`hermes_fast.simulate` with ``keep_requests=True`` (a line per value of ``hue``,
        another dim of it), a mapping label -> such Datasets, or a sweep Dataset without per-request
        variables, whose latency quantiles are drawn as points (a line per ``hue``).
    latency : {"ttft", "e2e", "queue", "tpot"}, default "ttft"
        The latency (seconds) whose distribution over requests is drawn.
    hue : str or None, default None
        A dim with a line per value (None: the one other dim, if any).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For an unknown ``latency``, or a mapping entry without per-request variables.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> runs = {rate: hf.simulate({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
    ...                            "workload": {"rate_per_s": rate}}, n_requests=200, seed=1, keep_requests=True)
    ...         for rate in (5, 10)}
    >>> ax = plot.latency_cdf(runs, "ttft")
    >>> ax.get_xlabel(), ax.get_ylabel(), len(ax.lines)
    ('time to first token [ms]', 'fraction of requests [1]', 2)
    """
    ax = _axes(ax)
    if latency not in _CDF:
        raise ConfigError("latency", latency, f"one of {', '.join(_CDF)}")
    fn, long_name = _CDF[latency]
    if isinstance(data, Mapping) and not isinstance(data, xr.Dataset):
        series = {str(k): v for k, v in data.items()}
    elif "request_arrival_s" in data:
        hue = hue or next((d for d in data.request_arrival_s.dims if d not in ("replicate", "request")), None)
        series = {str(v): data.sel({hue: v}) for v in data[hue].values} if hue else {"": data}
    else:  # a sweep: the summary's quantiles
        q = objective(data, f"{latency}_s")
        hue = _hue_dim(q, "quantile", hue)
        q = _only(q, ["quantile"] + ([hue] if hue else []), f"{latency}_s")
        ok = _valid_like(data, q.isel(quantile=0, drop=True)).reshape(-1)
        xs = []
        for k, v in enumerate(q[hue].values if hue else [None]):
            qq = q.sel({hue: v}) if hue else q
            name = (str(v) if hue else "") + ("" if ok[k] else " (invalid)")
            style = {"linestyle": "-"} if ok[k] else {"color": "0.55", "linestyle": "--", "markerfacecolor": "none"}
            ax.plot(_shown(qq), qq["quantile"].values, marker="o", label=name.strip() or None, **style)
            xs.append(_shown(qq))
        _log_if_wide(ax, "x", np.concatenate(xs))
        ax.set_xlabel(f"{long_name} [ms]")
        ax.set_ylabel("quantile over requests [1]")
        if hue or not ok.all():
            ax.legend(title=_dim_label(data, hue) if hue else None, frameon=False, fontsize="small")
        _title(ax, data, f"{long_name} quantiles")
        return ax
    xs = []
    for name, d in series.items():
        if "request_arrival_s" not in d:
            raise ConfigError("data", name, "a simulate() Dataset with keep_requests=True (request_* variables)")
        x = np.asarray(fn(d).values, dtype=np.float64).ravel() * 1e3
        x = np.sort(x[np.isfinite(x)])
        good = bool(d["valid"].all()) if "valid" in d else True
        style = {} if good else {"color": "0.55", "linestyle": "--"}
        text = (name or "") + ("" if good else " (invalid)")
        ax.step(x, np.arange(1, x.size + 1) / max(x.size, 1), where="post", label=text.strip() or None, **style)
        xs.append(x)
    _log_if_wide(ax, "x", np.concatenate(xs))
    ax.set_xlabel(f"{long_name} [ms]")
    ax.set_ylabel("fraction of requests [1]")
    ax.set_ylim(0, 1.02)
    if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        ax.legend(title=_dim_label(data, hue) if hue and isinstance(data, xr.Dataset) else hue, frameon=False)
    _title(ax, data if isinstance(data, xr.Dataset) else xr.Dataset(), f"distribution of the {long_name}")
    return ax


def _short(v: float) -> str:
    """A cell's value in at most about 5 characters: 0.123, 45.6, 789, 1234, 36.5k."""
    return f"{v / 1e3:.3g}k" if abs(v) >= 1e4 else f"{v:.0f}" if abs(v) >= 1e3 else f"{v:.3g}"


def heatmap(ds: xr.Dataset, variable, x: str, y: str, *, ax=None, annotate: bool = True, fmt: str | None = None):
    """A variable over two swept dims, as colours (and the values written in each cell).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep or estimate Dataset.
    variable : str or xarray.DataArray
        The objective, as in :func:`hermes_fast.pareto`; after selections and the mean over ``replicate`` its
        dims must be ``x`` and ``y``.
    x, y : str
        The swept dims along the columns and rows.
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.
    annotate : bool, default True
        Write each cell's value.
    fmt : str or None, default None
        Format of those values (e.g. ``"{:.3g}"``; None: 3 significant digits, thousands as ``36.5k``).

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For an objective that is not a variable, or dims left besides ``x`` and ``y``.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> ds = hf.estimate(grid={"batch_size": [1, 8, 64, 256], "tp": [1, 2]}).sel(engine="llama8b-h100")
    >>> ax = plot.heatmap(ds, "tpot_s", x="batch_size", y="tp")
    >>> ax.get_xlabel(), ax.get_ylabel(), len(ax.texts)  # a value written in each of the 4 x 2 cells
    ('batch_size', 'tp', 8)
    """
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    ax = _axes(ax)
    da = _only(objective(ds, variable), [y, x], str(variable))
    values = _shown(da)
    finite = values[np.isfinite(values)]
    wide = finite.size and (finite > 0).all() and np.log10(finite.max() / finite.min()) >= _DECADES_FOR_LOG
    mesh = ax.pcolormesh(np.arange(values.shape[1] + 1), np.arange(values.shape[0] + 1), values, shading="flat",
                         norm=LogNorm() if wide else None)  # fmt: skip
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(v) for v in da[x].values])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, [str(v) for v in da[y].values])
    ax.set_xlabel(_dim_label(ds, x))
    ax.set_ylabel(_dim_label(ds, y))
    bar = ax.figure.colorbar(mesh, ax=ax)
    bar.set_label(label(da))
    ok = _valid_like(ds, da)
    for i, j in zip(*np.nonzero(~ok), strict=True):  # invalid points: hatched cells
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="xx", edgecolor="0.5", lw=0,
                               label=None if (i, j) != tuple(np.argwhere(~ok)[0]) else "invalid"))  # fmt: skip
    if not ok.all():
        ax.legend(frameon=False, fontsize="small", loc="upper right", bbox_to_anchor=(1.0, -0.08))
    if annotate:
        scaled = np.log10(np.where(values > 0, values, np.nan)) if wide else values
        lo, hi = np.nanmin(scaled), np.nanmax(scaled)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = hi > lo and (scaled[i, j] - lo) / (hi - lo) < 0.5
                text = fmt.format(v) if fmt is not None else _short(v)
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", color="w" if dark else "k")
    _title(ax, ds, da.attrs.get("long_name", str(variable)))
    return ax
