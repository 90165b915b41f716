"""Matplotlib helpers for simulation and sweep Datasets; each takes ``ax=None`` and returns the Axes.

Axis labels come from the variables' ``long_name`` and ``units`` attrs (and the selection made, e.g.
``quantile=0.99``). Variables are averaged over ``replicate``; the dims left after that and the helper's own
dims must be the ones the helper draws (select the others first: ``ds.sel(...)``).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import xarray as xr

from .config.base import ConfigError
from .config.grid import parse_path
from .config.scenario import Scenario
from .metrics import request_tpot_s
from .pareto import objective, pareto, point_valid

_SELECTABLE = ("quantile", "pool", "stage", "link", "reason")  # selections worth naming in a label
_DECADES_FOR_LOG = 1.5  # an axis whose positive values span this many decades or more is drawn in log scale
_INVALID = {"marker": "o", "facecolors": "none", "edgecolors": "0.55", "linewidths": 1.0}  # invalid points

__all__ = ["pareto_front", "latency_throughput", "goodput_vs_slo", "stage_breakdown", "latency_cdf", "heatmap"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _scale(units: str | None) -> tuple[float, str | None]:
    """Seconds are shown in milliseconds: (factor, displayed units)."""
    return (1e3, "ms") if units == "s" else (1.0, units)


def label(da: xr.DataArray, spec=None) -> str:
    """``long_name (selection) [units]`` of a DataArray (its name when it has no long_name); seconds as ms."""
    name = da.attrs.get("long_name") or str(da.name or "")
    picked = [f"{d}={da[d].values.item():g}" if np.issubdtype(da[d].dtype, np.number) else f"{d}={da[d].item()}"
              for d in _SELECTABLE if d in da.coords and d not in da.dims and da[d].ndim == 0]  # fmt: skip
    if picked:
        name += f" ({', '.join(picked)})"
    units = _scale(da.attrs.get("units"))[1]
    return f"{name} [{units}]" if units else name


def _shown(da: xr.DataArray) -> np.ndarray:
    """The values as drawn (seconds in ms)."""
    return np.asarray(da.values, dtype=np.float64) * _scale(da.attrs.get("units"))[0]


def _unwrap(tp, more: bool):
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return next((a for a in args if more and dataclasses.is_dataclass(a)), args[0])
    return tp


@cache
def path_label(path: str) -> str | None:
    """``description (element names) [units]`` of the scenario field a dotted path names (a sweep's dim), from the
    schema's docs, e.g. ``engines.main.batching.policy`` -> ``batching policy (main)``; None: not a field path."""
    try:
        segs = parse_path(path)
    except ConfigError:
        return None
    tp: Any = Scenario
    field = None
    names = []
    for seg in segs:
        tp = _unwrap(tp, more=True)
        if dataclasses.is_dataclass(tp):
            field = next((f for f in dataclasses.fields(tp) if f.name == seg), None)
            if field is None:
                return None
            tp = get_type_hints(tp)[seg]
        elif get_origin(tp) is tuple:
            names.append(str(seg))
            tp, field = get_args(tp)[0], None
        else:  # a free mapping (catalog overrides): no schema below
            return None
    if field is None:
        return None
    doc = field.metadata.get("doc", "") or field.name.replace("_", " ")
    doc = doc.split(";")[0].split(" (")[0].split(", ")[0].strip() or field.name.replace("_", " ")
    if names:
        doc += f" ({', '.join(names)})"
    units = _scale(field.metadata.get("unit") or None)[1]
    return f"{doc} [{units}]" if units and units != "1" else doc


def _dim_label(ds: xr.Dataset, dim: str) -> str:
    if dim in ds.coords and ds[dim].attrs.get("units"):
        return label(ds[dim])
    return path_label(dim) or dim


def _dim_values(ds: xr.Dataset, dim: str) -> np.ndarray:
    """A dim's coordinate as drawn along an axis (seconds in ms when the dim is a time)."""
    values = ds[dim].values
    units = ds[dim].attrs.get("units") if dim in ds.coords else None
    if units is None and (lab := path_label(dim)) is not None and lab.endswith("[ms]"):
        units = "s"
    if units == "s" and np.issubdtype(values.dtype, np.number):
        return values * 1e3
    return values


def _log_if_wide(ax, axis: str, values) -> None:
    """Log scale on ``axis`` ("x" or "y") when its positive values span ``_DECADES_FOR_LOG`` decades or more."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and np.log10(v.max() / v.min()) >= _DECADES_FOR_LOG:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _title(ax, ds: xr.Dataset, text: str) -> None:
    scenario = ds.attrs.get("scenario") if isinstance(ds, xr.Dataset) else None
    ax.set_title(f"{scenario}: {text}" if scenario else text, fontsize="medium")


def _only(da: xr.DataArray, dims: list[str], what: str) -> xr.DataArray:
    extra = [d for d in da.dims if d not in dims]
    if extra:
        raise ConfigError(
            what, da.name, f"no dims but {', '.join(dims) or 'none'}: select or average {', '.join(extra)} first"
        )
    return da.transpose(*dims)


def _hue_dim(da: xr.DataArray, x_dim: str | None, hue: str | None) -> str | None:
    if hue is not None:
        if hue not in da.dims:
            raise ConfigError("hue", hue, f"a dim of {da.name}: {', '.join(map(str, da.dims)) or 'none'}")
        return hue
    rest = [d for d in da.dims if d != x_dim]
    return rest[0] if len(rest) == 1 else None


def _valid_like(ds: xr.Dataset, da: xr.DataArray) -> np.ndarray:
    """Each value of ``da``'s point valid (True where ``ds`` says nothing)."""
    v = point_valid(ds)
    if v is None:
        return np.ones(da.shape, dtype=bool)
    v = v.sel({d: da[d] for d in v.dims if d in da.coords and da[d].ndim == 0 and d not in da.dims}, drop=True)
    return v.broadcast_like(da).transpose(*da.dims).values.astype(bool)


def _point_text(da: xr.DataArray, index: tuple) -> str:
    parts = []
    for d, i in zip(da.dims, index, strict=True):
        v = da[d].values[i] if d in da.coords else i
        parts.append(f"{v:g}" if isinstance(v, (float, np.floating)) else str(v))
    return ", ".join(parts)


def pareto_front(
    ds: xr.Dataset,
    x,
    y,
    *,
    x_better: str = "min",
    y_better: str = "max",
    mask: xr.DataArray | None = None,
    hue: str | None = None,
    include_invalid: bool = False,
    ax=None,
):
    """Every point of a sweep in (x, y), the Pareto-optimal ones joined as a front and labelled with their
    coordinates; invalid points (overloaded, requests lost) hollow and grey, left off the front.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep (or estimate) Dataset.
    x, y : str or xarray.DataArray
        Objective specs as in :func:`hermes_fast.pareto` (``"ttft_s[quantile=0.99]"``,
        ``"output_token_per_usd"``, DataArrays), averaged over ``replicate``; seconds are drawn in ms.
    x_better, y_better : {"min", "max"}, default "min", "max"
        Which way each objective is better.
    mask : xarray.DataArray or None, default None
        A front computed elsewhere (default: :func:`hermes_fast.pareto` of x and y).
    hue : str or None, default None
        A swept dim whose values colour the points (a legend entry each).
    include_invalid : bool, default False
        As in :func:`hermes_fast.pareto`: rank invalid points too (they are still drawn hollow).
    ax : matplotlib.axes.Axes or None, default None
        Where to draw; None: a new figure's Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on, labelled from the variables' ``long_name`` and ``units``, titled with the count of
        points on the front; an axis whose values span 1.5 decades or more is logarithmic.

    Raises
    ------
    ConfigError
        For an ``x_better``/``y_better`` other than ``"min"``/``"max"``, a ``hue`` that is not a swept dim, or an
        objective :func:`hermes_fast.pareto` refuses.

    Examples
    --------
    >>> from hermes_fast import plot
    >>> grid = {"workload.rate_per_s": [2, 8, 32], "engines.llama8b-h100.batching.policy": ["continuous", "chunked"]}
    >>> ds = hf.sweep(grid=grid, n_requests=100, seed=1)
    >>> ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd")
    >>> ax.get_xlabel()
    'time to first token (quantile=0.99) [ms]'
    >>> ax.get_ylabel()
    'output tokens per dollar [token/USD]'
    >>> ax.get_title()  # 32/s overloads the engine: both policies' points are invalid (drawn hollow)
    'default: Pareto front, 4 of 6 points (2 invalid left out)'
    """
    import warnings

    ax = _axes(ax)
    for name, value in (("x_better", x_better), ("y_better", y_better)):
        if value not in ("min", "max"):
            raise ConfigError(name, value, "'min' or 'max'")
    xa, ya = objective(ds, x), objective(ds, y)
    left_out = 0
    if mask is None:
        goals = {"min": [], "max": []}
        goals[x_better].append(xa)
        goals[y_better].append(ya)
        with warnings.catch_warnings():  # the title says how many were left out
            warnings.simplefilter("ignore", UserWarning)
            mask = pareto(ds, minimize=goals["min"], maximize=goals["max"], include_invalid=include_invalid)
        left_out = mask.attrs.get("invalid_left_out", 0)
    xa, ya, mask = xr.broadcast(xa, ya, mask)
    if hue is not None and hue not in mask.dims:
        raise ConfigError("hue", hue, f"a swept dim of the points: {', '.join(map(str, mask.dims)) or 'none'}")
    ok = _valid_like(ds, mask)
    xv, yv = _shown(xa).ravel(), _shown(ya).ravel()
    mv, okv = mask.values.ravel().astype(bool), ok.ravel()
    if hue is None:
        ax.scatter(xv[~mv & okv], yv[~mv & okv], s=14, color="0.7", label="dominated")
    else:
        hv = mask[hue].broadcast_like(mask).transpose(*mask.dims).values.ravel()
        for k, v in enumerate(mask[hue].values):
            pick = okv & (hv == v)
            ax.scatter(xv[pick], yv[pick], s=18, color=f"C{k}", label=f"{v}", zorder=2)
    if (~okv).any():
        ax.scatter(xv[~okv], yv[~okv], s=22, **_INVALID, label=f"invalid ({int((~okv).sum())})", zorder=1)
    order = np.argsort(xv[mv], kind="stable")
    ax.plot(xv[mv][order], yv[mv][order], "o-", color="C3" if hue is None else "k", label="Pareto front",
            drawstyle="steps-post", zorder=3)  # fmt: skip
    front = np.flatnonzero(mv)
    shape = mask.shape
    for n, k in enumerate(front[np.argsort(xv[front], kind="stable")]):  # labelled with their coordinates
        ax.annotate(_point_text(mask, np.unravel_index(k, shape)), (xv[k], yv[k]), textcoords="offset points",
                    xytext=(5, 4 if n % 2 == 0 else -10), fontsize="x-small", color="0.25")  # fmt: skip
    ax.set_xlabel(label(xa))
    ax.set_ylabel(label(ya))
    _log_if_wide(ax, "x", xv)
    _log_if_wide(ax, "y", yv)
    title = f"Pareto front, {front.size} of {mv.size} points"
    if left_out:
        title += f" ({left_out} invalid left out)"
    _title(ax, ds, title)
    ax.legend(frameon=False, fontsize="small", title=_dim_label(ds, hue) if hue else None)
    return ax


def _lines(ds: xr.Dataset, x_dim: str, y, hue: str | None, ax, x=None):
    ya = objective(ds, y)
    if x_dim not in ya.dims:
        raise ConfigError("x", x_dim, f"a dim of {ya.name}: {', '.join(map(str, ya.dims))}")
    hue = _hue_dim(ya, x_dim, hue)
    dims = [x_dim] + ([hue] if hue else [])
    ya = _only(ya, dims, "y")
    xa = _only(objective(ds, x).broadcast_like(ya), dims, "x") if x is not None else None
    ok = xr.DataArray(_valid_like(ds, ya), dims=ya.dims, coords={d: ya[d] for d in ya.dims if d in ya.coords})
    if hue is None:
        ya, ok = ya.expand_dims(_hue=[""]), ok.expand_dims(_hue=[""])
        xa = xa.expand_dims(_hue=[""]) if xa is not None else None
        hue_name = "_hue"
    else:
        hue_name = hue
    xs, ys, hollow = [], [], []
    for k, v in enumerate(ya[hue_name].values):
        yy = _shown(ya.sel({hue_name: v}).transpose(x_dim))
        xx = _shown(xa.sel({hue_name: v}).transpose(x_dim)) if xa is not None else _dim_values(ds, x_dim)
        good = ok.sel({hue_name: v}).transpose(x_dim).values
        marks = [int(i) for i in np.flatnonzero(good)]  # filled markers on valid points only
        ax.plot(xx, yy, "o-", color=f"C{k}", markevery=marks, label=str(v) if hue else None, zorder=2)
        hollow += list(zip(np.asarray(xx)[~good], yy[~good], strict=True))
        xs.append(xx)
        ys.append(yy)
    if hollow:  # invalid points: hollow and grey, one legend entry
        ax.scatter(*np.array(hollow, dtype=np.float64).T, s=30, zorder=4, **_INVALID, label="invalid")
    if np.issubdtype(np.asarray(xs[0]).dtype, np.number):
        _log_if_wide(ax, "x", np.concatenate(xs))
    _log_if_wide(ax, "y", np.concatenate(ys))
    ax.set_xlabel(label(xa) if xa is not None else _dim_label(ds, x_dim))
    ax.set_ylabel(label(ya))
    if hue or hollow:
        ax.legend(title=_dim_label(ds, hue) if hue else None, frameon=False, fontsize="small")
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
    """Latency against throughput, the points of each line joined along a swept dim (default: the rate); invalid
    points (overloaded, requests lost) are drawn hollow and grey, and a latency axis spanning decades is logarithmic.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep Dataset.
    latency : str or xarray.DataArray, default "ttft_s[quantile=0.99]"
        The y objective (seconds, drawn in ms), as in :func:`hermes_fast.pareto`.
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
    ('output throughput [token/s]', 'time to first token (quantile=0.99) [ms]')
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
    _lines(ds, along, latency, hue, ax, x=throughput)
    thr = objective(ds, throughput)
    _title(ax, ds, f"{lat.attrs.get('long_name', lat.name)} vs {thr.attrs.get('long_name', thr.name)}")
    return ax


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
    ('TTFT target [ms]', 'goodput [request/s]')
    """
    ax = _lines(ds, slo, goodput, hue, _axes(ax))
    ya = objective(ds, goodput)
    _title(ax, ds, f"{ya.attrs.get('long_name', ya.name)} against {_dim_label(ds, slo).split(' [')[0]}")
    return ax


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
