"""Schema of a deployment-planning question (``hf.plan``, ``hermes-fast plan``): a model, the devices at hand (with
counts) or a budget, the traffic, the latency targets, and the space of layouts to search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .base import ConfigError, fld
from .hardware import Dtype
from .scenario import Workload

OBJECTIVES = ("capacity", "per_device", "per_usd")


@dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """What a capacity planner asks: which layout of ``model`` on these devices (or this budget) serves the most
    traffic within the latency targets, and with how many replicas.

    Layouts searched: every tensor-parallel degree in ``tp`` (at most the device's scale-up domain), pipeline degree
    in ``pp``, expert-parallel degree in ``ep`` (MoE models; EP ranks inside the TP group), attention data parallelism
    in ``attention_dp`` (MoE models, tp > 1, one stage; its experts expert-parallel over the tp devices), context
    parallelism in ``cp`` (one stage, no attention DP; only for prompts of at least ``cp_min_prompt_tokens`` on
    average), weight/activation format
    in ``dtypes`` the device has a native tensor path for, replicas up to the devices available, colocated
    (``colocated``) and disaggregated (``disaggregated``: every prefill:decode split, prefill and decode on the same
    or different device types, one format for both), and every batching limit in ``max_batch_size`` x
    ``max_batched_tokens``.
    """

    model: str = fld(doc="model name (catalog preset)")
    devices: dict[str, int] = fld(
        factory=dict,
        unit="device",
        doc="device name -> devices available (e.g. {h100_sxm: 16, h200_sxm: 8}); with a budget, a cap",
        ge=1,
        le=65536,
    )
    budget_usd_per_hour: float | None = fld(
        None, unit="USD/h", doc="most a layout may cost per hour at the devices' prices (None: no budget)", gt=0
    )
    max_devices: int | None = fld(
        None, unit="device", doc="most devices one layout uses in all (None: the devices' total)", ge=1, le=65536
    )
    workload: Workload = fld(
        factory=Workload, doc="request lengths (and classes, arrival process) the deployment serves"
    )
    ttft_s: float = fld(2.0, unit="s", doc="time-to-first-token target at the quantile", gt=0)
    tpot_s: float = fld(0.05, unit="s", doc="time-per-output-token target at the quantile", gt=0)
    quantile: float = fld(0.99, unit="1", doc="quantile the targets bound: 0.5, 0.9, 0.95 or 0.99", gt=0, lt=1)
    tp: tuple[int, ...] = fld((1, 2, 4, 8), unit="device", doc="tensor-parallel degrees to try", ge=1, le=1024)
    pp: tuple[int, ...] = fld((1, 2, 4), unit="device", doc="pipeline-parallel degrees to try", ge=1, le=1024)
    ep: tuple[int, ...] = fld(
        (1,), unit="device", doc="expert-parallel degrees to try (MoE models; divide tp)", ge=1, le=1024
    )
    attention_dp: tuple[bool, ...] = fld(
        (False, True),
        doc="attention data parallelism off and/or on (MoE models with tp > 1 and pp = 1; on: ep = tp whatever `ep` "
        "lists)",
    )
    cp: tuple[int, ...] = fld(
        (1, 2, 4),
        unit="device",
        doc="context-parallel degrees to try (pp = 1, no attention DP; > 1 only from cp_min_prompt_tokens on)",
        ge=1,
        le=1024,
    )
    cp_min_prompt_tokens: int = fld(
        16384, unit="token", doc="mean prompt length from which context parallelism (cp > 1) is tried", ge=1, le=1e9
    )
    dtypes: tuple[Dtype, ...] = fld(
        ("bf16", "fp8", "fp4"), doc="weight and activation formats to try where the device has a native path"
    )
    expert_weight: Dtype | None = fld(
        None,
        doc="MoE models: the routed experts' weight format in every layout, the rest in the tried format (a checkpoint "
        "that quantises only its experts, as gpt-oss's MXFP4; engines' dtypes.expert_weight; None: the tried format)",
    )
    max_batch_size: tuple[int, ...] = fld((128, 512), unit="request", doc="max batch sizes to try", ge=1, le=65536)
    max_batched_tokens: tuple[int, ...] = fld((2048, 8192), unit="token", doc="token budgets to try", ge=1, le=1e9)
    colocated: bool = fld(True, doc="search colocated layouts (one engine does prefill and decode)")
    disaggregated: bool = fld(True, doc="search disaggregated layouts (prefill and decode pools)")
    stack: str = fld("vllm", doc="serving stack the engines run (catalog stacks or the plan's own stacks)")
    stacks: dict[str, Any] = fld(
        factory=dict,
        doc="the plan's own serving stacks, as a scenario's (a preset's fields overridden: `base: PRESET` and fields)",
    )
    objective: Literal["capacity", "per_device", "per_usd"] = fld(
        "capacity", doc="rank by capacity (requests/s), by capacity per device, or by capacity per USD/h"
    )
    top_k: int = fld(10, unit="layout", doc="best layouts by the analytic bound verified by simulation", ge=1, le=1000)
    per_group: int | None = fld(
        None,
        unit="layout",
        doc="verify at most this many layouts per kind (mode, devices, format), for a diverse front (None: no limit)",
        ge=1,
        le=1000,
    )
    n_requests: int = fld(2000, unit="request", doc="arrivals per simulated run", ge=10, le=10_000_000)
    replicates: int = fld(1, unit="1", doc="capacity searches per verified layout", ge=1, le=100)
    seed: int = fld(0, unit="1", doc="seed of every simulated run (common random numbers)", ge=0, le=(1 << 63) - 1)
    rel_tol: float = fld(0.03, unit="1", doc="capacity search: stop when high / low - 1 is below this", gt=0, lt=1)

    def _validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        if not self.devices:
            raise ConfigError(f"{p}devices", {}, "at least one device with a count, e.g. {h100_sxm: 8}")
        if not (self.colocated or self.disaggregated):
            raise ConfigError(f"{p}colocated", False, "true, or disaggregated true: something to search")
        for key in ("tp", "pp", "ep", "attention_dp", "cp", "dtypes", "max_batch_size", "max_batched_tokens"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{p}{key}", list(values), "at least one value")
        if self.workload.arrival.process == "closed":
            raise ConfigError(
                f"{p}workload.arrival.process", "closed", "an open arrival process: the capacity search sets the rate"
            )
        if self.quantile not in (0.5, 0.9, 0.95, 0.99):
            raise ConfigError(
                f"{p}quantile", self.quantile, "one of 0.5, 0.9, 0.95, 0.99 (the quantiles a run reports)"
            )
