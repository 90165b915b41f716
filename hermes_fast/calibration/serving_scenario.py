"""A measured serving run as the simulation takes it: its scenario and the requests its benchmark harness sent.

- :func:`serving_scenario` is the run's scenario (a mapping :func:`hermes_fast.load_scenario` reads): stack entry
  by version, device, model, formats, layout, and the server's flags (token budget, batch limit, memory share,
  CUDA-graph options);
- :func:`harness_draws` the requests of one replicate: arrivals as the harness sends them (Poisson from t = 0;
  ``--max-concurrency`` / batch-1 latency runs as a closed loop without think time; offline runs all at t = 0)
  and lengths as its dataset draws them (``random``: fixed lengths, or uniform within ``--random-range-ratio``;
  ShareGPT: pairs of the shipped per-request lengths, :data:`~hermes_fast.calibration.serving_runs.SHAREGPT_LENGTHS`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..config.base import ConfigError
from ..resolve import Catalog
from ..workload import Draws
from .serving_runs import (
    _SHAREGPT_LLAMA3_OUTPUT_MEAN,
    SHAREGPT_LENGTHS,
    ServingRun,
    catalog_model,
    command_flag,
    skip_reason,
    stack_entry,
)

__all__ = ["serving_scenario", "harness_draws", "trt_graph_sizes"]


def trt_graph_sizes(largest: int, padding: bool = True) -> list[int]:
    """TensorRT-LLM PyTorch backend's CUDA-graph batch sizes up to ``largest`` (CudaGraphConfig
    _generate_cuda_graph_batch_sizes, stack_facts.csv): with padding [1, 2, 4] + multiples of 8 up to 128, without
    1-32, 64 and 128; then powers of two below ``largest``, and ``largest`` itself."""
    base = [1, 2, 4, *range(8, 129, 8)] if padding else [*range(1, 33), 64, 128]
    sizes = [s for s in base if s <= largest]
    b = 256
    while b < largest:
        sizes.append(b)
        b *= 2
    return sizes if sizes[-1] == largest else [*sizes, largest]


@dataclass(frozen=True)
class _Layout:
    """What a run's server flags change, beyond its stack's defaults."""

    engine: dict = field(default_factory=dict)  # engine fields
    batching: dict = field(default_factory=dict)
    stack: dict = field(default_factory=dict)  # stack fields (a scenario stack based on the entry)


def run_stack_fields(run: ServingRun) -> dict:
    """The stack fields the run's own flags set (its front end, async scheduling...): they win
    over the entry's fields and over any costs tried in their place."""
    return dict(_layout(run).stack)


