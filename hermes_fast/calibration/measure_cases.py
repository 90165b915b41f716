"""The cases :func:`hermes_fast.calibration.measure.measure` times with PyTorch, and how one case is timed.

A case runs ``reps`` times inside one CUDA graph, replayed between two CUDA events (on the CPU, a wall-clock
loop): GEMMs through ``F.linear`` (and per-tensor-scaled FP8 through ``torch._scaled_mm``), prefill and decode
attention through ``scaled_dot_product_attention``, one layer's linear layers, and whole prefill and decode
iterations of a random-weight copy of the model. Every case rotates through operand copies that together exceed
twice the cache, so weights and KV stream from memory as they do in serving. PyTorch comes in as an argument:
this module never imports it at top level.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config.hardware import DTYPE_BYTES
from ..config.model import Model
from .measure_plan import Plan, projection_shapes

__all__ = ["REPLAY_S", "WARM_S", "Session", "attention_rows", "gemm_rows", "layer_rows", "step_rows"]

REPLAY_S = 5e-3  # one graph replay lasts about this long (or visits every operand copy)
_MAX_REPS = 4096  # calls per replay, and operand copies
WARM_S = 0.05  # warm replays before timing
_CPU_CACHE_BYTES = 64 * 2**20  # operands rotate past this on the CPU (no portable way to ask)
_GPU_CACHE_BYTES = 128 * 2**20  # where the GPU does not report its L2 size


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
        return int(min(max(REPLAY_S / max(once_s, 1e-7), copies, 1), _MAX_REPS))

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
        while time.perf_counter() - warm < WARM_S:  # clocks and caches settle before timing
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


class Session:
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


def gemm_rows(s: Session, plan: Plan) -> list[dict]:
    torch = s.torch
    fp8 = (
        s.device.type == "cuda"
        and hasattr(torch, "float8_e4m3fn")
        and torch.cuda.get_device_capability(s.device) >= (8, 9)
    )
    return [row for m, n, k in plan.gemm for row in _gemm_case(s, m, n, k, fp8)]


def _gemm_case(s: Session, m: int, n: int, k: int, fp8: bool) -> list[dict]:
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


def _attend(s: Session, q, k, v, causal: bool):
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


def attention_rows(s: Session, model: Model, plan: Plan) -> list[dict]:
    rows = []
    for tp in plan.attention_tp:
        h, hkv = model.n_heads // tp, max(model.n_kv_heads // tp, 1)
        rows += [_attention_case(s, h, hkv, model.head_dim, b, t, 0) for b, t in plan.prefill_attention]
        rows += [_attention_case(s, h, hkv, model.head_dim, b, 1, c) for b, c in plan.decode_attention]
    return rows


def _attention_case(s: Session, h: int, hkv: int, d: int, b: int, t: int, ctx: int) -> dict:
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

    def __init__(self, s: Session, model: Model):
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


def layer_rows(s: Session, model: Model, plan: Plan, name: str) -> list[dict]:
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


def step_rows(s: Session, model: Model, plan: Plan, name: str) -> list[dict]:
    net = _RandomDecoder(s, model)
    rows = [_step_case(s, net, name, b, t, 0) for b, t in plan.prefill_steps]
    return rows + [_step_case(s, net, name, b, 1, c) for b, c in plan.decode_steps]


def _step_case(s: Session, net: _RandomDecoder, name: str, b: int, t: int, ctx: int) -> dict:
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
