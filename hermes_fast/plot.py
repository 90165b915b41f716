"""Matplotlib helpers for simulation and sweep Datasets; each takes ``ax=None`` and returns the Axes.

Axis labels come from the variables' ``long_name`` and ``units`` attrs (and the selection made, e.g.
``quantile=0.99``). Variables are averaged over ``replicate``; the dims left after that and the helper's own
dims must be the ones the helper draws (select the others first: ``ds.sel(...)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .config.base import ConfigError
from .metrics import request_tpot_s
from .pareto import objective, pareto

_SELECTABLE = ("quantile", "pool", "stage", "link", "reason")  # selections worth naming in a label

__all__ = ["pareto_front", "latency_throughput", "goodput_vs_slo", "stage_breakdown", "latency_cdf", "heatmap"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def label(da: xr.DataArray, spec=None) -> str:
    """``long_name (selection) [units]`` of a DataArray (its name when it has no long_name)."""
    name = da.attrs.get("long_name") or str(da.name or "")
    picked = [f"{d}={da[d].values.item():g}" if np.issubdtype(da[d].dtype, np.number) else f"{d}={da[d].item()}"
              for d in _SELECTABLE if d in da.coords and d not in da.dims and da[d].ndim == 0]  # fmt: skip
    if picked:
        name += f" ({', '.join(picked)})"
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units else name


def _dim_label(ds: xr.Dataset, dim: str) -> str:
    if dim in ds.coords and ds[dim].attrs.get("units"):
        return label(ds[dim])
    return dim


def _only(da: xr.DataArray, dims: list[str], what: str) -> xr.DataArray:
    extra = [d for d in da.dims if d not in dims]
    if extra:
        raise ConfigError(
            what, da.name, f"no dims but {', '.join(dims) or 'none'}: select or average {', '.join(extra)} first"
        )
    return da.transpose(*dims)


def _hue_dim(da: xr.DataArray, x_dim: str | None, hue: str | None) -> str | None:
    if hue is not None:
        return hue
    rest = [d for d in da.dims if d != x_dim]
    return rest[0] if len(rest) == 1 else None


def pareto_front(
    ds: xr.Dataset,
    x,
    y,
    *,
    x_better: str = "min",
    y_better: str = "max",
    mask: xr.DataArray | None = None,
    ax=None,
):
    """Every point of a sweep in (x, y), the Pareto-optimal ones joined as a front.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep (or estimate) Dataset.
    x, y : str or xarray.DataArray
        Objective specs as in :func:`hermes_fast.pareto` (``"ttft_s[quantile=0.99]"``,
        ``"output_token_per_usd"``, DataArrays), averaged over ``replicate``.
    x_better, y_better : {"min", "max"}, default "min", "max"
        Which way each objective is better.
    mask : xarray.DataArray or None, default None
        A front computed elsewhere (default: :func:`hermes_fast.pareto` of x and y).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For an ``x_better``/``y_better`` other than ``"min"``/``"max"``, or an objective :func:`hermes_fast.pareto`
        refuses.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> grid = {"workload.rate_per_s": [2, 8, 32], "engines.llama8b-h100.batching.policy": ["continuous", "chunked"]}
    >>> ds = hf.sweep(grid=grid, n_requests=100, seed=1)
    >>> ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd")
    >>> ax.get_xlabel()
    'time to first token (quantile=0.99) [s]'
    >>> ax.get_ylabel()
    'output tokens per dollar [token/USD]'
    """
    ax = _axes(ax)
    for name, value in (("x_better", x_better), ("y_better", y_better)):
        if value not in ("min", "max"):
            raise ConfigError(name, value, "'min' or 'max'")
    xa, ya = objective(ds, x), objective(ds, y)
    if mask is None:
        goals = {"min": [], "max": []}
        goals[x_better].append(xa)
        goals[y_better].append(ya)
        mask = pareto(ds, minimize=goals["min"], maximize=goals["max"])
    xa, ya, mask = xr.broadcast(xa, ya, mask)
    xv, yv, mv = xa.values.ravel(), ya.values.ravel(), mask.values.ravel().astype(bool)
    ax.scatter(xv[~mv], yv[~mv], s=14, color="0.7", label="dominated")
    order = np.argsort(xv[mv], kind="stable")
    ax.plot(xv[mv][order], yv[mv][order], "o-", color="C3", label="Pareto front", drawstyle="steps-post")
    ax.set_xlabel(label(xa))
    ax.set_ylabel(label(ya))
    ax.legend(frameon=False)
    return ax


def _lines(ds: xr.Dataset, x_dim: str, y, hue: str | None, ax, x=None):
    ya = objective(ds, y)
    if x_dim not in ya.dims:
        raise ConfigError("x", x_dim, f"a dim of {ya.name}: {', '.join(map(str, ya.dims))}")
    hue = _hue_dim(ya, x_dim, hue)
    dims = [x_dim] + ([hue] if hue else [])
    ya = _only(ya, dims, "y")
    xa = _only(objective(ds, x).broadcast_like(ya), dims, "x") if x is not None else None
    if hue is None:
        ya, xa = ya.expand_dims(_hue=[""]), (xa.expand_dims(_hue=[""]) if xa is not None else None)
        hue_name = "_hue"
    else:
        hue_name = hue
    for v in ya[hue_name].values:
        yy = ya.sel({hue_name: v}).transpose(x_dim).values
        xx = xa.sel({hue_name: v}).transpose(x_dim).values if xa is not None else ds[x_dim].values
        ax.plot(xx, yy, "o-", label=str(v) if hue else None)
    ax.set_xlabel(label(xa) if xa is not None else _dim_label(ds, x_dim))
    ax.set_ylabel(label(ya))
    if hue:
        ax.legend(title=hue, frameon=False)
    return ax


def latency_throughput(
    ds: xr.Dataset,
    latency="ttft_s[quantile=0.99]",
    throughput="throughput_output_token_per_s",
    *,
    along: str | None = None,
    hue: str | None = None,
    ax=None,
):
    """Latency against throughput, the points of each line joined along a swept dim (default: the rate).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep Dataset.
    latency : str or xarray.DataArray, default "ttft_s[quantile=0.99]"
        The y objective (seconds), as in :func:`hermes_fast.pareto`.
    throughput : str or xarray.DataArray, default "throughput_output_token_per_s"
        The x objective.
    along : str or None, default None
        The swept dim each line follows (None: the dim ending in ``rate_per_s``, else the first).
    hue : str or None, default None
        A swept dim with a line per value (None: the one other dim, if there is exactly one).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For an objective that is not a variable, or dims left besides ``along`` and ``hue`` (select them first).

    Examples
    --------
    >>> from hermes_fast import plot
    >>> ds = hf.sweep(grid={"workload.rate_per_s": [2, 4, 8]}, n_requests=100, seed=1)
    >>> ax = plot.latency_throughput(ds)
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('output throughput [token/s]', 'time to first token (quantile=0.99) [s]')
    >>> len(ax.lines[0].get_xdata())  # one point per rate
    3
    """
    ax = _axes(ax)
    lat = objective(ds, latency)
    if along is None:
        rate = [d for d in lat.dims if str(d).endswith("rate_per_s")]
        along = rate[0] if rate else (lat.dims[0] if lat.dims else None)
    if along is None:
        raise ConfigError("along", along, "a swept dim to join the points along (e.g. workload.rate_per_s)")
    return _lines(ds, along, latency, hue, ax, x=throughput)


def goodput_vs_slo(ds: xr.Dataset, slo: str, goodput="goodput_request_per_s", *, hue: str | None = None, ax=None):
    """Goodput (or ``slo_attainment``, ``capacity_request_per_s``) against a swept SLO dim, a line per ``hue``.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset with an SLO dim: :func:`hermes_fast.slo_goodput`'s (``ttft_slo_s``, ``tpot_slo_s``) or a sweep
        over ``serving.slo.ttft_s``, ...
    slo : str
        The SLO dim along x (seconds).
    goodput : str or xarray.DataArray, default "goodput_request_per_s"
        The y objective, as in :func:`hermes_fast.pareto`.
    hue : str or None, default None
        A dim with a line per value (None: the one other dim, if there is exactly one).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``.

    Raises
    ------
    ConfigError
        For an ``slo`` that is not a dim of the objective, or dims left besides ``slo`` and ``hue``.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> sim = hf.simulate(n_requests=200, seed=1, keep_requests=True)
    >>> ax = plot.goodput_vs_slo(hf.slo_goodput(sim, ttft_s=[0.02, 0.05, 0.1, 0.5]), "ttft_slo_s")
    >>> ax.get_xlabel(), ax.get_ylabel()
    ('TTFT target [s]', 'goodput [request/s]')
    """
    return _lines(ds, slo, goodput, hue, _axes(ax))


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
    ('time in stage [s]', ['embed', 'prefill', 'decode'])
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
    if by is None:
        da = da.expand_dims(_by=[""])
        by_name = "_by"
    else:
        by_name = by
    values = np.nan_to_num(da.values, nan=0.0)
    names = [str(v) for v in da[by_name].values]
    bottom = np.zeros(len(names))
    for k, stage in enumerate(da["stage"].values):
        ax.bar(names, values[:, k], bottom=bottom, label=str(stage))
        bottom += values[:, k]
    ax.set_ylabel(label(da))
    if by:
        ax.set_xlabel(_dim_label(ds, by))
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
    ('time to first token [s]', 'fraction of requests [1]', 2)
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
        for v in q[hue].values if hue else [None]:
            qq = q.sel({hue: v}) if hue else q
            ax.plot(qq.values, qq["quantile"].values, "o-", label=str(v) if hue else None)
        ax.set_xlabel(f"{long_name} [s]")
        ax.set_ylabel("quantile over requests [1]")
        if hue:
            ax.legend(title=hue, frameon=False)
        return ax
    for name, d in series.items():
        if "request_arrival_s" not in d:
            raise ConfigError("data", name, "a simulate() Dataset with keep_requests=True (request_* variables)")
        x = np.asarray(fn(d).values, dtype=np.float64).ravel()
        x = np.sort(x[np.isfinite(x)])
        ax.step(x, np.arange(1, x.size + 1) / max(x.size, 1), where="post", label=name or None)
    ax.set_xlabel(f"{long_name} [s]")
    ax.set_ylabel("fraction of requests [1]")
    ax.set_ylim(0, 1.02)
    if len(series) > 1 or next(iter(series)):
        ax.legend(title=hue, frameon=False)
    return ax


def heatmap(ds: xr.Dataset, variable, x: str, y: str, *, ax=None, annotate: bool = True, fmt: str = "{:.3g}"):
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
    fmt : str, default "{:.3g}"
        Format of those values.

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
    ax = _axes(ax)
    da = _only(objective(ds, variable), [y, x], str(variable))
    values = da.values.astype(np.float64)
    mesh = ax.pcolormesh(np.arange(values.shape[1] + 1), np.arange(values.shape[0] + 1), values, shading="flat")
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [str(v) for v in da[x].values])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, [str(v) for v in da[y].values])
    ax.set_xlabel(_dim_label(ds, x))
    ax.set_ylabel(_dim_label(ds, y))
    bar = ax.figure.colorbar(mesh, ax=ax)
    bar.set_label(label(da))
    if annotate:
        lo, hi = np.nanmin(values), np.nanmax(values)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = hi > lo and (v - lo) / (hi - lo) < 0.5
                ax.text(j + 0.5, i + 0.5, fmt.format(v), ha="center", va="center", color="w" if dark else "k")
    return ax
