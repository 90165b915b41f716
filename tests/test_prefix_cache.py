"""Prefix caching and sessions (issue 22): the per-replica cache against a plain-Python reference and Che's
approximation, shared prefixes, multi-turn histories, trace hash ids and cache-aware routing, checked by hand."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

import hermes_fast as hf
from hermes_fast.catalog import preset
from hermes_fast.compile import SAMPLER_PROFILE_BYTES
from hermes_fast.config import ConfigError
from hermes_fast.kernels.layout import N_PARAMS
from hermes_fast.kernels.serving import new_state
from hermes_fast.kernels.serving import state as st
from hermes_fast.kernels.serving.cache_table import tb_next
from hermes_fast.kernels.serving.kv import release_kv
from hermes_fast.kernels.serving.prefix_cache import pc_acquire, pc_commit, pc_lookup, pc_trim
from hermes_fast.sessions import block_chains, chain_keys
from hermes_fast.workload import draw_workload

DATA = Path(__file__).parent / "data"
# the tight-KV cases below were sized on 80e9 bytes of H100 memory: the same bytes, whatever the figure the engine's
# stack (vllm, by default) budgets from
_H100_SHARE = 80e9 / preset("devices", "h100_sxm").runtime_memory_bytes
# the share that leaves Llama-3.1-8B the same KV under the vllm stack, whose memory profile reserves the peak of its
# sampler run (1024 x 128,256 x 38.8 bytes) where the others reserve 8192 tokens' activations
_VLLM_EXTRA = (1024 * 128_256 * SAMPLER_PROFILE_BYTES - 8192 * (4 * 4096 + 3 * 14336) * 2) / preset(
    "devices", "h100_sxm"
).runtime_memory_bytes


# ---------------------------------------------------------------- the cache kernels on a one-replica state


def _state(cap: int, block: int, requests: list[tuple[int, int, int, int]]):
    """A one-replica loop state whose requests' chains are ``requests`` (prefix key or -1, blocks wholly inside
    the prefix, stream, chain blocks), in a cache of ``cap`` blocks of ``block`` tokens; and each chain's keys."""
    n = len(requests)
    pi = np.zeros((st.POOL_INT_ROWS, 1), dtype=np.int64)
    pi[st.PL_CAP_BLOCKS], pi[st.PL_BLOCK], pi[st.PL_MAX_BATCH] = cap, block, 1
    pkey, pblocks, stream, lengths = (np.array(c, dtype=np.int64) for c in zip(*requests, strict=True))
    prompt, one = np.maximum(lengths * block, 1), np.ones(n, dtype=np.int64)
    chains, n_blocks, ids = block_chains(prompt, one, block, stream, pkey, pblocks * block)
    assert (n_blocks == lengths).all()
    cache = {
        "chains": chains,
        "lengths": lengths,
        "ids": ids,
        "block": block,
        "hash_block": 512,
        "slots": 1 << (2 * cap + 1).bit_length(),
        "pools": np.array([1]),
        "next_turn": None,
        "prev_turn": None,
    }
    S = new_state(
        np.zeros((1, N_PARAMS)), pi, np.ones((st.POOL_FLOAT_ROWS, 1)), np.array([0]), np.zeros(n), prompt,
        one, np.zeros((2, n)), cache=cache,
    )  # fmt: skip
    return S, [chain_keys(chains, ids, block, 512, i, int(m)) for i, m in enumerate(lengths)]


def _admit(S, i, need, k_fns=(pc_lookup, pc_acquire)):
    """What admission does: reuse the cached prefix, take ``need`` blocks in all (False: they do not fit)."""
    lookup, acquire = k_fns
    ri, rs = S.req_int, S.rep_int
    k, unref = lookup(S, 0, i, ri[st.RQ_PC_LEN, i])
    need = max(need, k)
    if need - (k - unref) > rs[st.RP_FREE_BLOCKS, 0]:
        return False, k
    rs[st.RP_FREE_BLOCKS, 0] -= need - (k - unref)
    ri[st.RQ_BLOCKS, i] = need
    acquire(S, 0, i, k)
    ri[st.RQ_KV, i] = k * S.pool_int[st.PL_BLOCK, 0]
    return True, k


class _Reference:
    """A plain-Python prefix cache: dict of reference counts, an OrderedDict as the LRU list, eager eviction."""

    def __init__(self, cap: int):
        self.ref: dict[int, int] = {}
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.free = cap  # blocks neither cached nor held
        self.private: dict[int, int] = {}
        self.held: dict[int, list[int]] = {}

    def admit(self, i, chain, need):
        k = 0
        while k < len(chain) and chain[k] in self.ref:
            k += 1
        need = max(need, k)
        unref = sum(self.ref[h] == 0 for h in chain[:k])
        if need - k > self.free + len(self.lru) - unref:
            return False, k
        for h in chain[:k]:
            if self.ref[h] == 0:
                del self.lru[h]
            self.ref[h] += 1
        while self.free < need - k:
            h, _ = self.lru.popitem(last=False)
            del self.ref[h]
            self.free += 1
        self.free -= need - k
        self.private[i], self.held[i] = need - k, list(chain[:k])
        return True, k

    def compute(self, i, chain, blocks):
        for j in range(len(self.held[i]), min(blocks, len(chain))):
            h = chain[j]
            if h in self.ref:  # another request cached it meanwhile: share it, free the own copy
                if self.ref[h] == 0:
                    del self.lru[h]
                self.ref[h] += 1
                self.free += 1
            else:
                self.ref[h] = 1
            self.private[i] -= 1
            self.held[i].append(h)

    def held_counts(self) -> dict[int, int]:
        """What a cache that lists blocks keeps per entry instead of reference counts: the holders whose held prefix
        ends there, plus its children (a block further along some chain) that are referenced."""
        held = dict.fromkeys(self.ref, 0)
        kids = set()
        for chain in self.held.values():
            if chain:
                held[chain[-1]] += 1
            kids.update(zip(chain[:-1], chain[1:], strict=True))
        for parent, _child in kids:
            held[parent] += 1
        return held

    def release(self, i, chain, blocks):
        self.compute(i, chain, blocks)
        self.free += self.private.pop(i)
        for h in reversed(self.held.pop(i)):  # the tail first: evicted before the prefix
            self.ref[h] -= 1
            if self.ref[h] == 0:
                self.lru[h] = None


