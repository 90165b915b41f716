"""What every plot shares: labels from the variables' attrs and the sweep paths, unit scaling, log axes, the
dims a helper draws, hues and the marking of invalid points."""

from __future__ import annotations

import dataclasses
import types
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import xarray as xr

from ..config.base import ConfigError
from ..config.grid import parse_path
from ..config.scenario import Scenario
from ..pareto import point_valid

_SELECTABLE = ("quantile", "pool", "stage", "link", "reason")  # selections worth naming in a label
_DECADES_FOR_LOG = 1.5  # an axis whose positive values span this many decades or more is drawn in log scale
_INVALID = {"marker": "o", "facecolors": "none", "edgecolors": "0.55", "linewidths": 1.0}  # invalid points


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
