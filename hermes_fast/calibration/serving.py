"""Measured serving runs against simulated ones: each public run of ``hermes_fast/data/serving/serving_runs.csv``
becomes a scenario (stack, device, model, formats, layout, the server's flags) and the requests its benchmark
harness sent, is simulated a few times, and its metrics are computed as the harness computes them.

- :func:`serving_runs` reads the file and groups its rows (one per metric) into runs, one per setting;
- :func:`skip_reason` says why a run cannot be simulated (disaggregated or wide-EP layouts, attention data
  parallelism, an engine behaviour the loop has no model of); such runs are listed, never dropped silently;
- :func:`serving_scenario` is the run's scenario (a mapping :func:`hermes_fast.load_scenario` reads), and
  :func:`harness_draws` the requests of one replicate: arrivals as the harness sends them (Poisson from t = 0;
  ``--max-concurrency`` / batch-1 latency runs as a closed loop without think time; offline runs all at t = 0)
  and lengths as its dataset draws them (``random``: fixed lengths, or uniform within ``--random-range-ratio``;
  ShareGPT: pairs of the shipped per-request lengths, :data:`SHAREGPT_LENGTHS`);
- :func:`predict_serving` simulates runs (``num_prompts`` requests each, several replicates averaged),
  :func:`harness_metrics` computes one replicate's metrics, :func:`serving_errors` sets them beside the
  measured values and :func:`error_summary` gives median / p90 |error| and the signed mean per stack and metric.

Stack costs (``frontend_s``, ``step_overhead_s``, ...) come from the stack entries; ``costs=`` replaces them per
entry (what ``benchmarks/fit_stacks.py`` varies): :func:`prepare_run` builds a run's pools once and
:func:`simulate_prepared` re-runs them with other costs without rebuilding.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config.base import ConfigError
from ..kernels import layout as L
from ..kernels.serving import Outcome, Status
from ..kernels.serving import state as loop
from ..metrics import itl_quantiles
from ..pools import ServingSetup, build_serving
from ..resolve import resolve_scenario
from ..simulate import run_serving
from ..workload import Draws, rng_for
from .calibration import shipped_calibrations

__all__ = [
    "SERVING_RUNS",
    "SHAREGPT_LENGTHS",
    "METRICS",
    "FIT_METRICS",
    "REPORT_METRICS",
    "COST_FIELDS",
    "ServingRun",
    "PreparedRun",
    "serving_runs",
    "stack_entry",
    "skip_reason",
    "serving_scenario",
    "harness_draws",
    "harness_metrics",
    "prepare_run",
    "simulate_prepared",
    "predict_serving",
    "serving_errors",
    "error_summary",
    "default_replicates",
]

_DATA = Path(__file__).resolve().parent.parent / "data" / "serving"
SERVING_RUNS = _DATA / "serving_runs.csv"  # 801 rows: 102 runs x their metrics (see SOURCES.md there)
# 500 (prompt, output) token counts of vLLM benchmark_serving's ShareGPT sample (seed 0, --num-prompts 500,
# DeepSeek-R1 tokenizer), from simon-mo/vLLM-Benchmark's saved result JSON (see SOURCES.md)
SHAREGPT_LENGTHS = _DATA / "sharegpt_lengths.csv"

# the harness metrics a run may report (SI units) and what a prediction gives for each
METRICS = (
    "ttft_mean_s",
    "ttft_median_s",
    "ttft_p99_s",
    "tpot_mean_s",
    "tpot_median_s",
    "tpot_p99_s",
    "itl_mean_s",
    "itl_median_s",
    "itl_p99_s",
    "e2e_median_s",
    "output_throughput_token_per_s",
    "request_throughput_per_s",
    "benchmark_duration_s",
)
FIT_METRICS = (  # what the stack costs are fitted to (p99s of 50-request runs are too noisy)
    "ttft_mean_s",
    "ttft_median_s",
    "tpot_mean_s",
    "itl_mean_s",
    "itl_median_s",
    "output_throughput_token_per_s",
)
REPORT_METRICS = {  # the target metrics: name in reports -> the run metrics that stand for it, in order
    "mean TTFT": ("ttft_mean_s", "ttft_median_s"),
    "p99 TTFT": ("ttft_p99_s",),
    "mean ITL/TPOT": ("itl_mean_s", "tpot_mean_s", "itl_median_s", "tpot_median_s"),
    "output throughput": ("output_throughput_token_per_s",),
}
COST_FIELDS = (
    "frontend_s",
    "step_overhead_s",
    "sequence_overhead_s",
    "step_overhead_per_tp_rank_s",
    "eager_launch_s_per_layer",
)

# columns that identify a run (every other column but metric, value and notes)
_RUN_KEY = (
    "stack",
    "stack_version",
    "device",
    "n_devices",
    "model",
    "model_hf",
    "dtype",
    "kv_dtype",
    "tp",
    "pp",
    "input_tokens",
    "output_tokens",
    "dataset",
    "arrival",
    "rate_per_s",
    "concurrency",
    "num_prompts",
    "frontend",
    "harness",
    "server_args",
    "run_date",
    "source",
    "split",
)
# checkpoints whose architecture is a catalog model the file's `model` column leaves empty
_MODELS_BY_CHECKPOINT = {"Qwen/QwQ-32B": "qwq-32b", "neuralmagic/Llama-3.2-3B-Instruct-FP8": "llama-3.2-3b"}
# ShareGPT on a Llama-3 tokenizer: the SGLang 0.3.0 / vLLM 0.6.0 README's four offline runs (5000 prompts) all
# give output tokens / requests = 194.3 (4281.51 / 22.03, 4132.37 / 21.27, 3856.01 / 19.84, 3700.64 / 19.04),
# against 215.3 for the shipped DeepSeek-R1-tokenizer sample: both lengths are scaled by that ratio for them
_SHAREGPT_LLAMA3_OUTPUT_MEAN = 194.3


@dataclass(frozen=True)
class ServingRun:
    """One measured run: its settings (the CSV's columns as text) and its metrics (SI units)."""

    index: int  # order of first appearance in the file
    settings: Mapping[str, str]
    metrics: Mapping[str, float]
    notes: str = ""

    @property
    def stack(self) -> str:
        return self.settings["stack"]

    @property
    def split(self) -> str:
        return self.settings["split"]

    @property
    def key(self) -> int:
        """A stable integer of the run's settings (its seed stream: independent of which runs are simulated)."""
        text = "|".join(f"{k}={self.settings.get(k, '')}" for k in _RUN_KEY)
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)

    def number(self, name: str) -> float | None:
        v = self.settings.get(name, "")
        return float(v) if v not in ("", None) else None

    @property
    def label(self) -> str:
        s = self.settings
        model = catalog_model(self) or s.get("model_hf", "")
        if s["dataset"] == "random":
            lengths = f"{_int(s['input_tokens'])}/{_int(s['output_tokens'])}"
        else:
            lengths = s["dataset"] or "?"
        if s["arrival"] == "poisson":
            load = f"{_num(s['rate_per_s'])} req/s"
        elif s["arrival"] == "concurrency":
            load = f"conc {_int(s['concurrency'])}"
        else:
            load = "offline"
        tp = f"TP{_int(s['tp'])}" if s.get("tp") else "?"
        return (
            f"{s['stack']} {s['stack_version'].split(' ')[0]} {model} {s['dtype']} {s['device']} {tp} {lengths} {load}"
        )


