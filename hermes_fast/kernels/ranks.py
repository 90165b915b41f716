"""How an iteration's work divides over a replica's devices: the busiest device's share of the batch.

Under plain tensor parallelism every device holds a share of every head, so each sees the whole batch. Under
attention data parallelism whole sequences are dealt to the devices; under context parallelism every sequence is
split over the context-parallel groups. The step cost (:mod:`.step`) prices the busiest device's share, which
:func:`rank_work` gives from the batch's totals (the number of prefill chunks recovered from them by
:func:`prefill_chunk_tokens`)."""

from __future__ import annotations

import math

from . import layout as L
from ._jit import kernel

__all__ = ["prefill_chunk_tokens", "busiest_rank_items", "rank_work"]


@kernel
def prefill_chunk_tokens(tokens, pairs, kv_tokens):
    """Tokens per causal prefill chunk, recovered from the batch's totals: n chunks of q tokens after p cached ones
    give kv / tokens = (p + q) / q and pairs / tokens = p + (q + 1) / 2, so q = (pairs / tokens - 1/2) /
    (kv / tokens - 1/2) (exact for chunks of equal size and prefix); 0 where no such shape fits the totals."""
    a = kv_tokens / tokens  # (prefix + chunk) / chunk
    c = pairs / tokens  # keys per query: prefix + (chunk + 1) / 2
    if a <= 0.5 or c <= 0.5:  # fewer keys or pairs than causal chunks have
        return 0.0
    return (c - 0.5) / (a - 0.5)


@kernel
def busiest_rank_items(n, ranks):
    """Whole items (sequences, chunks) the busiest of ``ranks`` ranks holds when n are dealt out: ceil(n / ranks)."""
    return float(math.ceil(n / ranks))


@kernel
def rank_work(p, prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_kv_tokens, logit_seqs):
    """The busiest device's share of an iteration with these totals: (prefill tokens whose GEMMs it runs, prefill
    pairs it attends, prefill keys it reads, decoding sequences whose GEMMs it runs, decode queries it attends,
    decode KV tokens it reads, sequences whose LM-head rows it computes).

    Tensor parallelism: the whole batch (each device holds a share of every head). Attention data parallelism
    (``ATT_DP`` ranks): whole sequences dealt out, the busiest rank holding ceil(n / ranks) of the prefill chunks
    (n recovered from the totals, :func:`prefill_chunk_tokens`; one when none fits) and of the decodes, at their
    mean size (in a mixed batch the two shares are added: an upper bound where they fall on different ranks); the LM
    head stays vocab-parallel over every rank. Context parallelism (``CP`` groups): 1/CP of every
    prompt's tokens and pairs (load-balanced chunks of the sequence), every key passing the ring; a decoding
    sequence's GEMMs and LM head on its home group (ceil(n / CP) of them), its query against 1/CP of its KV on every
    group."""
    dp = p[L.ATT_DP]
    cp = p[L.CP]
    if dp > 1.0:
        own_pre = 0.0
        pairs = 0.0
        keys = 0.0
        if prefill_tokens > 0.0:
            chunk = prefill_chunk_tokens(prefill_tokens, prefill_pairs, prefill_kv_tokens)
            n = max(1.0, math.floor(prefill_tokens / chunk + 0.5)) if chunk > 0.0 else 1.0
            share = busiest_rank_items(n, dp) / n
            own_pre = prefill_tokens * share
            pairs = prefill_pairs * share
            keys = prefill_kv_tokens * share
        own_dec = busiest_rank_items(decode_seqs, dp)
        dec_kv = decode_kv_tokens * own_dec / decode_seqs if decode_seqs > 0.0 else 0.0
        return own_pre, pairs, keys, own_dec, own_dec, dec_kv, logit_seqs
    if cp > 1.0:
        own_dec = busiest_rank_items(decode_seqs, cp)
        lm_rows = busiest_rank_items(logit_seqs, cp)
        return (
            prefill_tokens / cp,
            prefill_pairs / cp,
            prefill_kv_tokens,
            own_dec,
            decode_seqs,
            decode_kv_tokens / cp,
            lm_rows,
        )
    return prefill_tokens, prefill_pairs, prefill_kv_tokens, decode_seqs, decode_seqs, decode_kv_tokens, logit_seqs
