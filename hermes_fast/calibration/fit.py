"""Fit a device's efficiency parameters to measured latencies: :func:`calibrate`.

Least squares on log(predicted / measured) over all but a deterministic held-back share of rows
(:func:`holdout_mask`), one block of kernel families after another, only the parameters the rows identify
(:mod:`hermes_fast.calibration.parameters`); then an attention residual surface per attention kernel
(:mod:`hermes_fast.calibration.residuals`) and, from whole decode steps, the engine's host costs. The report gives
the error on the fitted and the held-back rows per kernel family (:func:`error_report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..config.base import ConfigError
from ..config.efficiency import AttentionResidual
from ..config.hardware import DTYPE_BYTES, Device
from ..rates import device_rates
from ..resolve import Catalog
from .calibration import Calibration, with_values
from .measurements import Measurements, read_measurements
from .parameters import (
    ATTENTION,
    BLOCK,
    COLLECTIVE,
    GEMM8,
    GEMM16,
    PARAMETERS,
    SMALL_FLOOR,
    SMALL_TOKENS,
    STEP,
    Param,
    current_value,
    identifiable,
    row_groups,
)
from .predict import predict
from .residuals import fit_residual, residual_axes

__all__ = ["calibrate", "error_report", "holdout_mask"]


def holdout_mask(ms: Measurements, holdout: float, seed: int = 0) -> np.ndarray:
    """Rows held back from a fit: a stable hash of each row's identity, so the same row is held back
    whatever file or order it comes in."""
    if holdout <= 0.0:
        return np.zeros(len(ms), dtype=bool)
    keys = ms.row_keys()
    h = np.array([zlib.crc32(f"{seed}|{k}".encode()) for k in keys], dtype=np.float64)
    return (h % 10_000) < holdout * 10_000


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    a = np.abs(pred / meas - 1.0)
    if a.size == 0:
        return {"median_abs_error": math.nan, "p90_abs_error": math.nan}
    return {"median_abs_error": float(np.median(a)), "p90_abs_error": float(np.quantile(a, 0.9))}


def error_report(ms: Measurements, pred: np.ndarray, held: np.ndarray) -> tuple[dict, ...]:
    """Per kernel family: rows fitted / held back and their median and p90 absolute relative errors."""
    fam = ms.family
    meas = ms["latency_s"]
    out = []
    for f in sorted(set(fam)):
        sel = fam == f
        fit_e = _errors(pred[sel & ~held], meas[sel & ~held])
        held_e = _errors(pred[sel & held], meas[sel & held])
        out.append(
            {
                "family": f,
                "rows_fit": int((sel & ~held).sum()),
                "rows_held": int((sel & held).sum()),
                "fit_median_abs_error": fit_e["median_abs_error"],
                "fit_p90_abs_error": fit_e["p90_abs_error"],
                "held_median_abs_error": held_e["median_abs_error"],
                "held_p90_abs_error": held_e["p90_abs_error"],
            }
        )
    return tuple(out)


# fitted in this order, each on the rows of its kernel families; a parameter belongs to the first block whose
# rows identify it (prefill attention sets the compute rate, decode attention then the KV bandwidth: decode reads
# the compute parameters only through a small term, and fitting both together let a few ragged decode rows move
# them; block-scaled GEMMs read only their own fields once these are fitted, so they are a block of their own)
_FIT_BLOCKS = (
    (GEMM16 + GEMM8, ("gemm", "layer_linear")),
    (BLOCK, ("gemm_fp8_block", "layer_linear_fp8_block")),
    (ATTENTION, ("context_attention",)),
    (ATTENTION, ("generation_attention",)),
    (COLLECTIVE, ("collective",)),
    (STEP, ("decode_step",)),
)


# extra starts for parameters whose optimum lies in one of several basins: a ramp's knee and floor (e.g. H200
# TRT-LLM decode attention's knee near 300 MB, which neither default start reaches) and the 8-bit GEMM's saturation
# in m (H200 vLLM: near 0, where neither default start leads)
_BASIN_STARTS = {
    "efficiency.decode_attention_small_efficiency": (0.1, 0.3, 0.6),
    "efficiency.decode_attention_saturation_bytes": (1e7, 1e8, 1e9),
    "efficiency.low_precision_saturation_tokens": (1.0, 100.0),
}


def _fit_block(
    rows: Measurements,
    base: Device,
    cat,
    device: str,
    params: list[Param],
    search_small_tokens: bool = False,
) -> dict[str, float]:
    """Least squares on log(predicted / measured) of one kernel family's rows over its parameters, best of
    several starts: the device's values, halfway to the geometric middle of each parameter's bounds (a ramp
    that starts switched off has no gradient), and a grid over the parameters in :data:`_BASIN_STARTS` the
    block fits.

    ``search_small_tokens``: also choose the rows threshold of the small-GEMM floor. The fit without one
    comes first; each gap between two measured block-scaled GEMM m (at its geometric middle) is then tried
    from it, and kept when it lowers the cost by 1% with two floors 1% apart."""
    from scipy.optimize import least_squares

    log_meas = np.log(rows["latency_s"])
    block_gemm = (rows["op"] == "gemm") & (rows["dtype"] == "fp8_block")
    steps = [{}]
    if search_small_tokens:
        m = np.unique(rows["m"][block_gemm])
        steps = [{SMALL_TOKENS: 0.0}] + [{SMALL_TOKENS: float(t)} for t in np.sqrt(m[:-1] * m[1:])]

    def unpack(x: np.ndarray, step: dict[str, float]) -> dict[str, float]:
        return {**step, **{p.path: float(v * p.scale) for p, v in zip(params, x, strict=True)}}

    def residuals(x: np.ndarray, step: dict[str, float]) -> np.ndarray:
        cal = Calibration("fit", device, unpack(x, step))
        return np.log(predict(rows, base, catalog=cat, calibration=cal)) - log_meas

    x0 = np.array([np.clip(current_value(base, p.path), p.lower, p.upper) / p.scale for p in params])
    # a floor below every measurement has no gradient: start it at the fastest block-scaled GEMM measured
    block_layer = (rows["op"] == "layer_linear") & (rows["dtype"] == "fp8_block")  # four GEMMs in a row
    block_meas = np.concatenate([rows["latency_s"][block_gemm], rows["latency_s"][block_layer] / 4.0])
    for j, p in enumerate(params):
        if p.path in ("efficiency.block_scaled_gemm_floor_s", SMALL_FLOOR) and block_meas.size:
            x0[j] = np.clip(block_meas.min(), p.lower, p.upper) / p.scale
    lower = np.array([p.lower / p.scale for p in params])
    upper = np.array([p.upper / p.scale for p in params])
    middle = np.sqrt(np.maximum(lower, 1e-3) * upper)
    inside = 1e-9 * (upper - lower)  # the trust-region method needs starts strictly inside the bounds
    starts = [x0, 0.5 * (x0 + middle)]
    paths = [p.path for p in params]
    basins = [path for path in _BASIN_STARTS if path in paths]
    if basins:
        for combo in itertools.product(*(_BASIN_STARTS[path] for path in basins)):
            x = x0.copy()
            for path, value in zip(basins, combo, strict=True):
                j = paths.index(path)
                x[j] = value / params[j].scale
            starts.append(x)

    def solve(x: np.ndarray, step: dict[str, float]):
        start = np.clip(x, lower + inside, upper - inside)
        return least_squares(
            residuals, start, args=(step,), bounds=(lower, upper), loss="soft_l1", f_scale=0.05, x_scale=1.0
        )

    best = min((solve(x, steps[0]) for x in starts), key=lambda r: r.cost)
    best_step = steps[0]
    # each threshold starts from the best fit without one, its small floor back at the start value. Two
    # plateaus are kept only when they lower the cost by 1% and differ by 1% (else they are one)
    refine = best.x.copy()
    for j, p in enumerate(params):
        if p.path == SMALL_FLOOR:
            refine[j] = x0[j]
    floors = ("efficiency.block_scaled_gemm_floor_s", SMALL_FLOOR)
    for step in steps[1:]:
        res = solve(refine, step)
        v = {**{path: current_value(base, path) for path in floors}, **unpack(res.x, step)}  # fitted or fixed
        large, small = (v[path] for path in floors)
        distinct = abs(large - small) > 0.01 * max(large, small)
        if distinct and res.cost < (0.99 if best_step is steps[0] else 1.0) * best.cost:
            best, best_step = res, step
    values = unpack(best.x, best_step)
    if not best_step.get(SMALL_TOKENS, 1.0):  # no threshold: the small floor is not used
        values.pop(SMALL_FLOOR, None)
    return values


_RESIDUAL_KERNELS = {"context_attention": "prefill", "generation_attention": "decode"}


def _fit_residuals(rows: Measurements, d: Device, cat) -> tuple[AttentionResidual, ...]:
    """A residual surface per attention kernel and element sizes of the attention ``rows``, on top of ``d``'s
    analytical prediction (where it is worth keeping, :func:`hermes_fast.calibration.residuals.fit_residual`)."""
    log_ratio = np.log(rows["latency_s"] / predict(rows, d, catalog=cat))
    groups: dict[tuple[str, float, float], list[int]] = {}
    for i in range(len(rows)):
        rates = device_rates(d, rows["dtype"][i], rows["kv_dtype"][i])
        key = (_RESIDUAL_KERNELS[rows["op"][i]], rates.attention_compute_bytes, DTYPE_BYTES[rows["kv_dtype"][i]])
        groups.setdefault(key, []).append(i)
    out = []
    for (kernel, compute_bytes, kv_bytes), idx in sorted(groups.items()):
        sub = rows.select(np.array(idx))
        decode = kernel == "decode"
        per_seq = sub["context_tokens"] + (0.0 if decode else sub["tokens"])
        x, y = residual_axes(decode, sub["batch_size"], sub["num_heads"], sub["num_kv_heads"], per_seq)
        r = fit_residual(kernel, compute_bytes, kv_bytes, x, y, log_ratio[np.array(idx)])
        if r is not None:
            out.append(r)
    return tuple(out)


def calibrate(
    measurements: Measurements | str | Path | Iterable[Mapping[str, Any]],
    device: str,
    *,
    catalog=None,
    name: str | None = None,
    source: str = "",
    holdout: float = 0.25,
    seed: int = 0,
    fix: Mapping[str, float] | None = None,
    residuals: bool = True,
) -> Calibration:
    """Fit ``device``'s efficiency parameters (and link latencies) to its measured kernel latencies, then the
    engine's host costs to its measured decode steps.

    Parameters
    ----------
    measurements : str, pathlib.Path, iterable of mappings or Measurements
        A CSV path, rows (mappings) or :class:`Measurements` in the :data:`MEASUREMENT_COLUMNS` schema; rows of
        other devices are ignored. Kernel rows fit the kernels' parameters, then ``decode_step`` rows the
        engine's host costs on top of them; ``prefill_step`` rows are only predicted and reported.
    device : str
        Catalog device name (preset or ``catalog``'s own); the fit starts from its entry in ``catalog``
        (default: the uncalibrated catalog). To fit only the host costs to measured decode steps on top of the
        shipped kernel calibration, pass decode-step rows alone with ``catalog=Catalog()``.
    catalog : Catalog or None, default None
        Where ``device`` is resolved (None: ``Catalog(calibration="none")``, the uncalibrated presets).
    name : str or None, default None
        The calibration's name (None: ``device``).
    source : str, default ""
        Free text on where the measurements come from (kept in the calibration, shown in Dataset attrs).
    holdout, seed : float, int, default 0.25, 0
        Share of rows held back from the fit (chosen by a stable hash of each row with ``seed``); the report
        gives the error on them.
    fix : mapping of str to float or None, default None
        Device field paths (``"efficiency.gemm_overhead_s"``) to keep at given values (in the field's unit)
        instead of fitting them.
    residuals : bool, default True
        Fit an attention residual surface per attention kernel and element sizes on top of the analytical
        attention parameters (:mod:`hermes_fast.calibration.residuals`), each kept only when it beats no correction on
        leave-one-out error; False: the analytical model alone. Either way, once attention rows are fitted (or
        an attention parameter is fixed) the device's earlier surfaces are dropped.

    Returns
    -------
    Calibration
        Only parameters that the rows can identify are fitted (e.g. no fp8 parameters without fp8 rows);
        the others keep the device's values. A calibration ``catalog`` already applies to the device carries
        over into the result, so the result alone reproduces the fitted device. ``report`` holds the fit and
        held-back errors per family.

    Raises
    ------
    ConfigError
        For malformed measurements (naming the row and column), an unknown device, or a device without kernel
        or decode-step rows.

    Examples
    --------
    Rows generated by the model itself from a known compute efficiency and GEMM overhead: the fit finds them
    again.

    >>> import itertools
    >>> from hermes_fast.calibration.predict import predict
    >>> truth = hf.Calibration("truth", "h100_sxm", {"efficiency.compute_efficiency": 0.7,
    ...                                              "efficiency.gemm_overhead_s": 5e-6})
    >>> rows = [{"op": "gemm", "device": "h100_sxm", "dtype": "bf16", "m": m, "n": n, "k": n, "latency_s": 1.0}
    ...         for m, n in itertools.product((16, 256, 4096, 16384), (1024, 4096, 8192))]
    >>> latency_s = predict(rows, catalog=hf.Catalog(calibration="none"), calibration=truth)  # seconds
    >>> cal = hf.calibrate([{**r, "latency_s": t} for r, t in zip(rows, latency_s)], "h100_sxm")
    >>> round(cal.values["efficiency.compute_efficiency"], 3), round(cal.values["efficiency.gemm_overhead_s"] * 1e6, 2)
    (0.7, 5.0)
    >>> cal.report[0]["family"], cal.report[0]["rows_fit"], cal.report[0]["rows_held"]
    ('gemm', 10, 2)
    """
    ms = read_measurements(measurements)
    cat = catalog if catalog is not None else Catalog(calibration="none")
    base = cat.device(device, "device")
    ms = ms.select(ms["device"] == device)
    families = ms.family
    if not np.isin(families, [f for _, fams in _FIT_BLOCKS for f in fams]).any():
        raise ConfigError("device", device, "a device with kernel or decode-step measurement rows")
    if fix:
        base = with_values(base, dict(fix))
    held = holdout_mask(ms, holdout, seed)
    train = ~held
    groups = row_groups(ms, base)
    present = identifiable(ms, groups, train)
    fixed = set(fix or {})
    params = [p for p in PARAMETERS if p.path not in fixed and present.intersection(p.groups)]
    vals: dict[str, float] = {}
    # attention surfaces sit on the analytical attention parameters (some shared by prefill and decode): once
    # attention rows refit them or fix= sets one, every old surface is stale
    attention = train & np.isin(families, list(_RESIDUAL_KERNELS))
    refit = attention.any() or bool(fixed & {p.path for p in ATTENTION})
    surfaces = () if refit else base.efficiency.attention_residuals
    base = with_values(base, {}, surfaces)
    for fam_params, fams in _FIT_BLOCKS:
        if fam_params is STEP and residuals and attention.any():  # before the host costs: steps include them
            surfaces += _fit_residuals(ms.select(attention), with_values(base, vals), cat)
        fam_rows = train & np.isin(families, fams)
        if not fam_rows.any():
            continue
        seen = identifiable(ms, groups, fam_rows)
        own = [p for p in params if p in fam_params and p.path not in vals and seen.intersection(p.groups)]
        # the small-GEMM floor's threshold: searched when that floor is fitted or fixed, unless it is fixed
        small = SMALL_FLOOR in fixed or any(p.path == SMALL_FLOOR for p in own)
        search = small and SMALL_TOKENS not in fixed and "gemm_block_sizes" in seen
        if own:
            vals.update(_fit_block(ms.select(fam_rows), with_values(base, vals, surfaces), cat, device, own, search))
    if fix:
        vals.update({k: float(v) for k, v in fix.items()})
    prior = getattr(cat, "calibrations", {}).get(device)
    if prior is not None:
        vals = {**prior.values, **vals}
    fitted = Calibration(name or device, device, vals, source, holdout, seed, attention_residuals=surfaces)
    pred = predict(ms, cat.device(device, "device"), catalog=cat, calibration=fitted)
    out_of_fit = held | (ms["op"] == "prefill_step")  # prefill steps are reported, never fitted
    return dataclasses.replace(fitted, report=error_report(ms, pred, out_of_fit))
