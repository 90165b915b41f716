"""Resolving a scenario once: every name it uses, calibrations applied, one catalog per estimate, simulate,
capacity search and sweep point, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

import hermes_fast as hf
from hermes_fast import resolve
from hermes_fast.config import ConfigError
from hermes_fast.resolve import Catalog, device_with_stack, engine_with_stack, resolve_scenario

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def catalogs(monkeypatch):
    """The number of Catalog constructions since the fixture started."""
    count = [0]
    init = Catalog.__init__

    def counting(self, *args, **kwargs):
        count[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(resolve.Catalog, "__init__", counting)
    return count


def test_every_name_is_resolved_as_the_catalog_resolves_it():
    rs = resolve_scenario(f"{EXAMPLES}/pipeline_kv_tiers.yaml", "h100_sxm-vllm")
    cat = Catalog.for_scenario(rs.scenario, "h100_sxm-vllm")
    for e, own in zip(rs.scenario.engines, rs.engines, strict=True):
        assert own.engine == engine_with_stack(e, cat.stack(e.stack)) and own.stack == cat.stack(e.stack)
        assert own.device == device_with_stack(cat.device(e.device), own.stack) and own.model == cat.model(e.model)
        assert rs.devices[e.device] == cat.device(e.device)
    tiers = {t.tier for c in rs.scenario.workload.classes for st in c.pipeline for t in st.tiers}
    assert tiers and set(rs.memory_tiers) == tiers
    assert all(rs.memory_tiers[t] == cat.memory_tier(t) for t in tiers)
    assert rs.calibrations["h100_sxm"].startswith("h100_sxm-vllm")


def test_devices_based_on_a_calibrated_one_say_so():
    rs = resolve_scenario(f"{EXAMPLES}/custom_hardware.yaml", "none")
    assert set(rs.calibrations.values()) == {None}
    rs = resolve_scenario(f"{EXAMPLES}/custom_hardware.yaml")
    assert rs.calibrations["h100_derated"].startswith("h100_sxm")
    line = rs.describe_calibrations(["h100_derated", "h200_sxm", "h100_derated"])
    assert line.count("h100_derated:") == 1 and line.startswith("h100_derated: h100_sxm")


@pytest.mark.parametrize(
    "run",
    [
        lambda: hf.simulate(n_requests=200, seed=1),
        lambda: hf.simulate(f"{EXAMPLES}/pipeline_rag.yaml", n_requests=200, seed=1, calibration="none"),
        lambda: hf.estimate(grid={"device": ["h100_sxm", "b200"], "tp": [1, 2]}),
        lambda: hf.capacity_search(None, {"ttft": {"quantile": 0.9, "max_s": 0.5}, "rate_max_per_s": 50}, 200),
        lambda: hf.load_scenario(),
    ],
    ids=["simulate", "simulate-pipeline", "estimate-grid", "capacity", "load_scenario"],
)
def test_one_catalog_per_call(catalogs, run):
    run()
    assert catalogs[0] == 1


def test_one_catalog_per_sweep_point_and_one_for_the_base(catalogs):
    hf.sweep(grid={"workload.rate_per_s": [2.0, 4.0, 8.0]}, n_requests=100, seed=1)
    assert catalogs[0] == 1 + 2 * 3  # the base's check, then each point's layout pass and its run


def test_estimate_grid_names_are_resolved_with_their_path():
    with pytest.raises(ConfigError) as err:
        hf.estimate(grid={"device": ["h100_sxm", "h100_smx"]})
    assert err.value.path == "grid.device[1]" and "did you mean 'h100_sxm'" in err.value.expected
    with pytest.raises(ConfigError) as err:
        hf.estimate(grid={"model": ["llama-3.1-8bb"]})
    assert err.value.path == "grid.model[0]"


def test_scenario_entries_fail_before_engines_and_stages():
    bad = {
        "devices": {"unused": {"base": "h100_sxm", "memory_bandwdith": 1}},
        "engines": [{"model": "llama-3.1-8b", "device": "h100_smx"}],
    }
    with pytest.raises(ConfigError) as err:
        resolve_scenario(bad)
    assert err.value.path == "devices.unused.memory_bandwdith"
    del bad["devices"]
    with pytest.raises(ConfigError) as err:
        hf.simulate(bad, n_requests=10)
    assert err.value.path == "engines[0].device"
