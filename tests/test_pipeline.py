"""Multi-stage pipelines: each stage's cost against a hand computation, processor-sharing links against
queueing theory, KV-tier hit rates, routing splits, conservation, and the HERMES paper's RAG findings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from outcomes import assert_same_outcome
from scipy import stats

import hermes_fast as hf
from hermes_fast.catalog import preset
from hermes_fast.config.base import ConfigError
from hermes_fast.kernels.serving import Status
from hermes_fast.kernels.serving import state as loop
from hermes_fast.kernels.stages import INDEX_CODES, search_batch_time, search_cost, tier_outcome
from hermes_fast.pipeline import TEXT_BYTES_PER_TOKEN, build_pipeline
from hermes_fast.resolve import resolve_scenario

STEP_S = 0.01
LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": STEP_S}

# memory_utilization that leaves Llama-3.1-8B about 4,000 tokens of KV on one H100 (17.56 GB of its memory)
KV_TIGHT = 17.56e9 / preset("devices", "h100_sxm").memory_bytes


def scenario(stages, *, engines=(LLM,), links=(), tiers=None, rate=1.0, n_classes=1, prompt=100, output=None, **wl):
    if output is None:  # (a pipeline that prefills without a decode stage writes no answer: 1 output token)
        kinds = {st.get("kind") for st in stages}
        output = 1 if "prefill" in kinds and "decode" not in kinds else 10
    classes = [
        {"name": f"c{k}", "prompt_tokens": prompt, "output_tokens": output, "pipeline": stages}
        for k in range(n_classes)
    ]
    sc = {  # (the hand calculations are of the kernels alone: no serving stack around them)
        "engines": [{"stack": "ideal", **e} for e in engines],
        "links": list(links),
        "workload": {"rate_per_s": rate, "classes": classes, **wl},
    }
    if tiers:
        sc["memory_tiers"] = tiers
    return sc


def one(sc, n=1, **kw):
    return hf.simulate(sc, n_requests=n, seed=3, **kw).isel(replicate=0)


def stage(ds, name, var="stage_time_s"):
    return float(ds[var].sel(stage=name))


# ---------------------------------------------------------------- closed-form kernels


@pytest.mark.parametrize("fn", ["plain", "jit"])
def test_search_costs_match_hand_counts(fn):
    f = search_cost if fn == "plain" else search_cost.jit
    n, d, e = 1e6, 768, 4.0
    assert f(INDEX_CODES["flat"], n, d, e, 1, 1, 1, 8, 16, 64) == (2 * n * d, n * d * e, d * e, n * d * e)
    # IVF-Flat: 1024 lists, 16 probed: 16 * 1e6 / 1024 = 15625 vectors scanned
    flop, fixed, per_q, mem = f(INDEX_CODES["ivf_flat"], n, d, e, 1024, 16, 1, 8, 16, 64)
    assert flop == pytest.approx(2 * 1024 * d + 2 * 15625 * d, rel=1e-12)
    assert fixed == 1024 * d * e and per_q == pytest.approx(15625 * (d * e + 8) + d * e, rel=1e-12)
    assert mem == n * (d * e + 8) + 1024 * d * e
    # IVF-PQ, 96 codes of 8 bits: tables 16 probes x 2 d 256, scan 15625 x 96 adds
    flop, fixed, per_q, mem = f(INDEX_CODES["ivf_pq"], n, d, e, 1024, 16, 96, 8, 16, 64)
    assert flop == pytest.approx(2 * 1024 * d + 16 * 2 * d * 256 + 15625 * 96, rel=1e-12)
    assert fixed == 1024 * d * e + 256 * d * 4 and per_q == pytest.approx(15625 * (96 + 8) + d * e, rel=1e-12)
    assert mem == n * (96 + 8) + 1024 * d * e + 256 * d * 4
    # HNSW, M 16, ef 64: 64 * 32 base-layer visits + ln(1e6)/ln(16) levels x 16
    levels = math.log(n) / math.log(16)
    visits = 64 * 32 + levels * 16
    flop, fixed, per_q, mem = f(INDEX_CODES["hnsw"], n, d, e, 1, 1, 1, 8, 16, 64)
    assert flop == pytest.approx(2 * d * visits, rel=1e-12) and fixed == 0.0
    assert per_q == pytest.approx(visits * (d * e + 4) + d * e, rel=1e-12)
    assert mem == pytest.approx(n * (d * e + 32 * 4) + n / 15 * 16 * 4, rel=1e-12)
    assert search_batch_time(8, 1e9, 1e9, 1e8, 1e12, 1e11, 1e-4) == pytest.approx(1e-4 + max(8e-3, 1.8e-2))


def test_tier_outcome_probabilities():
    rng = np.random.default_rng(0)
    h = np.array([0.5, 0.2, 0.6])
    u = rng.random(200_000)
    got = np.array([tier_outcome.jit(x, h, 3) for x in u])
    expect = [0.5, 0.5 * 0.2, 0.5 * 0.8 * 0.6, 0.5 * 0.8 * 0.4]  # tiers 0, 1, 2, then a miss (-1)
    for k, p in zip([0, 1, 2, -1], expect, strict=True):
        assert abs((got == k).mean() - p) < 4 * math.sqrt(p * (1 - p) / u.size)


# ---------------------------------------------------------------- each stage's cost in the loop


def test_llm_stage_with_thinking_and_tool_rounds_by_hand():
    """Fixed 10 ms steps: prefill emits token 1; think T, answer A; rounds add a tool call and a prefill."""
    T, A, tool = 6, 10, 0.25
    stages = [
        {"kind": "prefill", "engine": "llm"},
        {
            "kind": "reason",
            "engine": "llm",
            "thinking_tokens": T,
            "rounds": 2,
            "tool_latency_s": tool,
            "tool_tokens": 50,
        },
        {"kind": "decode", "engine": "llm"},
    ]
    ds = one(scenario(stages, output=A))
    # round 1: T tokens (T steps); tool; round 2: T + A tokens
    assert float(ds.e2e_mean_s) == pytest.approx(T * STEP_S + tool + (T + A) * STEP_S, rel=1e-9)
    assert float(ds.ttft_mean_s) == pytest.approx(T * STEP_S + tool + (T + 1) * STEP_S, rel=1e-9)
    assert stage(ds, "reason_tool") == pytest.approx(tool, rel=1e-9)
    assert stage(ds, "prefill") == pytest.approx(2 * STEP_S, rel=1e-9)
    # thinking after each round's prefill token: T - 1 steps per round
    assert stage(ds, "reason") == pytest.approx(2 * (T - 1) * STEP_S, rel=1e-9)
    assert stage(ds, "decode") == pytest.approx(A * STEP_S, rel=1e-9)
    assert stage(ds, "prefill", "stage_visits") == 2.0
    assert float(ds.tpot_mean_s) == pytest.approx(STEP_S, rel=1e-9)


def test_fixed_cost_stages_and_link_transfer_by_hand():
    link = {"name": "net", "bandwidth_bytes_per_s": 1e5, "latency_s": 0.002}
    stages = [
        {"kind": "route", "latency_s": 0.003, "targets": ["llm"]},
        {"kind": "prefill", "engine": "llm", "link": "net"},
        {"kind": "decode", "engine": "llm"},
        {"kind": "postprocess", "latency_s": 0.004, "per_token_s": 1e-4, "link": "net"},
    ]
    ds = one(scenario(stages, links=[link], prompt=100, output=10))
    prompt_xfer = 0.002 + 100 * TEXT_BYTES_PER_TOKEN / 1e5
    answer_xfer = 0.002 + 10 * TEXT_BYTES_PER_TOKEN / 1e5
    assert stage(ds, "route") == pytest.approx(0.003, rel=1e-12)
    assert stage(ds, "prefill", "stage_transfer_s") == pytest.approx(prompt_xfer, rel=1e-9)
    assert stage(ds, "prefill") == pytest.approx(prompt_xfer + STEP_S, rel=1e-9)
    assert stage(ds, "postprocess") == pytest.approx(answer_xfer + 0.004 + 10 * 1e-4, rel=1e-9)
    assert float(ds.e2e_mean_s) == pytest.approx(float(ds.stage_time_s.sum()), rel=1e-12)
    assert float(ds.link_bytes.sel(link="net")) == 110 * TEXT_BYTES_PER_TOKEN


def test_embed_and_rerank_cost_an_encoder_prefill():
    """The embed stage is the encoder's prefill of the query; rerank prefills k (query, document) pairs."""
    engines = [LLM, {"name": "emb", "model": "e5-base", "device": "h100_sxm", "stack": "ideal"}]
    engines.append({"name": "rr", "model": "bge-reranker-large", "device": "h100_sxm", "stack": "ideal"})
    stages = [
        {"kind": "embed", "engine": "emb"},
        {"kind": "rerank", "engine": "rr", "top_k": 4, "doc_tokens": 120},
        {"kind": "prefill", "engine": "llm"},
    ]
    ds = one(scenario(stages, engines=engines, prompt=80))
    est = hf.estimate({"engines": engines[1:], "workload": {"batch_size": 1, "prompt_tokens": 80}})
    assert stage(ds, "embed") == pytest.approx(float(est.prefill_time_s.sel(engine="emb")), rel=1e-9)
    est4 = hf.estimate({"engines": engines[2:], "workload": {"batch_size": 4, "prompt_tokens": 200}})
    assert stage(ds, "rerank") == pytest.approx(float(est4.prefill_time_s.sel(engine="rr")), rel=1e-9)


