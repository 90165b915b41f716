"""``hermes-fast sweep``: run a sweep YAML file (optionally into a resumable zarr store) and print its range."""

from __future__ import annotations

from .warnings import print_warnings

__all__ = ["cmd_sweep"]


def cmd_sweep(args) -> int:
    from ..sweep import sweep_file

    extra = {"n_requests": args.requests} if args.requests is not None else {}
    ds = sweep_file(
        args.sweep,
        out=args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        progress=False if args.no_progress else None,
        timeout_s=args.connect_timeout,
        **extra,
    )
    dims = ", ".join(f"{d}={ds.sizes[d]}" for d in ds.ttft_s.dims if d not in ("replicate", "quantile"))
    print(f"# {ds.attrs['title']}: {ds.attrs['points']} points ({dims or 'one point'}) x {ds.sizes['replicate']} "
          f"replicate(s) of {ds.attrs['n_requests']} requests, seed {ds.attrs['seed']}")  # fmt: skip
    if "capacity_request_per_s" in ds:
        cap = ds.capacity_request_per_s.mean("replicate")
        print(f"capacity under the targets: {float(cap.min()):.3f} to {float(cap.max()):.3f} request/s")
        if "capacity_bound" in ds:
            from collections import Counter

            from ..variables import CAPACITY_BOUND_NAMES

            counts = Counter(int(c) for c in ds.capacity_bound.values.ravel() if c > 0)
            bound = ", ".join(f"{CAPACITY_BOUND_NAMES[c - 1]} {n}" for c, n in sorted(counts.items()))
            print(f"binding target (point-replicates): {bound}")
    p99 = ds.ttft_s.sel(quantile=0.99).mean("replicate")
    print(f"p99 TTFT: {float(p99.min()) * 1e3:.2f} to {float(p99.max()) * 1e3:.2f} ms over the points")
    print(f"wrote {args.out}" if args.out else "(no --out: results not saved)")
    print_warnings(ds)
    return 0
