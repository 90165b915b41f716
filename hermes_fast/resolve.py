"""Scenario + catalog + calibration -> one resolved scenario: the only place presets merge.

A scenario names devices, models and memory tiers; :class:`Catalog` resolves each name to its validated
config: the preset (:mod:`hermes_fast.catalog`), the calibration of the device (:mod:`hermes_fast.calibration`)
on top, then the scenario's own entry (field by field, with ``base:`` chains), so a scenario's fields always
win and a device based on a calibrated one inherits its calibration.

:func:`resolve_scenario` does that once per run: the :class:`ResolvedScenario` it returns holds every device,
model and memory tier the scenario uses, calibrations applied, and is what ``estimate``, ``simulate``, sweeps,
the capacity search and the pool and pipeline builders read; none of them consults the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .calibration.calibration import calibrations_by_device
from .catalog import KINDS, preset_entries
from .config.base import ConfigError, close_match_hint, deep_merge, from_mapping
from .config.hardware import Device, MemoryTier
from .config.model import Model
from .config.scenario import Engine, Scenario, read_scenario
from .config.stack import Stack

__all__ = ["Catalog", "ResolvedEngine", "ResolvedScenario", "load_scenario", "resolve_scenario"]


class Catalog:
    """Presets merged with a scenario's own entries and the devices' calibrations; resolves names to validated
    configs.

    A name resolves to the preset (:mod:`hermes_fast.catalog`), the device's calibration on top, then the
    entry of ``overrides`` (field by field; ``base: NAME`` starts a new entry from another), so the overrides'
    fields always win and a device based on a calibrated one inherits its calibration. Look-ups are cached.

    Parameters
    ----------
    overrides : mapping or None, default None
        ``{"devices": {...}, "models": {...}, "memory_tiers": {...}}``: a scenario's own entries by name
        (:meth:`for_scenario` takes them from a Scenario); units as in the presets (bytes, bytes/s, FLOP/s,
        W, USD/hour).
    calibration : str, Calibration, pathlib.Path or list, default "default"
        ``"default"`` (the shipped default calibrations), ``"none"`` (uncalibrated defaults), a
        :class:`~hermes_fast.calibration.calibration.Calibration`, a shipped calibration name or a file path,
        or a list of these; each applies to its device, the shipped defaults to the rest unless ``"none"`` is
        in the list.

    Raises
    ------
    ConfigError
        For an unknown or invalid calibration; :meth:`get` (:meth:`device`, :meth:`model`,
        :meth:`memory_tier`) for an unknown name (with the known ones and a close-match hint) or an invalid
        entry, naming the field.

    Examples
    --------
    >>> cat = hf.Catalog()
    >>> cat.device("h100_sxm").memory_bytes  # bytes
    80000000000.0
    >>> cat.calibration_for("h100_sxm").split(" ")[0], hf.Catalog(calibration="none").calibration_for("h100_sxm")
    ('h100_sxm', None)
    >>> capped = hf.Catalog({"devices": {"h100_capped": {"base": "h100_sxm", "power_peak_w": 500.0}}})
    >>> capped.device("h100_capped").power_peak_w  # watts; the rest (and the calibration) from h100_sxm
    500.0
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, calibration: Any = "default"):
        self._overrides = {k: dict((overrides or {}).get(k, {}) or {}) for k in KINDS}
        self._cache: dict[tuple[str, str], Any] = {}
        self.calibrations = calibrations_by_device(calibration)

    @classmethod
    def for_scenario(cls, scenario: Scenario, calibration: Any = "default") -> Catalog:
        own = {"devices": scenario.devices, "models": scenario.models, "memory_tiers": scenario.memory_tiers}
        own["stacks"] = scenario.stacks
        return cls(own, calibration)

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
        if kind == "devices" and "memory_bytes" in user and "runtime_memory_bytes" not in user:
            user["runtime_memory_bytes"] = None  # (the base's runtime total belongs to the base's memory)
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

    def stack(self, name: str, path: str = "") -> Stack:
        return self.get("stacks", name, path)


@dataclass(frozen=True)
class ResolvedEngine:
    """One engine of a scenario with its catalog entries: the engine with the fields it left unset taken from
    its serving stack (:func:`engine_with_stack`; memory_utilization stays unset under a stack that sets it by rule:
    :func:`memory_utilization`), the model, the device (calibration applied, then the stack's host costs) and the
    stack."""

    engine: Engine
    model: Model
    device: Device
    stack: Stack


