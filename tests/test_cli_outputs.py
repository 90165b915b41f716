"""`--out` for run, estimate and capacity: checked before any work (a supported extension, an existing,
writable directory: one error naming the flag), then the Dataset as netCDF, zarr, a tidy CSV table or a JSON
summary; `plot --out` checked against matplotlib's formats."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.cli import main
from hermes_fast.cli.outputs import OUT_FORMATS, dataset_table

simulate_module = importlib.import_module("hermes_fast.simulate")
estimate_module = importlib.import_module("hermes_fast.estimate")
N = 400


@pytest.fixture(scope="module")
def sim():
    return hf.simulate(n_requests=N, seed=2, replicates=2)


def _run(tmp_path, name, capsys):
    out = tmp_path / name
    assert main(["run", "--requests", str(N), "--seed", "2", "--replicates", "2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"
    return out


def test_netcdf_and_zarr_hold_the_dataset(tmp_path, sim, capsys):
    for name, read in (("r.nc", xr.load_dataset), ("r.zarr", lambda p: xr.open_zarr(p).load())):
        got = read(_run(tmp_path, name, capsys))
        xr.testing.assert_identical(got.drop_attrs(), sim.drop_attrs())
        assert got.ttft_s.attrs["units"] == "s" and got.attrs["n_requests"] == N


def test_csv_is_a_tidy_table_with_one_row_per_value(tmp_path, sim, capsys):
    table = pd.read_csv(_run(tmp_path, "r.csv", capsys), keep_default_na=False, na_values=[""])
    assert list(table.columns) == ["variable", "units", "replicate", "quantile", "pool", "reason", "pool_role", "value"]
    assert len(table) == sum(v.size for v in sim.data_vars.values())
    assert list(table.variable.unique()) == list(sim.data_vars)
    p99 = table[(table.variable == "ttft_s") & (table.replicate == 1) & (table["quantile"] == 0.99)]
    assert len(p99) == 1 and p99.value.item() == float(sim.ttft_s.sel(replicate=1, quantile=0.99))  # exact
    assert p99.units.item() == "s" and np.isnan(p99.pool.item())  # a dim the variable lacks: empty
    util = table[table.variable == "busy_fraction"]
    assert util.pool.tolist() == ["llama8b-h100"] * 2 and util.pool_role.tolist() == ["colocated"] * 2
    done = table[table.variable == "completed_requests"].value.tolist()
    assert done == [float(N), float(N)] and (table.variable == "kv_occupancy").sum() == 2


def test_json_is_the_summary_with_units(tmp_path, sim, capsys):
    summary = json.loads(_run(tmp_path, "r.json", capsys).read_text())
    assert summary["title"] == sim.attrs["title"] and summary["dims"]["quantile"] == 4
    ttft = summary["variables"]["ttft_s"]
    assert ttft["units"] == "s" and ttft["dims"] == ["replicate", "quantile"]
    assert ttft["values"] == sim.ttft_s.values.tolist()
    assert summary["coords"]["pool_role"] == {"dims": ["pool"], "values": ["colocated"]}
    assert set(summary["variables"]) == set(sim.data_vars)
    for name, v in summary["variables"].items():
        assert "units" in v, name


def test_json_writes_nan_as_null(tmp_path, capsys):
    out = tmp_path / "e.json"
    p = tmp_path / "enc.yaml"  # an encoder: decode variables are NaN
    p.write_text(
        "engines: [{name: e5, model: e5-base, device: h100_sxm}]\nworkload: {prompt_tokens: 256, output_tokens: 1}\n"
    )
    assert main(["estimate", str(p), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["variables"]["tpot_s"]["values"] == [None]
    assert summary["variables"]["decode_bound"]["flag_meanings"].startswith("not_applicable")


def test_estimate_csv_has_a_column_per_grid_dim(tmp_path, capsys):
    out = tmp_path / "e.csv"
    assert main(["estimate", "--grid", "batch_size=1,8", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["variable", "units", "engine", "batch_size", "value"]
    ref = hf.estimate(grid={"batch_size": [1, 8]})
    row = table[(table.variable == "tpot_s") & (table.engine == "llama8b-h100") & (table.batch_size == 8)]
    assert row.value.item() == float(ref.tpot_s.sel(engine="llama8b-h100", batch_size=8))
    lines = out.read_text().splitlines()
    kv = int(ref.kv_capacity_tokens.sel(engine="llama8b-h100"))
    assert f"kv_capacity_tokens,token,llama8b-h100,,{kv}" in lines  # no batch_size dim: empty; integers as such
    assert "fits,1,llama8b-h100,8,1" in lines  # booleans as 1 and 0
    assert f"tpot_s,s,llama8b-h100,8,{row.value.item()!r}" in lines


@pytest.mark.parametrize("command", [["run"], ["estimate"], ["capacity", "--ttft-p99", "1s"]], ids=lambda c: c[0])
def test_out_is_checked_before_any_work(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(simulate_module, "simulate", lambda *a, **k: pytest.fail("nothing may run"))
    monkeypatch.setattr(estimate_module, "estimate", lambda *a, **k: pytest.fail("nothing may run"))
    monkeypatch.setattr(importlib.import_module("hermes_fast.capacity"), "capacity_search", lambda *a, **k: 1 / 0)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "dir.nc").mkdir()
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "notes.txt").write_text("x")
    known = ", ".join(f"{ext} ({what})" for ext, what in OUT_FORMATS.items())
    cases = [
        (tmp_path / "r.txt", f"expected a file name ending in one of {known}"),
        (tmp_path / "r", "expected a file name ending in one of .nc (netCDF)"),
        (tmp_path / "missing" / "r.nc", f"expected a file in an existing directory ({tmp_path / 'missing'} does not"),
        (a_file / "r.nc", f"expected a file in an existing directory ({a_file} is not a directory)"),
        (tmp_path / "dir.nc", "expected a file name (this is a directory)"),
        (tmp_path / "plain.zarr", "expected a new path or a zarr store to replace (this directory is neither)"),
    ]
    if os.access("/sys", os.F_OK):
        cases.append((Path("/sys/r.nc"), "expected a writable place (/sys: "))
    for out, expected in cases:
        assert main([*command, "--out", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"hermes-fast: error: --out: got '{out}'; {expected}"), err
    assert (tmp_path / "plain.zarr" / "notes.txt").exists()


def test_a_sweep_store_is_not_replaced_by_a_run(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    hf.sweep(None, {"workload.rate_per_s": [2.0]}, n_requests=50, out=store)
    assert main(["run", "--requests", "50", "--out", str(store)]) == 2
    assert "a path other than a sweep's store" in capsys.readouterr().err
    assert hf.open_sweep(store).attrs["points_done"] == 1


# --- plot --out ---------------------------------------------------------------------------------------------


def test_plot_formats_are_checked_first(tmp_path, capsys):
    missing = tmp_path / "none.zarr"  # the format is refused before the store is looked at
    for bad in ("x.jpgg", "x"):
        assert main(["plot", str(missing), "--kind", "cdf", "--out", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"hermes-fast: error: --out: got '{tmp_path / bad}'; expected an image file ending")
        assert ".png, " in err[0] and ".jpg" in err[0] and ".svg" in err[0]
    assert main(["plot", str(missing), "--kind", "cdf", "--out", str(tmp_path / "no" / "x.png")]) == 2
    assert "a file in an existing directory" in capsys.readouterr().err
    if shutil.which("xelatex") is None:
        assert main(["plot", str(missing), "--kind", "cdf", "--out", str(tmp_path / "x.pgf")]) == 2
        assert "expected a format this machine can write (.pgf needs xelatex, not found)" in capsys.readouterr().err


def test_plot_writes_jpeg(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    hf.sweep(None, {"workload.rate_per_s": [2.0, 4.0]}, n_requests=50, out=store)
    fig = tmp_path / "f.jpg"
    assert main(["plot", str(store), "--kind", "latency", "--out", str(fig)]) == 0
    assert fig.read_bytes()[:3] == b"\xff\xd8\xff"


def test_dataset_table_of_a_sweep_keeps_zipped_coordinates():
    grid = {"split": {"engines[0].replicas": [1, 2], "workload.rate_per_s": [2.0, 4.0], "label": ["a", "b"]}}
    ds = hf.sweep(None, grid, n_requests=50)
    table = dataset_table(ds)
    row = table[(table.variable == "ttft_mean_s") & (table.split == "b")]
    assert row["engines[0].replicas"].item() == 2 and row["workload.rate_per_s"].item() == 4.0
    assert row.value.item() == float(ds.ttft_mean_s.sel(split="b", replicate=0))
