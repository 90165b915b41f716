"""Preset devices, models and memory tiers as data: the YAML files beside this module, every figure with its source.

Users extend or override presets in a scenario: an entry under ``devices:`` (or ``models:``,
``memory_tiers:``) whose name is a preset overrides that preset field by field; a new name either gives
every field or starts from ``base: PRESET`` and overrides some. Devices with a calibration
(:mod:`hermes_fast.calibration`; shipped ones for H100, H200 and A100 by default) get the calibrated fields on
top of their entry, and devices based on them inherit those; a scenario's own fields still win. That merge is
:class:`hermes_fast.resolve.Catalog`'s; this package only reads the presets.

Every device's ``price_usd_per_hour`` is on one basis, stated once at the top of ``devices.yaml``
(:func:`price_basis`); a device without a price gives its reason instead (:func:`price_note`).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from ..config.base import from_mapping
from ..config.files import load_yaml
from ..config.hardware import Device, MemoryTier
from ..config.model import Model
from ..config.stack import Stack

__all__ = ["KINDS", "preset", "preset_entries", "preset_names", "price_basis", "price_note"]

# kind of catalog entry -> its schema
KINDS = {"devices": Device, "models": Model, "memory_tiers": MemoryTier, "stacks": Stack}


@cache
def preset_entries(kind: str) -> dict[str, dict]:
    """The shipped presets of ``kind`` ('devices', 'models' or 'memory_tiers') as plain mappings, by name
    (shared: copy before changing one)."""
    text = (files("hermes_fast") / "catalog" / f"{kind}.yaml").read_text()
    data = load_yaml(text) or {}
    return {str(k): v for k, v in data.items()}


def preset_names(kind: str) -> list[str]:
    """Names of the shipped presets of ``kind`` ('devices', 'models' or 'memory_tiers').

    Parameters
    ----------
    kind : str
        ``"devices"``, ``"models"`` or ``"memory_tiers"``.

    Returns
    -------
    list of str
        The preset names, sorted; a scenario names them in ``engines[i].device``, ``.model`` and a KV tier's
        ``tier`` (``hermes-fast presets KIND`` prints them with their figures).

    Examples
    --------
    >>> hf.preset_names("memory_tiers")
    ['cxl_memory_expander', 'grace_lpddr5x', 'host_dram_ddr5', 'host_dram_mrdimm_8800', 'nvme_ssd_gen5',
     'remote_rdma_pool']
    >>> "h100_sxm" in hf.preset_names("devices"), "llama-3.1-8b" in hf.preset_names("models")
    (True, True)
    """
    return sorted(preset_entries(kind))


@cache
def preset(kind: str, name: str):
    """The shipped preset ``name`` of ``kind`` as its validated config, uncalibrated.

    Examples
    --------
    >>> preset("devices", "h100_sxm").memory_bytes
    80000000000.0
    """
    return from_mapping(KINDS[kind], dict(preset_entries(kind)[name]), f"catalog.{kind}.{name}")


@cache
def price_basis() -> str:
    """The one basis of every preset device's ``price_usd_per_hour``: the first sentence of the "Prices" paragraph
    at the top of ``devices.yaml`` (which goes on with the division per device and the sources).

    Examples
    --------
    >>> price_basis().startswith("the on-demand")
    True
    """
    paragraph: list[str] = []
    for line in (files("hermes_fast") / "catalog" / "devices.yaml").read_text().splitlines():
        if not line.startswith("#"):
            if paragraph:
                break
            continue
        body = line[1:].strip()
        if paragraph or body.startswith("Prices"):
            paragraph.append(body)
    text = " ".join(paragraph)
    return text.split("one basis for every device: ", 1)[-1].split(". ", 1)[0] + "."


def price_note(price: float | None, sources: dict[str, str]) -> str:
    """A device's price for display: the USD per device-hour, or ``n/a (REASON)`` from its
    ``sources.price_usd_per_hour`` (written ``n/a: REASON (details)``) when it has none.

    Examples
    --------
    >>> price_note(6.88, {}), price_note(None, {"price_usd_per_hour": "n/a: research device (illustrative)"})
    ('6.88', 'n/a (research device)')
    """
    if price is not None:
        return f"{price:.2f}"
    reason = sources.get("price_usd_per_hour", "")
    if not reason.startswith("n/a: "):
        return "n/a (no price given)"
    return f"n/a ({reason[5:].split(' (', 1)[0].split(';', 1)[0].strip()})"
