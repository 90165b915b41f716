"""The serving loop's state: one named struct of tables, every table's rows declared once, and the codes.

:class:`State` bundles the loop's arrays by name (``S.req_int[RQ_GEN, i]`` is request i's emitted tokens).
Each 2-D table stores one field per row, so a field is contiguous over requests (or replicas, pools...).
Rows are numbered by :class:`_Rows` in declaration order, so two fields of a table can never share a row;
each table's rows carry their own prefix. Tables of one dtype that the loop reads together share an array
(``pipe_int``/``pipe_float`` hold the stage table, KV tier levels, shared resources and stage
accumulators as row groups): every array in the struct costs on each call of a kernel that takes it.
Module-level ints are compile-time constants for numba. (The module is long because it declares every row of
every table, one line and one comment each.)
"""

from __future__ import annotations

import math
from collections import namedtuple

__all__ = ["State"]

State = namedtuple(
    "State",
    [
        "req_int",  # int64[REQ_INT_ROWS, n]: per-request integer fields (RQ_*); branch slots follow the arrivals
        "req_float",  # float64[REQ_FLOAT_ROWS, n]: per-request times and amounts (RF_*); NaN until they happen
        "rep_int",  # int64[REP_INT_ROWS, R]: per-replica integer state (RP_*)
        "rep_float",  # float64[REP_FLOAT_ROWS, R]: per-replica accumulators (RA_*) and iteration in flight (IT_*)
        "queue",  # int64[QUEUE_ROWS, R + n_pools]: waiting queues (Q_*); replica r's own is r, pool p's shared R + p
        "running",  # int64[R, max_batch]: running requests per replica, in admission order
        "pool_int",  # int64[POOL_INT_ROWS, n_pools]: pool configuration (PL_*)
        "pool_float",  # float64[POOL_FLOAT_ROWS, n_pools]: pool configuration (PF_*)
        "params",  # float64[n_pools, N_PARAMS]: step-cost parameters of each pool's engine (kernels.layout)
        "draws",  # float64[DRAW_STAGE0 + stage draws, n_arrivals]: pre-drawn uniforms, tokens and seconds (DRAW_*)
        "heap_time",  # float64[3, cap]: event-heap times (HEAP_*)
        "heap_int",  # int64[3, 2, cap]: event-heap (HEAP_SEQ, HEAP_PAYLOAD) of each entry
        "glob",  # int64[GLOB_ROWS + max_batch]: loop globals (G_*), then the jobs that ended in the iteration applied
        "run",  # float64[RUN_ROWS + ITL_BINS]: run accumulators (RUN_*), then the inter-token-gap histogram
        "pipe_int",  # int64[PIPE_INT_ROWS, m]: stage table (SG_*), tier levels (TI_*), shared resources (XI_*)
        "pipe_float",  # float64[PIPE_FLOAT_ROWS, m]: stage table (SGF_*), tiers (TF_*), resources (XF_*),
        # stage accumulators (SA_*) and the route-table row (ROUTE_TABLE)
        "span",  # float64[2, R, SPAN_CAP]: each replica's planned fast-forward span (SPAN_COST, SPAN_END)
        "pc_chain",  # int64[n_arrivals, CHAIN_ROWS]: what names each request's KV blocks (CH_*: see block_keys)
        "pc_ids",  # int64[total]: trace requests' prompt hash ids (CH_TRACE_OFF), one per G_PC_HASH_BLOCK tokens
        "pc",  # int64[R, T, PC_ROWS]: each replica's prefix cache, an open-addressing table of T slots (PC_*)
        "pcn",  # int64[R, N, PN_ROWS]: each replica's cache nodes, runs of blocks that share a state (PN_*)
        "pc2",  # int64[R, T2, PC2_ROWS]: each replica's second-level tier of the cache (PC_KEY, PC_LINKS)
    ],
)


class _Rows:
    """Numbers the rows of one table in declaration order (a field may span ``width`` rows); rows that
    Python fills by name (the stage table) record their ``field`` name and default."""

    def __init__(self) -> None:
        self.n = 0
        self.fields: dict[str, tuple[int, float]] = {}

    def __call__(self, width: int = 1, *, field: str | None = None, default: float = 0) -> int:
        start = self.n
        self.n += width
        if field is not None:
            self.fields[field] = (start, default)
        return start


