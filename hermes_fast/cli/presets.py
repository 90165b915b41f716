"""``hermes-fast presets``: list the catalog's devices, models and memory tiers (with their schema's fields),
or the output variables and renamed ones. Devices come as an aligned table with their price (on the catalog's one
basis, or why there is none) and the shipped calibration they use by default."""

from __future__ import annotations

from ..config.base import field_docs

__all__ = ["PRESET_KINDS", "cmd_presets"]

PRESET_KINDS = ("devices", "models", "memory_tiers", "stacks", "variables")


def cmd_presets(args) -> int:
    from ..catalog import preset_names
    from ..config.hardware import Device, MemoryTier
    from ..config.model import Model
    from ..config.stack import Stack
    from ..resolve import Catalog
    from ..variables import RENAMED, VARIABLES

    kinds = [args.kind] if args.kind else list(PRESET_KINDS[:4])
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
        if kind == "devices":
            lines = _device_table(cat)
        elif kind == "stacks":
            lines = _stack_lines(cat, preset_names(kind))
        else:
            lines = (_line(kind, n, cat.get(kind, n)) for n in preset_names(kind))
        for line in lines:
            print(line)
        if args.fields:
            schema = {"devices": Device, "models": Model, "memory_tiers": MemoryTier, "stacks": Stack}[kind]
            for fname, unit, doc in field_docs(schema):
                print(f"    {fname:32s} [{unit}] {doc}")
    return 0


