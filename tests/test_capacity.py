"""Capacity search: a closed form, agreement with a dense rate scan, the sweep output, and bad targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hermes_fast as hf
from hermes_fast.capacity import as_capacity, meets_targets, search_rate
from hermes_fast.config import ConfigError
from hermes_fast.resolve import resolve_scenario

STEP_S = 0.01


def one_server(process="deterministic"):
    """Batch size 1, a constant 10 ms step, one-token answers: each request is served in exactly 10 ms."""
    return {
        "engines": [
            {
                "name": "server",
                "stack": "ideal",  # (no front end: a request is served in exactly one step)
                "model": "llama-3.1-8b",
                "device": "h100_sxm",
                "fixed_step_time_s": STEP_S,
                "batching": {"max_batch_size": 1},
            }
        ],
        "workload": {
            "rate_per_s": 1.0,
            "arrival": {"process": process},
            "classes": [{"prompt_tokens": 1, "output_tokens": 1}],
        },
    }


def chat(rate=10.0):
    return {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "ideal"}],
        "workload": {
            "rate_per_s": rate,
            "classes": [
                {
                    "prompt_tokens": {"dist": "lognormal", "mean": 800, "cv": 0.6, "max": 4000},
                    "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 0.6, "max": 1000},
                }
            ],
        },
        "serving": {"slo": {"ttft_s": 0.25, "tpot_s": 0.03}},
    }


def test_deterministic_queue_capacity_is_the_service_rate():
    """Equal gaps 1/r, service 10 ms: below 100/s every TTFT is 10 ms; above, request k waits k (10 ms - 1/r),
    so with 2000 requests the p99 TTFT stays within 15 ms only up to 100 x (1 + 0.5/1980) per second."""
    targets = {
        "ttft": {"quantile": 0.99, "max_s": 1.5 * STEP_S},
        "rate_min_per_s": 1,
        "rate_max_per_s": 1000,
        "rel_tol": 0.002,
    }
    ds = hf.capacity_search(one_server(), targets, n_requests=2000, seed=1)
    cap = float(ds.capacity_request_per_s[0])
    assert 100 * (1 - 0.002) <= cap <= 100 * (1 + 0.5 / 1980)
    assert float(ds.ttft_s.sel(quantile=0.99)[0]) <= 1.5 * STEP_S
    assert float(ds.busy_fraction[0, 0]) == pytest.approx(cap * STEP_S, rel=0.01)  # busy share = rate x service


def test_bisection_agrees_with_a_dense_rate_scan():
    """The scan (every 1% in rate, independently through hf.simulate with the same seed stream) fails first
    just above the bisection's capacity and meets the targets at every rate up to it."""
    targets = as_capacity(
        {
            "ttft": {"quantile": 0.9, "max_s": 0.25},
            "min_slo_attainment": 0.8,
            "rate_min_per_s": 1,
            "rate_max_per_s": 200,
            "rel_tol": 0.01,
        }
    )
    cap, high, _, runs, bound = search_rate(resolve_scenario(chat()), targets, 400, seed=5, point=3, replicate=1)
    assert bound in ("ttft", "slo_attainment")
    assert 1 < cap < high <= cap * 1.01 + 1e-9 and runs <= 2 + 10

    def ok(rate):
        ds = hf.simulate(chat(rate), n_requests=400, seed=5, point=3, replicates=2).isel(replicate=1)
        return meets_targets({k: ds[k].values for k in ds.data_vars}, targets)

    rates = cap * 1.01 ** np.arange(-60, 30)
    feasible = np.array([ok(r) for r in rates])
    first_fail = rates[np.argmin(feasible)]
    assert feasible[rates <= cap * (1 + 1e-12)].all()
    assert cap <= first_fail <= high * 1.0101


def test_bracket_ends():
    ds = hf.capacity_search(one_server(), {"ttft": {"max_s": 0.5 * STEP_S}, "rate_min_per_s": 1}, n_requests=200)
    assert np.isnan(ds.capacity_request_per_s.values).all()  # nothing beats the 10 ms service time
    ds = hf.capacity_search(one_server(), {"ttft": {"max_s": 2 * STEP_S}, "rate_max_per_s": 50}, n_requests=200)
    assert ds.capacity_request_per_s.values.tolist() == [50.0]  # the top of the bracket meets the target


def test_capacity_as_a_sweep_output_matches_the_per_point_search():
    targets = {"ttft": {"quantile": 0.9, "max_s": 0.25}, "rate_min_per_s": 1, "rate_max_per_s": 100, "rel_tol": 0.02}
    grid = {"engines.main.batching.max_batch_size": [4, 64]}
    ds = hf.sweep(chat(), grid, n_requests=300, replicates=2, seed=2, capacity=targets)
    assert ds.capacity_request_per_s.dims == ("engines.main.batching.max_batch_size", "replicate")
    assert ds.capacity_request_per_s.attrs["units"] == "request/s"
    for i, mbs in enumerate((4, 64)):
        sc = chat()
        sc["engines"][0]["batching"] = {"max_batch_size": mbs}
        ref = hf.capacity_search(sc, targets, n_requests=300, seed=2, replicates=2, point=i)
        got = ds.isel({"engines.main.batching.max_batch_size": i})
        np.testing.assert_array_equal(got.capacity_request_per_s.values, ref.capacity_request_per_s.values)
        np.testing.assert_array_equal(got.ttft_s.values, ref.ttft_s.values)
    small, large = ds.capacity_request_per_s.mean("replicate").values
    assert large > 2 * small  # batching multiplies the rate served within the TTFT target