INF = math.inf
SPAN_CAP = 128  # most iterations one fast-forwarded span plans
# A compile-time switch: the loop compiled for plain serving (no stage tables) sets it False
# (``hermes_fast.kernels._jit.specialized``), so numba prunes, before typing, every branch only pipelines
# reach (stages, shared links and tiers, search pools, parallel branches) and never compiles that code.
PIPELINES = True
# Likewise for the prefix cache: a loop specialised with PREFIX_CACHE = False leaves out every branch only a pool
# with a prefix cache reaches (lookups, references, commits, evictions, the tier, cache-aware routing).
PREFIX_CACHE = True

# ---------------------------------------------------------------- per request: S.req_int
_r = _Rows()
RQ_PROMPT = _r()  # prompt tokens of the current job
RQ_OUTPUT = _r()  # tokens the current job emits
RQ_STATUS = _r()  # STATUS_*
RQ_REASON = _r()  # REASON_*: why rejected or dropped
RQ_GEN = _r()  # output tokens emitted
RQ_PREFILLED = _r()  # tokens of the current prefill target done
RQ_TARGET = _r()  # prefill target: the prompt, or prompt + emitted tokens after a recompute
RQ_KV = _r()  # tokens whose KV the request holds (on the device, or on the host when swapped)
RQ_BLOCKS = _r()  # KV blocks held on its replica
RQ_NEXT = _r()  # next request in its queue (a waiting queue, or an API server thread's)
RQ_REPLICA = _r()  # replica it is queued on / running on / holding KV on (-1: none)
RQ_ENTRY_REPLICA = _r()  # replica that first admitted it
RQ_DECODE_REPLICA = _r()  # disaggregated: replica that decoded it
RQ_PREEMPTIONS = _r()
RQ_SWAPPED = _r()  # 1 while its KV is on the host
RQ_CHUNK = _r()  # tokens scheduled in its replica's current iteration (prefill chunk, 1 for a decode, 0)
RQ_FIRST_AT = _r()  # index of the output token that is the first answer token (0: none in this job)
RQ_SEQS = _r()  # sequences a prefill job holds (a reranker scores k query-document pairs)
RQ_CLASS = _r()
RQ_STAGE = _r()  # pipelines: current stage (-1: plain serving)
RQ_ROUTE = _r()  # target picked by the route stage
RQ_BASE_PROMPT = _r()  # the user's prompt tokens
RQ_ANSWER = _r()  # answer tokens
RQ_CTX = _r()  # tokens of the conversation so far (prefix, prompt, documents, outputs, tool results)
RQ_CACHED = _r()  # leading tokens of RQ_CTX whose KV is at hand (fetched, or kept from an earlier round)
RQ_RES = _r()  # shared resource of the transfer in flight
RQ_RES_NEXT = _r()  # next request transferring on the same resource
RQ_XFER_KIND = _r()  # what the transfer is for (XFER_*)
RQ_STOP = _r()  # tokens emitted at which something must be recorded: the job's output, or first the last
# thinking token and then the first answer token (a span crossing one records it at the iteration's end)
RQ_BRANCHES_LEFT = _r()  # parallel reasoning: branches of the request's job still generating (itself included)
RQ_SHARED_BLOCKS = _r()  # KV blocks of its job's prompt it shares with sibling branches (counted in RQ_BLOCKS)
RQ_BRANCHED = _r()  # 1 once its job's branches have started
RQ_HOLDERS = _r()  # branches holding the shared prompt blocks (they are freed when none does)
RQ_EMITTED = _r()  # tokens its finished LLM jobs emitted, its parallel branches' included (thinking + answer)
RQ_RESERVED = _r()  # KV blocks reserved at admission for the job's whole life (0: allocated as it goes)
RQ_PC_LEN = _r()  # prefix cache: blocks in its chain (its full KV blocks, prompt and output; 0: never cached)
RQ_PC_REF = _r()  # prefix cache: leading chain blocks it references as cache entries (counted in RQ_BLOCKS)
RQ_PC_NODE = _r()  # prefix cache: the node its referenced blocks end in (S.pcn; -1: none)
RQ_PC_HIT = _r()  # prefix cache: prompt tokens its first admission found cached (prefill skipped)
RQ_NEXT_TURN = _r()  # sessions: the request of the session's next turn (-1: none)
RQ_PREV_TURN = _r()  # sessions: the request of the session's previous turn (-1: none)
RQ_KEPT_BLOCKS = _r()  # preempted under a prefix cache without a chain: its computed full blocks, left cached
RQ_KEPT_MARK = _r()  # ... RP_RELEASED of its replica just before they went back (what came back since is behind them)
RQ_KEPT_REPLICA = _r()  # ... the replica caching them
REQ_INT_ROWS = _r.n

