"""Each replica's prefix cache: KV blocks named by the hash chain of their tokens, shared by running requests.

A request's chain is the keys of its full KV blocks, prompt and output (``RQ_PC_LEN`` of them; block j's key is
``pc_key(S, i, j)``, computed from its ``S.pc_chain`` row by :mod:`.block_keys`). A replica's cache is an
open-addressing table (linear probing, backward-shift deletion) of ``T`` slots, a power of two at least four times
its KV blocks; each entry is one physical KV block. Held entries belong to running requests; the others stay
cached on a doubly linked LRU list and are evicted, least recently used first, when KV is needed.

What a request holds is a prefix of its chain (its first ``RQ_PC_REF`` blocks), and a block's key stands for
every token before it, so whoever holds block j + 1 holds block j: the held entries form a tree of chain
prefixes. An entry does not count its holders but ``PC_HELD``: the requests whose held prefix ends there plus
its held children (the entries one block further along a chain), > 0 exactly when someone holds it. Taking or
dropping a prefix then touches only its last block and the blocks whose held state changes, walking back from
the end until one was (or stays) held: a shared system prompt others hold costs one probe, not one a block.

Accounting: ``RP_FREE_BLOCKS`` counts the truly free blocks *and* the unheld entries (reclaimable), so the
rest of the loop allocates as before; the entries that allocations took are evicted lazily, before the table is
next read and before any block comes back (:func:`pc_trim`: while ``RP_PC_UNREF > RP_FREE_BLOCKS``), which evicts
exactly the blocks an eager eviction would. ``RP_KV_TOKENS`` counts a shared entry once. A request's
``RQ_BLOCKS`` counts every block it uses; its first ``RQ_PC_REF`` chain blocks are entries (charged to the free
count once, by the entry, whatever the number of holders), the rest its own. Admission reuses the longest cached
prefix (:func:`pc_lookup`, :func:`pc_acquire`); prefilled blocks become entries at each iteration end and the
rest of its KV when it lets go (:func:`pc_commit`); letting go drops its hold (:func:`pc_release`).
:mod:`.block_keys` names the blocks; :mod:`.cache_table` holds the tables' mechanics and the
second-level tier evicted blocks spill to.
"""

from __future__ import annotations

from .._jit import kernel, prefetch
from .block_keys import pc_key
from .cache_table import tb_append, tb_delete, tb_find, tb_home, tb_prefetch, tb_slot, tb_unlink, tier_put
from .state import (
    PC_DEVICE_LEVEL,
    PC_HELD,
    PC_KEY,
    PC_POS,
    PL_BLOCK,
    PL_PC2_CAP,
    PL_PREFIX,
    RA_PC_EVICTIONS,
    RA_PC_INSERTS,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_UNREF,
    RP_POOL,
    RQ_PC_LEN,
    RQ_PC_REF,
)

__all__ = ["pc_applies", "pc_lookup", "pc_acquire", "pc_commit", "pc_release", "pc_trim"]

AHEAD = 8  # the walks ask for the table entry this many blocks ahead (cold entries: their loads then overlap)
_POS = 32  # PC_POS: request << _POS | block


@kernel(inline=True)
def pc_applies(S, pool, i):
    """Whether ``pool``'s replicas keep a prefix cache and request i has a chain of blocks for it. (Callers write
    ``PREFIX_CACHE and pc_applies(...)``: the compile-time constant must stay in their branch for the loop without
    prefix caches to leave the branch out.)"""
    return S.pool_int[PL_PREFIX, pool] != 0 and S.req_int[RQ_PC_LEN, i] > 0


