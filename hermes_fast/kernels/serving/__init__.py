"""The serving event loop: pools of engine replicas, batching policies, paged KV, preemption, KV hand-off,
and requests moving through multi-stage pipelines over shared links.

Where each concern lives (lowest first; a module imports only modules above it in this list):

====================  =====================================================================================
``state``             the named state struct, every table's rows and every code (``RQ_*``, ``PL_*``...)
``allocation``        allocating the state for one run (Python)
``events``            the event heaps (iteration ends, hand-offs, timers) and timer payloads
``queues``            FIFO waiting queues per replica and per pool
``accounting``        the inter-token-gap histogram, per-replica iteration accumulators
``frontend``          each replica's API server thread: intakes first come first served, slowed by streaming
``links``             processor sharing on shared links and tier instances; starting a transfer
``jobs``              a request's current job; parallel reasoning branches sharing the prompt's KV
``block_keys``        naming KV blocks before the loop: each request's chain of block keys
``cache_table``       the prefix cache's tables at two levels (device, second-level tier): probing, LRU lists
``prefix_cache``      each replica's prefix cache: lookup, references, commits, LRU eviction (spilling to the tier)
``kv``                paged-KV blocks, giving them back, preemption by recompute or swap
``fastforward``       decode fast-forward: planning, committing and truncating spans
``routing``           replica (queue) choice by scheduler (cache-aware ones too); route stages' targets
``batch``             marking requests into the iteration being formed, its totals
``admission``         queue heads into the batch, FCFS, within slots, budget and KV
``policies``          static, continuous (whole or chunked prompts), chunked and mixed batching
``boundary``          a replica's iteration boundary: batch wait, forming, costing, launching
``submission``        a job reaching a pool: rejection, queue choice, drops, waking replicas
``pipeline``          stages: entering, service (delay, KV lookup, job), leaving
``completion``        an iteration's end: tokens, finished prompts and jobs, KV hand-offs
``loop``              ``serve``: the event loop and its dispatch
``driver``            running the compiled loop from Python: compile notice, pauses for progress
``outcome``           what a run leaves, by name (Python): what metrics and tests read
====================  =====================================================================================

Kernels call kernels of other modules by importing the function itself (``from .kv import release_kv``):
the compiled twins are resolved by function name (:mod:`hermes_fast.kernels._jit`), so kernel names are
unique and never aliased.
"""

from .allocation import empty_pipeline, new_state
from .driver import run_loop
from .loop import compiled_serve, serve
from .outcome import Outcome, Reason, Status
from .state import State

__all__ = ["serve", "compiled_serve", "run_loop", "new_state", "empty_pipeline", "State", "Outcome", "Status", "Reason"]
