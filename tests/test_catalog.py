"""Preset catalog: every preset loads, every figure names its source, every device has a price on the one stated
basis (or says why not), and scenario overrides behave."""

from __future__ import annotations

import csv
import math
import re
from importlib.resources import files
from pathlib import Path

import pytest

import hermes_fast as hf
from hermes_fast.catalog import preset_names, price_basis, price_note
from hermes_fast.config.base import ConfigError
from hermes_fast.config.files import load_yaml
from hermes_fast.config.hardware import DTYPES
from hermes_fast.resolve import Catalog

KINDS = ("devices", "models", "memory_tiers")

REQUIRED_DEVICES = {
    "h100_sxm", "h200_sxm", "b200", "gb200", "a100_sxm_80gb", "l40s", "mi300x", "mi325x", "gaudi3",
    "tpu_v5e", "tpu_v5p", "tpu_v6e", "xeon_8480p", "xeon_6980p", "grace_cpu", "pim_hbm",
}  # fmt: skip
REQUIRED_MODELS = {
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-2-7b", "llama-2-70b", "mixtral-8x7b",
    "deepseek-v3", "qwen3-32b", "qwen3-235b-a22b", "gpt-oss-120b", "e5-base", "e5-large", "e5-mistral-7b",
    "bge-reranker-large", "bge-reranker-base", "router-bert-base", "qwen3-0.6b",
}  # fmt: skip

SRAM_DEVICES = {"groq_lpu"}  # main memory is on-chip SRAM: weights spread over hundreds of chips

# Model architecture fields may be covered by one `shape` source (the cited config.json); these may not.
MODEL_OWN_SOURCE = {"params_published"}


def _raw(kind: str) -> dict[str, dict]:
    """The preset file as written (not merged with defaults), so the check sees what the YAML claims."""
    return load_yaml((files("hermes_fast") / "catalog" / f"{kind}.yaml").read_text())


