"""Schemas of multi-stage pipelines: the stages a request class passes through, vector indexes, KV tiers.

A request class's ``pipeline`` lists its stages in order. Model stages (``embed``, ``rerank``,
``prefill``/``reason``/``decode``, and ``route``/``postprocess`` when they name an engine) run as jobs on
an engine's replicas, batched by that engine's policy; ``retrieve`` runs vector searches on its own
device pool; ``kv_retrieve``, tool calls and fixed-cost stages take time without a pool. Data moving
into a stage crosses the stage's ``link`` (a named link of ``scenario.links``), shared by every
transfer on it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld
from .lengths import Length

STAGE_KINDS = ("route", "embed", "retrieve", "rerank", "kv_retrieve", "prefill", "reason", "decode", "postprocess")
ROUTED = "routed"  # engine name of stages that run on the engine the route stage picked
_ELEMENT_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}


@dataclass(frozen=True, kw_only=True)
class VectorIndex:
    """A vector index searched by a ``retrieve`` stage (costs in :mod:`hermes_fast.kernels.stages`)."""

    type: Literal["flat", "ivf_flat", "ivf_pq", "hnsw"] = fld("ivf_pq", doc="index family")
    vectors: float = fld(unit="vector", doc="vectors in the corpus", ge=1, le=1e12)
    dim: int = fld(768, unit="1", doc="vector dimension", ge=1, le=65536)
    dtype: Literal["fp32", "fp16", "bf16", "int8"] = fld("fp32", doc="stored component format (flat, IVF, HNSW)")
    n_lists: int = fld(65536, unit="list", doc="IVF: coarse centroids (inverted lists)", ge=1, le=1e9)
    n_probe: int = fld(32, unit="list", doc="IVF: lists scanned per query", ge=1, le=1e9)
    pq_m: int = fld(64, unit="1", doc="IVF-PQ: sub-quantisers (codes per vector)", ge=1, le=65536)
    pq_bits: int = fld(8, unit="bit", doc="IVF-PQ: bits per code", ge=1, le=16)
    hnsw_m: int = fld(32, unit="link", doc="HNSW: links per node (2M on the base layer)", ge=2, le=4096)
    ef_search: int = fld(64, unit="1", doc="HNSW: candidate list size while searching", ge=1, le=1e6)
    shards: int = fld(1, unit="device", doc="devices the index is split over; they search in parallel", ge=1, le=65536)

    @property
    def element_bytes(self) -> float:
        return _ELEMENT_BYTES[self.dtype]

    def _validate(self, path: str) -> None:
        if self.type in ("ivf_flat", "ivf_pq") and self.n_probe > self.n_lists:
            raise ConfigError(f"{path}.n_probe", self.n_probe, f"<= n_lists ({self.n_lists})")
        if self.type == "ivf_pq" and self.dim % self.pq_m:
            raise ConfigError(f"{path}.pq_m", self.pq_m, f"a divisor of dim ({self.dim})")


@dataclass(frozen=True, kw_only=True)
class KvTier:
    """One level of the prefix-KV hierarchy a ``kv_retrieve`` stage looks in, in order."""

    tier: str = fld(doc="memory tier name (preset or scenario.memory_tiers)")
    hit_rate: float = fld(unit="1", doc="share of the lookups reaching this tier that find the prefix", ge=0, le=1)
    capacity_bytes: float | None = fld(None, unit="B", doc="capacity of one instance (None: the tier's)", gt=0)
    instances: int = fld(
        1, unit="1", doc="separate copies (per-client tiers); request i uses copy i mod instances", ge=1, le=1 << 20
    )
    link: str | None = fld(
        None, doc="link (scenario.links) to the tier: its latency adds to the tier's; when it is the slower of the"
        " two, fetches share it with all other traffic on it",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of a pipeline. Fields that a kind does not use must be left unset."""

    kind: Literal[
        "route", "embed", "retrieve", "rerank", "kv_retrieve", "prefill", "reason", "decode", "postprocess"
    ] = fld(doc="stage kind")
    name: str | None = fld(None, doc="label in the `stage` output dim (None: the kind)")
    engine: str | None = fld(None, doc="engine that runs a model stage, or 'routed' for the one the route stage picked")
    link: str | None = fld(None, doc="link (scenario.links) the data moving into this stage crosses")
    latency_s: float | None = fld(None, unit="s", doc="route/postprocess without an engine: fixed cost", ge=0)
    per_token_s: float = fld(0.0, unit="s/token", doc="postprocess without an engine: cost per output token", ge=0)
    # route
    targets: tuple[str, ...] = fld((), doc="route: engines the router chooses between")
    rule: Literal["probability", "length", "class"] = fld("probability", doc="route: how the target is chosen")
    weights: tuple[float, ...] = fld((), unit="1", doc="route probability: relative share of each target")
    threshold_tokens: tuple[int, ...] = fld(
        (),
        unit="token",
        doc="route length: ascending prompt-length bounds; prompt <= b_k goes to target k",
        ge=0,
        le=1e9,
    )
    class_targets: dict[str, str] = fld(factory=dict, doc="route class: request class name -> target engine")
    # retrieve
    device: str | None = fld(None, doc="retrieve: device that searches the index")
    replicas: int = fld(1, unit="replica", doc="retrieve: search servers (each holds the index)", ge=1, le=65536)
    max_batch_size: int = fld(64, unit="query", doc="retrieve: most queries per search batch", ge=1, le=1 << 20)
    max_wait_s: float = fld(0.0, unit="s", doc="retrieve: an idle server waits this long to fill a batch", ge=0)
    overhead_s: float = fld(50e-6, unit="s", doc="retrieve: fixed cost per search batch", ge=0)
    memory_link: str | None = fld(
        None, doc="retrieve: link (scenario.links) modelling the host memory the index is read through, shared"
        " with KV-tier fetches over the same link",
    )  # fmt: skip
    index: VectorIndex | None = fld(None, doc="retrieve: the vector index")
    top_k: int = fld(5, unit="document", doc="retrieve/rerank: documents retrieved per query", ge=1, le=1e6)
    doc_tokens: int = fld(256, unit="token", doc="retrieve/rerank: tokens per document", ge=1, le=1e7)
    # kv_retrieve
    past_tokens: int | Length | None = fld(
        None, unit="token", doc="kv_retrieve: prefix tokens whose KV is fetched", ge=1, le=1e9
    )
    tiers: tuple[KvTier, ...] = fld((), doc="kv_retrieve: tiers looked in, in order; a miss everywhere recomputes")
    distinct_prefixes: float | None = fld(
        None, unit="prefix", doc="kv_retrieve: prefixes in the working set (None: every tier holds it)", ge=1
    )
    # reason
    thinking_tokens: int | Length | None = fld(None, unit="token", doc="reason: tokens thought per round", ge=1, le=1e9)
    rounds: int = fld(1, unit="round", doc="reason: thinking rounds; a tool call runs between rounds", ge=1, le=1000)
    tool_latency_s: float = fld(0.0, unit="s", doc="reason: mean tool-call latency between rounds", ge=0)
    tool_latency_cv: float = fld(0.0, unit="1", doc="reason: tool latency cv (0: fixed; else lognormal)", ge=0, le=100)
    tool_tokens: int = fld(0, unit="token", doc="reason: tokens a tool result adds to the context", ge=0, le=1e9)
    branches: int = fld(
        1, unit="branch", doc="reason: parallel branches per round, sharing the prompt's KV; the best one is kept",
        ge=1, le=256,
    )  # fmt: skip
    reward_engine: str | None = fld(
        None, doc="reason: engine of a reward model scoring each branch (a prefill of its context) before the answer"
    )

    @property
    def label(self) -> str:
        return self.name or self.kind

    def _validate(self, path: str) -> None:
        k = self.kind
        if k in ("embed", "rerank", "prefill", "reason", "decode") and self.engine is None:
            raise ConfigError(f"{path}.engine", None, f"an engine name (or '{ROUTED}') for a {k} stage")
        if k in ("route", "postprocess") and self.engine is None and self.latency_s is None and not self.per_token_s:
            raise ConfigError(f"{path}.latency_s", None, f"a fixed cost or an engine for a {k} stage")
        if k == "route":
            _check_route(self, path)
        if k == "retrieve":
            if self.device is None:
                raise ConfigError(f"{path}.device", None, "the device that searches the index")
            if self.index is None:
                raise ConfigError(f"{path}.index", None, "a vector index (type, vectors, dim, ...)")
        if k == "kv_retrieve":
            if self.past_tokens is None:
                raise ConfigError(f"{path}.past_tokens", None, "the prefix length whose KV is fetched")
            if not self.tiers:
                raise ConfigError(f"{path}.tiers", [], "at least one tier (tier, hit_rate)")
        if k == "reason" and self.thinking_tokens is None:
            raise ConfigError(f"{path}.thinking_tokens", None, "tokens thought per round")
        if k != "reason" and (self.branches != 1 or self.reward_engine is not None):
            key = "branches" if self.branches != 1 else "reward_engine"
            raise ConfigError(f"{path}.{key}", getattr(self, key), f"unset: only a reason stage has {key}")
        if self.reward_engine == ROUTED:
            raise ConfigError(f"{path}.reward_engine", ROUTED, "a named engine: the reward model is not routed")
        if self.engine == ROUTED and k in ("route", "retrieve", "kv_retrieve"):
            raise ConfigError(f"{path}.engine", ROUTED, f"a named engine: a {k} stage cannot be routed")


