"""Where ``--out`` writes: checked before any work (a known format by extension, an existing, writable directory),
then the Dataset in that format.

- ``.nc``: netCDF (every variable with its attrs; ``xarray.open_dataset`` reads it back);
- ``.zarr``: a zarr store (format 2, consolidated: ``xarray.open_zarr`` reads it without warnings);
- ``.csv``: a flat, tidy table with one row per value: ``variable``, ``units``, then one column per dim of the
  Dataset (``engine`` and grid dims, ``replicate``, ``quantile``, ``pool``, ``reason``, ``stage``, ``link``,
  ``request``: empty where a variable has no such dim), the coordinates along them (``pool_role``, a zipped axis's
  paths), and ``value`` (a number: booleans as 1 and 0; empty: NaN, not applicable or no data);
- ``.json``: the summary: ``title``, ``attrs``, ``dims`` (sizes), ``coords`` and ``variables``, each with its
  ``dims``, ``units``, ``long_name``, ``description`` and ``values`` (nested lists; ``null``: NaN or infinite).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..config.base import ConfigError
from ..config.files import check_path_length

__all__ = ["OUT_FORMATS", "check_out", "check_figure_out", "write_dataset", "dataset_summary", "dataset_table"]

OUT_FORMATS = {
    ".nc": "netCDF",
    ".zarr": "a zarr store",
    ".csv": "a flat table, one row per value",
    ".json": "the summary: variables with units",
}


def _check_place(path: Path, flag: str) -> None:
    """The directory ``path`` goes in exists and this process can write there (tried: root ignores modes)."""
    check_path_length(path.absolute(), flag)
    parent = path.absolute().parent
    if not parent.exists():
        raise ConfigError(flag, str(path), f"a file in an existing directory ({parent} does not exist)")
    if not parent.is_dir():
        raise ConfigError(flag, str(path), f"a file in an existing directory ({parent} is not a directory)")
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=".hermes_fast_probe")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ConfigError(flag, str(path), f"a writable place ({parent}: {e.strerror or e})") from None
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise ConfigError(flag, str(path), "a file this process may overwrite (it is read-only)")


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """``out`` if a Dataset can be written there: a supported extension (:data:`OUT_FORMATS`), an existing,
    writable directory, and no directory in the way (a ``.zarr`` may replace only a zarr store that is not a
    sweep's); ConfigError naming ``flag`` otherwise."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in OUT_FORMATS:
        known = ", ".join(f"{ext} ({what})" for ext, what in OUT_FORMATS.items())
        raise ConfigError(flag, str(out), f"a file name ending in one of {known}")
    _check_place(path, flag)
    if suffix == ".zarr" and path.exists():
        if not path.is_dir():
            raise ConfigError(flag, str(out), "a new path or a zarr store to replace (this is a file)")
        marks = {p.name for p in path.iterdir()}
        if marks and not marks & {"zarr.json", ".zgroup"}:
            raise ConfigError(flag, str(out), "a new path or a zarr store to replace (this directory is neither)")
        if _is_sweep_store(path):
            raise ConfigError(flag, str(out), "a path other than a sweep's store (it would be replaced)")
    elif suffix != ".zarr" and path.is_dir():
        raise ConfigError(flag, str(out), "a file name (this is a directory)")
    return path


def _is_sweep_store(path: Path) -> bool:
    try:
        return "hermes_fast_sweep" in json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False


def check_figure_out(out: str | Path, flag: str = "--out") -> Path:
    """``out`` if matplotlib can save a figure there: an extension among its formats, a writable directory."""
    from matplotlib.backend_bases import FigureCanvasBase

    check_path_length(out, flag)
    path = Path(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in formats:
        raise ConfigError(flag, str(out), f"an image file ending in one of {', '.join('.' + f for f in formats)}")
    if fmt == "pgf":
        import shutil

        import matplotlib

        tex = matplotlib.rcParams["pgf.texsystem"]
        if shutil.which(tex) is None:
            raise ConfigError(flag, str(out), f"a format this machine can write (.pgf needs {tex}, not found)")
    if path.is_dir():
        raise ConfigError(flag, str(out), "a file name (this is a directory)")
    _check_place(path, flag)
    return path


# --- the formats -------------------------------------------------------------------------------------------


def _plain(v):
    """JSON values: numpy scalars and arrays as Python, NaN and infinities as None."""
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()] if v.ndim else _plain(v.item())
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def dataset_summary(ds) -> dict:
    """The ``.json`` layout: title, attrs, dim sizes, coordinates and every variable with its units."""
    return {
        "title": ds.attrs.get("title", ""),
        "attrs": _plain(dict(ds.attrs)),
        "dims": {str(d): int(n) for d, n in ds.sizes.items()},
        "coords": {str(k): {"dims": list(c.dims), "values": _plain(c.values)} for k, c in ds.coords.items()},
        "variables": {
            str(k): {"dims": list(v.dims), **_plain(dict(v.attrs)), "values": _plain(v.values)}
            for k, v in ds.data_vars.items()
        },
    }


def dataset_table(ds):
    """The ``.csv`` layout as a pandas DataFrame: one row per value (see the module's docstring)."""
    import pandas as pd

    dims = [str(d) for d in ds.dims]
    aux = [str(c) for c in ds.coords if c not in ds.dims]
    frames = []
    for name, da in ds.data_vars.items():
        if da.dtype == bool:
            da = da.astype(np.int8)
        frame = da.reset_coords(drop=False).to_dataframe() if da.dims else None
        if frame is None:
            frame = pd.DataFrame({str(name): [da.values.item()]})
        frame = frame.reset_index().rename(columns={str(name): "value"}).astype(object)  # ints stay ints
        frame.insert(0, "units", da.attrs.get("units", ""))
        frame.insert(0, "variable", str(name))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True, sort=False)
    columns = ["variable", "units", *dims, *[c for c in aux if c in table.columns], "value"]
    return table.reindex(columns=columns)


def _dumps(value, depth: int = 0) -> str:
    """JSON with the first levels (sections, entries, fields) one per line and the values compact."""
    if isinstance(value, dict) and depth < 3 and value:
        pad = " " * (depth + 1)
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    return json.dumps(value, allow_nan=False, separators=(", ", ": "))


def write_dataset(ds, out: str | Path) -> None:
    """Write ``ds`` in the format ``out``'s extension names (checked by :func:`check_out`)."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".nc":
        ds.to_netcdf(path)
    elif suffix == ".zarr":
        ds.to_zarr(path, mode="w", zarr_format=2)
    elif suffix == ".csv":
        dataset_table(ds).to_csv(path, index=False, na_rep="")
    elif suffix == ".json":
        path.write_text(_dumps(dataset_summary(ds)) + "\n", encoding="utf-8")
    else:  # pragma: no cover - check_out refuses it first
        raise ConfigError("--out", str(out), f"one of {', '.join(OUT_FORMATS)}")
