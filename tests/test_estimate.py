"""hf.estimate: Dataset structure, registered attrs, consistency with the kernels, grid semantics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.kernels import decode_step_time, prefill_time
from hermes_fast.variables import VARIABLES

ONE_8B = {"engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm"}], "workload": {"batch_size": 8}}


@pytest.fixture(scope="module")
def default_ds():
    return hf.estimate()


def test_default_scenario_has_registered_finite_variables(default_ds):
    ds = default_ds
    assert list(ds.engine.values) == ["llama8b-h100", "llama70b-h100-tp4"]
    for name, var in ds.data_vars.items():
        assert name in VARIABLES
        assert var.attrs["units"] == VARIABLES[name].units
        assert var.attrs["long_name"]
        if np.issubdtype(var.dtype, np.floating):
            assert np.isfinite(var.values).all(), name
    assert bool(ds.fits.all())


def test_latency_identities(default_ds):
    ds = default_ds
    wl = hf.load_scenario(None).workload
    np.testing.assert_allclose(ds.e2e_s, ds.ttft_s + (wl.output_tokens - 1) * ds.tpot_s, rtol=1e-14)
    np.testing.assert_allclose(ds.throughput_token_per_s, wl.batch_size * wl.output_tokens / ds.e2e_s, rtol=1e-14)
    np.testing.assert_allclose(ds.decode_throughput_token_per_s, wl.batch_size / ds.tpot_s, rtol=1e-14)
    np.testing.assert_allclose(ds.ttft_s, ds.prefill_time_s)


def test_estimate_equals_kernels(build):
    ds = hf.estimate(ONE_8B, grid={"batch_size": [1, 32], "context_tokens": [512, 4096]}, calibration="none")
    p = build("llama-3.1-8b").params
    for b in (1, 32):
        assert ds.prefill_time_s.sel(batch_size=b, context_tokens=512).item() == pytest.approx(
            prefill_time.jit(p, float(b), 1024.0, 0.0), rel=1e-14
        )
        for c in (512, 4096):
            got = ds.decode_step_time_s.sel(batch_size=b, context_tokens=c).item()
            assert got == pytest.approx(decode_step_time.jit(p, float(b), float(c)), rel=1e-14)
        # TPOT is the decode step at the mean context, prompt + output / 2
        assert ds.tpot_s.sel(batch_size=b, context_tokens=512).item() == pytest.approx(
            decode_step_time.jit(p, float(b), 1024.0 + 128.0), rel=1e-14
        )


def test_grid_dims_coords_and_config_level_variables():
    grid = {"tp": [1, 2, 4], "batch_size": [1, 16], "dtype": ["bf16", "fp8"]}
    ds = hf.estimate(ONE_8B, grid=grid)
    assert ds.tpot_s.dims == ("engine", "tp", "batch_size", "dtype")
    assert ds.tpot_s.shape == (1, 3, 2, 2)
    assert ds.weights_bytes.dims == ("engine", "tp", "dtype")
    assert list(ds.dtype.values) == ["bf16", "fp8"]
    w = ds.weights_bytes.sel(engine="e")
    np.testing.assert_allclose(w.sel(dtype="fp8"), 0.5 * w.sel(dtype="bf16"), rtol=1e-12)
    assert (ds.devices.sel(engine="e", dtype="bf16").values == [1, 2, 4]).all()


def test_monotonic_in_batch_context_and_tp():
    ds = hf.estimate(
        ONE_8B, grid={"batch_size": [1, 8, 64, 256], "context_tokens": [256, 2048, 16384], "tp": [1, 2, 4]}
    )
    t = ds.decode_step_time_s.sel(engine="e")
    assert (t.diff("batch_size") > 0).all()
    assert (t.diff("context_tokens") > 0).all()
    assert (t.sel(batch_size=1).diff("tp") < 0).all()  # memory-bound decode gets faster with TP
    # bigger batches buy throughput
    thr = ds.decode_throughput_token_per_s.sel(engine="e", context_tokens=2048, tp=1)
    assert (thr.diff("batch_size") > 0).all()


def test_fits_in_grid_and_capacity():
    sc = {"engines": [{"name": "big", "model": "llama-3.1-405b", "device": "h100_sxm"}]}
    ds = hf.estimate(sc, grid={"device": ["h100_sxm", "h200_sxm"], "tp": [1, 8]})
    fits = ds.fits.sel(engine="big")
    assert not fits.sel(tp=1).any()
    assert not bool(fits.sel(device="h100_sxm", tp=8))  # 810 GB of bf16 weights / 8 = 101 GB > 80 GB
    assert bool(fits.sel(device="h200_sxm", tp=8))
    assert (ds.kv_capacity_token >= 0).all()
    assert ds.kv_capacity_token.sel(engine="big", device="h100_sxm", tp=1).item() == 0
    # an invalid layout in a grid is reported, not raised
    ds = hf.estimate(ONE_8B, grid={"tp": [1, 3]})
    assert ds.fits.sel(engine="e", tp=1).item()
    assert not ds.fits.sel(engine="e", tp=3).item()  # 32 heads do not split 3 ways


def test_max_batch_size_is_consistent_with_fits():
    ds = hf.estimate(ONE_8B, grid={"batch_size": [1, 100, 10_000]})
    mb = ds.max_batch_size.sel(engine="e", batch_size=1).item()
    assert mb == ds.kv_capacity_token.sel(engine="e").item() // (1024 + 256)
    assert ds.fits.sel(engine="e").values.tolist() == [True, True, False]


def test_pipeline_micro_batching(build):
    sc = {"engines": [{"name": "pp", "model": "llama-3.1-70b", "device": "h100_sxm", "parallel": {"tp": 4, "pp": 2}}]}
    ds = hf.estimate(sc, grid={"batch_size": [1, 64], "context_tokens": [2048]}, calibration="none")
    p = build("llama-3.1-70b", tp=4, pp=2).params
    # one request: a single micro-batch traverses both stages
    assert ds.decode_step_time_s.sel(batch_size=1).item() == pytest.approx(decode_step_time.jit(p, 1.0, 2048.0))
    # 64 requests: two micro-batches of 32; each waits for the other at every stage, so
    # the iteration takes max(traversal(32), 2 x stage(32)) -- no faster than one traversal of 32
    t64 = ds.decode_step_time_s.sel(batch_size=64).item()
    assert t64 >= decode_step_time.jit(p, 32.0, 2048.0) * (1 - 1e-12)
    assert t64 < decode_step_time.jit(p, 64.0, 2048.0)


def test_deterministic_and_netcdf_round_trip(tmp_path):
    a = hf.estimate(ONE_8B, grid={"batch_size": [1, 4], "device": ["h100_sxm", "a100_sxm_80gb"]})
    b = hf.estimate(ONE_8B, grid={"batch_size": [1, 4], "device": ["h100_sxm", "a100_sxm_80gb"]})
    xr.testing.assert_identical(a, b)
    path = tmp_path / "est.nc"
    a.to_netcdf(path, engine="h5netcdf")
    back = xr.load_dataset(path, engine="h5netcdf")
    for name in a.data_vars:
        np.testing.assert_array_equal(back[name].values, a[name].values)
        assert back[name].attrs["units"] == a[name].attrs["units"]


def test_dtype_without_native_peak_falls_back(catalog):
    # A100 has no FP8 tensor cores: FP8 weights are stored narrow but multiplied at the BF16 peak
    sc = {"engines": [{"name": "a", "model": "llama-3.1-8b", "device": "a100_sxm_80gb"}]}
    ds = hf.estimate(sc, grid={"dtype": ["bf16", "fp8"], "batch_size": [1, 512]})
    w = ds.weights_bytes.sel(engine="a")
    assert w.sel(dtype="fp8").item() == pytest.approx(0.5 * w.sel(dtype="bf16").item())
    assert catalog.device("a100_sxm_80gb").peak_flop_per_s.resolve("fp8") == (312.0e12, "bf16")
    d1 = ds.decode_step_time_s.sel(engine="a", batch_size=1)
    assert d1.sel(dtype="fp8").item() < d1.sel(dtype="bf16").item()  # fewer bytes to read


def test_every_preset_pair_estimates_finite():
    decoders = ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v3", "gpt-oss-120b"]
    encoders = ["e5-base", "bge-reranker-large"]
    devices = hf.preset_names("devices")
    sc = {"engines": [{"name": "x", "model": "llama-3.1-8b", "device": "h100_sxm"}]}
    grid = {"model": decoders + encoders, "device": devices, "batch_size": [1, 64], "prompt_tokens": [256]}
    ds = hf.estimate(sc, grid=grid)
    for name in ("prefill_time_s", "ttft_s", "e2e_s", "prefill_throughput_token_per_s"):
        v = ds[name].values
        assert np.isfinite(v).all() and (v > 0).all(), name
    dec = ds.sel(model=decoders)
    for name in ("tpot_s", "decode_step_time_s", "throughput_token_per_s", "max_batch_size"):
        assert np.isfinite(dec[name].values).all() and (dec[name].values >= 0).all(), name
    # encoders generate nothing: decode variables are not applicable (NaN), E2E is the prefill
    enc = ds.sel(model=encoders)
    for name in ("tpot_s", "decode_step_time_s", "throughput_token_per_s", "decode_throughput_token_per_s"):
        assert np.isnan(enc[name].values).all(), name
    assert (enc.bound.values == -1).all()
    np.testing.assert_array_equal(enc.e2e_s.values, enc.ttft_s.values)
    assert enc.fits.sel(device="h100_sxm").all()  # no KV cache needed, 256 <= 512-token context


def test_context_limit_is_enforced():
    sc = {"engines": [{"name": "r", "model": "bge-reranker-base", "device": "h100_sxm"}]}
    ds = hf.estimate(sc, grid={"prompt_tokens": [512, 513]})
    assert ds.fits.sel(engine="r").values.tolist() == [True, False]
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate({**sc, "workload": {"prompt_tokens": 100_000}})
    assert err.value.path == "workload.prompt_tokens" and "512" in err.value.expected


def test_adversarial_grids_stay_finite():
    # invalid layouts (tp above the heads, pp above the layers, ep on a dense model) are costed, not raised
    sc = {"engines": [{"name": "x", "model": "llama-3.1-8b", "device": "h100_sxm"}]}
    ds = hf.estimate(sc, grid={"tp": [1, 3, 64, 128], "pp": [1, 33, 64], "ep": [1, 2], "batch_size": [1, 10**6]})
    for name in ("prefill_time_s", "tpot_s", "e2e_s", "weights_bytes", "kv_capacity_token"):
        assert np.isfinite(ds[name].values).all(), name
    assert not ds.fits.sel(tp=3).any() and not ds.fits.sel(pp=64).any() and not ds.fits.sel(ep=2).any()
    # an MoE model whose tokens use every expert
    sc = {
        "models": {"dense-moe": {"base": "mixtral-8x7b", "moe": {"n_experts": 2, "top_k": 2}}},
        "engines": [{"name": "m", "model": "dense-moe", "device": "h200_sxm"}],
    }
    ds = hf.estimate(sc, grid={"batch_size": [1, 64]})
    assert np.isfinite(ds.tpot_s.values).all()


def test_grid_limits():
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate(ONE_8B, grid={"tp": list(range(1, 1001)), "pp": list(range(1, 201))})
    assert err.value.path == "grid" and "engine combinations" in str(err.value.value)
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate(ONE_8B, grid={"batch_size": list(range(1, 10_001)), "prompt_tokens": list(range(1, 10_001))})
    assert err.value.path == "grid" and "points" in str(err.value.value)
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate(ONE_8B, grid={"tp": [2**63]})
    assert err.value.path == "grid.tp[0]"
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate(ONE_8B, grid={"dtype": ["fp8"], "weight_dtype": ["fp4"]})
    assert err.value.path == "grid.dtype"
