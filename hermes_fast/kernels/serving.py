"""The serving event loop: pools of engine replicas, batching policies, paged KV, preemption, KV hand-off.

All state is struct-of-arrays, bundled in one tuple ``S`` whose slots are the ``K_*`` constants below;
each row of a 2-D state array is one contiguous field (``S[K_RI][R_GEN, i]`` is request i's generated
tokens). Pools are data: a pool has a role (colocated, prefill-only, decode-only), a batching policy,
a replica scheduler, limits, and the link to the next pool. The simulator's Python side
(``hermes_fast.simulate``) fills these arrays; ``serve`` runs the loop and leaves results in them.

Events: one pending iteration end per busy replica (a min-heap), KV hand-offs in flight (a second
heap) and the pre-drawn, sorted arrivals. At equal times iteration ends come first (by replica index),
then hand-offs, then arrivals; within the other heaps, the earlier-pushed event. Each replica runs
iterations back to back: at an iteration boundary it retires finished requests, then forms the next
batch by its policy.

Decode fast-forward: when a replica's next batch is decode-only and nothing can be admitted, it plans
a span of identical-shape iterations up to the first request's last token (or its KV running out,
or SPAN_CAP), each step cost computed in a tight scalar loop with KV grown by one token per request,
and pushes one event at the span's end. Nothing outside the replica can change its batch except work
joining its queue or KV it gets back: those events *truncate* the span to the iteration in flight
(``_truncate``), so the replica forms its next batch at the same boundary as one-iteration-per-event
stepping would. Iterations are accounted when they are applied, thinking milestones inside a span
take their iteration's end time, and a run stopped by the horizon settles spans in flight, so both
modes produce identical per-request times.
"""

from __future__ import annotations

import math

import numpy as np

from . import layout as L
from ._jit import kernel
from .collectives import p2p_time
from .stages import search_batch_time, tier_outcome
from .step import host_time, prefill_pairs, step_cost

# --- slots of the state tuple S
K_RI = 0  # int64[NRI, n]: per-request integer fields
K_RF = 1  # float64[NRF, n]: per-request times
K_RS = 2  # int64[NRS, R]: per-replica integer state
K_RSF = 3  # float64[NRSF, R]: per-replica accumulators
K_Q = 4  # int64[NQ, R + n_pools]: waiting queues (replica r's own is r; pool p's shared one is R + p)
K_RUN = 5  # int64[R, max_batch]: running requests per replica, in admission order
K_PI = 6  # int64[NPI, n_pools]: pool configuration
K_PF = 7  # float64[NPF, n_pools]
K_PAR = 8  # float64[n_pools, N_PARAMS]: step-cost parameters of each pool's engine
K_U = 9  # float64[2 + stage draws, n]: uniforms for random replica choice (entry pool, next pool), then
# the stages' per-request draws (uniforms, tokens, seconds)
K_HT = 10  # float64[3, cap]: event-heap times (heap 0: iteration ends, 1: hand-offs, 2: timers)
K_HI = 11  # int64[3, 2, cap]: event-heap (sequence number, payload)
K_G = 12  # int64[NG + max_batch]: loop globals, then the requests whose job ended in the iteration applied
K_ACC = 13  # float64[NACC + ITL_BINS]: run accumulators, then the inter-token-latency histogram (token counts)
# --- pipelines (see "pipelines" below; empty when requests are served by one pool or a P/D pair). Tables
# of one dtype share an array (every array in S costs on each call of a kernel that takes S)
K_PT = 14  # int64[PT_ROWS, m]: stage table (ST_* rows), KV tier levels (TI_*), shared resources (XI_*)
K_PTF = 15  # float64[PTF_ROWS + 1, m]: stage table (STF_*), tier levels (TF_*), resources (XF_*), stage rows
# (SA_*), and row RTF: route tables (cumulative weights, length bounds, target pools, class maps), then each
# class's first stage (from G_CL)
K_SPAN = 16  # float64[2, R, SPAN_CAP]: each replica's planned span: step costs (row 0), iteration ends (row 1)
SPAN_CAP = 128  # most iterations one fast-forwarded span plans

# --- per-request integer fields
R_PROMPT = 0
R_OUTPUT = 1
R_STATUS = 2
R_REASON = 3  # why rejected / dropped
R_GEN = 4  # output tokens emitted
R_PREFILLED = 5  # tokens of the current prefill target done
R_TARGET = 6  # prefill target: the prompt, or prompt + emitted tokens after a recompute
R_KV = 7  # tokens whose KV the request holds (on the device, or on the host when swapped)
R_BLOCKS = 8  # KV blocks held on its replica
R_NEXT = 9  # next request in its queue
R_REPLICA = 10  # replica it is queued on / running on / holding KV on (-1: none)
R_ENTRY_REPLICA = 11  # replica that first admitted it
R_DECODE_REPLICA = 12  # disaggregated: replica that decoded it
R_PREEMPTIONS = 13
R_SWAPPED = 14  # 1 while its KV is on the host
R_CHUNK = 15  # tokens scheduled in the replica's current iteration (prefill chunk, 1 for a decode, 0)
R_FIRST_AT = 16  # index of the output token that is the first answer token (0: none in this job)
R_SEQS = 17  # sequences a prefill job holds (a reranker scores k query-document pairs)
R_CLASS = 18
R_STAGE = 19  # pipelines: current stage (-1: plain serving)
R_ROUTE = 20  # target picked by the route stage
R_BASE_PROMPT = 21  # the user's prompt tokens
R_ANSWER = 22  # answer tokens
R_CTX = 23  # tokens of the conversation so far (prefix, prompt, documents, outputs, tool results)
R_CACHED = 24  # leading tokens of R_CTX whose KV is at hand (fetched, or kept from an earlier round)
R_RES = 25  # resource of the transfer in flight
R_RES_NEXT = 26  # next request transferring on the same resource
R_XKIND = 27  # what the transfer is for (XK_*)
R_STOP = 28  # tokens emitted at which something must be recorded: the job's output, or first the last thinking
# token and then the first answer token (a span crossing one records it at the iteration's end)
R_BRANCHES_LEFT = 29  # parallel reasoning: branches of the request's job still generating (itself included)
R_SHARED_BLOCKS = 30  # KV blocks of its job's prompt it shares with sibling branches (counted in R_BLOCKS)
R_BRANCHED = 31  # 1 once its job's branches have started
R_HOLDERS = 32  # branches holding the shared prompt blocks (they are freed when none does)
NRI = 33

# --- per-request times (s); NaN until they happen
F_ADMIT = 0  # first admitted to an iteration
F_PREFILL_END = 1  # prompt fully prefilled (first time)
F_FIRST_TOKEN = 2  # first token delivered (disaggregated: after the KV hand-off)
F_DONE = 3
F_TRANSFER = 4  # KV hand-off duration
F_LAST_TOKEN = 5  # time of the latest token (for inter-token gaps)
F_ENTER = 6  # pipelines: entered the current stage
F_READY = 7  # data arrived: the stage's service may start
F_REASON_END = 8  # last thinking token of the current job
F_VFINISH = 9  # processor-sharing virtual finish (bytes to move while waiting for the latency)
F_QUEUED = 10  # last joined a queue
F_QUEUE_SUM = 11  # pipelines: time spent waiting for batch slots, over all stages
F_ARRIVAL = 12  # the pre-drawn arrival times, sorted
NRF = 13

# --- status codes
ST_PENDING = 0
ST_WAITING = 1
ST_RUNNING = 2
ST_TRANSFER = 3
ST_DONE = 4
ST_REJECTED = 5
ST_DROPPED = 6

# --- reasons
REASON_NONE = 0
REASON_CONTEXT = 1  # prompt + output exceed the model's context
REASON_KV = 2  # its KV can never fit in one replica
REASON_TOKENS = 3  # prompt exceeds max_batched_tokens of a non-chunked policy
REASON_QUEUE_FULL = 4  # dropped: the queue was at max_queue_requests

# --- per-replica integer state
S_POOL = 0
S_BUSY = 1  # an iteration is in flight
S_NRUN = 2
S_FREE_BLOCKS = 3
S_SPAN = 4  # iterations in the pending span (> 1 when fast-forwarded)
S_KV_TOKENS = 5  # KV tokens of resident requests (occupancy)
S_HEAP_POS = 6  # position of its pending iteration end in heap 0
NRS = 7

# --- per-replica float accumulators
A_BUSY_S = 0
A_ITERATIONS = 1
A_BATCH_SUM = 2  # sum over iterations of requests in the iteration
A_PREFILL_TOKENS = 3
A_DECODE_TOKENS = 4
A_KV_TOKEN_S = 5  # integral of resident KV tokens over busy time
A_SWAP_S = 6
A_FIRST_END = 7  # end time of the first iteration of the pending span
A_PREEMPTIONS = 8
# totals of the iteration being formed (reset by _form, added to by _mark)
T_PRE_TOK = 9
T_PAIRS = 10
T_PRE_KV = 11
T_NDEC = 12
T_DEC_KV = 13
T_LOGITS = 14
T_NSEQ = 15
T_MIN_LEFT = 16  # fewest tokens any marked decode still has to emit before its job ends
A_PENDING_END = 17  # end time of the pending iteration (while busy)
A_WAKE_DUE = 18  # time of the batch-wait wake-up last set
A_SPAN_KV = 19  # resident KV tokens when the pending span was launched (its prefill chunks included)
NRSF = 20

# --- queues
Q_HEAD = 0
Q_TAIL = 1
Q_COUNT = 2
Q_TOKENS = 3  # tokens the queued requests will hold (least_kv load)
NQ = 4

# --- pool configuration (ints)
P_ROLE = 0  # ROLE_*
P_POLICY = 1  # POLICY_*
P_MAX_BATCH = 2
P_MAX_TOKENS = 3
P_CHUNK = 4
P_BLOCK = 5
P_PREEMPT = 6  # 0 recompute, 1 swap
P_SCHED = 7  # SCHED_*
P_FIRST = 8  # first replica index
P_COUNT = 9  # replicas
P_MAX_QUEUE = 10  # -1: unlimited
P_NEXT = 11  # pool that decodes after this one hands off (-1: none)
P_PAIRING = 12  # 0 global, 1 local
P_MAX_CONTEXT = 13
P_CAP_BLOCKS = 14  # KV blocks per replica
P_RR = 15  # round-robin counter (mutable)
P_KIND = 16  # POOL_MODEL or POOL_SEARCH
P_LINK_RES = 17  # resource the KV hand-off crosses (-1: fixed latency + bytes / bandwidth, no sharing)
P_MEM_RES = 18  # search pools: resource (a host's memory) the index is read through, shared (-1: none)
NPI = 19