def _numeric_leaves(mapping, prefix: str = ""):
    """Dotted paths of every number in a (nested) mapping, skipping `sources`; None values are skipped."""
    for key, value in mapping.items():
        if key == "sources":
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_leaves(value, path + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield path


def _params(kind: str):
    return [pytest.param(kind, n, id=f"{kind}:{n}") for n in preset_names(kind)]


ALL_PRESETS = [p for kind in KINDS for p in _params(kind)]


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("kind,name", ALL_PRESETS)
def test_every_preset_loads(kind, name):
    cfg = Catalog().get(kind, name)
    assert cfg.name
    assert cfg.sources, f"{kind}.{name} has no sources"


def test_required_devices_present():
    missing = REQUIRED_DEVICES - set(preset_names("devices"))
    assert not missing, f"missing device presets: {sorted(missing)}"


def test_required_models_present():
    missing = REQUIRED_MODELS - set(preset_names("models"))
    assert not missing, f"missing model presets: {sorted(missing)}"


# ------------------------------------------------------------------------------------------------ sources


@pytest.mark.parametrize("kind,name", _params("devices") + _params("memory_tiers"))
def test_every_hardware_figure_has_exact_source(kind, name):
    """Each number written for a device or memory tier has a `sources` entry under its exact field path."""
    raw = _raw(kind)[name]
    sources = raw.get("sources", {})
    missing = [p for p in _numeric_leaves(raw) if p not in sources]
    assert not missing, f"{kind}.{name}: no source for {missing}"


@pytest.mark.parametrize("name", preset_names("devices"))
def test_device_key_figures_have_sources(name):
    """The headline figures (checked on the loaded device, defaults included) each name a source."""
    dev = Catalog().device(name)
    required = [f"peak_flop_per_s.{d}" for d in DTYPES if getattr(dev.peak_flop_per_s, d) is not None]
    required += [
        "memory_bytes",
        "memory_bandwidth_bytes_per_s",
        "scale_up.bandwidth_bytes_per_s",
        "power_peak_w",
    ]
    if dev.price_usd_per_hour is not None:
        required.append("price_usd_per_hour")
    missing = [p for p in required if p not in dev.sources]
    assert not missing, f"devices.{name}: no source for {missing}"


@pytest.mark.parametrize("name", preset_names("models"))
def test_every_model_figure_has_source(name):
    """Architecture numbers are covered by `shape` (or their own / a parent path); others need their own."""
    raw = _raw("models")[name]
    sources = raw.get("sources", {})
    assert "shape" in sources, f"models.{name}: no `shape` source (the published config)"
    missing = []
    for path in _numeric_leaves(raw):
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        if prefixes & set(sources):
            continue
        if path in MODEL_OWN_SOURCE or "shape" not in sources:
            missing.append(path)
    assert not missing, f"models.{name}: no source for {missing}"


@pytest.mark.parametrize("name", preset_names("models"))
def test_published_param_count_is_set(name):
    model = Catalog().model(name)
    assert model.params_published is not None
    assert "params_published" in model.sources


# ------------------------------------------------------------------------------------------ unit sanity


@pytest.mark.parametrize("name", preset_names("devices"))
def test_device_figures_are_in_si_units(name):
    """Catch TFLOPS/GB/GB-per-s typed without their exponent (989.0 instead of 989.0e12)."""
    dev = Catalog().device(name)
    for d in DTYPES:
        peak = getattr(dev.peak_flop_per_s, d)
        assert peak is None or 1e11 <= peak <= 1e17, (d, peak)
    # SRAM-only designs hold hundreds of MB per chip (Groq LPU: 230 MB); HBM/DRAM devices at least 1 GB
    assert (1e8 if name in SRAM_DEVICES else 1e9) <= dev.memory_bytes <= 1e13
    assert 1e10 <= dev.memory_bandwidth_bytes_per_s <= 1e14
    links = [dev.scale_up, dev.scale_out] + ([dev.host_link] if dev.host_link else [])
    for link in links:
        assert 1e8 <= link.bandwidth_bytes_per_s <= 1e13, link
        assert link.latency_s < 1e-3, link
    assert 1.0 <= dev.power_peak_w <= 5000.0
    assert dev.price_usd_per_hour is None or dev.price_usd_per_hour < 100.0


def test_native_dtype_paths():
    """Dtypes the hardware lacks stay null (fp8/fp4 on A100, fp4 on Hopper); CPUs have no host link."""
    cat = Catalog()
    a100 = cat.device("a100_sxm_80gb").peak_flop_per_s
    assert a100.fp8 is None and a100.fp4 is None
    for name in ("h100_sxm", "h200_sxm"):
        assert cat.device(name).peak_flop_per_s.fp4 is None
    assert cat.device("b200").peak_flop_per_s.fp4 is not None
    for name in preset_names("devices"):
        dev = cat.device(name)
        if dev.kind == "cpu":
            assert dev.host_link is None, name


def test_link_bandwidth_is_per_direction():
    """NVLink4 is marketed as 900 GB/s bidirectional; the catalog stores 450 GB/s per direction."""
    assert Catalog().device("h100_sxm").scale_up.bandwidth_bytes_per_s == pytest.approx(450.0e9)
    assert Catalog().device("b200").scale_up.bandwidth_bytes_per_s == pytest.approx(900.0e9)


# ---------------------------------------------------------------------------------------------- prices

DATE = re.compile(r"\b20\d\d-\d\d(-\d\d)?\b")


def _price_rows() -> dict[str, dict[str, str]]:
    """hermes_fast/data/reference/cloud_prices.csv, the rows the catalog's prices come from, by device."""
    text = (files("hermes_fast") / "data" / "reference" / "cloud_prices.csv").read_text()
    return {row["device"]: row for row in csv.DictReader(text.splitlines())}


def test_price_basis_is_stated_once_at_the_top_and_in_the_readme():
    text = (files("hermes_fast") / "catalog" / "devices.yaml").read_text()
    header = text.split("\n\n", 1)[0]
    assert "# Prices (price_usd_per_hour), one basis for every device:" in header
    assert text.count("one basis for every device") == 1
    basis = price_basis()
    assert basis.startswith("the on-demand") and basis.endswith(".")
    for words in ("list price per device-hour", "AWS EC2 us-east-1", "Google Cloud", "TPUs"):
        assert words in basis
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "on-demand list price per device-hour at a hyperscale cloud" in readme


@pytest.mark.parametrize("name", preset_names("devices"))
def test_every_device_has_a_price_or_a_reason(name):
    """A price names its instance, the division, its source and date and matches its reference row; no price
    gives its reason ("n/a: ..."), which `presets devices` shows."""
    raw = _raw("devices")[name]
    assert "price_usd_per_hour" in raw, f"devices.{name}: price not stated (a number, or null with a reason)"
    price, note = raw["price_usd_per_hour"], raw["sources"].get("price_usd_per_hour", "")
    if price is None:
        assert note.startswith("n/a: ") and len(note) > len("n/a: ") + 10, note
        assert price_note(None, raw["sources"]) == f"n/a ({note[5:].split(' (')[0].split(';')[0]})"
        return
    row = _price_rows()[name]
    derived = float(row["offering_usd_per_hour"]) / float(row["offering_units"]) * float(row["device_units"])
    assert price == pytest.approx(derived, abs=5e-5)
    assert float(row["usd_per_device_hour"]) == price
    assert DATE.search(note) and DATE.fullmatch(row["read_on"]), (note, row["read_on"])
    assert row["offering"].split(" ")[0].lower() in note.lower()  # the instance or slice
    assert row["version"][:7] in note  # the commit of the file it was read from
    assert float(row["offering_usd_per_hour"]) in {float(x) for x in re.findall(r"\d+(?:\.\d+)?", note)}
    assert row["region"].split(" ")[0] in note or row["region"] == "US regions"
    assert price_note(price, raw["sources"]) == f"{price:.2f}"


def test_prices_are_on_one_basis_for_nearly_every_device():
    rows = _price_rows()
    raw = _raw("devices")
    priced = {n for n, e in raw.items() if e["price_usd_per_hour"] is not None}
    assert set(rows) == priced
    for name, row in rows.items():
        on_google = raw[name]["kind"] == "tpu"  # only Google rents TPUs; every other price is AWS us-east-1
        assert (row["provider"], row["region"]) in (
            {("Google Cloud", "us-central1"), ("Google Cloud", "US regions")} if on_google else {("AWS", "us-east-1")}
        ), row
    # the devices the issue found without a price, and the CPUs, now have one
    assert {"h200_sxm", "b200", "a100_sxm_80gb", "l40s", "xeon_8480p", "xeon_6980p"} <= priced
    # a marketplace listing (the old MI300X figure) is not on the basis
    assert "mi300x" not in priced and "TensorWave" in raw["mi300x"]["sources"]["price_usd_per_hour"]
    assert len(priced) >= 10


@pytest.mark.parametrize("device", ["h200_sxm", "b200", "a100_sxm_80gb"])
def test_cost_per_token_on_newly_priced_devices(device):
    """A short simulation on a device that printed `cost n/a` before: the cost is the device-hours x price."""
    step_s = 0.01  # one request at a time, a constant step: 5 output tokens take 5 steps
    scenario = {
        "engines": [
            {
                "name": "e",
                "model": "llama-3.1-8b",
                "device": device,
                "fixed_step_time_s": step_s,
                "batching": {"max_batch_size": 1},
            }
        ],
        "workload": {"rate_per_s": 10.0, "classes": [{"prompt_tokens": 1, "output_tokens": 5}]},
    }
    ds = hf.simulate(scenario, n_requests=200, seed=1, keep_requests=True)
    price = hf.Catalog().device(device).price_usd_per_hour
    run_s = ds.request_completion_s.values[0].max() - ds.request_arrival_s.values[0][0]
    cost = float(ds.cost_usd_per_mtoken.item())
    assert cost == pytest.approx(price * run_s / 3600 / (200 * 5) * 1e6)


# ------------------------------------------------------------------------------------------- overrides


def test_same_name_override_changes_one_field_and_keeps_the_rest():
    preset = Catalog().device("h100_sxm")
    over = Catalog({"devices": {"h100_sxm": {"memory_bytes": 96.0e9}}}).device("h100_sxm")
    assert over.memory_bytes == 96.0e9
    assert over.memory_bandwidth_bytes_per_s == preset.memory_bandwidth_bytes_per_s
    assert over.peak_flop_per_s == preset.peak_flop_per_s
    assert over.scale_up == preset.scale_up
    assert over.sources == preset.sources


def test_nested_override_merges_field_by_field():
    preset = Catalog().device("h100_sxm")
    over = Catalog({"devices": {"h100_sxm": {"peak_flop_per_s": {"bf16": 900.0e12}}}}).device("h100_sxm")
    assert over.peak_flop_per_s.bf16 == 900.0e12
    assert over.peak_flop_per_s.fp8 == preset.peak_flop_per_s.fp8


def test_base_derives_a_new_device():
    cat = Catalog({"devices": {"my_gpu": {"base": "h100_sxm", "name": "H100 at 500 W", "power_peak_w": 500.0}}})
    dev, preset = cat.device("my_gpu"), cat.device("h100_sxm")
    assert dev.name == "H100 at 500 W"
    assert dev.power_peak_w == 500.0
    assert dev.memory_bytes == preset.memory_bytes
    assert preset.power_peak_w == 700.0  # the preset itself is untouched
    assert "my_gpu" in cat.names("devices")


def test_base_derives_a_new_model():
    cat = Catalog({"models": {"llama-3.1-8b-32k": {"base": "llama-3.1-8b", "max_context_tokens": 32768}}})
    m = cat.model("llama-3.1-8b-32k")
    assert m.max_context_tokens == 32768
    assert m.hidden_size == cat.model("llama-3.1-8b").hidden_size


def test_misspelt_base_hints_the_right_name():
    cat = Catalog({"devices": {"my_gpu": {"base": "h100_smx", "power_peak_w": 500.0}}})
    with pytest.raises(ConfigError, match="did you mean 'h100_sxm'") as err:
        cat.device("my_gpu")
    assert err.value.path == "devices.my_gpu.base"


def test_unknown_field_in_override_names_its_path():
    cat = Catalog({"devices": {"my_gpu": {"base": "h100_sxm", "memory_bandwdith": 4.0e12}}})
    with pytest.raises(ConfigError) as err:
        cat.device("my_gpu")
    assert err.value.path == "devices.my_gpu.memory_bandwdith"
    assert "memory_bandwidth_bytes_per_s" in str(err.value)


def test_unknown_field_in_same_name_override_names_its_path():
    cat = Catalog({"models": {"llama-3.1-8b": {"n_layer": 16}}})
    with pytest.raises(ConfigError) as err:
        cat.model("llama-3.1-8b")
    assert err.value.path == "models.llama-3.1-8b.n_layer"


def test_unknown_preset_name_hints():
    with pytest.raises(ConfigError, match="did you mean 'mi300x'"):
        Catalog().device("mi300", "engines[0].device")


# ------------------------------------------------------------------------------------- today's fleets


@pytest.mark.parametrize(
    "name,bf16,fp8,fp4,memory,bandwidth,watts",
    [
        # dense figures from the per-GPU tables the sources cite (sparse / 2 where a vendor quotes sparse)
        ("b300", 2.25e15, 4.5e15, 14e15, 270e9, 7.7e12, 1100),
        ("gb300", 2.5e15, 5e15, 15e15, 279e9, 8e12, 1400),  # rack: 1080 PF FP4, 20 TB, 576 TB/s over 72 GPUs
        ("mi355x", 5033.2e12 / 2, 256 * 8192 * 2.4e9, 2 * 5033.2e12, 288e9, 8e12, 1400),
        ("tpu7x", 2307e12, 4614e12, None, 192 * 2**30, 7.37e12, 1000),
    ],
)
def test_new_accelerators_peaks_and_memory(name, bf16, fp8, fp4, memory, bandwidth, watts):
    dev = Catalog().device(name)
    p = dev.peak_flop_per_s
    assert p.bf16 == pytest.approx(bf16, rel=1e-4) and p.fp8 == pytest.approx(fp8, rel=1e-4)
    assert p.fp4 == (None if fp4 is None else pytest.approx(fp4, rel=1e-4))
    assert dev.memory_bytes == pytest.approx(memory, rel=1e-4)
    assert dev.memory_bandwidth_bytes_per_s == pytest.approx(bandwidth)
    assert dev.power_peak_w == watts
    # sanity: FP8 doubles BF16 on each; more HBM than the generation before (B200 180 GB, MI325X 256, v6e 32 GiB)
    assert p.fp8 == pytest.approx(2 * p.bf16, rel=1e-3)
    assert dev.memory_bytes > 250e9 or name == "tpu7x" and dev.memory_bytes > 6 * 32 * 2**30 * 0.99


def test_blackwell_ultra_int8_is_cut_and_domains_differ():
    b300, gb300 = Catalog().device("b300"), Catalog().device("gb300")
    assert b300.peak_flop_per_s.int8 == 150e12 and gb300.peak_flop_per_s.int8 == 165e12  # 0.15 / 0.165 POPS
    assert (b300.scale_up_domain_devices, gb300.scale_up_domain_devices) == (8, 72)
    assert b300.scale_up.bandwidth_bytes_per_s == gb300.scale_up.bandwidth_bytes_per_s == 1.8e12 / 2  # NVLink 5


def _groq_70b(tp: int, pp: int):
    from hermes_fast.compile import compile_engine
    from hermes_fast.config import Dtypes, Parallel

    cat = Catalog(calibration="none")
    return compile_engine(
        cat.model("llama-3.1-70b"),
        cat.device("groq_lpu"),
        Parallel(tp=tp, pp=pp),
        Dtypes(weight="fp8", activation="fp8", kv="fp8"),
        max_batched_tokens=64,
    )


def test_sram_device_spreads_a_70b_model_over_hundreds_of_chips():
    """Llama-3.1-70B in 8-bit weights on 230 MB SRAM chips: by hand, 70.6e9 B / 230e6 B = 307 chips for the weights
    alone; with the layout rules (TP shards a layer, PP splits the 80 layers, the LM head sits on the last stage)
    the busiest chip of tp=16 x pp=40 holds 2 layers + 1/16 of the LM head, which fits; fewer chips do not."""
    h, nh, hd, f, v = 8192, 64, 128, 28672, 128256
    assert math.ceil(70.6e9 / 230e6) == 307
    usable = 0.9 * 230e6

    def reserve(tp):  # max_batched_tokens x activations (16-bit hidden states)
        return 64 * (4 * h + 3 * f / tp) * 2

    def busiest(tp, layers):  # bytes: fp8 weights of the busiest stage (the last: LM head + final norm)
        layer = 2 * h * nh * hd / tp + 2 * h * max(8 / tp, 1) * hd + 3 * h * f / tp + 2 * h
        return layers * layer + v * h / tp + h

    fits = _groq_70b(16, 40)
    assert fits.devices == 640
    assert fits.weights_bytes == pytest.approx(busiest(16, 2), rel=1e-12)
    assert busiest(16, 2) + reserve(16) < usable and fits.weights_fit and fits.kv_capacity_tokens > 0
    for tp, pp, layers in ((8, 1, 80), (8, 40, 2), (16, 20, 4), (16, 32, 3)):  # 8, 320, 320 and 512 chips
        few = _groq_70b(tp, pp)
        assert not few.weights_fit, (tp, pp)
        assert busiest(tp, layers) + reserve(tp) > usable
    # estimate says so: a grid over the layout marks the small ones as not fitting
    scenario = {
        "engines": [
            {
                "name": "groq",
                "model": "llama-3.1-70b",
                "device": "groq_lpu",
                "stack": "ideal",
                "max_batched_tokens": 64,
                "dtypes": {"weight": "fp8", "activation": "fp8", "kv": "fp8"},
                "parallel": {"tp": 16, "pp": 40},
            }
        ],
        "workload": {"batch_size": 1, "prompt_tokens": 128, "output_tokens": 128},
    }
    ds = hf.estimate(scenario, grid={"engines.groq.parallel.pp": [10, 20, 40, 80]}, calibration="none")
    fits_pp = ds.fits.sel(engine="groq").values.ravel().tolist()
    assert fits_pp == [False, False, True, True]
    assert int(ds.devices.sel({"engine": "groq", "engines.groq.parallel.pp": 40})) == 640
