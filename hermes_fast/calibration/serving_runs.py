"""Measured serving runs: ``hermes_fast/data/serving/serving_runs.csv`` read and grouped into runs, and which of
them the simulation can take.

- :func:`serving_runs` reads the file and groups its rows (one per metric) into runs, one per setting;
- :func:`catalog_model` and :func:`stack_entry` name the catalog model and stack entry (by version) of a run;
- :func:`skip_reason` says why a run cannot be simulated (disaggregated or wide-EP layouts, attention data
  parallelism, an engine behaviour the loop has no model of); such runs are listed, never dropped silently.

:mod:`~hermes_fast.calibration.serving_scenario` turns a run into its scenario and requests;
:mod:`~hermes_fast.calibration.serving` simulates them and sets the metrics beside the measured ones.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.base import ConfigError

__all__ = [
    "SERVING_RUNS",
    "SHAREGPT_LENGTHS",
    "METRICS",
    "FIT_METRICS",
    "REPORT_METRICS",
    "COST_FIELDS",
    "command_flag",
    "RUN_KEY",
    "ServingRun",
    "serving_runs",
    "catalog_model",
    "stack_entry",
    "skip_reason",
    "SLOW_DEVICE_SOURCES",
    "COLD_SERVER_SWEEPS",
    "run_note",
]

_DATA = Path(__file__).resolve().parent.parent / "data" / "serving"
SERVING_RUNS = _DATA / "serving_runs.csv"  # 2324 rows: 236 runs x their metrics (see SOURCES.md there)
# 500 (prompt, output) token counts of vLLM benchmark_serving's ShareGPT sample (seed 0, --num-prompts 500,
# DeepSeek-R1 tokenizer), from simon-mo/vLLM-Benchmark's saved result JSON (see SOURCES.md)
SHAREGPT_LENGTHS = _DATA / "sharegpt_lengths.csv"

# pages whose device measured slower than the catalog's: GPUStack's single-GPU H100 throughput pages run compute-bound
# work ~1.7x slower than an H100 SXM under every engine they test (32k-token prompts: vLLM 0.11 gpt-oss-20b +105%,
# Qwen3-32B +69% throughput predicted; Qwen3-14B ShareGPT: vLLM +145%, TensorRT-LLM +94%), where the same lab's A100
# pages and its 2- and 8-GPU H100 nodes read -6% to +17% on the same work; and it holds more than 80 GB: vLLM 0.11
# served Qwen3-32B there at its default 40,960-token length, which an 80 GB H100's KV cannot hold after vLLM's
# profile (llm-d's log of the model on one: 4.45 GiB of KV, max-model-len 32000 failed) (benchmarks/RESULTS.md,
# serving stacks, fifteenth and sixteenth steps). No fit takes their runs in; validation reports them, and its
# medians without them.
SLOW_DEVICE_SOURCES = (
    "performance-lab/gpt-oss-20b/h100.md",
    "performance-lab/qwen3-14b/h100.md",
    "performance-lab/qwen3-32b/h100.md",
)

# sweeps whose first scenario runs on a server just started: (prompt, output) tokens of that scenario. simon-mo /
# vLLM-Benchmark's `just run-sweeps` runs 1000/2000 first (Justfile), and its README warns that "the very first run
# will be slow" (SGLang's DeepGEMM JIT; LOG.md 2025-04-18: "DeepGEMM JIT code generation ... as requests arrive",
# output throughput halved until the kernels are cached on disk). Kernels compiled on first use are cached on disk, so
# the sweep's first scenario pays for them and the later ones find them. The runs show it where a cache was cold:
# vLLM 0.8.4 DeepSeek-R1 on Nebius's H200 reads a mean TTFT of 1.52 s at 1000/2000 against 0.31 s on Berkeley's,
# its other four scenarios' within 2-20% of Berkeley's; SGLang 0.4.4 QwQ-32B on two H200s, 3.78 s against 0.30 s,
# their 10000/500 and 32000/100 within 2.3%. Their 5000/1000 differ too (19.0 s against 6.9 s: LOG.md found SGLang's
# figures unreproducible across host CPUs), which no note covers; TensorRT-LLM's server was restarted before every
# scenario (LOG.md), so its later scenarios may carry start-up work as well. Only what the README documents is
# noted. No fit takes the noted runs in; validation reports them, and its medians without them.
COLD_SERVER_SWEEPS = {"simon-mo/vLLM-Benchmark": (1000.0, 2000.0)}

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
    "frontend_serial_s",
    "frontend_token_s",
    "step_overhead_s",
    "sequence_overhead_s",
    "step_overhead_per_tp_rank_s",
    "eager_launch_s_per_layer",
    "prefill_attention_extra",  # (a fraction, not seconds)
    "sink_attention_extra",  # (likewise: None in an entry without that backend)
    "cuda_core_decode_extra",  # (likewise)
    "moe_compute_extra",  # (likewise)
    "moe_memory_extra",  # (likewise)
)

# columns that identify a run (every other column but metric, value and notes)
RUN_KEY = (
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
        text = "|".join(f"{k}={self.settings.get(k, '')}" for k in RUN_KEY)
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)

    def number(self, name: str) -> float | None:
        v = self.settings.get(name, "")
        return float(v) if v not in ("", None) else None

    @property
    def lengths(self) -> tuple[float, float] | None:
        """(input, output) tokens per request as the run states them (None where either is not given)."""
        prompt, output = self.number("input_tokens"), self.number("output_tokens")
        return None if prompt is None or output is None else (prompt, output)

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
    (236, 2324)
    """
    p = Path(path) if path is not None else SERVING_RUNS
    if not p.is_file():
        raise ConfigError("serving runs", str(p), "an existing CSV file")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in (*RUN_KEY, "metric", "value") if c not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{p.name}", missing, "the serving_runs.csv columns (missing these)")
        groups: dict[tuple, dict] = {}
        for line, row in enumerate(reader, start=2):
            key = tuple(row[c] for c in RUN_KEY)
            g = groups.setdefault(key, {"settings": {c: row[c] for c in RUN_KEY}, "metrics": {}, "notes": ""})
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


