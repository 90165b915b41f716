"""Analytical kernels: numba + numpy + math only. Each is plain Python with its compiled twin at ``fn.jit``."""

from . import layout
from .collectives import allgather_time, allreduce_time, alltoall_time, message_bandwidth, p2p_time
from .roofline import (
    active_experts_from_log,
    attention_cost,
    expected_active_experts,
    gemm_coefficients,
    gemm_cost,
    grouped_gemm_cost,
)
from .step import causal_pairs, decode_step_time, prefill_pairs, prefill_time, step_cost, step_time

__all__ = [
    "layout",
    "allgather_time",
    "alltoall_time",
    "allreduce_time",
    "message_bandwidth",
    "p2p_time",
    "active_experts_from_log",
    "attention_cost",
    "expected_active_experts",
    "gemm_coefficients",
    "gemm_cost",
    "grouped_gemm_cost",
    "causal_pairs",
    "prefill_pairs",
    "decode_step_time",
    "prefill_time",
    "step_cost",
    "step_time",
]