def _int(v: str) -> str:
    return str(int(float(v))) if v not in ("", None) else "?"


def _num(v: str) -> str:
    return f"{float(v):g}" if v not in ("", None) else "?"


def serving_runs(path: str | Path | None = None) -> list[ServingRun]:
    """The runs of a serving-measurements CSV (default: the shipped :data:`SERVING_RUNS`), in file order.

    Parameters
    ----------
    path : str, pathlib.Path or None, default None
        A CSV in the schema of ``hermes_fast/data/serving/serving_runs.csv`` (``SOURCES.md`` there): one row per
        run and metric, ``metric`` and ``value`` in SI units.

    Returns
    -------
    list of ServingRun
        Rows grouped by every column but ``metric``, ``value`` and ``notes``.

    Raises
    ------
    ConfigError
        For a missing file, a missing column or a value that is not a number.

    Examples
    --------
    >>> runs = serving_runs()
    >>> len(runs), sum(len(r.metrics) for r in runs)
    (102, 801)
    """
    p = Path(path) if path is not None else SERVING_RUNS
    if not p.is_file():
        raise ConfigError("serving runs", str(p), "an existing CSV file")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (*_RUN_KEY, "metric", "value") if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{p.name}", missing, "the serving_runs.csv columns (missing these)")
        groups: dict[tuple, dict] = {}
        for line, row in enumerate(reader, start=2):
            key = tuple(row[c] for c in _RUN_KEY)
            g = groups.setdefault(key, {"settings": {c: row[c] for c in _RUN_KEY}, "metrics": {}, "notes": ""})
            try:
                g["metrics"][row["metric"]] = float(row["value"])
            except ValueError:
                raise ConfigError(f"{p.name}:row {line}.value", row["value"], "a number") from None
            g["notes"] = g["notes"] or row.get("notes", "")
    return [ServingRun(i, g["settings"], g["metrics"], g["notes"]) for i, g in enumerate(groups.values())]


