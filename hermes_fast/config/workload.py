"""Schemas of the simulated workload: arrival process, token-length distributions and request classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld, to_mapping
from .lengths import MIN_CV, Length
from .pipeline import Stage, check_pipeline


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Replay of a CSV request trace: arrival times and, optionally, prompt and output lengths.

    The Azure LLM inference trace columns (``TIMESTAMP, ContextTokens, GeneratedTokens``) are the
    defaults; timestamps may be numbers (seconds, >= 0) or date-times, in ascending order (the replay starts at
    the first row's time).
    """

    path: str = fld(doc="CSV file")
    time_column: str = fld("TIMESTAMP", doc="arrival time column (seconds, or ISO date-times)")
    prompt_column: str | None = fld("ContextTokens", doc="prompt tokens column (None: from the request class)")
    output_column: str | None = fld("GeneratedTokens", doc="output tokens column (None: from the request class)")
    time_scale: float = fld(1.0, unit="s", doc="seconds per unit of a numeric time column", gt=0)
    rescale_to_rate: bool = fld(
        False, doc="compress or stretch the trace's times so its mean rate equals workload.rate_per_s"
    )


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """The arrival process; its mean rate is ``workload.rate_per_s`` (a trace has its own unless rescaled).

    - ``poisson``: exponential gaps;
    - ``gamma``: gamma gaps with coefficient of variation ``cv`` (cv > 1 is burstier than Poisson);
    - ``deterministic``: equal gaps;
    - ``mmpp``: two-state Markov-modulated Poisson: rates ``rate_per_s * burst_factor`` and a lower one,
      with mean sojourns ``burst_mean_s`` and ``calm_mean_s``, the low rate set so the mean stays rate_per_s;
    - ``sinusoid``: rate_per_s * (1 + amplitude sin(2 pi t / period_s)) (thinning);
    - ``trace``: replay of ``trace``;
    - ``closed``: ``concurrency`` clients in a closed loop, as a load generator's ``--max-concurrency`` at an
      unlimited rate: each sends a request at t = 0 and its next one ``think_time_s`` seconds (gamma with
      ``think_time_cv``; 0: fixed) after the previous completes (or is rejected or dropped); ``rate_per_s``
      plays no part.

    An open process may cap the requests in flight with ``max_concurrency``: arrivals beyond it wait at the
    client, in order, and their latencies start when they are sent.
    """

    process: Literal["poisson", "gamma", "deterministic", "mmpp", "sinusoid", "trace", "closed"] = fld(
        "poisson", doc="arrival process"
    )
    concurrency: int | None = fld(None, unit="request", doc="closed: clients (requests in flight)", ge=1, le=10**7)
    think_time_s: float = fld(0.0, unit="s", doc="closed: mean think time before a client's next request", ge=0)
    think_time_cv: float = fld(
        0.0, unit="1", doc="closed: think time coefficient of variation (0: fixed)", ge=0, le=100
    )
    max_concurrency: int | None = fld(
        None, unit="request", doc="open processes: most requests in flight; more wait at the client", ge=1, le=10**7
    )
    cv: float = fld(
        1.0, unit="1", doc="gamma: coefficient of variation of the gaps (deterministic: equal gaps)", ge=MIN_CV, le=100
    )
    burst_factor: float = fld(4.0, unit="1", doc="mmpp: burst rate / mean rate", gt=1, le=1e6)
    burst_mean_s: float = fld(1.0, unit="s", doc="mmpp: mean time in the burst state", gt=0)
    calm_mean_s: float = fld(9.0, unit="s", doc="mmpp: mean time in the calm state", gt=0)
    amplitude: float = fld(0.5, unit="1", doc="sinusoid: relative amplitude", ge=0, le=1)
    period_s: float = fld(60.0, unit="s", doc="sinusoid: period", gt=0)
    trace: Trace | None = fld(None, doc="trace replay settings (process: trace)")

    def _validate(self, path: str) -> None:
        if 0 < self.think_time_cv < MIN_CV:  # (1 / cv^2 overflows: the gamma's shape)
            raise ConfigError(f"{path}.think_time_cv", self.think_time_cv, f"0 (fixed) or >= {MIN_CV:g}")
        if self.process == "closed" and self.concurrency is None:
            raise ConfigError(f"{path}.concurrency", None, "the number of clients of the closed loop")
        if self.process != "closed" and self.concurrency is not None:
            raise ConfigError(
                f"{path}.concurrency", self.concurrency, "only with process: closed (else max_concurrency)"
            )
        if self.process == "closed" and self.max_concurrency is not None:
            raise ConfigError(
                f"{path}.max_concurrency", self.max_concurrency, "none with process: closed (concurrency)"
            )
        if self.process == "trace" and self.trace is None:
            raise ConfigError(f"{path}.trace", None, "a trace mapping (path, columns) for process: trace")
        if self.process == "mmpp":
            share = self.burst_mean_s / (self.burst_mean_s + self.calm_mean_s)
            if self.burst_factor * share >= 1.0:
                raise ConfigError(
                    f"{path}.burst_factor",
                    self.burst_factor,
                    f"< {1 / share:g} (1 / the burst share of time), so the calm rate stays positive",
                )


@dataclass(frozen=True, kw_only=True)
class RequestClass:
    """A kind of request with its share of the traffic, its length distributions and its pipeline.

    ``output_tokens`` is the answer's length; thinking tokens of a ``reason`` stage come on top. A pipeline
    that prefills without a ``decode`` stage writes no answer, so its class asks for ``output_tokens: 1``.
    """

    name: str = fld("default", doc="label")
    weight: float = fld(1.0, unit="1", doc="relative share of arrivals", gt=0)
    prompt_tokens: int | Length = fld(
        1024, unit="token", doc="prompt length: an integer or a distribution", ge=1, le=1e9
    )
    output_tokens: int | Length = fld(
        256, unit="token", doc="output length: an integer or a distribution", ge=1, le=1e9
    )
    pipeline: tuple[Stage, ...] = fld(
        (), doc="stages this class passes through, in order (none: prefill and decode on serving.engine)"
    )

    def _validate(self, path: str) -> None:
        check_pipeline(self.pipeline, f"{path}.pipeline")
        out = self.output_tokens
        one = out == 1 or (isinstance(out, Length) and (out.value == 1 or out.max == 1))
        kinds = {st.kind for st in self.pipeline}
        if "prefill" in kinds and "decode" not in kinds and not one:  # (its LLM writes no answer)
            raise ConfigError(
                f"{path}.output_tokens",
                out if isinstance(out, int) else {k: v for k, v in to_mapping(out).items() if v is not None},
                "1: the pipeline prefills but has no decode stage, so it writes no answer (add a decode stage "
                "to write output_tokens tokens)",
            )  # fmt: skip
