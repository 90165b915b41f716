"""Launch commands for a planned layout: vLLM, SGLang and TensorRT-LLM (``trtllm-serve``) command lines, and a
Dynamo ``DynamoGraphDeployment`` for disaggregated (or aggregated) serving, carrying the parameters the simulation
assumed (TP, PP, replicas, max batch size, token budget, memory share, formats).

Flag names are data (``hermes_fast/catalog/launch_flags.yaml``: per stack the command, the version, the source and
each flag with its source); a command is built only from flags listed there (:func:`check_flags`). Attention data
parallelism becomes vLLM's ``--data-parallel-size N --enable-expert-parallel`` (tensor parallelism 1), SGLang's
``--dp-size N --enable-dp-attention --ep-size N`` and trtllm-serve's ``--ep_size N`` with ``enable_attention_dp:
true`` in its ``--extra_llm_api_options`` YAML (without the expert-parallel flags when the experts stay
tensor-parallel, ep = 1); a layout a stack has no flag for (context parallelism: the stored
``not_launchable`` reasons) is said to be not launchable there instead of given a command.
"""

from __future__ import annotations

import json
import math
import shlex
from functools import cache
from importlib.resources import files

import xarray as xr

from ..config.base import ConfigError
from ..config.files import load_yaml
from ..resolve import Catalog

__all__ = ["EXPORT_STACKS", "check_flags", "emitted_flags", "launch_commands", "launch_flags"]

EXPORT_STACKS = ("vllm", "sglang", "trtllm", "dynamo")


@cache
def launch_flags() -> dict[str, dict]:
    """Per stack: ``command``, ``version``, ``source`` and ``flags`` (flag -> its source), as stored.

    Examples
    --------
    >>> from hermes_fast.plan import launch_flags
    >>> launch_flags()["trtllm"]["version"], "--tp_size" in launch_flags()["trtllm"]["flags"]
    ('0.18.2', True)
    """
    return load_yaml((files("hermes_fast") / "catalog" / "launch_flags.yaml").read_text())


def emitted_flags(text: str) -> list[str]:
    """Every ``--flag`` token of a command line or of a YAML ``args`` list (``--flag=value`` counts as ``--flag``)."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for tok in shlex.split(line.replace("- ", " "), posix=True) if "--" in line else []:
            if tok.startswith("--"):
                out.append(tok.split("=", 1)[0])
    return out


def check_flags(stack: str, text: str) -> None:
    """ConfigError naming the first flag of ``text`` that the stored list of ``stack``'s version lacks."""
    known = launch_flags()[stack]
    for flag in emitted_flags(text):
        if flag not in known["flags"]:
            raise ConfigError(f"launch_flags.{stack}.flags", flag, f"a flag of {stack} {known['version']}")


def _coord(c: xr.Dataset, name: str, default):
    """Coordinate ``name`` of one candidate, ``default`` for a plan saved before it existed."""
    return c[name].values.item() if name in c.coords else default


def _hf_id(model: str) -> str:
    shape = Catalog().model(model).sources.get("shape", "")
    first = shape.split(" ")[0] if shape else ""
    return first if "/" in first else model


def _engines(ds: xr.Dataset, i: int) -> list[dict]:
    """The pools of candidate ``i``: role, device, dtype, tp, pp, ep, attention_dp, cp, devices per replica,
    replicas (colocated: one, role ``both``)."""
    c = ds.isel(candidate=i)
    pools = []
    if str(c.mode.values) == "disaggregated":
        pools.append(
            {
                "role": "prefill",
                "device": str(c.prefill_device.values),
                "tp": int(c.prefill_tp.values),
                "pp": int(c.prefill_pp.values),
                "ep": int(c.prefill_ep.values),
                "attention_dp": bool(_coord(c, "prefill_attention_dp", False)),
                "cp": int(_coord(c, "prefill_cp", 1)),
                "replicas": int(c.prefill_replicas.values),
            }
        )
    pools.append(
        {
            "role": "decode" if pools else "both",
            "device": str(c.device.values),
            "tp": int(c.tp.values),
            "pp": int(c.pp.values),
            "ep": int(c.ep.values),
            "attention_dp": bool(_coord(c, "attention_dp", False)),
            "cp": int(_coord(c, "cp", 1)),
            "replicas": int(c.replicas.values),
        }
    )
    budget = int(c.max_batched_tokens.values)
    stack = _plan_stack(ds)
    for p in pools:
        p["devices"] = p["tp"] * p["pp"] * p["cp"]
        p["memory_utilization"] = _memory_utilization(stack, p, float(ds.attrs["memory_utilization"]))
    shared = {
        "dtype": str(c.dtype.values),
        "max_batch_size": int(c.max_batch_size.values),
        "max_batched_tokens": budget,
        "prefill_tokens": _prefill_tokens(stack, budget),
        "async_scheduling": stack is not None and stack.async_scheduling,
        "api_servers": stack.api_servers if stack is not None else 1,
    }
    return [{**p, **shared} for p in pools]


