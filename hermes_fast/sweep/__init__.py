"""Sweeps: simulate a scenario over a grid of any of its fields, serially, in threads or on dask.distributed.

A grid maps dotted paths of scenario fields (``engines.decode.parallel.tp``, ``workload.rate_per_s``,
``workload.classes[0].pipeline[1].engine``) to lists of values; axes multiply (Cartesian product), and a
zipped axis changes several paths together. Every point's scenario is the base scenario with its settings
applied, validated by the ordinary config loading before anything runs.

Point ``i`` (its flat C-order index in the full grid) and replicate ``r`` draw from
``SeedSequence(seed, (i, r))`` whatever the chunking, worker count or order of completion, so a sweep is
bit-identical to itself and to :func:`hermes_fast.simulate` run on the point with ``point=i``.

Results go, chunk by chunk, to memory or to a zarr store (a flat ``point`` axis chunked like the tasks,
plus a per-chunk digest and per-point ``_done`` flags written after the chunk's data): an interrupted sweep
rerun with the same arguments computes only the chunks not marked done, and recomputes, with a
:class:`StoreWarning`, those whose files are missing or corrupt; one sweep writes a store at a time (a lock
file beside it).

One concern per module: :mod:`~hermes_fast.sweep.api` (the entry points), :mod:`~hermes_fast.sweep.plan` (grid
axes and the plan), :mod:`~hermes_fast.sweep.points` (computing points), :mod:`~hermes_fast.sweep.executors`
(serial, threads, dask), :mod:`~hermes_fast.sweep.store` (memory and zarr sinks, ``open_sweep``),
:mod:`~hermes_fast.sweep.lock` (one writer per store), :mod:`~hermes_fast.sweep.dataset` (the Dataset).
"""

from ..config.grid import Axis, apply_settings, parse_path
from .api import sweep, sweep_file
from .lock import StoreWarning
from .store import open_sweep

__all__ = ["sweep", "sweep_file", "open_sweep", "Axis", "parse_path", "apply_settings", "StoreWarning"]
