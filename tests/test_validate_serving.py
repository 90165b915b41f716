"""Measured serving runs as scenarios (hermes_fast.calibration.serving): the scenario and requests built from a run
(checked by hand on a few rows), the harness's metrics, runs that cannot be simulated listed with their reason, the
`hermes-fast validate --serving` table and CSV, and stack costs recovered from synthetic runs (issue 20)."""

from __future__ import annotations

import csv
import importlib.util
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

import hermes_fast as hf
from hermes_fast.calibration import serving as S
from hermes_fast.calibration import serving_scenario as scenario
from hermes_fast.cli import main
from hermes_fast.kernels import layout as L
from hermes_fast.kernels.serving import Status
from hermes_fast.pools import build_serving
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import run_serving
from hermes_fast.workload import rng_for

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs() -> list[S.ServingRun]:
    return S.serving_runs()


def find(runs, **want) -> S.ServingRun:
    """The one run whose settings start with each given value (input_tokens: equal to it)."""
    same = lambda k, v, r: r.settings[k] == v if k == "input_tokens" else r.settings[k].startswith(v)  # noqa: E731
    hits = [r for r in runs if all(same(k, v, r) for k, v in want.items())]
    assert len(hits) == 1, [h.label for h in hits]
    return hits[0]


# ------------------------------------------------------------------------------------------ runs and scenarios


def test_rows_group_into_runs(runs):
    assert len(runs) == 236 and sum(len(r.metrics) for r in runs) == 1991 + 8 * 12 + 84 + 17 * 9
    assert len({r.key for r in runs}) == len(runs)
    assert {r.split for r in runs} == {"fit", "holdout"}
    run = find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="32000")
    assert run.metrics["ttft_mean_s"] == pytest.approx(153.889, rel=1e-4)
    assert len(run.metrics) == 11


def test_stack_facts_rows_have_the_headers_fields():
    """stack_facts.csv, the sourced facts the stacks cite: every row has the header's seven fields (a note with an
    unquoted comma would spill into columns no reader names)."""
    with (REPO_ROOT / "hermes_fast" / "data" / "serving" / "stack_facts.csv").open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["stack", "stack_version", "parameter", "value", "unit", "source", "notes"]
    assert [i + 2 for i, row in enumerate(rows) if len(row) != len(header)] == []


def test_poisson_run_with_fixed_lengths(runs):
    """vLLM 0.8.2, QwQ-32B (Qwen2.5-32B architecture) TP2 on H100, 50 requests of 32000/100 tokens at 10 req/s."""
    run = find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="32000")
    sc = S.serving_scenario(run)
    (e,) = sc["engines"]
    assert (e["model"], e["device"], e["stack"], e["parallel"]) == (
        "qwq-32b",
        "h100_sxm",
        "vllm-0.8",
        {"tp": 2, "pp": 1},
    )
    assert e["dtypes"] == {"weight": "bf16", "activation": "bf16", "kv": "bf16"}
    w = sc["workload"]
    assert (w["arrival"], w["rate_per_s"], w["prompt_tokens"], w["output_tokens"]) == (
        {"process": "poisson"},
        10.0,
        32000,
        100,
    )
    assert sc["serving"]["warmup_requests"] == 0
    resolved = resolve_scenario(sc)
    assert resolved.engines[0].engine.batching.policy == "chunked"  # the stack's scheduler
    assert resolved.engines[0].model.n_heads == 40
    d = S.harness_draws(run, rng_for(0, run.key, 0))
    assert d.arrival_s.size == 50 and d.arrival_s[0] == 0.0 and not d.closed
    assert np.all(d.prompt_tokens == 32000) and np.all(d.output_tokens == 100)
    gaps = np.diff(S.harness_draws(run, rng_for(0, run.key, 1), n=20000).arrival_s)
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)  # exponential gaps at 10 req/s


def test_offline_and_batch1_tensorrt_runs(runs):
    """TensorRT-LLM 0.16 tuning guide, Llama-3.3-70B (llama-3.1-70b architecture) FP8 + FP8 KV, fully tuned build:
    the in-process throughput run sends 1000 requests at once, the latency run one at a time; no API front end;
    the build's max_batch_size 512 and max_num_tokens 16384."""
    tuned = dict(stack="trtllm", dtype="fp8", kv_dtype="fp8", server_args="FP8 + FP8 KV + reduce_fusion")
    offline = find(runs, arrival="offline", **tuned)
    sc = S.serving_scenario(offline)
    (e,) = sc["engines"]
    assert e["stack"] == "run" and sc["stacks"]["run"] == {
        "base": "trtllm-engine",
        "frontend_s": 0.0,
        "frontend_serial_s": 0.0,
        "frontend_token_s": 0.0,
    }
    assert (e["max_batched_tokens"], e["batching"]["max_batch_size"]) == (16384, 512)
    assert e["dtypes"] == {"weight": "fp8", "activation": "fp8", "kv": "fp8"}
    assert sc["workload"]["arrival"] == {"process": "closed", "concurrency": 1000}
    d = S.harness_draws(offline, rng_for(0))
    assert d.arrival_s.size == 1000 and np.all(d.arrival_s == 0.0) and np.all(d.prompt_tokens == 2048)
    latency = find(runs, arrival="concurrency", **tuned)
    assert S.serving_scenario(latency)["workload"]["arrival"] == {"process": "closed", "concurrency": 1}
    d = S.harness_draws(latency, rng_for(0))
    assert d.closed and d.concurrency == 1 and d.arrival_s[0] == 0.0 and np.all(np.isinf(d.arrival_s[1:]))
    assert np.all(d.think_s == 0.0) and d.arrival_s.size == 100


def test_kv_of_a_tensorrt_run_is_its_share_of_the_free_memory(runs):
    """kv_cache_free_gpu_memory_fraction 0.90 (default): KV = 0.9 x (memory - weights - activation reserve), of the
    memory CUDA reports."""
    run = find(runs, arrival="offline", stack="trtllm", server_args="LLM(model")
    prep = S.prepare_run(run)
    pool = prep.setup.pools[0]
    ce = pool.compiled
    free = pool.device.runtime_memory_bytes - ce.weights_bytes - ce.activation_reserve_bytes
    assert ce.kv_capacity_tokens * ce.kv_bytes_per_token == pytest.approx(0.9 * free, rel=1e-4)
    assert pool.engine.batching.policy == "mixed" and pool.stack.admission == "reserve_all"


def test_a_tensorrt_run_with_chunked_context_runs_the_chunked_policy(runs):
    """trtllm-serve --enable_chunked_prefill (off by default): GPUStack's Qwen3-14B on an A100 splits its 32k-token
    prompts over iterations of max_num_tokens (8192), where the default run prefills a prompt whole; the
    --max_num_tokens blocks set the budget."""
    chunked = find(runs, stack="trtllm", model="qwen3-14b", input_tokens="32000")
    assert "--enable_chunked_prefill" in chunked.settings["server_args"]
    (e,) = S.serving_scenario(chunked)["engines"]
    assert e["batching"]["policy"] == "chunked"
    pool = S.prepare_run(chunked).setup.pools[0]
    assert pool.engine.batching.policy == "chunked" and pool.stack.admission == "reserve_all"
    (whole,) = [
        r
        for r in runs
        if r.settings["server_args"] == "trtllm-serve Qwen/Qwen3-14B" and r.settings["device"] == "a100_sxm_80gb"
    ]
    assert "policy" not in S.serving_scenario(whole)["engines"][0].get("batching", {})
    budget = find(runs, stack="trtllm", server_args="trtllm-serve Qwen/Qwen3-14B --max_num_tokens=32768")
    assert S.serving_scenario(budget)["engines"][0]["max_batched_tokens"] == 32768


