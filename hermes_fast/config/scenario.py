"""Engine, workload and scenario schemas, and loading a scenario from YAML or a dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from .base import ConfigError, fld, from_mapping
from .files import is_yaml_file, load_yaml
from .hardware import Dtype, Link
from .pipeline import ROUTED
from .serving import SCHEDULERS, Batching, Serving
from .sweep import SweepSpec
from .workload import Arrival, RequestClass


@dataclass(frozen=True, kw_only=True)
class Parallel:
    """Parallel layout of one engine replica: tp x pp x cp devices; EP reuses the TP group.

    ``attention_dp`` deals the batch's sequences to the tp devices for attention (each runs whole attention
    weights on its own sequences and holds only their KV: DeepSeek on SGLang and TensorRT-LLM), with the MoE
    experts expert-parallel over the same devices (``ep = tp``) or tensor-parallel over them (``ep = 1``, SGLang
    0.4's layout: every rank's tokens gathered, as for the dense FFN layers). ``cp`` replicates the tp devices cp
    times and splits every sequence's tokens over the copies (ring attention in prefill, KV split in decode)."""

    tp: int = fld(1, unit="device", le=65536, doc="tensor-parallel degree (shards heads, FFN and experts)", ge=1)
    pp: int = fld(1, unit="device", le=65536, doc="pipeline-parallel degree (splits layers into stages)", ge=1)
    ep: int = fld(1, unit="device", le=65536, doc="expert-parallel degree within the TP group (divides tp)", ge=1)
    attention_dp: bool = fld(
        False,
        doc="attention data parallelism: each of the tp devices runs attention, with whole attention weights, on its "
        "own share of the sequences and keeps only their KV (KV capacity grows up to tp-fold for MLA); MoE experts "
        "expert-parallel over the same devices (ep = tp) or tensor-parallel over them (ep = 1); dense FFN layers "
        "tensor-parallel (needs an MoE model, pp = 1); each rank prefills at most 1/tp of the engine's prefill budget "
        "of a request an iteration",
    )
    cp: int = fld(
        1,
        unit="device",
        le=65536,
        doc="context-parallel degree: cp copies of the tp devices (weights replicated), every sequence's tokens and "
        "KV split over them: a prompt's prefill as ring attention, a decode step reading 1/cp of the KV on each "
        "(a causal decoder without linear attention; pp = 1)",
        ge=1,
    )

    def _validate(self, path: str) -> None:
        if self.tp % self.ep:
            raise ConfigError(f"{path}.ep", self.ep, f"a divisor of tp ({self.tp})")
        if self.attention_dp:
            if self.tp == 1:
                raise ConfigError(
                    f"{path}.attention_dp", True, "false with tp = 1 (one device has no ranks to deal to)"
                )
            if self.ep not in (1, self.tp):
                raise ConfigError(
                    f"{path}.ep", self.ep, f"tp ({self.tp}) or 1 with attention_dp: the experts are expert-parallel "
                    "or tensor-parallel over the devices the sequences are dealt to",
                )  # fmt: skip
            if self.pp > 1:
                raise ConfigError(
                    f"{path}.pp", self.pp, "1 with attention_dp (pipeline stages are not modelled with it)"
                )
            if self.cp > 1:
                raise ConfigError(f"{path}.cp", self.cp, "1 with attention_dp (the two are not modelled together)")
        if self.cp > 1 and self.pp > 1:
            raise ConfigError(f"{path}.cp", self.cp, "1 with pp > 1 (pipeline stages are not modelled with it)")