def _layout(run: ServingRun) -> _Layout:
    """The run's engine and stack fields read from its server flags and the stack version's documented defaults
    (sources in stacks.yaml and stack_facts.csv)."""
    s, entry = run.settings, stack_entry(run)
    args = s["server_args"]
    tp = int(float(s["tp"]))
    out = _Layout()
    if s["frontend"] == "in_process":  # trtllm-bench drives the executor directly: no API server
        out.stack["frontend_s"] = 0.0
        out.stack["frontend_serial_s"] = 0.0
        out.stack["frontend_token_s"] = 0.0
    if "--no-enable-prefix-caching" in args or "--disable-radix-cache" in args:
        out.engine["prefix_cache"] = False
    if entry in ("sglang", "sglang-0.3"):
        mem = command_flag(args, "--mem-frac", "--mem-fraction-static")
        dp_attention = "--enable-dp-attention" in args
        out.engine["memory_utilization"] = mem or _sglang_mem_fraction(run, tp, dp_attention)
        if "--enable-dp-attention" in args:  # attention DP, the MoE tensor-parallel (expert-parallel with --ep-size)
            out.engine["attention_dp"] = True
            if "--ep-size" in args:
                out.engine["ep"] = int(command_flag(args, "--ep-size"))
            # server_args.py: schedule_conservativeness x 0.3 (the new-token ratio with it) and chunked_prefill_size //
            # dp_size per rank (the pool's chunk stays the replica's total; each request takes a rank's share)
            out.stack["new_token_ratio"] = 0.3 * Catalog().stack(entry).new_token_ratio
        if entry == "sglang":
            max_bs = command_flag(args, "--cuda-graph-max-bs")
            _set_if_not_the_entrys(out.stack, entry, "cuda_graph_sizes", _sglang_graphs(run, tp, max_bs))
            # the attention backend: FlashInfer's, whose decode of a few query heads a KV head runs on CUDA cores,
            # everywhere before 0.4.6 (the entry: FlashAttention 3 on Hopper from 0.4.6, stacks.yaml sources) or
            # where the run names it; another backend named decodes on tensor cores
            backend = re.search(r"--attention-backend[ =](\w+)", args)
            if (backend and backend.group(1) == "flashinfer") or (not backend and _release(run) < (0, 4, 6)):
                out.stack["cuda_core_decode_max_compute_capability"] = None
            elif backend:
                out.stack["cuda_core_decode_extra"] = None
    if entry in ("vllm", "vllm-0.8"):
        out.engine.update(_vllm_flags(run))
        # async scheduling: opt-in before 0.14, the default since (stacks.yaml sources)
        async_ = "--async-scheduling" in args or ("--no-async-scheduling" not in args and _vllm_minor(run) >= 14)
        _set_if_not_the_entrys(out.stack, entry, "async_scheduling", async_)
        if "--enable-expert-parallel" in args:  # the MoE layers' experts over the TP (x DP) ranks
            out.engine["ep"] = tp
    if entry in ("trtllm", "trtllm-engine"):
        # (a share of the memory the weights and activations leave: the entries' memory_basis)
        out.engine["memory_utilization"] = command_flag(args, "--kv_cache_free_gpu_memory_fraction") or 0.90
        tokens = command_flag(args, "--max_num_tokens", "max_num_tokens")
        batch = command_flag(args, "--max_batch_size", "max_batch_size")
        if tokens:
            out.engine["max_batched_tokens"] = int(tokens)
        if batch:
            out.batching["max_batch_size"] = int(batch)
        # chunked context (off by default; the flag, or the key of --extra_llm_api_options): a prompt split to fit
        if "--enable_chunked_prefill" in args or "enable_chunked_prefill: true" in args:
            out.batching["policy"] = "chunked"
        if entry == "trtllm":
            # the PyTorch backend: CUDA graphs and the overlap scheduler opt-in in 0.18 (enable_overlap_scheduler,
            # use_cuda_graph), on by default in 1.x (TorchLlmArgs cuda_graph_config, disable_overlap_scheduler);
            # a 0.x run is read as opt-in, though PyTorchConfig turned both on before 1.0 (stack_facts.csv)
            v1 = not s["stack_version"].startswith(("0.", "main"))
            overlap = ("enable_overlap_scheduler" in args or v1) and "disable_overlap_scheduler: true" not in args
            sizes, padding = _trt_graphs(args, v1)
            out.stack["cuda_graph_sizes"] = sizes
            out.stack["cuda_graph_padding"] = padding
            _set_if_not_the_entrys(out.stack, entry, "async_scheduling", overlap)
            if "--ep_size" in args:
                out.engine["ep"] = int(command_flag(args, "--ep_size"))
    return out