def test_tensorrt_graphs_and_overlap_follow_the_version(runs):
    """TensorRT-LLM's PyTorch backend: CUDA graphs and the overlap scheduler are opt-in in the 2025-04 build
    (PyTorchConfig use_cuda_graph / enable_overlap_scheduler: that run's flags turn them on, padded graphs up to
    256) and on by default in 1.x (TorchLlmArgs cuda_graph_config / disable_overlap_scheduler: graphs of 1-32,
    64 and 128, no padding), so a 1.2 run that names neither runs both; a run may turn either off."""
    assert scenario.trt_graph_sizes(128, padding=False) == [*range(1, 33), 64, 128]
    assert scenario.trt_graph_sizes(256) == [1, 2, 4, *range(8, 129, 8), 256]
    assert scenario.trt_graph_sizes(100) == [1, 2, 4, *range(8, 97, 8), 100]  # (the largest, captured too)
    assert scenario.trt_graph_sizes(1024, padding=False)[-4:] == [128, 256, 512, 1024]
    v1 = find(runs, stack="trtllm", model="qwen3-8b")
    assert v1.settings["server_args"] == "trtllm-serve Qwen/Qwen3-8B"
    fields = S.run_stack_fields(v1)
    assert fields["cuda_graph_sizes"] == [*range(1, 33), 64, 128] and fields["cuda_graph_padding"] is False
    stack = S.prepare_run(v1).setup.pools[0].stack
    assert stack.async_scheduling and stack.cuda_graph_sizes == (*range(1, 33), 64, 128)
    early = find(runs, stack="trtllm", stack_version="main", input_tokens="1000")
    assert "enable_overlap_scheduler" in early.settings["server_args"]
    fields = S.run_stack_fields(early)
    assert fields["cuda_graph_sizes"] == scenario.trt_graph_sizes(256) and fields["cuda_graph_padding"] is True
    assert "async_scheduling" not in fields  # (the entry's: on)
    assert "max_batch_size" not in S.serving_scenario(early)["engines"][0].get("batching", {})  # (not the graphs')
    flags = (
        "trtllm-serve Qwen/Qwen3-8B --extra_llm_api_options {disable_overlap_scheduler: true, cuda_graph_config: null}"
    )
    off = replace(v1, settings={**v1.settings, "server_args": flags})
    assert S.run_stack_fields(off) == {"cuda_graph_sizes": [], "cuda_graph_padding": False, "async_scheduling": False}
    without = replace(early, settings={**early.settings, "server_args": "trtllm-serve --backend pytorch"})
    assert S.run_stack_fields(without)["async_scheduling"] is False
    assert S.run_stack_fields(without)["cuda_graph_sizes"] == []
    # 1.x's cuda_graph_config keys (extra_llm_api_options YAML): the largest size, or the sizes themselves
    for config, sizes, padding in (
        ("{enable_padding: true, max_batch_size: 256}", scenario.trt_graph_sizes(256), True),
        ("{max_batch_size: 64}", [*range(1, 33), 64], False),
        ("{max_batch_size: 0}", [*range(1, 33), 64, 128], False),  # (0: the default, 128)
        ("{batch_sizes: [8, 1, 64]}", [1, 8, 64], False),
    ):
        args = f"trtllm-serve Qwen/Qwen3-8B --extra_llm_api_options {{cuda_graph_config: {config}}}"
        fields = S.run_stack_fields(replace(v1, settings={**v1.settings, "server_args": args}))
        assert (fields["cuda_graph_sizes"], fields["cuda_graph_padding"]) == (sizes, padding), config
        assert "max_batch_size" not in S.serving_scenario(replace(v1, settings={**v1.settings, "server_args": args}))[
            "engines"
        ][0].get("batching", {})  # (the graphs', not the engine's)


def test_random_range_ratio_and_closed_loop(runs):
    """vLLM FP8-KV blog: ~20k / ~2k tokens +-15% (vllm bench serve --random-range-ratio 0.15), concurrency 8."""
    run = find(runs, stack_version="0.19.1", model="llama-3.1-8b", kv_dtype="fp8")
    sc = S.serving_scenario(run)
    assert sc["engines"][0]["stack"] == "vllm" and sc["engines"][0]["dtypes"]["kv"] == "fp8"
    (cls,) = sc["workload"]["classes"]
    assert cls["prompt_tokens"] == {"dist": "uniform", "min": 17000, "max": 23000}
    assert cls["output_tokens"] == {"dist": "uniform", "min": 1700, "max": 2300}
    assert sc["workload"]["arrival"] == {"process": "closed", "concurrency": 8}
    d = S.harness_draws(run, rng_for(0))
    assert d.prompt_tokens.min() >= 17000 and d.prompt_tokens.max() <= 23000 and d.concurrency == 8
    assert d.prompt_tokens.size == 150


def test_mxfp4_weights_with_bf16_gemms(runs):
    """vLLM FP8-KV blog, Table 5: gpt-oss-20b on one H100 (dtype w4a16: its MXFP4 experts run as 4-bit weights
    dequantised into BF16 GEMMs, Hopper having no FP4 tensor path), the same closed loop as the Llama runs."""
    run = find(runs, stack_version="0.19.1", model="gpt-oss-20b", kv_dtype="fp8")
    assert run.split == "holdout" and S.stack_entry(run) == "vllm" and S.skip_reason(run) is None
    e = S.serving_scenario(run)["engines"][0]
    assert e["model"] == "gpt-oss-20b" and e["device"] == "h100_sxm" and e["stack"] == "vllm"
    assert e["dtypes"] == {"weight": "bf16", "expert_weight": "fp4", "activation": "bf16", "kv": "fp8"}
    sc = hf.load_scenario(S.serving_scenario(run))  # a valid scenario: fp4 experts, GEMMs at the bf16 peak
    assert sc.engines[0].dtypes.expert_weight == "fp4" and sc.engines[0].dtypes.activation == "bf16"
    bf16 = find(runs, stack_version="0.19.1", model="gpt-oss-20b", kv_dtype="bf16")
    assert S.serving_scenario(bf16)["engines"][0]["dtypes"]["kv"] == "bf16"


