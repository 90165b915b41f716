"""Shared test helpers: catalog access and an 'ideal' device whose kernels expose raw FLOP and byte counts."""

from __future__ import annotations

import pytest

from hermes_fast.compile import compile_engine
from hermes_fast.config import Dtypes, Parallel
from hermes_fast.resolve import Catalog

# An H100 with every efficiency 1 and no overheads: memory time x bw = bytes read.
IDEAL_EFFICIENCY = {
    "compute_efficiency": 1.0,
    "low_precision_compute_efficiency": 1.0,
    "compute_saturation_tokens": 0.0,
    "attention_compute_efficiency": 1.0,
    "attention_saturation_keys": 0.0,
    "memory_efficiency": 1.0,
    "gemm_overhead_s": 0.0,
    "low_precision_gemm_overhead_s": 0.0,
    "attention_overhead_s": 0.0,
    "elementwise_overhead_s": 0.0,
    "collective_efficiency": 1.0,
    "collective_overhead_s": 0.0,
}


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    ideal = {"base": "h100_sxm", "efficiency": IDEAL_EFFICIENCY}
    # ...and one with unlimited memory bandwidth, so every operator is compute-bound: time x peak = FLOP
    compute_only = {"base": "ideal", "memory_bandwidth_bytes_per_s": 1e300}
    # uncalibrated: the kernel tests check the documented default efficiencies by hand
    return Catalog({"devices": {"ideal": ideal, "ideal_compute": compute_only}}, calibration="none")


@pytest.fixture(scope="session")
def build(catalog):
    """build(model, device='h100_sxm', tp=1, pp=1, ep=1, weight='bf16', activation='bf16', kv='bf16',
    attention_dp=False, cp=1)."""

    def _build(
        model,
        device="h100_sxm",
        tp=1,
        pp=1,
        ep=1,
        weight="bf16",
        activation="bf16",
        kv="bf16",
        attention_dp=False,
        cp=1,
    ):
        return compile_engine(
            catalog.model(model),
            catalog.device(device),
            Parallel(tp=tp, pp=pp, ep=ep, attention_dp=attention_dp, cp=cp),
            Dtypes(weight=weight, activation=activation, kv=kv),
        )

    return _build
