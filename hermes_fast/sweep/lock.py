"""One writer per store: a lock file beside the store (``results.zarr.lock``) holding the writer's pid, host and
start time, locked with ``flock`` for as long as the sweep runs.

A second writer gets a :class:`~hermes_fast.config.ConfigError` naming the store and the holder. The kernel
releases the lock when its process dies, so a lock file left by a process that is gone (killed, crashed) is
taken over with a :class:`StoreWarning`; one left on another host is refused (its process cannot be checked from
here) with the file to delete once that process is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

from ..config.base import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation only
    fcntl = None

__all__ = ["StoreLock", "StoreWarning", "lock_path"]


class StoreWarning(UserWarning):
    """Something about a sweep store the user should know: chunks found missing or corrupt (and recomputed or
    marked not computed), a stale lock taken over."""


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def _read(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        holder = json.loads(text) if text.strip() else None
    except ValueError:
        return {"pid": "?", "host": "?", "unreadable": True}
    return holder if isinstance(holder, dict) else None


class StoreLock:
    """The lock of the sweep store at ``store`` (a context manager; :meth:`release` is idempotent)."""

    def __init__(self, store: str | Path):
        self.store = Path(store)
        self.path = lock_path(self.store)
        self.fd: int | None = None

    def _refuse(self, holder: dict | None, why: str) -> ConfigError:
        who = _describe(holder) if holder else "another process"
        return ConfigError(
            "out", str(self.store), f"a store no other sweep is writing: {who} holds its lock ({self.path}); {why}"
        )

    def acquire(self) -> StoreLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv[:8]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError("out", str(self.store), f"a path in a writable directory ({e.strerror or e})") from None
        if fcntl is None:  # pragma: no cover
            return self._acquire_exclusive(me)
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ConfigError(
                    "out", str(self.store), f"a path in a writable directory (lock {self.path}: {e.strerror or e})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refuse(_read(self.path), "wait for it to finish or stop it") from None
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read(self.path)
            if old and old.get("host") not in (me["host"], "?"):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise self._refuse(
                    old, "its process cannot be checked from this host: delete the lock file once it is gone"
                )
            if old:
                warnings.warn(
                    f"{self.store}: took over the lock left by {_describe(old)}, which is gone", StoreWarning, 3
                )
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
            os.fsync(fd)
            self.fd = fd
            return self
        raise self._refuse(None, "it kept changing hands; try again")  # pragma: no cover

    def _acquire_exclusive(self, me: dict) -> StoreLock:  # pragma: no cover - platforms without flock
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise self._refuse(_read(self.path), "wait for it, or delete the lock file if it is gone") from None
        os.write(fd, json.dumps(me).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiting writer then sees a fresh file
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