def _trt_graphs(args: str, v1: bool) -> tuple[list[int], bool]:
    """(the decode batch sizes a TensorRT-LLM PyTorch-backend run captures in CUDA graphs, whether a batch pads up to
    one): 0.x's opt-in flags (use_cuda_graph, cuda_graph_max_batch_size, cuda_graph_padding_enabled), or 1.x's
    cuda_graph_config, on by default, ``null`` turning it off, and its keys as --extra_llm_api_options YAML gives
    them ({batch_sizes: [...]} or {max_batch_size: N}, 0 or none meaning 128; enable_padding)."""
    found = re.search(r"cuda_graph_config:\s*(null|\{[^}]*\})", args)
    config = found.group(1) if found else ""
    if config == "null" or not (v1 or config or "use_cuda_graph" in args):
        return [], False
    padding = "cuda_graph_padding_enabled" in args or re.search(r"enable_padding:\s*true", args) is not None
    listed = re.search(r"batch_sizes:\s*\[([\d,\s]*)\]", config)
    if listed:
        return sorted({int(b) for b in listed.group(1).split(",") if b.strip()}), padding
    largest = re.search(r"max_batch_size:\s*(\d+)", config)
    n = int(largest.group(1)) if largest else command_flag(args, "cuda_graph_max_batch_size")
    return trt_graph_sizes(int(n or 128), padding), padding


def _sglang_graphs(run: ServingRun, tp: int, max_bs: float | None) -> tuple[int, ...]:
    """The decode batch sizes an SGLang run captures as CUDA graphs (stack_facts.csv), up to ``max_bs``
    (--cuda-graph-max-bs) or the version's cuda_graph_max_bs for an 80 GB GPU or an H200: 0.4.x [1, 2, 4] + multiples
    of 8, to 160 (256 on an H200); 0.5.x [1, 2, 4, 8, 12] + range(16, 257, 8) + range(272, 512, 16) + range(512, max
    + 1, 32), to 256 at TP < 4 and 512 from TP 4."""
    if _release(run) < (0, 5, 0):
        top = int(max_bs or (256 if run.settings["device"] == "h200_sxm" else 160))
        sizes = [1, 2, 4, *range(8, top + 1, 8)]
    else:
        top = int(max_bs or (512 if tp >= 4 else 256))
        sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, top + 1, 32)]
    return tuple(b for b in sizes if b <= top)


def _sglang_mem_fraction(run: ServingRun, tp: int, dp_attention: bool) -> float:
    """SGLang's mem_fraction_static where a run does not set it (server_args.py, stack_facts.csv): 0.4.x by TP size
    (0.88 at 1, 0.87 at 2, 0.85 at 4, 0.81 at 8, 0.79 from 16); 0.5.x the ``sglang`` entry's rule
    (``Stack.memory_utilization_for``: 1 - reserved / the GPU's memory, reserved by GPU class, TP x PP and DP
    attention; on a GPU outside its classes, 35-160 GiB, the entry's memory_utilization: no simulated run is). The
    GPU's memory is the stack's (``Stack.capacity_bytes``: CUDA's total where the catalog has one), where SGLang reads
    nvidia-smi's total: ~1% more on an 80 GB part."""
    if _release(run) < (0, 5, 0):
        return 0.88 if tp < 2 else 0.87 if tp < 4 else 0.85 if tp < 8 else 0.81 if tp < 16 else 0.79
    device = Catalog().device(run.settings["device"])
    ranks = tp * int(float(run.settings["pp"] or 1))
    return Catalog().stack("sglang").memory_utilization_for(device, ranks, dp_attention)


def _set_if_not_the_entrys(fields: dict, entry: str, name: str, value) -> None:
    """Set the stack field ``name`` where the run's value is not the stack entry's own."""
    if value != getattr(Catalog().stack(entry), name):
        fields[name] = value


