"""The serving simulation against queueing theory, hand computations and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from outcomes import assert_same_outcome

import hermes_fast as hf
from hermes_fast.catalog import preset
from hermes_fast.config import ConfigError
from hermes_fast.kernels.serving import Outcome, Status, new_state, run_loop
from hermes_fast.length_draws import length_moments
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import build_serving, run_serving
from hermes_fast.workload import draw_workload, rng_for

STEP_S = 0.01  # constant iteration time of the queueing scenarios


def queue_scenario(rate, output, replicas=1, scheduler="round_robin", prompt=1):
    """A single-server (or c-server) queue: batch size 1 and a constant step, so a request with O output
    tokens is served in exactly O x STEP_S (its prefill emits the first token)."""
    engine = {  # (the kernels alone: no serving stack around them)
        "name": "server",
        "stack": "ideal",
        "model": "llama-3.1-8b",
        "device": "h100_sxm",
        "fixed_step_time_s": STEP_S,
        "replicas": replicas,
        "scheduler": scheduler,
        "batching": {"max_batch_size": 1},
    }
    return {
        "engines": [engine],
        "workload": {"rate_per_s": rate, "classes": [{"prompt_tokens": prompt, "output_tokens": output}]},
    }


def mean_wait(scenario, n, seed=1, replicates=1):
    ds = hf.simulate(scenario, n_requests=n, seed=seed, replicates=replicates)
    return float(ds.queue_mean_s.mean()), ds


def pk_wait(rate, length):
    """Pollaczek-Khinchine mean wait for service S = O x STEP_S."""
    m, v = length_moments(length)
    es = m * STEP_S
    es2 = (v + m * m) * STEP_S**2
    rho = rate * es
    return rate * es2 / (2 * (1 - rho))


def mm1_wait(rate, mean_tokens):
    """rho / (mu - lambda) for exponential service of the drawn mean (whole tokens, at least 1)."""
    mean_s = length_moments(hf.config.Length(dist="exponential", mean=mean_tokens))[0] * STEP_S
    return rate * mean_s / (1 / mean_s - rate)


def erlang_c_wait(rate, mean_service_s, c):
    a = rate * mean_service_s
    rho = a / c
    terms = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / (math.factorial(c) * (1 - rho))
    p_wait = tail / (terms + tail)
    return p_wait / (c / mean_service_s - rate)


# --- queueing theory: smaller runs with a looser tolerance by default; >= 1e6 requests within 2% when slow

# (scenario at load 0.5, expected mean wait in s)
CASES = {
    "M/D/1": (queue_scenario(50.0, 1), lambda: pk_wait(50.0, 1)),  # = rho S / (2 (1 - rho)) = 5 ms
    "M/G/1": (
        queue_scenario(5.0, {"dist": "uniform", "min": 1, "max": 19}),
        lambda: pk_wait(5.0, hf.config.Length(dist="uniform", min=1, max=19)),
    ),
    # exponential tokens of mean 200 (2 s): whole tokens make it geometric, 0.5% from exponential
    "M/M/1": (queue_scenario(0.25, {"dist": "exponential", "mean": 200}), lambda: mm1_wait(0.25, 200)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_single_server_mean_wait(name):
    scenario, expected = CASES[name]
    got, ds = mean_wait(scenario, 60_000, replicates=2)
    assert got == pytest.approx(expected(), rel=0.06)
    assert int(ds.completed_requests.sum()) == 120_000
    assert not bool(ds.unstable.any())


def test_mm1_is_pk_with_the_drawn_moments():
    # exponential lengths are rounded to whole tokens: P-K with the exact drawn moments vs the M/M/1 formula
    lg = hf.config.Length(dist="exponential", mean=200)
    assert pk_wait(0.25, lg) == pytest.approx(mm1_wait(0.25, 200), rel=0.006)


def test_mmc_erlang_c_with_a_shared_queue():
    c, rate = 3, 4.0  # service 0.5 s: offered load 2 erlangs on 3 servers
    sc = queue_scenario(rate, {"dist": "exponential", "mean": 50}, replicas=c, scheduler="shared_queue")
    got, _ = mean_wait(sc, 60_000, replicates=2)
    mean_s = length_moments(hf.config.Length(dist="exponential", mean=50))[0] * STEP_S
    assert got == pytest.approx(erlang_c_wait(rate, mean_s, c), rel=0.06)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_single_server_mean_wait_million(name):
    scenario, expected = CASES[name]
    got, _ = mean_wait(scenario, 1_000_000, seed=7)
    assert got == pytest.approx(expected(), rel=0.02)


@pytest.mark.slow
def test_mmc_erlang_c_million():
    c, rate = 3, 4.0
    sc = queue_scenario(rate, {"dist": "exponential", "mean": 50}, replicas=c, scheduler="shared_queue")
    got, _ = mean_wait(sc, 1_000_000, seed=7)
    mean_s = length_moments(hf.config.Length(dist="exponential", mean=50))[0] * STEP_S
    assert got == pytest.approx(erlang_c_wait(rate, mean_s, c), rel=0.02)


def test_erlang_c_helper_matches_its_textbook_value():
    # M/M/2 with a = 1: P(wait) = 1/3, Wq = P / (2 mu - lambda) with mu = 1
    assert erlang_c_wait(1.0, 1.0, 2) == pytest.approx((1 / 3) / 1.0)


# --- invariants on a realistic engine


def roofline_scenario(policy="continuous", rate=20.0, **batching):
    return {
        "engines": [
            {
                "name": "e",
                "stack": "ideal",
                "model": "llama-3.1-8b",
                "device": "h100_sxm",
                "batching": {"policy": policy, **batching},
            }
        ],
        "workload": {
            "rate_per_s": rate,
            "classes": [
                {
                    "prompt_tokens": {"dist": "lognormal", "mean": 512, "cv": 1, "max": 6000},
                    "output_tokens": {"dist": "lognormal", "mean": 128, "cv": 1, "max": 2000},
                }
            ],
        },
    }


@pytest.mark.parametrize("policy", ["static", "continuous", "chunked", "mixed"])
def test_conservation_and_ordering(policy):
    ds = hf.simulate(roofline_scenario(policy), n_requests=2000, seed=3, keep_requests=True)
    arrived = int(ds.arrived_requests.item())
    parts = (ds.completed_requests + ds.rejected_requests + ds.dropped_requests + ds.unfinished_requests).item()
    assert parts == arrived == 2000
    done = ds.request_status.values[0] == Status.DONE
    arr = ds.request_arrival_s.values[0][done]
    admit = ds.request_prefill_start_s.values[0][done]
    first = ds.request_first_token_s.values[0][done]
    end = ds.request_completion_s.values[0][done]
    assert np.all(arr <= admit) and np.all(admit < first) and np.all(first <= end)
    assert np.all(ds.ttft_s.values <= ds.e2e_s.values)


@pytest.mark.parametrize(
    "scenario",
    [
        roofline_scenario("continuous"),
        roofline_scenario("chunked", chunk_size=256),
        roofline_scenario("mixed"),
        roofline_scenario("static", max_batch_size=16),
        roofline_scenario("continuous", rate=60.0, block_size_tokens=32),
    ],
    ids=["continuous", "chunked", "mixed", "static", "continuous-heavy"],
)
def test_fast_forward_equals_per_iteration(scenario):
    resolved = resolve_scenario(scenario)
    sc = resolved.scenario
    setup = build_serving(resolved)
    draws = draw_workload(sc.workload, 1500, rng_for(11))
    a = run_serving(setup, draws, fast_forward=True)
    b = run_serving(setup, draws, fast_forward=False)
    assert_same_outcome(a, b)
    assert a.events < b.events


@pytest.mark.parametrize("horizon_s", [math.inf, 30.0])
def test_pausing_the_loop_for_progress_changes_nothing(horizon_s):
    """Slices of 250 arrivals with progress reports give the uninterrupted run's outcome bit for bit (also
    when the horizon ends the run part-way)."""
    resolved = resolve_scenario(roofline_scenario("chunked", rate=60.0, chunk_size=256))
    setup = build_serving(resolved)
    draws = draw_workload(resolved.scenario.workload, 2000, rng_for(5))
    outcomes, reports = [], []
    for progress in (None, reports.append):
        state = new_state(
            setup.params, setup.pool_int, setup.pool_float, setup.replica_pool, draws.arrival_s,
            draws.prompt_tokens, draws.output_tokens, draws.route_u, horizon_s,
        )  # fmt: skip
        run_loop(state, progress=progress, every=250)
        outcomes.append(Outcome.of(state, draws.arrival_s.size))
    assert_same_outcome(*outcomes)
    assert outcomes[0].events == outcomes[1].events and outcomes[0].end_s == outcomes[1].end_s
    assert reports == sorted(reports) and reports[-1] == 2000 and len(reports) >= (8 if horizon_s == math.inf else 2)


def test_attention_work_is_accounted_by_hand():
    """One request at a time (prompt P, output O): the prefill reads its P tokens' KV and computes P(P+1)/2
    causal pairs; decode step j reads P + j tokens."""
    P, O = 300, 40
    sc = queue_scenario(rate=0.5, output=O, prompt=P)
    resolved = resolve_scenario(sc)
    draws = draw_workload(resolved.scenario.workload, 20, rng_for(2))
    run = run_serving(build_serving(resolved), draws)
    assert run.kv_read_tokens.sum() == 20 * (P + sum(P + j for j in range(1, O)))
    assert run.attention_pairs.sum() == 20 * P * (P + 1) / 2
    assert run.emitted_tokens.tolist() == [O] * 20


def test_same_seed_gives_identical_datasets_and_another_seed_does_not():
    a = hf.simulate(roofline_scenario(), n_requests=1500, seed=5, replicates=2, keep_requests=True)
    b = hf.simulate(roofline_scenario(), n_requests=1500, seed=5, replicates=2, keep_requests=True)
    c = hf.simulate(roofline_scenario(), n_requests=1500, seed=6, replicates=2)
    assert a.identical(b)
    assert not np.array_equal(a.ttft_s.values, c.ttft_s.values)
    # replicates are independent streams
    assert not np.array_equal(a.ttft_s.values[0], a.ttft_s.values[1])


def test_throughput_never_exceeds_capacity_and_latency_grows_with_load():
    # constant step, batch <= 8: at most 8 tokens per STEP_S
    def sc(rate):
        s = queue_scenario(rate, 20)
        s["engines"][0]["batching"] = {"max_batch_size": 8, "policy": "mixed"}
        return s

    capacity_tok = 8 / STEP_S
    e2e = []
    for rate in (10.0, 25.0, 35.0):
        ds = hf.simulate(sc(rate), n_requests=4000, seed=2)
        assert float(ds.throughput_output_token_per_s.item()) <= capacity_tok
        e2e.append(ds.e2e_mean_s.item())
    assert e2e[0] < e2e[1] < e2e[2]
    over = hf.simulate(sc(100.0), n_requests=4000, seed=2)
    assert float(over.throughput_output_token_per_s.item()) <= capacity_tok
    assert float(over.throughput_output_token_per_s.item()) > 0.9 * capacity_tok
    assert bool(over.unstable.item())


def kv_pressure(preemption):
    s = roofline_scenario("continuous", rate=30.0)
    s["engines"][0]["memory_utilization"] = 17.92e9 / preset("devices", "h100_sxm").memory_bytes  # ~6,000 tokens of KV
    s["engines"][0]["batching"]["preemption"] = preemption
    s["workload"]["classes"] = [{"prompt_tokens": 300, "output_tokens": {"dist": "uniform", "min": 200, "max": 600}}]
    return s


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_preemption_happens_and_recovers(preemption):
    resolved = resolve_scenario(kv_pressure(preemption))
    sc = resolved.scenario
    setup = build_serving(resolved)
    cap_tokens = setup.pools[0].kv_capacity_tokens
    assert 2000 < cap_tokens < 10000
    ds = hf.simulate(sc, n_requests=600, seed=4, keep_requests=True)
    assert int(ds.preempted_requests.item()) > 10
    assert int(ds.completed_requests.item()) == 600  # every preempted request came back and finished
    assert float(ds.kv_occupancy.max()) <= 1.0
    if preemption == "swap":
        run = run_serving(setup, draw_workload(sc.workload, 600, rng_for(0)))
        assert run.swap_s.sum() > 0


def disaggregated(pairing="global", rate=10.0):
    engine = {"model": "llama-3.1-8b", "device": "h100_sxm"}
    return {
        "engines": [{"name": "p", "replicas": 2, **engine}, {"name": "d", "replicas": 3, **engine}],
        "workload": {"rate_per_s": rate, "classes": [{"prompt_tokens": 1000, "output_tokens": 50}]},
        "serving": {
            "prefill_engine": "p",
            "decode_engine": "d",
            "pairing": pairing,
            "kv_link": {"bandwidth_bytes_per_s": 1.0e9, "latency_s": 1.0e-3},
        },
    }


@pytest.mark.parametrize("pairing", ["global", "local"])
def test_disaggregated_ttft_includes_the_kv_transfer(pairing):
    ds = hf.simulate(disaggregated(pairing), n_requests=300, seed=1, keep_requests=True)
    # Llama-3.1-8B bf16: 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 B = 131072 B per token
    transfer = 1.0e-3 + 1000 * 131072 / 1.0e9
    np.testing.assert_allclose(ds.request_transfer_s.values, transfer, rtol=1e-12)
    gap = ds.request_first_token_s.values - ds.request_prefill_end_s.values
    np.testing.assert_allclose(gap, transfer, rtol=1e-9)
    assert float(ds.ttft_mean_s.item()) > transfer
    dec = ds.request_decode_replica.values[0]
    pre = ds.request_replica.values[0]
    assert set(np.unique(pre)) == {0, 1}
    if pairing == "local":  # prefill replica i hands over to decode replica 2 + i % 3
        np.testing.assert_array_equal(dec, 2 + pre % 3)
    else:
        assert set(np.unique(dec)) == {2, 3, 4}
    assert int(ds.completed_requests.item()) == 300


def test_overload_with_a_queue_limit_drops_and_reports():
    s = roofline_scenario("continuous", rate=2000.0)
    s["engines"][0]["batching"]["max_queue_requests"] = 50
    ds = hf.simulate(s, n_requests=20_000, seed=1)
    assert bool(ds.unstable.item())
    assert int(ds.dropped_requests.item()) > 1000
    assert int(ds.rejected_by_reason.sel(reason="queue_full").item()) == int(ds.dropped_requests.item())
    assert (ds.completed_requests + ds.dropped_requests + ds.rejected_requests).item() == 20_000


def test_overload_with_a_horizon_leaves_unfinished_work():
    s = roofline_scenario("continuous", rate=500.0)
    s["serving"] = {"horizon_s": 5.0}
    ds = hf.simulate(s, n_requests=20_000, seed=1)
    assert bool(ds.unstable.item())
    assert int(ds.unfinished_requests.item()) > 10_000


def test_impossible_requests_are_rejected_with_their_reason():
    """Requests whose drawn lengths pass the model's context or max_batched_tokens are rejected at arrival
    (classes that could only draw such requests are ConfigErrors: test_class_that_can_never_run_...)."""
    s = queue_scenario(1.0, 10)
    s["workload"]["classes"] = [
        {"weight": 1, "prompt_tokens": 100, "output_tokens": 10},
        # past the 131072-token context when the prompt is over 129072
        {"weight": 1, "prompt_tokens": {"dist": "uniform", "min": 8000, "max": 130_000}, "output_tokens": 2000},
        # over max_batched_tokens 8192 when the prompt is over 8192
        {"weight": 1, "prompt_tokens": {"dist": "uniform", "min": 8000, "max": 10_000}, "output_tokens": 10},
    ]
    s["engines"][0]["batching"]["policy"] = "continuous"
    ds = hf.simulate(s, n_requests=300, seed=1, keep_requests=True)
    cls = ds.request_class.values[0]
    status = ds.request_status.values[0]
    prompt = ds.request_prompt_tokens.values[0]
    context = (cls == 1) & (prompt + 2000 > 131072)
    budget = (cls > 0) & (prompt > 8192) & ~context
    assert context.any() and budget.any() and ((cls > 0) & ~context & ~budget).any()
    np.testing.assert_array_equal(status == Status.REJECTED, context | budget)
    assert np.all(status[~(context | budget)] == Status.DONE)
    assert int(ds.rejected_by_reason.sel(reason="context_limit").item()) == np.count_nonzero(context)
    assert int(ds.rejected_by_reason.sel(reason="token_budget").item()) == np.count_nonzero(budget)


def test_warmup_requests_are_left_out():
    s = queue_scenario(20.0, 5)
    s["serving"] = {"warmup_requests": 100}
    ds = hf.simulate(s, n_requests=1000, seed=1)
    assert int(ds.arrived_requests.item()) == 900


def test_energy_and_cost_by_hand():
    ds = hf.simulate(queue_scenario(10.0, 5), n_requests=500, seed=1, keep_requests=True)
    dev = hf.Catalog().device("h100_sxm")
    arrival = ds.request_arrival_s.values[0]
    run_s = ds.request_completion_s.values[0].max() - arrival[0]
    busy_s = 500 * 5 * STEP_S  # one request at a time, 5 iterations each
    energy = dev.power_idle_w * run_s + (dev.power_peak_w - dev.power_idle_w) * busy_s
    assert float(ds.energy_j.item()) == pytest.approx(energy, rel=1e-9)
    assert float(ds.energy_j_per_token.item()) == pytest.approx(energy / 2500, rel=1e-9)
    assert float(ds.cost_usd_per_mtoken.item()) == pytest.approx(dev.price_usd_per_hour * run_s / 3600 / 2500 * 1e6)
    assert float(ds.busy_fraction.item()) == pytest.approx(busy_s / run_s, rel=1e-9)


def test_goodput_counts_requests_within_both_slos():
    s = queue_scenario(6.0, 10)  # rho = 0.6: TTFT = wait + one step
    s["serving"] = {"slo": {"ttft_s": 0.05, "tpot_s": 1.0}}
    ds = hf.simulate(s, n_requests=3000, seed=1, keep_requests=True)
    ttft = ds.request_first_token_s.values[0] - ds.request_arrival_s.values[0]
    share = np.mean(ttft <= 0.05)
    assert 0.1 < share < 0.9
    assert float(ds.slo_attainment.item()) == pytest.approx(share)
    assert float(ds.goodput_request_per_s.item()) == pytest.approx(share * float(ds.throughput_request_per_s.item()))


def test_confidence_interval_over_replicates():
    ds = hf.simulate(queue_scenario(30.0, 10), n_requests=2000, seed=1, replicates=4)
    ci = hf.confidence_interval(ds)
    x = ds.ttft_mean_s.values
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t(0.975, 3) x s / sqrt(4)
    assert float(ci.ttft_mean_s.sel(bound="mean")) == pytest.approx(x.mean())
    assert float(ci.ttft_mean_s.sel(bound="high")) == pytest.approx(x.mean() + half)
    assert ci.ttft_mean_s.attrs["units"] == "s"


def test_every_output_variable_is_registered_with_units():
    ds = hf.simulate(roofline_scenario(), n_requests=300, seed=1, keep_requests=True)
    assert list(ds.pool_role.dims) == ["pool"] and "pool_role" in ds.coords  # a coordinate, as in a sweep
    for name, da in ds.data_vars.items():
        assert da.attrs["units"] and da.attrs["long_name"], name
    for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
        assert ds[name].dims == ("replicate", "quantile")
        assert np.all(np.isfinite(ds[name].values))
        assert np.all(np.diff(ds[name].values[0]) >= 0)


def test_netcdf_roundtrip(tmp_path):
    ds = hf.simulate(n_requests=500, seed=1, keep_requests=True)
    ds.to_netcdf(tmp_path / "sim.nc")
    import xarray as xr

    back = xr.load_dataset(tmp_path / "sim.nc")
    np.testing.assert_array_equal(back.ttft_s.values, ds.ttft_s.values)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"n_requests": 0}, "n_requests"),
        ({"n_requests": 2.5}, "n_requests"),
        ({"replicates": 0}, "replicates"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, path):
    with pytest.raises(ConfigError) as e:
        hf.simulate(**kwargs)
    assert e.value.path == path


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"serving": {"engine": "nope"}}, "serving.engine"),
        ({"serving": {"prefill_engine": "e"}}, "serving.decode_engine"),
        ({"engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "batching": {"policy": "x"}}]},
         "engines[0].batching.policy"),
        ({"engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "scheduler": "fastest"}]},
         "engines[0].scheduler"),
        ({"engines": [{"name": "e", "model": "llama-3.1-8b", "device": "xeon_8480p",
                       "batching": {"preemption": "swap"}}]}, "engines[0].batching.preemption"),
        ({"engines": [{"name": "e", "model": "llama-3.1-70b", "device": "h100_sxm"}]}, "engines[0].parallel"),
        ({"workload": {"rate_per_s": 0}}, "workload.rate_per_s"),
        ({"workload": {"arrival": {"process": "trace"}}}, "workload.arrival.trace"),
    ],
)  # fmt: skip
def test_bad_serving_configs(patch, path):
    s = {**roofline_scenario(), **patch}
    with pytest.raises(ConfigError) as e:
        hf.simulate(s, n_requests=10)
    assert e.value.path == path


def closed_loop(clients, think_s, cv=0.0, **batching):
    sc = roofline_scenario("chunked", chunk_size=512, **batching)
    sc["workload"]["arrival"] = {
        "process": "closed", "concurrency": clients, "think_time_s": think_s, "think_time_cv": cv,
    }  # fmt: skip
    return sc


@pytest.mark.parametrize(("clients", "think_s", "cv"), [(16, 0.5, 0.0), (48, 2.0, 1.0), (8, 0.0, 0.0)])
def test_closed_loop_obeys_littles_law(clients, think_s, cv):
    """N = X (R + Z) over 100,000 requests: X completions per second, R the mean response time, Z the mean think
    time; and never more than N requests in flight."""
    n = 100_000
    sc = closed_loop(clients, think_s, cv)
    ds = hf.simulate(sc, n_requests=n, seed=2, keep_requests=True).isel(replicate=0)
    assert int(ds.completed_requests) == n
    sent, done = ds.request_sent_s.values, ds.request_completion_s.values
    x = float(ds.throughput_request_per_s)
    r = float(np.mean(done - sent))
    z = hf.draw_workload(hf.load_scenario(sc).workload, n, rng_for(2)).think_s.mean()
    assert clients == pytest.approx(x * (r + z), rel=0.01)
    assert float(ds.e2e_mean_s) == pytest.approx(r, rel=1e-12)  # latencies start when the client sends
    # in flight: +1 when sent, -1 when done (a completion before a send at the same instant)
    events = np.concatenate([-np.ones(n), np.ones(n)])[np.argsort(np.concatenate([done, sent]), kind="stable")]
    assert np.cumsum(events).max() == clients


def test_max_concurrency_holds_arrivals_at_the_client_in_order():
    sc = roofline_scenario("chunked", rate=40.0, chunk_size=512)
    sc["workload"]["arrival"] = {"process": "poisson", "max_concurrency": 4}
    ds = hf.simulate(sc, n_requests=3000, seed=3, keep_requests=True).isel(replicate=0)
    arrival, sent, done = (ds[v].values for v in ("request_arrival_s", "request_sent_s", "request_completion_s"))
    assert (sent >= arrival).all() and (sent > arrival).mean() > 0.3  # over capacity: most wait at the client
    assert (np.diff(sent) >= 0).all()  # sent in arrival order
    n = sent.size
    # in flight: +1 when sent, -1 when done (a completion before a send at the same instant)
    events = np.concatenate([-np.ones(n), np.ones(n)])[np.argsort(np.concatenate([done, sent]), kind="stable")]
    assert np.cumsum(events).max() == 4
    free = ds.request_sent_s > ds.request_arrival_s  # a held request goes out when one completes
    assert np.isin(sent[free.values], done).all()


# --- requests that can never run, and warm-up (issue 21)


def test_warmup_must_leave_requests_for_the_statistics():
    s = queue_scenario(20.0, 5)
    s["serving"] = {"warmup_requests": 100}
    for n in (100, 50):
        with pytest.raises(ConfigError) as e:
            hf.simulate(s, n_requests=n)
        assert (e.value.path, e.value.value) == ("serving.warmup_requests", 100)
        assert e.value.expected.startswith(f"fewer than n_requests ({n})")
    targets = {"ttft": {"quantile": 0.5, "max_s": 1.0}, "rate_max_per_s": 50}
    with pytest.raises(ConfigError, match=r"serving.warmup_requests: got 100; expected fewer than n_requests \(80\)"):
        hf.capacity_search(s, targets, n_requests=80)
    assert int(hf.simulate(s, n_requests=101).arrived_requests.item()) == 1


REASON_WORDS = {"context_limit": "-token context of", "token_budget": "max_batched_tokens", "kv_capacity": "KV that"}


@pytest.mark.parametrize(
    ("workload", "engine", "path", "value", "reason"),
    [
        # prompts over the model's context: every request would be rejected, every metric NaN
        ({"prompt_tokens": 200_000}, {"batching": {"policy": "chunked"}}, "workload.prompt_tokens", 200_000,
         "context_limit"),
        # a fitting 100k-token prompt under the default (continuous) policy: over max_batched_tokens 8192
        ({"prompt_tokens": 100_000}, {}, "workload.prompt_tokens", 100_000, "token_budget"),
        # a class's law whose every draw is over the budget: its support starts at 9000
        ({"classes": [{"name": "long", "prompt_tokens": {"dist": "uniform", "min": 9000, "max": 20_000}}]}, {},
         "workload.classes[0].prompt_tokens", 9000, "token_budget"),
        # an output that alone passes the context
        ({"classes": [{"name": "a"}, {"name": "essay", "prompt_tokens": 10, "output_tokens": 131_070}]},
         {"batching": {"policy": "chunked"}}, "workload.classes[1].output_tokens", 131_070, "context_limit"),
        # KV that never fits one replica (a device with 20 GB: 7360 tokens of KV)
        ({"prompt_tokens": 7000, "output_tokens": 2000}, {"device": "small"}, "workload.prompt_tokens", 7000,
         "kv_capacity"),
    ],
    ids=["context", "token-budget", "law-support", "output-context", "kv"],
)  # fmt: skip
def test_a_class_that_can_never_run_is_a_config_error(workload, engine, path, value, reason):
    s = roofline_scenario()
    s["engines"][0].update(engine)
    s["devices"] = {"small": {"base": "h100_sxm", "memory_bytes": 20e9}}
    s["workload"] = workload
    with pytest.raises(ConfigError) as e:
        hf.simulate(s, n_requests=10)
    assert (e.value.path, e.value.value) == (path, value)
    assert REASON_WORDS[reason] in e.value.expected and "would be rejected" in e.value.expected
    with pytest.raises(ConfigError) as e2:  # the sweep (every point) and the capacity search check it too
        hf.sweep(s, {"workload.rate_per_s": [1, 2]}, n_requests=10)
    assert e2.value.path == f"grid point 0 (workload.rate_per_s=1): {path}"
    with pytest.raises(ConfigError):
        hf.capacity_search(s, {"ttft": {"quantile": 0.5, "max_s": 1.0}}, n_requests=10)


def test_a_class_rejected_only_in_part_runs():
    """Only a share of the law's draws is over the budget (the rest runs): no error, the share is rejected."""
    s = roofline_scenario()
    s["workload"]["classes"] = [{"prompt_tokens": {"dist": "uniform", "min": 4000, "max": 12_000}}]
    ds = hf.simulate(s, n_requests=200, seed=1)
    assert 0 < int(ds.rejected_by_reason.sel(reason="token_budget").item()) < 200
    assert int(ds.completed_requests.item()) > 0


