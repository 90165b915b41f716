"""One engine iteration's time for a batch given by its totals, pipeline-parallel micro-batches included.

With ``pp`` pipeline stages an engine splits its batch into n = min(pp, sequences) micro-batches, each
passing every stage in turn (a stage: 1/pp of the layers, then a hand-off of the hidden states to the next).
Real engines keep the micro-batches in flight across iterations (vLLM's virtual engines, TensorRT-LLM's
micro-batch scheduler): once the pipeline is full, a micro-batch's next iteration starts as soon as it
leaves the last stage and the first stage is free, so consecutive iterations end max(traversal, n x stage)
apart. An iteration that starts from an idle engine first fills the pipeline: its last micro-batch leaves
after traversal + (n - 1) x stage. The engine's host work (:func:`~hermes_fast.kernels.step.host_time`) is
paid once per iteration for the whole batch. ``estimate`` prices zero-load prefill as a fill and decode
steps as pipelined; the serving loop decides per iteration (:mod:`hermes_fast.kernels.serving.boundary`).
"""

from __future__ import annotations

from . import layout as L
from ._jit import kernel
from .collectives import p2p_time
from .ranks import busiest_rank_items
from .step import host_time, step_cost

__all__ = ["micro_batches", "pipelined", "graph_batch", "iteration_time"]


@kernel
def micro_batches(p, n_seq):
    """Micro-batches an iteration of ``n_seq`` sequences runs as: min(pp, n_seq), at least 1."""
    pp = p[L.PP]
    if pp <= 1.0:
        return 1.0
    return min(pp, max(n_seq, 1.0))


@kernel
def pipelined(p, mb_total_s, mb_logits, logits, mb_tokens, n_mb, in_flight):
    """Seconds of an iteration of ``n_mb`` micro-batches, each costing ``mb_total_s`` (its step cost with
    ``mb_logits`` sequences' host work) and moving ``mb_tokens`` tokens' hidden states between stages;
    ``logits``: sequences of the whole batch. ``in_flight``: the pipeline is full (the engine's previous
    iteration ended just now), else it fills."""
    pp = p[L.PP]
    gpu = mb_total_s - host_time(p, mb_logits)
    hand = p2p_time(mb_tokens * p[L.HIDDEN] * p[L.H_BYTES], p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
    stage = (gpu - (pp - 1.0) * hand) / pp + hand
    if in_flight:
        return max(gpu, n_mb * stage) + host_time(p, logits)
    return gpu + (n_mb - 1.0) * stage + host_time(p, logits)


@kernel
def graph_batch(p, prefill_tokens, decode_seqs):
    """(sequences a micro-batch's GEMMs and sampling run at, seconds of eager kernel launches it adds) under the
    stack's CUDA graphs (``layout.GRAPH_*``): a decode-only micro-batch is padded to the next captured size
    (padding rows hold no KV; without padding only an exact size runs as a graph); above the largest, or with
    prefill unless mixed batches are captured, it runs eagerly. Without graphs: (decode_seqs, 0). Under attention
    data parallelism each rank's batch runs its own graph: every rank is padded to the size the busiest rank's
    ceil(decode_seqs / ranks) sequences need."""
    n = int(p[L.GRAPH_COUNT])
    if n == 0:
        return decode_seqs, 0.0
    if prefill_tokens > 0.0:
        return decode_seqs, 0.0 if p[L.GRAPH_MIXED] > 0.0 else p[L.GRAPH_EAGER_S]
    ranks = p[L.ATT_DP]
    batch = decode_seqs if ranks <= 1.0 else busiest_rank_items(decode_seqs, ranks)
    for k in range(n):
        size = p[L.GRAPH_SIZES + k]
        if size >= batch:
            if size == batch or p[L.GRAPH_EXACT] == 0.0:
                return size if ranks <= 1.0 else size * ranks, 0.0
            break
    return decode_seqs, p[L.GRAPH_EAGER_S]


@kernel
def iteration_time(p, prefill_tokens, pairs, prefill_kv, n_dec, dec_kv, logits, n_seq, in_flight):
    """Seconds of one iteration of a replica whose batch has these totals (see the module docstring)."""
    fixed = p[L.FIXED_STEP_S]
    if fixed > 0.0:
        return fixed
    n_mb = micro_batches(p, n_seq)
    s = 1.0 / n_mb
    mb_prefill, mb_dec, mb_logits = prefill_tokens * s, n_dec * s, logits * s
    mb_tokens = (prefill_tokens + n_dec) * s
    padded, eager = graph_batch(p, mb_prefill, mb_dec)
    if padded != mb_dec:  # (a decode-only micro-batch: every padded row runs, and samples)
        mb_dec, mb_logits, mb_tokens, logits = padded, padded, padded, padded * n_mb
    t = step_cost(p, mb_prefill, pairs * s, prefill_kv * s, mb_dec, dec_kv * s, mb_logits)[0] + eager
    if p[L.PP] <= 1.0 or t <= 0.0:
        return t
    return pipelined(p, t, mb_logits, logits, mb_tokens, n_mb, in_flight)
