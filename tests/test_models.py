"""Model size arithmetic: parameter counts against each model's published total."""

from __future__ import annotations

import pytest

import hermes_fast as hf
from hermes_fast.sizes import param_count

MODELS = [n for n in hf.preset_names("models") if hf.Catalog().model(n).params_published]
# published totals that include parts the schema does not model: the Llama 4 counts include the vision encoder
# (~0.9B of Scout's 109B, by hand from the text config: 107.77B)
UNMODELLED_SHARE = {"llama-4-scout": 0.02, "llama-4-maverick": 0.02}


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_published(catalog, name):
    m = catalog.model(name)
    counts = param_count(m)
    # decoders within 1%; encoders omit position/type embeddings and biases (< 2%)
    tol = UNMODELLED_SHARE.get(name, 0.01 if m.kind == "decoder" else 0.02)
    assert counts["total"] == pytest.approx(m.params_published, rel=tol)


@pytest.mark.parametrize(
    "name,active,counts_embedding",
    [
        ("mixtral-8x7b", 12.9e9, True),  # Mistral AI: 12.9B active
        ("deepseek-v3", 37e9, True),  # DeepSeek-V3 report: 37B activated
        ("qwen3-235b-a22b", 22e9, True),  # Qwen3 model card: 22B activated
        ("gpt-oss-120b", 5.1e9, False),  # OpenAI model card: 5.1B active, input embedding not counted
        ("gpt-oss-20b", 3.61e9, False),  # OpenAI model card: 3.61B active, input embedding not counted
        ("llama-4-scout", 17e9, True),  # Llama 4 model card: 17B activated (1 routed + 1 shared expert)
        ("llama-4-maverick", 17e9, True),  # Llama 4 model card: 17B activated
        ("deepseek-v3.2", 37e9, True),  # the DeepSeek-V3 shape: 37B activated
    ],
)
def test_active_parameters_of_moe_models(catalog, name, active, counts_embedding):
    counts = param_count(catalog.model(name))
    got = counts["active"] - (0 if counts_embedding else counts["embedding"])
    assert got == pytest.approx(active, rel=0.02)


def test_weights_per_device_shrink_with_tp_and_ep(build):
    one = build("mixtral-8x7b").weights_bytes
    tp2 = build("mixtral-8x7b", tp=2).weights_bytes
    ep2 = build("mixtral-8x7b", tp=2, ep=2).weights_bytes
    assert tp2 == pytest.approx(one / 2, rel=0.02)
    assert ep2 == pytest.approx(tp2, rel=1e-9)  # EP re-partitions the same expert weights


def test_hybrid_active_parameters_by_hand(catalog):
    """Qwen3-Next-80B-A3B from its config.json: 12 attention layers (16 q / 2 kv heads of 256), 36 Gated DeltaNet
    layers (projections hidden -> 2 x 2048 + 2 x 4096 + 2 x 32 and 4096 -> hidden, 4-tap conv over 8192 channels,
    2 x 32 decay parameters, a 128-wide output norm), 48 MoE layers with 10 routed + 1 shared experts of width 512
    and a 512-way router; the published '3B activated' is this body (embedding and LM head excluded) rounded."""
    h = 2048
    attention = h * (16 + 2 * 2) * 256 + 16 * 256 * h
    linear = h * (2 * 2048 + 2 * 4096 + 2 * 32) + 4096 * h + 4 * 8192 + 2 * 32 + 128
    experts = h * 512 + 11 * 3 * h * 512
    body = 12 * attention + 36 * linear + 48 * (experts + 2 * h) + h
    counts = param_count(catalog.model("qwen3-next-80b-a3b"))
    assert counts["active"] - counts["embedding"] - counts["lm_head"] == body
    assert body == pytest.approx(3e9, rel=0.06)  # 3.15B: the model card's "3B" is rounded


def test_expert_weights_stored_apart_by_hand(catalog):
    """gpt-oss-20b with MXFP4 experts and the rest in BF16 (its release): the 24 layers' 32 gated experts hold
    24 x 32 x 3 x 2880 x 2880 = 19.11e9 parameters, so one device holds 19.11e9 x (2 - 0.53125) bytes less than
    all-BF16 and 1.79e9 parameters' x (2 - 0.53125) more than all-FP4 (an FP4 weight: half a byte and a 32nd of
    its block's scale byte); an expert GEMM moves 0.53125 / 2 of its BF16 weight bytes, the attention's the same; a
    dense model has no experts to store apart."""
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import ConfigError
    from hermes_fast.config.scenario import Dtypes, Parallel
    from hermes_fast.kernels import layout as L

    m, d = catalog.model("gpt-oss-20b"), catalog.device("h100_sxm")
    experts = 24 * 32 * 3 * 2880 * 2880
    assert experts == pytest.approx(19.11e9, rel=1e-3)
    bf16, fp4 = (compile_engine(m, d, Parallel(), Dtypes(weight=w)) for w in ("bf16", "fp4"))
    mxfp4 = compile_engine(m, d, Parallel(), Dtypes(weight="bf16", expert_weight="fp4"))
    fp4_bytes = 0.5 + 1 / 32
    assert bf16.weights_bytes - mxfp4.weights_bytes == pytest.approx(experts * (2 - fp4_bytes), rel=1e-12)
    rest = bf16.weights_bytes / 2 - experts  # parameters outside the experts (attention, router, embeddings, head)
    assert mxfp4.weights_bytes - fp4.weights_bytes == pytest.approx(rest * (2 - fp4_bytes), rel=1e-12)
    assert rest == pytest.approx(20.91e9 - experts, rel=0.02)  # the model card's total
    for g, ratio in ((L.G_EXP_UP, fp4_bytes / 2), (L.G_EXP_DOWN, fp4_bytes / 2), (L.G_QKV, 1.0), (L.G_ROUTER, 1.0)):
        assert mxfp4.params[g + 2] == pytest.approx(ratio * bf16.params[g + 2], rel=1e-12)  # weight bytes term
    with pytest.raises(ConfigError, match="expert_weight"):
        compile_engine(catalog.model("llama-3.1-8b"), d, Parallel(), Dtypes(expert_weight="fp4"))
