"""A replica's next iteration as it is formed: the requests it runs and the totals its step cost takes.

``mark`` puts a request's tokens into the iteration (``RQ_CHUNK``: a prefill chunk, or 1 for a decode) and
adds to the ``IT_*`` totals: prefill tokens, causal attention pairs, the KV the chunks attend to, decodes,
their KV, sequences emitting a token.
"""

from __future__ import annotations

from .._jit import kernel
from ..step import prefill_pairs
from .state import (
    IT_DECODE_KV,
    IT_DECODES,
    IT_INTAKE_SHARES,
    IT_LOGITS,
    IT_MIN_LEFT,
    IT_PAIRS,
    IT_PREFILL_KV,
    IT_PREFILL_TOKENS,
    IT_SEQS,
    RP_NRUN,
    RP_POOL,
    RQ_CHUNK,
    RQ_GEN,
    RQ_KV,
    RQ_OUTPUT,
    RQ_PREFILLED,
    RQ_REPLICA,
    RQ_SEQS,
    RQ_STATUS,
    RQ_TARGET,
    STATUS_RUNNING,
)

__all__ = ["mark", "push_running"]


@kernel
def mark(S, r, i, chunk):
    """Put ``chunk`` tokens of request i (1: a decode) into replica r's iteration and add to its totals."""
    ri = S.req_int
    rsf = S.rep_float
    ri[RQ_CHUNK, i] = chunk
    rsf[IT_SEQS, r] += 1.0
    if ri[RQ_PREFILLED, i] == ri[RQ_TARGET, i]:
        rsf[IT_DECODES, r] += 1.0
        rsf[IT_DECODE_KV, r] += ri[RQ_KV, i] + 1.0
        rsf[IT_LOGITS, r] += 1.0
        rsf[IT_INTAKE_SHARES, r] += 1.0 / max(ri[RQ_OUTPUT, i], 1)
        rsf[IT_MIN_LEFT, r] = min(rsf[IT_MIN_LEFT, r], float(ri[RQ_OUTPUT, i] - ri[RQ_GEN, i]))
    else:
        past = float(ri[RQ_PREFILLED, i])
        rsf[IT_PREFILL_TOKENS, r] += chunk
        seqs = float(ri[RQ_SEQS, i])
        p = S.params[S.rep_int[RP_POOL, r]]
        rsf[IT_PAIRS, r] += seqs * prefill_pairs(p, chunk / seqs, past / seqs)
        rsf[IT_PREFILL_KV, r] += past + chunk
        if ri[RQ_PREFILLED, i] + chunk == ri[RQ_TARGET, i]:
            rsf[IT_LOGITS, r] += 1.0
            rsf[IT_INTAKE_SHARES, r] += 1.0 / max(ri[RQ_OUTPUT, i], 1)


@kernel(inline=True)
def push_running(S, r, i, chunk):
    """Request i joins replica r's running requests (with ``chunk`` tokens in the iteration being formed)."""
    rs = S.rep_int
    ri = S.req_int
    S.running[r, rs[RP_NRUN, r]] = i
    rs[RP_NRUN, r] += 1
    ri[RQ_CHUNK, i] = 0
    if chunk > 0:
        mark(S, r, i, chunk)
    ri[RQ_REPLICA, i] = r
    ri[RQ_STATUS, i] = STATUS_RUNNING