# ---------------------------------------------------------------- per request: S.req_float (s unless noted)
_r = _Rows()
RF_ADMIT = _r()  # first admitted to an iteration
RF_PREFILL_END = _r()  # prompt fully prefilled (first time)
RF_FIRST_TOKEN = _r()  # first answer token delivered (disaggregated: after the KV hand-off)
RF_DONE = _r()
RF_TRANSFER = _r()  # KV hand-off duration (its start while in flight on a shared link)
RF_LAST_TOKEN = _r()  # time of the latest token (for inter-token gaps)
RF_ENTER = _r()  # pipelines: entered the current stage
RF_READY = _r()  # data arrived: the stage's service may start
RF_REASON_END = _r()  # last thinking token of the current job
RF_VFINISH = _r()  # processor sharing: bytes, then the virtual finish of the transfer in flight
RF_QUEUED = _r()  # last joined a queue
RF_ENQUEUED = _r()  # first joined an engine's queue, past its API front end
RF_QUEUE_SUM = _r()  # pipelines: time spent waiting for batch slots, over all stages
RF_ARRIVAL = _r()  # the pre-drawn arrival times, sorted (a closed loop's: set when its client sends it)
RF_SENT = _r()  # its client sent it (arrival, or later when the client's concurrency was full); latencies start here
RF_THINK = _r()  # closed loop: its client's think time after it completes, before the next request
REQ_FLOAT_ROWS = _r.n

# ---------------------------------------------------------------- per replica: S.rep_int
_r = _Rows()
RP_POOL = _r()
RP_BUSY = _r()  # 1 while an iteration is in flight
RP_NRUN = _r()  # requests in S.running[r]
RP_FREE_BLOCKS = _r()
RP_SPAN = _r()  # iterations in the pending span (> 1 when fast-forwarded) whose step costs are planned
RP_SPAN_PLANNED = _r()  # iterations the span runs unless cut (its KV taken): more than RP_SPAN while its step
# costs are planned a chunk at a time (fastforward.plan_more)
RP_KV_TOKENS = _r()  # KV tokens of resident requests (occupancy)
RP_HEAP_POS = _r()  # position of its pending iteration end in the iteration heap
RP_PC_HEAD = _r()  # prefix cache: least recently used unreferenced node (of S.pcn; -1: none)
RP_PC_TAIL = _r()  # prefix cache: most recently used unreferenced node (-1: none)
RP_PC_UNREF = _r()  # prefix cache: unreferenced entries, the blocks of the listed nodes (evictable; counted in
# RP_FREE_BLOCKS)
RP_PC_ENTRIES = _r()  # prefix cache: entries (referenced or not)
# second-level tier of the prefix cache (S.pc2), the same four rows in the same order (PC_TIER_LEVEL apart)
RP_PC2_HEAD = _r()  # tier: least recently used block (a slot of S.pc2; -1: none)
RP_PC2_TAIL = _r()  # tier: most recently used block (-1: none)
RP_PC2_UNREF = _r()  # tier: blocks on its LRU list (all of them: nothing references the tier's copies)
RP_PC2_ENTRIES = _r()  # tier: blocks held
RP_PN_FREE = _r()  # prefix cache: first node on the free list (-1: none; the list runs through PN_PARENT)
RP_PN_FRESH = _r()  # prefix cache: nodes ever used (the next fresh one)
RP_RELEASED = _r()  # KV blocks ever given back to the free pool (its free queue's order: see kv.kept_blocks)
RP_FE_CURRENT = _r()  # API server thread: the request whose intake it is taking (-1: none)
RP_FE_HEAD = _r()  # API server thread: first request waiting for it (-1: none; the FIFO runs through RQ_NEXT)
RP_FE_TAIL = _r()  # API server thread: last request waiting for it (-1: none)
RP_FE_QUEUED = _r()  # API server thread: requests waiting for it
REP_INT_ROWS = _r.n

