"""Where a sweep's results go: memory, or a resumable zarr store that never lies about what it holds.

A store is a zarr group: one array per variable over a flat ``point`` axis chunked like the tasks, a per-point
``_done`` flag and a per-chunk ``_digest`` (a 64-bit BLAKE2b digest of the chunk's values as stored), both
written after the chunk's data. A chunk counts as done only when its flags are set, its files decode and its
values still give the recorded digest; anything else (a chunk file deleted, truncated or altered, an array's
metadata gone) is reported with a :class:`~hermes_fast.sweep.lock.StoreWarning`: a rerun of the same sweep
recomputes it, :func:`open_sweep` marks it not computed (its values NaN). One process writes a store at a time
(:class:`~hermes_fast.sweep.lock.StoreLock`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ..config.base import ConfigError
from ..config.files import check_path_length
from .dataset import sweep_dataset
from .lock import StoreLock, StoreWarning

__all__ = ["STORE_FORMAT", "MemorySink", "ZarrSink", "StoreWarning", "check_out_path", "open_sweep"]

STORE_FORMAT = 2  # 2: per-chunk digests (_digest), var_specs; 1: _done flags only
_DONE, _DIGEST = "_done", "_digest"
_SHOWN = 5  # bad chunks listed in a warning


def _fill(dtype: np.dtype):
    if np.issubdtype(dtype, np.floating):
        return np.nan
    return False if dtype == np.bool_ else 0


def _is_fill(values: np.ndarray) -> bool:
    if np.issubdtype(values.dtype, np.floating):
        return bool(np.isnan(values).all())
    return not values.any()


def chunk_digest(values: dict[str, np.ndarray]) -> int:
    """Digest of one chunk's values (variable -> the chunk's rows, as stored): name, dtype, shape and bytes of
    every variable that holds anything but its fill value (NaN payloads made canonical), in name order; never 0
    (0 marks no record). A variable left at its fill value is what zarr does not store, so it is left out."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(values):
        v = np.ascontiguousarray(values[name])
        if _is_fill(v):
            continue
        if np.issubdtype(v.dtype, np.floating):
            v = np.where(np.isnan(v), np.nan, v)
        v = v.astype(v.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return int.from_bytes(h.digest(), "little") or 1


def check_out_path(out: str | Path, what: str = "out") -> Path:
    """The store path ``out`` if a sweep can write there: an existing directory, or a new path whose nearest
    existing parent is a writable directory (ConfigError naming ``what`` otherwise, before any work)."""
    check_path_length(out, what)
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(what, str(out), "a directory for the zarr store (this is a file)")
    probe = p if p.exists() else next((a for a in p.absolute().parents if a.exists()), None)
    if probe is None or not probe.is_dir():
        raise ConfigError(what, str(out), f"a path below an existing directory ({probe} is a file)")
    try:  # os.access says yes to root on a read-only file system: try it
        fd, name = tempfile.mkstemp(dir=probe, prefix=".hermes_fast_probe")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ConfigError(what, str(out), f"a writable place ({probe}: {e.strerror or e})") from None
    return p


class MemorySink:
    def __init__(self, meta: dict):
        self.meta = meta
        self.n = meta["n_points"]
        self.arrays: dict[str, np.ndarray] = {}
        self.var_dims: dict[str, list[str]] = {}

    def done(self) -> np.ndarray:
        return np.zeros(self.n, dtype=bool)

    def write(self, start: int, stop: int, block: dict[str, np.ndarray], var_dims: dict) -> None:
        for name, values in block.items():
            if name not in self.arrays:
                self.arrays[name] = np.full((self.n, *values.shape[1:]), _fill(values.dtype), dtype=values.dtype)
                self.var_dims[name] = var_dims[name]
            self.arrays[name][start:stop] = values

    def read(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray]:
        return self.arrays, self.var_dims, np.ones(self.n, dtype=bool)

    def close(self) -> None:
        pass


def _our_meta(path: Path) -> dict | None:
    """The sweep attrs of the store at ``path`` (None when it is not one, or its group metadata is unreadable)."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs["hermes_fast_sweep"])
    except Exception:  # noqa: BLE001 - anything unreadable is not (or no longer) one of our stores
        return None


def _looks_like_ours(path: Path) -> bool:
    """A directory that is empty or has a sweep store's marks (``_done``), even with its metadata damaged."""
    return not any(path.iterdir()) or _our_meta(path) is not None or (path / _DONE).is_dir()


class _Reader:
    """Reading a store's arrays back, checking every chunk marked done against its digest."""

    path: Path
    meta: dict
    n: int
    chunk: int

    def _open(self, name: str):
        if name not in self.handles:
            self.handles[name] = self.group[name]
        return self.handles[name]

    def _read_all(self, name: str, n_chunks: int) -> tuple[np.ndarray | None, dict[int, str]]:
        """An array's values (None when its metadata is gone) and the chunks that would not decode."""
        try:
            arr = self._open(name)
        except Exception as e:  # noqa: BLE001
            return None, {k: f"{name}: array unreadable ({type(e).__name__})" for k in range(n_chunks)}
        try:
            return arr[:], {}
        except Exception:  # noqa: BLE001 - one bad chunk: read the others one by one
            values = np.full(arr.shape, _fill(arr.dtype), dtype=arr.dtype)
            bad: dict[int, str] = {}
            for k in range(n_chunks):
                where = slice(k * self.chunk, min((k + 1) * self.chunk, self.n))
                try:
                    values[where] = arr[where]
                except Exception as e:  # noqa: BLE001
                    bad[k] = f"{name}: chunk file unreadable ({type(e).__name__}: {str(e)[:60]})"
            return values, bad

    def check(self) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
        """(values, done per point, bad chunk -> why): done chunks whose values are not what was written."""
        n_chunks = -(-self.n // self.chunk)
        flags, bad_flags = self._read_all(_DONE, n_chunks)
        if flags is None:  # the flags' metadata is gone: nothing can be trusted as done
            flags = np.zeros(self.n, dtype=bool)
            bad_flags = {}
            if self.meta["variables"]:
                bad_flags = {k: "done flags unreadable (their array's metadata is gone)" for k in range(n_chunks)}
        else:  # a flag that does not decode: not done, and said so
            bad_flags = {k: f"done flag unreadable ({why.split(': ', 1)[-1]})" for k, why in bad_flags.items()}
        flags = flags.copy()
        for k in bad_flags:
            flags[k * self.chunk : (k + 1) * self.chunk] = False
        digests, _ = self._read_all(_DIGEST, n_chunks) if self.meta.get("format", 1) >= 2 else (None, {})
        values: dict[str, np.ndarray] = {}
        bad: dict[int, str] = {}
        for name in self.meta["variables"]:
            got, unreadable = self._read_all(name, n_chunks)
            if got is None:
                spec = self.meta.get("var_specs", {}).get(name)
                shape = (self.n, *spec["shape"]) if spec else (self.n,)
                dtype = np.dtype(spec["dtype"]) if spec else np.float64
                got = np.full(shape, _fill(dtype), dtype=dtype)
            values[name] = got
            for k, why in unreadable.items():
                bad.setdefault(k, why)
        if self.meta.get("format", 1) < 2:  # no digests to check against
            return values, flags, bad_flags
        for k in range(n_chunks):
            s, e = k * self.chunk, min((k + 1) * self.chunk, self.n)
            if not flags[s:e].all():
                continue
            if k in bad:
                continue
            record = 0 if digests is None else int(digests[k])
            if record == 0:
                bad[k] = "no integrity record (its digest is missing)"
            elif chunk_digest({name: v[s:e] for name, v in values.items()}) != record:
                bad[k] = "values differ from what was written (a chunk file missing or altered)"
        bad = {k: why for k, why in bad.items() if flags[k * self.chunk : (k + 1) * self.chunk].all()}
        for k in bad:
            flags[k * self.chunk : (k + 1) * self.chunk] = False
        return values, flags, dict(sorted({**bad_flags, **bad}.items()))

    def describe(self, bad: dict[int, str], action: str) -> str:
        parts = []
        for k in sorted(bad)[:_SHOWN]:
            s, e = k * self.chunk, min((k + 1) * self.chunk, self.n) - 1
            parts.append(f"point{'s' if e > s else ''} {s}{f'-{e}' if e > s else ''}: {bad[k]}")
        more = f"; and {len(bad) - _SHOWN} more chunk(s)" if len(bad) > _SHOWN else ""
        n = sum(min((k + 1) * self.chunk, self.n) - k * self.chunk for k in bad)
        return (
            f"{self.path}: {len(bad)} chunk(s), {n} point(s), missing or corrupt ({'; '.join(parts)}{more}); {action}"
        )


class ZarrSink(_Reader):
    """A zarr group: one array per variable over (point, replicate, ...), chunked like the tasks, then
    ``_digest`` (chunk) and ``_done`` (point) once a chunk's variables are written. Only the calling process
    writes, holding the store's lock (``lock``, or its own from construction to :meth:`close`).

    With ``meta`` of a complete plan (``chunk_points``, ``layout``) a missing store is created; with
    ``resume_only``, a missing store leaves :attr:`resumed` False (the caller plans it and comes back)."""

    def __init__(
        self, path: str | Path, meta: dict, overwrite: bool, resume_only: bool = False, lock: StoreLock | None = None
    ):
        import zarr

        self.path = Path(path)
        self.handles: dict = {}
        self.owns_lock = lock is None
        self.lock = StoreLock(self.path).acquire() if lock is None else lock
        try:
            self.resumed = False
            exists = self.path.exists() and any(self.path.iterdir())
            if exists and not (self.path.is_dir() and _looks_like_ours(self.path)):
                raise ConfigError("out", str(path), "a new path or a hermes_fast sweep store (this is neither)")
            if exists and not overwrite:
                old = _our_meta(self.path)
                if old is None:
                    raise ConfigError(
                        "out", str(path), "a readable sweep store (its metadata is damaged; overwrite=True / "
                        "--overwrite starts it afresh)"
                    )  # fmt: skip
                if old.get("format") != STORE_FORMAT:
                    raise ConfigError(
                        "out",
                        str(path),
                        f"a store of this version of hermes_fast (it has format {old.get('format')}, this version "
                        f"writes {STORE_FORMAT}; open_sweep reads it, overwrite=True / --overwrite replaces it)",
                    )
                if old.get("build") != meta["build"]:
                    raise ConfigError(
                        "out",
                        str(path),
                        f"a store this build of hermes_fast wrote, to resume (build {old.get('build', 'unrecorded')}"
                        f" wrote it, this is build {meta['build']}: a fix or a refit between them may change what "
                        "its points mean, and a resume would mix the two; open_sweep reads it, a new path or "
                        "overwrite=True / --overwrite reruns it whole)",
                    )
                if old.get("fingerprint") != meta["fingerprint"]:
                    raise ConfigError(
                        "out",
                        str(path),
                        "a new path, or the store of this same sweep to resume (its scenario, grid, n_requests, "
                        "replicates, seed or capacity targets differ; pass overwrite=True / --overwrite to replace "
                        "it)",
                    )
                self.group = zarr.open_group(str(self.path), mode="a")
                self.meta = old
                self.n, self.chunk = self.meta["n_points"], self.meta["chunk_points"]
                self.resumed = True
                self._repair()
                return
            if resume_only:
                return
            if exists:
                shutil.rmtree(self.path)
            try:
                self.group = zarr.open_group(str(self.path), mode="w")
            except OSError as e:
                raise ConfigError("out", str(path), f"a writable place for the store ({e.strerror or e})") from None
            self.meta = dict(meta, variables=[], var_dims={}, var_specs={})
            self.group.attrs["hermes_fast_sweep"] = self.meta
            self.n, self.chunk = meta["n_points"], meta["chunk_points"]
            self._create(_DONE, (), "bool")
            self._create(_DIGEST, (), "uint64", per_chunk=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.owns_lock:
            self.lock.release()

    def _create(self, name: str, inner: tuple, dtype, per_chunk: bool = False):
        dtype = np.dtype(dtype)
        shape = (-(-self.n // self.chunk),) if per_chunk else (self.n, *inner)
        chunks = (1,) if per_chunk else (self.chunk, *inner)
        if (self.path / name).exists():
            shutil.rmtree(self.path / name)
        self.handles[name] = self.group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, fill_value=_fill(dtype), overwrite=True
        )
        return self.handles[name]

    def _repair(self) -> None:
        """Check every chunk marked done; clear the marks of those missing or corrupt (so the store stays honest
        if this run stops too) and recreate arrays whose metadata is gone."""
        values, done, bad = self.check()
        self._done_flags = done
        self._checked = None if bad else (values, done)  # what read() returns if nothing is written
        if bad:
            warnings.warn(self.describe(bad, "recomputing them"), StoreWarning, stacklevel=4)
        for name, inner, dtype, per_chunk in [(_DONE, (), "bool", False), (_DIGEST, (), "uint64", True)] + [
            (v, tuple(s["shape"]), s["dtype"], False) for v, s in self.meta["var_specs"].items()
        ]:
            try:
                self.handles.pop(name, None)
                self._open(name)
            except Exception:  # noqa: BLE001 - its metadata is gone: start the array afresh
                self._create(name, inner, dtype, per_chunk)
        for k in sorted(bad):
            s, e = k * self.chunk, min((k + 1) * self.chunk, self.n)
            self._open(_DIGEST)[k] = 0
            self._open(_DONE)[s:e] = False

    def done(self) -> np.ndarray:
        return self._done_flags if self.resumed else np.zeros(self.n, dtype=bool)

    def write(self, start: int, stop: int, block: dict[str, np.ndarray], var_dims: dict) -> None:
        self._checked = None
        new = False
        for name, values in block.items():
            if name not in self.meta["variables"]:
                if name not in self.group:
                    self._create(name, values.shape[1:], values.dtype)
                self.meta["variables"].append(name)
                self.meta["var_dims"][name] = var_dims[name]
                self.meta["var_specs"][name] = {"dtype": values.dtype.str, "shape": list(values.shape[1:])}
                new = True
        stored = {
            name: np.asarray(v, dtype=np.dtype(self.meta["var_specs"][name]["dtype"])) for name, v in block.items()
        }
        self._write_all(slice(start, stop), stored)
        if new:
            self.group.attrs["hermes_fast_sweep"] = self.meta
        self._open(_DIGEST)[start // self.chunk] = chunk_digest(stored)  # only after the chunk's data
        self._open(_DONE)[start:stop] = True

    def _write_all(self, where: slice, block: dict[str, np.ndarray]) -> None:
        """All of a chunk's variables at once on zarr's event loop (2-3x faster than one after another)."""
        try:
            import asyncio

            from zarr.core.sync import sync

            targets = [(self._open(k)._async_array, v) for k, v in block.items()]  # opened outside the loop

            async def write() -> None:
                await asyncio.gather(*(a.setitem(where, v) for a, v in targets))

            sync(write())
        except (ImportError, AttributeError):  # a zarr without these internals: one by one
            for name, values in block.items():
                self._open(name)[where] = values

    def read(self) -> tuple[dict[str, np.ndarray], dict[str, list[str]], np.ndarray]:
        if getattr(self, "_checked", None) is not None:  # resumed, nothing to do: as checked on opening
            values, done = self._checked
            return _masked(values, done, self.chunk), self.meta["var_dims"], done
        values, done, bad = self.check()
        if bad:  # written by this run and already unreadable: say so rather than return it
            warnings.warn(self.describe(bad, "marked not computed"), StoreWarning, stacklevel=3)
        return _masked(values, done, self.chunk), self.meta["var_dims"], done


def _masked(values: dict[str, np.ndarray], done: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """Values with the points not done at their fill value (NaN): nothing unverified is shown as a result."""
    if done.all():
        return values
    out = {}
    for name, v in values.items():
        v = v.copy()
        v[~done] = _fill(v.dtype)
        out[name] = v
    return out


def open_sweep(path: str | Path) -> xr.Dataset:
    """The Dataset of a sweep's zarr store, complete or not, every chunk checked against its digest.

    Parameters
    ----------
    path : str or pathlib.Path
        The zarr directory a sweep wrote (``hf.sweep(..., out=path)``, ``hermes-fast sweep --out``).

    Returns
    -------
    xarray.Dataset
        As :func:`hermes_fast.sweep` returns it; a partial store (interrupted, still being written, or with
        chunks found missing or corrupt) has a boolean ``computed`` mask over the grid dims, its other points
        NaN, and no data variables before its first chunk is stored.

    Warns
    -----
    StoreWarning
        When chunks marked done are missing or corrupt (a chunk file deleted, truncated or altered): they are
        marked not computed; rerunning the sweep with the same arguments recomputes them.

    Raises
    ------
    ConfigError
        When ``path`` is not a hermes_fast sweep store.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = pathlib.Path(tmp) / "results.zarr"
    ...     _ = hf.sweep(grid={"workload.rate_per_s": [2, 4]}, n_requests=100, seed=1, out=out)
    ...     ds = hf.open_sweep(out)
    ...     print(ds.ttft_s.dims, int(ds.completed_requests.sum()))
    ('workload.rate_per_s', 'replicate', 'quantile') 200
    """
    import zarr

    check_path_length(path, "path")
    p = Path(path)
    meta = _our_meta(p) if p.is_dir() else None
    if meta is None:
        raise ConfigError("path", str(path), "a hermes_fast sweep store (a zarr directory written by sweep)")
    reader = _Reader()
    reader.group, reader.meta, reader.path = zarr.open_group(str(p), mode="r"), meta, p
    reader.n, reader.chunk, reader.handles = meta["n_points"], meta["chunk_points"], {}
    values, done, bad = reader.check()
    if bad:
        warnings.warn(
            reader.describe(bad, "marked not computed; rerun the sweep with the same arguments to recompute them"),
            StoreWarning,
            stacklevel=2,
        )
    return sweep_dataset(
        dict(meta, order=meta["variables"]), _masked(values, done, reader.chunk), meta["var_dims"], done
    )