# --- pool configuration (floats)
PF_KV_BYTES = 0  # KV bytes per token on one device (what one device sends or swaps)
PF_SWAP_BW = 1  # B/s host link
PF_SWAP_LAT = 2
PF_LINK_BW = 3  # B/s to the next pool
PF_LINK_LAT = 4
PF_MAX_WAIT = 5  # s an idle replica waits for a fuller batch
PF_S_FLOP = 6  # search pools: FLOP per query
PF_S_BYTES_FIXED = 7  # bytes read once per batch
PF_S_BYTES_QUERY = 8
PF_S_FLOPS = 9  # achievable FLOP/s
PF_S_BW = 10  # achievable B/s
PF_S_OVERHEAD = 11  # s per batch
NPF = 12

ROLE_BOTH = 0
ROLE_PREFILL = 1
ROLE_DECODE = 2
POLICY_STATIC = 0
POLICY_CONTINUOUS = 1
POLICY_CHUNKED = 2
POLICY_MIXED = 3
SCHED_ROUND_ROBIN = 0
SCHED_RANDOM = 1
SCHED_LEAST_OUTSTANDING = 2
SCHED_LEAST_KV = 3
SCHED_SHARED_QUEUE = 4
POOL_MODEL = 0
POOL_SEARCH = 1

# --- stage table (ints)
ST_KIND = 0  # SK_*
ST_POOL = 1  # pool of a job stage (-1: the routed target)
ST_ROUTE = 2  # routed stages: offset of the route's target pools in the RTF row
ST_RULE = 3  # route stages: RULE_*; -1 for other stages
ST_NTARGET = 4
ST_CLASS_MAP = 5  # route by class: offset of the class -> target map in the RTF row
ST_LINK = 6  # resource crossed by the data moving in (-1: none)
ST_ROW = 7  # output row of the stage
ST_ROW_REASON = 8  # LLM jobs: row of the thinking part (-1: none)
ST_ROW_DECODE = 9  # LLM jobs: row of the answer part (-1: none)
ST_DRAW = 10  # row of K_U (-1: none): thinking tokens, delay seconds, or a uniform
ST_FINAL = 11  # LLM jobs: 1 if this job writes the answer
ST_TIER = 12  # kv_retrieve: first tier level (a column of the TI_* rows)
ST_NTIER = 13
ST_ADD_CTX = 14  # tokens the stage adds to the context (documents, tool results)
ST_SEQS = 15  # model jobs: sequences (rerank: documents)
ST_END = 16  # one past the class's last stage
ST_PAST_DRAW = 17  # kv_retrieve: row of K_U with the prefix tokens
ST_ROUTE_F = 18  # route stages: offset of their cumulative weights and length bounds in the RTF row
ST_BRANCHES = 19  # LLM jobs: parallel branches sharing the prompt's KV (their thinking draws: rows DRAW + b)
NST = 20
SK_MODEL = 0  # a one-token prefill job (embed, rerank, a router or safety model)
SK_SEARCH = 1
SK_LLM = 2  # prefill [+ thinking] [+ answer] on an LLM engine
SK_DELAY = 3  # fixed, per-token or drawn time without a pool (route, postprocess, tool call)
SK_KV = 4  # kv_retrieve
RULE_PROBABILITY = 0
RULE_LENGTH = 1
RULE_CLASS = 2

# --- stage table (floats)
STF_DELAY = 0  # s
STF_PER_TOKEN = 1  # s per answer token
STF_BYTES = 2  # bytes moved in: BYTES + BYTES_CTX x context + BYTES_ANSWER x answer tokens
STF_BYTES_CTX = 3
STF_BYTES_ANSWER = 4
STF_JOB = 5  # model-job tokens: JOB + JOB_PROMPT x prompt + JOB_ANSWER x answer + JOB_CTX x context tokens
STF_JOB_PROMPT = 6
STF_JOB_ANSWER = 7
STF_KV_BYTES = 8  # kv_retrieve: bytes of KV per prefix token
STF_JOB_CTX = 9  # model-job tokens per context token (a reward model scores each branch's context)
NSTF = 10

# --- KV tier levels
TI_RES = NST  # first resource of the tier's instances
TI_INSTANCES = NST + 1
NTI = 2
TF_HIT = NSTF  # effective hit rate among lookups reaching the level
TF_LOOKUP_S = NSTF + 1  # lookup latency
NTF = 2

# --- processor-sharing resources
XI_ACTIVE = NST + NTI
XI_HEAD = NST + NTI + 1  # linked list of transfers in flight (R_RES_NEXT)
XI_MIN = NST + NTI + 2  # the transfer that finishes first
NXI = 3
PT_ROWS = NST + NTI + NXI
XF_BW = NSTF + NTF + 0  # B/s
XF_LAT = NSTF + NTF + 1  # s before a transfer joins (link latency)
XF_V = NSTF + NTF + 2  # bytes served to each active transfer so far (virtual time)
XF_T = NSTF + NTF + 3  # time XF_V refers to
XF_NEXT_T = NSTF + NTF + 4  # next completion (inf: idle)
XF_BUSY_S = NSTF + NTF + 5  # time with at least one transfer
XF_BYTES = NSTF + NTF + 6  # bytes moved
XF_COUNT = NSTF + NTF + 7  # transfers completed
XF_WAIT_S = NSTF + NTF + 8  # sum of transfer durations (latency included)
NXF = 9
_XF0 = NSTF + NTF
XK_STAGE = 0  # data moving into a stage
XK_KV = 1  # a prefix KV fetch
XK_HANDOFF = 2  # a KV hand-off to the decode pool

# --- per-stage-row accumulators
SA_VISITS = _XF0 + NXF + 0
SA_TIME_S = _XF0 + NXF + 1  # time from entering the stage to leaving it
SA_QUEUE_S = _XF0 + NXF + 2  # waiting for a batch slot
SA_TRANSFER_S = _XF0 + NXF + 3  # moving data in
NSA = 4
PTF_ROWS = _XF0 + NXF + NSA
RTF = PTF_ROWS  # the route-table row of K_PTF

TM_DELAY = 0  # timer payloads: request * 4 + kind
TM_WAKE = 1
TM_JOIN = 2

# --- loop globals
G_NEXT_ARRIVAL = 0
G_SEQ = 1
G_HEAP0 = 2  # size of heap 0
G_HEAP1 = 3
G_HEAP2 = 4  # timers: stage delays, batch-wait wake-ups, transfers joining a link after its latency
G_FAST_FORWARD = 5
G_EVENTS = 6
G_SPANS = 7  # iterations committed beyond the first by fast-forward
G_PIPELINE = 8  # 1: requests follow stage tables
G_CUR = 9  # replica whose iteration end is being processed (the replica count for any other event)
G_WARMUP = 10  # requests below this index are left out of the stage accumulators
G_BUF = 11  # requests whose job ended in the iteration being applied, listed after the NG globals
G_NRES = 12  # shared resources
G_CL = 13  # offset of the classes' first stages in the RTF row
G_CHILD0 = 14  # parallel reasoning: first request slot of the branches (after the arrivals)
G_NBCH = 15  # branch slots per request (branches - 1 of the widest reason stage; 0: none)
NG = 16

# --- accumulators
C_ITL_SUM = 0
C_ITL_COUNT = 1
C_HORIZON = 2  # input: stop after this time (inf: none)
C_END = 3  # time of the last event processed
NACC = 4
HIST0 = NACC  # the histogram's first bin in K_ACC

ITL_BINS = 1200  # 100 per decade from 1 us to 1000 s
ITL_LOG_MIN = -6.0
ITL_PER_DECADE = 100.0

INF = math.inf


# ---------------------------------------------------------------- heaps and queues


@kernel(inline=True)
def _heap_push(S, h, t, value):
    """Push an event; heap 0 (iteration ends, value = replica) orders equal times by replica index and
    keeps each replica's position (for :func:`_heap0_earlier`), the others by push order."""
    g = S[K_G]
    k = g[G_HEAP0 + h]
    g[G_HEAP0 + h] = k + 1
    if h == 0:
        seq = value
    else:
        seq = g[G_SEQ]
        g[G_SEQ] = seq + 1
    _sift_up(S, h, k, t, seq, value)


@kernel(inline=True)
def _sift_up(S, h, k, t, seq, value):
    ht = S[K_HT]
    hi = S[K_HI]
    pos = S[K_RS][S_HEAP_POS]
    while k > 0:
        parent = (k - 1) // 2
        pt = ht[h, parent]
        if pt < t or (pt == t and hi[h, 0, parent] < seq):
            break
        ht[h, k] = pt
        hi[h, 0, k] = hi[h, 0, parent]
        hi[h, 1, k] = hi[h, 1, parent]
        if h == 0:
            pos[hi[h, 1, k]] = k
        k = parent
    ht[h, k] = t
    hi[h, 0, k] = seq
    hi[h, 1, k] = value
    if h == 0:
        pos[value] = k


@kernel
def _heap0_earlier(S, r, t):
    """Move replica r's pending iteration end earlier, to t."""
    _sift_up(S, 0, S[K_RS][S_HEAP_POS, r], t, r, r)


@kernel(inline=True)
def _heap_pop(S, h):
    """Remove the earliest event of heap h; return its payload."""
    ht = S[K_HT]
    hi = S[K_HI]
    g = S[K_G]
    top = hi[h, 1, 0]
    size = g[G_HEAP0 + h] - 1
    g[G_HEAP0 + h] = size
    if size == 0:
        return top
    t = ht[h, size]
    seq = hi[h, 0, size]
    val = hi[h, 1, size]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and (ht[h, c + 1] < ht[h, c] or (ht[h, c + 1] == ht[h, c] and hi[h, 0, c + 1] < hi[h, 0, c])):
            c += 1
        if t < ht[h, c] or (t == ht[h, c] and seq < hi[h, 0, c]):
            break
        ht[h, k] = ht[h, c]
        hi[h, 0, k] = hi[h, 0, c]
        hi[h, 1, k] = hi[h, 1, c]
        if h == 0:
            S[K_RS][S_HEAP_POS, hi[h, 1, k]] = k
        k = c
    ht[h, k] = t
    hi[h, 0, k] = seq
    hi[h, 1, k] = val
    if h == 0:
        S[K_RS][S_HEAP_POS, val] = k
    return top


@kernel
def _heap_top(ht, g, h):
    if g[G_HEAP0 + h] == 0:
        return INF
    return ht[h, 0]


@kernel(inline=True)
def _enqueue(S, q, i, front, t):
    ri = S[K_RI]
    qs = S[K_Q]
    S[K_RF][F_QUEUED, i] = t
    if front:
        ri[R_NEXT, i] = qs[Q_HEAD, q]
        qs[Q_HEAD, q] = i
        if qs[Q_TAIL, q] < 0:
            qs[Q_TAIL, q] = i
    else:
        ri[R_NEXT, i] = -1
        if qs[Q_TAIL, q] < 0:
            qs[Q_HEAD, q] = i
        else:
            ri[R_NEXT, qs[Q_TAIL, q]] = i
        qs[Q_TAIL, q] = i
    qs[Q_COUNT, q] += 1
    qs[Q_TOKENS, q] += ri[R_PROMPT, i] + ri[R_GEN, i]
    ri[R_STATUS, i] = ST_WAITING


