"""Compile request-class pipelines into the serving loop's stage tables, pools and shared resources.

Each engine a stage names becomes one pool (an engine that prefills for a different decode engine is a
prefill pool handing off to it); each ``retrieve`` stage gets its own search pool. ``prefill``, ``reason``
and ``decode`` of a class merge into LLM jobs: one per reasoning round, each prefilling what is new in the
context (the earlier rounds' KV is kept, as a prefix cache would), thinking, and, in the last round,
writing the answer; tool calls run between rounds. Named links and every instance of a KV tier are
processor-sharing resources.

Bytes moved into a stage over its link: text at ``TEXT_BYTES_PER_TOKEN`` per token of the context
(query, documents, outputs), a query embedding (dim x 4 bytes) into ``retrieve``, the answer's text into
``postprocess``; KV hand-offs and fetches move the KV bytes of the tokens concerned.

One concept, so one module of about 400 lines: the builder walks every class's stages and fills the stage
tables, pools, draws and shared resources together (each stage kind's method writes into all of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .config.base import ConfigError
from .config.pipeline import ROUTED, Stage
from .kernels.serving import state as loop
from .kernels.stages import INDEX_CODES, search_cost
from .length_draws import draw_lengths, length_min, length_moments
from .pools import (
    Pool,
    ServingSetup,
    class_length_mins,
    engine_pool,
    job_rejection,
    never_runs,
    pool_arrays,
    why_rejected,
)
from .resolve import ResolvedScenario

__all__ = ["PipelineSetup", "build_pipeline", "draw_stage_values", "TEXT_BYTES_PER_TOKEN"]

TEXT_BYTES_PER_TOKEN = 4.0  # UTF-8 text: about four characters per token
_EMBEDDING_BYTES = 4.0  # fp32 query embeddings
_RULES = {"probability": loop.RULE_PROBABILITY, "length": loop.RULE_LENGTH, "class": loop.RULE_CLASS}


@dataclass(frozen=True)
class PipelineSetup:
    """Pools plus the loop's pipeline arrays (see :func:`hermes_fast.kernels.serving.empty_pipeline`)."""

    serving: ServingSetup
    arrays: dict  # stage tables, route tables, tiers, resources (draws and classes added per run)
    rows: tuple[str, ...]  # labels of the `stage` output dim
    resources: tuple[str, ...]  # labels of the `link` output dim (links, then tier instances)
    draws: tuple[tuple, ...]  # per draw row: ("uniform",) | ("length", Length, path) | ("lognormal", mean, cv)


_STAGE_FIELDS = {**loop.STAGE_INT_FIELDS, **loop.STAGE_FLOAT_FIELDS}  # name -> (row, default)


