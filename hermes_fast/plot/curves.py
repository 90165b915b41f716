"""Curves over a sweep: the Pareto front of two objectives, latency against throughput, goodput against an SLO
target."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..config.base import ConfigError
from ..pareto import objective, pareto
from .axes import (
    _INVALID,
    _axes,
    _dim_label,
    _dim_values,
    _hue_dim,
    _log_if_wide,
    _only,
    _point_text,
    _shown,
    _title,
    _valid_like,
    label,
)

__all__ = ["pareto_front", "latency_throughput", "goodput_vs_slo"]


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
    'default: Pareto front, 3 of 6 points (2 invalid left out)'
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