@kernel(inline=True)
def _dequeue(S, q):
    ri = S[K_RI]
    qs = S[K_Q]
    i = qs[Q_HEAD, q]
    qs[Q_HEAD, q] = ri[R_NEXT, i]
    if qs[Q_HEAD, q] < 0:
        qs[Q_TAIL, q] = -1
    qs[Q_COUNT, q] -= 1
    qs[Q_TOKENS, q] -= ri[R_PROMPT, i] + ri[R_GEN, i]
    return i


# ---------------------------------------------------------------- costs


@kernel
def blocks_for(tokens, block):
    """Paged-KV blocks that hold ``tokens`` tokens."""
    return (tokens + block - 1) // block


@kernel
def iteration_time(p, prefill_tokens, pairs, prefill_kv, n_dec, dec_kv, logits, n_seq):
    """Seconds of one iteration of a replica (PP stages run the batch as min(pp, n_seq) micro-batches:
    it ends when the last micro-batch leaves the last stage; the host work adds once for the batch)."""
    fixed = p[L.FIXED_STEP_S]
    if fixed > 0.0:
        return fixed
    pp = p[L.PP]
    n_mb = 1.0
    if pp > 1.0:
        n_mb = min(pp, max(n_seq, 1.0))
    s = 1.0 / n_mb
    t = step_cost(p, prefill_tokens * s, pairs * s, prefill_kv * s, n_dec * s, dec_kv * s, logits * s)[0]
    if pp <= 1.0 or t <= 0.0:
        return t
    gpu = t - host_time(p, logits * s)
    hand = p2p_time((prefill_tokens + n_dec) * s * p[L.HIDDEN] * p[L.H_BYTES], p[L.PP_ALPHA], p[L.PP_BW], p[L.OH_COLL])
    stage = (gpu - (pp - 1.0) * hand) / pp + hand
    return gpu + (n_mb - 1.0) * stage + host_time(p, logits)


@kernel
def _itl_add(acc, gap, weight):
    b = 0
    if gap > 0.0:
        b = int(math.floor((math.log10(gap) - ITL_LOG_MIN) * ITL_PER_DECADE))
        b = min(max(b, 0), ITL_BINS - 1)
    acc[HIST0 + b] += weight
    acc[C_ITL_SUM] += gap * weight
    acc[C_ITL_COUNT] += weight


# ---------------------------------------------------------------- replica choice and arrival


@kernel
def _replica_load(S, r, sched):
    rs = S[K_RS]
    qs = S[K_Q]
    if sched == SCHED_LEAST_OUTSTANDING:
        return float(rs[S_NRUN, r] + qs[Q_COUNT, r])
    pool = rs[S_POOL, r]
    pi = S[K_PI]
    used = (pi[P_CAP_BLOCKS, pool] - rs[S_FREE_BLOCKS, r]) * pi[P_BLOCK, pool]
    return float(used + qs[Q_TOKENS, r])


@kernel(inline=True)
def _choose_queue(S, pool, i, u_row, t):
    """The queue request i joins in ``pool`` at time t: the pool's shared queue, or a replica's own."""
    pi = S[K_PI]
    sched = pi[P_SCHED, pool]
    first = pi[P_FIRST, pool]
    count = pi[P_COUNT, pool]
    n_rep = S[K_RS].shape[1]
    if sched == SCHED_SHARED_QUEUE:
        return n_rep + pool
    if sched == SCHED_ROUND_ROBIN:
        k = pi[P_RR, pool] % count
        pi[P_RR, pool] += 1
        return first + k
    if sched == SCHED_RANDOM:
        return first + min(int(S[K_U][u_row, i] * count), count - 1)
    if sched == SCHED_LEAST_KV:  # the KV a replica holds now: only what its iteration in flight took
        for r in range(first, first + count):
            _truncate(S, r, t)
    best = first
    best_load = _replica_load(S, first, sched)
    for r in range(first + 1, first + count):
        load = _replica_load(S, r, sched)
        if load < best_load:
            best = r
            best_load = load
    return best


@kernel(inline=True)
def _wake(S, q, t):
    """Work joined queue q: idle replicas serving it may start an iteration, busy ones see it at the end
    of their iteration in flight (a fast-forwarded span is cut there)."""
    n_rep = S[K_RS].shape[1]
    if q < n_rep:
        _wake_replica(S, q, t)
        return
    pool = q - n_rep
    pi = S[K_PI]
    for r in range(pi[P_FIRST, pool], pi[P_FIRST, pool] + pi[P_COUNT, pool]):
        if S[K_Q][Q_COUNT, q] == 0:
            break
        _wake_replica(S, r, t)


@kernel(inline=True)
def _wake_replica(S, r, t):
    if S[K_RS][S_BUSY, r] == 0:
        _boundary(S, r, t)
    else:
        _truncate(S, r, t)


@kernel(inline=True)
def _reject_reason(S, pool, i):
    ri = S[K_RI]
    pi = S[K_PI]
    prompt = ri[R_PROMPT, i]
    out = ri[R_OUTPUT, i]
    if (prompt + ri[R_SEQS, i] - 1) // ri[R_SEQS, i] + out > pi[P_MAX_CONTEXT, pool]:  # (each sequence)
        return REASON_CONTEXT
    new = prompt - ri[R_PREFILLED, i]  # (a cached prefix is not prefilled)
    if pi[P_POLICY, pool] != POLICY_CHUNKED and pi[P_ROLE, pool] != ROLE_DECODE and new > pi[P_MAX_TOKENS, pool]:
        return REASON_TOKENS
    # the most KV it ever holds here: the whole prompt (prefill-only) or prompt + output - 1
    most = prompt if pi[P_ROLE, pool] == ROLE_PREFILL else prompt + out - 1
    if blocks_for(most, pi[P_BLOCK, pool]) > pi[P_CAP_BLOCKS, pool]:
        return REASON_KV
    return REASON_NONE


@kernel
def _queue_job(S, i, pool, t):
    """Queue request i's job at ``pool`` (and wake a replica), or reject or drop it."""
    ri = S[K_RI]
    pi = S[K_PI]
    reason = _reject_reason(S, pool, i)
    nxt = pi[P_NEXT, pool]
    if reason == REASON_NONE and nxt >= 0 and ri[R_OUTPUT, i] > 1:
        reason = _reject_reason(S, nxt, i)
    if reason != REASON_NONE:
        ri[R_STATUS, i] = ST_REJECTED
        ri[R_REASON, i] = reason
        return
    q = _choose_queue(S, pool, i, 0, t)
    limit = pi[P_MAX_QUEUE, pool]
    if limit >= 0 and S[K_Q][Q_COUNT, q] >= limit:
        ri[R_STATUS, i] = ST_DROPPED
        ri[R_REASON, i] = REASON_QUEUE_FULL
        return
    _enqueue(S, q, i, False, t)
    _wake(S, q, t)


@kernel
def _arrive(S, i, t):
    S[K_RI][R_TARGET, i] = S[K_RI][R_PROMPT, i]
    _queue_job(S, i, 0, t)


# ---------------------------------------------------------------- admission, preemption


@kernel
def _mark(S, r, i, chunk):
    """Put ``chunk`` tokens of request i (1: a decode) into replica r's iteration and add to its totals."""
    ri = S[K_RI]
    rsf = S[K_RSF]
    ri[R_CHUNK, i] = chunk
    rsf[T_NSEQ, r] += 1.0
    if ri[R_PREFILLED, i] == ri[R_TARGET, i]:
        rsf[T_NDEC, r] += 1.0
        rsf[T_DEC_KV, r] += ri[R_KV, i] + 1.0
        rsf[T_LOGITS, r] += 1.0
        rsf[T_MIN_LEFT, r] = min(rsf[T_MIN_LEFT, r], float(ri[R_OUTPUT, i] - ri[R_GEN, i]))
    else:
        past = float(ri[R_PREFILLED, i])
        rsf[T_PRE_TOK, r] += chunk
        seqs = float(ri[R_SEQS, i])
        p = S[K_PAR][S[K_RS][S_POOL, r]]
        rsf[T_PAIRS, r] += seqs * prefill_pairs(p, chunk / seqs, past / seqs)
        rsf[T_PRE_KV, r] += past + chunk
        if ri[R_PREFILLED, i] + chunk == ri[R_TARGET, i]:
            rsf[T_LOGITS, r] += 1.0


@kernel(inline=True)
def _push_running(S, r, i, chunk):
    rs = S[K_RS]
    ri = S[K_RI]
    S[K_RUN][r, rs[S_NRUN, r]] = i
    rs[S_NRUN, r] += 1
    ri[R_CHUNK, i] = 0
    if chunk > 0:
        _mark(S, r, i, chunk)
    ri[R_REPLICA, i] = r
    ri[R_STATUS, i] = ST_RUNNING


@kernel(inline=True)
def _swap_time(S, pool, tokens):
    pf = S[K_PF]
    return pf[PF_SWAP_LAT, pool] + tokens * pf[PF_KV_BYTES, pool] / pf[PF_SWAP_BW, pool]


@kernel
def _admit(S, r, t, budget, static_reserve):
    """:func:`_admit_heads`; if r took requests from its pool's shared queue and some remain, the other
    busy replicas see a new head at the end of their iteration in flight (their spans are cut there)."""
    pool = S[K_RS][S_POOL, r]
    pi = S[K_PI]
    shared = S[K_RS].shape[1] + pool
    before = S[K_Q][Q_COUNT, shared]
    out = _admit_heads(S, r, t, budget, static_reserve)
    if pi[P_SCHED, pool] == SCHED_SHARED_QUEUE and before > S[K_Q][Q_COUNT, shared] > 0:
        for other in range(pi[P_FIRST, pool], pi[P_FIRST, pool] + pi[P_COUNT, pool]):
            if other != r:
                _truncate(S, other, t)
    return out