class _Builder:
    def __init__(self, resolved: ResolvedScenario):
        sc = resolved.scenario
        self.sc, self.resolved = sc, resolved
        self.pools: list[Pool] = []
        self.pool_of: dict[str, int] = {}  # engine or search-pool name -> pool index
        self.rows: list[str] = []
        self.resources: list[str] = [link.name for link in sc.links]
        self.res_float: list[tuple[float, float]] = [(lk.bandwidth_bytes_per_s, lk.latency_s) for lk in sc.links]
        self.link_of = {link.name: k for k, link in enumerate(sc.links)}
        self.draws: list[tuple] = []
        self.stages: list[dict] = []
        self.route_int: list[int] = []
        self.route_float: list[float] = []
        self.tiers: list[tuple[int, int, float, float]] = []  # (first resource, instances, hit, lookup)
        self.at = ""  # path of the config stage being built
        self.src: list[str] = []  # per stage-table stage: path of the config stage it comes from

    # --- tables
    def row(self, label: str) -> int:
        if label not in self.rows:
            self.rows.append(label)
        return self.rows.index(label)

    def draw(self, spec: tuple) -> int:
        self.draws.append(spec)
        return len(self.draws) - 1

    def pool(self, engine: str, role: str, path: str) -> int:
        """The pool of ``engine`` (compiled once); its role must agree across every use."""
        if engine in self.pool_of:
            k = self.pool_of[engine]
            old = self.pools[k].role
            if old != role:
                raise ConfigError(path, engine, f"one role per engine: a {old} engine cannot also serve {role}")
            return k
        idx = next(i for i, e in enumerate(self.sc.engines) if e.name == engine)
        self.pools.append(engine_pool(self.resolved, idx, role))
        self.pool_of[engine] = len(self.pools) - 1
        return len(self.pools) - 1

    def link(self, name: str | None) -> int:
        return -1 if name is None else self.link_of[name]

    def add(self, kind: int, row: int, **fields) -> None:
        """A stage of ``kind`` (SK_*) writing output row ``row``; other fields by their stage-table names."""
        unknown = fields.keys() - _STAGE_FIELDS.keys()
        if unknown:
            raise KeyError(f"not stage-table fields: {sorted(unknown)}")
        self.stages.append({"kind": kind, "row": row, **fields})
        self.src.append(self.at)

    # --- one class
    def build_class(self, c: int, stages: tuple[Stage, ...]) -> None:
        path = f"workload.classes[{c}].pipeline"
        route_at = None  # offset of the route's target pools in the route tables
        llm = [k for k, st in enumerate(stages) if st.kind in ("prefill", "reason", "decode")]
        docs = (5, 256)
        k = 0
        while k < len(stages):
            st = stages[k]
            p = self.at = f"{path}[{k}]"
            text_link = {"link": self.link(st.link), "bytes_ctx": TEXT_BYTES_PER_TOKEN if st.link else 0.0}
            if st.kind in ("prefill", "reason", "decode"):
                self.llm_group([stages[j] for j in llm], [f"{path}[{j}]" for j in llm], route_at)
                k = llm[-1] + 1
                continue
            if st.kind == "route":
                route_at = self.route(st, p, text_link)
            elif st.kind == "embed":
                self.add(
                    loop.SK_MODEL,
                    self.row(st.label),
                    pool=self.model_pool(st, p),
                    job_prompt=1.0,
                    **text_link,
                )
            elif st.kind == "retrieve":
                docs = (st.top_k, st.doc_tokens)
                pool = self.search_pool(st, p)
                emb = st.index.dim * _EMBEDDING_BYTES if st.link else 0.0
                self.add(
                    loop.SK_SEARCH,
                    self.row(st.label),
                    pool=pool,
                    link=self.link(st.link),
                    bytes=emb,
                    add_ctx=st.top_k * st.doc_tokens,
                )
            elif st.kind == "rerank":
                n, d = docs if any(s.kind == "retrieve" for s in stages[:k]) else (st.top_k, st.doc_tokens)
                self.add(
                    loop.SK_MODEL,
                    self.row(st.label),
                    pool=self.model_pool(st, p),
                    job=float(n * d),
                    job_prompt=float(n),
                    seqs=n,
                    **text_link,
                )
            elif st.kind == "kv_retrieve":
                self.kv_stage(st, p, stages, llm, path)
            elif st.kind == "postprocess":
                out_link = {"link": self.link(st.link), "bytes_answer": TEXT_BYTES_PER_TOKEN if st.link else 0.0}
                if st.engine is not None:
                    self.add(
                        loop.SK_MODEL,
                        self.row(st.label),
                        pool=self.model_pool(st, p),
                        job_answer=1.0,
                        **out_link,
                    )
                else:
                    self.add(
                        loop.SK_DELAY,
                        self.row(st.label),
                        delay=st.latency_s or 0.0,
                        per_token=st.per_token_s,
                        **out_link,
                    )
            k += 1

    def model_pool(self, st: Stage, path: str) -> int:
        if st.engine == ROUTED:
            raise ConfigError(f"{path}.engine", ROUTED, "a named engine (only prefill/reason/decode are routed)")
        return self.pool(st.engine, "colocated", f"{path}.engine")

    def route(self, st: Stage, path: str, text_link: dict) -> int:
        targets = [self.pool(t, "colocated", f"{path}.targets[{j}]") for j, t in enumerate(st.targets)]
        at = len(self.route_int)
        self.route_int += targets
        at_f = len(self.route_float)
        n = len(targets)
        w = np.array(st.weights if st.weights else [1.0] * n, dtype=float)
        self.route_float += list(np.cumsum(w) / w.sum())
        self.route_float += [float(b) for b in st.threshold_tokens] + [0.0] * (n - 1 - len(st.threshold_tokens))
        class_map = len(self.route_int)
        names = [rc.name for rc in self.sc.workload.classes]
        for name in st.class_targets:
            if name not in names:
                raise ConfigError(f"{path}.class_targets.{name}", name, f"a request class name: one of {names}")
        self.route_int += [list(st.targets).index(st.class_targets.get(name, st.targets[0])) for name in names]
        fields = dict(route=at, route_f=at_f, rule=_RULES[st.rule], ntarget=n, class_map=class_map, **text_link)
        if st.rule == "probability":
            fields["draw"] = self.draw(("uniform",))
        if st.engine is not None:
            self.add(loop.SK_MODEL, self.row(st.label), pool=self.model_pool(st, path), job_prompt=1.0, **fields)
        else:
            self.add(loop.SK_DELAY, self.row(st.label), delay=st.latency_s or 0.0, **fields)
        return at

    def search_pool(self, st: Stage, path: str) -> int:
        device = self.resolved.devices[st.device]
        ix = st.index
        per_shard = ix.vectors / ix.shards
        flop, fixed, per_query, footprint = search_cost(
            INDEX_CODES[ix.type], per_shard, ix.dim, ix.element_bytes, ix.n_lists / ix.shards, ix.n_probe,
            ix.pq_m, ix.pq_bits, ix.hnsw_m, ix.ef_search,
        )  # fmt: skip
        if footprint > device.memory_bytes:
            need = math.ceil(footprint * ix.shards / device.memory_bytes)
            raise ConfigError(
                f"{path}.index.shards", ix.shards,
                f"at least {need}: the index takes {footprint * ix.shards / 1e9:.3g} GB and one {device.name} holds "
                f"{device.memory_bytes / 1e9:.3g} GB",
            )  # fmt: skip
        eff = device.efficiency
        peak, _ = device.peak_flop_per_s.resolve("fp32")
        search = {
            "flop_per_query": flop,
            "bytes_fixed": fixed,
            "bytes_per_query": per_query,
            "flops_eff": peak * eff.compute_efficiency,
            "bw_eff": device.memory_bandwidth_bytes_per_s * eff.memory_efficiency,
            "overhead_s": st.overhead_s,
        }
        name = st.name or f"{st.kind}:{st.device}"
        pool = Pool(name, "search", device, ix.shards, st.replicas, 1 << 40, search=search,
                    max_batch_size=st.max_batch_size, max_wait_s=st.max_wait_s,
                    memory_resource=self.link(st.memory_link))  # fmt: skip
        if name in self.pool_of:
            raise ConfigError(f"{path}.name", name, "a pool name not used by another engine or retrieve stage")
        self.pools.append(pool)
        self.pool_of[name] = len(self.pools) - 1
        return len(self.pools) - 1

    def kv_stage(self, st: Stage, path: str, stages, llm: list[int], class_path: str) -> None:
        if not llm:
            raise ConfigError(
                f"{path}.kind", "kv_retrieve", "a prefill stage later in the pipeline (its KV is fetched)"
            )
        pre = stages[llm[0]]
        if pre.engine == ROUTED:  # the route's targets: one KV size per token among them
            route = next(x for x in stages if x.kind == "route")
            pools = [self.pools[self.pool(t, "colocated", f"{class_path}.targets")] for t in route.targets]
        else:
            role = self.llm_roles(stages, llm)[0]
            pools = [self.pools[self.pool(pre.engine, role, f"{class_path}[{llm[0]}].engine")]]
        sizes = {p.compiled.replica_kv_bytes_per_token for p in pools}  # a whole replica's KV per token
        if len(sizes) > 1:
            raise ConfigError(
                f"{path}.kind", "kv_retrieve", "routed targets that agree on the KV bytes per token (the same model)"
            )
        kv_bytes = sizes.pop()
        mean_past, _ = length_moments(st.past_tokens, f"{path}.past_tokens")
        first = len(self.tiers)
        for tier_ref in st.tiers:
            tier = self.resolved.memory_tiers[tier_ref.tier]
            bw, lat = tier.bandwidth_bytes_per_s, tier.latency_s
            shared_link = -1
            if tier_ref.link is not None:
                link = self.sc.links[self.link_of[tier_ref.link]]
                lat += link.latency_s
                if link.bandwidth_bytes_per_s <= bw:  # the link is the bottleneck: fetches share it
                    shared_link = self.link_of[tier_ref.link]
            capacity = tier_ref.capacity_bytes or tier.capacity_bytes
            hit = tier_ref.hit_rate
            if st.distinct_prefixes is not None:  # the share of the working set one instance can hold
                working = st.distinct_prefixes / tier_ref.instances * mean_past * kv_bytes
                hit *= min(1.0, capacity / working)
            if shared_link >= 0:
                self.tiers.append((shared_link, 1, hit, lat))
                continue
            res = len(self.resources)
            for m in range(tier_ref.instances):
                self.resources.append(f"{st.label}:{tier_ref.tier}" + (f"[{m}]" if tier_ref.instances > 1 else ""))
                self.res_float.append((bw, 0.0))  # (lookup latency is added per fetch)
            self.tiers.append((res, tier_ref.instances, hit, lat))
        self.add(
            loop.SK_KV,
            self.row(st.label),
            draw=self.draw(("uniform",)),
            tier=first,
            ntier=len(st.tiers),
            past_draw=self.draw(("length", st.past_tokens, f"{path}.past_tokens")),
            kv_bytes=kv_bytes,
        )

    @staticmethod
    def llm_roles(stages, llm: list[int]) -> tuple[str, str | None]:
        group = [stages[j] for j in llm]
        pre = group[0]
        gen = next((s.engine for s in group[1:]), None)
        if gen is None or gen == pre.engine:
            return "colocated", None
        return "prefill", "decode"

    def llm_group(self, group: list[Stage], paths: list[str], route_at) -> None:
        pre = group[0]
        rsn = next((s for s in group if s.kind == "reason"), None)
        dec = next((s for s in group if s.kind == "decode"), None)
        gen = (rsn or dec).engine if (rsn or dec) else None
        if pre.engine == ROUTED or gen == ROUTED:
            if {pre.engine, gen} - {ROUTED, None}:
                raise ConfigError(f"{paths[-1]}.engine", gen, "'routed' for every LLM stage when one of them is routed")
            pool = -1
        elif gen is None or gen == pre.engine:
            pool = self.pool(pre.engine, "colocated", f"{paths[0]}.engine")
        else:
            pool = self.pool(pre.engine, "prefill", f"{paths[0]}.engine")
            nxt = self.pool(gen, "decode", f"{paths[-1]}.engine")
            hand = next(s for s in group[1:]).link
            old = self.pools[pool]
            if old.next_pool >= 0 and (old.next_pool, old.link_resource) != (nxt, self.link(hand)):
                raise ConfigError(f"{paths[-1]}.engine", gen, f"the decode engine every class pairs with {pre.engine}")
            self.pools[pool] = replace(old, next_pool=nxt, link_resource=self.link(hand))
        rounds = rsn.rounds if rsn else 1
        # branches, or a reward model choosing among them, end a round: the answer is a job of its own
        split = rsn is not None and (rsn.branches > 1 or rsn.reward_engine is not None)
        prefill_row = self.row(pre.label)
        for r in range(rounds):
            final = r == rounds - 1
            fields = dict(pool=pool, route=route_at or 0, final=int(final and dec is not None and not split))
            if r == 0:
                fields.update(link=self.link(pre.link), bytes_ctx=TEXT_BYTES_PER_TOKEN if pre.link else 0.0)
            if rsn is not None:
                fields["row_reason"] = self.row(rsn.label)
                think = ("length", rsn.thinking_tokens, f"{paths[1]}.thinking_tokens")
                fields["draw"] = self.draw(think)  # (branch b thinks the length drawn in row draw + b)
                for _ in range(rsn.branches - 1):
                    self.draw(think)
                fields["branches"] = rsn.branches
            if dec is not None and final and not split:
                fields["row_decode"] = self.row(dec.label)
            self.add(loop.SK_LLM, prefill_row, **fields)
            if rsn is not None and rsn.reward_engine is not None:  # each branch's context, one sequence each
                scorer = self.pool(rsn.reward_engine, "colocated", f"{paths[1]}.reward_engine")
                n = rsn.branches
                self.add(loop.SK_MODEL, self.row(f"{rsn.label}_score"), pool=scorer, seqs=n, job_ctx=float(n))
            if final and split and dec is not None:  # the answer, from the kept branch's context
                self.add(loop.SK_LLM, self.row(dec.label), pool=pool, route=route_at or 0, final=1)
            if not final:
                tool = {"delay": rsn.tool_latency_s, "add_ctx": rsn.tool_tokens}
                if rsn.tool_latency_cv > 0 and rsn.tool_latency_s > 0:
                    tool = {"delay": 0.0, "add_ctx": rsn.tool_tokens,
                            "draw": self.draw(("lognormal", rsn.tool_latency_s, rsn.tool_latency_cv))}  # fmt: skip
                self.add(loop.SK_DELAY, self.row(f"{rsn.label}_tool"), **tool)


