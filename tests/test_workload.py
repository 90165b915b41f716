"""Workload draws: length laws against their stated moments, arrival processes, trace replay, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import hermes_fast as hf
from hermes_fast import load_scenario
from hermes_fast.arrivals import draw_arrivals
from hermes_fast.config import Arrival, ConfigError, Length, RequestClass, Trace
from hermes_fast.length_draws import draw_lengths, length_min, length_moments
from hermes_fast.workload import draw_workload, rng_for

N = 400_000

LENGTHS = [
    Length(dist="fixed", value=77),
    Length(dist="uniform", min=10, max=20),
    Length(dist="normal", mean=100, std=80, max=300),
    Length(dist="lognormal", mean=512, cv=1.0),
    Length(dist="lognormal", mean=128, std=64, min=16, max=1024),
    Length(dist="exponential", mean=300),
    Length(dist="zipf", alpha=1.3, max=4096),
]


@pytest.mark.parametrize("lg", LENGTHS, ids=lambda lg: lg.dist)
def test_draws_match_the_stated_moments(lg):
    mean, var = length_moments(lg)
    x = draw_lengths(lg, N, rng_for(3))
    assert x.dtype == np.int64
    assert x.min() >= lg.min and (lg.max is None or x.max() <= lg.max)
    se = np.sqrt(var / N)
    assert abs(x.mean() - mean) <= 5 * se + 1e-12
    if var > 0:
        assert x.var() == pytest.approx(var, rel=0.05)


def test_moments_by_hand():
    assert length_moments(Length(dist="uniform", min=1, max=3)) == (2.0, pytest.approx(2 / 3))
    assert length_moments(7) == (7.0, 0.0)
    k = np.arange(1, 4)
    w = k**-2.0
    p = w / w.sum()
    m = (k * p).sum()
    got = length_moments(Length(dist="zipf", alpha=2.0, max=3))
    assert got == (pytest.approx(m), pytest.approx(((k - m) ** 2 * p).sum()))
    # an untruncated lognormal keeps its mean (rounding to whole tokens moves it by << 1 token)
    assert length_moments(Length(dist="lognormal", mean=512, cv=1.0))[0] == pytest.approx(512, abs=0.01)


def test_empirical_lengths_resample_a_csv_column(tmp_path):
    p = tmp_path / "lengths.csv"
    p.write_text("prompt,other\n10,a\n20,b\n20,c\n50,d\n")
    lg = Length(dist="empirical", path=str(p), column="prompt")
    assert length_moments(lg) == (25.0, pytest.approx(np.var([10, 20, 20, 50])))
    x = draw_lengths(lg, 10_000, rng_for(1))
    assert set(np.unique(x)) == {10, 20, 50}


@pytest.mark.parametrize(
    ("arrival", "cv"),
    [
        (Arrival(process="poisson"), 1.0),
        (Arrival(process="gamma", cv=2.5), 2.5),
        (Arrival(process="gamma", cv=0.3), 0.3),
        (Arrival(process="deterministic"), 0.0),
        (Arrival(process="mmpp", burst_factor=5, burst_mean_s=2, calm_mean_s=18), None),
        (Arrival(process="sinusoid", amplitude=0.8, period_s=30), None),
    ],
    ids=lambda a: a.process if isinstance(a, Arrival) else "",
)
def test_arrival_rate_and_gap_variability(arrival, cv):
    t = draw_arrivals(arrival, 20.0, N, rng_for(5))
    assert np.all(np.diff(t) >= 0) and t[0] > 0
    gaps = np.diff(t)
    # (an MMPP's rate estimate also varies with its ~1000 state cycles)
    assert 1 / gaps.mean() == pytest.approx(20.0, rel=0.05 if arrival.process == "mmpp" else 0.01)
    if cv is not None:
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.03, abs=1e-9)
    else:  # bursty: more variable than Poisson
        assert gaps.std() / gaps.mean() > 1.05


def test_sinusoid_rate_follows_the_wave():
    a = Arrival(process="sinusoid", amplitude=0.8, period_s=100)
    t = draw_arrivals(a, 50.0, N, rng_for(2))
    phase = (t % 100) / 100
    peak = np.count_nonzero((phase > 0.2) & (phase < 0.3))  # around sin = 1
    trough = np.count_nonzero((phase > 0.7) & (phase < 0.8))  # around sin = -1
    assert peak / trough == pytest.approx(1.78 / 0.22, rel=0.1)


def test_azure_trace_replay_with_rescaling(tmp_path):
    p = tmp_path / "azure.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.5936540,879,55\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.1753400,91,16\n"
    )
    trace = Trace(path=str(p))
    wl = load_scenario(
        {
            "engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
            "workload": {"arrival": {"process": "trace", "trace": {"path": str(p)}}},
        }
    ).workload
    d = draw_workload(wl, 4, rng_for(0))
    np.testing.assert_allclose(d.arrival_s, [0.0, 0.913064, 4.314579, 4.494750], atol=1e-6)
    np.testing.assert_array_equal(d.prompt_tokens, [374, 879, 396, 91])
    np.testing.assert_array_equal(d.output_tokens, [44, 55, 109, 16])
    # more requests than rows: the trace repeats after its span plus one mean gap
    d8 = draw_workload(wl, 8, rng_for(0))
    span = 4.494750 + 4.494750 / 3
    np.testing.assert_allclose(d8.arrival_s[4:], d.arrival_s + span, atol=1e-6)
    # rescaled to 10 requests/s: 3 gaps over 0.3 s
    wl2 = load_scenario(
        {
            "engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
            "workload": {
                "rate_per_s": 10,
                "arrival": {"process": "trace", "trace": {"path": str(p), "rescale_to_rate": True}},
            },
        }
    ).workload
    assert draw_workload(wl2, 4, rng_for(0)).arrival_s[-1] == pytest.approx(0.3)
    assert trace.time_column == "TIMESTAMP"


def test_class_mix_follows_weights():
    wl = load_scenario(
        {
            "engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
            "workload": {
                "classes": [
                    {"name": "a", "weight": 3, "prompt_tokens": 10, "output_tokens": 1},
                    {"name": "b", "weight": 1, "prompt_tokens": 20, "output_tokens": 2},
                ]
            },
        }
    ).workload
    d = draw_workload(wl, 100_000, rng_for(1))
    share = np.mean(d.request_class == 0)
    assert share == pytest.approx(0.75, abs=0.01)
    np.testing.assert_array_equal(d.prompt_tokens, np.where(d.request_class == 0, 10, 20))


def test_draws_are_reproducible_per_point_and_replicate():
    wl = load_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]}).workload
    a = draw_workload(wl, 1000, rng_for(9, 2, 1))
    b = draw_workload(wl, 1000, rng_for(9, 2, 1))
    c = draw_workload(wl, 1000, rng_for(9, 2, 0))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


@pytest.mark.parametrize(
    ("mapping", "path"),
    [
        ({"dist": "fixed"}, "length.value"),
        ({"dist": "normal", "mean": 10}, "length.std"),
        ({"dist": "normal", "mean": 10, "std": 1, "cv": 0.1}, "length.std"),
        ({"dist": "uniform", "min": 10, "max": 5}, "length.max"),
        ({"dist": "lognormal", "mean": 5, "cv": 1, "min": 10}, "length.mean"),
        ({"dist": "zipf", "alpha": 1.1}, "length.max"),
        ({"dist": "empirical", "path": "x.csv"}, "length.column"),
        ({"dist": "gauss", "mean": 1}, "length.dist"),
    ],
)
def test_bad_lengths(mapping, path):
    from hermes_fast.config import from_mapping

    with pytest.raises(ConfigError) as e:
        from_mapping(Length, mapping, "length")
    assert e.value.path == path


def test_bad_empirical_files(tmp_path):
    missing = Length(dist="empirical", path=str(tmp_path / "none.csv"), column="x")
    with pytest.raises(ConfigError, match="an existing CSV file"):
        draw_lengths(missing, 10, rng_for(0))
    p = tmp_path / "bad.csv"
    p.write_text("x,y\n5,1\n-3,2\n")
    with pytest.raises(ConfigError) as e:
        draw_lengths(Length(dist="empirical", path=str(p), column="x"), 10, rng_for(0), "workload.prompt")
    assert e.value.path == f"workload.prompt ({p} row 3, column x)" and e.value.value == "-3"
    with pytest.raises(ConfigError, match="a column of"):
        draw_lengths(Length(dist="empirical", path=str(p), column="z"), 10, rng_for(0))


def test_mmpp_needs_a_positive_calm_rate():
    with pytest.raises(ConfigError) as e:
        load_scenario(
            {
                "engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
                "workload": {"arrival": {"process": "mmpp", "burst_factor": 20, "burst_mean_s": 1, "calm_mean_s": 9}},
            }
        )
    assert e.value.path == "workload.arrival.burst_factor"


def test_public_api_exports():
    assert hf.length_moments is length_moments and callable(hf.simulate) and callable(hf.confidence_interval)


# ---------------------------------------------------------------- laws and traces that cannot be drawn (issue 21)


def test_a_law_that_cannot_be_drawn_is_an_error_not_a_hang():
    """Built without validation (a Python object), cv = 1e-300 squares to 0: the lognormal's sigma is 0 and
    scipy's law is NaN everywhere; the draw (once cast: -9.2e18 tokens) must fail, naming the field."""
    bad = Length(dist="lognormal", mean=500, cv=1e-300)
    with pytest.raises(ConfigError) as e:
        draw_lengths(bad, 10, rng_for(0), "workload.classes[0].prompt_tokens")
    assert e.value.path == "workload.classes[0].prompt_tokens" and e.value.value is bad
    assert "finite distribution function" in e.value.expected
    sc = load_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]})
    workload = dataclasses.replace(sc.workload, classes=(RequestClass(output_tokens=bad),))
    with pytest.raises(ConfigError) as e:  # at load time in simulate, before any draw
        hf.simulate(dataclasses.replace(sc, workload=workload), n_requests=10)
    assert e.value.path == "workload.classes[0].output_tokens"
    with pytest.raises(ConfigError) as e:  # no mass inside [min, max]
        length_min(Length(dist="exponential", mean=1, min=200), "x")
    assert e.value.path == "x.mean" and e.value.expected == "a law with probability mass inside [min, max]"


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # (quad on a cv-100 lognormal)
def test_draws_stay_within_min_and_max_for_extreme_laws():
    """Without a max, draws stop at 1e9 tokens, and the stated moments are those of the laws truncated there."""
    for lg in (
        Length(dist="lognormal", mean=1e9, cv=100),
        Length(dist="lognormal", mean=2, cv=1e-6),
        Length(dist="normal", mean=1, std=1e9),
        Length(dist="normal", mean=1e9 - 1, std=1e8),
        Length(dist="exponential", mean=1e9),
    ):
        x = draw_lengths(lg, 20_000, rng_for(1))
        assert x.min() >= max(lg.min, length_min(lg)) and x.max() <= (lg.max or 10**9), lg
        mean, var = length_moments(lg)
        assert abs(x.mean() - mean) < 5 * np.sqrt(var / x.size) + 1e-9 * mean, lg


