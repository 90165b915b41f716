"""Model size arithmetic: parameter counts against each model's published total."""

from __future__ import annotations

import pytest

import hermes_fast as hf
from hermes_fast.sizes import param_count

MODELS = [n for n in hf.preset_names("models") if hf.Catalog().model(n).params_published]


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_published(catalog, name):
    m = catalog.model(name)
    counts = param_count(m)
    # decoders within 1%; encoders omit position/type embeddings and biases (< 2%)
    tol = 0.01 if m.kind == "decoder" else 0.02
    assert counts["total"] == pytest.approx(m.params_published, rel=tol)


@pytest.mark.parametrize(
    "name,active,counts_embedding",
    [
        ("mixtral-8x7b", 12.9e9, True),  # Mistral AI: 12.9B active
        ("deepseek-v3", 37e9, True),  # DeepSeek-V3 report: 37B activated
        ("qwen3-235b-a22b", 22e9, True),  # Qwen3 model card: 22B activated
        ("gpt-oss-120b", 5.1e9, False),  # OpenAI model card: 5.1B active, input embedding not counted
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