def build_pipeline(resolved: ResolvedScenario) -> PipelineSetup:
    """Pools, stage tables and shared resources of a resolved scenario whose request classes declare pipelines.

    A class without a pipeline runs prefill and decode on ``serving.engine`` (or the first engine)."""
    sc = resolved.scenario
    b = _Builder(resolved)
    first = []
    default = (Stage(kind="prefill", engine=sc.serving.engine or sc.engines[0].name),)
    default += (Stage(kind="decode", engine=sc.serving.engine or sc.engines[0].name),)
    for c, cls in enumerate(sc.workload.classes):
        first.append(len(b.stages))
        b.build_class(c, cls.pipeline or default)
        for st in b.stages[first[-1] :]:
            st["end"] = len(b.stages)
    ns = len(b.stages)
    stages = np.zeros((loop.STAGE_INT_ROWS, ns), dtype=np.int64)
    stages_f = np.zeros((loop.STAGE_FLOAT_ROWS, ns))
    for j, st in enumerate(b.stages):
        for key, (row, default) in loop.STAGE_INT_FIELDS.items():
            stages[row, j] = st.get(key, default)
        for key, (row, default) in loop.STAGE_FLOAT_FIELDS.items():
            stages_f[row, j] = st.get(key, default)
    # tier levels: (first resource, instances) and (hit rate, lookup latency), as the loop's TI_* and TF_* rows
    tiers = np.array([t[:2] for t in b.tiers], dtype=np.int64).reshape(-1, loop.TIER_INT_ROWS).T.copy()
    tiers_f = np.array([t[2:] for t in b.tiers], dtype=float).reshape(-1, loop.TIER_FLOAT_ROWS).T.copy()
    res = np.array(b.res_float, dtype=float).reshape(-1, 2).T.copy()  # rows: bandwidth, latency
    arrays = {
        "stages": stages,
        "stages_float": stages_f,
        "class_first": np.array(first, dtype=np.int64),
        "route": np.array(b.route_int + [0], dtype=np.int64),
        "route_float": np.array(b.route_float + [0.0]),
        "tiers": tiers,
        "tiers_float": tiers_f,
        "resources": res,
        "rows": len(b.rows),
        "branch_slots": max(st.get("branches", 1) for st in b.stages) - 1,
    }
    for c, start in enumerate(first):
        _check_runs(b, c, start, first[c + 1] if c + 1 < len(first) else len(b.stages))
    serving = pool_arrays(b.pools, sc.serving.pairing, sc.serving.kv_link)
    return PipelineSetup(serving, arrays, tuple(b.rows), tuple(b.resources), tuple(b.draws))


