"""The prefix cache's tables: open addressing over 64-bit block keys, LRU lists, and the second-level tier.

A table (``S.pc`` on the device, ``S.pc2`` in the second-level tier) has ``T`` slots per replica, a power of two,
stored entry-major (``[replica, slot, field]``: a slot's fields share a cache line, so touching a cold entry misses
once, not once a field); keys are found by linear probing from their home slot and deleted by backward shift (later
probes move up; in a listed table their LRU links follow them). The hot kernels take one replica's table
(``ent = S.pc[r]``), not the state. An LRU list is doubly linked through a ``PC_LINKS`` field: the device cache
lists its unheld nodes (``S.pcn``), the tier its blocks; a level's head, tail, listed-block count and entry count
are four rows of ``S.rep_int`` (``RP_PC_*``, ``RP_PC2_*``: the level offsets ``PC_DEVICE_LEVEL``,
``PC_TIER_LEVEL``). The tier holds copies of blocks evicted from the device (:func:`tier_put`, LRU within its
``PL_PC2_CAP`` blocks); an admission loads a run of them back (:func:`tier_run`) over the tier's link.
"""

from __future__ import annotations

from .._jit import kernel, prefetch
from .block_keys import pc_key
from .state import (
    PC_EMPTY,
    PC_KEY,
    PC_LINKS,
    PC_TIER_LEVEL,
    PL_PC2_CAP,
    RA_PC2_SPILLS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_TAIL,
    RP_PC_UNREF,
    RP_POOL,
    RQ_PC_LEN,
)

__all__ = [
    "tb_home",
    "tb_find",
    "tb_prefetch",
    "tb_slot",
    "tb_prev",
    "tb_next",
    "lru_remove",
    "lru_append",
    "lru_insert_after",
    "tb_delete",
    "tier_put",
    "tier_run",
]

_LOW = 0xFFFFFFFF  # PC_LINKS: the previous entry's slot + 1 (slots < 2**31)
_HIGH = -(1 << 32)  # ... and the next's, above


@kernel(inline=True)
def tb_home(h, mask):
    """The home slot of key h (its bits after a multiplicative mix)."""
    return ((int(h) * -7046029254386353131) >> 17) & mask


@kernel(inline=True)
def tb_find(ent, h):
    """Slot of one replica's table ``ent`` holding key h, or -1."""
    s = tb_slot(ent, h)
    return s if ent[s, PC_KEY] == h else -1


@kernel(inline=True)
def tb_prefetch(ent, h):
    """Ask for the cache line of key h's home slot in ``ent`` ahead of a probe (the table is far larger than the
    CPU's caches: a probe of a cold entry waits for memory, and a mispredicted probe loop waits again)."""
    prefetch(ent, tb_home(h, ent.shape[0] - 1))


@kernel(inline=True)
def tb_slot(ent, h):
    """Slot of ``ent`` holding key h, or the empty slot where it goes."""
    mask = ent.shape[0] - 1
    s = tb_home(h, mask)
    while ent[s, PC_KEY] != h and ent[s, PC_KEY] != PC_EMPTY:
        s = (s + 1) & mask
    return s


@kernel(inline=True)
def tb_prev(ent, s):
    """The entry listed before entry s (-1: none); its two links share a field so an entry fits half a cache line."""
    return (ent[s, PC_LINKS] & _LOW) - 1


@kernel(inline=True)
def tb_next(ent, s):
    """The entry listed after entry s (-1: none)."""
    return (ent[s, PC_LINKS] >> 32) - 1


@kernel(inline=True)
def _tb_link(ent, rs, r, lv, p, n):
    """Make entry n follow entry p on replica r's LRU list of level ``lv`` (-1: the list's end on that side)."""
    if p >= 0:
        ent[p, PC_LINKS] = (ent[p, PC_LINKS] & _LOW) | ((n + 1) << 32)
    else:
        rs[RP_PC_HEAD + lv, r] = n
    if n >= 0:
        ent[n, PC_LINKS] = (ent[n, PC_LINKS] & _HIGH) | (p + 1)
    else:
        rs[RP_PC_TAIL + lv, r] = p