@kernel
def pc_trim(S, r):
    """Evict replica r's least recently used unheld entries until they fit in its free count (copying them
    to the second-level tier, if the pool has one)."""
    rs = S.rep_int
    ent = S.pc[r]
    mask = ent.shape[0] - 1
    spill = S.pool_int[PL_PC2_CAP, rs[RP_POOL, r]] > 0
    while rs[RP_PC_UNREF, r] > rs[RP_FREE_BLOCKS, r]:
        s = rs[RP_PC_HEAD, r]
        p = ent[s, PC_POS]  # (the next to go are likely its chain's earlier blocks: a release lists a run tail first)
        i, j = p >> _POS, p & ((1 << _POS) - 1)
        if j >= AHEAD:  # (and the slot after it, where its deletion looks next)
            tb_prefetch(ent, pc_key(S, i, j - 1))
            q = tb_home(pc_key(S, i, j - AHEAD), mask)
            prefetch(ent, q)
            prefetch(ent, (q + 1) & mask)
        if spill:  # the second-level tier keeps a copy
            tier_put(S, r, ent[s, PC_KEY])
        tb_unlink(ent, rs, r, s, PC_DEVICE_LEVEL)
        tb_delete(ent, rs, r, s, PC_DEVICE_LEVEL)
        S.rep_float[RA_PC_EVICTIONS, r] += 1.0


