"""Registry of every output variable: units, long_name and description, declared once.

Datasets built by hermes_fast take their attrs from here, so plots label themselves and units travel
with netCDF/zarr files. Look a variable up with ``VARIABLES[name]``; list them with ``hermes-fast
presets variables``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["Variable", "VARIABLES", "BOUND_NAMES", "data_array"]


@dataclass(frozen=True)
class Variable:
    name: str
    units: str
    long_name: str
    description: str
    extra: tuple[tuple[str, object], ...] = ()

    def attrs(self) -> dict:
        return {"units": self.units, "long_name": self.long_name, "description": self.description, **dict(self.extra)}


BOUND_NAMES = ("compute", "memory", "communication", "overhead")  # codes 0..3; -1: not applicable
_BOUND_ATTRS = (
    ("flag_values", np.arange(-1, len(BOUND_NAMES), dtype=np.int8)),
    ("flag_meanings", " ".join(("not_applicable", *BOUND_NAMES))),
)

VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in [
        Variable("prefill_time_s", "s", "prefill time", "time to prefill the whole batch's prompts (zero load)"),
        Variable("ttft_s", "s", "time to first token", "zero-load TTFT: the batch's prefill, emitting the first token"),
        Variable(
            "decode_step_time_s", "s", "decode step time", "one decode iteration at context_tokens (NaN: encoders)"
        ),
        Variable(
            "tpot_s",
            "s",
            "time per output token",
            "decode iteration at the mean context, prompt + output/2 (NaN for encoders, which generate nothing)",
        ),
        Variable("e2e_s", "s", "end-to-end latency", "ttft + (output_tokens - 1) x tpot (encoders: ttft)"),
        Variable(
            "throughput_token_per_s",
            "token/s",
            "output throughput",
            "generated tokens per second of one replica over the whole static batch, prefill included (NaN: encoders)",
        ),
        Variable(
            "decode_throughput_token_per_s", "token/s", "decode throughput", "batch_size / tpot_s (NaN: encoders)"
        ),
        Variable("prefill_throughput_token_per_s", "token/s", "prefill throughput", "prompt tokens / prefill_time_s"),
        Variable("weights_bytes", "B", "weights per device", "weight bytes on the most loaded device of a replica"),
        Variable("kv_bytes_per_token", "B", "KV bytes per token", "KV-cache bytes one token occupies on one device"),
        Variable(
            "kv_capacity_token",
            "token",
            "KV capacity",
            "tokens of KV cache that fit per replica at memory_utilization, after weights and activations",
        ),
        Variable(
            "max_batch_size",
            "request",
            "largest batch that fits",
            "kv_capacity_token / (prompt + output) (NaN: encoders)",
        ),
        Variable("devices", "device", "devices per replica", "tp x pp"),
        Variable(
            "fits",
            "1",
            "fits in memory",
            "layout valid for the model, weights fit, the batch's KV (prompt + output) fits, and each request is "
            "within the model's context",
        ),
        Variable("bound", "1", "decode step bound", "what dominates the decode step (-1: encoders)", _BOUND_ATTRS),
        Variable("prefill_bound", "1", "prefill bound", "what dominates the prefill", _BOUND_ATTRS),
    ]
}


def data_array(name: str, data, dims: tuple[str, ...], coords: dict | None = None) -> xr.DataArray:
    """A DataArray named ``name`` with its registered attrs (KeyError for an unregistered name)."""
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=VARIABLES[name].attrs())
