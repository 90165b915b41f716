"""The overload test (validity.overload_test): the t statistic against a brute-force count, its false-alarm rate
at 0.9 x capacity and its detection at 1.05, 1.1 and 2 x capacity, on an M/M/1 queue (exact capacity) and on
the LLM serving loop (capacity from a flooded run), and its growth against the queue's drift lambda - mu.

Expected power (derivation in overload_test's docstring): with A arrivals in the window (half the requests),
t ~ (1 - 1/rho) sqrt(A / (c_a^2 + c_s^2 / rho)); 95% detection needs t ~ 4.2, i.e. about 30,000 requests at
rho = 1.05, 8,000 at 1.1 and 200 at 2 for M/M/1. The tests use 40,000, 10,000 and 400. Measured over 50 seeds
(M/M/1; LLM loop at the flooded capacity): 0.9 x: 0 and 0 flagged (10,000 requests); 1.05 x: 49 and 50
(40,000), 46 and 50 (20,000); 1.1 x: 48 and 50 (10,000); 2 x: 50 and 50 (400), 49 and 50 (200).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_simulate import STEP_S, queue_scenario

import hermes_fast as hf
from hermes_fast.length_draws import length_moments
from hermes_fast.validity import OVERLOAD_BATCHES, in_system, overload_test

T_CRITICAL = 2.539483190622288  # Student t, 19 df, 99%: scipy.stats.t.ppf(0.99, 19)
MEAN_TOKENS = 20  # M/M/1: exponential service of about 20 constant 10 ms steps
# (loads, requests) the M/M/1 and LLM tests run: enough requests for ~95% detection or more at each load
DETECT = {1.05: 40_000, 1.1: 10_000, 2.0: 400}


def mm1_rate():
    """mu of the M/M/1 queue: 1 / (mean drawn tokens x STEP_S) (whole tokens: 20.5 for a mean of 20)."""
    return 1.0 / (length_moments(hf.config.Length(dist="exponential", mean=MEAN_TOKENS))[0] * STEP_S)


def mm1(load):
    return queue_scenario(load * mm1_rate(), {"dist": "exponential", "mean": MEAN_TOKENS})


def expected_t(rho, arrivals, ca2=1.0, cs2=1.0):
    """Mean of the statistic for an overloaded queue (increments independent, drift and variance per unit time)."""
    return (1 - 1 / rho) * math.sqrt(arrivals / (ca2 + cs2 / rho))


LLM = {"prompt_tokens": 512, "output_tokens": 128}  # benchmarks/bench_simulate.py's fixed lengths


def llm(rate):
    return {
        "engines": [{"name": "llama8b", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "ideal"}],
        "workload": {"rate_per_s": rate, "classes": [LLM]},
    }


@pytest.fixture(scope="module")
def llm_capacity():
    """Completed requests per second with the engine flooded (20,000 arrivals at 10,000/s), as the benchmark."""
    ds = hf.simulate(llm(10_000.0), n_requests=20_000, seed=99, progress=False)
    assert bool(ds.unstable.item()) and float(ds.overload_statistic.item()) > 50
    return float(ds.throughput_request_per_s.item())


def test_the_statistic_by_brute_force():
    rng = np.random.default_rng(5)
    arrival = np.cumsum(rng.exponential(1.0, 500))
    done = 1.3 * arrival + rng.exponential(1.0, 500)  # completions fall behind: N grows ~ 0.23 per unit time
    done[rng.random(500) < 0.1] = np.nan  # some never complete
    admitted = rng.random(500) > 0.05  # some rejected: never in the system
    done[~admitted] = np.nan
    lo, hi = arrival[250], arrival[-1]
    edges = lo + (hi - lo) * np.arange(OVERLOAD_BATCHES + 1) / OVERLOAD_BATCHES
    brute = np.array([np.sum(admitted & (arrival <= t)) - np.sum(done <= t) for t in edges])
    np.testing.assert_array_equal(in_system(arrival, done, admitted, edges), brute)
    d = np.diff(brute)
    t, growth = overload_test(arrival, done, admitted)
    assert t == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(OVERLOAD_BATCHES)), rel=1e-12)
    assert growth == pytest.approx((brute[-1] - brute[0]) / (hi - lo), rel=1e-12)
    assert t > T_CRITICAL
    # deterministic: a constant number in system is no growth; a steady climb is infinitely significant
    even = np.arange(100.0)
    assert overload_test(even, even + 0.5, np.ones(100, bool))[0] == 0.0
    assert overload_test(even, 2 * even + 0.5, np.ones(100, bool))[0] > T_CRITICAL
    nothing_done = np.full(81, np.nan)  # arrivals 0..80 s: the window 40..80 s cut in 2 s spans, 2 arrivals each
    assert overload_test(np.arange(81.0), nothing_done, np.ones(81, bool)) == (math.inf, 1.0)
    # too few arrivals in the window: no test
    assert math.isnan(overload_test(even[:60], even[:60] + 0.5, np.ones(60, bool))[0])


def test_the_critical_value_is_student_t():
    from scipy import stats

    from hermes_fast import validity

    assert validity._T_CRITICAL == pytest.approx(stats.t.ppf(0.99, OVERLOAD_BATCHES - 1)) == pytest.approx(T_CRITICAL)


def test_mm1_and_llm_at_four_loads(llm_capacity):
    """The default run's check: 5 seeds at each load on M/M/1 and 3 on the LLM loop."""
    for load, n in [(0.9, 10_000), *DETECT.items()]:
        ds = hf.simulate(mm1(load), n_requests=n, seed=11, replicates=5, progress=False)
        flagged = int(ds.unstable.sum())
        if load < 1:
            assert flagged == 0 and float(np.abs(ds.overload_statistic).max()) < 1.5
        else:
            assert flagged >= 4, (load, ds.overload_statistic.values)
        if load == 2.0:  # twice the service rate: the queue grows at lambda - mu = mu
            assert float(ds.backlog_growth_request_per_s.mean()) == pytest.approx(mm1_rate(), rel=0.1)
    for load, n in [(0.9, 10_000), *DETECT.items()]:
        ds = hf.simulate(llm(load * llm_capacity), n_requests=n, seed=12, replicates=3, progress=False)
        assert bool(ds.unstable.any()) == (load > 1), (load, ds.overload_statistic.values)
        assert bool(ds.unstable.all()) == (load > 1)
    assert not bool(ds.valid.any()) and set(np.unique(ds.invalid_reason)) == {1}  # overloaded: invalid


