"""Shared prefixes, multi-turn sessions, and the KV-block hash chains the prefix cache names blocks by.

Requests are token streams: a request's prompt is its prefix's tokens (shared by every request with that prefix),
then its session's own tokens (earlier turns' prompts and answers, then its new user tokens); its answer follows.
A KV block of ``block`` tokens is named by a 64-bit key of what determines all its tokens *and those before it*
(a hash chain, as vLLM's block hashes): a block wholly inside prefix p at position e is ``(prefix p, e)``; any
other block of a session's stream s is ``(stream s, e)``; with a trace's hash ids (Mooncake: one per 512 prompt
tokens, equal ids meaning equal prompts up to there), a block wholly inside the hashed prompt is named by the ids
it overlaps. :func:`block_chains`, called before the loop, describes each request's chain in a few numbers (its
prefix, stream and trace ids); the loop computes a block's key from them where it needs it
(:mod:`hermes_fast.kernels.serving.block_keys`).
"""

from __future__ import annotations

import numpy as np

from .kernels.serving.block_keys import chain_rows, write_chain_keys
from .kernels.serving.state import CHAIN_ROWS

__all__ = ["session_layout", "block_chains", "chain_keys", "hash_mix"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x + _GOLD).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_mix(*parts) -> np.ndarray:
    """A 64-bit key (int64, never 0) of the integer arrays ``parts``, element-wise (splitmix64 chained).

    Examples
    --------
    >>> from hermes_fast.sessions import hash_mix
    >>> a = hash_mix(np.array([1, 2]), np.array([7, 7]))
    >>> bool(a[0] != a[1]), bool((hash_mix(np.array([1]), np.array([7])) == a[0]).all())
    (True, True)
    """
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast(*parts).shape, dtype=np.uint64)
        for p in parts:
            h = _splitmix(h ^ np.asarray(p).astype(np.int64).astype(np.uint64))
    out = h.view(np.int64)
    out[out == 0] = 1  # (0 marks an empty slot of the loop's table)
    return out


def session_layout(turns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the turns of sessions with ``turns[s]`` turns go among ``n`` requests (the last session cut short).

    First turns come first, in session order (they arrive by the arrival process); later turns follow, session
    by session (they are sent when the previous answer is read). Returns (session of each request, its turn
    (0-based), its index in that order: request index of (session s, turn k) is ``index[start[s] + k]``).

    Examples
    --------
    >>> from hermes_fast.sessions import session_layout
    >>> sess, turn, index = session_layout(np.array([2, 1, 3]), 5)
    >>> sess.tolist(), turn.tolist()
    ([0, 1, 2, 0, 2], [0, 0, 0, 1, 1])
    """
    cum = np.cumsum(turns)
    n_sess = int(np.searchsorted(cum, n) + 1)
    t = turns[:n_sess].copy()
    t[-1] -= int(cum[n_sess - 1] - n)
    sess_major = np.repeat(np.arange(n_sess), t)
    start = np.concatenate([[0], np.cumsum(t)[:-1]])
    turn_major = np.arange(n) - start[sess_major]
    first = turn_major == 0
    order = np.concatenate([np.flatnonzero(first), np.flatnonzero(~first)])  # request i is session-major order[i]
    index = np.empty(n, dtype=np.int64)
    index[order] = np.arange(n)
    return sess_major[order], turn_major[order], index


def block_chains(
    prompt: np.ndarray,
    output: np.ndarray,
    block: int,
    stream: np.ndarray,
    prefix_key: np.ndarray,
    prefix_tokens: np.ndarray,
    hash_ids: tuple[np.ndarray, np.ndarray] | None = None,
    hash_block_tokens: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What names each request's KV blocks: its chain over its full blocks (prompt, then answer: ``prompt + output
    - 1`` tokens have KV when it ends). Returns (chains: int64[n, CHAIN_ROWS], the rows block keys are computed
    from; lengths: blocks per chain; ids: the trace's hash ids the rows point into).

    ``stream``: each request's token stream (its session); ``prefix_key`` (-1: none) and ``prefix_tokens``: its
    prefix; ``hash_ids``: (offsets[n + 1], ids) of a trace's prompt block hashes of ``hash_block_tokens`` tokens.

    Examples
    --------
    >>> from hermes_fast.sessions import block_chains, chain_keys
    >>> one = np.ones(2, dtype=np.int64)
    >>> chains, n, ids = block_chains(np.array([40, 40]), one, 16, np.array([0, 1]), np.array([5, 5]), 32 * one)
    >>> a, b = (chain_keys(chains, ids, 16, 512, i, 2) for i in (0, 1))
    >>> n.tolist(), a.tolist() == b.tolist()  # two blocks each, both in the prefix
    ([2, 2], True)
    """
    n = prompt.size
    chains, lengths = np.zeros((n, CHAIN_ROWS), dtype=np.int64), np.zeros(n, dtype=np.int64)
    h_off, ids = hash_ids if hash_ids is not None else (np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    i64 = [np.ascontiguousarray(x, dtype=np.int64) for x in (prompt, output, stream, prefix_key, prefix_tokens)]
    h_off, ids = np.ascontiguousarray(h_off, dtype=np.int64), np.ascontiguousarray(ids, dtype=np.int64)
    chain_rows.jit(*i64[:2], block, *i64[2:], h_off, hash_block_tokens, chains, lengths)
    return chains, lengths, ids


def chain_keys(chains: np.ndarray, ids: np.ndarray, block: int, hash_block_tokens: int, i: int, n: int) -> np.ndarray:
    """The first ``n`` block keys (int64) of request i's chain (:func:`block_chains`), as the loop computes them."""
    out = np.zeros(n, dtype=np.int64)
    write_chain_keys.jit(chains, ids if ids.size else np.zeros(1, np.int64), block, hash_block_tokens, i, out)
    return out