def _stack_lines(cat, names: list[str]):
    """Each serving stack, an aligned table: name and version, scheduler, admission and prefix caching, CUDA graphs,
    costs (ms), its API server thread's time a request and a streamed token, its prefill attention kernels' time
    over the calibrated ones (and its sink-capable backend's, before Hopper; its decode kernel's on CUDA cores, for
    the models and devices it runs it for), its MoE kernels' time over the
    calibrated expert GEMMs (compute / weight reads, the experts' formats that holds for, then its kernels for
    particular formats and devices), what of its host work overlaps the kernels, and how many of its figures name a
    source."""
    stacks = {n: cat.stack(n) for n in names}
    head = ["# name", "stack", "version", "policy", "admission", "prefix cache", "cuda graphs"]
    tail = ["front end / step / per seq", "API thread / token", "attention kernels", "MoE kernels", "host overlap"]
    rows = [[*head, *tail, "sources"]]
    for name, s in stacks.items():
        graphs = (
            f"{len(s.cuda_graph_sizes)} sizes to {s.cuda_graph_sizes[-1]}" + ("" if s.cuda_graph_padding else ", exact")
            if s.cuda_graph_sizes
            else "none"
        )
        costs = " / ".join(
            f"{(getattr(s, k) or 0.0) * 1e3:g}" for k in ("frontend_s", "step_overhead_s", "sequence_overhead_s")
        )
        thread = (
            f"{s.frontend_serial_s * 1e3:g} ms / {s.frontend_token_s * 1e6:g} us"
            if s.frontend_serial_s or s.frontend_token_s
            else "-"
        )
        moe = (
            f"x{1.0 + s.moe_compute_extra:.3g} / x{1.0 + s.moe_memory_extra:.3g}"
            + (f" ({', '.join(s.moe_extra_weights)})" if s.moe_extra_weights is not None else "")
            if s.moe_compute_extra or s.moe_memory_extra
            else "-"
        )
        attention = "-"  # (the calibrated kernels' time)
        if s.prefill_attention_extra or s.sink_attention_extra is not None:
            attention = f"x{1.0 + s.prefill_attention_extra:.3g}"
        if s.sink_attention_extra is not None:
            attention += f", sinks before Hopper x{1.0 + s.sink_attention_extra:.3g}"
        if s.cuda_core_decode_extra is not None:  # (its decode kernel on CUDA cores, for the models it runs it for)
            cc = _cc_range(None, s.cuda_core_decode_max_compute_capability)
            decode = f"decode x{1.0 + s.cuda_core_decode_extra:.3g} (<= {s.cuda_core_decode_max_group} q/kv, {cc})"
            attention = decode if attention == "-" else f"{attention}; {decode}"
        for k in s.moe_kernels:  # (kernels for particular formats and devices, in place of those)
            cc = _cc_range(k.min_compute_capability, k.max_compute_capability)
            kernel = f"{', '.join(k.weights)} on {cc}: x{1.0 + k.compute_extra:.3g} / x{1.0 + k.memory_extra:.3g}"
            moe = kernel if moe == "-" else f"{moe}; {kernel}"
        cache = "on" if s.prefix_cache else "off"
        overlap = "async" if s.async_scheduling else "decode-only" if s.decode_host_overlap else "none"
        row = [name, s.name, s.version, s.policy or "-", s.admission, cache, graphs]
        rows.append([*row, costs, thread, attention, moe, overlap, str(len(s.sources))])
    widths = [min(max(len(r[k]) for r in rows), 60) for k in range(len(rows[0]))]
    for r in rows:
        yield "  ".join(cell[:w].ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()


def _cc_range(lo: float | None, hi: float | None) -> str:
    """A range of CUDA compute capabilities, in words."""
    if lo is None and hi is None:
        return "any device"
    if lo == hi:
        return f"cc {lo:g}"
    if hi is None:
        return f"cc {lo:g}+"
    return f"cc <= {hi:g}" if lo is None else f"cc {lo:g}-{hi:g}"


def _line(kind: str, name: str, x) -> str:
    """One model or memory tier preset."""
    if kind == "models":
        moe = f" MoE {x.moe.n_experts}x top-{x.moe.top_k}" if x.moe else ""
        mla = " MLA" if x.mla else ""
        linear = f" linear-attention {x.linear_attention.n_layers}" if x.linear_attention else ""
        indexer = f" indexer {x.indexer.heads}x{x.indexer.head_dim}" if x.indexer else ""
        title = x.name if len(x.name) <= _MODEL_NAME_WIDTH else x.name[: _MODEL_NAME_WIDTH - 3] + "..."
        return (
            f"{name:18s} {title:{_MODEL_NAME_WIDTH}s} {x.kind:13s} layers {x.n_layers:3d} hidden {x.hidden_size:6d}"
            f" heads {x.n_heads:3d}/{x.n_kv_heads:<3d}{moe}{mla}{indexer}{linear}"
        )
    return (
        f"{name:20s} {x.name:48s} {x.capacity_bytes / 1e9:9.0f} GB"
        f" {x.bandwidth_bytes_per_s / 1e9:8.1f} GB/s {x.latency_s * 1e6:9.2f} us"
    )


# display names longer than this are cut (the full name: `hf.Catalog().device(NAME).name`, `.model(NAME).name`)
_NAME_WIDTH = 48
_MODEL_NAME_WIDTH = 28


def _device_table(cat) -> list[str]:
    """The device presets as an aligned table: a ``#`` header, one row per device (price last, since an n/a
    carries its reason) and the price basis as ``#`` lines under it."""
    import textwrap

    from ..calibration.calibration import shipped_calibrations
    from ..catalog import preset_names, price_basis, price_note

    extra: dict[str, list[str]] = {}  # device -> its shipped calibrations other than the default
    for cal in shipped_calibrations().values():
        if cal.name != cal.device:
            extra.setdefault(cal.device, []).append(cal.name)
    head = ("name", "device", "bf16 TFLOP/s", "mem GB", "runtime GiB", "TB/s", "peak W", "calibration", "USD/h")
    rows = []
    for name in preset_names("devices"):
        x = cat.device(name)
        title = x.name if len(x.name) <= _NAME_WIDTH else x.name[: _NAME_WIDTH - 3] + "..."
        default = cat.calibrations.get(name)
        calibration = default.name if default is not None else "none (defaults)"
        if name in extra:
            calibration += " (+" + ", ".join(sorted(extra[name])) + ")"
        rows.append(
            (
                name,
                title,
                f"{x.peak_flop_per_s.resolve('bf16')[0] / 1e12:.1f}",
                f"{x.memory_bytes / 1e9:.1f}",
                "-" if x.runtime_memory_bytes is None else f"{x.runtime_memory_bytes / 2**30:.1f}",
                f"{x.memory_bandwidth_bytes_per_s / 1e12:.2f}",
                f"{x.power_peak_w:.0f}",
                calibration,
                price_note(x.price_usd_per_hour, x.sources),
            )
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    numeric = {2, 3, 4, 5, 6}  # right-aligned; the price's numbers line up on the right of their column
    price_w = max([len(head[8])] + [len(r[8]) for r in rows if not r[8].startswith("n/a")])

    def line(cells, header=False):
        out = []
        for i, cell in enumerate(cells):
            if i == 0 and header:
                out.append("# " + cell.ljust(widths[0] - 2))
            elif i in numeric:
                out.append(cell.rjust(widths[i]))
            elif i == 8:
                out.append(cell if cell.startswith("n/a") else cell.rjust(price_w))
            else:
                out.append(cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    basis = textwrap.wrap(
        "runtime GiB: the total CUDA reports, which the serving stacks (all but ideal) budget KV from; -: the "
        f"datasheet's mem GB. USD/h: {price_basis()} Sources and reasons: hermes_fast/catalog/devices.yaml.",
        108,
    )
    return [line(head, header=True), *(line(r) for r in rows), *("# " + b for b in basis)]
