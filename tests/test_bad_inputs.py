"""Inputs found by the config fuzzer (``benchmarks/fuzz_configs.py``) that once gave a traceback, a hang or a result
that could not be right: each is now one ConfigError naming the field, or a result that says what is wrong with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import hermes_fast as hf
from hermes_fast.arrivals import _first_order_statistics
from hermes_fast.cli import main
from hermes_fast.config import ConfigError
from hermes_fast.config.files import MAX_NAME_BYTES, load_yaml
from hermes_fast.workload import MAX_SPAN_S, draw_workload, rng_for

ENGINE = {"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "ideal"}


def scenario(**workload) -> dict:
    return {"engines": [dict(ENGINE)], "workload": {"rate_per_s": 5.0, "prompt_tokens": 64, "output_tokens": 8,
                                                    **workload}}  # fmt: skip


def _error(fn, *args, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)  # one line
    return e.value


# --- YAML the reader cannot take -----------------------------------------------------------------------------


def test_an_impossible_date_is_one_error_with_its_line():
    e = _error(load_yaml, "name: x\nwhen: 2024-13-45\n")
    assert e.path == "<text>:2" and "2024-13-45" in str(e)


def test_an_unprintable_character_is_one_error():
    e = _error(load_yaml, "name: a\x00b\n")
    assert e.path == "<text>" and "printable YAML text" in str(e)


def test_a_number_too_large_for_a_float_is_one_error():
    e = _error(hf.load_scenario, scenario(rate_per_s=10**400))
    assert e.path == "workload.rate_per_s" and "a finite number" in str(e)


def test_a_huge_key_is_shortened_in_the_message():
    e = _error(hf.load_scenario, {"engines": [dict(ENGINE)], "workload": {"x" * 5000: 1}})
    first = str(e).split(": got")[0]
    assert len(first) < 200 and "..." in first


# --- fields bounded so that a run can end ------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, path",
    [
        ({"fixed_step_time_s": 1e-9}, 1e-9, "engines[0].fixed_step_time_s"),
        ({"fixed_step_time_s": 1e5}, 1e5, "engines[0].fixed_step_time_s"),
    ],
)
def test_engine_fields_out_of_their_range(field, value, path):
    sc = scenario()
    sc["engines"][0].update(field)
    e = _error(hf.load_scenario, sc)
    assert e.path == path and e.value == value


def test_a_gap_cv_below_the_smallest_drawable_is_refused():
    e = _error(hf.load_scenario, scenario(arrival={"process": "gamma", "cv": 1e-300}))
    assert e.path == "workload.arrival.cv"
    e = _error(hf.load_scenario, scenario(arrival={"process": "closed", "concurrency": 2, "think_time_s": 1.0,
                                                   "think_time_cv": 1e-300}))  # fmt: skip
    assert e.path == "workload.arrival.think_time_cv"


def test_a_model_whose_context_holds_one_token_is_refused():
    sc = scenario()
    sc["models"] = {"tiny": {**_model_fields(), "max_context_tokens": 1}}
    sc["engines"][0]["model"] = "tiny"
    e = _error(hf.load_scenario, sc)
    assert e.path.endswith("max_context_tokens") and e.value == 1


def _model_fields() -> dict:
    return {"base": "llama-3.1-8b"}


# --- arrivals that time cannot resolve -----------------------------------------------------------------------


def test_arrivals_spanning_beyond_float_resolution_name_the_rate():
    """1000 arrivals at 1e-9/s span ~1e12 s: float64 times there resolve a latency only to ~2e-4 s."""
    e = _error(hf.simulate, scenario(rate_per_s=1e-9), n_requests=1000, seed=1)
    assert e.path == "workload.rate_per_s" and f"{MAX_SPAN_S:.3g}" in str(e)


def test_a_capacity_bracket_too_low_for_the_run_names_the_bracket():
    targets = {"ttft": {"quantile": 0.5, "max_s": 1.0}, "rate_min_per_s": 1e-9, "rate_max_per_s": 10.0}
    e = _error(hf.capacity_search, scenario(), targets, n_requests=1000)
    assert e.path == "capacity.rate_min_per_s" and e.value == 1e-9


def test_an_mmpp_that_switches_without_arrivals_is_refused_quickly():
    arr = {"process": "mmpp", "burst_factor": 1.5, "burst_mean_s": 1e-9, "calm_mean_s": 1e-9}
    e = _error(hf.simulate, scenario(arrival=arr), n_requests=100, seed=1)
    assert e.path == "workload.arrival.calm_mean_s"


def test_an_mmpp_sojourn_far_longer_than_the_run_draws_only_what_it_needs():
    """calm_mean_s 1e6 at 5 req/s: a calm sojourn holds millions of arrivals, of which 200 are needed."""
    sc = hf.load_scenario(scenario(arrival={"process": "mmpp", "burst_mean_s": 1.0, "calm_mean_s": 1e6}))
    draws = draw_workload(sc.workload, 200, rng_for(1))
    t = draws.arrival_s
    assert t.size == 200 and np.all(np.diff(t) >= 0) and np.isfinite(t).all()


def test_the_first_order_statistics_of_many_uniforms_have_their_means():
    """E[U_(j)] of k uniforms is j / (k + 1), whatever k (here k = 10^12: never drawn)."""
    k, m = 10**12, 5
    rng = np.random.default_rng(3)
    draws = np.array([_first_order_statistics(k, m, rng) for _ in range(4000)])
    assert np.all(np.diff(draws, axis=1) > 0)
    expected = np.arange(1, m + 1) / (k + 1)
    np.testing.assert_allclose(draws.mean(axis=0), expected, rtol=0.06)


# --- results that say what is wrong with them -----------------------------------------------------------------


def test_a_step_faster_than_the_device_allows_warns_of_mbu_above_one():
    """8B weights (16 GB) read in 1 us is 16 PB/s against the H100's 3.35 TB/s: MBU far above 1, said."""
    sc = scenario(rate_per_s=50.0)
    sc["engines"][0]["fixed_step_time_s"] = 1e-6
    ds = hf.simulate(sc, n_requests=200, seed=1)
    assert float(ds.mbu.max()) > 1.0
    assert any("MBU" in w and "above 1" in w for w in ds.attrs["warnings"])


def test_an_iteration_in_flight_at_the_horizon_counts_only_up_to_it():
    """2 s iterations, a 3 s horizon, a queue that never empties: busy all the run (1), not 4 s of 3."""
    sc = scenario()
    sc["engines"][0]["fixed_step_time_s"] = 2.0
    sc["serving"] = {"horizon_s": 3.0}
    ds = hf.simulate(sc, n_requests=50, seed=1)
    assert float(ds.busy_fraction.max()) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < float(ds.kv_occupancy.max()) <= 1.0


# --- file names the file system would refuse -----------------------------------------------------------------


def test_an_overlong_file_name_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / ("r" * (MAX_NAME_BYTES + 1) + ".nc")
    assert main(["run", "--requests", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and f"at most {MAX_NAME_BYTES} bytes" in err


def test_an_overlong_store_path_is_refused(tmp_path):
    e = _error(hf.sweep, scenario(), {"workload.rate_per_s": [1.0]}, out=tmp_path / ("s" * 300), n_requests=10)
    assert e.path == "out" and not math.isnan(len(str(e)))