@dataclass(frozen=True, kw_only=True)
class Dtypes:
    """Storage/compute formats. GEMMs run at the activation dtype's peak (or the device's fallback)."""

    weight: Dtype = fld(
        "bf16", doc="weight storage format (4-bit formats with their block scales: config.hardware.weight_bytes)"
    )
    expert_weight: Dtype | None = fld(
        None,
        doc="MoE models: the routed experts' weight format where a checkpoint quantises only them (gpt-oss's MXFP4, "
        "DeepSeek-R1's NVFP4, Kimi-K2's INT4); attention, router, shared experts and embeddings stay in weight "
        "(None: weight)",
    )
    activation: Dtype = fld("bf16", doc="activation / GEMM compute format")
    kv: Dtype = fld("bf16", doc="KV-cache storage format")
    gemm_scaling: Literal["tensor", "block"] = fld(
        "tensor",
        doc="scales of 8-bit GEMMs: one per tensor (or row), or per 128-wide block (DeepSeek-V3-style FP8; "
        "the device's block_scaled_* efficiencies)",
    )

    @property
    def experts(self) -> Dtype:
        """The routed experts' storage format: expert_weight, else weight."""
        return self.expert_weight or self.weight

    def _validate(self, path: str) -> None:
        if self.gemm_scaling == "block" and (self.weight, self.activation) != ("fp8", "fp8"):
            raise ConfigError(
                f"{path}.gemm_scaling", self.gemm_scaling, "'tensor' unless weight and activation are fp8"
            )


@dataclass(frozen=True, kw_only=True)
class Engine:
    """A device group running one model with a parallel layout."""

    name: str = fld("engine", doc="unique engine name")
    model: str = fld(doc="model name (preset or scenario.models)")
    device: str = fld(doc="device name (preset or scenario.devices)")
    parallel: Parallel = fld(factory=Parallel, doc="parallel layout")
    dtypes: Dtypes = fld(factory=Dtypes, doc="weight, activation and KV formats")
    stack: str = fld(
        "vllm",
        doc="serving stack (catalog stacks or scenario.stacks): its scheduler, CUDA graphs, host and front-end "
        "costs, and the defaults of this engine's fields left unset",
    )
    memory_utilization: float | None = fld(
        None,
        unit="1",
        doc="fraction of device memory usable for weights+KV, or under a stack whose memory_basis is free "
        "(TensorRT-LLM) the fraction of what weights and activations leave that KV takes (None: the stack's, by its "
        "rule for the device and layout where it has one (SGLang's memory_reserved), else 0.9)",
        gt=0,
        le=1,
    )
    max_batched_tokens: int | None = fld(
        None,
        unit="token",
        doc="most tokens in one iteration, sizing activation memory (None: the stack's, else 8192)",
        ge=1,
        le=1e9,
    )
    replicas: int = fld(1, unit="replica", doc="copies of this engine serving together (simulate)", ge=1, le=65536)
    batching: Batching = fld(factory=Batching, doc="how each replica forms iterations (simulate)")
    scheduler: Literal[SCHEDULERS] = fld(
        "round_robin",
        doc="which replica gets a request; shared_queue: one queue that idle replicas pull from; prefix_affinity: "
        "the one caching the longest prefix of its prompt; session_sticky: the one that served the session's "
        "previous turn; kv_aware: the least overlap_weight x blocks it would prefill + KV blocks in use and queued "
        "(Dynamo's KV router; ties and the rest: least_outstanding)",
    )
    overlap_weight: float = fld(
        1.0, unit="1", doc="kv_aware: weight of the prompt blocks to prefill against the blocks in use", ge=0, le=1e6
    )
    prefix_cache: bool | None = fld(
        None,
        doc="keep a prefix cache of KV blocks on each replica (None: the stack's; vllm and sglang: on); a request "
        "preempted by recompute then finds what is left of its own blocks cached when re-admitted",
    )
    prefix_cache_tier: str | None = fld(
        None,
        doc="memory tier (catalog or scenario.memory_tiers) blocks evicted from the prefix cache spill to; a prompt "
        "loads a run of them back over it (None: none)",
    )
    prefix_cache_tier_bytes: float | None = fld(
        None,
        unit="B",
        doc="KV bytes of that tier per replica (None: the tier's capacity over prefix_cache_tier_shared_by)",
        gt=0,
        le=1e18,
    )
    prefix_cache_tier_shared_by: int = fld(
        1,
        unit="1",
        doc="replicas that share one instance of that tier, consecutive ones (at most replicas): its bandwidth, "
        "first come first served, and its capacity (e.g. 4 one-GPU replicas behind one socket's DRAM, 8 behind a "
        "node's SSD)",
        ge=1,
        le=1_000_000,
    )
    fixed_step_time_s: float | None = fld(
        None,
        unit="s",
        doc="every iteration takes this long, replacing the roofline (queueing what-ifs; 1 us to an hour)",
        ge=1e-6,
        le=3600,
    )