# ------------------------------------------------------------------------------------------ what a run is


def catalog_model(run: ServingRun) -> str | None:
    """The catalog model a run's checkpoint has the architecture of (None: none in the catalog)."""
    return run.settings["model"] or _MODELS_BY_CHECKPOINT.get(run.settings["model_hf"])


def stack_entry(run: ServingRun) -> str | None:
    """The catalog stack that describes the run's version (None: no entry does).

    vLLM 0.8-0.10 (V1 without async scheduling) -> ``vllm-0.8``, later -> ``vllm``; SGLang 0.3 (no overlap
    scheduler) -> ``sglang-0.3``, 0.4 and later -> ``sglang``; TensorRT-LLM's TensorRT engine flow (0.16) ->
    ``trtllm-engine``, its PyTorch backend -> ``trtllm``; vLLM's V0 engine -> None."""
    stack, version = run.stack, run.settings["stack_version"]
    if stack == "vllm":
        if "V0" in version:
            return None
        m = re.match(r"0\.(\d+)", version)
        return "vllm-0.8" if m and int(m.group(1)) <= 10 else "vllm"
    if stack == "sglang":
        return "sglang-0.3" if version.startswith("0.3") else "sglang"
    if stack == "trtllm":
        return "trtllm-engine" if "TensorRT engine" in version else "trtllm"
    return None


def skip_reason(run: ServingRun) -> str | None:
    """Why a run cannot be simulated, or None when it can."""
    s = run.settings
    if run.metrics and not any(m in METRICS for m in run.metrics):
        return (
            "expert-parallel / disaggregated layout the catalog cannot express (DP attention + wide EP over "
            "several nodes, prefill and decode measured apart); its metrics are per-node or per-GPU throughputs"
        )
    if s["tp"] == "" or s["num_prompts"] == "":
        return "no parallel layout or request count stated"
    if stack_entry(run) is None:
        return (
            "vLLM V0 engine with --num-scheduler-steps 10 (multi-step scheduling: new requests join every 10 "
            "steps and tokens stream in 10-token bursts): a scheduler the serving loop has no model of"
        )
    if "--enable-dp-attention" in s["server_args"]:
        return (
            "SGLang data-parallel attention (--enable-dp-attention --dp-size 8: 8 attention replicas, MoE TP8): "
            "a layout the catalog cannot express"
        )
    if catalog_model(run) is None:
        return f"model {s['model_hf']} not in the catalog"
    if s["dataset"] not in ("random", "sharegpt"):
        return f"dataset {s['dataset']!r} without per-request lengths"
    if s["dataset"] == "random" and (s["input_tokens"] == "" or s["output_tokens"] == ""):
        return "random dataset without its lengths"
    return None


def _flag(args: str, *names: str) -> float | None:
    """The number after one of ``names`` in a command line (``--x 5``, ``--x=5`` or ``x 5`` in prose)."""
    for name in names:
        m = re.search(rf"{re.escape(name)}[ =](\d+(?:\.\d+)?)", args)
        if m:
            return float(m.group(1))
    return None


def _trt_graph_sizes(largest: int) -> list[int]:
    """TensorRT-LLM PyTorch backend's padded CUDA-graph batch sizes up to ``largest`` (cuda_graph_padding_enabled:
    [1, 2, 4] + multiples of 8 up to 128, then powers of two)."""
    sizes = [1, 2, 4] + list(range(8, min(largest, 128) + 1, 8))
    b = 256
    while b <= largest:
        sizes.append(b)
        b *= 2
    return [s for s in sizes if s <= largest]


