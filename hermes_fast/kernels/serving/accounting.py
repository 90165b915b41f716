"""Run and replica accumulators: the inter-token-gap histogram and what each iteration adds to its replica."""

from __future__ import annotations

import math

from .._jit import kernel
from .state import (
    ITL_BINS,
    ITL_LOG_MIN,
    ITL_PER_DECADE,
    RA_BATCH_SUM,
    RA_BUSY_S,
    RA_DECODE_TOKENS,
    RA_ITERATIONS,
    RA_KV_READ,
    RA_KV_TOKEN_S,
    RA_PAIRS,
    RA_PREFILL_TOKENS,
    RUN_ITL_COUNT,
    RUN_ITL_HIST,
    RUN_ITL_SUM,
)

__all__ = ["itl_add", "account_iteration"]


@kernel
def itl_add(run, gap, weight):
    """Add ``weight`` inter-token gaps of ``gap`` seconds to the run's histogram (log bins) and mean."""
    b = 0
    if gap > 0.0:
        b = int(math.floor((math.log10(gap) - ITL_LOG_MIN) * ITL_PER_DECADE))
        b = min(max(b, 0), ITL_BINS - 1)
    run[RUN_ITL_HIST + b] += weight
    run[RUN_ITL_SUM] += gap * weight
    run[RUN_ITL_COUNT] += weight


@kernel(inline=True)
def account_iteration(rep_float, r, cost, n_seq, prefill_tokens, decode_tokens, kv_tokens, kv_read, pairs):
    """Add one iteration of replica r to its accumulators; ``kv_tokens``: KV held at its end; ``kv_read``: KV
    tokens its attention read; ``pairs``: its prefill chunks' causal query-key pairs."""
    rep_float[RA_BUSY_S, r] += cost
    rep_float[RA_ITERATIONS, r] += 1.0
    rep_float[RA_BATCH_SUM, r] += n_seq
    rep_float[RA_PREFILL_TOKENS, r] += prefill_tokens
    rep_float[RA_DECODE_TOKENS, r] += decode_tokens
    rep_float[RA_KV_TOKEN_S, r] += kv_tokens * cost
    rep_float[RA_KV_READ, r] += kv_read
    rep_float[RA_PAIRS, r] += pairs
