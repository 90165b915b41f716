"""Summary metrics by hand: thinking, answer and generated tokens counted apart (throughput, cost and energy per
token), the busy fraction, and MFU / MBU on one-request runs whose FLOPs and bytes are counted here."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hermes_fast as hf
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import prepare, simulate_replicate
from hermes_fast.workload import rng_for

PROMPT, OUTPUT = 1000, 100


def one_request(tp=1):
    return {
        "engines": [{"name": "main", "model": "llama-3.1-8b", "device": "h100_sxm", "parallel": {"tp": tp}}],
        "workload": {"rate_per_s": 1.0, "classes": [{"prompt_tokens": PROMPT, "output_tokens": OUTPUT}]},
    }


def run_one(scenario, n=1):
    resolved = resolve_scenario(scenario)
    setup, pipe = prepare(resolved)
    return simulate_replicate(resolved.scenario, setup, pipe, n, rng_for(0))


@pytest.mark.parametrize("tp", [1, 2])
def test_mfu_and_mbu_of_one_request_by_hand(tp):
    summary, _, run = run_one(one_request(tp))
    # what the loop did: one prefill of 1000 tokens (causal pairs P (P + 1) / 2), then 99 decodes, the g-th
    # attending to P + g KV tokens; the prefill's attention reads its own 1000 tokens
    assert run.prefill_tokens.sum() == PROMPT and run.decode_tokens.sum() == OUTPUT - 1
    assert run.iterations.sum() == OUTPUT
    assert run.attention_pairs.sum() == PROMPT * (PROMPT + 1) / 2
    decode_pairs = sum(PROMPT + g for g in range(1, OUTPUT))
    assert run.kv_read_tokens.sum() == PROMPT + decode_pairs
    # Llama-3.1-8B: h 4096, 32 layers, 32 heads (8 KV) of 128, gated FFN 14336, vocabulary 128256 (untied)
    h, layers, heads, kv_heads, d, f, vocab = 4096, 32, 32, 8, 128, 14336, 128256
    attention = h * (heads + 2 * kv_heads) * d + heads * d * h
    body = layers * (attention + 3 * h * f + 2 * h) + h  # embedding and LM head apart; norms in
    flops = 2 * body * (PROMPT + OUTPUT - 1)  # every prefilled and decoded token
    flops += 2 * h * vocab * (OUTPUT - 1)  # the LM head, decode tokens
    flops += 2 * (d + d) * heads * layers * (PROMPT * (PROMPT + 1) / 2 + decode_pairs)  # QK and PV per pair
    busy = run.busy_s.sum()
    peak, bandwidth = 989e12, 3.35e12  # H100 SXM: dense BF16 FLOP/s, HBM3 B/s
    assert summary["mfu"][0] == pytest.approx(flops / (busy * tp * peak), rel=1e-12)
    weights = hf.estimate(one_request(tp)).weights_bytes.item()  # the most loaded device's
    if tp == 1:
        assert weights == 2 * (body + 2 * vocab * h)  # bf16, embedding and head untied
    kv_per_token = 2 * kv_heads * d * 2 * layers  # K and V, bf16, every layer: 131072 B over the TP ranks
    moved = OUTPUT * weights * tp + (PROMPT + decode_pairs) * kv_per_token
    assert summary["mbu"][0] == pytest.approx(moved / (busy * tp * bandwidth), rel=1e-12)
    run_s = run.end_s - run.arrival_s[0]
    assert summary["busy_fraction"][0] == pytest.approx(busy / run_s, rel=1e-12)
    assert 0 < summary["mfu"][0] < 1 and 0 < summary["mbu"][0] < 1


def test_busy_fraction_is_not_utilisation():
    """At a sixth of capacity the engine is busy most of the time, but uses a small part of its compute."""
    ds = hf.simulate(None, n_requests=2000, seed=1)  # the default scenario: Llama-3.1-8B on an H100 at 10/s
    assert float(ds.busy_fraction.item()) > 0.5
    assert float(ds.mfu.item()) < 0.2 * float(ds.busy_fraction.item())


def reasoning(branches=3, rounds=2, thinking=50, answer=20):
    stage = {"kind": "reason", "engine": "llm", "thinking_tokens": thinking, "rounds": rounds, "branches": branches}
    stage |= {"tool_latency_s": 0.1, "tool_tokens": 10}
    engine = {"model": "llama-3.1-8b", "device": "h100_sxm"}
    return {
        "engines": [{"name": "llm", **engine}],
        "workload": {
            "rate_per_s": 2.0,
            "classes": [
                {
                    "prompt_tokens": 100,
                    "output_tokens": answer,
                    "pipeline": [{"kind": "prefill", "engine": "llm"}, stage, {"kind": "decode", "engine": "llm"}],
                }
            ],
        },
    }


def test_thinking_and_answer_tokens_counted_apart():
    """2 rounds x 3 branches x 50 thinking tokens and a 20-token answer: 300 thinking + 20 answer tokens each."""
    ds = hf.simulate(reasoning(), n_requests=40, seed=1).isel(replicate=0)
    assert int(ds.completed_requests) == 40
    window = float(ds.duration_s)
    assert float(ds.throughput_output_token_per_s) == pytest.approx(40 * 20 / window, rel=1e-12)
    assert float(ds.throughput_thinking_token_per_s) == pytest.approx(40 * 300 / window, rel=1e-12)
    assert float(ds.throughput_generated_token_per_s) == pytest.approx(40 * 320 / window, rel=1e-12)
    energy, price = float(ds.energy_j), hf.Catalog().device("h100_sxm").price_usd_per_hour
    assert float(ds.energy_j_per_token) == pytest.approx(energy / (40 * 20), rel=1e-12)
    assert float(ds.energy_j_per_token_generated) == pytest.approx(energy / (40 * 320), rel=1e-12)
    ratio = float(ds.cost_usd_per_mtoken) / float(ds.cost_usd_per_mtoken_generated)
    assert ratio == pytest.approx(320 / 20, rel=1e-12) and price > 0
    derived = hf.add_derived(ds.expand_dims(replicate=[0]))
    assert float(derived.generated_token_per_usd[0]) == pytest.approx(1e6 / float(ds.cost_usd_per_mtoken_generated))
    assert float(derived.generated_token_per_j[0]) == pytest.approx(1 / float(ds.energy_j_per_token_generated))


def test_plain_serving_generates_only_answers():
    ds = hf.simulate(one_request(), n_requests=20, seed=1).isel(replicate=0)
    assert float(ds.throughput_thinking_token_per_s) == 0.0
    assert float(ds.throughput_generated_token_per_s) == float(ds.throughput_output_token_per_s)
    assert float(ds.cost_usd_per_mtoken_generated) == float(ds.cost_usd_per_mtoken)


def test_the_reasoning_example_shows_its_thinking_tokens():
    ds = hf.simulate("examples/pipeline_reasoning.yaml", n_requests=200, seed=0).isel(replicate=0)
    thinking, answer = float(ds.throughput_thinking_token_per_s), float(ds.throughput_output_token_per_s)
    # 3 rounds x 8 branches x ~400 thinking tokens against a ~300-token answer: ~30 x the answer's tokens
    assert 15 < thinking / answer < 50
    assert float(ds.cost_usd_per_mtoken) > 15 * float(ds.cost_usd_per_mtoken_generated)
    assert math.isclose(
        float(ds.throughput_generated_token_per_s), thinking + answer, rel_tol=1e-12
    )  # generated = thinking + answer


def test_search_pools_have_no_mfu():
    ds = hf.simulate("examples/pipeline_rag.yaml", n_requests=100, seed=0).isel(replicate=0)
    roles = list(ds.pool_role.values)
    assert np.isnan(ds.mfu.values[roles.index("search")]) and np.isnan(ds.mbu.values[roles.index("search")])
    engines = [k for k, r in enumerate(roles) if r != "search"]
    assert (ds.mfu.values[engines] > 0).all() and (ds.mbu.values[engines] > 0).all()
