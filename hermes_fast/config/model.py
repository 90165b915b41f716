"""Model schema: the architecture figures the cost kernels need, as in each model's published config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld


@dataclass(frozen=True, kw_only=True)
class MoE:
    """Mixture-of-experts FFN (replaces the dense FFN on MoE layers)."""

    n_experts: int = fld(unit="expert", doc="routed experts per MoE layer", ge=2, le=1e5)
    top_k: int = fld(unit="expert", doc="routed experts per token", ge=1, le=1e5)
    expert_ffn_hidden_size: int = fld(unit="1", doc="intermediate size of one routed expert", ge=1, le=1e7)
    n_shared_experts: int = fld(0, unit="expert", doc="always-active shared experts", ge=0, le=1e5)
    shared_expert_ffn_hidden_size: int | None = fld(
        None, unit="1", doc="intermediate size of one shared expert (None: expert_ffn_hidden_size)", ge=1, le=1e7
    )
    first_dense_layers: int = fld(0, unit="layer", doc="leading layers that keep a dense FFN", ge=0, le=1e4)

    def _validate(self, path: str) -> None:
        if self.top_k > self.n_experts:
            raise ConfigError(f"{path}.top_k", self.top_k, f"<= n_experts ({self.n_experts})")


@dataclass(frozen=True, kw_only=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3): KV cached as a compressed latent plus a RoPE key."""

    q_lora_rank: int | None = fld(None, unit="1", doc="query compression rank (None: no compression)", ge=1, le=1e6)
    kv_lora_rank: int = fld(unit="1", doc="KV latent rank (cached per token per layer)", ge=1, le=1e6)
    qk_nope_head_dim: int = fld(unit="1", doc="per-head query/key dim without RoPE", ge=1, le=1e5)
    qk_rope_head_dim: int = fld(unit="1", doc="per-head RoPE dim (its key is shared and cached)", ge=1, le=1e5)
    v_head_dim: int = fld(unit="1", doc="per-head value dim", ge=1, le=1e5)


