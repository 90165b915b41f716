"""Alpha-beta costs of collectives over ``n`` devices joined by one link level.

``alpha_s`` is the per-hop latency, ``bw`` the effective per-direction bandwidth (link x efficiency),
``overhead_s`` a fixed cost per call and ``size_bytes`` the full message.
"""

from __future__ import annotations

from ._jit import kernel


@kernel
def message_bandwidth(size_bytes, bw, ramp_bytes, low_ratio):
    """Bandwidth a collective reaches on an S-byte message: ``bw (S + r S_half) / (S + S_half)``, rising from
    r x bw for small messages (fewer channels, low-latency protocols) to bw for large ones; bw if S_half = 0."""
    if ramp_bytes <= 0.0:
        return bw
    return bw * (size_bytes + low_ratio * ramp_bytes) / (size_bytes + ramp_bytes)


@kernel
def allreduce_time(size_bytes, n, alpha_s, bw, overhead_s):
    """Ring all-reduce: overhead + 2(n-1)(alpha + (S/n)/bw); zero for one device or an empty message."""
    if n <= 1.0 or size_bytes <= 0.0:
        return 0.0
    return overhead_s + 2.0 * (n - 1.0) * (alpha_s + size_bytes / n / bw)


@kernel
def allgather_time(size_bytes, n, alpha_s, bw, overhead_s):
    """Ring all-gather or reduce-scatter of an S-byte buffer: overhead + (n-1)(alpha + (S/n)/bw)."""
    if n <= 1.0 or size_bytes <= 0.0:
        return 0.0
    return overhead_s + (n - 1.0) * (alpha_s + size_bytes / n / bw)


@kernel
def alltoall_time(size_bytes, n, alpha_s, bw, overhead_s, protocol_s=0.0, protocol_bytes=0.0):
    """All-to-all in which each device holds S bytes, S/n for each peer: overhead + alpha + (n-1)(S/n)/bw,
    plus ``protocol_s`` once S/n exceeds ``protocol_bytes``.

    NCCL posts the n-1 peer sends at once (grouped send/recv), so their latencies overlap: one alpha, not
    n-1 as in a ring (measured: ~7 us for small messages on 2 and on 8 H100s). Peer sends above
    NCCL_P2P_LL_THRESHOLD leave the low-latency protocol, a step of a few microseconds.
    """
    if n <= 1.0 or size_bytes <= 0.0:
        return 0.0
    share = size_bytes / n
    t = overhead_s + alpha_s + (n - 1.0) * share / bw
    return t + protocol_s if share > protocol_bytes else t


@kernel
def p2p_time(size_bytes, alpha_s, bw, overhead_s):
    """Point-to-point send/recv (pipeline-stage boundary): overhead + alpha + S/bw."""
    if size_bytes <= 0.0:
        return 0.0
    return overhead_s + alpha_s + size_bytes / bw