# ---------------------------------------------------------------- per replica: S.rep_float
_r = _Rows()
RA_BUSY_S = _r()  # accumulated over the run: time with an iteration in flight
RA_ITERATIONS = _r()
RA_BATCH_SUM = _r()  # sum over iterations of the requests in the iteration
RA_PREFILL_TOKENS = _r()
RA_DECODE_TOKENS = _r()
RA_KV_TOKEN_S = _r()  # integral of resident KV tokens over busy time
RA_SWAP_S = _r()
RA_PREEMPTIONS = _r()
RA_PAIRS = _r()  # causal attention query-key pairs of the prefill chunks (per sequence, summed)
RA_KV_READ = _r()  # KV tokens attention read: prefill chunks' context and decodes' caches, summed over iterations
RA_PC_LOOKUP_TOKENS = _r()  # prefix cache: prefill targets looked up at admission (tokens)
RA_PC_HIT_TOKENS = _r()  # prefix cache: tokens of those found cached (prefill skipped)
RA_PC_EVICTIONS = _r()  # prefix cache: entries evicted (LRU) for KV
RA_PC_INSERTS = _r()  # prefix cache: entries created
RA_PC2_SPILLS = _r()  # tier: blocks evicted from the device that the tier took
RA_PC2_TOKENS = _r()  # tier: tokens admissions loaded back from the tier (not prefilled)
RA_PC2_LOAD_S = _r()  # tier: seconds of those loads (in the iterations they delayed)
RA_PC2_WAIT_S = _r()  # tier: seconds of them spent waiting for a tier instance other replicas share
RA_PC2_BUSY_UNTIL = _r()  # tier, at the first replica of those sharing an instance: when the loads queued on it end
RA_FRONTEND_WAIT_S = _r()  # at a pool's first replica: seconds jobs waited for its API server threads, summed
# totals of the iteration being formed (reset by form_iteration, added to by mark): what the step cost takes
IT_PREFILL_TOKENS = _r()
IT_PAIRS = _r()  # causal attention pairs of the prefill chunks
IT_PREFILL_KV = _r()  # KV tokens the prefill chunks attend to
IT_DECODES = _r()
IT_DECODE_KV = _r()
IT_LOGITS = _r()  # sequences that emit a token
IT_SEQS = _r()
IT_INTAKE_SHARES = _r()  # sum of 1 / output tokens over the sequences that emit a token (frontend.stream_floor)
IT_MIN_LEFT = _r()  # fewest tokens any marked decode still has to emit before its job ends (last total)
IT_FIRST_END = _r()  # end time of the first iteration of the pending span
IT_END = _r()  # end time of the pending iteration or span (while busy)
IT_SPAN_KV = _r()  # resident KV tokens when the pending span was launched (its prefill chunks included)
IT_WAKE_DUE = _r()  # idle replica: time of the batch-wait wake-up last set (-1: none)
REP_FLOAT_ROWS = _r.n

# ---------------------------------------------------------------- queues: S.queue
_r = _Rows()
Q_HEAD = _r()
Q_TAIL = _r()
Q_COUNT = _r()
Q_TOKENS = _r()  # tokens the queued requests will hold (least_kv load)
QUEUE_ROWS = _r.n

# ---------------------------------------------------------------- pool configuration: S.pool_int
_r = _Rows()
PL_ROLE = _r()  # ROLE_*
PL_POLICY = _r()  # POLICY_*
PL_MAX_BATCH = _r()
PL_MAX_TOKENS = _r()  # token budget of one iteration
PL_CHUNK = _r()  # chunked: most prompt tokens of one request per iteration; continuous_chunked: of one iteration
PL_RANK_CHUNK = _r()  # most prompt tokens of one request per iteration on its rank (attention DP: a rank's share)
PL_SPLIT = _r()  # 1: a prompt may be cut over iterations (chunked, continuous_chunked)
PL_BLOCK = _r()  # tokens per KV block
PL_PREEMPT = _r()  # PREEMPT_*
PL_SCHED = _r()  # SCHED_*
PL_FIRST = _r()  # first replica index
PL_COUNT = _r()  # replicas
PL_MAX_QUEUE = _r()  # -1: unlimited
PL_NEXT = _r()  # pool that decodes after this one hands off (-1: none)
PL_PAIRING = _r()  # PAIRING_*
PL_MAX_CONTEXT = _r()
PL_CAP_BLOCKS = _r()  # KV blocks per replica
PL_RR = _r()  # round-robin counter (mutable)
PL_FE_RR = _r()  # the API server threads' round-robin counter (mutable)
PL_KIND = _r()  # POOL_MODEL or POOL_SEARCH
PL_LINK_RES = _r()  # resource the KV hand-off crosses (-1: fixed latency + bytes / bandwidth, no sharing)
PL_MEM_RES = _r()  # search pools: resource (a host's memory) the index is read through, shared (-1: none)
PL_ADMIT = _r()  # ADMIT_*: how admission commits KV
PL_PREFIX = _r()  # 1: the replicas keep a prefix cache of their KV blocks (requests with a hash chain)
PL_PC2_CAP = _r()  # blocks each replica's second-level tier holds (0: none)
PL_PC2_GROUP = _r()  # replicas (consecutive, from the pool's first) that share one instance of that tier
PL_HOLD_AFTER_PREEMPT = _r()  # 1: an iteration whose decodes preempted admits no new request (vLLM V1)
PL_KEEP_PREEMPTED = _r()  # 1: a preempted request's computed blocks stay cached for its re-admission (prefix cache)
POOL_INT_ROWS = _r.n