@dataclass(frozen=True, kw_only=True)
class Indexer:
    """DeepSeek Sparse Attention's lightning indexer: on every attention layer each query token scores every cached
    token (``heads`` query heads of ``head_dim`` against one shared key, in FP8) and its attention reads only the
    best-scored keys (those top-k: the model's sliding window). The keys it scores against are cached beside the
    KV. Serving stacks run it whole on every tensor-parallel rank (replicated projections in vLLM and SGLang)."""

    heads: int = fld(unit="head", doc="indexer query heads (not split by tensor parallelism)", ge=1, le=1e5)
    head_dim: int = fld(unit="1", doc="indexer query/key dim", ge=1, le=1e5)
    key_bytes: float = fld(
        unit="B", doc="indexer key cache per token and layer (an FP8 key and its fp32 scale: head_dim + 4)", gt=0,
        le=1e6,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class LinearAttention:
    """Linear-attention / state-space token mixer on some layers (Gated DeltaNet; Mamba-2 maps onto it): each
    sequence carries a fixed-size recurrent state (a key x value matrix per value head, plus the short
    convolution's last inputs) instead of a KV cache that grows with its length.

    Per layer the mixer projects hidden -> queries and keys (``n_key_heads x key_head_dim`` each), values and an
    output gate (``n_value_heads x value_head_dim`` each) and two scalars per value head (decay and write
    strength), runs a causal convolution of ``conv_kernel`` taps over queries, keys and values, updates the state
    ``S`` (``key_head_dim x value_head_dim`` per value head) once per token and reads the output from it, then
    projects values -> hidden. Mamba-2 in these terms: groups = key heads, d_state = key_head_dim, heads = value
    heads, head dim = value_head_dim (one gate scalar per head instead of two: a negligible difference)."""

    n_layers: int = fld(
        unit="layer", doc="layers whose token mixer is linear attention (the rest: full attention)", ge=1, le=1e4
    )
    n_key_heads: int = fld(unit="head", doc="query/key heads of the mixer", ge=1, le=1e5)
    n_value_heads: int = fld(unit="head", doc="value heads of the mixer (one state matrix each)", ge=1, le=1e5)
    key_head_dim: int = fld(unit="1", doc="per-head query/key dim (rows of each state matrix)", ge=1, le=1e5)
    value_head_dim: int = fld(unit="1", doc="per-head value dim (columns of each state matrix)", ge=1, le=1e5)
    conv_kernel: int = fld(
        4, unit="1", doc="taps of the causal convolution over queries, keys and values", ge=1, le=1e3
    )

    def _validate(self, path: str) -> None:
        if self.n_value_heads % self.n_key_heads:
            raise ConfigError(
                f"{path}.n_value_heads", self.n_value_heads, f"a multiple of n_key_heads ({self.n_key_heads})"
            )

    @property
    def key_dim(self) -> int:
        """Width of the queries (and of the keys): n_key_heads x key_head_dim."""
        return self.n_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        """Width of the values (and of the output gate): n_value_heads x value_head_dim."""
        return self.n_value_heads * self.value_head_dim

    @property
    def state_elements(self) -> int:
        """Elements of one sequence's state in one layer: the recurrent matrices plus the convolution's last
        ``conv_kernel - 1`` inputs of queries, keys and values."""
        recurrent = self.n_value_heads * self.key_head_dim * self.value_head_dim
        return recurrent + (self.conv_kernel - 1) * (2 * self.key_dim + self.value_dim)


@dataclass(frozen=True, kw_only=True)
class Model:
    """A transformer: decoder LLM, bidirectional encoder (embedding model) or cross-encoder (reranker)."""

    name: str = fld(doc="display name")
    kind: Literal["decoder", "encoder", "cross_encoder"] = fld("decoder", doc="decoders are causal; encoders not")
    n_layers: int = fld(unit="layer", doc="transformer blocks", ge=1, le=1e4)
    hidden_size: int = fld(unit="1", doc="model (residual) width", ge=1, le=1e6)
    n_heads: int = fld(unit="head", doc="query heads", ge=1, le=1e5)
    n_kv_heads: int = fld(unit="head", doc="key/value heads (GQA; = n_heads for MHA)", ge=1, le=1e5)
    head_dim: int = fld(unit="1", doc="per-head dim", ge=1, le=1e5)
    ffn_hidden_size: int = fld(unit="1", doc="dense FFN intermediate size", ge=1, le=1e7)
    ffn_gated: bool = fld(True, doc="gated (SwiGLU: 3 matrices) or plain (GELU: 2 matrices) FFN")
    vocab_size: int = fld(unit="token", doc="vocabulary size", ge=1, le=1e8)
    tied_embeddings: bool = fld(False, doc="LM head shares the input embedding matrix")
    has_lm_head: bool = fld(True, doc="decoders project to the vocabulary; encoders pool instead")
    max_context_tokens: int = fld(
        unit="token", doc="maximum context length (at least 2: a prompt token and an output token)", ge=2, le=1e9
    )
    sliding_window_tokens: int | None = fld(
        None, unit="token", doc="sliding-window size on windowed layers", ge=1, le=1e9
    )
    sliding_window_layers: int = fld(0, unit="layer", doc="how many layers use the sliding window", ge=0, le=1e4)
    attention_sinks: bool = fld(
        False,
        doc="learned per-head sink logits in the attention softmax (gpt-oss): an attention kernel must support them "
        "(FlashAttention 3, Triton; not FlashAttention 2), which picks a stack's backend (Stack.sink_attention_extra); "
        "their own cost, one logit per head, is left out",
    )
    moe: MoE | None = fld(None, doc="mixture-of-experts FFN, if any")
    mla: MLA | None = fld(None, doc="multi-head latent attention, if any")
    linear_attention: LinearAttention | None = fld(
        None, doc="linear-attention / state-space layers (a fixed-size state per sequence instead of KV), if any"
    )
    indexer: Indexer | None = fld(
        None, doc="a sparse-attention indexer scoring every cached token on each attention layer (DeepSeek DSA), if any"
    )
    params_published: float | None = fld(None, unit="parameter", doc="published total parameter count", gt=0)
    sources: dict[str, str] = fld(factory=dict, doc="source of each figure")
    notes: str = fld("", doc="free text")

    def _validate(self, path: str) -> None:
        if self.mla is None and self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{path}.n_kv_heads", self.n_kv_heads, f"a divisor of n_heads ({self.n_heads})")
        if self.sliding_window_layers > self.n_layers:
            raise ConfigError(
                f"{path}.sliding_window_layers", self.sliding_window_layers, f"<= n_layers ({self.n_layers})"
            )
        if self.sliding_window_layers and self.sliding_window_tokens is None:
            raise ConfigError(f"{path}.sliding_window_tokens", None, "a window size when sliding_window_layers > 0")
        la = self.linear_attention
        if la is not None:
            if la.n_layers + self.sliding_window_layers >= self.n_layers:
                raise ConfigError(
                    f"{path}.linear_attention.n_layers",
                    la.n_layers,
                    f"< n_layers - sliding_window_layers ({self.n_layers - self.sliding_window_layers}): "
                    "at least one full-attention layer",
                )
            if self.mla is not None:
                raise ConfigError(f"{path}.linear_attention", "linear_attention with mla", "one of the two")
        if self.moe is not None and self.moe.first_dense_layers > self.n_layers:
            raise ConfigError(
                f"{path}.moe.first_dense_layers", self.moe.first_dense_layers, f"<= n_layers ({self.n_layers})"
            )

    @property
    def causal(self) -> bool:
        return self.kind == "decoder"
