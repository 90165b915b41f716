"""The prefix-caching examples' figures for benchmarks/RESULTS.md ("Prefix caching (issue 22)").

1. examples/prefix_chat.yaml: multi-turn chat, vLLM stack, caching on vs off: TTFT per turn and the capacity
   (sessions/s) meeting TTFT p99 <= 1 s and TPOT p99 <= 50 ms.
2. examples/prefix_routing.yaml: round_robin, least_outstanding, prefix_affinity, kv_aware on 8 replicas.
3. examples/prefix_agent_trace.yaml: the Mooncake-format agent trace, caching on vs off.

Run from the repository root:  python benchmarks/prefix_examples.py [--requests N]
"""

from __future__ import annotations

import argparse

import hermes_fast as hf
from hermes_fast.config.files import load_yaml


def _with(path: str, **engine) -> dict:
    sc = load_yaml(path)
    sc["engines"][0].update(engine)
    return sc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args()
    n = args.requests
    print("## chat (examples/prefix_chat.yaml)")
    targets = {"ttft": {"quantile": 0.99, "max_s": 1.0}, "tpot": {"quantile": 0.99, "max_s": 0.05}}
    targets |= {"rate_min_per_s": 0.05, "rate_max_per_s": 20.0, "rel_tol": 0.02}
    for on in (True, False):
        sc = _with("examples/prefix_chat.yaml", prefix_cache=on)
        ds = hf.simulate(sc, n_requests=n, seed=1, progress=False).isel(replicate=0)
        turns = " ".join(f"{float(x) * 1e3:.0f}" for x in ds.ttft_turn_mean_s.values)
        cap = hf.capacity_search(sc, targets, n_requests=n // 2, seed=1).isel(replicate=0)
        print(
            f"prefix_cache {on!s:5}: hit {float(ds.prefix_hit_rate_token):.3f}, TTFT mean "
            f"{float(ds.ttft_mean_s) * 1e3:.0f} ms p99 {float(ds.ttft_s.sel(quantile=0.99)) * 1e3:.0f} ms, "
            f"per turn 1..8 [ms] {turns}; capacity {float(cap.capacity_request_per_s):.2f} sessions/s"
        )
    print("## routing (examples/prefix_routing.yaml, 8 replicas)")
    for sched in ("round_robin", "least_outstanding", "prefix_affinity", "kv_aware"):
        ds = hf.simulate(_with("examples/prefix_routing.yaml", scheduler=sched), n_requests=n, seed=1, progress=False)
        ds = ds.isel(replicate=0)
        print(
            f"{sched:18}: hit {float(ds.prefix_hit_rate_token):.3f}, TTFT mean {float(ds.ttft_mean_s) * 1e3:.0f} ms "
            f"p99 {float(ds.ttft_s.sel(quantile=0.99)) * 1e3:.0f} ms, TPOT p99 "
            f"{float(ds.tpot_s.sel(quantile=0.99)) * 1e3:.1f} ms, busy {float(ds.busy_fraction.mean()):.2f}, "
            f"valid {bool(ds.valid)}"
        )
    print("## agent trace (examples/prefix_agent_trace.yaml)")
    for on in (True, False):
        sc = _with("examples/prefix_agent_trace.yaml", prefix_cache=on)
        ds = hf.simulate(sc, n_requests=285, seed=1, progress=False).isel(replicate=0)
        print(
            f"prefix_cache {on!s:5}: hit {float(ds.prefix_hit_rate_token):.3f} (requests "
            f"{float(ds.prefix_hit_rate_request):.3f}), TTFT mean {float(ds.ttft_mean_s) * 1e3:.0f} ms, "
            f"p99 {float(ds.ttft_s.sel(quantile=0.99)) * 1e3:.0f} ms"
        )


if __name__ == "__main__":
    main()
