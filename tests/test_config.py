"""Config loading: bad input raises ConfigError naming the dotted path, the value and what is expected."""

from __future__ import annotations

import dataclasses

import pytest

import hermes_fast as hf
from hermes_fast import ConfigError, estimate, load_scenario
from hermes_fast.config import Engine, Parallel, Scenario, Workload, from_mapping, load_yaml, to_mapping
from hermes_fast.config.base import fld
from hermes_fast.resolve import Catalog

VALID_TOP_KEYS = "description, devices, engines, links, memory_tiers, models, name, serving, stacks, workload"


def one_engine(**fields) -> dict:
    """A minimal valid scenario (Llama-3.1-8B on one H100) with some engine fields replaced."""
    return {"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm", **fields}]}


def with_workload(**fields) -> dict:
    return {**one_engine(), "workload": fields}


def with_devices(devices: dict, device: str = "h100_sxm") -> dict:
    return {**one_engine(device=device), "devices": devices}


def _raises(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# (id, scenario mapping, path, value, fragment of .expected) -- all rejected by load_scenario
LOAD_CASES = [
    # 1. unknown top-level key: lists the valid keys and hints the close one
    ("top-level-typo", {"engine": one_engine()["engines"]}, "engine", one_engine()["engines"],
     f"did you mean 'engines'?); valid keys: {VALID_TOP_KEYS}"),
    # 2. unknown nested key
    ("nested-typo", one_engine(parallel={"tpp": 2}), "engines[0].parallel.tpp", 2,
     "did you mean 'tp'?); valid keys: attention_dp, cp, ep, pp, tp"),
    ("workload-typo", with_workload(batchsize=4), "workload.batchsize", 4, "did you mean 'batch_size'?"),
    # 3. misspelt device, 4. misspelt model
    ("device-typo", one_engine(device="h100-sxm"), "engines[0].device", "h100-sxm",
     "a known device (did you mean 'h100_sxm'?)"),
    ("model-typo", one_engine(model="llama-3.1-8"), "engines[0].model", "llama-3.1-8",
     "a known model (did you mean 'llama-3.1-8b'?)"),
    ("model-unknown", one_engine(model="gpt-17"), "engines[0].model", "gpt-17", "known: bge-reranker-base"),
    # 5. negative / zero values
    ("negative-batch", with_workload(batch_size=-4), "workload.batch_size", -4, "an integer >= 1"),
    ("zero-context", with_workload(context_tokens=0), "workload.context_tokens", 0, "an integer >= 1"),
    ("zero-tp", one_engine(parallel={"tp": 0}), "engines[0].parallel.tp", 0, "an integer >= 1"),
    # 6. wrong types
    ("tp-string", one_engine(parallel={"tp": "two"}), "engines[0].parallel.tp", "two", "an integer"),
    ("mem-util-string", one_engine(memory_utilization="high"), "engines[0].memory_utilization", "high",
     "a number"),
    ("tp-bool", one_engine(parallel={"tp": True}), "engines[0].parallel.tp", True, "an integer"),
    ("tp-null", one_engine(parallel={"tp": None}), "engines[0].parallel.tp", None, "an integer"),
    ("model-int", one_engine(model=3), "engines[0].model", 3, "a string"),
    ("parallel-not-mapping", one_engine(parallel=4), "engines[0].parallel", 4, "a mapping (Parallel)"),
    ("engine-not-mapping", {"engines": ["llama"]}, "engines[0]", "llama", "a mapping (Engine)"),
    ("engines-not-list", {"engines": {"model": "x"}}, "engines", {"model": "x"}, "a list"),
    ("root-not-mapping", [1, 2], "<root>", [1, 2], "a mapping (Scenario)"),
    # 7. non-integral float for an int field
    ("tp-2.5", one_engine(parallel={"tp": 2.5}), "engines[0].parallel.tp", 2.5, "an integer"),
    ("tp-inf", one_engine(parallel={"tp": float("inf")}), "engines[0].parallel.tp", float("inf"),
     "an integer"),
    # 8. memory_utilization out of (0, 1]
    ("mem-util-1.5", one_engine(memory_utilization=1.5), "engines[0].memory_utilization", 1.5,
     "a number <= 1"),
    ("mem-util-0", one_engine(memory_utilization=0), "engines[0].memory_utilization", 0.0, "a number > 0"),
    # 10. ep must divide tp (checked at load time)
    ("ep-not-divisor", one_engine(parallel={"tp": 4, "ep": 3}), "engines[0].parallel.ep", 3,
     "a divisor of tp (4)"),
    # 14. missing required key
    ("missing-model", {"engines": [{"device": "h100_sxm"}]}, "engines[0].model", None,
     "a value (a string); this key is required"),
    ("missing-engines", {"name": "x"}, "engines", None, "this key is required"),
    # 15. duplicate engine names; empty engines list
    ("duplicate-names",
     {"engines": [{"name": "a", "model": "llama-3.1-8b", "device": "h100_sxm"},
                  {"name": "a", "model": "llama-3.1-70b", "device": "h100_sxm"}]},
     "engines[1].name", "a", "a name not used by another engine"),
    ("empty-engines", {"engines": []}, "engines", [], "at least one engine"),
    # 17. unknown dtype with a hint
    ("kv-dtype-typo", one_engine(dtypes={"kv": "fp9"}), "engines[0].dtypes.kv", "fp9",
     "one of 'fp32', 'fp16', 'bf16', 'fp8', 'int8', 'fp4', 'int4' (did you mean 'fp8'?)"),
    ("weight-dtype-typo", one_engine(dtypes={"weight": "bf61"}), "engines[0].dtypes.weight", "bf61",
     "(did you mean 'bf16'?)"),
    # 18. user device overrides: unknown field (also when no engine uses the device), unknown base
    ("device-override-typo", with_devices({"my": {"base": "h100_sxm", "memory_bandwdith": 1}}, device="my"),
     "devices.my.memory_bandwdith", 1, "did you mean 'memory_bandwidth_bytes_per_s'?"),
    ("unused-device-override-typo", with_devices({"my": {"base": "h100_sxm", "memory_bandwdith": 1}}),
     "devices.my.memory_bandwdith", 1, "did you mean 'memory_bandwidth_bytes_per_s'?"),
    ("unknown-base", with_devices({"my": {"base": "h100_smx"}}, device="my"), "devices.my.base", "h100_smx",
     "a known device (did you mean 'h100_sxm'?)"),
    ("base-cycle", with_devices({"a": {"base": "b"}, "b": {"base": "a"}}, device="a"), "devices.b.base", "a",
     "a base chain without cycles"),
    ("override-not-mapping", with_devices({"my": 3}), "devices.my", 3, "a mapping of fields"),
    ("override-nested-bound",
     with_devices({"my": {"base": "h100_sxm", "efficiency": {"memory_efficiency": 2}}}, device="my"),
     "devices.my.efficiency.memory_efficiency", 2.0, "a number <= 1"),
    ("preset-override-bound", with_devices({"h100_sxm": {"memory_bytes": -1}}),
     "devices.h100_sxm.memory_bytes", -1.0, "a number >= 1e+06"),
    ("new-device-incomplete", with_devices({"my": {"name": "Mine"}}, device="my"), "devices.my.kind", None,
     "this key is required"),
    ("model-override-moe", {**one_engine(model="m"), "models": {"m": {"base": "llama-3.1-8b", "moe": {
        "n_experts": 1, "top_k": 1, "expert_ffn_hidden_size": 64}}}},
     "models.m.moe.n_experts", 1, "an integer >= 2"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "path", "value", "expected"), [c[1:] for c in LOAD_CASES],
                         ids=[c[0] for c in LOAD_CASES])  # fmt: skip
def test_load_scenario_rejects(source, path, value, expected):
    err = _raises(load_scenario, source)
    assert err.path == path
    assert err.value == value
    assert type(err.value) is type(value)
    assert expected in err.expected
    assert str(err).startswith(f"{path}: got ")
    assert f"; expected {err.expected}" in str(err)


def test_error_message_format():
    err = _raises(load_scenario, one_engine(parallel={"tp": "two"}))
    assert str(err) == "engines[0].parallel.tp: got 'two'; expected an integer"
    assert isinstance(err, ValueError)
    assert issubclass(ConfigError, ValueError)
    assert hf.ConfigError is ConfigError


def test_long_values_are_shortened_in_the_message():
    err = _raises(load_scenario, one_engine(model="x" * 200))
    assert err.value == "x" * 200  # the attribute keeps the full value
    shown = str(err).split(": got ", 1)[1].split("; expected", 1)[0]
    assert shown.endswith("...") and len(shown) == 80


def test_non_string_base_keeps_its_value():
    err = _raises(load_scenario, with_devices({"my": {"base": 5}}, device="my"))
    assert err.path == "devices.my.base"
    assert err.value == 5 and isinstance(err.value, int)


def test_self_referencing_base_is_a_config_error():
    err = _raises(load_scenario, with_devices({"my": {"base": "my"}}, device="my"))
    assert err.path == "devices.my.base"
    assert err.value == "my"
    assert "itself" in err.expected


# 7. integral floats are accepted for int fields
def test_integral_float_accepted_for_int_field():
    sc = load_scenario(one_engine(parallel={"tp": 2.0}))
    assert sc.engines[0].parallel.tp == 2
    assert type(sc.engines[0].parallel.tp) is int
    sc = load_scenario("engines:\n  - {model: llama-3.1-8b, device: h100_sxm, parallel: {tp: 2.0}}\n")
    assert sc.engines[0].parallel.tp == 2 and type(sc.engines[0].parallel.tp) is int


def test_int_accepted_for_float_field():
    sc = load_scenario(one_engine(memory_utilization=1))
    assert sc.engines[0].memory_utilization == 1.0
    assert type(sc.engines[0].memory_utilization) is float


# --- layout, fit and grid errors raised by estimate()


# (id, scenario, grid, path, value, fragment of .expected)
ESTIMATE_CASES = [
    # 9. TP must divide the heads
    ("tp-not-dividing-heads", one_engine(parallel={"tp": 3}), None, "engines[0].parallel.tp", 3,
     "a divisor of the model's n_heads (32, Llama-3.1-8B)"),
    ("tp-above-heads", one_engine(parallel={"tp": 64}), None, "engines[0].parallel.tp", 64, "n_heads (32"),
    ("pp-above-layers", one_engine(parallel={"pp": 64}), None, "engines[0].parallel.pp", 64,
     "<= the model's n_layers (32)"),
    # 10. ep > 1 on a dense model
    ("ep-on-dense", one_engine(parallel={"tp": 2, "ep": 2}), None, "engines[0].parallel.ep", 2,
     "1 (Llama-3.1-8B has no experts)"),
    # 11. a model that does not fit
    ("model-too-large", {"engines": [{"model": "llama-3.1-405b", "device": "h100_sxm"}]}, None, "engines[0]",
     "llama-3.1-405b on h100_sxm tp=1 pp=1", "GB/device"),
    # 12. a batch whose KV does not fit
    ("kv-too-large", with_workload(batch_size=10000), None, "workload.batch_size", 10000,
     "fits the 422513 tokens of KV capacity of engines[0] (at most 330)"),
    # 13. grid errors
    ("grid-empty", one_engine(), {"batch_size": []}, "grid.batch_size", [], "a non-empty list of values"),
    ("grid-unknown-key", one_engine(), {"batch_sise": [1]}, "grid.batch_sise", [1],
     "a grid key (did you mean 'batch_size'?); valid: engine, device"),
    ("grid-bad-type", one_engine(), {"batch_size": [1, "x"]}, "grid.batch_size[1]", "x", "an integer"),
    ("grid-non-integral", one_engine(), {"tp": [2.5]}, "grid.tp[0]", 2.5, "an integer"),
    ("grid-bool", one_engine(), {"batch_size": [True]}, "grid.batch_size[0]", True, "an integer"),
    ("grid-zero", one_engine(), {"tp": [1, 0]}, "grid.tp[1]", 0, "an integer >= 1"),
    ("grid-duplicates", one_engine(), {"batch_size": [1, 8, 1]}, "grid.batch_size", [1, 8, 1],
     "distinct values"),
    ("grid-dtype-typo", one_engine(), {"kv_dtype": ["bf16", "fp9"]}, "grid.kv_dtype[1]", "fp9",
     "(did you mean 'fp8'?)"),
    ("grid-dtype-not-str", one_engine(), {"dtype": [8]}, "grid.dtype[0]", 8, "one of 'fp32', 'fp16', 'bf16'"),
    ("grid-device-typo", one_engine(), {"device": ["h100_sxm", "h100-sxm"]}, "grid.device[1]", "h100-sxm",
     "a known device (did you mean 'h100_sxm'?)"),
    ("grid-model-typo", one_engine(), {"model": ["llama-3.1-70c"]}, "grid.model[0]", "llama-3.1-70c",
     "(did you mean 'llama-3.1-70b'?)"),
    ("grid-engine-typo", one_engine(name="small"), {"engine": ["smal"]}, "grid.engine[0]", "smal",
     "an engine name (did you mean 'small'?); engines: small"),
    ("grid-mem-util", one_engine(), {"memory_utilization": [0.5, 1.5]}, "grid.memory_utilization[1]", 1.5,
     "a number <= 1"),
    ("grid-not-mapping", one_engine(), [("tp", [1])], "grid", [("tp", [1])], "a mapping of grid key"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "grid", "path", "value", "expected"), [c[1:] for c in ESTIMATE_CASES],
                         ids=[c[0] for c in ESTIMATE_CASES])  # fmt: skip
def test_estimate_rejects(source, grid, path, value, expected):
    load_scenario(source)  # these are valid scenarios: the error comes from the layout, memory or grid
    err = _raises(estimate, source, grid=grid)
    assert err.path == path
    assert err.value == value
    assert expected in err.expected


def test_model_too_large_message_and_grid_marks_unfit():
    big = {"engines": [{"model": "llama-3.1-405b", "device": "h100_sxm"}]}
    err = _raises(estimate, big)
    assert "GB" in str(err) and "usable" in err.expected
    # with a grid the same point is kept, marked as not fitting, rather than raised
    ds = estimate(big, grid={"device": ["h100_sxm", "h200_sxm"]})
    assert list(ds.device.values) == ["h100_sxm", "h200_sxm"]
    assert not ds.fits.values.any()
    assert (ds.weights_bytes.values > 0.9 * 80e9).all()


def test_invalid_layout_in_grid_is_marked_unfit():
    ds = estimate(one_engine(), grid={"tp": [1, 3]})
    assert bool(ds.fits.sel(tp=1).item())
    assert not bool(ds.fits.sel(tp=3).item())


def test_grid_accepts_integral_floats_and_scalars():
    ds = estimate(one_engine(), grid={"batch_size": [1.0, 4.0], "tp": 2})
    assert list(ds.batch_size.values) == [1, 4]
    assert list(ds.tp.values) == [2]


# --- YAML text and files


def test_invalid_yaml_text_names_the_line():
    err = _raises(load_scenario, "engines:\n  - model: [\n  device: x\n")
    assert err.path == "<text>:4"
    assert "expected ',' or ']'" in err.value
    assert err.expected == "valid YAML"


def test_invalid_yaml_file_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nengines:\n\t- model: a\n")
    err = _raises(load_scenario, f)
    assert err.path == f"{f}:3"
    assert "'\\t'" in err.value
    assert err.expected == "valid YAML"
    err = _raises(load_scenario, str(f))
    assert err.path == f"{f}:3"


def test_missing_yaml_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    err = _raises(load_scenario, missing)
    assert err.path == "<file>"
    assert err.value == str(missing)
    assert err.expected == "an existing YAML file"
    assert str(missing) in str(err)


def test_yaml_errors_with_paths_from_text():
    text = "engines:\n  - model: llama-3.1-8b\n    device: h100_sxm\n    parallel: {tp: two}\n"
    err = _raises(load_scenario, text)
    assert (err.path, err.value, err.expected) == ("engines[0].parallel.tp", "two", "an integer")
    err = _raises(load_scenario, "engines:\n")
    assert (err.path, err.value, err.expected) == ("engines", None, "a list")
    err = _raises(load_scenario, "# nothing here\n\n")  # YAML text without a mapping
    assert (err.path, err.value) == ("<text>", None) and "a YAML mapping" in err.expected


def test_yaml_scientific_notation_is_float():
    data = load_yaml("a: 1e12\nb: 2.5E-3\nc: -4e+2\nd: 3\ne: 2.0\n")
    assert data == {"a": 1e12, "b": 2.5e-3, "c": -400.0, "d": 3, "e": 2.0}
    assert type(data["a"]) is float and type(data["c"]) is float and type(data["d"]) is int
    text = (
        "devices:\n  my_gpu:\n    base: h100_sxm\n    memory_bandwidth_bytes_per_s: 4e12\n"
        "    peak_flop_per_s: {bf16: 1e15}\n"
        "engines:\n  - {model: llama-3.1-8b, device: my_gpu}\n"
    )
    sc = load_scenario(text)
    d = Catalog.for_scenario(sc).device("my_gpu")
    assert d.memory_bandwidth_bytes_per_s == 4e12
    assert d.peak_flop_per_s.bf16 == 1e15


# --- overrides, round trip


def test_preset_override_by_same_name_keeps_other_fields():
    preset = Catalog().device("h100_sxm")
    override = {"memory_bytes": 96e9, "efficiency": {"memory_efficiency": 0.7}}
    sc = load_scenario(with_devices({"h100_sxm": override}))
    d = Catalog.for_scenario(sc).device("h100_sxm")
    assert d.memory_bytes == 96e9
    assert d.efficiency.memory_efficiency == 0.7
    # everything else, nested fields included, is the preset's
    assert d.efficiency.compute_efficiency == preset.efficiency.compute_efficiency
    assert d.memory_bandwidth_bytes_per_s == preset.memory_bandwidth_bytes_per_s
    assert d.peak_flop_per_s == preset.peak_flop_per_s
    assert d.name == preset.name
    # the preset's runtime total belongs to its own memory: a new memory without one is what stacks budget from
    assert d.runtime_memory_bytes is None and preset.runtime_memory_bytes is not None
    assert dataclasses.replace(d, memory_bytes=preset.memory_bytes, runtime_memory_bytes=preset.runtime_memory_bytes,
                               efficiency=preset.efficiency) == preset  # fmt: skip


def test_model_override_by_same_name_and_base():
    preset = Catalog().model("llama-3.1-8b")
    models = {"llama-3.1-8b": {"n_layers": 16}, "tiny": {"base": "llama-3.1-8b", "n_layers": 2}}
    sc = load_scenario({**one_engine(), "models": models})
    cat = Catalog.for_scenario(sc)
    assert cat.model("llama-3.1-8b") == dataclasses.replace(preset, n_layers=16)
    assert cat.model("tiny") == dataclasses.replace(preset, n_layers=2)


def test_scenario_round_trips_through_to_mapping():
    src = {
        "name": "rt",
        "description": "round trip",
        "devices": {"my": {"base": "h100_sxm", "memory_bytes": 96e9}},
        "engines": [
            {"name": "a", "model": "llama-3.1-8b", "device": "my", "dtypes": {"kv": "fp8"}},
            {"name": "b", "model": "mixtral-8x7b", "device": "h100_sxm", "parallel": {"tp": 4, "ep": 2},
             "memory_utilization": 0.8},
        ],
        "workload": {"batch_size": 8, "context_tokens": 2000},
    }  # fmt: skip
    sc = load_scenario(src)
    m = to_mapping(sc)
    assert isinstance(m["engines"], list) and isinstance(m["engines"][1]["parallel"], dict)
    back = from_mapping(Scenario, m)
    assert back == sc
    assert load_scenario(m) == sc
    assert back.engines[1].parallel == Parallel(tp=4, ep=2)
    assert back.workload == Workload(batch_size=8, context_tokens=2000)
    assert isinstance(back.engines[0], Engine)


def test_default_scenario_round_trips():
    sc = load_scenario()
    assert from_mapping(Scenario, to_mapping(sc)) == sc
    assert load_scenario(sc) is sc


def test_non_finite_numbers_are_rejected():
    err = _raises(
        load_scenario,
        "devices:\n  h100_sxm: {memory_bytes: .inf}\nengines: [{model: llama-3.1-8b, device: h100_sxm}]\n",
    )
    assert err.path == "devices.h100_sxm.memory_bytes" and "finite" in err.expected


def test_unreadable_scenario_files_are_config_errors(tmp_path):
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("name: caf\xe9\n".encode("latin-1"))
    err = _raises(load_scenario, binary)
    assert err.path == "<file>" and "UTF-8" in err.expected
    err = _raises(load_scenario, tmp_path)
    assert err.path == "<file>" and "readable YAML file" in err.expected


# --- bad input issue 21: YAML limits, integer bounds, nested paths, sweep files passed as scenarios


def test_duplicate_yaml_keys_are_rejected_with_both_lines(tmp_path):
    err = _raises(load_yaml, "a: 1\nb: {x: 1}\na: 2\n")
    assert (err.path, err.value) == (
        "<text>:3",
        "a",
    ) and err.expected == "a key used once in its mapping (also at line 1)"
    err = _raises(load_yaml, "b: {x: 1, x: 2}\n")
    assert (err.path, err.value) == ("<text>:1", "x")
    f = tmp_path / "dup.yaml"
    f.write_text("engines:\n  - model: llama-3.1-8b\n    device: h100_sxm\n    model: llama-3.1-70b\n")
    err = _raises(load_scenario, f)
    assert (err.path, err.value) == (f"{f}:4", "model") and "also at line 2" in err.expected
    # a merge key (<<) is not a duplicate: the explicit key overrides the merged one, as YAML says
    assert load_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n")["d"] == {"x": 3, "y": 2}


def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error():
    from hermes_fast.config.files import MAX_YAML_DEPTH

    deep = "a: " + "[" * 10_000 + "]" * 10_000
    err = _raises(load_yaml, deep)
    assert err.path == "<text>:1" and err.expected == f"at most {MAX_YAML_DEPTH} nested levels"
    assert load_yaml("a: " + "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2))  # just within the limit
    with pytest.raises(ConfigError, match="nested levels"):
        load_scenario("engines:\n" + "  " * 0 + "- " + "{a: " * 200 + "1" + "}" * 200 + "\n")


def test_yaml_size_limits(tmp_path, monkeypatch):
    from hermes_fast.config import files

    laughs = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"  # 10^10 values once the aliases are expanded
    laughs += "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9))
    err = _raises(load_yaml, laughs)
    assert err.path == "<text>" and err.value == "12345679021 values" and "aliases expanded" in err.expected
    err = _raises(load_yaml, "a: &a [1, *a]\n")
    assert (err.path, err.value) == ("<text>:1", "a recursive alias")
    monkeypatch.setattr(files, "MAX_YAML_BYTES", 100)
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "x" * 200 + "\n")
    err = _raises(load_scenario, big)
    assert (err.path, err.value) == (str(big), "207 bytes") and err.expected == "a YAML file of at most 100 bytes"
    err = _raises(load_yaml, "name: " + "x" * 200 + "\n")
    assert err.path == "<text>" and err.expected == "YAML of at most 100 characters"


def test_empty_or_non_mapping_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    err = _raises(load_scenario, empty)
    assert (err.path, err.value) == (str(empty), None) and "the file is empty" in err.expected
    assert str(empty) in str(err)
    listed = tmp_path / "list.yaml"
    listed.write_text("- model: llama-3.1-8b\n")
    err = _raises(load_scenario, listed)
    assert err.path == str(listed) and err.expected == "a scenario: a YAML mapping (key: value lines) at the top level"
    err = _raises(hf.sweep_file, empty)
    assert err.path == str(empty) and err.expected.startswith("a sweep file: the file is empty")


def test_a_sweep_file_is_not_a_scenario(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text("scenario: null\ngrid: {workload.rate_per_s: [1, 2]}\nn_requests: 100\n")
    for source in (f, str(f)):
        err = _raises(load_scenario, source)
        assert err.path == str(f) and err.value == "a sweep file (keys scenario, grid, n_requests)"
        assert "this is a sweep file (use hermes-fast sweep" in err.expected
    err = _raises(load_scenario, {"grid": {"workload.rate_per_s": [1]}})
    assert err.path == "<root>" and "this is a sweep file" in err.expected


def _int_fields():
    """(class, field, metadata) of every int-typed field of every config dataclass."""
    import importlib
    import pkgutil
    import typing

    import hermes_fast.config as package
    from hermes_fast.config.base import _hints

    def has_int(tp):
        if tp is int:
            return True
        return any(has_int(a) for a in typing.get_args(tp) if a is not Ellipsis)

    out = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"hermes_fast.config.{info.name}")
        for cls in vars(module).values():
            if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__:
                out += [(cls, f) for f in dataclasses.fields(cls) if has_int(_hints(cls)[f.name])]
    return out


def test_every_integer_config_field_has_bounds():
    fields = _int_fields()
    assert len(fields) > 40  # (the walk finds the fields)
    unbounded = [f"{cls.__name__}.{f.name}" for cls, f in fields if f.metadata.get("le") is None]
    assert not unbounded
    assert not [f"{cls.__name__}.{f.name}" for cls, f in fields if f.metadata.get("ge") is None]
    assert all(f.metadata["le"] <= (1 << 63) - 1 for _, f in fields)


@pytest.mark.parametrize(
    ("source", "path", "value", "expected"),
    [
        (one_engine(batching={"chunk_size": 1e308}), "engines[0].batching.chunk_size", 1e308, "an integer <= 1e+09"),
        (one_engine(max_batched_tokens=1e300), "engines[0].max_batched_tokens", 1e300, "an integer <= 1e+09"),
        (one_engine(batching={"max_queue_requests": 0}), "engines[0].batching.max_queue_requests", 0,
         "an integer >= 1"),
        ({**one_engine(), "serving": {"warmup_requests": 10**12}}, "serving.warmup_requests", 10**12,
         "an integer <= 1e+08"),
        (with_workload(classes=[{"pipeline": [{"kind": "reason", "engine": "engine", "thinking_tokens": 0}]}]),
         "workload.classes[0].pipeline[0].thinking_tokens", 0, "an integer >= 1 or a mapping (Length)"),
        (with_workload(classes=[{"pipeline": [{"kind": "kv_retrieve", "past_tokens": -5, "tiers": []}]}]),
         "workload.classes[0].pipeline[0].past_tokens", -5, "an integer >= 1 or a mapping (Length)"),
    ],
    ids=["chunk_size-1e308", "max_batched_tokens", "queue-0", "warmup", "thinking-0", "past-negative"],
)  # fmt: skip
def test_integer_fields_have_upper_and_lower_bounds(source, path, value, expected):
    err = _raises(load_scenario, source)
    assert (err.path, err.value, err.expected) == (path, value, expected)


@dataclasses.dataclass(frozen=True)
class _Unbounded:  # (every real field has bounds; this is the safety net for one without)
    n: int | None = fld(None)


def test_integers_beyond_int64_are_config_errors():
    err = _raises(from_mapping, _Unbounded, {"n": 1e300})
    assert (err.path, err.value) == ("n", 1e300) and "2^63 - 1" in err.expected
    assert from_mapping(_Unbounded, {"n": (1 << 63) - 1}).n == (1 << 63) - 1


@pytest.mark.parametrize(
    ("length", "path", "value", "expected"),
    [
        ({"dist": "lognormal", "mean": 100, "cv": -1}, "prompt_tokens.cv", -1.0, "a number > 0"),
        ({"dist": "lognormal", "mean": 100, "cv": 1e-300}, "prompt_tokens.cv", 1e-300,
         ">= 1e-06; use dist: fixed for a constant length"),
        ({"dist": "normal", "mean": 100, "std": 1e-300}, "prompt_tokens.std", 1e-300,
         ">= 0.0001 tokens (1e-06 x mean); use dist: fixed for a constant length"),
        ({"dist": "normal", "mean": 100, "sd": 3}, "prompt_tokens.sd", 3, "a known key"),
        ({"dist": "zipf", "alpha": 1.1, "max": 10**9}, "prompt_tokens.max", 10**9,
         "a Zipf support (max - min + 1) <= 5e+07"),
        ({"dist": "uniform", "max": 1e300}, "prompt_tokens.max", 1e300, "an integer <= 1e+09"),
    ],
    ids=["cv-negative", "cv-1e-300", "std-1e-300", "typo", "zipf-support", "max-huge"],
)  # fmt: skip
def test_errors_inside_a_length_name_the_inner_field(length, path, value, expected):
    err = _raises(load_scenario, with_workload(classes=[{"prompt_tokens": length}]))
    assert (err.path, err.value) == (f"workload.classes[0].{path}", value)
    assert err.expected.startswith(expected)
    err = _raises(load_scenario, with_workload(classes=[{"prompt_tokens": "long"}]))  # not a mapping: both choices
    assert err.expected == "an integer or a mapping (Length)"


@pytest.mark.parametrize(
    ("linear", "path", "expected"),
    [
        ({"n_layers": 48}, "models.x.linear_attention.n_layers", "at least one full-attention layer"),
        ({"n_value_heads": 24}, "models.x.linear_attention.n_value_heads", "a multiple of n_key_heads (16)"),
        ({"key_head_dim": 0}, "models.x.linear_attention.key_head_dim", ">= 1"),
        ({"state_bytes": 1}, "models.x.linear_attention", "n_layers"),  # unknown key: the valid ones are listed
    ],
)
def test_bad_linear_attention_is_one_line_config_error(linear, path, expected):
    cat = Catalog({"models": {"x": {"base": "qwen3-next-80b-a3b", "linear_attention": linear}}}, calibration="none")
    err = _raises(cat.model, "x")
    assert path in str(err) and expected in str(err) and "\n" not in str(err)
