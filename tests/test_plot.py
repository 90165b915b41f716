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


RATES = [4.0, 16.0, 48.0, 400.0]  # 400/s overloads the engine: invalid points


@pytest.fixture(scope="module")
def ds():
    grid = {"workload.rate_per_s": RATES, "engines.main.batching.policy": ["continuous", "chunked"]}
    return hf.sweep(chat(), grid, n_requests=300, replicates=2, seed=1)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_the_fixture_has_invalid_points(ds):
    valid = ds.valid.all("replicate")
    assert not valid.sel({"workload.rate_per_s": 400.0}).any() and valid.sel({"workload.rate_per_s": 4.0}).all()


def test_pareto_front(ds):
    ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd")
    assert ax.get_xlabel() == "time to first token (quantile=0.99) [ms]"
    assert ax.get_ylabel() == "output tokens per dollar [token/USD]"
    with pytest.warns(UserWarning, match="left out 2 invalid point"):
        mask = hf.pareto(ds, minimize=["ttft_s[quantile=0.99]"], maximize=["output_token_per_usd"])
    assert not mask.sel({"workload.rate_per_s": 400.0}).any()  # overloaded: cheap per token, but left out
    front = ax.lines[0].get_xydata()
    x = ds.ttft_s.sel(quantile=0.99).mean("replicate").values[mask.values] * 1e3  # ms
    np.testing.assert_allclose(np.sort(front[:, 0]), np.sort(x))
    valid = ds.valid.all("replicate").values
    dominated, invalid = ax.collections
    assert len(dominated.get_offsets()) == valid.sum() - mask.values.sum()
    assert len(invalid.get_offsets()) == 2 and len(invalid.get_facecolors()) == 0  # hollow
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["dominated", "invalid (2)", "Pareto front"]
    assert ax.get_title() == f"scenario: Pareto front, {mask.values.sum()} of 8 points (2 invalid left out)"
    # each front point labelled with its coordinates (rate, policy)
    texts = sorted(t.get_text() for t in ax.texts)
    rates, policies = np.nonzero(mask.values)
    pol = ds["engines.main.batching.policy"].values
    assert texts == sorted(f"{RATES[i]:g}, {pol[j]}" for i, j in zip(rates, policies, strict=True))


def test_pareto_front_with_hue_and_invalid_points_included(ds):
    ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd", hue="engines.main.batching.policy")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["continuous", "chunked", "invalid (2)", "Pareto front"]
    assert ax.get_legend().get_title().get_text() == "batching policy (main)"
    assert [len(c.get_offsets()) for c in ax.collections] == [3, 3, 2]
    ax = plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd", include_invalid=True)
    assert "invalid left out" not in ax.get_title()
    with pytest.raises(ConfigError, match="hue"):
        plot.pareto_front(ds, "ttft_s[quantile=0.99]", "output_token_per_usd", hue="pool")


def test_latency_throughput_lines_follow_the_rate(ds):
    _, ax = plt.subplots()
    assert plot.latency_throughput(ds, ax=ax) is ax
    assert ax.get_xlabel() == "output throughput [token/s]" and ax.get_ylabel().endswith("[ms]")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["continuous", "chunked", "invalid"]
    assert ax.get_legend().get_title().get_text() == "batching policy (main)"
    line = ax.lines[1].get_xydata()
    sel = ds.sel({"engines.main.batching.policy": "chunked"}).mean("replicate")
    np.testing.assert_allclose(line[:, 0], sel.throughput_output_token_per_s.values)
    np.testing.assert_allclose(line[:, 1], sel.ttft_s.sel(quantile=0.99).values * 1e3)
    assert ax.lines[1].get_markevery() == [0, 1, 2]  # filled markers on the valid rates only
    (hollow,) = ax.collections  # the two overloaded points, one per policy
    np.testing.assert_allclose(np.sort(hollow.get_offsets()[:, 1]), np.sort(ds.ttft_s.sel(
        {"quantile": 0.99, "workload.rate_per_s": 400.0}).mean("replicate").values * 1e3))  # fmt: skip
    # p99 TTFT from ~20 ms to seconds: over 1.5 decades, so log scale; the throughput spans less
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert ax.get_title() == "scenario: time to first token vs output throughput"


def test_axis_and_legend_names_come_from_the_schema():
    assert plot.path_label("workload.rate_per_s") == "mean arrival rate [request/s]"
    assert plot.path_label("engines.decode.parallel.tp") == "tensor-parallel degree (decode) [device]"
    assert plot.path_label("serving.slo.ttft_s").endswith("[ms]")
    assert plot.path_label("split") is None and plot.path_label("devices.h100_sxm.price_usd_per_hour") is None


