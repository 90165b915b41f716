"""Engine and search pools as the serving loop sees them: compiled engines, roles and the pool arrays.

``build_serving`` turns a scenario's serving section into pools (one for colocated serving, a prefill
and a decode pool for disaggregated serving); :mod:`hermes_fast.pipeline` builds pools for pipelines;
``pool_arrays`` fills the loop's per-pool arrays from either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .compile import CompiledEngine, compile_engine
from .config.base import ConfigError
from .config.hardware import Device, Link, MemoryTier
from .config.scenario import Engine, Scenario
from .config.serving import SCHEDULERS
from .config.stack import Stack
from .kernels import layout as L
from .kernels.serving import state as loop
from .length_draws import length_min
from .resolve import ResolvedScenario, memory_utilization
from .workload import classes_of, shares_blocks

__all__ = [
    "Pool",
    "ServingSetup",
    "engine_pool",
    "build_serving",
    "pool_arrays",
    "reject_reason",
    "job_rejection",
    "class_length_mins",
    "why_rejected",
    "never_runs",
]

_POLICY_CODES = {"static": loop.POLICY_STATIC, "continuous": loop.POLICY_CONTINUOUS, "chunked": loop.POLICY_CHUNKED}
_POLICY_CODES |= {"mixed": loop.POLICY_MIXED, "continuous_chunked": loop.POLICY_CONTINUOUS_CHUNKED}
_SCHED_CODES = dict(zip(SCHEDULERS, range(len(SCHEDULERS)), strict=True))
_ADMISSION_CODES = {
    "on_demand": loop.ADMIT_ON_DEMAND,
    "reserve_all": loop.ADMIT_RESERVE_ALL,
    "new_token_ratio": loop.ADMIT_RATIO,
}


@dataclass(frozen=True)
class Pool:
    """One pool of identical replicas, as the loop sees it, plus what the summary needs.

    Engine pools run a model (``engine``/``compiled`` set); search pools run a ``retrieve`` stage's
    vector searches (``search`` holds their cost figures)."""

    name: str  # the engine's (or the retrieve stage's) name
    role: str  # "colocated", "prefill", "decode" or "search"
    device: Device
    devices: int  # devices per replica
    replicas: int
    kv_blocks: int  # paged-KV blocks per replica
    engine: Engine | None = None
    compiled: CompiledEngine | None = None
    search: dict | None = None  # flop_per_query, bytes_fixed, bytes_per_query, flops_eff, bw_eff, overhead_s
    max_batch_size: int = 0  # search pools
    max_wait_s: float = 0.0  # search pools
    next_pool: int = -1  # prefill pools: the decode pool they hand off to
    link_resource: int = -1  # prefill pools: shared resource the hand-off crosses (-1: none)
    memory_resource: int = -1  # search pools: shared resource (host memory) the index is read through
    stack: Stack | None = None  # engine pools: the serving stack (admission, front end)
    tier: MemoryTier | None = None  # engine pools: the prefix cache's second-level tier (None: none)
    tier_blocks: int = 0  # KV blocks that tier holds per replica

    @property
    def kv_capacity_tokens(self) -> int:
        """KV tokens one replica holds: its blocks times their size (search pools hold no KV: 1-token blocks)."""
        return self.kv_blocks * (self.engine.batching.block_size_tokens if self.engine is not None else 1)


@dataclass(frozen=True)
class ServingSetup:
    """Pool arrays for :func:`hermes_fast.kernels.serving.new_state`, and the pools they came from."""

    pools: tuple[Pool, ...]
    params: np.ndarray  # float64[n_pools, N_PARAMS]
    pool_int: np.ndarray  # int64[POOL_INT_ROWS, n_pools]
    pool_float: np.ndarray  # float64[POOL_FLOAT_ROWS, n_pools]
    replica_pool: np.ndarray  # int64[R]

    @property
    def generates(self) -> bool:
        return all(p.compiled.generates for p in self.pools if p.compiled is not None)


def _engine_index(sc: Scenario, name: str | None) -> int:
    if name is None:
        return 0
    return next(i for i, e in enumerate(sc.engines) if e.name == name)


_MAX_BLOCKS = 1 << 40  # KV blocks per replica beyond which memory is unlimited (and the loop's int64 safe)


def engine_pool(resolved: ResolvedScenario, idx: int, role: str) -> Pool:
    """Compile engine ``idx`` of the scenario as a pool; ConfigError for what cannot serve."""
    own = resolved.engines[idx]
    e, model, device = own.engine, own.model, own.device
    path = f"engines[{idx}]"
    mem, budget = memory_utilization(e, own.stack, device, path), e.max_batched_tokens
    batch = e.batching.max_batch_size
    ce = compile_engine(model, device, e.parallel, e.dtypes, mem, budget, path, stack=own.stack, max_batch_size=batch)
    if not ce.weights_fit:
        raise ConfigError(
            f"{path}.parallel",
            {"tp": e.parallel.tp, "pp": e.parallel.pp},
            f"a layout whose weights ({ce.weights_bytes / 1e9:.1f} GB per device) and activations fit in "
            f"{ce.usable_bytes / 1e9:.1f} GB ({device.name} x memory_utilization {mem:g})",
        )
    # linear-attention states: one per batch slot, set aside before the KV blocks (0 bytes without)
    kv_tokens = ce.kv_tokens_beside_states(e.batching.max_batch_size)
    cap_blocks = int(min(kv_tokens // e.batching.block_size_tokens, _MAX_BLOCKS))
    if cap_blocks < 1:
        states = (
            f" beside {e.batching.max_batch_size} linear-attention states ({ce.state_bytes_per_seq / 1e6:.1f} MB "
            "each, one per batch slot: lower batching.max_batch_size)"
            if ce.state_bytes_per_seq
            else ""
        )
        raise ConfigError(f"{path}.memory_utilization", mem, f"room for at least one KV block{states}")
    if role == "decode" and not ce.generates:
        raise ConfigError(f"{path}.model", e.model, "a generating (decoder) model for a decode engine")
    if e.batching.preemption == "swap" and device.host_link is None:
        raise ConfigError(f"{path}.batching.preemption", "swap", f"recompute: {device.name} has no host_link")
    tier, tier_blocks = None, 0
    if e.prefix_cache_tier is not None and e.prefix_cache and role != "decode":
        tier = resolved.memory_tiers[e.prefix_cache_tier]
        if e.prefix_cache_tier_shared_by > e.replicas:
            raise ConfigError(
                f"{path}.prefix_cache_tier_shared_by", e.prefix_cache_tier_shared_by, f"at most replicas ({e.replicas})"
            )
        size = e.prefix_cache_tier_bytes
        if size is None:
            size = tier.capacity_bytes / e.prefix_cache_tier_shared_by
        per_block = ce.replica_kv_bytes_per_token * e.batching.block_size_tokens
        tier_blocks = int(min(size // per_block, _MAX_BLOCKS)) if per_block > 0 else 0
    return Pool(
        e.name, role, device, ce.devices, e.replicas, cap_blocks, engine=e, compiled=ce, stack=own.stack, tier=tier,
        tier_blocks=tier_blocks,
    )  # fmt: skip


def build_serving(resolved: ResolvedScenario) -> ServingSetup:
    """Compile the serving engines of a resolved scenario into pool arrays; ConfigError for what cannot serve,
    including a request class every request of which the pools would reject (:func:`never_runs`)."""
    sc = resolved.scenario
    sv = sc.serving
    if sv.disaggregated:
        pre = engine_pool(resolved, _engine_index(sc, sv.prefill_engine), "prefill")
        pools = [replace(pre, next_pool=1), engine_pool(resolved, _engine_index(sc, sv.decode_engine), "decode")]
    else:
        pools = [engine_pool(resolved, _engine_index(sc, sv.engine), "colocated")]
    shared = shares_blocks(sc.workload)
    for c in range(len(classes_of(sc.workload))):
        prompt, output = class_length_mins(sc.workload, c)
        found = job_rejection(pools, 0, prompt, output, shared=shared)
        if found is not None:
            raise never_runs(sc.workload, c, pools[found[0]], found[1], prompt, output)
    return pool_arrays(pools, sv.pairing, sv.kv_link)


# --- requests that can never run: the loop's rejection rules (kernels/serving/submission.py::_reject_reason)


def reject_reason(
    pool: Pool, prompt: int, output: int, prefilled: int = 0, seqs: int = 1, shared: bool = False
) -> str | None:
    """Why a job can never run on ``pool``, by the loop's rules at submission: ``"context"``, ``"tokens"``,
    ``"kv"``, or None when it can.

    The job prefills ``prompt`` tokens (``prefilled`` of them cached), over ``seqs`` sequences, and writes
    ``output`` tokens: over the model's context (per sequence), a prompt's new tokens over
    ``max_batched_tokens`` where prompts are not split (``Batching.splits_prompts``; not on a decode pool, nor
    where the pool keeps a prefix cache and the requests share blocks (``shared``): the cache, looked up at
    admission, may hold most of the prompt, and admission checks the rest), or more KV than one replica holds (a
    prefill pool keeps the prompt's, the others prompt + output - 1 tokens').
    """
    ce, e = pool.compiled, pool.engine
    if ce is None or e is None:  # a search pool: one-token jobs, no limits
        return None
    if (prompt + seqs - 1) // seqs + output > ce.max_context_tokens:
        return "context"
    over_budget = prompt - prefilled > e.max_batched_tokens and not (shared and e.prefix_cache)
    if not e.batching.splits_prompts and pool.role != "decode" and over_budget:
        return "tokens"
    most = prompt if pool.role == "prefill" else prompt + output - 1
    block = e.batching.block_size_tokens
    if (most + block - 1) // block > pool.kv_blocks:
        return "kv"
    return None


def job_rejection(
    pools: list[Pool], k: int, prompt: int, output: int, prefilled: int = 0, seqs: int = 1, shared: bool = False
) -> tuple[int, str] | None:
    """(pool, reason) where a job queued at pool ``k`` is rejected (a prefill pool's job is also checked at the
    decode pool it hands off to, when it writes more than one token), or None."""
    why = reject_reason(pools[k], prompt, output, prefilled, seqs, shared)
    if why is None and pools[k].next_pool >= 0 and output > 1:
        k = pools[k].next_pool
        why = reject_reason(pools[k], prompt, output, prefilled, seqs, shared)
    return None if why is None else (k, why)


def class_length_mins(workload, c: int) -> tuple[int, int]:
    """The shortest prompt (its prefix's tokens included) and output request class ``c`` can draw (1 where a trace
    column replaces them)."""
    rc = classes_of(workload)[c]
    base = f"workload.classes[{c}]" if workload.classes else "workload"
    tr = workload.arrival.trace if workload.arrival.process == "trace" else None
    prompt = (
        1 if tr is not None and tr.prompt_column is not None else length_min(rc.prompt_tokens, f"{base}.prompt_tokens")
    )
    if rc.prefix is not None:  # (a prompt starts with its prefix's tokens)
        prompt += length_min(rc.prefix.tokens, f"{base}.prefix.tokens")
    output = (
        1 if tr is not None and tr.output_column is not None else length_min(rc.output_tokens, f"{base}.output_tokens")
    )
    return prompt, output


def why_rejected(pool: Pool, why: str, prompt: int, output: int, prefilled: int = 0) -> str:
    """What ``pool`` needs, in words, for a job that :func:`reject_reason` gave ``why``."""
    e, ce = pool.engine, pool.compiled
    name = f"engine '{e.name}'"
    if why == "context":
        return (
            f"a request within the {ce.max_context_tokens}-token context of {e.model} ({name}): prompt + output is "
            f"at least {prompt} + {output} = {prompt + output} tokens"
        )
    if why == "tokens":
        return (
            f"a prompt of at most max_batched_tokens ({e.max_batched_tokens}) for {name}: policy '{e.batching.policy}' "
            f"prefills a prompt in one iteration (only 'chunked' and 'continuous_chunked' split it); it has at least "
            f"{prompt - prefilled} new tokens" + (f" (of a {prompt}-token prompt)" if prefilled else "")
        )
    most = prompt if pool.role == "prefill" else prompt + output - 1
    return (
        f"KV that fits one replica of {name} ({pool.kv_capacity_tokens} tokens): a request holds at least "
        f"{most} tokens' KV there"
    )


def never_runs(workload, c: int, pool: Pool, why: str, prompt: int, output: int) -> ConfigError:
    """The ConfigError for request class ``c`` (of plain prefill and decode), every request of which ``pool``
    rejects for ``why``: it names the class's prompt_tokens or output_tokens, whichever is the longer."""
    rc = classes_of(workload)[c]
    base = f"workload.classes[{c}]" if workload.classes else "workload"
    key, value = ("prompt_tokens", prompt) if why == "tokens" or prompt >= output else ("output_tokens", output)
    label = f"class '{rc.name}'" if workload.classes else "the workload"
    shortest = "its shortest draw" if not isinstance(getattr(rc, key), int) else "fixed"
    if key == "prompt_tokens" and rc.prefix is not None:  # (the field is the user's part, after the prefix)
        value -= length_min(rc.prefix.tokens)
        shortest += f", after a prefix of at least {prompt - value} tokens"
    return ConfigError(
        f"{base}.{key}",
        value,
        f"{why_rejected(pool, why, prompt, output)}; every request of {label} would be rejected ({key} {value}: "
        f"{shortest})",
    )