# ---------------------------------------------------------------- pool configuration: S.pool_float
_r = _Rows()
PF_KV_BYTES = _r()  # KV bytes per token on one device (what one device sends or swaps)
PF_SWAP_BW = _r()  # B/s host link
PF_SWAP_LAT = _r()  # s
PF_LINK_BW = _r()  # B/s to the next pool
PF_LINK_LAT = _r()  # s
PF_MAX_WAIT = _r()  # s an idle replica waits for a fuller batch
PF_S_FLOP = _r()  # search pools: FLOP per query
PF_S_BYTES_FIXED = _r()  # bytes read once per batch
PF_S_BYTES_QUERY = _r()
PF_S_FLOPS = _r()  # achievable FLOP/s
PF_S_BW = _r()  # achievable B/s
PF_S_OVERHEAD = _r()  # s per batch
PF_NEW_TOKEN_RATIO = _r()  # ADMIT_RATIO: share of a running request's remaining output kept free for it
PF_FRONTEND_S = _r()  # s a job waits in the engine's API front end (HTTP, tokenisation) before it queues
PF_FRONTEND_SERIAL_S = _r()  # s of a replica's API server thread a job's intake holds, first come first served
PF_FRONTEND_TOKEN_S = _r()  # s of a replica's API server thread each token it streams takes
PF_OVERLAP_WEIGHT = _r()  # kv_aware routing: weight of the blocks a replica would prefill against its blocks in use
PF_PC2_LAT = _r()  # s before a load from the prefix cache's tier starts (tier and link latency)
PF_PC2_BW = _r()  # B/s of a load from the tier (one device's KV share; the slower of the tier and the link)
PF_PC2_SHARED_BW = _r()  # B/s of one device's KV share from a tier instance its replica's devices all load from
POOL_FLOAT_ROWS = _r.n

# ---------------------------------------------------------------- pipelines: S.pipe_int (columns: stages, tier
# levels or resources, by row group)
_r = _Rows()
SG_KIND = _r(field="kind")  # SK_*
SG_POOL = _r(field="pool", default=-1)  # pool of a job stage (-1: the routed target)
SG_ROUTE = _r(field="route")  # routed stages: offset of the route's target pools in the ROUTE_TABLE row
SG_RULE = _r(field="rule", default=-1)  # route stages: RULE_*; -1 for other stages
SG_NTARGET = _r(field="ntarget")
SG_CLASS_MAP = _r(field="class_map")  # route by class: offset of the class -> target map in the ROUTE_TABLE row
SG_LINK = _r(field="link", default=-1)  # resource crossed by the data moving in (-1: none)
SG_ROW = _r(field="row")  # output row of the stage (stage accumulators)
SG_ROW_REASON = _r(field="row_reason", default=-1)  # LLM jobs: row of the thinking part (-1: none)
SG_ROW_DECODE = _r(field="row_decode", default=-1)  # LLM jobs: row of the answer part (-1: none)
SG_DRAW = _r(field="draw", default=-1)  # row of S.draws (-1: none): thinking tokens, delay seconds, or a uniform
SG_FINAL = _r(field="final")  # LLM jobs: 1 if this job writes the answer
SG_TIER = _r(field="tier")  # kv_retrieve: first tier level (a column of the TI_* rows)
SG_NTIER = _r(field="ntier")
SG_ADD_CTX = _r(field="add_ctx")  # tokens the stage adds to the context (documents, tool results)
SG_SEQS = _r(field="seqs", default=1)  # model jobs: sequences (rerank: documents)
SG_END = _r(field="end")  # one past the class's last stage
SG_PAST_DRAW = _r(field="past_draw", default=-1)  # kv_retrieve: row of S.draws with the prefix tokens
# route stages: offset of their cumulative weights and length bounds in the ROUTE_TABLE row
SG_ROUTE_F = _r(field="route_f")
# LLM jobs: parallel branches sharing the prompt's KV (their thinking draws: rows SG_DRAW + b)
SG_BRANCHES = _r(field="branches", default=1)
STAGE_INT_ROWS = _r.n
STAGE_INT_FIELDS = dict(_r.fields)  # the stage table's integer fields by name: (row, default)
TI_RES = _r()  # KV tier level: first resource of the tier's instances
TI_INSTANCES = _r()
TIER_INT_ROWS = _r.n - TI_RES
XI_ACTIVE = _r()  # shared resource: transfers (and search flows) in flight
XI_HEAD = _r()  # linked list of transfers in flight (RQ_RES_NEXT)
XI_MIN = _r()  # the transfer that finishes first
PIPE_INT_ROWS = _r.n