def command_flag(args: str, *names: str) -> float | None:
    """The number after one of ``names`` in a command line (``--x 5``, ``--x=5`` or ``x 5`` in prose); a name
    counts whole (``max_batch_size`` is not found in ``cuda_graph_max_batch_size``)."""
    for name in names:
        m = re.search(rf"(?<![\w-]){re.escape(name)}[ =](\d+(?:\.\d+)?)", args)
        if m:
            return float(m.group(1))
    return None


def run_note(run: ServingRun) -> str:
    """What is known against the run measuring what the simulator models ('' when nothing is): a device slower than
    its catalog entry (:data:`SLOW_DEVICE_SOURCES`), or a server's first scenario, which may carry first-use kernel
    compilation (:data:`COLD_SERVER_SWEEPS`)."""
    s = run.settings
    if any(page in s["source"] for page in SLOW_DEVICE_SOURCES):
        return "slow device: GPUStack's single-GPU H100 pages run compute-bound work ~1.7x slower than an H100 SXM"
    for repository, (prompt, output) in COLD_SERVER_SWEEPS.items():
        if repository in s["source"] and s["dataset"] == "random" and run.lengths == (prompt, output):
            return (
                "cold server: the first scenario of a sweep after the server started, where kernels compiled on "
                "first use (DeepGEMM / Triton JIT) may stall its first requests"
            )
    return ""


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
    if catalog_model(run) is None:
        return f"model {s['model_hf']} not in the catalog"
    if s["dataset"] not in ("random", "sharegpt"):
        return f"dataset {s['dataset']!r} without per-request lengths"
    if s["dataset"] == "random" and (s["input_tokens"] == "" or s["output_tokens"] == ""):
        return "random dataset without its lengths"
    return None
