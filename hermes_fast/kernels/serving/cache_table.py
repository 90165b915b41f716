"""The prefix cache's tables: open addressing over 64-bit block keys, with an LRU list, at two levels.

A level is a table (``S.pc`` on the device, ``S.pc2`` in the second-level tier) of ``T`` slots per replica, a
power of two; keys are found by linear probing from their home slot and deleted by backward shift (later probes
move up, and their LRU links follow them). Entries no running request references sit on a doubly linked LRU list;
a level's head, tail, listed count and entry count are four rows of ``S.rep_int`` (``RP_PC_*``, ``RP_PC2_*``: the
level offsets ``PC_DEVICE_LEVEL``, ``PC_TIER_LEVEL``). The tier holds copies of blocks evicted from the device
(:func:`tier_put`, LRU within its ``PL_PC2_CAP`` blocks); an admission loads a run of them back
(:func:`tier_run`) over the tier's link.
"""

from __future__ import annotations

from .._jit import kernel
from .state import (
    PC_EMPTY,
    PC_KEY,
    PC_NEXT,
    PC_PREV,
    PC_REF,
    PC_ROWS,
    PC_TIER_LEVEL,
    PL_PC2_CAP,
    RA_PC2_SPILLS,
    RP_PC_ENTRIES,
    RP_PC_HEAD,
    RP_PC_TAIL,
    RP_PC_UNREF,
    RP_POOL,
    RQ_PC_LEN,
    RQ_PC_OFF,
)

__all__ = ["tb_home", "tb_find", "tb_unlink", "tb_append", "tb_delete", "tier_put", "tier_run"]


@kernel(inline=True)
def tb_home(h, mask):
    """The home slot of key h (its bits after a multiplicative mix)."""
    return ((int(h) * -7046029254386353131) >> 17) & mask


@kernel(inline=True)
def tb_find(keys, mask, h):
    """Slot of a table's ``keys`` holding h, or -1 (the hot loops take the arrays, not the state)."""
    s = tb_home(h, mask)
    while True:
        k = keys[s]
        if k == h:
            return s
        if k == PC_EMPTY:
            return -1
        s = (s + 1) & mask


@kernel(inline=True)
def _tb_link(pc, rs, r, lv, p, n):
    """Make entry n follow entry p on replica r's LRU list of level ``lv`` (-1: the list's end on that side)."""
    if p >= 0:
        pc[PC_NEXT, r, p] = n
    else:
        rs[RP_PC_HEAD + lv, r] = n
    if n >= 0:
        pc[PC_PREV, r, n] = p
    else:
        rs[RP_PC_TAIL + lv, r] = p


@kernel(inline=True)
def tb_unlink(pc, rs, r, s, lv):
    """Take entry s off replica r's LRU list of level ``lv``."""
    _tb_link(pc, rs, r, lv, pc[PC_PREV, r, s], pc[PC_NEXT, r, s])
    rs[RP_PC_UNREF + lv, r] -= 1


@kernel(inline=True)
def tb_append(pc, rs, r, s, lv):
    """Put entry s at the most recently used end of replica r's LRU list of level ``lv``."""
    _tb_link(pc, rs, r, lv, rs[RP_PC_TAIL + lv, r], s)
    _tb_link(pc, rs, r, lv, s, -1)
    rs[RP_PC_UNREF + lv, r] += 1


@kernel
def tb_delete(pc, rs, r, s, lv):
    """Empty slot s of replica r's table of level ``lv`` (backward-shift deletion; list links follow)."""
    mask = pc.shape[2] - 1
    hole = s
    j = s
    while True:
        j = (j + 1) & mask
        k = pc[PC_KEY, r, j]
        if k == PC_EMPTY:
            break
        home = tb_home(k, mask)
        if ((j - home) & mask) < ((j - hole) & mask):  # its home is not in (hole, j]: it may move to the hole
            continue
        for row in range(PC_ROWS):
            pc[row, r, hole] = pc[row, r, j]
        if pc[PC_REF, r, hole] == 0:  # an unreferenced entry: its list neighbours point at its new slot
            _tb_link(pc, rs, r, lv, pc[PC_PREV, r, hole], hole)
            _tb_link(pc, rs, r, lv, hole, pc[PC_NEXT, r, hole])
        hole = j
    pc[PC_KEY, r, hole] = PC_EMPTY
    pc[PC_REF, r, hole] = 0
    rs[RP_PC_ENTRIES + lv, r] -= 1


@kernel
def tier_put(S, r, h):
    """Block h, evicted from replica r's device cache, is copied to its tier (the most recently used there; the
    tier's least recently used block makes room when it is full)."""
    pc2 = S.pc2
    rs = S.rep_int
    cap = S.pool_int[PL_PC2_CAP, rs[RP_POOL, r]]
    keys = pc2[PC_KEY, r]
    mask = pc2.shape[2] - 1
    s = tb_find(keys, mask, h)
    if s >= 0:
        tb_unlink(pc2, rs, r, s, PC_TIER_LEVEL)
        tb_append(pc2, rs, r, s, PC_TIER_LEVEL)
        return
    if rs[RP_PC_ENTRIES + PC_TIER_LEVEL, r] >= cap:
        old = rs[RP_PC_HEAD + PC_TIER_LEVEL, r]
        tb_unlink(pc2, rs, r, old, PC_TIER_LEVEL)
        tb_delete(pc2, rs, r, old, PC_TIER_LEVEL)
    s = tb_home(h, mask)
    while keys[s] != PC_EMPTY:
        s = (s + 1) & mask
    keys[s] = h
    rs[RP_PC_ENTRIES + PC_TIER_LEVEL, r] += 1
    tb_append(pc2, rs, r, s, PC_TIER_LEVEL)
    S.rep_float[RA_PC2_SPILLS, r] += 1.0


@kernel
def tier_run(S, r, i, start, most):
    """How many chain blocks of request i from ``start`` (up to ``most``) replica r's tier holds in a row."""
    pc2 = S.pc2
    keys = pc2[PC_KEY, r]
    mask = pc2.shape[2] - 1
    off = S.req_int[RQ_PC_OFF, i]
    n = min(S.req_int[RQ_PC_LEN, i], most)
    for j in range(start, n):
        if tb_find(keys, mask, S.pc_hash[off + j]) < 0:
            return j - start
    return max(n - start, 0)
