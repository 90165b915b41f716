"""Preset devices, models and memory tiers (YAML files beside this module, every figure with its source).

Users extend or override presets in a scenario: an entry under ``devices:`` (or ``models:``,
``memory_tiers:``) whose name is a preset overrides that preset field by field; a new name either gives
every field or starts from ``base: PRESET`` and overrides some.
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

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None):
        self._overrides = {k: dict((overrides or {}).get(k, {}) or {}) for k in _KINDS}
        self._cache: dict[tuple[str, str], Any] = {}

    @classmethod
    def for_scenario(cls, scenario) -> Catalog:
        return cls({"devices": scenario.devices, "models": scenario.models, "memory_tiers": scenario.memory_tiers})

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
            return dict(presets[name]), f"catalog.{kind}.{name}"
        where = f"{kind}.{name}"
        if not isinstance(user, Mapping):
            raise ConfigError(where, user, "a mapping of fields")
        user = dict(user)
        base_name = user.pop("base", None)
        if base_name is None and name in presets:
            base_name = name  # same name as a preset: field-by-field override of that preset
        if base_name is None:
            return user, where
        if not isinstance(base_name, str):
            raise ConfigError(f"{where}.base", base_name, f"a {kind[:-1].replace('_', ' ')} name (string)")
        if depth > 8:
            raise ConfigError(f"{where}.base", base_name, "a base chain without cycles")
        if base_name == name:
            if name not in presets:
                raise ConfigError(f"{where}.base", base_name, f"a preset or another entry, not {name!r} itself")
            base = dict(presets[name])
        else:
            base, _ = self._raw(kind, base_name, f"{where}.base", depth + 1)
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
