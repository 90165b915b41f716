"""Plot helpers: each returns its Axes, labels carry the units attrs, and the data drawn is the Dataset's."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import hermes_fast as hf  # noqa: E402
from hermes_fast import plot  # noqa: E402
from hermes_fast.config import ConfigError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def chat():
    return {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm"}],
        "workload": {"rate_per_s": 5.0, "prompt_tokens": 512, "output_tokens": 64},
        "serving": {"slo": {"ttft_s": 0.1, "tpot_s": 0.02}},
    }


@pytest.fixture(scope="module")
def ds():
    grid = {"workload.rate_per_s": [4.0, 16.0, 48.0], "engines.main.batching.policy": ["continuous", "chunked"]}
    return hf.sweep(chat(), grid, n_requests=300, replicates=2, seed=1)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_pareto_front(ds):
    ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd")
    assert ax.get_xlabel() == "time to first token (quantile=0.99) [s]"
    assert ax.get_ylabel() == "output tokens per dollar [token/USD]"
    mask = hf.pareto(ds, minimize=["ttft_s[quantile=0.99]"], maximize=["output_token_per_usd"])
    front = ax.lines[0].get_xydata()
    x = ds.ttft_s.sel(quantile=0.99).mean("replicate").values[mask.values]
    np.testing.assert_allclose(np.sort(front[:, 0]), np.sort(x))
    assert len(ax.collections[0].get_offsets()) == 6 - mask.values.sum()


def test_latency_throughput_lines_follow_the_rate(ds):
    _, ax = plt.subplots()
    assert plot.latency_throughput(ds, ax=ax) is ax
    assert ax.get_xlabel() == "output throughput [token/s]" and ax.get_ylabel().endswith("[s]")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["continuous", "chunked"]
    line = ax.lines[1].get_xydata()
    sel = ds.sel({"engines.main.batching.policy": "chunked"}).mean("replicate")
    np.testing.assert_allclose(line[:, 0], sel.throughput_output_token_per_s.values)
    np.testing.assert_allclose(line[:, 1], sel.ttft_s.sel(quantile=0.99).values)


def test_goodput_vs_slo():
    grid = {"serving.slo.ttft_s": [0.02, 0.03, 0.05, 2.0], "engines.main.batching.policy": ["continuous", "chunked"]}
    ds = hf.sweep({**chat(), "workload": {**chat()["workload"], "rate_per_s": 30.0}}, grid, n_requests=300)
    ax = plot.goodput_vs_slo(ds, "serving.slo.ttft_s")
    assert ax.get_ylabel() == "goodput [request/s]" and ax.get_xlabel() == "serving.slo.ttft_s"
    y = ax.lines[0].get_ydata()
    np.testing.assert_allclose(y, ds.goodput_request_per_s.isel({"engines.main.batching.policy": 0}).mean("replicate"))
    assert y[-1] > 1.2 * y[0]  # a 20 ms TTFT target (about the p50) fails many; 2 s fails none


def test_stage_breakdown_bars_add_up_to_e2e():
    grid = {"workload.classes.rag.pipeline.embed.engine": ["e5-base-cpu", "e5-base-gpu"]}
    ds = hf.sweep(EXAMPLES / "pipeline_rag.yaml", grid, n_requests=200, seed=1)
    ax = plot.stage_breakdown(ds)
    assert ax.get_ylabel() == "time in stage [s]"
    assert ax.get_xlabel() == "workload.classes.rag.pipeline.embed.engine"
    stages = list(ds.stage.values)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == stages
    tops = np.zeros(2)
    for bars in ax.containers:
        tops = np.maximum(tops, [b.get_y() + b.get_height() for b in bars])
    np.testing.assert_allclose(tops, ds.e2e_mean_s.mean("replicate").values, rtol=1e-9)
    embed = [b.get_height() for b in ax.containers[stages.index("embed")]]
    assert embed[0] > embed[1]  # embedding on the CPU takes longer than on the H100


def test_latency_cdf_from_requests_and_from_quantiles(ds):
    def run(rate):
        return hf.simulate({**chat(), "workload": {**chat()["workload"], "rate_per_s": rate}}, 400, keep_requests=True)

    runs = {f"{r:g}/s": run(r) for r in (5.0, 40.0)}
    ax = plot.latency_cdf(runs, "e2e")
    assert ax.get_xlabel() == "end-to-end latency [s]" and ax.get_ylabel() == "fraction of requests [1]"
    xy = ax.lines[0].get_xydata()
    d = runs["5/s"]
    np.testing.assert_allclose(xy[:, 0], np.sort((d.request_completion_s - d.request_arrival_s).values.ravel()))
    assert xy[-1, 1] == 1.0 and np.all(np.diff(xy[:, 1]) > 0)
    ax = plot.latency_cdf(ds.sel({"engines.main.batching.policy": "chunked"}), "ttft")
    assert len(ax.lines) == 3 and ax.get_ylabel() == "quantile over requests [1]"
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [0.5, 0.9, 0.95, 0.99])
    with pytest.raises(ConfigError):
        plot.latency_cdf(runs, "itl")


def test_heatmap_cells_are_the_values(ds):
    ax = plot.heatmap(ds, "busy_fraction[pool=main]", x="workload.rate_per_s", y="engines.main.batching.policy")
    mesh = ax.collections[0]
    expected = ds.busy_fraction.sel(pool="main").mean("replicate").transpose("engines.main.batching.policy", ...).values
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(expected.shape), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4.0", "16.0", "48.0"]
    assert ax.figure.axes[-1].get_ylabel() == "pool busy fraction (pool=main) [1]"
    assert len(ax.texts) == 6


def test_leftover_dims_are_refused(ds):
    with pytest.raises(ConfigError, match="select or average"):
        plot.heatmap(ds, "ttft_s", x="workload.rate_per_s", y="engines.main.batching.policy")