# ---------------------------------------------------------------- pipelines: S.pipe_float
_r = _Rows()
SGF_DELAY = _r(field="delay", default=0.0)  # s
SGF_PER_TOKEN = _r(field="per_token", default=0.0)  # s per answer token
# bytes moved in: BYTES + BYTES_CTX x context + BYTES_ANSWER x answer tokens
SGF_BYTES = _r(field="bytes", default=0.0)
SGF_BYTES_CTX = _r(field="bytes_ctx", default=0.0)
SGF_BYTES_ANSWER = _r(field="bytes_answer", default=0.0)
# model-job tokens: JOB + JOB_PROMPT x prompt + JOB_ANSWER x answer + JOB_CTX x context tokens
SGF_JOB = _r(field="job", default=0.0)
SGF_JOB_PROMPT = _r(field="job_prompt", default=0.0)
SGF_JOB_ANSWER = _r(field="job_answer", default=0.0)
SGF_KV_BYTES = _r(field="kv_bytes", default=0.0)  # kv_retrieve: bytes of KV per prefix token
SGF_JOB_CTX = _r(
    field="job_ctx", default=0.0
)  # model-job tokens per context token (a reward model scores each branch's context)
STAGE_FLOAT_ROWS = _r.n
STAGE_FLOAT_FIELDS = dict(_r.fields)  # ... and its float fields
TF_HIT = _r()  # KV tier level: effective hit rate among lookups reaching the level
TF_LOOKUP_S = _r()  # lookup latency
TIER_FLOAT_ROWS = _r.n - TF_HIT
XF_BW = _r()  # shared resource: B/s
XF_LAT = _r()  # s before a transfer joins (link latency)
XF_V = _r()  # bytes served to each active transfer so far (virtual time)
XF_T = _r()  # time XF_V refers to
XF_NEXT_T = _r()  # next completion (inf: idle)
XF_BUSY_S = _r()  # time with at least one transfer
XF_BYTES = _r()  # bytes moved
XF_COUNT = _r()  # transfers completed
XF_WAIT_S = _r()  # sum of transfer durations (latency included)
SA_VISITS = _r()  # stage output row: visits (after the warm-up)
SA_TIME_S = _r()  # time from entering the stage to leaving it
SA_QUEUE_S = _r()  # waiting for a batch slot
SA_TRANSFER_S = _r()  # moving data in
ROUTE_TABLE = _r()  # route tables (cumulative weights, length bounds, target pools, class maps), then each
# class's first stage (from G_CLASS_FIRST)
PIPE_FLOAT_ROWS = _r.n

