"""Print the default (uncalibrated) kernel errors against the shipped measurements as a Markdown table.

Run:  python benchmarks/reference_errors.py
"""

from __future__ import annotations

from hermes_fast.validate import error_summary, reference_errors


def main() -> None:
    rows = error_summary(reference_errors())
    print("| kernel family | device | rows | median abs error | p90 abs error | median signed error |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['family']} | {r['device']} | {r['rows']} | {r['median_abs_error']:.1%} "
            f"| {r['p90_abs_error']:.1%} | {r['median_signed_error']:+.1%} |"
        )


if __name__ == "__main__":
    main()