@dataclass(frozen=True)
class _Layout:
    """What a run's server flags change, beyond its stack's defaults."""

    engine: dict = field(default_factory=dict)  # engine fields
    batching: dict = field(default_factory=dict)
    stack: dict = field(default_factory=dict)  # stack fields (a scenario stack based on the entry)
    kv_free_fraction: float | None = None  # TensorRT-LLM: KV = this share of the memory left after the weights


def _layout(run: ServingRun) -> _Layout:
    """The run's engine and stack fields read from its server flags and the stack version's documented defaults
    (sources in stacks.yaml and stack_facts.csv)."""
    s, entry = run.settings, stack_entry(run)
    args = s["server_args"]
    tp = int(float(s["tp"]))
    out = _Layout()
    if s["frontend"] == "in_process":  # trtllm-bench drives the executor directly: no API server
        out.stack["frontend_s"] = 0.0
    if entry in ("sglang", "sglang-0.3"):
        mem = _flag(args, "--mem-frac", "--mem-fraction-static")
        # server_args.py mem_fraction_static by TP when not given
        out.engine["memory_utilization"] = mem or (0.88 if tp < 2 else 0.87 if tp < 4 else 0.85 if tp < 8 else 0.81)
        # a prompt over max_prefill_tokens is still admitted (the bound is at least the model's context) and
        # prefilled in chunked_prefill_size chunks, iterations without decodes (prefill first, no mixed chunks):
        # as one prefill-only iteration of the whole prompt here, the same work with decodes stalled as long
        if s["dataset"] == "random" and s["input_tokens"]:
            longest = int(math.ceil(float(s["input_tokens"]) * (1 + _range_ratio(run))))
            if longest > 16384:
                out.engine["max_batched_tokens"] = longest
        if entry == "sglang":  # 0.4.x: cuda_graph_max_bs 160 on 80 GB GPUs, 256 on H200 (stack_facts.csv)
            top = 256 if s["device"] == "h200_sxm" else 160
            out.stack["cuda_graph_sizes"] = [1, 2, 4] + list(range(8, top + 1, 8))
    if entry in ("trtllm", "trtllm-engine"):
        out = replace(out, kv_free_fraction=_flag(args, "--kv_cache_free_gpu_memory_fraction") or 0.90)
        tokens = _flag(args, "--max_num_tokens", "max_num_tokens")
        batch = _flag(args, "--max_batch_size", "max_batch_size")
        if tokens:
            out.engine["max_batched_tokens"] = int(tokens)
        if batch:
            out.batching["max_batch_size"] = int(batch)
        if entry == "trtllm":
            graphs = "use_cuda_graph" in args
            largest = int(_flag(args, "cuda_graph_max_batch_size") or 128)
            out.stack["cuda_graph_sizes"] = _trt_graph_sizes(largest) if graphs else []
            out.stack["cuda_graph_padding"] = "cuda_graph_padding_enabled" in args
            if "--ep_size" in args:
                out.engine["ep"] = int(_flag(args, "--ep_size"))
    return out


def _dtypes(run: ServingRun) -> dict:
    d, kv = run.settings["dtype"], run.settings["kv_dtype"] or "bf16"
    if d == "fp8_block":
        return {"weight": "fp8", "activation": "fp8", "kv": kv, "gemm_scaling": "block"}
    return {"weight": d, "activation": d, "kv": kv}


