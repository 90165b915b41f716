"""Enumerate layouts, prune them with one vectorised :func:`~hermes_fast.estimate` call, bound their throughput.

An *engine configuration* is (device, format, TP, PP, EP, attention DP, CP, token budget); :func:`engine_table`
estimates every one of them over a ladder of batch sizes in one call. Attention data parallelism is tried for MoE
models (tp > 1, one stage, experts expert-parallel over the tp devices), context parallelism for long prompts (a
mean prompt of at least ``cp_min_prompt_tokens``; one stage). A *pool* is a configuration with a replica count. A
candidate layout is a colocated pool, or a prefill pool and a decode pool (disaggregated), with a max batch size.

The throughput bound of a candidate (requests/s) uses estimate's fields only:

- decode, per replica: the largest batch ``b`` within the max batch size and the KV capacity (estimate's
  ``max_batch_size``) whose TPOT meets the target (on a ladder of batch sizes, refined where TPOT's line between
  two ladder points reaches the target, then estimated at exactly that batch), at ``b / (tpot_s(b) x output_tokens)``
  (estimate's decode step of a PP engine is already the pipelined one);
- prefill, per replica: the largest batch of whole prompts within the token budget (and the KV), at
  ``b / prefill_time_s(b)``; with PP, ``pp x`` that of the same engine with one stage (under load the
  micro-batches keep every stage busy; estimate's zero-load prefill is a pipeline fill);
- colocated: replicas / (1 / prefill rate + 1 / decode rate) (a replica's time is shared by both phases);
- disaggregated: min(prefill replicas x prefill rate, decode replicas x decode rate).

Pruned, with the first reason that applies (:data:`PRUNE_REASONS`): a layout the model cannot be split into,
weights plus one request's KV that do not fit, zero-load TTFT (disaggregated: plus the KV hand-off over the
prefill device's scale-out link, as the simulation's default ``kv_link``) or TPOT over the target, a cost over the
budget (or no price with a budget).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import NamedTuple

import numpy as np

from ..compile import check_layout
from ..config.base import ConfigError
from ..config.plan import PlanSpec
from ..config.scenario import Parallel
from ..estimate import estimate
from ..length_draws import length_moments
from ..resolve import Catalog
from ..variables import PLAN_PRUNE_NAMES

__all__ = [
    "PRUNE_REASONS",
    "Candidates",
    "EngineTable",
    "candidates",
    "engine_table",
    "mean_lengths",
    "pick",
    "rank",
    "score",
]

PRUNE_REASONS = PLAN_PRUNE_NAMES  # codes 1..5; 0: kept
_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def mean_lengths(spec: PlanSpec) -> tuple[int, int]:
    """Mean prompt and output tokens of the workload (its classes weighted by their mix), rounded, >= 1."""
    wl = spec.workload
    if not wl.classes:
        return wl.prompt_tokens, wl.output_tokens
    weights = np.array([c.weight for c in wl.classes], dtype=np.float64)
    weights = weights / weights.sum()
    prompt = output = 0.0
    for w, c in zip(weights, wl.classes, strict=True):
        p = c.prompt_tokens if c.prompt_tokens is not None else wl.prompt_tokens
        o = c.output_tokens if c.output_tokens is not None else wl.output_tokens
        prompt += w * length_moments(p)[0]
        output += w * length_moments(o)[0]
    return max(1, round(prompt)), max(1, round(output))


class EngineTable(NamedTuple):
    """Per engine configuration (index ``c``): its fields, estimate's figures and the rates the bound uses."""

    device: np.ndarray  # str
    dtype: np.ndarray  # str
    tp: np.ndarray
    pp: np.ndarray
    ep: np.ndarray
    attention_dp: np.ndarray  # bool
    cp: np.ndarray
    budget: np.ndarray  # max_batched_tokens
    n_devices: np.ndarray
    price: np.ndarray  # USD/h per device (NaN: none)
    reason: np.ndarray  # 0 kept, 1 layout, 2 memory, 3 ttft (colocated), 4 tpot (zero load)
    ttft_s: np.ndarray  # zero load, batch 1 (front end included)
    tpot_s: np.ndarray  # zero load, batch 1
    transfer_s: np.ndarray  # one prompt's KV over the device's scale-out link
    prefill_rate: np.ndarray  # requests/s per replica
    decode_rate: np.ndarray  # [c, m] requests/s per replica at max batch size m (0: none meets the TPOT target)
    decode_batch: np.ndarray  # [c, m] the batch that rate assumes
    kv_batch: np.ndarray  # requests whose KV fits one replica