def _plan_stack(ds: xr.Dataset):
    """The stack the plan simulated (None: a stack of the plan's own that no longer resolves)."""
    plan = json.loads(ds.attrs.get("plan", "{}"))
    try:
        return Catalog({"stacks": plan.get("stacks") or {}}).stack(str(ds.attrs.get("stack", "vllm")))
    except ConfigError:
        return None


def _memory_utilization(stack, pool: dict, planned: float) -> float:
    """The memory fraction a pool's engines ran at: the stack's rule for its device and layout where it has one
    (``Stack.memory_utilization_for``: SGLang 0.5's by GPU memory, TP x PP and attention DP), else the plan's."""
    if stack is None or not stack.memory_reserved:
        return planned
    device = Catalog().device(pool["device"])
    rule = stack.memory_utilization_for(device, pool["tp"] * pool["pp"], pool["attention_dp"])
    return planned if rule is None else rule


def _prefill_tokens(stack, budget: int) -> int:
    """Most prompt tokens one prefill iteration held in the simulation under the plan's ``stack`` (None: unknown):
    the token budget, or under a stack that batches with ``continuous_chunked`` (SGLang's) the smaller of it and
    the stack's chunk size."""
    if stack is not None and stack.policy == "continuous_chunked" and stack.chunk_size is not None:
        return min(budget, stack.chunk_size)
    return budget


def _vllm_args(p: dict) -> list[str]:
    if p["attention_dp"]:  # each of the tp ranks a data-parallel engine with its own scheduler and batch slots
        n = p["tp"]
        parallel = ["--tensor-parallel-size 1", f"--data-parallel-size {n}"]
        parallel += ["--enable-expert-parallel"] if p["ep"] > 1 else []
        seqs, tokens = math.ceil(p["max_batch_size"] / n), math.ceil(p["max_batched_tokens"] / n)
    else:
        parallel, seqs, tokens = [f"--tensor-parallel-size {p['tp']}"], p["max_batch_size"], p["max_batched_tokens"]
    args = [
        *parallel,
        f"--pipeline-parallel-size {p['pp']}",
        f"--max-num-seqs {seqs}",
        f"--max-num-batched-tokens {tokens}",
        f"--gpu-memory-utilization {p['memory_utilization']:g}",
    ]
    if p["dtype"] == "fp8":
        args += ["--quantization fp8", "--kv-cache-dtype fp8"]
    elif p["dtype"] == "fp4":
        args += ["--kv-cache-dtype fp8"]  # NVFP4 weights come with the checkpoint
    if p["async_scheduling"] and p["pp"] == 1:  # as simulated; vLLM 0.11-0.13 run it only when asked
        args += ["--async-scheduling"]
    return args


_VLLM_DP_NOTE = (
    "# attention DP as vLLM data parallelism: --max-num-seqs is per rank (the simulated max batch / ranks), the token "
    "budget too (the simulation's is the replica's); vLLM's dense FFN layers run data-parallel (simulated: "
    "tensor-parallel)"
)


