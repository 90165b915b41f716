"""Per-operator roofline: time = max(FLOP / compute rate, bytes / memory rate) + fixed overhead.

Each function returns ``(compute_s, memory_s)``; callers take the max, add the kernel overhead, and
attribute the operator to whichever side bound it (for the `bound` diagnostic).
"""

from __future__ import annotations

import math

from ._jit import kernel


@kernel
def gemm_coefficients(k, n, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes):
    """Both sides of a ``k x n`` GEMM's roofline are affine in its token dimension m:

    compute_s = c0 + c1 m, from 2 m k n FLOP at flops_eff x m / (m + m_half) (tile under-use at small m);
    memory_s = m0 + m1 m, from k n weights plus m (k + n) activations moved.
    Returns (c0, c1, m0, m1); the step cost stores them per GEMM so each costs two multiply-adds.
    """
    c1 = 2.0 * k * n / flops_eff
    return c1 * saturation_tokens, c1, k * n * w_bytes / bw_eff, (k + n) * a_bytes / bw_eff


@kernel
def gemm_cost(m, k, n, n_weight_sets, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes):
    """Roofline of ``m x k @ k x n`` with ``n_weight_sets`` distinct weight matrices read (grouped GEMMs).

    Returns (compute_s, memory_s) from :func:`gemm_coefficients`; (0, 0) when m or n is 0.
    """
    if m <= 0.0 or n <= 0.0:
        return 0.0, 0.0
    c0, c1, m0, m1 = gemm_coefficients(k, n, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes)
    return n_weight_sets * c0 + c1 * m, n_weight_sets * m0 + m1 * m


@kernel
def grouped_gemm_cost(tokens, active_sets, k, n, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes):
    """MoE experts: ``tokens`` token-expert pairs over ``active_sets`` distinct experts, each its own GEMM
    of tokens/active_sets rows, so the small-m penalty (c0) and the weights (m0) count once per active expert."""
    if tokens <= 0.0 or active_sets <= 0.0:
        return 0.0, 0.0
    return gemm_cost(tokens, k, n, active_sets, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes)


@kernel
def attention_cost(
    pairs, heads, qk_dim, v_dim, kv_tokens, kv_token_bytes, q_tokens, a_bytes, flops_eff, saturation_keys, bw_eff
):
    """Fused (flash) attention over ``pairs`` query-key pairs on ``heads`` heads of one device.

    FLOP = 2 pairs heads (qk_dim + v_dim) (scores and weighted values), at flops_eff x x / (x + x_half)
    where x = pairs / q_tokens is the mean keys per query -- which simplifies to
    2 heads (qk_dim + v_dim) (pairs + x_half q_tokens) / flops_eff. Bytes = KV read (``kv_tokens`` x
    per-token KV bytes) + queries in and outputs out (``q_tokens`` x heads x dims).
    """
    if pairs <= 0.0:
        return 0.0, 0.0
    width = heads * (qk_dim + v_dim)
    compute_s = 2.0 * width * (pairs + saturation_keys * q_tokens) / flops_eff
    memory_s = (kv_tokens * kv_token_bytes + q_tokens * width * a_bytes) / bw_eff
    return compute_s, memory_s


@kernel
def expected_active_experts(tokens, n_experts, top_k):
    """Expected number of distinct experts hit when ``tokens`` tokens each pick ``top_k`` of ``n_experts``
    uniformly: E (1 - (1 - k/E)^T)."""
    return active_experts_from_log(tokens, n_experts, math.log1p(-top_k / n_experts))


@kernel
def active_experts_from_log(tokens, n_experts, log_miss):
    """:func:`expected_active_experts` with ``log_miss = log(1 - k/E)`` precomputed: E (1 - exp(T log_miss))."""
    if tokens <= 0.0:
        return 0.0
    return n_experts * -math.expm1(tokens * log_miss)