# ---------------------------------------------------------------- loop globals: S.glob
_r = _Rows()
G_NEXT_ARRIVAL = _r()
G_SEQ = _r()  # next heap sequence number (ties in push order)
G_HEAP_SIZE = _r(3)  # entries in each heap: G_HEAP_SIZE + HEAP_*
G_FAST_FORWARD = _r()  # 1: plan decode-only spans
G_EVENTS = _r()
G_SPANS = _r()  # iterations committed beyond the first by fast-forward
G_PIPELINE = _r()  # 1: requests follow stage tables
G_CUR = _r()  # replica whose iteration end is being processed (the replica count for any other event)
G_WARMUP = _r()  # requests below this index are left out of the stage accumulators
G_DONE_COUNT = _r()  # jobs that ended in the iteration being applied, listed from G_DONE_LIST
G_NRES = _r()  # shared resources
G_CLASS_FIRST = _r()  # offset of the classes' first stages in the ROUTE_TABLE row
G_CHILD0 = _r()  # parallel reasoning: first request slot of the branches (after the arrivals)
G_BRANCH_SLOTS = _r()  # branch slots per request (branches - 1 of the widest reason stage; 0: none)
G_STOP_ARRIVAL = _r()  # the loop pauses before this arrival (progress reports); serve resumes it exactly
G_SENT = _r()  # requests the clients have sent (they send in arrival order)
G_IN_FLIGHT = _r()  # requests sent and not yet completed, rejected or dropped
G_CONCURRENCY = _r()  # most requests in flight (the clients' cap; the arrivals' count: none)
G_CLOSED = _r()  # 1: a closed loop: each completion makes its client send the next request after a think time
G_PC_BLOCK = _r()  # prefix cache: tokens per KV block of the chains (the entry pool's block)
G_PC_HASH_BLOCK = _r()  # prefix cache: prompt tokens per trace hash id
G_DONE_LIST = _r.n  # first entry of the ended-jobs list (max_batch entries)
GLOB_ROWS = _r.n

# ---------------------------------------------------------------- run accumulators: S.run
_r = _Rows()
RUN_ITL_SUM = _r()  # s, weighted by tokens
RUN_ITL_COUNT = _r()
RUN_HORIZON = _r()  # input: stop after this time (inf: none)
RUN_END = _r()  # time of the last event processed
RUN_ITL_HIST = _r.n  # first bin of the inter-token-gap histogram (token counts)
RUN_ROWS = _r.n
ITL_BINS = 1200  # 100 per decade from 1 us to 1000 s
ITL_LOG_MIN = -6.0
ITL_PER_DECADE = 100.0

# ---------------------------------------------------------------- S.span, S.heap_*, S.draws
SPAN_COST = 0  # seconds of each planned iteration
SPAN_END = 1  # end time of each planned iteration
HEAP_ITERATION = 0  # iteration ends; payload: replica (ties by replica index)
HEAP_HANDOFF = 1  # fixed-time KV hand-offs; payload: request
HEAP_TIMER = 2  # stage delays, batch-wait wake-ups, transfers joining after their latency (TIMER_*)
HEAP_SEQ = 0
HEAP_PAYLOAD = 1
DRAW_ENTRY = 0  # uniform for a random replica choice at the entry pool
DRAW_NEXT = 1  # ... at the pool a prefill hands off to
DRAW_STAGE0 = 2  # first row of the stages' per-request draws

# ---------------------------------------------------------------- codes
STATUS_PENDING = 0  # request status (RQ_STATUS); the order is the request_status variable's flag order
STATUS_WAITING = 1
STATUS_RUNNING = 2
STATUS_TRANSFERRING = 3
STATUS_DONE = 4
STATUS_REJECTED = 5
STATUS_DROPPED = 6

REASON_NONE = 0  # why a request was rejected or dropped (RQ_REASON)
REASON_CONTEXT = 1  # prompt + output exceed the model's context
REASON_KV = 2  # its KV can never fit in one replica
REASON_TOKENS = 3  # prompt exceeds max_batched_tokens of a non-chunked policy
REASON_QUEUE_FULL = 4  # dropped: the queue was at max_queue_requests

ROLE_BOTH = 0  # pool roles (PL_ROLE)
ROLE_PREFILL = 1
ROLE_DECODE = 2
POLICY_STATIC = 0  # batching policies (PL_POLICY)
POLICY_CONTINUOUS = 1
POLICY_CHUNKED = 2
POLICY_MIXED = 3
POLICY_CONTINUOUS_CHUNKED = 4
SCHED_ROUND_ROBIN = 0  # replica schedulers (PL_SCHED), in config.serving.SCHEDULERS order
SCHED_RANDOM = 1
SCHED_LEAST_OUTSTANDING = 2
SCHED_LEAST_KV = 3
SCHED_SHARED_QUEUE = 4
SCHED_PREFIX_AFFINITY = 5  # the replica caching the longest prefix of the request's chain (ties: least outstanding)
SCHED_SESSION_STICKY = 6  # the replica that served the session's previous turn (else: least outstanding)
SCHED_KV_AWARE = 7  # least PF_OVERLAP_WEIGHT x blocks to prefill + blocks in use and queued (Dynamo's KV router)
POOL_MODEL = 0  # pool kinds (PL_KIND)
POOL_SEARCH = 1
PREEMPT_RECOMPUTE = 0  # preemption modes (PL_PREEMPT)
PREEMPT_SWAP = 1
ADMIT_ON_DEMAND = 0  # admission (PL_ADMIT): blocks allocated as tokens come; preempt when they run out (vLLM)
ADMIT_RESERVE_ALL = 1  # reserve the job's whole KV (prompt + output) at admission: never preempted (TRT-LLM's
# guaranteed_no_evict; the static policy too)
ADMIT_RATIO = 2  # admit while the free KV covers the prompt and PF_NEW_TOKEN_RATIO of every running and new
# request's remaining output; blocks then allocated on demand (SGLang's new_token_ratio)
PAIRING_GLOBAL = 0  # disaggregated hand-off pairing (PL_PAIRING)
PAIRING_LOCAL = 1

