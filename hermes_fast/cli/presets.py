"""``hermes-fast presets``: list the catalog's devices, models and memory tiers (with their schema's fields),
or the output variables and renamed ones."""

from __future__ import annotations

from ..config.base import field_docs

__all__ = ["PRESET_KINDS", "cmd_presets"]

PRESET_KINDS = ("devices", "models", "memory_tiers", "variables")


def cmd_presets(args) -> int:
    from ..catalog import preset_names
    from ..config.hardware import Device, MemoryTier
    from ..config.model import Model
    from ..resolve import Catalog
    from ..variables import RENAMED, VARIABLES

    kinds = [args.kind] if args.kind else list(PRESET_KINDS[:3])
    cat = Catalog()
    for kind in kinds:
        if kind == "variables":
            print("# variables")
            for v in VARIABLES.values():
                print(f"{v.name:32s} [{v.units}] {v.long_name}: {v.description}")
            print("# renamed variables: old name -> current name (objectives take old names until the next release)")
            for old, new in RENAMED.items():
                print(f"{old:32s} -> {new}")
            continue
        print(f"# {kind}")
        for name in preset_names(kind):
            x = cat.get(kind, name)
            if kind == "devices":
                bf16 = x.peak_flop_per_s.resolve("bf16")[0]
                print(
                    f"{name:16s} {x.name:42s} bf16 {bf16 / 1e12:7.1f} TFLOP/s  mem {x.memory_bytes / 1e9:6.1f} GB"
                    f"  {x.memory_bandwidth_bytes_per_s / 1e12:5.2f} TB/s  {x.power_peak_w:5.0f} W"
                )
            elif kind == "models":
                moe = f" MoE {x.moe.n_experts}x top-{x.moe.top_k}" if x.moe else ""
                mla = " MLA" if x.mla else ""
                print(
                    f"{name:18s} {x.name:24s} {x.kind:13s} layers {x.n_layers:3d} hidden {x.hidden_size:6d}"
                    f" heads {x.n_heads:3d}/{x.n_kv_heads:<3d}{moe}{mla}"
                )
            else:
                print(
                    f"{name:20s} {x.name:48s} {x.capacity_bytes / 1e9:9.0f} GB"
                    f" {x.bandwidth_bytes_per_s / 1e9:8.1f} GB/s {x.latency_s * 1e6:9.2f} us"
                )
        if args.fields:
            schema = {"devices": Device, "models": Model, "memory_tiers": MemoryTier}[kind]
            for fname, unit, doc in field_docs(schema):
                print(f"    {fname:32s} [{unit}] {doc}")
    return 0