@kernel(inline=True)
def _prefetch_next(S, ent, i, lo, mid, hi):
    """Ask for the entries a bisection of request i's chain over [lo, hi) probes in its next two steps, whichever
    way mid's goes (one wait for memory every two steps instead of every step)."""
    for a, b in ((lo, mid), (mid + 1, hi)):
        if a < b:
            m = (a + b) // 2
            tb_prefetch(ent, pc_key(S, i, m))
            if a < m:
                tb_prefetch(ent, pc_key(S, i, (a + m) // 2))
            if m + 1 < b:
                tb_prefetch(ent, pc_key(S, i, (m + 1 + b) // 2))


@kernel
def pc_lookup(S, r, i, most):
    """(blocks, unheld): the leading blocks of request i's chain (at most ``most``) cached on replica r,
    and how many of those no running request holds.

    Both are found by bisection: a chain's cached blocks are always a prefix of it, and so are its held ones.
    A block's key stands for every token before it, so whoever holds block j + 1 holds block j too (and
    lets go of j after j + 1), and the LRU list evicts a chain from its tail. (A walk would probe every block:
    150 per admission in a long chat, and once per replica when routing by cache.)"""
    pc_trim(S, r)
    ent = S.pc[r]
    lo = 0  # blocks [0, lo) cached, [hi, n) not
    hi = min(S.req_int[RQ_PC_LEN, i], most)
    while lo < hi:
        mid = (lo + hi) // 2
        _prefetch_next(S, ent, i, lo, mid, hi)
        if tb_find(ent, pc_key(S, i, mid)) >= 0:
            lo = mid + 1
        else:
            hi = mid
    cached = lo
    lo = 0  # blocks [0, lo) held, [hi, cached) not
    hi = cached
    while lo < hi:
        mid = (lo + hi) // 2
        _prefetch_next(S, ent, i, lo, mid, hi)
        if ent[tb_find(ent, pc_key(S, i, mid)), PC_HELD] > 0:
            lo = mid + 1
        else:
            hi = mid
    return cached, cached - lo


@kernel
def pc_acquire(S, r, i, k):
    """Request i holds the first k blocks of its chain, all cached on replica r (:func:`pc_lookup` said so
    just before). Its held prefix ends at block k - 1; walking back from there, the blocks nobody held leave the
    LRU list, up to the first one held already (it and its prefix gain no holder of their own: see the module
    docstring). The caller charges the free count (those unheld until now leave it)."""
    rs = S.rep_int
    ent = S.pc[r]
    S.req_int[RQ_PC_REF, i] = k
    if k == 0:
        return
    for q in range(max(k - AHEAD, 0), k):
        tb_prefetch(ent, pc_key(S, i, q))
    j = k - 1
    s = tb_find(ent, pc_key(S, i, j))
    was = ent[s, PC_HELD]
    ent[s, PC_HELD] = was + 1  # its held prefix ends here
    while was == 0 and j > 0:  # s was unheld: off the list, and a held child of its parent now
        tb_unlink(ent, rs, r, s, PC_DEVICE_LEVEL)
        j -= 1
        if j >= AHEAD:
            tb_prefetch(ent, pc_key(S, i, j - AHEAD))
        s = tb_find(ent, pc_key(S, i, j))
        was = ent[s, PC_HELD]
        ent[s, PC_HELD] = was + 1
    if was == 0:  # (block 0)
        tb_unlink(ent, rs, r, s, PC_DEVICE_LEVEL)


@kernel
def pc_commit(S, r, i, blocks):
    """Request i's first ``blocks`` full KV blocks are computed on replica r: those of its chain become cache
    entries it holds (its held prefix now ends at the last). A block some other request cached meanwhile is
    shared instead and its own copy freed."""
    ri = S.req_int
    block_count = min(blocks, ri[RQ_PC_LEN, i])
    k = ri[RQ_PC_REF, i]
    if k >= block_count:
        return
    pc_trim(S, r)
    rs = S.rep_int
    ent = S.pc[r]
    parent = -1  # the slot of the block before j
    if k > 0:
        parent = tb_find(ent, pc_key(S, i, k - 1))
        ent[parent, PC_HELD] -= 1  # its held prefix no longer ends there (block k keeps it held)
    inserted = 0
    for q in range(k, min(k + AHEAD, block_count)):
        tb_prefetch(ent, pc_key(S, i, q))
    for j in range(k, block_count):
        if j + AHEAD < block_count:
            tb_prefetch(ent, pc_key(S, i, j + AHEAD))
        h = pc_key(S, i, j)
        s = tb_slot(ent, h)
        newly = True  # held from now on, not before: a held child of its parent
        if ent[s, PC_KEY] == h:  # cached meanwhile: share it, free its own copy
            if ent[s, PC_HELD] == 0:
                tb_unlink(ent, rs, r, s, PC_DEVICE_LEVEL)
            else:  # (the entry is resident already: its own copy is not)
                newly = False
                rs[RP_FREE_BLOCKS, r] += 1
                rs[RP_KV_TOKENS, r] -= S.pool_int[PL_BLOCK, rs[RP_POOL, r]]
        else:  # its block becomes the entry
            ent[s, PC_KEY] = h
            inserted += 1
        if newly and parent >= 0:
            ent[parent, PC_HELD] += 1
        parent = s
    ent[parent, PC_HELD] += 1  # its held prefix ends at the last
    rs[RP_PC_ENTRIES, r] += inserted
    S.rep_float[RA_PC_INSERTS, r] += inserted
    ri[RQ_PC_REF, i] = block_count


@kernel
def pc_release(S, r, i):
    """Request i lets go of its held prefix on replica r: walking back from its last block, the entries nobody
    holds any more go to the LRU list's most recently used end, its chain's last block first (so a chain is
    evicted from its tail, as vLLM frees a request's blocks in reverse order), and count as free again; the walk
    stops at the first entry still held (by another request, or as the parent of a held child). Its own blocks
    are the caller's (``RQ_BLOCKS - RQ_PC_REF``). Returns the entries other requests still hold (still
    resident)."""
    ri = S.req_int
    rs = S.rep_int
    pc_trim(S, r)
    ent = S.pc[r]
    k = ri[RQ_PC_REF, i]
    ri[RQ_PC_REF, i] = 0
    if k == 0:
        return 0
    for q in range(max(k - AHEAD, 0), k):
        tb_prefetch(ent, pc_key(S, i, q))
    j = k - 1
    s = tb_find(ent, pc_key(S, i, j))
    ent[s, PC_HELD] -= 1  # its held prefix ended here
    freed = 0
    while ent[s, PC_HELD] == 0:  # nobody holds it now: listed, and no longer a held child of its parent
        tb_append(ent, rs, r, s, PC_DEVICE_LEVEL)
        ent[s, PC_POS] = (i << _POS) | j
        freed += 1
        if j == 0:
            break
        j -= 1
        if j >= AHEAD:
            tb_prefetch(ent, pc_key(S, i, j - AHEAD))
        s = tb_find(ent, pc_key(S, i, j))
        ent[s, PC_HELD] -= 1
    rs[RP_FREE_BLOCKS, r] += freed
    return k - freed