def _check_route(st: Stage, path: str) -> None:
    n = len(st.targets)
    if n < 1:
        raise ConfigError(f"{path}.targets", [], "at least one engine to route to")
    if st.rule == "probability" and st.weights and len(st.weights) != n:
        raise ConfigError(f"{path}.weights", list(st.weights), f"{n} weights, one per target (or none: equal)")
    if st.rule == "probability" and any(w < 0 for w in st.weights):
        raise ConfigError(f"{path}.weights", list(st.weights), "weights >= 0")
    if st.rule == "probability" and st.weights and sum(st.weights) <= 0:
        raise ConfigError(f"{path}.weights", list(st.weights), "weights with a positive sum")
    if st.rule == "length":
        b = list(st.threshold_tokens)
        if len(b) != n - 1 or b != sorted(b):
            raise ConfigError(f"{path}.threshold_tokens", b, f"{n - 1} ascending bounds for {n} targets")
    if st.rule == "class":
        for cls, target in st.class_targets.items():
            if target not in st.targets:
                raise ConfigError(f"{path}.class_targets.{cls}", target, f"one of the targets {list(st.targets)}")


def check_pipeline(stages: tuple[Stage, ...], path: str) -> None:
    """Order rules: one route at most, before the stages it routes; prefill/reason/decode in that order."""
    kinds = [s.kind for s in stages]
    seen_route = False
    for k, st in enumerate(stages):
        p = f"{path}[{k}]"
        if st.kind == "route":
            if seen_route:
                raise ConfigError(f"{p}.kind", "route", "at most one route stage per pipeline")
            seen_route = True
        if st.engine == ROUTED and not seen_route:
            raise ConfigError(f"{p}.engine", ROUTED, "a route stage earlier in the pipeline")
    if "prefill" not in kinds and ("decode" in kinds or "reason" in kinds):
        raise ConfigError(path, kinds, "a prefill stage before reason/decode")
    llm = [k for k, s in enumerate(stages) if s.kind in ("prefill", "reason", "decode")]
    order = [stages[k].kind for k in llm]
    if llm and (
        order != sorted(order, key=("prefill", "reason", "decode").index) or llm != list(range(llm[0], llm[-1] + 1))
    ):
        raise ConfigError(path, kinds, "prefill, [reason], [decode] next to each other, in that order")
    if order.count("prefill") > 1 or order.count("reason") > 1 or order.count("decode") > 1:
        raise ConfigError(path, kinds, "one prefill, at most one reason and one decode stage")
    gen = [stages[k] for k in llm if stages[k].kind != "prefill"]
    if len(gen) == 2 and gen[0].engine != gen[1].engine:
        raise ConfigError(f"{path}[{llm[-1]}].engine", gen[1].engine, f"the reason stage's engine ({gen[0].engine})")
