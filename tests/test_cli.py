"""Command line: `hermes-fast estimate` tables and netCDF, `presets` listings, one-line config errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast import cli
from hermes_fast.cli import main
from hermes_fast.config import load_yaml
from hermes_fast.variables import RENAMED

REPO_ROOT = Path(__file__).resolve().parents[1]

GOOD_YAML = """\
name: cli-test
engines:
  - name: small
    model: llama-3.1-8b
    device: h100_sxm
workload: {batch_size: 4, prompt_tokens: 512, output_tokens: 64}
"""

BAD_DEVICE_YAML = """\
engines:
  - model: llama-3.1-8b
    device: h100-sxm
"""


@pytest.fixture
def good_yaml(tmp_path) -> Path:
    p = tmp_path / "scenario.yaml"
    p.write_text(GOOD_YAML)
    return p


def _table_rows(out: str, first_column: str) -> list[list[str]]:
    """Data rows of the printed table (the lines after the header), split on whitespace."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_column) and "TTFT ms" in line)
    body = lines[start + 1 :]
    return [line.split() for line in body if line.strip() and not line.startswith(("#", "wrote", "..."))]


def _assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hermes-fast: error: ")
    for f in fragments:
        assert f in lines[0]


# --- estimate


def test_estimate_default_scenario(capsys):
    assert main(["estimate"]) == 0
    cap = capsys.readouterr()
    assert cap.err == ""
    header = next(line for line in cap.out.splitlines() if line.startswith("engine"))
    assert "TTFT ms" in header and "TPOT ms" in header
    default = load_yaml(Path(str(files("hermes_fast") / "scenarios" / "default.yaml")))
    names = [e["name"] for e in default["engines"]]
    assert names == ["llama8b-h100", "llama70b-h100-tp4"]
    rows = _table_rows(cap.out, "engine")
    assert [r[0] for r in rows] == names
    # the printed TTFT (ms, 3 decimals) is the estimate's
    ds = hf.estimate()
    for row, name in zip(rows, names, strict=True):
        assert row[1] == f"{ds.ttft_s.sel(engine=name).item() * 1e3:.3f}"
        assert row[2] == f"{ds.tpot_s.sel(engine=name).item() * 1e3:.3f}"
        assert row[-2] == "yes"


def test_estimate_grid_prints_one_row_per_point(capsys, good_yaml):
    code = main(["estimate", str(good_yaml), "--grid", "tp=1,2", "--grid", "batch_size=1,8"])
    assert code == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("engine"))
    assert header.split()[:3] == ["engine", "tp", "batch_size"]
    rows = _table_rows(out, "engine")
    assert len(rows) == 4
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("small", "1", "1"), ("small", "1", "8"), ("small", "2", "1"), ("small", "2", "8"),
    ]  # fmt: skip
    ds = hf.estimate(good_yaml, grid={"tp": [1, 2], "batch_size": [1, 8]})
    assert rows[3][3] == f"{ds.ttft_s.sel(engine='small', tp=2, batch_size=8).item() * 1e3:.3f}"


def test_estimate_grid_takes_dotted_paths(capsys, good_yaml):
    code = main(
        ["estimate", str(good_yaml), "--grid", "engines.small.parallel.tp=1,2", "--grid", "workload.batch_size=8"]
    )
    assert code == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("engine"))
    assert header.split()[:3] == ["engine", "engines.small.parallel.tp", "workload.batch_size"]
    rows = _table_rows(out, "engine")
    assert [(r[0], r[1], r[2]) for r in rows] == [("small", "1", "8"), ("small", "2", "8")]
    ds = hf.estimate(good_yaml, grid={"tp": [2], "batch_size": [8]})
    assert rows[1][3] == f"{ds.ttft_s.item() * 1e3:.3f}"
    assert main(["estimate", str(good_yaml), "--grid", "workload.rate_per_s=1,2"]) == 2
    err = capsys.readouterr().err
    assert "grid.workload.rate_per_s: got [1, 2]; expected a field a zero-load estimate depends on" in err


