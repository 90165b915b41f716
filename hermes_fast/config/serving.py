"""Schemas of how requests are served: per-engine batching and replica scheduling, pools, SLOs, run limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld
from .hardware import Link

POLICIES = ("static", "continuous", "continuous_chunked", "chunked", "mixed")
SCHEDULERS = (
    "round_robin",
    "random",
    "least_outstanding",
    "least_kv",
    "shared_queue",
    "prefix_affinity",
    "session_sticky",
    "kv_aware",
)


@dataclass(frozen=True, kw_only=True)
class Batching:
    """How one replica forms its iterations.

    - ``static``: request-level batches (FasterTransformer): the queue's head requests are prefilled
      together and decoded until the last finishes; KV for the whole request is reserved at admission;
    - ``continuous``: iteration-level, prefill-priority (vLLM V0): waiting prompts are admitted whenever they
      fit and run as a prefill-only iteration, pausing decodes;
    - ``continuous_chunked``: the same with chunked prefill (SGLang): a prefill iteration holds at most
      ``chunk_size`` prompt tokens, and the prompt cut to fit goes on first in the next one;
    - ``chunked``: decode-first (Sarathi-Serve): every running decode is in each iteration and prompt chunks
      fill the rest of the ``max_batched_tokens`` budget;
    - ``mixed``: whole prompts are batched together with the running decodes.

    The first prefill of an iteration is never refused for the token budget (a recompute can exceed it).
    """

    policy: Literal["static", "continuous", "continuous_chunked", "chunked", "mixed"] | None = fld(
        None, doc="batching policy (None: the engine's stack's, else continuous)"
    )
    max_batch_size: int | None = fld(
        None, unit="request", doc="most requests in one iteration (None: the stack's, else 256)", ge=1, le=65536
    )
    chunk_size: int | None = fld(
        None,
        unit="token",
        doc="most prompt tokens of one request per iteration (chunked) or of one prefill iteration "
        "(continuous_chunked) (None: the stack's, else the budget)",
        ge=1,
        le=1e9,
    )
    block_size_tokens: int | None = fld(
        None, unit="token", doc="paged-KV block size (None: the stack's, else 16)", ge=1, le=1 << 20
    )
    preemption: Literal["recompute", "swap"] | None = fld(
        None,
        doc="when KV runs out, the newest request is dropped and recomputed, or swapped to host (None: the "
        "stack's, else recompute)",
    )
    max_wait_s: float = fld(
        0.0,
        unit="s",
        doc="an idle replica waits up to this long after its oldest queued request for a full batch",
        ge=0,
    )
    max_queue_requests: int | None = fld(
        None,
        unit="request",
        doc="waiting requests per queue beyond which arrivals are dropped (None: no limit)",
        ge=1,  # (0 would drop every arrival, an idle replica's too)
        le=1e9,
    )

    @property
    def splits_prompts(self) -> bool:
        """Whether a prompt may be prefilled over several iterations (chunked, continuous_chunked)."""
        return self.policy in ("chunked", "continuous_chunked")


@dataclass(frozen=True, kw_only=True)
class Slo:
    """Latency targets a request must meet to count towards goodput."""

    ttft_s: float = fld(2.0, unit="s", doc="time-to-first-token target", gt=0)
    tpot_s: float = fld(0.1, unit="s", doc="time-per-output-token target (mean over the request)", gt=0)


@dataclass(frozen=True, kw_only=True)
class Serving:
    """Which engines serve the requests, and the run's limits.

    Colocated serving names one ``engine``; disaggregated serving names a ``prefill_engine`` and a
    ``decode_engine``: a prompt is prefilled on the first, its KV cache moves over ``kv_link`` (default: the
    prefill device's scale-out link), and it decodes on the second. With ``pairing: local`` prefill
    replica i always hands over to decode replica i mod n; with ``global`` the decode engine's scheduler
    picks when the KV arrives.
    """

    engine: str | None = fld(None, doc="colocated: the serving engine (None: the first engine)")
    prefill_engine: str | None = fld(None, doc="disaggregated: engine that prefills")
    decode_engine: str | None = fld(None, doc="disaggregated: engine that decodes")
    pairing: Literal["global", "local"] = fld("global", doc="disaggregated: how a decode replica is chosen")
    kv_link: Link | None = fld(None, doc="disaggregated: link the KV cache crosses (None: scale_out)")
    slo: Slo = fld(factory=Slo, doc="latency targets for goodput and SLO attainment")
    warmup_requests: int = fld(0, unit="request", doc="first arrivals left out of the statistics", ge=0, le=100_000_000)
    horizon_s: float | None = fld(
        None, unit="s", doc="simulated time after which the run stops; later work is unfinished (None: none)", gt=0
    )

    @property
    def disaggregated(self) -> bool:
        return self.prefill_engine is not None

    def _validate(self, path: str) -> None:
        if (self.prefill_engine is None) != (self.decode_engine is None):
            missing = "decode_engine" if self.decode_engine is None else "prefill_engine"
            raise ConfigError(f"{path}.{missing}", None, "an engine name: disaggregated serving names both")
        if self.disaggregated and self.engine is not None:
            raise ConfigError(f"{path}.engine", self.engine, "null when prefill_engine/decode_engine are set")
        if self.disaggregated and self.prefill_engine == self.decode_engine:
            raise ConfigError(f"{path}.decode_engine", self.decode_engine, "an engine other than prefill_engine")


def check_warmup(serving: Serving, n_requests: int, path: str = "serving.warmup_requests") -> None:
    """ConfigError unless ``serving.warmup_requests`` < ``n_requests``: the statistics need a request left."""
    w = serving.warmup_requests
    if w >= n_requests:
        raise ConfigError(
            path, w, f"fewer than n_requests ({n_requests}): the first {w} arrivals are left out of the statistics, "
            "so none would remain",
        )  # fmt: skip
