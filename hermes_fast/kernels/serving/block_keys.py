"""Naming KV blocks before the loop: each request's chain of 64-bit block keys (what the prefix cache stores).

A block's key stands for its tokens and every token before them: a block wholly inside a shared prefix is keyed
by (prefix, position), one wholly inside a trace's hashed prompt by the hash ids it overlaps (Mooncake's ids are
chained: equal ids, equal prompts up to there), any other by (its session's token stream, position).
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel

__all__ = ["chain_keys"]


@kernel(inline=True)
def _mix(x):
    """splitmix64's finaliser of a uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@kernel(inline=True)
def _key(kind, a, b, e):
    """A block's 64-bit key (never 0: an empty slot) from its kind (< 8), what names its tokens (a, and b when not
    0) and its position e: ``_mix`` is a bijection, so distinct (kind, a) start distinct."""
    h = _mix(np.uint64(a) * np.uint64(8) + np.uint64(kind))
    if b != 0:
        h = _mix(h ^ np.uint64(b))
    h = _mix(h ^ np.uint64(e))
    return h if h != np.uint64(0) else np.uint64(1)


@kernel
def chain_keys(prompt, output, block, stream, prefix_key, prefix_tokens, h_off, ids, hash_block, offsets, out):
    """Write each request's chain of block keys (uint64) into ``out`` from ``offsets``: its full KV blocks
    (``prompt + output - 1`` tokens), a block wholly inside its prefix keyed by (prefix, position), one wholly
    inside a trace's hashed prompt by the hash ids it overlaps (``h_off``: offsets into ``ids``, one per
    ``hash_block`` tokens; a single 0 offset: none), any other by (its stream, position)."""
    traced = h_off.size > 1
    for i in range(prompt.size):
        m = max(prompt[i] + output[i] - 1, 0) // block
        o = offsets[i]
        for e in range(m):
            end = (e + 1) * block
            if prefix_key[i] >= 0 and end <= prefix_tokens[i]:
                out[o + e] = _key(1, prefix_key[i], 0, e)
            elif traced and end <= prompt[i] and (end - 1) // hash_block < h_off[i + 1] - h_off[i]:
                first = ids[h_off[i] + (e * block) // hash_block]
                out[o + e] = _key(3, first, ids[h_off[i] + (end - 1) // hash_block], e)
            else:
                out[o + e] = _key(2, stream[i], 0, e)