def test_sharegpt_runs(runs):
    """The 500-prompt ShareGPT runs send the shipped pairs in order (DeepSeek tokenizer); the Llama-3 runs of
    SGLang's README scale them to its 194.3 output tokens per request; DeepSeek-R1 is block-scaled FP8 at TP8."""
    run = find(runs, stack_version="0.8.4", dataset="sharegpt", split="holdout")
    pairs = np.loadtxt(S.SHAREGPT_LENGTHS, delimiter=",", skiprows=1, dtype=np.int64)
    d = S.harness_draws(run, rng_for(0))
    assert np.array_equal(d.prompt_tokens, pairs[:, 0]) and np.array_equal(d.output_tokens, pairs[:, 1])
    assert d.prompt_tokens.mean() == pytest.approx(205.95, rel=1e-9)  # the mean the CSV gives for its DGX run
    e = S.serving_scenario(run)["engines"][0]
    assert e["dtypes"]["gemm_scaling"] == "block" and e["parallel"]["tp"] == 8 and e["model"] == "deepseek-v3"
    llama = find(runs, stack_version="0.3.0", device="a100", arrival="offline")
    d = S.harness_draws(llama, rng_for(0))
    assert d.prompt_tokens.size == 5000
    assert d.output_tokens.mean() == pytest.approx(194.3, rel=0.03)  # resampled pairs, scaled
    assert S.stack_entry(llama) == "sglang-0.3"


def test_sglang_cuda_graph_sizes_by_version(runs):
    """SGLang's captured decode batch sizes (stack_facts.csv): 0.4.x [1, 2, 4] + multiples of 8 to cuda_graph_max_bs,
    160 on an 80 GB GPU, 256 on an H200; 0.5.x [1, 2, 4, 8, 12] + multiples of 8 from 16 to 256 (the entry's own,
    so a TP1 run changes nothing), then by 16 to 496 and by 32 from 512, to 512 from TP 4; --cuda-graph-max-bs caps
    them."""
    h200 = find(runs, stack_version="0.4.4.post1", model="llama-3.1-8b", input_tokens="10000")
    a100 = find(runs, stack_version="0.4.6", input_tokens="1913", rate_per_s="8")
    tp8 = find(runs, stack_version="0.5.5", model="qwen3-235b-a22b", device="a100")
    tp1 = find(runs, stack_version="0.5.5", model="qwen3-14b", device="h100")
    capped = next(r for r in runs if "--cuda-graph-max-bs 8" in r.settings["server_args"])
    assert S.run_stack_fields(h200)["cuda_graph_sizes"] == (1, 2, 4, *range(8, 257, 8))
    assert S.run_stack_fields(a100)["cuda_graph_sizes"] == (1, 2, 4, *range(8, 161, 8))
    wide = S.run_stack_fields(tp8)["cuda_graph_sizes"]
    assert wide[:6] == (1, 2, 4, 8, 12, 16) and wide[-4:] == (464, 480, 496, 512) and 264 not in wide
    assert "cuda_graph_sizes" not in S.run_stack_fields(tp1)
    assert S.prepare_run(tp1).stack.cuda_graph_sizes == (1, 2, 4, 8, 12, *range(16, 257, 8))
    assert S.run_stack_fields(capped)["cuda_graph_sizes"] == (1, 2, 4, 8)


def test_sglang_mem_fraction_by_version(runs):
    """SGLang's mem_fraction_static where a run does not set it (stack_facts.csv): 0.4.x by TP size (0.88 at TP1,
    0.87 at TP2, 0.81 at TP8); 0.5.x 1 - reserved / the GPU's memory, reserved (9.5 + TP / 2) GiB on an 80 GB
    GPU (CUDA's 79.2 GiB here): 0.874 at TP1, 0.830 at TP8; (12 + TP / 2) GiB on an H200 (its datasheet 131.3 GiB
    here): 0.878 at TP8."""
    cases = [
        (find(runs, stack_version="0.4.4.post1", model="llama-3.1-8b", input_tokens="10000"), 0.88),
        (find(runs, stack_version="0.4.4.post1", model_hf="Qwen/QwQ-32B", input_tokens="10000"), 0.87),
        (next(r for r in runs if r.settings["stack_version"] == "0.4.5.post1" and r.settings["tp"] == "8"), 0.81),
        (find(runs, stack_version="0.5.5", model="qwen3-32b", device="a100"), 0.874),
        (find(runs, stack_version="0.5.5", model="qwen3-235b-a22b", device="a100"), 0.830),
        (find(runs, stack_version="0.5.3", model="deepseek-v3", device="h200"), 0.878),
    ]
    for run, expected in cases:
        fraction = S.serving_scenario(run)["engines"][0]["memory_utilization"]
        assert fraction == pytest.approx(expected, abs=5e-4), run.label
    given = find(runs, stack_version="0.3.0", server_args="--disable-radix-cache --mem-frac 0.88")
    assert S.serving_scenario(given)["engines"][0]["memory_utilization"] == 0.88


def test_tensorrt_pytorch_backend_flags(runs):
    run = find(runs, stack="trtllm", input_tokens="1000")
    sc = S.serving_scenario(run)
    e, stack = sc["engines"][0], sc["stacks"]["run"]
    assert e["parallel"] == {"tp": 8, "pp": 1, "ep": 8} and e["max_batched_tokens"] == 11000
    assert stack["base"] == "trtllm" and stack["cuda_graph_padding"] is True
    assert stack["cuda_graph_sizes"][:4] == [1, 2, 4, 8] and stack["cuda_graph_sizes"][-2:] == [128, 256]
    long = find(runs, stack="trtllm", input_tokens="30000")  # no extra options: no CUDA graphs
    assert S.serving_scenario(long)["stacks"]["run"]["cuda_graph_sizes"] == []
    assert S.serving_scenario(long)["engines"][0]["batching"] == {"max_batch_size": 50}


def test_stack_entries_by_version(runs):
    entries = {S.stack_entry(r) for r in runs}
    assert entries == {None, "vllm", "vllm-0.8", "sglang", "sglang-0.3", "trtllm", "trtllm-engine"}
    for name in entries - {None}:
        hf.Catalog().stack(name)  # each is a catalog entry


# ------------------------------------------------------------------------------------------ what is left out


def test_runs_that_cannot_be_simulated_are_listed_with_their_reason(runs):
    why = {r.index: S.skip_reason(r) for r in runs}
    v0 = find(runs, stack_version="0.6.0", arrival="offline", device="a100")
    assert "multi-step" in why[v0.index]
    dp = [r for r in runs if "--enable-dp-attention" in r.settings["server_args"]]
    assert len(dp) == 10 and all(why[r.index] is None for r in dp)  # (each rank's chunk: pools.PL_RANK_CHUNK)
    sc = S.serving_scenario(dp[0])
    assert sc["engines"][0]["parallel"]["attention_dp"] is True
    assert sc["stacks"]["run"]["new_token_ratio"] == pytest.approx(0.3 * hf.Catalog().stack("sglang").new_token_ratio)
    disagg = [r for r in runs if "per-node" in (why[r.index] or "")]
    assert len(disagg) == 9 and all("disaggregated" in why[r.index] for r in disagg)
    skipped = [r for r in runs if why[r.index]]
    assert len(skipped) == 15
    preds = S.predict_serving(skipped[:3])
    rows = S.serving_errors(preds)
    assert [r["skip"] for r in rows] == [why[r.index] for r in skipped[:3]]
    with pytest.raises(hf.ConfigError, match="multi-step"):
        S.serving_scenario(v0)


# ------------------------------------------------------------------------------------------ metrics


