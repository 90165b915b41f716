"""The jitted serving loop against the plain-Python reference loop (``serving_reference``) on identical draws.

Every case builds a scenario, draws a few hundred requests once, runs the reference (one event per
iteration) and the jitted loop with and without decode fast-forward, and requires identical per-request
outcomes: admission, prefill-end, first-token, completion and hand-off times (rel 1e-9), status, rejection
reason, emitted tokens, preemptions, entry and decode replica. Each case also checks that it exercises what
it is meant to (preemptions, chunking, rejections, drops, hand-offs...), so a passing comparison is not
vacuous. The reference itself is checked against hand-worked timelines.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
from outcomes import assert_same_outcome
from serving_reference import run_reference

from hermes_fast.catalog import preset
from hermes_fast.kernels.serving import Outcome, Reason, Status, compiled_serve, new_state
from hermes_fast.kernels.serving import state as loop
from hermes_fast.resolve import resolve_scenario
from hermes_fast.simulate import build_serving, run_serving
from hermes_fast.workload import Draws, draw_workload, rng_for

MODEL = "llama-3.1-8b"
DEVICE = "h100_sxm"
# memory_utilization that leaves Llama-3.1-8B about 4,000 tokens of KV on one H100 (17.56 GB of its memory):
# preemption territory
KV_TIGHT = 17.56e9 / preset("devices", DEVICE).memory_bytes
LENGTHS = {
    "prompt_tokens": {"dist": "uniform", "min": 32, "max": 2048},
    "output_tokens": {"dist": "uniform", "min": 4, "max": 200},
}
# disaggregated: output 1 finishes on the prefill pool, without a hand-off
DISAGG_LENGTHS = {
    "prompt_tokens": {"dist": "uniform", "min": 32, "max": 2048},
    "output_tokens": {"dist": "uniform", "min": 1, "max": 160},
}


def engine(policy: str, name: str = "engine", **kw) -> dict:
    batching = {"policy": policy, **kw.pop("batching", {})}
    if policy == "chunked":
        batching.setdefault("chunk_size", 256)
    # the reference implements the loop's mechanics, with no serving stack around the kernels
    return {
        "name": name,
        "model": kw.pop("model", MODEL),
        "device": DEVICE,
        "batching": batching,
        "stack": "ideal",
        **kw,
    }


def colocated(
    policy: str, rate: float = 10.0, lengths: dict = LENGTHS, serving=None, models=None, arrival="poisson", **kw
) -> dict:
    return {
        "engines": [engine(policy, **kw)],
        "workload": {"rate_per_s": rate, "classes": [lengths], "arrival": {"process": arrival}},
        "serving": serving or {},
        "models": models or {},
    }


def disaggregated(
    prefill: dict, decode: dict, pairing: str = "global", rate: float = 15.0, kv_link=None, arrival="poisson"
) -> dict:
    serving = {"prefill_engine": "prefill", "decode_engine": "decode", "pairing": pairing}
    if kv_link is not None:
        serving["kv_link"] = kv_link
    return {
        "engines": [engine(name="prefill", **prefill), engine(name="decode", **decode)],
        "serving": serving,
        "workload": {"rate_per_s": rate, "classes": [DISAGG_LENGTHS], "arrival": {"process": arrival}},
    }


@dataclasses.dataclass(frozen=True)
class Case:
    scenario: dict
    expect: frozenset = frozenset()  # features the case must exercise (see test_case_exercises_its_features)
    n: int = 300
    seed: int = 1


def case(scenario: dict, *expect: str, **kw) -> Case:
    return Case(scenario, frozenset(expect), **kw)


SHORT_CONTEXT = {"llama-8b-4k": {"base": MODEL, "max_context_tokens": 4096}}
LIMIT_LENGTHS = {
    "prompt_tokens": {"dist": "uniform", "min": 32, "max": 4090},
    "output_tokens": {"dist": "uniform", "min": 4, "max": 200},
}
LONG_PROMPTS = {
    "prompt_tokens": {"dist": "uniform", "min": 32, "max": 6000},
    "output_tokens": {"dist": "uniform", "min": 4, "max": 120},
}
TIGHT_BUDGET_LENGTHS = {
    "prompt_tokens": {"dist": "uniform", "min": 1800, "max": 2048},
    "output_tokens": {"dist": "uniform", "min": 4, "max": 200},
}
ENCODER_LENGTHS = {"prompt_tokens": {"dist": "uniform", "min": 16, "max": 500}, "output_tokens": 8}

CASES: dict[str, Case] = {}
# one replica, roofline step costs
for _policy in ("static", "continuous", "chunked", "mixed"):
    _extra = {"batching": {"max_batch_size": 32}} if _policy == "static" else {}
    CASES[f"{_policy}-1rep"] = case(colocated(_policy, **_extra), *(["chunk"] if _policy == "chunked" else []))
# two replicas: round robin with a fixed step time, least-outstanding with the roofline
for _policy in ("static", "continuous", "chunked", "mixed"):
    CASES[f"{_policy}-2rep-round_robin-fixed"] = case(
        colocated(_policy, rate=20.0, replicas=2, scheduler="round_robin", fixed_step_time_s=0.012), "replicas"
    )
    CASES[f"{_policy}-2rep-least_outstanding"] = case(
        colocated(_policy, rate=20.0, replicas=2, scheduler="least_outstanding"), "replicas"
    )
CASES["mixed-2rep-random"] = case(colocated("mixed", rate=20.0, replicas=2, scheduler="random"), "replicas")
CASES["continuous-3rep-shared_queue"] = case(
    colocated("continuous", rate=30.0, replicas=3, scheduler="shared_queue"), "replicas"
)
CASES["static-2rep-shared_queue-fixed"] = case(
    colocated("static", rate=20.0, replicas=2, scheduler="shared_queue", fixed_step_time_s=0.015), "replicas"
)
# simultaneous events: arrivals every 1/8 s and iterations of 1/8 s end together (all sums exact in binary)
for _policy, _sched in (("continuous", "shared_queue"), ("chunked", "least_outstanding"), ("mixed", "round_robin")):
    CASES[f"{_policy}-2rep-{_sched}-ties"] = case(
        colocated(_policy, rate=8.0, arrival="deterministic", replicas=2, scheduler=_sched, fixed_step_time_s=0.125),
        "replicas",
    )
# KV pressure: preemption by recompute and by swap
CASES["static-kv_tight"] = case(colocated("static", rate=6.0, memory_utilization=KV_TIGHT))
for _policy in ("continuous", "chunked", "mixed"):
    for _mode in ("recompute", "swap"):
        CASES[f"{_policy}-kv_tight-{_mode}"] = case(
            colocated(_policy, memory_utilization=KV_TIGHT, batching={"preemption": _mode}), "preempt"
        )
# a prefix cache keeps a preempted request's blocks (re-admitted, it recomputes only those taken since); vLLM V1
# admits no one in an iteration whose decodes preempted
for _policy in ("continuous", "chunked", "mixed"):
    CASES[f"{_policy}-kv_tight-keep"] = case(
        colocated(_policy, memory_utilization=KV_TIGHT, prefix_cache=True), "preempt", "kept"
    )
CASES["chunked-kv_tight-long_prompts-keep"] = case(
    colocated(
        "chunked", rate=4.0, lengths=LONG_PROMPTS, memory_utilization=KV_TIGHT, prefix_cache=True,
        batching={"chunk_size": 512},
    ),
    "reject_kv", "preempt", "chunk", "kept",
)  # fmt: skip
# (without a prefix cache: a preempted request would take a first chunk back from the budget its preemption left)
CASES["chunked-kv_tight-long_prompts-hold"] = case(
    {
        **colocated(
            "chunked", rate=4.0, lengths=LONG_PROMPTS, memory_utilization=KV_TIGHT, stack="held",
            batching={"chunk_size": 512},
        ),
        "stacks": {"held": {"base": "ideal", "admit_after_preemption": False}},
    },
    "reject_kv", "preempt", "chunk", "held",
)  # fmt: skip
# decodes eat into a budget barely above the longest prompt: the first prompt is admitted all the same
CASES["mixed-tight_budget-kv_tight-recompute"] = case(
    colocated(
        "mixed", rate=8.0, lengths=TIGHT_BUDGET_LENGTHS, max_batched_tokens=2048, memory_utilization=KV_TIGHT
    ),
    "preempt", "over_budget",
)  # fmt: skip
CASES["chunked-2rep-least_kv-kv_tight-swap"] = case(
    colocated(
        "chunked", rate=20.0, replicas=2, scheduler="least_kv", memory_utilization=KV_TIGHT,
        batching={"preemption": "swap"},
    ),
    "preempt", "replicas", "chunk",
)  # fmt: skip
# rejections at arrival and queue-limit drops
CASES["continuous-limits"] = case(
    colocated(
        "continuous", rate=40.0, lengths=LIMIT_LENGTHS, models=SHORT_CONTEXT, model="llama-8b-4k",
        max_batched_tokens=2048, batching={"max_queue_requests": 2},
    ),
    "reject_context", "reject_tokens", "drop",
)  # fmt: skip
CASES["chunked-kv_tight-long_prompts"] = case(
    colocated("chunked", rate=4.0, lengths=LONG_PROMPTS, memory_utilization=KV_TIGHT, batching={"chunk_size": 512}),
    "reject_kv",
    "preempt",
    "chunk",
)
# SGLang's prefill-first chunking: at most chunk_size prompt tokens an iteration, prompts over the token budget cut
CASES["continuous-chunked-long_prompts"] = case(
    colocated(
        "continuous_chunked", rate=6.0, lengths=LONG_PROMPTS, max_batched_tokens=4096, batching={"chunk_size": 1024}
    ),
    "chunk",
)
CASES["continuous-chunked-2rep-kv_tight"] = case(
    colocated(
        "continuous_chunked", rate=20.0, replicas=2, scheduler="least_outstanding", memory_utilization=KV_TIGHT,
        batching={"chunk_size": 512},
    ),
    "preempt", "replicas", "chunk",
)  # fmt: skip
CASES["continuous-horizon"] = case(colocated("continuous", rate=30.0, serving={"horizon_s": 4.0}), "unfinished")
CASES["encoder-continuous"] = case(
    colocated("continuous", rate=300.0, lengths=ENCODER_LENGTHS, model="e5-base", batching={"max_batch_size": 64})
)
CASES["mixed-pp2"] = case(colocated("mixed", rate=12.0, parallel={"pp": 2}))
# disaggregated prefill -> decode
CASES["disagg-global-round_robin"] = case(
    disaggregated(
        {"policy": "chunked", "replicas": 2, "batching": {"chunk_size": 512}},
        {"policy": "continuous", "replicas": 2},
    ),
    "handoff",
)
CASES["disagg-global-least_outstanding"] = case(
    disaggregated(
        {"policy": "continuous", "replicas": 2, "scheduler": "least_outstanding"},
        {"policy": "mixed", "replicas": 3, "scheduler": "least_outstanding"},
    ),
    "handoff",
)
CASES["disagg-global-least_kv-kv_tight-swap"] = case(
    disaggregated(
        {"policy": "mixed", "replicas": 2},
        {
            "policy": "mixed", "replicas": 2, "scheduler": "least_kv", "memory_utilization": KV_TIGHT,
            "batching": {"preemption": "swap"},
        },
    ),
    "handoff", "preempt",
)  # fmt: skip
CASES["disagg-local-kv_tight-recompute"] = case(
    disaggregated(
        {"policy": "chunked", "replicas": 3},
        {"policy": "continuous", "replicas": 2, "memory_utilization": KV_TIGHT},
        pairing="local",
    ),
    "handoff", "preempt", "chunk",
)  # fmt: skip
# the prefill replica waits for KV blocks still held by requests whose KV is in flight on a slow link
CASES["disagg-prefill_kv_tight-slow_link"] = case(
    disaggregated(
        {"policy": "continuous", "memory_utilization": KV_TIGHT},
        {"policy": "continuous", "replicas": 2},
        kv_link={"bandwidth_bytes_per_s": 1e9, "latency_s": 1e-4},
        rate=6.0,
    ),
    "handoff",
)
# hand-offs (1/8 s: latency only), arrivals and iteration ends at the same instants; the prefill replicas wait
# for the KV blocks of requests in flight
CASES["disagg-ties"] = case(
    disaggregated(
        {"policy": "continuous", "replicas": 2, "fixed_step_time_s": 0.125, "memory_utilization": KV_TIGHT},
        {"policy": "mixed", "replicas": 2, "scheduler": "least_outstanding", "fixed_step_time_s": 0.0625},
        kv_link={"bandwidth_bytes_per_s": 1e300, "latency_s": 0.125},
        rate=32.0,
        arrival="deterministic",
    ),
    "handoff",
)
# (a static decode pool admits nothing while it decodes, so fast-forward is exact there)
CASES["disagg-shared_queue-static-fixed"] = case(
    disaggregated(
        {"policy": "static", "replicas": 2, "scheduler": "shared_queue", "fixed_step_time_s": 0.02},
        {"policy": "static", "replicas": 2, "scheduler": "shared_queue", "fixed_step_time_s": 0.008},
        rate=10.0,
    ),
    "handoff",
)


@functools.cache
def prepared(name: str):
    """(setup, draws, horizon, reference result) of a case, computed once per session."""
    c = CASES[name]
    resolved = resolve_scenario(c.scenario)
    sc = resolved.scenario
    setup = build_serving(resolved)
    draws = draw_workload(sc.workload, c.n, rng_for(c.seed))
    horizon = sc.serving.horizon_s
    return setup, draws, horizon, run_reference(setup, draws, horizon)


def run_kernel(setup, draws, horizon, fast_forward):
    # a fresh pool_int for every run: the loop advances its round-robin counters in place (new_state copies it too)
    fresh = dataclasses.replace(setup, pool_int=setup.pool_int.copy())
    return run_serving(fresh, draws, horizon, fast_forward)


TIMES = {  # reference field -> the run's Outcome field
    "admit": "admit_s",
    "prefill_end": "prefill_end_s",
    "first_token": "first_token_s",
    "done": "done_s",
    "transfer": "transfer_s",
}
COUNTS = {
    "status": "status",
    "reason": "reason",
    "gen": "generated_tokens",
    "preemptions": "preemptions",
    "entry_replica": "entry_replica",
    "decode_replica": "decode_replica",
}


def disagreements(ref, run, draws) -> list[str]:
    """One line per field that differs, naming the first request where it does."""
    out = []
    for name, field in TIMES.items():
        got, want = getattr(run, field), getattr(ref, name)
        both_nan = np.isnan(got) & np.isnan(want)
        close = np.isclose(got, want, rtol=1e-9, atol=0.0)
        bad = np.flatnonzero(~(both_nan | close))
        if bad.size:
            i = bad[0]
            out.append(
                f"{name}: {bad.size} requests differ; first #{i} (arrival {draws.arrival_s[i]!r}, prompt "
                f"{draws.prompt_tokens[i]}, output {run.output_tokens[i]}): kernel {got[i]!r}, reference {want[i]!r}"
            )
    for name, field in COUNTS.items():
        got, want = getattr(run, field), getattr(ref, name)
        bad = np.flatnonzero(got != want)
        if bad.size:
            i = bad[0]
            out.append(f"{name}: {bad.size} requests differ; first #{i}: kernel {got[i]}, reference {want[i]}")
    return out


def _params():
    out = []
    for name in CASES:
        for ff in (True, False):
            out.append(pytest.param(name, ff, id=f"{name}-{'ff' if ff else 'noff'}"))
    return out


@pytest.mark.parametrize("name,fast_forward", _params())
def test_kernel_matches_reference(name, fast_forward):
    setup, draws, horizon, ref = prepared(name)
    run = run_kernel(setup, draws, horizon, fast_forward)
    problems = disagreements(ref, run, draws)
    assert not problems, f"{name} (fast_forward={fast_forward}):\n" + "\n".join(problems)


@pytest.mark.parametrize("name", list(CASES))
def test_plain_serving_loop_equals_the_whole_loop(name):
    """The loop compiled without pipeline or prefix-cache code (what plain serving runs) gives the outcome of the
    loops compiled with either."""
    setup, draws, horizon, _ = prepared(name)
    outcomes = []
    for pipelines, cached in ((False, False), (True, False), (False, True)):
        state = new_state(
            setup.params, setup.pool_int, setup.pool_float, setup.replica_pool, draws.arrival_s,
            draws.prompt_tokens, draws.output_tokens, draws.route_u, horizon,
        )  # fmt: skip
        compiled_serve(pipelines, cached)(state)
        outcomes.append(Outcome.of(state, draws.arrival_s.size))
    for other in outcomes[1:]:
        assert_same_outcome(outcomes[0], other)
        assert outcomes[0].events == other.events


@pytest.mark.parametrize("name", list(CASES))
def test_case_exercises_its_features(name):
    """Each case reaches the regime it is there for, in the reference and in the kernel alike."""
    setup, draws, horizon, ref = prepared(name)
    expect = CASES[name].expect
    status, reason = ref.status, ref.reason
    done_share = 0.05 if "unfinished" in expect else 0.25
    assert (status == Status.DONE).sum() >= done_share * len(draws.arrival_s), "too few requests complete"
    checks = {
        "preempt": ref.preemptions.sum() > 0,
        "chunk": ref.partial_chunks > 0,
        "over_budget": ref.over_budget > 0,
        "kept": ref.kept_tokens > 0,
        "held": ref.held > 0,
        "replicas": np.unique(ref.entry_replica[ref.entry_replica >= 0]).size == setup.replica_pool.size,
        "reject_context": (reason == Reason.CONTEXT).any(),
        "reject_tokens": (reason == Reason.TOKENS).any(),
        "reject_kv": (reason == Reason.KV).any(),
        "drop": (status == Status.DROPPED).any(),
        "unfinished": np.isin(status, (Status.WAITING, Status.RUNNING)).any(),
        # hand-offs took time, and single-token requests finished on the prefill pool without one
        "handoff": (ref.transfer > 0).any()
        and ((ref.decode_replica >= 0) == (ref.transfer > 0))[status == Status.DONE].all()
        and ((ref.transfer == 0) & (status == Status.DONE)).any(),
    }
    for feature in expect:
        assert checks[feature], f"{name}: expected '{feature}' to happen"
    if "unfinished" not in expect:
        assert np.isin(status, (Status.DONE, Status.REJECTED, Status.DROPPED)).all()
    if not expect & {"reject_context", "reject_tokens", "reject_kv", "drop"}:
        assert (reason == Reason.NONE).all()
    if "preempt" not in expect:
        assert ref.preemptions.sum() == 0
    run = run_kernel(setup, draws, horizon, False)
    assert run.preemptions.sum() == ref.preemptions.sum()


# ---------------------------------------------------------------- the reference against hand-worked timelines


def _setup(mapping: dict):
    return build_serving(resolve_scenario(mapping))


def _draws(arrival, prompt, output) -> Draws:
    n = len(arrival)
    return Draws(
        np.array(arrival, dtype=float),
        np.zeros(n, dtype=np.int64),
        np.array(prompt, dtype=np.int64),
        np.array(output, dtype=np.int64),
        np.full((2, n), 0.5),
    )


def test_reference_static_by_hand():
    """Static batches: a batch runs to its last request before the next is admitted (max 2 here)."""
    setup = _setup({"engines": [engine("static", fixed_step_time_s=0.01, batching={"max_batch_size": 2})]})
    ref = run_reference(setup, _draws([0.0, 0.001, 0.002], [10, 10, 10], [3, 2, 1]))
    # r0 alone: prefill [0, .01], decodes to .03; then r1 + r2 prefill [.03, .04] (r2 done), r1 decodes to .05
    np.testing.assert_allclose(ref.admit, [0.0, 0.03, 0.03])
    np.testing.assert_allclose(ref.prefill_end, [0.01, 0.04, 0.04])
    np.testing.assert_allclose(ref.first_token, [0.01, 0.04, 0.04])
    np.testing.assert_allclose(ref.done, [0.03, 0.05, 0.04])


@pytest.mark.parametrize(
    "policy,done", [("continuous", [0.04, 0.03]), ("mixed", [0.03, 0.03]), ("chunked", [0.03, 0.03])]
)
def test_reference_prefill_priority_by_hand(policy, done):
    """Continuous pauses r0's decode for r1's prefill; mixed and chunked run them in one iteration."""
    setup = _setup({"engines": [engine(policy, fixed_step_time_s=0.01)]})
    ref = run_reference(setup, _draws([0.0, 0.005], [10, 10], [3, 2]))
    np.testing.assert_allclose(ref.admit, [0.0, 0.01])
    np.testing.assert_allclose(ref.first_token, [0.01, 0.02])
    np.testing.assert_allclose(ref.done, done)


def test_reference_kv_preemption_by_hand():
    """Two requests that cannot both grow: the newer one is recomputed (prompt + its emitted tokens)."""
    setup = _setup({"engines": [engine("continuous", fixed_step_time_s=0.01, memory_utilization=KV_TIGHT)]})
    # r0 and r1 each fill (about) half of the KV blocks with their prompt: their decodes need a block more each
    p0 = int(setup.pool_int[loop.PL_CAP_BLOCKS, 0]) // 2 * int(setup.pool_int[loop.PL_BLOCK, 0])
    ref = run_reference(setup, _draws([0.0, 0.001], [p0, p0], [3, 3]))
    assert ref.preemptions.tolist() == [0, 1]
    # [0,.01] r0 prefill; [.01,.02] r1 prefill; at .02 r1 is preempted (r0 decodes to .04);
    # r1 recomputes p0 + 1 tokens [.04, .05] (emitting its 2nd token), then decodes [.05, .06]
    np.testing.assert_allclose(ref.done, [0.04, 0.06])
    np.testing.assert_allclose(ref.first_token, [0.01, 0.02])


def _handoff_case():
    eng = [
        engine("continuous", name="prefill", fixed_step_time_s=0.01),
        engine("continuous", name="decode", fixed_step_time_s=0.007),
    ]
    setup = _setup({"engines": eng, "serving": {"prefill_engine": "prefill", "decode_engine": "decode"}})
    return setup, _draws([0.0, 0.001], [100, 100], [50, 50])


def test_reference_handoff_by_hand():
    """The first token is delivered when the KV hand-off ends; the decode replica admits at its next boundary."""
    setup, draws = _handoff_case()
    ref = run_reference(setup, draws)
    pf = setup.pool_float
    transfer = pf[loop.PF_LINK_LAT, 0] + 100 * pf[loop.PF_KV_BYTES, 0] / pf[loop.PF_LINK_BW, 0]
    np.testing.assert_allclose(ref.transfer, [transfer, transfer])
    np.testing.assert_allclose(ref.prefill_end, [0.01, 0.02])
    np.testing.assert_allclose(ref.first_token, [0.01 + transfer, 0.02 + transfer])
    # r0 decodes from its hand-off on (49 tokens of 7 ms); r1 joins at r0's first boundary after its hand-off
    join = 0.01 + transfer + 2 * 0.007  # r0's second decode boundary
    np.testing.assert_allclose(ref.done, [0.01 + transfer + 49 * 0.007, join + 49 * 0.007])


@pytest.mark.parametrize("fast_forward", [True, False])
def test_handoff_before_arrival_at_equal_times(fast_forward):
    """At one instant a hand-off completes before an arrival is queued: the freed prefill replica starts
    with the request it was waiting for, and the newcomer waits for the next iteration."""
    eng = [
        engine("continuous", name="prefill", fixed_step_time_s=0.125, memory_utilization=KV_TIGHT),
        engine("continuous", name="decode", fixed_step_time_s=0.0625),
    ]
    link = {"bandwidth_bytes_per_s": 1e300, "latency_s": 0.125}  # hand-offs take exactly 1/8 s
    serving = {"prefill_engine": "prefill", "decode_engine": "decode", "kv_link": link}
    setup = _setup({"engines": eng, "serving": serving})
    cap = int(setup.pool_int[loop.PL_CAP_BLOCKS, 0]) * int(setup.pool_int[loop.PL_BLOCK, 0])
    # r0 and r1 cannot share the prefill replica's KV; r1 and r2 can; r2 arrives as r0's hand-off completes
    draws = _draws([0.0, 0.0625, 0.25], [cap - 1000, 1500, 500], [5, 5, 5])
    ref = run_reference(setup, draws)
    np.testing.assert_array_equal(ref.admit, [0.0, 0.25, 0.375])
    np.testing.assert_array_equal(ref.prefill_end, [0.125, 0.375, 0.5])
    np.testing.assert_array_equal(ref.first_token, [0.25, 0.5, 0.625])
    run = run_kernel(setup, draws, None, fast_forward)
    assert not disagreements(ref, run, draws)


def test_kernel_fast_forward_sees_later_handoffs():
    """Minimal reproduction: r1's KV arrives during r0's fast-forwarded decode span on the decode replica."""
    setup, draws = _handoff_case()
    ref = run_reference(setup, draws)
    run = run_kernel(setup, draws, None, True)
    # (before the fix, fast-forward finished r1 at about 0.696 s, after r0's whole span, instead of 0.367 s)
    np.testing.assert_allclose(run.done_s, ref.done, rtol=1e-9)


def test_kernel_same_setup_twice_is_reproducible():
    setup, draws, horizon, _ = prepared("disagg-global-round_robin")
    setup = dataclasses.replace(setup, pool_int=setup.pool_int.copy())  # leave the cached setup alone
    first = run_serving(setup, draws, horizon, False)
    second = run_serving(setup, draws, horizon, False)
    np.testing.assert_array_equal(first.decode_replica, second.decode_replica)
    assert math.isclose(np.nansum(first.done_s), np.nansum(second.done_s))