def serving_scenario(run: ServingRun, costs: Mapping[str, float] | None = None) -> dict:
    """The scenario of a measured run, as a mapping (``hf.load_scenario`` / ``hf.simulate`` read it).

    One engine on the run's device and layout with the run's stack entry (:func:`stack_entry`), as a scenario
    stack ``run`` based on it when the run's flags change stack fields or ``costs`` replaces its host and
    front-end costs; the engine fields its flags set; the workload: ``num_prompts`` requests, Poisson at
    ``rate_per_s``, a closed loop of ``concurrency`` clients without think time, or (offline) a closed loop of
    ``num_prompts`` clients (every request sent at t = 0); lengths fixed (``random``), uniform within
    +-15% (the FP8-KV blog's ``--random-range-ratio 0.15``), or ShareGPT's shipped per-request lengths (each
    column's values; :func:`harness_draws` keeps the pairs, and what validation runs). No warm-up requests.

    Raises
    ------
    ConfigError
        When the run cannot be simulated (:func:`skip_reason`).

    Examples
    --------
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
    if "ep" in lay.engine:
        parallel["ep"] = lay.engine["ep"]
    engine: dict = {
        "name": "engine",
        "model": catalog_model(run),
        "device": s["device"],
        "stack": entry,
        "parallel": parallel,
        "dtypes": _dtypes(run),
    }
    engine.update({k: v for k, v in lay.engine.items() if k != "ep"})
    if lay.batching:
        engine["batching"] = dict(lay.batching)
    sc: dict = {"name": f"serving run {run.index}: {run.label}", "engines": [engine]}
    stack = dict(lay.stack)
    stack.update(costs or {})
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
        prompt, output = int(float(s["input_tokens"])), int(float(s["output_tokens"]))
        ratio = _range_ratio(run)
        if ratio:
            lengths = {"prompt_tokens": _uniform(prompt, ratio), "output_tokens": _uniform(output, ratio)}
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


def _range_ratio(run: ServingRun) -> float:
    """``--random-range-ratio`` of a random-dataset run as vLLM >= 0.10 reads it (lengths uniform in
    [L (1 - r), L (1 + r)]); 0: fixed lengths (vLLM 0.8's benchmark_serving default 1.0 drew
    randint(L x 1.0, L), SGLang's bench_serving ``--random-range-ratio 1``, trtllm-bench's stdev 0)."""
    if "+-15%" in run.notes:  # the FP8-KV blog: ~20k / ~2k tokens with +-15% variance
        return 0.15
    return 0.0


def _uniform(center: int, ratio: float) -> dict:
    return {
        "dist": "uniform",
        "min": int(math.floor(center * (1 - ratio))),
        "max": int(math.ceil(center * (1 + ratio))),
    }


_SHAREGPT_CACHE: dict[str, np.ndarray] = {}


def _sharegpt_pairs() -> np.ndarray:
    """int64[n, 2]: the shipped ShareGPT (prompt, output) pairs, in the harness's order."""
    if "pairs" not in _SHAREGPT_CACHE:
        with open(SHAREGPT_LENGTHS, newline="") as f:
            rows = [(int(r["prompt_tokens"]), int(r["output_tokens"])) for r in csv.DictReader(f)]
        _SHAREGPT_CACHE["pairs"] = np.array(rows, dtype=np.int64)
    return _SHAREGPT_CACHE["pairs"]


def _sharegpt_scale(run: ServingRun) -> float:
    """1 for runs with the shipped sample's DeepSeek tokenizer; for Llama-3-tokenizer runs (SGLang's bench_serving
    README, whose offline runs give 194.3 output tokens per request) the ratio of means (see module constant)."""
    if catalog_model(run) == "deepseek-v3":
        return 1.0
    return _SHAREGPT_LLAMA3_OUTPUT_MEAN / float(_sharegpt_pairs()[:, 1].mean())


def harness_draws(run: ServingRun, rng: np.random.Generator, n: int | None = None) -> Draws:
    """The requests one replicate of the run sends, as its harness sends them.

    Arrivals: Poisson runs send the first request at t = 0 and each next one an exponential gap later (vLLM's
    ``benchmark_serving`` and SGLang's ``bench_serving``: yield, then sleep); ``concurrency`` runs are a closed
    loop of that many clients without think time (``--max-concurrency`` with an infinite rate; trtllm-bench's
    batch-1 latency run is concurrency 1); offline runs send every request at t = 0. Lengths: a random dataset's
    fixed lengths (or uniform within the run's range ratio); ShareGPT: the shipped pairs in order when the run
    has as many prompts as the sample (the very requests of those runs), else pairs resampled with replacement;
    Llama-3-tokenizer runs scale both lengths (:func:`_sharegpt_scale`).

    Examples
    --------
    >>> run = next(r for r in serving_runs() if r.settings["arrival"] == "poisson" and r.settings["input_tokens"])
    >>> d = harness_draws(run, rng_for(0))
    >>> float(d.arrival_s[0]), d.arrival_s.size, bool((np.diff(d.arrival_s) > 0).all())
    (0.0, 50, True)
    """
    s = run.settings
    n = int(float(s["num_prompts"])) if n is None else n
    if s["dataset"] == "random":
        prompt_len, output_len = int(float(s["input_tokens"])), int(float(s["output_tokens"]))
        ratio = _range_ratio(run)
        if ratio:
            lo, hi = _uniform(prompt_len, ratio)["min"], _uniform(prompt_len, ratio)["max"]
            prompt = rng.integers(lo, hi + 1, n)
            lo, hi = _uniform(output_len, ratio)["min"], _uniform(output_len, ratio)["max"]
            output = rng.integers(lo, hi + 1, n)
        else:
            prompt, output = np.full(n, prompt_len), np.full(n, output_len)
    else:
        pairs = _sharegpt_pairs()
        idx = np.arange(n) if n == pairs.shape[0] else rng.integers(0, pairs.shape[0], n)
        scale = _sharegpt_scale(run)
        prompt = np.maximum(np.rint(pairs[idx, 0] * scale), 1)
        output = np.maximum(np.rint(pairs[idx, 1] * scale), 1)
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


