"""Zero-load estimates over many grid points in one compiled loop (prange when HERMES_PARALLEL=1)."""

from __future__ import annotations

from numba import prange

from . import layout as L
from ._jit import grid_kernel, kernel
from .collectives import p2p_time
from .step import host_time, prefill_pairs, step_cost


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
    """(seconds, bound code) for ``batch`` requests split into micro-batches across PP stages.

    With pp stages the batch runs as n = min(pp, batch) micro-batches of batch/n requests. A decode
    iteration for a request then takes max(traversal, n x one stage); a prefill of the whole batch ends
    after traversal + (n - 1) stages. A stage is 1/pp of the layers plus one hand-off. The host work
    (:func:`~hermes_fast.kernels.step.host_time`) adds once for the whole batch.
    """
    if batch <= 0.0:
        return 0.0, 0
    pp = p[L.PP]
    n_mb = min(pp, batch)
    mb = batch / n_mb
    if decode:
        tokens, pairs, kv, n_dec, kv_dec, logits = 0.0, 0.0, 0.0, mb, mb * past_tokens, mb
    else:
        tokens = mb * prompt_tokens
        pairs = mb * prefill_pairs(p, prompt_tokens, past_tokens)
        kv, n_dec, kv_dec = mb * (prompt_tokens + past_tokens), 0.0, 0.0
        logits = mb if p[L.HAS_LM_HEAD] > 0.0 else 0.0
    total, c, m, k, o = step_cost(p, tokens, pairs, kv, n_dec, kv_dec, logits)  # one call site: inlined once
    bound = _argmax4(c, m, k, o)
    if pp <= 1.0:
        return total, bound
    host = host_time(p, logits * n_mb)
    gpu = total - host_time(p, logits)
    hand_off = p2p_time((tokens + n_dec) * p[L.HIDDEN] * p[L.H_BYTES], p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
    stage = (gpu - (pp - 1.0) * hand_off) / pp + hand_off
    if decode:
        return max(gpu, n_mb * stage) + host, bound
    return gpu + (n_mb - 1.0) * stage + host, bound


@grid_kernel
def estimate_points(params, cfg, batch, prompt, output, context, prefill_s, decode_s, tpot_s, bound, prefill_bound):
    """Fill per-point outputs: prefill time, decode step at ``context``, TPOT at the mean context, bounds.

    ``params`` is float64[n_cfg, N_PARAMS]; ``cfg`` int64[n] indexes it; the rest are float64[n]
    inputs or preallocated outputs (bounds int8[n]).
    """
    for i in prange(cfg.shape[0]):
        p = params[cfg[i]]
        b = batch[i]
        t, k = pipelined_time(p, b, prompt[i], 0.0, False)
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
