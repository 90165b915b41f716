"""Config fuzzer for hermes_fast: mutated example scenarios and sweep files, bad flags and bad output paths.

Every ``examples/*.yaml``, ``examples/sweeps/*.yaml`` and the embedded default scenario is mutated (keys deleted,
wrong types, 0, negative, huge, NaN/inf, empty values, unicode, long strings, duplicated keys, deep nesting, list
and scalar swapped, unknown enum values, dangling engine/link/tier names, extreme but valid combinations, bad
traces and CSV lengths, bad stacks) and run through the Python API (``hf.simulate``, ``hf.estimate``,
``hf.capacity_search``, ``hf.sweep``/``hf.sweep_file`` with and without a store, damaged stores) and the command
line (``hermes-fast run/estimate/capacity/sweep/plot/presets``), each in a subprocess with a timeout.

Each case's outcome is one of

- ``OK``: a Dataset whose values are finite where they should be and consistent (or honestly flagged invalid,
  with warnings);
- ``CLEAN_ERROR``: one ``ConfigError`` line naming a path or flag, the value and what is expected (exit code 2 on
  the command line, no traceback);
- ``UNCLEAR_ERROR``: an error without a traceback that is not such a line (a raw errno, exit code 1, ...);
- ``TRACEBACK``: any other exception, or a traceback on stderr;
- ``HANG``: over the time limit;
- ``SILENT_WRONG``: a result with NaN/inf or negative values where a value is expected and the point is not
  flagged invalid, or numbers that cannot be (completed > arrived, throughput above the arrival rate, ...);
- ``LOST_DATA``: an output or sweep store that is missing, unreadable or changed after an error or a resume.

Usage::

    python benchmarks/fuzz_configs.py --cases 300 --seed 1          # summary table and reproducers
    python benchmarks/fuzz_configs.py --seed 1 --only 17,42 -v      # rerun two cases, with details

Run from the repository root (or with hermes_fast importable). Reproducers (mutated files and the command or
Python call) are kept under ``--keep`` (default: a folder in the system's temporary directory) for failures only.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hermes_fast.config.files import load_yaml  # noqa: E402  (the example files parse as the project parses them)

CODE = ROOT  # the hermes_fast checkout the cases run against (--code): another one compares before and after
CLASSES = ("OK", "CLEAN_ERROR", "UNCLEAR_ERROR", "TRACEBACK", "HANG", "SILENT_WRONG", "LOST_DATA")
FAILURES = ("UNCLEAR_ERROR", "TRACEBACK", "HANG", "SILENT_WRONG", "LOST_DATA")
MEMORY_LIMIT_BYTES = 6 << 30  # per worker process (address space): a case that needs more is a finding


# ----------------------------------------------------------------------------------------------------------------
# YAML text with NaN/inf, long strings and unicode kept readable


class _Dumper(yaml.SafeDumper):
    pass


def _float_repr(dumper, value):
    if math.isnan(value):
        text = ".nan"
    elif math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e", 1)
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_Dumper.add_representer(float, _float_repr)


def dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 20)


# ----------------------------------------------------------------------------------------------------------------
# bases


def load_bases() -> dict[str, dict]:
    """name -> {kind: scenario|sweep, data: mapping, path}."""
    bases = {}
    default = ROOT / "hermes_fast" / "scenarios" / "default.yaml"
    for path in [default, *sorted((ROOT / "examples").glob("*.yaml"))]:
        bases[path.stem if path != default else "default"] = {
            "kind": "scenario",
            "data": load_yaml(path),
            "path": path,
        }
    for path in sorted((ROOT / "examples" / "sweeps").glob("*.yaml")):
        data = load_yaml(path)
        if isinstance(data.get("scenario"), str):
            data["scenario"] = str((path.parent / data["scenario"]).resolve())
        bases["sweeps/" + path.stem] = {"kind": "sweep", "data": data, "path": path}
    return bases


def catalog_contexts() -> dict[str, int]:
    models = load_yaml(ROOT / "hermes_fast" / "catalog" / "models.yaml")
    return {k: v["max_context_tokens"] for k, v in models.items() if isinstance(v, dict) and "max_context_tokens" in v}


STACKS = ("vllm", "sglang", "trtllm", "ideal")
ENUM_KEYS = {
    "policy": ("static", "continuous", "chunked", "mixed"),
    "scheduler": ("round_robin", "random", "least_outstanding", "least_kv", "shared_queue"),
    "process": ("poisson", "gamma", "deterministic", "mmpp", "sinusoid", "trace", "closed"),
    "dist": ("fixed", "uniform", "normal", "lognormal", "exponential", "zipf", "empirical"),
    "kind": ("embed", "retrieve", "rerank", "kv_retrieve", "prefill", "reason", "decode", "route", "postprocess"),
    "rule": ("probability", "length", "class"),
    "pairing": ("global", "local"),
    "preemption": ("recompute", "swap"),
    "type": ("flat", "ivf_flat", "ivf_pq", "hnsw"),
    "stack": STACKS,
    "weight": ("bf16", "fp8", "fp4", "int4", "fp32"),
    "activation": ("bf16", "fp8", "fp4", "int8"),
    "kv": ("bf16", "fp8", "int4"),
    "gemm_scaling": ("tensor", "block"),
    "device": ("h100_sxm", "h200_sxm", "b200", "mi300x", "tpu_v5e", "xeon_8480p", "grace_cpu", "hbm_pim"),
    "model": ("llama-3.1-8b", "llama-3.1-70b", "deepseek-v3", "e5-base", "qwen3-0.6b", "mixtral-8x7b"),
    "tier": ("host_dram_ddr5", "cxl_memory_expander", "remote_rdma_pool", "nvme_gen5_ssd"),
}
REFERENCE_KEYS = {
    "engine",
    "prefill_engine",
    "decode_engine",
    "reward_engine",
    "link",
    "memory_link",
    "tier",
    "device",
    "model",
    "stack",
}

WEIRD_VALUES = [
    ("zero", 0),
    ("zero_float", 0.0),
    ("minus_one", -1),
    ("negative", -1e9),
    ("huge_float", 1e308),
    ("two_pow_63", 2**63),
    ("ten_pow_12", 10**12),
    ("tiny", 1e-300),
    ("tiny_rate", 1e-9),
    ("nan", math.nan),
    ("inf", math.inf),
    ("minus_inf", -math.inf),
    ("empty_string", ""),
    ("empty_list", []),
    ("empty_mapping", {}),
    ("null", None),
    ("true", True),
    ("string", "abc"),
    ("numeric_string", "10"),
    ("unicode", "ünïcødé✓🚀模型"),
    ("long_string", "x" * 100_000),
    ("half", 1.5),
    ("odd", 3),
    ("two_pow_31", 2**31),
    ("minus_zero", -0.0),
    ("mapping", {"a": 1}),
    ("list_of_numbers", [1, 2, 3]),
]


# ----------------------------------------------------------------------------------------------------------------
# tree helpers


def nodes(data, path=""):
    """(parent, key, dotted path) of every node below ``data``."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{path}.{k}" if path else str(k)
            out.append((data, k, p))
            out += nodes(v, p)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            p = f"{path}[{i}]"
            out.append((data, i, p))
            out += nodes(v, p)
    return out


def scenario_of(case_data: dict, kind: str):
    """The scenario mapping inside a case's data (a sweep's inline scenario), or None."""
    if kind == "scenario":
        return case_data
    sc = case_data.get("scenario")
    return sc if isinstance(sc, dict) else None


def engines_of(sc) -> list[dict]:
    if not isinstance(sc, dict) or not isinstance(sc.get("engines"), list):
        return []
    return [e for e in sc["engines"] if isinstance(e, dict)]


def workload_of(sc) -> dict:
    w = sc.setdefault("workload", {})
    if not isinstance(w, dict):
        sc["workload"] = w = {}
    return w


def classes_of(sc) -> list[dict]:
    w = workload_of(sc)
    cls = w.get("classes")
    if not isinstance(cls, list) or not cls:
        w["classes"] = cls = [
            {"prompt_tokens": w.get("prompt_tokens", 1024), "output_tokens": w.get("output_tokens", 256)}
        ]
    return [c for c in cls if isinstance(c, dict)]


def serving_engine_names(sc) -> list[str]:
    sv = sc.get("serving") or {}
    names = [sv.get(k) for k in ("engine", "prefill_engine", "decode_engine") if isinstance(sv, dict) and sv.get(k)]
    if not names and engines_of(sc):
        names = [engines_of(sc)[0].get("name", "engine")]
    return names


# ----------------------------------------------------------------------------------------------------------------
# mutators: each (rng, data, ctx) -> description, changing ``data`` in place (ctx: kind, files, n, contexts)


def m_delete(rng, data, ctx):
    ns = nodes(data)
    if not ns:
        return "nothing to delete"
    parent, key, path = rng.choice(ns)
    del parent[key]
    return f"delete {path}"


def m_weird_value(rng, data, ctx):
    ns = nodes(data)
    if not ns:
        return "no node"
    parent, key, path = rng.choice(ns)
    name, value = rng.choice(WEIRD_VALUES)
    parent[key] = copy.deepcopy(value)
    return f"{path} = {name}"


def m_numeric_extreme(rng, data, ctx):
    ns = [(p, k, path) for p, k, path in nodes(data) if isinstance(p[k], (int, float)) and not isinstance(p[k], bool)]
    if not ns:
        return m_weird_value(rng, data, ctx)
    parent, key, path = rng.choice(ns)
    old = parent[key]
    name, value = rng.choice(
        [
            ("zero", 0),
            ("negative", -abs(old) or -1),
            ("huge", 1e308),
            ("2^63", 2**63),
            ("1e12", 10**12),
            ("nan", math.nan),
            ("inf", math.inf),
            ("tiny", 1e-300),
            ("x1e6", old * 1e6),
            ("fraction", old + 0.5),
            ("one", 1),
            ("max_int64", 2**63 - 1),
            ("1e9", 10**9),
            ("1e9+1", 10**9 + 1),
        ]
    )
    parent[key] = value
    return f"{path} = {name} (was {old!r})"


def m_swap_list_scalar(rng, data, ctx):
    ns = nodes(data)
    if not ns:
        return "no node"
    parent, key, path = rng.choice(ns)
    v = parent[key]
    if isinstance(v, list):
        parent[key] = v[0] if v else None
        return f"{path}: list -> its first element"
    if isinstance(v, dict):
        parent[key] = [v]
        return f"{path}: mapping -> [mapping]"
    parent[key] = [v]
    return f"{path}: scalar -> [scalar]"