def harness_metrics(run: Outcome) -> dict[str, float]:
    """One replicate's metrics as vLLM's ``benchmark_serving`` / SGLang's ``bench_serving`` compute them.

    Over completed requests: TTFT = first token - send (the front end included), E2E = completion - send; TPOT
    per request (E2E - TTFT) / (output - 1) for outputs over one token, then mean / median / p99 (numpy's linear
    percentile); ITL: every gap between a request's successive tokens pooled over requests (mean exact, median
    and p99 from the loop's histogram, 1% bins); throughputs over the benchmark's duration, t = 0 (the first
    send) to the last completion. Also ``queue_mean_s``, the mean wait from send to first admission to a batch
    (front end included; not a harness metric)."""
    done = run.status == Status.DONE
    sent, first, end = run.sent_s[done], run.first_token_s[done], run.done_s[done]
    out = run.answer_tokens[done].astype(np.float64)
    res = dict.fromkeys((*METRICS, "queue_mean_s"), math.nan)
    if not done.any():
        return res
    ttft, e2e = first - sent, end - sent
    res["ttft_mean_s"], res["ttft_median_s"] = float(ttft.mean()), float(np.median(ttft))
    res["ttft_p99_s"] = float(np.percentile(ttft, 99))
    many = out > 1
    if many.any():
        tpot = (e2e[many] - ttft[many]) / (out[many] - 1)
        res["tpot_mean_s"], res["tpot_median_s"] = float(tpot.mean()), float(np.median(tpot))
        res["tpot_p99_s"] = float(np.percentile(tpot, 99))
    if run.itl_count > 0:
        q = itl_quantiles(run.itl_histogram)  # QUANTILES = (0.5, 0.9, 0.95, 0.99)
        res["itl_mean_s"] = run.itl_sum_s / run.itl_count
        res["itl_median_s"], res["itl_p99_s"] = float(q[0]), float(q[3])
    res["e2e_median_s"] = float(np.median(e2e))
    res["queue_mean_s"] = float(np.mean(run.admit_s[done] - sent))  # not a harness metric: the wait for a batch
    start = min(float(run.sent_s.min()), 0.0)
    duration = float(end.max()) - start
    res["benchmark_duration_s"] = duration
    res["output_throughput_token_per_s"] = float(out.sum()) / duration if duration > 0 else math.nan
    res["request_throughput_per_s"] = float(done.sum()) / duration if duration > 0 else math.nan
    return res


# ---------------------------------------------------------------------------------------------- simulating


def default_replicates(run: ServingRun) -> int:
    """Replicates for a run: about 1000 simulated requests in all, 2 to 8 (short runs are noisy: a 50-request
    run at 10 req/s is a 5-s ramp)."""
    n = int(float(run.settings["num_prompts"]))
    return int(min(8, max(2, round(1000 / n))))


def _calibration(run: ServingRun, calibration) -> object:
    """``calibration`` for this run: ``"stack"`` picks the device's ``-vllm`` calibration for vLLM runs where one is
    shipped (else the default); anything else passes through (``"default"``, ``"none"``, a name or file)."""
    if calibration != "stack":
        return calibration
    name = f"{run.settings['device']}-vllm"
    if stack_entry(run) in ("vllm", "vllm-0.8") and name in shipped_calibrations():
        return name
    return "default"


