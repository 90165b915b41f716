"""The one place that holds numba options, and the plain-Python / compiled twin mechanism.

Every kernel is written as a plain Python function and decorated with :func:`kernel`, which leaves it
plain (the slow reference, used by tests) and attaches its compiled twin as ``fn.jit``. The twin is
compiled from a copy of the function whose global names for other kernels point at *their* twins, so
compiled kernels call compiled kernels and plain ones call plain ones, from one source.

Options come from environment variables read once at import:

- ``HERMES_CACHE`` (default 1): cache compiled machine code on disk. numba keys a cache entry on the
  defining file only, not on the kernels it calls from other files, so every twin's name carries a hash
  of the kernel package's sources (subpackages included): an edit to any kernel file (a ``git pull`` included)
  recompiles them all.
- ``HERMES_FASTMATH`` (default 0): allow reassociation; off by default because results must be
  bit-identical across runs and chunkings.
- ``HERMES_PARALLEL`` (default 0): compile grid loops with ``parallel=True`` (prange over points).

Kernels are compiled without numba's runtime reference counting (``_nrt=False``): they only index
arrays their caller owns, and every kernel call that takes the serving loop's state tuple would otherwise
pay an atomic increment and decrement per array it touches (over a third of the loop's time). The
price: a kernel may not allocate an array (``np.empty`` and friends fail to compile); allocate in Python.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path

import numba

__all__ = ["kernel", "grid_kernel", "OPTIONS", "PARALLEL"]


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


CACHE = _flag("HERMES_CACHE", "1")
FASTMATH = _flag("HERMES_FASTMATH", "0")
PARALLEL = _flag("HERMES_PARALLEL", "0")
OPTIONS = {"cache": CACHE, "fastmath": FASTMATH, "nogil": True, "error_model": "numpy", "_nrt": False}

# inlined callees and the engine-parameter layout live in other files than the kernels that use them: hash every
# file of the kernel package, subpackages included (paths too, so a moved file counts as a change)
_ROOT = Path(__file__).parent
_SOURCES = hashlib.sha256(
    b"".join(str(f.relative_to(_ROOT)).encode() + f.read_bytes() for f in sorted(_ROOT.rglob("*.py")))
)
SOURCE_TAG = "__k" + _SOURCES.hexdigest()[:12]

_twins: dict[str, object] = {}
_namespaces: list[dict] = []


def _make_twin(fn, parallel: bool, inline: str = "never"):
    ns = dict(fn.__globals__)
    ns.update(_twins)
    if parallel:
        ns["prange"] = numba.prange
    _namespaces.append(ns)
    clone = types.FunctionType(fn.__code__, ns, fn.__name__, fn.__defaults__, fn.__closure__)
    # numba's cache key ignores parallel/fastmath and the other kernel files: name the variant and the sources
    # so one never loads code compiled for another
    variant = ("__parallel" if parallel else "") + ("__fastmath" if FASTMATH else "")
    clone.__qualname__ = fn.__qualname__ + variant + SOURCE_TAG
    clone.__module__ = fn.__module__
    twin = numba.njit(parallel=parallel, inline=inline, **OPTIONS)(clone)
    _twins[fn.__name__] = twin
    for other in _namespaces:  # kernels defined earlier see this twin too (resolved at first compile)
        other[fn.__name__] = twin
    fn.jit = twin
    return fn


def kernel(fn=None, *, inline: bool = False):
    """Register ``fn`` (plain Python, numba-compatible) and attach its compiled twin as ``fn.jit``.

    ``inline=True`` inlines the twin into its callers at numba-IR level: worth it for tiny helpers called
    many times per step (it halves the step cost), and for kernels with one caller that take the serving
    loop's state tuple (a call passes its ~17 arrays as ~150 scalar arguments). Compile time grows with
    every inlined copy: inlining kernels with several callers, whose callees are inlined too, costs most.
    """

    def register(f):
        if f.__name__ in _twins:
            raise RuntimeError(f"kernel name {f.__name__!r} is defined twice; kernel names must be unique")
        return _make_twin(f, parallel=False, inline="always" if inline else "never")

    return register if fn is None else register(fn)


def grid_kernel(fn):
    """Like :func:`kernel` for loops over grid points; compiled with ``parallel`` if HERMES_PARALLEL=1."""
    if fn.__name__ in _twins:
        raise RuntimeError(f"kernel name {fn.__name__!r} is defined twice; kernel names must be unique")
    return _make_twin(fn, parallel=PARALLEL)