def m_unknown_enum(rng, data, ctx):
    ns = [(p, k, path) for p, k, path in nodes(data) if k in ENUM_KEYS and isinstance(p[k], str)]
    if not ns:
        return m_unknown_key(rng, data, ctx)
    parent, key, path = rng.choice(ns)
    old = parent[key]
    parent[key] = rng.choice(["bogus", old.upper(), old[:-1] or "x", old + " ", "", "null", old.replace("_", "-")])
    return f"{path} = {parent[key]!r} (was {old!r})"


def m_other_enum(rng, data, ctx):
    """A valid but different choice of an enum field (a different policy, process, device, model...)."""
    ns = [(p, k, path) for p, k, path in nodes(data) if k in ENUM_KEYS and isinstance(p[k], str)]
    if not ns:
        return m_weird_value(rng, data, ctx)
    parent, key, path = rng.choice(ns)
    old = parent[key]
    parent[key] = rng.choice(ENUM_KEYS[key])
    return f"{path} = {parent[key]!r} (was {old!r})"


def m_unknown_key(rng, data, ctx):
    ns = [(p, k, path) for p, k, path in nodes(data) if isinstance(p[k], dict)]
    target, path = (data, "<root>") if not ns or rng.random() < 0.3 else (lambda t: (t[0][t[1]], t[2]))(rng.choice(ns))
    keys = list(target)
    if keys and rng.random() < 0.6:
        k = rng.choice(keys)
        new = k[:-1] + k[-1] * 2 if isinstance(k, str) and k else "bogus"
    else:
        new = rng.choice(["bogus", "ünïcødé", "x" * 5000, "1", ""])
    target[new] = 1
    return f"{path}: add unknown key {new[:30]!r}"


def m_dangling_name(rng, data, ctx):
    ns = [(p, k, path) for p, k, path in nodes(data) if k in REFERENCE_KEYS and isinstance(p[k], str)]
    if ns and rng.random() < 0.6:
        parent, key, path = rng.choice(ns)
        old = parent[key]
        parent[key] = rng.choice(["nonexistent", old + "x", old.upper(), ""])
        return f"{path} = {parent[key]!r} (was {old!r})"
    sc = scenario_of(data, ctx["kind"])
    engines = engines_of(sc)
    if sc is not None and len(engines) >= 2 and rng.random() < 0.5:
        engines[1]["name"] = engines[0].get("name", "engine")
        return "engines[1].name = engines[0].name (duplicate)"
    if sc is not None and engines:
        e = rng.choice(engines)
        old = e.get("name", "engine")
        e["name"] = old + "-renamed"
        return f"rename engine {old!r} (its references dangle)"
    if sc is not None and isinstance(sc.get("links"), list) and sc["links"]:
        sc["links"][0]["name"] = "renamed-link"
        return "rename links[0] (its references dangle)"
    return m_unknown_key(rng, data, ctx)


def m_route_bad(rng, data, ctx):
    sc = scenario_of(data, ctx["kind"])
    if sc is None or not engines_of(sc):
        return m_weird_value(rng, data, ctx)
    names = [e.get("name", "engine") for e in engines_of(sc)]
    variant = rng.choice(
        [
            "weights_zero",
            "weights_neg",
            "weights_len",
            "threshold_unsorted",
            "class_targets",
            "targets_empty",
            "routed_no_route",
            "target_dup",
        ]
    )
    route = {"kind": "route", "latency_s": 0.001, "targets": names[:2] or names}
    if variant == "weights_zero":
        route.update(weights=[0.0] * len(route["targets"]))
    elif variant == "weights_neg":
        route.update(weights=[-1.0] + [1.0] * (len(route["targets"]) - 1))
    elif variant == "weights_len":
        route.update(weights=[1.0] * (len(route["targets"]) + 1))
    elif variant == "threshold_unsorted":
        route.update(rule="length", threshold_tokens=[2000, 1000][: max(len(route["targets"]) - 1, 1)])
    elif variant == "class_targets":
        route.update(rule="class", class_targets={"nonexistent": names[0]})
    elif variant == "targets_empty":
        route.update(targets=[])
    elif variant == "target_dup":
        route.update(targets=[names[0], names[0]])
    pipeline = [route, {"kind": "prefill", "engine": "routed"}, {"kind": "decode", "engine": "routed"}]
    if variant == "routed_no_route":
        pipeline = pipeline[1:]
    classes_of(sc)[0]["pipeline"] = pipeline
    return f"route stage: {variant}"


def m_duplicate_key(rng, data, ctx):
    text = dump(data)
    lines = text.splitlines()
    keyed = [i for i, line in enumerate(lines) if ":" in line and not line.lstrip().startswith("-")]
    if not keyed:
        return "no key line"
    i = rng.choice(keyed)
    ctx["text"] = "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1 :]) + "\n"
    return f"duplicate the key on line {i + 1}: {lines[i].strip()[:40]!r}"


def m_deep_nesting(rng, data, ctx):
    depth = rng.choice([63, 65, 200, 5000, 100_000])
    style = rng.choice(["flow_list", "flow_map", "block"])
    if style == "flow_list":
        deep = "[" * depth + "1" + "]" * depth
    elif style == "flow_map":
        deep = "{a: " * depth + "1" + "}" * depth
    else:
        depth = min(depth, 3000)
        deep = "\n" + "\n".join("  " * (i + 1) + "a:" for i in range(depth)) + " 1"
    key = rng.choice(["description", "workload", "bogus", "engines"])
    text = dump({k: v for k, v in data.items() if k != key}) if isinstance(data, dict) else ""
    ctx["text"] = text + f"{key}: {deep}\n"
    return f"{key}: {style} nested {depth} levels"


def m_yaml_garbage(rng, data, ctx):
    variant = rng.choice(
        [
            "empty",
            "comments",
            "top_list",
            "top_scalar",
            "unclosed",
            "tab",
            "nul",
            "bom",
            "latin1",
            "billion_laughs",
            "recursive_alias",
            "directive",
            "huge_number",
            "merge_key",
            "tagged",
        ]
    )
    text = dump(data)
    if variant == "empty":
        ctx["text"] = ""
    elif variant == "comments":
        ctx["text"] = "# nothing here\n# at all\n"
    elif variant == "top_list":
        ctx["text"] = dump([data])
    elif variant == "top_scalar":
        ctx["text"] = "42\n"
    elif variant == "unclosed":
        ctx["text"] = text + "bogus: [1, 2\n"
    elif variant == "tab":
        ctx["text"] = text + "serving:\n\tengine: x\n"
    elif variant == "nul":
        ctx["bytes"] = text.encode() + b"\x00\x01\x02"
    elif variant == "bom":
        ctx["bytes"] = b"\xef\xbb\xbf" + text.encode()
    elif variant == "latin1":
        ctx["bytes"] = text.encode() + "description: caf\xe9\n".encode("latin-1")
    elif variant == "billion_laughs":
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [
            f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
            f"*a{i - 1}, *a{i - 1}, *a{i - 1}]"
            for i in range(1, 9)
        ]
        ctx["text"] = (
            "description: x\n"
            + "\n".join(f"  {ln}" for ln in [])
            + text
            + "bogus:\n"
            + "\n".join("  " + ln for ln in lines)
            + "\n"
        )
    elif variant == "recursive_alias":
        ctx["text"] = text + "bogus: &r [*r]\n"
    elif variant == "directive":
        ctx["text"] = "%YAML 9.9\n---\n" + text
    elif variant == "huge_number":
        ctx["text"] = text + "description: " + "9" * 5000 + "\n" if "description" not in text else text + "x9: 1e999\n"
        if "rate_per_s" in text:
            ctx["text"] = text.replace("rate_per_s: ", "rate_per_s: 1" + "0" * 400 + " #", 1)
    elif variant == "merge_key":
        ctx["text"] = "base: &b {name: x}\n" + text + "other:\n  <<: *b\n"
    elif variant == "tagged":
        ctx["text"] = text + "bogus: !!python/object/apply:os.system ['echo pwned']\n"
    return f"YAML text: {variant}"


def _context(ctx, model: str | None) -> int:
    return ctx["contexts"].get(model or "", 131072)


