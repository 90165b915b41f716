"""Closed-form costs of the non-LLM pipeline stages: vector search and KV-tier lookups.

Vector search (after faiss's index families; d dimensions, N vectors, e bytes per stored component):

- ``flat``: every query scores all N vectors: 2 N d FLOP; a batch reads the whole database once
  (it runs as one (B x d) x (d x N) GEMM), N d e bytes, plus d e bytes per query.
- ``ivf_flat``: C centroids, ``nprobe`` P lists of N / C vectors: 2 C d FLOP for the coarse search
  (centroids read once per batch, C d e bytes) plus 2 P (N / C) d FLOP and P (N / C) d e bytes per query
  for the lists (lists differ between queries, so they are not shared).
- ``ivf_pq``: as IVF but each vector is m codes of ``bits`` bits: per probe a distance table of
  m sub-spaces x 2^bits centroids of d / m components (2 d 2^bits FLOP, residual encoding), then per
  listed vector m table look-ups and adds (m FLOP) over P (N / C) m bits / 8 code bytes.
- ``hnsw``: with M links per node, a query visits about ef_search x 2M neighbours on the base layer plus
  M per upper level (levels = ln N / ln M): 2 d FLOP and d e bytes (plus a 4-byte link) per visit.

Index memory: flat N d e; IVF-Flat N (d e + 8) + C d e; IVF-PQ N (m bits / 8 + 8) + C d e + codebooks
2^bits d 4; HNSW N (d e + 2M·4) plus upper-level links N/(M−1)·M·4. (8-byte ids, fp32 codebooks.)
"""

from __future__ import annotations

import math

from ._jit import kernel

INDEX_FLAT = 0
INDEX_IVF_FLAT = 1
INDEX_IVF_PQ = 2
INDEX_HNSW = 3
INDEX_CODES = {"flat": INDEX_FLAT, "ivf_flat": INDEX_IVF_FLAT, "ivf_pq": INDEX_IVF_PQ, "hnsw": INDEX_HNSW}
_ID_BYTES = 8.0
_LINK_BYTES = 4.0


@kernel
def search_cost(index, n_vectors, dim, elem_bytes, n_lists, n_probe, pq_m, pq_bits, hnsw_m, ef_search):
    """FLOP per query, bytes read once per batch, bytes per query, and index bytes of one vector index.

    ``index`` is an ``INDEX_*`` code; parameters not used by that index are ignored.
    """
    n = n_vectors
    d = dim
    if index == INDEX_FLAT:
        return 2.0 * n * d, n * d * elem_bytes, d * elem_bytes, n * d * elem_bytes
    if index == INDEX_HNSW:
        levels = max(math.log(n) / math.log(hnsw_m), 1.0)
        visits = ef_search * 2.0 * hnsw_m + levels * hnsw_m
        footprint = n * (d * elem_bytes + 2.0 * hnsw_m * _LINK_BYTES) + n / (hnsw_m - 1.0) * hnsw_m * _LINK_BYTES
        return 2.0 * d * visits, 0.0, visits * (d * elem_bytes + _LINK_BYTES) + d * elem_bytes, footprint
    scanned = n_probe * n / n_lists  # vectors in the probed lists
    coarse_flop = 2.0 * n_lists * d
    centroid_bytes = n_lists * d * elem_bytes
    if index == INDEX_IVF_FLAT:
        flop = coarse_flop + 2.0 * scanned * d
        footprint = n * (d * elem_bytes + _ID_BYTES) + centroid_bytes
        return flop, centroid_bytes, scanned * (d * elem_bytes + _ID_BYTES) + d * elem_bytes, footprint
    codes = 2.0**pq_bits
    code_bytes = pq_m * pq_bits / 8.0
    flop = coarse_flop + n_probe * 2.0 * d * codes + scanned * pq_m
    codebook_bytes = codes * d * 4.0
    footprint = n * (code_bytes + _ID_BYTES) + centroid_bytes + codebook_bytes
    per_query = scanned * (code_bytes + _ID_BYTES) + d * elem_bytes
    return flop, centroid_bytes + codebook_bytes, per_query, footprint


@kernel
def search_batch_time(n_queries, flop_per_query, bytes_fixed, bytes_per_query, flops_eff, bw_eff, overhead_s):
    """Seconds to search a batch of ``n_queries``: roofline of its FLOP and bytes, plus a fixed overhead."""
    compute = n_queries * flop_per_query / flops_eff
    memory = (bytes_fixed + n_queries * bytes_per_query) / bw_eff
    return overhead_s + max(compute, memory)


@kernel
def tier_outcome(u, hit_rates, n_tiers):
    """The tier that serves a prefix lookup drawn with uniform ``u`` (-1: a miss everywhere).

    ``hit_rates[k]`` is tier k's hit rate among lookups that reach it (every earlier tier missed),
    so tier k serves with probability h_k prod_{j<k} (1 - h_j).
    """
    reach = 1.0
    acc = 0.0
    for k in range(n_tiers):
        acc += reach * hit_rates[k]
        if u < acc:
            return k
        reach *= 1.0 - hit_rates[k]
    return -1
