"""Each replica's prefix cache: KV blocks named by the hash chain of their tokens, in a radix tree of runs.

A request's chain is the keys of its full KV blocks, prompt and output (``RQ_PC_LEN`` of them; block j's key is
``pc_key(S, i, j)``, computed from its ``S.pc_chain`` row by :mod:`.block_keys`). A key stands for every token
before it, so block j sits at position j of every chain through it, and chains sharing a block share all before.

A replica's cache is two tables. ``S.pc`` maps each cached block's key to its node (an open-addressing table of
``T`` slots, a power of two at least four times its KV blocks; an entry is one physical KV block). ``S.pcn`` holds
the nodes: a node is a run of blocks [``PN_START``, ``PN_END``) of every chain through it, under a parent that
holds block ``PN_START`` - 1, with one state for all its blocks; together they are a radix tree over the chains,
as SGLang's. A node splits where a holder's prefix ends inside it or a chain leaves it (:func:`_split_node`: its lower
part becomes a new parent) and grows in place while one request computes on at its end.

What a request holds is a prefix of its chain (its first ``RQ_PC_REF`` blocks), ending at the end of a node
(``RQ_PC_NODE``); whoever holds a node holds its ancestors. A node does not count its holders but ``PN_HELD``: the
requests whose held prefix ends there plus its held children, > 0 exactly when someone holds its blocks. Taking or
dropping a prefix walks up only the nodes whose state changes: a turn's history is a node or a few, not a hundred
blocks.

Unheld nodes sit on a doubly linked LRU list in the order they were let go, and are evicted, least recently used
first, one block at a time from their end (as vLLM frees a request's blocks in reverse order, so a chain is evicted
from its tail). A node is let go when its last held child is, so it is listed after its children: the head is a leaf,
and block by block the list is exactly that of a cache that lists blocks.

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
from .cache_table import (
    lru_append,
    lru_insert_after,
    lru_remove,
    tb_delete,
    tb_find,
    tb_home,
    tb_prefetch,
    tb_slot,
    tier_put,
)
from .state import (
    PC_DEVICE_LEVEL,
    PC_KEY,
    PC_LINKS,
    PC_NODE,
    PL_BLOCK,
    PL_PC2_CAP,
    PL_PREFIX,
    PN_END,
    PN_HELD,
    PN_KIDS,
    PN_OWNER,
    PN_PARENT,
    PN_START,
    RA_PC_EVICTIONS,
    RA_PC_INSERTS,
    RP_FREE_BLOCKS,
    RP_KV_TOKENS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_UNREF,
    RP_PN_FREE,
    RP_PN_FRESH,
    RP_POOL,
    RP_RELEASED,
    RQ_PC_LEN,
    RQ_PC_NODE,
    RQ_PC_REF,
)

__all__ = ["pc_applies", "pc_lookup", "pc_acquire", "pc_commit", "pc_release", "pc_trim", "return_blocks"]

AHEAD = 8  # the walks ask for the table entry this many blocks ahead (cold entries: their loads then overlap)


@kernel(inline=True)
def return_blocks(rs, r, n):
    """``n`` KV blocks go back to replica r's free pool, at the back of its order (``RP_RELEASED`` counts them:
    allocations take the oldest returned first, see :func:`hermes_fast.kernels.serving.kv.kept_blocks`)."""
    rs[RP_FREE_BLOCKS, r] += n
    rs[RP_RELEASED, r] += n


@kernel(inline=True)
def pc_applies(S, pool, i):
    """Whether ``pool``'s replicas keep a prefix cache and request i has a chain of blocks for it. (Callers write
    ``PREFIX_CACHE and pc_applies(...)``: the compile-time constant must stay in their branch for the loop without
    prefix caches to leave the branch out.)"""
    return S.pool_int[PL_PREFIX, pool] != 0 and S.req_int[RQ_PC_LEN, i] > 0


@kernel
def _node_new(S, r, owner, start, end, parent):
    """A node of replica r for blocks [start, end) of ``owner``'s chain under ``parent`` (-1: none), unheld and
    childless, from the free list or a fresh one."""
    rs = S.rep_int
    nd = S.pcn[r]
    n = rs[RP_PN_FREE, r]
    if n >= 0:
        rs[RP_PN_FREE, r] = nd[n, PN_PARENT]
    else:
        n = rs[RP_PN_FRESH, r]
        rs[RP_PN_FRESH, r] = n + 1
    nd[n, PN_OWNER] = owner
    nd[n, PN_START] = start
    nd[n, PN_END] = end
    nd[n, PN_PARENT] = parent
    nd[n, PN_HELD] = 0
    nd[n, PN_KIDS] = 0
    nd[n, PC_LINKS] = 0
    return n


@kernel
def _split_node(S, r, n, at):
    """Node n of replica r splits before block ``at`` (inside it): its blocks before ``at`` go to a new node, its
    new parent, which is returned; n keeps the rest, its children and its place on the LRU list (an unheld new
    parent follows it there: a chain is let go tail first). The moved blocks are relabelled."""
    nd = S.pcn[r]
    ent = S.pc[r]
    owner = nd[n, PN_OWNER]
    start = nd[n, PN_START]
    p = _node_new(S, r, owner, start, at, nd[n, PN_PARENT])
    held = nd[n, PN_HELD] > 0
    nd[p, PN_KIDS] = 1
    nd[p, PN_HELD] = 1 if held else 0  # (n, its held child)
    nd[n, PN_START] = at
    nd[n, PN_PARENT] = p
    for q in range(start, min(start + AHEAD, at)):
        tb_prefetch(ent, pc_key(S, owner, q))
    for j in range(start, at):
        if j + AHEAD < at:
            tb_prefetch(ent, pc_key(S, owner, j + AHEAD))
        ent[tb_find(ent, pc_key(S, owner, j)), PC_NODE] = p
    if not held:
        lru_insert_after(nd, S.rep_int, r, p, n, PC_DEVICE_LEVEL)
    return p


@kernel
def pc_trim(S, r):
    """Evict replica r's least recently used unheld entries until they fit in its free count (copying them
    to the second-level tier, if the pool has one): the last block of the head node, which a fully evicted node
    leaves."""
    rs = S.rep_int
    ent = S.pc[r]
    nd = S.pcn[r]
    mask = ent.shape[0] - 1
    spill = S.pool_int[PL_PC2_CAP, rs[RP_POOL, r]] > 0
    while rs[RP_PC_UNREF, r] > rs[RP_FREE_BLOCKS, r]:
        n = rs[RP_PC_HEAD, r]
        owner = nd[n, PN_OWNER]
        j = nd[n, PN_END] - 1
        if j >= AHEAD:  # (the next to go are likely its earlier blocks, and the slot after, where deletion looks)
            tb_prefetch(ent, pc_key(S, owner, j - 1))
            q = tb_home(pc_key(S, owner, j - AHEAD), mask)
            prefetch(ent, q)
            prefetch(ent, (q + 1) & mask)
        h = pc_key(S, owner, j)
        if spill:  # the second-level tier keeps a copy
            tier_put(S, r, h)
        tb_delete(ent, rs, r, tb_find(ent, h), PC_DEVICE_LEVEL, False)
        rs[RP_PC_UNREF, r] -= 1
        S.rep_float[RA_PC_EVICTIONS, r] += 1.0
        nd[n, PN_END] = j
        if j == nd[n, PN_START]:  # the node is gone: off the list, and its parent's child no more
            lru_remove(nd, rs, r, n, PC_DEVICE_LEVEL)
            parent = nd[n, PN_PARENT]
            if parent >= 0:
                nd[parent, PN_KIDS] -= 1
            nd[n, PN_PARENT] = rs[RP_PN_FREE, r]
            rs[RP_PN_FREE, r] = n


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

    The cached blocks are found by bisection: a chain's cached blocks are always a prefix of it (the LRU list
    evicts a chain from its tail). (A walk would probe every block: 150 per admission in a long chat, and once per
    replica when routing by cache.) The held ones end where the last cached block's first held ancestor does."""
    pc_trim(S, r)
    ent = S.pc[r]
    lo = 0  # blocks [0, lo) cached, [hi, n) not
    hi = min(S.req_int[RQ_PC_LEN, i], most)
    last = -1  # the slot of block lo - 1 (lo grows only where a probe found its block)
    while lo < hi:
        mid = (lo + hi) // 2
        _prefetch_next(S, ent, i, lo, mid, hi)
        s = tb_find(ent, pc_key(S, i, mid))
        if s >= 0:
            lo = mid + 1
            last = s
        else:
            hi = mid
    cached = lo
    if cached == 0:
        return 0, 0
    nd = S.pcn[r]
    n = ent[last, PC_NODE]
    while n >= 0 and nd[n, PN_HELD] == 0:
        n = nd[n, PN_PARENT]
    held = min(nd[n, PN_END], cached) if n >= 0 else 0
    return cached, cached - held