def test_retrieve_stage_by_hand_and_documents_join_the_prompt():
    d = hf.Catalog().device("grace_cpu")
    ix = {"type": "flat", "vectors": 1e6, "dim": 512}
    stages = [
        {"kind": "retrieve", "device": "grace_cpu", "index": ix, "top_k": 3, "doc_tokens": 200, "overhead_s": 1e-4},
        {"kind": "prefill", "engine": "llm"},
        {"kind": "decode", "engine": "llm"},
    ]
    ds = one(scenario(stages, prompt=50, output=4), keep_requests=True)
    peak = d.peak_flop_per_s.resolve("fp32")[0] * d.efficiency.compute_efficiency
    bw = d.memory_bandwidth_bytes_per_s * d.efficiency.memory_efficiency
    hand = 1e-4 + max(2 * 1e6 * 512 / peak, (1e6 * 512 * 4 + 512 * 4) / bw)
    assert stage(ds, "retrieve") == pytest.approx(hand, rel=1e-12)
    assert ds.request_context_tokens.values.tolist() == [50 + 3 * 200 + 4]  # documents joined the prompt


def test_retrieve_index_must_fit():
    ix = {"type": "flat", "vectors": 1e11, "dim": 768}
    stages = [{"kind": "retrieve", "device": "grace_cpu", "index": ix}, {"kind": "prefill", "engine": "llm"}]
    with pytest.raises(ConfigError, match=r"pipeline\[0\]\.index\.shards.*at least"):
        hf.simulate(scenario(stages), n_requests=10)
    stages[0]["index"] = {**ix, "type": "ivf_pq", "pq_m": 32, "shards": 64}  # 1e11 x 40 B / 64 shards fits
    ds = one(scenario(stages), n=5)
    assert int(ds.completed_requests) == 5
    assert int(ds.pool.size) == 2


def test_batch_max_wait():
    """An idle embedding replica waits max_wait_s for a fuller batch before it starts."""
    engines = [LLM, {"name": "emb", "model": "e5-base", "device": "h100_sxm", "batching": {"max_wait_s": 0.05}}]
    ds = one(scenario([{"kind": "embed", "engine": "emb"}], engines=engines), n=1)
    assert stage(ds, "embed", "stage_queue_s") == pytest.approx(0.05, rel=1e-12)
    # arrivals much closer than the wait fill the batch of 2 at the second arrival: no wait then
    engines[1]["batching"] = {"max_wait_s": 10.0, "max_batch_size": 2}
    ds = one(scenario([{"kind": "embed", "engine": "emb"}], engines=engines, arrival={"process": "deterministic"}), n=2)
    assert stage(ds, "embed", "stage_queue_s") == pytest.approx(0.5, rel=1e-9)  # the first waits 1 s, then none