def fixed_step_setup(step_s=0.01, frontend_s=0.005):
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": step_s, "stack": "s"}
    sc = {
        "engines": [engine],
        # (a fixed front end: none of it on the API server's thread)
        "stacks": {"s": {"base": "vllm", "frontend_s": frontend_s, "frontend_serial_s": 0.0, "frontend_token_s": 0.0}},
        "workload": {"prompt_tokens": 100, "output_tokens": 11},
    }
    return build_serving(resolve_scenario(sc))


def synthetic_run(**settings) -> S.ServingRun:
    base = {c: "" for c in S.RUN_KEY}
    base.update(stack="vllm", stack_version="0.19.1", device="h100_sxm", tp="1", pp="1", dataset="random")
    base.update(input_tokens="100", output_tokens="11", frontend="http", split="fit", model="llama-3.1-8b")
    base.update(settings)
    return S.ServingRun(0, base, {})


def test_harness_metrics_by_hand():
    """One client at a time, constant 10 ms steps, a 5 ms front end, 100-token prompts, 11-token answers: each
    request takes 5 ms + a prefill step (first token) + 10 decode steps; the next is sent when it completes."""
    setup = fixed_step_setup()
    run = synthetic_run(arrival="concurrency", concurrency="1", num_prompts="4")
    out = run_serving(setup, S.harness_draws(run, rng_for(0)))
    assert np.all(out.status == Status.DONE)
    m = S.harness_metrics(out)
    assert m["ttft_mean_s"] == pytest.approx(0.015) and m["ttft_p99_s"] == pytest.approx(0.015)
    assert m["tpot_mean_s"] == pytest.approx(0.010) and m["itl_mean_s"] == pytest.approx(0.010)
    assert m["itl_median_s"] == pytest.approx(0.010, rel=0.012)  # the histogram's 1% bins
    assert m["benchmark_duration_s"] == pytest.approx(4 * 0.115)
    assert m["output_throughput_token_per_s"] == pytest.approx(44 / 0.46)
    assert m["request_throughput_per_s"] == pytest.approx(4 / 0.46)
    assert m["e2e_median_s"] == pytest.approx(0.115)


def test_poisson_sends_start_at_zero_and_duration_runs_to_the_last_completion():
    setup = fixed_step_setup(frontend_s=0.0)
    run = synthetic_run(arrival="poisson", rate_per_s="1", num_prompts="3")
    draws = S.harness_draws(run, rng_for(3))
    out = run_serving(setup, draws)
    m = S.harness_metrics(out)
    assert m["benchmark_duration_s"] == pytest.approx(float(out.done_s.max()))
    assert m["ttft_median_s"] == pytest.approx(0.010)  # alone: one prefill step


def test_costs_patched_into_prepared_pools_equal_a_rebuild(runs):
    run = find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="1000")
    costs = {
        "frontend_s": 0.012,
        "step_overhead_s": 0.0015,
        "sequence_overhead_s": 5e-5,
        "step_overhead_per_tp_rank_s": 0.001,
        "eager_launch_s_per_layer": 2e-4,
        "prefill_attention_extra": 0.3,
        "moe_compute_extra": 0.4,
    }
    zero = {k: 0.0 for k in S.COST_FIELDS}
    patched = S.simulate_prepared(S.prepare_run(run, costs=zero), costs, replicates=2)
    rebuilt = S.simulate_prepared(S.prepare_run(run, costs=costs), None, replicates=2)
    assert patched == rebuilt
    assert patched != S.simulate_prepared(S.prepare_run(run, costs=zero), None, replicates=2)


def test_the_cuda_core_decode_extra_reaches_only_the_runs_whose_decode_runs_on_cuda_cores(runs):
    """SGLang decodes Llama-3.1-8B (4 query heads a KV head, BF16 KV) on FlashInfer's CUDA-core kernel: 0.4.4 on an
    H200 (FlashInfer on Hopper before 0.4.6) and 0.4.6 on an A100 take the tried ``cuda_core_decode_extra``; QwQ-32B
    (5 a KV head: tensor cores) on the same H200 and 0.5.3's Qwen3-8B on an H100 (FlashAttention 3 from 0.4.6) take
    none. ``--attention-backend flashinfer`` brings it to Hopper, another backend named takes it away. Patched pools
    equal a rebuild."""
    llama = find(runs, stack_version="0.4.4.post1", model="llama-3.1-8b", input_tokens="10000")
    qwq = find(runs, stack_version="0.4.4.post1", model_hf="Qwen/QwQ-32B", input_tokens="10000")
    ampere = find(runs, stack_version="0.4.6", input_tokens="1913", rate_per_s="8")
    hopper = next(r for r in runs if r.settings["stack_version"].startswith("0.5.3.post3")
                  and r.settings["model"] == "qwen3-8b" and r.settings["dtype"] == "bf16")  # fmt: skip
    zero = {k: 0.0 for k in S.COST_FIELDS}
    tried = zero | {"cuda_core_decode_extra": 0.8}
    for run, expected in ((llama, 0.8), (ampere, 0.8), (qwq, 0.0), (hopper, 0.0)):
        prep = S.prepare_run(run, costs=zero)
        assert prep.cuda_core_decode == (expected > 0.0), run.label
        assert S.with_costs(prep, tried).params[0, L.DECODE_ATTN_EXTRA] == expected, run.label
    flagged = lambda run, backend: replace(  # noqa: E731
        run, settings={**run.settings, "server_args": run.settings["server_args"] + f" --attention-backend {backend}"}
    )
    assert S.prepare_run(flagged(hopper, "flashinfer"), costs=zero).cuda_core_decode
    assert S.run_stack_fields(flagged(ampere, "triton"))["cuda_core_decode_extra"] is None
    assert not S.prepare_run(flagged(ampere, "triton"), costs=tried).cuda_core_decode
    patched = S.simulate_prepared(S.prepare_run(llama, costs=zero), tried, replicates=1)
    assert patched == S.simulate_prepared(S.prepare_run(llama, costs=tried), None, replicates=1)
    assert (
        patched["tpot_mean_s"]
        > S.simulate_prepared(S.prepare_run(llama, costs=zero), None, replicates=1)["tpot_mean_s"]
    )


def test_the_sink_backends_extra_reaches_only_the_runs_that_run_it(runs):
    """vLLM 0.11's gpt-oss-20b on an A100 (attention sinks before Hopper: TRITON_ATTN) takes the tried
    ``sink_attention_extra`` for its prefill attention; its gpt-oss-20b on an H100 (FlashAttention 3) and its
    Qwen3-32B on an A100 (no sinks) take ``prefill_attention_extra``; with no sink extra (None) the A100 run takes
    ``prefill_attention_extra`` too. Patched pools equal a rebuild, whatever the prepared run's own sink extra was."""
    ampere = find(runs, model="gpt-oss-20b", device="a100_sxm_80gb", input_tokens="32000", output_tokens="95")
    hopper = next(r for r in runs if r.settings["model"] == "gpt-oss-20b" and r.settings["device"] == "h100_sxm"
                  and S.stack_entry(r) == "vllm" and S.skip_reason(r) is None)  # fmt: skip
    dense = find(runs, stack_version="0.11", model="qwen3-32b", device="a100_sxm_80gb", input_tokens="32000")
    zero = {k: 0.0 for k in S.COST_FIELDS}
    costs = zero | {"prefill_attention_extra": 0.5, "sink_attention_extra": 2.0}
    for run, expected in ((ampere, 2.0), (hopper, 0.5), (dense, 0.5)):
        prep = S.prepare_run(run, costs=zero)
        assert prep.sink_kernels == (expected == 2.0)
        assert S.with_costs(prep, costs).params[0, L.PREFILL_ATTN_EXTRA] == expected
    no_sink = costs | {"sink_attention_extra": None}
    assert S.with_costs(S.prepare_run(ampere), no_sink).params[0, L.PREFILL_ATTN_EXTRA] == 0.5
    for before, after in ((no_sink, costs), (costs, no_sink), (zero, costs)):
        patched = S.simulate_prepared(S.prepare_run(ampere, costs=before), after, replicates=1)
        assert patched == S.simulate_prepared(S.prepare_run(ampere, costs=after), None, replicates=1)