def _table(S, chains) -> tuple[dict[int, int], list[int]]:
    """The kernel's entries as a cache that lists blocks would keep them: hash -> held count (``PN_HELD`` at a
    node's last block; inside a held node 1, its held next block), and the LRU list, least recently used first
    (each listed node's blocks from its end). Checks that every entry lies in its node, and every node's blocks
    in the table."""
    keys, nodes, nd = S.pc[0, :, st.PC_KEY], S.pc[0, :, st.PC_NODE], S.pcn[0]
    entries = {}
    for n in {int(m) for k, m in zip(keys, nodes, strict=True) if k != st.PC_EMPTY}:
        owner, start, end = nd[n, st.PN_OWNER], nd[n, st.PN_START], nd[n, st.PN_END]
        run = [int(h) for h in chains[owner][start:end]]
        assert all(nodes[np.flatnonzero(keys == h)[0]] == n for h in run)
        held = nd[n, st.PN_HELD]
        entries.update(dict.fromkeys(run[:-1], 1 if held > 0 else 0))
        entries[run[-1]] = int(held)
    assert len(entries) == int(np.sum(keys != st.PC_EMPTY))
    order, n = [], S.rep_int[st.RP_PC_HEAD, 0]
    while n >= 0:
        owner, start, end = nd[n, st.PN_OWNER], nd[n, st.PN_START], nd[n, st.PN_END]
        order.extend(int(h) for h in reversed(chains[owner][start:end]))
        n = tb_next(nd, n)
    return entries, order


def test_reference_counts_match_a_plain_python_cache_on_random_sequences():
    """Random admissions, prefills and releases of requests over shared prefixes in a small cache (evictions,
    probe collisions, blocks cached twice at once): the kernels' held counts (what the reference's holders imply,
    held exactly where its reference counts are > 0), LRU order and free count equal the eager reference's whenever
    looked at (the kernels evict lazily), a block in use is never evicted, and no block leaks."""
    rng = np.random.default_rng(7)
    cap, block = 12, 4
    requests = []  # the first blocks of one of 3 prefixes, then up to 2 of a stream's
    for _ in range(400):
        t, length = int(rng.integers(3)), int(rng.integers(0, 6))
        # streams repeat too; a key stands for every block before it (a hash chain), as the loop's keys do
        stream = 100 + int(rng.integers(6)) + 1000 * (6 * t + length)
        requests.append((t, length, stream, length + int(rng.integers(0, 3))))
    S, chains = _state(cap, block, requests)
    with np.errstate(over="ignore"):  # (the plain kernels' block keys wrap, as compiled)
        _random_sequence(S, chains, rng, cap, block)


