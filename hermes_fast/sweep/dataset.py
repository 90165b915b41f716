"""A sweep's Dataset: the stored (or in-memory) arrays reshaped onto the grid dims, with coordinates (zipped
axes' paths as coordinates along their dim), a ``computed`` mask when points are missing, and the attrs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._version import __version__
from ..config.grid import is_scalar
from ..metrics import QUANTILES
from ..validity import REASONS, validity_warnings
from ..variables import data_array

__all__ = ["sweep_dataset"]


def _coord(values: Sequence) -> list:
    return list(values) if all(is_scalar(v) for v in values) else [json.dumps(v, sort_keys=True) for v in values]


def sweep_dataset(meta: dict, arrays: dict, var_dims: dict, done: np.ndarray) -> xr.Dataset:
    axes = meta["axes"]
    shape = tuple(len(a["labels"]) for a in axes)
    grid_dims = tuple(a["name"] for a in axes)
    lay = meta["layout"]
    coords: dict[str, Any] = {a["name"]: list(a["labels"]) for a in axes}
    coords |= {
        "replicate": np.arange(meta["replicates"]),
        "quantile": np.array(QUANTILES),
        "reason": list(REASONS),
        "pool": lay["pools"],
        "pool_role": ("pool", ["|".join(lay["roles"][p]) for p in lay["pools"]]),
    }
    if lay["piped"]:
        coords["stage"] = lay["stages"]
        coords["link"] = lay["links"]
    for a in axes:
        if a["paths"] != [a["name"]]:
            for k, p in enumerate(a["paths"]):
                coords[p] = (a["name"], _coord([row[k] for row in a["values"]]))
    ds = xr.Dataset(coords=coords)
    for name in meta.get("order") or list(arrays):
        values = arrays[name].reshape(shape + arrays[name].shape[1:])
        ds[name] = data_array(name, values, grid_dims + tuple(var_dims[name]))
    if "turn" in ds.dims:  # (ttft_turn_mean_s: session turns 1, 2, ...)
        ds = ds.assign_coords(turn=np.arange(1, ds.sizes["turn"] + 1))
    if not done.all():
        ds["computed"] = xr.DataArray(
            done.reshape(shape), dims=grid_dims, attrs={"long_name": "point computed", "units": "1"}
        )
    ds.attrs.update(
        {
            "title": f"hermes_fast sweep: {', '.join(lay['names'])}",
            "scenario": ", ".join(lay["names"]),
            "grid": json.dumps([{k: a[k] for k in ("name", "paths", "labels")} for a in axes]),
            "n_requests": meta["n_requests"],
            "replicates": meta["replicates"],
            "seed": meta["seed"],
            "capacity": json.dumps(meta["capacity"]),
            "points": int(done.size),
            "points_done": int(done.sum()),
            "fingerprint": meta["fingerprint"],
            "hermes_fast_version": __version__,
            "hermes_fast_build": meta.get("build", "unknown (a store written before builds were recorded)"),
            "calibration": "default: the shipped calibrations (h100_sxm, h200_sxm, a100_sxm_80gb and devices based on"
            " them); other devices uncalibrated",
        }
    )
    if "valid" in ds:  # points computed and invalid in some replicate
        ds.attrs["points_invalid"] = int((~ds.valid.all("replicate") & ds.get("computed", True)).sum())
    ds.attrs["warnings"] = validity_warnings(ds)
    return ds
