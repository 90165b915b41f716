"""Schema of a serving stack: what the serving software (vLLM, SGLang, TensorRT-LLM) does around the kernels.

Kernels give device time; a stack adds its scheduler's semantics (the batching policy and budgets it runs with
by default, how admission commits KV), the decode batch sizes it captures as CUDA graphs, its host work per
iteration, per sequence and per tensor-parallel rank, and its API front end. Stacks are catalog data
(``hermes_fast/catalog/stacks.yaml``, every figure with its source and the version it describes); an engine
picks one with ``stack:`` and its own fields (``batching.policy``, ``max_batched_tokens``...) override the
stack's defaults; a scenario may define its own under ``stacks:`` (``base: vllm`` and the fields to change).
The ``ideal`` stack is the kernels alone: no graphs, no host or front-end costs beyond the device's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld
from .hardware import Device, Dtype

__all__ = ["Stack", "MoeKernel", "MemoryClass", "ADMISSIONS", "needs_sink_kernels", "in_compute_capability_range"]

ADMISSIONS = ("on_demand", "reserve_all", "new_token_ratio")
# below this compute capability the stacks' FlashAttention is FlashAttention 2, which has no attention sinks (vLLM
# asserts "Sinks are only supported in FlashAttention 3", vllm-project/vllm issue #22331): a sink model runs another
# backend there (vLLM: TRITON_ATTN on Ampere, vllm-project/recipes GPT-OSS.md); from Hopper on, the stacks' usual
# backends (FlashAttention 3, FlashInfer, TRT-LLM's) run sinks
FLASH_ATTENTION_SINKS_MIN_CC = 9.0


def in_compute_capability_range(lo: float | None, hi: float | None, compute_capability: float | None) -> bool:
    """Whether a device of ``compute_capability`` lies in [lo, hi] (None: unbounded on that side; a bounded range
    needs a CUDA device)."""
    if lo is None and hi is None:
        return True
    return compute_capability is not None and (lo or 0.0) <= compute_capability <= (hi or math.inf)


def needs_sink_kernels(attention_sinks: bool, compute_capability: float | None) -> bool:
    """Whether a model with (or without) ``attention_sinks`` on a device of ``compute_capability`` needs an attention
    backend other than the stack's usual one: sinks on a CUDA device below FLASH_ATTENTION_SINKS_MIN_CC."""
    return attention_sinks and compute_capability is not None and compute_capability < FLASH_ATTENTION_SINKS_MIN_CC


@dataclass(frozen=True, kw_only=True)
class MoeKernel:
    """Experts' kernels a stack runs for some weight formats on some devices instead of those its
    moe_compute_extra / moe_memory_extra describe (vLLM 0.11 on: Triton's matmul_ogs for MXFP4 experts on Hopper)."""

    name: str = fld(doc="the kernels, in words")
    weights: tuple[Dtype, ...] = fld(
        doc="the experts' weight formats (dtypes.expert_weight, else weight) it serves (fp4 stands for every 4-bit "
        "float format: the dtypes do not tell MXFP4 from NVFP4)"
    )
    min_compute_capability: float | None = fld(
        None, unit="1", doc="the lowest CUDA compute capability it runs on (None: no lower bound)", ge=1, le=100
    )
    max_compute_capability: float | None = fld(
        None, unit="1", doc="the highest CUDA compute capability it runs on (None: no upper bound)", ge=1, le=100
    )
    compute_extra: float = fld(
        0.0, unit="1", doc="routed-expert GEMM compute time over the calibrated GEMMs, a fraction", ge=0, le=10
    )
    memory_extra: float = fld(
        0.0, unit="1", doc="routed-expert GEMM weight-reading time over the calibrated GEMMs, a fraction", ge=0, le=10
    )
    sources: dict[str, str] = fld(factory=dict, doc="source of each figure, keyed by field")

    def runs(self, expert_weight: str, compute_capability: float | None) -> bool:
        """Whether the stack runs these kernels for experts stored in ``expert_weight`` on a device of
        ``compute_capability`` (a bounded range needs a CUDA device)."""
        if expert_weight not in self.weights:
            return False
        return in_compute_capability_range(self.min_compute_capability, self.max_compute_capability, compute_capability)

    def _validate(self, path: str) -> None:
        lo, hi = self.min_compute_capability, self.max_compute_capability
        if lo is not None and hi is not None and hi < lo:
            raise ConfigError(f"{path}.max_compute_capability", hi, f">= min_compute_capability ({lo:g})")


