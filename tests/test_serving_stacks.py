"""What serving stacks do around the kernels, in the loop and the step cost: KV admission policies (on demand,
reserve the whole job, SGLang's new-token ratio), CUDA-graph padding, the API front end.

These tests set the pool arrays and engine parameters directly (the stack catalog fills them)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import hermes_fast as hf
from hermes_fast.kernels import layout as L
from hermes_fast.kernels.grid import pipelined_time
from hermes_fast.kernels.iteration import iteration_time
from hermes_fast.kernels.serving import Status
from hermes_fast.kernels.serving import state as loop
from hermes_fast.kernels.step import step_cost
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import build_serving, run_serving
from hermes_fast.workload import draw_workload, rng_for


def serving(prompt=100, output=60, rate=1000.0, policy="continuous", n=3, step_s=0.01):
    """n requests arriving together-ish on one replica with a constant step (so times are easy to reason on)."""
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": step_s, "stack": "ideal"}
    engine["batching"] = {"policy": policy}
    workload = {"rate_per_s": rate, "arrival": {"process": "deterministic"}}
    workload["classes"] = [{"prompt_tokens": prompt, "output_tokens": output}]
    sc = {"engines": [engine], "workload": workload}
    resolved = resolve_scenario(sc)
    return build_serving(resolved), draw_workload(resolved.scenario.workload, n, rng_for(1))


def with_pool(setup, **fields):
    """The setup with pool 0's loop fields set (``admit=``, ``cap_blocks=``, ``frontend_s=`` ...)."""
    pi, pf = setup.pool_int.copy(), setup.pool_float.copy()
    rows = {
        "admit": loop.PL_ADMIT,
        "cap_blocks": loop.PL_CAP_BLOCKS,
        "keep_preempted": loop.PL_KEEP_PREEMPTED,
        "hold_after_preempt": loop.PL_HOLD_AFTER_PREEMPT,
    }
    frows = {
        "frontend_s": loop.PF_FRONTEND_S,
        "frontend_serial_s": loop.PF_FRONTEND_SERIAL_S,
        "frontend_token_s": loop.PF_FRONTEND_TOKEN_S,
        "new_token_ratio": loop.PF_NEW_TOKEN_RATIO,
    }
    for k, v in fields.items():
        if k in rows:
            pi[rows[k], 0] = v
        else:
            pf[frows[k], 0] = v
    return dataclasses.replace(setup, pool_int=pi, pool_float=pf)


def in_flight_max(start, end):
    events = np.concatenate([-np.ones(end.size), np.ones(start.size)])[np.argsort(np.concatenate([end, start]))]
    return int(np.cumsum(events).max())


# ---------------------------------------------------------------- KV admission


def test_reserving_the_whole_job_never_preempts_and_never_admits_beyond_its_reservation():
    """Prompt 100, output 60, 16-token blocks: a job holds at most 159 tokens = 10 blocks. With 25 blocks, whole-job
    reservation runs two at a time and never preempts; on demand, three prompts (7 blocks each) fit, the decodes
    outgrow the cache and the newest is preempted."""
    setup, draws = serving(n=3)
    reserve = run_serving(with_pool(setup, admit=loop.ADMIT_RESERVE_ALL, cap_blocks=25), draws)
    assert (reserve.status == Status.DONE).all() and reserve.preemptions.sum() == 0
    assert in_flight_max(reserve.admit_s, reserve.done_s) == 2
    # the third waits for the first to finish: admitted at its completion, then 60 steps (prefill + 59 decodes)
    assert reserve.admit_s[2] == pytest.approx(reserve.done_s[0], rel=1e-12)
    assert reserve.free_blocks.tolist() == [25]
    demand = run_serving(with_pool(setup, admit=loop.ADMIT_ON_DEMAND, cap_blocks=25), draws)
    assert (demand.status == Status.DONE).all() and demand.preemptions.sum() > 0
    assert in_flight_max(demand.admit_s, demand.done_s) == 3


def test_the_new_token_ratio_keeps_room_for_running_outputs():
    """Ratio 1: admission keeps the running jobs' whole remaining output free, like a reservation, so nothing
    is preempted; ratio 0.1 admits all three and the decodes run out of blocks."""
    setup, draws = serving(n=3)
    full = run_serving(with_pool(setup, admit=loop.ADMIT_RATIO, new_token_ratio=1.0, cap_blocks=25), draws)
    assert full.preemptions.sum() == 0 and in_flight_max(full.admit_s, full.done_s) == 2
    low = run_serving(with_pool(setup, admit=loop.ADMIT_RATIO, new_token_ratio=0.1, cap_blocks=25), draws)
    assert low.preemptions.sum() > 0 and (low.status == Status.DONE).all()


def three_over_a_full_cache(policy, budget=None, **fields):
    """Three 96-token prompts (6 blocks each), 20 tokens out, 1 ms apart, 10 ms steps, 20 KV blocks: once all three
    are prefilled their first decodes need 3 more blocks and 2 are free, so the newest (C) is preempted."""
    setup, draws = serving(prompt=96, output=20, n=3, policy=policy)
    setup = with_pool(setup, cap_blocks=20, **fields)
    if budget is not None:
        pi = setup.pool_int.copy()
        pi[loop.PL_MAX_TOKENS, 0] = pi[loop.PL_CHUNK, 0] = budget
        setup = dataclasses.replace(setup, pool_int=pi)
    return run_serving(setup, draws)


def test_a_preempted_request_recomputes_only_what_was_taken_from_its_cached_blocks():
    """Continuous batching: C is preempted in the third iteration (A, B and C need block 7 each, 2 free). Its 6
    blocks go back behind the 2 free ones; A and B take those 2 now and 2 of C's when they reach block 8 (token 113),
    then finish together after iteration 21 and give back 16. When C is admitted again (22nd), the blocks returned
    since its own went back are 6 + 16 = 22, 20 are free: allocations took 2 of its 6, so 4 blocks (64 tokens) are
    still cached and it prefills 96 + 1 - 64 = 33 tokens instead of all 97 (its prompt and first token). Every time
    is the same: the steps are fixed."""
    kept = three_over_a_full_cache("continuous", keep_preempted=1)
    lost = three_over_a_full_cache("continuous", keep_preempted=0)
    assert kept.preemptions.tolist() == lost.preemptions.tolist() == [0, 0, 1]
    assert lost.prefill_tokens.tolist() == [3 * 96 + 97]
    assert kept.prefill_tokens.tolist() == [3 * 96 + 33]
    np.testing.assert_array_equal(kept.done_s, lost.done_s)
    np.testing.assert_allclose(kept.done_s - kept.sent_s[0], [0.21, 0.21, 0.40], atol=1e-12)


def test_vllm_admits_no_request_in_an_iteration_whose_decodes_preempted():
    """Chunked prefill with a 16-token budget and no prefix cache: C, preempted by the decodes, would take its first
    chunk again from the budget they leave in that same iteration; vLLM V1 schedules waiting requests only when the
    running ones preempted nothing, so C starts one iteration (10 ms) later. A and B, and the tokens prefilled, are
    the same."""
    now = three_over_a_full_cache("chunked", budget=16)
    held = three_over_a_full_cache("chunked", budget=16, hold_after_preempt=1)
    assert now.preemptions.tolist() == held.preemptions.tolist() == [0, 0, 1]
    assert now.prefill_tokens.tolist() == held.prefill_tokens.tolist() == [3 * 96 + 97]
    np.testing.assert_array_equal(held.done_s[:2], now.done_s[:2])
    assert held.done_s[2] == pytest.approx(now.done_s[2] + 0.01, abs=1e-12)


# ---------------------------------------------------------------- prefill-first chunking (SGLang)