def test_a_runs_own_flags_win_over_the_costs_tried(runs):
    """Costs tried in a fit replace the entry's, not what the run's own flags set: trtllm-bench drives the executor
    in process (no front end, whatever ``frontend_s`` is tried), and vLLM 0.11's gpt-oss on an H100 keeps its sync
    scheduling and its matmul_ogs experts (the entry's moe_kernels: their weight-reading extra, no fused-MoE compute
    extra); patched pools equal a rebuild."""
    bench = next(r for r in runs if r.settings["frontend"] == "in_process" and S.skip_reason(r) is None)
    hopper = next(r for r in runs if r.settings["stack_version"].startswith("0.11") and r.settings["dtype"] == "w4a16"
                  and r.settings["device"] == "h100_sxm")  # fmt: skip
    zero = {k: 0.0 for k in S.COST_FIELDS}
    costs = zero | {"frontend_s": 0.02, "moe_compute_extra": 1.5, "moe_memory_extra": 0.3}
    for run in (bench, hopper):
        stack = S.serving_scenario(run, costs)["stacks"]["run"]
        own = S.run_stack_fields(run)
        assert own and all(stack[k] == v for k, v in own.items())
        patched = S.simulate_prepared(S.prepare_run(run, costs=zero), costs, replicates=1)
        assert patched == S.simulate_prepared(S.prepare_run(run, costs=costs), None, replicates=1)
    assert S.serving_scenario(bench, costs)["stacks"]["run"]["frontend_s"] == 0.0
    params = S.with_costs(S.prepare_run(hopper), costs).params
    kernel = hf.Catalog().stack("vllm").moe_kernels[0]
    assert (params[0, L.MOE_COMPUTE_EXTRA], params[0, L.MOE_MEMORY_EXTRA]) == (0.0, kernel.memory_extra)
    assert S.run_stack_fields(hopper) == {"async_scheduling": False}


def test_error_rows_and_summary(runs):
    run = find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="1000")
    rows = S.serving_errors(S.predict_serving([run], replicates=2))
    assert {r["metric"] for r in rows} == set(run.metrics)
    for r in rows:
        assert r["error"] == pytest.approx(r["predicted"] / r["measured"] - 1)
        assert r["stack_entry"] == "vllm-0.8" and r["split"] == "holdout"
    summary = S.error_summary(rows)
    assert [s["metric"] for s in summary] == list(S.REPORT_METRICS)
    ttft = next(r for r in rows if r["metric"] == "ttft_mean_s")
    assert summary[0]["median_abs_error"] == pytest.approx(abs(ttft["error"]))


# ------------------------------------------------------------------------------------------ the command


def test_cli_validate_serving_prints_the_table_and_writes_the_csv(runs, tmp_path, capsys):
    """A file of three runs: two simulated (one fit, one holdout), one that cannot be (vLLM V0 multi-step)."""
    picked = [
        find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="1000"),
        find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="5000"),
        find(runs, stack_version="0.6.0", arrival="offline", device="a100"),
    ]
    sources = {r.settings["source"] for r in picked}
    src = tmp_path / "runs.csv"
    with open(S.SERVING_RUNS, newline="") as f, open(src, "w", newline="") as g:
        reader = csv.DictReader(f)
        w = csv.DictWriter(g, fieldnames=reader.fieldnames)
        w.writeheader()
        keep = {tuple(r.settings[c] for c in S.RUN_KEY) for r in picked}
        w.writerows(row for row in reader if tuple(row[c] for c in S.RUN_KEY) in keep)
    assert len(sources) == 3
    out = tmp_path / "errors.csv"
    assert main(["validate", "--serving", str(src), "--out", str(out), "--replicates", "2"]) == 0
    text = capsys.readouterr().out
    assert "vllm-0.8       holdout  mean TTFT" in text and "vllm-0.8       fit      output throughput" in text
    assert "1 runs not simulated" in text and "multi-step" in text
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"fit", "holdout"}
    assert sum(1 for r in rows if r["skip"]) == 1
    measured = [r for r in rows if not r["skip"]]
    assert len(measured) == 22 and all(math.isfinite(float(r["predicted"])) for r in measured)


# ------------------------------------------------------------------------------------------ the fit


def _fit_module():
    spec = importlib.util.spec_from_file_location("fit_stacks", REPO_ROOT / "benchmarks" / "fit_stacks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TRUE_COSTS = {
    "frontend_s": 0.012,
    "step_overhead_s": 0.0015,
    "sequence_overhead_s": 4e-5,
    "step_overhead_per_tp_rank_s": 0.001,
}


def _synthetic(picks, costs, reps):
    """The runs with their metrics replaced by simulated ones at ``costs`` (the fit's own seeds)."""
    out = []
    for r in picks:
        pred = S.simulate_prepared(S.prepare_run(r, costs=costs), None, reps, 0)
        out.append(S.ServingRun(r.index, r.settings, {m: pred[m] for m in S.FIT_METRICS}, r.notes))
    return out


def test_host_costs_recovered_from_synthetic_runs(runs):
    """Front end and per-step cost of three measured vLLM 0.8 runs simulated at known costs, fitted back."""
    picks = [
        find(runs, stack_version="0.8.2", device="h100_sxm", input_tokens="1000"),
        find(runs, stack_version="0.8.2", model_hf="neuralmagic/Meta", input_tokens="1000"),
        find(runs, stack_version="0.8.2", model_hf="neuralmagic/Llama-3.2", input_tokens="5000"),
    ]
    truth = {k: 0.0 for k in S.COST_FIELDS} | {"frontend_s": 0.012, "step_overhead_s": 0.0015}
    synth = _synthetic(picks, truth, 2)
    preps = [S.prepare_run(r, costs={k: 0.0 for k in S.COST_FIELDS}) for r in synth]

    def f(x):
        costs = {"frontend_s": x[0] * 1e-3, "step_overhead_s": x[1] * 1e-3}
        res = []
        for p in preps:
            pred = S.simulate_prepared(p, costs, 2, 0)
            res += [np.log(pred[m] / p.run.metrics[m]) for m in S.FIT_METRICS]
        return np.array(res)

    fit = least_squares(f, [1.0, 0.1], bounds=([0, 0], [100, 20]), diff_step=0.1, xtol=1e-6, max_nfev=80)
    # (the simulated metrics move in steps as events reorder: the objective is flat within a few percent of the truth)
    assert fit.x[0] == pytest.approx(12.0, rel=0.05) and fit.x[1] == pytest.approx(1.5, rel=0.05)


