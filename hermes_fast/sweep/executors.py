"""Running a function over chunks of grid points: serially, in threads, or on a dask cluster (a local one of
worker processes, or a scheduler given), results handed back in the calling thread; the progress bar (a
terminal, or Jupyter); and a clear error for a script whose unguarded sweep each spawned worker runs again."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..config.base import ConfigError
from .plan import SweepPlan

__all__ = ["Runner", "progress_bar", "check_not_spawned_import", "in_notebook"]

_GUARD = (
    'in a script, call hf.sweep under `if __name__ == "__main__":` (each dask worker process imports the script '
    "again), or pass processes=False (threads)"
)


def _spawned_import() -> bool:
    """Whether this runs at the top level of a script that a spawned worker process imports (as ``__mp_main__``)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            return True
        frame = frame.f_back
    return False


def check_not_spawned_import() -> None:
    """ConfigError when a sweep starts while a worker process imports a script that runs it unguarded."""
    if _spawned_import():
        raise ConfigError("hf.sweep", "called while a worker process imports the script", _GUARD)


def _dask_client(workers: int | None, scheduler: Any, processes: bool, timeout_s: float):
    """(client, whether we own it): a LocalCluster of ``workers`` processes, or the scheduler given."""
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, False
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=f"{timeout_s}s", set_as_default=False), True
        except Exception as e:  # noqa: BLE001 - unreachable, refused, malformed: one config error
            raise ConfigError(
                "scheduler", scheduler, f"a reachable dask scheduler address, e.g. tcp://HOST:8786 ({type(e).__name__})"
            ) from None
    try:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0", silence_logs=40
        )
    except Exception as e:  # noqa: BLE001 - most often a script's unguarded sweep, run again by each worker
        raise ConfigError(
            "workers", workers, f"worker processes that start ({type(e).__name__}: {e}); {_GUARD}"
        ) from None
    return Client(cluster, set_as_default=False), True


class Runner:
    """Runs ``fn(plan, start, stop)`` over chunks: serially, in threads, or on a dask cluster (created once for
    the validation and the simulation passes); results are handed to ``take`` in the calling thread."""

    def __init__(self, workers: int | None, scheduler: Any, processes: bool, timeout_s: float):
        self.workers, self.scheduler, self.processes, self.timeout_s = workers, scheduler, processes, timeout_s
        self.mode = "dask" if scheduler is not None or (workers and workers > 1 and processes) else "local"
        self.client = None
        self.owned = False

    def __enter__(self) -> Runner:
        if self.mode == "dask":
            self.client, self.owned = _dask_client(self.workers, self.scheduler, self.processes, self.timeout_s)
        return self

    def __exit__(self, *exc) -> None:
        if self.owned:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()

    @property
    def parallelism(self) -> int:
        if self.client is not None:
            return max(1, sum(self.client.nthreads().values()))
        return self.workers or 1

    def map(self, fn: Callable, plan: SweepPlan, chunks: list[tuple[int, int]], take: Callable) -> None:
        if self.client is not None:
            self._map_dask(fn, plan, chunks, take)
        elif (self.workers or 1) <= 1:
            for start, stop in chunks:
                take(start, stop, fn(plan, start, stop))
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                pending = {pool.submit(fn, plan, s, e): (s, e) for s, e in chunks}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            s, e = pending.pop(fut)
                            take(s, e, fut.result())
                finally:
                    for fut in pending:
                        fut.cancel()

    def _map_dask(self, fn: Callable, plan: SweepPlan, chunks: list[tuple[int, int]], take: Callable) -> None:
        from distributed import as_completed

        client = self.client
        shared = client.scatter(plan, broadcast=True, hash=False)
        futures = {client.submit(fn, shared, s, e, pure=False): (s, e) for s, e in chunks}
        try:
            for fut in as_completed(list(futures), loop=client.loop):
                s, e = futures[fut]
                take(s, e, fut.result())
        finally:
            client.cancel(list(futures))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (notebook, lab, VS Code, Colab), whose stderr is no terminal."""
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and type(shell).__name__ not in ("TerminalInteractiveShell",)


def progress_bar(show: bool | None, total: int, initial: int, desc: str):
    """A tqdm bar (None: when stderr is a terminal or in a notebook): as ``tqdm.auto`` picks, a widget in Jupyter
    where ipywidgets is installed, else text on stderr (which notebooks show too)."""
    notebook = in_notebook()
    if show is None:
        show = sys.stderr.isatty() or notebook
    if not show:
        return _NoBar()
    if notebook:
        try:
            import ipywidgets  # noqa: F401 - tqdm.notebook's widgets
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(total=total, initial=initial, desc=desc, unit="point")
        except ImportError:  # tqdm.auto's fallback, without its warning
            pass
    from tqdm.std import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="point", file=sys.stderr, dynamic_ncols=True)