def test_continuous_chunked_cuts_prompts_and_prefills_before_decoding():
    """Two 2,500-token prompts 1 ms apart, chunk size 1,000, 10 ms steps. Iterations: [A 1000], [A 1000],
    [A 500 + B 500] (B is cut to what is left), [B 1000], [B 1000], then decodes: A's first token after 3 steps,
    B's after 5 (A's second token waits for B's prompt), both done after 7. Without a chunk size each prompt is
    one iteration (continuous): first tokens after 1 and 2 steps."""
    setup, draws = serving(prompt=2500, output=3, n=2, policy="continuous_chunked")
    assert setup.pool_int[loop.PL_SPLIT, 0] == 1
    pi = setup.pool_int.copy()
    pi[loop.PL_MAX_TOKENS, 0], pi[loop.PL_CHUNK, 0] = 4096, 1000
    cut = run_serving(dataclasses.replace(setup, pool_int=pi), draws)
    start = cut.admit_s[0]
    np.testing.assert_allclose(cut.first_token_s - start, [0.03, 0.05], rtol=1e-12)
    np.testing.assert_allclose(cut.done_s - start, [0.07, 0.07], rtol=1e-12)
    pi[loop.PL_POLICY, 0], pi[loop.PL_SPLIT, 0] = loop.POLICY_CONTINUOUS, 0
    whole = run_serving(dataclasses.replace(setup, pool_int=pi), draws)
    np.testing.assert_allclose(whole.first_token_s - start, [0.01, 0.02], rtol=1e-12)


def test_sglang_cuts_prompts_over_its_chunk_size_and_accepts_prompts_over_its_prefill_budget():
    """A 20,000-token prompt is over SGLang's 16,384-token prefill budget: it is prefilled in 8,192-token chunks
    (ceil(20000 / 8192) = 3 iterations), then 3 decodes; requests 10 s apart run alone."""
    sc = engine_of("sglang")
    sc["workload"].update(prompt_tokens=20000, output_tokens=4, rate_per_s=0.1, arrival={"process": "deterministic"})
    setup = build_serving(resolve_scenario(sc))
    assert setup.pool_int[loop.PL_SPLIT, 0] == 1
    res = run_serving(setup, draw_workload(resolve_scenario(sc).scenario.workload, 3, rng_for(1)))
    assert (res.status == Status.DONE).all() and res.iterations.sum() == 3 * (3 + 3)


# ---------------------------------------------------------------- the API front end


def test_the_front_end_adds_once_to_ttft_and_e2e():
    """One request at a time: a 7 ms front end delays its prefill, so TTFT and E2E grow by exactly 7 ms."""
    setup, draws = serving(n=5, rate=1.0)
    base = run_serving(setup, draws)
    fe = run_serving(with_pool(setup, frontend_s=0.007), draws)
    np.testing.assert_allclose(fe.first_token_s - fe.sent_s, base.first_token_s - base.sent_s + 0.007, rtol=1e-12)
    np.testing.assert_allclose(fe.done_s - fe.sent_s, base.done_s - base.sent_s + 0.007, rtol=1e-12)
    np.testing.assert_allclose(fe.done_s - fe.first_token_s, base.done_s - base.first_token_s, rtol=1e-12)


def test_queueing_starts_past_the_front_end():
    """queue_s counts the wait from joining the engine's queue: a constant 50 ms front end shifts every arrival at
    the engine by the same 50 ms, so the waits for a batch (Poisson arrivals, 10 ms steps: under one step each) are
    those without it, while TTFT and E2E grow by the 50 ms."""
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": 0.01, "stack": "fe"}
    workload = {"rate_per_s": 20.0, "prompt_tokens": 100, "output_tokens": 5}
    runs = {}
    for frontend_s in (0.0, 0.05):
        sc = {"engines": [engine], "workload": workload, "stacks": {"fe": {"base": "ideal", "frontend_s": frontend_s}}}
        runs[frontend_s] = hf.simulate(sc, n_requests=3000, seed=2, keep_requests=True)
    bare, fronted = runs[0.0], runs[0.05]
    assert 0.0 < bare.queue_mean_s.item() < 0.01
    assert fronted.queue_mean_s.item() == pytest.approx(bare.queue_mean_s.item(), rel=1e-9)
    np.testing.assert_allclose(fronted.queue_s, bare.queue_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fronted.request_queue_s, bare.request_queue_s, rtol=1e-9, atol=1e-12)
    assert fronted.ttft_mean_s.item() == pytest.approx(bare.ttft_mean_s.item() + 0.05, rel=1e-9)
    assert fronted.e2e_mean_s.item() == pytest.approx(bare.e2e_mean_s.item() + 0.05, rel=1e-9)


def test_a_burst_queues_for_the_front_ends_thread_first_come_first_served():
    """Three requests sent at 1, 2 and 3 ms; a 1 s front end of which 0.5 s holds the API server's one thread: they
    take the thread at 0.001, 0.501 and 1.001 s (waits 0, 0.499 and 0.998 s) and reach the engine 1 s after taking
    it, where each runs alone (2 tokens at 10 ms a step). One at a time, no wait: the same run as the front end
    alone."""
    setup, draws = serving(n=3, rate=1000.0, output=2)
    queued = run_serving(with_pool(setup, frontend_s=1.0, frontend_serial_s=0.5), draws)
    np.testing.assert_allclose(queued.sent_s, [0.001, 0.002, 0.003], atol=1e-12)
    np.testing.assert_allclose(queued.enqueued_s, [1.001, 1.501, 2.001], atol=1e-12)  # (queueing counts from here)
    np.testing.assert_allclose(queued.first_token_s, [1.011, 1.511, 2.011], atol=1e-12)
    np.testing.assert_allclose(queued.done_s, [1.021, 1.521, 2.021], atol=1e-12)
    assert queued.frontend_wait_s[0] == pytest.approx(0.499 + 0.998, rel=1e-12)
    slow, slow_draws = serving(n=5, rate=1.0, output=2)
    one = run_serving(with_pool(slow, frontend_s=0.007), slow_draws)
    same = run_serving(with_pool(slow, frontend_s=0.007, frontend_serial_s=0.007), slow_draws)
    np.testing.assert_array_equal(same.first_token_s, one.first_token_s)
    np.testing.assert_array_equal(same.done_s, one.done_s)
    assert same.frontend_wait_s[0] == 0.0


def test_each_replica_has_its_own_api_thread():
    """Two replicas, three requests sent 1 ms apart, 0.5 s of intake each: the first two take the two idle threads
    at once, the third joins the first replica's thread (the threads take requests in turn) and waits for it
    until 0.501 s. First tokens one 10 ms step after each reaches the engine: 0.511, 0.512, 1.011 s."""
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": 0.01, "stack": "api"}
    engine["replicas"] = 2
    sc = {
        "engines": [engine],
        "stacks": {"api": {"base": "ideal", "frontend_s": 0.5, "frontend_serial_s": 0.5}},
        "workload": {"rate_per_s": 1000.0, "arrival": {"process": "deterministic"}, "prompt_tokens": 100,
                     "output_tokens": 2},
    }  # fmt: skip
    resolved = resolve_scenario(sc)
    res = run_serving(build_serving(resolved), draw_workload(resolved.scenario.workload, 3, rng_for(1)))
    np.testing.assert_allclose(res.sent_s, [0.001, 0.002, 0.003], atol=1e-12)
    np.testing.assert_allclose(res.first_token_s, [0.511, 0.512, 1.011], atol=1e-12)
    assert res.frontend_wait_s[0] == pytest.approx(0.498, rel=1e-12)


def test_an_iteration_streams_its_tokens_no_faster_than_the_api_thread():
    """One request of 3 tokens on a 10 ms step with 25 ms of thread a streamed token: each iteration emits one
    token and takes 25 ms (prefill, then a fast-forwarded decode span), so the first token comes 25 ms after it
    reaches the engine and the last 75 ms; at 5 ms a token the thread keeps up and nothing changes."""
    setup, draws = serving(n=1, rate=1.0, output=3)
    base = run_serving(setup, draws)
    slow = run_serving(with_pool(setup, frontend_token_s=0.025), draws)
    np.testing.assert_allclose(slow.first_token_s - slow.admit_s, 0.025, atol=1e-12)
    np.testing.assert_allclose(slow.done_s - slow.admit_s, 0.075, atol=1e-12)
    fast = run_serving(with_pool(setup, frontend_token_s=0.005), draws)
    np.testing.assert_array_equal(fast.done_s, base.done_s)