def test_goodput_vs_slo():
    grid = {"serving.slo.ttft_s": [0.02, 0.03, 0.05, 2.0], "engines.main.batching.policy": ["continuous", "chunked"]}
    ds = hf.sweep({**chat(), "workload": {**chat()["workload"], "rate_per_s": 30.0}}, grid, n_requests=300)
    ax = plot.goodput_vs_slo(ds, "serving.slo.ttft_s")
    assert ax.get_ylabel() == "goodput [request/s]"
    assert ax.get_xlabel() == plot.path_label("serving.slo.ttft_s") == "time-to-first-token target [ms]"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [20.0, 30.0, 50.0, 2000.0])  # ms: two decades, log scale
    assert ax.get_xscale() == "log"
    y = ax.lines[0].get_ydata()
    np.testing.assert_allclose(y, ds.goodput_request_per_s.isel({"engines.main.batching.policy": 0}).mean("replicate"))
    assert y[-1] > 1.2 * y[0]  # a 20 ms TTFT target (about the p50) fails many; 2 s fails none


def test_stage_breakdown_bars_add_up_to_e2e():
    grid = {"workload.classes.rag.pipeline.embed.engine": ["e5-base-cpu", "e5-base-gpu"]}
    ds = hf.sweep(EXAMPLES / "pipeline_rag.yaml", grid, n_requests=200, seed=1)
    ax = plot.stage_breakdown(ds)
    assert ax.get_ylabel() == "time in stage [ms]"
    assert ax.get_xlabel() == "engine that runs a model stage (rag, embed)"
    stages = list(ds.stage.values)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == stages
    tops = np.zeros(2)
    for bars in ax.containers:
        tops = np.maximum(tops, [b.get_y() + b.get_height() for b in bars])
    np.testing.assert_allclose(tops, ds.e2e_mean_s.mean("replicate").values * 1e3, rtol=1e-9)
    embed = [b.get_height() for b in ax.containers[stages.index("embed")]]
    assert embed[0] > embed[1]  # embedding on the CPU takes longer than on the H100


def test_latency_cdf_from_requests_and_from_quantiles(ds):
    def run(rate):
        return hf.simulate({**chat(), "workload": {**chat()["workload"], "rate_per_s": rate}}, 400, keep_requests=True)

    runs = {f"{r:g}/s": run(r) for r in (5.0, 40.0)}
    ax = plot.latency_cdf(runs, "e2e")
    assert ax.get_xlabel() == "end-to-end latency [ms]" and ax.get_ylabel() == "fraction of requests [1]"
    xy = ax.lines[0].get_xydata()
    d = runs["5/s"]
    np.testing.assert_allclose(xy[:, 0], np.sort((d.request_completion_s - d.request_arrival_s).values.ravel()) * 1e3)
    assert xy[-1, 1] == 1.0 and np.all(np.diff(xy[:, 1]) > 0)
    ax = plot.latency_cdf(ds.sel({"engines.main.batching.policy": "chunked"}), "ttft")
    assert len(ax.lines) == 4 and ax.get_ylabel() == "quantile over requests [1]"
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [0.5, 0.9, 0.95, 0.99])
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "400.0 (invalid)"
    assert ax.lines[3].get_linestyle() == "--" and ax.lines[2].get_linestyle() == "-"
    with pytest.raises(ConfigError):
        plot.latency_cdf(runs, "itl")


def test_heatmap_cells_are_the_values(ds):
    ax = plot.heatmap(ds, "busy_fraction[pool=main]", x="workload.rate_per_s", y="engines.main.batching.policy")
    mesh = ax.collections[0]
    expected = ds.busy_fraction.sel(pool="main").mean("replicate").transpose("engines.main.batching.policy", ...).values
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(expected.shape), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4.0", "16.0", "48.0", "400.0"]
    assert ax.get_xlabel() == "mean arrival rate [request/s]" and ax.get_ylabel() == "batching policy (main)"
    assert ax.figure.axes[-1].get_ylabel() == "pool busy fraction (pool=main) [1]"
    assert len(ax.texts) == 8
    hatched = [p for p in ax.patches if p.get_hatch() == "xx"]  # the two overloaded cells (column 3)
    assert sorted(p.get_xy() for p in hatched) == [(3, 0), (3, 1)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["invalid"]
    ax = plot.heatmap(ds, "ttft_s[quantile=0.99]", x="workload.rate_per_s", y="engines.main.batching.policy")
    assert type(ax.collections[0].norm).__name__ == "LogNorm"  # ms to seconds: a log colour scale


def test_leftover_dims_are_refused(ds):
    with pytest.raises(ConfigError, match="select or average"):
        plot.heatmap(ds, "ttft_s", x="workload.rate_per_s", y="engines.main.batching.policy")
