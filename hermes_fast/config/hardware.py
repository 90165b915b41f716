"""Device and memory-tier schemas: what a catalog entry (preset or user YAML) must say: dtypes, peaks, links,
memory, power and price (a device's efficiency figures are in :mod:`hermes_fast.config.efficiency`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld
from .efficiency import Efficiency

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "fp4", "int4"]
DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8", "fp4", "int4")
DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5, "int4": 0.5}
# the block scales a 4-bit weight format keeps beside its elements, in bytes a weight: MXFP4 one E8M0 byte per 32
# elements (OCP Microscaling Formats v1.0), NVFP4 one FP8 byte per 16 (fp4 does not tell them apart: the smaller is
# taken); int4 (GPTQ / AWQ, group size 128) an FP16 scale and a packed 4-bit zero point per 128. FP8's block scales
# (one FP32 per 128 x 128) are left out: 0.02%
WEIGHT_SCALE_BYTES = {"fp4": 1.0 / 32.0, "int4": 2.5 / 128.0}
# When a device has no native peak for a dtype, its GEMMs run in the next wider format it has
# (weight-only quantisation: narrow weights are dequantised on the fly), so that format's peak applies.
DTYPE_FALLBACK = {
    "fp4": "fp8",
    "int4": "int8",
    "fp8": "bf16",
    "int8": "bf16",
    "bf16": "fp16",
    "fp16": "bf16",
    "fp32": "bf16",  # no native FP32 matrix path (TPUs, some ASICs): FP32 matmuls run as bf16 passes
}


def weight_bytes(dtype: str) -> float:
    """Bytes a weight stored in ``dtype`` takes in memory and is read as: its element and its share of the block
    scales (:data:`WEIGHT_SCALE_BYTES`)."""
    return DTYPE_BYTES[dtype] + WEIGHT_SCALE_BYTES.get(dtype, 0.0)


@dataclass(frozen=True, kw_only=True)
class PeakFlops:
    """Dense (non-sparse) peak throughput per dtype; ``None`` where the hardware has no native path."""

    fp32: float | None = fld(None, unit="FLOP/s", doc="dense FP32 (non-tensor or TF32-off) peak", ge=1e6)
    fp16: float | None = fld(None, unit="FLOP/s", doc="dense FP16 matrix peak", ge=1e6)
    bf16: float | None = fld(None, unit="FLOP/s", doc="dense BF16 matrix peak", ge=1e6)
    fp8: float | None = fld(None, unit="FLOP/s", doc="dense FP8 matrix peak", ge=1e6)
    int8: float | None = fld(None, unit="OP/s", doc="dense INT8 matrix peak", ge=1e6)
    fp4: float | None = fld(None, unit="FLOP/s", doc="dense FP4 matrix peak", ge=1e6)
    int4: float | None = fld(None, unit="OP/s", doc="dense INT4 matrix peak", ge=1e6)

    def _validate(self, path: str) -> None:
        if all(getattr(self, d) is None for d in DTYPES):
            raise ConfigError(path, None, "at least one dtype peak (e.g. bf16: 989.0e12)")

    def resolve(self, dtype: str) -> tuple[float, str]:
        """Peak used for GEMMs whose operands are ``dtype``, and the format that actually runs."""
        d: str | None = dtype
        seen = set()
        while d is not None and d not in seen:
            seen.add(d)
            v = getattr(self, d)
            if v is not None:
                return v, d
            d = DTYPE_FALLBACK[d]
        widest = next(x for x in DTYPES if getattr(self, x) is not None)  # _validate: at least one is set
        return getattr(self, widest), widest


@dataclass(frozen=True, kw_only=True)
class Link:
    """A point-to-point or switched link level, per device and per direction."""

    name: str = fld("link", doc="label, e.g. nvlink4, pcie5_x16, ib_ndr")
    bandwidth_bytes_per_s: float = fld(unit="B/s", doc="per-device, per-direction bandwidth", ge=1e3)
    latency_s: float = fld(unit="s", doc="per-hop latency (alpha of the alpha-beta model)", ge=0, le=10)


@dataclass(frozen=True, kw_only=True)
class Device:
    """One accelerator, CPU socket or memory-centric node type."""

    name: str = fld(doc="display name")
    kind: Literal["gpu", "tpu", "asic", "cpu", "pim"] = fld(doc="device class")
    peak_flop_per_s: PeakFlops = fld(doc="dense peak per dtype")
    memory_bytes: float = fld(unit="B", doc="device-local memory capacity (HBM, or DRAM for CPUs)", ge=1e6)
    runtime_memory_bytes: float | None = fld(
        None,
        unit="B",
        doc="the total the vendor runtime reports (CUDA's cudaMemGetInfo), which serving stacks size their memory "
        "fractions from: the marketed '80 GB' is 80 GiB of HBM less the driver's share (None: memory_bytes)",
        ge=1e6,
    )
    memory_bandwidth_bytes_per_s: float = fld(unit="B/s", doc="device-local memory bandwidth", ge=1e3)
    compute_capability: float | None = fld(
        None,
        unit="1",
        doc="CUDA compute capability (8.0 A100, 9.0 H100): the kernels a serving stack can run on it (None: not a "
        "CUDA device; a device written from scratch without it takes no stack kernel tied to a capability, one "
        "defined with base: inherits it)",
        ge=1,
        le=100,
    )
    scale_up: Link = fld(doc="link within the scale-up domain (NVLink, xGMI, ICI, UPI)")
    scale_up_domain_devices: int = fld(1, unit="device", doc="devices reachable over scale_up", ge=1, le=1 << 20)
    scale_out: Link = fld(doc="link between scale-up domains (InfiniBand, Ethernet, DCN)")
    host_link: Link | None = fld(None, doc="link to host memory (PCIe, NVLink-C2C); None for CPUs")
    power_idle_w: float = fld(unit="W", doc="power when idle", ge=0)
    power_peak_w: float = fld(unit="W", doc="power at full load (TDP/TGP)", gt=0)
    price_usd_per_hour: float | None = fld(None, unit="USD/h", doc="rental price per device-hour", ge=0)
    efficiency: Efficiency = fld(factory=Efficiency, doc="achievable fractions and overheads")
    sources: dict[str, str] = fld(factory=dict, doc="source of each figure, keyed by field path")
    notes: str = fld("", doc="free text")

    def _validate(self, path: str) -> None:
        if self.power_idle_w > self.power_peak_w:
            raise ConfigError(f"{path}.power_idle_w", self.power_idle_w, f"<= power_peak_w ({self.power_peak_w:g})")


@dataclass(frozen=True, kw_only=True)
class MemoryTier:
    """An attachable memory/storage tier (host DRAM, CXL, NVMe SSD, remote storage)."""

    name: str = fld(doc="display name")
    kind: Literal["hbm", "host_dram", "cxl", "nvme_ssd", "remote"] = fld(doc="tier class")
    capacity_bytes: float = fld(unit="B", doc="capacity", gt=0)
    bandwidth_bytes_per_s: float = fld(unit="B/s", doc="sustained read bandwidth", ge=1e3)
    latency_s: float = fld(unit="s", doc="access / lookup latency", ge=0)
    sources: dict[str, str] = fld(factory=dict, doc="source of each figure")
    notes: str = fld("", doc="free text")
