"""Zero-load estimates over many grid points in one compiled loop (prange when HERMES_PARALLEL=1)."""

from __future__ import annotations

from numba import prange

from . import layout as L
from ._jit import grid_kernel, kernel
from .iteration import graph_batch, micro_batches, pipelined
from .step import prefill_pairs, step_cost


@kernel
def _argmax4(a, b, c, d):
    best = 0
    v = a
    if b > v:
        best = 1
        v = b
    if c > v:
        best = 2
        v = c
    if d > v:
        best = 3
    return best


@kernel
def pipelined_time(p, batch, prompt_tokens, past_tokens, decode):
    """(seconds, bound code) of an iteration of ``batch`` identical requests: a prefill of their prompts
    from an idle engine, or a decode step with the pipeline full (:mod:`hermes_fast.kernels.iteration`)."""
    if batch <= 0.0:
        return 0.0, 0
    n_mb = micro_batches(p, batch)
    mb = batch / n_mb
    if decode:
        tokens, pairs, kv, n_dec, kv_dec, logits = 0.0, 0.0, 0.0, mb, mb * past_tokens, mb
    else:
        tokens = mb * prompt_tokens
        pairs = mb * prefill_pairs(p, prompt_tokens, past_tokens)
        kv, n_dec, kv_dec = mb * (prompt_tokens + past_tokens), 0.0, 0.0
        logits = mb if p[L.HAS_LM_HEAD] > 0.0 else 0.0
    padded, eager = graph_batch(p, tokens, n_dec)
    if padded != n_dec:  # (a decode-only micro-batch padded to a captured CUDA graph: every row samples)
        n_dec, logits = padded, padded
    total, c, m, k, o = step_cost(p, tokens, pairs, kv, n_dec, kv_dec, logits)
    total += eager
    o += eager
    bound = _argmax4(c, m, k, o)
    if p[L.PP] <= 1.0:
        return total, bound
    return pipelined(p, total, logits, logits * n_mb, tokens + n_dec, n_mb, decode), bound


@grid_kernel
def estimate_points(
    params, cfg, batch, prompt, output, context, cached, prefill_s, decode_s, tpot_s, bound, prefill_bound
):
    """Fill per-point outputs: prefill time, decode step at ``context``, TPOT at the mean context, bounds.

    ``params`` is float64[n_cfg, N_PARAMS]; ``cfg`` int64[n] indexes it; the rest are float64[n]
    inputs or preallocated outputs (bounds int8[n]). ``cached``: leading prompt tokens found in the prefix cache
    (not prefilled; the rest attends to them).
    """
    for i in prange(cfg.shape[0]):
        p = params[cfg[i]]
        b = batch[i]
        t, k = pipelined_time(p, b, prompt[i] - cached[i], cached[i], False)
        prefill_s[i] = t
        prefill_bound[i] = k
        t, k = pipelined_time(p, b, 0.0, context[i], True)
        decode_s[i] = t
        bound[i] = k
        mean_context = prompt[i] + 0.5 * output[i]
        if mean_context == context[i]:
            tpot_s[i] = t
        else:
            tpot_s[i] = pipelined_time(p, b, 0.0, mean_context, True)[0]


@grid_kernel
def decode_step_times(params, cfg, batch, context, out):
    """Decode-step time for each point: the benchmark's measure of raw step-cost throughput."""
    for i in prange(cfg.shape[0]):
        b = batch[i]
        out[i] = step_cost(params[cfg[i]], 0.0, 0.0, 0.0, b, b * context[i], b)[0]