def _release(run: ServingRun) -> tuple[int, int, int]:
    """(major, minor, patch) of the run's stack version ((99, 0, 0) when it is not a release number: a build from
    main, newer than the releases the shipped runs name)."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", run.settings["stack_version"])
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (99, 0, 0)


def _vllm_minor(run: ServingRun) -> int:
    """The minor version of a vLLM 0.x run (99 when its version is not a 0.x release number)."""
    major, minor, _ = _release(run)
    return minor if major == 0 else 99


def _vllm_flags(run: ServingRun) -> dict:
    """Engine fields a vLLM run's server flags set, and the version's batch defaults on A100 (stacks.yaml sources):
    vLLM >= 0.9 (EngineArgs.get_batch_defaults, PR #17885) gives the API server max_num_batched_tokens 2048 and
    max_num_seqs 256 on A100 (8192 / 1024 on other GPUs >= 70 GiB, the stack's values); 0.8 (PR #12369) 2048
    tokens on GPUs other than H100/H200."""
    s, args = run.settings, run.settings["server_args"]
    out: dict = {}
    if s["device"].startswith("a100"):
        out["max_batched_tokens"] = 2048
        if _vllm_minor(run) >= 9:
            out["batching"] = {"max_batch_size": 256}
    tokens = command_flag(args, "--max-num-batched-tokens")
    seqs = command_flag(args, "--max-num-seqs")
    mem = command_flag(args, "--gpu-memory-utilization")
    if tokens:
        out["max_batched_tokens"] = int(tokens)
    if seqs:
        out["batching"] = {"max_batch_size": int(seqs)}
    if mem:
        out["memory_utilization"] = mem
    return out


def _dtypes(run: ServingRun) -> dict:
    d, kv = run.settings["dtype"], run.settings["kv_dtype"] or "bf16"
    if d == "fp8_block":
        return {"weight": "fp8", "activation": "fp8", "kv": kv, "gemm_scaling": "block"}
    if d == "w4a16":  # 4-bit (MXFP4) experts dequantised into BF16 GEMMs, the rest BF16: gpt-oss on Hopper
        return {"weight": "bf16", "expert_weight": "fp4", "activation": "bf16", "kv": kv}
    return {"weight": d, "activation": d, "kv": kv}


def serving_scenario(run: ServingRun, costs: Mapping[str, float] | None = None) -> dict:
    """The scenario of a measured run, as a mapping (``hf.load_scenario`` / ``hf.simulate`` read it).

    One engine on the run's device and layout with the run's stack entry (:func:`stack_entry`), as a scenario
    stack ``run`` based on it when the run's flags change stack fields or ``costs`` replaces its host and
    front-end costs; the engine fields its flags set; the workload: ``num_prompts`` requests, Poisson at
    ``rate_per_s``, a closed loop of ``concurrency`` clients without think time, or (offline) a closed loop of
    ``num_prompts`` clients (every request sent at t = 0); lengths fixed (``random``), uniform within
    +-15% (the FP8-KV blog's ``--random-range-ratio 0.15``) or in [1, L] (SGLang bench_serving's default ratio
    0), or ShareGPT's shipped per-request lengths (each column's values; :func:`harness_draws` keeps the pairs,
    and what validation runs). No warm-up requests.

    Raises
    ------
    ConfigError
        When the run cannot be simulated (:func:`skip_reason`).

    Examples
    --------
    >>> from hermes_fast.calibration.serving_runs import serving_runs
    >>> run = next(r for r in serving_runs() if r.settings["input_tokens"] == "32000"
    ...            and r.settings["stack_version"].startswith("0.8.2") and r.settings["device"] == "h100_sxm")
    >>> sc = serving_scenario(run)
    >>> sc["engines"][0]["stack"], sc["engines"][0]["model"], sc["engines"][0]["parallel"]
    ('vllm-0.8', 'qwq-32b', {'tp': 2, 'pp': 1})
    >>> sc["workload"]["arrival"], sc["workload"]["rate_per_s"], sc["workload"]["prompt_tokens"]
    ({'process': 'poisson'}, 10.0, 32000)
    """
    why = skip_reason(run)
    if why is not None:
        raise ConfigError(f"serving run {run.index}", run.label, f"a run that can be simulated ({why})")
    s = run.settings
    entry = stack_entry(run)
    lay = _layout(run)
    parallel = {"tp": int(float(s["tp"])), "pp": int(float(s["pp"] or 1))}
    for key in ("ep", "attention_dp"):
        if key in lay.engine:
            parallel[key] = lay.engine[key]
    engine: dict = {
        "name": "engine",
        "model": catalog_model(run),
        "device": s["device"],
        "stack": entry,
        "parallel": parallel,
        "dtypes": _dtypes(run),
    }
    engine.update({k: v for k, v in lay.engine.items() if k not in ("ep", "attention_dp", "batching")})
    batching = {**lay.engine.get("batching", {}), **lay.batching}
    if batching:
        engine["batching"] = batching
    sc: dict = {"name": f"serving run {run.index}: {run.label}", "engines": [engine]}
    stack = {**(costs or {}), **lay.stack}  # (the run's own flags win over the costs tried)
    if stack:
        sc["stacks"] = {"run": {"base": entry, **stack}}
        engine["stack"] = "run"
    n = int(float(s["num_prompts"]))
    workload: dict = {}
    if s["arrival"] == "poisson":
        workload["rate_per_s"] = float(s["rate_per_s"])
        workload["arrival"] = {"process": "poisson"}
    elif s["arrival"] == "concurrency":
        workload["arrival"] = {"process": "closed", "concurrency": int(float(s["concurrency"]))}
    else:  # offline: every request sent at once
        workload["arrival"] = {"process": "closed", "concurrency": n}
    if s["dataset"] == "random":
        prompt, output = map(int, run.lengths)
        if _length_range(run, prompt) is not None:
            lengths = {"prompt_tokens": _uniform(run, prompt), "output_tokens": _uniform(run, output)}
            workload["classes"] = [{"name": "random", **lengths}]
        else:
            workload["prompt_tokens"], workload["output_tokens"] = prompt, output
    else:
        path = str(SHAREGPT_LENGTHS)
        lengths = {
            "prompt_tokens": {"dist": "empirical", "path": path, "column": "prompt_tokens"},
            "output_tokens": {"dist": "empirical", "path": path, "column": "output_tokens"},
        }
        workload["classes"] = [{"name": "sharegpt", **lengths}]
    sc["workload"] = workload
    sc["serving"] = {"engine": "engine", "warmup_requests": 0}
    return sc


def _length_range(run: ServingRun, center: int) -> tuple[int, int] | None:
    """The bounds of a random-dataset run's uniform lengths around ``center`` (None: every request exactly
    ``center``). vLLM >= 0.10 reads ``--random-range-ratio r`` as uniform in [L (1 - r), L (1 + r)] (the FP8-KV
    blog: ~20k / ~2k tokens with +-15%); SGLang's bench_serving (0.4.x) as uniform in [max(L r, 1), L], so its
    default 0.0 draws from [1, L] (the harness column says so). Fixed lengths otherwise: vLLM 0.8's
    benchmark_serving default 1.0 drew randint(L x 1.0, L), vLLM >= 0.10 defaults to 0.0, SGLang's
    ``--random-range-ratio 1``, trtllm-bench's stdev 0."""
    if "+-15%" in run.notes:
        r = 0.15
        return int(math.floor(center * (1 - r))), int(math.ceil(center * (1 + r)))
    h = run.settings["harness"]
    if "sglang.bench_serving" in h and "--random-range-ratio 0.0" in h:
        return 1, center
    return None