@kernel(inline=True)
def _admit_heads(S, r, t, budget, static_reserve):
    """Admit queue heads (own queue, then the pool's shared one) while they fit, FCFS.

    A request with its prompt prefilled (hand-off or swapped out) needs blocks for one more token; a
    prompt needs blocks for the tokens it prefills now (static: for its whole life) and ``budget`` tokens
    (whole prompts unless the policy is chunked). Returns (prefill tokens admitted, swap seconds, requests,
    requests admitted with their prompt done: they decode in this iteration).
    """
    ri = S[K_RI]
    rf = S[K_RF]
    rs = S[K_RS]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    block = pi[P_BLOCK, pool]
    max_batch = pi[P_MAX_BATCH, pool]
    chunked = pi[P_POLICY, pool] == POLICY_CHUNKED
    chunk_cap = pi[P_CHUNK, pool]
    n_rep = rs.shape[1]
    admitted_tokens = 0
    admitted = 0
    ready_n = 0
    swap_s = 0.0
    for pass_ in range(2):
        q = r if pass_ == 0 else n_rep + pool
        if pass_ == 1 and pi[P_SCHED, pool] != SCHED_SHARED_QUEUE:
            break
        while S[K_Q][Q_COUNT, q] > 0 and rs[S_NRUN, r] < max_batch:
            i = S[K_Q][Q_HEAD, q]
            ready = ri[R_PREFILLED, i] == ri[R_TARGET, i] and ri[R_GEN, i] > 0
            if ready:
                most = ri[R_KV, i] + 1
                chunk = 0
                spend = 1  # its decode takes one token of the budget
            else:
                chunk = ri[R_TARGET, i] - ri[R_PREFILLED, i]
                if chunked:
                    chunk = min(chunk, chunk_cap, budget)
                    if chunk <= 0:
                        return admitted_tokens, swap_s, admitted, ready_n
                elif chunk > budget and admitted_tokens > 0:  # the first prompt is never refused for the budget
                    return admitted_tokens, swap_s, admitted, ready_n
                most = max(ri[R_PREFILLED, i] + chunk, ri[R_KV, i])  # (a swapped partial prompt brings its KV)
                spend = chunk
            if static_reserve:
                most = max(most, ri[R_PROMPT, i] + ri[R_OUTPUT, i] - 1)
            need = blocks_for(most, block)
            held = ri[R_SHARED_BLOCKS, i]  # queued requests hold no blocks, but a new branch shares its prompt's
            if need - held > rs[S_FREE_BLOCKS, r] or (ready and budget < 1):
                return admitted_tokens, swap_s, admitted, ready_n
            _dequeue(S, q)
            if ri[R_SWAPPED, i] == 1:
                swap_s += _swap_time(S, pool, ri[R_KV, i])
                ri[R_SWAPPED, i] = 0
            budget -= spend
            admitted_tokens += chunk
            rs[S_FREE_BLOCKS, r] -= need - held
            ri[R_BLOCKS, i] = need
            rs[S_KV_TOKENS, r] += ri[R_KV, i] - ri[R_SHARED_BLOCKS, i] * block
            if math.isnan(rf[F_ADMIT, i]):
                rf[F_ADMIT, i] = t
                ri[R_ENTRY_REPLICA, i] = r
            elif pi[P_ROLE, pool] == ROLE_DECODE and ri[R_DECODE_REPLICA, i] < 0:
                ri[R_DECODE_REPLICA, i] = r
            _push_running(S, r, i, chunk)
            admitted += 1
            if ready:
                ready_n += 1
            if held > 0:  # one more holder of the shared blocks
                ri[R_HOLDERS, _parent(S, i)] += 1
            if ready and ri[R_BRANCHES_LEFT, i] > 1 and ri[R_BRANCHED, i] == 0:  # its KV was handed over
                _spawn_branches(S, i, r, t)
    return admitted_tokens, swap_s, admitted, ready_n


@kernel
def _preempt_last(S, r):
    """Preempt the newest running request of replica r (vLLM's victim): recompute or swap. Returns swap s."""
    ri = S[K_RI]
    rs = S[K_RS]
    rsf = S[K_RSF]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    rs[S_NRUN, r] -= 1
    i = S[K_RUN][r, rs[S_NRUN, r]]
    _release_kv(S, r, i)
    ri[R_CHUNK, i] = 0
    ri[R_PREEMPTIONS, i] += 1
    rsf[A_PREEMPTIONS, r] += 1.0
    swap_s = 0.0
    if pi[P_PREEMPT, pool] == 1:
        ri[R_SWAPPED, i] = 1
        swap_s = _swap_time(S, pool, ri[R_KV, i])
    else:  # recompute the prompt and every token emitted so far
        ri[R_TARGET, i] = ri[R_PROMPT, i] + ri[R_GEN, i]
        ri[R_PREFILLED, i] = 0
        ri[R_KV, i] = 0
    _enqueue(S, r, i, True, -INF)
    return swap_s


@kernel
def _ensure_decode_blocks(S, r):
    """Preempt the newest requests until every running decode has room for its next token.

    The blocks themselves are taken by :func:`_schedule_decodes`; returns the swap seconds."""
    ri = S[K_RI]
    rs = S[K_RS]
    run = S[K_RUN]
    block = S[K_PI][P_BLOCK, rs[S_POOL, r]]
    swap_s = 0.0
    if rs[S_FREE_BLOCKS, r] >= rs[S_NRUN, r]:  # each decode needs at most one new block
        return swap_s
    while True:
        need = 0
        for k in range(rs[S_NRUN, r]):
            i = run[r, k]
            if ri[R_PREFILLED, i] == ri[R_TARGET, i] and ri[R_GEN, i] > 0:
                need += max(blocks_for(ri[R_KV, i] + 1, block) - ri[R_BLOCKS, i], 0)
        if need <= rs[S_FREE_BLOCKS, r]:
            break
        swap_s += _preempt_last(S, r)
    return swap_s


# ---------------------------------------------------------------- iteration boundary


@kernel
def _schedule_decodes(S, r):
    """Mark every running decode for this iteration and give it KV room for its token; return how many.

    (The per-iteration hot loop: it adds to the totals itself rather than through ``_mark``.)"""
    ri = S[K_RI]
    rs = S[K_RS]
    rsf = S[K_RSF]
    run = S[K_RUN]
    block = S[K_PI][P_BLOCK, rs[S_POOL, r]]
    n = 0
    kv = 0.0
    min_left = rsf[T_MIN_LEFT, r]
    free = rs[S_FREE_BLOCKS, r]
    for k in range(rs[S_NRUN, r]):
        i = run[r, k]
        if ri[R_CHUNK, i] == 0 and ri[R_PREFILLED, i] == ri[R_TARGET, i] and ri[R_GEN, i] > 0:
            ri[R_CHUNK, i] = 1
            n += 1
            kv += ri[R_KV, i] + 1.0
            min_left = min(min_left, float(ri[R_OUTPUT, i] - ri[R_GEN, i]))
            b = blocks_for(ri[R_KV, i] + 1, block)
            if b > ri[R_BLOCKS, i]:  # (static batches reserved theirs at admission)
                free -= b - ri[R_BLOCKS, i]
                ri[R_BLOCKS, i] = b
    rs[S_FREE_BLOCKS, r] = free
    rsf[T_NSEQ, r] += n
    rsf[T_NDEC, r] += n
    rsf[T_DEC_KV, r] += kv
    rsf[T_LOGITS, r] += n
    rsf[T_MIN_LEFT, r] = min_left
    return n


@kernel(inline=True)
def _continue_chunks(S, r, budget):
    """Chunked policy: running partial prompts get chunks from the budget, oldest first (KV permitting)."""
    ri = S[K_RI]
    rs = S[K_RS]
    run = S[K_RUN]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    block = pi[P_BLOCK, pool]
    used = 0
    for k in range(rs[S_NRUN, r]):
        i = run[r, k]
        remaining = ri[R_TARGET, i] - ri[R_PREFILLED, i]
        if remaining <= 0 or budget - used <= 0:
            continue
        chunk = min(remaining, pi[P_CHUNK, pool], budget - used)
        room = (ri[R_BLOCKS, i] + rs[S_FREE_BLOCKS, r]) * block - ri[R_PREFILLED, i]
        chunk = min(chunk, room)
        if chunk <= 0:
            continue
        b = blocks_for(ri[R_PREFILLED, i] + chunk, block)
        rs[S_FREE_BLOCKS, r] -= b - ri[R_BLOCKS, i]
        ri[R_BLOCKS, i] = b
        _mark(S, r, i, chunk)
        used += chunk
    return used


@kernel(inline=True)
def _form(S, r, t):
    """Mark replica r's next iteration by its pool's policy. Returns (swap s, requests admitted, tokens marked)."""
    rs = S[K_RS]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    policy = pi[P_POLICY, pool]
    max_tokens = pi[P_MAX_TOKENS, pool]
    rsf = S[K_RSF]
    for row in range(T_PRE_TOK, T_MIN_LEFT):
        rsf[row, r] = 0.0
    rsf[T_MIN_LEFT, r] = INF
    swap_s = 0.0
    tokens = 0
    admitted = 0
    if policy == POLICY_STATIC:
        if rs[S_NRUN, r] == 0:
            tokens, swap_s, admitted, _ = _admit(S, r, t, max_tokens, True)
        if tokens == 0:
            tokens = _schedule_decodes(S, r)
    elif policy == POLICY_CONTINUOUS:
        tokens, swap_s, admitted, _ = _admit(S, r, t, max_tokens, False)
        if tokens == 0:
            swap_s += _ensure_decode_blocks(S, r)
            tokens = _schedule_decodes(S, r)
    else:  # chunked and mixed: decodes first, prompts fill the rest of the budget
        swap_s += _ensure_decode_blocks(S, r)
        n_dec = _schedule_decodes(S, r)
        budget = max_tokens - n_dec
        if policy == POLICY_CHUNKED:
            tokens = _continue_chunks(S, r, budget)
            budget -= tokens
        a, s, admitted, ready_n = _admit(S, r, t, budget, False)
        swap_s += s
        tokens += n_dec + a
        if ready_n > 0:  # requests admitted with their prompt done decode now too
            tokens += _schedule_decodes(S, r)
    return swap_s, admitted, tokens


@kernel
def _hold_for_batch(S, r, t):
    """True if idle replica r should wait for more requests: fewer than a full batch wait and the oldest
    has waited less than the pool's max wait (a wake-up timer is set for that moment)."""
    rs = S[K_RS]
    pi = S[K_PI]
    qs = S[K_Q]
    pool = rs[S_POOL, r]
    q = r if pi[P_SCHED, pool] != SCHED_SHARED_QUEUE or qs[Q_COUNT, r] > 0 else rs.shape[1] + pool
    waiting = qs[Q_COUNT, q]
    if waiting == 0 or waiting >= pi[P_MAX_BATCH, pool]:
        return False
    due = S[K_RF][F_QUEUED, qs[Q_HEAD, q]] + S[K_PF][PF_MAX_WAIT, pool]
    if due <= t:
        return False
    if S[K_RSF][A_WAKE_DUE, r] != due:
        S[K_RSF][A_WAKE_DUE, r] = due
        _heap_push(S, 2, due, r * 4 + TM_WAKE)
    return True


