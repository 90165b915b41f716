"""The estimate/simulate contract: one formula per quantity.

B requests arriving together and decoding side by side in the serving loop give ``estimate``'s TPOT and TTFT
at batch B, for dense, MoE with expert parallelism, MLA, tensor- and pipeline-parallel layouts (pp = 2 and 4:
a prefill from an idle engine fills the pipeline, decode iterations keep the micro-batches in flight), attention
data parallelism (the busiest rank's share of the sequences) and context parallelism.
"""

from __future__ import annotations

import pytest

import hermes_fast as hf
from hermes_fast.resolve import resolve_scenario
from hermes_fast.variables import BOUND_NAMES

PROMPT, OUTPUT = 512, 65
LAYOUTS = {
    "dense-tp1": ("llama-3.1-8b", "h100_sxm", {"tp": 1}, {}),
    "dense-tp4": ("llama-3.1-70b", "h200_sxm", {"tp": 4}, {}),
    "dense-tp4-pp2": ("llama-3.1-70b", "h200_sxm", {"tp": 4, "pp": 2}, {}),
    "dense-pp4": ("llama-3.1-70b", "h200_sxm", {"tp": 1, "pp": 4}, {}),
    "moe-tp2-ep2": ("mixtral-8x7b", "h100_sxm", {"tp": 2, "ep": 2}, {}),
    "moe-tp4-ep4-pp2": ("qwen3-235b-a22b", "h200_sxm", {"tp": 4, "ep": 4, "pp": 2}, {}),
    "mla-moe-tp8-ep8": ("deepseek-v3", "h200_sxm", {"tp": 8, "ep": 8}, {"weight": "fp8", "activation": "fp8"}),
    "mla-moe-tp8-dp-attention": (
        "deepseek-v3", "h200_sxm", {"tp": 8, "ep": 8, "attention_dp": True}, {"weight": "fp8", "activation": "fp8"}),
    "moe-tp2-dp-attention": ("mixtral-8x7b", "h100_sxm", {"tp": 2, "ep": 2, "attention_dp": True}, {}),
    "dense-tp4-cp2": ("llama-3.1-70b", "h200_sxm", {"tp": 4, "cp": 2}, {}),
}  # fmt: skip


def scenario(model, device, parallel, dtypes, batch):
    engine = {"name": "e", "model": model, "device": device, "parallel": parallel}
    if dtypes:
        engine["dtypes"] = dtypes
    # the replica waits (up to 10 s) until all B requests, 1 us apart, are queued: they start together
    engine["batching"] = {"policy": "continuous", "max_batch_size": batch, "max_wait_s": 10.0}
    workload = {
        "rate_per_s": 1e6,
        "arrival": {"process": "deterministic"},
        "classes": [{"prompt_tokens": PROMPT, "output_tokens": OUTPUT}],
    }
    return {"engines": [engine], "workload": workload}


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_simulated_tpot_and_ttft_equal_the_estimate(layout, batch):
    model, device, parallel, dtypes = LAYOUTS[layout]
    sc = scenario(model, device, parallel, dtypes, batch)
    est = hf.estimate(sc, grid={"batch_size": [batch], "prompt_tokens": [PROMPT], "output_tokens": [OUTPUT]})
    sim = hf.simulate(sc, n_requests=batch, seed=0)
    assert int(sim.completed_requests.item()) == batch
    assert float(sim.tpot_mean_s.item()) == pytest.approx(float(est.tpot_s.item()), rel=0.01)
    # the B prompts are prefilled in one iteration from an idle engine: a pipeline fill, once the last has passed
    # the API server's thread, B - 1 intakes after the first (the batch waits for it)
    intakes = (batch - 1) * resolve_scenario(sc).engines[0].stack.frontend_serial_s
    assert float(sim.ttft_mean_s.item()) == pytest.approx(float(est.ttft_s.item()) + intakes, rel=0.01)


def test_the_api_threads_streaming_bounds_the_estimate_as_it_bounds_the_loop():
    """256 sequences of a small model on a thread taking 0.2 ms a streamed token: every iteration (the one prefill
    of the 256 16-token prompts too) takes 51.2 ms, above its kernels' time, in estimate (bound: overhead) and in
    simulate alike."""
    batch, prompt = 256, 16
    sc = scenario("qwen3-0.6b", "h100_sxm", {"tp": 1}, {}, batch)
    sc["workload"]["classes"] = [{"prompt_tokens": prompt, "output_tokens": OUTPUT}]
    sc["engines"][0]["stack"] = "thread"
    sc["stacks"] = {"thread": {"base": "ideal", "frontend_token_s": 2e-4}}
    est = hf.estimate(sc, grid={"batch_size": [batch], "prompt_tokens": [prompt], "output_tokens": [OUTPUT]})
    assert float(est.tpot_s.item()) == pytest.approx(batch * 2e-4, rel=1e-12)
    assert int(est.decode_bound.item()) == int(est.prefill_bound.item()) == BOUND_NAMES.index("overhead")
    assert float(est.prefill_time_s.item()) == pytest.approx(batch * 2e-4, rel=1e-12)
    plain = hf.estimate({**sc, "stacks": {"thread": {"base": "ideal"}}}, grid={"batch_size": [batch]})
    assert float(plain.tpot_s.item()) < 0.5 * batch * 2e-4  # (the kernels alone: well under the thread's time)
    sim = hf.simulate(sc, n_requests=batch, seed=0)
    assert int(sim.completed_requests.item()) == batch
    assert float(sim.tpot_mean_s.item()) == pytest.approx(float(est.tpot_s.item()), rel=0.01)
    assert float(sim.ttft_mean_s.item()) == pytest.approx(float(est.ttft_s.item()), rel=0.01)
    # two API server processes stream half the tokens each: 25.6 ms, in both
    sc["stacks"]["thread"]["api_servers"] = 2
    est = hf.estimate(sc, grid={"batch_size": [batch], "prompt_tokens": [prompt], "output_tokens": [OUTPUT]})
    assert float(est.tpot_s.item()) == pytest.approx(batch * 1e-4, rel=1e-12)
    sim = hf.simulate(sc, n_requests=batch, seed=0)
    assert float(sim.tpot_mean_s.item()) == pytest.approx(float(est.tpot_s.item()), rel=0.01)