@kernel(inline=True)
def lru_remove(ent, rs, r, s, lv):
    """Take item s (an entry of a listed table, or a node) off replica r's LRU list of level ``lv``."""
    _tb_link(ent, rs, r, lv, tb_prev(ent, s), tb_next(ent, s))


@kernel(inline=True)
def lru_append(ent, rs, r, s, lv):
    """Put item s at the most recently used end of replica r's LRU list of level ``lv``."""
    _tb_link(ent, rs, r, lv, rs[RP_PC_TAIL + lv, r], s)
    _tb_link(ent, rs, r, lv, s, -1)


@kernel(inline=True)
def lru_insert_after(ent, rs, r, s, p, lv):
    """Put item s right after listed item p on replica r's LRU list of level ``lv``."""
    n = tb_next(ent, p)
    _tb_link(ent, rs, r, lv, p, s)
    _tb_link(ent, rs, r, lv, s, n)


@kernel
def tb_delete(ent, rs, r, s, lv, listed):
    """Empty slot s of replica r's table of level ``lv`` (backward-shift deletion; in a ``listed`` table, whose
    entries are all on its LRU list, the links follow the entries that move)."""
    mask = ent.shape[0] - 1
    hole = s
    j = s
    while True:
        j = (j + 1) & mask
        k = ent[j, PC_KEY]
        if k == PC_EMPTY:
            break
        home = tb_home(k, mask)
        if ((j - home) & mask) < ((j - hole) & mask):  # its home is not in (hole, j]: it may move to the hole
            continue
        for row in range(ent.shape[1]):
            ent[hole, row] = ent[j, row]
        if listed:  # its list neighbours point at its new slot
            _tb_link(ent, rs, r, lv, tb_prev(ent, hole), hole)
            _tb_link(ent, rs, r, lv, hole, tb_next(ent, hole))
        hole = j
    ent[hole, PC_KEY] = PC_EMPTY
    rs[RP_PC_ENTRIES + lv, r] -= 1


@kernel
def tier_put(S, r, h):
    """Block h, evicted from replica r's device cache, is copied to its tier (the most recently used there; the
    tier's least recently used block makes room when it is full)."""
    ent = S.pc2[r]
    rs = S.rep_int
    cap = S.pool_int[PL_PC2_CAP, rs[RP_POOL, r]]
    s = tb_slot(ent, h)
    if ent[s, PC_KEY] == h:
        lru_remove(ent, rs, r, s, PC_TIER_LEVEL)
        lru_append(ent, rs, r, s, PC_TIER_LEVEL)
        return
    if rs[RP_PC_ENTRIES + PC_TIER_LEVEL, r] >= cap:
        old = rs[RP_PC_HEAD + PC_TIER_LEVEL, r]
        lru_remove(ent, rs, r, old, PC_TIER_LEVEL)
        rs[RP_PC_UNREF + PC_TIER_LEVEL, r] -= 1
        tb_delete(ent, rs, r, old, PC_TIER_LEVEL, True)
        s = tb_slot(ent, h)  # (the deletion may have shifted the probe sequence h would take)
    ent[s, PC_KEY] = h
    rs[RP_PC_ENTRIES + PC_TIER_LEVEL, r] += 1
    lru_append(ent, rs, r, s, PC_TIER_LEVEL)
    rs[RP_PC_UNREF + PC_TIER_LEVEL, r] += 1
    S.rep_float[RA_PC2_SPILLS, r] += 1.0


@kernel
def tier_run(S, r, i, start, most):
    """How many chain blocks of request i from ``start`` (up to ``most``) replica r's tier holds in a row."""
    ent = S.pc2[r]
    n = min(S.req_int[RQ_PC_LEN, i], most)
    for j in range(start, n):
        if tb_find(ent, pc_key(S, i, j)) < 0:
            return j - start
    return max(n - start, 0)
