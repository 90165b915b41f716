"""The variable registry: one name per quantity whichever path produced it, and the renamed names' aliases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import hermes_fast as hf
from hermes_fast.pareto import objective
from hermes_fast.variables import RENAMED, VARIABLES, current_name, rename_to_current

ONE_REQUEST = {
    "engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm"}],
    "workload": {"batch_size": 1, "prompt_tokens": 512, "output_tokens": 128},
}


@pytest.fixture(scope="module")
def est():
    return hf.estimate(ONE_REQUEST, grid={"batch_size": [1, 8], "prompt_tokens": [512, 2048]})


@pytest.fixture(scope="module")
def sim():
    return hf.simulate(ONE_REQUEST, n_requests=1, seed=0)


def test_renamed_names_point_to_registered_names_only():
    assert not set(RENAMED) & set(VARIABLES)
    assert set(RENAMED.values()) <= set(VARIABLES)
    for name in VARIABLES:  # names end in their unit, or are counts, flags and shares (unit 1)
        assert current_name(name) == name


def test_estimate_and_simulate_name_output_throughput_alike(est, sim):
    # one request alone: the loop's run is the estimate's static batch of one, so both paths give the same
    # output throughput (the loop's decode steps grow with the context; the estimate takes the mean context)
    one = hf.estimate(ONE_REQUEST)
    name = "throughput_output_token_per_s"
    assert one[name].item() == pytest.approx(sim[name].item(), rel=1e-4)
    assert one[name].item() == pytest.approx(128 / one.e2e_s.item(), rel=1e-14)
    assert one[name].attrs == sim[name].attrs == VARIABLES[name].attrs()
    assert "pool_role" in sim.coords  # as in a sweep: a coordinate along pool, not a variable
    for ds in (est, sim):
        assert not set(RENAMED) & set(ds.data_vars)
        assert set(ds.data_vars) <= set(VARIABLES)


def test_objectives_take_old_names_with_a_future_warning(est, sim):
    for old, new in RENAMED.items():
        ds = est if new in est else sim
        with pytest.warns(FutureWarning, match=f"'{old}' is now called '{new}'"):
            da = objective(ds, old)
        xr.testing.assert_identical(da, objective(ds, new))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # current names warn nothing
        front = hf.pareto(est, minimize=["ttft_s"], maximize=["throughput_output_token_per_s"])
    with pytest.warns(FutureWarning):
        old = hf.pareto(est, minimize=["ttft_s"], maximize=["throughput_token_per_s"])
    xr.testing.assert_identical(front, old)
    assert front.values.any() and not front.values.all()


def test_rename_to_current_updates_an_old_dataset(est, sim):
    old = est.rename({new: old for old, new in RENAMED.items() if new in est})
    assert "throughput_token_per_s" in old and "bound" in old
    xr.testing.assert_identical(rename_to_current(old), est)
    old_sim = sim.rename({"busy_fraction": "utilization"})  # a simulation saved before the rename
    xr.testing.assert_identical(rename_to_current(old_sim), sim)
    # a confidence interval's bound dim (low, mean, high) is not the estimate's decode bound
    ci = hf.confidence_interval(sim)
    assert list(ci.bound.values) == ["low", "mean", "high"]
    xr.testing.assert_identical(rename_to_current(ci), ci)
    np.testing.assert_array_equal(ci.throughput_output_token_per_s.sel(bound="mean"), sim.throughput_output_token_per_s)