def m_extreme(rng, data, ctx):
    """Extreme but valid settings (and a few just over the edge)."""
    sc = scenario_of(data, ctx["kind"])
    if sc is None or not engines_of(sc):
        return m_numeric_extreme(rng, data, ctx)
    engines = engines_of(sc)
    e = rng.choice(engines)
    ename = e.get("name", "engine")
    w = workload_of(sc)
    n = ctx["n"]
    which = rng.choice(
        [
            "memory_utilization",
            "replicas",
            "rate",
            "max_batch_size",
            "block_size",
            "context_limit",
            "horizon",
            "warmup",
            "closed",
            "max_concurrency",
            "think_time",
            "stack",
            "scenario_stack",
            "gamma_cv",
            "mmpp",
            "sinusoid",
            "lengths",
            "chunk",
            "max_batched_tokens",
            "fixed_step",
            "slo",
            "queue",
            "tp",
            "dtypes",
            "swap",
            "device_override",
            "model_override",
            "reason",
            "retrieve",
            "kv_tiers",
            "disaggregated",
            "scheduler",
            "trace",
            "empirical",
            "policy",
        ]
    )
    serving = sc.setdefault("serving", {}) if isinstance(sc.get("serving", {}), dict) else {}
    if which == "memory_utilization":
        v = rng.choice([1e-6, 0.01, 0.05, 0.3, 1.0])
        e["memory_utilization"] = v
        return f"engines[{ename}].memory_utilization = {v}"
    if which == "replicas":
        v = rng.choice([1, 1000, 65536])
        e["replicas"] = v
        return f"engines[{ename}].replicas = {v}"
    if which == "rate":
        v = rng.choice([1e-9, 1e-3, 1e6, 1e9])
        w["rate_per_s"] = v
        return f"workload.rate_per_s = {v}"
    if which == "max_batch_size":
        v = rng.choice([1, 2, 65536])
        e.setdefault("batching", {})["max_batch_size"] = v
        return f"engines[{ename}].batching.max_batch_size = {v}"
    if which == "block_size":
        v = rng.choice([1, 7, 1 << 20])
        e.setdefault("batching", {})["block_size_tokens"] = v
        return f"engines[{ename}].batching.block_size_tokens = {v}"
    if which == "context_limit":
        ctx_tokens = _context(ctx, e.get("model"))
        out = rng.choice([1, 16, 256])
        prompt = rng.choice([ctx_tokens - out, ctx_tokens - out + 1, ctx_tokens, ctx_tokens // 2])
        w["prompt_tokens"], w["output_tokens"] = max(prompt, 1), out
        for c in classes_of(sc):
            c["prompt_tokens"], c["output_tokens"] = max(prompt, 1), out
        return f"every prompt {prompt} + output {out} tokens (context {ctx_tokens})"
    if which == "horizon":
        v = rng.choice([1e-9, 1e-3, 1.0, 1e12])
        serving["horizon_s"] = v
        return f"serving.horizon_s = {v}"
    if which == "warmup":
        v = rng.choice([n - 1, n, n + 1, max(n // 2, 0)])
        serving["warmup_requests"] = max(v, 0)
        return f"serving.warmup_requests = {max(v, 0)} (n_requests {n})"
    if which == "closed":
        conc = rng.choice([1, 2, 10**6, 10**7, 10**7 + 1])
        think = rng.choice([0.0, 1e-9, 1.0, 1e9])
        w["arrival"] = {
            "process": "closed",
            "concurrency": conc,
            "think_time_s": think,
            "think_time_cv": rng.choice([0.0, 1.0, 100.0]),
        }
        return f"closed loop: concurrency {conc}, think {think} s"
    if which == "max_concurrency":
        v = rng.choice([1, 2, 10**7])
        arr = w.get("arrival") if isinstance(w.get("arrival"), dict) else {}
        arr.pop("concurrency", None)
        if arr.get("process") == "closed":
            arr["process"] = "poisson"
        arr["max_concurrency"] = v
        w["arrival"] = arr
        return f"workload.arrival.max_concurrency = {v}"
    if which == "think_time":
        w["arrival"] = {
            "process": "closed",
            "concurrency": rng.choice([1, 8]),
            "think_time_s": rng.choice([0.0, 1e6, 1e300]),
            "think_time_cv": rng.choice([0.0, 1e-300, 100]),
        }
        return f"closed loop think time {w['arrival']}"
    if which == "stack":
        v = rng.choice([*STACKS, "VLLM", "bogus", ""])
        for x in engines:
            x["stack"] = v
        return f"every engine's stack = {v!r}"
    if which == "scenario_stack":
        variant = rng.choice(
            [
                {"base": "vllm", "cuda_graph_sizes": [4, 2]},
                {"base": "vllm", "cuda_graph_sizes": list(range(1, 70))},
                {"base": "nonexistent"},
                {"base": "sglang", "admission": "new_token_ratio", "new_token_ratio": 0.0},
                {"base": "sglang", "new_token_ratio": 1.0},
                {"base": "trtllm", "admission": "bogus"},
                {"name": "mine"},
                {"base": "vllm", "memory_utilization": 1e-6},
                {"base": "vllm", "max_batched_tokens": 1, "policy": "continuous"},
                {"base": "vllm", "frontend_s": 60, "step_overhead_s": 10},
                {"base": "vllm", "cuda_graph_sizes": [1, 65536], "cuda_graph_padding": True},
                {"base": "vllm", "bogus": 1},
                {"base": "ideal", "eager_launch_s_per_layer": 1.0},
                {"base": "vllm", "chunk_size": 1, "policy": "chunked"},
                [1, 2],
                "vllm",
            ]
        )
        sc["stacks"] = {"mine": copy.deepcopy(variant)}
        e["stack"] = "mine"
        return f"stacks.mine = {variant!r:.120} on engine {ename}"
    if which == "gamma_cv":
        v = rng.choice([1e-300, 1e-9, 100.0])
        w["arrival"] = {"process": "gamma", "cv": v}
        return f"gamma arrivals cv {v}"
    if which == "mmpp":
        arr = {
            "process": "mmpp",
            "burst_factor": rng.choice([1.0000001, 9.99, 1e6]),
            "burst_mean_s": rng.choice([1e-9, 1.0, 1e9]),
            "calm_mean_s": rng.choice([1e-9, 9.0, 1e12]),
        }
        w["arrival"] = arr
        return f"mmpp {arr}"
    if which == "sinusoid":
        arr = {"process": "sinusoid", "amplitude": rng.choice([0.0, 1.0]), "period_s": rng.choice([1e-9, 1e12])}
        w["arrival"] = arr
        return f"sinusoid {arr}"
    if which == "lengths":
        law = rng.choice(
            [
                {"dist": "lognormal", "mean": 1000, "cv": 100},
                {"dist": "lognormal", "mean": 1e9, "cv": 100},
                {"dist": "lognormal", "mean": 1.0, "cv": 1e-6, "min": 1, "max": 1},
                {"dist": "normal", "mean": 1, "std": 1e9},
                {"dist": "normal", "mean": 100, "std": 1e-4, "min": 100, "max": 100},
                {"dist": "normal", "mean": 1e9, "std": 1e9, "max": 1000000000},
                {"dist": "normal", "mean": 10, "std": 1e-3, "min": 10, "max": 11},
                {"dist": "exponential", "mean": 1e9},
                {"dist": "exponential", "mean": 1e-300},
                {"dist": "zipf", "alpha": 1e-3, "max": 50_000_000},
                {"dist": "zipf", "alpha": 100, "max": 10},
                {"dist": "uniform", "min": 7, "max": 7},
                {"dist": "uniform", "min": 1, "max": 1000000000},
                {"dist": "fixed", "value": 1000000000},
                {"dist": "normal", "mean": 500, "cv": 1e-7},
                {"dist": "lognormal", "mean": 500, "std": 1e-300},
            ]
        )
        key = rng.choice(["prompt_tokens", "output_tokens"])
        for c in classes_of(sc):
            c[key] = copy.deepcopy(law)
        return f"every class's {key} = {law}"
    if which == "chunk":
        v = rng.choice([1, 2, 10**9])
        e.setdefault("batching", {}).update(policy="chunked", chunk_size=v)
        return f"engines[{ename}] chunked, chunk_size {v}"
    if which == "max_batched_tokens":
        v = rng.choice([1, 16, 10**9])
        e["max_batched_tokens"] = v
        return f"engines[{ename}].max_batched_tokens = {v}"
    if which == "fixed_step":
        v = rng.choice([1e-300, 1e-12, 1e6])
        e["fixed_step_time_s"] = v
        return f"engines[{ename}].fixed_step_time_s = {v}"
    if which == "slo":
        slo = {"ttft_s": rng.choice([1e-300, 1e300]), "tpot_s": rng.choice([1e-300, 1e300])}
        serving["slo"] = slo
        return f"serving.slo = {slo}"
    if which == "queue":
        v = rng.choice([1, 2])
        e.setdefault("batching", {})["max_queue_requests"] = v
        return f"engines[{ename}].batching.max_queue_requests = {v}"
    if which == "tp":
        tp, pp, ep = rng.choice([(65536, 1, 1), (8, 8, 1), (16, 1, 16), (2, 64, 2), (1, 80, 1), (3, 1, 1)])
        e["parallel"] = {"tp": tp, "pp": pp, "ep": ep}
        return f"engines[{ename}].parallel = tp {tp} pp {pp} ep {ep}"
    if which == "dtypes":
        d = {
            "weight": rng.choice(["fp4", "int4", "fp32", "fp8"]),
            "activation": rng.choice(["fp4", "int8", "fp32"]),
            "kv": rng.choice(["int4", "fp4", "fp8"]),
            "gemm_scaling": rng.choice(["tensor", "block"]),
        }
        e["dtypes"] = d
        return f"engines[{ename}].dtypes = {d}"
    if which == "swap":
        e.setdefault("batching", {})["preemption"] = "swap"
        e["device"] = rng.choice(["xeon_8480p", "grace_cpu", "hbm_pim", "tpu_v5e"])
        e["memory_utilization"] = rng.choice([0.3, 0.95])
        return f"engines[{ename}] swaps on {e['device']}"
    if which == "device_override":
        dev = e.get("device", "h100_sxm")
        over = rng.choice(
            [
                {"power_idle_w": 5000.0, "power_peak_w": 1.0},
                {"memory_bytes": 1e6},
                {"memory_bandwidth_bytes_per_s": 1e3},
                {"price_usd_per_hour": 0.0},
                {"price_usd_per_hour": 1e300},
                {"peak_flop_per_s": {"bf16": 1e6}},
                {"scale_out": {"bandwidth_bytes_per_s": 1e3, "latency_s": 10}},
                {"efficiency": {"compute_efficiency": 1e-300}},
                {"efficiency": {"memory_efficiency": 1e-9, "gemm_overhead_s": 1.0}},
                {"host_link": None},
                {"base": "nonexistent"},
                {"base": dev},
            ]
        )
        sc.setdefault("devices", {})[dev] = copy.deepcopy(over)
        return f"devices.{dev} = {over}"
    if which == "model_override":
        model = e.get("model", "llama-3.1-8b")
        over = rng.choice(
            [
                {"max_context_tokens": 1},
                {"n_layers": 10000},
                {"vocab_size": 100000000},
                {"n_kv_heads": 1000},
                {"head_dim": 1, "hidden_size": 1},
                {"sliding_window_tokens": 1, "sliding_window_layers": 10000},
                {"moe": {"n_experts": 2, "top_k": 3, "expert_ffn_hidden_size": 1}},
                {"base": "nonexistent"},
                {"kind": "encoder"},
                {"has_lm_head": False},
            ]
        )
        sc.setdefault("models", {})[model] = copy.deepcopy(over)
        return f"models.{model} = {over}"
    if which == "reason":
        st = {
            "kind": "reason",
            "engine": ename,
            "thinking_tokens": rng.choice([1, 10**6, {"dist": "lognormal", "mean": 1e6, "cv": 10}]),
            "rounds": rng.choice([1, 1000]),
            "branches": rng.choice([1, 64]),
            "tool_latency_s": rng.choice([0.0, 1e9]),
            "tool_latency_cv": rng.choice([0.0, 1e6]),
            "tool_tokens": rng.choice([0, 10**9]),
        }
        classes_of(sc)[0]["pipeline"] = [{"kind": "prefill", "engine": ename}, st, {"kind": "decode", "engine": ename}]
        return f"reason stage {st}"
    if which == "retrieve":
        idx = {
            "type": rng.choice(["flat", "ivf_flat", "ivf_pq", "hnsw"]),
            "vectors": rng.choice([1, 1e12]),
            "dim": rng.choice([1, 65536]),
            "n_lists": rng.choice([1, 10**9]),
            "n_probe": rng.choice([1, 10**9]),
            "shards": rng.choice([1, 65536]),
        }
        st = {
            "kind": "retrieve",
            "device": rng.choice(["grace_cpu", "h100_sxm", "bogus"]),
            "index": idx,
            "top_k": rng.choice([1, 10**6]),
            "doc_tokens": rng.choice([1, 10**7]),
        }
        classes_of(sc)[0]["pipeline"] = [st, {"kind": "prefill", "engine": ename}, {"kind": "decode", "engine": ename}]
        return f"retrieve stage {st}"
    if which == "kv_tiers":
        tiers = [
            {
                "tier": rng.choice(ENUM_KEYS["tier"] + ("bogus",)),
                "hit_rate": rng.choice([0.0, 1.0, 0.5]),
                "capacity_bytes": rng.choice([1e-300, 1.0, 1e300]),
                "instances": rng.choice([1, 65536]),
            }
        ]
        st = {
            "kind": "kv_retrieve",
            "past_tokens": rng.choice([1, 10**9, {"dist": "uniform", "min": 1, "max": 10**6}]),
            "tiers": tiers,
            "distinct_prefixes": rng.choice([1, 1e308, 0.5]),
        }
        classes_of(sc)[0]["pipeline"] = [st, {"kind": "prefill", "engine": ename}, {"kind": "decode", "engine": ename}]
        return f"kv_retrieve stage {st}"
    if which == "disaggregated":
        other = rng.choice(engines)
        serving.pop("engine", None)
        serving.update(
            prefill_engine=ename,
            decode_engine=other.get("name", "engine"),
            pairing=rng.choice(["global", "local"]),
            kv_link={
                "name": "slow",
                "bandwidth_bytes_per_s": rng.choice([1e3, 1e12]),
                "latency_s": rng.choice([0.0, 10.0]),
            },
        )
        for c in classes_of(sc):
            c.pop("pipeline", None)
        return f"disaggregated {ename} -> {other.get('name')} ({serving['pairing']}, {serving['kv_link']})"
    if which == "scheduler":
        v = rng.choice(ENUM_KEYS["scheduler"])
        for x in engines:
            x["scheduler"] = v
            x["replicas"] = rng.choice([1, 3])
        return f"every engine scheduler {v}"
    if which == "policy":
        v = rng.choice(ENUM_KEYS["policy"])
        e.setdefault("batching", {})["policy"] = v
        return f"engines[{ename}].batching.policy = {v}"
    if which == "trace":
        rows = rng.choice(
            [
                ("negative", [(-5, 100, 10), (0, 100, 10), (1, 100, 10)]),
                ("unsorted", [(0, 100, 10), (5, 100, 10), (2, 100, 10)]),
                ("nan", [(0, 100, 10), ("nan", 100, 10)]),
                ("equal_times", [(1, 100, 10)] * 50),
                ("one_row", [(0, 100, 10)]),
                ("empty", []),
                ("zero_tokens", [(0, 0, 0), (1, 100, 10)]),
                ("negative_tokens", [(0, -5, 10), (1, 100, -3)]),
                ("huge_tokens", [(0, 10**12, 10), (1, 100, 10)]),
                ("text", [(0, "many", 10), (1, 100, 10)]),
                ("dates", [("2024-01-01T00:00:00", 100, 10), ("2024-01-01T00:00:01", 200, 10)]),
                ("bad_dates", [("2024-13-45", 100, 10), ("yesterday", 200, 10)]),
                ("ok", [(i * 0.1, 100 + i, 10 + i) for i in range(60)]),
                ("inf_time", [(0, 100, 10), ("inf", 100, 10)]),
                ("fractional_tokens", [(0, 100.5, 10.2), (1, 100, 10)]),
            ]
        )
        name, content = rows
        text = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{a},{b},{c}\n" for a, b, c in content)
        if name == "empty" and rng.random() < 0.5:
            text = ""
        ctx["files"]["trace.csv"] = text
        w["arrival"] = {
            "process": "trace",
            "trace": {
                "path": "@trace.csv",
                "rescale_to_rate": rng.random() < 0.5,
                "time_scale": rng.choice([1.0, 1e-300, 1e300]),
            },
        }
        return f"trace replay: {name} ({w['arrival']['trace']})"
    if which == "empirical":
        name, values = rng.choice(
            [
                ("empty", []),
                ("zeros", [0, 0, 0]),
                ("negative", [-5, 10]),
                ("huge", [10**12]),
                ("nan", ["nan", 5]),
                ("text", ["a", "b"]),
                ("floats", [1.5, 2.5]),
                ("ok", [10, 20, 30]),
                ("inf", ["inf", 3]),
            ]
        )
        ctx["files"]["lengths.csv"] = "n\n" + "".join(f"{v}\n" for v in values)
        key = rng.choice(["prompt_tokens", "output_tokens"])
        column = rng.choice(["n", "n", "missing"])
        for c in classes_of(sc):
            c[key] = {"dist": "empirical", "path": "@lengths.csv", "column": column}
        return f"every class's {key}: empirical CSV {name}, column {column}"
    return "no change"


def m_sweep_spec(rng, data, ctx):
    """Sweep-file fields and grids."""
    if ctx["kind"] != "sweep":
        return m_weird_value(rng, data, ctx)
    which = rng.choice(["grid", "grid", "capacity", "counts", "scenario"])
    if which == "grid":
        g = rng.choice(
            [
                {"workload.rate_per_s": []},
                {"workload.rate_per_s": [1, "x"]},
                {"workload.rate_per_s": [math.nan]},
                {"workload.rate_per_s": [1e-9, 1e9]},
                {"engines.nonexistent.replicas": [1]},
                {"engines[99].replicas": [1]},
                {"": [1]},
                {"workload.rate_per_s": 5},
                {"z": {"label": ["a"], "workload.rate_per_s": [1, 2]}},
                {"z": {"label": ["a", "b"]}},
                {"z": {"workload.rate_per_s": [1, 2], "serving.warmup_requests": [0]}},
                {"serving.warmup_requests": [0, 10**8]},
                {"a": {"workload.rate_per_s": [1, 2]}, "b": {"workload.rate_per_s": [3, 4]}},
                {"workload.rate_per_s": [1, 2], "workload": [1]},
                {"engines[0].batching.policy": ["continuous", "bogus"]},
                {"workload.rate_per_s": list(range(1, 3000))},
                {"engines[0].replicas": [1, 2], "engines.0.replicas": [3]},
                {"workload.classes[0].prompt_tokens": [{"dist": "lognormal", "mean": 100, "cv": 1e-300}]},
                {"workload.rate_per_s": [1, 1]},
                {"serving.slo.ttft_s": [0.1, 1.0], "serving.slo": [{"ttft_s": 1}]},
            ]
        )
        data["grid"] = copy.deepcopy(g)
        return f"grid = {g!r:.120}"
    if which == "capacity":
        cap = rng.choice(
            [
                {"ttft": {"quantile": 0.42, "max_s": 1.0}},
                {"ttft": {"quantile": 0.9, "max_s": 0.0}},
                {"ttft": {"quantile": 0.9, "max_s": math.nan}},
                {"rate_min_per_s": 10, "rate_max_per_s": 1, "ttft": {"max_s": 1.0}},
                {"rate_min_per_s": 1e-9, "rate_max_per_s": 1e9, "ttft": {"max_s": 1.0}, "rel_tol": 0.5},
                {},
                {"min_slo_attainment": 1.5},
                {"min_slo_attainment": 1.0, "rel_tol": 0.9},
                {"tpot": {"quantile": None, "max_s": 1e-300}},
                {"e2e": {"max_s": 1e300}, "rel_tol": 0.5},
            ]
        )
        data["capacity"] = copy.deepcopy(cap)
        data.get("grid", {}).pop("workload.rate_per_s", None) if isinstance(data.get("grid"), dict) else None
        return f"capacity = {cap}"
    if which == "counts":
        key = rng.choice(["n_requests", "replicates", "seed", "chunk_size"])
        data[key] = rng.choice([0, -1, 1, 2**63, 1.5, "x", None, 10**9])
        return f"{key} = {data[key]!r}"
    data["scenario"] = rng.choice([None, "nonexistent.yaml", "", 42, [1], {"engines": []}, "/etc/passwd", "/"])
    return f"scenario = {data['scenario']!r}"


MUTATORS = [
    (m_delete, 10),
    (m_weird_value, 14),
    (m_numeric_extreme, 12),
    (m_swap_list_scalar, 5),
    (m_unknown_enum, 6),
    (m_other_enum, 6),
    (m_unknown_key, 4),
    (m_dangling_name, 6),
    (m_route_bad, 3),
    (m_duplicate_key, 3),
    (m_deep_nesting, 3),
    (m_yaml_garbage, 5),
    (m_extreme, 45),
    (m_sweep_spec, 4),
]


# ----------------------------------------------------------------------------------------------------------------
# case generation


def _replace_at(data, files_dir: str):
    """'@name' file references -> paths in the case's folder."""
    if isinstance(data, dict):
        return {k: _replace_at(v, files_dir) for k, v in data.items()}
    if isinstance(data, list):
        return [_replace_at(v, files_dir) for v in data]
    if isinstance(data, str) and data.startswith("@"):
        return str(Path(files_dir) / data[1:])
    return data


CAPACITY_TARGETS = [
    {"ttft": {"quantile": 0.9, "max_s": 2.0}, "rate_min_per_s": 0.5, "rate_max_per_s": 64, "rel_tol": 0.25},
    {"tpot": {"quantile": 0.99, "max_s": 0.1}, "rate_min_per_s": 1, "rate_max_per_s": 1000, "rel_tol": 0.3},
    {"min_slo_attainment": 0.9, "rate_min_per_s": 0.1, "rate_max_per_s": 100, "rel_tol": 0.3},
    {
        "e2e": {"quantile": None, "max_s": 30},
        "allow_unstable": True,
        "rate_max_per_s": 1e9,
        "rate_min_per_s": 1e-9,
        "rel_tol": 0.5,
    },
    {"ttft": {"quantile": 0.5, "max_s": 1e-300}, "rate_max_per_s": 10, "rel_tol": 0.5},
    {"ttft": {"quantile": 0.42, "max_s": 1.0}},
    {"rate_min_per_s": 5, "rate_max_per_s": 5, "ttft": {"max_s": 1.0}},
    {},
]
API_GRIDS = [
    {"workload.rate_per_s": [1, 2]},
    {"engines[0].replicas": [1, 2]},
    {"engines[0].batching.policy": ["continuous", "chunked"]},
    {"engines.nonexistent.replicas": [1]},
    {"workload.rate_per_s": []},
    {"workload.rate_per_s": [1, None]},
    {"z": {"label": ["a", "b"], "workload.rate_per_s": [1, 2, 3]}},
    {"serving.warmup_requests": [0, 10**6]},
    {"engines[0].parallel.tp": [1, 3]},
    {"workload.rate_per_s": [math.inf]},
]


def make_case(seed: int, index: int, bases: dict, contexts: dict) -> dict:
    rng = random.Random(seed * 1_000_003 + index)
    family = rng.choices(["api", "cli", "store"], weights=[80, 15, 5])[0]
    if family == "store":
        return {
            "index": index,
            "family": "store",
            "op": "store",
            "base": "default",
            "damage": rng.choice(
                [
                    "delete_chunk",
                    "truncate_chunk",
                    "garbage_chunk",
                    "delete_meta",
                    "delete_done",
                    "delete_digest",
                    "stale_lock",
                    "live_lock",
                    "different_sweep",
                    "bad_grid",
                    "non_store_dir",
                    "file_as_store",
                    "interrupt",
                    "overwrite_other",
                ]
            ),
            "mutation": "",
            "files": {},
            "seed": rng.randrange(1000),
        }
    name = rng.choice(sorted(bases))
    base = bases[name]
    data = copy.deepcopy(base["data"])
    kind = base["kind"]
    if kind == "sweep" and rng.random() < 0.5 and isinstance(data.get("scenario"), str):
        data["scenario"] = load_yaml(Path(data["scenario"]))  # inline: mutations reach inside
    n = rng.choice([1, 2, 3, 41, 64, 64, 100, 200])
    sc = scenario_of(data, kind)
    serving = sc.get("serving") if isinstance(sc, dict) else None
    if isinstance(serving, dict) and serving.get("warmup_requests", 0) >= n:  # (else every run is refused)
        serving["warmup_requests"] = n // 4
    ctx = {"kind": kind, "files": {}, "n": n, "contexts": contexts}
    descriptions = []
    extreme_only = rng.random() < 0.35  # extreme but (mostly) valid settings only: results to check
    for _ in range(rng.choices([0, 1, 2, 3], weights=[3, 70, 20, 7])[0]):
        if extreme_only:
            mut = m_extreme
        else:
            mut = rng.choices([m for m, _ in MUTATORS], weights=[w for _, w in MUTATORS])[0]
        if "text" in ctx or "bytes" in ctx:
            break
        descriptions.append(mut(rng, data, ctx))
    case = {
        "index": index,
        "family": family,
        "base": name,
        "kind": kind,
        "data": data,
        "n": n,
        "mutation": "; ".join(descriptions) or "(none)",
        "files": ctx["files"],
        "text": ctx.get("text"),
        "bytes": ctx.get("bytes"),
        "seed": rng.randrange(1000),
    }
    if family == "api":
        if kind == "sweep":
            case["op"] = "sweep_file"
            case["store"] = rng.random() < 0.4
            case["n"] = rng.choice([10, 30, 50]) if "rate_policy" not in name else rng.choice([210, 240])
        else:
            case["op"] = rng.choices(["simulate", "estimate", "capacity", "sweep"], weights=[60, 22, 10, 8])[0]
            case["replicates"] = rng.choice([1, 1, 1, 2])
            if case["op"] == "capacity":
                case["targets"] = copy.deepcopy(rng.choice(CAPACITY_TARGETS))
                case["n"] = rng.choice([41, 100])
            if case["op"] == "sweep":
                case["grid"] = copy.deepcopy(rng.choice(API_GRIDS))
                case["store"] = rng.random() < 0.5
            if case["op"] == "estimate" and rng.random() < 0.3:
                case["grid"] = copy.deepcopy(
                    rng.choice(
                        [
                            {"tp": [1, 2]},
                            {"batch_size": [1, 0]},
                            {"dtype": ["bf16", "fp8"]},
                            {"device": ["bogus"]},
                            {"workload.rate_per_s": [1]},
                            {"engine": []},
                            {"prompt_tokens": [10**9]},
                            {"tp": "2"},
                        ]
                    )
                )
    else:
        case.update(cli_args(rng, case, kind))
    return case


BAD_OUTS = [
    "missing/sub/x.nc",
    "/proc/hermes_x.nc",
    ".",
    "x.txt",
    "x.jpgg",
    "file.txt/x.nc",
    "",
    "ü" * 300 + ".nc",
    "existing_dir.zarr",
    "sweep_store.zarr",
    "existing.nc",
    "x.NC",
    "x.json",
    "x.csv",
    "x.zarr",
    "x.nc",
]


def cli_args(rng, case, kind) -> dict:
    """A command line for the case (``{file}``, ``{dir}`` and ``{store}`` are filled in by the worker)."""
    if kind == "sweep":
        small = [5, 20, 40] if "rate_policy" not in case["base"] else [210]  # (its scenario's warm-up: 200)
        cmd = ["sweep", "{file}", "--requests", str(rng.choice(small)), "--no-progress"]
        if rng.random() < 0.7:
            cmd += [
                "--out",
                rng.choice(
                    [
                        "{dir}/s.zarr",
                        "{dir}/s.zarr",
                        "{dir}/missing/s.zarr",
                        "/proc/s.zarr",
                        "{dir}/file.txt",
                        "{dir}/existing_dir.zarr",
                        "{dir}/s.nc",
                    ]
                ),
            ]
        extra = rng.choice(
            [
                [],
                [],
                ["--chunk-size", rng.choice(["0", "-1", "1", "x", "1e9"])],
                ["--workers", rng.choice(["0", "-1", "x"])],
                ["--requests", "0"],
                ["--connect-timeout", "nan"],
                ["--overwrite"],
            ]
        )
        return {"op": "cli", "argv": cmd + extra}
    command = rng.choice(["run", "run", "run", "estimate", "capacity", "plot", "presets"])
    if command == "presets":
        return {
            "op": "cli",
            "argv": ["presets", rng.choice(["devices", "models", "stacks", "memory_tiers", "variables", "bogus", ""])]
            + (["--fields"] if rng.random() < 0.3 else []),
        }
    if command == "plot":
        argv = [
            "plot",
            rng.choice(["{store}", "{store}", "{dir}/missing.zarr", "{dir}/file.txt", "{dir}"]),
            "--kind",
            rng.choice(["pareto", "latency", "goodput", "breakdown", "cdf", "heatmap", "bogus"]),
            "--out",
            rng.choice(
                [
                    "{dir}/p.png",
                    "{dir}/p.svg",
                    "{dir}/p.jpgg",
                    "{dir}/missing/p.png",
                    "/proc/p.png",
                    "{dir}/p",
                    "{dir}/p.pdf",
                ]
            ),
        ]
        argv += rng.choice(
            [
                [],
                ["--hue", "workload.rate_per_s"],
                ["--hue", "bogus"],
                ["--x", "bogus"],
                ["--sel", "workload.rate_per_s=99"],
                ["--sel", "nodim"],
                ["--dpi", "0"],
                ["--dpi", "-5"],
                ["--var", "ttft_s", "--x", "workload.rate_per_s", "--y", "replicate"],
                ["--x", "ttft_s[quantile=0.42]"],
                ["--y", "e2e"],
            ]
        )
        return {"op": "cli", "argv": argv}
    argv = [command, "{file}"]
    if command in ("run", "capacity"):
        argv += ["--requests", rng.choice(["41", "64", "100", "0", "-5", "abc", "1e3", "100000000000"])]
    if command == "capacity":
        argv += rng.choice(
            [
                ["--ttft-p99", "2s"],
                ["--tpot-p99", "50ms"],
                ["--ttft-p99", "-1s"],
                ["--ttft-p99", "nan"],
                ["--ttft-p99", "abcms"],
                ["--target", "ttft:p42:1s"],
                ["--target", "bogus"],
                ["--min-slo-attainment", "2"],
                ["--e2e-p99", "0"],
                [],
            ]
        )
        argv += rng.choice(
            [
                ["--rate-max", "40", "--rel-tol", "0.3"],
                ["--rate-min", "50", "--rate-max", "5"],
                ["--rel-tol", "0"],
                ["--rate-max", "inf"],
                ["--rate", "3"],
                ["--rate-max", "20", "--rel-tol", "0.5"],
            ]
        )
    flags = rng.choice(
        [
            [],
            [],
            ["--seed", "-1"],
            ["--replicates", "0"],
            ["--tp", "0"],
            ["--tp", "3"],
            ["--rate", "nan"],
            ["--rate", "-1"],
            ["--rate", "inf"],
            ["--rate", "1e-9"],
            ["--model", "bogus"],
            ["--device", "bogus"],
            ["--policy", "bogus"],
            ["--policy", "chunked"],
            ["--replicas", "0"],
            ["--prompt-tokens", "0"],
            ["--prompt-tokens", "200000"],
            ["--output-tokens", "-3"],
            ["--calibration", "bogus"],
            ["--calibration", "none"],
            ["--model", "e5-base"],
            ["--grid", "tp="],
            ["--grid", "bogus=1"],
            ["--grid", "tp=1,2", "--grid", "tp=4"],
            ["--bogus-flag"],
        ]
    )
    argv += flags
    if rng.random() < 0.5:
        out = rng.choice(BAD_OUTS)
        argv += ["--out", out if out.startswith("/") or not out else "{dir}/" + out]
    return {"op": "cli", "argv": argv}


# ----------------------------------------------------------------------------------------------------------------
# the worker: runs cases in-process (hermes_fast imported once) and classifies them


def _finite(a):
    import numpy as np

    return np.isfinite(np.asarray(a, dtype=float))


def _is_code(da) -> bool:
    """A flag or code variable (decode_bound, invalid_reason, capacity_bound): its values are names, not amounts."""
    return any(k in da.attrs for k in ("flag_values", "flag_masks", "flag_meanings"))


def check_simulation(ds, rate: float | None = None) -> list[str]:
    """Problems with a simulate / capacity / sweep Dataset (empty: consistent)."""
    import numpy as np
    import xarray as xr

    problems = []
    if "valid" not in ds:
        return ["no valid variable"]
    computed = ds["computed"] if "computed" in ds else xr.ones_like(ds.valid, dtype=bool)
    valid = ds.valid & computed
    arrived, completed = ds.arrived_requests, ds.completed_requests
    lost = {k: ds[f"{k}_requests"] for k in ("rejected", "dropped", "unfinished")}
    where = computed.broadcast_like(arrived)
    total = completed + lost["rejected"] + lost["dropped"] + lost["unfinished"]
    if bool(((total != arrived) & where).any()):
        problems.append("completed + rejected + dropped + unfinished != arrived")
    if bool(((completed > arrived) & where).any()):
        problems.append("completed > arrived")
    for name in (
        "arrived_requests",
        "completed_requests",
        "rejected_requests",
        "dropped_requests",
        "unfinished_requests",
        "preempted_requests",
    ):
        if name in ds and bool(((ds[name] < 0) & where).any()):
            problems.append(f"{name} < 0")
    # validity recomputed from the counts
    share = lambda k: lost[k] / arrived.where(arrived > 0, 1)  # noqa: E731
    expect = ~ds.unstable & (completed > 0)
    for k in lost:
        expect = expect & (share(k) <= 0.001)
    if bool(((valid != expect) & where).any()):
        problems.append("valid disagrees with unstable/rejected/dropped/unfinished/completed")
    # no infinities, no negatives (a few variables may be negative or infinite by design)
    for name, da in ds.data_vars.items():
        if not np.issubdtype(da.dtype, np.number) or da.dtype == bool or _is_code(da):
            continue
        values = da.where(computed) if set(computed.dims) <= set(da.dims) else da
        v = np.asarray(values, dtype=float)
        if name not in ("overload_statistic",) and np.isinf(v).any():
            problems.append(f"{name} has inf")
        if name not in ("backlog_growth_request_per_s", "overload_statistic") and (v < 0).any():
            problems.append(f"{name} < 0 (min {np.nanmin(v):.3g})")
    # values expected where the result claims valid
    vmask = valid.values if valid.ndim else np.array(bool(valid))
    if vmask.any():

        def at_valid(name):
            da = ds[name]
            m = valid.broadcast_like(da) if set(valid.dims) <= set(da.dims) else None
            if m is None:
                return np.asarray(da, dtype=float)
            return np.asarray(da.where(m), dtype=float)[np.asarray(m, dtype=bool)]

        for name in (
            "ttft_s",
            "e2e_s",
            "queue_s",
            "ttft_mean_s",
            "e2e_mean_s",
            "throughput_request_per_s",
            "throughput_input_token_per_s",
            "throughput_output_token_per_s",
            "goodput_request_per_s",
            "slo_attainment",
            "energy_j_per_token",
            "duration_s",
        ):
            if name in ds:
                x = at_valid(name)
                if x.size and not np.isfinite(x).all():
                    problems.append(f"{name} not finite at a valid point")
        for name in ("throughput_request_per_s", "duration_s", "e2e_mean_s"):
            if name in ds:
                x = at_valid(name)
                if x.size and (x <= 0).any():
                    problems.append(f"{name} <= 0 at a valid point")
        # TPOT: defined as soon as some answers have more than one token
        if "tpot_s" in ds:
            per_req = at_valid("throughput_output_token_per_s") / at_valid("throughput_request_per_s")
            t = at_valid("tpot_mean_s")
            if np.any((per_req > 1.5) & ~np.isfinite(t)):
                problems.append("tpot_mean_s NaN at a valid point with multi-token answers")
    # ranges
    for name, hi in (
        ("slo_attainment", 1.0),
        ("busy_fraction", 1.0),
        ("kv_occupancy", 1.0),
        ("rejected_fraction", 1.0),
        ("unfinished_fraction", 1.0),
        ("dropped_fraction", 1.0),
    ):
        if name in ds:
            v = np.asarray(ds[name], dtype=float)
            if np.any(v > hi * (1 + 1e-9) + 1e-12):
                problems.append(f"{name} > {hi} (max {np.nanmax(v):.6g})")
    said = " ".join(ds.attrs.get("warnings", []))
    for name in ("mfu", "mbu"):
        if name in ds:
            v = np.asarray(ds[name], dtype=float)
            if np.any(v > 1 + 1e-6) and name.upper() not in said and f"{name} " not in said:
                problems.append(f"{name} > 1 (max {np.nanmax(v):.6g}) without a warning")
    # quantiles monotone, e2e >= ttft, goodput <= throughput
    for name in ("ttft_s", "tpot_s", "e2e_s", "queue_s", "itl_s"):
        if name in ds and "quantile" in ds[name].dims:
            d = ds[name].diff("quantile")
            scale = abs(ds[name]).max("quantile")
            if bool((d < -1e-9 * scale - 1e-15).any()):
                problems.append(f"{name} quantiles not monotone")
    if "e2e_s" in ds and bool((ds.e2e_s < ds.ttft_s * (1 - 1e-9) - 1e-12).any()):
        problems.append("e2e_s < ttft_s at some quantile")
    if bool((ds.goodput_request_per_s > ds.throughput_request_per_s * (1 + 1e-9) + 1e-12).any()):
        problems.append("goodput > throughput")
    tput = ds.throughput_request_per_s * ds.duration_s
    bad = abs(tput - completed) > 1e-6 * completed + 1e-6
    if bool((bad & tput.notnull()).any()):
        problems.append("throughput x duration != completed")
    if rate is not None and vmask.any():
        x = np.asarray(ds.throughput_request_per_s.where(valid), dtype=float)
        n = np.asarray(arrived.where(valid), dtype=float)
        if np.any((x > 3 * rate) & (n >= 100)):
            problems.append(f"throughput {np.nanmax(x):.4g} req/s above 3 x the arrival rate {rate:.4g}")
    if "capacity_request_per_s" in ds:
        cap = np.asarray(ds.capacity_request_per_s, dtype=float)
        if np.isinf(cap).any():
            problems.append("capacity inf")
    # an invalid result must say so
    if (~vmask).any() and not ds.attrs.get("warnings"):
        problems.append("invalid points but no warnings attr")
    if "stage_time_s" in ds and vmask.any():
        full = valid & (lost["unfinished"] == 0) & (lost["rejected"] == 0) & (lost["dropped"] == 0)
        st = ds.stage_time_s.sum("stage").where(full)
        e2e = ds.e2e_mean_s.where(full)
        if bool((abs(st - e2e) > 1e-6 * e2e + 1e-9).any()):
            problems.append("stage times do not add up to e2e_mean_s")
    return problems


def check_estimate(ds) -> list[str]:
    import numpy as np

    problems = []
    for name, da in ds.data_vars.items():
        if not np.issubdtype(da.dtype, np.number) or da.dtype == bool or _is_code(da):
            continue
        v = np.asarray(da, dtype=float)
        if np.isinf(v).any():
            problems.append(f"{name} has inf")
        if (v < 0).any():
            problems.append(f"{name} < 0 (min {np.nanmin(v):.3g})")
    if "fits" in ds and "tpot_s" in ds:
        fits = np.asarray(ds.fits.broadcast_like(ds.ttft_s), dtype=bool)
        ttft = np.asarray(ds.ttft_s, dtype=float)
        if np.any(fits & ~np.isfinite(ttft)):
            problems.append("ttft_s NaN where fits")
    return problems


def _config_error_quality(e) -> str | None:
    text = str(e)
    if "\n" in text:
        return "message spans lines"
    if len(text) > 1500:
        return f"message of {len(text)} characters"
    if not getattr(e, "path", "") or not getattr(e, "expected", ""):
        return "no path or no expectation"
    return None


def _same(a, b) -> list[str]:
    """Differences between two sweep Datasets' data variables (NaN equal to NaN)."""
    import numpy as np

    diffs = []
    for name in a.data_vars:
        if name == "computed":
            continue
        if name not in b:
            diffs.append(f"{name} missing")
            continue
        x, y = np.asarray(a[name].values), np.asarray(b[name].values)
        if x.shape != y.shape:
            diffs.append(f"{name} shape {x.shape} vs {y.shape}")
        elif np.issubdtype(x.dtype, np.floating):
            if not np.array_equal(x, y, equal_nan=True):
                diffs.append(f"{name} values differ")
        elif not np.array_equal(x, y):
            diffs.append(f"{name} values differ")
    return diffs


def _store_files(store: Path) -> list[Path]:
    """Chunk files (not metadata) of every array, the done flags and digests included."""
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name != "zarr.json" and not p.name.startswith("."))


STORE_SCENARIO = {
    "engines": [{"name": "e", "model": "llama-3.1-8b", "device": "h100_sxm"}],
    "workload": {"rate_per_s": 5, "prompt_tokens": 256, "output_tokens": 32},
}
STORE_GRID = {"workload.rate_per_s": [2, 4, 8], "engines.e.replicas": [1, 2]}


def run_store_case(case, tmp: Path) -> dict:
    """A sweep store damaged or contested, then resumed: it must end as an uninterrupted sweep's."""
    import warnings as _w

    import hermes_fast as hf

    rng = random.Random(case["seed"])
    store = tmp / "s.zarr"
    kw = {"n_requests": 30, "seed": case["seed"], "chunk_size": 2, "progress": False}
    reference = hf.sweep(STORE_SCENARIO, STORE_GRID, **kw)
    damage = case["damage"]
    notes = []
    if damage == "non_store_dir":
        d = tmp / "keep.zarr"
        d.mkdir()
        (d / "precious.txt").write_text("data")
        try:
            hf.sweep(STORE_SCENARIO, STORE_GRID, out=d, overwrite=True, **kw)
            notes.append("a non-store directory accepted as out")
        except hf.ConfigError:
            pass
        if not (d / "precious.txt").exists():
            return {"cls": "LOST_DATA", "detail": "a directory that is not a sweep store was replaced"}
        return {"cls": "CLEAN_ERROR" if not notes else "SILENT_WRONG", "detail": "; ".join(notes)}
    if damage == "file_as_store":
        f = tmp / "f.zarr"
        f.write_text("precious")
        try:
            hf.sweep(STORE_SCENARIO, STORE_GRID, out=f, overwrite=True, **kw)
        except hf.ConfigError:
            pass
        if f.read_text() != "precious":
            return {"cls": "LOST_DATA", "detail": "a file given as out was replaced"}
        return {"cls": "CLEAN_ERROR", "detail": ""}
    if damage == "interrupt":
        spec = tmp / "sweep.yaml"
        spec.write_text(
            dump(
                {
                    "scenario": STORE_SCENARIO,
                    "grid": STORE_GRID,
                    "n_requests": 30,
                    "seed": case["seed"],
                    "chunk_size": 2,
                }
            )
        )
        argv = [sys.executable, "-m", "hermes_fast.cli", "sweep", str(spec), "--out", str(store), "--no-progress"]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        time.sleep(rng.uniform(2.5, 6.0))
        p.send_signal(rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM]))
        p.wait()
        notes.append(f"interrupted (rc {p.returncode})")
    else:
        with _w.catch_warnings():
            _w.simplefilter("ignore")
            hf.sweep(STORE_SCENARIO, STORE_GRID, out=store, **kw)
    files = _store_files(store) if store.exists() else []
    if damage in ("delete_chunk", "truncate_chunk", "garbage_chunk") and files:
        f = rng.choice(files)
        if damage == "delete_chunk":
            f.unlink()
        elif damage == "truncate_chunk":
            f.write_bytes(f.read_bytes()[: max(len(f.read_bytes()) // 2, 1)])
        else:
            f.write_bytes(os.urandom(max(f.stat().st_size, 8)))
        notes.append(f"{damage} {f.relative_to(store)}")
    elif damage == "delete_meta":
        metas = [p for p in store.rglob("*") if p.is_file() and (p.name == "zarr.json" or p.name.startswith(".z"))]
        f = rng.choice(metas)
        f.unlink()
        notes.append(f"delete {f.relative_to(store)}")
    elif damage in ("delete_done", "delete_digest"):
        d = store / ("_done" if damage == "delete_done" else "_digest")
        shutil.rmtree(d, ignore_errors=True)
        notes.append(f"delete {d.name}")
    elif damage in ("stale_lock", "live_lock"):
        lock = Path(str(store) + ".lock")
        pid = 2**22 + 12345 if damage == "stale_lock" else 1
        import socket

        lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}))
        notes.append(f"{damage} pid {pid}")
    errors = []
    for _attempt in ("other",) if damage in ("different_sweep", "bad_grid", "overwrite_other") else ():
        grid = {"workload.rate_per_s": [3]} if damage != "bad_grid" else {"workload.rate_per_s": [1, "x"]}
        try:
            hf.sweep(STORE_SCENARIO, grid, out=store, overwrite=damage == "overwrite_other", **kw)
            if damage != "overwrite_other":
                return {"cls": "SILENT_WRONG", "detail": "a different sweep wrote into the store"}
        except hf.ConfigError as e:
            if damage == "overwrite_other":
                return {"cls": "CLEAN_ERROR", "detail": str(e)[:200]}
            errors.append(str(e))
        if damage == "overwrite_other":
            return {"cls": "OK", "detail": "overwritten on request"}
    # resume
    with _w.catch_warnings(record=True) as caught:
        _w.simplefilter("always")
        try:
            resumed = hf.sweep(STORE_SCENARIO, STORE_GRID, out=store, **kw)
        except hf.ConfigError as e:
            if damage == "delete_meta" and not (store / "zarr.json").exists():  # the group's: refused, not guessed
                try:
                    hf.open_sweep(store)
                except hf.ConfigError as e2:
                    return {"cls": "CLEAN_ERROR", "detail": f"group metadata gone: {e}; open_sweep: {e2}"[:400]}
                return {"cls": "LOST_DATA", "detail": "resume refused but open_sweep reads a store without metadata"}
            if damage == "live_lock":
                Path(str(store) + ".lock").unlink()
                resumed = hf.sweep(STORE_SCENARIO, STORE_GRID, out=store, **kw)
                errors.append(str(e))
            else:
                return {"cls": "LOST_DATA", "detail": f"resume refused after {damage}: {e}"}
    diffs = _same(reference, resumed)
    if diffs:
        return {"cls": "LOST_DATA", "detail": f"resume after {damage}: " + ", ".join(diffs[:5])}
    with _w.catch_warnings(record=True):
        _w.simplefilter("always")
        opened = hf.open_sweep(store)
    diffs = _same(reference, opened)
    if diffs:
        return {"cls": "LOST_DATA", "detail": f"open_sweep after {damage}: " + ", ".join(diffs[:5])}
    if "computed" in opened and not bool(opened.computed.all()):
        return {"cls": "LOST_DATA", "detail": "open_sweep: points not computed after the resume"}
    warned = [str(w.message)[:120] for w in caught]
    if (
        damage in ("delete_chunk", "truncate_chunk", "garbage_chunk", "delete_meta", "delete_done", "delete_digest")
        and not warned
        and notes
    ):
        # a chunk file that holds only fill values may not exist: nothing to warn about then
        pass
    return {"cls": "OK" if not errors else "CLEAN_ERROR", "detail": "; ".join(notes + errors + warned)[:400]}


def worker_case(case: dict, tmp: Path) -> dict:
    """Run one API case; classification and details."""
    import warnings as _w

    import numpy as np

    import hermes_fast as hf

    if case["op"] == "store":
        return run_store_case(case, tmp)
    path = Path(case["file"])
    op = case["op"]
    caught = []
    rate = None
    store = tmp / "out.zarr" if case.get("store") else None
    try:
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always")
            with np.errstate(all="warn"):
                if op == "simulate":
                    ds = hf.simulate(
                        path, n_requests=case["n"], seed=case["seed"], replicates=case["replicates"], progress=False
                    )
                    sc = hf.load_scenario(path)
                    if sc.workload.arrival.process not in ("closed", "trace"):
                        rate = sc.workload.rate_per_s
                    problems = check_simulation(ds, rate)
                elif op == "estimate":
                    ds = hf.estimate(path, grid=case.get("grid"))
                    problems = check_estimate(ds)
                elif op == "capacity":
                    ds = hf.capacity_search(path, case["targets"], n_requests=case["n"], seed=case["seed"])
                    problems = check_simulation(ds)
                    cap = np.asarray(ds.capacity_request_per_s, dtype=float)
                    t = case["targets"]
                    lo, hi = t.get("rate_min_per_s", 0.1), t.get("rate_max_per_s", 1000.0)
                    if np.any(np.isfinite(cap) & ((cap < lo * (1 - 1e-9)) | (cap > hi * (1 + 1e-9)))):
                        problems.append(f"capacity {cap} outside [{lo}, {hi}]")
                elif op == "sweep":
                    ds = hf.sweep(
                        path,
                        case["grid"],
                        n_requests=case["n"],
                        seed=case["seed"],
                        out=store,
                        progress=False,
                        chunk_size=1,
                    )
                    problems = check_simulation(ds)
                elif op == "sweep_file":
                    ds = hf.sweep_file(path, n_requests=case["n"], out=store, progress=False)
                    problems = check_simulation(ds)
                else:
                    raise ValueError(op)
                if store is not None and store.exists():
                    reopened = hf.open_sweep(store)
                    diffs = _same(ds, reopened)
                    if diffs:
                        return {"cls": "LOST_DATA", "detail": "store differs from the result: " + ", ".join(diffs[:4])}
    except hf.ConfigError as e:
        if store is not None and store.exists():
            try:
                hf.open_sweep(store)
            except Exception as e2:  # noqa: BLE001
                return {"cls": "LOST_DATA", "detail": f"after the error, the store cannot be opened: {e2}"}
        quality = _config_error_quality(e)
        if quality:
            return {"cls": "UNCLEAR_ERROR", "detail": f"ConfigError ({quality}): {str(e)[:300]}"}
        return {"cls": "CLEAN_ERROR", "detail": str(e)[:300]}
    except MemoryError:
        return {"cls": "TRACEBACK", "detail": "MemoryError (over the worker's memory limit)"}
    except RecursionError as e:
        return {"cls": "TRACEBACK", "detail": f"RecursionError: {e}"}
    except Exception as e:  # noqa: BLE001
        tb = traceback.format_exc()
        return {"cls": "TRACEBACK", "detail": f"{type(e).__name__}: {str(e)[:300]}", "traceback": tb[-3000:]}
    noisy = sorted(
        {f"{w.category.__name__}: {str(w.message)[:100]}" for w in caught if issubclass(w.category, RuntimeWarning)}
    )
    if problems:
        return {"cls": "SILENT_WRONG", "detail": "; ".join(problems)[:600], "warnings": noisy}
    return {"cls": "OK", "detail": "; ".join(noisy)[:300], "warnings": noisy}


def worker_main() -> None:
    """Read case JSON lines on stdin; write '@@RESULT <json>' lines on stdout."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ValueError, OSError):
        pass
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by the library goes to stderr
    import hermes_fast  # noqa: F401  (import once)

    out.write("@@READY\n")
    for line in sys.stdin:
        case = json.loads(line)
        tmp = Path(case["tmp"])
        try:
            res = worker_case(case, tmp)
        except BaseException as e:  # noqa: BLE001  (the harness's own failure: report it)
            res = {
                "cls": "TRACEBACK",
                "detail": f"{type(e).__name__}: {str(e)[:300]}",
                "traceback": traceback.format_exc(),
            }
        out.write("@@RESULT " + json.dumps(res, default=str) + "\n")


class Worker:
    def __init__(self, log: Path):
        self.log = log
        self.proc = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(CODE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.log, "a"),
            text=True,
            env=env,
            start_new_session=True,
            cwd=str(ROOT),
        )
        self._read(120)

    def _read(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return "@@DIED"
            if line.startswith("@@"):
                return line.rstrip("\n")

    def run(self, case: dict, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        line = self._read(timeout)
        if line is None:
            self.kill()
            return {"cls": "HANG", "detail": f"no result in {timeout:.0f} s"}
        if line == "@@DIED" or not line.startswith("@@RESULT "):
            rc = self.proc.wait()
            self.proc = None
            return {"cls": "TRACEBACK", "detail": f"worker died (exit {rc}; see {self.log})"}
        return json.loads(line[len("@@RESULT ") :])

    def kill(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None


# ----------------------------------------------------------------------------------------------------------------
# CLI cases


def _cli_env():
    return dict(os.environ, PYTHONPATH=str(CODE) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="120")


def _check_out_file(path: Path, sweep: bool = False) -> str | None:
    """None if the output at ``path`` reads back, else why not."""
    try:
        if not path.exists():
            return "missing"
        suffix = path.suffix.lower()
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".csv":
            text = path.read_text()
            if not text.startswith("variable"):
                return "CSV without a header"
        elif suffix == ".nc":
            import xarray as xr

            xr.open_dataset(path).close()
        elif suffix == ".zarr" and sweep:
            import hermes_fast as hf

            hf.open_sweep(path)
        elif suffix == ".zarr":
            import xarray as xr

            xr.open_zarr(path).close()
        elif suffix in (".png", ".svg", ".pdf"):
            if path.stat().st_size == 0:
                return "empty figure"
    except Exception as e:  # noqa: BLE001
        return f"unreadable: {type(e).__name__}: {e}"
    return None


def run_cli_case(case: dict, tmp: Path, store: Path, timeout: float) -> dict:
    argv = [
        a.replace("{file}", case["file"]).replace("{dir}", str(tmp)).replace("{store}", str(store))
        for a in case["argv"]
    ]
    # things bad --out paths point at
    (tmp / "file.txt").write_text("precious")
    (tmp / "existing_dir.zarr").mkdir(exist_ok=True)
    (tmp / "existing_dir.zarr" / "precious.txt").write_text("precious")
    (tmp / "existing.nc").write_text("precious")
    if any("sweep_store.zarr" in a for a in argv) and not (tmp / "sweep_store.zarr").exists():
        shutil.copytree(store, tmp / "sweep_store.zarr")
    outs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"]
    case["command"] = "hermes-fast " + shlex.join(argv)
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "hermes_fast.cli", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_cli_env(),
            cwd=tmp,
        )
    except subprocess.TimeoutExpired:
        return {"cls": "HANG", "detail": f"no exit in {timeout:.0f} s"}
    dt = time.monotonic() - t0
    err = p.stderr
    lost = []
    if (tmp / "file.txt").read_text() != "precious":
        lost.append("file.txt changed")
    if not (tmp / "existing_dir.zarr" / "precious.txt").exists():
        lost.append("existing_dir.zarr/precious.txt gone")
    if p.returncode != 0 and (tmp / "existing.nc").exists() and (tmp / "existing.nc").read_text() != "precious":
        lost.append("existing.nc changed by a failed command")
    if (tmp / "sweep_store.zarr").exists() and argv[0] != "sweep":
        try:
            import hermes_fast as hf

            hf.open_sweep(tmp / "sweep_store.zarr")
        except Exception as e:  # noqa: BLE001
            lost.append(f"sweep_store.zarr unreadable: {e}")
    if "Traceback (most recent call last)" in err:
        return {"cls": "TRACEBACK", "detail": err.strip().splitlines()[-1][:300], "traceback": err[-3000:]}
    if p.returncode < 0:
        return {"cls": "TRACEBACK", "detail": f"killed by signal {-p.returncode}"}
    if lost:
        return {"cls": "LOST_DATA", "detail": "; ".join(lost)}
    lines = [
        ln
        for ln in err.strip().splitlines()
        if ln.strip()
        and not ln.startswith(("hermes-fast: warning", "WARNING", "hermes_fast: compiling", "hermes-fast: compiling"))
    ]
    if p.returncode == 0:
        for out in outs:
            why = _check_out_file(Path(out) if Path(out).is_absolute() else tmp / out, sweep=argv[0] == "sweep")
            if why:
                return {"cls": "LOST_DATA", "detail": f"exit 0 but --out {out}: {why}"}
        if "nan" in p.stdout.split("requests")[0].lower() and "WARNING" not in err:
            return {"cls": "SILENT_WRONG", "detail": f"NaN in the printed results without a warning ({dt:.1f} s)"}
        return {"cls": "OK", "detail": f"{dt:.1f} s"}
    errors = [ln for ln in lines if "error:" in ln]
    if p.returncode == 2 and errors:
        msg = errors[-1]
        usage = lines and lines[0].startswith("usage:")
        if usage or (len(errors) == 1 and msg.startswith("hermes-fast: error:") and ": got " in msg):
            return {"cls": "CLEAN_ERROR", "detail": msg[:300]}
    return {"cls": "UNCLEAR_ERROR", "detail": f"exit {p.returncode}: " + " | ".join(lines[-3:])[:400]}


# ----------------------------------------------------------------------------------------------------------------
# the driver


def materialise(case: dict, folder: Path) -> None:
    """Write the case's files into ``folder``; ``case['file']`` names the config."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in case.get("files", {}).items():
        (folder / name).write_text(text)
    if case.get("op") == "store":
        return
    data = _replace_at(case["data"], str(folder))
    path = folder / ("sweep.yaml" if case.get("kind") == "sweep" else "scenario.yaml")
    if case.get("bytes") is not None:
        path.write_bytes(case["bytes"] if isinstance(case["bytes"], bytes) else case["bytes"].encode("latin-1"))
    elif case.get("text") is not None:
        path.write_text(case["text"])
    else:
        path.write_text(dump(data))
    case["file"] = str(path)


def reproducer(case: dict) -> str:
    if case["op"] == "cli":
        return case.get("command", "")
    if case["op"] == "store":
        return (
            f"python {Path(__file__).name} --seed {case['seed_run']} --only {case['index']} -v  "
            f"(store case: {case['damage']})"
        )
    f = case["file"]
    if case["op"] == "simulate":
        return f"hf.simulate({f!r}, n_requests={case['n']}, seed={case['seed']}, replicates={case['replicates']})"
    if case["op"] == "estimate":
        return f"hf.estimate({f!r}, grid={case.get('grid')!r})"
    if case["op"] == "capacity":
        return f"hf.capacity_search({f!r}, {case['targets']!r}, n_requests={case['n']}, seed={case['seed']})"
    if case["op"] == "sweep":
        out = ", out='out.zarr'" if case.get("store") else ""
        return f"hf.sweep({f!r}, {case['grid']!r}, n_requests={case['n']}, seed={case['seed']}{out}, chunk_size=1)"
    out = ", out='out.zarr'" if case.get("store") else ""
    return f"hf.sweep_file({f!r}, n_requests={case['n']}{out})"


def make_plot_store(folder: Path, timeout: float) -> Path:
    """A small valid sweep store (two rates x two policies) for the plot commands."""
    store = folder / "plot_store.zarr"
    spec = folder / "plot_sweep.yaml"
    spec.write_text(
        dump(
            {
                "scenario": STORE_SCENARIO,
                "grid": {"workload.rate_per_s": [2, 4], "engines.e.batching.policy": ["continuous", "chunked"]},
                "n_requests": 40,
                "seed": 1,
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "hermes_fast.cli", "sweep", str(spec), "--out", str(store), "--no-progress"],
        capture_output=True,
        timeout=timeout,
        env=_cli_env(),
        check=True,
    )
    return store


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300, help="number of cases (300: about 10 minutes on 2 cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=45.0, help="seconds per API case (sweeps and CLI: twice)")
    ap.add_argument("--only", help="comma-separated case indices to run (reproduce)")
    ap.add_argument("--family", choices=("api", "cli", "store"), help="only this family of cases")
    ap.add_argument("--keep", help="folder for the failures' reproducers (default: a temporary folder)")
    ap.add_argument("--json", help="write every case's outcome here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    ap.add_argument("--code", help="run the cases against the hermes_fast checkout here (default: this repository)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global CODE
    CODE = Path(args.code).resolve() if args.code else ROOT
    if args.worker:
        worker_main()
        return 0
    bases = load_bases()
    contexts = catalog_contexts()
    keep = Path(args.keep or tempfile.mkdtemp(prefix=f"hermes_fuzz_seed{args.seed}_"))
    keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hermes_fuzz_work_"))
    worker = Worker(keep / "worker_stderr.log")
    indices = [int(i) for i in args.only.split(",")] if args.only else range(args.cases)
    counts = {c: Counter() for c in ("api", "cli", "store")}
    failures = []
    records = []
    t_start = time.monotonic()
    plot_store = None
    try:
        for i in indices:
            case = make_case(args.seed, i, bases, contexts)
            case["seed_run"] = args.seed
            if args.family and case["family"] != args.family:
                continue
            folder = work / f"case_{i:05d}"
            if folder.exists():
                shutil.rmtree(folder)
            materialise(case, folder)
            case["tmp"] = str(folder)
            t0 = time.monotonic()
            if case["op"] == "cli":
                if plot_store is None:
                    plot_store = make_plot_store(work, 4 * args.timeout)
                res = run_cli_case(case, folder, plot_store, 2 * args.timeout)
            else:
                wire = {k: v for k, v in case.items() if k not in ("data", "text", "bytes", "files")}
                limit = args.timeout * (2 if case["op"] in ("sweep", "sweep_file", "store", "capacity") else 1)
                res = worker.run(wire, limit)
            dt = time.monotonic() - t0
            counts[case["family"]][res["cls"]] += 1
            rec = {
                "index": i,
                "family": case["family"],
                "op": case["op"],
                "base": case.get("base"),
                "mutation": case.get("mutation", case.get("damage")),
                "class": res["cls"],
                "detail": res.get("detail", ""),
                "seconds": round(dt, 2),
                "reproducer": reproducer(case),
            }
            records.append(rec)
            if res["cls"] in FAILURES:
                dest = keep / folder.name
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.zarr", "*.nc"))
                rec["reproducer"] = rec["reproducer"].replace(str(folder), str(dest))
                rec["traceback"] = res.get("traceback", "")
                failures.append(rec)
            if args.verbose or res["cls"] in FAILURES:
                print(
                    f"[{i:4d}] {res['cls']:13s} {case['op']:10s} {case.get('base', ''):24s} {dt:6.1f}s  "
                    f"{rec['mutation'][:110]}",
                    flush=True,
                )
                if args.verbose or res["cls"] in FAILURES:
                    print(textwrap.indent(textwrap.fill(rec["detail"][:600], 150), "        "), flush=True)
                if args.verbose and rec.get("traceback"):
                    print(textwrap.indent(rec["traceback"], "        | "))
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        worker.kill()
        shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - t_start
    print()
    print(f"hermes_fast config fuzzer: seed {args.seed}, {len(records)} cases in {total:.0f} s")
    header = f"{'family':8s}" + "".join(f"{c:>14s}" for c in CLASSES) + f"{'total':>8s}"
    print(header)
    for fam in ("api", "cli", "store"):
        if sum(counts[fam].values()):
            print(f"{fam:8s}" + "".join(f"{counts[fam][c]:14d}" for c in CLASSES) + f"{sum(counts[fam].values()):8d}")
    allc = sum(counts.values(), Counter())
    print(f"{'all':8s}" + "".join(f"{allc[c]:14d}" for c in CLASSES) + f"{sum(allc.values()):8d}")
    if failures:
        print(f"\n{len(failures)} failures (reproducers under {keep}):")
        for rec in failures:
            print(f"  [{rec['index']}] {rec['class']}: {rec['base']} {rec['op']}: {rec['mutation'][:150]}")
            print(f"      {rec['detail'][:300]}")
            print(f"      reproduce: {rec['reproducer']}")
    else:
        print(f"\nno failures (folder {keep} left empty)")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
