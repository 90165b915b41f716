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
:mod:`.block_keys` names the blocks, before the loop; :mod:`.cache_table` holds the tables' mechanics and the
second-level tier evicted blocks spill to.
"""

from __future__ import annotations

from .._jit import kernel
from .cache_table import tb_append, tb_delete, tb_find, tb_home, tb_unlink, tier_put
from .state import (
    PC_DEVICE_LEVEL,
    PC_EMPTY,
    PC_KEY,
    PC_REF,
    PL_BLOCK,
    PL_PC2_CAP,
    RA_PC_EVICTIONS,
    RA_PC_INSERTS,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_UNREF,
    RP_POOL,
    RQ_PC_LEN,
    RQ_PC_OFF,
    RQ_PC_REF,
)

__all__ = ["pc_lookup", "pc_acquire", "pc_commit", "pc_release", "pc_trim", "pc_find"]


@kernel
def pc_find(S, r, h):
    """Slot of replica r's table holding hash h, or -1."""
    return tb_find(S.pc[PC_KEY, r], S.pc.shape[2] - 1, h)


@kernel
def pc_trim(S, r):
    """Evict replica r's least recently used unreferenced entries until they fit in its free count (copying them
    to the second-level tier, if the pool has one)."""
    rs = S.rep_int
    pc = S.pc
    spill = S.pool_int[PL_PC2_CAP, rs[RP_POOL, r]] > 0
    while rs[RP_PC_UNREF, r] > rs[RP_FREE_BLOCKS, r]:
        s = rs[RP_PC_HEAD, r]
        if spill:  # the second-level tier keeps a copy
            tier_put(S, r, pc[PC_KEY, r, s])
        tb_unlink(pc, rs, r, s, PC_DEVICE_LEVEL)
        tb_delete(pc, rs, r, s, PC_DEVICE_LEVEL)
        S.rep_float[RA_PC_EVICTIONS, r] += 1.0


@kernel
def pc_lookup(S, r, i, most):
    """(blocks, unreferenced): the leading blocks of request i's chain (at most ``most``) cached on replica r,
    and how many of those no running request references.

    Both are found by bisection: a chain's cached blocks are always a prefix of it, and so are its referenced
    ones. A block's key stands for every token before it, so whoever holds block j + 1 holds block j too (and
    lets go of j after j + 1), and the LRU list evicts a chain from its tail. (A walk would probe every block:
    150 per admission in a long chat, and once per replica when routing by cache.)"""
    pc_trim(S, r)
    keys = S.pc[PC_KEY, r]
    refs = S.pc[PC_REF, r]
    mask = S.pc.shape[2] - 1
    hashes = S.pc_hash
    off = S.req_int[RQ_PC_OFF, i]
    lo = 0  # blocks [0, lo) cached, [hi, n) not
    hi = min(S.req_int[RQ_PC_LEN, i], most)
    while lo < hi:
        mid = (lo + hi) // 2
        if tb_find(keys, mask, hashes[off + mid]) >= 0:
            lo = mid + 1
        else:
            hi = mid
    cached = lo
    lo = 0  # blocks [0, lo) referenced, [hi, cached) not
    hi = cached
    while lo < hi:
        mid = (lo + hi) // 2
        if refs[tb_find(keys, mask, hashes[off + mid])] > 0:
            lo = mid + 1
        else:
            hi = mid
    return cached, cached - lo


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
        s = tb_find(keys, mask, hashes[off + j])
        if pc[PC_REF, r, s] == 0:
            tb_unlink(pc, rs, r, s, PC_DEVICE_LEVEL)
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
        s = tb_home(h, mask)
        while keys[s] != h and keys[s] != PC_EMPTY:
            s = (s + 1) & mask
        if keys[s] == h:  # cached meanwhile: share it, free its own copy
            if pc[PC_REF, r, s] == 0:
                tb_unlink(pc, rs, r, s, PC_DEVICE_LEVEL)
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
        s = tb_find(keys, mask, hashes[off + j])
        pc[PC_REF, r, s] -= 1
        if pc[PC_REF, r, s] == 0:
            tb_append(pc, rs, r, s, PC_DEVICE_LEVEL)
            freed += 1
    rs[RP_FREE_BLOCKS, r] += freed
    still = ri[RQ_PC_REF, i] - freed
    ri[RQ_PC_REF, i] = 0
    return still