def test_disaggregated_checks_the_decode_engine_only_for_answers_longer_than_one_token():
    small = {"name": "d", "model": "llama-3.1-8b", "device": "small", "fixed_step_time_s": STEP_S}
    s = {
        "devices": {"small": {"base": "h100_sxm", "memory_bytes": 24.5e9}},  # 6816 tokens of KV
        "engines": [{"name": "p", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": STEP_S}, small],
        "serving": {"prefill_engine": "p", "decode_engine": "d"},
        "workload": {"prompt_tokens": 7500, "output_tokens": 2},
    }
    with pytest.raises(ConfigError) as e:
        hf.simulate(s, n_requests=5)
    assert e.value.path == "workload.prompt_tokens" and "one replica of engine 'd'" in e.value.expected
    s["workload"]["output_tokens"] = 1  # the prefill writes the only token: nothing goes to the decode engine
    assert int(hf.simulate(s, n_requests=5).completed_requests.item()) == 5


def test_the_load_time_check_mirrors_the_loop_exactly(monkeypatch):
    """Random engines and fixed lengths (every request alike), half of them on a limit's edge: the check raises
    exactly when the loop, run without the check, rejects every request, and for the loop's reason."""
    import hermes_fast.pools as pools

    rng = np.random.default_rng(21)

    def engine(name):
        return {
            "name": name,
            "model": "m",
            "device": str(rng.choice(["h100_sxm", "small"])),
            "fixed_step_time_s": STEP_S,
            "max_batched_tokens": int(rng.choice([512, 2048, 8192])),
            "batching": {
                "policy": str(rng.choice(["static", "continuous", "chunked", "mixed"])),
                "block_size_tokens": int(rng.choice([1, 16, 256])),
            },
        }

    seen = {"ok": 0}
    for case in range(120):
        s = {
            "models": {"m": {"base": "llama-3.1-8b", "max_context_tokens": int(rng.choice([4096, 32_768]))}},
            "devices": {"small": {"base": "h100_sxm", "memory_bytes": float(rng.choice([23.6e9, 24.6e9, 26.6e9]))}},
            "engines": [engine("p")],
        }
        if rng.random() < 0.5:  # disaggregated: a decode engine with its own device, budget and policy
            s["engines"].append(engine("d"))
            s["serving"] = {"prefill_engine": "p", "decode_engine": "d"}
        output = 1 if rng.random() < 0.2 else int(rng.integers(2, 6000))
        prompt = int(rng.integers(1, 12_000))
        if rng.random() < 0.6:  # on the edge (or one past it) of one of the limits
            with monkeypatch.context() as m:
                m.setattr(pools, "job_rejection", lambda *args, **kwargs: None)
                setup = pools.build_serving(
                    resolve_scenario({**s, "workload": {"prompt_tokens": 1, "output_tokens": 1}})
                )
            pool = setup.pools[int(rng.integers(0, len(setup.pools)))]
            edges = [
                pool.compiled.max_context_tokens - output,  # context
                pool.engine.max_batched_tokens,  # token budget
                pool.kv_capacity_tokens - (0 if pool.role == "prefill" else output - 1),  # KV
            ]
            prompt = max(1, int(rng.choice(edges)) + int(rng.integers(0, 2)))
        s["workload"] = {"prompt_tokens": prompt, "output_tokens": output}
        try:
            hf.simulate(s, n_requests=3)
            error = None
        except ConfigError as e:
            error = e
        with monkeypatch.context() as m:
            m.setattr(pools, "job_rejection", lambda *args, **kwargs: None)
            ds = hf.simulate(s, n_requests=3)
        rejected = {r: int(ds.rejected_by_reason.sel(reason=r).item()) for r in REASON_WORDS}
        assert (error is not None) == (sum(rejected.values()) == 3), (case, s, error, rejected)
        if error is None:
            seen["ok"] += 1
        else:
            reason = next(r for r, k in rejected.items() if k == 3)
            assert REASON_WORDS[reason] in error.expected, (case, error)
            seen[reason] = seen.get(reason, 0) + 1
    assert set(seen) == {"ok", *REASON_WORDS} and min(seen.values()) >= 5, seen  # (every reason, often)


def test_memory_without_limit_does_not_overflow():
    s = roofline_scenario()
    s["devices"] = {"huge": {"base": "h100_sxm", "memory_bytes": 1e308}}
    s["engines"][0]["device"] = "huge"
    assert int(hf.simulate(s, n_requests=20).completed_requests.item()) == 20


def test_hybrid_model_reserves_a_state_per_batch_slot_and_serves():
    """Qwen3-Next (36 linear-attention layers): a serving replica sets one 39.5 MB state (36 layers x 548,864
    elements x 2 B, by hand from the config) aside per batch slot before cutting KV blocks, and serves requests."""
    from hermes_fast.pools import engine_pool
    from hermes_fast.resolve import resolve_scenario

    scenario = {
        "engines": [
            {
                "name": "q",
                "model": "qwen3-next-80b-a3b",
                "device": "h200_sxm",
                "stack": "ideal",
                "dtypes": {"weight": "fp8"},
                "batching": {"max_batch_size": 64},
            }
        ],
        "workload": {"rate_per_s": 20.0, "classes": [{"prompt_tokens": 256, "output_tokens": 32}]},
    }
    pool = engine_pool(resolve_scenario(scenario, calibration="none"), 0, "colocated")
    ce = pool.compiled
    state, kv_token = 36 * 548_864 * 2, 12 * 2 * 2 * 256 * 2
    assert ce.state_bytes_per_seq == state and ce.kv_bytes_per_token == kv_token
    free = ce.usable_bytes - ce.weights_bytes - ce.activation_reserve_bytes
    assert pool.kv_capacity_tokens == (free - 64 * state) // kv_token // 16 * 16
    ds = hf.simulate(scenario, n_requests=200, seed=3, calibration="none")
    assert int(ds.completed_requests.sum()) == 200
    # 4096 slots x 39.5 MB of states outgrow the H200: the error says why
    scenario["engines"][0]["batching"]["max_batch_size"] = 4096
    with pytest.raises(hf.ConfigError, match="beside 4096 linear-attention states"):
        engine_pool(resolve_scenario(scenario, calibration="none"), 0, "colocated")