@kernel
def pc_acquire(S, r, i, k):
    """Request i holds the first k blocks of its chain, all cached on replica r (:func:`pc_lookup` said so
    just before). Its held prefix ends at block k - 1 (its node splits there if it goes on); walking up from there,
    the nodes nobody held leave the LRU list, up to the first one held already (it and its ancestors gain no
    holder of their own: see the module docstring). The caller charges the free count (those unheld until now
    leave it)."""
    ri = S.req_int
    rs = S.rep_int
    ri[RQ_PC_REF, i] = k
    ri[RQ_PC_NODE, i] = -1
    if k == 0:
        return
    ent = S.pc[r]
    nd = S.pcn[r]
    n = ent[tb_find(ent, pc_key(S, i, k - 1)), PC_NODE]
    if k < nd[n, PN_END]:
        n = _split_node(S, r, n, k)
    ri[RQ_PC_NODE, i] = n
    was = nd[n, PN_HELD]
    nd[n, PN_HELD] = was + 1  # its held prefix ends here
    while was == 0:  # n was unheld: off the list, and a held child of its parent now
        lru_remove(nd, rs, r, n, PC_DEVICE_LEVEL)
        rs[RP_PC_UNREF, r] -= nd[n, PN_END] - nd[n, PN_START]
        n = nd[n, PN_PARENT]
        if n < 0:
            break
        was = nd[n, PN_HELD]
        nd[n, PN_HELD] = was + 1


