"""Measure kernel and whole-step latencies with PyTorch on this machine, as calibration rows.

:func:`measure` (``hermes-fast measure``) times, for one dense catalog decoder:

- ``gemm``: ``F.linear`` over token counts x the model's four projection shapes, and per-tensor-scaled FP8
  (``torch._scaled_mm``, fast accumulation) where the GPU has it;
- ``context_attention`` and ``generation_attention``: ``scaled_dot_product_attention`` (FlashAttention on a
  GPU), causal prefill and one query token per sequence against a KV cache, at the model's heads on one and on
  several TP shards;
- ``layer_linear``: one layer's QKV, output projection and gated MLP;
- ``prefill_step`` and ``decode_step``: a whole iteration of a random-weight copy of the model: embedding
  gather, every layer (RMSNorm, QKV, RoPE, KV-cache write, attention, output projection, gated MLP), the
  final norm, the LM head on each sequence's last token and greedy sampling.

Method. On CUDA a case runs ``reps`` times inside one CUDA graph, replayed between two CUDA events: the
figure is the GPU's time without Python's launches, which is what the kernel model predicts (an engine's
host work is fitted separately, from its own decode steps). ``reps`` is chosen so one replay lasts about
5 ms and visits every operand copy, and the row's latency is the median over ``trials`` replays divided by
``reps``. The copies together exceed twice the L2 cache, so weights and KV stream from memory as they do in
serving. On the CPU (to check the method, not to calibrate) a wall-clock loop does the same.

Rows are in the measurement schema of :mod:`hermes_fast.calibrate`, with the software stack in ``backend``;
a JSON file beside the CSV records the machine, the software versions and the method. PyTorch is not a
dependency of hermes_fast: this module imports it only when asked to measure.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .calibrate import Measurements, read_measurements, write_measurements
from .compile import layer_gemm_shapes, param_count
from .config.base import ConfigError
from .config.hardware import DTYPE_BYTES
from .config.model import Model

__all__ = ["OP_GROUPS", "Plan", "device_for_gpu", "measure", "measurement_plan", "projection_shapes"]

OP_GROUPS = ("gemm", "attention", "layer", "step")
_TORCH_DTYPES = ("bf16", "fp16", "fp32")
_REPLAY_S = 5e-3  # one graph replay lasts about this long (or visits every operand copy)
_MAX_REPS = 4096  # calls per replay, and operand copies
_WARM_S = 0.05  # warm replays before timing
_CPU_CACHE_BYTES = 64 * 2**20  # operands rotate past this on the CPU (no portable way to ask)
_GPU_CACHE_BYTES = 128 * 2**20  # where the GPU does not report its L2 size
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


def _check_model(model: Model, name: str) -> None:
    dense = model.kind == "decoder" and model.moe is None and model.mla is None and model.ffn_gated
    if not dense or model.sliding_window_tokens is not None:
        raise ConfigError(
            "measure.model",
            name,
            "a dense decoder with gated MLP and full attention (no MoE, MLA or sliding window), e.g. llama-3.1-8b",
        )


def projection_shapes(model: Model, tp: int = 1) -> tuple[tuple[int, int], ...]:
    """(n, k) of one layer's QKV, output projection, gate+up and down GEMMs on one TP shard, as ``F.linear``
    weights (the model's :func:`~hermes_fast.compile.layer_gemm_shapes`)."""
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


# ------------------------------------------------------------------------------------------- timing


class _Timer:
    """Seconds per call of ``fn(i)``, ``i`` picking the operand copy out of ``copies``: CUDA graphs and
    events on a GPU, a wall-clock loop on the CPU. Every copy is visited in each replay, so a replay streams
    its operands from memory however small one copy is."""

    def __init__(self, torch, device, trials: int):
        self.torch, self.device, self.trials = torch, device, trials
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[int], Any], copies: int = 1) -> float:
        return self._cuda(fn, copies) if self.cuda else self._cpu(fn, copies)

    @staticmethod
    def _reps(once_s: float, copies: int) -> int:
        return int(min(max(_REPLAY_S / max(once_s, 1e-7), copies, 1), _MAX_REPS))

    def _cpu(self, fn, copies: int) -> float:
        fn(0)
        start = time.perf_counter()
        fn(1 % copies)
        reps = self._reps(time.perf_counter() - start, copies)
        out = []
        for _ in range(self.trials):
            start = time.perf_counter()
            for i in range(reps):
                fn(i % copies)
            out.append((time.perf_counter() - start) / reps)
        return float(np.median(out))

    def _cuda(self, fn, copies: int) -> float:
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture: handles, autotuning, the allocator
            for i in range(3):
                fn(i % copies)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(0)
        end.record()
        end.synchronize()
        reps = self._reps(start.elapsed_time(end) * 1e-3, copies)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(reps):
                fn(i % copies)
        warm = time.perf_counter()
        while time.perf_counter() - warm < _WARM_S:  # clocks and caches settle before timing
            graph.replay()
            torch.cuda.synchronize()
        out = []
        for _ in range(self.trials):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) * 1e-3 / reps)
        del graph
        return float(np.median(out))


