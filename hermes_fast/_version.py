"""The package version, and a digest of this build, in a module of its own so that modules inside the package can
read them without importing the package's ``__init__`` (which imports them)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"

# what results are computed from: the code and the catalogs / data it reads (fitted costs, calibrations)
_BUILD_SUFFIXES = (".py", ".yaml", ".csv")


@functools.lru_cache(maxsize=1)
def build_digest() -> str:
    """A digest of this build: every code, catalog and data file of the package (path and bytes, in path order).

    The version alone does not move when a fix changes what a result means or a refit changes a shipped cost; a
    sweep store keeps the digest that wrote it, so that a resume never mixes two builds' points, and every result
    names it in its attrs (``hermes_fast_build``).

    Returns
    -------
    str
        16 hexadecimal digits (of a SHA-256), the same for every call in a process.

    Examples
    --------
    >>> digest = hf.build_digest()
    >>> len(digest), digest == hf.simulate(n_requests=20).attrs["hermes_fast_build"]
    (16, True)
    """
    return tree_digest(Path(__file__).resolve().parent)


def provenance() -> dict[str, str]:
    """The attrs every result Dataset names what computed it with: ``hermes_fast_version`` and ``hermes_fast_build``
    (:func:`build_digest`)."""
    return {"hermes_fast_version": __version__, "hermes_fast_build": build_digest()}


def tree_digest(root: Path) -> str:
    """:func:`build_digest` of the package tree at ``root``."""
    h = hashlib.sha256()
    files = sorted(
        p for p in root.rglob("*") if p.suffix in _BUILD_SUFFIXES and "__pycache__" not in p.parts and p.is_file()
    )
    for p in files:
        data = p.read_bytes()
        h.update(f"{p.relative_to(root).as_posix()}|{len(data)}|".encode())
        h.update(data)
    return h.hexdigest()[:16]