# ---------------------------------------------------------------- links and tiers


def _trace(tmp_path, times):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{t},10,1000\n" for t in times))
    return {"process": "trace", "trace": {"path": str(p)}}


def test_equal_transfers_share_a_link(tmp_path):
    link = {"name": "net", "bandwidth_bytes_per_s": 4000.0, "latency_s": 0.0}
    stages = [{"kind": "postprocess", "latency_s": 0.0, "link": "net"}]  # moves 1000 answer tokens: 4000 B
    alone = one(scenario(stages, links=[link], output=1000, arrival=_trace(tmp_path, [0.0])), n=1)
    assert float(alone.e2e_mean_s) == pytest.approx(1.0, rel=1e-12)
    both = one(scenario(stages, links=[link], output=1000, arrival=_trace(tmp_path, [0.0, 0.0])), n=2)
    assert float(both.e2e_mean_s) == pytest.approx(2.0, rel=1e-12)
    assert float(both.link_utilization.sel(link="net")) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [150_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_processor_sharing_link_matches_mg1_ps(n):
    """Poisson transfers on a PS link: mean response E[S] / (1 - rho) (M/G/1-PS is insensitive to the law)."""
    bw, rate = 4.0e6, 500.0
    length = {"dist": "exponential", "mean": 1000.0}
    mean_tokens, _ = hf.length_moments(hf.config.Length(dist="exponential", mean=1000.0))
    es = mean_tokens * TEXT_BYTES_PER_TOKEN / bw
    rho = rate * es
    link = {"name": "net", "bandwidth_bytes_per_s": bw, "latency_s": 0.0}
    sc = scenario([{"kind": "postprocess", "latency_s": 0.0, "link": "net"}], links=[link], rate=rate, output=length)
    ds = hf.simulate(sc, n_requests=n, seed=11).isel(replicate=0)
    theory = es / (1 - rho)
    assert 0.4 < rho < 0.6
    assert float(ds.e2e_mean_s) == pytest.approx(theory, rel=0.02 if n >= 1e6 else 0.03)


def _kv_scenario(hits, past=2000, rate=0.2, distinct=None, capacity=None):
    tiers = {
        "fast": {
            "name": "fast",
            "kind": "host_dram",
            "capacity_bytes": 1e12,
            "bandwidth_bytes_per_s": 1e11,
            "latency_s": 1e-4,
        },
        "slow": {
            "name": "slow",
            "kind": "remote",
            "capacity_bytes": 1e13,
            "bandwidth_bytes_per_s": 1e9,
            "latency_s": 2e-3,
        },
    }
    levels = [{"tier": "fast", "hit_rate": hits[0]}, {"tier": "slow", "hit_rate": hits[1]}]
    if capacity is not None:
        levels[0]["capacity_bytes"] = capacity
    kv = {"kind": "kv_retrieve", "past_tokens": past, "tiers": levels}
    if distinct is not None:
        kv["distinct_prefixes"] = distinct
    llm = {k: v for k, v in LLM.items() if k != "fixed_step_time_s"}
    stages = [kv, {"kind": "prefill", "engine": "llm"}, {"kind": "decode", "engine": "llm"}]
    return scenario(stages, engines=[llm], tiers=tiers, rate=rate, prompt=100, output=2)


def test_kv_tier_hit_rates_give_the_mean_fetch_time():
    sc = _kv_scenario((0.5, 0.6))
    pipe = build_pipeline(resolve_scenario(sc))
    kv_bytes = pipe.arrays["stages_float"][loop.SGF_KV_BYTES, 0]
    assert kv_bytes == pytest.approx(131072.0)  # Llama-3.1-8B bf16: 32 layers x 8 heads x 128 x 2 x 2 B
    fast = 1e-4 + 2000 * kv_bytes / 1e11
    slow = 1e-4 + 2e-3 + 2000 * kv_bytes / 1e9
    miss = 1e-4 + 2e-3
    expect = 0.5 * fast + 0.3 * slow + 0.2 * miss
    ds = hf.simulate(sc, n_requests=6000, seed=5).isel(replicate=0)
    # 6000 draws: the mix's sampling error is ~1.5% of the mean; fetches at this load never overlap
    assert stage(ds, "kv_retrieve") == pytest.approx(expect, rel=0.05)
    n_fast, n_slow = ds.link_transfers.values
    assert abs(n_fast / 6000 - 0.5) < 0.03 and abs(n_slow / 6000 - 0.3) < 0.03


def test_kv_miss_recomputes_the_prefix():
    """All-miss: the prefill computes past + prompt tokens; all-hit: only the prompt, against the prefix."""
    miss = one(_kv_scenario((0.0, 0.0)))
    hit = one(_kv_scenario((1.0, 0.0)))
    llm = {k: v for k, v in LLM.items() if k != "fixed_step_time_s"}
    plain = one(scenario([{"kind": "prefill", "engine": "llm"}], engines=[llm], prompt=2100, output=1))
    assert stage(miss, "prefill") == pytest.approx(stage(plain, "prefill"), rel=1e-12)
    assert stage(hit, "prefill") < 0.25 * stage(miss, "prefill")


def test_tier_capacity_lowers_the_hit_rate():
    """A working set 4x the fast tier's capacity: its hit rate falls to a quarter."""
    kv_bytes = 131072.0
    working = 1000 * 2000 * kv_bytes
    ds = hf.simulate(_kv_scenario((1.0, 1.0), distinct=1000, capacity=working / 4), n_requests=4000, seed=2)
    n_fast = float(ds.link_transfers.isel(replicate=0, link=0))
    assert abs(n_fast / 4000 - 0.25) < 0.03


# ---------------------------------------------------------------- routing, conservation, mixed classes


def _two_models(rule_fields, n_classes=1, prompt=100):
    big = {"name": "big", "model": "llama-3.1-8b", "device": "h200_sxm", "fixed_step_time_s": STEP_S}
    stages = [
        {"kind": "route", "latency_s": 0.001, "targets": ["llm", "big"], **rule_fields},
        {"kind": "prefill", "engine": "routed"},
        {"kind": "decode", "engine": "routed"},
    ]
    return scenario(stages, engines=[LLM, big], n_classes=n_classes, prompt=prompt, rate=5.0)


def test_probability_routing_splits_traffic():
    ds = hf.simulate(_two_models({"weights": [0.7, 0.3]}), n_requests=5000, seed=4, keep_requests=True)
    replica = ds.request_replica.isel(replicate=0).values
    counts = np.array([(replica == 0).sum(), (replica == 1).sum()])
    assert counts.sum() == 5000
    assert stats.chisquare(counts, [3500, 1500]).pvalue > 0.001


def test_length_and_class_routing():
    length = {"dist": "uniform", "min": 1, "max": 200}
    sc = _two_models({"rule": "length", "threshold_tokens": [100]}, prompt=length)
    ds = hf.simulate(sc, n_requests=400, seed=4, keep_requests=True).isel(replicate=0)
    short = ds.request_prompt_tokens.values <= 100
    assert np.array_equal(ds.request_replica.values, np.where(short, 0, 1))
    sc = _two_models({"rule": "class", "class_targets": {"c1": "big"}}, n_classes=2)
    ds = hf.simulate(sc, n_requests=400, seed=4, keep_requests=True).isel(replicate=0)
    assert np.array_equal(ds.request_replica.values, ds.request_class.values)


def test_pipeline_conserves_requests_and_stage_times_add_up():
    engines = [LLM, {"name": "emb", "model": "e5-base", "device": "xeon_8480p"}]
    link = {"name": "net", "bandwidth_bytes_per_s": 1e9, "latency_s": 1e-5}
    stages = [
        {"kind": "embed", "engine": "emb", "link": "net"},
        {
            "kind": "retrieve",
            "device": "grace_cpu",
            "index": {"type": "hnsw", "vectors": 1e7, "dim": 768},
            "link": "net",
        },
        {"kind": "prefill", "engine": "llm", "link": "net"},
        {"kind": "reason", "engine": "llm", "thinking_tokens": {"dist": "uniform", "min": 1, "max": 20}},
        {"kind": "decode", "engine": "llm"},
    ]
    sc = scenario(stages, engines=engines, links=[link], rate=20.0, output={"dist": "uniform", "min": 1, "max": 30})
    ds = hf.simulate(sc, n_requests=3000, seed=9).isel(replicate=0)
    parts = ["completed_requests", "rejected_requests", "dropped_requests", "unfinished_requests"]
    assert sum(int(ds[p]) for p in parts) == int(ds.arrived_requests) == int(ds.completed_requests) == 3000
    assert float(ds.stage_time_s.sum()) == pytest.approx(float(ds.e2e_mean_s), rel=1e-9)
    assert (ds.stage_visits.values == 1.0).all()
    assert 0 < float(ds.link_utilization.sel(link="net")) < 1


def test_pipeline_is_deterministic_and_fast_forward_invariant():
    sc = _kv_scenario((0.5, 0.5), rate=3.0)
    a = hf.simulate(sc, n_requests=1500, seed=8, keep_requests=True)
    b = hf.simulate(sc, n_requests=1500, seed=8, keep_requests=True, fast_forward=False)
    for name in ("request_completion_s", "request_first_token_s"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    c = hf.simulate(sc, n_requests=1500, seed=8, keep_requests=True)
    assert a.equals(c)


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed-steps", "roofline"])
def test_fast_forward_spans_cut_by_arrivals_equal_stepping(fixed):
    """Decode spans cut by work joining mid-span (a shared queue, least-KV routing, tool rounds, KV
    hand-offs), thinking milestones inside spans, a horizon stop with spans in flight, and (fixed steps)
    iteration ends tying across replicas: fast-forward equals one event per iteration, exactly."""
    from hermes_fast.simulate import run_pipeline
    from hermes_fast.workload import draw_workload, rng_for

    step = {"fixed_step_time_s": STEP_S} if fixed else {}
    think = {
        "name": "think",
        "model": "llama-3.1-8b",
        "device": "h100_sxm",
        "replicas": 3,
        **step,
        "scheduler": "shared_queue",
        "memory_utilization": KV_TIGHT,
        "batching": {"policy": "chunked", "chunk_size": 256},
    }
    pre = {
        "name": "pre",
        "model": "llama-3.1-8b",
        "device": "h100_sxm",
        "replicas": 2,
        **step,
        "scheduler": "least_kv",
        "batching": {"policy": "continuous"},
    }
    stages = [
        {"kind": "prefill", "engine": "pre"},
        {"kind": "reason", "engine": "think", "thinking_tokens": {"dist": "uniform", "min": 1, "max": 60},
         "rounds": 2, "tool_latency_s": 0.05, "tool_tokens": 20},
        {"kind": "decode", "engine": "think"},
    ]  # fmt: skip
    prompt = {"dist": "uniform", "min": 50, "max": 1500}
    output = {"dist": "uniform", "min": 2, "max": 80}
    resolved = resolve_scenario(scenario(stages, engines=[pre, think], rate=25.0, prompt=prompt, output=output))
    sc = resolved.scenario
    pipe = build_pipeline(resolved)
    runs = []
    for ff in (True, False):
        rng = rng_for(5)
        runs.append(run_pipeline(pipe, draw_workload(sc.workload, 500, rng), rng, horizon_s=15.0, fast_forward=ff))
    a, b = runs
    assert_same_outcome(a, b)
    assert a.fast_forwarded_iterations > 1000 and a.events < 0.8 * b.events
    status = a.status
    assert (status == Status.DONE).sum() > 100 and (status == Status.RUNNING).any()  # the horizon cut work in flight
    assert (a.replica_preemptions > 0).any()


def test_disaggregated_pipeline_hands_off_over_a_shared_link():
    dec = {"name": "dec", "model": "llama-3.1-8b", "device": "h200_sxm", "fixed_step_time_s": STEP_S}
    link = {"name": "ib", "bandwidth_bytes_per_s": 131072.0 * 100, "latency_s": 0.0}  # 100 tokens of KV per s
    stages = [{"kind": "prefill", "engine": "llm"}, {"kind": "decode", "engine": "dec", "link": "ib"}]
    ds = one(scenario(stages, engines=[LLM, dec], links=[link], prompt=50, output=5))
    # prefill (1 step, emits token 1) -> the prompt's KV, 50 tokens at 100 tokens/s -> 4 decode steps
    assert float(ds.e2e_mean_s) == pytest.approx(STEP_S + 0.50 + 4 * STEP_S, rel=1e-9)
    assert list(ds.pool_role.values) == ["prefill", "decode"]
    # the hand-off moves the KV into the decode part of the stage: its transfer, as the link saw it
    assert stage(ds, "decode", "stage_transfer_s") == pytest.approx(0.50, rel=1e-9)
    assert float(ds.link_transfer_mean_s.sel(link="ib")) == pytest.approx(0.50, rel=1e-9)
    assert stage(ds, "prefill", "stage_transfer_s") == 0.0


# ---------------------------------------------------------------- the HERMES paper's RAG findings


def _rag(embed_engine, rate=1.0):
    engines = [
        {"name": "llm", "model": "llama-3.1-8b", "device": "h100_sxm"},
        {"name": "e5-mistral-cpu", "model": "e5-mistral-7b", "device": "xeon_8480p"},
        {"name": "e5-mistral-gpu", "model": "e5-mistral-7b", "device": "h100_sxm"},
    ]
    pcie = {"name": "pcie4_x4", "bandwidth_bytes_per_s": 32e9, "latency_s": 2e-6}
    index = {"type": "ivf_pq", "vectors": 1e9, "dim": 4096, "n_lists": 65536, "n_probe": 32, "pq_m": 64}
    stages = [
        {"kind": "embed", "engine": embed_engine, "link": "pcie4_x4"},
        {"kind": "retrieve", "device": "grace_cpu", "index": index, "link": "pcie4_x4"},
        {"kind": "prefill", "engine": "llm", "link": "pcie4_x4"},
        {"kind": "decode", "engine": "llm"},
    ]
    return scenario(stages, engines=engines, links=[pcie], rate=rate, prompt=128, output=256)


def test_hermes_large_embedding_on_cpu_dominates_rag_latency():
    """RAG latency: everything before the answer starts (embed, search, transfers, prefill)."""
    cpu = hf.simulate(_rag("e5-mistral-cpu", rate=0.2), n_requests=300, seed=1).isel(replicate=0)
    gpu = hf.simulate(_rag("e5-mistral-gpu", rate=0.2), n_requests=300, seed=1).isel(replicate=0)
    rag = float(cpu.stage_time_s.sum()) - stage(cpu, "decode")
    assert stage(cpu, "embed") > 0.5 * rag
    assert stage(cpu, "embed") > 5 * stage(gpu, "embed")
    assert stage(gpu, "embed") < 0.2 * (float(gpu.stage_time_s.sum()) - stage(gpu, "decode"))


def test_hermes_context_transfer_over_pcie_is_under_one_percent():
    ds = hf.simulate(_rag("e5-mistral-gpu"), n_requests=500, seed=2).isel(replicate=0)
    assert float(ds.stage_transfer_s.sum()) < 0.01 * float(ds.e2e_mean_s)


def test_retrieval_and_kv_fetches_share_the_host_memory_link():
    """A search reading its index through the host link gets half of it while a KV fetch is in flight, and
    slows the fetch to half for the search's duration (one more flow, its share fixed at launch)."""
    bw, past, lookup = 1e10, 20_000, 1e-4
    tiers = {"dram": {"name": "dram", "kind": "host_dram", "capacity_bytes": 1e12, "bandwidth_bytes_per_s": 1e12,
                      "latency_s": lookup}}  # fmt: skip
    index = {"type": "flat", "vectors": 1e6, "dim": 768}
    search = {"kind": "retrieve", "device": "grace_cpu", "index": index, "top_k": 1, "doc_tokens": 1,
              "overhead_s": 0.0, "max_batch_size": 1, "memory_link": "host"}  # fmt: skip
    kv = {"kind": "kv_retrieve", "past_tokens": past, "tiers": [{"tier": "dram", "hit_rate": 1.0, "link": "host"}]}
    stages = [search, kv, {"kind": "prefill", "engine": "llm"}, {"kind": "decode", "engine": "llm"}]
    sc = scenario(stages, links=[{"name": "host", "bandwidth_bytes_per_s": bw, "latency_s": 0.0}], tiers=tiers)
    pipe = build_pipeline(resolve_scenario(sc))
    pool = pipe.serving.pool_int[loop.PL_KIND].tolist().index(loop.POOL_SEARCH)
    pf = pipe.serving.pool_float[:, pool]
    flop, fixed, per_query = pf[loop.PF_S_FLOP], pf[loop.PF_S_BYTES_FIXED], pf[loop.PF_S_BYTES_QUERY]
    assert pf[loop.PF_S_BW] > bw  # the link binds

    def search_s(share):
        return search_batch_time(1, flop, fixed, per_query, pf[loop.PF_S_FLOPS], share, 0.0)

    fetch = past * 131072.0  # Llama-3.1-8B: 128 KiB of KV per token
    alone, early = search_s(bw), 0.1
    gap = alone + lookup + early  # request 1 arrives 0.1 s into request 0's fetch
    sc["workload"].update(rate_per_s=1 / gap, arrival={"process": "deterministic"})
    ds = one(sc, n=2)
    # request 0's fetch: 0.1 s alone, the rest at half while request 1 searches (which outlasts it)
    shared = search_s(bw / 2)
    fetch0 = lookup + early + (fetch - early * bw) / (bw / 2)
    assert shared > fetch0 - lookup - early
    assert stage(ds, "retrieve") == pytest.approx((alone + shared) / 2, rel=1e-9)
    assert stage(ds, "kv_retrieve") == pytest.approx((fetch0 + lookup + fetch / bw) / 2, rel=1e-9)
    assert float(ds.link_bytes.sel(link="host")) == pytest.approx(2 * (fixed + per_query + fetch), rel=1e-12)


# ---------------------------------------------------------------- parallel reasoning branches

RM = {"name": "rm", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": 2 * STEP_S}


def _branched(think, branches=4, reward=True, answer=10, prompt=100, **wl):
    rsn = {"kind": "reason", "engine": "llm", "thinking_tokens": think, "branches": branches}
    if reward:
        rsn["reward_engine"] = "rm"
    stages = [{"kind": "prefill", "engine": "llm"}, rsn, {"kind": "decode", "engine": "llm"}]
    return scenario(stages, engines=[LLM, RM], prompt=prompt, output=answer, **wl)


def _run_low_level(sc, n, seed=3, fast_forward=True):
    from hermes_fast.simulate import run_pipeline
    from hermes_fast.workload import draw_workload, rng_for

    resolved = resolve_scenario(sc)
    sc = resolved.scenario
    pipe = build_pipeline(resolved)
    rng = rng_for(seed)
    return pipe, run_pipeline(pipe, draw_workload(sc.workload, n, rng), rng, fast_forward=fast_forward)


@pytest.mark.parametrize("ff", [True, False])
def test_branches_reward_scoring_and_answer_by_hand(ff):
    """Prefill (token 1 of every branch), 5 more thinking steps with 4 branches in one batch, the reward
    model scores the 4 contexts in one 20 ms pass, then the answer job: a 1-token prefill, 9 decodes."""
    ds = one(_branched(6), fast_forward=ff)
    assert float(ds.ttft_mean_s) == pytest.approx(6 * STEP_S + 2 * STEP_S + STEP_S, rel=1e-9)
    assert float(ds.e2e_mean_s) == pytest.approx(6 * STEP_S + 2 * STEP_S + 10 * STEP_S, rel=1e-9)
    assert list(ds.stage.values) == ["prefill", "reason", "reason_score", "decode"]
    assert stage(ds, "reason") == pytest.approx(5 * STEP_S, rel=1e-9)
    assert stage(ds, "reason_score") == pytest.approx(2 * STEP_S, rel=1e-9)
    assert stage(ds, "decode") == pytest.approx(10 * STEP_S, rel=1e-9)
    # llm iterations: the prefill (1), 5 thinking steps of 4 branches, the answer's prefill and 9 decodes
    assert float(ds.mean_batch_size.sel(pool="llm")) == pytest.approx((1 + 5 * 4 + 1 + 9) / 16, rel=1e-12)
    assert float(ds.mean_batch_size.sel(pool="rm")) == 1.0  # one job of 4 sequences


@pytest.mark.parametrize("think", [6, 1])
def test_emitted_tokens_count_every_branch_and_the_answer(think):
    """Four branches think ``think`` tokens each (the first from the shared prompt pass), the answer is 10
    tokens; the reward model's pass generates no text."""
    _, run = _run_low_level(_branched(think), 1)
    assert run.emitted_tokens.tolist() == [4 * think + 10]
    assert run.answer_tokens.tolist() == [10]


def test_branches_share_the_prompt_kv_and_give_every_block_back():
    """KV-token seconds by hand (prompt 100 = 6 shared blocks of 16 + 4 own tokens per branch)."""
    pipe, run = _run_low_level(_branched(6), 1)
    prefill = 100 * STEP_S
    think = sum((100 + 3 * 4 + 4 * j) * STEP_S for j in range(1, 6))  # 100 + 3 branches' own 4, + 4 per step
    answer = 106 * STEP_S + sum((106 + j) * STEP_S for j in range(1, 10))
    assert run.kv_token_s[0] == pytest.approx(prefill + think + answer, rel=1e-12)
    cap = pipe.serving.pool_int[loop.PL_CAP_BLOCKS]
    assert list(run.free_blocks) == list(cap[run.replica_pool])
    assert list(run.kv_tokens) == [0, 0]


def test_branch_lengths_join_at_the_longest():
    """Isolated requests (one a second): the stage waits for the longest of 3 branches, E[max] exactly."""
    n, b, hi = 600, 3, 20
    think = {"dist": "uniform", "min": 1, "max": hi}
    ds = one(_branched(think, branches=b, reward=False, arrival={"process": "deterministic"}), n=n)
    k = np.arange(1, hi + 1)
    e_max = float(np.sum(1 - ((k - 1) / hi) ** b))
    var_max = float(np.sum((2 * k - 1) * (1 - ((k - 1) / hi) ** b))) - e_max**2
    expect = (e_max - 1) * STEP_S
    assert stage(ds, "reason") == pytest.approx(expect, abs=4 * math.sqrt(var_max / n) * STEP_S)
    assert stage(ds, "decode") == pytest.approx(10 * STEP_S, rel=1e-9)
    assert int(ds.completed_requests) == n


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_branches_under_kv_pressure_conserve_requests_and_blocks(mode):
    """Eight 600-token branches on 1,000-token prompts with room for about 4,000 tokens: preemptions,
    every request completes, every block comes back, and fast-forward changes nothing."""
    llm = {k: v for k, v in LLM.items() if k != "fixed_step_time_s"}
    llm.update(stack="ideal", memory_utilization=KV_TIGHT, batching={"policy": "continuous", "preemption": mode})
    sc = _branched({"dist": "uniform", "min": 300, "max": 900}, branches=8, reward=False, prompt=1000, rate=2.0)
    sc["engines"][0] = llm
    pipe, a = _run_low_level(sc, 60)
    _, b = _run_low_level(sc, 60, fast_forward=False)
    assert (a.status == Status.DONE).all()
    assert a.replica_preemptions.sum() > 0
    np.testing.assert_array_equal(a.done_s, b.done_s)
    cap = pipe.serving.pool_int[loop.PL_CAP_BLOCKS]
    assert list(a.free_blocks) == list(cap[a.replica_pool])
    assert not a.kv_tokens.any()


def test_branches_in_a_disaggregated_pipeline_start_at_the_decode_replica():
    """The prefill pool hands the prompt's KV over; the branches start where it lands."""
    dec = {"name": "dec", "model": "llama-3.1-8b", "device": "h200_sxm", "fixed_step_time_s": STEP_S}
    link = {"name": "ib", "bandwidth_bytes_per_s": 131072.0 * 100, "latency_s": 0.0}  # 100 tokens of KV per s
    rsn = {"kind": "reason", "engine": "dec", "thinking_tokens": 6, "branches": 4, "link": "ib"}
    stages = [{"kind": "prefill", "engine": "llm"}, rsn]
    ds = one(scenario(stages, engines=[LLM, dec], links=[link], prompt=50, output=1))
    # prefill 1 step (token 1), hand-off 0.5 s, then 5 thinking steps of 4 branches on the decode pool
    assert float(ds.e2e_mean_s) == pytest.approx(STEP_S + 0.5 + 5 * STEP_S, rel=1e-9)
    assert float(ds.mean_batch_size.sel(pool="dec")) == 4.0


# ---------------------------------------------------------------- bad pipelines


@pytest.mark.parametrize(
    ("stages", "path", "match"),
    [
        ([{"kind": "embed", "engine": "nope"}], "workload.classes[0].pipeline[0].engine", "an engine name"),
        ([{"kind": "embed"}], "workload.classes[0].pipeline[0].engine", "an engine name"),
        ([{"kind": "prefill", "engine": "llm", "link": "nope"}], "workload.classes[0].pipeline[0].link", "link"),
        ([{"kind": "decode", "engine": "llm"}], "workload.classes[0].pipeline", "prefill stage before"),
        ([{"kind": "prefill", "engine": "routed"}], "workload.classes[0].pipeline[0].engine", "route stage"),
        ([{"kind": "route", "targets": ["llm"], "latency_s": 0.0, "weights": [1, 2]}], "", "weights"),
        ([{"kind": "route", "targets": ["llm"]}], "workload.classes[0].pipeline[0].latency_s", "fixed cost"),
        ([{"kind": "retrieve", "device": "grace_cpu"}], "workload.classes[0].pipeline[0].index", "vector index"),
        ([{"kind": "kv_retrieve", "past_tokens": 10}], "workload.classes[0].pipeline[0].tiers", "at least one"),
        ([{"kind": "kv_retrieve", "past_tokens": 10, "tiers": [{"tier": "nope", "hit_rate": 1}]}], "", "tier"),
        ([{"kind": "reason", "engine": "llm"}], "workload.classes[0].pipeline[0].thinking_tokens", "tokens"),
        ([{"kind": "prefill", "engine": "llm", "branches": 2}], "workload.classes[0].pipeline[0].branches", "reason"),
        (
            [
                {"kind": "prefill", "engine": "llm"},
                {"kind": "reason", "engine": "llm", "thinking_tokens": 5, "reward_engine": "nope"},
            ],
            "workload.classes[0].pipeline[1].reward_engine",
            "an engine name",
        ),
        (
            [
                {
                    "kind": "retrieve",
                    "device": "grace_cpu",
                    "index": {"type": "ivf_pq", "vectors": 10, "dim": 100, "pq_m": 3},
                }
            ],
            "workload.classes[0].pipeline[0].index.pq_m",
            "divisor",
        ),
    ],
)
def test_bad_pipelines_name_the_field(stages, path, match):
    with pytest.raises(ConfigError, match=match) as err:
        hf.simulate(scenario(stages), n_requests=2)
    if path:
        assert err.value.path == path


@pytest.mark.parametrize(("think", "answer"), [(1, 5), (4, 1), (1, 1), (3, 6)])
def test_thinking_edges_by_hand(think, answer):
    """Token k of a job ends at k steps; the first answer token is token think + 1."""
    stages = [
        {"kind": "prefill", "engine": "llm"},
        {"kind": "reason", "engine": "llm", "thinking_tokens": think},
        {"kind": "decode", "engine": "llm"},
    ]
    for ff in (True, False):
        ds = one(scenario(stages, output=answer), fast_forward=ff)
        assert float(ds.ttft_mean_s) == pytest.approx((think + 1) * STEP_S, rel=1e-9)
        assert float(ds.e2e_mean_s) == pytest.approx((think + answer) * STEP_S, rel=1e-9)
        assert stage(ds, "reason") == pytest.approx((think - 1) * STEP_S, rel=1e-9)
        assert stage(ds, "decode") == pytest.approx(answer * STEP_S, rel=1e-9)


# ---------------------------------------------------------------- classes that can never run (issue 21)


def test_a_pipeline_that_prefills_without_decoding_writes_no_answer():
    """Its LLM writes one token (the prefill's); an answer of more is a ConfigError, not output tokens/s."""
    for stages in ([{"kind": "prefill", "engine": "llm"}], [*([{"kind": "prefill", "engine": "llm"}]),
                   {"kind": "reason", "engine": "llm", "thinking_tokens": 5}]):  # fmt: skip
        for output, shown in ((50, 50), ({"dist": "uniform", "min": 1, "max": 9}, {"dist": "uniform", "min": 1,
                              "max": 9})):  # fmt: skip
            with pytest.raises(ConfigError) as e:
                hf.simulate(scenario(stages, output=output), n_requests=2)
            assert (e.value.path, e.value.value) == ("workload.classes[0].output_tokens", shown)
            assert e.value.expected.startswith("1: the pipeline prefills but has no decode stage")
        for output in (1, {"dist": "fixed", "value": 1}, {"dist": "uniform", "min": 1, "max": 1}):
            assert int(one(scenario(stages, output=output), n=2).completed_requests) == 2
    # a pipeline without an LLM stage: its class's output_tokens size the answer a postprocess stage handles
    post = [{"kind": "postprocess", "latency_s": 0.0, "per_token_s": 1e-3}]
    assert float(one(scenario(post, output=50)).e2e_mean_s) == pytest.approx(0.05, rel=1e-12)


RAG_INDEX = {"type": "flat", "vectors": 1e5, "dim": 256}


def test_documents_over_the_budget_make_every_request_fail():
    llm = {**LLM, "max_batched_tokens": 4096}
    retrieve = {"kind": "retrieve", "device": "grace_cpu", "index": RAG_INDEX, "top_k": 8, "doc_tokens": 500}
    stages = [retrieve, {"kind": "prefill", "engine": "llm"}, {"kind": "decode", "engine": "llm"}]
    with pytest.raises(ConfigError) as e:
        hf.simulate(scenario(stages, engines=[llm], prompt=1000), n_requests=2)
    assert (e.value.path, e.value.value) == ("workload.classes[0].pipeline[1]", 5000)  # new tokens
    assert "max_batched_tokens (4096) for engine 'llm'" in e.value.expected
    assert "at least 5000 new tokens" in e.value.expected and "class 'c0' would be rejected" in e.value.expected
    retrieve["top_k"] = 6  # 1000 + 3000 tokens fit
    assert int(one(scenario(stages, engines=[llm], prompt=1000), n=2).completed_requests) == 2


def test_a_routed_job_fails_only_if_every_target_rejects_it():
    big = {"name": "big", "model": "llama-3.1-8b", "device": "h200_sxm", "fixed_step_time_s": STEP_S}
    big["max_batched_tokens"] = 65_536
    sc = _two_models({}, prompt=20_000)
    sc["engines"][1] = big
    ds = one(sc, n=40)  # llm's 8192-token budget rejects the prompt, big runs it: about half complete
    assert 0 < int(ds.completed_requests) < 40
    sc = _two_models({}, prompt=200_000)  # over both contexts
    sc["engines"][1] = big
    with pytest.raises(ConfigError) as e:
        hf.simulate(sc, n_requests=2)
    assert e.value.path == "workload.classes[0].pipeline[1]" and "on each of the route's targets" in e.value.expected
    sc = _two_models({"rule": "class", "class_targets": {"c0": "llm"}}, prompt=20_000)  # class c0 goes to llm only
    sc["engines"][1] = big
    with pytest.raises(ConfigError) as e:
        hf.simulate(sc, n_requests=2)
    assert (e.value.path, e.value.value) == ("workload.classes[0].pipeline[1]", 20_000)
    assert "max_batched_tokens (8192) for engine 'llm'" in e.value.expected


def _random_pipeline(rng):
    """A random pipeline (rerank, retrieve, KV prefix with all-or-nothing hits, rounds, branches, disaggregated
    generation) with fixed lengths but the prompt's."""
    mbt = int(rng.choice([2048, 4096, 16_384]))
    policy = str(rng.choice(["continuous", "chunked", "static"]))
    llm = {**LLM, "model": "m", "max_batched_tokens": mbt, "batching": {"policy": policy}}
    engines = [llm]
    stages = []
    if rng.random() < 0.3:
        rr_mbt = int(rng.choice([1024, 8192]))
        engines.append({"name": "rr", "model": "bge-reranker-large", "device": "h100_sxm",
                        "fixed_step_time_s": STEP_S, "max_batched_tokens": rr_mbt})  # fmt: skip
        stages.append({"kind": "rerank", "engine": "rr", "top_k": int(rng.integers(1, 6)), "doc_tokens": 100})
    if rng.random() < 0.5:
        stages.append({"kind": "retrieve", "device": "grace_cpu", "index": RAG_INDEX,
                       "top_k": int(rng.integers(1, 6)), "doc_tokens": int(rng.integers(20, 400))})  # fmt: skip
    if rng.random() < 0.5:
        tiers = [{"tier": "host_dram_ddr5", "hit_rate": float(rng.choice([0.0, 1.0]))}]
        stages.append({"kind": "kv_retrieve", "past_tokens": int(rng.integers(1, 3000)), "tiers": tiers})
    stages.append({"kind": "prefill", "engine": "llm"})
    gen = "llm"
    if rng.random() < 0.3:  # disaggregated: generation on another engine (its own device)
        gen = "dec"
        engines.append({**llm, "name": "dec", "device": str(rng.choice(["h100_sxm", "small"]))})
    if rng.random() < 0.6:
        stages.append({"kind": "reason", "engine": gen, "thinking_tokens": int(rng.integers(1, 1500)),
                       "rounds": int(rng.integers(1, 4)), "tool_tokens": int(rng.integers(0, 1500)),
                       "branches": int(rng.integers(1, 3))})  # fmt: skip
    decode = rng.random() < 0.7
    if decode:
        stages.append({"kind": "decode", "engine": gen})
    sc = scenario(stages, engines=engines, output=int(rng.integers(1, 3000)) if decode else 1, rate=0.01)
    sc["models"] = {"m": {"base": "llama-3.1-8b", "max_context_tokens": int(rng.choice([8192, 32_768]))}}
    sc["devices"] = {"small": {"base": "h100_sxm", "memory_bytes": 22e9}}  # 13.7k-27.6k tokens of KV
    return sc


def test_the_pipeline_check_mirrors_the_loop_exactly(monkeypatch):
    """Random pipelines: the loop, run without the check on prompts 1..40000 tokens, rejects a request exactly
    when its prompt is past some edge; the check passes the longest prompt the loop ran and fails the shortest
    it rejected (the edge found to a few tokens)."""
    import hermes_fast.pipeline as pipeline
    from hermes_fast.simulate import prepare

    def check(sc, prompt):
        sc["workload"]["classes"][0]["prompt_tokens"] = prompt
        try:
            prepare(resolve_scenario(sc))
        except ConfigError:
            return False
        return True

    rng = np.random.default_rng(21)
    edges = 0
    for case in range(60):
        sc = _random_pipeline(rng)
        sc["workload"]["classes"][0]["prompt_tokens"] = {"dist": "uniform", "min": 1, "max": 40_000}
        with monkeypatch.context() as m:
            m.setattr(pipeline, "job_rejection", lambda *args, **kwargs: None)
            ds = hf.simulate(sc, n_requests=3000, seed=case, keep_requests=True)
        prompt = ds.request_prompt_tokens.values[0]
        rejected = ds.request_status.values[0] == Status.REJECTED
        assert rejected.any() or prompt.max() < 40_000  # (the contexts are at most 32768 tokens)
        longest_ok, shortest_bad = prompt[~rejected].max(initial=0), prompt[rejected].min()
        assert longest_ok < shortest_bad, case  # rejection is monotone in the prompt
        assert check(sc, int(shortest_bad)) is False, (case, sc, shortest_bad)
        if longest_ok:
            assert check(sc, int(longest_ok)) is True, (case, sc, longest_ok)
            edges += shortest_bad - longest_ok < 100
    assert edges >= 30
