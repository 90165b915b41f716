"""DeepSeek Sparse Attention's lightning indexer (``Model.indexer``), worked by hand on DeepSeek-V3.2 on 8 H200s."""

from __future__ import annotations

import numpy as np
import pytest

from hermes_fast.compile import compile_engine
from hermes_fast.config import Dtypes, Parallel
from hermes_fast.kernels import layout as L
from hermes_fast.kernels.step import step_cost
from hermes_fast.resolve import Catalog

LAYERS = 61  # DeepSeek-V3.2: DSA on every layer


def _compiled(tp: int):
    """DeepSeek-V3.2 with block-scaled FP8 weights and a bf16 KV cache on ``tp`` H200s (the kernels alone)."""
    cat = Catalog()
    dtypes = Dtypes(weight="fp8", activation="fp8", kv="bf16", gemm_scaling="block")
    return compile_engine(cat.model("deepseek-v3.2"), cat.device("h200_sxm"), Parallel(tp=tp), dtypes, check=False)


def _by_hand(p, queries, pairs, keys, overhead):
    """One layer's indexer: 2 x 64 heads x 128 dims a scored pair (plus the saturation term) at the FP8 attention
    rate, against its 132-byte keys read and the queries' 64 x 128 values; the bound side, and one kernel."""
    width = 64 * 128
    compute = 2.0 * width * (pairs + p[L.ATTN_SAT] * queries) / p[L.IDX_FLOPS]
    memory = (keys * 132.0 + queries * width * p[L.A_BYTES]) / p[L.MEM_BW]
    return max(compute, memory) + overhead


def test_the_indexer_scores_every_cached_token_on_every_layer():
    """A decode step of 16 sequences at 32,000 tokens of context and a 32,000-token prefill chunk cost, with the
    indexer, 61 x its layer cost by hand more than without it: its work grows with the whole context, where the
    attention stops at the 2048 keys it selects."""
    p = _compiled(8).params
    plain = p.copy()
    plain[L.IDX_HEADS] = 0.0
    decode = (0.0, 0.0, 0.0, 16.0, 16.0 * 32000, 16.0)
    extra = step_cost(p, *decode)[0] - step_cost(plain, *decode)[0]
    layer = _by_hand(p, 16.0, 16.0 * 32000, 16.0 * 32000, p[L.OH_ATTN_DECODE])
    assert extra == pytest.approx(LAYERS * layer, rel=1e-9)
    assert 16 * 32000 * 132.0 / p[L.MEM_BW] > 2.0 * 64 * 128 * 16 * 32000 / p[L.IDX_FLOPS]  # decode reads keys
    tokens = 32000.0
    prefill = (tokens, tokens * (tokens + 1) / 2, tokens, 0.0, 0.0, 1.0)
    extra = step_cost(p, *prefill)[0] - step_cost(plain, *prefill)[0]
    layer = _by_hand(p, tokens, tokens * (tokens + 1) / 2, tokens, p[L.OH_ATTN])
    assert extra == pytest.approx(LAYERS * layer, rel=1e-9)
    assert extra > 0.5  # O(L^2) in FP8 on every rank: over half a second of a 32k-token prompt


def test_every_tp_rank_runs_the_whole_indexer_and_caches_its_keys_beside_the_latent():
    """The indexer is replicated (64 heads on each rank at TP 1 and 8, as vLLM and SGLang run it), and a token
    holds, per layer and device, MLA's 576-wide latent in bf16 plus the indexer's 128 FP8 bytes and fp32 scale."""
    one, eight = _compiled(1), _compiled(8)
    assert one.params[L.IDX_HEADS] == eight.params[L.IDX_HEADS] == 64.0
    assert eight.kv_bytes_per_token == pytest.approx(LAYERS * (576 * 2 + 132))
    assert np.all(eight.params[[L.IDX_DIM, L.IDX_KEY_BYTES]] == [128.0, 132.0])