def _copies(operand_bytes: float, cache_bytes: float) -> int:
    """Operand copies to rotate through so that a replay's operands exceed twice the cache."""
    return int(min(max(math.ceil(2.0 * cache_bytes / max(operand_bytes, 1.0)), 1), _MAX_REPS))


# ------------------------------------------------------------------------------------------- cases


class _Session:
    """What every case needs: torch, the device, the format, the timer, the attention path and the row
    template."""

    def __init__(self, torch, device, dtype: str, catalog_device: str, trials: int, seed: int):
        self.torch, self.device, self.dtype = torch, device, dtype
        self.tdtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        self.elem = DTYPE_BYTES[dtype]
        self.time = _Timer(torch, device, trials)
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.cache_bytes = float(_CPU_CACHE_BYTES)
        if device.type == "cuda":
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
            self.cache_bytes = float(l2) if l2 else float(_GPU_CACHE_BYTES)
        stack = f"torch-{torch.__version__.split('+')[0]}"
        self.base = {"device": catalog_device, "backend": stack, "source": f"hermes-fast measure ({stack})"}
        # one attention path per session, chosen up front (no fallback that could switch it mid-run):
        # FlashAttention (SDPA's FLASH backend, native GQA) for 16-bit formats on a GPU, the memory-efficient
        # backend over repeated KV heads for fp32 there (flash takes no fp32), the CPU's default otherwise
        self.sdpa = None
        self.repeat_kv = False
        self.attention_path = "SDPA default backend, native GQA"
        if device.type == "cuda":
            from torch.nn.attention import SDPBackend

            if dtype == "fp32":
                self.sdpa, self.repeat_kv = SDPBackend.EFFICIENT_ATTENTION, True
                self.attention_path = "SDPA EFFICIENT_ATTENTION backend, KV heads repeated for prefill"
            else:
                self.sdpa = SDPBackend.FLASH_ATTENTION
                self.attention_path = "SDPA FLASH_ATTENTION backend (FlashAttention-2), native GQA"

    def rand(self, *shape, scale: float = 1.0):
        t = self.torch.empty(shape, dtype=self.tdtype, device=self.device)
        return t.uniform_(-scale, scale, generator=self.gen)

    def row(self, op: str, latency_s: float, **cols) -> dict[str, Any]:
        return {"op": op, **self.base, **cols, "latency_s": latency_s}


def _gemm_rows(s: _Session, plan: Plan) -> list[dict]:
    torch = s.torch
    fp8 = (
        s.device.type == "cuda"
        and hasattr(torch, "float8_e4m3fn")
        and torch.cuda.get_device_capability(s.device) >= (8, 9)
    )
    return [row for m, n, k in plan.gemm for row in _gemm_case(s, m, n, k, fp8)]


