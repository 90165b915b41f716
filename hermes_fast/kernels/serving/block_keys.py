"""Naming KV blocks: each block's 64-bit key (what the prefix cache stores), computed where the cache needs it.

A block's key stands for its tokens and every token before them: a block wholly inside a shared prefix is keyed
by (prefix, position), one wholly inside a trace's hashed prompt by the hash ids it overlaps (Mooncake's ids are
chained: equal ids, equal prompts up to there), any other by (its session's token stream, position). A request's
chain is described by one row of ``S.pc_chain`` (``CH_*``, filled before the loop by :func:`chain_rows`), and
:func:`chain_key` computes block e's key from it: one splitmix round (two multiplies), where stored chains cost 8
bytes a block (1.3 GB for a million chat requests) and a cold read.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .state import CH_PREFIX, CH_PREFIX_BLOCKS, CH_STREAM, CH_TRACE_BLOCKS, CH_TRACE_OFF, G_PC_BLOCK, G_PC_HASH_BLOCK

__all__ = ["chain_rows", "chain_key", "write_chain_keys", "pc_key"]

_PREFIX_KIND, _STREAM_KIND, _TRACE_KIND = 1, 2, 3  # (< 8: a kind and what it names share one word)


@kernel(inline=True)
def _mix(x):
    """splitmix64's finaliser of a uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@kernel(inline=True)
def _named(kind, a):
    """The start of a key: what names the tokens (a >= 0) and its kind; ``_mix`` is a bijection, so distinct
    (kind, a) start distinct."""
    return _mix(np.uint64(a) * np.uint64(8) + np.uint64(kind))


@kernel(inline=True)
def _at(h, e):
    """A key from its start h and the block's position e (never 0: an empty table slot), as int64."""
    k = np.int64(_mix(h ^ np.uint64(e)))
    return k if k != 0 else 1


@kernel
def chain_rows(prompt, output, block, stream, prefix_key, prefix_tokens, h_off, hash_block, chains, lengths):
    """Fill each request's ``chains`` row (``CH_*``) and its chain length (``lengths``: its full KV blocks,
    ``prompt + output - 1`` tokens). ``prefix_key`` -1: no prefix; ``h_off``: offsets of each request's trace hash
    ids, one per ``hash_block`` prompt tokens (a single 0 offset: no trace)."""
    traced = h_off.size > 1
    for i in range(prompt.size):
        lengths[i] = max(prompt[i] + output[i] - 1, 0) // block
        if prefix_key[i] >= 0:
            chains[i, CH_PREFIX] = np.int64(_named(_PREFIX_KIND, prefix_key[i]))
            chains[i, CH_PREFIX_BLOCKS] = prefix_tokens[i] // block
        if traced:
            chains[i, CH_TRACE_OFF] = h_off[i]
            chains[i, CH_TRACE_BLOCKS] = min(prompt[i], (h_off[i + 1] - h_off[i]) * hash_block) // block
        chains[i, CH_STREAM] = np.int64(_named(_STREAM_KIND, stream[i]))


@kernel(inline=True)
def chain_key(chains, ids, block, hash_block, i, e):
    """The key of block e of request i's chain (``chains``: the ``CH_*`` rows; ``ids``: trace hash ids)."""
    if e < chains[i, CH_PREFIX_BLOCKS]:
        return _at(np.uint64(chains[i, CH_PREFIX]), e)
    if e < chains[i, CH_TRACE_BLOCKS]:
        o = chains[i, CH_TRACE_OFF]
        h = _named(_TRACE_KIND, ids[o + e * block // hash_block])
        last = ids[o + ((e + 1) * block - 1) // hash_block]
        if last != 0:
            h = _mix(h ^ np.uint64(last))
        return _at(h, e)
    return _at(np.uint64(chains[i, CH_STREAM]), e)


@kernel
def write_chain_keys(chains, ids, block, hash_block, i, out):
    """Write the first ``out.size`` keys of request i's chain into ``out`` (tests and inspection; the loop computes
    each where it needs it)."""
    for e in range(out.size):
        out[e] = chain_key(chains, ids, block, hash_block, i, e)


@kernel(inline=True)
def pc_key(S, i, e):
    """The key of block e of request i's chain, in the loop."""
    return chain_key(S.pc_chain, S.pc_ids, S.glob[G_PC_BLOCK], S.glob[G_PC_HASH_BLOCK], i, e)
