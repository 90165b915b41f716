"""Each replica's prefix cache: KV blocks named by the hash chain of their tokens, shared by reference counts.

A request carries the hash chain of its full KV blocks (``S.pc_hash[RQ_PC_OFF : RQ_PC_OFF + RQ_PC_LEN]``,
prompt and output; built in Python before the loop). A replica's cache is an open-addressing table (linear
probing, backward-shift deletion) of ``T`` slots, a power of two at least twice its KV blocks; each entry is
one physical KV block with a reference count. Referenced entries belong to running requests; unreferenced
ones stay cached on a doubly linked LRU list and are evicted, least recently used first, when KV is needed.

Accounting: ``RP_FREE_BLOCKS`` counts the truly free blocks *and* the unreferenced entries (reclaimable), so the
rest of the loop allocates as before; the entries that allocations took are evicted lazily, before the table is
next read and before any block comes back (:func:`pc_trim`: while ``RP_PC_UNREF > RP_FREE_BLOCKS``), which evicts
exactly the blocks an eager eviction would. ``RP_KV_TOKENS`` counts a shared entry once. A request's
``RQ_BLOCKS`` counts every block it uses; its first ``RQ_PC_REF`` chain blocks are entries (charged to the free
count once, by the entry, whatever the number of holders), the rest its own. Admission reuses the longest cached
prefix (:func:`pc_lookup`, :func:`pc_acquire`); prefilled blocks become entries at each iteration end and the
rest of its KV when it lets go (:func:`pc_commit`); letting go drops its references (:func:`pc_release`).
:func:`chain_keys` names the blocks, before the loop.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .state import (
    PC_EMPTY,
    PC_KEY,
    PC_NEXT,
    PC_PREV,
    PC_REF,
    PC_ROWS,
    PL_BLOCK,
    RA_PC_EVICTIONS,
    RA_PC_INSERTS,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_TAIL,
    RP_PC_UNREF,
    RP_POOL,
    RQ_PC_LEN,
    RQ_PC_OFF,
    RQ_PC_REF,
)

__all__ = ["pc_lookup", "pc_acquire", "pc_commit", "pc_release", "pc_trim", "pc_find", "chain_keys"]


@kernel(inline=True)
def _home(h, mask):
    """The home slot of hash h (its low bits after a multiplicative mix)."""
    return ((int(h) * -7046029254386353131) >> 17) & mask


@kernel(inline=True)
def _find(keys, mask, h):
    """Slot of a table's ``keys`` holding hash h, or -1 (the hot loops take the arrays, not the state)."""
    s = _home(h, mask)
    while True:
        k = keys[s]
        if k == h:
            return s
        if k == PC_EMPTY:
            return -1
        s = (s + 1) & mask


@kernel
def pc_find(S, r, h):
    """Slot of replica r's table holding hash h, or -1."""
    return _find(S.pc[PC_KEY, r], S.pc.shape[2] - 1, h)


@kernel(inline=True)
def _unlink(pc, rs, r, s):
    """Take entry s off replica r's LRU list."""
    p = pc[PC_PREV, r, s]
    n = pc[PC_NEXT, r, s]
    if p >= 0:
        pc[PC_NEXT, r, p] = n
    else:
        rs[RP_PC_HEAD, r] = n
    if n >= 0:
        pc[PC_PREV, r, n] = p
    else:
        rs[RP_PC_TAIL, r] = p
    rs[RP_PC_UNREF, r] -= 1


@kernel(inline=True)
def _append(pc, rs, r, s):
    """Put entry s at the most recently used end of replica r's LRU list."""
    tail = rs[RP_PC_TAIL, r]
    pc[PC_PREV, r, s] = tail
    pc[PC_NEXT, r, s] = -1
    if tail >= 0:
        pc[PC_NEXT, r, tail] = s
    else:
        rs[RP_PC_HEAD, r] = s
    rs[RP_PC_TAIL, r] = s
    rs[RP_PC_UNREF, r] += 1


@kernel
def _delete(pc, rs, r, s):
    """Empty slot s of replica r's table (backward-shift deletion: later probes move up; list links follow)."""
    mask = pc.shape[2] - 1
    hole = s
    j = s
    while True:
        j = (j + 1) & mask
        k = pc[PC_KEY, r, j]
        if k == PC_EMPTY:
            break
        home = _home(k, mask)
        if ((j - home) & mask) < ((j - hole) & mask):  # its home is not in (hole, j]: it may move to the hole
            continue
        for row in range(PC_ROWS):
            pc[row, r, hole] = pc[row, r, j]
        if pc[PC_REF, r, hole] == 0:  # an unreferenced entry: its list neighbours point at its new slot
            p = pc[PC_PREV, r, hole]
            n = pc[PC_NEXT, r, hole]
            if p >= 0:
                pc[PC_NEXT, r, p] = hole
            else:
                rs[RP_PC_HEAD, r] = hole
            if n >= 0:
                pc[PC_PREV, r, n] = hole
            else:
                rs[RP_PC_TAIL, r] = hole
        hole = j
    pc[PC_KEY, r, hole] = PC_EMPTY
    pc[PC_REF, r, hole] = 0
    rs[RP_PC_ENTRIES, r] -= 1


