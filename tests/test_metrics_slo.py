"""slo_goodput: goodput under other SLOs from the same runs' per-request times equals the summary's at the
scenario's own targets, and grows with looser targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hermes_fast as hf

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["serving_chunked", "pipeline_reasoning", "serving_disaggregated"])
def test_equals_the_summary_at_the_scenarios_targets(name):
    sc = hf.load_scenario(EXAMPLES / f"{name}.yaml")
    ds = hf.simulate(sc, n_requests=400, seed=2, replicates=2, keep_requests=True)  # (serving_chunked: 200 warm-up)
    assert np.isfinite(ds.goodput_request_per_s.values).all()
    slo = sc.serving.slo
    g = hf.slo_goodput(ds, [slo.ttft_s], [slo.tpot_s], warmup_requests=sc.serving.warmup_requests)
    assert g.goodput_request_per_s.dims == ("ttft_slo_s", "tpot_slo_s", "replicate")
    np.testing.assert_allclose(g.goodput_request_per_s[0, 0].values, ds.goodput_request_per_s.values, rtol=1e-12)
    np.testing.assert_allclose(g.slo_attainment[0, 0].values, ds.slo_attainment.values, rtol=1e-12)
    assert g.goodput_request_per_s.attrs["units"] == "request/s"


def test_tight_targets_by_hand_and_monotone():
    sc = {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm"}],
        "workload": {"rate_per_s": 40.0, "prompt_tokens": 1024, "output_tokens": 64},
    }
    ds = hf.simulate(sc, n_requests=400, seed=1, keep_requests=True).isel(replicate=0)
    ttft_targets = np.quantile((ds.request_first_token_s - ds.request_arrival_s).values, [0.25, 0.5, 0.9])
    g = hf.slo_goodput(ds, ttft_s=ttft_targets)
    assert g.slo_attainment.dims == ("ttft_slo_s",)
    ttft = (ds.request_first_token_s - ds.request_arrival_s).values
    by_hand = [np.mean(ttft <= t) for t in ttft_targets]
    np.testing.assert_allclose(g.slo_attainment.values, by_hand)  # every request completed here
    window = float(ds.request_completion_s.max() - ds.request_arrival_s[0])
    np.testing.assert_allclose(g.goodput_request_per_s.values, np.array(by_hand) * 400 / window)
    both = hf.slo_goodput(ds, ttft_s=[0.05, 0.1, 1.0], tpot_s=[0.005, 0.01, 0.1])
    v = both.goodput_request_per_s.values
    assert (np.diff(v, axis=0) >= 0).all() and (np.diff(v, axis=1) >= 0).all() and v[0, 0] < v[-1, -1]
    with pytest.raises(ValueError, match="keep_requests"):
        hf.slo_goodput(hf.simulate(sc, n_requests=50), ttft_s=[1.0])
