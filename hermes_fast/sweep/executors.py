"""Running a function over chunks of grid points: serially, in threads, or on a dask cluster (a local one of
worker processes, or a scheduler given), results handed back in the calling thread; and the progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from ..config.base import ConfigError
from .plan import SweepPlan

__all__ = ["Runner", "progress_bar"]


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
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0", silence_logs=40
    )
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


def progress_bar(show: bool | None, total: int, initial: int, desc: str):
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="point", file=sys.stderr, dynamic_ncols=True)
