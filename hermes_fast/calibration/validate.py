"""Kernel and whole-step predictions against measured latencies, with and without calibrations.

Measured rows (by default the shipped reference data, :mod:`hermes_fast.calibration.reference`) are predicted
with the same formulas the step cost uses, from each device's catalog entry: uncalibrated defaults or a
calibration. :func:`reference_errors` returns one row per measurement; :func:`error_summary` the median and
90th-percentile absolute relative error per kernel family, device and backend; :func:`validation_table` both side
by side, on the rows each calibration held back from its fit. :func:`step_comparison` does the same for whole
prefill and decode iterations (Splitwise's measured Llama-2-70B steps), predicted from the compiled step cost,
and :func:`fit_host_costs` fits the engine's host costs (per step, per TP rank, per sequence) to the measured
decode steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from ..resolve import Catalog
from .calibration import shipped_calibrations
from .fit import calibrate, holdout_mask
from .measurements import Measurements
from .parameters import HOST_COSTS
from .predict import predict
from .reference import reference_measurements, step_measurements

__all__ = [
    "error_summary",
    "fit_host_costs",
    "reference_errors",
    "step_comparison",
    "validation_table",
]


def fit_host_costs(
    measurements: Measurements | None = None, catalog=None, holdout: float = 0.25, seed: int = 0
) -> dict:
    """Per device: the engine's host costs (``efficiency.step_overhead_s``, ``step_overhead_per_tp_rank_s``,
    ``sequence_overhead_s``) fitted to its measured decode steps, all but a held-back share (``holdout``,
    ``seed``: :func:`~hermes_fast.calibration.fit.holdout_mask`), on top of ``catalog``'s kernels (default: the
    shipped default calibrations).

    Parameters
    ----------
    measurements : Measurements or None, default None
        Step rows (``decode_step``, ``prefill_step``); None: the shipped Splitwise steps
        (:func:`~hermes_fast.calibration.reference.step_measurements`: Llama-2-70B on H100 and A100).
    catalog : Catalog or None, default None
        The kernels' parameters (None: ``Catalog()``, the shipped default calibrations).
    holdout, seed : float, int, default 0.25, 0
        Share of decode steps held back from the fit, and the seed of its stable hash.

    Returns
    -------
    dict of str to Calibration
        Device -> its :class:`~hermes_fast.calibration.calibration.Calibration` (named ``DEVICE+host``: the
        kernels' calibration with the host costs, in seconds, on top; ``report`` has the errors).

    Examples
    --------
    >>> from hermes_fast.calibration.reference import step_measurements
    >>> steps = step_measurements()
    >>> h100 = steps.select((steps["device"] == "h100_sxm") & (steps["op"] == "decode_step"))
    >>> cals = hf.validate.fit_host_costs(h100)
    >>> list(cals), cals["h100_sxm"].name
    (['h100_sxm'], 'h100_sxm+host')
    >>> 0 < cals["h100_sxm"].values["efficiency.step_overhead_s"] < 0.05  # seconds per step
    True
    """
    ms = measurements if measurements is not None else step_measurements()
    cat = catalog if catalog is not None else Catalog()
    out = {}
    for device in sorted(set(ms["device"][ms["op"] == "decode_step"])):
        rows = ms.select(ms["device"] == device)
        name = f"{device}+host"
        out[device] = calibrate(rows, device, catalog=cat, name=name, holdout=holdout, seed=seed)
    return out


def step_comparison(
    measurements: Measurements | None = None, catalog=None, holdout: float = 0.25, seed: int = 0
) -> list[dict]:
    """Whole-step predictions built from the kernels against measured steps, per (family, device, tp).

    ``measurements``: step rows (default :func:`step_measurements`); ``catalog``: the kernels' parameters
    (default: the shipped default calibrations). Rows have the median and 90th-percentile absolute relative
    error, the median signed error, and ``median_gap_s``: the median of measured - predicted (on decode steps,
    whose kernels the prediction covers, the host work the measured stack adds to them: scheduling, sampling,
    launches, Python). ``host_median`` and ``host_p90`` are the errors with the host costs of
    :func:`fit_host_costs` (``holdout``, ``seed``) on the ``rows_held`` rows out of that fit: the held-back
    decode steps and every prefill step (NaN where a setting has none). The device's host costs after the fit
    are in the ``step_overhead_s``, ``step_overhead_per_tp_rank_s`` and ``sequence_overhead_s`` columns.

    Parameters
    ----------
    measurements : Measurements or None, default None
        Step rows (``decode_step``, ``prefill_step``); None: the shipped Splitwise steps.
    catalog : Catalog or None, default None
        The kernels' parameters (None: ``Catalog()``, the shipped default calibrations).
    holdout, seed : float, int, default 0.25, 0
        As in :func:`fit_host_costs`.

    Returns
    -------
    list of dict
        One row per (family, device, tp), sorted: ``family``, ``device``, ``tp``, ``rows``,
        ``uncalibrated_median``, ``calibrated_median``, ``calibrated_p90``, ``calibrated_signed`` (relative
        errors), ``median_gap_s`` (seconds), ``rows_held``, ``host_median``, ``host_p90`` and the host costs
        (seconds).

    Examples
    --------
    >>> from hermes_fast.calibration.reference import step_measurements
    >>> steps = step_measurements()
    >>> h100 = steps.select((steps["device"] == "h100_sxm") & (steps["op"] == "decode_step"))
    >>> rows = hf.validate.step_comparison(h100)
    >>> [(r["family"], r["tp"]) for r in rows]
    [('decode_step', 2), ('decode_step', 4), ('decode_step', 8)]
    >>> all(r["host_median"] < r["calibrated_median"] for r in rows)  # the host costs close the gap
    True
    """
    ms = measurements if measurements is not None else step_measurements()
    cat = catalog if catalog is not None else Catalog()
    fam, dev, tp, meas = ms.family, ms["device"], ms["tp"], ms["latency_s"]
    uncalibrated = predict(ms, catalog=Catalog(calibration="none"))
    calibrated = predict(ms, catalog=cat)
    hosted = np.full(len(ms), np.nan)
    out_of_fit = holdout_mask(ms, holdout, seed) | (fam == "prefill_step")
    costs = {}
    for device, cal in fit_host_costs(ms, cat, holdout, seed).items():
        s = dev == device
        hosted[s] = predict(ms.select(s), catalog=cat, calibration=cal)
        eff = cal.apply(cat.device(device)).efficiency
        names = (c.removeprefix("efficiency.") for c in HOST_COSTS)
        costs[device] = {name: getattr(eff, name) for name in names}
    out = []
    for f, d, t in sorted(set(zip(fam, dev, tp, strict=True))):
        s = (fam == f) & (dev == d) & (tp == t)
        rel = calibrated[s] / meas[s] - 1.0
        h = s & out_of_fit & np.isfinite(hosted)
        host_err = np.abs(hosted[h] / meas[h] - 1.0)
        out.append(
            {
                "family": f,
                "device": d,
                "tp": int(t),
                "rows": int(s.sum()),
                "uncalibrated_median": float(np.median(np.abs(uncalibrated[s] / meas[s] - 1.0))),
                "calibrated_median": float(np.median(np.abs(rel))),
                "calibrated_p90": float(np.quantile(np.abs(rel), 0.9)),
                "calibrated_signed": float(np.median(rel)),
                "median_gap_s": float(np.median(meas[s] - calibrated[s])),
                "rows_held": int(h.sum()),
                "host_median": float(np.median(host_err)) if h.any() else float("nan"),
                "host_p90": float(np.quantile(host_err, 0.9)) if h.any() else float("nan"),
                **costs.get(d, {}),
            }
        )
    return out


def reference_errors(catalog=None, calibration="none", measurements: Measurements | None = None) -> xr.Dataset:
    """Predicted vs measured latency for every shipped reference row (or every row of ``measurements``, e.g.
    from :func:`hermes_fast.calibration.measure.measure`), on dim ``row``.

    ``calibration``: ``"none"`` (uncalibrated defaults, the default here), ``"default"`` (the shipped
    default calibrations) or anything :class:`~hermes_fast.resolve.Catalog` takes. Variables: ``family``
    (gemm, context_attention, generation_attention, collective, layer_linear), ``device`` (catalog name),
    ``backend``, ``source`` (``aiconfigurator/trtllm/bf16``-style), ``measured_s``, ``predicted_s``,
    ``relative_error`` ((predicted - measured) / measured).

    Parameters
    ----------
    catalog : Catalog or None, default None
        Where the devices are resolved; None: ``Catalog(calibration=calibration)``.
    calibration : str, Calibration, pathlib.Path or list, default "none"
        Used when ``catalog`` is None (see above).
    measurements : Measurements or None, default None
        Rows to predict; None: the shipped reference rows
        (:func:`~hermes_fast.calibration.reference.reference_measurements`).

    Returns
    -------
    xarray.Dataset
        The variables above on dim ``row`` (latencies in seconds, errors as fractions).

    Examples
    --------
    >>> errors = hf.validate.reference_errors()  # uncalibrated defaults
    >>> sorted(set(errors.device.values.tolist()))
    ['a100_sxm_80gb', 'h100_sxm', 'h200_sxm']
    >>> errors.measured_s.attrs["units"], bool((errors.predicted_s > 0).all())
    ('s', True)
    """
    ms = measurements if measurements is not None else reference_measurements()
    cat = catalog or Catalog(calibration=calibration)
    predicted = predict(ms, catalog=cat)
    return _errors_dataset(ms, predicted)


def _source_label(ms: Measurements) -> np.ndarray:
    out = []
    for op, backend, dt in zip(ms["op"], ms["backend"], ms["dtype"], strict=True):
        stack = backend.split("-")[0]
        if stack == "torch":  # hermes-fast measure
            out.append(f"torch/{op}")
        elif op == "gemm":
            out.append(f"aiconfigurator/{stack}/{dt}")
        elif stack == "vidur":
            out.append(f"vidur/{op}")
        elif stack == "nccl":
            out.append(f"nccl/{op}")
        else:
            out.append(f"aiconfigurator/{stack}")
    return np.array(out)


def _errors_dataset(ms: Measurements, predicted: np.ndarray) -> xr.Dataset:
    measured = ms["latency_s"]
    return xr.Dataset(
        {
            "family": ("row", ms.family.astype(str)),
            "device": ("row", ms["device"].astype(str)),
            "backend": ("row", ms["backend"].astype(str)),
            "source": ("row", _source_label(ms)),
            "measured_s": ("row", measured, {"units": "s", "long_name": "measured latency"}),
            "predicted_s": ("row", predicted, {"units": "s", "long_name": "predicted latency"}),
            "relative_error": (
                "row",
                (predicted - measured) / measured,
                {"units": "1", "long_name": "(predicted - measured) / measured"},
            ),
        }
    )


def error_summary(errors: xr.Dataset, by_backend: bool = False) -> list[dict]:
    """Median and 90th-percentile absolute relative error per (family, device[, backend]), plus the signed
    median.

    Parameters
    ----------
    errors : xarray.Dataset
        What :func:`reference_errors` returns.
    by_backend : bool, default False
        Also split by software stack (the ``backend`` up to its first ``-``: trtllm, vllm, nccl, vidur...).

    Returns
    -------
    list of dict
        One row per group, sorted: ``family``, ``device`` (and ``backend``), ``rows``, ``median_abs_error``,
        ``p90_abs_error``, ``median_signed_error`` (fractions of the measured latency).

    Examples
    --------
    >>> summary = hf.validate.error_summary(hf.validate.reference_errors())
    >>> gemm = next(r for r in summary if r["family"] == "gemm" and r["device"] == "h100_sxm")
    >>> gemm["rows"], gemm["median_abs_error"] < 0.15  # the stated accuracy of the uncalibrated defaults
    (972, True)
    """
    out = []
    fam = errors.family.values
    dev = errors.device.values
    stack = np.array([b.split("-")[0] for b in errors.backend.values]) if by_backend else np.full(fam.shape, "")
    rel = errors.relative_error.values
    for f, d, b in sorted(set(zip(fam, dev, stack, strict=True))):
        sel = (fam == f) & (dev == d) & (stack == b)
        a = np.abs(rel[sel])
        row = {"family": f, "device": d}
        if by_backend:
            row["backend"] = b
        row.update(
            {
                "rows": int(sel.sum()),
                "median_abs_error": float(np.median(a)),
                "p90_abs_error": float(np.quantile(a, 0.9)),
                "median_signed_error": float(np.median(rel[sel])),
            }
        )
        out.append(row)
    return out


def validation_table(calibrations=None, measurements: Measurements | None = None) -> list[dict]:
    """Uncalibrated and calibrated errors per (family, device, backend), on the rows held back from each fit.

    ``calibrations``: the calibrations to check (default: every shipped one); each is compared on the rows of
    its device whose backend it was fitted to (its ``source`` lists the stacks), held back by its own
    hold-out rule; given ``measurements`` (e.g. measured prefill/decode steps), all their rows of the device.
    Returns rows with ``rows_held``, ``default_median``, ``default_p90``, ``calibrated_median``,
    ``calibrated_p90``, ``analytic_median`` and ``analytic_p90`` (the calibration without its attention residual
    surfaces: the fitted analytical model alone) and the calibration's name.

    Parameters
    ----------
    calibrations : iterable of Calibration or None, default None
        The calibrations to check; None: every shipped one.
    measurements : Measurements or None, default None
        Rows to compare on (all of each calibration's device); None: the shipped reference rows each
        calibration held back.

    Returns
    -------
    list of dict
        One row per (calibration, family, backend), with ``family``, ``device``, ``backend``,
        ``calibration`` and the errors above (fractions of the measured latency).

    Examples
    --------
    >>> rows = hf.validate.validation_table([hf.load_calibration("h100_sxm")])
    >>> sorted(r["family"] for r in rows)
    ['collective', 'context_attention', 'gemm', 'gemm_fp8_block', 'generation_attention', 'layer_linear']
    >>> all(r["calibrated_median"] < r["default_median"] for r in rows)  # on rows the fit never saw
    True
    """
    own = measurements is not None  # the user's rows were in no fit: compare them all
    ms = measurements if own else reference_measurements()
    cals = list(shipped_calibrations().values()) if calibrations is None else list(calibrations)
    plain = Catalog(calibration="none")
    default_pred = predict(ms, catalog=plain)
    stacks = np.array([b.split("-")[0] for b in ms["backend"]])
    fam = ms.family
    meas = ms["latency_s"]
    out = []
    for cal in cals:
        sel_dev = ms["device"] == cal.device
        if not own:
            sel_dev &= fitted_rows(cal.source, stacks, fam)
        if not sel_dev.any():
            continue
        held = sel_dev if own else holdout_mask(ms, cal.holdout, cal.seed) & sel_dev
        cal_pred = predict(ms.select(held), catalog=plain, calibration=cal)
        analytic_pred = cal_pred  # the fitted parameters alone: without the attention surfaces, if any
        if cal.attention_residuals:
            analytic = dataclasses.replace(cal, attention_residuals=())
            analytic_pred = predict(ms.select(held), catalog=plain, calibration=analytic)
        sub_fam, sub_stack, sub_meas = fam[held], stacks[held], meas[held]
        sub_default = default_pred[held]
        for f, b in sorted(set(zip(sub_fam, sub_stack, strict=True))):
            s = (sub_fam == f) & (sub_stack == b)
            d_err = np.abs(sub_default[s] / sub_meas[s] - 1.0)
            c_err = np.abs(cal_pred[s] / sub_meas[s] - 1.0)
            a_err = np.abs(analytic_pred[s] / sub_meas[s] - 1.0)
            out.append(
                {
                    "family": f,
                    "device": cal.device,
                    "backend": b,
                    "calibration": cal.name,
                    "rows_held": int(s.sum()),
                    "default_median": float(np.median(d_err)),
                    "default_p90": float(np.quantile(d_err, 0.9)),
                    "analytic_median": float(np.median(a_err)),
                    "analytic_p90": float(np.quantile(a_err, 0.9)),
                    "calibrated_median": float(np.median(c_err)),
                    "calibrated_p90": float(np.quantile(c_err, 0.9)),
                }
            )
    return out


def fitted_rows(source: str, stacks: np.ndarray, fam: np.ndarray) -> np.ndarray:
    """Rows of the stacks a calibration was fitted to: its source ends ``fitted to trtllm, nccl,
    vidur/layer_linear`` (a ``stack/family`` item limits that stack to one family)."""
    if "fitted to" not in source:
        return np.ones(len(stacks), dtype=bool)
    keep = np.zeros(len(stacks), dtype=bool)
    for item in source.split("fitted to")[-1].split(","):
        stack, _, family = item.strip().partition("/")
        keep |= (stacks == stack) & ((fam == family) if family else True)
    return keep
