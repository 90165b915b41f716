"""Regenerate the shipped calibrations in hermes_fast/data/calibrations/ from the shipped reference data.

Run:  python benchmarks/fit_calibrations.py        (about a minute on one core)

Each calibration is fitted to one device's rows of the named software stacks, with a quarter of the rows
held back (stable hash, seed 0); the file records the fit and held-back errors per kernel family.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

import numpy as np

from hermes_fast.calibration.fit import calibrate
from hermes_fast.calibration.reference import reference_measurements
from hermes_fast.calibration.validate import fitted_rows

# name -> (device, software stacks fitted, data origin)
AICONF = "NVIDIA aiconfigurator 0.12.0 databases"
VIDUR = "microsoft/vidur profiles"
CALIBRATIONS = {
    # vidur's H100 all-reduce times are PyTorch-level (host overhead in): only its linear ops join the NCCL fit
    "h100_sxm": (
        "h100_sxm",
        ("trtllm", "nccl", "vidur/layer_linear"),
        f"{AICONF} (TRT-LLM 1.3.0rc20 kernels, NCCL 2.29.2), {VIDUR}",
    ),
    "h200_sxm": ("h200_sxm", ("trtllm", "nccl"), f"{AICONF} (TRT-LLM 1.3.0rc20 kernels, NCCL 2.29.2)"),
    "a100_sxm_80gb": ("a100_sxm_80gb", ("vidur",), f"{VIDUR} (PyTorch fp16 linear ops, NCCL all-reduce)"),
    "h100_sxm-vllm": ("h100_sxm", ("vllm", "nccl"), f"{AICONF} (vLLM 0.24.0 kernels, NCCL 2.29.2)"),
    "h200_sxm-vllm": ("h200_sxm", ("vllm", "nccl"), f"{AICONF} (vLLM 0.24.0 kernels, NCCL 2.29.2)"),
}


def main(out: Path | None = None) -> None:
    out = out or Path(str(files("hermes_fast") / "data" / "calibrations"))
    ms = reference_measurements()
    stacks = np.array([b.split("-")[0] for b in ms["backend"]])
    for name, (device, keep, origin) in CALIBRATIONS.items():
        t = time.perf_counter()
        sel = (ms["device"] == device) & fitted_rows(f"fitted to {', '.join(keep)}", stacks, ms.family)
        cal = calibrate(ms.select(sel), device, name=name, source=f"{origin}; fitted to {', '.join(keep)}")
        cal.save(out / f"{name}.yaml")
        print(f"{name}: {int(sel.sum())} rows, {time.perf_counter() - t:.1f} s")
        for r in cal.report:
            print(
                f"  {r['family']:22s} held {r['rows_held']:4d}: median {r['held_median_abs_error']:.1%}"
                f" p90 {r['held_p90_abs_error']:.1%}"
            )


if __name__ == "__main__":
    main()
