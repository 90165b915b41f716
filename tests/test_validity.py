"""Validity everywhere: the per-point flags (overloaded, rejected, dropped, unfinished shares), the ``valid``
mask and its reason, the ``warnings`` attr of simulate, sweep and capacity-search results, the CLI's WARNING
lines, and ``hf.pareto`` leaving invalid points out (the README sweep's misleading ranking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from test_simulate import queue_scenario

import hermes_fast as hf
from hermes_fast.cli import main
from hermes_fast.validity import INVALID_REASONS, LOST_TOLERANCE, validity_warnings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OVERLOADED, REJECTED, DROPPED, UNFINISHED, NOTHING = (1 << k for k in range(5))


def with_long_prompts(share_long):
    """Batch size 1, 10 ms steps; a class of 8,192 to 10,000-token prompts (over max_batched_tokens 8192 under
    continuous batching but for the shortest: rejected, token_budget) with weight ``share_long``. (A class whose
    every prompt is over the budget would be a ConfigError at load time.)"""
    s = queue_scenario(5.0, 10)
    s["workload"]["classes"] = [
        {"weight": 1 - share_long, "prompt_tokens": 100, "output_tokens": 10},
        {"weight": share_long, "prompt_tokens": {"dist": "uniform", "min": 8192, "max": 10_000}, "output_tokens": 10},
    ]
    return s


def test_the_registry_documents_the_reason_codes():
    attrs = hf.VARIABLES["invalid_reason"].attrs()
    assert attrs["flag_masks"].tolist() == [1, 2, 4, 8, 16]
    assert attrs["flag_meanings"].split() == list(INVALID_REASONS)
    assert LOST_TOLERANCE == 0.001


def test_rejected_share_makes_a_run_invalid_with_its_reason():
    ds = hf.simulate(with_long_prompts(0.25), n_requests=2000, seed=1, keep_requests=True)
    rejected = int((ds.request_status == hf.kernels.serving.Status.REJECTED).sum())
    assert 400 < rejected < 600
    assert float(ds.rejected_fraction.item()) == rejected / 2000
    assert float(ds.dropped_fraction.item()) == float(ds.unfinished_fraction.item()) == 0.0
    assert int(ds.invalid_reason.item()) == REJECTED and not bool(ds.valid.item())
    assert not bool(ds.unstable.item())
    (line,) = ds.attrs["warnings"]
    assert line.startswith(f"{100 * rejected / 2000:.1f}% of the requests rejected: they could never run")
    assert "token_budget: a prompt over max_batched_tokens" in line


def test_a_share_within_the_tolerance_warns_but_stays_valid():
    ds = hf.simulate(with_long_prompts(0.0005), n_requests=4000, seed=4)
    n = int(ds.rejected_requests.item())
    assert 0 < n <= 4000 * LOST_TOLERANCE
    assert bool(ds.valid.item()) and int(ds.invalid_reason.item()) == 0
    (line,) = ds.attrs["warnings"]
    assert "within the 0.1% tolerance: still valid" in line


def test_drops_horizon_and_nothing_completed():
    s = queue_scenario(300.0, 10)  # 3 x the service rate, 20 waiting at most: drops
    s["engines"][0]["batching"]["max_queue_requests"] = 20
    ds = hf.simulate(s, n_requests=1000, seed=1)
    share = int(ds.dropped_requests.item()) / 1000
    assert share > 0.5 and float(ds.dropped_fraction.item()) == share
    assert int(ds.invalid_reason.item()) == OVERLOADED | DROPPED
    assert any("dropped by a full queue (queue_full" in w for w in ds.attrs["warnings"])
    s = queue_scenario(5.0, 10)
    s["serving"] = {"horizon_s": 10.0}  # stops after ~50 of 1000 arrivals
    ds = hf.simulate(s, n_requests=1000, seed=1)
    assert float(ds.unfinished_fraction.item()) > 0.9
    assert int(ds.invalid_reason.item()) == OVERLOADED | UNFINISHED
    assert any("the horizon stopped the run before the last arrival" in w for w in ds.attrs["warnings"])
    s["serving"] = {"horizon_s": 0.1}  # before any request can complete (100 ms of 10 ms steps each)
    ds = hf.simulate(s, n_requests=100, seed=1)
    assert int(ds.completed_requests.item()) == 0
    assert int(ds.invalid_reason.item()) & NOTHING
    assert "no request completed: every latency and throughput is NaN" in ds.attrs["warnings"]


def test_a_valid_run_has_no_warnings_and_keeps_them_in_netcdf(tmp_path):
    ds = hf.simulate(queue_scenario(5.0, 10), n_requests=2000, seed=1, replicates=2)  # rho = 0.5
    assert ds.valid.values.tolist() == [True, True] and ds.attrs["warnings"] == []
    bad = hf.simulate(with_long_prompts(0.25), n_requests=500, seed=1)
    bad.to_netcdf(tmp_path / "bad.nc")
    from hermes_fast.cli.warnings import warning_lines

    assert warning_lines(xr.load_dataset(tmp_path / "bad.nc")) == bad.attrs["warnings"]


# --- sweeps: the README's misleading ranking


def budget_sweep(policies=("continuous", "chunked")):
    """serving_chunked.yaml as the README swept it: summarisation prompts of 2,000-6,000 tokens against
    max_batched_tokens 2048; continuous batching rejects every prompt over 2048 (about a quarter)."""
    grid = {"workload.rate_per_s": [2.0, 4.0], "engines.llama70b-tp4.batching.policy": list(policies)}
    return hf.sweep(EXAMPLES / "serving_chunked.yaml", grid, n_requests=600, seed=1, progress=False)


def test_pareto_leaves_the_rejecting_policy_out():
    ds = budget_sweep()
    policy = "engines.llama70b-tp4.batching.policy"
    rej = ds.rejected_fraction.isel(replicate=0)
    assert (rej.sel({policy: "continuous"}) > 0.15).all() and (rej.sel({policy: "chunked"}) == 0).all()
    assert ds.valid.isel(replicate=0).sel({policy: "chunked"}).all()
    assert ds.attrs["points_invalid"] == 2
    lines = ds.attrs["warnings"]
    assert lines[0].startswith("2 of 4 points invalid (rejected 2): hf.pareto leaves them out")
    assert lines[1].startswith(f"invalid at workload.rate_per_s=2.0, {policy}=continuous: ")
    assert lines[1].endswith("% rejected (token_budget)") and len(lines) == 3
    objectives = {"minimize": ["ttft_s[quantile=0.99]"], "maximize": ["output_token_per_usd"]}
    ranked = hf.pareto(ds, **objectives, include_invalid=True)
    assert ranked.sel({policy: "continuous"}).any()  # it looks best: it skipped the long prompts
    with pytest.warns(UserWarning, match="left out 2 invalid point"):
        front = hf.pareto(ds, **objectives)
    assert front.attrs["invalid_left_out"] == 2 and ranked.attrs["invalid_left_out"] == 0
    assert not front.sel({policy: "continuous"}).any() and front.sel({policy: "chunked"}).any()


def test_the_example_sweep_budgets_fit_their_prompts():
    spec = yaml.safe_load((EXAMPLES / "sweeps" / "rate_policy.yaml").read_text())
    assert spec["grid"]["policy"]["engines.llama70b-tp4.max_batched_tokens"] == [8192, 2048, 8192]
    grid = {"workload.rate_per_s": [2, 16], "policy": spec["grid"]["policy"]}
    ds = hf.sweep(EXAMPLES / "serving_chunked.yaml", grid, n_requests=4000, seed=1, progress=False)
    assert (ds.rejected_requests == 0).all()  # every prompt (up to 6,000 tokens) fits every policy's budget
    assert ds.valid.sel({"workload.rate_per_s": 2}).all()
    assert not ds.valid.sel({"workload.rate_per_s": 16}).all("replicate").any()  # past the knee: overloaded
    assert (ds.invalid_reason.sel({"workload.rate_per_s": 16}) == OVERLOADED).all()


def test_sweep_store_and_capacity_search_carry_the_flags(tmp_path):
    grid = {"workload.rate_per_s": [5.0, 300.0]}
    ds = hf.sweep(queue_scenario(5.0, 10), grid, n_requests=1000, seed=1, out=tmp_path / "s.zarr", progress=False)
    back = hf.open_sweep(tmp_path / "s.zarr")
    assert back.attrs["warnings"] == ds.attrs["warnings"] == validity_warnings(ds)
    assert ds.attrs["warnings"][0].startswith("1 of 2 points invalid (overloaded 1)")
    assert ds.valid.values.tolist() == [[True], [False]]
    for name in ("valid", "invalid_reason", "rejected_fraction", "dropped_fraction", "unfinished_fraction"):
        assert ds[name].dims == ("workload.rate_per_s", "replicate") and ds[name].attrs == hf.VARIABLES[name].attrs()
    targets = {"ttft": {"quantile": 0.9, "max_s": 0.001}, "rate_min_per_s": 1, "rate_max_per_s": 50}
    cap = hf.capacity_search(queue_scenario(5.0, 10), targets, n_requests=500)  # a TTFT under one 10 ms step
    assert np.isnan(cap.capacity_request_per_s.item())
    assert any("capacity NaN" in w for w in cap.attrs["warnings"]) and "valid" in cap
    targets = {"ttft": {"quantile": 0.9, "max_s": 1.0}, "rate_min_per_s": 1, "rate_max_per_s": 50}
    cap = hf.capacity_search(queue_scenario(5.0, 10), targets, n_requests=2000)
    assert bool(cap.valid.item()) and cap.attrs["warnings"] == []


# --- the CLI's WARNING lines


def test_run_and_sweep_print_warnings_on_stderr(capsys, tmp_path):
    p = tmp_path / "long.yaml"
    p.write_text(yaml.safe_dump(with_long_prompts(0.25)))
    assert main(["run", str(p), "--requests", "400"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("WARNING: ") and "rejected" in line and "token_budget" in line
    sweep = {"scenario": queue_scenario(5.0, 10), "grid": {"workload.rate_per_s": [5.0, 300.0]}, "n_requests": 600}
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(p), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("WARNING: 1 of 2 points invalid (overloaded 1)")
    assert err[1] == "WARNING: invalid at workload.rate_per_s=300.0: overloaded"


def test_growth_between_the_5_and_1_percent_levels_is_a_warning_only():
    from test_overload import mm1

    ds = hf.simulate(mm1(1.05), n_requests=10_000, seed=11, replicates=10, progress=False)
    t = ds.overload_statistic.values
    k = int(np.flatnonzero((t > 1.729) & (t < 2.539))[0])  # t(0.95, 19) < t < t(0.99, 19)
    one = ds.isel(replicate=[k])
    assert bool(one.valid.item()) and not bool(one.unstable.item())
    (line,) = validity_warnings(one)
    assert line.startswith("possibly overloaded: the number in system grew by ")
    assert f"(overload test t = {t[k]:.3g}, above the 5% level 1.73 but not the 1% level 2.54" in line
