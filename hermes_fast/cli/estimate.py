"""``hermes-fast estimate``: the zero-load estimate of a scenario over a ``--grid``, printed as a table whose
columns widen for large values."""

from __future__ import annotations

import sys

import numpy as np

from ..config.base import ConfigError
from .args import calibration_arg, parse_grid
from .knobs import apply_knobs, flag_errors
from .outputs import check_out, write_dataset

__all__ = ["cmd_estimate", "print_estimate"]


def _fmt(v: float, unit: str) -> str:
    if not np.isfinite(v):
        return "n/a"
    if unit == "ms":
        return f"{v * 1e3:.3f}"
    if unit == "GB":
        return f"{v / 1e9:.2f}"
    if unit == "int":
        return f"{int(v)}"
    return f"{v:.1f}"


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
    n = len(fits)
    shown = range(min(n, max_rows))
    cells = {name: [_fmt(flat[name][r], unit) for r in shown] for name, _, unit in columns}
    value_widths = [max(len(label), *(len(c) for c in cells[name])) + 1 for name, label, _ in columns]
    head = "  ".join(d.ljust(w) for d, w in zip(dims, widths, strict=True))
    head += "".join(f" {label:>{w}s}" for (_, label, _), w in zip(columns, value_widths, strict=True))
    print(f"# {ds.attrs.get('title', '')} ({ds.attrs.get('method', '')})", file=out)
    print(head + "  fits   bound", file=out)
    for r in shown:
        row = "  ".join(coords[j][index[r, j]].ljust(widths[j]) for j in range(len(dims)))
        row += "".join(f" {cells[name][r]:>{w}s}" for (name, _, _), w in zip(columns, value_widths, strict=True))
        row += f"  {'yes' if fits[r] else 'NO ':5s}  {BOUND_NAMES[bound[r]] if bound[r] >= 0 else 'n/a'}"
        print(row, file=out)
    if n > max_rows:
        print(f"... {n - max_rows} more rows (write them all with --out FILE.nc)", file=out)


_KNOB_KEYS = {  # grid keys and path endings that set what a flag sets
    "--model": ("model", ".model"),
    "--device": ("device", ".device"),
    "--tp": ("tp", ".parallel.tp"),
    "--prompt-tokens": ("prompt_tokens", "workload.prompt_tokens"),
    "--output-tokens": ("output_tokens", "workload.output_tokens"),
}


def _grid_paths(grid: dict) -> list[str]:
    out = []
    for key, spec in grid.items():
        out += [str(p) for p in spec if p != "label"] if isinstance(spec, dict) else [str(key)]
    return out


def cmd_estimate(args) -> int:
    from ..estimate import estimate

    out = check_out(args.out) if args.out else None  # before any work
    grid = parse_grid(args.grid) if args.grid else None
    scenario, settings, base = apply_knobs(args.scenario, args, "estimate")
    for flag in dict.fromkeys(f for f, _, _ in settings):
        short, ending = _KNOB_KEYS[flag]
        clash = next((p for p in _grid_paths(grid or {}) if p == short or p.endswith(ending)), None)
        if clash is not None:
            raise ConfigError(flag, getattr(args, flag[2:].replace("-", "_")), f"a field no --grid key sets ({clash})")
    with flag_errors(settings, base, args.scenario):
        ds = estimate(scenario, grid=grid, calibration=calibration_arg(args))
    print_estimate(ds)
    if out is not None:
        write_dataset(ds, out)
        print(f"wrote {out}")
    return 0