def _uniform(run: ServingRun, center: int) -> dict:
    lo, hi = _length_range(run, center)
    return {"dist": "uniform", "min": lo, "max": hi}


_SHAREGPT_CACHE: dict[str, np.ndarray] = {}


def _sharegpt_pairs() -> np.ndarray:
    """int64[n, 2]: the shipped ShareGPT (prompt, output) pairs, in the harness's order."""
    if "pairs" not in _SHAREGPT_CACHE:
        with open(SHAREGPT_LENGTHS, newline="") as f:
            rows = [(int(r["prompt_tokens"]), int(r["output_tokens"])) for r in csv.DictReader(f)]
        _SHAREGPT_CACHE["pairs"] = np.array(rows, dtype=np.int64)
    return _SHAREGPT_CACHE["pairs"]


def _sharegpt_scale(run: ServingRun) -> tuple[float, float]:
    """(prompt, output) length scales of the shipped ShareGPT sample for a run: for a run that states its own mean
    lengths (``input_tokens`` / ``output_tokens``: the harness's totals over its requests) the ratio of each mean to
    the sample's (exactly 1 for the DeepSeek-R1 runs the sample comes from); 1 for the other runs with its
    DeepSeek-R1 tokenizer; otherwise (the Llama-3-tokenizer runs of SGLang's bench_serving README, 194.3 output
    tokens per request) the ratio of output means for both."""
    pairs = _sharegpt_pairs()
    if run.lengths is not None:
        prompt_mean, output_mean = float(pairs[:, 0].mean()), float(pairs[:, 1].mean())
        return run.lengths[0] / prompt_mean, run.lengths[1] / output_mean
    if catalog_model(run) == "deepseek-v3":
        return 1.0, 1.0
    r = _SHAREGPT_LLAMA3_OUTPUT_MEAN / float(pairs[:, 1].mean())
    return r, r