_ROLES = {
    "colocated": loop.ROLE_BOTH,
    "prefill": loop.ROLE_PREFILL,
    "decode": loop.ROLE_DECODE,
    "search": loop.ROLE_BOTH,
}
_NO_LIMIT = 1 << 60


def pool_arrays(pools: list[Pool], pairing: str = "global", kv_link: Link | None = None) -> ServingSetup:
    """The loop's pool arrays for ``pools`` (hand-offs without a shared resource cross ``kv_link`` or the
    prefill device's scale-out link)."""
    n_pools = len(pools)
    params = np.zeros((n_pools, L.N_PARAMS))
    pi = np.zeros((loop.POOL_INT_ROWS, n_pools), dtype=np.int64)
    pf = np.zeros((loop.POOL_FLOAT_ROWS, n_pools))
    first = 0
    replica_pool = []
    for k, pool in enumerate(pools):
        d = pool.device
        pi[loop.PL_ROLE, k] = _ROLES[pool.role]
        pi[loop.PL_FIRST, k] = first
        pi[loop.PL_COUNT, k] = pool.replicas
        pi[loop.PL_NEXT, k] = pool.next_pool
        pi[loop.PL_LINK_RES, k] = pool.link_resource
        pi[loop.PL_MEM_RES, k] = pool.memory_resource
        pi[loop.PL_PAIRING, k] = loop.PAIRING_LOCAL if pairing == "local" else loop.PAIRING_GLOBAL
        pi[loop.PL_CAP_BLOCKS, k] = pool.kv_blocks
        host: Link | None = d.host_link
        pf[loop.PF_SWAP_BW, k] = host.bandwidth_bytes_per_s if host else 1.0
        pf[loop.PF_SWAP_LAT, k] = host.latency_s if host else 0.0
        link = kv_link or d.scale_out
        pf[loop.PF_LINK_BW, k] = link.bandwidth_bytes_per_s
        pf[loop.PF_LINK_LAT, k] = link.latency_s
        if pool.search is not None:  # a batch of queries is one "prefill" of one token each
            pi[loop.PL_KIND, k] = loop.POOL_SEARCH
            pi[loop.PL_POLICY, k] = loop.POLICY_CONTINUOUS
            pi[loop.PL_MAX_BATCH, k] = pool.max_batch_size
            pi[loop.PL_MAX_TOKENS, k] = pool.max_batch_size
            pi[loop.PL_CHUNK, k] = pool.max_batch_size
            pi[loop.PL_RANK_CHUNK, k] = pool.max_batch_size
            pi[loop.PL_BLOCK, k] = 1
            pi[loop.PL_SCHED, k] = _SCHED_CODES["least_outstanding"]
            pi[loop.PL_MAX_QUEUE, k] = -1
            pi[loop.PL_MAX_CONTEXT, k] = _NO_LIMIT
            pf[loop.PF_MAX_WAIT, k] = pool.max_wait_s
            for key, slot in _SEARCH_SLOTS.items():
                pf[slot, k] = pool.search[key]
        else:
            e, ce = pool.engine, pool.compiled
            params[k] = ce.params
            params[k, L.FIXED_STEP_S] = e.fixed_step_time_s or 0.0
            b = e.batching
            pi[loop.PL_KIND, k] = loop.POOL_MODEL
            pi[loop.PL_POLICY, k] = _POLICY_CODES[b.policy]
            pi[loop.PL_MAX_BATCH, k] = b.max_batch_size
            pi[loop.PL_MAX_TOKENS, k] = e.max_batched_tokens
            pi[loop.PL_CHUNK, k] = b.chunk_size if b.chunk_size is not None else e.max_batched_tokens
            # attention DP: each rank schedules its own sequences with its share of the replica's prefill budget
            # (SGLang divides chunked_prefill_size by the DP size), so one request's chunk is at most that share
            rank_budget = pi[loop.PL_CHUNK, k] if b.policy == "continuous_chunked" else e.max_batched_tokens
            pi[loop.PL_RANK_CHUNK, k] = max(1, rank_budget // ce.attention_dp) if ce.attention_dp > 1 else _NO_LIMIT
            pi[loop.PL_SPLIT, k] = b.splits_prompts
            pi[loop.PL_BLOCK, k] = b.block_size_tokens
            pi[loop.PL_PREEMPT, k] = loop.PREEMPT_SWAP if b.preemption == "swap" else loop.PREEMPT_RECOMPUTE
            # with a prefix cache, a request preempted by recompute leaves its computed blocks cached (vLLM V1 frees
            # them to its free block queue with their hashes) and takes back what survives when re-admitted
            pi[loop.PL_KEEP_PREEMPTED, k] = 1 if e.prefix_cache and b.preemption != "swap" else 0
            if pool.stack is not None:
                pi[loop.PL_ADMIT, k] = _ADMISSION_CODES[pool.stack.admission]
                pi[loop.PL_HOLD_AFTER_PREEMPT, k] = 0 if pool.stack.admit_after_preemption else 1
                pf[loop.PF_NEW_TOKEN_RATIO, k] = pool.stack.new_token_ratio
                pf[loop.PF_FRONTEND_S, k] = pool.stack.frontend_s
                # (its API server processes as one faster thread: waits are one fast server's, not several slow
                # ones'; a request's front end stays frontend_s)
                pf[loop.PF_FRONTEND_SERIAL_S, k] = pool.stack.thread_serial_s
                pf[loop.PF_FRONTEND_TOKEN_S, k] = pool.stack.thread_token_s
            pi[loop.PL_SCHED, k] = _SCHED_CODES[e.scheduler]
            pf[loop.PF_OVERLAP_WEIGHT, k] = e.overlap_weight
            if pool.tier is not None:  # loads from the prefix cache's tier: over the tier and the host link
                pi[loop.PL_PC2_CAP, k] = pool.tier_blocks
                pi[loop.PL_PC2_GROUP, k] = e.prefix_cache_tier_shared_by
                pf[loop.PF_PC2_LAT, k] = pool.tier.latency_s + (host.latency_s if host else 0.0)
                bw = pool.tier.bandwidth_bytes_per_s / pool.devices  # (each device loads its share at once)
                pf[loop.PF_PC2_BW, k] = min(bw, host.bandwidth_bytes_per_s) if host else bw
                pf[loop.PF_PC2_SHARED_BW, k] = bw
            pi[loop.PL_MAX_QUEUE, k] = -1 if b.max_queue_requests is None else b.max_queue_requests
            pi[loop.PL_MAX_CONTEXT, k] = ce.max_context_tokens
            pf[loop.PF_KV_BYTES, k] = ce.kv_bytes_per_token_moved
            pf[loop.PF_MAX_WAIT, k] = b.max_wait_s
        replica_pool += [k] * pool.replicas
        first += pool.replicas
    return ServingSetup(tuple(pools), params, pi, pf, np.array(replica_pool, dtype=np.int64))


_SEARCH_SLOTS = {
    "flop_per_query": loop.PF_S_FLOP,
    "bytes_fixed": loop.PF_S_BYTES_FIXED,
    "bytes_per_query": loop.PF_S_BYTES_QUERY,
    "flops_eff": loop.PF_S_FLOPS,
    "bw_eff": loop.PF_S_BW,
    "overhead_s": loop.PF_S_OVERHEAD,
}