@pytest.mark.slow
@pytest.mark.parametrize("system", ["mm1", "llm"])
def test_false_alarms_and_detection_over_50_seeds(system, llm_capacity):
    """At 0.9 x capacity at most 2 of 50 runs flagged (the rate is at most 1%: P(3 or more) = 1.4%); at 1.05,
    1.1 and 2 x capacity at least 45 of 50 with the DETECT request counts; on M/M/1 the mean statistic within
    20% of its closed form."""
    make = mm1 if system == "mm1" else (lambda load: llm(load * llm_capacity))
    ds = hf.simulate(make(0.9), n_requests=10_000, seed=21, replicates=50, progress=False)
    assert int(ds.unstable.sum()) <= 2
    for load, n in DETECT.items():
        ds = hf.simulate(make(load), n_requests=n, seed=22, replicates=50, progress=False)
        assert int(ds.unstable.sum()) >= 45, (system, load, int(ds.unstable.sum()))
        if system == "mm1":
            got = float(ds.overload_statistic.mean())
            assert got == pytest.approx(expected_t(load, n / 2), rel=0.2), (load, got)


@pytest.mark.slow
def test_stable_near_capacity_and_bursty_arrivals_do_not_alarm():
    """rho = 0.98 (relaxation time ~ 20,000 service times) and gamma arrivals with cv 2: 0 of 50 flagged."""
    ds = hf.simulate(mm1(0.98), n_requests=20_000, seed=23, replicates=50, progress=False)
    assert int(ds.unstable.sum()) <= 2
    bursty = mm1(0.8)
    bursty["workload"]["arrival"] = {"process": "gamma", "cv": 2.0}
    ds = hf.simulate(bursty, n_requests=20_000, seed=24, replicates=50, progress=False)
    assert int(ds.unstable.sum()) <= 2
