"""Attention residual surfaces: the fit, the kernels' interpolation, their axes from a batch's totals, calibrate's
use of them, their file form and their errors."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from hermes_fast.calibration.calibration import Calibration, load_calibration, shipped_calibrations
from hermes_fast.calibration.fit import calibrate
from hermes_fast.calibration.measurements import read_measurements
from hermes_fast.calibration.predict import predict
from hermes_fast.calibration.reference import step_measurements
from hermes_fast.calibration.residuals import evaluate, fit_residual
from hermes_fast.compile import compile_engine, pack_residual
from hermes_fast.config import AttentionResidual, ConfigError, Dtypes, Parallel
from hermes_fast.config.efficiency import ATTENTION_RESIDUAL_AXIS_NODES, ATTENTION_RESIDUAL_NODES
from hermes_fast.kernels import layout as L
from hermes_fast.kernels.step import _attention_layer, causal_pairs, prefill_residual, residual_factor
from hermes_fast.resolve import Catalog

SURFACE = AttentionResidual(
    kernel="decode",
    compute_bytes=2.0,
    kv_bytes=2.0,
    log2_x0=0.0,
    log2_y0=7.0,
    log2_step=1.0,
    log_ratio=((0.2, -0.1, 0.0), (0.3, 0.1, -0.2)),
)


@pytest.fixture(scope="module")
def plain():
    return Catalog(calibration="none")


def test_layout_holds_the_largest_surface():
    assert (L.RESIDUAL_NODES, L.RESIDUAL_AXIS_NODES) == (ATTENTION_RESIDUAL_NODES, ATTENTION_RESIDUAL_AXIS_NODES)


def test_interpolation_is_bilinear_between_octave_nodes_and_held_at_the_edges():
    ratio = np.exp(np.array(SURFACE.log_ratio))
    # at the nodes (x = 1, 2; y = 128, 256, 512): the node values
    for i, j in itertools.product(range(2), range(3)):
        assert evaluate(SURFACE, 2.0**i, 2.0 ** (7 + j)) == pytest.approx(ratio[i, j], rel=1e-14)
    # halfway between four nodes (linear in x and y): their mean; a quarter of the way along x, between two
    mid = ratio[0, 1] + ratio[0, 2] + ratio[1, 1] + ratio[1, 2]
    assert evaluate(SURFACE, 1.5, 384.0) == pytest.approx(mid / 4.0, rel=1e-14)
    assert evaluate(SURFACE, 1.25, 128.0) == pytest.approx(0.75 * ratio[0, 0] + 0.25 * ratio[1, 0], rel=1e-14)
    # beyond the grid: the nearest edge's value
    assert evaluate(SURFACE, 1e-3, 1.0) == pytest.approx(ratio[0, 0], rel=1e-14)
    assert evaluate(SURFACE, 1e6, 1e9) == pytest.approx(ratio[1, 2], rel=1e-14)
    assert evaluate(None, 5.0, 100.0) == 1.0
    # the compiled kernel gives the same numbers
    p = np.zeros(L.RES_SIZE)
    pack_residual(SURFACE, p, 0)
    for x, y in ((1.3, 200.0), (7.0, 90.0), (3.0, 1e5)):
        assert residual_factor.jit(p, 0, x, y) == evaluate(SURFACE, x, y)
    # one node along an axis: constant along it
    line = dataclasses.replace(SURFACE, log_ratio=((0.1, 0.4),))
    assert evaluate(line, 64.0, 192.0) == pytest.approx((math.exp(0.1) + math.exp(0.4)) / 2.0, rel=1e-14)


def test_fit_recovers_a_plane_and_rejects_noise():
    rng = np.random.default_rng(3)
    lx = rng.uniform(0.0, 8.0, 60)
    ly = rng.uniform(7.0, 13.0, 60)
    truth = 0.05 * lx - 0.03 * ly + 0.2  # no curvature: smoothing leaves it (the ridge pulls ~1% towards 0)
    r = fit_residual("decode", 2.0, 1.0, 2.0**lx, 2.0**ly, truth)
    assert (r.kernel, r.compute_bytes, r.kv_bytes, r.log2_step) == ("decode", 2.0, 1.0, 1.0)
    assert (r.log2_x0, r.log2_y0) == (0.0, 7.0)
    tx, ty = rng.uniform(0.5, 7.5, 20), rng.uniform(7.5, 12.5, 20)
    got = np.log(evaluate(r, 2.0**tx, 2.0**ty))
    np.testing.assert_allclose(got, 0.05 * tx - 0.03 * ty + 0.2, atol=0.01)
    # residuals without structure: no surface beats none on leave-one-out error
    assert fit_residual("decode", 2.0, 1.0, 2.0**lx, 2.0**ly, rng.normal(0.0, 0.05, 60)) is None
    assert fit_residual("decode", 2.0, 1.0, 2.0 ** lx[:5], 2.0 ** ly[:5], truth[:5]) is None  # too few rows


def test_wide_rows_get_a_coarser_grid():
    x = np.array([1.0, 2.0**40, 1.0, 2.0**40, 2.0**20, 2.0**10, 2.0**30])
    y = np.array([1.0, 1.0, 2.0**30, 2.0**30, 2.0**15, 2.0**5, 2.0**25])
    r = fit_residual("prefill", 2.0, 2.0, x, y, 0.01 * np.log2(x) + 0.3)
    nodes = len(r.log_ratio) * len(r.log_ratio[0])
    assert r.log2_step == 4.0 and nodes <= ATTENTION_RESIDUAL_NODES


def test_step_kernel_applies_the_surface_at_the_batch_axes(plain):
    """Decode: (sequences x KV heads, KV per sequence); prefill: (sequences x query heads, prefix + chunk), the
    latter recovered from the totals of equal chunks, with or without a cached prefix."""
    prefill = dataclasses.replace(SURFACE, kernel="prefill", log2_x0=3.0, log2_y0=6.0)
    cal = Calibration("s", "h100_sxm", {}, attention_residuals=(SURFACE, prefill))
    d = cal.apply(plain.device("h100_sxm"))
    none = plain.device("h100_sxm")
    model = plain.model("llama-3.1-8b")  # 32 query heads, 8 KV heads
    p = compile_engine(model, d, Parallel(tp=1), Dtypes()).params
    p0 = compile_engine(model, none, Parallel(tp=1), Dtypes()).params
    assert p[L.RES_DECODE + L.RES_NX] == 2 and p[L.RES_PREFILL + L.RES_NY] == 3 and p0[L.RES_DECODE] == 0.0
    for b, kv in ((1.0, 128.0), (3.0, 700.0), (64.0, 8192.0)):
        with_s = sum(_attention_layer(p, 0.0, 0.0, 0.0, b, b * kv, 0.0))
        without = sum(_attention_layer(p0, 0.0, 0.0, 0.0, b, b * kv, 0.0))
        assert with_s == pytest.approx(without * evaluate(SURFACE, b * 8.0, kv), rel=1e-12)
    for b, q, past in ((1.0, 128.0, 0.0), (4.0, 512.0, 1536.0), (16.0, 37.0, 999.0)):
        pairs, kv = b * causal_pairs(q, past), b * (q + past)
        got = prefill_residual(p, b * q, pairs, kv, 0.0)
        assert got == pytest.approx(evaluate(prefill, b * 32.0, q + past), rel=1e-12)
        with_s = sum(_attention_layer(p, b * q, pairs, kv, 0.0, 0.0, 0.0))
        without = sum(_attention_layer(p0, b * q, pairs, kv, 0.0, 0.0, 0.0))
        assert with_s == pytest.approx(without * evaluate(prefill, b * 32.0, q + past), rel=1e-12)
    # a sliding-window layer: the batch shape from the uncapped totals, its KV per sequence capped at the window
    b, q, window = 2.0, 8192.0, 1024.0
    got = prefill_residual(p, b * q, b * causal_pairs(q, 0.0), b * q, window)
    assert got == pytest.approx(evaluate(prefill, b * 32.0, window), rel=1e-12)
    # other element sizes have no surface: an fp8 KV cache is not corrected; nor is MLA, which runs other kernels
    p8 = compile_engine(model, d, Parallel(tp=1), Dtypes(kv="fp8")).params
    assert p8[L.RES_DECODE + L.RES_NX] == 0.0 and p8[L.RES_PREFILL + L.RES_NX] == 0.0
    mla = compile_engine(plain.model("deepseek-v3"), d, Parallel(tp=8), Dtypes(), check=False).params
    assert mla[L.RES_DECODE + L.RES_NX] == 0.0 and mla[L.RES_PREFILL + L.RES_NX] == 0.0


def _decode_rows(device="h100_sxm"):
    rows = []
    for b, ctx, (h, kv) in itertools.product((1, 2, 4, 8, 16, 32, 64), (128, 512, 2048, 8192), ((32, 8), (8, 1))):
        rows.append(
            {"op": "generation_attention", "device": device, "batch_size": b, "context_tokens": ctx}
            | {"num_heads": h, "num_kv_heads": kv, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}
        )
    return rows


def test_calibrate_fits_a_surface_the_analytical_model_cannot_follow(plain):
    """Decode rows from the analytical model times a bump at 8 to 32 sequences x KV heads (as split-KV heuristics
    make): with surfaces the held-back rows are close, without them they keep the bump's error."""
    rows = _decode_rows()
    base = predict([{**r, "latency_s": 1.0} for r in rows], catalog=plain)
    units = np.array([r["batch_size"] * r["num_kv_heads"] for r in rows], dtype=float)
    bump = np.exp(0.35 * np.exp(-(((np.log2(units) - 4.0) / 1.2) ** 2)))
    ms = read_measurements([{**r, "latency_s": t} for r, t in zip(rows, base * bump, strict=True)])
    fitted = calibrate(ms, "h100_sxm", catalog=plain)
    analytic = calibrate(ms, "h100_sxm", catalog=plain, residuals=False)
    assert analytic.attention_residuals == ()
    (surface,) = fitted.attention_residuals
    assert surface.key() == ("decode", 2.0, 2.0)
    (with_s,) = fitted.report
    (without,) = analytic.report
    assert with_s["held_p90_abs_error"] < 0.06 and without["held_p90_abs_error"] > 0.15
    assert with_s["held_median_abs_error"] < 0.5 * without["held_median_abs_error"]
    # the fit's twin and the file form agree with the surface the step kernel applies
    again = load_calibration(fitted.to_dict())
    assert again == fitted
    np.testing.assert_array_equal(
        predict(ms, catalog=plain, calibration=again), predict(ms, catalog=plain, calibration=fitted)
    )


