"""The CLI's ``WARNING: ...`` lines: what a result's ``warnings`` attr says (overload, rejected, dropped or
unfinished requests, invalid sweep points, capacity searches that found no rate), printed on stderr."""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["warning_lines", "print_warnings"]


def warning_lines(ds) -> list[str]:
    """The ``warnings`` attr of a Dataset as a list of lines (also as read back from netCDF: a string or an
    array of strings); empty when there is none."""
    w = ds.attrs.get("warnings")
    if w is None:
        return []
    if isinstance(w, str):
        return [w] if w else []
    return [str(x) for x in np.atleast_1d(w) if isinstance(x, str) and x]


def print_warnings(ds, file=None) -> int:
    """Print each of ``ds``'s warnings as a ``WARNING: ...`` line (on stderr by default); how many were printed.

    Examples
    --------
    >>> import io, xarray as xr
    >>> from hermes_fast.cli.warnings import print_warnings
    >>> err = io.StringIO()
    >>> print_warnings(xr.Dataset(attrs={"warnings": ["2.0% of the requests rejected"]}), err)
    1
    >>> err.getvalue()
    'WARNING: 2.0% of the requests rejected\\n'
    """
    out = file or sys.stderr
    lines = warning_lines(ds)
    for line in lines:
        print(f"WARNING: {line}", file=out)
    return len(lines)