def test_an_intake_shares_the_thread_with_the_tokens_it_streams():
    """Request A (sent at 0.105 s) passes 53 ms of intake and decodes 100 tokens on a 10 ms step (its iterations
    end at 0.168, 0.178, ... s); each token takes 4 ms of the thread, 40% of it. Request B, sent at 0.21 s, then
    takes 53 / (1 - 0.4) = 88.3 ms to pass: it reaches the engine at 0.2983 s and joins at the end of the
    iteration in flight, 0.308 s; without the streaming it reaches it at 0.263 s and joins at 0.268 s."""
    setup, draws = serving(n=2, rate=1.0 / 0.105, output=100)
    both = with_pool(setup, frontend_s=0.053, frontend_serial_s=0.053, frontend_token_s=0.004)
    res = run_serving(both, draws)
    np.testing.assert_allclose(res.sent_s, [0.105, 0.21], atol=1e-12)
    np.testing.assert_allclose(res.admit_s, [0.158, 0.308], atol=1e-9)
    assert res.frontend_wait_s[0] == 0.0
    plain = run_serving(with_pool(setup, frontend_s=0.053, frontend_serial_s=0.053), draws)
    np.testing.assert_allclose(plain.admit_s, [0.158, 0.268], atol=1e-9)


def test_a_burst_reaches_the_engine_at_the_threads_capacity():
    """2,000 requests sent at once, each with 2 ms of intake and 50 tokens streamed at 60 us: intakes take what
    streaming leaves of the thread, so once streaming is steady it passes one request per 2 + 50 x 0.06 = 5 ms
    (200 a second; the engine, 1 ms a step, streams 10 requests' tokens, 60% of the thread). The requests of
    the second half reach the engine at that pace, within 0.1%; with two API server processes, at 2.5 ms."""
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": 1e-3, "stack": "api"}
    engine["batching"] = {"policy": "chunked"}  # (prefills ride with the decodes: streaming's share holds steady)
    sc = {
        "engines": [engine],
        "stacks": {"api": {"base": "ideal", "frontend_s": 0.002, "frontend_serial_s": 0.002, "frontend_token_s": 6e-5}},
        "workload": {
            "rate_per_s": 1e9,
            "arrival": {"process": "deterministic"},
            "prompt_tokens": 10,
            "output_tokens": 50,
        },
    }
    resolved = resolve_scenario(sc)
    n = 2000
    res = run_serving(build_serving(resolved), draw_workload(resolved.scenario.workload, n, rng_for(3)))
    admitted = np.sort(res.admit_s)
    pace = (admitted[-1] - admitted[n // 2]) / (n - 1 - n // 2)
    assert pace == pytest.approx(0.005, rel=1e-3)
    # two API server processes (vLLM's --api-server-count 2): twice the requests a second
    sc["stacks"]["api"]["api_servers"] = 2
    resolved = resolve_scenario(sc)
    res = run_serving(build_serving(resolved), draw_workload(resolved.scenario.workload, n, rng_for(3)))
    admitted = np.sort(res.admit_s)
    assert (admitted[-1] - admitted[n // 2]) / (n - 1 - n // 2) == pytest.approx(0.0025, rel=1e-3)


def test_the_front_ends_thread_waits_as_an_md1_queue():
    """Poisson arrivals at 100/s on a thread that holds each request 5 ms (load 0.5): the mean wait is M/D/1's
    Pollaczek-Khinchine value, lambda s^2 / (2 (1 - lambda s)) = 2.5 ms, within 2% over 1e5 requests; the
    Dataset reports the summed wait."""
    rate, serial = 100.0, 0.005
    engine = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "fixed_step_time_s": 1e-4}
    engine["stack"] = "fe"
    sc = {
        "engines": [engine],
        "stacks": {"fe": {"base": "ideal", "frontend_s": serial, "frontend_serial_s": serial}},
        "workload": {"rate_per_s": rate, "prompt_tokens": 10, "output_tokens": 2},
    }
    resolved = resolve_scenario(sc)
    n = 100_000
    res = run_serving(build_serving(resolved), draw_workload(resolved.scenario.workload, n, rng_for(3)))
    expected = rate * serial**2 / (2.0 * (1.0 - rate * serial))
    assert res.frontend_wait_s[0] / n == pytest.approx(expected, rel=0.02)
    ds = hf.simulate(sc, n_requests=2000, seed=3)
    assert float(ds.frontend_wait_s.sum()) > 0.0


def test_a_front_end_thread_longer_than_the_front_end_is_one_clear_error():
    sc = {"engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", "stack": "fe"}]}
    sc["stacks"] = {"fe": {"base": "vllm", "frontend_s": 0.01, "frontend_serial_s": 0.02}}
    with pytest.raises(hf.ConfigError, match=r"frontend_serial_s.*0\.02.*at most frontend_s"):
        resolve_scenario(sc)


# ---------------------------------------------------------------- CUDA graphs


def graphed(params, sizes, eager_s=0.0, mixed=False, exact=False):
    p = params.copy()
    p[L.GRAPH_EXACT] = 1.0 if exact else 0.0
    p[L.GRAPH_COUNT] = len(sizes)
    p[L.GRAPH_SIZES : L.GRAPH_SIZES + len(sizes)] = sizes
    p[L.GRAPH_EAGER_S] = eager_s
    p[L.GRAPH_MIXED] = 1.0 if mixed else 0.0
    return p


@pytest.mark.parametrize("f", ["plain", "jit"])
def test_a_decode_batch_runs_as_the_next_captured_graph(build, f):
    """Captured sizes [1, 2, 4, 8]: a decode batch of 5 costs the 8-row GEMMs and sampling (its KV is its own),
    almost exactly what a batch of 8 costs at short context; 9 runs eagerly and pays the launches."""
    p0 = build("llama-3.1-8b").params
    p = graphed(p0, [1, 2, 4, 8], eager_s=0.002)
    it = iteration_time if f == "plain" else iteration_time.jit
    ctx = 1000.0
    five = it(p, 0.0, 0.0, 0.0, 5.0, 5 * ctx, 5.0, 5.0, True)
    assert five == pytest.approx(step_cost(p0, 0.0, 0.0, 0.0, 8.0, 5 * ctx, 8.0)[0], rel=1e-12)
    assert five > it(p0, 0.0, 0.0, 0.0, 5.0, 5 * ctx, 5.0, 5.0, True)  # the padding costs
    short = [it(p, 0.0, 0.0, 0.0, b, b * 1.0, b, b, True) for b in (5.0, 8.0)]
    assert short[0] == pytest.approx(short[1], rel=1e-3)
    nine = it(p, 0.0, 0.0, 0.0, 9.0, 9 * ctx, 9.0, 9.0, True)
    assert nine == pytest.approx(it(p0, 0.0, 0.0, 0.0, 9.0, 9 * ctx, 9.0, 9.0, True) + 0.002, rel=1e-12)
    # a prefill iteration runs eagerly unless mixed batches are captured
    pre = (512.0, 512.0 * 513 / 2, 512.0, 0.0, 0.0, 1.0, 1.0, False)
    assert it(p, *pre) == pytest.approx(it(p0, *pre) + 0.002, rel=1e-12)
    assert it(graphed(p0, [1, 2, 4, 8], 0.002, mixed=True), *pre) == pytest.approx(it(p0, *pre), rel=1e-12)


def test_without_padding_only_captured_sizes_run_as_graphs(build):
    """TensorRT-LLM's default: graphs for 1-31, 32, 64, 128 and no padding: 40 runs eagerly, 32 and 64 do not."""
    p0 = build("llama-3.1-8b").params
    p = graphed(p0, [*range(1, 32), 32, 64, 128], eager_s=0.003, exact=True)
    for b, extra in ((31.0, 0.0), (32.0, 0.0), (40.0, 0.003), (64.0, 0.0), (200.0, 0.003)):
        args = (0.0, 0.0, 0.0, b, b * 500.0, b, b, True)
        assert iteration_time(p, *args) == pytest.approx(iteration_time(p0, *args) + extra, rel=1e-12), b


def test_estimate_pads_decode_steps_the_same_way(build):
    """One formula: estimate's decode step at batch 5 is the loop's iteration at 5 decodes."""
    p = graphed(build("llama-3.1-8b").params, [1, 2, 4, 8], eager_s=0.002)
    loop_s = iteration_time(p, 0.0, 0.0, 0.0, 5.0, 5 * 1000.0, 5.0, 5.0, True)
    assert pipelined_time(p, 5.0, 0.0, 1000.0, True)[0] == pytest.approx(loop_s, rel=1e-12)


# ---------------------------------------------------------------- stacks in the catalog and the scenario


def engine_of(stack=None, **fields):
    e = {"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm", **fields}
    if stack is not None:
        e["stack"] = stack
    return {"engines": [e], "workload": {"rate_per_s": 5.0, "prompt_tokens": 512, "output_tokens": 64}}


def test_one_key_selects_a_stack_and_the_engine_overrides_any_field():
    from hermes_fast.resolve import resolve_scenario

    (vllm,) = resolve_scenario(engine_of("vllm")).engines
    assert (vllm.engine.batching.policy, vllm.engine.batching.max_batch_size, vllm.engine.max_batched_tokens) == (
        "chunked", 1024, 8192,
    )  # fmt: skip
    (own,) = resolve_scenario(engine_of("vllm", batching={"policy": "mixed"}, max_batched_tokens=4096)).engines
    assert (own.engine.batching.policy, own.engine.max_batched_tokens, own.engine.batching.max_batch_size) == (
        "mixed", 4096, 1024,
    )  # fmt: skip
    (ideal,) = resolve_scenario(engine_of("ideal")).engines  # the kernels alone: the schema's engine defaults
    assert ideal.stack.name == "kernels only" and ideal.engine.batching.policy == "continuous"
    assert ideal.engine.memory_utilization == 0.9 and ideal.engine.batching.max_batch_size == 256
    (default,) = resolve_scenario(engine_of()).engines  # an engine that names no stack runs vLLM's
    assert default.stack == vllm.stack and default.engine == vllm.engine


def test_a_stack_reaches_the_pools_and_the_step_cost():
    setup = build_serving(resolve_scenario(engine_of("trtllm")))
    assert setup.pool_int[loop.PL_ADMIT, 0] == loop.ADMIT_RESERVE_ALL
    assert setup.pool_int[loop.PL_POLICY, 0] == loop.POLICY_MIXED
    p = setup.params[0]
    assert p[L.GRAPH_COUNT] == 34 and p[L.GRAPH_SIZES + 33] == 128 and p[L.GRAPH_EXACT] == 1.0
    sglang = build_serving(resolve_scenario(engine_of("sglang")))
    assert sglang.pool_int[loop.PL_ADMIT, 0] == loop.ADMIT_RATIO
    assert sglang.pool_float[loop.PF_NEW_TOKEN_RATIO, 0] == pytest.approx(0.098)
    assert sglang.pool_int[loop.PL_CHUNK, 0] == 8192 and sglang.pool_int[loop.PL_MAX_TOKENS, 0] == 16384
    assert build_serving(resolve_scenario(engine_of("ideal"))).params[0][L.GRAPH_COUNT] == 0


def test_each_stack_budgets_kv_on_its_own_basis_by_hand():
    """Llama-3.1-8B on one H100 at memory fraction f = 0.8, by hand from the compiled weights (W) and one token
    budget's activations (A): vLLM's gpu_memory_utilization covers weights + activations + KV, KV = f M - W - A;
    SGLang's mem_fraction_static covers weights + KV only, KV = f M - W (activations use the rest); TensorRT-LLM's
    free_gpu_memory_fraction is of what weights and activations leave, KV = f (M - W - A). M is the memory CUDA
    reports, which all three budget from."""
    from hermes_fast.catalog import preset

    mem = preset("devices", "h100_sxm").runtime_memory_bytes
    kv = {}
    for stack in ("vllm", "sglang", "trtllm"):
        ce = build_serving(resolve_scenario(engine_of(stack, memory_utilization=0.8))).pools[0].compiled
        kv[stack] = (ce.kv_capacity_tokens, ce.weights_bytes, ce.activation_reserve_bytes, ce.kv_bytes_per_token)
    w, act, per_token = kv["vllm"][1], kv["vllm"][2], kv["vllm"][3]
    trt_act = kv["trtllm"][2]  # (8192 tokens of activations; vLLM's profile peaks in its sampler run, larger)
    assert trt_act > 0.5e9 and kv["sglang"][2] == 0.0 and act > trt_act
    assert kv["vllm"][0] == int((0.8 * mem - w - act) // per_token)
    assert kv["sglang"][0] == int((0.8 * mem - w) // per_token)
    assert kv["trtllm"][0] == pytest.approx((0.8 * (mem - w - trt_act)) / per_token, abs=1)
    assert kv["trtllm"][0] > kv["vllm"][0]  # (TRT-LLM's 10% is of the free memory only)


def test_a_scenario_stack_based_on_a_preset_sets_host_and_front_end_costs():
    sc = engine_of("my-vllm")
    # (synchronous: under async scheduling 2 ms of host work would hide behind the ~6.5 ms decode step)
    own_stack = {"base": "vllm", "frontend_s": 0.008, "step_overhead_s": 0.002, "async_scheduling": False}
    sc["stacks"] = {"my-vllm": own_stack}
    (own,) = resolve_scenario(sc).engines
    assert own.stack.policy == "chunked" and own.stack.frontend_s == 0.008
    assert own.device.efficiency.step_overhead_s == 0.002  # the stack's host cost replaces the device's
    setup = build_serving(resolve_scenario(sc))
    assert setup.pool_float[loop.PF_FRONTEND_S, 0] == 0.008 and setup.params[0][L.OH_STEP] >= 0.002
    # the front end is in simulate's TTFT and E2E, and estimate's step cost has the host cost
    import hermes_fast as hf

    est = hf.estimate(sc)
    base = hf.estimate(engine_of("vllm"))
    assert float(est.tpot_s.sum()) > float(base.tpot_s.sum())


def test_an_unknown_stack_is_one_config_error():
    from hermes_fast.config import ConfigError

    with pytest.raises(ConfigError, match=r"engines\[0\]\.stack: got 'vlm'.*did you mean 'vllm'"):
        resolve_scenario(engine_of("vlm"))


def test_presets_lists_the_stacks_with_versions_and_sources(capsys):
    from hermes_fast.cli import main

    assert main(["presets", "stacks"]) == 0
    out = capsys.readouterr().out.splitlines()
    header, *lines = out[1:]
    assert header.split()[:3] == ["#", "name", "stack"] and "sources" in header
    rows = {line.split()[0]: line for line in lines}
    assert set(rows) == {"ideal", "vllm", "vllm-0.8", "sglang", "sglang-0.3", "trtllm", "trtllm-engine"}
    assert "0.11 - 0.19" in rows["vllm"] and "reserve_all" in rows["trtllm"] and "new_token_ratio" in rows["sglang"]
    overlap = {name: line.split()[-2] for name, line in rows.items()}  # (the column before the sources)
    assert (overlap["vllm"], overlap["sglang"], overlap["vllm-0.8"]) == ("async", "decode-only", "none")
    assert all(int(line.split()[-1]) >= 1 for line in lines)  # every stack names its sources
    # the MoE kernels: vLLM's fused-MoE extras for the formats they describe, vLLM 0.8's for every format
    assert "x2.55 / x1.25 (bf16, fp16, fp8); fp4 on cc 9: x1 / x1.78" in rows["vllm"]
    assert "x2.99 / x1 " in rows["vllm-0.8"]
    # the prefill attention kernels: SGLang's backend for every model; vLLM's TRITON_ATTN for sink models on Ampere
    assert " x2.27;" in rows["sglang"] and "x1.02 " in rows["vllm-0.8"] and "sinks" not in rows["sglang"]
    assert " x1, sinks before Hopper x5.93 " in rows["vllm"]
    # and SGLang's decode on CUDA cores (FlashInfer) for few query heads a KV head, before Hopper
    assert "x2.27; decode x1.91 (<= 4 q/kv, cc <= 8.9) " in rows["sglang"] and "decode" not in rows["vllm"]


def test_sweeping_the_stack_changes_the_scheduler():
    import hermes_fast as hf

    sc = engine_of()
    sc["workload"]["rate_per_s"] = 20.0
    ds = hf.sweep(sc, {"engines.e.stack": ["ideal", "vllm", "trtllm"]}, n_requests=300, seed=1, progress=False)
    ttft = ds.ttft_mean_s.sel(replicate=0).values
    assert len(set(np.round(ttft, 9))) == 3  # three schedulers, three answers


def test_the_kernels_the_roofline_leaves_out_by_hand():
    """Llama-3.1-8B bf16 on one H100: a real stack adds, per token and layer (32), a K and V write (8 KV heads x
    128 dims x 2 x 2 B) and RoPE on 32 query and 8 key heads of 128 dims (read and write, 2 B); per sampling
    sequence two passes over 128,256 fp32 logits; 2 launches per layer and 2 for sampling."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    model, device = cat.model("llama-3.1-8b"), cat.device("h100_sxm")
    ideal = compile_engine(model, device, Parallel(), Dtypes(), stack=cat.stack("ideal")).params
    vllm = compile_engine(model, device, Parallel(), Dtypes(), stack=cat.stack("vllm")).params
    bw = device.memory_bandwidth_bytes_per_s * device.efficiency.memory_efficiency
    per_token = 32 * (8 * 128 * 2 * 2 + 2 * (32 + 8) * 128 * 2) / bw
    per_seq = 2 * 128_256 * 4 / bw
    assert vllm[L.EXTRA_TOKEN_S] == pytest.approx(per_token, rel=1e-12)
    assert vllm[L.EXTRA_SEQ_S] == pytest.approx(per_seq, rel=1e-12)
    tokens, seqs = 600.0, 40.0  # a 512-token prefill chunk and 88 decodes: 600 tokens, 40 sampling
    args = (512.0, 512.0 * 513 / 2, 512.0, 88.0, 88.0 * 900, seqs)
    extra = step_cost(vllm, *args)[0] - step_cost(ideal, *args)[0]
    assert extra == pytest.approx(tokens * per_token + seqs * per_seq + 66 * device.efficiency.elementwise_overhead_s)


def params_with_stack_field(model: str, stack: str, **field):
    """Step-cost parameters of ``model`` on one H100 under ``stack``, and under it with ``field`` set."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    m, d, base = cat.model(model), cat.device("h100_sxm"), cat.stack(stack)
    return tuple(compile_engine(m, d, Parallel(), Dtypes(), stack=st).params
                 for st in (base, dataclasses.replace(base, **field)))  # fmt: skip


def test_a_stacks_prefill_attention_extra_scales_only_the_prefill_attention_kernels():
    """Llama-3.1-8B on one H100: ``prefill_attention_extra: 0.5`` makes each layer's prefill attention kernels
    (compute and memory terms, not their launch) 1.5x as long; decode attention and everything else stay."""
    from hermes_fast.kernels.step import _attention_layer

    plain, slow = params_with_stack_field("llama-3.1-8b", "vllm", prefill_attention_extra=0.5)
    assert slow[L.PREFILL_ATTN_EXTRA] == 0.5 and plain[L.PREFILL_ATTN_EXTRA] == 0.0
    prefill = (4096.0, 4096.0 * 4097 / 2, 4096.0)
    c0, m0, o0 = _attention_layer(plain, *prefill, 0.0, 0.0, 0.0)
    c1, m1, o1 = _attention_layer(slow, *prefill, 0.0, 0.0, 0.0)
    assert (c1, m1, o1) == pytest.approx((1.5 * c0, 1.5 * m0, o0), rel=1e-12)
    decode = (0.0, 0.0, 0.0, 64.0, 64.0 * 2000)
    assert _attention_layer(slow, *decode, 0.0) == _attention_layer(plain, *decode, 0.0)
    # the whole step: 32 layers' prefill attention kernels longer by half
    extra = step_cost(slow, *prefill, 0.0, 0.0, 1.0)[0] - step_cost(plain, *prefill, 0.0, 0.0, 1.0)[0]
    assert extra == pytest.approx(32 * 0.5 * (c0 + m0), rel=1e-9)


def test_a_stacks_moe_compute_extra_scales_only_the_expert_gemms_compute():
    """Mixtral-8x7B on one H100: ``moe_compute_extra: 0.5`` makes the routed experts' grouped GEMMs 1.5x as long
    where they are compute-bound (a 4,096-token prefill: each of the 32 layers' two grouped GEMMs); a batch-8
    decode, whose expert GEMMs are memory-bound, costs the same."""
    from hermes_fast.kernels.step import _grouped_gemm

    plain, slow = params_with_stack_field("mixtral-8x7b", "ideal", moe_compute_extra=0.5)
    assert slow[L.MOE_COMPUTE_EXTRA] == 0.5 and plain[L.MOE_COMPUTE_EXTRA] == 0.0
    rows, experts = 4096.0 * 2, 8.0  # top-2 of 8: every expert active
    grouped = [_grouped_gemm(p, g, rows, experts) for p in (plain, slow) for g in (L.G_EXP_UP, L.G_EXP_DOWN)]
    (c_up, m_up), (c_down, m_down), (s_up, _), (s_down, _) = grouped
    assert m_up == m_down == 0.0 and (s_up, s_down) == pytest.approx((1.5 * c_up, 1.5 * c_down), rel=1e-12)
    prefill = (4096.0, 4096.0 * 4097 / 2, 4096.0, 0.0, 0.0, 1.0)
    extra = step_cost(slow, *prefill)[0] - step_cost(plain, *prefill)[0]
    assert extra == pytest.approx(32 * 0.5 * (c_up + c_down), rel=1e-9)
    decode = (0.0, 0.0, 0.0, 8.0, 8.0 * 2000, 8.0)
    assert step_cost(slow, *decode) == step_cost(plain, *decode)


def test_a_stacks_moe_memory_extra_scales_only_the_expert_gemms_weight_reads():
    """The other side: ``moe_memory_extra: 1.0`` makes the routed experts' grouped GEMMs twice as long where they are
    memory-bound (a batch-8 decode of Mixtral-8x7B on one H100: reading the active experts' weights), and a
    4,096-token prefill, whose expert GEMMs are compute-bound, costs the same."""
    from hermes_fast.kernels.step import _grouped_gemm

    plain, slow = params_with_stack_field("mixtral-8x7b", "ideal", moe_memory_extra=1.0)
    assert slow[L.MOE_MEMORY_EXTRA] == 1.0 and plain[L.MOE_MEMORY_EXTRA] == 0.0
    rows, experts = 8.0 * 2, 8.0  # top-2 of 8 for 8 sequences: (at most) every expert active
    grouped = [_grouped_gemm(p, g, rows, experts) for p in (plain, slow) for g in (L.G_EXP_UP, L.G_EXP_DOWN)]
    (c_up, m_up), (c_down, m_down), (s_c_up, s_up), (s_c_down, s_down) = grouped
    assert c_up == c_down == s_c_up == s_c_down == 0.0
    assert (s_up, s_down) == pytest.approx((2.0 * m_up, 2.0 * m_down), rel=1e-12)
    prefill = (4096.0, 4096.0 * 4097 / 2, 4096.0, 0.0, 0.0, 1.0)
    assert step_cost(slow, *prefill) == step_cost(plain, *prefill)


def test_a_stacks_moe_extras_apply_only_to_the_expert_formats_it_names():
    """``moe_extra_weights: [bf16, fp8]``: Mixtral-8x7B's BF16 or FP8 experts take the stack's MoE extras; its experts
    in 4-bit (``dtypes.expert_weight: int4``, other kernels) take neither, whatever the extras; without the list,
    every format takes them (vLLM's fused-MoE kernels serve BF16 / FP8 experts, Marlin the 4-bit ones)."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    m, d = cat.model("mixtral-8x7b"), cat.device("h100_sxm")
    extras = dict(moe_compute_extra=0.5, moe_memory_extra=0.25)
    gated = dataclasses.replace(cat.stack("ideal"), moe_extra_weights=("bf16", "fp8"), **extras)
    every = dataclasses.replace(cat.stack("ideal"), **extras)
    fp8 = Dtypes(weight="fp8", activation="fp8")
    int4 = Dtypes(expert_weight="int4")
    for stack, dtypes, expected in [
        (gated, Dtypes(), (0.5, 0.25)),
        (gated, fp8, (0.5, 0.25)),
        (gated, int4, (0.0, 0.0)),
        (every, int4, (0.5, 0.25)),
    ]:
        p = compile_engine(m, d, Parallel(), dtypes, stack=stack).params
        assert (p[L.MOE_COMPUTE_EXTRA], p[L.MOE_MEMORY_EXTRA]) == expected
    assert gated.moe_extras("int4", 9.0) == (0.0, 0.0) and not gated.moe_extras_apply("fp4", 9.0)


def test_a_stacks_moe_kernels_replace_its_moe_extras_for_their_formats_and_devices():
    """``moe_kernels``: vLLM runs gpt-oss-20b's MXFP4 experts on Hopper (9.0) through Triton's matmul_ogs, whose
    weight reads take longer than the calibrated kernels' and which its fused-MoE extras do not describe; on an A100
    (Marlin) or a B200 (FlashInfer) neither applies; Mixtral's BF16 experts on an H100 keep the fused-MoE extras. A
    kernel with a compute-capability range needs a CUDA device; one without runs on any."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import ConfigError, Dtypes, Parallel
    from hermes_fast.config.stack import MoeKernel
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    vllm = cat.stack("vllm")
    mxfp4 = Dtypes(expert_weight="fp4")
    triton = (0.0, vllm.moe_kernels[0].memory_extra)
    assert triton[1] > 0.0
    for model, device, dtypes, expected in [
        ("gpt-oss-20b", "h100_sxm", mxfp4, triton),
        ("gpt-oss-20b", "h200_sxm", mxfp4, triton),
        ("gpt-oss-20b", "a100_sxm_80gb", mxfp4, (0.0, 0.0)),
        ("gpt-oss-20b", "b200", mxfp4, (0.0, 0.0)),
        ("mixtral-8x7b", "h100_sxm", Dtypes(), (vllm.moe_compute_extra, vllm.moe_memory_extra)),
    ]:
        p = compile_engine(cat.model(model), cat.device(device), Parallel(), dtypes, stack=vllm).params
        assert (p[L.MOE_COMPUTE_EXTRA], p[L.MOE_MEMORY_EXTRA]) == expected, (model, device)
    assert not vllm.moe_extras_apply("fp4", 9.0) and vllm.moe_extras_apply("bf16", 9.0)
    anywhere = MoeKernel(name="k", weights=("int4",), compute_extra=0.5)
    assert anywhere.runs("int4", None) and not anywhere.runs("fp4", None)
    hopper = vllm.moe_kernels[0]
    assert hopper.runs("fp4", 9.0) and not hopper.runs("fp4", None) and not hopper.runs("fp4", 10.0)
    with pytest.raises(ConfigError, match="max_compute_capability"):
        MoeKernel(name="k", weights=("fp4",), min_compute_capability=9.0, max_compute_capability=8.0)._validate("k")


def test_a_stacks_cuda_core_decode_extra_scales_only_the_decode_attention_kernels():
    """Llama-3.1-8B (4 query heads a KV head, BF16 KV) on one A100 under SGLang with ``cuda_core_decode_extra: 0.5``:
    each layer's decode attention kernels (compute and memory terms, not their launch) take 1.5x as long; prefill
    attention stays, and a decode-only step grows by exactly that share of its attention."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.kernels.step import _attention_layer, step_cost
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    m, d, base = cat.model("llama-3.1-8b"), cat.device("a100_sxm_80gb"), cat.stack("sglang")
    plain, slow = (compile_engine(m, d, Parallel(), Dtypes(), stack=dataclasses.replace(base, cuda_core_decode_extra=x))
                   .params for x in (0.0, 0.5))  # fmt: skip
    assert slow[L.DECODE_ATTN_EXTRA] == 0.5 and plain[L.DECODE_ATTN_EXTRA] == 0.0
    decode = (0.0, 0.0, 0.0, 64.0, 64.0 * 2000)
    c0, m0, o0 = _attention_layer(plain, *decode, 0.0)
    c1, m1, o1 = _attention_layer(slow, *decode, 0.0)
    assert (c1, m1, o1) == pytest.approx((1.5 * c0, 1.5 * m0, o0), rel=1e-12)
    prefill = (4096.0, 4096.0 * 4097 / 2, 4096.0, 0.0, 0.0)
    assert _attention_layer(slow, *prefill, 0.0) == _attention_layer(plain, *prefill, 0.0)
    # (decode-only, memory-bound: the step adds half the layers' decode attention time)
    grown = step_cost(slow, *decode, 64.0)[0] - step_cost(plain, *decode, 64.0)[0]
    assert grown == pytest.approx(0.5 * m.n_layers * (c0 + m0), rel=1e-9)


def test_the_cuda_core_decode_kernel_runs_for_few_query_heads_a_kv_head_with_a_16_bit_kv_cache():
    """SGLang's should_use_tensor_core: FlashInfer decodes on CUDA cores where a device's query heads per KV head are
    at most 4 and the KV cache is BF16 / FP16, on devices up to the entry's bound (8.9: Hopper runs FlashAttention 3
    from 0.4.6). Per device: Llama-3.1-8B has 32 / 8 = 4, Llama-3.2-3B 3, Qwen3-32B 64 / 8 = 8 (and 32 / 4 = 8 at
    TP 2), Llama-3.1-70B at TP 8 8 / 1 (its KV heads replicate no further) but at TP 16 4 / 1; DeepSeek-V3's MLA runs
    kernels of its own. An FP8 KV cache, an H100 or a stack without the kernel (None) takes none."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.resolve import Catalog
    from hermes_fast.sizes import query_heads_per_kv_head

    cat = Catalog()
    sglang = dataclasses.replace(cat.stack("sglang"), cuda_core_decode_extra=0.7)
    everywhere = dataclasses.replace(sglang, cuda_core_decode_max_compute_capability=None)
    without = dataclasses.replace(sglang, cuda_core_decode_extra=None)
    fp8_kv = Dtypes(kv="fp8")
    for stack, model, device, tp, dtypes, group, expected in [
        (sglang, "llama-3.1-8b", "a100_sxm_80gb", 1, Dtypes(), 4.0, 0.7),
        (sglang, "llama-3.2-3b", "a100_sxm_80gb", 1, Dtypes(), 3.0, 0.7),
        (sglang, "llama-3.1-8b", "a100_sxm_80gb", 1, fp8_kv, 4.0, 0.0),
        (sglang, "qwen3-32b", "a100_sxm_80gb", 1, Dtypes(), 8.0, 0.0),
        (sglang, "qwen3-32b", "a100_sxm_80gb", 2, Dtypes(), 8.0, 0.0),
        (sglang, "llama-3.1-70b", "a100_sxm_80gb", 8, Dtypes(), 8.0, 0.0),
        (sglang, "llama-3.1-70b", "a100_sxm_80gb", 16, Dtypes(), 4.0, 0.7),
        (sglang, "deepseek-v3", "a100_sxm_80gb", 8, Dtypes(), None, 0.0),
        (sglang, "llama-3.1-8b", "h100_sxm", 1, Dtypes(), 4.0, 0.0),
        (everywhere, "llama-3.1-8b", "h100_sxm", 1, Dtypes(), 4.0, 0.7),
        (without, "llama-3.1-8b", "a100_sxm_80gb", 1, Dtypes(), 4.0, 0.0),
    ]:
        m, d, par = cat.model(model), cat.device(device), Parallel(tp=tp)
        assert query_heads_per_kv_head(m, tp) == group, (model, tp)
        p = compile_engine(m, d, par, dtypes, stack=stack, check=False).params
        assert p[L.DECODE_ATTN_EXTRA] == expected, (model, device, tp, dtypes.kv)
        assert stack.cuda_core_decode(group, dtypes.kv, d.compute_capability) == (expected > 0.0)
    assert cat.stack("vllm").cuda_core_decode_extra is None  # (FlashAttention: tensor cores for every model)
    # (SGLang divides heads by KV heads as integers: 36 / 8 reads 4, CUDA cores; 40 / 8 reads 5, tensor cores)
    assert sglang.cuda_core_decode(4.5, "bf16", 8.0) and not sglang.cuda_core_decode(5.0, "bf16", 8.0)


def test_a_model_with_attention_sinks_takes_the_sink_backends_prefill_extra_before_hopper():
    """``sink_attention_extra``: gpt-oss-20b (attention sinks) takes it on an A100 (8.0) or an L40S (8.9), where
    FlashAttention 2 has no sinks, and the stack's ``prefill_attention_extra`` on an H100 (9.0, FlashAttention 3) or
    a device that is not CUDA's (MI300X); a model without sinks always takes ``prefill_attention_extra``, and so
    does every model under a stack that names no sink backend (None)."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel
    from hermes_fast.config.stack import needs_sink_kernels
    from hermes_fast.resolve import Catalog

    cat = Catalog()
    sinks = dataclasses.replace(cat.stack("ideal"), prefill_attention_extra=0.2, sink_attention_extra=3.0)
    plain = dataclasses.replace(sinks, sink_attention_extra=None)
    for stack, model, device, expected in [
        (sinks, "gpt-oss-20b", "a100_sxm_80gb", 3.0),
        (sinks, "gpt-oss-20b", "l40s", 3.0),
        (sinks, "gpt-oss-20b", "h100_sxm", 0.2),
        (sinks, "gpt-oss-20b", "mi300x", 0.2),
        (sinks, "llama-3.1-8b", "a100_sxm_80gb", 0.2),
        (plain, "gpt-oss-20b", "a100_sxm_80gb", 0.2),
    ]:
        m, d = cat.model(model), cat.device(device)
        p = compile_engine(m, d, Parallel(), Dtypes(), stack=stack).params
        assert p[L.PREFILL_ATTN_EXTRA] == expected, (model, device)
        sinks_before_hopper = model == "gpt-oss-20b" and device in ("a100_sxm_80gb", "l40s")
        assert needs_sink_kernels(m.attention_sinks, d.compute_capability) == sinks_before_hopper
    shipped = cat.stack("vllm")  # (vLLM: TRITON_ATTN for gpt-oss on Ampere, its usual backends otherwise)
    assert shipped.prefill_attention_extra_for(True, 8.0) == shipped.sink_attention_extra > 0.0
    assert shipped.prefill_attention_extra_for(True, 9.0) == shipped.prefill_attention_extra


def test_vllms_hopper_mxfp4_kernel_reproduces_the_latency_it_is_derived_from():
    """vLLM PR 27523: `vllm bench latency` of gpt-oss-120b (batch 8, 32 tokens in, 128 out, one SM90 GPU, in process,
    0.11's sync scheduling) took 1.58155 s on Triton's matmul_ogs, 1.17 s on Marlin. The `vllm` entry's Hopper MXFP4
    kernel reproduces the Triton figure on an H100 within 1% with its shipped host costs (its memory_extra is derived
    from it, so a refit of those costs must derive it again); with the calibrated experts (no kernel) the run takes
    less time than on Triton."""
    import hermes_fast as hf

    def batch_latency(kernels=None):
        stack = {
            "base": "vllm",
            "async_scheduling": False,
            "frontend_s": 0.0,
            "frontend_serial_s": 0.0,
            "frontend_token_s": 0.0,
        }
        if kernels is not None:
            stack["moe_kernels"] = kernels
        sc = {
            "stacks": {"s": stack},
            "engines": [{"name": "e", "model": "gpt-oss-120b", "device": "h100_sxm", "stack": "s",
                         "dtypes": {"weight": "bf16", "expert_weight": "fp4"}}],
            "workload": {"arrival": {"process": "closed", "concurrency": 8}, "prompt_tokens": 32, "output_tokens": 128},
        }  # fmt: skip
        return float(hf.simulate(sc, n_requests=8, seed=0)["e2e_s"].max())

    assert batch_latency() == pytest.approx(1.58155, rel=0.01)
    assert batch_latency(kernels=[]) < 1.58155 * 0.85


def test_an_overlap_scheduler_hides_a_decode_iterations_per_step_host_work():
    """``decode_host_overlap``: a decode-only iteration of Llama-3.1-8B on one H100 (batch 8, 2 ms of host work a
    step, 10 us a sequence) costs its kernels plus the per-sequence work (the per-step work runs beside the kernels,
    which take longer); an iteration with prefill pays both in full, as without the overlap."""
    fields = {"step_overhead_s": 0.002, "sequence_overhead_s": 1e-5}
    base = params_with_stack_field("llama-3.1-8b", "ideal", **fields)[1]
    p = base.copy()
    p[L.OH_STEP], p[L.OH_SEQ] = 0.002, 1e-5
    overlapped = p.copy()
    overlapped[L.DECODE_HOST_OVERLAP] = 1.0
    decode = (0.0, 0.0, 0.0, 8.0, 8.0 * 1000, 8.0)
    kernels = step_cost(p, *decode)[0] - 0.002 - 8 * 1e-5
    assert kernels > 0.002
    assert step_cost(overlapped, *decode)[0] == pytest.approx(kernels + 8 * 1e-5, rel=1e-12)
    mixed = (512.0, 512.0 * 513 / 2, 512.0, 8.0, 8.0 * 1000, 9.0)
    assert step_cost(overlapped, *mixed) == step_cost(p, *mixed)


def test_async_scheduling_runs_the_host_work_beside_the_kernels():
    """``async_scheduling`` (vLLM's async scheduler): Llama-3.1-8B on one H100 with 2 ms of host work a step and
    10 us a sequence. A decode iteration of batch 8 takes its kernels alone (more than the 2.08 ms of host work),
    a prefill iteration too; with 1 ms a sequence (10 ms of host work for 8 sequences, more than the decode
    kernels) the decode iteration takes the host time alone. Without it each pays kernels + host work; with
    pipeline parallelism the host work is paid in full, async or not."""
    p = params_with_stack_field("llama-3.1-8b", "ideal")[1]
    p[L.OH_STEP], p[L.OH_SEQ] = 0.002, 1e-5
    async_ = p.copy()
    async_[L.ASYNC_SCHEDULING] = 1.0
    decode = (0.0, 0.0, 0.0, 8.0, 8.0 * 1000, 8.0)
    mixed = (512.0, 512.0 * 513 / 2, 512.0, 8.0, 8.0 * 1000, 9.0)
    for batch, host in ((decode, 0.002 + 8 * 1e-5), (mixed, 0.002 + 9 * 1e-5)):
        kernels = step_cost(p, *batch)[0] - host
        assert kernels > host
        assert step_cost(async_, *batch)[0] == pytest.approx(kernels, rel=1e-12)
    p[L.OH_SEQ] = async_[L.OH_SEQ] = 1e-3
    kernels = step_cost(p, *decode)[0] - (0.002 + 8e-3)
    assert kernels < 0.002 + 8e-3
    assert step_cost(async_, *decode)[0] == pytest.approx(0.002 + 8e-3, rel=1e-12)
    p[L.PP] = async_[L.PP] = 2.0
    assert step_cost(async_, *decode) == step_cost(p, *decode)


def test_validation_reads_vllm_async_scheduling_from_the_run():
    """vLLM ran async scheduling only with --async-scheduling before 0.14 and by default since: the validation's
    stack follows the run's version and flags (GPUStack's vLLM 0.11 runs with and without the flag; the FP8-KV
    blog's 0.19.1 runs, without it)."""
    from hermes_fast.calibration.serving_runs import serving_runs, skip_reason, stack_entry
    from hermes_fast.calibration.serving_scenario import serving_scenario

    seen = {}
    for run in serving_runs():
        s = run.settings
        if stack_entry(run) == "vllm" and skip_reason(run) is None:
            key = (s["stack_version"].split()[0], "--async-scheduling" in s["server_args"])
            (engine,) = resolve_scenario(serving_scenario(run)).engines
            seen.setdefault(key, set()).add(engine.stack.async_scheduling)
    assert seen[("0.11.0", False)] == {False}
    assert seen[("0.11.0", True)] == {True}
    assert seen[("0.19.1", False)] == {True}


def test_stacks_budget_from_the_memory_cuda_reports():
    """vLLM sizes its share of an 80 GB H100 from CUDA's total: 'total_gpu_memory 79.22GiB, gpu_memory_utilization
    0.90, the current vLLM instance can use 71.29GiB' (vLLM PR #10511). The `vllm` stack's budget is that within
    0.1%; `ideal` keeps the datasheet's 80e9 bytes (67.06 GiB at 0.9)."""
    budgets = {}
    for stack in ("vllm", "ideal"):
        (pool,) = build_serving(resolve_scenario(engine_of(stack))).pools
        budgets[stack] = pool.compiled.usable_bytes / 2**30
    assert budgets["vllm"] == pytest.approx(71.29, rel=1e-3)
    assert budgets["ideal"] == pytest.approx(0.9 * 80e9 / 2**30, rel=1e-12)


def test_qwen3_32b_on_one_a100_holds_32768_tokens_of_kv_but_not_40960():
    """GPUStack's A100 page served Qwen3-32B with vLLM 0.11 only with --max-model-len 32768: vLLM starts when its
    KV holds one request of max_model_len tokens, so it held 32,768-40,959 tokens (A100 API-server defaults: 2048
    batched tokens, 256 sequences). The memory CUDA reports gives that; the datasheet's 80e9 bytes gave ~23k."""
    sc = engine_of("vllm", model="qwen3-32b", device="a100_sxm_80gb", max_batched_tokens=2048)
    sc["engines"][0]["batching"] = {"max_batch_size": 256}
    (pool,) = build_serving(resolve_scenario(sc)).pools
    assert 32768 <= pool.compiled.kv_capacity_tokens < 40960


def test_vllm_reserves_the_peak_of_its_memory_profiles_sampler_run():
    """vLLM's profile run samples max_num_seqs sequences after the dummy forward, top-k and top-p over the whole
    vocabulary. llm-d's vLLM logs on an H100 (max_num_seqs 1024, gpu_memory_utilization 0.9) read the peak and the
    KV it leaves: gpt-oss-20b 7.38 GiB and 50.28 GiB of KV, Llama-3.1-8B 4.76 and 51.38, Qwen3-32B 5.64 and 4.45.
    The `vllm` stack reserves 1024 x vocabulary x 38.8 bytes, within 1.5% of each peak, and leaves each KV within
    3% (Llama 51.58 GiB; gpt-oss 51.59, its weights 12.25 GiB where vLLM loads 13.47; Qwen3-32B 4.63, the 0.14 GiB
    vLLM counts outside torch aside); `ideal` reserves gpt-oss-20b's 8192-token activations, 0.75 GB."""
    gib = 2**30
    logs = {"gpt-oss-20b": (7.38, 50.28), "llama-3.1-8b": (4.76, 51.38), "qwen3-32b": (5.64, 4.45)}
    mxfp4 = {"weight": "bf16", "expert_weight": "fp4"}  # (gpt-oss's release: MXFP4 experts, the rest BF16)
    for model, (peak, kv) in logs.items():
        dtypes = mxfp4 if model.startswith("gpt-oss") else {}
        (pool,) = build_serving(resolve_scenario(engine_of("vllm", model=model, dtypes=dtypes))).pools
        ce = pool.compiled
        assert ce.activation_reserve_bytes / gib == pytest.approx(peak, rel=0.015), model
        kv_gib = ce.kv_capacity_tokens * ce.kv_bytes_per_token / gib
        assert kv_gib == pytest.approx(kv, rel=0.03, abs=0.2), model
    (pool,) = build_serving(resolve_scenario(engine_of("ideal", model="gpt-oss-20b"))).pools
    assert 0.7e9 < pool.compiled.activation_reserve_bytes < 0.8e9


def test_sglangs_memory_fraction_follows_its_rule_by_gpu_and_layout():
    """SGLang 0.5 sets mem_fraction_static, where it is not given, to 1 - reserved / the GPU's memory, reserved
    (9.5 + TP x PP / 2) GiB on a GPU of 35-90 GiB and (12 + TP x PP / 2) GiB on one of 90-160 GiB, 4 GiB more with
    attention DP (server_args.py, stack_facts.csv), to 3 places. By hand: an H100 (79.2 GiB) 0.874 at TP1 and 0.830
    at TP8, an H200 (131.3 GiB) 0.878 at TP8 and 0.848 with attention DP; a B200 (168 GiB, outside the classes)
    the entry's 0.88. Every point of an estimate grid over TP runs at its own; an engine's own value wins."""
    cat = hf.Catalog()
    st = cat.stack("sglang")

    def rule(device, ranks, dp=False):
        return st.memory_utilization_for(cat.device(device), ranks, dp)

    assert (rule("h100_sxm", 1), rule("h100_sxm", 8), rule("h200_sxm", 8), rule("h200_sxm", 8, True)) == (
        0.874, 0.83, 0.878, 0.848,
    )  # fmt: skip
    assert rule("b200", 1) == st.memory_utilization == 0.88
    h = cat.device("h100_sxm").runtime_memory_bytes / 2**30
    assert rule("h100_sxm", 4) == round((h - 9.5 - 4 * 0.5) / h, 3)

    def kv(tp, **own):
        sc = engine_of("sglang", model="llama-3.1-70b", parallel={"tp": tp}, **own)
        return float(hf.estimate(sc).kv_capacity_tokens.values.ravel()[0])

    grid = hf.estimate(engine_of("sglang", model="llama-3.1-70b", parallel={"tp": 2}), grid={"tp": [2, 8]})
    by_grid = grid.kv_capacity_tokens.values.ravel().tolist()
    assert by_grid == [kv(2, memory_utilization=rule("h100_sxm", 2)), kv(8, memory_utilization=rule("h100_sxm", 8))]
    assert kv(8) == by_grid[1] and kv(8, memory_utilization=0.7) < by_grid[1]
    # reserved memory reaching the device's: one error naming the rule, not a negative fraction
    big = {"stacks": {"s": {"base": "sglang", "memory_reserved_per_rank_gib": 10.0}}}
    with pytest.raises(hf.ConfigError, match=r"engines\[0\]\.stack: got 's'; expected a stack whose memory_reserved"):
        hf.estimate({**engine_of("s", model="llama-3.1-70b", parallel={"tp": 8}), **big})
    # a stack without the rule: its own value whatever the layout
    (vllm,) = resolve_scenario(engine_of("vllm", model="llama-3.1-70b", parallel={"tp": 8})).engines
    assert vllm.engine.memory_utilization == 0.9
