"""Index layout of the flat float64 engine-parameter vector that the step-cost kernels read.

`hermes_fast.compile` fills one such vector per (device, model, parallel layout, dtypes) combination;
all sizes are per device (already divided by TP/EP), all rates are effective (peak x efficiency).
Module-level ints are compile-time constants for numba.
"""

# --- device rates and overheads
GEMM_FLOPS = 0  # FLOP/s: dense peak at the activation dtype x compute_efficiency
GEMM_SAT = 1  # token: m at which GEMM efficiency is half of its maximum
ATTN_FLOPS = 2  # FLOP/s: peak x attention_compute_efficiency
MEM_BW = 3  # B/s: memory bandwidth x memory_efficiency
OH_GEMM = 4  # s per GEMM kernel
OH_ATTN = 5  # s per attention kernel
OH_ELEM = 6  # s per fused elementwise kernel
OH_COLL = 7  # s per collective call
# --- element sizes
W_BYTES = 8  # B per weight element
A_BYTES = 9  # B per activation element
KV_TOKEN_BYTES = 10  # B of KV cache per token per layer on one device
# --- layer counts (whole model; pipeline stages run in sequence)
N_LAYERS = 11
N_DENSE = 12  # layers with a dense FFN
N_MOE = 13  # layers with an MoE FFN
N_SWA = 14  # sliding-window attention layers
SWA_WINDOW = 15  # token
HIDDEN = 16  # model width (unsharded)
CAUSAL = 17  # 1.0 causal decoder, 0.0 bidirectional encoder
# --- attention projections per device: (k, n) of each GEMM
QKV_K = 18
QKV_N = 19  # m = all tokens
QB_K = 20
QB_N = 21  # MLA query up-projection (0 otherwise), m = all tokens
KVB_K = 22
KVB_N = 23  # MLA KV up-projection (0 otherwise), m = prefill context tokens + decode tokens
O_K = 24
O_N = 25  # m = all tokens
HEADS = 26  # query heads per device
ATT_QK_PREFILL = 27  # per-head query.key dim in prefill
ATT_V_PREFILL = 28  # per-head value dim in prefill
ATT_QK_DECODE = 29  # per-head score dim in decode (MLA absorbed: kv_lora + rope)
ATT_V_DECODE = 30  # per-head value dim in decode (MLA absorbed: kv_lora)
# --- dense FFN per device
FFN_UP_N = 31  # gate+up width (2f/tp gated, f/tp plain), k = hidden
FFN_DOWN_K = 32  # f/tp, n = hidden
# --- MoE per device
N_EXPERTS = 33
TOP_K = 34
EP = 35
EXP_UP_N = 36  # per expert per device
EXP_DOWN_K = 37
SHARED_UP_N = 38  # all shared experts together, per device (0 if none)
SHARED_DOWN_K = 39
# --- elementwise traffic (norms, residuals, activation) per token per layer, bytes
ELEM_DENSE_BYTES = 40
ELEM_MOE_BYTES = 41
# --- heads
VOCAB_DEV = 42  # vocab / tp
HAS_LM_HEAD = 43
# --- collectives: group sizes, per-hop latency, effective per-direction bandwidth
TP = 44
TP_ALPHA = 45
TP_BW = 46
EP_ALPHA = 47
EP_BW = 48
FFN_TP = 49  # TP degree inside one expert (tp / ep) for the post-MoE all-reduce
PP = 50
PP_ALPHA = 51
PP_BW = 52
ATTN_SAT = 53  # keys per query at which attention reaches half its efficiency
N_PARAMS = 54
