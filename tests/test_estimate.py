"""hf.estimate: Dataset structure, registered attrs, consistency with the kernels, grid semantics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.kernels import decode_step_time, prefill_time
from hermes_fast.variables import VARIABLES

# the kernels alone (the ideal stack: no CUDA-graph padding, host or front-end costs)
ONE_8B = {
    "engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "ideal"}],
    "workload": {"batch_size": 8},
}


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
    np.testing.assert_allclose(
        ds.throughput_output_token_per_s, wl.batch_size * wl.output_tokens / ds.e2e_s, rtol=1e-14
    )
    np.testing.assert_allclose(ds.decode_throughput_token_per_s, wl.batch_size / ds.tpot_s, rtol=1e-14)
    front_end = hf.Catalog().stack(hf.load_scenario(None).engines[0].stack).frontend_s  # the stack's API server
    np.testing.assert_allclose(ds.ttft_s, ds.prefill_time_s + front_end)


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
    assert (ds.kv_capacity_tokens >= 0).all()
    assert ds.kv_capacity_tokens.sel(engine="big", device="h100_sxm", tp=1).item() == 0
    # an invalid layout in a grid is reported, not raised
    ds = hf.estimate(ONE_8B, grid={"tp": [1, 3]})
    assert ds.fits.sel(engine="e", tp=1).item()
    assert not ds.fits.sel(engine="e", tp=3).item()  # 32 heads do not split 3 ways


def test_max_batch_size_is_consistent_with_fits():
    ds = hf.estimate(ONE_8B, grid={"batch_size": [1, 100, 10_000]})
    mb = ds.max_batch_size.sel(engine="e", batch_size=1).item()
    assert mb == ds.kv_capacity_tokens.sel(engine="e").item() // (1024 + 256)
    assert ds.fits.sel(engine="e").values.tolist() == [True, True, False]


def test_pipeline_micro_batching(build):
    engine = {"name": "pp", "model": "llama-3.1-70b", "device": "h100_sxm", "parallel": {"tp": 4, "pp": 2}}
    sc = {"engines": [{**engine, "stack": "ideal"}]}
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
    for name in ("tpot_s", "decode_step_time_s", "throughput_output_token_per_s", "max_batch_size"):
        assert np.isfinite(dec[name].values).all() and (dec[name].values >= 0).all(), name
    # encoders generate nothing: decode variables are not applicable (NaN), E2E is the prefill
    enc = ds.sel(model=encoders)
    for name in ("tpot_s", "decode_step_time_s", "throughput_output_token_per_s", "decode_throughput_token_per_s"):
        assert np.isnan(enc[name].values).all(), name
    assert (enc.decode_bound.values == -1).all()
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
    for name in ("prefill_time_s", "tpot_s", "e2e_s", "weights_bytes", "kv_capacity_tokens"):
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
    assert err.value.path == "grid.weight_dtype" and "dtype sets it too" in err.value.expected


# --- dotted paths: the grid vocabulary of sweep

TWO = {
    "engines": [
        {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm"},
        {"name": "big", "model": "llama-3.1-70b", "device": "h100_sxm", "parallel": {"tp": 4}},
    ],
    "workload": {"batch_size": 8},
}


def test_dotted_paths_give_the_numbers_of_short_keys():
    short = {
        "device": ["h100_sxm", "h200_sxm"],
        "tp": [1, 2],
        "pp": [1, 2],
        "dtype": ["bf16", "fp8"],
        "kv_dtype": ["bf16", "fp8"],
        "memory_utilization": [0.8, 0.9],
        "batch_size": [1, 4096],
        "prompt_tokens": [512, 4096],
        "output_tokens": [128],
        "context_tokens": [1000, 3000],
    }
    paths = {
        "device": "engines.e.device",
        "tp": "engines.e.parallel.tp",
        "pp": "engines[0].parallel.pp",  # an engine by index
        "kv_dtype": "engines.e.dtypes.kv",
        "memory_utilization": "engines.e.memory_utilization",
        "batch_size": "workload.batch_size",
        "prompt_tokens": "workload.prompt_tokens",
        "output_tokens": "workload.output_tokens",
        "context_tokens": "workload.context_tokens",
    }
    dotted = {paths.get(k, k): v for k, v in short.items()}
    # dtype sets weights and activations together: a zipped axis of the two paths, labelled by the dtype
    dotted["dtype"] = {
        "label": ["bf16", "fp8"],
        "engines.e.dtypes.weight": ["bf16", "fp8"],
        "engines.e.dtypes.activation": ["bf16", "fp8"],
    }
    a = hf.estimate(ONE_8B, grid=short)
    b = hf.estimate(ONE_8B, grid=dotted)
    assert b.tpot_s.dims == ("engine", *(paths.get(k, k) for k in short))
    assert list(b["engines.e.dtypes.weight"].values) == ["bf16", "fp8"]  # the zipped paths: coordinates
    b = b.drop_vars(["engines.e.dtypes.weight", "engines.e.dtypes.activation"]).rename({v: k for k, v in paths.items()})
    xr.testing.assert_identical(a, b)  # bit-identical numbers, attrs and coordinates
    assert a.fits.any() and not a.fits.all()


def test_a_path_naming_one_engine_leaves_the_others():
    ds = hf.estimate(TWO, grid={"engines.e.parallel.tp": [1, 2], "engines.big.device": ["h100_sxm", "h200_sxm"]})
    assert ds.tpot_s.dims == ("engine", "engines.e.parallel.tp", "engines.big.device")
    base = hf.estimate(TWO)
    for name in ("tpot_s", "ttft_s", "kv_capacity_tokens", "decode_bound"):
        e = ds[name].sel(engine="e")
        big = ds[name].sel(engine="big")
        # e does not change with big's device; big not with e's tp (and equals the scenario as given on h100)
        assert (e == e.isel({"engines.big.device": 0})).all(), name
        assert (big == big.isel({"engines.e.parallel.tp": 0})).all(), name
        h100 = big.sel({"engines.big.device": "h100_sxm", "engines.e.parallel.tp": 1}).item()
        assert h100 == base[name].sel(engine="big").item(), name
    one = hf.estimate(TWO, grid={"engine": ["e"], "tp": [2]})
    assert ds.tpot_s.sel({"engine": "e", "engines.e.parallel.tp": 2}).values[0] == one.tpot_s.item()
    h200 = hf.estimate(TWO, grid={"engine": ["big"], "device": ["h200_sxm"]})
    got = ds.tpot_s.sel({"engine": "big", "engines.big.device": "h200_sxm"}).values[0]
    assert got == h200.tpot_s.item()
    # the calibrations of the devices the points use: h100_sxm (e, and big at first), h200_sxm
    both = hf.estimate(TWO, grid={"device": ["h100_sxm", "h200_sxm"]})
    assert ds.attrs["calibration"] == both.attrs["calibration"] and "; h200_sxm: " in both.attrs["calibration"]


def test_zipped_axis_is_the_diagonal_of_its_product():
    zipped = {
        "shape": {
            "label": ["tp1 b1", "tp2 b64"],
            "engines.e.parallel.tp": [1, 2],
            "workload.batch_size": [1, 64],  # engine and workload fields may share an axis
        }
    }
    z = hf.estimate(ONE_8B, grid=zipped)
    assert z.tpot_s.dims == ("engine", "shape")
    assert list(z.shape.values) == ["tp1 b1", "tp2 b64"]
    assert list(z["engines.e.parallel.tp"].values) == [1, 2]
    assert list(z["workload.batch_size"].values) == [1, 64]
    full = hf.estimate(ONE_8B, grid={"tp": [1, 2], "batch_size": [1, 64]})
    for name in ("tpot_s", "e2e_s", "throughput_output_token_per_s", "weights_bytes", "fits"):
        at = full[name].broadcast_like(full.tpot_s)
        diagonal = [at.sel(engine="e", tp=t, batch_size=b).item() for t, b in ((1, 1), (2, 64))]
        assert z[name].sel(engine="e").values.tolist() == diagonal, name


# (grid, path, value, fragment of .expected)
PATH_ERRORS = [
    ({"workload.rate_per_s": [1, 2]}, "grid.workload.rate_per_s", [1, 2], "a field a zero-load estimate depends on"),
    ({"engines.e.batching.policy": ["static"]}, "grid.engines.e.batching.policy", ["static"],
     "engines.<name>.device, .model, .parallel.tp|pp|ep"),
    ({"devices.h100_sxm.memory_bytes": [4e10]}, "grid.devices.h100_sxm.memory_bytes", [4e10],
     "(hf.sweep simulates any field)"),
    ({"engines.e.parallel": [{"tp": 2}]}, "grid.engines.e.parallel", [{"tp": 2}], "a field a zero-load estimate"),
    ({"engines.f.parallel.tp": [1]}, "grid.engines.f.parallel.tp", "f", "an element name of engines: e"),
    ({"engines.e.parallel.tpp": [1]}, "grid.engines.e.parallel.tpp", "tpp", "(did you mean 'tp'?)"),
    ({"engines.e.paralel.tp": [1]}, "grid.engines.e.paralel.tp", "paralel", "a field of Engine at engines.e"),
    ({"engines.e.parallel.tp": [1, 2.5]}, "grid.engines.e.parallel.tp[1]", 2.5, "an integer"),
    ({"engines.e.device": ["h100_sxm", "h100-sxm"]}, "grid.engines.e.device[1]", "h100-sxm", "a known device"),
    ({"workload.batch_size": [1, 1.0]}, "grid.workload.batch_size", [1, 1], "distinct values"),
    ({"tp": [1], "engines.e.parallel.tp": [2]}, "grid.engines.e.parallel.tp", "engines.e.parallel.tp",
     "a field no other grid axis sets (tp sets it too)"),
    ({"x": {"engines.e.dtypes.kv": ["fp8"], "kv_dtype": ["bf16"]}}, "grid.x.kv_dtype", "kv_dtype",
     "(engines.e.dtypes.kv sets it too)"),
    ({"x": {"engines.e.parallel.tp": [1, 2], "engines.e.parallel.pp": [1]}}, "grid.x.engines.e.parallel.pp", [1],
     "a list of 2 values"),
    ({"engine": {"engines.e.parallel.tp": [1]}}, "grid.engine", {"engines.e.parallel.tp": [1]}, "never zipped"),
    ({"batch_size": [1], "x": {"workload.prompt_tokens": [8], "batch_size": [2]}}, "grid.x.batch_size",
     "batch_size", "a field no other grid axis sets"),
    ({"tp": [1], "x": {"engines.e.parallel.pp": [1], "label": ["a"]}, "y": {"tp": [2]}}, "grid.y.tp", "tp",
     "(tp sets it too)"),
    ({"y": {"kv_dtype": ["fp8"], "x": [1]}}, "grid.y.x", [1], "a grid key"),
    ({"workload.batch_size": {"tp": [1, 2], "label": ["a", "b"]}, "y": {"workload.batch_size": [1], "pp": [1]}},
     "grid.y.workload.batch_size", "workload.batch_size", "a path that is not also the name of a grid dim"),
]  # fmt: skip


@pytest.mark.parametrize(("grid", "path", "value", "expected"), PATH_ERRORS)
def test_paths_estimate_cannot_vary_are_config_errors(grid, path, value, expected):
    with pytest.raises(hf.ConfigError) as err:
        hf.estimate(ONE_8B, grid=grid)
    assert err.value.path == path
    assert err.value.value == value
    assert expected in err.value.expected