def test_estimate_writes_netcdf(capsys, good_yaml, tmp_path):
    out = tmp_path / "x.nc"
    assert main(["estimate", str(good_yaml), "--grid", "batch_size=1,8", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.ttft_s.attrs["units"] == "s"
        assert ds.tpot_s.attrs["units"] == "s"
        assert ds.weights_bytes.attrs["units"] == "B"
        assert "units" in ds.throughput_output_token_per_s.attrs
        assert ds.ttft_s.dims == ("engine", "batch_size")
        assert list(ds.batch_size.values) == [1, 8]
        ref = hf.estimate(good_yaml, grid={"batch_size": [1, 8]})
        assert ds.ttft_s.values.tolist() == ref.ttft_s.values.tolist()


def test_table_follows_current_stdout(capsys):
    assert main(["estimate"]) == 0
    out = capsys.readouterr().out
    assert "TTFT ms" in out and "llama8b-h100" in out


def test_print_estimate_to_given_stream():
    buf = io.StringIO()
    ds = hf.estimate(grid={"batch_size": [1, 8]})
    cli.print_estimate(ds, out=buf)
    rows = _table_rows(buf.getvalue(), "engine")
    assert len(rows) == 4
    assert [r[:2] for r in rows] == [
        ["llama8b-h100", "1"], ["llama8b-h100", "8"], ["llama70b-h100-tp4", "1"], ["llama70b-h100-tp4", "8"],
    ]  # fmt: skip
    buf = io.StringIO()
    cli.print_estimate(ds, out=buf, max_rows=3)
    assert len(_table_rows(buf.getvalue(), "engine")) == 3
    assert buf.getvalue().splitlines()[-1] == "... 1 more rows (write them all with --out FILE.nc)"


# --- config errors: exit 2, one line on stderr, no traceback


def test_misspelt_device_is_one_line_error(capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD_DEVICE_YAML)
    assert main(["estimate", str(p)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    _assert_one_line_error(cap.err, "engines[0].device", "'h100-sxm'", "did you mean 'h100_sxm'")


def test_unknown_grid_key_is_one_line_error(capsys, good_yaml):
    assert main(["estimate", str(good_yaml), "--grid", "tpp=1,2"]) == 2
    cap = capsys.readouterr()
    _assert_one_line_error(cap.err, "hermes-fast: error: grid.tpp:", "did you mean 'tp'")


def test_bad_grid_value_is_one_line_error(capsys, good_yaml):
    assert main(["estimate", str(good_yaml), "--grid", "device=h100_sxm,h100-sxm"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "grid.device[1]", "did you mean 'h100_sxm'")


def test_grid_without_values_is_one_line_error(capsys, good_yaml):
    assert main(["estimate", str(good_yaml), "--grid", "tp"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--grid tp", "KEY=V1,V2")


def test_missing_scenario_file_is_one_line_error(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert main(["estimate", str(missing)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(missing), "an existing YAML file")


def test_invalid_yaml_file_is_one_line_error(capsys, tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("engines:\n  - {model: llama-3.1-8b\n")
    assert main(["estimate", str(p)]) == 2
    _assert_one_line_error(capsys.readouterr().err, f"{p}:3", "valid YAML")


def test_unparsable_grid_value_names_the_grid_key(capsys, good_yaml):
    assert main(["estimate", str(good_yaml), "--grid", "device=["]) == 2
    _assert_one_line_error(capsys.readouterr().err, "device")


def test_config_error_reaches_stderr_without_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(BAD_DEVICE_YAML)
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, "-m", "hermes_fast.cli", "estimate", str(p)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    _assert_one_line_error(proc.stderr, "engines[0].device", "h100-sxm")


# --- presets


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("devices", ["h100_sxm", "h200_sxm", "b200", "mi300x", "tpu_v5e", "xeon_8480p"]),
        ("models", ["llama-3.1-8b", "llama-3.1-70b", "deepseek-v3", "mixtral-8x7b", "e5-base"]),
        ("memory_tiers", ["host_dram_ddr5", "nvme_ssd_gen5", "cxl_memory_expander"]),
        ("variables", ["ttft_s", "tpot_s", "throughput_output_token_per_s", "kv_capacity_tokens", "fits"]),
    ],
)
def test_presets_lists_names(capsys, kind, names):
    assert main(["presets", kind]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"# {kind}"
    renamed = [line.split() for line in lines if "->" in line]
    # rows; "#" lines are titles, the device table's header and its price basis
    first_words = {line.split()[0] for line in lines[1:] if line.strip() and "->" not in line and line[0] != "#"}
    for name in names:
        assert name in first_words
    if kind != "variables":
        assert first_words == set(hf.preset_names(kind)) and not renamed
    else:
        assert first_words == set(hf.VARIABLES)
        assert "ttft_s                           [s]" in out
        assert "# renamed variables: old name -> current name" in out
        assert renamed[1:] == [[old, "->", new] for old, new in RENAMED.items()]


def test_presets_models_fields(capsys):
    assert main(["presets", "models", "--fields"]) == 0
    out = capsys.readouterr().out
    fields = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("    ")}
    assert fields["n_layers"] == "[layer]"
    assert fields["n_heads"] == "[head]"
    assert fields["vocab_size"] == "[token]"
    assert fields["max_context_tokens"] == "[token]"
    assert fields["params_published"] == "[parameter]"
    assert "moe" in fields and "mla" in fields and "linear_attention" in fields
    assert "deepseek-v3" in out
    rows = [line for line in out.splitlines() if line and line[0] not in "# "]
    assert len({row.index(" layers ") for row in rows}) == 1  # aligned, long display names cut
    assert any(row.endswith("MoE 512x top-10 linear-attention 36") for row in rows)


def test_presets_without_kind_lists_catalog(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    sections = [line for line in out.splitlines() if line.startswith("# ") and len(line.split()) == 2]
    assert sections == ["# devices", "# models", "# memory_tiers", "# stacks"]


def test_presets_devices_table_shows_price_and_calibration_aligned(capsys):
    """Every device row has its price on the catalog's basis (or n/a with the reason) and its default shipped
    calibration (or none), in columns that line up under the header; the basis is printed under the table."""
    assert main(["presets", "devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1]
    assert header.startswith("# name") and header.endswith("USD/h")
    rows = {line.split()[0]: line for line in lines[2:] if not line.startswith("#")}
    assert set(rows) == set(hf.preset_names("devices"))
    cal_col, price_end = header.index("calibration"), len(header)
    for name, line in rows.items():
        dev = hf.Catalog().device(name)
        assert line[cal_col - 2 : cal_col] == "  " and line[cal_col] != " ", line  # the column starts there
        cells = line[cal_col:].split()
        calibration = cells[0]
        assert calibration == (name if name in ("h100_sxm", "h200_sxm", "a100_sxm_80gb") else "none")
        price = line[price_end - 5 :]
        if dev.price_usd_per_hour is None:
            assert price.startswith("n/a (") and line.endswith(")"), line
        else:
            assert price == f"{dev.price_usd_per_hour:5.2f}", line  # right-aligned under USD/h
    assert "(+h100_sxm-vllm)" in rows["h100_sxm"]
    assert "n/a (research device" in rows["pim_hbm"]
    tail = lines[2 + len(rows) :]  # the price basis, under the table
    assert tail and all(line.startswith("# ") for line in tail)
    assert hf.catalog.price_basis() in " ".join(line[2:] for line in tail)


def test_duplicate_grid_key_is_rejected(capsys):
    assert main(["estimate", "--grid", "tp=1", "--grid", "tp=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--grid tp=2" in err and "each grid key once" in err


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.strip().startswith("python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("hermes-fast run") and "pytest" in commands[1]
    assert commands[1] in ci.splitlines()


# --- run


def test_run_default_scenario_prints_percentiles_and_throughput(capsys, tmp_path):
    out = tmp_path / "sim.nc"
    assert main(["run", "--requests", "2000", "--seed", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("TTFT", "TPOT", "ITL", "E2E", "p50", "p99", "throughput", "goodput", "busy"):
        assert label in text
    ds = xr.load_dataset(out)
    ref = hf.simulate(n_requests=2000, seed=3)
    np.testing.assert_array_equal(ds.ttft_s.values, ref.ttft_s.values)
    # the printed median TTFT (ms, 2 decimals) is the simulation's
    assert f"{ref.ttft_s.sel(quantile=0.5).item() * 1e3:10.2f}" in text
    # the default stack's API front end, in TTFT and not in queueing, is said with its value
    frontend_s = hf.Catalog().stack("vllm").frontend_s
    assert f"front end     {frontend_s * 1e3:.1f} ms a request entering an engine on stack vllm" in text
    assert "in TTFT and E2E, not in queueing" in text
    assert ref.queue_mean_s.item() + frontend_s < ref.ttft_mean_s.item()


def test_run_says_nothing_of_a_front_end_a_stack_does_not_have(capsys, tmp_path):
    p = tmp_path / "ideal.yaml"
    p.write_text("engines: [{name: e, model: llama-3.1-8b, device: h100_sxm, stack: ideal}]\n")
    assert main(["run", str(p), "--requests", "200"]) == 0
    assert "front end" not in capsys.readouterr().out


def test_run_reports_overload(capsys, tmp_path):
    p = tmp_path / "over.yaml"
    p.write_text(
        "engines: [{name: e, model: llama-3.1-8b, device: h100_sxm, batching: {max_queue_requests: 20}}]\n"
        "workload: {rate_per_s: 3000}\n"
    )
    assert main(["run", str(p), "--requests", "5000"]) == 0
    assert "UNSTABLE" in capsys.readouterr().out


def test_run_bad_scenario_is_one_line(capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("engines: [{name: e, model: llama-3.1-8b, device: h100_sxm, batching: {policy: fifo}}]\n")
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "engines[0].batching.policy" in err[0]


def test_run_pipeline_prints_the_stage_breakdown(capsys, tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "pipeline_rag.yaml"
    out = tmp_path / "rag.nc"
    assert main(["run", str(example), "--requests", "300", "--seed", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    ds = xr.load_dataset(out).isel(replicate=0)
    for stage in ("embed", "retrieve", "prefill", "decode"):
        ms = float(ds.stage_time_s.sel(stage=stage)) * 1e3
        assert f"stage {stage}: {ms:.2f} ms per request" in text
    assert "link pcie4_x4: utilisation" in text
    assert ds.stage_time_s.attrs["units"] == "s"


def test_run_counts_say_they_follow_the_warm_up(capsys, tmp_path):
    """200 requests with 50 warm-up: the counts line covers 150 arrivals and says so."""
    path = tmp_path / "warm.yaml"
    path.write_text(
        "engines: [{name: e, model: llama-3.1-8b, device: h100_sxm, stack: ideal}]\n"
        "workload: {rate_per_s: 2, prompt_tokens: 64, output_tokens: 8}\n"
        "serving: {warmup_requests: 50}\n"
    )
    assert main(["run", str(path), "--requests", "200"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("requests "))
    expected = "150 arrived, 150 completed, 0 rejected, 0 dropped, 0 unfinished (after the 50 warm-up requests)"
    assert line.endswith(expected)