@kernel
def _boundary(S, r, t):
    """Form replica r's next iteration at time t and schedule its end (or leave it idle).

    A replica whose running requests can make no progress (partial prompts with no KV room) preempts
    its newest request until one can.
    """
    rs = S[K_RS]
    rsf = S[K_RSF]
    if rs[S_NRUN, r] == 0 and S[K_PF][PF_MAX_WAIT, rs[S_POOL, r]] > 0.0 and _hold_for_batch(S, r, t):
        rs[S_BUSY, r] = 0
        return
    preempted_before = rsf[A_PREEMPTIONS, r]
    swap_s = 0.0
    admitted = 0
    while True:
        s, a, tokens = _form(S, r, t)
        swap_s += s
        admitted += a
        if tokens > 0 or rs[S_NRUN, r] == 0:
            break
        swap_s += _preempt_last(S, r)
    _launch(S, r, t, swap_s, admitted == 0 and rsf[A_PREEMPTIONS, r] == preempted_before)


@kernel(inline=True)
def _launch(S, r, t, swap_s, nothing_admitted):
    """Cost the marked iteration and push its end; fast-forward a decode-only batch."""
    rs = S[K_RS]
    rsf = S[K_RSF]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    p = S[K_PAR][pool]
    pre_tok = rsf[T_PRE_TOK, r]
    pairs = rsf[T_PAIRS, r]
    pre_kv = rsf[T_PRE_KV, r]
    n_dec = int(rsf[T_NDEC, r])
    dec_kv = rsf[T_DEC_KV, r]
    logits = rsf[T_LOGITS, r]
    n_seq = rsf[T_NSEQ, r]
    min_left = int(min(rsf[T_MIN_LEFT, r], 1e18))
    if n_seq == 0.0:
        rs[S_BUSY, r] = 0
        rs[S_SPAN, r] = 0
        return
    if pi[P_KIND, pool] == POOL_SEARCH:
        pf = S[K_PF]
        bw = pf[PF_S_BW, pool]
        k = pi[P_MEM_RES, pool]
        if k >= 0:  # the batch is one more flow on the host's memory: its fair share now, for its duration
            bw = min(bw, S[K_PTF][XF_BW, k] / (S[K_PT][XI_ACTIVE, k] + 1))
            _ps_flow(S, k, t, 1)
            S[K_PTF][XF_BYTES, k] += pf[PF_S_BYTES_FIXED, pool] + n_seq * pf[PF_S_BYTES_QUERY, pool]
        cost = search_batch_time(
            n_seq,
            pf[PF_S_FLOP, pool],
            pf[PF_S_BYTES_FIXED, pool],
            pf[PF_S_BYTES_QUERY, pool],
            pf[PF_S_FLOPS, pool],
            bw,
            pf[PF_S_OVERHEAD, pool],
        )
    else:
        cost = iteration_time(p, pre_tok, pairs, pre_kv, float(n_dec), dec_kv, logits, n_seq)
    cost += swap_s
    rsf[A_SWAP_S, r] += swap_s
    kv_tokens = float(rs[S_KV_TOKENS, r]) + pre_tok
    end = t + cost
    # (the first iteration is accounted now, later ones of a span when applied)
    _account(rsf, r, cost, n_seq, pre_tok, n_dec, kv_tokens + n_dec)
    rsf[A_FIRST_END, r] = end
    rsf[A_SPAN_KV, r] = kv_tokens
    sp = S[K_SPAN]
    sp[0, r, 0] = cost
    sp[1, r, 0] = end
    span = 1
    decode_only = pre_tok == 0.0 and swap_s == 0.0 and nothing_admitted
    if decode_only and S[K_G][G_FAST_FORWARD] != 0 and min_left > 1:
        span = min(_span_limit(S, r, min_left), SPAN_CAP)
    for j in range(2, span + 1):  # plan the span: KV grows by one token per request and iteration
        cost = iteration_time(p, 0.0, 0.0, 0.0, float(n_dec), dec_kv + (j - 1.0) * n_dec, logits, n_seq)
        end += cost
        sp[0, r, j - 1] = cost
        sp[1, r, j - 1] = end
    if span > 1:
        _span_blocks(S, r, span)
    rs[S_SPAN, r] = span
    rs[S_BUSY, r] = 1
    rsf[A_PENDING_END, r] = end
    _heap_push(S, 0, end, r)


@kernel
def _span_blocks(S, r, span):
    """Give each decode of replica r's span the KV blocks for ``span`` more tokens (the first iteration's
    are held already; static batches reserved theirs at admission)."""
    ri = S[K_RI]
    rs = S[K_RS]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    if pi[P_POLICY, pool] == POLICY_STATIC:
        return
    block = pi[P_BLOCK, pool]
    run = S[K_RUN]
    for k in range(rs[S_NRUN, r]):
        i = run[r, k]
        if ri[R_CHUNK, i] > 0:
            b = blocks_for(ri[R_KV, i] + span, block)
            rs[S_FREE_BLOCKS, r] -= b - ri[R_BLOCKS, i]
            ri[R_BLOCKS, i] = b


@kernel
def _truncate(S, r, t):
    """Cut replica r's fast-forwarded span to the iteration in flight at the current event (time t).

    One-iteration-per-event stepping has processed r's iteration ends before t, and the one at t too
    unless the current event is another replica's iteration end at t with a lower index (heap 0's tie
    order); r forms its next batch at the end of the next iteration."""
    rs = S[K_RS]
    n = rs[S_SPAN, r]
    if rs[S_BUSY, r] == 0 or n <= 1:
        return
    ends = S[K_SPAN][1, r]
    cur = S[K_G][G_CUR]
    lo = 0  # ends processed before the current event: a prefix of ends[0 : n - 1]
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ends[mid] < t or (ends[mid] == t and r < cur):
            lo = mid + 1
        else:
            hi = mid
    k = lo + 1
    if k >= n:
        return
    rs[S_SPAN, r] = k
    S[K_RSF][A_PENDING_END, r] = ends[k - 1]
    _span_blocks(S, r, k)  # (gives back the blocks of the iterations cut)
    _heap0_earlier(S, r, ends[k - 1])


@kernel(inline=True)
def _account(rsf, r, cost, n_seq, prefill_tokens, decode_tokens, kv_tokens):
    """Add one iteration of replica r to its accumulators; ``kv_tokens``: KV held at its end."""
    rsf[A_BUSY_S, r] += cost
    rsf[A_ITERATIONS, r] += 1.0
    rsf[A_BATCH_SUM, r] += n_seq
    rsf[A_PREFILL_TOKENS, r] += prefill_tokens
    rsf[A_DECODE_TOKENS, r] += decode_tokens
    rsf[A_KV_TOKEN_S, r] += kv_tokens * cost


@kernel(inline=True)
def _commit_span(S, r, first, last):
    """Account iterations ``first..last`` (2 or later) of replica r's span, in order."""
    rsf = S[K_RSF]
    sp = S[K_SPAN]
    n_dec = rsf[T_NDEC, r]
    n_seq = rsf[T_NSEQ, r]
    kv_tokens = rsf[A_SPAN_KV, r]
    acc = S[K_ACC]
    for j in range(first, last + 1):
        _account(rsf, r, sp[0, r, j - 1], n_seq, 0.0, n_dec, kv_tokens + j * n_dec)
        _itl_add(acc, sp[1, r, j - 1] - sp[1, r, j - 2], n_dec)
    S[K_G][G_SPANS] += last - first + 1