def _random_sequence(S, chains, rng, cap, block):
    ref = _Reference(cap)
    ri, rs = S.req_int, S.rep_int
    live: list[int] = []
    nxt = 0
    for _ in range(3000):
        op = rng.integers(3)
        if op == 0 and nxt < len(chains):
            need = chains[nxt].size + int(rng.integers(0, 3))
            ok, k = _admit(S, nxt, need)
            assert (ok, k) == ref.admit(nxt, list(chains[nxt]), need)  # (the kernel bisects, the reference walks)
            if ok:
                live.append(nxt)
            nxt += 1
        elif op == 1 and live:
            i = live[rng.integers(len(live))]
            blocks = int(rng.integers(0, ri[st.RQ_BLOCKS, i] + 1))
            if blocks * block > ri[st.RQ_KV, i]:
                ri[st.RQ_KV, i] = blocks * block
                pc_commit(S, 0, i, blocks)
                ref.compute(i, list(chains[i]), blocks)
        elif op == 2 and live:
            i = live.pop(rng.integers(len(live)))
            ref.release(i, list(chains[i]), ri[st.RQ_KV, i] // block)
            release_kv(S, 0, i)
        if rng.random() > 0.3:  # (the kernels evict lazily: look now and then, as the loop does)
            continue
        pc_trim(S, 0)
        entries, order = _table(S, chains)
        assert entries == ref.held_counts()
        assert {h: c > 0 for h, c in entries.items()} == {h: c > 0 for h, c in ref.ref.items()}
        assert order == list(ref.lru)
        assert rs[st.RP_FREE_BLOCKS, 0] - rs[st.RP_PC_UNREF, 0] == ref.free
        assert rs[st.RP_PC_ENTRIES, 0] == len(entries)
        for i in live:  # a block in use stays cached, counted once per holder
            for h in chains[i][: ri[st.RQ_PC_REF, i]]:
                assert entries[int(h)] >= 1
        own = sum(int(ri[st.RQ_BLOCKS, i] - ri[st.RQ_PC_REF, i]) for i in live)
        assert rs[st.RP_FREE_BLOCKS, 0] - rs[st.RP_PC_UNREF, 0] + own + len(entries) == cap  # no block leaks
    for i in live:
        release_kv(S, 0, i)
    assert rs[st.RP_FREE_BLOCKS, 0] == cap
    assert all(c == 0 for c in _table(S, chains)[0].values())
    assert rs[st.RP_PC_UNREF, 0] == rs[st.RP_PC_ENTRIES, 0]


def _che_hit_rate(p: np.ndarray, c: int) -> float:
    """Che's approximation of an LRU cache of c items under independent requests with popularities p."""
    t = brentq(lambda x: np.sum(1.0 - np.exp(-p * x)) - c, 1e-9, 1e12)
    return float(np.sum(p * (1.0 - np.exp(-p * t))))


@pytest.mark.parametrize(("alpha", "c"), [(0.8, 100), (1.0, 50)])
def test_lru_hit_rate_over_zipf_prefixes_matches_che(alpha, c):
    """Independent requests for 1000 one-block prefixes of Zipf popularity through a cache of C blocks: the hit
    rate is Che's approximation within 2%."""
    n_prefix, n_req, warm = 1000, 120_000, 20_000
    rng = np.random.default_rng(3)
    w = np.arange(1, n_prefix + 1, dtype=np.float64) ** -alpha
    p = w / w.sum()
    pick = rng.choice(n_prefix, size=n_req, p=p)
    S, _ = _state(c, 16, [(int(k), 1, 0, 1) for k in pick])
    fns = (pc_lookup.jit, pc_acquire.jit)
    commit, release = pc_commit.jit, release_kv.jit
    hits = 0
    for i in range(n_req):
        ok, k = _admit(S, i, 1, fns)
        assert ok
        S.req_int[st.RQ_KV, i] = 16
        commit(S, 0, i, 1)
        release(S, 0, i)
        hits += k > 0 and i >= warm
    sim = hits / (n_req - warm)
    che = _che_hit_rate(p, c)
    print(f"Che alpha={alpha} C={c}: simulated {sim:.4f}, Che {che:.4f}")
    assert abs(sim - che) / che < 0.02, (sim, che)


# ---------------------------------------------------------------- workloads through the loop


def _scenario(classes, rate=2.0, **engine):
    e = {"model": "llama-3.1-8b", "device": "h100_sxm", **engine}
    return {"engines": [e], "workload": {"rate_per_s": rate, "classes": classes}}


def test_one_shared_system_prompt_every_request_after_the_first_hits():
    """A 1024-token system prompt (64 blocks of 16) before 64 user tokens, requests one at a time: the first
    prefills it all, every later one finds the 1024 prefix tokens cached; caching off finds none, and takes longer
    to the first token."""
    cls = [{"prompt_tokens": 64, "output_tokens": 32, "prefix": {"tokens": 1024}}]
    ds = hf.simulate(_scenario(cls), n_requests=40, seed=1, keep_requests=True, progress=False)
    hit = ds.request_prefix_hit_tokens.values[0]
    assert hit[0] == 0 and (hit[1:] == 1024).all()
    assert float(ds.prefix_hit_rate_request[0]) == pytest.approx(39 / 40)
    assert float(ds.prefix_hit_rate_token[0]) == pytest.approx(39 * 1024 / (40 * 1088))
    assert float(ds.prefix_saved_tokens.sum()) == 39 * 1024
    off = hf.simulate(_scenario(cls, prefix_cache=False), n_requests=40, seed=1, keep_requests=True, progress=False)
    assert (off.request_prefix_hit_tokens.values == 0).all()
    assert float(off.ttft_mean_s[0]) > float(ds.ttft_mean_s[0])


def test_turn_k_prompt_is_the_history():
    """Sessions of 3 turns, a 100-token prefix, 50 user tokens and 20-token answers: by hand, turn 1's prompt is
    100 + 50 = 150, turn 2's 150 + 20 + 50 = 220, turn 3's 220 + 20 + 50 = 290; later turns are linked to the
    previous one and wait for it (arrival inf); the chain of turn 2 starts with turn 1's."""
    cls = [{"prompt_tokens": 50, "output_tokens": 20, "prefix": {"tokens": 100}, "session": {"turns": 3}}]
    sc = hf.load_scenario(_scenario(cls))
    d = draw_workload(sc.workload, 9, hf.rng_for(1))
    for s in range(3):
        i = s  # first turns come first, in arrival order
        seen = []
        while i >= 0:
            seen.append(int(d.prompt_tokens[i]))
            assert d.stream[i] == s
            nxt = d.next_turn[i]
            if nxt >= 0:
                assert d.prev_turn[nxt] == i and math.isinf(d.arrival_s[nxt])
            i = nxt
        assert seen == [150, 220, 290]
    chains, n, ids = block_chains(d.prompt_tokens, d.output_tokens, 16, d.stream, d.prefix_key, d.prefix_tokens)
    t2 = d.next_turn[0]
    assert n[0] == (150 + 20 - 1) // 16
    first, second = chain_keys(chains, ids, 16, 512, 0, n[0]), chain_keys(chains, ids, 16, 512, t2, n[t2])
    assert (second[: n[0]] == first).all() and first[n[0] - 1] != second[n[0]]


def test_multi_turn_session_reuses_its_history():
    """Each later turn finds the previous turn's KV (prompt and answer, full blocks) cached: by hand, turn 2 of
    a 150-token first prompt with a 20-token answer finds (150 + 20 - 1) // 16 = 10 blocks = 160 tokens; turn 3
    finds (220 + 20 - 1) // 16 * 16 = 224. Its turns are sent a think time after the previous answer."""
    cls = [
        {
            "prompt_tokens": 50,
            "output_tokens": 20,
            "prefix": {"tokens": 100},
            "session": {"turns": 3, "think_time_s": 2.0},
        }
    ]
    ds = hf.simulate(_scenario(cls, rate=0.5), n_requests=30, seed=2, keep_requests=True, progress=False)
    turn = ds.request_turn.values[0]
    hit = ds.request_prefix_hit_tokens.values[0]
    prompt = ds.request_prompt_tokens.values[0]
    assert set(prompt[turn == 1]) == {220} and set(prompt[turn == 2]) == {290}
    assert set(hit[turn == 1]) == {160} and set(hit[turn == 2]) == {224}
    assert (hit[turn == 0][1:] == 96).all()  # later sessions share the prefix: 100 // 16 = 6 blocks
    sent = ds.request_sent_s.values[0]
    assert (np.diff(sent) >= 0).all()  # reported in the order the requests were sent
    again = hf.simulate(_scenario(cls, rate=0.5), n_requests=30, seed=2, keep_requests=True, progress=False)
    assert (again.request_completion_s.values == ds.request_completion_s.values).all()  # reproducible
    ttft = ds.request_first_token_s.values[0] - sent
    by_turn = ds.ttft_turn_mean_s.values[0]
    assert by_turn[:3] == pytest.approx([ttft[turn == k].mean() for k in range(3)])
    assert np.isnan(by_turn[3:]).all()
    off = hf.simulate(_scenario(cls, rate=0.5, prefix_cache=False), n_requests=30, seed=2, progress=False)
    assert (off.ttft_turn_mean_s.values[0][1:3] > by_turn[1:3]).all()  # later turns prefill their history


def test_mooncake_trace_hash_ids_give_the_hits_by_hand(tmp_path):
    """The Mooncake format as it is (timestamp ms, input_length, output_length, hash_ids of 512-token blocks),
    four requests a second apart: request 2 shares ids 1, 2 with request 1 (1024 tokens), request 3 shares
    1, 2, 3 (1536), request 4 nothing."""
    trace = {
        "process": "trace",
        "trace": {
            "path": str(DATA / "mooncake_sample.jsonl"),
            "time_column": "timestamp",
            "prompt_column": "input_length",
            "output_column": "output_length",
            "time_scale": 0.001,
            "hash_ids_column": "hash_ids",
        },
    }
    sc = _scenario([])
    sc["workload"] = {"arrival": trace}
    ds = hf.simulate(sc, n_requests=4, seed=1, keep_requests=True, progress=False)
    assert ds.request_prefix_hit_tokens.values[0].tolist() == [0, 1024, 1536, 0]


def test_unsplit_prompts_over_the_budget_run_when_the_cache_holds_the_rest(tmp_path):
    """Prompts not split, a 2048-token budget, a Mooncake-format trace a second apart: a 1636-token prompt runs and
    leaves its first three 512-token id blocks cached; a 2536-token prompt sharing those three finds 1536 tokens
    cached and runs (1000 left to prefill, within the budget), as TensorRT-LLM's LLM API lets such a request through
    with block reuse on and chunked prefill off (its scheduler subtracts the reusable prefix); a 2536-token prompt
    sharing nothing is rejected for the token budget, at admission. Caching off: both 2536-token prompts are
    rejected when they arrive, as before."""
    rows = [
        (0, 1636, [1, 2, 3, 4]),
        (1000, 2536, [1, 2, 3, 5, 6]),
        (2000, 2536, [7, 8, 9, 10, 11]),
        (3000, 1000, [12, 13]),
    ]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(f'{{"timestamp": {t}, "input_length": {n}, "output_length": 10, "hash_ids": {h}}}\n'
                            for t, n, h in rows))  # fmt: skip
    trace = {"path": str(path), "time_column": "timestamp", "prompt_column": "input_length", "time_scale": 0.001,
             "output_column": "output_length", "hash_ids_column": "hash_ids"}  # fmt: skip
    tokens = list(hf.simulate(_scenario([]), n_requests=1, progress=False).reason.values).index("token_budget")
    outcome = {}
    unsplit = {"stack": "ideal", "max_batched_tokens": 2048, "batching": {"policy": "continuous"}}
    for cache in (True, False):
        sc = _scenario([], prefix_cache=cache, **unsplit)
        sc["workload"] = {"arrival": {"process": "trace", "trace": trace}}
        ds = hf.simulate(sc, n_requests=4, seed=1, keep_requests=True, progress=False)
        done = ds.request_status.values[0] == int(st.STATUS_DONE)
        outcome[cache] = (done.tolist(), ds.request_prefix_hit_tokens.values[0].tolist())
        assert int(ds.rejected_by_reason.values.ravel()[tokens]) == (~done).sum()
    assert outcome[True] == ([True, True, False, True], [0, 1536, 0, 0])
    assert outcome[False] == ([True, False, False, True], [0, 0, 0, 0])
    # a class of 2536-token prompts (a shared 1536-token prefix): caching off, no request can ever run (one clear
    # error before the loop); on, one could if its prefix were cached, and none is (nothing shorter computes it):
    # every one is rejected, at admission
    cls = [{"prompt_tokens": 1000, "output_tokens": 10, "prefix": {"tokens": 1536}}]
    with pytest.raises(ConfigError, match="prompt_tokens"):
        hf.simulate(_scenario(cls, prefix_cache=False, **unsplit), n_requests=4, progress=False)
    ds = hf.simulate(_scenario(cls, prefix_cache=True, **unsplit), n_requests=4, seed=1, progress=False)
    assert float(ds.rejected_fraction[0]) == 1.0 and int(ds.rejected_by_reason.values.ravel()[tokens]) == 4