# what an engine field left unset (None) is when its stack does not set it either: the schema's defaults
ENGINE_DEFAULTS = {"memory_utilization": 0.9, "max_batched_tokens": 8192, "prefix_cache": False}
BATCHING_DEFAULTS = {"policy": "continuous", "max_batch_size": 256, "block_size_tokens": 16, "preemption": "recompute"}
# the host costs a stack sets on its devices' efficiency (device_with_stack): the others are the stack's own fields
HOST_COSTS = ("step_overhead_s", "step_overhead_per_tp_rank_s", "sequence_overhead_s")


def engine_with_stack(engine: Engine, stack: Stack) -> Engine:
    """``engine`` with each field it leaves unset (None) taken from ``stack``, else from the schema's defaults;
    ``batching.chunk_size`` stays None (the token budget) when neither sets it, and ``memory_utilization`` when the
    stack sets it by a rule of the device and layout (:func:`memory_utilization` reads it where they are known).

    Examples
    --------
    >>> from hermes_fast.config import Engine
    >>> vllm = hf.Catalog().stack("vllm")
    >>> e = engine_with_stack(Engine(model="llama-3.1-8b", device="h100_sxm", stack="vllm"), vllm)
    >>> e.batching.policy, e.batching.max_batch_size, e.max_batched_tokens
    ('chunked', 1024, 8192)
    """
    top = {k: getattr(stack, k) if getattr(engine, k) is None else getattr(engine, k) for k in ENGINE_DEFAULTS}
    top = {k: ENGINE_DEFAULTS[k] if v is None else v for k, v in top.items()}
    if engine.memory_utilization is None and stack.memory_reserved:
        top["memory_utilization"] = None
    b = engine.batching
    fill = {
        k: getattr(stack, k) if getattr(b, k) is None else getattr(b, k) for k in (*BATCHING_DEFAULTS, "chunk_size")
    }
    fill = {k: BATCHING_DEFAULTS.get(k) if v is None else v for k, v in fill.items()}
    return replace(engine, batching=replace(b, **fill), **top)


def memory_utilization(engine: Engine, stack: Stack, device: Device, path: str = "engine") -> float:
    """The memory_utilization ``engine`` (at ``path``) runs at on ``device``: its own, else its stack's rule for the
    device and the engine's layout (``Stack.memory_utilization_for``: SGLang 0.5's by GPU memory, TP x PP and
    attention DP), else the stack's or the schema's value. ConfigError where the rule reserves the whole device."""
    if engine.memory_utilization is not None:
        return engine.memory_utilization
    par = engine.parallel
    rule = stack.memory_utilization_for(device, par.tp * par.pp, par.attention_dp)
    if rule is not None and rule <= 0.0:
        raise ConfigError(
            f"{path}.stack",
            engine.stack,
            f"a stack whose memory_reserved leaves memory on {device.name} at TP x PP = {par.tp * par.pp} (its rule "
            f"reads a memory_utilization of {rule:g}): fewer ranks, another device, or the engine's own "
            "memory_utilization",
        )
    return ENGINE_DEFAULTS["memory_utilization"] if rule is None else rule


def device_with_stack(device: Device, stack: Stack) -> Device:
    """``device`` with the host costs the stack sets (``efficiency.step_overhead_s`` and friends) replacing the
    device's own: they belong to the serving software."""
    costs = {k: getattr(stack, k) for k in HOST_COSTS if getattr(stack, k) is not None}
    return replace(device, efficiency=replace(device.efficiency, **costs)) if costs else device


@dataclass(frozen=True, eq=False)
class ResolvedScenario:
    """A scenario with every catalog name it uses resolved once (presets, calibrations and the scenario's own
    entries merged): what the analytical and Monte Carlo paths read instead of a catalog.

    ``devices``, ``models`` and ``memory_tiers`` hold, by name, every entry the scenario uses or defines (and
    any extra names :func:`resolve_scenario` was given); ``calibrations`` says which calibration each of those
    devices uses (its own or inherited through ``base``), None for uncalibrated defaults.
    """

    scenario: Scenario
    engines: tuple[ResolvedEngine, ...]  # in the order of scenario.engines
    devices: Mapping[str, Device]
    models: Mapping[str, Model]
    memory_tiers: Mapping[str, MemoryTier]
    calibrations: Mapping[str, str | None]
    stacks: Mapping[str, Stack]

    @property
    def effective_scenario(self) -> Scenario:
        """The scenario with each engine's unset fields filled from its stack (what runs; for display; a
        memory_utilization its stack sets by rule stays unset: :func:`memory_utilization`)."""
        return replace(self.scenario, engines=tuple(r.engine for r in self.engines))

    def describe_calibrations(self, device_names: Iterable[str]) -> str:
        """One line for Dataset attrs: which calibration each of ``device_names`` used."""
        parts = [f"{d}: {self.calibrations[d] or 'uncalibrated defaults'}" for d in dict.fromkeys(device_names)]
        return "; ".join(parts) if parts else "uncalibrated defaults"


