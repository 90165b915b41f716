"""hermes_fast.calibration.measure: the measurement plan, argument checks, and (where PyTorch is installed) the method
itself on the CPU: rows in the schema, a random-weight decoder whose KV cache gives the same logits as a
full prefill, and parameters that match the model's own count."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from hermes_fast.calibration.measure import measure
from hermes_fast.calibration.measure_plan import device_for_gpu, measurement_plan, projection_shapes
from hermes_fast.calibration.measurements import read_measurements
from hermes_fast.calibration.predict import predict
from hermes_fast.calibration.validate import reference_errors
from hermes_fast.cli import main
from hermes_fast.config.base import ConfigError
from hermes_fast.resolve import Catalog
from hermes_fast.sizes import param_count

GB = 1e9
TINY = {
    "tiny-llama": {
        "base": "llama-3.1-8b",
        "n_layers": 2,
        "hidden_size": 256,
        "n_heads": 8,
        "n_kv_heads": 2,
        "head_dim": 32,
        "ffn_hidden_size": 512,
        "vocab_size": 1000,
    },
    "tiny-tied": {
        "base": "qwen3-0.6b",
        "n_layers": 3,
        "hidden_size": 128,
        "n_heads": 4,
        "n_kv_heads": 4,
        "head_dim": 32,
        "ffn_hidden_size": 384,
        "vocab_size": 500,
        "tied_embeddings": True,
    },
}


def test_gpu_names_map_to_catalog_devices():
    assert device_for_gpu("NVIDIA H100 80GB HBM3") == "h100_sxm"
    assert device_for_gpu("NVIDIA H200") == "h200_sxm"
    assert device_for_gpu("NVIDIA A100-SXM4-80GB") == "a100_sxm_80gb"
    assert device_for_gpu("NVIDIA H100 PCIe") is None  # not the SXM part the catalog has
    assert device_for_gpu("NVIDIA H200 NVL") is None and device_for_gpu("NVIDIA GH200 480GB") is None
    assert device_for_gpu("NVIDIA H100 80GB HBM3 MIG 1g.10gb") is None  # a slice is not the whole GPU
    assert device_for_gpu("Tesla T4") is None


def test_projection_shapes_of_llama_8b():
    mo = Catalog().model("llama-3.1-8b")
    # (n, k): QKV = (32 + 2 * 8) heads x 128; O; gate+up = 2 x 14336; down
    assert projection_shapes(mo) == ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
    assert projection_shapes(mo, tp=8) == ((768, 4096), (4096, 512), (3584, 4096), (4096, 1792))


def test_full_plan_keeps_what_fits_an_80_gb_gpu():
    mo = Catalog().model("llama-3.1-8b")
    plan = measurement_plan(mo, 80 * GB, 2.0)
    assert len(plan.gemm) == 15 * 4 and plan.gemm[0] == (1, 6144, 4096) and plan.gemm[-1][0] == 16384
    assert plan.attention_tp == (1, 8)
    assert all(b * t <= 65536 for b, t in plan.prefill_attention)
    # decode attention: one layer's KV = 2 x batch x context x 8 heads x 128 x 2 B within half the memory
    assert (256, 32768) in plan.decode_attention  # 34.4 GB of 40
    small = measurement_plan(mo, 60 * GB, 2.0)
    assert (256, 32768) not in small.decode_attention and (128, 32768) in small.decode_attention  # 17.2 of 30
    # decode steps: 32 layers of KV for context + 1 tokens within 0.85 x 80 GB - 16.06 GB of weights = 51.9 GB
    weights = 2.0 * param_count(mo)["total"]
    assert weights == pytest.approx(16.06e9, rel=1e-3)
    assert (32, 8192) in plan.decode_steps  # 2 x 32 x 32 x 8193 x 1024 x 2 B = 34.4 GB
    assert (64, 8192) not in plan.decode_steps  # 68.7 GB
    assert (256, 512) in plan.decode_steps and (256, 2048) not in plan.decode_steps  # 17.2 and 68.8 GB


def test_small_memory_drops_the_steps_that_do_not_fit():
    mo = Catalog().model("llama-3.1-8b")
    plan = measurement_plan(mo, 16 * GB, 2.0)  # weights alone exceed 85% of it
    assert plan.prefill_steps == () and plan.decode_steps == ()
    assert plan.gemm and plan.decode_attention


def test_quick_plan_is_small():
    plan = measurement_plan(Catalog().model("llama-3.1-8b"), 80 * GB, 2.0, quick=True)
    assert len(plan.gemm) == 12 and plan.attention_tp == (1,)
    assert plan.prefill_steps == ((1, 16),) and plan.decode_steps == ((1, 32), (4, 32))


@pytest.mark.parametrize("model", ["mixtral-8x7b", "deepseek-v3", "e5-base"])
def test_only_dense_decoders_are_measured(model, tmp_path):
    with pytest.raises(ConfigError, match=r"measure\.model.*dense decoder"):
        measure(tmp_path / "m.csv", "h100_sxm", model=model)


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"ops": ["gemm", "kernels"]}, r"measure\.ops"),
        ({"dtype": "fp8"}, r"measure\.dtype"),
        ({"trials": 0}, r"measure\.trials"),
        ({"model": "llama-3.1-8bb"}, r"measure\.model"),
    ],
)
def test_bad_arguments_name_the_field(kw, path, tmp_path):
    with pytest.raises(ConfigError, match=path):
        measure(tmp_path / "m.csv", "h100_sxm", **kw)
    assert not (tmp_path / "m.csv").exists()


def test_unknown_device_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"measure\.device"):
        measure(tmp_path / "m.csv", "h100_sxmm")


def test_without_torch_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(ConfigError, match=r"PyTorch installed"):
        measure(tmp_path / "m.csv", "h100_sxm")


def test_cli_reports_a_bad_model(tmp_path, capsys):
    rc = main(["measure", "--out", str(tmp_path / "m.csv"), "--device", "h100_sxm", "--model", "mixtral-8x7b"])
    assert rc == 2
    assert "measure.model" in capsys.readouterr().err


# ------------------------------------------------------------------ with PyTorch (skipped where it is absent)


def _torch():
    return pytest.importorskip("torch")


def test_quick_measurement_on_the_cpu_writes_schema_rows(tmp_path):
    torch = _torch()
    cat = Catalog({"models": TINY})
    out = tmp_path / "tiny.csv"
    ms = measure(out, "xeon_8480p", model="tiny-llama", quick=True, trials=2, catalog=cat, torch_device="cpu")
    back = read_measurements(out)
    assert len(back) == len(ms)
    np.testing.assert_allclose(back["latency_s"], ms["latency_s"], rtol=1e-8)
    plan = measurement_plan(cat.model("tiny-llama"), 1e12, 4.0, quick=True)
    counts = {op: int((ms["op"] == op).sum()) for op in set(ms["op"])}
    assert counts == {
        "gemm": len(plan.gemm),
        "context_attention": len(plan.prefill_attention),
        "generation_attention": len(plan.decode_attention),
        "layer_linear": len(plan.layer_tokens),
        "prefill_step": len(plan.prefill_steps),
        "decode_step": len(plan.decode_steps),
    }
    assert (ms["latency_s"] > 0).all() and set(ms["dtype"]) == {"fp32"}
    assert set(ms["backend"]) == {f"torch-{torch.__version__.split('+')[0]}"}
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["environment"]["torch"] == torch.__version__ and meta["device"] == "xeon_8480p"
    assert meta["rows"] == len(ms) and "median" in meta["method"]["timing"]
    assert meta["rows_per_op"] == counts
    # every row is predictable by the model it is meant to calibrate, and reported as torch's
    assert np.isfinite(predict(ms, catalog=cat)).all()
    errors = reference_errors(catalog=cat, measurements=ms)
    assert set(errors.source.values) == {f"torch/{op}" for op in counts}


def _session(torch):
    from hermes_fast.calibration.measure_cases import Session

    return Session(torch, torch.device("cpu"), "fp32", "xeon_8480p", trials=1, seed=3)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-tied"])
def test_random_decoder_has_the_models_parameters(name):
    torch = _torch()
    from hermes_fast.calibration.measure_cases import _RandomDecoder

    mo = Catalog({"models": TINY}).model(name)
    net = _RandomDecoder(_session(torch), mo)
    tensors = [net.embedding, net.norm, *(w for layer in net.layers for w in layer.values())]
    if not mo.tied_embeddings:
        tensors.append(net.lm_head)
    assert len({t.data_ptr() for t in tensors}) == len(tensors)  # no weight counted twice
    assert sum(t.numel() for t in tensors) == param_count(mo)["total"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-tied"])
def test_decode_with_the_kv_cache_matches_a_full_prefill(name):
    """Prefill 5 tokens, then decode the 6th against the cache: the logits equal those of prefilling all 6
    (checks the cache write, RoPE positions and the folded GQA decode against causal prefill)."""
    torch = _torch()
    from hermes_fast.calibration.measure_cases import _RandomDecoder

    net = _RandomDecoder(_session(torch), Catalog({"models": TINY}).model(name))
    tokens = torch.randint(0, net.m.vocab_size, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = net.forward(tokens, net.caches(3, 6), 0, net.rope_tables(torch.arange(6)))
        caches = net.caches(3, 6)
        first = net.forward(tokens[:, :5], caches, 0, net.rope_tables(torch.arange(5)))
        step = net.forward(tokens[:, 5:], caches, 5, net.rope_tables(torch.arange(5, 6)))
    assert not torch.allclose(first, full, rtol=1e-3)  # the last token matters
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)


def test_a_replay_visits_every_operand_copy():
    from hermes_fast.calibration.measure_cases import _MAX_REPS, _copies, _Timer

    assert _Timer._reps(1e-3, 1) == 5 and _Timer._reps(1e-3, 300) == 300  # 5 ms, or every copy
    assert _Timer._reps(1e-9, 1) == _MAX_REPS and _Timer._reps(1.0, 1) == 1
    assert _copies(64 * 2**10, 50 * 2**20) == 1600 and _copies(1e9, 50 * 2**20) == 1


def test_chunked_prefill_after_cached_tokens_is_refused():
    torch = _torch()
    from hermes_fast.calibration.measure_cases import _RandomDecoder

    net = _RandomDecoder(_session(torch), Catalog({"models": TINY}).model("tiny-llama"))
    with pytest.raises(ValueError, match="bottom-right causal mask"):
        net.forward(torch.zeros((1, 2), dtype=torch.long), net.caches(1, 4), 2, net.rope_tables(torch.arange(2, 4)))


def test_folded_gqa_decode_equals_repeated_kv_heads():
    torch = _torch()
    from hermes_fast.calibration.measure_cases import _attend

    s = _session(torch)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g) for shape in ((2, 8, 1, 16), (2, 2, 9, 16), (2, 2, 9, 16)))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1)
    )
    torch.testing.assert_close(_attend(s, q, k, v, causal=False), ref, rtol=1e-5, atol=1e-6)
