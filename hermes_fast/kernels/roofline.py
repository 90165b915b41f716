"""Per-operator roofline: time = max(FLOP / compute rate, bytes / memory rate) + fixed overhead.

Each function returns ``(compute_s, memory_s)``; callers take the max, add the kernel overhead, and
attribute the operator to whichever side bound it (for the `bound` diagnostic).
"""

from __future__ import annotations

from ._jit import kernel


@kernel
def gemm_efficiency(m, saturation_tokens):
    """Fraction of the maximum GEMM efficiency reached with token dimension ``m``: m / (m + m_half)."""
    if m <= 0.0:
        return 0.0
    return m / (m + saturation_tokens)


@kernel
def gemm_cost(m, k, n, n_weight_sets, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes):
    """Roofline of ``m x k @ k x n`` (times ``n_weight_sets`` distinct weight matrices read, for grouped GEMMs).

    FLOP = 2 m k n; bytes = weights (k n per set) + activations in (m k) and out (m n).
    Returns (compute_s, memory_s); (0, 0) when m or n is 0.
    """
    if m <= 0.0 or n <= 0.0:
        return 0.0, 0.0
    flop = 2.0 * m * k * n
    nbytes = n_weight_sets * k * n * w_bytes + m * (k + n) * a_bytes
    compute_s = flop / (flops_eff * gemm_efficiency(m, saturation_tokens))
    return compute_s, nbytes / bw_eff


@kernel
def grouped_gemm_cost(tokens, active_sets, k, n, flops_eff, saturation_tokens, bw_eff, w_bytes, a_bytes):
    """MoE experts: ``tokens`` token-expert pairs spread over ``active_sets`` distinct weight matrices.

    Efficiency follows the tokens per active expert, since each expert is its own small GEMM.
    """
    if tokens <= 0.0 or active_sets <= 0.0 or n <= 0.0:
        return 0.0, 0.0
    per_set = tokens / active_sets
    flop = 2.0 * tokens * k * n
    nbytes = active_sets * k * n * w_bytes + tokens * (k + n) * a_bytes
    compute_s = flop / (flops_eff * gemm_efficiency(per_set, saturation_tokens))
    return compute_s, nbytes / bw_eff


@kernel
def attention_cost(
    pairs, heads, qk_dim, v_dim, kv_tokens, kv_token_bytes, q_tokens, a_bytes, flops_eff, saturation_keys, bw_eff
):
    """Fused (flash) attention over ``pairs`` query-key pairs on ``heads`` heads of one device.

    FLOP = 2 pairs heads (qk_dim + v_dim) (scores and weighted values); bytes = KV read
    (``kv_tokens`` x per-token KV bytes) + queries in and outputs out (``q_tokens`` x heads x dims).
    Compute efficiency saturates in the mean keys per query, pairs / q_tokens.
    """
    if pairs <= 0.0:
        return 0.0, 0.0
    flop = 2.0 * pairs * heads * (qk_dim + v_dim)
    nbytes = kv_tokens * kv_token_bytes + q_tokens * heads * (qk_dim + v_dim) * a_bytes
    keys_per_query = pairs / q_tokens
    eff = keys_per_query / (keys_per_query + saturation_keys)
    return flop / (flops_eff * eff), nbytes / bw_eff


@kernel
def expected_active_experts(tokens, n_experts, top_k):
    """Expected number of distinct experts hit when ``tokens`` tokens each pick ``top_k`` of ``n_experts``
    uniformly: E (1 - (1 - k/E)^T)."""
    if tokens <= 0.0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)
