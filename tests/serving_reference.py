"""A plain-Python reference of the serving event loop, written for clarity rather than speed.

It reads the same pool arrays as the jitted loop (``hermes_fast.simulate.build_serving``) and the same
pre-drawn workload, keeps one Python object per request and per replica, runs exactly one event per
iteration (no fast-forward) off a single ``heapq``, and reports per-request times and outcomes. Only the
cost model (``iteration_time``, ``prefill_pairs``) is shared with the package; every scheduling decision
is re-implemented here from the specification:

- a request holds ``prompt``, ``output``, ``gen`` (tokens emitted), ``prefilled`` and ``target`` (the
  prompt, or prompt + gen after a recompute), ``kv`` (tokens of KV held) and ``blocks`` (paged KV blocks);
- an iteration processes a prefill chunk or one decode token per request in it; when ``prefilled`` reaches
  ``target`` the request emits a token; it is done when ``gen == output``;
- at each iteration boundary a replica retires what finished, then forms its next batch by its policy
  (static, continuous, continuous_chunked, chunked, mixed); decodes that cannot get a new KV block preempt the newest
  running request (recompute, or swap to host), which goes back to the front of its replica's queue; with the
  pool's ``keep_preempted`` (a prefix cache) a recomputed request's full blocks go back to the free ones in order,
  allocations take the oldest returned first, and re-admitted on that replica it keeps those not taken since; with
  ``hold_after_preempt`` (vLLM V1) a chunked or mixed iteration whose decodes preempted admits no one;
- events at one time run in the order: iteration ends (ties: by replica index), KV hand-offs, arrivals
  (ties: first scheduled).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hermes_fast.kernels.iteration import iteration_time
from hermes_fast.kernels.serving import Reason, Status
from hermes_fast.kernels.serving import state as loop
from hermes_fast.kernels.step import prefill_pairs

__all__ = ["run_reference", "Reference"]

POLICIES = {loop.POLICY_STATIC: "static", loop.POLICY_CONTINUOUS: "continuous", loop.POLICY_CHUNKED: "chunked"}
POLICIES |= {loop.POLICY_MIXED: "mixed", loop.POLICY_CONTINUOUS_CHUNKED: "continuous_chunked"}
SCHEDULERS = {
    loop.SCHED_ROUND_ROBIN: "round_robin",
    loop.SCHED_RANDOM: "random",
    loop.SCHED_LEAST_OUTSTANDING: "least_outstanding",
    loop.SCHED_LEAST_KV: "least_kv",
    loop.SCHED_SHARED_QUEUE: "shared_queue",
}
ROLES = {loop.ROLE_BOTH: "colocated", loop.ROLE_PREFILL: "prefill", loop.ROLE_DECODE: "decode"}

# event kinds, in the order they run at equal times
END, HANDOFF, ARRIVAL = 0, 1, 2


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(eq=False)
class Request:
    index: int
    prompt: int
    output: int
    gen: int = 0
    prefilled: int = 0
    target: int = 0
    kv: int = 0
    blocks: int = 0
    swapped: bool = False
    chunk: int = 0  # tokens in the replica's current iteration (1 for a decode; 0: not in it)
    replica: Replica | None = None  # where it runs or holds KV
    status: int = Status.PENDING
    reason: int = Reason.NONE
    preemptions: int = 0
    admit: float = math.nan
    prefill_end: float = math.nan
    first_token: float = math.nan
    done: float = math.nan
    transfer: float = 0.0
    entry_replica: int = -1
    decode_replica: int = -1
    kept_blocks: int = 0  # preempted with keep_preempted: full blocks of its KV that went back cached
    kept_mark: int = 0  # its replica's ``released`` before they went back
    kept_replica: int = -1

    @property
    def prompt_done(self) -> bool:
        """Its (current) prefill target is reached and it has emitted a token: it decodes next."""
        return self.prefilled == self.target and self.gen > 0


@dataclass(eq=False)
class Pool:
    index: int
    role: str
    policy: str
    scheduler: str
    max_batch: int
    max_tokens: int
    chunk_size: int  # chunked: per request and iteration; continuous_chunked: per iteration
    split: bool  # prompts may be cut over iterations
    block: int
    swap: bool
    max_queue: int
    max_context: int
    capacity: int  # KV blocks per replica
    local_pairing: bool
    kv_bytes: float
    swap_bw: float
    swap_lat: float
    link_bw: float
    link_lat: float
    params: np.ndarray
    keep_preempted: bool = False
    hold_after_preempt: bool = False
    next: Pool | None = None
    replicas: list[Replica] = field(default_factory=list)
    shared: deque = field(default_factory=deque)
    rr: int = 0


@dataclass(eq=False)
class Replica:
    index: int
    pool: Pool
    free: int
    queue: deque = field(default_factory=deque)
    running: list[Request] = field(default_factory=list)
    busy: bool = False
    released: int = 0  # blocks ever given back to ``free`` (their order in the free queue)
    preempted: int = 0


@dataclass
class Reference:
    """Per-request results, laid out like the kernel's rows (NaN for what never happened)."""

    admit: np.ndarray
    prefill_end: np.ndarray
    first_token: np.ndarray
    done: np.ndarray
    transfer: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    preemptions: np.ndarray
    gen: np.ndarray
    entry_replica: np.ndarray
    decode_replica: np.ndarray
    iterations: int
    partial_chunks: int  # prefill chunks that left their prompt unfinished
    over_budget: int  # prompts admitted beyond the token budget (the first prompt of an iteration)
    kept_tokens: int  # tokens re-admitted preempted requests found still cached
    held: int  # iterations that admitted no one because their decodes preempted


