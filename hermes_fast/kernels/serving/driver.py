"""Running the compiled loop from Python: compile it with a notice, and pause it to report progress.

A run of many requests pauses between events every ``every`` arrivals (``G_STOP_ARRIVAL``) and calls
``progress`` with the arrivals served so far; calling the loop again resumes exactly where it paused, so
results do not depend on the slicing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._jit import compile_with_notice
from .loop import compiled_serve, serve
from .state import (
    G_BRANCH_SLOTS,
    G_CHILD0,
    G_NRES,
    G_PIPELINE,
    G_STOP_ARRIVAL,
    PL_KIND,
    PL_LINK_RES,
    PL_MEM_RES,
    PL_PREFIX,
    POOL_SEARCH,
    State,
)

__all__ = ["run_loop", "needs_pipeline_code", "needs_prefix_cache_code"]


def run_loop(state: State, jit: bool = True, progress: Callable[[int], None] | None = None, every: int = 0) -> None:
    """Serve every arrival of ``state`` (:func:`~.allocation.new_state`) with the compiled loop (``jit=False``:
    the plain-Python one): the one without pipeline code unless the state needs it (stage tables, search pools,
    shared links, parallel branches). With ``progress``, call it with the arrivals reached after each slice of
    ``every`` arrivals (default: a hundredth of them, at least 10,000), and with all of them at the end."""
    if not jit:
        with np.errstate(over="ignore"):  # (block keys' arithmetic wraps, as it does compiled)
            serve(state)
        return
    pipelines = needs_pipeline_code(state)
    cached = needs_prefix_cache_code(state)
    loop = compiled_serve(pipelines, cached)
    what = " and ".join(w for w, on in (("pipelines", pipelines), ("prefix caches", cached)) if on)
    compile_with_notice(loop, (state,), "the serving loop" + (f" with {what}" if what else ""))
    if progress is None:
        loop(state)
        return
    no_pause = int(state.glob[G_STOP_ARRIVAL])  # (new_state: past the last request slot)
    arrivals = int(state.glob[G_CHILD0])  # (the branch slots follow the arrivals)
    step = every if every > 0 else max(arrivals // 100, 10_000)
    for stop in range(step, arrivals, step):
        state.glob[G_STOP_ARRIVAL] = stop
        if loop(state) == 0:  # (the horizon ended the run first)
            break
        progress(stop)
    else:
        state.glob[G_STOP_ARRIVAL] = no_pause
        loop(state)
    state.glob[G_STOP_ARRIVAL] = no_pause
    progress(arrivals)


def needs_prefix_cache_code(state: State) -> bool:
    """Whether a pool of ``state`` keeps a prefix cache (see ``state.PREFIX_CACHE``)."""
    return bool((state.pool_int[PL_PREFIX] != 0).any())


def needs_pipeline_code(state: State) -> bool:
    """Whether ``state`` reaches code the plain-serving loop leaves out (see ``state.PIPELINES``)."""
    pools = state.pool_int
    return bool(
        state.glob[G_PIPELINE]
        or state.glob[G_BRANCH_SLOTS]
        or state.glob[G_NRES]
        or (pools[PL_KIND] == POOL_SEARCH).any()
        or (pools[PL_LINK_RES] >= 0).any()
        or (pools[PL_MEM_RES] >= 0).any()
    )