@dataclass(frozen=True, kw_only=True)
class MemoryClass:
    """GPUs whose memory falls in [min_gib, max_gib) and the memory a stack keeps off its static pool on them."""

    min_gib: float = fld(unit="GiB", doc="least GPU memory of the class", ge=0, le=1e6)
    max_gib: float = fld(unit="GiB", doc="GPU memory the class stops below", gt=0, le=1e6)
    reserved_gib: float = fld(unit="GiB", doc="memory kept off the static pool on one rank", ge=0, le=1e6)

    def _validate(self, path: str) -> None:
        if self.max_gib <= self.min_gib:
            raise ConfigError(f"{path}.max_gib", self.max_gib, f"> min_gib ({self.min_gib:g})")


@dataclass(frozen=True, kw_only=True)
class Stack:
    """A serving stack's defaults and costs (see the module docstring); None: the engine schema's default."""

    name: str = fld(doc="display name")
    version: str = fld("", doc="the stack version(s) these figures describe")
    # engine defaults (an engine's own fields win)
    memory_utilization: float | None = fld(
        None, unit="1", doc="fraction of device memory for weights + KV (None: the engine schema's 0.9)", gt=0, le=1
    )
    memory_reserved: tuple[MemoryClass, ...] = fld(
        (),
        doc="memory_utilization by rule on a device in one of these classes, where an engine sets none: 1 - "
        "(reserved_gib + memory_reserved_per_rank_gib x TP x PP, + memory_reserved_attention_dp_gib with attention "
        "DP) / the device's memory in GiB, to 3 places (SGLang 0.5's mem_fraction_static); elsewhere "
        "memory_utilization (a stack based on one with classes that wants its own memory_utilization everywhere sets "
        "memory_reserved: [])",
    )
    memory_reserved_per_rank_gib: float = fld(
        0.0, unit="GiB", doc="memory_reserved's share per rank of the replica (TP x PP)", ge=0, le=1e3
    )
    memory_reserved_attention_dp_gib: float = fld(
        0.0, unit="GiB", doc="memory_reserved's addition under attention data parallelism", ge=0, le=1e3
    )
    memory_basis: Literal["device", "free"] = fld(
        "device",
        doc="what the engine's memory_utilization is a share of: device (the device's memory, for weights + KV: "
        "vLLM's gpu_memory_utilization, SGLang's mem_fraction_static) or free (the memory the weights and activations "
        "leave, for KV alone: TensorRT-LLM's kv_cache_free_gpu_mem_fraction)",
    )
    device_memory: Literal["datasheet", "runtime"] = fld(
        "datasheet",
        doc="the device capacity memory_utilization applies to: datasheet (the device's memory_bytes) or runtime "
        "(its runtime_memory_bytes, what CUDA reports and vLLM, SGLang and TensorRT-LLM budget from; a device "
        "without one falls back to memory_bytes)",
    )
    activation_reserve: bool = fld(
        True,
        doc="the activations of one token budget come out of that fraction (vLLM sizes KV after a profile run "
        "inside gpu_memory_utilization); false: weights and KV fill it and activations use the rest (SGLang's "
        "mem_fraction_static)",
    )
    sampler_profile: bool = fld(
        False,
        doc="the memory profile behind activation_reserve also samples one batch of max_batch_size sequences (vLLM "
        "V1's _dummy_sampler_run, top-k and top-p over the whole vocabulary): its peak, 38.8 bytes a (sequence, "
        "vocabulary entry) as vLLM's logs read it, is reserved when larger than one token budget's activations",
    )
    max_batched_tokens: int | None = fld(
        None, unit="token", doc="token budget of one iteration (None: the engine schema's 8192)", ge=1, le=1 << 24
    )
    policy: Literal["static", "continuous", "continuous_chunked", "chunked", "mixed"] | None = fld(
        None, doc="batching policy"
    )
    max_batch_size: int | None = fld(None, unit="request", doc="most requests in one iteration", ge=1, le=65536)
    chunk_size: int | None = fld(
        None,
        unit="token",
        doc="most prompt tokens of one request per iteration (chunked) or of one prefill iteration "
        "(continuous_chunked) (None: the budget)",
        ge=1,
        le=1 << 24,
    )
    block_size_tokens: int | None = fld(None, unit="token", doc="paged-KV block size", ge=1, le=1 << 20)
    preemption: Literal["recompute", "swap"] | None = fld(None, doc="what a preempted request's KV does")
    # scheduler semantics
    admission: Literal["on_demand", "reserve_all", "new_token_ratio"] = fld(
        "on_demand",
        doc="how admission commits KV: on_demand (allocate as tokens come, preempt when out; vLLM), reserve_all "
        "(the job's whole KV at admission, never preempted; TensorRT-LLM's guaranteed_no_evict), new_token_ratio "
        "(keep a share of running and new requests' remaining output free; SGLang)",
    )
    admit_after_preemption: bool = fld(
        True,
        doc="an iteration whose decodes had to preempt running requests still admits new ones into the room left "
        "(false: vLLM V1's scheduler admits none in such a step, so it does not refill the KV it just freed)",
    )
    new_token_ratio: float = fld(
        0.0, unit="1", doc="new_token_ratio: share of each request's remaining output kept free", ge=0, le=1
    )
    prefix_cache: bool = fld(
        False,
        doc="automatic prefix caching: full KV blocks stay cached (LRU) after their request and a prompt reuses "
        "the longest cached prefix (vLLM V1, SGLang's radix cache, TensorRT-LLM's block reuse)",
    )
    extra_kernels: bool = fld(
        False,
        doc="the stack runs the kernels the operator roofline leaves out (memory-bound): each layer's KV-cache write "
        "and rotary embedding, and the sampler over the vocabulary",
    )
    prefill_attention_extra: float = fld(
        0.0,
        unit="1",
        doc="prefill attention kernel time the stack's attention backend adds over the calibrated kernels, a fraction "
        "(0.5: 1.5x): the kernel tables measure TensorRT-LLM's kernels (fitted per stack entry)",
        ge=0,
        le=10,
    )
    sink_attention_extra: float | None = fld(
        None,
        unit="1",
        doc="prefill_attention_extra for a model with attention sinks on a CUDA device before Hopper (compute "
        "capability < 9): FlashAttention 2 has no sinks, so the stack runs another backend there (vLLM: TRITON_ATTN); "
        "None: prefill_attention_extra as for any model",
        ge=0,
        le=10,
    )
    cuda_core_decode_extra: float | None = fld(
        None,
        unit="1",
        doc="decode attention kernel time over the calibrated kernels, a fraction, for a model whose decode attention "
        "the stack's backend runs on CUDA cores, without tensor cores: a 16-bit KV cache and at most "
        "cuda_core_decode_max_group query heads per KV head, on a device up to cuda_core_decode_max_compute_capability "
        "(SGLang's FlashInfer backend: should_use_tensor_core); None: tensor-core decode kernels for every model",
        ge=0,
        le=10,
    )
    cuda_core_decode_max_group: int = fld(
        4,
        unit="1",
        doc="the most query heads per KV head (on a device) whose decode runs on CUDA cores (cuda_core_decode_extra)",
        ge=1,
        le=1024,
    )
    cuda_core_decode_max_compute_capability: float | None = fld(
        None,
        unit="1",
        doc="the highest CUDA compute capability on which the stack's backend runs decode on CUDA cores (above it "
        "another backend serves these models; None: every device)",
        ge=1,
        le=100,
    )
    moe_compute_extra: float = fld(
        0.0,
        unit="1",
        doc="routed-expert GEMM compute time the stack's MoE kernels add over the calibrated ones, a fraction (0.5: "
        "1.5x; prefill-bound MoE steps; fitted per stack entry)",
        ge=0,
        le=10,
    )
    moe_memory_extra: float = fld(
        0.0,
        unit="1",
        doc="routed-expert GEMM weight-reading time the stack's MoE kernels add over the calibrated ones, a fraction "
        "(decode-bound MoE steps, where the experts' weights are read at a fraction of the bandwidth)",
        ge=0,
        le=10,
    )
    moe_extra_weights: tuple[Dtype, ...] | None = fld(
        None,
        doc="the experts' weight formats (dtypes.expert_weight, else weight) whose MoE kernels moe_compute_extra and "
        "moe_memory_extra describe; experts in another format run other kernels and take neither (None: every format)",
    )
    moe_kernels: tuple[MoeKernel, ...] = fld(
        (),
        doc="experts' kernels the stack runs for particular weight formats and devices, in place of those "
        "moe_compute_extra / moe_memory_extra describe (the first that runs them wins)",
    )
    decode_host_overlap: bool = fld(
        False,
        doc="an overlap scheduler prepares the next batch while a decode-only iteration runs: that iteration's "
        "per-step host work hides behind its kernels (the per-sequence work stays); iterations with prefill, and "
        "pipeline-parallel ones, pay all of it",
    )
    async_scheduling: bool = fld(
        False,
        doc="an asynchronous scheduler (vLLM's --async-scheduling, on by default from 0.14; TensorRT-LLM's overlap "
        "scheduler, on by default in its PyTorch backend in 1.x) prepares each iteration "
        "while the previous one's kernels run: all its host work, per step and per sequence, overlaps them, so an "
        "iteration takes the longer of its kernels and its host work; pipeline-parallel iterations pay all of it "
        "(with it, decode_host_overlap changes nothing)",
    )
    # CUDA graphs
    cuda_graph_sizes: tuple[int, ...] = fld(
        (),
        unit="request",
        doc="decode batch sizes captured as CUDA graphs, ascending (none: no graphs)",
        ge=1,
        le=65536,
    )
    cuda_graph_padding: bool = fld(True, doc="a decode batch runs padded to the next captured size (else: exact only)")
    cuda_graph_mixed: bool = fld(False, doc="iterations with prefill also run as (piecewise) graphs")
    eager_launch_s_per_layer: float = fld(
        0.0, unit="s", doc="host time of one layer's kernel launches in an iteration that runs eagerly", ge=0, le=1
    )
    # host and front-end costs (None: the device's efficiency fields)
    step_overhead_s: float | None = fld(None, unit="s", doc="host work per iteration", ge=0, le=10)
    step_overhead_per_tp_rank_s: float | None = fld(
        None, unit="s", doc="host work per iteration per tensor-parallel rank beyond the first", ge=0, le=10
    )
    sequence_overhead_s: float | None = fld(
        None, unit="s", doc="host work per sequence that emits a token in an iteration", ge=0, le=10
    )
    frontend_s: float = fld(
        0.0, unit="s", doc="API server and tokenisation time of a request before it queues at the engine", ge=0, le=60
    )
    frontend_serial_s: float = fld(
        0.0,
        unit="s",
        doc="the part of frontend_s that holds the replica's API server thread (parsing, tokenisation, input "
        "processing): requests pass it one at a time, first come first served, so a burst queues there",
        ge=0,
        le=60,
    )
    frontend_token_s: float = fld(
        0.0,
        unit="s",
        doc="time of the replica's API server thread per token it streams (detokenising, the response chunk): "
        "an iteration takes at least its tokens' time, and intakes share the thread with the streaming",
        ge=0,
        le=1,
    )
    api_servers: int = fld(
        1,
        unit="process",
        doc="API server processes per replica (vLLM's --api-server-count), each a thread of its own that takes its "
        "share of the requests' intakes and streaming: a replica passes api_servers times the requests a second",
        ge=1,
        le=64,
    )
    sources: dict[str, str] = fld(factory=dict, doc="source of each figure, keyed by field")
    notes: str = fld("", doc="free text")

    @property
    def thread_serial_s(self) -> float:
        """Seconds of one replica's API server thread a request's intake takes: its processes as one thread that
        many times faster (their capacity)."""
        return self.frontend_serial_s / self.api_servers

    @property
    def thread_token_s(self) -> float:
        """Seconds of that thread a streamed token takes."""
        return self.frontend_token_s / self.api_servers

    def capacity_bytes(self, device: Device) -> float:
        """The device memory the stack budgets from (``device_memory``): CUDA's total where it is runtime and the
        device has one, else the datasheet's."""
        if self.device_memory == "runtime" and device.runtime_memory_bytes is not None:
            return device.runtime_memory_bytes
        return device.memory_bytes

    def memory_utilization_for(self, device: Device, ranks: float, attention_dp: bool) -> float | None:
        """The memory_utilization an engine that sets none runs at on ``device`` with ``ranks`` = TP x PP:
        ``memory_reserved``'s rule on a device whose memory (:meth:`capacity_bytes`) is in one of its classes, else
        memory_utilization (None: the engine schema's default)."""
        gib = self.capacity_bytes(device) / 2**30
        for c in self.memory_reserved:
            if c.min_gib <= gib < c.max_gib:
                reserved = c.reserved_gib + self.memory_reserved_per_rank_gib * ranks
                reserved += self.memory_reserved_attention_dp_gib if attention_dp else 0.0
                return round((gib - reserved) / gib, 3)  # (<= 0 where the rule reserves the whole device)
        return self.memory_utilization

    def prefill_attention_extra_for(self, attention_sinks: bool, compute_capability: float | None) -> float:
        """The prefill attention extra of the backend the stack runs for such a model on such a device: its sink
        backend's where the model needs sink kernels (:func:`needs_sink_kernels`) and the stack names that backend."""
        if self.sink_attention_extra is not None and needs_sink_kernels(attention_sinks, compute_capability):
            return self.sink_attention_extra
        return self.prefill_attention_extra

    def cuda_core_decode(self, query_group: float | None, kv_dtype: str, compute_capability: float | None) -> bool:
        """Whether the stack runs decode attention on CUDA cores for a model with ``query_group`` query heads per KV
        head on a device (None: MLA, kernels of its own) and a ``kv_dtype`` KV cache, on a device of
        ``compute_capability`` (cuda_core_decode_extra's rule)."""
        return (
            self.cuda_core_decode_extra is not None
            and query_group is not None
            and math.floor(query_group) <= self.cuda_core_decode_max_group  # (integer division, as SGLang's)
            and kv_dtype in ("bf16", "fp16")
            and in_compute_capability_range(None, self.cuda_core_decode_max_compute_capability, compute_capability)
        )

    def decode_attention_extra_for(
        self, query_group: float | None, kv_dtype: str, compute_capability: float | None
    ) -> float:
        """The decode attention extra of the kernel the stack runs for such a model on such a device: its CUDA-core
        kernel's (:meth:`cuda_core_decode`), else 0 (the calibrated kernels)."""
        if self.cuda_core_decode(query_group, kv_dtype, compute_capability):
            return self.cuda_core_decode_extra
        return 0.0

    def moe_kernel(self, expert_weight: str, compute_capability: float | None) -> MoeKernel | None:
        """The first of moe_kernels the stack runs for experts stored in ``expert_weight`` on a device of
        ``compute_capability``, if any."""
        return next((k for k in self.moe_kernels if k.runs(expert_weight, compute_capability)), None)

    def moe_extras_apply(self, expert_weight: str, compute_capability: float | None) -> bool:
        """Whether moe_compute_extra and moe_memory_extra describe the kernels of experts stored in
        ``expert_weight`` on such a device: no moe_kernels entry runs them, and moe_extra_weights name that format
        or name none."""
        return self.moe_kernel(expert_weight, compute_capability) is None and self._fused_moe_serves(expert_weight)

    def moe_extras(self, expert_weight: str, compute_capability: float | None) -> tuple[float, float]:
        """(compute, memory) extra fractions of the kernels this stack runs for experts stored in
        ``expert_weight`` on a device of ``compute_capability``: a moe_kernels entry's, else moe_compute_extra /
        moe_memory_extra where they apply, else (0, 0)."""
        kernel = self.moe_kernel(expert_weight, compute_capability)
        if kernel is not None:
            return kernel.compute_extra, kernel.memory_extra
        if self._fused_moe_serves(expert_weight):
            return self.moe_compute_extra, self.moe_memory_extra
        return 0.0, 0.0

    def _fused_moe_serves(self, expert_weight: str) -> bool:
        """Whether moe_extra_weights name ``expert_weight``, or name none (every format)."""
        return self.moe_extra_weights is None or expert_weight in self.moe_extra_weights

    def _validate(self, path: str) -> None:
        sizes = self.cuda_graph_sizes
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or any(s < 1 for s in sizes):
            raise ConfigError(f"{path}.cuda_graph_sizes", list(sizes), "positive batch sizes in ascending order")
        if len(sizes) > 64:
            raise ConfigError(f"{path}.cuda_graph_sizes", len(sizes), "at most 64 captured sizes")
        if self.frontend_serial_s > self.frontend_s:
            raise ConfigError(
                f"{path}.frontend_serial_s",
                self.frontend_serial_s,
                f"at most frontend_s ({self.frontend_s:g} s): the part of a request's front-end time that holds the "
                "API server's thread (a stack lowering frontend_s below its base's sets frontend_serial_s too)",
            )
        if self.admission == "new_token_ratio" and self.new_token_ratio <= 0:
            raise ConfigError(f"{path}.new_token_ratio", self.new_token_ratio, "> 0 with admission: new_token_ratio")