class Loop:
    def __init__(self, setup, draws, horizon_s: float):
        pi, pf = setup.pool_int, setup.pool_float
        self.pools = []
        for k in range(pi.shape[1]):
            self.pools.append(
                Pool(
                    index=k,
                    role=ROLES[int(pi[loop.PL_ROLE, k])],
                    policy=POLICIES[int(pi[loop.PL_POLICY, k])],
                    scheduler=SCHEDULERS[int(pi[loop.PL_SCHED, k])],
                    max_batch=int(pi[loop.PL_MAX_BATCH, k]),
                    max_tokens=int(pi[loop.PL_MAX_TOKENS, k]),
                    chunk_size=int(pi[loop.PL_CHUNK, k]),
                    split=bool(pi[loop.PL_SPLIT, k]),
                    block=int(pi[loop.PL_BLOCK, k]),
                    swap=bool(pi[loop.PL_PREEMPT, k]),
                    max_queue=int(pi[loop.PL_MAX_QUEUE, k]),
                    max_context=int(pi[loop.PL_MAX_CONTEXT, k]),
                    capacity=int(pi[loop.PL_CAP_BLOCKS, k]),
                    local_pairing=bool(pi[loop.PL_PAIRING, k]),
                    kv_bytes=float(pf[loop.PF_KV_BYTES, k]),
                    swap_bw=float(pf[loop.PF_SWAP_BW, k]),
                    swap_lat=float(pf[loop.PF_SWAP_LAT, k]),
                    link_bw=float(pf[loop.PF_LINK_BW, k]),
                    link_lat=float(pf[loop.PF_LINK_LAT, k]),
                    params=np.asarray(setup.params[k], dtype=np.float64),
                    keep_preempted=bool(pi[loop.PL_KEEP_PREEMPTED, k]),
                    hold_after_preempt=bool(pi[loop.PL_HOLD_AFTER_PREEMPT, k]),
                )
            )
        for k, pool in enumerate(self.pools):
            nxt = int(pi[loop.PL_NEXT, k])
            pool.next = self.pools[nxt] if nxt >= 0 else None
        self.replicas = []
        for r, k in enumerate(setup.replica_pool):
            pool = self.pools[int(k)]
            rep = Replica(index=r, pool=pool, free=pool.capacity)
            pool.replicas.append(rep)
            self.replicas.append(rep)
        outputs = draws.output_tokens if setup.generates else np.ones_like(draws.output_tokens)
        self.requests = [
            Request(index=i, prompt=int(p), output=int(o), target=int(p))
            for i, (p, o) in enumerate(zip(draws.prompt_tokens, outputs, strict=True))
        ]
        self.arrival_s = np.asarray(draws.arrival_s, dtype=np.float64)
        self.route_u = np.asarray(draws.route_u, dtype=np.float64)
        self.horizon_s = horizon_s
        self.events: list = []
        self.seq = itertools.count()
        self.iterations = 0
        self.partial_chunks = 0
        self.over_budget = 0
        self.kept_tokens = 0  # tokens re-admitted requests found still cached (not prefilled again)
        self.held = 0  # iterations that admitted no one because their decodes preempted

    # ------------------------------------------------------------------ events

    def push(self, t: float, kind: int, payload) -> None:
        order = payload.index if kind == END else next(self.seq)  # (a replica has one iteration end pending)
        heapq.heappush(self.events, (t, kind, order, payload))

    def run(self) -> Reference:
        for i, t in enumerate(self.arrival_s):
            self.push(float(t), ARRIVAL, i)
        while self.events:
            t, kind, _, payload = heapq.heappop(self.events)
            if t > self.horizon_s:
                break
            if kind == END:
                self.iteration_end(payload, t)
                self.boundary(payload, t, in_flight=True)
            elif kind == HANDOFF:
                self.handoff_done(payload, t)
            else:
                self.arrive(self.requests[payload], t)
        return self.results()

    def results(self) -> Reference:
        def col(name, dtype):
            return np.array([getattr(r, name) for r in self.requests], dtype=dtype)

        return Reference(
            admit=col("admit", float),
            prefill_end=col("prefill_end", float),
            first_token=col("first_token", float),
            done=col("done", float),
            transfer=col("transfer", float),
            status=col("status", np.int64),
            reason=col("reason", np.int64),
            preemptions=col("preemptions", np.int64),
            gen=col("gen", np.int64),
            entry_replica=col("entry_replica", np.int64),
            decode_replica=col("decode_replica", np.int64),
            iterations=self.iterations,
            partial_chunks=self.partial_chunks,
            over_budget=self.over_budget,
            kept_tokens=self.kept_tokens,
            held=self.held,
        )

    # ------------------------------------------------------------------ arrival and routing

    def rejection(self, pool: Pool, req: Request) -> int:
        if req.prompt + req.output > pool.max_context:
            return Reason.CONTEXT
        if not pool.split and pool.role != "decode" and req.prompt > pool.max_tokens:
            return Reason.TOKENS
        # the most KV it ever holds in this pool
        most = req.prompt if pool.role == "prefill" else req.prompt + req.output - 1
        if ceil_div(most, pool.block) > pool.capacity:
            return Reason.KV
        return Reason.NONE

    def arrive(self, req: Request, t: float) -> None:
        entry = self.pools[0]
        reason = self.rejection(entry, req)
        if reason == Reason.NONE and entry.next is not None and req.output > 1:
            reason = self.rejection(entry.next, req)
        if reason != Reason.NONE:
            req.status, req.reason = Status.REJECTED, reason
            return
        queue, owner = self.choose_queue(entry, req, 0)
        if entry.max_queue >= 0 and len(queue) >= entry.max_queue:
            req.status, req.reason = Status.DROPPED, Reason.QUEUE_FULL
            return
        req.target = req.prompt
        req.status = Status.WAITING
        queue.append(req)
        self.wake(queue, owner, t)

    def load(self, rep: Replica) -> float:
        if rep.pool.scheduler == "least_outstanding":
            return len(rep.running) + len(rep.queue)
        held = (rep.pool.capacity - rep.free) * rep.pool.block
        return held + sum(q.prompt + q.gen for q in rep.queue)

    def choose_queue(self, pool: Pool, req: Request, u_row: int):
        """(queue, owner): the pool's shared queue (owner: the pool) or one replica's own (owner: it)."""
        if pool.scheduler == "shared_queue":
            return pool.shared, pool
        n = len(pool.replicas)
        if pool.scheduler == "round_robin":
            rep = pool.replicas[pool.rr % n]
            pool.rr += 1
        elif pool.scheduler == "random":
            rep = pool.replicas[min(int(self.route_u[u_row, req.index] * n), n - 1)]
        else:
            rep = min(pool.replicas, key=self.load)  # ties: the lowest index
        return rep.queue, rep

    def wake(self, queue: deque, owner, t: float) -> None:
        if isinstance(owner, Replica):
            if not owner.busy:
                self.boundary(owner, t)
            return
        for rep in owner.replicas:
            if not queue:
                break
            if not rep.busy:
                self.boundary(rep, t)

    # ------------------------------------------------------------------ KV blocks

    def give_back(self, rep: Replica, req: Request) -> None:
        rep.free += req.blocks
        rep.released += req.blocks
        req.blocks = 0

    def still_cached(self, rep: Replica, req: Request) -> int:
        """Blocks of a preempted request's KV still free on rep: of the blocks returned since its own went back
        (its own first), the last ``free`` are still free."""
        if req.kept_blocks == 0 or req.kept_replica != rep.index:
            return 0
        taken = max(rep.released - req.kept_mark - rep.free, 0)
        return req.kept_blocks - min(taken, req.kept_blocks)

    def set_blocks(self, rep: Replica, req: Request, blocks: int) -> None:
        rep.free -= blocks - req.blocks
        req.blocks = blocks

    def grow_blocks(self, rep: Replica, req: Request, tokens: int) -> None:
        """Hold enough blocks for ``tokens`` tokens (never fewer than already held)."""
        self.set_blocks(rep, req, max(req.blocks, ceil_div(tokens, rep.pool.block)))

    def swap_seconds(self, pool: Pool, tokens: int) -> float:
        return pool.swap_lat + tokens * pool.kv_bytes / pool.swap_bw

    # ------------------------------------------------------------------ forming an iteration

    def admit(self, rep: Replica, t: float, budget: int, reserve_whole: bool):
        """Admit queue heads FCFS (own queue, then the pool's shared one) while they fit.

        Returns (swap-in seconds, requests admitted)."""
        pool = rep.pool
        swap_s = 0.0
        admitted = 0
        prompt_tokens = 0
        queues = [rep.queue, pool.shared] if pool.scheduler == "shared_queue" else [rep.queue]
        for queue in queues:
            while queue and len(rep.running) < pool.max_batch:
                req = queue[0]
                if req.prompt_done:  # handed off, or swapped out while decoding: it needs its next token's KV
                    tokens = req.kv + 1
                    if reserve_whole:
                        tokens = max(tokens, req.prompt + req.output - 1)
                    if ceil_div(tokens, pool.block) > rep.free or budget < 1:
                        return swap_s, admitted
                    chunk = 0
                    budget -= 1
                else:
                    own = min(self.still_cached(rep, req), (req.target - 1) // pool.block)  # (one token to compute)
                    chunk = req.target - req.prefilled - own * pool.block
                    if pool.split:
                        chunk = min(chunk, pool.chunk_size, budget)
                        if chunk <= 0:
                            return swap_s, admitted
                    elif chunk > budget and prompt_tokens > 0:  # the first prompt is never refused for the budget
                        return swap_s, admitted
                    if chunk > budget:
                        self.over_budget += 1
                    tokens = req.prefilled + own * pool.block + chunk
                    if reserve_whole:
                        tokens = max(tokens, req.prompt + req.output - 1)
                    if req.swapped:
                        tokens = max(tokens, req.kv)
                    if ceil_div(tokens, pool.block) > rep.free:
                        return swap_s, admitted
                    budget -= chunk
                    prompt_tokens += chunk
                    if own:  # its cached blocks in use again: computed, held
                        self.kept_tokens += own * pool.block
                        req.prefilled += own * pool.block
                        req.kv = req.prefilled
                queue.popleft()
                req.kept_blocks = 0
                if req.swapped:
                    swap_s += self.swap_seconds(pool, req.kv)
                    req.swapped = False
                self.set_blocks(rep, req, ceil_div(tokens, pool.block))
                if math.isnan(req.admit):
                    req.admit = t
                    req.entry_replica = rep.index
                elif pool.role == "decode" and req.decode_replica < 0:
                    req.decode_replica = rep.index
                req.chunk = chunk
                req.replica = rep
                req.status = Status.RUNNING
                rep.running.append(req)
                admitted += 1
        return swap_s, admitted

    def preempt_newest(self, rep: Replica) -> float:
        """Evict the most recently admitted running request to the front of rep's queue; swap-out seconds."""
        req = rep.running.pop()
        if rep.pool.keep_preempted and not rep.pool.swap:
            req.kept_blocks, req.kept_mark, req.kept_replica = req.kv // rep.pool.block, rep.released, rep.index
        self.give_back(rep, req)
        req.chunk = 0
        req.preemptions += 1
        rep.preempted += 1
        swap_s = 0.0
        if rep.pool.swap:
            req.swapped = True
            swap_s = self.swap_seconds(rep.pool, req.kv)
        else:
            req.target = req.prompt + req.gen
            req.prefilled = 0
            req.kv = 0
        req.status = Status.WAITING
        rep.queue.appendleft(req)
        return swap_s

    def make_room_for_decodes(self, rep: Replica) -> float:
        swap_s = 0.0
        while True:
            block = rep.pool.block
            need = sum(max(ceil_div(r.kv + 1, block) - r.blocks, 0) for r in rep.running if r.prompt_done)
            if need <= rep.free:
                return swap_s
            swap_s += self.preempt_newest(rep)

    def mark_decodes(self, rep: Replica) -> int:
        n = 0
        for req in rep.running:
            if req.chunk == 0 and req.prompt_done:
                req.chunk = 1
                self.grow_blocks(rep, req, req.kv + 1)
                n += 1
        return n

    def continue_prompts(self, rep: Replica, budget: int) -> int:
        """Running partial prompts get chunks, oldest first, within the budget and free KV."""
        pool = rep.pool
        used = 0
        for req in rep.running:
            remaining = req.target - req.prefilled
            if remaining <= 0 or budget - used <= 0:
                continue
            room = (req.blocks + rep.free) * pool.block - req.prefilled
            chunk = min(remaining, pool.chunk_size, budget - used, room)
            if chunk <= 0:
                continue
            self.grow_blocks(rep, req, req.prefilled + chunk)
            req.chunk = chunk
            used += chunk
        return used

    def has_prefill(self, rep: Replica) -> bool:
        return any(r.chunk > 0 and not r.prompt_done for r in rep.running)

    def form(self, rep: Replica, t: float):
        """Choose rep's next iteration (sets each request's chunk); returns (swap s, requests admitted)."""
        pool = rep.pool
        swap_s = 0.0
        admitted = 0
        if pool.policy == "static":
            if not rep.running:
                swap_s, admitted = self.admit(rep, t, pool.max_tokens, reserve_whole=True)
            if not self.has_prefill(rep):
                self.mark_decodes(rep)
        elif pool.policy in ("continuous", "continuous_chunked"):
            budget = pool.max_tokens
            if pool.policy == "continuous_chunked":  # at most chunk_size prompt tokens; a cut prompt goes on first
                budget = min(budget, pool.chunk_size)
                budget -= self.continue_prompts(rep, budget)
            swap_s, admitted = self.admit(rep, t, budget, reserve_whole=False)
            if not self.has_prefill(rep):
                swap_s += self.make_room_for_decodes(rep)
                self.mark_decodes(rep)
        else:  # chunked, mixed: decodes first; prompts fill the rest of the token budget
            preempted = rep.preempted
            swap_s += self.make_room_for_decodes(rep)
            budget = pool.max_tokens - self.mark_decodes(rep)
            if pool.policy == "chunked":
                budget -= self.continue_prompts(rep, budget)
            if pool.hold_after_preempt and rep.preempted > preempted:
                self.held += 1
            else:
                s, admitted = self.admit(rep, t, budget, reserve_whole=False)
                swap_s += s
            self.mark_decodes(rep)  # admitted requests whose prompt is already done decode now
        return swap_s, admitted

    def boundary(self, rep: Replica, t: float, in_flight: bool = False) -> None:
        """Form and launch rep's next iteration at time t (or leave it idle); ``in_flight``: its previous
        iteration ended at t, so with pipeline parallelism its micro-batches keep the pipeline full."""
        assert not rep.busy and all(r.chunk == 0 for r in rep.running)
        swap_s = 0.0
        while True:
            s, _ = self.form(rep, t)
            swap_s += s
            if any(r.chunk > 0 for r in rep.running) or not rep.running:
                break
            swap_s += self.preempt_newest(rep)  # nothing can progress: free the newest request's KV
        batch = [r for r in rep.running if r.chunk > 0]
        if not batch:
            rep.busy = False
            return
        p = rep.pool.params
        prefill_tokens = pairs = prefill_kv = 0.0
        n_dec = dec_kv = logits = 0.0
        for r in batch:
            if r.prompt_done:
                n_dec += 1
                dec_kv += r.kv + 1
                logits += 1
            else:
                prefill_tokens += r.chunk
                pairs += prefill_pairs(p, float(r.chunk), float(r.prefilled))
                prefill_kv += r.prefilled + r.chunk
                if r.prefilled + r.chunk == r.target:
                    logits += 1
                else:
                    self.partial_chunks += 1
        cost = iteration_time(p, prefill_tokens, pairs, prefill_kv, n_dec, dec_kv, logits, float(len(batch)), in_flight)
        rep.busy = True
        self.iterations += 1
        self.push(t + (cost + swap_s), END, rep)

    # ------------------------------------------------------------------ end of an iteration, hand-off

    def iteration_end(self, rep: Replica, t: float) -> None:
        pool = rep.pool
        still = []
        for req in rep.running:
            chunk, req.chunk = req.chunk, 0
            if chunk == 0:
                still.append(req)
                continue
            if req.prompt_done:
                req.gen += 1
                req.kv += 1
            else:
                req.prefilled += chunk
                req.kv += chunk
                if req.prefilled == req.target:
                    req.gen += 1
                    if req.gen == 1:
                        req.prefill_end = t
                        if pool.next is None or req.output == 1:
                            req.first_token = t
                    if req.gen < req.output and pool.role == "prefill":
                        req.status = Status.TRANSFERRING
                        req.transfer = pool.link_lat + req.kv * pool.kv_bytes / pool.link_bw
                        self.push(t + req.transfer, HANDOFF, req)
                        continue  # its blocks stay held here until the KV has been sent
            if req.gen >= req.output:
                req.status = Status.DONE
                req.done = t
                self.give_back(rep, req)
                req.replica = None
                continue
            still.append(req)
        rep.running = still
        rep.busy = False

    def handoff_done(self, req: Request, t: float) -> None:
        src = req.replica
        self.give_back(src, req)
        req.first_token = t
        pool = src.pool
        dst = pool.next
        if pool.local_pairing:
            rep = dst.replicas[pool.replicas.index(src) % len(dst.replicas)]
            queue, owner = rep.queue, rep
        else:
            queue, owner = self.choose_queue(dst, req, 1)
        req.replica = None
        req.status = Status.WAITING
        queue.append(req)
        if not src.busy:
            self.boundary(src, t)
        self.wake(queue, owner, t)


def run_reference(setup, draws, horizon_s: float | None = None) -> Reference:
    """Serve ``draws`` on ``setup``'s pools, one event per iteration; per-request results."""
    return Loop(setup, draws, math.inf if horizon_s is None else horizon_s).run()