@dataclass(frozen=True, kw_only=True)
class Workload:
    """Request shape and traffic.

    ``estimate`` evaluates a static batch of ``batch_size`` identical requests; ``simulate`` draws arrivals
    at ``rate_per_s`` from ``arrival`` and lengths from ``classes`` (none: one class with the fixed
    ``prompt_tokens`` and ``output_tokens``).
    """

    batch_size: int = fld(1, unit="request", doc="requests processed together", ge=1, le=1e9)
    prompt_tokens: int = fld(1024, unit="token", doc="prompt length prefilled per request", ge=1, le=1e9)
    output_tokens: int = fld(256, unit="token", doc="tokens generated per request (decoders)", ge=1, le=1e9)
    context_tokens: int | None = fld(
        None, unit="token", doc="KV length for decode_step_time_s (None: prompt + output/2, the mean)", ge=1, le=1e9
    )
    prefix_hit: float = fld(
        0.0,
        unit="1",
        doc="estimate: share of each prompt found in the prefix cache (not prefilled; the rest attends to it)",
        ge=0,
        lt=1,
    )
    rate_per_s: float = fld(10.0, unit="request/s", doc="mean arrival rate (simulate)", gt=0, le=1e9)
    arrival: Arrival = fld(factory=Arrival, doc="arrival process (simulate)")
    classes: tuple[RequestClass, ...] = fld((), doc="request classes with their mix and length distributions")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Everything one run needs: custom catalog entries, engines and workload.

    A frozen dataclass, built and validated by :func:`hermes_fast.load_scenario` from a mapping, a YAML path or
    YAML text (every field of it and of its parts carries a unit and description:
    :func:`~hermes_fast.config.base.field_docs`); :func:`hermes_fast.estimate`, :func:`hermes_fast.simulate` and
    :func:`hermes_fast.sweep` take it, or the mapping, path or text itself.

    Parameters
    ----------
    name : str, default "scenario"
        A label (Dataset attrs, titles).
    description : str, default ""
        Free text.
    devices, models, memory_tiers : dict, default {}
        New catalog entries by name (a new name gives every field, or starts from ``base: PRESET``) or
        field-by-field overrides of presets; units as in the presets (bytes, bytes/s, FLOP/s, W, USD/hour).
    engines : tuple of Engine
        The engines (a model on a device with a parallel layout, formats, replicas and batching); at least
        one, names unique.
    links : tuple of Link, default ()
        Named network links (bytes/s, seconds) that pipeline stages and KV tiers move data over.
    workload : Workload
        Request shape (the static batch of an estimate: ``batch_size``, ``prompt_tokens``, ``output_tokens``
        in tokens) and traffic (``rate_per_s``, ``arrival``, ``classes``).
    serving : Serving
        Which engines serve requests in a simulation (colocated or disaggregated), SLOs in seconds, warm-up
        and horizon.

    Examples
    --------
    >>> sc = hf.load_scenario()  # the embedded default scenario
    >>> isinstance(sc, hf.Scenario), sc.name, [e.name for e in sc.engines]
    (True, 'default', ['llama8b-h100', 'llama70b-h100-tp4'])
    >>> sc.workload.rate_per_s, sc.workload.prompt_tokens, sc.serving.slo.ttft_s  # requests/s, tokens, seconds
    (10.0, 1024, 0.5)
    """

    name: str = fld("scenario", doc="label")
    description: str = fld("", doc="free text")
    devices: dict[str, Any] = fld(factory=dict, doc="new devices (with optional `base: PRESET`) or preset overrides")
    models: dict[str, Any] = fld(factory=dict, doc="new models (with optional `base: PRESET`) or preset overrides")
    memory_tiers: dict[str, Any] = fld(factory=dict, doc="new memory tiers or preset overrides")
    stacks: dict[str, Any] = fld(factory=dict, doc="new serving stacks (with optional `base: PRESET`) or overrides")
    engines: tuple[Engine, ...] = fld(doc="engines to evaluate")
    links: tuple[Link, ...] = fld((), doc="named network links pipeline stages and KV tiers move data over")
    workload: Workload = fld(factory=Workload, doc="request shape and traffic")
    serving: Serving = fld(factory=Serving, doc="which engines serve requests in simulate, SLOs and run limits")

    def _validate(self, path: str) -> None:
        if not self.engines:
            raise ConfigError(f"{path}.engines" if path else "engines", [], "at least one engine")
        seen = set()
        for i, e in enumerate(self.engines):
            if e.name in seen:
                raise ConfigError(f"engines[{i}].name", e.name, "a name not used by another engine")
            seen.add(e.name)
        sv = self.serving
        for key in ("engine", "prefill_engine", "decode_engine"):
            name = getattr(sv, key)
            if name is not None and name not in seen:
                raise ConfigError(f"serving.{key}", name, f"an engine name: one of {', '.join(sorted(seen))}")
        self._validate_pipelines(seen)

    def _validate_pipelines(self, engines: set[str]) -> None:
        links = set()
        for i, link in enumerate(self.links):
            if link.name in links:
                raise ConfigError(f"links[{i}].name", link.name, "a name not used by another link")
            links.add(link.name)
        valid_engines = f"an engine name: one of {', '.join(sorted(engines))}"
        for c, cls in enumerate(self.workload.classes):
            for k, st in enumerate(cls.pipeline):
                p = f"workload.classes[{c}].pipeline[{k}]"
                for key in ("engine", "reward_engine"):
                    name = getattr(st, key)
                    if name is not None and name != ROUTED and name not in engines:
                        raise ConfigError(f"{p}.{key}", name, valid_engines)
                for j, target in enumerate(st.targets):
                    if target not in engines:
                        raise ConfigError(f"{p}.targets[{j}]", target, valid_engines)
                named = [(f"{p}.link", st.link), (f"{p}.memory_link", st.memory_link)]
                named += [(f"{p}.tiers[{j}].link", t.link) for j, t in enumerate(st.tiers)]
                for where, name in named:
                    if name is not None and name not in links:
                        raise ConfigError(
                            where, name, f"a link name from scenario.links: {sorted(links) or 'none defined'}"
                        )


def read_scenario(source: Scenario | Mapping | str | Path | None = None) -> Scenario:
    """A :class:`Scenario` from a Scenario, mapping, YAML path or YAML text (None: the default), validated
    against the schema; :func:`hermes_fast.load_scenario` also checks the catalog names it uses.

    Examples
    --------
    >>> sc = read_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]})
    >>> sc.engines[0].parallel.tp
    1
    """
    if source is None:
        source = Path(str(files("hermes_fast") / "scenarios" / "default.yaml"))
    if isinstance(source, Scenario):
        return source
    data = load_yaml(source, "a scenario") if isinstance(source, (str, Path)) else source
    if isinstance(data, Mapping) and data and not data.keys() & _SCENARIO_KEYS and data.keys() & _SWEEP_KEYS:
        where = "<root>" if not isinstance(source, (str, Path)) else str(source) if is_yaml_file(source) else "<text>"
        raise ConfigError(
            where, f"a sweep file (keys {', '.join(map(str, data))})",
            "a scenario: this is a sweep file (use hermes-fast sweep, or hermes_fast.sweep_file)",
        )  # fmt: skip
    return from_mapping(Scenario, data)


_SCENARIO_KEYS = frozenset(f.name for f in fields(Scenario))
_SWEEP_KEYS = frozenset(f.name for f in fields(SweepSpec))