@dataclass(frozen=True)
class PreparedRun:
    """A run with its pools built once (:func:`prepare_run`): re-run with other stack costs by
    :func:`simulate_prepared` without rebuilding."""

    run: ServingRun
    setup: ServingSetup
    costs: Mapping[str, float]  # the stack costs the setup was built with (after the entry's and the run's own)
    n_layers: int
    tp: int
    calibration: str


def _stack_costs(resolved) -> dict[str, float]:
    eng = resolved.engines[0]
    eff, st = eng.device.efficiency, eng.stack
    return {
        "frontend_s": st.frontend_s,
        "step_overhead_s": eff.step_overhead_s,
        "sequence_overhead_s": eff.sequence_overhead_s,
        "step_overhead_per_tp_rank_s": eff.step_overhead_per_tp_rank_s,
        "eager_launch_s_per_layer": st.eager_launch_s_per_layer,
    }


def prepare_run(run: ServingRun, calibration="default", costs: Mapping[str, float] | None = None) -> PreparedRun:
    """Resolve and compile a run's scenario (:func:`serving_scenario`) once.

    TensorRT-LLM runs size KV as ``kv_cache_free_gpu_memory_fraction`` of the memory left after the weights and
    the activation reserve: the engine's ``memory_utilization`` is set to give that KV."""
    cal = _calibration(run, calibration)
    sc = serving_scenario(run, costs)
    resolved = resolve_scenario(sc, cal)
    setup = build_serving(resolved)
    frac = _layout(run).kv_free_fraction
    if frac is not None:
        pool = setup.pools[0]
        ce, mem = pool.compiled, pool.device.memory_bytes
        fixed = ce.weights_bytes + ce.activation_reserve_bytes
        util = min(1.0, (fixed + frac * max(mem - fixed, 0.0)) / mem)
        sc["engines"][0]["memory_utilization"] = util
        resolved = resolve_scenario(sc, cal)
        setup = build_serving(resolved)
    eng = resolved.engines[0]
    return PreparedRun(
        run,
        setup,
        _stack_costs(resolved),
        eng.model.n_layers,
        eng.engine.parallel.tp,
        resolved.describe_calibrations([eng.engine.device]),
    )


def with_costs(prep: PreparedRun, costs: Mapping[str, float] | None) -> ServingSetup:
    """The prepared pools with stack costs replaced (fields of :data:`COST_FIELDS`; others kept): the slots
    :func:`hermes_fast.compile.compile_engine` and :func:`hermes_fast.pools.pool_arrays` fill from them."""
    if not costs:
        return prep.setup
    c = {**prep.costs, **costs}
    params, pf = prep.setup.params.copy(), prep.setup.pool_float.copy()
    params[0, L.OH_STEP] = c["step_overhead_s"] + (prep.tp - 1) * c["step_overhead_per_tp_rank_s"]
    params[0, L.OH_SEQ] = c["sequence_overhead_s"]
    if params[0, L.GRAPH_COUNT] > 0:
        params[0, L.GRAPH_EAGER_S] = c["eager_launch_s_per_layer"] * prep.n_layers
    pf[loop.PF_FRONTEND_S, 0] = c["frontend_s"]
    return replace(prep.setup, params=params, pool_float=pf)


