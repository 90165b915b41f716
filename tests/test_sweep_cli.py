"""`hermes-fast sweep` (resumable zarr output) and `hermes-fast plot` from its store; one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
import yaml

import hermes_fast as hf
from hermes_fast.cli import main
from hermes_fast.config import ConfigError, SweepSpec, from_mapping, load_yaml

POLICY = "engines.main.batching.policy"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SWEEP = {
    "scenario": {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm"}],
        "workload": {"rate_per_s": 5.0, "prompt_tokens": 512, "output_tokens": 64},
        "serving": {"slo": {"ttft_s": 0.05, "tpot_s": 0.02}},
    },
    "grid": {"workload.rate_per_s": [5.0, 20.0, 40.0], "engines.main.batching.policy": ["continuous", "chunked"]},
    "n_requests": 200,
    "replicates": 2,
    "seed": 4,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    path = d / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    out = d / "results.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--chunk-size", "2", "--no-progress"]) == 0
    return path, out


def test_sweep_writes_the_same_dataset_as_the_api(store, capsys):
    path, out = store
    ref = hf.sweep(SWEEP["scenario"], SWEEP["grid"], n_requests=200, replicates=2, seed=4)
    xr.testing.assert_identical(hf.open_sweep(out).drop_attrs(), ref.drop_attrs())
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0  # complete: resumes to nothing
    text = capsys.readouterr().out
    assert "6 points (workload.rate_per_s=3, engines.main.batching.policy=2) x 2 replicate(s)" in text
    assert f"wrote {out}" in text


@pytest.mark.parametrize(
    "args",
    [
        ["--kind", "pareto"],
        ["--kind", "pareto", "--hue", "engines.main.batching.policy"],
        ["--kind", "latency", "--hue", "engines.main.batching.policy"],
        ["--kind", "goodput", "--x", "workload.rate_per_s", "--y", "slo_attainment"],
        ["--kind", "cdf", "--y", "e2e", "--sel", "workload.rate_per_s=20", "--sel", f"{POLICY}=chunked"],
        ["--kind", "heatmap", "--var", "busy_fraction[pool=main]", "--x", "workload.rate_per_s", "--y", POLICY],
    ],
    ids=lambda a: "-".join(a[1::2]),
)
def test_plot_kinds_write_images(store, tmp_path, args):
    _, out = store
    fig = tmp_path / "fig.png"
    assert main(["plot", str(out), *args, "--out", str(fig)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000


def test_plot_errors_are_one_line(store, tmp_path, capsys):
    _, out = store
    assert main(["plot", str(out), "--kind", "breakdown", "--out", str(tmp_path / "f.png")]) == 2
    assert "stage_time_s'; expected a variable of the Dataset" in capsys.readouterr().err
    assert main(["plot", str(out), "--kind", "cdf", "--sel", "rate=1", "--out", str(tmp_path / "f.png")]) == 2
    assert main(["plot", str(tmp_path / "none.zarr"), "--kind", "cdf", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "sweep store" in err
    # --hue is honoured where a plot can draw it, refused where it cannot (not silently ignored)
    heat = ["--kind", "heatmap", "--var", "ttft_s[quantile=0.5]", "--x", "workload.rate_per_s", "--y", POLICY]
    assert main(["plot", str(out), *heat, "--hue", POLICY, "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hue" in err and "no --hue with --kind heatmap" in err
    assert main(["plot", str(out), "--kind", "breakdown", "--hue", POLICY, "--out", str(tmp_path / "f.png")]) == 2
    assert "no --hue with --kind breakdown" in capsys.readouterr().err
    assert main(["plot", str(out), "--kind", "pareto", "--hue", "pool", "--out", str(tmp_path / "f.png")]) == 2
    assert "hue: got 'pool'; expected a swept dim" in capsys.readouterr().err


def test_sweep_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "grid": {"engines.main.paralel.tp": [1]}}))
    assert main(["sweep", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hermes-fast: error: grid.engines.main.paralel.tp") and err.count("\n") == 1
    path.write_text(yaml.safe_dump({**SWEEP, "gird": {}}))
    assert main(["sweep", str(path)]) == 2
    assert "did you mean 'grid'" in capsys.readouterr().err
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    args = ["--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", "--no-progress"]
    assert main(["sweep", str(path), *args]) == 2
    assert "hermes-fast: error: scheduler: got 'tcp://127.0.0.1:9'" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((EXAMPLES / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_sweeps_run(path):
    spec = from_mapping(SweepSpec, load_yaml(path))
    assert spec.grid
    ds = hf.sweep_file(path, n_requests=250)  # (more than serving_chunked.yaml's 200 warm-up requests)
    assert ds.attrs["points"] == int(ds.ttft_s.isel(replicate=0, quantile=0).size)
    if spec.capacity is not None:
        assert (ds.capacity_request_per_s > 0).all()


def test_sweep_spec_rejects_bad_fields():
    with pytest.raises(ConfigError) as e:
        from_mapping(SweepSpec, {"n_requests": 0})
    assert e.value.path == "n_requests"


@pytest.mark.slow
def test_a_killed_cli_sweep_resumes(tmp_path, monkeypatch):
    """SIGKILL a `hermes-fast sweep` process part-way; the rerun computes exactly the points not stored and
    the store then equals an uninterrupted sweep."""
    import importlib
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = {**SWEEP, "grid": {"workload.rate_per_s": [float(r) for r in range(4, 28, 2)]}, "n_requests": 3000}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "r.zarr"
    cmd = [sys.executable, "-m", "hermes_fast.cli", "sweep", str(path), "--out", str(out), "--chunk-size", "1"]
    proc = subprocess.Popen([*cmd, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        flags = out / "_done" / "c"  # counted cheaply: open_sweep checks every chunk, and takes longer
        if flags.is_dir() and sum(1 for p in flags.iterdir() if p.is_file()) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = hf.open_sweep(out).attrs["points_done"]
    assert 3 <= done < 12, "the sweep was not killed part-way"
    points = importlib.import_module("hermes_fast.sweep.points")
    real, computed = points.run_point, []
    monkeypatch.setattr(points, "run_point", lambda plan, i: computed.append(i) or real(plan, i))
    ds = hf.sweep_file(path, out=out, progress=False)
    assert len(computed) == 12 - done and len(set(computed)) == len(computed)
    ref = hf.sweep_file(path, progress=False)
    xr.testing.assert_identical(ds.drop_attrs(), ref.drop_attrs())


# ---------------------------------------------------------------- sweep files vs scenario files (issue 21)


def test_scenario_null_runs_the_default_scenario(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("scenario: null\ngrid: {workload.rate_per_s: [2, 4]}\nn_requests: 50\nseed: 1\n")
    ds = hf.sweep_file(path)
    ref = hf.sweep(None, {"workload.rate_per_s": [2, 4]}, n_requests=50, seed=1)
    xr.testing.assert_identical(ds, ref)
    assert ds.attrs["scenario"] == "default"


def test_running_a_sweep_file_says_so(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this is a sweep file" in err and "hermes-fast sweep" in err and str(path) in err
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SWEEP["scenario"]))
    assert main(["sweep", str(scenario), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this is a scenario file (use hermes-fast run" in err


def test_warmup_must_leave_requests_at_every_point(tmp_path):
    grid = {"serving.warmup_requests": [10, 60]}
    with pytest.raises(ConfigError) as e:
        hf.sweep(SWEEP["scenario"], grid, n_requests=50)
    assert e.value.path == "grid point 1 (serving.warmup_requests=60): serving.warmup_requests"
    assert e.value.value == 60 and e.value.expected.startswith("fewer than n_requests (50)")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "grid": grid, "n_requests": 10}))
    with pytest.raises(ConfigError, match=r"grid point 0 .*got 10; expected fewer than n_requests \(10\)"):
        hf.sweep_file(path)