def test_length_min_is_the_smallest_draw(tmp_path):
    p = tmp_path / "lengths.csv"
    p.write_text("n\n40\n7\n90\n")
    assert length_min(300) == 300
    assert length_min(Length(dist="uniform", min=10, max=20)) == 10
    assert length_min(Length(dist="lognormal", mean=500, cv=1, min=30)) == 30
    assert length_min(Length(dist="empirical", path=str(p), column="n")) == 7
    assert draw_lengths(Length(dist="uniform", min=10, max=20), 5000, rng_for(0)).min() == 10


def test_token_counts_in_csv_files_are_bounded(tmp_path):
    p = tmp_path / "huge.csv"
    p.write_text("x\n5\n1e30\n")
    with pytest.raises(ConfigError) as e:
        draw_lengths(Length(dist="empirical", path=str(p), column="x"), 10, rng_for(0), "workload.prompt_tokens")
    assert e.value.path == f"workload.prompt_tokens ({p} row 3, column x)" and e.value.value == "1e30"
    assert e.value.expected == "a positive integer token count <= 1e+09"


def _trace_workload(tmp_path, times):
    p = tmp_path / "trace.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},100,10\n" for t in times))
    sc = load_scenario(
        {
            "engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}],
            "workload": {"arrival": {"process": "trace", "trace": {"path": str(p)}}},
        }
    )
    return sc.workload, p


