"""What :func:`hermes_fast.calibration.measure.measure` times: the catalog device a GPU's name stands for, and
the plan of shapes for one dense catalog decoder, sized to the device's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.base import ConfigError
from ..config.model import Model
from ..sizes import layer_gemm_shapes, param_count

__all__ = ["Plan", "check_measurable", "device_for_gpu", "measurement_plan", "projection_shapes"]

# GPU names (torch.cuda.get_device_name) -> catalog devices: all words must appear. MIG slices, PCIe and NVL
# boards and Grace-Hopper modules are other devices than the catalog's SXM parts.
_NOT_SXM = ("MIG", "PCIE", "NVL", "GH200", "GB200")
_GPU_NAMES = (
    (("H100", "HBM3"), "h100_sxm"),
    (("H100", "SXM"), "h100_sxm"),
    (("H200",), "h200_sxm"),
    (("B200",), "b200"),
    (("A100", "80GB"), "a100_sxm_80gb"),
    (("L40S",), "l40s"),
)


def device_for_gpu(gpu_name: str) -> str | None:
    """The catalog device a GPU name stands for (``NVIDIA H100 80GB HBM3`` -> ``h100_sxm``), or None."""
    upper = gpu_name.upper()
    if any(w in upper for w in _NOT_SXM):
        return None
    for words, device in _GPU_NAMES:
        if all(w in upper for w in words):
            return device
    return None


@dataclass(frozen=True)
class Plan:
    """What to measure: shapes per op (each a tuple of integer tuples)."""

    gemm: tuple[tuple[int, int, int], ...]  # (m, n, k)
    attention_tp: tuple[int, ...]  # TP degrees whose head shards the attention rows use
    prefill_attention: tuple[tuple[int, int], ...]  # (batch, new tokens per sequence)
    decode_attention: tuple[tuple[int, int], ...]  # (batch, cached tokens per sequence)
    layer_tokens: tuple[int, ...]
    prefill_steps: tuple[tuple[int, int], ...]  # (batch, prompt tokens per sequence)
    decode_steps: tuple[tuple[int, int], ...]  # (batch, cached tokens per sequence)


def check_measurable(model: Model, name: str) -> None:
    """Reject a model the plan cannot time: only dense decoders with a gated MLP and full attention."""
    dense = model.kind == "decoder" and model.moe is None and model.mla is None and model.ffn_gated
    if not dense or model.sliding_window_tokens is not None or model.linear_attention is not None:
        raise ConfigError(
            "measure.model",
            name,
            "a dense decoder with gated MLP and full attention (no MoE, MLA, sliding window or linear attention), "
            "e.g. llama-3.1-8b",
        )


def projection_shapes(model: Model, tp: int = 1) -> tuple[tuple[int, int], ...]:
    """(n, k) of one layer's QKV, output projection, gate+up and down GEMMs on one TP shard, as ``F.linear``
    weights (the model's :func:`~hermes_fast.sizes.layer_gemm_shapes`)."""
    return tuple((int(n), int(k)) for k, n in layer_gemm_shapes(model, tp))


def _kv_bytes(model: Model, batch: int, tokens: int, elem_bytes: float, layers: int) -> float:
    return 2.0 * layers * batch * tokens * model.n_kv_heads * model.head_dim * elem_bytes


def measurement_plan(model: Model, memory_bytes: float, elem_bytes: float, quick: bool = False) -> Plan:
    """The shapes :func:`measure` times for ``model`` on a device with ``memory_bytes``, in a format of
    ``elem_bytes``: cases whose operands would not fit in half the memory (steps: weights, the whole KV
    cache and the activations in 85%) are left out. ``quick``: a handful of small cases, to check the
    method."""
    if quick:
        tokens, prefill, decode = (1, 16, 256), ((1, 64), (2, 128)), ((1, 128), (4, 256))
        layer, p_steps, d_steps, tps = (1, 16), ((1, 16),), ((1, 32), (4, 32)), (1,)
    else:
        tokens = tuple(2**i for i in range(15))  # 1 .. 16384
        prefill = tuple((b, t) for b in (1, 2, 4, 8, 16, 32) for t in (128, 512, 1024, 2048, 4096, 8192))
        prefill = tuple((b, t) for b, t in prefill if b * t <= 65536)
        decode = tuple((b, c) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for c in (128, 512, 2048, 8192, 32768))
        layer = (1, 4, 16, 64, 256, 1024, 4096, 16384)
        p_steps = ((1, 128), (1, 512), (1, 2048), (1, 8192), (4, 512), (4, 2048), (16, 512), (16, 1024))
        d_steps = tuple((b, c) for b in (1, 8, 32, 64, 128, 256) for c in (512, 2048, 8192))
        kv = model.n_kv_heads  # KV heads split across TP ranks, or replicated when fewer than the ranks
        tps = tuple(t for t in (1, 8) if model.n_heads % t == 0 and (kv % t == 0 or t % kv == 0))
    h, e = model.hidden_size, elem_bytes
    half = 0.5 * memory_bytes
    tp1 = projection_shapes(model)
    gemm = tuple((m, n, k) for m in tokens for n, k in tp1 if e * (m * k + k * n + m * n) <= half)
    widest = max(n for n, _ in tp1)
    layer = tuple(t for t in layer if e * (t * (h + widest) + sum(n * k for n, k in tp1)) <= half)
    qo = model.n_heads * model.head_dim
    prefill = tuple((b, t) for b, t in prefill if _kv_bytes(model, b, t, e, 1) + 2 * e * b * t * qo <= half)
    decode = tuple((b, c) for b, c in decode if _kv_bytes(model, b, c, e, 1) <= half)
    weights = e * param_count(model)["total"]
    budget = 0.85 * memory_bytes - weights
    # activations of the widest prefill GEMM output, a few at once; logits in fp32 on the last tokens
    p_steps = tuple(
        (b, t)
        for b, t in p_steps
        if _kv_bytes(model, b, t, e, model.n_layers) + 4 * e * b * t * max(widest, h) + 4 * b * model.vocab_size
        <= budget
    )
    d_steps = tuple((b, c) for b, c in d_steps if _kv_bytes(model, b, c + 1, e, model.n_layers) <= budget)
    return Plan(gemm, tps, prefill, decode, layer, p_steps, d_steps)