@kernel
def pc_trim(S, r):
    """Evict replica r's least recently used unreferenced entries until they fit in its free count."""
    rs = S.rep_int
    pc = S.pc
    while rs[RP_PC_UNREF, r] > rs[RP_FREE_BLOCKS, r]:
        s = rs[RP_PC_HEAD, r]
        _unlink(pc, rs, r, s)
        _delete(pc, rs, r, s)
        S.rep_float[RA_PC_EVICTIONS, r] += 1.0


@kernel
def pc_lookup(S, r, i, most):
    """(blocks, unreferenced): the leading blocks of request i's chain (at most ``most``) cached on replica r,
    and how many of those no running request references."""
    pc_trim(S, r)
    ri = S.req_int
    keys = S.pc[PC_KEY, r]
    refs = S.pc[PC_REF, r]
    mask = S.pc.shape[2] - 1
    hashes = S.pc_hash
    off = ri[RQ_PC_OFF, i]
    n = min(ri[RQ_PC_LEN, i], most)
    unref = 0
    for j in range(n):
        s = _find(keys, mask, hashes[off + j])
        if s < 0:
            return j, unref
        if refs[s] == 0:
            unref += 1
    return n, unref


@kernel
def pc_acquire(S, r, i, k):
    """Request i references the first k blocks of its chain, all cached on replica r (:func:`pc_lookup` said
    so just before). The caller charges the free count (those unreferenced until now leave it)."""
    ri = S.req_int
    rs = S.rep_int
    pc = S.pc
    keys = pc[PC_KEY, r]
    mask = pc.shape[2] - 1
    hashes = S.pc_hash
    off = ri[RQ_PC_OFF, i]
    for j in range(k):
        s = _find(keys, mask, hashes[off + j])
        if pc[PC_REF, r, s] == 0:
            _unlink(pc, rs, r, s)
        pc[PC_REF, r, s] += 1
    ri[RQ_PC_REF, i] = k


@kernel
def pc_commit(S, r, i, blocks):
    """Request i's first ``blocks`` full KV blocks are computed on replica r: those of its chain become cache
    entries it references. A block some other request cached meanwhile is shared instead and its own copy
    freed."""
    ri = S.req_int
    block_count = min(blocks, ri[RQ_PC_LEN, i])
    k = ri[RQ_PC_REF, i]
    if k >= block_count:
        return
    pc_trim(S, r)
    pc = S.pc
    rs = S.rep_int
    keys = pc[PC_KEY, r]
    mask = pc.shape[2] - 1
    hashes = S.pc_hash
    off = ri[RQ_PC_OFF, i]
    inserted = 0
    for j in range(k, block_count):
        h = hashes[off + j]
        s = _home(h, mask)
        while keys[s] != h and keys[s] != PC_EMPTY:
            s = (s + 1) & mask
        if keys[s] == h:  # cached meanwhile: share it, free its own copy
            if pc[PC_REF, r, s] == 0:
                _unlink(pc, rs, r, s)
            else:  # (the entry is resident already: its own copy is not)
                rs[RP_FREE_BLOCKS, r] += 1
                rs[RP_KV_TOKENS, r] -= S.pool_int[PL_BLOCK, rs[RP_POOL, r]]
        else:  # its block becomes the entry
            keys[s] = h
            inserted += 1
        pc[PC_REF, r, s] += 1
    rs[RP_PC_ENTRIES, r] += inserted
    S.rep_float[RA_PC_INSERTS, r] += inserted
    ri[RQ_PC_REF, i] = block_count


@kernel
def pc_release(S, r, i):
    """Request i drops its references on replica r: entries nobody references go to the LRU list's most
    recently used end, its chain's last block first (so a chain is evicted from its tail, as vLLM frees a
    request's blocks in reverse order), and count as free again. Its own blocks are the caller's
    (``RQ_BLOCKS - RQ_PC_REF``). Returns the entries other requests still reference (still resident)."""
    ri = S.req_int
    rs = S.rep_int
    pc = S.pc
    keys = pc[PC_KEY, r]
    mask = pc.shape[2] - 1
    hashes = S.pc_hash
    off = ri[RQ_PC_OFF, i]
    pc_trim(S, r)
    freed = 0
    for j in range(ri[RQ_PC_REF, i] - 1, -1, -1):  # the chain's tail first: evicted before its prefix (vLLM)
        s = _find(keys, mask, hashes[off + j])
        pc[PC_REF, r, s] -= 1
        if pc[PC_REF, r, s] == 0:
            _append(pc, rs, r, s)
            freed += 1
    rs[RP_FREE_BLOCKS, r] += freed
    still = ri[RQ_PC_REF, i] - freed
    ri[RQ_PC_REF, i] = 0
    return still


# ---------------------------------------------------------------- naming blocks (before the loop)


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