def test_prefix_affinity_sends_a_repeated_prefix_to_the_replica_holding_it():
    """Two replicas, two prefixes, one request at a time: with prefix_affinity (and kv_aware, whose load term is
    then 0) every request after a prefix's first goes to the replica that served its first (and finds it
    cached); round robin alternates and misses."""
    cls = [{"prompt_tokens": 32, "output_tokens": 16, "prefix": {"tokens": 512, "distinct": 2}}]
    for sched in ("prefix_affinity", "kv_aware", "round_robin"):
        sc = _scenario(cls, rate=1.0, replicas=2, scheduler=sched)
        sc["workload"]["arrival"] = {"process": "deterministic"}  # a second apart: each done before the next
        ds = hf.simulate(sc, n_requests=40, seed=3, keep_requests=True, progress=False)
        rep = ds.request_replica.values[0]
        hit = ds.request_prefix_hit_tokens.values[0]
        d = draw_workload(hf.load_scenario(sc).workload, 40, hf.rng_for(3, 0, 0))
        for key in (0, 1):
            idx = np.flatnonzero(d.prefix_key == key)
            if sched != "round_robin":  # (kv_aware: an idle system holds no blocks in use, so overlap decides)
                assert (rep[idx] == rep[idx[0]]).all()
                assert (hit[idx[1:]] == 512).all()
        if sched == "round_robin":
            assert (hit == 0).sum() > 2