def simulate_prepared(
    prep: PreparedRun,
    costs: Mapping[str, float] | None = None,
    replicates: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The run's metrics (:func:`harness_metrics`) averaged over replicates; replicate ``r`` draws from
    ``rng_for(seed, run.key, r)``, so the objective of a fit is deterministic and common to every cost tried."""
    setup = with_costs(prep, costs)
    reps = default_replicates(prep.run) if replicates is None else replicates
    per = []
    for r in range(reps):
        draws = harness_draws(prep.run, rng_for(seed, prep.run.key, r))
        per.append(harness_metrics(run_serving(setup, draws)))
    return {
        m: float(np.nanmean([p[m] for p in per])) if any(np.isfinite(p[m]) for p in per) else math.nan for m in per[0]
    }


def predict_serving(
    runs: Iterable[ServingRun],
    calibration="default",
    costs: Mapping[str, Mapping[str, float]] | None = None,
    replicates: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Simulate measured runs.

    Parameters
    ----------
    runs : iterable of ServingRun
        From :func:`serving_runs`.
    calibration : str, default "default"
        Kernel calibrations: ``"default"`` (the devices' shipped ones), ``"none"``, ``"stack"`` (the ``-vllm``
        calibrations for vLLM runs), or a calibration name or file.
    costs : mapping or None, default None
        Per stack entry, host and front-end costs replacing the entry's (fields of :data:`COST_FIELDS`).
    replicates : int or None, default None
        Replicates per run (None: :func:`default_replicates`).
    seed : int, default 0

    Returns
    -------
    list of dict
        Per run: ``run`` (the ServingRun), ``skip`` (why it was not simulated, else None), ``predicted``
        (metric -> value), ``calibration`` (what the device used), ``replicates``.
    """
    out = []
    for run in runs:
        why = skip_reason(run)
        if why is not None:
            out.append({"run": run, "skip": why, "predicted": {}, "calibration": "", "replicates": 0})
            continue
        entry_costs = (costs or {}).get(stack_entry(run))
        prep = prepare_run(run, calibration, entry_costs)
        reps = default_replicates(run) if replicates is None else replicates
        pred = simulate_prepared(prep, None, reps, seed)
        out.append({"run": run, "skip": None, "predicted": pred, "calibration": prep.calibration, "replicates": reps})
    return out


# ---------------------------------------------------------------------------------------------- errors


def serving_errors(predictions: Sequence[Mapping]) -> list[dict]:
    """One row per run and measured metric: predicted beside measured, ``error`` = predicted / measured - 1;
    skipped runs give one row each with their ``skip`` reason."""
    rows = []
    for p in predictions:
        run = p["run"]
        base = {
            "run": run.index,
            "stack": run.stack,
            "stack_entry": stack_entry(run) or "",
            "stack_version": run.settings["stack_version"],
            "split": run.split,
            "label": run.label,
        }
        if p["skip"]:
            rows.append({**base, "metric": "", "measured": math.nan, "predicted": math.nan, "error": math.nan,
                         "skip": p["skip"]})  # fmt: skip
            continue
        for metric, measured in run.metrics.items():
            pred = p["predicted"].get(metric, math.nan)
            err = pred / measured - 1.0 if measured > 0 and np.isfinite(pred) else math.nan
            rows.append({**base, "metric": metric, "measured": measured, "predicted": pred, "error": err, "skip": ""})
    return rows


def _report_rows(rows: Sequence[Mapping]) -> list[tuple[str, Mapping]]:
    """(report metric, row): each run counts once per report metric, by the first of its run metrics it has."""
    by_run: dict[int, dict[str, Mapping]] = {}
    for r in rows:
        if not r["skip"] and np.isfinite(r["error"]):
            by_run.setdefault(r["run"], {})[r["metric"]] = r
    out = []
    for metrics in by_run.values():
        for name, options in REPORT_METRICS.items():
            pick = next((metrics[m] for m in options if m in metrics), None)
            if pick is not None:
                out.append((name, pick))
    return out


def error_summary(rows: Sequence[Mapping], by: str = "report") -> list[dict]:
    """Median and p90 |error| and the signed mean, per stack entry, split and metric.

    ``by="report"``: the issue's four metrics (:data:`REPORT_METRICS`: a run without mean TTFT counts its median
    TTFT, without mean ITL its mean TPOT or medians); ``by="metric"``: every run metric apart."""
    groups: dict[tuple, list[float]] = {}
    if by == "report":
        items = _report_rows(rows)
    else:
        items = [(r["metric"], r) for r in rows if not r["skip"] and np.isfinite(r["error"])]
    for name, r in items:
        groups.setdefault((r["stack_entry"], r["split"], name), []).append(r["error"])
    order = list(REPORT_METRICS) if by == "report" else list(METRICS)
    out = []
    for (entry, split, name), errs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]) if kv[0][2] in order else 99)
    ):
        e = np.asarray(errs)
        out.append(
            {
                "stack_entry": entry,
                "split": split,
                "metric": name,
                "runs": int(e.size),
                "median_abs_error": float(np.median(np.abs(e))),
                "p90_abs_error": float(np.percentile(np.abs(e), 90)),
                "signed_mean_error": float(e.mean()),
            }
        )
    return out