SK_MODEL = 0  # stage kinds (SG_KIND): a one-token prefill job (embed, rerank, a router or safety model)
SK_SEARCH = 1
SK_LLM = 2  # prefill [+ thinking] [+ answer] on an LLM engine
SK_DELAY = 3  # fixed, per-token or drawn time without a pool (route, postprocess, tool call)
SK_KV = 4  # kv_retrieve
RULE_PROBABILITY = 0  # route rules (SG_RULE)
RULE_LENGTH = 1
RULE_CLASS = 2

XFER_STAGE = 0  # what a transfer on a shared resource is for (RQ_XFER_KIND): data moving into a stage
XFER_KV_FETCH = 1  # a prefix KV fetch
XFER_HANDOFF = 2  # a KV hand-off to the decode pool

TIMER_DELAY = 0  # timer kinds (timer heap payload = subject * TIMER_KINDS + kind): a stage's delay ends
TIMER_WAKE = 1  # an idle replica's batch wait ends
TIMER_JOIN = 2  # a transfer joins its resource after the latency
TIMER_SEND = 3  # a client sends its next request (closed loop, or a slot freed under a concurrency cap)
TIMER_FRONTEND = 4  # a job is through its engine's API front end: it queues
TIMER_TURN = 5  # a session's next turn is sent (its user thought after the previous answer)
TIMER_INTAKE = 6  # a replica's API server thread ends an intake (subject: the replica)
TIMER_KINDS = 7

# ---------------------------------------------------------------- prefix cache: S.pc, S.pc2 and S.pcn columns
PC_KEY = 0  # S.pc, S.pc2: the block hash held in the slot (PC_EMPTY: none)
PC_NODE = 1  # S.pc: the node the block belongs to
PC_ROWS = 2
PC_LINKS = 1  # S.pc2, S.pcn: LRU list, the entries used before and after (+ 1, 0: none), low and high 32 bits
PC2_ROWS = 2
PC_EMPTY = 0
PC_DEVICE_LEVEL = 0  # the level offset of the device cache's RP_PC_* rows (its list is of nodes)
PC_TIER_LEVEL = RP_PC2_HEAD - RP_PC_HEAD  # ... and of the tier's RP_PC2_* rows (its list is of blocks)
# S.pcn, a node: blocks [PN_START, PN_END) of every chain through it, held by the same requests (see prefix_cache)
PN_OWNER = 0  # a request whose chain holds its blocks: block j's key is pc_key(S, owner, j)
PN_START = 2
PN_END = 3
PN_PARENT = 4  # the node holding block PN_START - 1 (-1: none, the node starts a chain; free nodes: the next free)
PN_HELD = 5  # running requests whose held prefix ends at its last block, plus its held children: > 0 iff held
PN_KIDS = 6  # cached child nodes, held or not
PN_ROWS = 8  # (a node fills one cache line)

# ---------------------------------------------------------------- prefix cache: S.pc_chain columns (a request's)
# (request-major: the few fields a key needs share a cache line; block_keys computes block e's key from them)
CH_PREFIX = 0  # the mixed key of its shared prefix, for the blocks wholly inside it
CH_PREFIX_BLOCKS = 1  # blocks wholly inside its prefix (0: none)
CH_TRACE_OFF = 2  # offset of its trace hash ids in S.pc_ids
CH_TRACE_BLOCKS = 3  # blocks wholly inside its hashed prompt (0: none), those of its prefix excepted
CH_STREAM = 4  # the mixed key of its token stream (its session), for every other block
CHAIN_ROWS = 5
