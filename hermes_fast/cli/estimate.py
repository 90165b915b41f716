"""``hermes-fast estimate``: the zero-load estimate of a scenario over a ``--grid``, printed as a table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .args import calibration_arg, parse_grid

__all__ = ["cmd_estimate", "print_estimate"]


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v * 1e3:10.3f}"
    if unit == "GB":
        return f"{v / 1e9:8.2f}"
    if unit == "int":
        return f"{int(v):>10d}"
    return f"{v:10.1f}"


def print_estimate(ds, out=None, max_rows: int = 60) -> None:
    """A readable table of an estimate Dataset, one row per grid point (to ``out``, default stdout)."""
    from ..variables import BOUND_NAMES

    out = out or sys.stdout
    columns = [
        ("ttft_s", "TTFT ms", "ms"),
        ("tpot_s", "TPOT ms", "ms"),
        ("e2e_s", "E2E s", "f"),
        ("throughput_output_token_per_s", "tok/s", "f"),
        ("weights_bytes", "GB/dev", "GB"),
        ("kv_capacity_tokens", "KV tokens", "int"),
    ]
    dims = list(ds.tpot_s.dims)
    flat = {name: ds[name].broadcast_like(ds.tpot_s).transpose(*dims).values.ravel() for name, _, _ in columns}
    fits = ds.fits.transpose(*dims).values.ravel()
    bound = ds.decode_bound.transpose(*dims).values.ravel()
    index = np.array(list(np.ndindex(*ds.tpot_s.shape))) if ds.tpot_s.ndim else np.zeros((1, 0), int)
    coords = [[str(v) for v in ds[d].values] for d in dims]
    widths = [max(len(d), *(len(c) for c in cs)) for d, cs in zip(dims, coords, strict=True)]
    head = "  ".join(d.ljust(w) for d, w in zip(dims, widths, strict=True))
    head += "".join(f"{label:>11s}" for _, label, _ in columns) + "  fits   bound"
    print(f"# {ds.attrs.get('title', '')} ({ds.attrs.get('method', '')})", file=out)
    print(head, file=out)
    n = len(fits)
    for r in range(min(n, max_rows)):
        row = "  ".join(coords[j][index[r, j]].ljust(widths[j]) for j in range(len(dims)))
        row += "".join(" " + _fmt(flat[name][r], unit) for name, _, unit in columns)
        row += f"  {'yes' if fits[r] else 'NO ':5s}  {BOUND_NAMES[bound[r]] if bound[r] >= 0 else 'n/a'}"
        print(row, file=out)
    if n > max_rows:
        print(f"... {n - max_rows} more rows (write them all with --out FILE.nc)", file=out)


def cmd_estimate(args) -> int:
    from ..estimate import estimate

    grid = parse_grid(args.grid) if args.grid else None
    ds = estimate(Path(args.scenario) if args.scenario else None, grid=grid, calibration=calibration_arg(args))
    print_estimate(ds)
    if args.out:
        ds.to_netcdf(args.out)
        print(f"wrote {args.out}")
    return 0
