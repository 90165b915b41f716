"""Run the case-study notebooks' code cells in this process (no Jupyter kernel needed) and save their figures.

    python notebooks/run_notebooks.py                  # full sizes, figures into a temporary folder
    python notebooks/run_notebooks.py --write-figures  # full sizes, figures into notebooks/figures/ (the README's)
    python notebooks/run_notebooks.py --small a        # tiny sizes (as the tests do), notebooks starting with "a"

Jupyter runs the same notebooks as they are; this script is what the tests and the README figures use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def code_of(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@contextmanager
def _environment(small: bool, figures: Path):
    old_env = {k: os.environ.get(k) for k in ("HERMES_NOTEBOOK_SMALL", "HERMES_FIGURES_DIR", "MPLBACKEND")}
    old_cwd = Path.cwd()
    os.environ.update(HERMES_NOTEBOOK_SMALL="1" if small else "0", HERMES_FIGURES_DIR=str(figures), MPLBACKEND="Agg")
    os.chdir(HERE)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(path: Path, small: bool = False, figures: Path | None = None) -> dict:
    """Execute the notebook's code cells in a fresh namespace (figures into ``figures``, default: a temporary
    folder); returns the namespace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__main__"}
    with _environment(small, figures or Path(tempfile.mkdtemp(prefix="hermes_fast_figures_"))):
        exec(compile(code_of(path), str(path), "exec"), namespace)  # noqa: S102 - our own notebooks
    plt.close("all")
    return namespace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("prefix", nargs="*", help="only notebooks whose names start with these")
    ap.add_argument("--small", action="store_true", help="tiny sizes, as in the tests")
    ap.add_argument("--write-figures", action="store_true", help="into notebooks/figures/ (tracked: the README's)")
    args = ap.parse_args()
    figures = HERE / "figures" if args.write_figures else Path(tempfile.mkdtemp(prefix="hermes_fast_figures_"))
    print(f"figures into {figures}", file=sys.stderr)
    for path in sorted(HERE.glob("*.ipynb")):
        if args.prefix and not any(path.name.startswith(p) for p in args.prefix):
            continue
        t0 = time.perf_counter()
        run(path, args.small, figures)
        print(f"{path.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
