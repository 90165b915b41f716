"""Every example scenario loads and estimates (zero-load) without error, with finite results; the pipeline
examples simulate a few hundred requests with every request accounted for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hermes_fast as hf

ALL = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
EXAMPLES = [p for p in ALL if not p.stem.startswith("pipeline_")]
PIPELINES = [p for p in ALL if p.stem.startswith("pipeline_")]


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_estimates(path):
    ds = hf.estimate(path)
    assert bool(ds.fits.all())
    for name in ("ttft_s", "tpot_s", "throughput_output_token_per_s"):
        assert np.isfinite(ds[name].values).all() and (ds[name].values > 0).all()


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_example_simulates(path):
    ds = hf.simulate(path, n_requests=300, seed=0).isel(replicate=0)
    assert int(ds.completed_requests) == 300
    assert float(ds.stage_time_s.sum()) == pytest.approx(float(ds.e2e_mean_s), rel=1e-9)
    assert np.isfinite(ds.ttft_s.values).all()


def test_pipeline_examples_cover_the_case_studies():
    assert {p.stem for p in PIPELINES} >= {
        "pipeline_rag",
        "pipeline_reasoning",
        "pipeline_kv_tiers",
        "pipeline_routing",
        "pipeline_disaggregated",
    }


def test_custom_hardware_overrides_apply():
    sc = hf.load_scenario(next(p for p in EXAMPLES if p.stem == "custom_hardware"))
    cat = hf.Catalog.for_scenario(sc)
    derated = cat.device("h100_derated")
    assert derated.memory_bandwidth_bytes_per_s == 3.0e12 and derated.power_peak_w == 500.0
    assert derated.efficiency.memory_efficiency == 0.75
    assert derated.efficiency.compute_efficiency == hf.Catalog().device("h100_sxm").efficiency.compute_efficiency
    assert cat.device("h200_sxm").price_usd_per_hour == 3.5
    assert cat.device("h200_sxm").memory_bytes == hf.Catalog().device("h200_sxm").memory_bytes
    # the H200 engine is memory-bound at batch 16: more bandwidth than the derated H100 per byte read
    ds = hf.estimate(sc)
    assert ds.decode_bound.sel(engine="llama8b-on-h200").item() == 1