def harness_draws(run: ServingRun, rng: np.random.Generator, n: int | None = None) -> Draws:
    """The requests one replicate of the run sends, as its harness sends them.

    Arrivals: Poisson runs send the first request at t = 0 and each next one an exponential gap later (vLLM's
    ``benchmark_serving`` and SGLang's ``bench_serving``: yield, then sleep); ``concurrency`` runs are a closed
    loop of that many clients without think time (``--max-concurrency`` with an infinite rate; trtllm-bench's
    batch-1 latency run is concurrency 1); offline runs send every request at t = 0. Lengths: a random dataset's
    fixed lengths (or uniform within the run's range ratio); ShareGPT: the shipped pairs in order when the run
    has as many prompts as the sample (the very requests of those runs), else pairs resampled with replacement;
    lengths scaled to the run's stated means, or for the Llama-3 README's runs to its output mean
    (:func:`_sharegpt_scale`).

    Examples
    --------
    >>> from hermes_fast.calibration.serving_runs import serving_runs
    >>> run = next(r for r in serving_runs() if r.settings["arrival"] == "poisson" and r.settings["input_tokens"])
    >>> from hermes_fast.workload import rng_for
    >>> d = harness_draws(run, rng_for(0))
    >>> float(d.arrival_s[0]), d.arrival_s.size, bool((np.diff(d.arrival_s) > 0).all())
    (0.0, 50, True)
    """
    s = run.settings
    n = int(float(s["num_prompts"])) if n is None else n
    if s["dataset"] == "random":
        prompt_len, output_len = int(float(s["input_tokens"])), int(float(s["output_tokens"]))
        if _length_range(run, prompt_len) is not None:
            lo, hi = _length_range(run, prompt_len)
            prompt = rng.integers(lo, hi + 1, n)
            lo, hi = _length_range(run, output_len)
            output = rng.integers(lo, hi + 1, n)
        else:
            prompt, output = np.full(n, prompt_len), np.full(n, output_len)
    else:
        pairs = _sharegpt_pairs()
        idx = np.arange(n) if n == pairs.shape[0] else rng.integers(0, pairs.shape[0], n)
        prompt_scale, output_scale = _sharegpt_scale(run)
        prompt = np.maximum(np.rint(pairs[idx, 0] * prompt_scale), 1)
        output = np.maximum(np.rint(pairs[idx, 1] * output_scale), 1)
    closed, concurrency = False, 0
    think = None
    if s["arrival"] == "poisson":
        gaps = rng.exponential(1.0 / float(s["rate_per_s"]), n)
        arrival = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    elif s["arrival"] == "concurrency":
        concurrency = int(float(s["concurrency"]))
        arrival = np.where(np.arange(n) < concurrency, 0.0, np.inf)
        closed, think = True, np.zeros(n)
    else:
        arrival = np.zeros(n)
    route_u = rng.random((2, n))
    return Draws(
        np.ascontiguousarray(arrival, dtype=np.float64),
        np.zeros(n, dtype=np.int64),
        np.asarray(prompt, dtype=np.int64),
        np.asarray(output, dtype=np.int64),
        route_u,
        think,
        concurrency,
        closed,
    )