def _check_runs(b: _Builder, c: int, first: int, end: int) -> None:
    """ConfigError when every request of class ``c`` is surely rejected at one of its jobs.

    Walks the class's stage table as the loop does (``kernels.serving.pipeline``), with the least each quantity
    can be: the prompt and answer (their laws' smallest draws), the context as stages add documents, prefixes,
    earlier rounds' output and tool results, and the new (uncached) part of an LLM job's prompt (a fetched
    prefix may be cached). A job fails for every request only if its shortest version fails on every pool it
    may run on (each target of a route)."""
    sc = b.sc
    wl = sc.workload
    cls = wl.classes[c]
    base, answer = class_length_mins(wl, c)
    ctx, fresh = base, base  # least context, and least of it not cached
    get = {k: default for k, (_, default) in _STAGE_FIELDS.items()}
    for j in range(first, end):
        st = {**get, **b.stages[j]}
        kind = st["kind"]
        if kind == loop.SK_KV:  # the prefix joins the context; a hit caches it
            past = length_min(b.draws[st["past_draw"]][1], b.draws[st["past_draw"]][2])
            ctx += past
            if not any(b.tiers[t][2] > 0 for t in range(st["tier"], st["tier"] + st["ntier"])):
                fresh += past  # (no tier ever hits: always recomputed)
        elif kind in (loop.SK_LLM, loop.SK_MODEL):
            targets = [st["pool"]] if st["pool"] >= 0 else _route_targets(b, c, first, end, st["route"])
            if kind == loop.SK_LLM:
                think = 0 if st["draw"] < 0 else length_min(b.draws[st["draw"]][1], b.draws[st["draw"]][2])
                prompt, output, seqs = ctx, max(think + (answer if st["final"] == 1 else 0), 1), 1
                cached = prompt - max(fresh, 1)
            else:
                tokens = st["job"] + st["job_prompt"] * base + st["job_ctx"] * ctx + st["job_answer"] * answer
                prompt, output, seqs, cached = max(int(tokens), 1), 1, st["seqs"], 0
            found = []
            for k in targets:
                ce = b.pools[k].compiled
                job = min(prompt, seqs * (ce.max_context_tokens - 1)) if kind == loop.SK_MODEL and ce else prompt
                why = job_rejection(b.pools, k, job, output, cached, seqs)
                found.append(why and (*why, job))
            if all(found):
                k, why, job = found[0]
                if not cls.pipeline:  # the default prefill and decode: name the class's lengths
                    raise never_runs(wl, c, b.pools[k], why, prompt, output)
                more = ""
                if kind == loop.SK_LLM and prompt != base and not cached:
                    more = f" (the class's prompt of at least {base} tokens with what earlier stages and rounds add)"
                raise ConfigError(
                    b.src[j], job - cached if why == "tokens" else job,
                    f"{why_rejected(b.pools[k], why, job, output, cached)}{more}; every request of class "
                    f"'{cls.name}' would be rejected at this stage"
                    + (" on each of the route's targets" if len(targets) > 1 else ""),
                )  # fmt: skip
            if kind == loop.SK_LLM:  # what it wrote joins the context, all of it cached for a later round
                ctx += output
                fresh = 0
        ctx += st["add_ctx"]
        fresh += st["add_ctx"]


def _route_targets(b: _Builder, c: int, first: int, end: int, at: int) -> list[int]:
    """The pools a routed job of class ``c`` may run on: the target its class maps to (rule ``class``), else
    every target of the route."""
    route = next(st for st in b.stages[first:end] if st.get("ntarget") and st.get("route") == at)
    if route.get("rule") == loop.RULE_CLASS:
        return [b.route_int[at + b.route_int[route["class_map"] + c]]]
    return b.route_int[at : at + route["ntarget"]]


def draw_stage_values(setup: PipelineSetup, n: int, rng: np.random.Generator) -> np.ndarray:
    """float64[rows, n]: each stage draw row's values for n requests (uniforms, token counts, seconds)."""
    out = np.zeros((len(setup.draws), n))
    for k, spec in enumerate(setup.draws):
        if spec[0] == "uniform":
            out[k] = rng.random(n)
        elif spec[0] == "length":
            out[k] = draw_lengths(spec[1], n, rng, spec[2])
        else:
            mean, cv = spec[1], spec[2]
            sigma2 = math.log1p(cv * cv)
            out[k] = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return out
