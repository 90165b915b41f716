"""Preset devices, models and memory tiers (YAML files beside this module, every figure with its source).

Users extend or override presets in a scenario: an entry under ``devices:`` (or ``models:``,
``memory_tiers:``) whose name is a preset overrides that preset field by field; a new name either gives
every field or starts from ``base: PRESET`` and overrides some.

Devices with a calibration (:mod:`hermes_fast.calibrate`; shipped ones for H100, H200 and A100 by default)
get the calibrated fields on top of their entry, and devices based on them inherit those; a scenario's own
fields still win.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

from ..config.base import ConfigError, close_match_hint, from_mapping, load_yaml
from ..config.hardware import Device, MemoryTier
from ..config.model import Model

__all__ = ["Catalog", "preset_names"]

_KINDS = {"devices": Device, "models": Model, "memory_tiers": MemoryTier}


@cache
def _raw_presets(kind: str) -> dict[str, dict]:
    text = (files("hermes_fast") / "catalog" / f"{kind}.yaml").read_text()
    data = load_yaml(text) or {}
    return {str(k): v for k, v in data.items()}


def preset_names(kind: str) -> list[str]:
    """Names of the shipped presets of ``kind`` ('devices', 'models' or 'memory_tiers')."""
    return sorted(_raw_presets(kind))


def _deep_merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Catalog:
    """Presets merged with a scenario's own entries; resolves names to validated configs."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, calibration: Any = "default"):
        """``calibration``: ``"default"`` (the shipped default calibrations), ``"none"`` (uncalibrated
        defaults), a :class:`~hermes_fast.calibrate.Calibration`, a shipped calibration name or a file path,
        or a list of these; each applies to its device, the shipped defaults to the rest unless ``"none"``
        is in the list."""
        self._overrides = {k: dict((overrides or {}).get(k, {}) or {}) for k in _KINDS}
        self._cache: dict[tuple[str, str], Any] = {}
        self.calibrations = _resolve_calibrations(calibration)

    @classmethod
    def for_scenario(cls, scenario, calibration: Any = "default") -> Catalog:
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
        return _deep_merge(raw, cal.device_overrides()) if cal is not None else raw

    def names(self, kind: str) -> list[str]:
        return sorted(set(_raw_presets(kind)) | set(self._overrides[kind]))

    def _raw(self, kind: str, name: str, path: str, depth: int = 0) -> tuple[dict, str]:
        presets = _raw_presets(kind)
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
            return _deep_merge(self._calibrated(kind, name, {}), user), where
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
        return _deep_merge(base, user), where

    def get(self, kind: str, name: str, path: str = ""):
        """The validated config for ``name`` of ``kind``; ``path`` names the referring field in errors."""
        key = (kind, name)
        if key not in self._cache:
            if not isinstance(name, str):
                raise ConfigError(path, name, f"a {kind[:-1]} name (string)")
            raw, where = self._raw(kind, name, path or kind)
            self._cache[key] = from_mapping(_KINDS[kind], raw, where)
        return self._cache[key]

    def device(self, name: str, path: str = "") -> Device:
        return self.get("devices", name, path)

    def model(self, name: str, path: str = "") -> Model:
        return self.get("models", name, path)

    def memory_tier(self, name: str, path: str = "") -> MemoryTier:
        return self.get("memory_tiers", name, path)

    def check_scenario(self, scenario) -> None:
        """Resolve every name the scenario uses, so bad references fail at load time."""
        for kind in _KINDS:
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


def _resolve_calibrations(spec: Any) -> dict:
    """device name -> Calibration for a ``calibration`` argument (see :class:`Catalog`)."""
    from ..calibrate import Calibration, default_calibrations, load_calibration

    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    use_defaults = True
    chosen: dict[str, Calibration] = {}
    for i, item in enumerate(items):
        if item is None or (isinstance(item, str) and item in ("none", "uncalibrated")):
            use_defaults = False
        elif isinstance(item, str) and item == "default":
            continue
        elif isinstance(item, (Calibration, str, Mapping)) or hasattr(item, "__fspath__"):
            cal = load_calibration(item)
            chosen[cal.device] = cal
        else:
            raise ConfigError(f"calibration[{i}]", item, "'default', 'none', a Calibration, a name or a file path")
    out = dict(default_calibrations()) if use_defaults else {}
    out.update(chosen)
    return out