def _gemm_case(s: _Session, m: int, n: int, k: int, fp8: bool) -> list[dict]:
    """One shape as engines run a linear layer (``F.linear``: weights [n, k]) in the session's format and,
    with ``fp8``, per-tensor-scaled FP8 with fast accumulation, as TRT-LLM and vLLM run it (``_scaled_mm``
    takes k and n in multiples of 16). Operands are freed on return, before the next shape allocates."""
    torch, F = s.torch, s.torch.nn.functional
    c = _copies(s.elem * (m * k + k * n), s.cache_bytes)
    a, w = s.rand(c, m, k), s.rand(c, n, k, scale=k**-0.5)
    rows = [s.row("gemm", s.time(lambda i: F.linear(a[i], w[i]), c), m=m, n=n, k=k, dtype=s.dtype)]
    if fp8 and k % 16 == 0 and n % 16 == 0:
        del a, w
        c8 = _copies(m * k + k * n, s.cache_bytes)  # one-byte operands: more copies to pass the cache
        a8 = s.rand(c8, m, k).to(torch.float8_e4m3fn)
        w8 = s.rand(c8, n, k, scale=k**-0.5).to(torch.float8_e4m3fn)
        one = torch.ones((), device=s.device)

        def scaled(i):  # mat2 column-major: the transpose of a row-major [n, k]
            return torch._scaled_mm(
                a8[i], w8[i].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16, use_fast_accum=True
            )

        rows.append(s.row("gemm", s.time(scaled, c8), m=m, n=n, k=k, dtype="fp8"))
    return rows