@pytest.mark.parametrize("sched", ["kv_aware", "prefix_affinity"])
def test_cache_aware_routing_fast_forward_equals_per_iteration(sched):
    """Routing by cache contents on 3 busy replicas (shared prefixes, sessions, evictions): fast-forwarded spans
    give the per-iteration loop's outcome. (A span holds its future iterations' KV: read as in use, it made
    kv_aware's load, and a lookup's evictions, depend on how far spans were planned.)"""
    from outcomes import assert_same_outcome

    from hermes_fast.resolve import resolve_scenario
    from hermes_fast.simulate import build_serving, run_serving

    cls = {
        "prompt_tokens": {"dist": "lognormal", "mean": 100, "cv": 1.0, "max": 1000},
        "output_tokens": {"dist": "lognormal", "mean": 150, "cv": 1.0, "max": 1000},
        "prefix": {"distinct": 40, "zipf_alpha": 0.8, "tokens": {"dist": "uniform", "min": 1000, "max": 3000}},
        "session": {"turns": {"dist": "uniform", "min": 1, "max": 4}, "think_time_s": 1.0},
    }
    engine = {"replicas": 3, "scheduler": sched, "memory_utilization": _H100_SHARE * 0.24 + _VLLM_EXTRA}
    resolved = resolve_scenario(hf.load_scenario(_scenario([cls], rate=12.0, **engine)))
    setup = build_serving(resolved)
    draws = draw_workload(resolved.scenario.workload, 1500, hf.rng_for(2))
    a = run_serving(setup, draws, fast_forward=True)
    b = run_serving(setup, draws, fast_forward=False)
    assert_same_outcome(a, b)
    assert a.prefix_evictions.sum() > 0 and a.events < b.events


def test_session_sticky_keeps_a_session_on_its_replica():
    """Three replicas, sessions of 4 turns: session_sticky serves every turn of a session on one replica (the
    first turn's, least outstanding); round robin spreads them."""
    cls = [{"prompt_tokens": 32, "output_tokens": 16, "session": {"turns": 4, "think_time_s": 1.0}}]
    spread = 0
    for sched in ("session_sticky", "round_robin"):
        sc = _scenario(cls, rate=1.0, replicas=3, scheduler=sched)
        ds = hf.simulate(sc, n_requests=40, seed=4, keep_requests=True, progress=False)
        rep, session = ds.request_replica.values[0], ds.request_session.values[0]
        for s in np.unique(session):
            used = set(rep[session == s].tolist())
            if sched == "session_sticky":
                assert len(used) == 1
            spread += len(used) > 1
    assert spread > 0


def test_no_prefix_spec_leaves_the_run_unchanged():
    """Without prefixes or sessions the prefix cache has nothing to do: caching on or off give identical runs."""
    on = hf.simulate(_scenario([{"prompt_tokens": 300, "output_tokens": 30}], rate=20), n_requests=200, seed=5)
    off = hf.simulate(
        _scenario([{"prompt_tokens": 300, "output_tokens": 30}], rate=20, prefix_cache=False), n_requests=200, seed=5
    )
    assert float(on.ttft_mean_s[0]) == float(off.ttft_mean_s[0]) and float(on.e2e_mean_s[0]) == float(off.e2e_mean_s[0])
    assert "prefix_hit_rate_token" not in on


def test_prefix_and_session_config_errors():
    stage = [{"kind": "prefill", "engine": "engine"}, {"kind": "decode", "engine": "engine"}]
    with pytest.raises(ConfigError, match="prefix"):
        hf.load_scenario(_scenario([{"prefix": {"tokens": 10}, "pipeline": stage}]))
    sc = _scenario([{"session": {"turns": 2}}])
    sc["workload"]["arrival"] = {"process": "closed", "concurrency": 4}
    with pytest.raises(ConfigError, match="arrival.process"):
        hf.simulate(sc, n_requests=10)
    tier = {"prefix_cache_tier": "host_dram_ddr5", "prefix_cache_tier_shared_by": 3, "replicas": 2}
    with pytest.raises(ConfigError, match=r"engines\[0\]\.prefix_cache_tier_shared_by.*at most replicas \(2\)"):
        hf.simulate(_scenario([{"prefix": {"tokens": 10}}], **tier), n_requests=10)


def test_sessions_give_every_block_back():
    """Sessions with think times, shared prefixes and queueing: every turn is served once and completes, and at the
    end every KV block is free again (cached ones included), none resident, every cache entry unreferenced."""
    from hermes_fast.resolve import resolve_scenario
    from hermes_fast.simulate import build_serving, simulate_replicate

    cls = {
        "prompt_tokens": {"dist": "lognormal", "mean": 100, "cv": 1.0, "max": 1000},
        "output_tokens": {"dist": "lognormal", "mean": 60, "cv": 1.0, "max": 600},
        "prefix": {"distinct": 4, "tokens": 300},
        "session": {"turns": {"dist": "uniform", "min": 1, "max": 6}, "think_time_s": 0.5, "think_time_cv": 1.0},
    }
    sc = hf.load_scenario(_scenario([cls], rate=20.0, replicas=2, scheduler="kv_aware"))
    setup = build_serving(resolve_scenario(sc))
    _summary, draws, run = simulate_replicate(sc, setup, None, 600, hf.rng_for(9))
    assert (run.status == st.STATUS_DONE).all()
    assert (run.generated_tokens == run.output_tokens).all()
    assert (run.free_blocks == setup.pools[0].kv_blocks).all()
    assert (run.kv_tokens == 0).all()
    assert run.prefix_entries.sum() > 0
    assert (np.diff(run.arrival_s) >= 0).all() and (run.arrival_s == run.sent_s).all()


