"""The :class:`Calibration` object: fitted device fields and attention residual surfaces, applied to a device,
saved and loaded (YAML or JSON), the calibrations shipped in ``hermes_fast/data/calibrations`` and the choice of
calibrations a ``calibration=`` argument names.

The analytical model stays analytical: a calibration only sets fields of a device's catalog entry
(``efficiency.*`` and link latencies), so it works for any grid and any scenario. The fit that makes one is
:func:`hermes_fast.calibration.fit.calibrate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from ..catalog import preset
from ..config.base import ConfigError, deep_merge, from_mapping, to_mapping
from ..config.efficiency import AttentionResidual
from ..config.files import load_yaml
from ..config.hardware import Device

__all__ = [
    "Calibration",
    "calibrations_by_device",
    "default_calibrations",
    "load_calibration",
    "shipped_calibrations",
    "with_values",
]

# the keys of an older file's variants.fp8_block (the 8-bit GEMM's paths then) -> today's block_scaled_* paths
_LEGACY_BLOCK = {
    **{
        f"efficiency.low_precision_{name}": f"efficiency.block_scaled_{name}"
        for name in (
            "compute_efficiency",
            "saturation_tokens",
            "saturation_n",
            "saturation_k",
            "memory_efficiency",
            "gemm_overhead_s",
        )
    },
    "efficiency.block_scaled_gemm_floor_s": "efficiency.block_scaled_gemm_floor_s",
}


def _nest(values: Mapping[str, float]) -> dict:
    out: dict = {}
    for path, v in values.items():
        node = out
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _overrides(values: Mapping[str, float], residuals: tuple[AttentionResidual, ...] | None) -> dict:
    """Nested device mapping that sets the dotted fields in ``values`` and, unless None, the attention residual
    surfaces (all of them: the device's are replaced)."""
    out = _nest(values)
    if residuals is not None:
        out.setdefault("efficiency", {})["attention_residuals"] = [to_mapping(r) for r in residuals]
    return out


def with_values(d: Device, values: Mapping[str, float], residuals: tuple[AttentionResidual, ...] | None = None):
    """A copy of device ``d`` with the dotted fields in ``values`` (and the residual surfaces) replaced, validated."""
    if not values and residuals is None:
        return d
    raw = deep_merge(to_mapping(d), _overrides(values, residuals))
    return from_mapping(Device, raw, "calibration")


@dataclass(frozen=True)
class Calibration:
    """Fitted device fields (dotted paths -> values), attention residual surfaces, and how well they fit.

    Made by :func:`hermes_fast.calibrate`, read by :func:`hermes_fast.load_calibration` (shipped ones by
    name), written by :meth:`save`; the ``calibration=`` argument of :func:`hermes_fast.estimate`,
    :func:`hermes_fast.simulate` and :class:`hermes_fast.Catalog` takes it. A calibration only sets fields of
    the device's catalog entry, so it applies to any grid and any scenario.

    Parameters
    ----------
    name : str
        The calibration's name (shipped ones: ``h100_sxm``, ``h100_sxm-vllm``, ...).
    device : str
        The catalog device it applies to.
    values : dict of str to float
        Device field paths (``"efficiency.compute_efficiency"``, ``"scale_up.latency_s"``) -> values, in the
        fields' units (fractions, seconds, tokens, bytes).
    source : str, default ""
        Where the measurements came from (shown in Dataset ``calibration`` attrs).
    holdout, seed : float, int, default 0.25, 0
        The fit's held-back share of rows and the seed of its stable hash.
    report : tuple of dict, default ()
        One entry per kernel family: rows fitted and held back, and the median and 90th-percentile absolute
        relative error of each part.
    attention_residuals : tuple of AttentionResidual or None, default None
        The device's surfaces once applied (:mod:`hermes_fast.calibration.residuals`); None leaves the device's
        own.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> cal = hf.Calibration("h100-slow", "h100_sxm", {"efficiency.compute_efficiency": 0.6})
    >>> cal.apply(hf.Catalog(calibration="none").device("h100_sxm")).efficiency.compute_efficiency
    0.6
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cal.save(pathlib.Path(tmp) / "h100-slow.yaml")
    ...     hf.load_calibration(pathlib.Path(tmp) / "h100-slow.yaml") == cal
    True
    >>> hf.estimate(calibration=cal).attrs["calibration"].split(";")[0]
    'h100_sxm: h100-slow'
    """

    name: str
    device: str
    values: dict[str, float]
    source: str = ""
    holdout: float = 0.25
    seed: int = 0
    report: tuple[dict, ...] = ()
    attention_residuals: tuple[AttentionResidual, ...] | None = None

    def apply(self, device: Device) -> Device:
        """``device`` with the calibrated fields set."""
        return with_values(device, self.values, self.attention_residuals)

    def device_overrides(self) -> dict:
        """The calibrated fields as a nested mapping (merged into a catalog entry)."""
        return _overrides(self.values, self.attention_residuals)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "device": self.device,
            "source": self.source,
            "holdout": self.holdout,
            "seed": self.seed,
            "values": dict(self.values),
        }
        if self.attention_residuals is not None:
            out["attention_residuals"] = [to_mapping(r) for r in self.attention_residuals]
        out["report"] = [dict(r) for r in self.report]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "calibration") -> Calibration:
        if not isinstance(data, Mapping):
            raise ConfigError(path, data, "a mapping with name, device and values")
        known = {"name", "device", "source", "holdout", "seed", "values", "variants", "report", "attention_residuals"}
        for k in data:
            if k not in known:
                raise ConfigError(f"{path}.{k}", data[k], f"one of {', '.join(sorted(known))}")
        for k in ("name", "device", "values"):
            if k not in data:
                raise ConfigError(f"{path}.{k}", None, "a value")
        values = data["values"]
        if not isinstance(values, Mapping):
            raise ConfigError(f"{path}.values", values, "a mapping of device field path -> number")
        # files written before engines could select block-scaled FP8 kept its fields as a variant
        variants = data.get("variants") or {}
        if not isinstance(variants, Mapping) or set(variants) - {"fp8_block"}:
            raise ConfigError(f"{path}.variants", variants, "only fp8_block (older files; now in values)")
        legacy = variants.get("fp8_block", {})
        for where, vals in (("values", values), ("variants.fp8_block", legacy)):
            if not isinstance(vals, Mapping):
                raise ConfigError(f"{path}.{where}", vals, "a mapping of device field path -> number")
            for k, v in vals.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise ConfigError(f"{path}.{where}.{k}", v, "a number")
        merged = {str(k): float(v) for k, v in values.items()}
        for k, v in legacy.items():
            new = _LEGACY_BLOCK.get(str(k))
            if new is None:
                raise ConfigError(f"{path}.variants.fp8_block.{k}", v, f"one of {', '.join(_LEGACY_BLOCK)}")
            if merged.get(new, float(v)) != float(v):
                raise ConfigError(f"{path}.variants.fp8_block.{k}", v, f"the value of values.{new} ({merged[new]})")
            merged[new] = float(v)
        cal = cls(
            name=str(data["name"]),
            device=str(data["device"]),
            values=merged,
            source=str(data.get("source", "")),
            holdout=float(data.get("holdout", 0.25)),
            seed=int(data.get("seed", 0)),
            report=tuple(dict(r) for r in data.get("report") or ()),
            attention_residuals=_read_residuals(data.get("attention_residuals"), f"{path}.attention_residuals"),
        )
        # the values must make a valid device: check against a neutral preset-shaped entry
        try:
            with_values(preset("devices", "h100_sxm"), cal.values, cal.attention_residuals)
        except ConfigError as e:
            field_path = e.path.removeprefix("calibration.")
            if field_path.startswith("efficiency.attention_residuals"):  # one surface per kernel and sizes
                raise ConfigError(path + field_path.removeprefix("efficiency"), e.value, e.expected) from None
            raise ConfigError(f"{path}.values.{field_path}", e.value, e.expected) from None
        return cal

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (``.json``); numbers round-trip exactly."""
        p = Path(path)
        data = self.to_dict()
        if p.suffix == ".json":
            p.write_text(json.dumps(data, indent=1) + "\n")
        else:

            class Dumper(yaml.SafeDumper):  # a surface's node rows on one line each
                pass

            Dumper.add_representer(_Row, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, True))
            for r in data.get("attention_residuals", ()):
                r["log_ratio"] = [_Row(row) for row in r["log_ratio"]]
            p.write_text(yaml.dump(data, Dumper=Dumper, sort_keys=False, width=120))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError("calibration", str(path), f"a readable calibration file ({e.strerror})") from None
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
        return cls.from_dict(data, p.name)

    def describe(self) -> str:
        return f"{self.name} ({self.source})" if self.source else self.name


class _Row(list):
    """A list written in YAML flow style."""


def _read_residuals(data: Any, path: str) -> tuple[AttentionResidual, ...] | None:
    if data is None:
        return None
    if isinstance(data, (str, bytes)) or not isinstance(data, (list, tuple)):
        raise ConfigError(path, data, "a list of attention residual surfaces")
    return tuple(from_mapping(AttentionResidual, r, f"{path}[{i}]") for i, r in enumerate(data))


def _calibration_dir():
    return files("hermes_fast") / "data" / "calibrations"


def shipped_calibrations() -> dict[str, Calibration]:
    """Every calibration shipped with hermes_fast, by name (``h100_sxm``, ``h100_sxm-vllm``, ...)."""
    return dict(_shipped())


@cache
def _shipped() -> dict[str, Calibration]:
    out = {}
    for f in sorted(_calibration_dir().iterdir(), key=lambda x: x.name):
        if f.name.endswith(".yaml"):
            cal = Calibration.from_dict(load_yaml(f.read_text()), f.name)
            out[cal.name] = cal
    return out


def default_calibrations() -> dict[str, Calibration]:
    """The shipped calibrations that are the default for their device (named after the device), by device."""
    return {c.device: c for c in _shipped().values() if c.name == c.device}


def load_calibration(source: str | Path | Calibration | Mapping) -> Calibration:
    """A calibration from a shipped name (see :func:`shipped_calibrations`), a YAML/JSON path or a mapping.

    Parameters
    ----------
    source : str, pathlib.Path, Calibration or mapping
        A shipped calibration's name (``h100_sxm``, ``h100_sxm-vllm``, ``h200_sxm``, ...), a ``.yaml``/``.yml``
        or ``.json`` file written by :meth:`Calibration.save` (or ``hermes-fast calibrate``), a mapping of
        the same fields, or a Calibration (returned as it is).

    Returns
    -------
    Calibration

    Raises
    ------
    ConfigError
        For a name that is neither shipped nor an existing file (listing the shipped names), an unreadable
        file, or an invalid entry (an unknown key, a value that is not a number, fields that make an invalid
        device), naming the field.

    Examples
    --------
    >>> cal = hf.load_calibration("h100_sxm-vllm")
    >>> cal.device, cal.values["efficiency.compute_efficiency"] < 1
    ('h100_sxm', True)
    >>> hf.load_calibration({"name": "x", "device": "h100_sxm", "values": {"efficiency.memory_efficiency": 0.7}})
    Calibration(name='x', device='h100_sxm', values={'efficiency.memory_efficiency': 0.7}, ...)
    """
    if isinstance(source, Calibration):
        return source
    if isinstance(source, Mapping):
        return Calibration.from_dict(source)
    shipped = _shipped()
    if isinstance(source, str) and source in shipped:
        return shipped[source]
    p = Path(source)
    if not p.exists():
        raise ConfigError(
            "calibration", str(source), f"a calibration file or a shipped name: {', '.join(sorted(shipped))}"
        )
    return Calibration.load(p)


def calibrations_by_device(spec: Any = "default") -> dict[str, Calibration]:
    """Device name -> the calibration it uses, for a ``calibration`` argument.

    Parameters
    ----------
    spec
        ``"default"`` (the shipped default calibrations), ``"none"`` (uncalibrated defaults), a
        :class:`Calibration`, a shipped calibration name, a file path or a mapping, or a list of these; each
        applies to its device, the shipped defaults to the rest unless ``"none"`` is in the list.

    Examples
    --------
    >>> sorted(calibrations_by_device("default"))
    ['a100_sxm_80gb', 'h100_sxm', 'h200_sxm']
    >>> calibrations_by_device(["none", "h100_sxm-vllm"])["h100_sxm"].name
    'h100_sxm-vllm'
    """
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