def _vllm(pools: list[dict], model: str) -> str:
    lines, port = [], 8000
    if any(p["attention_dp"] for p in pools):
        lines.append(_VLLM_DP_NOTE)
    for p in pools:
        for r in range(p["replicas"]):
            role = "" if p["role"] == "both" else f" ({p['role']}; run disaggregated under Dynamo, below)"
            lines.append(f"# replica {r + 1} of {p['replicas']}, {p['devices']} x {p['device']}{role}")
            # (an OpenAI server of vLLM's own: a Dynamo worker has none, its frontend is Dynamo's)
            api = [f"--api-server-count {p['api_servers']}"] if p["api_servers"] > 1 else []
            lines.append(" ".join(["vllm serve", model, *_vllm_args(p), *api, f"--port {port}"]))
            port += 1
    return "\n".join(lines)


def _sglang(pools: list[dict], model: str) -> str:
    lines, port = [], 30000
    for p in pools:
        for r in range(p["replicas"]):
            args = [
                "python -m sglang.launch_server",
                f"--model-path {model}",
                f"--tp-size {p['tp']}",
                *([f"--dp-size {p['tp']} --enable-dp-attention"] if p["attention_dp"] else []),
                *([f"--ep-size {p['ep']}"] if p["attention_dp"] and p["ep"] > 1 else []),
                f"--pp-size {p['pp']}",
                f"--max-running-requests {p['max_batch_size']}",
                f"--chunked-prefill-size {p['prefill_tokens']}",
                f"--mem-fraction-static {p['memory_utilization']:g}",
            ]
            if p["dtype"] in ("fp8", "fp4"):
                args += ["--kv-cache-dtype fp8_e4m3"] + (["--quantization fp8"] if p["dtype"] == "fp8" else [])
            if p["role"] != "both":
                args.append(f"--disaggregation-mode {p['role']}")
            lines.append(f"# replica {r + 1} of {p['replicas']}, {p['devices']} x {p['device']}, {p['role']}")
            lines.append(" ".join([*args, f"--port {port}"]))
            port += 1
    return "\n".join(lines)


_TRTLLM_DP_OPTIONS = "attention-dp.yml"


def _per_rank(p: dict, limit: str) -> int:
    """A replica's batch limit as trtllm-serve takes it: per rank under attention DP (each rank schedules its own
    batch), else the replica's. (SGLang takes the replica's: under DP attention its server_args.py divides
    --chunked-prefill-size by the DP size, and --max-running-requests is split over the DP workers.)"""
    return math.ceil(p[limit] / p["tp"]) if p["attention_dp"] else p[limit]


def _trtllm(pools: list[dict], model: str) -> str:
    lines, port = [], 8000
    if any(p["attention_dp"] for p in pools):  # the LLM API option trtllm-serve takes from a YAML file
        lines += [f"cat > {_TRTLLM_DP_OPTIONS} <<EOF", "enable_attention_dp: true", "EOF"]
    for p in pools:
        dp = [f"--ep_size {p['ep']}"] if p["attention_dp"] and p["ep"] > 1 else []
        dp += [f"--extra_llm_api_options {_TRTLLM_DP_OPTIONS}"] if p["attention_dp"] else []
        for r in range(p["replicas"]):
            note = "" if p["dtype"] == "bf16" else f"; use an {p['dtype'].upper()}-quantized checkpoint"
            lines.append(f"# replica {r + 1} of {p['replicas']}, {p['devices']} x {p['device']}, {p['role']}{note}")
            args = [
                "trtllm-serve",
                model,
                "--backend pytorch",
                f"--tp_size {p['tp']}",
                *dp,
                f"--pp_size {p['pp']}",
                f"--max_batch_size {_per_rank(p, 'max_batch_size')}",
                f"--max_num_tokens {_per_rank(p, 'max_batched_tokens')}",
                f"--kv_cache_free_gpu_memory_fraction {p['memory_utilization']:g}",
                f"--port {port}",
            ]
            lines.append(" ".join(args))
            port += 1
    return "\n".join(lines)