def test_chain_keys_plain_and_compiled_agree():
    """The block-key kernels' plain-Python twins and compiled ones give the same keys; equal prefixes, streams and
    trace ids give equal keys, different ones different keys; a stream's key is splitmix64 chained, by numpy."""
    from hermes_fast.kernels.serving.block_keys import chain_rows, write_chain_keys
    from hermes_fast.sessions import _splitmix

    prompt, output = np.array([64, 64, 64, 40]), np.array([1, 1, 1, 1])
    stream, pkey, ptok = np.array([0, 1, 2, 3]), np.array([7, 7, -1, -1]), np.array([48, 48, 0, 0])
    h_off, ids = np.array([0, 0, 0, 0, 1]), np.array([11])  # request 3: one trace id
    outs = []
    for rows, keys in ((chain_rows, write_chain_keys), (chain_rows.jit, write_chain_keys.jit)):
        chains, lengths = np.zeros((4, st.CHAIN_ROWS), dtype=np.int64), np.zeros(4, dtype=np.int64)
        out = np.zeros((4, 4), dtype=np.int64)
        with np.errstate(over="ignore"):
            rows(prompt, output, 16, stream, pkey, ptok, h_off, 64, chains, lengths)
            for i in range(4):
                keys(chains, ids, 16, 64, i, out[i])
        assert lengths.tolist() == [4, 4, 4, 2]
        outs.append(out)
    assert (outs[0] == outs[1]).all()
    k = outs[1]
    assert (k[0, :3] == k[1, :3]).all() and k[0, 3] != k[1, 3]  # the same 48-token prefix: 3 blocks; own streams
    assert len(set(k[2].tolist()) | set(k[0].tolist())) == 8  # request 2: its own stream
    assert k[3, 0] != k[2, 0] and (k != 0).all()  # request 3: its trace id
    with np.errstate(over="ignore"):  # stream 2's block 1, from the module's numpy splitmix
        by_hand = _splitmix(_splitmix(np.uint64(2 * 8 + 2)) ^ np.uint64(1))
    assert k[2, 1] == np.array(by_hand).view(np.int64)


def test_estimate_prefix_hit_is_the_loops_ttft_with_that_prefix_cached():
    """One formula per quantity: estimate's TTFT at prefix_hit = 1024 / 1088 equals the simulated TTFT of a
    1088-token prompt whose 1024-token prefix another request left cached (kernels alone, an idle engine); at
    prefix_hit 0 it is the full prefill, longer."""
    cls = [{"prompt_tokens": 64, "output_tokens": 32, "prefix": {"tokens": 1024}}]
    sc = _scenario(cls, rate=1.0, stack="ideal", prefix_cache=True)
    sc["workload"]["arrival"] = {"process": "deterministic"}
    ds = hf.simulate(sc, n_requests=2, seed=1, keep_requests=True, progress=False)
    assert ds.request_prefix_hit_tokens.values[0].tolist() == [0, 1024]
    ttft = float(ds.request_first_token_s[0, 1] - ds.request_sent_s[0, 1])
    est = {"engines": sc["engines"], "workload": {"prompt_tokens": 1088, "output_tokens": 32}}
    grid = {"prefix_hit": [0.0, 1024 / 1088]}
    e = hf.estimate(est, grid=grid).ttft_s.values[0]
    assert e[1] == pytest.approx(ttft, rel=1e-9)
    assert e[0] > 1.5 * e[1]


def _session_setup(extra: dict | None = None, **engine):
    from hermes_fast.resolve import resolve_scenario
    from hermes_fast.simulate import build_serving

    cls = {
        "prompt_tokens": {"dist": "lognormal", "mean": 80, "cv": 1.0, "max": 600},
        "output_tokens": {"dist": "lognormal", "mean": 40, "cv": 1.0, "max": 300},
        "prefix": {"distinct": 3, "tokens": 200},
        "session": {"turns": 3, "think_time_s": 0.2},
    }
    sc = _scenario([cls], rate=10.0, **engine)
    sc.update(extra or {})
    sc = hf.load_scenario(sc)
    return sc, build_serving(resolve_scenario(sc))


def test_plain_and_compiled_loops_agree_with_prefix_caching():
    """The loop's plain-Python twin and the compiled one give the same times and hits with prefixes, sessions and
    prefix_affinity over two replicas."""
    from hermes_fast.simulate import run_serving

    sc, setup = _session_setup(replicas=2, scheduler="prefix_affinity")
    draws = draw_workload(sc.workload, 60, hf.rng_for(4))
    fast, slow = run_serving(setup, draws), run_serving(setup, draws, jit=False)
    assert (fast.prefix_hit_tokens == slow.prefix_hit_tokens).all() and fast.prefix_hit_tokens.sum() > 0
    np.testing.assert_array_equal(fast.done_s, slow.done_s)
    np.testing.assert_array_equal(fast.first_token_s, slow.first_token_s)


def test_disaggregated_prefill_pool_caches_and_decode_keeps_sessions():
    """Disaggregated serving: the prefill pool caches (hits), the decode pool (session_sticky) keeps each session
    on one decode replica; every turn completes and every block comes back on both pools."""
    from hermes_fast.simulate import simulate_replicate

    base = {"model": "llama-3.1-8b", "device": "h100_sxm"}
    extra = {
        "engines": [
            {**base, "name": "pre", "replicas": 2, "scheduler": "prefix_affinity"},
            {**base, "name": "dec", "replicas": 2, "scheduler": "session_sticky"},
        ],
        "serving": {"prefill_engine": "pre", "decode_engine": "dec"},
    }
    sc, setup = _session_setup(extra)
    _s, draws, run = simulate_replicate(sc, setup, None, 120, hf.rng_for(5))
    assert (run.status == st.STATUS_DONE).all()
    assert run.prefix_hit_tokens.sum() > 0
    for k, pool in enumerate(setup.pools):
        reps = setup.replica_pool == k
        assert (run.free_blocks[reps] == pool.kv_blocks).all()
    assert run.prefix_entries[setup.replica_pool == 1].sum() == 0  # the decode pool caches nothing
    for s in np.unique(draws.stream):
        assert len(set(run.decode_replica[draws.stream == s].tolist())) == 1