@pytest.mark.parametrize(
    "targets, path",
    [
        ({}, "capacity"),
        ({"ttft": {"quantile": 0.8, "max_s": 1}}, "capacity.ttft.quantile"),
        ({"ttft": {"max_s": -1}}, "capacity.ttft.max_s"),
        ({"tpot": {"max_s": 1}, "rate_min_per_s": 10, "rate_max_per_s": 5}, "capacity.rate_max_per_s"),
        ({"min_slo_attainment": 1.5}, "capacity.min_slo_attainment"),
        ({"e2e": {"max_s": 1}, "tolerance": 0.1}, "capacity.tolerance"),
    ],
)
def test_bad_targets(targets, path):
    with pytest.raises(ConfigError) as e:
        hf.capacity_search(chat(), targets, n_requests=10)
    assert e.value.path == path


def test_rate_axis_and_trace_replay_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no rate axis"):
        hf.sweep(chat(), {"workload.rate_per_s": [1, 2]}, n_requests=10, capacity={"ttft": {"max_s": 1}})
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n0.5,10,5\n")
    sc = chat()
    sc["workload"]["arrival"] = {"process": "trace", "trace": {"path": str(trace)}}
    with pytest.raises(ConfigError) as e:
        hf.capacity_search(sc, {"ttft": {"max_s": 1}}, n_requests=10)
    assert e.value.path == "workload.arrival.trace.rescale_to_rate"
    with pytest.raises(ConfigError) as e:  # refused before any point runs
        hf.sweep(sc, {"serving.slo.ttft_s": [1.0]}, n_requests=10, capacity={"ttft": {"max_s": 1}})
    assert e.value.path.startswith("grid point 0") and e.value.path.endswith("rescale_to_rate")


# --- which target binds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets, bound",
    [
        ({"ttft": {"quantile": 0.9, "max_s": 0.1}, "tpot": {"max_s": 1}}, "ttft"),
        ({"tpot": {"quantile": 0.9, "max_s": 0.012}, "ttft": {"max_s": 10}}, "tpot"),
        ({"e2e": {"quantile": None, "max_s": 3}}, "e2e"),
        ({"min_slo_attainment": 0.95}, "slo_attainment"),
        ({"ttft": {"max_s": 10}, "allow_unstable": False}, "unstable"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_the_binding_target_is_the_one_missed_just_above_capacity(targets, bound):
    """At the capacity every target holds; at the bracket's failing high end (the same seed stream) the reported
    target is missed, by more than any other."""
    from hermes_fast.capacity import binding_target

    cap = as_capacity({"allow_unstable": True, "rate_max_per_s": 200, **targets})
    found = search_rate(resolve_scenario(chat()), cap, 400, seed=1, point=0, replicate=0)
    assert found.bound == bound and 1 < found.capacity < found.high < 200

    def summary(rate):
        ds = hf.simulate(chat(rate), n_requests=400, seed=1).isel(replicate=0)
        return {k: ds[k].values for k in ds.data_vars}

    assert meets_targets(summary(found.capacity), cap)
    above = summary(found.high)
    assert not meets_targets(above, cap) and binding_target(above, cap) == bound
    ds = hf.capacity_search(chat(), cap, n_requests=400, seed=1)
    assert ds.capacity_bound.values.tolist() == [
        hf.VARIABLES["capacity_bound"].attrs()["flag_meanings"].split().index(bound)
    ]
    assert ds.capacity_bound.attrs["flag_meanings"].split()[int(ds.capacity_bound[0])] == bound


def test_bracket_ends_say_what_binds():
    ds = hf.capacity_search(one_server(), {"ttft": {"max_s": 0.5 * STEP_S}, "rate_min_per_s": 1}, n_requests=200)
    assert ds.capacity_bound.attrs["flag_meanings"].split()[int(ds.capacity_bound[0])] == "ttft"  # even at 1/s
    ds = hf.capacity_search(one_server(), {"ttft": {"max_s": 2 * STEP_S}, "rate_max_per_s": 50}, n_requests=200)
    assert ds.capacity_bound.attrs["flag_meanings"].split()[int(ds.capacity_bound[0])] == "rate_max"
    assert json.loads(ds.attrs["capacity"])["rate_max_per_s"] == 50


def test_a_capacity_sweep_says_what_binds_each_point():
    targets = {"ttft": {"quantile": 0.9, "max_s": 0.1}, "tpot": {"max_s": 1}, "allow_unstable": True}
    targets["rate_max_per_s"] = 200
    grid = {"engines.main.batching.max_batch_size": [2, 64]}
    ds = hf.sweep(chat(), grid, n_requests=300, seed=2, capacity=targets)
    assert ds.capacity_bound.dims == ("engines.main.batching.max_batch_size", "replicate")
    for i, mbs in enumerate((2, 64)):
        sc = chat()
        sc["engines"][0]["batching"] = {"max_batch_size": mbs}
        ref = hf.capacity_search(sc, targets, n_requests=300, seed=2, point=i)
        np.testing.assert_array_equal(ds.capacity_bound.values[i], ref.capacity_bound.values)
        assert ref.capacity_bound.values.tolist() != [0]