@pytest.mark.parametrize(
    ("times", "row", "value", "expected"),
    [
        (["0.0", "1.5", "-2.0"], 4, "-2.0", "a time >= 0"),
        (["0.0", "2.0", "1.0", "3.0"], 4, "1.0", "times in ascending order (row 3 has 2.0)"),
        (["0.0", "nan"], 3, "nan", "a finite time"),
        (["0.0", "inf"], 3, "inf", "a finite time"),
        (["2023-11-16 18:15:47", "2023-11-16 18:15:46"], 3, "2023-11-16 18:15:46",
         "times in ascending order (row 2 has 2023-11-16 18:15:47)"),
        (["2023-11-16 18:15:47", ""], 3, "", "a finite time"),
    ],
    ids=["negative", "out-of-order", "nan", "inf", "dates-out-of-order", "empty-date"],
)  # fmt: skip
def test_trace_times_are_finite_non_negative_and_sorted(tmp_path, times, row, value, expected):
    wl, p = _trace_workload(tmp_path, times)
    with pytest.raises(ConfigError) as e:
        draw_workload(wl, 5, rng_for(0))
    assert e.value.path == f"workload.arrival.trace.time_column ({p} row {row}, column TIMESTAMP)"
    assert (e.value.value, e.value.expected) == (value, expected)
    assert str(p) in str(e.value)


def test_a_sorted_trace_with_equal_times_replays_in_file_order(tmp_path):
    wl, _ = _trace_workload(tmp_path, ["1.0", "1.0", "2.5"])
    np.testing.assert_array_equal(draw_workload(wl, 3, rng_for(0)).arrival_s, [0.0, 0.0, 1.5])