def _attend(s: _Session, q, k, v, causal: bool):
    """Attention of q [B, H, T, D] over k, v [B, Hkv, S, D] on the session's path. Decode (T = 1) folds each
    KV head's query heads into the query axis: exact GQA on any backend, as flash does internally."""
    torch, F = s.torch, s.torch.nn.functional
    b, h, t, d = q.shape
    hkv = k.shape[1]
    if h != hkv and t == 1:
        q, causal = q.reshape(b, hkv, h // hkv, d), False
    elif h != hkv and s.repeat_kv:
        k, v = torch.repeat_interleave(k, h // hkv, dim=1), torch.repeat_interleave(v, h // hkv, dim=1)
    gqa = q.shape[1] != k.shape[1]
    if s.sdpa is None:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    else:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(s.sdpa):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    return out.reshape(b, h, t, d)


def _attention_rows(s: _Session, model: Model, plan: Plan) -> list[dict]:
    rows = []
    for tp in plan.attention_tp:
        h, hkv = model.n_heads // tp, max(model.n_kv_heads // tp, 1)
        rows += [_attention_case(s, h, hkv, model.head_dim, b, t, 0) for b, t in plan.prefill_attention]
        rows += [_attention_case(s, h, hkv, model.head_dim, b, 1, c) for b, c in plan.decode_attention]
    return rows


def _attention_case(s: _Session, h: int, hkv: int, d: int, b: int, t: int, ctx: int) -> dict:
    """Causal prefill of ``t`` tokens per sequence (``ctx`` = 0) or decode of one token against ``ctx``."""
    kv_len = ctx if ctx else t
    c = _copies(s.elem * b * d * (h * t + 2 * hkv * kv_len), s.cache_bytes)
    q, k, v = s.rand(c, b, h, t, d), s.rand(c, b, hkv, kv_len, d), s.rand(c, b, hkv, kv_len, d)
    lat = s.time(lambda i: _attend(s, q[i], k[i], v[i], causal=ctx == 0), c)
    heads = {"num_heads": h, "num_kv_heads": hkv, "head_dim": d, "dtype": s.dtype, "kv_dtype": s.dtype}
    if ctx:
        return s.row("generation_attention", lat, batch_size=b, context_tokens=ctx, **heads)
    return s.row("context_attention", lat, batch_size=b, tokens=t, **heads)


class _RandomDecoder:
    """A random-weight copy of a dense catalog decoder, run as serving engines run it (linear weights [n, k]
    through ``F.linear``, a KV cache per layer) but unfused: eager PyTorch launches about 18 kernels per
    layer on a GPU where an engine launches about 10 (it fuses the residual add into the norm, RoPE into one
    kernel, the cache writes, SiLU with the gate), so its steps bound an engine's from above at small
    batches."""

    def __init__(self, s: _Session, model: Model):
        self.s, self.m = s, model
        h, f = model.hidden_size, model.ffn_hidden_size
        (qkv, _), (_, q_dim), _, _ = projection_shapes(model)

        def ones():
            return s.torch.ones(h, dtype=s.tdtype, device=s.device)

        self.embedding = s.rand(model.vocab_size, h)
        self.layers = [
            {
                "norm_attn": ones(),
                "w_qkv": s.rand(qkv, h, scale=h**-0.5),
                "w_o": s.rand(h, q_dim, scale=q_dim**-0.5),
                "norm_mlp": ones(),
                "w_gate_up": s.rand(2 * f, h, scale=h**-0.5),
                "w_down": s.rand(h, f, scale=f**-0.5),
            }
            for _ in range(model.n_layers)
        ]
        self.norm = ones()
        self.lm_head = self.embedding if model.tied_embeddings else s.rand(model.vocab_size, h, scale=h**-0.5)
        half = model.head_dim // 2
        self._inv_freq = 1.0 / (10000.0 ** (s.torch.arange(half, device=s.device, dtype=s.torch.float32) / half))

    def rope_tables(self, positions):
        """Rotary factors e^(i angle) [T, D/2] for the given positions."""
        torch = self.s.torch
        angle = positions.to(torch.float32)[:, None] * self._inv_freq[None, :]
        return torch.polar(torch.ones_like(angle), angle)

    def forward(self, tokens, caches, start: int, rope):
        """One iteration: ``tokens`` [B, T] new tokens after ``start`` cached ones (a prefill from 0, or one
        decode token); ``caches`` per layer (k, v) [B, Hkv, start + T, D], written at ``start``; ``rope`` from
        :meth:`rope_tables`. Returns each sequence's last-token logits (fp32)."""
        torch, F, mo = self.s.torch, self.s.torch.nn.functional, self.m
        b, t = tokens.shape
        if start > 0 and t > 1:
            raise ValueError("a chunk after cached tokens needs a bottom-right causal mask; not modelled")
        hq, hkv, d, h = mo.n_heads, mo.n_kv_heads, mo.head_dim, mo.hidden_size
        eps = 1e-5
        x = F.embedding(tokens, self.embedding)
        for layer, (kc, vc) in zip(self.layers, caches, strict=True):
            r = F.rms_norm(x, (h,), layer["norm_attn"], eps)
            qkv = F.linear(r, layer["w_qkv"]).view(b, t, hq + 2 * hkv, d)
            # RoPE on the query and key heads at once, as pairs (complex multiply)
            qk = torch.view_as_complex(qkv[:, :, : hq + hkv].float().reshape(b, t, hq + hkv, d // 2, 2))
            qk = torch.view_as_real(qk * rope[None, :, None, :]).reshape(b, t, hq + hkv, d).to(x.dtype)
            kc[:, :, start : start + t].copy_(qk[:, :, hq:].transpose(1, 2))
            vc[:, :, start : start + t].copy_(qkv[:, :, hq + hkv :].transpose(1, 2))
            # decode (t = 1) sees every cached key; a prefill from position 0 is causal
            a = _attend(self.s, qk[:, :, :hq].transpose(1, 2), kc, vc, causal=start == 0)
            x = x + F.linear(a.transpose(1, 2).reshape(b, t, hq * d), layer["w_o"])
            r = F.rms_norm(x, (h,), layer["norm_mlp"], eps)
            gate, up = F.linear(r, layer["w_gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer["w_down"])
        last = F.rms_norm(x[:, -1], (h,), self.norm, eps)
        return F.linear(last, self.lm_head).float()

    def caches(self, batch: int, tokens: int):
        shape = (batch, self.m.n_kv_heads, tokens, self.m.head_dim)
        z = self.s.torch.zeros
        return [
            (z(shape, dtype=self.s.tdtype, device=self.s.device), z(shape, dtype=self.s.tdtype, device=self.s.device))
            for _ in self.layers
        ]


def _layer_rows(s: _Session, model: Model, plan: Plan, name: str) -> list[dict]:
    """One layer's four linear layers back to back (QKV, output projection, gate+up, down), as the model
    predicts ``layer_linear``; each takes its input of the right width."""
    F = s.torch.nn.functional
    shapes = projection_shapes(model)
    c = _copies(s.elem * sum(n * k for n, k in shapes), s.cache_bytes)
    weights = [s.rand(c, n, k, scale=k**-0.5) for n, k in shapes]
    rows = []
    for t in plan.layer_tokens:
        inputs = [s.rand(t, k) for _, k in shapes]

        def layer(i, inputs=inputs):
            return [F.linear(x, w[i]) for x, w in zip(inputs, weights, strict=True)]

        rows.append(s.row("layer_linear", s.time(layer, c), model=name, tp=1, tokens=t, dtype=s.dtype))
    return rows


def _step_rows(s: _Session, model: Model, plan: Plan, name: str) -> list[dict]:
    net = _RandomDecoder(s, model)
    rows = [_step_case(s, net, name, b, t, 0) for b, t in plan.prefill_steps]
    return rows + [_step_case(s, net, name, b, 1, c) for b, c in plan.decode_steps]


def _step_case(s: _Session, net: _RandomDecoder, name: str, b: int, t: int, ctx: int) -> dict:
    """A prefill iteration of ``t`` prompt tokens per sequence (``ctx`` = 0) or a decode iteration after
    ``ctx`` cached tokens; the KV cache is freed on return."""
    torch = s.torch
    tokens = torch.randint(0, net.m.vocab_size, (b, t), device=s.device, generator=s.gen)
    caches = net.caches(b, ctx + t)
    rope = net.rope_tables(torch.arange(ctx, ctx + t, device=s.device))
    lat = s.time(lambda i: net.forward(tokens, caches, ctx, rope).argmax(dim=-1))  # greedy sampling
    same = {"model": name, "tp": 1, "pp": 1, "batch_size": b, "dtype": s.dtype, "kv_dtype": s.dtype}
    if ctx:
        return s.row("decode_step", lat, context_tokens=ctx, **same)
    return s.row("prefill_step", lat, tokens=t, context_tokens=0, **same)


# ------------------------------------------------------------------------------------------- driver


def _nvidia_smi(query: str, uuid: str) -> str:
    """One nvidia-smi query of the GPU with this UUID ('' where nvidia-smi is missing or fails)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-i", uuid, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def environment(torch, device) -> dict[str, Any]:
    """The machine and software a measurement ran on."""
    env: dict[str, Any] = {
        "hermes_fast": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        uuid = str(getattr(props, "uuid", ""))
        uuid = uuid if uuid.startswith("GPU-") or not uuid else f"GPU-{uuid}"
        env.update(
            {
                "gpu": torch.cuda.get_device_name(device),
                "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
                "sm_count": props.multi_processor_count,
                "gpu_memory_bytes": props.total_memory,
                "l2_cache_bytes": getattr(props, "L2_cache_size", None),
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "uuid": uuid,
                "driver": _nvidia_smi("driver_version", uuid) if uuid else "",
                "max_clocks_sm_mem": _nvidia_smi("clocks.max.sm,clocks.max.mem", uuid) if uuid else "",
                "power_limit": _nvidia_smi("power.limit", uuid) if uuid else "",
            }
        )
    else:
        env["threads"] = torch.get_num_threads()
    return env


def measure(
    out: str | Path,
    device: str | None = None,
    *,
    model: str = "llama-3.1-8b",
    ops: Sequence[str] = OP_GROUPS,
    dtype: str | None = None,
    torch_device: str | None = None,
    quick: bool = False,
    trials: int = 7,
    seed: int = 0,
    catalog=None,
    log=sys.stderr,
) -> Measurements:
    """Time kernels and whole steps of ``model`` with PyTorch and write them to ``out`` (a CSV in the
    measurement schema) and ``out`` with suffix ``.json`` (machine, versions, method, cases per op).

    ``device``: the catalog device the rows are for (default: the one the GPU's name stands for);
    ``ops``: which of :data:`OP_GROUPS`; ``dtype``: bf16, fp16 or fp32 (default bf16 on a GPU, fp32 on the
    CPU); ``torch_device``: ``cuda`` (default where there is one) or ``cpu``; ``quick``: a few small cases.
    Returns the rows, validated.
    """
    from .catalog import Catalog

    cat = catalog if catalog is not None else Catalog()
    mo = cat.model(model, "measure.model")
    _check_model(mo, model)
    ops = [o.strip() for o in (ops.split(",") if isinstance(ops, str) else ops)]
    unknown = [o for o in ops if o not in OP_GROUPS]
    if unknown or not ops:
        raise ConfigError("measure.ops", ",".join(ops), f"one or more of {', '.join(OP_GROUPS)}")
    if dtype is not None and dtype not in _TORCH_DTYPES:
        raise ConfigError("measure.dtype", dtype, f"one of {', '.join(_TORCH_DTYPES)}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError("measure.trials", trials, "an integer >= 1")
    if device is not None:
        cat.device(device, "measure.device")
    try:
        import torch
    except ImportError:
        raise ConfigError("measure", "torch", "PyTorch installed (pip install torch) to measure") from None
    where = torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    if where not in ("cuda", "cpu") or (where == "cuda" and not torch.cuda.is_available()):
        raise ConfigError("measure.torch_device", where, "cuda (with a visible GPU) or cpu")
    tdev = torch.device(where)
    if device is None:
        device = device_for_gpu(torch.cuda.get_device_name(tdev)) if where == "cuda" else None
        if device is None:
            raise ConfigError("measure.device", None, "the catalog device these rows are for (--device)")
        cat.device(device, "measure.device")
    dtype = dtype or ("bf16" if where == "cuda" else "fp32")
    if where == "cuda":
        memory = float(torch.cuda.mem_get_info(tdev)[0])  # free now: the GPU may be shared
    else:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    plan = measurement_plan(mo, memory, DTYPE_BYTES[dtype], quick)
    s = _Session(torch, tdev, dtype, device, trials, seed)
    rows: list[dict] = []
    started = time.perf_counter()
    cases = {
        "gemm": lambda: _gemm_rows(s, plan),
        "attention": lambda: _attention_rows(s, mo, plan),
        "layer": lambda: _layer_rows(s, mo, plan, model),
        "step": lambda: _step_rows(s, mo, plan, model),
    }
    matmul = torch.backends.cuda.matmul
    flag, exact = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
    before = getattr(matmul, flag)
    setattr(matmul, flag, exact)  # fp32 rows are fp32 GEMMs, not TF32
    try:
        with torch.inference_mode():
            for group in (g for g in OP_GROUPS if g in ops):
                t0 = time.perf_counter()
                new = cases[group]()
                rows += new
                print(f"measured {len(new):4d} {group} rows in {time.perf_counter() - t0:7.1f} s", file=log)
                if where == "cuda":
                    torch.cuda.empty_cache()
    finally:
        setattr(matmul, flag, before)
    if not rows:
        raise ConfigError("measure", model, "at least one case that fits in memory")
    ms = read_measurements(rows)
    out = Path(out)
    write_measurements(ms, out)
    meta = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": device,
        "model": model,
        "dtype": dtype,
        "rows": len(ms),
        "seconds": round(time.perf_counter() - started, 1),
        "environment": environment(torch, tdev),
        "method": {
            "timing": (
                "each case captured reps times in one CUDA graph and replayed between CUDA events; latency is "
                "the median over trials replays / reps"
                if where == "cuda"
                else "wall clock over reps calls; latency is the median over trials / reps"
            ),
            "reps": f"enough for about {_REPLAY_S * 1e3:g} ms per replay and to visit every operand copy",
            "warm_up": f"3 eager calls, then replays for {_WARM_S * 1e3:g} ms",
            "trials": trials,
            "operands": f"copies exceeding 2x the cache ({s.cache_bytes:.0f} bytes), all visited per replay",
            "gemm": "F.linear, weights [n, k]; FP8: torch._scaled_mm, per-tensor scales, fast accumulation",
            "attention": s.attention_path + "; decode folds each KV head's query heads into the query axis",
            "steps": "unfused eager PyTorch forward in one CUDA graph (no host work): embedding, per layer "
            "RMSNorm, QKV, RoPE, KV-cache write, attention, output projection, residual add, RMSNorm, gate+up, "
            "SiLU x up, down, residual add; final RMSNorm, LM head on the last tokens, argmax",
            "weights": f"random, seed {seed}",
        },
        "rows_per_op": {op: int((ms["op"] == op).sum()) for op in dict.fromkeys(ms["op"])},
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return ms