def test_refitting_attention_drops_the_old_surfaces(plain):
    prefill = dataclasses.replace(SURFACE, kernel="prefill")
    prior = Calibration("prior", "h100_sxm", {}, attention_residuals=(SURFACE, prefill))
    rows = _decode_rows()
    lat = predict([{**r, "latency_s": 1.0} for r in rows], catalog=plain)
    ms = read_measurements([{**r, "latency_s": t} for r, t in zip(rows, lat, strict=True)])
    cal = calibrate(ms, "h100_sxm", catalog=Catalog(calibration=prior))
    # the attention parameters were refitted, so both old surfaces are stale; the model's own decode rows leave
    # at most a negligible new one
    assert SURFACE not in cal.attention_residuals and prefill not in cal.attention_residuals
    assert all(r.kernel == "decode" and np.abs(r.log_ratio).max() < 1e-3 for r in cal.attention_residuals)
    # fixing an attention parameter drops them too; fitting other rows keeps them
    gemm = read_measurements([{"op": "gemm", "device": "h100_sxm", "dtype": "bf16", "m": m, "n": 4096, "k": 4096,
                               "latency_s": 1e-5 * m} for m in (1, 64, 512, 4096)])  # fmt: skip
    kept = calibrate(gemm, "h100_sxm", catalog=Catalog(calibration=prior), holdout=0.0)
    assert kept.attention_residuals == (SURFACE, prefill)
    fixed = calibrate(gemm, "h100_sxm", catalog=Catalog(calibration=prior), holdout=0.0,
                      fix={"efficiency.attention_overhead_s": 1e-5})  # fmt: skip
    assert fixed.attention_residuals == ()