def test_shared_prefix_kv_counts_once():
    """A 6000-token prefix shared by requests arriving together, on an engine whose KV holds about 16,000
    tokens: counted per request the resident KV would exceed the capacity several times over; counted once per
    physical block, the KV occupancy stays within 1 and every block comes back at the end."""
    from hermes_fast.resolve import resolve_scenario
    from hermes_fast.simulate import build_serving, simulate_replicate

    cls = [{"prompt_tokens": 32, "output_tokens": 200, "prefix": {"tokens": 6000}}]
    sc = _scenario(cls, rate=200.0, memory_utilization=_H100_SHARE * 0.24 + _VLLM_EXTRA)
    sc = hf.load_scenario(sc)
    setup = build_serving(resolve_scenario(sc))
    cap = setup.pools[0].kv_capacity_tokens
    assert 12_000 < cap < 20_000
    summary, _d, run = simulate_replicate(sc, setup, None, 40, hf.rng_for(6))
    assert (run.status == st.STATUS_DONE).all()
    assert float(summary["prefix_hit_rate_request"]) > 0.5
    assert 0 < float(summary["kv_occupancy"][0]) <= 1.0
    assert run.kv_tokens[0] == 0 and run.free_blocks[0] == setup.pools[0].kv_blocks


@pytest.mark.parametrize(
    "engine",
    [
        {"stack": "sglang"},
        {"stack": "trtllm"},
        {"batching": {"preemption": "swap"}},
        {"stack": "ideal", "prefix_cache": True, "batching": {"policy": "static", "max_batch_size": 16}},
        {"stack": "ideal", "prefix_cache": True, "batching": {"policy": "mixed"}},
        {"replicas": 2, "scheduler": "least_kv"},
        {"replicas": 2, "scheduler": "shared_queue"},
    ],
    ids=["sglang", "trtllm", "swap", "static", "mixed", "least_kv", "shared_queue"],
)
def test_every_block_comes_back_under_pressure(engine):
    """Sessions over shared prefixes on a small KV (preemptions by recompute or swap, every admission policy and
    batching policy, shared queues): every turn completes, and at the end every block is free and none resident."""
    from hermes_fast.resolve import resolve_scenario
    from hermes_fast.simulate import build_serving, simulate_replicate

    cls = {
        "prompt_tokens": {"dist": "lognormal", "mean": 300, "cv": 1.0, "max": 3000},
        "output_tokens": {"dist": "lognormal", "mean": 200, "cv": 1.0, "max": 2000},
        "prefix": {"distinct": 5, "tokens": 2000},
        "session": {"turns": 3, "think_time_s": 0.5},
    }
    sc = hf.load_scenario(_scenario([cls], rate=40.0, memory_utilization=_H100_SHARE * 0.3, **engine))
    setup = build_serving(resolve_scenario(sc))
    summary, _d, run = simulate_replicate(sc, setup, None, 600, hf.rng_for(1))
    assert (run.status == st.STATUS_DONE).all()
    assert (run.free_blocks == setup.pools[0].kv_blocks).all() and (run.kv_tokens == 0).all()
    assert summary["prefix_hit_rate_token"] > 0.5 and 0 < summary["kv_occupancy"][0] <= 1.0


def test_spill_and_load_back_over_the_tier_timed_exactly(tmp_path):
    """A 4096-token prompt (8 Mooncake hash ids) is cached, then five 4096-token prompts of their own push it out of
    a 16,500-token KV into host DRAM; the same 4096 tokens plus 512 new ones then find it there: their TTFT is the
    load over the slower of DRAM and the host link (latencies added) of the tokens the tier held, plus the prefill of
    512 tokens attending to 4096 (estimate's TTFT at that hit share). Alone on the replica, by hand."""
    import json

    rows = [{"t": 0, "n": 4096, "ids": list(range(1, 9))}]
    rows += [{"t": 2000 * k, "n": 4096, "ids": list(range(100 * k, 100 * k + 8))} for k in range(1, 6)]
    rows += [{"t": 12000, "n": 4608, "ids": [*range(1, 9), 999]}]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps({**r, "out": 2}) + "\n" for r in rows))
    columns = {"time_column": "t", "prompt_column": "n", "output_column": "out", "hash_ids_column": "ids"}
    engine = {"stack": "ideal", "prefix_cache": True, "memory_utilization": _H100_SHARE * 0.24}
    sc = _scenario([], **engine, prefix_cache_tier="host_dram_ddr5")
    sc["workload"] = {"arrival": {"process": "trace", "trace": {"path": str(path), "time_scale": 0.001, **columns}}}
    ds = hf.simulate(sc, n_requests=7, seed=1, keep_requests=True, progress=False).isel(replicate=0)
    assert int(ds.request_prefix_hit_tokens[6]) == 4096
    loaded = float(ds.prefix_tier_tokens[0])
    assert 0 < loaded <= 4096 and float(ds.prefix_tier_spills[0]) >= 256
    ttft = float(ds.request_first_token_s[6] - ds.request_sent_s[6])
    cat = hf.Catalog()
    tier, host = cat.memory_tier("host_dram_ddr5"), cat.device("h100_sxm").host_link
    est_sc = {"engines": _scenario([], **engine)["engines"], "workload": {"prompt_tokens": 4608, "output_tokens": 2}}
    est = hf.estimate(est_sc, grid={"prefix_hit": [4096 / 4608]}).isel(engine=0, prefix_hit=0)
    bw = min(tier.bandwidth_bytes_per_s, host.bandwidth_bytes_per_s)
    load = tier.latency_s + host.latency_s + loaded * float(est.kv_bytes_per_token) / bw
    assert ttft == pytest.approx(load + float(est.ttft_s), rel=1e-9)
    off = hf.simulate({**sc, "engines": _scenario([], **engine)["engines"]}, n_requests=7, seed=1, keep_requests=True)
    assert float(off.request_first_token_s[0, 6] - off.request_sent_s[0, 6]) > ttft  # no tier: a longer prefill