def _closed_loop_run(tp: int, clients: int) -> S.ServingRun:
    """A vLLM 0.8 benchmark of Llama-3.1-8B on H100 at TP ``tp``: ``clients`` closed-loop clients, 500/200 tokens."""
    st = {c: "" for c in S.RUN_KEY}
    st.update(stack="vllm", stack_version="0.8.2 (V1 engine)", device="h100_sxm", model="llama-3.1-8b", dtype="bf16")
    st.update(kv_dtype="bf16", tp=str(tp), pp="1", input_tokens="500", output_tokens="200", dataset="random")
    st.update(arrival="concurrency", concurrency=str(clients), num_prompts=str(max(2 * clients, 8)), frontend="http")
    st.update(split="fit", source=f"synthetic tp{tp} c{clients}")
    return S.ServingRun(tp * 100 + clients, st, {})


def test_fit_script_recovers_a_stacks_host_costs_from_synthetic_runs():
    """benchmarks/fit_stacks.py's fit (multi-start bounded least squares, Cauchy loss, TTFT at low load only) of
    four costs, from four synthetic runs that identify them (one client and 32, TP1 and TP2), recovers each."""
    fs = _fit_module()
    picks = [_closed_loop_run(tp, c) for tp in (1, 2) for c in (1, 32)]
    synth = _synthetic(picks, TRUE_COSTS | {"eager_launch_s_per_layer": 0.0}, fs.REPLICATES)
    params = {k: v for k, v in fs.PARAMETERS["vllm-0.8"].items() if k in TRUE_COSTS}
    fs.PARAMETERS["vllm-0.8"] = params  # (a fresh module: nothing else sees it)
    costs, info = fs.fit_entry("vllm-0.8", synth, {})
    assert info["low_load"] == 2  # TTFT counts for the single-client runs only
    for k, v in TRUE_COSTS.items():
        assert costs[k] == pytest.approx(v, rel=0.02), k


def test_a_front_end_fitted_alone_takes_ttft_only_where_it_is_most_of_it():
    """fit_stacks.fit_metrics: a one-client run's TTFT counts as low load with a front end in the costs (its latency
    is not a wait for a batch); for an entry of FRONT_END_ONLY_TTFT (``vllm``) only where the TTFT simulated at the
    lowest costs is under FRONT_END_SHARE of the measured: a 500-token prompt measured at 3x it counts, a 20k-token
    one measured at 1.2x (the kernels most of it) does not. ``vllm-0.8`` fits a prefill term: it takes both."""
    fs = _fit_module()
    lowest = {k: 0.0 for k in S.COST_FIELDS} | {"frontend_s": 0.0053, "frontend_serial_s": 0.0053}
    counted = {}
    for prompt, over in ((500, 3.0), (20000, 1.2)):
        run = _closed_loop_run(1, 1)
        run.settings.update(stack_version="0.19.1 (V1)", input_tokens=str(prompt), output_tokens="20")
        sim = S.simulate_prepared(S.prepare_run(run, costs=lowest), None, fs.REPLICATES, fs.SEED)
        assert sim["queue_mean_s"] == 0.0  # (an idle engine: the front end's 5.3 ms is in TTFT, not in the wait)
        assert sim["front_end_mean_s"] == pytest.approx(0.0053, rel=1e-9)
        if prompt == 500:  # (over LOW_LOAD of TTFT: taken as a queue, it would not count)
            assert 0.0053 > fs.LOW_LOAD * sim["ttft_mean_s"]
        measured = S.ServingRun(run.index, run.settings, {"ttft_mean_s": over * sim["ttft_mean_s"], "itl_mean_s": 1.0})
        prep = S.prepare_run(measured, costs=lowest)
        counted[prompt] = {
            entry: "ttft_mean_s" in fs.fit_metrics(prep, entry in fs.FRONT_END_ONLY_TTFT)
            for entry in ("vllm", "vllm-0.8")
        }
    assert counted == {500: {"vllm": True, "vllm-0.8": True}, 20000: {"vllm": False, "vllm-0.8": True}}


def test_a_burst_waiting_for_the_api_thread_is_not_low_load():
    """fit_stacks.fit_metrics takes the wait for the API server's thread as load, as the wait for a batch: 32
    clients on a thread that holds each request 20 ms wait ~0.6 s for it, while the engine (a 500-token prefill in
    a few ms) queues them hardly at all; their TTFT does not count. The engine's queue alone would let it."""
    fs = _fit_module()
    costs = {k: 0.0 for k in S.COST_FIELDS} | {"frontend_s": 0.02, "frontend_serial_s": 0.02}
    run = _closed_loop_run(1, 32)
    run.settings.update(stack_version="0.19.1 (V1)", output_tokens="20", num_prompts="256")
    sim = S.simulate_prepared(S.prepare_run(run, costs=costs), None, fs.REPLICATES, fs.SEED)
    assert sim["queue_mean_s"] < fs.LOW_LOAD * sim["ttft_mean_s"]  # (the engine's queue: it would count)
    assert sim["front_end_mean_s"] - 0.02 > fs.LOW_LOAD * sim["ttft_mean_s"]  # (the thread's: it does not)
    measured = S.ServingRun(run.index, run.settings, {"ttft_mean_s": sim["ttft_mean_s"], "itl_mean_s": 1.0})
    assert "ttft_mean_s" not in fs.fit_metrics(S.prepare_run(measured, costs=costs))


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["vllm-0.8"])
def test_fit_script_regenerates_the_shipped_costs(capsys, monkeypatch, entry):
    """`python benchmarks/fit_stacks.py --only ENTRY` gives the costs stacks.yaml ships (4 significant figures).
    (``vllm``'s host costs are kept, ``KEPT``: its later stages are regenerated by the test below.)"""
    fs = _fit_module()
    monkeypatch.setattr("sys.argv", ["fit_stacks.py", "--only", entry])
    fs.main()
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{entry}:"))
    shipped = hf.Catalog().stack(entry)
    dev = hf.Catalog().device("h100_sxm")  # the stack's host costs replace the device's (0 by default)
    assert dev.efficiency.step_overhead_s == 0.0
    for name in list(fs.PARAMETERS[entry]) + [n for _, stage in fs.STAGES.get(entry, ()) for n in stage]:
        fitted = float(re.search(rf"{name} ([0-9.]+)", line).group(1)) * fs.unit(name)  # (ms, or a fraction)
        printed = 1e-6 if fs.unit(name) < 1 else 5e-4  # (the line prints 3 decimals)
        assert getattr(shipped, name) == pytest.approx(fitted, rel=2e-3, abs=printed), name