def test_host_cost_fit_keeps_the_shipped_surfaces():
    ms = step_measurements()
    ms = ms.select((ms["device"] == "h100_sxm") & (ms["op"] == "decode_step"))
    cal = calibrate(ms, "h100_sxm", catalog=Catalog())
    shipped = shipped_calibrations()["h100_sxm"].attention_residuals
    assert shipped and cal.attention_residuals == shipped


@pytest.mark.parametrize(
    "surfaces, where, expected",
    [
        ([{**SURFACE.__dict__, "log_ratio": [[0.1, 0.2], [0.3]]}], "attention_residuals[0].log_ratio[1]", "2 values"),
        ([{**SURFACE.__dict__, "log_ratio": [[9.0]]}], "attention_residuals[0].log_ratio[0][0]", "<= 5"),
        ([{**SURFACE.__dict__, "kernel": "decoder"}], "attention_residuals[0].kernel", "one of"),
        ([{**SURFACE.__dict__, "log_ratio": [[0.0] * 17] * 16}], "attention_residuals[0].log_ratio", "at most 256"),
        ([{**SURFACE.__dict__, "log_ratio": [[0.0] * 65]}], "attention_residuals[0].log_ratio", "64 along an axis"),
        ([SURFACE.__dict__, SURFACE.__dict__], "attention_residuals[1]", "one surface per"),
        ("flat", "attention_residuals", "a list"),
    ],
)
def test_bad_surfaces_name_the_field(surfaces, where, expected):
    data = {"name": "x", "device": "h100_sxm", "values": {}, "attention_residuals": surfaces}
    with pytest.raises(ConfigError) as err:
        load_calibration(data)
    assert err.value.path == f"calibration.{where}"
    assert expected in err.value.expected
