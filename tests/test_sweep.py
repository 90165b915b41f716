"""Sweeps: dotted paths, product and zipped axes, seeds independent of chunking, bad input, the zarr store
with resume after a crash, and equality of the serial, threaded and dask executions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.config import ConfigError

sw = importlib.import_module("hermes_fast.sweep")  # the package (hf.sweep is the function)
points = importlib.import_module("hermes_fast.sweep.points")  # run_point: what the tests count and crash
sweep_plan = importlib.import_module("hermes_fast.sweep.plan")
_REAL_RUN_POINT = points.run_point
N = 300  # requests per point: enough to exercise queueing, cheap enough for many points


def base(rate=20.0):
    """Llama-3.1-8B on one H100 plus an unused second engine (for serving and disaggregation axes)."""
    return {
        "name": "sweep-test",
        "engines": [
            {"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm", "batching": {"max_batch_size": 64}},
            {"name": "other", "model": "llama-3.1-8b", "device": "h100_sxm", "replicas": 2},
        ],
        "workload": {
            "rate_per_s": rate,
            "classes": [
                {
                    "prompt_tokens": {"dist": "lognormal", "mean": 400, "cv": 0.5, "max": 2000},
                    "output_tokens": {"dist": "lognormal", "mean": 100, "cv": 0.5, "max": 800},
                }
            ],
        },
        "serving": {"engine": "main", "slo": {"ttft_s": 0.2, "tpot_s": 0.02}},
    }


GRID = {
    "workload.rate_per_s": [5.0, 20.0, 40.0],
    "policy": {"engines.main.batching.policy": ["continuous", "chunked"], "engines[0].replicas": [1, 2]},
}


@pytest.fixture(scope="module")
def serial():
    return hf.sweep(base(), GRID, n_requests=N, replicates=2, seed=7)


# --- paths ----------------------------------------------------------------------------------------------


def test_parse_path_forms():
    assert sw.parse_path("engines.decode.parallel.tp") == ["engines", "decode", "parallel", "tp"]
    assert sw.parse_path("workload.classes[0].pipeline[2].engine") == [
        "workload", "classes", 0, "pipeline", 2, "engine"
    ]  # fmt: skip
    assert sw.parse_path("models[llama-3.1-8b].n_layers") == ["models", "llama-3.1-8b", "n_layers"]
    assert sw.parse_path("engines.1.replicas") == ["engines", 1, "replicas"]
    for bad in ("", "a..b", ".a", "a.", "a[]", "a[0]b"):
        with pytest.raises(ConfigError):
            sw.parse_path(bad)


def test_apply_settings_by_name_index_and_new_keys():
    b = base()
    out = sw.apply_settings(
        b,
        [
            ("engines.other.parallel.tp", 2),  # creates the missing `parallel` mapping
            ("engines[0].batching.policy", "chunked"),
            ("workload.classes[0].output_tokens.mean", 50),
            ("devices[h100_sxm].price_usd_per_hour", 1.5),  # a preset override, created
            ("serving.slo.ttft_s", 1.0),
        ],
    )
    assert out["engines"][1]["parallel"] == {"tp": 2}
    assert out["engines"][0]["batching"] == {"max_batch_size": 64, "policy": "chunked"}
    assert out["workload"]["classes"][0]["output_tokens"]["mean"] == 50
    assert out["devices"] == {"h100_sxm": {"price_usd_per_hour": 1.5}}
    assert out["serving"]["slo"] == {"ttft_s": 1.0, "tpot_s": 0.02}
    assert b["engines"][1].get("parallel") is None  # the base is not modified
    sc = hf.load_scenario(out)
    assert sc.engines[1].parallel.tp == 2 and hf.Catalog.for_scenario(sc).device("h100_sxm").price_usd_per_hour == 1.5


@pytest.mark.parametrize(
    "grid, path_part, expected_part",
    [
        ({"engines.main.paralel.tp": [1]}, "paralel", "did you mean 'parallel'"),
        ({"engines.nope.replicas": [1]}, "engines.nope.replicas", "an element name"),
        ({"engines[5].replicas": [1]}, "engines[5]", "an index in 0..1"),
        ({"workload.rate_per_s.x": [1]}, "rate_per_s", "it is a value"),
        ({"workload.classes[0].pipeline[0].engine": ["main"]}, "pipeline", "no pipeline list"),
        ({"ax": {"workload.rate_per_s": [1, 2], "serving.slo.ttft_s": [1]}}, "grid.ax.serving.slo.ttft_s", "2 values"),
        ({"workload.rate_per_s": []}, "grid.workload.rate_per_s", "non-empty"),
        ({"workload.rate_per_s": [1, 1]}, "grid.workload.rate_per_s", "distinct"),
        ({"replicate": [1]}, "grid.replicate", "axis name"),
        ({"engines.main": [{}], "engines.main.replicas": [2]}, "engines.main.replicas", "neither is nor contains"),
        ({"ax": {"label": [1, 2]}}, "grid.ax", "at least one dotted path"),
        (["workload.rate_per_s"], "grid", "a mapping"),
    ],
)
def test_bad_grids_raise_config_errors(grid, path_part, expected_part):
    with pytest.raises(ConfigError) as e:
        hf.sweep(base(), grid, n_requests=10)
    assert path_part in e.value.path or path_part in str(e.value)
    assert expected_part in str(e.value)


def test_bad_values_are_caught_by_the_config_loading_before_anything_runs(monkeypatch):
    monkeypatch.setattr(points, "run_point", lambda *a: pytest.fail("nothing may run"))
    with pytest.raises(ConfigError) as e:
        hf.sweep(base(), {"workload.rate_per_s": [1.0, -2.0]}, n_requests=10)
    assert "grid point 1 (workload.rate_per_s=-2.0)" in e.value.path and "workload.rate_per_s" in e.value.path
    assert e.value.value == -2.0 and "> 0" in e.value.expected
    with pytest.raises(ConfigError, match="a divisor of tp"):  # a combination the schema rejects
        hf.sweep(base(), {"engines.main.parallel.tp": [1, 2], "engines.main.parallel.ep": [2]}, n_requests=10)
    with pytest.raises(ConfigError, match="one of 'static', 'continuous'"):
        hf.sweep(base(), {"engines.main.batching.policy": ["fifo"]}, n_requests=10)
    for kwargs, name in (
        ({"n_requests": 0}, "n_requests"),
        ({"replicates": 1.5}, "replicates"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "workers"),
        ({"chunk_size": 0}, "chunk_size"),
    ):
        with pytest.raises(ConfigError) as e:
            hf.sweep(base(), {"workload.rate_per_s": [1.0]}, **{"n_requests": 10, **kwargs})
        assert e.value.path == name


# --- results --------------------------------------------------------------------------------------------


def test_dims_coords_and_zipped_axes(serial):
    ds = serial
    assert ds.ttft_s.dims == ("workload.rate_per_s", "policy", "replicate", "quantile")
    assert ds.busy_fraction.dims == ("workload.rate_per_s", "policy", "replicate", "pool")
    assert list(ds["policy"].values) == ["continuous/1", "chunked/2"]
    assert list(ds["engines.main.batching.policy"].values) == ["continuous", "chunked"]
    assert list(ds["engines[0].replicas"].values) == [1, 2]
    assert ds.ttft_s.attrs["units"] == "s" and ds.attrs["points"] == 6
    assert int(ds.arrived_requests.sum()) == 6 * 2 * N


def test_each_point_equals_simulate_with_its_global_index(serial):
    """Point i of the C-order grid, replicate r: the same draws and results as simulate(point=i)."""
    for i, (rate, (policy, replicas)) in enumerate(
        [(r, p) for r in GRID["workload.rate_per_s"] for p in [("continuous", 1), ("chunked", 2)]]
    ):
        sc = base(rate)
        sc["engines"][0]["batching"]["policy"] = policy
        sc["engines"][0]["replicas"] = replicas
        ref = hf.simulate(sc, n_requests=N, seed=7, replicates=2, point=i)
        got = serial.isel({"workload.rate_per_s": i // 2, "policy": i % 2})
        for name in ref.data_vars:
            np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=f"{name} at point {i}")


def test_load_changes_results_and_replicates_differ(serial):
    p99 = serial.ttft_s.sel(quantile=0.99, policy="continuous/1").mean("replicate")
    assert float(p99[0]) < float(p99[-1])  # more load, longer waits
    assert not np.array_equal(serial.ttft_mean_s.values[..., 0], serial.ttft_mean_s.values[..., 1])


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_chunking_does_not_change_results(serial, chunk_size):
    ds = hf.sweep(base(), GRID, n_requests=N, replicates=2, seed=7, chunk_size=chunk_size)
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())


def test_union_of_pools_over_colocated_and_disaggregated_points():
    grid = {
        "mode": {
            "serving.engine": ["main", None],
            "serving.prefill_engine": [None, "main"],
            "serving.decode_engine": [None, "other"],
            "label": ["colocated", "1P/2D"],
        }
    }
    ds = hf.sweep(base(5.0), grid, n_requests=200, seed=1)
    assert list(ds.pool.values) == ["main", "other"]
    assert list(ds.pool_role.values) == ["colocated|prefill", "decode"]
    util = ds.busy_fraction.isel(replicate=0)
    assert np.isnan(float(util.sel(mode="colocated", pool="other")))
    assert float(util.sel(mode="1P/2D", pool="other")) > 0
    assert int(ds.completed_requests.sel(mode="1P/2D").sum()) == 200


def test_coordinates_of_mixed_numbers_and_of_non_scalar_values():
    axes = sweep_plan.parse_grid(
        {
            "workload.rate_per_s": [1, 2.5],
            "serving.engine": ["main", "other"],
            "workload.classes[0].output_tokens": [64, {"dist": "uniform", "min": 1, "max": 9}],
            "serving.horizon_s": [None, 10.0],
        },
        base(),
    )
    assert axes[0].labels == (1.0, 2.5) and isinstance(axes[0].labels[0], float)
    assert axes[1].labels == ("main", "other")
    assert axes[2].labels == ("64", '{"dist": "uniform", "max": 9, "min": 1}')
    assert axes[3].labels == ("null", "10.0")


def test_no_grid_is_one_point_equal_to_simulate():
    ds = hf.sweep(base(), None, n_requests=N, seed=3)
    ref = hf.simulate(base(), n_requests=N, seed=3)
    assert ds.ttft_s.dims == ("replicate", "quantile")
    np.testing.assert_array_equal(ds.e2e_s.values, ref.e2e_s.values)


# --- the zarr store: incremental writes and resume --------------------------------------------------------


def _counting(monkeypatch, fail_after=None, crash=KeyboardInterrupt):
    """Count run_point calls; raise (a simulated crash) once ``fail_after`` points have been computed."""
    computed: list[int] = []

    def run(plan, i):
        if fail_after is not None and len(computed) >= fail_after:
            raise crash("simulated crash")
        computed.append(i)
        return _REAL_RUN_POINT(plan, i)

    monkeypatch.setattr(points, "run_point", run)
    return computed


def test_crashed_sweep_resumes_computing_only_what_is_missing(serial, tmp_path, monkeypatch):
    out = tmp_path / "results.zarr"
    args = dict(n_requests=N, replicates=2, seed=7, chunk_size=2, out=out)
    first = _counting(monkeypatch, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        hf.sweep(base(), GRID, **args)
    assert first == [0, 1, 2]  # the crash came during the second chunk: only the first is stored
    partial = hf.open_sweep(out)
    assert partial.attrs["points_done"] == 2 and partial.computed.values.ravel().tolist() == [1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(partial.ttft_s.values[0, 0], serial.ttft_s.values[0, 0])
    assert np.isnan(partial.ttft_s.values[2, 1]).all()

    second = _counting(monkeypatch)
    ds = hf.sweep(base(), GRID, **args)
    assert second == [2, 3, 4, 5]  # no point computed twice
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())
    xr.testing.assert_identical(hf.open_sweep(out).drop_attrs(), serial.drop_attrs())

    third = _counting(monkeypatch)  # complete: nothing left to do, whatever the chunk size asked
    again = hf.sweep(base(), GRID, **{**args, "chunk_size": 5})
    assert third == [] and "computed" not in again
    xr.testing.assert_identical(again.drop_attrs(), serial.drop_attrs())


def test_a_chunk_flag_cut_short_by_a_crash_is_recomputed(tmp_path, monkeypatch):
    out = tmp_path / "r.zarr"
    grid = {"workload.rate_per_s": [5.0, 10.0, 20.0]}
    ref = hf.sweep(base(), grid, n_requests=100, seed=2, chunk_size=1, out=out)
    flags = sorted((out / "_done").rglob("c/*")) or sorted(p for p in (out / "_done").rglob("*") if p.is_file())
    chunk_files = [p for p in flags if p.name != "zarr.json"]
    chunk_files[-1].write_bytes(chunk_files[-1].read_bytes()[:1])  # a truncated write
    computed = _counting(monkeypatch)
    with pytest.warns(sw.StoreWarning, match="point 2: done flag unreadable"):
        ds = hf.sweep(base(), grid, n_requests=100, seed=2, chunk_size=1, out=out)
    assert computed == [2]
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())


def test_store_of_another_sweep_is_refused_unless_overwritten(tmp_path):
    out = tmp_path / "r.zarr"
    hf.sweep(base(), {"workload.rate_per_s": [5.0]}, n_requests=50, seed=1, out=out)
    with pytest.raises(ConfigError) as e:
        hf.sweep(base(), {"workload.rate_per_s": [5.0]}, n_requests=50, seed=2, out=out)
    assert e.value.path == "out" and "overwrite" in e.value.expected
    ds = hf.sweep(base(), {"workload.rate_per_s": [5.0]}, n_requests=50, seed=2, out=out, overwrite=True)
    assert ds.attrs["seed"] == 2 and hf.open_sweep(out).attrs["seed"] == 2
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a store")
    for overwrite in (False, True):  # never deleted: it is not a store
        with pytest.raises(ConfigError, match="neither"):
            hf.sweep(base(), None, n_requests=10, out=tmp_path / "plain", overwrite=overwrite)
    assert (tmp_path / "plain" / "notes.txt").read_text() == "not a store"
    (tmp_path / "empty").mkdir()  # an empty directory is a new store
    assert hf.sweep(base(), None, n_requests=10, out=tmp_path / "empty").attrs["points_done"] == 1
    with pytest.raises(ConfigError, match="sweep store"):
        hf.open_sweep(tmp_path / "missing.zarr")


# --- parallel executions: identical to serial -------------------------------------------------------------


def test_threads_in_process_equal_serial(serial):
    ds = hf.sweep(base(), GRID, n_requests=N, replicates=2, seed=7, workers=2, processes=False, chunk_size=1)
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0", silence_logs=40
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_dask_equals_serial_with_several_chunkings(serial, dask_client, chunk_size, tmp_path):
    out = tmp_path / "d.zarr" if chunk_size == 2 else None
    ds = hf.sweep(
        base(), GRID, n_requests=N, replicates=2, seed=7, scheduler=dask_client, chunk_size=chunk_size, out=out
    )
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())


def test_dask_crash_then_resume(serial, dask_client, tmp_path, monkeypatch):
    out = tmp_path / "r.zarr"
    args = dict(n_requests=N, replicates=2, seed=7, chunk_size=3, out=out)
    calls = _counting(monkeypatch, fail_after=3, crash=RuntimeError)  # threads here: they see the patch
    with pytest.raises(RuntimeError, match="simulated crash"):
        hf.sweep(base(), GRID, scheduler=dask_client, **args)
    assert len(calls) == 3
    done = hf.open_sweep(out).attrs["points_done"]
    assert done in (0, 3)
    resumed = _counting(monkeypatch)
    ds = hf.sweep(base(), GRID, scheduler=dask_client, **args)
    assert len(resumed) == 6 - done and len(set(resumed)) == len(resumed)
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())


def test_unreachable_scheduler_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        hf.sweep(base(), {"workload.rate_per_s": [5.0]}, n_requests=10, scheduler="tcp://127.0.0.1:9", timeout_s=1)
    assert e.value.path == "scheduler" and e.value.value == "tcp://127.0.0.1:9" and "reachable" in e.value.expected


@pytest.mark.slow
def test_local_cluster_of_processes_equals_serial(serial):
    ds = hf.sweep(base(), GRID, n_requests=N, replicates=2, seed=7, workers=2)
    xr.testing.assert_identical(ds.drop_attrs(), serial.drop_attrs())


def test_progress_bar_on_stderr(capsys):
    hf.sweep(base(), {"workload.rate_per_s": [5.0, 10.0]}, n_requests=50, progress=True, chunk_size=1)
    err = capsys.readouterr().err
    assert "validating" in err and "sweep" in err and "2/2" in err
    hf.sweep(base(), {"workload.rate_per_s": [5.0]}, n_requests=50, progress=False)
    assert capsys.readouterr().err == ""
