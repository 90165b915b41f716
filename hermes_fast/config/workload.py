"""Schemas of the simulated workload: arrival process, token-length distributions and request classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import ConfigError, fld, to_mapping
from .lengths import MIN_CV, Length
from .pipeline import Stage, check_pipeline


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Replay of a request trace: arrival times and, optionally, prompt and output lengths and block hashes.

    A CSV file, or JSON lines (``.jsonl``: one object per request). The Azure LLM inference trace columns
    (``TIMESTAMP, ContextTokens, GeneratedTokens``) are the defaults; timestamps may be numbers (seconds, >= 0)
    or date-times, in ascending order (the replay starts at the first row's time). The Mooncake trace format
    (``timestamp`` in ms, ``input_length``, ``output_length``, ``hash_ids``) reads as it is with those columns,
    ``time_scale: 0.001`` and ``hash_ids_column: hash_ids``.
    """

    path: str = fld(doc="CSV file")
    time_column: str = fld("TIMESTAMP", doc="arrival time column (seconds, or ISO date-times)")
    prompt_column: str | None = fld("ContextTokens", doc="prompt tokens column (None: from the request class)")
    output_column: str | None = fld("GeneratedTokens", doc="output tokens column (None: from the request class)")
    time_scale: float = fld(1.0, unit="s", doc="seconds per unit of a numeric time column", gt=0)
    rescale_to_rate: bool = fld(
        False, doc="compress or stretch the trace's times so its mean rate equals workload.rate_per_s"
    )
    hash_ids_column: str | None = fld(
        None,
        doc="column of each request's prompt block hashes (Mooncake's hash_ids: a JSON list, or numbers separated "
        "by spaces or commas); equal ids are equal prompt blocks and everything before them (Mooncake's ids are "
        "chained), reused by the prefix cache (None: no reuse)",
    )
    hash_block_tokens: int = fld(512, unit="token", doc="prompt tokens per hash id (Mooncake: 512)", ge=1, le=1 << 20)


@dataclass(frozen=True, kw_only=True)
class Prefix:
    """Shared prompt prefixes of a request class (system prompts, tool definitions, shared documents).

    Each session (or single request) of the class starts its prompt with one of ``distinct`` prefixes, prefix k
    (k = 1 .. distinct) drawn with probability proportional to k^-zipf_alpha (0: all equally likely); prefix k's
    length is drawn once from ``tokens``. The class's ``prompt_tokens`` are the user's own tokens after it.
    """

    distinct: int = fld(1, unit="prefix", doc="distinct prefixes of the class", ge=1, le=10_000_000)
    zipf_alpha: float = fld(0.0, unit="1", doc="popularity: prefix k drawn with weight k^-zipf_alpha", ge=0, le=10)
    tokens: int | Length = fld(
        1024, unit="token", doc="each prefix's length: an integer or a law (drawn once per prefix)", ge=1, le=1e9
    )


@dataclass(frozen=True, kw_only=True)
class Session:
    """Multi-turn sessions: a class's arrivals are sessions of several turns (a chat, an agent's steps).

    Turn k's prompt is the whole history (the prefix, earlier prompts and answers) plus the class's
    ``prompt_tokens`` new user tokens; it is sent ``think_time_s`` (gamma with ``think_time_cv``; 0: fixed) after
    turn k - 1's answer completes (or it is rejected or dropped).
    """

    turns: int | Length = fld(4, unit="turn", doc="turns per session: an integer or a law", ge=1, le=1e6)
    think_time_s: float = fld(5.0, unit="s", doc="mean time between an answer and the next turn", ge=0, le=1e6)
    think_time_cv: float = fld(0.0, unit="1", doc="think time coefficient of variation (0: fixed)", ge=0, le=100)


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
    prefix: Prefix | None = fld(None, doc="shared prompt prefixes before the user's tokens (None: none)")
    session: Session | None = fld(None, doc="multi-turn sessions: arrivals are sessions of turns (None: one turn)")

    def _validate(self, path: str) -> None:
        check_pipeline(self.pipeline, f"{path}.pipeline")
        for key in ("prefix", "session"):
            if self.pipeline and getattr(self, key) is not None:
                raise ConfigError(f"{path}.{key}", key, "none in a class with a pipeline (plain serving only, for now)")
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