@kernel(inline=True)
def _span_limit(S, r, min_left):
    """Most decode iterations the batch can run before a request finishes or its KV blocks run out."""
    ri = S[K_RI]
    rs = S[K_RS]
    run = S[K_RUN]
    pi = S[K_PI]
    pool = rs[S_POOL, r]
    if pi[P_POLICY, pool] == POLICY_STATIC:
        return min_left
    block = pi[P_BLOCK, pool]
    free = rs[S_FREE_BLOCKS, r]
    n = rs[S_NRUN, r]
    if free >= n * (min_left // block + 1):  # even the worst case fits
        return min_left
    lo = 1  # feasible: its blocks are held
    hi = min_left
    while lo < hi:
        mid = (lo + hi + 1) // 2
        need = 0
        for k in range(n):
            i = run[r, k]
            if ri[R_CHUNK, i] > 0:
                need += blocks_for(ri[R_KV, i] + mid, block) - ri[R_BLOCKS, i]
        if need <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---------------------------------------------------------------- iteration end


@kernel
def _finish(S, r, t):
    """Apply the ended iteration (or fast-forwarded span) of replica r at time t, retire and hand off."""
    ri = S[K_RI]
    rf = S[K_RF]
    rs = S[K_RS]
    rsf = S[K_RSF]
    pi = S[K_PI]
    pf = S[K_PF]
    run = S[K_RUN]
    pool = rs[S_POOL, r]
    span = rs[S_SPAN, r]
    first_end = rsf[A_FIRST_END, r]
    acc = S[K_ACC]
    if pi[P_KIND, pool] == POOL_SEARCH and pi[P_MEM_RES, pool] >= 0:  # its memory flow ends
        _ps_flow(S, pi[P_MEM_RES, pool], t, -1)
    if span > 1:
        _commit_span(S, r, 2, span)
    ends = S[K_SPAN][1, r]
    gap_run = -1.0  # requests that decoded in the previous iteration share one gap: add them at once
    gap_count = 0.0
    kv_added = 0
    keep = 0
    for k in range(rs[S_NRUN, r]):
        i = run[r, k]
        c = ri[R_CHUNK, i]
        ri[R_CHUNK, i] = 0
        stays = True
        if c > 0:
            if ri[R_PREFILLED, i] == ri[R_TARGET, i]:  # decode(s)
                gap = first_end - rf[F_LAST_TOKEN, i]
                if gap != gap_run:
                    if gap_count > 0.0:
                        _itl_add(acc, gap_run, gap_count)
                    gap_run = gap
                    gap_count = 0.0
                gap_count += 1.0
                g0 = ri[R_GEN, i]
                ri[R_GEN, i] += span
                ri[R_KV, i] += span
                kv_added += span
                rf[F_LAST_TOKEN, i] = t
                while ri[R_STOP, i] < ri[R_OUTPUT, i] and ri[R_GEN, i] >= ri[R_STOP, i]:  # token j: ends[j - 1]
                    _thinking_milestone(ri, rf, i, ends[ri[R_STOP, i] - g0 - 1])
            else:
                ri[R_PREFILLED, i] += c
                ri[R_KV, i] += c
                rs[S_KV_TOKENS, r] += c
                if ri[R_PREFILLED, i] == ri[R_TARGET, i]:  # prompt done: it emits a token
                    ri[R_GEN, i] += 1
                    if ri[R_GEN, i] == 1:
                        rf[F_PREFILL_END, i] = t
                        if ri[R_FIRST_AT, i] == 1 and (pi[P_NEXT, pool] < 0 or ri[R_OUTPUT, i] == 1):
                            rf[F_FIRST_TOKEN, i] = t
                    else:
                        _itl_add(acc, t - rf[F_LAST_TOKEN, i], 1.0)
                    rf[F_LAST_TOKEN, i] = t
                    if ri[R_GEN, i] < ri[R_OUTPUT, i] and pi[P_ROLE, pool] == ROLE_PREFILL:
                        stays = False  # hand off: KV stays held here until it has been sent
                        ri[R_STATUS, i] = ST_TRANSFER
                        sent = ri[R_KV, i] * pf[PF_KV_BYTES, pool]
                        if pi[P_LINK_RES, pool] >= 0:  # a shared link: its end is a transfer event
                            rf[F_TRANSFER, i] = t
                            _transfer(
                                S, i, pi[P_LINK_RES, pool], sent, XK_HANDOFF, t, S[K_PTF][XF_LAT, pi[P_LINK_RES, pool]]
                            )
                        else:
                            dur = pf[PF_LINK_LAT, pool] + sent / pf[PF_LINK_BW, pool]
                            rf[F_TRANSFER, i] = dur
                            _heap_push(S, 1, t + dur, i)
                    if stays and ri[R_BRANCHES_LEFT, i] > 1 and ri[R_BRANCHED, i] == 0:
                        _spawn_branches(S, i, r, t)
                    while ri[R_STOP, i] < ri[R_OUTPUT, i] and ri[R_GEN, i] >= ri[R_STOP, i]:
                        _thinking_milestone(ri, rf, i, t)
            if ri[R_GEN, i] >= ri[R_OUTPUT, i]:
                stays = False
                if ri[R_FIRST_AT, i] == ri[R_GEN, i] and ri[R_FIRST_AT, i] > 1:  # a one-token answer
                    rf[F_FIRST_TOKEN, i] = t
                _release_kv(S, r, i)
                ri[R_REPLICA, i] = -1
                if ri[R_STAGE, i] >= 0:  # its next stage starts once this iteration is applied
                    g = S[K_G]
                    g[NG + g[G_BUF]] = i
                    g[G_BUF] += 1
                else:
                    ri[R_STATUS, i] = ST_DONE
                    rf[F_DONE, i] = t
        if stays:
            run[r, keep] = i
            keep += 1
    if gap_count > 0.0:
        _itl_add(acc, gap_run, gap_count)
    rs[S_KV_TOKENS, r] += kv_added
    rs[S_NRUN, r] = keep
    rs[S_SPAN, r] = 0
    g = S[K_G]
    for k in range(g[G_BUF]):  # (r stays busy meanwhile: no stage it feeds may start its next iteration)
        _job_done(S, g[NG + k], t)
    g[G_BUF] = 0
    rs[S_BUSY, r] = 0


@kernel(inline=True)
def _parent(S, i):
    """The request whose job branch i belongs to (i itself for a request)."""
    g = S[K_G]
    return i if i < g[G_CHILD0] else (i - g[G_CHILD0]) // g[G_NBCH]


@kernel
def _release_kv(S, r, i):
    """Request i gives up its KV blocks on replica r. Prompt blocks shared with sibling branches go back
    when no branch holds them any more; branches still queued then lose them and recompute their prompt."""
    ri = S[K_RI]
    rs = S[K_RS]
    block = S[K_PI][P_BLOCK, rs[S_POOL, r]]
    shared = ri[R_SHARED_BLOCKS, i]
    rs[S_FREE_BLOCKS, r] += ri[R_BLOCKS, i] - shared
    rs[S_KV_TOKENS, r] -= ri[R_KV, i] - shared * block
    ri[R_BLOCKS, i] = 0
    ri[R_SHARED_BLOCKS, i] = 0
    if shared == 0:
        return
    p = _parent(S, i)
    ri[R_HOLDERS, p] -= 1
    if ri[R_HOLDERS, p] > 0:
        return
    rs[S_FREE_BLOCKS, r] += shared
    rs[S_KV_TOKENS, r] -= shared * block
    first = S[K_G][G_CHILD0] + p * S[K_G][G_NBCH] - 1
    for b in range(1, S[K_PT][ST_BRANCHES, ri[R_STAGE, p]]):
        c = first + b
        if ri[R_SHARED_BLOCKS, c] > 0:  # queued, never admitted: its prompt's KV is gone
            ri[R_SHARED_BLOCKS, c] = 0
            ri[R_TARGET, c] = ri[R_PROMPT, c] + ri[R_GEN, c]
            ri[R_PREFILLED, c] = 0
            ri[R_KV, c] = 0


@kernel
def _spawn_branches(S, i, r, t):
    """Start the sibling branches of request i's job on replica r, where its prompt's KV now is.

    As in parallel sampling, each branch got its first token from the shared prompt pass; it shares the
    prompt's full KV blocks and thinks for its own drawn length (request i took the longest of the draws,
    so the job is checked against the engine's limits at its longest). The branches go to the front of
    r's own queue and compete for batch slots and KV like any request."""
    ri = S[K_RI]
    rf = S[K_RF]
    u = S[K_U]
    g = S[K_G]
    s = ri[R_STAGE, i]
    n = S[K_PT][ST_BRANCHES, s]
    draw = S[K_PT][ST_DRAW, s]
    longest = _longest_branch(u, draw, n, i)
    prompt = ri[R_PROMPT, i]
    shared = prompt // S[K_PI][P_BLOCK, S[K_RS][S_POOL, r]]
    ri[R_BRANCHED, i] = 1
    ri[R_SHARED_BLOCKS, i] = shared
    ri[R_HOLDERS, i] = 1
    first = g[G_CHILD0] + i * g[G_NBCH] - 1
    for b in range(n - 1, 0, -1):  # (pushed to the front in reverse: admitted in order)
        c = first + b
        out = max(int(u[draw + (0 if b == longest else b), i]), 1)
        ri[R_STAGE, c] = s
        _set_job(ri, c, prompt, prompt, 1, out, out)
        ri[R_BLOCKS, c] = 0
        ri[R_SHARED_BLOCKS, c] = shared if out > 1 else 0
        rf[F_ADMIT, c] = t
        rf[F_LAST_TOKEN, c] = t
        if out == 1:  # nothing more to think
            ri[R_BRANCHES_LEFT, i] -= 1
            ri[R_STATUS, c] = ST_DONE
        else:
            _enqueue(S, r, c, True, t)


@kernel
def _longest_branch(u, draw, n, i):
    best = 0
    for b in range(1, n):
        if u[draw + b, i] > u[draw + best, i]:
            best = b
    return best


@kernel(inline=True)
def _job_done(S, i, t):
    """Request i's job ended; with parallel branches the stage ends when the last branch does."""
    ri = S[K_RI]
    p = _parent(S, i)
    if p != i:
        ri[R_STATUS, i] = ST_DONE
    ri[R_BRANCHES_LEFT, p] -= 1
    if ri[R_BRANCHES_LEFT, p] == 0:
        _stage_done(S, p, t)


@kernel
def _thinking_milestone(ri, rf, i, t):
    """Request i emitted (at t) its last thinking token (stop next at the first answer token) or that one."""
    if ri[R_STOP, i] < ri[R_FIRST_AT, i]:
        rf[F_REASON_END, i] = t
        ri[R_STOP, i] = ri[R_FIRST_AT, i]
    else:
        rf[F_FIRST_TOKEN, i] = t
        ri[R_STOP, i] = ri[R_OUTPUT, i]


@kernel
def _handoff_done(S, i, t):
    """Request i's KV has reached the decode pool: free it at the sender, queue it at a decode replica."""
    ri = S[K_RI]
    rf = S[K_RF]
    rs = S[K_RS]
    pi = S[K_PI]
    src = ri[R_REPLICA, i]
    pool = rs[S_POOL, src]
    _release_kv(S, src, i)
    if ri[R_FIRST_AT, i] == 1:
        rf[F_FIRST_TOKEN, i] = t
    nxt = pi[P_NEXT, pool]
    if pi[P_PAIRING, pool] == 1:
        q = pi[P_FIRST, nxt] + (src - pi[P_FIRST, pool]) % pi[P_COUNT, nxt]
    else:
        q = _choose_queue(S, nxt, i, 1, t)
    ri[R_REPLICA, i] = -1
    _enqueue(S, q, i, False, t)
    _wake_replica(S, src, t)  # it got KV back
    _wake(S, q, t)


# ---------------------------------------------------------------- pipelines: shared links and tiers


@kernel
def _next_transfer_end(ptf, n_res):
    best = INF
    for k in range(n_res):
        best = min(best, ptf[XF_NEXT_T, k])
    return best


@kernel(inline=True)
def _ps_advance(S, k, t):
    """Serve resource k's active transfers up to time t (each gets bandwidth / active)."""
    xf = S[K_PTF]
    n = S[K_PT][XI_ACTIVE, k]
    if n > 0:
        xf[XF_V, k] += (t - xf[XF_T, k]) * xf[XF_BW, k] / n
        xf[XF_BUSY_S, k] += t - xf[XF_T, k]
    xf[XF_T, k] = t


@kernel(inline=True)
def _ps_reschedule(S, k):
    xi = S[K_PT]
    xf = S[K_PTF]
    n = xi[XI_ACTIVE, k]
    if n == 0:
        xf[XF_NEXT_T, k] = INF
        xi[XI_MIN, k] = -1
        return
    rf = S[K_RF]
    ri = S[K_RI]
    j = xi[XI_HEAD, k]
    if j < 0:  # only search batches' flows
        xf[XF_NEXT_T, k] = INF
        xi[XI_MIN, k] = -1
        return
    best = j
    while j >= 0:
        if rf[F_VFINISH, j] < rf[F_VFINISH, best]:
            best = j
        j = ri[R_RES_NEXT, j]
    xi[XI_MIN, k] = best
    xf[XF_NEXT_T, k] = xf[XF_T, k] + max(rf[F_VFINISH, best] - xf[XF_V, k], 0.0) * n / xf[XF_BW, k]


@kernel(inline=True)
def _ps_flow(S, k, t, change):
    """A search batch starts (+1) or ends (-1) reading through resource k: the transfers' shares change."""
    _ps_advance(S, k, t)
    S[K_PT][XI_ACTIVE, k] += change
    _ps_reschedule(S, k)


@kernel(inline=True)
def _ps_join(S, k, i, t):
    """Request i's transfer (F_VFINISH holds its bytes) starts sharing resource k at time t."""
    ri = S[K_RI]
    rf = S[K_RF]
    xi = S[K_PT]
    _ps_advance(S, k, t)
    S[K_PTF][XF_BYTES, k] += rf[F_VFINISH, i]
    rf[F_VFINISH, i] += S[K_PTF][XF_V, k]
    ri[R_RES_NEXT, i] = xi[XI_HEAD, k]
    xi[XI_HEAD, k] = i
    xi[XI_ACTIVE, k] += 1
    _ps_reschedule(S, k)


@kernel(inline=True)
def _ps_complete(S, k, t):
    """The first transfer on resource k ends at t: remove it and return its request."""
    ri = S[K_RI]
    rf = S[K_RF]
    xi = S[K_PT]
    xf = S[K_PTF]
    j = xi[XI_MIN, k]
    _ps_advance(S, k, t)
    xf[XF_V, k] = rf[F_VFINISH, j]  # exact, whatever rounding the advance left
    prev = -1
    m = xi[XI_HEAD, k]
    while m != j:
        prev = m
        m = ri[R_RES_NEXT, m]
    if prev < 0:
        xi[XI_HEAD, k] = ri[R_RES_NEXT, j]
    else:
        ri[R_RES_NEXT, prev] = ri[R_RES_NEXT, j]
    xi[XI_ACTIVE, k] -= 1
    xf[XF_COUNT, k] += 1.0
    _ps_reschedule(S, k)
    return j


@kernel(inline=True)
def _transfer(S, i, k, nbytes, kind, t, lat):
    """Move ``nbytes`` for request i over resource k: ``lat`` seconds, then a processor-shared transfer."""
    S[K_RI][R_RES, i] = k
    S[K_RI][R_XKIND, i] = kind
    S[K_RF][F_VFINISH, i] = nbytes
    S[K_PTF][XF_WAIT_S, k] -= t
    if lat > 0.0:
        _heap_push(S, 2, t + lat, i * 4 + TM_JOIN)
    else:
        _ps_join(S, k, i, t)


@kernel(inline=True)
def _transfer_done(S, i, t):
    ri = S[K_RI]
    S[K_PTF][XF_WAIT_S, ri[R_RES, i]] += t
    kind = ri[R_XKIND, i]
    ri[R_RES, i] = -1
    if kind == XK_STAGE:
        _start_service(S, i, t)
    elif kind == XK_KV:
        _stage_done(S, i, t)
    else:
        S[K_RF][F_TRANSFER, i] = t - S[K_RF][F_TRANSFER, i]
        _handoff_done(S, i, t)


# ---------------------------------------------------------------- pipelines: stages


@kernel
def _route_pick(S, i, s):
    """Index of the target the route stage s sends request i to."""
    st = S[K_PT]
    rule = st[ST_RULE, s]
    base = st[ST_ROUTE_F, s]
    n = st[ST_NTARGET, s]
    if rule == RULE_CLASS:
        return int(S[K_PTF][RTF, st[ST_CLASS_MAP, s] + S[K_RI][R_CLASS, i]])
    rtf = S[K_PTF][RTF]
    if rule == RULE_LENGTH:  # bounds stored after the targets' n cumulative weights
        prompt = S[K_RI][R_BASE_PROMPT, i]
        for k in range(n - 1):
            if prompt <= rtf[base + n + k]:
                return k
        return n - 1
    u = S[K_U][st[ST_DRAW, s], i]
    for k in range(n - 1):
        if u < rtf[base + k]:
            return k
    return n - 1


@kernel(inline=True)
def _stage_pool(S, i, s):
    st = S[K_PT]
    pool = st[ST_POOL, s]
    if pool >= 0:
        return pool
    return int(S[K_PTF][RTF, st[ST_ROUTE, s] + S[K_RI][R_ROUTE, i]])


@kernel(inline=True)
def _enter_stage(S, i, t):
    """Request i enters its current stage at t: move its data in (if the stage has a link), then serve."""
    ri = S[K_RI]
    s = ri[R_STAGE, i]
    S[K_RF][F_ENTER, i] = t
    st = S[K_PT]
    if st[ST_RULE, s] >= 0:
        ri[R_ROUTE, i] = _route_pick(S, i, s)
    k = st[ST_LINK, s]
    if k >= 0:
        stf = S[K_PTF]
        nbytes = stf[STF_BYTES, s] + stf[STF_BYTES_CTX, s] * ri[R_CTX, i] + stf[STF_BYTES_ANSWER, s] * ri[R_ANSWER, i]
        if nbytes > 0.0:
            _transfer(S, i, k, nbytes, XK_STAGE, t, S[K_PTF][XF_LAT, k])
            return
    _start_service(S, i, t)


@kernel(inline=True)
def _start_service(S, i, t):
    ri = S[K_RI]
    rf = S[K_RF]
    st = S[K_PT]
    stf = S[K_PTF]
    s = ri[R_STAGE, i]
    rf[F_READY, i] = t
    kind = st[ST_KIND, s]
    if kind == SK_DELAY:
        d = stf[STF_DELAY, s] + stf[STF_PER_TOKEN, s] * ri[R_ANSWER, i]
        if st[ST_DRAW, s] >= 0 and st[ST_RULE, s] < 0:
            d += S[K_U][st[ST_DRAW, s], i]
        _heap_push(S, 2, t + d, i * 4 + TM_DELAY)
    elif kind == SK_KV:
        _kv_lookup(S, i, s, t)
    else:
        _submit_job(S, i, s, t)


@kernel(inline=True)
def _kv_lookup(S, i, s, t):
    """Look the prefix up tier by tier; a hit fetches its KV over the tier, a miss everywhere recomputes."""
    ri = S[K_RI]
    st = S[K_PT]  # (stage and tier rows share this table)
    tf = S[K_PTF]
    past = int(S[K_U][st[ST_PAST_DRAW, s], i])
    first = st[ST_TIER, s]
    n = st[ST_NTIER, s]
    level = tier_outcome(S[K_U][st[ST_DRAW, s], i], tf[TF_HIT, first : first + n], n)
    lookup = 0.0
    last = n - 1 if level < 0 else level
    for k in range(first, first + last + 1):
        lookup += tf[TF_LOOKUP_S, k]
    ri[R_CTX, i] += past  # the prefix goes in front of the prompt
    if level < 0:  # recomputed with the prompt
        ri[R_CACHED, i] = 0
        _heap_push(S, 2, t + lookup, i * 4 + TM_DELAY)
        return
    if ri[R_CACHED, i] == 0:
        ri[R_CACHED, i] = past
    lv = first + level
    res = st[TI_RES, lv] + i % st[TI_INSTANCES, lv]
    _transfer(S, i, res, past * S[K_PTF][STF_KV_BYTES, s], XK_KV, t, lookup)


@kernel(inline=True)
def _submit_job(S, i, s, t):
    """Queue request i's job of stage s (a model pass, a search, or an LLM generation) at its pool."""
    ri = S[K_RI]
    rf = S[K_RF]
    st = S[K_PT]
    stf = S[K_PTF]
    pi = S[K_PI]
    kind = st[ST_KIND, s]
    pool = _stage_pool(S, i, s)
    seqs = 1
    cached = 0
    first_at = 0
    if kind == SK_LLM:
        think = 0
        if st[ST_DRAW, s] >= 0:  # (with branches: the longest, see _spawn_branches)
            d = st[ST_DRAW, s]
            think = int(S[K_U][d + _longest_branch(S[K_U], d, st[ST_BRANCHES, s], i), i])
        answer = ri[R_ANSWER, i] if st[ST_FINAL, s] == 1 else 0
        prompt = ri[R_CTX, i]
        cached = min(ri[R_CACHED, i], prompt - 1)  # the last prompt token is always computed
        output = max(think + answer, 1)
        if answer > 0:
            first_at = think + 1
    elif kind == SK_MODEL:
        tokens = stf[STF_JOB, s] + stf[STF_JOB_PROMPT, s] * ri[R_BASE_PROMPT, i] + stf[STF_JOB_CTX, s] * ri[R_CTX, i]
        prompt = max(int(tokens + stf[STF_JOB_ANSWER, s] * ri[R_ANSWER, i]), 1)
        output = 1
        seqs = st[ST_SEQS, s]
        prompt = min(prompt, seqs * (pi[P_MAX_CONTEXT, pool] - 1))  # encoders truncate their inputs
    else:  # a vector search: one query
        prompt = 1
        output = 1
    _set_job(ri, i, prompt, cached, 0, output, first_at - 1 if first_at > 1 else output)
    ri[R_SEQS, i] = seqs
    ri[R_FIRST_AT, i] = first_at
    ri[R_BRANCHES_LEFT, i] = st[ST_BRANCHES, s]
    ri[R_BRANCHED, i] = 0
    rf[F_ADMIT, i] = math.nan
    rf[F_PREFILL_END, i] = math.nan
    rf[F_REASON_END, i] = math.nan
    _queue_job(S, i, pool, t)


@kernel
def _set_job(ri, i, prompt, cached, emitted, output, stop):
    """Request i's next job: a prompt with ``cached`` tokens' KV at hand, ``emitted`` of ``output`` tokens."""
    ri[R_PROMPT, i] = prompt
    ri[R_TARGET, i] = prompt
    ri[R_PREFILLED, i] = cached
    ri[R_KV, i] = cached
    ri[R_GEN, i] = emitted
    ri[R_OUTPUT, i] = output
    ri[R_STOP, i] = stop


@kernel
def _stage_done(S, i, t):
    """Request i leaves its current stage at t: account the stage, then enter the next or finish."""
    ri = S[K_RI]
    rf = S[K_RF]
    st = S[K_PT]
    s = ri[R_STAGE, i]
    kind = st[ST_KIND, s]
    job = kind == SK_MODEL or kind == SK_SEARCH or kind == SK_LLM
    if job:
        rf[F_QUEUE_SUM, i] += rf[F_ADMIT, i] - rf[F_READY, i]
    if i >= S[K_G][G_WARMUP]:
        sa = S[K_PTF]
        row = st[ST_ROW, s]
        sa[SA_VISITS, row] += 1.0
        sa[SA_TRANSFER_S, row] += rf[F_READY, i] - rf[F_ENTER, i]
        if job:
            sa[SA_QUEUE_S, row] += rf[F_ADMIT, i] - rf[F_READY, i]
        end = t
        if kind == SK_LLM:  # split into prefill | thinking | answer rows
            end = rf[F_PREFILL_END, i]
            r2 = st[ST_ROW_REASON, s]
            r3 = st[ST_ROW_DECODE, s]
            think_end = t  # (a job without the answer thinks to its end)
            if r3 >= 0:
                think_end = rf[F_REASON_END, i] if not math.isnan(rf[F_REASON_END, i]) else end
                sa[SA_VISITS, r3] += 1.0
                sa[SA_TIME_S, r3] += t - think_end
            if r2 >= 0:
                sa[SA_VISITS, r2] += 1.0
                sa[SA_TIME_S, r2] += think_end - end
            else:
                end = think_end
        sa[SA_TIME_S, row] += end - rf[F_ENTER, i]
    if kind == SK_LLM:  # what it generated stays in the context, its KV cached for a later round
        ri[R_CTX, i] += ri[R_OUTPUT, i]
        ri[R_CACHED, i] = ri[R_CTX, i]
    ri[R_CTX, i] += st[ST_ADD_CTX, s]
    if s + 1 < st[ST_END, s]:
        ri[R_STAGE, i] = s + 1
        _enter_stage(S, i, t)
    else:
        ri[R_STATUS, i] = ST_DONE
        rf[F_DONE, i] = t


@kernel(inline=True)
def _timer(S, payload, t):
    kind = payload % 4
    x = payload // 4
    if kind == TM_DELAY:
        _stage_done(S, x, t)
    elif kind == TM_WAKE:
        if S[K_RSF][A_WAKE_DUE, x] == t:
            S[K_RSF][A_WAKE_DUE, x] = -1.0
            if S[K_RS][S_BUSY, x] == 0:
                _boundary(S, x, t)
    else:
        _ps_join(S, S[K_RI][R_RES, x], x, t)


@kernel(inline=True)
def _arrive_pipeline(S, i, t):
    ri = S[K_RI]
    ri[R_STAGE, i] = int(S[K_PTF][RTF, S[K_G][G_CL] + ri[R_CLASS, i]])
    ri[R_CTX, i] = ri[R_BASE_PROMPT, i]
    ri[R_STATUS, i] = ST_WAITING
    _enter_stage(S, i, t)


@kernel
def serve(S):
    """Run the event loop over all arrivals until no work is left or the horizon passes."""
    g = S[K_G]
    arrivals = S[K_RF][F_ARRIVAL]
    acc = S[K_ACC]
    horizon = acc[C_HORIZON]
    n = arrivals.size
    n_rep = S[K_RS].shape[1]
    g[G_CUR] = n_rep
    while True:
        t_step = _heap_top(S[K_HT], S[K_G], 0)
        t_hand = _heap_top(S[K_HT], S[K_G], 1)
        t_timer = _heap_top(S[K_HT], S[K_G], 2)
        t_xfer = _next_transfer_end(S[K_PTF], g[G_NRES]) if g[G_NRES] > 0 else INF
        k = g[G_NEXT_ARRIVAL]
        t_arr = arrivals[k] if k < n else INF
        t = min(min(t_step, t_hand), min(t_timer, t_xfer), t_arr)
        if t == INF or t > horizon:
            break
        acc[C_END] = t
        g[G_EVENTS] += 1
        if t_step == t:
            r = _heap_pop(S, 0)
            g[G_CUR] = r
            _finish(S, r, t)
            _boundary(S, r, t)
            g[G_CUR] = n_rep
        elif t_hand == t:
            i = _heap_pop(S, 1)
            _handoff_done(S, i, t)
        elif t_timer == t:
            _timer(S, _heap_pop(S, 2), t)
        elif t_xfer == t:
            xf = S[K_PTF]
            for res in range(g[G_NRES]):
                if xf[XF_NEXT_T, res] == t:
                    _transfer_done(S, _ps_complete(S, res, t), t)
                    break
        else:
            g[G_NEXT_ARRIVAL] = k + 1
            if g[G_PIPELINE] != 0:
                _arrive_pipeline(S, k, t)
            else:
                _arrive(S, k, t)
    if horizon < INF:
        for r in range(n_rep):
            _settle(S, r, horizon)


@kernel
def _settle(S, r, horizon):
    """The run stopped at the horizon: apply the iterations of replica r's span that ended by then, and
    account the one in flight (as stepping would have: it accounts an iteration when it starts it)."""
    _truncate(S, r, horizon)
    m = S[K_RS][S_SPAN, r] - 1  # (0 unless a span is in flight)
    if m <= 0:
        return
    rs = S[K_RS]
    rs[S_SPAN, r] = m
    ri = S[K_RI]
    run = S[K_RUN]
    g = S[K_G]
    for k in range(rs[S_NRUN, r]):  # (the job-done buffer as scratch: the marks of the iteration in flight)
        g[NG + k] = ri[R_CHUNK, run[r, k]]
    _finish(S, r, S[K_SPAN][1, r, m - 1])  # nothing finishes inside a span, so this only advances tokens
    for k in range(rs[S_NRUN, r]):
        ri[R_CHUNK, run[r, k]] = g[NG + k]
    rsf = S[K_RSF]
    n_dec = rsf[T_NDEC, r]
    _account(rsf, r, S[K_SPAN][0, r, m], rsf[T_NSEQ, r], 0.0, n_dec, rsf[A_SPAN_KV, r] + (m + 1) * n_dec)
    rs[S_BUSY, r] = 1
    rs[S_SPAN, r] = 1


def empty_pipeline():
    """Pipeline arrays of plain serving (no stage tables, no shared resources)."""
    return {
        "stages": np.zeros((NST, 0), dtype=np.int64),
        "stages_float": np.zeros((NSTF, 0)),
        "class_first": np.zeros(1, dtype=np.int64),
        "route": np.zeros(1, dtype=np.int64),
        "route_float": np.zeros(1),
        "tiers": np.zeros((NTI, 0), dtype=np.int64),
        "tiers_float": np.zeros((NTF, 0)),
        "resources": np.zeros((2, 0)),  # bandwidth (B/s), latency (s) of each shared resource
        "rows": 0,
        "draws": np.zeros((0,)),
        "request_class": None,
        "answer_tokens": None,
        "warmup": 0,
        "branch_slots": 0,  # per request: branches - 1 of its widest reason stage
    }


def new_state(
    params: np.ndarray,
    pool_int: np.ndarray,
    pool_float: np.ndarray,
    replica_pool: np.ndarray,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    route_u: np.ndarray,
    horizon_s: float = INF,
    fast_forward: bool = True,
    pipeline: dict | None = None,
):
    """Allocate and initialise the state tuple for :func:`serve` (plain numpy, called from Python).

    ``pipeline`` (see :func:`empty_pipeline` for the keys) switches requests to stage tables."""
    pl = pipeline if pipeline is not None else empty_pipeline()
    piped = pl["stages"].shape[1] > 0
    n_arr = arrival_s.size
    n_branch = n_arr * pl["branch_slots"]  # request slots of parallel reasoning branches, after the arrivals
    n = n_arr + n_branch
    if n_branch:
        pad = np.zeros(n_branch, dtype=np.int64)
        prompt_tokens, output_tokens = np.concatenate([prompt_tokens, pad]), np.concatenate([output_tokens, pad])
        arrival_s = np.concatenate([arrival_s, np.full(n_branch, INF)])
    n_rep = replica_pool.size
    n_pools = pool_int.shape[1]
    ri = np.zeros((NRI, n), dtype=np.int64)
    ri[R_PROMPT] = prompt_tokens
    ri[R_OUTPUT] = output_tokens
    ri[R_TARGET] = prompt_tokens
    ri[R_BASE_PROMPT] = prompt_tokens
    ri[R_ANSWER, :n_arr] = output_tokens[:n_arr] if pl["answer_tokens"] is None else pl["answer_tokens"]
    if pl["request_class"] is not None:
        ri[R_CLASS, :n_arr] = pl["request_class"]
    ri[R_FIRST_AT] = 1
    ri[R_STOP] = ri[R_OUTPUT]
    ri[R_SEQS] = 1
    ri[R_BRANCHES_LEFT] = 1
    for row in (R_NEXT, R_REPLICA, R_ENTRY_REPLICA, R_DECODE_REPLICA, R_STAGE, R_RES, R_RES_NEXT):
        ri[row] = -1
    rf = np.full((NRF, n), np.nan)
    rf[F_TRANSFER] = 0.0
    rf[F_QUEUE_SUM] = 0.0
    rf[F_ARRIVAL] = arrival_s
    rs = np.zeros((NRS, n_rep), dtype=np.int64)
    rs[S_POOL] = replica_pool
    rs[S_FREE_BLOCKS] = pool_int[P_CAP_BLOCKS, replica_pool]
    rsf = np.zeros((NRSF, n_rep))
    rsf[A_WAKE_DUE] = -1.0
    qs = np.zeros((NQ, n_rep + n_pools), dtype=np.int64)
    qs[Q_HEAD] = -1
    qs[Q_TAIL] = -1
    max_batch = int(pool_int[P_MAX_BATCH].max(initial=1))
    run = np.full((n_rep, max_batch), -1, dtype=np.int64)
    cap = max(n_rep, n) + 1
    if piped or np.any(pool_float[PF_MAX_WAIT] > 0):  # timers: one per request, wake-ups one per queued head
        cap = 2 * n + n_rep + 16
    ht = np.zeros((3, cap))
    hi = np.zeros((3, 2, cap), dtype=np.int64)
    g = np.zeros(NG + max_batch, dtype=np.int64)
    g[G_FAST_FORWARD] = 1 if fast_forward else 0
    g[G_PIPELINE] = 1 if piped else 0
    g[G_WARMUP] = pl["warmup"]
    g[G_CHILD0] = n_arr
    g[G_NBCH] = pl["branch_slots"]
    acc = np.zeros(NACC + ITL_BINS)
    acc[C_HORIZON] = horizon_s
    # pipeline tables, one array per dtype
    stages = pl["stages"]
    n_st, n_tier, n_res = stages.shape[1], pl["tiers"].shape[1], pl["resources"].shape[1]
    rtf = np.concatenate([pl["route_float"], pl["route"], pl["class_first"]]).astype(np.float64)
    width = max(n_st, n_tier, n_res, pl["rows"], rtf.size, 1)
    pt = np.zeros((PT_ROWS, width), dtype=np.int64)
    ptf = np.zeros((PTF_ROWS + 1, width))
    pt[:NST, :n_st] = stages
    pt[TI_RES : TI_RES + NTI, :n_tier] = pl["tiers"]
    pt[XI_HEAD] = -1
    pt[XI_MIN] = -1
    ptf[:NSTF, :n_st] = pl["stages_float"]
    ptf[TF_HIT : TF_HIT + NTF, :n_tier] = pl["tiers_float"]
    ptf[XF_BW, :n_res], ptf[XF_LAT, :n_res] = pl["resources"]
    ptf[XF_NEXT_T] = INF
    g[G_NRES] = n_res
    # route tables: floats, then target pools and class maps, then each class's first stage
    ptf[RTF, : rtf.size] = rtf
    n_f = pl["route_float"].size
    pt[ST_ROUTE, :n_st] += n_f
    pt[ST_CLASS_MAP, :n_st] += n_f
    g[G_CL] = n_f + pl["route"].size
    for row in (ST_DRAW, ST_PAST_DRAW):  # stage draws follow the two rows of replica-choice uniforms
        pt[row, :n_st] = np.where(stages[row] >= 0, stages[row] + 2, -1)
    draws = np.concatenate([np.asarray(route_u, dtype=np.float64).reshape(2, n_arr), pl["draws"].reshape(-1, n_arr)])
    return (
        ri,
        rf,
        rs,
        rsf,
        qs,
        run,
        np.array(pool_int, dtype=np.int64),  # a copy: the loop advances its round-robin counters
        np.ascontiguousarray(pool_float, dtype=np.float64),
        np.ascontiguousarray(params, dtype=np.float64),
        np.ascontiguousarray(draws),
        ht,
        hi,
        g,
        acc,
        pt,
        ptf,
        np.zeros((2, n_rep, SPAN_CAP)),
    )
