"""Index layout of the flat float64 engine-parameter vector that the step-cost kernels read.

`hermes_fast.compile` fills one such vector per (device, model, parallel layout, dtypes) combination;
all sizes are per device (already divided by TP/EP), all rates effective (peak x efficiency).
Module-level ints are compile-time constants for numba.

Each GEMM is stored as a block of 4 coefficients (see ``roofline.gemm_coefficients``):
compute_s = p[G] + p[G+1] m and memory_s = p[G+2] + p[G+3] m for m tokens.
"""

_n = 0


def _slot(width: int = 1) -> int:
    global _n
    start = _n
    _n += width
    return start


# --- device rates and overheads (GEMM rates live in the coefficient blocks below)
ATTN_FLOPS = _slot()  # FLOP/s: peak x attention_compute_efficiency
ATTN_SAT = _slot()  # keys per query at which attention reaches half its efficiency
PREFILL_SAT = _slot()  # query tokens x heads at which prefill attention reaches half its compute rate
DECODE_SAT = _slot()  # sequences x KV heads at which decode attention reaches half its memory bandwidth
DECODE_RAMP_BYTES = _slot()  # KV bytes per decode attention kernel halfway up its bandwidth ramp (0: none)
DECODE_RAMP_LOW = _slot()  # little-KV / large-KV decode attention bandwidth ratio
KV_HEADS = _slot()  # KV heads per device (MLA: 1 latent)
MEM_BW = _slot()  # B/s: memory bandwidth x memory_efficiency
OH_GEMM = _slot()  # s per GEMM kernel
GEMM_FLOOR_S = _slot()  # s a GEMM takes at least, its fixed cost included (block-scaled FP8; 0: none)
GEMM_SMALL_FLOOR_S = _slot()  # GEMM_FLOOR_S of GEMMs with at most GEMM_SMALL_TOKENS rows
GEMM_SMALL_TOKENS = _slot()  # rows up to which GEMM_SMALL_FLOOR_S applies (0: none)
OH_ATTN = _slot()  # s per prefill attention kernel
OH_ATTN_DECODE = _slot()  # s per decode attention kernel
OH_ELEM = _slot()  # s per fused elementwise kernel
OH_COLL = _slot()  # s per collective call
OH_STEP = _slot()  # s per engine iteration outside the kernels (host work, all TP ranks)
OH_SEQ = _slot()  # s per sequence that emits a token in an iteration (sampling, bookkeeping)
# --- element sizes
A_BYTES = _slot()  # B per GEMM activation element
H_BYTES = _slot()  # B per hidden-state element between kernels (collectives, hand-offs)
KV_TOKEN_BYTES = _slot()  # B of KV cache per token per layer on one device
# --- layer counts (whole model; pipeline stages run in sequence)
N_LAYERS = _slot()
N_DENSE = _slot()  # layers with a dense FFN
N_MOE = _slot()  # layers with an MoE FFN
N_SWA = _slot()  # sliding-window attention layers
SWA_WINDOW = _slot()  # token
IDX_HEADS = _slot()  # sparse-attention indexer: query heads on each device (0: no indexer), all attention layers
IDX_DIM = _slot()  # its query / key dim
IDX_KEY_BYTES = _slot()  # its cached key per token and layer, bytes
IDX_FLOPS = _slot()  # the FP8 attention rate it scores at, FLOP/s
N_LIN = _slot()  # linear-attention layers (a fixed-size state per sequence, no KV); the rest attend
HIDDEN = _slot()  # model width (unsharded)
CAUSAL = _slot()  # 1.0 causal decoder, 0.0 bidirectional encoder
HAS_LM_HEAD = _slot()
VOCAB = _slot()  # full vocabulary (logits gathered over TP)
# --- attention shape per device
HEADS = _slot()  # query heads per device
ATT_QK_PREFILL = _slot()  # per-head query.key dim in prefill
ATT_V_PREFILL = _slot()  # per-head value dim in prefill
ATT_QK_DECODE = _slot()  # per-head score dim in decode (MLA absorbed: kv_lora + rope)
ATT_V_DECODE = _slot()  # per-head value dim in decode (MLA absorbed: kv_lora)
# --- linear-attention mixer per layer on one device (0 without): FLOP per token of the convolution and state
#     update, bytes per token of its activations in and out, bytes of one sequence's state (read and written
#     once per decode step)
LIN_FLOP_TOKEN = _slot()
LIN_ACT_BYTES = _slot()
LIN_STATE_BYTES = _slot()
# --- MoE
N_EXPERTS = _slot()
TOP_K = _slot()
EP = _slot()
EXPERT_LOG_MISS = _slot()  # log(1 - top_k / n_experts)
# --- memory time per token of the elementwise kernels (norms, residuals, activation) of one layer,
#     and of the input-embedding gather
ELEM_DENSE_S = _slot()
ELEM_MOE_S = _slot()
EMBED_S = _slot()
# --- collectives: group sizes, per-hop latency, effective per-direction bus bandwidth (per group size and op)
TP = _slot()
TP_ALPHA = _slot()
TP_BW = _slot()  # all-gather bandwidth of the TP group (logits)
TP_AR_BW = _slot()  # all-reduce bandwidth of the TP group
FFN_AR_BW = _slot()  # all-reduce bandwidth of the tp / ep devices sharing one expert
EP_ALPHA = _slot()
EP_BW = _slot()  # all-to-all bandwidth of the EP group
FFN_TP = _slot()  # TP degree inside one expert (tp / ep) for the post-MoE all-reduce
PP = _slot()
PP_ALPHA = _slot()
PP_BW = _slot()
# --- attention data parallelism and context parallelism (1: off)
ATT_DP = _slot()  # ranks the batch's sequences are dealt to for attention (tp under attention DP, else 1)
CP = _slot()  # context-parallel groups of tp devices, each holding 1/CP of every sequence's tokens and KV
CP_ALPHA = _slot()
CP_BW = _slot()  # send/recv bandwidth between neighbouring CP groups (the prefill ring's KV blocks)
CP_AG_BW = _slot()  # all-gather / reduce-scatter bandwidth of the CP group (decode: queries out, partials back)
COLL_RAMP_BYTES = _slot()  # message size halfway up the collectives' bandwidth ramp (0: no ramp)
COLL_RAMP_LOW = _slot()  # small-message / large-message bandwidth ratio
EP_RAMP_BYTES = _slot()  # COLL_RAMP_BYTES of the EP all-to-all
EP_PROTO_S = _slot()  # extra all-to-all latency once the per-peer share passes EP_PROTO_BYTES
EP_PROTO_BYTES = _slot()
# --- GEMM coefficient blocks (4 slots each); an absent GEMM is all zeros
G_QKV = _slot(4)  # hidden -> q, k, v (MLA: fused down-projections), m = all tokens
G_QB = _slot(4)  # MLA query up-projection, m = all tokens
G_KVB = _slot(4)  # MLA KV up-projection, m = prefill context tokens + decode tokens
G_O = _slot(4)  # attention output projection, m = all tokens
G_FFN_UP = _slot(4)  # dense gate+up
G_FFN_DOWN = _slot(4)
G_ROUTER = _slot(4)  # MoE router (replicated)
G_EXP_UP = _slot(4)  # one routed expert's gate+up shard
G_EXP_DOWN = _slot(4)
G_SHARED_UP = _slot(4)  # all shared experts together
G_SHARED_DOWN = _slot(4)
G_LM_HEAD = _slot(4)  # hidden -> vocab / tp, m = sequences emitting a token
G_LIN_IN = _slot(4)  # linear attention: hidden -> queries, keys, values, gate, scalars, m = all tokens
G_LIN_OUT = _slot(4)  # linear attention: values -> hidden, m = all tokens
# --- attention residual surfaces (config.efficiency.AttentionResidual), one per kernel: node counts, the nodes'
# x and y, then the measured / analytical ratio at each node, x-major; RES_NX = 0 means none. Limits as
# config.efficiency.ATTENTION_RESIDUAL_NODES and _AXIS_NODES (the kernels import no configs)
RESIDUAL_NODES = 256
RESIDUAL_AXIS_NODES = 64
RES_NX, RES_NY, RES_X_NODES = 0, 1, 2
RES_Y_NODES = RES_X_NODES + RESIDUAL_AXIS_NODES
RES_VALUES = RES_Y_NODES + RESIDUAL_AXIS_NODES
RES_SIZE = RES_VALUES + RESIDUAL_NODES
RES_PREFILL = _slot(RES_SIZE)
RES_DECODE = _slot(RES_SIZE)
# --- kernels a serving stack runs that the operators above leave out (0 under the ideal stack): per token, every
#     layer's KV-cache write and rotary embedding of queries and keys; per sequence that samples, the softmax and
#     sampling over the vocabulary; all memory-bound, each a launch of OH_ELEM
EXTRA_TOKEN_S = _slot()  # s per token (all layers)
EXTRA_SEQ_S = _slot()  # s per sequence that emits a token
EXTRA_KERNELS = _slot()  # kernel launches per iteration
PREFILL_ATTN_EXTRA = _slot()  # prefill attention kernels' time added by the stack's backend, a fraction (0: none)
DECODE_ATTN_EXTRA = _slot()  # decode attention kernels' time added by the stack's backend, a fraction (0: none)
MOE_COMPUTE_EXTRA = _slot()  # routed-expert GEMMs' compute time added by the stack's MoE kernels, a fraction (0: none)
MOE_MEMORY_EXTRA = _slot()  # routed-expert GEMMs' weight-reading time added by the stack's MoE kernels, a fraction
DECODE_HOST_OVERLAP = _slot()  # 1: a decode-only iteration's per-step host work runs beside its kernels (pp = 1)
ASYNC_SCHEDULING = _slot()  # 1: every iteration's host work runs beside the kernels: it takes the longer (pp = 1)
# --- serving
FIXED_STEP_S = _slot()  # > 0: every iteration takes this long (engine.fixed_step_time_s), replacing the roofline
# --- the serving stack's CUDA graphs: decode batch sizes captured (ascending; GRAPH_COUNT = 0: no graphs, every
#     iteration as the roofline prices it), a decode-only micro-batch runs as the next captured size; an
#     iteration that runs eagerly (above the largest size, or with prefill unless GRAPH_MIXED) pays the host's
#     kernel launches, GRAPH_EAGER_S
GRAPH_MAX_SIZES = 64
GRAPH_COUNT = _slot()
GRAPH_SIZES = _slot(GRAPH_MAX_SIZES)
GRAPH_MIXED = _slot()  # 1: iterations with prefill run as (piecewise) graphs too
GRAPH_EXACT = _slot()  # 1: no padding: only a batch of exactly a captured size runs as a graph
GRAPH_EAGER_S = _slot()  # s of kernel launches an eager iteration adds
N_PARAMS = _n
del _n, _slot
