"""One engine iteration's time for a batch given by its totals, pipeline-parallel micro-batches included."""

from __future__ import annotations

from . import layout as L
from ._jit import kernel
from .collectives import p2p_time
from .step import host_time, step_cost

__all__ = ["iteration_time"]


@kernel
def iteration_time(p, prefill_tokens, pairs, prefill_kv, n_dec, dec_kv, logits, n_seq):
    """Seconds of one iteration of a replica (PP stages run the batch as min(pp, n_seq) micro-batches:
    it ends when the last micro-batch leaves the last stage; the host work adds once for the batch)."""
    fixed = p[L.FIXED_STEP_S]
    if fixed > 0.0:
        return fixed
    pp = p[L.PP]
    n_mb = 1.0
    if pp > 1.0:
        n_mb = min(pp, max(n_seq, 1.0))
    s = 1.0 / n_mb
    t = step_cost(p, prefill_tokens * s, pairs * s, prefill_kv * s, n_dec * s, dec_kv * s, logits * s)[0]
    if pp <= 1.0 or t <= 0.0:
        return t
    gpu = t - host_time(p, logits * s)
    hand = p2p_time((prefill_tokens + n_dec) * s * p[L.HIDDEN] * p[L.H_BYTES], p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
    stage = (gpu - (pp - 1.0) * hand) / pp + hand
    return gpu + (n_mb - 1.0) * stage + host_time(p, logits)
