"""``hf.plan``: enumerate, prune, rank, verify; the result as one Dataset, a ranked table and a Pareto front."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import plot
from .._version import provenance
from ..config.base import ConfigError, from_mapping, to_mapping
from ..config.files import load_yaml
from ..config.plan import PlanSpec
from ..metrics import QUANTILES, add_derived
from ..pareto import pareto
from ..resolve import Catalog
from ..variables import CAPACITY_BOUND_NAMES, data_array
from .search import PRUNE_REASONS, candidates, engine_table, pick, rank, score
from .verify import verify

__all__ = ["plan", "plan_spec", "plan_table", "plan_front", "plot_plan", "verified_layouts"]

_KEPT = (
    "capacity_request_per_s",
    "capacity_bound",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "throughput_output_token_per_s",
    "cost_usd_per_mtoken",
    "valid",
    "invalid_reason",
)


def plan_spec(spec: PlanSpec | Mapping | str | Path | None = None, **fields) -> PlanSpec:
    """A validated :class:`~hermes_fast.config.plan.PlanSpec` from itself, a mapping, a YAML file or text, with
    ``fields`` on top (ConfigError naming the field, under ``plan.``)."""
    if isinstance(spec, PlanSpec):
        base = to_mapping(spec)
    elif isinstance(spec, (str, Path)):
        base = load_yaml(spec, "a plan")
    else:
        base = dict(spec or {})
    if not isinstance(base, Mapping):
        raise ConfigError("plan", base, "a mapping of plan fields")
    return from_mapping(PlanSpec, {**base, **fields}, "plan")


def _labels(spec: PlanSpec, t, cands) -> np.ndarray:
    m = np.asarray(spec.max_batch_size)[cands.max_batch]
    dev, dt, tp, pp, ep, adp, cp = t.device, t.dtype, t.tp, t.pp, t.ep, t.attention_dp, t.cp

    def pool(c, r):
        name = f"{r}x {dev[c]} TP{tp[c]}" + (f"PP{pp[c]}" if pp[c] > 1 else "") + (f"EP{ep[c]}" if ep[c] > 1 else "")
        return name + (f"CP{cp[c]}" if cp[c] > 1 else "") + (" DP-attn" if adp[c] else "")

    out = []
    for c, r, pc, pr, mb in zip(
        cands.config.tolist(), cands.replicas.tolist(), cands.prefill_config.tolist(),
        cands.prefill_replicas.tolist(), m.tolist(), strict=True,
    ):  # fmt: skip
        lay = pool(c, r) if pc < 0 else f"P {pool(pc, pr)} + D {pool(c, r)}"
        out.append(f"{lay} {dt[c]} mb{mb} tok{t.budget[c]}")
    return np.array(out)


def plan(
    spec: PlanSpec | Mapping | str | Path | None = None,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    calibration: Any = "default",
    **fields,
) -> xr.Dataset:
    """Which layout, and how many replicas, serve a model's traffic best within TTFT and TPOT targets.

    Enumerates TP x PP x EP x replicas of every device with a count (and formats each supports; attention data
    parallelism for MoE models, context parallelism for long prompts), colocated and
    disaggregated (every prefill:decode split, prefill and decode on the same or different device types), with
    every batching limit; prunes with one vectorised :func:`hermes_fast.estimate` call (fits, zero-load TTFT and
    TPOT against the targets, budget); ranks the survivors by an analytic throughput bound (estimate's decode
    batch within the limits and KV over its TPOT, capped by prefill); and verifies the ``top_k`` best by a
    simulated capacity search each (on dask with ``scheduler`` or ``workers``), with common random numbers.

    Parameters
    ----------
    spec : PlanSpec, mapping, str, pathlib.Path or None, default None
        The question (:class:`~hermes_fast.config.plan.PlanSpec`): ``model``, ``devices`` (name -> count),
        ``budget_usd_per_hour``, ``workload``, ``ttft_s`` and ``tpot_s`` (seconds, at ``quantile``), the space
        (``tp``, ``pp``, ``ep``, ``attention_dp``, ``cp``, ``dtypes``, ``max_batch_size``, ``max_batched_tokens``,
        ``colocated``,
        ``disaggregated``), ``objective``, ``top_k``, ``n_requests``, ``seed``; a mapping, YAML file or text.
    scheduler : str, distributed.Client or None, default None
        A dask scheduler (address or client) to run the capacity searches on.
    workers : int or None, default None
        N local dask worker processes for the capacity searches (None: serial).
    calibration : str, Calibration, pathlib.Path or list, default "default"
        As in :func:`hermes_fast.estimate`.
    **fields
        PlanSpec fields, on top of ``spec``.

    Returns
    -------
    xarray.Dataset
        Dim ``candidate`` (every layout enumerated) with coordinates ``label``, ``mode`` (colocated /
        disaggregated), ``device``, ``dtype``, ``tp``, ``pp``, ``ep``, ``attention_dp``, ``cp``, ``replicas`` (the
        colocated or decode pool), ``prefill_device``, ``prefill_tp``, ``prefill_pp``, ``prefill_ep``,
        ``prefill_attention_dp``, ``prefill_cp``, ``prefill_replicas`` ("", 0 or false when colocated),
        ``max_batch_size``, ``max_batched_tokens``; variables ``plan_devices``, ``plan_cost_usd_per_hour``,
        ``plan_zero_load_ttft_s``, ``plan_zero_load_tpot_s``, ``plan_bound_request_per_s``, ``plan_score``,
        ``plan_pruned_by`` (why a layout was left out), ``plan_rank``, ``plan_verified``,
        ``plan_verified_rank``, and for the verified ones the capacity search's ``capacity_request_per_s``,
        ``capacity_bound``, ``ttft_s``, ``tpot_s``, ``e2e_s`` (``replicate``, ``quantile``),
        ``throughput_output_token_per_s``, ``output_token_per_s_per_device``, ``cost_usd_per_mtoken``,
        ``valid``, ``invalid_reason``. Attrs: ``candidates``, ``pruned`` (JSON: count per reason), ``verified``,
        ``best`` (label) and ``best_candidate`` (index; -1: none), ``warnings`` (verified layouts whose run at
        capacity is invalid: overloaded, requests rejected or lost), the spec as JSON.

    Raises
    ------
    ConfigError
        For an invalid spec (an unknown model, device or stack, no device count, an empty space), naming the field.

    Examples
    --------
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 2}, workload={"prompt_tokens": 512,
    ...              "output_tokens": 64}, tp=[1, 2], pp=[1], dtypes=["bf16"], max_batch_size=[64],
    ...              max_batched_tokens=[4096], top_k=2, n_requests=200)
    >>> int(ds.attrs["candidates"]), int(ds.plan_verified.sum())  # 1x, 2x TP1, 1x TP2 colocated; 1P+1D
    (4, 2)
    >>> str(ds.label.values[ds.attrs["best_candidate"]])
    'P 1x h100_sxm TP1 + D 1x h100_sxm TP1 bf16 mb64 tok4096'
    """
    spec = plan_spec(spec, **fields)
    catalog = Catalog({"stacks": spec.stacks}, calibration=calibration)
    t = engine_table(spec, catalog, calibration)
    cands = candidates(spec, t)
    s = score(spec, cands.bound, cands.devices, cands.cost)
    order = rank(spec, s, cands.devices, cands.cost)
    chosen = pick(spec, t, cands, order)
    results = verify(spec, t, cands, chosen, scheduler=scheduler, workers=workers, calibration=calibration)
    return _dataset(spec, catalog, t, cands, s, order, chosen, results)


def _dataset(spec, catalog, t, cands, s, order, chosen, results) -> xr.Dataset:
    n = cands.size
    disagg = cands.disaggregated
    pc = np.where(disagg, cands.prefill_config, 0)
    dims = ("candidate",)
    coords: dict[str, Any] = {
        "candidate": np.arange(n),
        "label": (dims, _labels(spec, t, cands)),
        "mode": (dims, np.where(disagg, "disaggregated", "colocated")),
        "device": (dims, t.device[cands.config]),
        "dtype": (dims, t.dtype[cands.config]),
        "tp": (dims, t.tp[cands.config]),
        "pp": (dims, t.pp[cands.config]),
        "ep": (dims, t.ep[cands.config]),
        "attention_dp": (dims, t.attention_dp[cands.config]),
        "cp": (dims, t.cp[cands.config]),
        "replicas": (dims, cands.replicas),
        "prefill_device": (dims, np.where(disagg, t.device[pc], "")),
        "prefill_tp": (dims, np.where(disagg, t.tp[pc], 0)),
        "prefill_pp": (dims, np.where(disagg, t.pp[pc], 0)),
        "prefill_ep": (dims, np.where(disagg, t.ep[pc], 0)),
        "prefill_attention_dp": (dims, disagg & t.attention_dp[pc]),
        "prefill_cp": (dims, np.where(disagg, t.cp[pc], 0)),
        "prefill_replicas": (dims, cands.prefill_replicas),
        "max_batch_size": (dims, np.asarray(spec.max_batch_size)[cands.max_batch]),
        "max_batched_tokens": (dims, t.budget[cands.config]),
    }
    plan_rank = np.zeros(n, dtype=np.int64)
    plan_rank[order] = np.arange(1, len(order) + 1)
    verified = np.zeros(n, dtype=bool)
    verified[chosen] = True
    ds = xr.Dataset(
        {
            "plan_devices": data_array("plan_devices", cands.devices, dims),
            "plan_cost_usd_per_hour": data_array("plan_cost_usd_per_hour", cands.cost, dims),
            "plan_zero_load_ttft_s": data_array("plan_zero_load_ttft_s", cands.ttft_s, dims),
            "plan_zero_load_tpot_s": data_array("plan_zero_load_tpot_s", cands.tpot_s, dims),
            "plan_bound_request_per_s": data_array("plan_bound_request_per_s", cands.bound, dims),
            "plan_score": data_array("plan_score", s, dims),
            "plan_decode_batch": data_array("plan_decode_batch", cands.decode_batch, dims),
            "plan_pruned_by": data_array("plan_pruned_by", cands.reason, dims),
            "plan_rank": data_array("plan_rank", plan_rank, dims),
            "plan_verified": data_array("plan_verified", verified, dims),
        },
        coords=coords,
    )
    reps = spec.replicates
    q = len(QUANTILES)
    full = {
        "capacity_request_per_s": np.full((n, reps), np.nan),
        "capacity_bound": np.zeros((n, reps), dtype=np.int8),
        "ttft_s": np.full((n, reps, q), np.nan),
        "tpot_s": np.full((n, reps, q), np.nan),
        "e2e_s": np.full((n, reps, q), np.nan),
        "throughput_output_token_per_s": np.full((n, reps), np.nan),
        "cost_usd_per_mtoken": np.full((n, reps), np.nan),
        "valid": np.zeros((n, reps), dtype=bool),
        "invalid_reason": np.zeros((n, reps), dtype=np.int8),
    }
    warnings = []
    for i, r in zip(chosen.tolist(), results, strict=True):
        for name in _KEPT:
            full[name][i] = r[name].values
        warnings += [f"{coords['label'][1][i]}: {w}" for w in r.attrs.get("warnings", [])]
        if (r.capacity_bound.values == CAPACITY_BOUND_NAMES.index("rate_max") + 1).any():
            warnings.append(
                f"{coords['label'][1][i]}: meets the targets at the top of its capacity search, twice its analytic "
                f"bound ({cands.bound[i]:.4g} req/s): its capacity is at least that, and the bound is not one here"
            )
    for name in _KEPT:
        rdims = ("candidate", "replicate", "quantile")[: full[name].ndim]
        ds[name] = data_array(name, full[name], rdims)
    ds = ds.assign_coords(replicate=np.arange(reps), quantile=list(QUANTILES))
    per_dev = ds.throughput_output_token_per_s / ds.plan_devices
    ds["output_token_per_s_per_device"] = data_array("output_token_per_s_per_device", per_dev.values, per_dev.dims)

    # rank the verified layouts by the simulated capacity (valid runs first)
    cap = np.full(n, np.nan)
    cap[chosen] = full["capacity_request_per_s"][chosen].mean(axis=1)
    sim_score = score(spec, cap, cands.devices, cands.cost)
    all_valid = full["valid"].all(axis=1)
    vrank = np.zeros(n, dtype=np.int64)
    good = rank(spec, np.where(all_valid, sim_score, np.nan), cands.devices, cands.cost)
    rest = [i for i in chosen.tolist() if i not in set(good.tolist())]
    for k, i in enumerate([*good.tolist(), *rest], start=1):
        vrank[i] = k
    ds["plan_verified_rank"] = data_array("plan_verified_rank", vrank, dims)
    best = int(good[0]) if len(good) else -1
    counts = {name: int((cands.reason == code).sum()) for code, name in enumerate(PRUNE_REASONS, start=1)}
    stack = catalog.stack(spec.stack)
    ds.attrs.update(
        {
            "title": f"hermes_fast plan: {spec.model}",
            **provenance(),
            "model": spec.model,
            "stack": spec.stack,
            # (under a stack with a memory rule, SGLang's, its value outside the rule's classes: each candidate ran
            # at the rule's for its device and layout, and the exported commands carry that)
            "memory_utilization": stack.memory_utilization if stack.memory_utilization is not None else 0.9,
            "candidates": n,
            "kept": int((cands.reason == 0).sum()),
            "pruned": json.dumps(counts),
            "verified": int(len(chosen)),
            "best": str(coords["label"][1][best]) if best >= 0 else "",
            "best_candidate": best,
            "objective": spec.objective,
            "plan": json.dumps(to_mapping(spec)),
            "warnings": warnings,
        }
    )
    if best < 0 and len(chosen):
        ds.attrs["warnings"] = [*warnings, "no verified layout met the targets with a valid run"]
    if not len(chosen):
        ds.attrs["warnings"] = [*warnings, "every candidate was pruned: nothing to verify (see plan_pruned_by)"]
    return ds


def verified_layouts(ds: xr.Dataset) -> xr.Dataset:
    """The verified candidates of a :func:`plan` result, best first (by ``plan_verified_rank``).

    Examples
    --------
    >>> import hermes_fast as hf
    >>> from hermes_fast.plan import verified_layouts
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 1}, tp=[1], pp=[1], dtypes=["bf16"],
    ...              max_batch_size=[64], max_batched_tokens=[4096], top_k=1, n_requests=200)
    >>> verified_layouts(ds).sizes["candidate"]
    1
    """
    idx = np.flatnonzero(ds.plan_verified.values)
    idx = idx[np.argsort(ds.plan_verified_rank.values[idx], kind="stable")]
    return ds.isel(candidate=idx)


def plan_table(ds: xr.Dataset) -> pd.DataFrame:
    """The ranked table of a :func:`plan` result: one row per verified layout, best first.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`hermes_fast.plan` result.

    Returns
    -------
    pandas.DataFrame
        Indexed by rank: ``layout``, ``mode``, ``devices``, ``usd_per_hour``, ``bound_req_s`` (analytic),
        ``capacity_req_s`` (simulated, at the targets), ``binding`` (what stops it), ``tok_s_per_device`` and
        ``tok_per_usd`` (output tokens at capacity), TTFT and TPOT p50 and at the plan's quantile (ms),
        ``valid`` (the run at capacity is valid: not overloaded, no requests lost), ``candidate``.

    Examples
    --------
    >>> import hermes_fast as hf
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 1}, tp=[1], pp=[1], dtypes=["bf16"],
    ...              max_batch_size=[64], max_batched_tokens=[4096], top_k=1, n_requests=200)
    >>> table = hf.plan_table(ds)
    >>> table.loc[1, "layout"], bool(table.loc[1, "capacity_req_s"] > 0)
    ('1x h100_sxm TP1 bf16 mb64 tok4096', True)
    """
    v = add_derived(verified_layouts(ds))
    q = json.loads(ds.attrs["plan"])["quantile"]
    pq = f"p{q * 100:g}"
    bound_names = [CAPACITY_BOUND_NAMES[c - 1] if c > 0 else "" for c in v.capacity_bound.values[:, 0].tolist()]
    table = pd.DataFrame(
        {
            "layout": v.label.values,
            "mode": v["mode"].values,
            "devices": v.plan_devices.values,
            "usd_per_hour": v.plan_cost_usd_per_hour.values,
            "bound_req_s": v.plan_bound_request_per_s.values,
            "capacity_req_s": v.capacity_request_per_s.mean("replicate").values,
            "binding": bound_names,
            "tok_s_per_device": v.output_token_per_s_per_device.mean("replicate").values,
            "tok_per_usd": v.output_token_per_usd.mean("replicate").values,
            "ttft_p50_ms": 1e3 * v.ttft_s.sel(quantile=0.5).mean("replicate").values,
            f"ttft_{pq}_ms": 1e3 * v.ttft_s.sel(quantile=q).mean("replicate").values,
            "tpot_p50_ms": 1e3 * v.tpot_s.sel(quantile=0.5).mean("replicate").values,
            f"tpot_{pq}_ms": 1e3 * v.tpot_s.sel(quantile=q).mean("replicate").values,
            "valid": v.valid.all("replicate").values,
            "candidate": v.candidate.values,
        },
        index=pd.Index(v.plan_verified_rank.values, name="rank"),
    )
    return table


def plan_front(ds: xr.Dataset) -> xr.DataArray:
    """Pareto mask over the verified layouts (:func:`verified_layouts` order): most capacity for the least cost
    (devices where a price is missing); invalid runs left off (:func:`hermes_fast.pareto`).

    Examples
    --------
    >>> import hermes_fast as hf
    >>> from hermes_fast.plan import plan_front
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 1}, tp=[1], pp=[1], dtypes=["bf16"],
    ...              max_batch_size=[64], max_batched_tokens=[4096], top_k=1, n_requests=200)
    >>> plan_front(ds).values.tolist()
    [True]
    """
    v = verified_layouts(ds)
    return pareto(v, minimize=[_cost_axis(v)], maximize=["capacity_request_per_s"])


def _cost_axis(v: xr.Dataset) -> str:
    return "plan_cost_usd_per_hour" if np.isfinite(v.plan_cost_usd_per_hour.values).all() else "plan_devices"


def plot_plan(ds: xr.Dataset, ax=None):
    """The verified layouts' simulated capacity against their cost (devices where a price is missing), the
    Pareto front joined and labelled with the layouts; invalid runs hollow and grey.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import hermes_fast as hf
    >>> from hermes_fast.plan import plot_plan
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 1}, tp=[1], pp=[1], dtypes=["bf16"],
    ...              max_batch_size=[64], max_batched_tokens=[4096], top_k=1, n_requests=200)
    >>> plot_plan(ds).get_xlabel()
    'layout cost [USD/h]'
    """
    v = verified_layouts(ds)
    mask = pareto(v, minimize=[_cost_axis(v)], maximize=["capacity_request_per_s"])
    named = v.assign_coords(candidate=v.label.values)
    mask = mask.assign_coords(candidate=v.label.values)
    return plot.pareto_front(named, _cost_axis(v), "capacity_request_per_s", mask=mask, ax=ax)