def _dynamo(pools: list[dict], model: str, name: str) -> str:
    lines = [
        "apiVersion: nvidia.com/v1alpha1",
        "kind: DynamoGraphDeployment",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  services:",
        "    Frontend:",
        "      componentType: frontend",
        "      replicas: 1",
    ]
    for p in pools:
        service = {"both": "VllmWorker", "prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}[p["role"]]
        args = [f"--model {model}"]
        if p["role"] != "both":
            args.append(f"--disaggregation-mode {p['role']}")
        args += _vllm_args(p)
        lines += [
            f"    {service}:",
            "      componentType: worker",
            f"      replicas: {p['replicas']}",
            f"      # {p['devices']} x {p['device']} per replica",
            "      resources:",
            "        limits:",
            f'          gpu: "{p["devices"]}"',
            "      extraPodSpec:",
            "        mainContainer:",
            "          command: [python3, -m, dynamo.vllm]",
            "          args:",
        ]
        for a in args:
            flag, _, value = a.partition(" ")
            lines += [f"            - {flag}"] + ([f'            - "{value}"'] if value else [])
    return "\n".join(lines)


def launch_commands(ds: xr.Dataset, candidate: int | None = None, model: str | None = None) -> dict[str, str]:
    """Launch commands of a planned layout, one text per stack (:data:`EXPORT_STACKS`), each headed by the stack's
    version and flag source.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`hermes_fast.plan` result.
    candidate : int or None, default None
        The candidate's index (its ``candidate`` coordinate); None: the best verified layout.
    model : str or None, default None
        The checkpoint to serve (default: the Hugging Face repository the catalog's model shape comes from).

    Returns
    -------
    dict of str to str
        ``vllm``, ``sglang``, ``trtllm``: one command line per replica (ports counting up); ``dynamo``: a
        ``DynamoGraphDeployment`` (YAML) with a frontend and one worker service per pool (prefill and decode
        workers for a disaggregated layout). Every ``--flag`` is in the stored list of that stack's version
        (:func:`launch_flags`).

    Examples
    --------
    >>> ds = hf.plan(model="llama-3.1-8b", devices={"h100_sxm": 1}, workload={"prompt_tokens": 512,
    ...              "output_tokens": 64}, tp=[1], pp=[1], dtypes=["bf16"], max_batch_size=[64],
    ...              max_batched_tokens=[4096], top_k=1, n_requests=200)
    >>> cmds = hf.launch_commands(ds)
    >>> sorted(cmds)
    ['dynamo', 'sglang', 'trtllm', 'vllm']
    >>> print(cmds["vllm"].splitlines()[2])
    vllm serve meta-llama/Llama-3.1-8B --tensor-parallel-size 1 --pipeline-parallel-size 1 --max-num-seqs 64
    --max-num-batched-tokens 4096 --gpu-memory-utilization 0.9 --async-scheduling --port 8000
    """
    if candidate is None:
        best = ds.attrs.get("best_candidate", -1)
        if best < 0:
            raise ConfigError("candidate", None, "a plan with a verified layout (none was verified)")
        candidate = int(best)
    i = int(candidate)
    if not 0 <= i < ds.sizes["candidate"]:
        raise ConfigError("candidate", candidate, f"a candidate index in [0, {ds.sizes['candidate']})")
    pools = _engines(ds, i)
    model = model or _hf_id(ds.attrs["model"])
    flags = launch_flags()
    texts = {
        "vllm": _vllm(pools, model),
        "sglang": _sglang(pools, model),
        "trtllm": _trtllm(pools, model),
        "dynamo": _dynamo(pools, model, f"plan-{ds.attrs['model'].replace('.', '-')}-{i}"),
    }
    ep = [p["ep"] for p in pools if p["ep"] > 1 and not p["attention_dp"]]
    cp = [p["cp"] for p in pools if p["cp"] > 1]
    out = {}
    for stack, text in texts.items():
        if cp:  # (said, not guessed: the stack's stored reason)
            why = flags[stack]["not_launchable"]["context_parallel"]
            text = f"# not launchable on {stack}: the layout runs context parallelism {cp[0]}; {why}"
        check_flags(stack, text)
        if ep:  # (flags for EP inside a TP group are not in the stored lists: said, not guessed)
            text = f"# the simulation assumed expert parallelism {ep[0]} within the TP group: set it by hand\n{text}"
        head = (
            f"# {flags[stack]['command']} {flags[stack]['version']} (flags: {flags[stack]['source']}); layout "
            f"{str(ds.label.values[i])}, simulated with stack {ds.attrs['stack']}"
        )
        out[stack] = head + "\n" + text + "\n"
    return out