@kernel
def pc_commit(S, r, i, blocks):
    """Request i's first ``blocks`` full KV blocks are computed on replica r: those of its chain become cache
    entries it holds (its held prefix now ends at the last). Blocks other requests cached meanwhile are shared
    instead (their nodes followed, split where the chain leaves them) and its own copies freed; the rest are
    inserted, at the end of its node when nobody else is there, else as a new node."""
    ri = S.req_int
    block_count = min(blocks, ri[RQ_PC_LEN, i])
    k = ri[RQ_PC_REF, i]
    if k >= block_count:
        return
    pc_trim(S, r)
    rs = S.rep_int
    ent = S.pc[r]
    nd = S.pcn[r]
    first = ri[RQ_PC_NODE, i]  # where its held prefix ended (-1: it held none)
    if first >= 0:
        nd[first, PN_HELD] -= 1  # it no longer ends there (the blocks after keep the node held)
    cur = first
    j = k
    while j < block_count:  # blocks cached meanwhile: a child node of cur starts with block j
        s = tb_find(ent, pc_key(S, i, j))
        if s < 0:
            break
        m = ent[s, PC_NODE]
        owner = nd[m, PN_OWNER]
        e = j + 1
        stop = min(nd[m, PN_END], block_count)
        while e < stop and pc_key(S, i, e) == pc_key(S, owner, e):
            e += 1
        if e < nd[m, PN_END]:  # the chain ends or leaves it inside
            m = _split_node(S, r, m, e)
        if nd[m, PN_HELD] == 0:  # off the list, a held child of cur from now on
            lru_remove(nd, rs, r, m, PC_DEVICE_LEVEL)
            rs[RP_PC_UNREF, r] -= e - j
            if cur >= 0:
                nd[cur, PN_HELD] += 1
        else:  # resident already: its own copies are freed
            return_blocks(rs, r, e - j)
            rs[RP_KV_TOKENS, r] -= (e - j) * S.pool_int[PL_BLOCK, rs[RP_POOL, r]]
        cur = m
        j = e
    inserted = block_count - j
    if inserted > 0:  # its blocks become the entries
        if cur >= 0 and cur == first and nd[cur, PN_HELD] == 0 and nd[cur, PN_KIDS] == 0:
            nd[cur, PN_OWNER] = i  # its node, nobody else's: it grows in place
            nd[cur, PN_END] = block_count
        else:  # a new held child of cur
            cur = _node_new(S, r, i, j, block_count, cur)
            parent = nd[cur, PN_PARENT]
            if parent >= 0:
                nd[parent, PN_KIDS] += 1
                nd[parent, PN_HELD] += 1
        for q in range(j, min(j + AHEAD, block_count)):
            tb_prefetch(ent, pc_key(S, i, q))
        for q in range(j, block_count):
            if q + AHEAD < block_count:
                tb_prefetch(ent, pc_key(S, i, q + AHEAD))
            h = pc_key(S, i, q)
            s = tb_slot(ent, h)
            ent[s, PC_KEY] = h
            ent[s, PC_NODE] = cur
    nd[cur, PN_HELD] += 1  # its held prefix ends at the last
    ri[RQ_PC_NODE, i] = cur
    rs[RP_PC_ENTRIES, r] += inserted
    S.rep_float[RA_PC_INSERTS, r] += inserted
    ri[RQ_PC_REF, i] = block_count


@kernel
def pc_release(S, r, i):
    """Request i lets go of its held prefix on replica r: walking up from its node, the nodes nobody holds any
    more go to the LRU list's most recently used end, its own first (so a chain is evicted from its tail), and
    their blocks count as free again; the walk stops at the first node still held (by another request, or as
    the parent of a held child). Its own blocks are the caller's (``RQ_BLOCKS - RQ_PC_REF``). Returns the entries
    other requests still hold (still resident)."""
    ri = S.req_int
    rs = S.rep_int
    pc_trim(S, r)
    k = ri[RQ_PC_REF, i]
    n = ri[RQ_PC_NODE, i]
    ri[RQ_PC_REF, i] = 0
    ri[RQ_PC_NODE, i] = -1
    if k == 0:
        return 0
    nd = S.pcn[r]
    nd[n, PN_HELD] -= 1  # its held prefix ended here
    freed = 0
    while nd[n, PN_HELD] == 0:  # nobody holds it now: listed, and no longer a held child of its parent
        lru_append(nd, rs, r, n, PC_DEVICE_LEVEL)
        freed += nd[n, PN_END] - nd[n, PN_START]
        n = nd[n, PN_PARENT]
        if n < 0:
            break
        nd[n, PN_HELD] -= 1
    rs[RP_PC_UNREF, r] += freed
    return_blocks(rs, r, freed)
    return k - freed