@pytest.mark.parametrize(
    "entry, runs",
    [
        ("sglang", "(8 cuda_core_decode runs,"),
        pytest.param("vllm", "(16 moe runs, 18 sink runs,", marks=pytest.mark.slow),
    ],
)
def test_fit_script_regenerates_a_kept_entrys_later_stage(capsys, monkeypatch, entry, runs):
    """`python benchmarks/fit_stacks.py --only ENTRY --stages-only` fits a kept entry's later stages alone, on its
    shipped costs and the fit runs each stage describes, and gives the values stacks.yaml ships (4 significant
    figures): SGLang's CUDA-core decode extra on its 8 runs of models that kernel decodes; vLLM's MoE kernels' extras
    and its sink-capable attention backend's (``STAGES``), in sweeps, on its host costs kept since the 2026-12-08
    GEMM calibrations."""
    fs = _fit_module()
    monkeypatch.setattr("sys.argv", ["fit_stacks.py", "--only", entry, "--stages-only"])
    fs.main()
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{entry} later stages:"))
    shipped = hf.Catalog().stack(entry)
    for name in [n for _, stage in fs.STAGES[entry] for n in stage]:
        fitted = float(re.search(rf"{name} ([0-9.]+)", line).group(1))
        assert getattr(shipped, name) == pytest.approx(fitted, rel=1e-3, abs=5e-5), name
    assert runs in line


def test_a_slow_device_is_noted_and_left_out_of_every_fit(runs):
    """GPUStack's single-GPU H100 pages (gpt-oss-20b, Qwen3-14B, Qwen3-32B) carry a ``run_note`` under every
    engine; its 2- and 8-GPU H100 pages and its A100 pages do not. No entry's fit runs or pairs hold a noted run,
    and vLLM's fit pairs are the three GPUStack A100 ones (sync / async alike but for --async-scheduling)."""
    noted = [r for r in runs if S.run_note(r).startswith("slow device")]
    pages = {r.settings["source"].split("performance-lab/")[1].split("#")[0] for r in noted}
    assert pages == {"gpt-oss-20b/h100.md", "qwen3-14b/h100.md", "qwen3-32b/h100.md"}
    assert {r.stack for r in noted} == {"vllm", "sglang", "trtllm"}
    assert {(r.settings["device"], r.settings["tp"]) for r in noted} == {("h100_sxm", "1")}
    assert not any(S.run_note(r) for r in runs if "gpt-oss-120b/h100.md" in r.settings["source"])
    assert not any(S.run_note(r) for r in runs if "gpustack" in r.settings["source"] and r not in noted)
    fs = _fit_module()
    usable = [r for r in runs if S.skip_reason(r) is None]
    for entry in fs.PARAMETERS:
        fit_runs, pairs = fs.fit_inputs(entry, usable)
        staged = [r for stage, _ in fs.STAGES.get(entry, ()) for r in fs.stage_runs(entry, stage, usable)]
        assert not any(S.run_note(r) for r in fit_runs + staged + [r for p in pairs for r in p]), entry
    pairs = fs.fit_inputs("vllm", usable)[1]
    assert len(pairs) == 3
    for sync, async_ in pairs:
        assert "gpustack" in sync.settings["source"] and sync.settings["device"] == "a100_sxm_80gb"
        assert "--async-scheduling" in async_.settings["server_args"]
        assert sync.settings["server_args"] == async_.settings["server_args"].replace(" --async-scheduling", "")


def test_a_sweeps_first_scenario_on_a_cold_server_is_noted_and_left_out_of_every_fit(runs):
    """simon-mo/vLLM-Benchmark's sweeps run 1000/2000 first on a server just started (COLD_SERVER_SWEEPS): those runs,
    under every engine, carry a ``run_note`` and no fit takes them in; the sweeps' other scenarios carry none. The
    measurements the rule rests on: vLLM 0.8.4 DeepSeek-R1 on two H200 machines reads mean TTFT 1.52 s against
    0.31 s at 1000/2000, while its other four scenarios' mean TTFTs agree within 20%."""
    sweeps = [r for r in runs if "simon-mo/vLLM-Benchmark" in r.settings["source"]]
    cold = [r for r in sweeps if S.run_note(r)]
    assert cold and all(S.run_note(r).startswith("cold server") for r in cold)
    assert {(r.settings["input_tokens"], r.settings["output_tokens"]) for r in cold} == {("1000", "2000")}
    assert {r.stack for r in cold} == {"vllm", "sglang", "trtllm"}
    assert all(r in cold for r in sweeps if r.label.split()[-3] == "1000/2000")
    fs = _fit_module()
    usable = [r for r in runs if S.skip_reason(r) is None]
    for entry in fs.PARAMETERS:
        fit_runs, pairs = fs.fit_inputs(entry, usable)
        staged = [r for stage, _ in fs.STAGES.get(entry, ()) for r in fs.stage_runs(entry, stage, usable)]
        assert not set(map(id, cold)) & set(map(id, fit_runs + staged)), entry
    dsr1 = {}
    for r in sweeps:
        if r.stack == "vllm" and r.settings["model"] == "deepseek-v3":
            machine = "nebius" if "nebius" in r.settings["source"] else "berkeley"
            dsr1[(machine, r.label.split()[-3])] = r.metrics
    ratio = {k: dsr1[("nebius", k)]["ttft_mean_s"] / dsr1[("berkeley", k)]["ttft_mean_s"] for _, k in dsr1}
    assert ratio.pop("1000/2000") == pytest.approx(4.93, abs=0.01)
    assert len(ratio) == 4 and all(abs(v - 1) < 0.21 for v in ratio.values())


def test_validation_prints_the_held_back_medians_without_a_slow_device(runs, capsys):
    """Two held-back vLLM 0.11 runs of Qwen3-32B, offline: 32k-token prompts on the A100, 4000/200 on the noted H100.
    Both are in the table; a second block gives the held-back medians of the A100 one alone."""
    from hermes_fast.cli.calibration import print_serving_validation

    picked = [
        find(runs, stack="vllm", model="qwen3-32b", device="a100_sxm_80gb", input_tokens="32000"),
        find(runs, stack="vllm", model="qwen3-32b", device="h100_sxm", input_tokens="4000"),
    ]
    assert [r.split for r in picked] == ["holdout", "holdout"]
    assert sorted(bool(S.run_note(r)) for r in picked) == [False, True]
    rows = S.serving_errors(S.predict_serving(picked, replicates=1))
    print_serving_validation(rows)
    text = capsys.readouterr().out
    block = text.split("known to measure something the simulator does not model")[1]
    assert "1 of them held back" in block and "#   1 slow device" in block
    alone = next(r for r in rows if r["metric"] == "output_throughput_token_per_s" and not r["run_note"])
    line = next(x for x in block.splitlines() if "output throughput" in x)
    assert line.split()[-4:-2] == ["1", f"{abs(alone['error']):.1%}"]


# ---------------------------------------------------------------------------- vLLM >= 0.10 and SGLang 0.4.6+ runs