def resolve_scenario(
    scenario: Scenario | Mapping | str | Path | None = None,
    calibration: Any = "default",
    *,
    devices: Iterable[tuple[str, str]] = (),
    models: Iterable[tuple[str, str]] = (),
) -> ResolvedScenario:
    """Resolve every catalog name a scenario uses, once, with the given calibrations.

    Parameters
    ----------
    scenario : Scenario, mapping, str, pathlib.Path or None, default None
        A :class:`~hermes_fast.config.Scenario`, a mapping, a YAML path or text; None: the embedded default.
    calibration : str, Calibration, pathlib.Path or list, default "default"
        ``"default"``, ``"none"``, a Calibration, a shipped name or a file, or a list (see :class:`Catalog`).
    devices, models : iterable of (str, str), default ()
        Extra names to resolve, each with the dotted path that names it in errors (e.g. an estimate grid's
        ``("b200", "grid.device[1]")``).

    Returns
    -------
    ResolvedScenario
        The scenario with its engines' models and devices (calibrations applied), and every device, model and
        memory tier it uses by name, with the calibration each device uses.

    Raises
    ------
    ConfigError
        For the first bad entry or reference, in this order: the scenario's own catalog entries (used or
        not), each engine's device and model, each pipeline stage's device and memory tiers, the extra names.

    Examples
    --------
    >>> from hermes_fast.resolve import resolve_scenario
    >>> rs = resolve_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]})
    >>> rs.engines[0].device.name == rs.devices["h100_sxm"].name
    True
    >>> rs.calibrations["h100_sxm"].split(" ")[0]
    'h100_sxm'
    >>> rs.engines[0].model.n_layers
    32
    """
    sc = read_scenario(scenario)
    cat = Catalog.for_scenario(sc, calibration)
    found: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}

    def get(kind: str, name: str, path: str = ""):
        found[kind][name] = cat.get(kind, name, path)
        return found[kind][name]

    own = (("devices", sc.devices), ("models", sc.models), ("memory_tiers", sc.memory_tiers), ("stacks", sc.stacks))
    for kind, entries in own:
        for name in entries:  # the scenario's own entries fail here even when nothing uses them
            get(kind, name)
    engines = []
    for i, e in enumerate(sc.engines):
        device = get("devices", e.device, f"engines[{i}].device")
        model = get("models", e.model, f"engines[{i}].model")
        stack = get("stacks", e.stack, f"engines[{i}].stack")
        engines.append(ResolvedEngine(engine_with_stack(e, stack), model, device_with_stack(device, stack), stack))
        if e.prefix_cache_tier is not None:
            get("memory_tiers", e.prefix_cache_tier, f"engines[{i}].prefix_cache_tier")
    for c, cls in enumerate(sc.workload.classes):
        for k, st in enumerate(cls.pipeline):
            p = f"workload.classes[{c}].pipeline[{k}]"
            if st.device is not None:
                get("devices", st.device, f"{p}.device")
            for j, t in enumerate(st.tiers):
                get("memory_tiers", t.tier, f"{p}.tiers[{j}].tier")
    for name, path in devices:
        get("devices", name, path)
    for name, path in models:
        get("models", name, path)
    return ResolvedScenario(
        scenario=sc,
        engines=tuple(engines),
        devices=found["devices"],
        models=found["models"],
        memory_tiers=found["memory_tiers"],
        calibrations={name: cat.calibration_for(name) for name in found["devices"]},
        stacks=found["stacks"],
    )


def load_scenario(source: Scenario | Mapping | str | Path | None = None) -> Scenario:
    """A validated :class:`~hermes_fast.config.Scenario`, every catalog name it uses resolved, so bad references
    fail here.

    Parameters
    ----------
    source : Scenario, mapping, str, pathlib.Path or None, default None
        A Scenario, a mapping, a YAML path or YAML text; None: the embedded default scenario.

    Returns
    -------
    Scenario
        The frozen, validated scenario (defaults filled in).

    Raises
    ------
    ConfigError
        For the first invalid field or unknown name (an unknown key, a bad value, a device, model or memory tier
        the catalog does not have), naming its dotted path, the value and what is expected.

    Examples
    --------
    >>> sc = hf.load_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100_sxm"}]})
    >>> sc.engines[0].parallel.tp
    1
    >>> hf.load_scenario({"engines": [{"model": "llama-3.1-8b", "device": "h100"}]})
    Traceback (most recent call last):
        ...
    hermes_fast.config.base.ConfigError: engines[0].device: got 'h100'; expected a known device
    (did you mean 'h100_sxm'?); known: a100_sxm_80gb, b200, ...
    """
    return resolve_scenario(source).scenario