def _supported(device, dtype: str) -> bool:
    return getattr(device.peak_flop_per_s, dtype, None) is not None


def engine_table(spec: PlanSpec, catalog: Catalog | None = None, calibration="default") -> EngineTable:
    """Estimate every engine configuration the spec allows over a ladder of batch sizes in one call."""
    catalog = catalog or Catalog({"stacks": spec.stacks}, calibration=calibration)
    model = catalog.model(spec.model, "plan.model")
    if model.kind != "decoder":
        raise ConfigError(
            "plan.model", spec.model, f"a decoder (a model that generates; {spec.model} is an {model.kind})"
        )
    catalog.stack(spec.stack, "plan.stack")
    if spec.expert_weight is not None and model.moe is None:
        raise ConfigError("plan.expert_weight", spec.expert_weight, f"null: {model.name} has no experts")
    prompt, output = mean_lengths(spec)
    max_dev = spec.max_devices or sum(spec.devices.values())
    long_prompts = prompt >= spec.cp_min_prompt_tokens
    rows = []  # (device, dtype, tp, pp, ep, budget, Device, attention_dp, cp)
    for name, count in spec.devices.items():
        dev = catalog.device(name, f"plan.devices.{name}")
        cap = min(count, max_dev)
        if False in spec.attention_dp or model.moe is None:
            for dtype, tp, pp, ep, budget, cp in itertools.product(
                spec.dtypes, spec.tp, spec.pp, spec.ep, spec.max_batched_tokens, spec.cp
            ):
                if not _supported(dev, dtype) or tp > dev.scale_up_domain_devices or tp * pp * cp > cap:
                    continue
                if tp % ep or (ep > 1 and model.moe is None):
                    continue
                if cp > 1 and (not long_prompts or pp > 1):
                    continue
                rows.append((name, dtype, tp, pp, ep, budget, dev, False, cp))
        if True in spec.attention_dp and model.moe is not None:  # the experts expert-parallel over the tp devices
            for dtype, tp, budget in itertools.product(spec.dtypes, spec.tp, spec.max_batched_tokens):
                if _supported(dev, dtype) and 1 < tp <= min(dev.scale_up_domain_devices, cap):
                    rows.append((name, dtype, tp, 1, tp, budget, dev, True, 1))
    if not rows:
        raise ConfigError(
            "plan.devices",
            dict(spec.devices),
            "devices with a format in plan.dtypes and room for a tp x pp in plan.tp, plan.pp",
        )
    n = len(rows)
    ladder = sorted({b for b in _LADDER if b <= max(spec.max_batch_size)} | set(spec.max_batch_size))
    kv = {r[1]: ("bf16" if r[1] in ("bf16", "fp16", "fp32") else "fp8") for r in rows}
    axis = {
        "label": [str(i) for i in range(n)],
        "engines.e.device": [r[0] for r in rows],
        "engines.e.dtypes.weight": [r[1] for r in rows],
        "engines.e.dtypes.activation": [r[1] for r in rows],
        "engines.e.dtypes.kv": [kv[r[1]] for r in rows],
        "engines.e.parallel.tp": [r[2] for r in rows],
        "engines.e.parallel.pp": [r[3] for r in rows],
        "engines.e.parallel.ep": [r[4] for r in rows],
        "engines.e.parallel.attention_dp": [r[7] for r in rows],
        "engines.e.parallel.cp": [r[8] for r in rows],
        "engines.e.max_batched_tokens": [r[5] for r in rows],
    }
    engine = {"name": "e", "model": spec.model, "device": rows[0][0], "stack": spec.stack}
    engine["dtypes"] = {"expert_weight": spec.expert_weight}  # (the grid sets the other formats)
    base = {
        "stacks": spec.stacks,
        "engines": [engine],
        "workload": {"prompt_tokens": prompt, "output_tokens": output},
    }
    ds = estimate(base, grid={"config": axis, "batch_size": ladder}, calibration=calibration)
    ds = ds.isel(engine=0)
    b = np.asarray(ladder, dtype=np.float64)
    tpot = ds.tpot_s.values  # [c, b]
    kv_batch = ds.max_batch_size.values[:, 0]
    fits1 = ds.fits.values[:, 0]
    ttft1, tpot1 = ds.ttft_s.values[:, 0], tpot[:, 0]

    layout_ok = np.ones(n, dtype=bool)
    for i, r in enumerate(rows):
        try:
            check_layout(model, Parallel(tp=r[2], pp=r[3], ep=r[4], attention_dp=r[7], cp=r[8]), "plan")
        except ConfigError:
            layout_ok[i] = False
    reason = np.zeros(n, dtype=np.int8)
    reason[~layout_ok] = 1
    reason[(reason == 0) & ~fits1] = 2

    # decode, per max batch size: the largest ladder batch within it and the KV whose TPOT meets the target, then
    # (TPOT is close to linear in the batch between ladder points) the batch where the line reaches the target
    limits = np.asarray(spec.max_batch_size, dtype=np.float64)
    cap = np.minimum(limits[None, :], kv_batch[:, None])  # [c, m]
    eligible = (b[None, None, :] <= cap[:, :, None]) & (tpot[:, None, :] <= spec.tpot_s)
    any_ok = eligible.any(axis=2)
    idx = np.where(eligible, np.arange(len(b))[None, None, :], 0).max(axis=2)
    nxt = np.minimum(idx + 1, len(b) - 1)
    t_i, t_j = np.take_along_axis(tpot, idx, axis=1), np.take_along_axis(tpot, nxt, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b_line = np.where(t_j > t_i, b[idx] + (spec.tpot_s - t_i) * (b[nxt] - b[idx]) / (t_j - t_i), b[nxt])
    refined = np.floor(np.maximum(b[idx], np.minimum(np.minimum(cap, b[nxt]), b_line)))
    # prefill: as many whole prompts as the token budget (and the KV) hold
    budget = np.array([r[5] for r in rows], dtype=np.float64)
    b_prefill = np.floor(np.maximum(1.0, np.minimum(np.floor(budget / prompt), kv_batch)))

    # one more estimate call at exactly those batches: the prefill's, and each max batch size's decode
    n_m = len(limits)
    per = 1 + n_m
    exact = {key: [v for v in values for _ in range(per)] for key, values in axis.items() if key != "label"}
    exact["label"] = [str(i) for i in range(n * per)]
    exact["workload.batch_size"] = np.column_stack([b_prefill, np.where(any_ok, refined, 1.0)]).ravel().astype(int)
    exact["workload.batch_size"] = [int(x) for x in exact["workload.batch_size"]]
    # a PP engine under load keeps its micro-batches in flight: a prefill iteration's stages overlap, so its rate is
    # pp x that of the engine with one stage of the layers (estimate's zero-load prefill is a pipeline fill);
    # the stage hand-offs, a few microseconds, are left out
    pp_col = exact["engines.e.parallel.pp"]
    exact["engines.e.parallel.pp"] = [1 if k % per == 0 else v for k, v in enumerate(pp_col)]
    ex = estimate(base, grid={"point": exact}, calibration=calibration).isel(engine=0)
    ex_prefill = ex.prefill_time_s.values.reshape(n, per)
    ex_tpot = ex.tpot_s.values.reshape(n, per)[:, 1:]
    pp = np.array([r[3] for r in rows], dtype=np.float64)
    prefill_rate = pp * b_prefill / ex_prefill[:, 0]
    use_exact = any_ok & (ex_tpot <= spec.tpot_s)
    batch = np.where(use_exact, refined, np.where(any_ok, b[idx], 0.0))
    step = np.where(use_exact, ex_tpot, t_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        decode_rate = np.where(any_ok, batch / (step * output), 0.0)

    devices = [r[6] for r in rows]
    # one token's KV over a replica: every device's share (an attention-DP rank holds it whole; CP groups split it)
    kvb = ds.kv_bytes_per_token.values * np.array([r[2] * r[3] // (r[2] if r[7] else 1) for r in rows])
    bw = np.array([d.scale_out.bandwidth_bytes_per_s for d in devices])
    lat = np.array([d.scale_out.latency_s for d in devices])
    price = np.array([np.nan if d.price_usd_per_hour is None else d.price_usd_per_hour for d in devices])
    return EngineTable(
        device=np.array([r[0] for r in rows]),
        dtype=np.array([r[1] for r in rows]),
        tp=np.array([r[2] for r in rows], dtype=np.int64),
        pp=np.array([r[3] for r in rows], dtype=np.int64),
        ep=np.array([r[4] for r in rows], dtype=np.int64),
        attention_dp=np.array([r[7] for r in rows], dtype=bool),
        cp=np.array([r[8] for r in rows], dtype=np.int64),
        budget=np.array([r[5] for r in rows], dtype=np.int64),
        n_devices=np.array([r[2] * r[3] * r[8] for r in rows], dtype=np.int64),
        price=price,
        reason=reason,
        ttft_s=ttft1,
        tpot_s=tpot1,
        transfer_s=lat + prompt * kvb / bw,
        prefill_rate=prefill_rate,
        decode_rate=decode_rate,
        decode_batch=batch,
        kv_batch=kv_batch,
    )


@dataclasses.dataclass(frozen=True)
class Candidates:
    """Every candidate layout as columns (index ``i``); ``prefill_*`` is -1 for a colocated one."""

    config: np.ndarray  # the (decode or colocated) engine configuration
    replicas: np.ndarray
    prefill_config: np.ndarray  # -1: colocated
    prefill_replicas: np.ndarray  # 0: colocated
    max_batch: np.ndarray  # index into spec.max_batch_size
    devices: np.ndarray
    cost: np.ndarray  # USD/h
    ttft_s: np.ndarray  # zero load
    tpot_s: np.ndarray  # zero load
    bound: np.ndarray  # requests/s (NaN: pruned)
    decode_batch: np.ndarray
    reason: np.ndarray  # 0 kept, else PRUNE_REASONS[code - 1]

    @property
    def size(self) -> int:
        return len(self.config)

    @property
    def disaggregated(self) -> np.ndarray:
        return self.prefill_config >= 0


def _pools(t: EngineTable, spec: PlanSpec, max_dev: int) -> tuple[np.ndarray, np.ndarray]:
    """(configuration, replicas) of every pool: 1 to as many replicas as the devices of its kind allow."""
    count = np.array([spec.devices[d] for d in t.device])
    most = np.minimum(count, max_dev) // t.n_devices
    cfg = np.repeat(np.arange(len(t.device)), most)
    reps = np.concatenate([np.arange(1, m + 1) for m in most]) if len(most) else np.zeros(0, dtype=np.int64)
    return cfg, reps.astype(np.int64)


def candidates(spec: PlanSpec, t: EngineTable) -> Candidates:
    """Every candidate layout the spec allows, with its prune reason and throughput bound (requests/s)."""
    max_dev = spec.max_devices or sum(spec.devices.values())
    n_m = len(spec.max_batch_size)
    cfg, reps = _pools(t, spec, max_dev)
    parts = []
    if spec.colocated:
        c = np.repeat(cfg, n_m)
        r = np.repeat(reps, n_m)
        m = np.tile(np.arange(n_m), len(cfg))
        parts.append((c, r, np.full(len(c), -1), np.zeros(len(c), dtype=np.int64), m))
    if spec.disaggregated:
        ip, jd = np.meshgrid(np.arange(len(cfg)), np.arange(len(cfg)), indexing="ij")
        ip, jd = ip.ravel(), jd.ravel()
        cp, cd = cfg[ip], cfg[jd]
        n_p, n_d = reps[ip] * t.n_devices[cp], reps[jd] * t.n_devices[cd]
        same_dev = t.device[cp] == t.device[cd]
        count = np.array([spec.devices[d] for d in t.device])[cp]
        ok = (t.dtype[cp] == t.dtype[cd]) & (t.budget[cp] == t.budget[cd]) & (n_p + n_d <= max_dev)
        ok &= ~same_dev | (n_p + n_d <= count)
        ip, jd = ip[ok], jd[ok]
        c = np.repeat(cfg[jd], n_m)
        r = np.repeat(reps[jd], n_m)
        m = np.tile(np.arange(n_m), len(jd))
        parts.append((c, r, np.repeat(cfg[ip], n_m), np.repeat(reps[ip], n_m), m))
    c, r, pc, pr, m = (np.concatenate(x) for x in zip(*parts, strict=True))
    disagg = pc >= 0
    pcs = np.where(disagg, pc, c)  # the engine that prefills
    devices = r * t.n_devices[c] + pr * t.n_devices[pcs] * disagg
    cost = r * t.n_devices[c] * t.price[c] + np.where(disagg, pr * t.n_devices[pcs] * t.price[pcs], 0.0)
    ttft = t.ttft_s[pcs] + np.where(disagg, t.transfer_s[pcs], 0.0)
    tpot = t.tpot_s[c]
    d_rate = t.decode_rate[c, m]
    p_rate = t.prefill_rate[pcs]
    with np.errstate(divide="ignore", invalid="ignore"):
        colocated_bound = r / (1.0 / p_rate + 1.0 / d_rate)
    bound = np.where(disagg, np.minimum(pr * p_rate, r * d_rate), colocated_bound)

    reason = np.zeros(len(c), dtype=np.int8)
    for code, bad in (
        (1, (t.reason[c] == 1) | (t.reason[pcs] == 1)),
        (2, (t.reason[c] == 2) | (t.reason[pcs] == 2)),
        (3, ttft > spec.ttft_s),
        (4, (tpot > spec.tpot_s) | (d_rate <= 0)),
        (5, _over_budget(cost, spec)),
    ):
        reason[(reason == 0) & bad] = code
    bound = np.where(reason == 0, bound, np.nan)
    return Candidates(
        config=c,
        replicas=r,
        prefill_config=pc,
        prefill_replicas=pr,
        max_batch=m,
        devices=devices,
        cost=cost,
        ttft_s=ttft,
        tpot_s=tpot,
        bound=bound,
        decode_batch=t.decode_batch[c, m],
        reason=reason,
    )


def _over_budget(cost: np.ndarray, spec: PlanSpec) -> np.ndarray:
    if spec.budget_usd_per_hour is None:
        return np.zeros(len(cost), dtype=bool)
    return ~(cost <= spec.budget_usd_per_hour)  # (a device without a price cannot be shown to fit the budget)


def score(spec: PlanSpec, bound: np.ndarray, devices: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The objective a candidate is ranked by: requests/s, per device, or per USD/h (NaN: unranked)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if spec.objective == "per_device":
            return bound / devices
        if spec.objective == "per_usd":
            return bound / cost
    return np.asarray(bound, dtype=np.float64)


def pick(spec: PlanSpec, t: EngineTable, c: Candidates, order: np.ndarray) -> np.ndarray:
    """The ``top_k`` first of ``order``, at most ``per_group`` of each kind (mode, decode and prefill devices,
    format) when set."""
    if spec.per_group is None:
        return order[: spec.top_k]
    pcs = np.where(c.disaggregated, c.prefill_config, c.config)
    key = np.char.add(np.char.add(t.device[c.config], "|" + np.where(c.disaggregated, "", "co|")),
                      np.char.add(t.device[pcs], "|" + t.dtype[c.config]))  # fmt: skip
    taken: dict[str, int] = {}
    out = []
    for i in order.tolist():
        k = key[i]
        if taken.get(k, 0) < spec.per_group:
            taken[k] = taken.get(k, 0) + 1
            out.append(i)
            if len(out) == spec.top_k:
                break
    return np.array(out, dtype=np.int64)


def rank(spec: PlanSpec, s: np.ndarray, devices: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the candidates with a finite score, best first (ties: fewer devices, then lower cost)."""
    keep = np.flatnonzero(np.isfinite(s))
    order = np.lexsort((np.nan_to_num(cost[keep], nan=math.inf), devices[keep], -s[keep]))
    return keep[order]