def test_vllm_server_flags_and_a100_batch_defaults(runs):
    """kvcached's vLLM 0.19 runs pass --gpu-memory-utilization 0.5; GPUStack's A100 runs keep vLLM >= 0.9's API-server
    defaults there (2048 batched tokens, 256 sequences), their --max-num-batched-tokens and -tp / -pp flags are read."""
    run = find(runs, stack_version="0.19.0", arrival="offline")
    assert S.stack_entry(run) == "vllm" and S.skip_reason(run) is None
    assert S.serving_scenario(run)["engines"][0]["memory_utilization"] == 0.5
    a100 = find(runs, stack="vllm", device="a100", model="qwen3-32b", dataset="sharegpt")
    e = S.serving_scenario(a100)["engines"][0]
    assert (e["max_batched_tokens"], e["batching"]) == (2048, {"max_batch_size": 256})
    flags = "vllm serve openai/gpt-oss-20b --async-scheduling --max-num-batched-tokens 8192"
    tuned = find(runs, stack="vllm", device="a100", model="gpt-oss-20b", dataset="sharegpt", server_args=flags)
    assert S.serving_scenario(tuned)["engines"][0]["max_batched_tokens"] == 8192
    h100 = find(runs, stack_version="0.11.0", device="h100", model="qwen3-32b", dataset="sharegpt")
    assert "max_batched_tokens" not in S.serving_scenario(h100)["engines"][0]  # the stack's 8192
    pp = find(
        runs,
        stack_version="0.10.2",
        dataset="sharegpt",
        server_args="vllm serve openai/gpt-oss-120b --max-model-len 32768 --async-scheduling -pp 2",
    )  # noqa: E501
    assert S.stack_entry(pp) == "vllm-0.8" and S.serving_scenario(pp)["engines"][0]["parallel"] == {"tp": 1, "pp": 2}


def test_vllm_runs_mxfp4_experts_on_hopper_through_triton(runs):
    """vLLM >= 0.11 runs MXFP4 experts on SM90 through Triton's matmul_ogs (the `vllm` entry's moe_kernels): its
    runs of gpt-oss on H100 read the experts' weights slower, whatever MoE extras a fit tries; on A100 (Marlin)
    they take no extra, and under vLLM 0.10 (`vllm-0.8`, Marlin) its entry's MoE extras, for every format."""

    def gpt_oss(version, device):
        return [r for r in runs if r.settings["model"].startswith("gpt-oss") and r.settings["device"] == device
                and r.settings["stack_version"].startswith(version) and S.skip_reason(r) is None]  # fmt: skip

    tried = {k: 0.0 for k in S.COST_FIELDS} | {"moe_compute_extra": 1.5, "moe_memory_extra": 0.3}
    hopper = gpt_oss("0.11.0", "h100_sxm") + gpt_oss("0.19.1", "h100_sxm")
    assert len(hopper) == 12  # (GPUStack: gpt-oss-20b, ShareGPT and fixed lengths; the FP8-KV blog's pair)
    triton = (0.0, hf.Catalog().stack("vllm").moe_kernels[0].memory_extra)
    for run, expected in [(hopper[0], triton), (hopper[-1], triton),
                          (gpt_oss("0.11.0", "a100_sxm_80gb")[0], (0.0, 0.0))]:  # fmt: skip
        prep = S.prepare_run(run)
        assert not prep.moe_extras_apply and prep.stack.moe_extras(prep.experts, prep.compute_capability) == expected
        params = S.with_costs(prep, tried).params
        assert (params[0, L.MOE_COMPUTE_EXTRA], params[0, L.MOE_MEMORY_EXTRA]) == expected
    marlin = S.prepare_run(gpt_oss("0.10.2", "h100_sxm")[0])
    assert S.stack_entry(marlin.run) == "vllm-0.8" and marlin.moe_extras_apply
    params = S.with_costs(marlin, tried).params
    assert (params[0, L.MOE_COMPUTE_EXTRA], params[0, L.MOE_MEMORY_EXTRA]) == (1.5, 0.3)


def test_the_three_stacks_on_one_h100_at_low_load(runs):
    """GPUStack's Qwen3-8B latency page: TensorRT-LLM 1.2 (trtllm-serve), SGLang 0.5.3 and vLLM 0.11 at
    --max-concurrency 4 (closed loops of 4 clients, 100 ShareGPT prompts scaled to the page's totals)."""
    by = {S.stack_entry(r): r for r in runs if r.settings["model"] == "qwen3-8b" and r.settings["concurrency"] == "4"
          and r.settings["dtype"] == "bf16" and "--cuda-graph" not in r.settings["server_args"]}  # fmt: skip
    assert set(by) == {"trtllm", "sglang", "vllm"}
    for entry, run in by.items():
        sc = S.serving_scenario(run)
        assert sc["engines"][0]["model"] == "qwen3-8b" and S.skip_reason(run) is None, entry
        assert sc["workload"]["arrival"] == {"process": "closed", "concurrency": 4}, entry
        d = S.harness_draws(run, rng_for(0))
        assert d.prompt_tokens.mean() == pytest.approx(232.6, rel=0.05) and d.prompt_tokens.size == 100


def test_sglang_default_range_ratio_and_sharegpt_means(runs):
    """SGLang's bench_serving (0.4.6) with --random-range-ratio 0.0 draws lengths uniform in [1, L]; a ShareGPT run
    that states its mean lengths gets the shipped pairs scaled to them (Qwen3 tokenizer, 1000 prompts)."""
    run = find(runs, stack_version="0.4.6", rate_per_s="16")
    (cls,) = S.serving_scenario(run)["workload"]["classes"]
    assert cls["prompt_tokens"] == {"dist": "uniform", "min": 1, "max": 1913}
    d = S.harness_draws(run, rng_for(0))
    assert d.prompt_tokens.min() >= 1 and d.prompt_tokens.max() <= 1913 and d.prompt_tokens.size == 960
    assert d.prompt_tokens.mean() == pytest.approx(957, rel=0.05)  # 931890 / 960 = 970.7 measured
    share = find(runs, stack_version="0.11.0", device="h100", model="qwen3-32b", dataset="sharegpt")
    d = S.harness_draws(share, rng_for(0))
    assert d.prompt_tokens.size == 1000
    assert d.prompt_tokens.mean() == pytest.approx(217.39, rel=0.05) and d.output_tokens.mean() == pytest.approx(
        201.42, rel=0.05
    )


def test_a_run_the_modelled_memory_cannot_hold_is_listed_not_fatal(runs):
    """Qwen3-32B with 32,000-token prompts under vLLM 0.11 on one 80 GB GPU. On GPUStack's A100 page (vLLM's A100
    default of 256 sequences) its KV holds one request and the run is simulated. On its single-H100 page (1024
    sequences: a sampler-run peak of 5.6 GiB) the KV holds 18,976 tokens, as llm-d's vLLM log of the model on an 80 GB
    H100 reads (4.45 GiB of KV; max-model-len 32000 failed there). That run cannot be built and is listed with the
    reason, not fatal. GPUStack's device served it, one more sign that it is not an 80 GB H100 SXM
    (serving_runs.SLOW_DEVICE_SOURCES)."""
    a100 = find(runs, stack_version="0.11.0", device="a100", model="qwen3-32b", input_tokens="32000")
    (p,) = S.predict_serving([a100], replicates=1)
    assert p["skip"] is None and p["predicted"]["ttft_mean_s"] > 0
    h100 = find(runs, stack_version="0.11.0", device="h100", model="qwen3-32b", input_tokens="32000")
    (p,) = S.predict_serving([h100], replicates=1)
    assert p["skip"].startswith("the scenario cannot be built") and "KV" in p["skip"]