@pytest.mark.parametrize("shared_by", [1, 2])
def test_replicas_sharing_a_tier_instance_load_first_come_first_served(tmp_path, shared_by):
    """Two replicas (round robin) each push a 4096-token prompt of their own into an NVMe tier, then both send it
    again with 512 new tokens at the same instant. Each replica's own tier: the two loads take the same time. One
    drive for both (``prefix_cache_tier_shared_by: 2``): the second waits while the drive serves the first, exactly
    the first's bytes at the drive's bandwidth, and the pool reports that wait. By hand."""
    import json

    rows = [{"t": 0, "n": 4096, "ids": list(range(1, 9))}, {"t": 0, "n": 4096, "ids": list(range(11, 19))}]
    for k in range(1, 6):  # fillers, one to each replica
        rows += [{"t": 2000 * k, "n": 4096, "ids": list(range(100 * k + j, 100 * k + j + 8))} for j in (0, 50)]
    rows += [{"t": 12000, "n": 4608, "ids": [*range(1, 9), 999]}, {"t": 12000, "n": 4608, "ids": [*range(11, 19), 998]}]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps({**r, "out": 2}) + "\n" for r in rows))
    columns = {"time_column": "t", "prompt_column": "n", "output_column": "out", "hash_ids_column": "ids"}
    engine = {"stack": "ideal", "prefix_cache": True, "memory_utilization": _H100_SHARE * 0.24, "replicas": 2}
    sc = _scenario([], **engine, prefix_cache_tier="nvme_ssd_gen5", prefix_cache_tier_shared_by=shared_by)
    sc["workload"] = {"arrival": {"process": "trace", "trace": {"path": str(path), "time_scale": 0.001, **columns}}}
    ds = hf.simulate(sc, n_requests=len(rows), seed=1, keep_requests=True, progress=False).isel(replicate=0)
    a, b = len(rows) - 2, len(rows) - 1
    assert ds.request_replica.values[a] == 0 and ds.request_replica.values[b] == 1
    assert int(ds.request_prefix_hit_tokens[a]) == int(ds.request_prefix_hit_tokens[b]) == 4096
    ttft = (ds.request_first_token_s - ds.request_sent_s).values
    loaded = float(ds.prefix_tier_tokens[0]) / 2  # (the same run on each replica)
    est = hf.estimate({"engines": sc["engines"], "workload": {"prompt_tokens": 4096, "output_tokens": 2}})
    drive = hf.Catalog().memory_tier("nvme_ssd_gen5").bandwidth_bytes_per_s  # (slower than the host link)
    wait = loaded * float(est.kv_bytes_per_token.isel(engine=0)) / drive if shared_by == 2 else 0.0
    assert ttft[b] - ttft[a] == pytest.approx(wait, rel=1e-9, abs=1e-12)
    assert float(ds.prefix_tier_wait_s[0]) == pytest.approx(wait, rel=1e-9, abs=1e-12)
    if shared_by == 2:
        assert wait > 0.01  # (a 4096-token prefix of Llama-3.1-8B: ~0.5 GB at 13 GB/s)


def test_prefix_affinity_counts_the_blocks_a_replicas_tier_holds(tmp_path):
    """Two replicas with a host-DRAM tier: a 4096-token prompt and five fillers of their own go to replica 0 (ties
    go to the lowest index), pushing the prompt's blocks out of its device KV into its tier; a long answer then
    keeps replica 0 busy. The same prompt again: no device holds it, replica 0's tier does, so affinity sends it
    there (and it loads them back), where the least loaded replica would be 1; without a tier it goes to 1."""
    import json

    rows = [{"t": 0, "n": 4096, "ids": list(range(1, 9)), "out": 2}]
    rows += [{"t": 2000 * k, "n": 4096, "ids": list(range(100 * k, 100 * k + 8)), "out": 2} for k in range(1, 6)]
    rows += [{"t": 11900, "n": 64, "ids": [777], "out": 3000}]  # (replica 0 busy from here on)
    rows += [{"t": 12000, "n": 4608, "ids": [*range(1, 9), 999], "out": 2}]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {"time_column": "t", "prompt_column": "n", "output_column": "out", "hash_ids_column": "ids"}
    engine = {"stack": "ideal", "prefix_cache": True, "memory_utilization": _H100_SHARE * 0.24, "replicas": 2}
    engine["scheduler"] = "prefix_affinity"
    arrival = {"arrival": {"process": "trace", "trace": {"path": str(path), "time_scale": 0.001, **columns}}}
    replica = {}
    for tier in ("host_dram_ddr5", None):
        sc = _scenario([], **engine, prefix_cache_tier=tier)
        sc["workload"] = arrival
        ds = hf.simulate(sc, n_requests=len(rows), seed=1, keep_requests=True, progress=False).isel(replicate=0)
        assert (ds.request_replica.values[:7] == 0).all()
        replica[tier] = int(ds.request_replica.values[7])
        hit = int(ds.request_prefix_hit_tokens[7])
        assert hit == (4096 if tier else 0)  # (loaded back from the tier, or prefilled on replica 1)
    assert replica == {"host_dram_ddr5": 0, None: 1}
