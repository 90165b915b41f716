"""Scenario + catalog + calibration -> one resolved scenario: the only place presets merge.

A scenario names devices, models and memory tiers; :class:`Catalog` resolves each name to its validated
config: the preset (:mod:`hermes_fast.catalog`), the calibration of the device (:mod:`hermes_fast.calibration`)
on top, then the scenario's own entry (field by field, with ``base:`` chains), so a scenario's fields always
win and a device based on a calibrated one inherits its calibration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .calibration.calibration import calibrations_by_device
from .catalog import KINDS, preset_entries
from .config.base import ConfigError, close_match_hint, deep_merge, from_mapping
from .config.hardware import Device, MemoryTier
from .config.model import Model
from .config.scenario import Scenario, read_scenario

__all__ = ["Catalog", "load_scenario"]


class Catalog:
    """Presets merged with a scenario's own entries and the devices' calibrations; resolves names to validated
    configs."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, calibration: Any = "default"):
        """``calibration``: ``"default"`` (the shipped default calibrations), ``"none"`` (uncalibrated
        defaults), a :class:`~hermes_fast.calibration.calibration.Calibration`, a shipped calibration name or a
        file path, or a list of these; each applies to its device, the shipped defaults to the rest unless
        ``"none"`` is in the list."""
        self._overrides = {k: dict((overrides or {}).get(k, {}) or {}) for k in KINDS}
        self._cache: dict[tuple[str, str], Any] = {}
        self.calibrations = calibrations_by_device(calibration)

    @classmethod
    def for_scenario(cls, scenario: Scenario, calibration: Any = "default") -> Catalog:
        return cls(
            {"devices": scenario.devices, "models": scenario.models, "memory_tiers": scenario.memory_tiers},
            calibration,
        )

    def calibration_for(self, name: str) -> str | None:
        """Name of the calibration device ``name`` uses (its own or inherited through ``base``), or None."""
        seen = set()
        while name not in seen:
            seen.add(name)
            if name in self.calibrations:
                return self.calibrations[name].describe()
            user = self._overrides["devices"].get(name)
            if not isinstance(user, Mapping):
                return None
            base = user.get("base")
            if not isinstance(base, str):
                return None
            name = base
        return None

    def describe_calibrations(self, device_names) -> str:
        """One line for Dataset attrs: which calibration each device used."""
        parts = []
        for d in dict.fromkeys(device_names):
            parts.append(f"{d}: {self.calibration_for(d) or 'uncalibrated defaults'}")
        return "; ".join(parts) if parts else "uncalibrated defaults"

    def _calibrated(self, kind: str, name: str, raw: dict) -> dict:
        cal = self.calibrations.get(name) if kind == "devices" else None
        return deep_merge(raw, cal.device_overrides()) if cal is not None else raw

    def names(self, kind: str) -> list[str]:
        return sorted(set(preset_entries(kind)) | set(self._overrides[kind]))

    def _raw(self, kind: str, name: str, path: str, depth: int = 0) -> tuple[dict, str]:
        presets = preset_entries(kind)
        user = self._overrides[kind].get(name)
        if user is None:
            if name not in presets:
                valid = self.names(kind)
                hint = close_match_hint(name, valid, cutoff=0.5)
                raise ConfigError(path, name, f"a known {kind[:-1].replace('_', ' ')}{hint}; known: {', '.join(valid)}")
            return self._calibrated(kind, name, dict(presets[name])), f"catalog.{kind}.{name}"
        where = f"{kind}.{name}"
        if not isinstance(user, Mapping):
            raise ConfigError(where, user, "a mapping of fields")
        user = dict(user)
        base_name = user.pop("base", None)
        if base_name is None and name in presets:
            base_name = name  # same name as a preset: field-by-field override of that preset
        if base_name is None:
            return deep_merge(self._calibrated(kind, name, {}), user), where
        if not isinstance(base_name, str):
            raise ConfigError(f"{where}.base", base_name, f"a {kind[:-1].replace('_', ' ')} name (string)")
        if depth > 8:
            raise ConfigError(f"{where}.base", base_name, "a base chain without cycles")
        if base_name == name:
            if name not in presets:
                raise ConfigError(f"{where}.base", base_name, f"a preset or another entry, not {name!r} itself")
            base = self._calibrated(kind, name, dict(presets[name]))
        else:
            base, _ = self._raw(kind, base_name, f"{where}.base", depth + 1)
            base = self._calibrated(kind, name, base)
        return deep_merge(base, user), where

    def get(self, kind: str, name: str, path: str = ""):
        """The validated config for ``name`` of ``kind``; ``path`` names the referring field in errors."""
        key = (kind, name)
        if key not in self._cache:
            if not isinstance(name, str):
                raise ConfigError(path, name, f"a {kind[:-1]} name (string)")
            raw, where = self._raw(kind, name, path or kind)
            self._cache[key] = from_mapping(KINDS[kind], raw, where)
        return self._cache[key]

    def device(self, name: str, path: str = "") -> Device:
        return self.get("devices", name, path)

    def model(self, name: str, path: str = "") -> Model:
        return self.get("models", name, path)

    def memory_tier(self, name: str, path: str = "") -> MemoryTier:
        return self.get("memory_tiers", name, path)

    def check_scenario(self, scenario) -> None:
        """Resolve every name the scenario uses, so bad references fail at load time."""
        for kind in KINDS:
            for name in self._overrides[kind]:
                self.get(kind, name)
        for i, e in enumerate(scenario.engines):
            self.device(e.device, f"engines[{i}].device")
            self.model(e.model, f"engines[{i}].model")
        for c, cls in enumerate(scenario.workload.classes):
            for k, st in enumerate(cls.pipeline):
                p = f"workload.classes[{c}].pipeline[{k}]"
                if st.device is not None:
                    self.device(st.device, f"{p}.device")
                for j, t in enumerate(st.tiers):
                    self.memory_tier(t.tier, f"{p}.tiers[{j}].tier")


def load_scenario(source: Scenario | Mapping | str | Path | None = None) -> Scenario:
    """A validated :class:`~hermes_fast.config.Scenario` from a Scenario, mapping, YAML path or YAML text
    (None: the embedded default), every catalog name it uses resolved, so bad references fail here.

    Examples
    --------
    >>> sc = load_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]})
    >>> sc.engines[0].parallel.tp
    1
    """
    sc = read_scenario(source)
    Catalog.for_scenario(sc).check_scenario(sc)
    return sc
