"""What a run leaves, by name: the view that summaries, per-request outputs and tests read.

``Outcome.of(state, n)`` names the rows of the loop's tables that are reported (per request, per replica,
per stage output row and per shared resource), so nothing outside this package needs the loop's row layout.
Request codes are the :class:`Status` and :class:`Reason` enums.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from . import state as st

__all__ = ["Outcome", "Status", "Reason", "ITL_LOG_MIN", "ITL_PER_DECADE"]

ITL_LOG_MIN = st.ITL_LOG_MIN  # log10 of the inter-token-gap histogram's lowest bin edge (s)
ITL_PER_DECADE = st.ITL_PER_DECADE  # its bins per decade


class Status(enum.IntEnum):
    """A request's state at the end of a run (the ``request_status`` variable's flag values)."""

    PENDING = st.STATUS_PENDING
    WAITING = st.STATUS_WAITING
    RUNNING = st.STATUS_RUNNING
    TRANSFERRING = st.STATUS_TRANSFERRING
    DONE = st.STATUS_DONE
    REJECTED = st.STATUS_REJECTED
    DROPPED = st.STATUS_DROPPED


class Reason(enum.IntEnum):
    """Why a request was rejected (it can never run) or dropped (its queue was full)."""

    NONE = st.REASON_NONE
    CONTEXT = st.REASON_CONTEXT
    KV = st.REASON_KV
    TOKENS = st.REASON_TOKENS
    QUEUE_FULL = st.REASON_QUEUE_FULL


@dataclass(frozen=True)
class Outcome:
    """A run's results. Per request (the arrivals; parallel-reasoning branch slots left out), times in s
    (NaN: never happened); per replica; per stage output row and per shared resource (pipelines)."""

    # per request
    arrival_s: np.ndarray  # its arrival (a closed loop's: when its client sent it)
    sent_s: np.ndarray  # its client sent it: its latencies start here (later than arrival under a concurrency cap)
    status: np.ndarray  # Status codes
    reason: np.ndarray  # Reason codes
    base_prompt_tokens: np.ndarray  # the user's prompt
    answer_tokens: np.ndarray  # the answer it asked for
    context_tokens: np.ndarray  # pipelines: the conversation's tokens at the end; else the prompt
    prompt_tokens: np.ndarray  # prompt of its last job
    output_tokens: np.ndarray  # tokens its last job emits
    generated_tokens: np.ndarray  # tokens its last job emitted
    emitted_tokens: np.ndarray  # tokens its finished LLM jobs emitted, parallel branches included (thinking + answer)
    preemptions: np.ndarray
    entry_replica: np.ndarray  # replica that first admitted it (-1: none)
    decode_replica: np.ndarray  # disaggregated: replica that decoded it (-1: none)
    enqueued_s: np.ndarray  # first joined an engine's queue, past its API front end
    admit_s: np.ndarray  # first admitted to an iteration
    prefill_end_s: np.ndarray
    first_token_s: np.ndarray  # first answer token delivered
    done_s: np.ndarray
    transfer_s: np.ndarray  # KV hand-off duration (0: none)
    prefix_hit_tokens: np.ndarray  # prompt tokens its first admission found in the prefix cache
    queue_sum_s: np.ndarray  # pipelines: waiting for batch slots over all stages
    # per replica
    replica_pool: np.ndarray
    busy_s: np.ndarray
    iterations: np.ndarray
    batch_sum: np.ndarray  # requests summed over iterations
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    kv_token_s: np.ndarray  # resident KV tokens integrated over busy time
    swap_s: np.ndarray
    replica_preemptions: np.ndarray
    attention_pairs: np.ndarray  # causal query-key pairs of prefill chunks (per sequence, summed)
    kv_read_tokens: np.ndarray  # KV tokens attention read, summed over iterations (prefill context and decodes)
    free_blocks: np.ndarray  # KV blocks free at the end (unreferenced prefix-cache entries included)
    prefix_lookup_tokens: np.ndarray  # prefill targets looked up in the prefix cache at admission
    prefix_saved_tokens: np.ndarray  # tokens of those found cached: prefill skipped
    prefix_evictions: np.ndarray  # prefix-cache entries evicted for KV
    prefix_entries: np.ndarray  # prefix-cache entries at the end
    prefix_tier_tokens: np.ndarray  # prompt tokens loaded back from the cache's second-level tier
    prefix_tier_load_s: np.ndarray  # seconds of those loads
    prefix_tier_wait_s: np.ndarray  # seconds of them spent waiting for a shared tier instance
    prefix_tier_spills: np.ndarray  # blocks evicted from the device that the tier took
    frontend_wait_s: np.ndarray  # at a pool's first replica: seconds jobs waited for its front end's thread
    kv_tokens: np.ndarray  # KV tokens resident at the end
    # the run
    end_s: float  # time of the last event
    events: int
    fast_forwarded_iterations: int  # iterations committed beyond the first of their span
    pipeline: bool  # requests followed stage tables
    itl_sum_s: float  # inter-token gaps, summed over tokens
    itl_count: float
    itl_histogram: np.ndarray  # token counts per log bin (ITL_LOG_MIN, ITL_PER_DECADE)
    # pipelines: per stage output row (sums over requests after the warm-up) and per shared resource
    stage_visits: np.ndarray
    stage_time_s: np.ndarray
    stage_queue_s: np.ndarray
    stage_transfer_s: np.ndarray
    link_busy_s: np.ndarray
    link_bytes: np.ndarray
    link_transfers: np.ndarray
    link_wait_s: np.ndarray  # transfer durations summed (latency included)

    REQUEST_FIELDS: ClassVar[tuple[str, ...]]  # the per-request fields (arrival_s ... queue_sum_s)
    REPLICA_FIELDS: ClassVar[tuple[str, ...]]  # the per-replica fields (replica_pool ... kv_tokens)

    @property
    def queue_wait_s(self) -> np.ndarray:
        """Each request's wait for a batch slot: from first joining an engine's queue (past its API front end) to
        first admission; pipelines: the waits for batch slots summed over the stages."""
        return self.queue_sum_s if self.pipeline else self.admit_s - self.enqueued_s

    @classmethod
    def of(cls, S: st.State, n_requests: int, n_stage_rows: int = 0, n_resources: int = 0) -> Outcome:
        """The outcome of a finished run of ``n_requests`` arrivals (views of the state's rows, not copies)."""
        ri, rf = S.req_int[:, :n_requests], S.req_float[:, :n_requests]
        rs, rsf, g, run = S.rep_int, S.rep_float, S.glob, S.run
        ptf = S.pipe_float
        piped = bool(g[st.G_PIPELINE])
        return cls(
            arrival_s=rf[st.RF_ARRIVAL],
            sent_s=rf[st.RF_SENT],
            status=ri[st.RQ_STATUS],
            reason=ri[st.RQ_REASON],
            base_prompt_tokens=ri[st.RQ_BASE_PROMPT],
            answer_tokens=ri[st.RQ_ANSWER],
            context_tokens=(ri[st.RQ_CTX] if piped else ri[st.RQ_PROMPT]),
            prompt_tokens=ri[st.RQ_PROMPT],
            output_tokens=ri[st.RQ_OUTPUT],
            generated_tokens=ri[st.RQ_GEN],
            emitted_tokens=ri[st.RQ_EMITTED],
            preemptions=ri[st.RQ_PREEMPTIONS],
            entry_replica=ri[st.RQ_ENTRY_REPLICA],
            decode_replica=ri[st.RQ_DECODE_REPLICA],
            enqueued_s=rf[st.RF_ENQUEUED],
            admit_s=rf[st.RF_ADMIT],
            prefill_end_s=rf[st.RF_PREFILL_END],
            first_token_s=rf[st.RF_FIRST_TOKEN],
            done_s=rf[st.RF_DONE],
            transfer_s=rf[st.RF_TRANSFER],
            prefix_hit_tokens=ri[st.RQ_PC_HIT],
            queue_sum_s=rf[st.RF_QUEUE_SUM],
            replica_pool=rs[st.RP_POOL],
            busy_s=rsf[st.RA_BUSY_S],
            iterations=rsf[st.RA_ITERATIONS],
            batch_sum=rsf[st.RA_BATCH_SUM],
            prefill_tokens=rsf[st.RA_PREFILL_TOKENS],
            decode_tokens=rsf[st.RA_DECODE_TOKENS],
            kv_token_s=rsf[st.RA_KV_TOKEN_S],
            swap_s=rsf[st.RA_SWAP_S],
            replica_preemptions=rsf[st.RA_PREEMPTIONS],
            attention_pairs=rsf[st.RA_PAIRS],
            kv_read_tokens=rsf[st.RA_KV_READ],
            free_blocks=rs[st.RP_FREE_BLOCKS],
            prefix_lookup_tokens=rsf[st.RA_PC_LOOKUP_TOKENS],
            prefix_saved_tokens=rsf[st.RA_PC_HIT_TOKENS],
            prefix_evictions=rsf[st.RA_PC_EVICTIONS],
            prefix_entries=rs[st.RP_PC_ENTRIES],
            prefix_tier_tokens=rsf[st.RA_PC2_TOKENS],
            prefix_tier_load_s=rsf[st.RA_PC2_LOAD_S],
            prefix_tier_wait_s=rsf[st.RA_PC2_WAIT_S],
            prefix_tier_spills=rsf[st.RA_PC2_SPILLS],
            frontend_wait_s=rsf[st.RA_FRONTEND_WAIT_S],
            kv_tokens=rs[st.RP_KV_TOKENS],
            end_s=float(run[st.RUN_END]),
            events=int(g[st.G_EVENTS]),
            fast_forwarded_iterations=int(g[st.G_SPANS]),
            pipeline=piped,
            itl_sum_s=float(run[st.RUN_ITL_SUM]),
            itl_count=float(run[st.RUN_ITL_COUNT]),
            itl_histogram=run[st.RUN_ITL_HIST :],
            stage_visits=ptf[st.SA_VISITS, :n_stage_rows],
            stage_time_s=ptf[st.SA_TIME_S, :n_stage_rows],
            stage_queue_s=ptf[st.SA_QUEUE_S, :n_stage_rows],
            stage_transfer_s=ptf[st.SA_TRANSFER_S, :n_stage_rows],
            link_busy_s=ptf[st.XF_BUSY_S, :n_resources],
            link_bytes=ptf[st.XF_BYTES, :n_resources],
            link_transfers=ptf[st.XF_COUNT, :n_resources],
            link_wait_s=ptf[st.XF_WAIT_S, :n_resources],
        )


_names = [f.name for f in fields(Outcome)]
Outcome.REQUEST_FIELDS = tuple(_names[_names.index("arrival_s") : _names.index("queue_sum_s") + 1])
Outcome.REPLICA_FIELDS = tuple(_names[_names.index("replica_pool") : _names.index("kv_tokens") + 1])
del _names
