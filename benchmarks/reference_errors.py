"""Kernel errors against the shipped measurements as Markdown tables: the uncalibrated defaults on every row,
then defaults vs the shipped calibrations on the rows each calibration held back from its fit.

Run:  python benchmarks/reference_errors.py        (the same table: hermes-fast validate)
"""

from __future__ import annotations

from hermes_fast.calibration.validate import error_summary, reference_errors, validation_table


def main() -> None:
    rows = error_summary(reference_errors(calibration="none"))
    print("| kernel family | device | rows | median abs error | p90 abs error | median signed error |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['family']} | {r['device']} | {r['rows']} | {r['median_abs_error']:.1%} "
            f"| {r['p90_abs_error']:.1%} | {r['median_signed_error']:+.1%} |"
        )
    print()
    print("| kernel family | device | backend | calibration | held-back rows | default median | default p90 "
          "| calibrated median | calibrated p90 |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in validation_table():
        print(
            f"| {r['family']} | {r['device']} | {r['backend']} | {r['calibration']} | {r['rows_held']} "
            f"| {r['default_median']:.1%} | {r['default_p90']:.1%} | {r['calibrated_median']:.1%} "
            f"| {r['calibrated_p90']:.1%} |"
        )


if __name__ == "__main__":
    main()
