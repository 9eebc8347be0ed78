"""What ``load`` keeps between calls in one process: open stores and the frames of fresh data.

A ``LoadCache`` belongs to a ``Catalog`` (``hubkit.load`` uses one for the whole process):

- **open stores**, one per SQLite file (at most ``stores``, the least recently used closed
  first): a repeated ``load`` does not pay for opening the file, and the file is not
  checkpointed by a last close after every call. A file replaced on disk since (another inode)
  is opened afresh. Stores close when the cache does, and at exit in any case.
- **frames of fresh datasets** (at most ``frames``): what ``load`` returned for one dataset,
  parameter set and file, with the moment the dataset stops being fresh and a *file token*, the
  size, modification time and inode of the store file and of its write-ahead log, taken before
  the rows were read. A later ``load`` of the same key gets a copy of that frame without
  touching any database while the dataset is fresh and the token is unchanged: every commit to
  a SQLite file in WAL mode writes its ``-wal`` file (a checkpoint writes the file itself), so
  a write by any connection or process since the read makes the next ``load`` read again.

Thread-safe: ``load`` asks on the caller's thread, the store work runs in worker threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from hubkit.store import Store

__all__ = ["FileToken", "LoadCache", "file_token"]

FileToken = tuple[tuple[int, int, int] | None, ...]
"""(size, mtime in ns, inode) of the store file and of its ``-wal`` file; None where absent."""


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def file_token(path: str) -> FileToken:
    """The token of the SQLite file ``path`` now (see the module docstring)."""
    return (_stat(path), _stat(path + "-wal"))


def _inode(path: str) -> int | None:
    info = _stat(path)
    return None if info is None else info[2]


@dataclass(frozen=True)
class _Frame:
    frame: pl.DataFrame
    fresh_until: datetime
    token: FileToken


@dataclass(frozen=True)
class _Open:
    store: Store
    inode: int | None


class LoadCache:
    """Open stores and fresh frames for ``load`` (see the module docstring).

    ``LoadCache(frames=16, stores=4)``; ``close()`` closes the stores and forgets the frames.
    """

    def __init__(self, *, frames: int = 16, stores: int = 4) -> None:
        self._max_frames = max(1, frames)
        self._max_stores = max(1, stores)
        self._frames: OrderedDict[tuple[str, ...], _Frame] = OrderedDict()
        self._stores: OrderedDict[str, _Open] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<LoadCache frames={len(self._frames)} stores={len(self._stores)}>"

    # -- frames ------------------------------------------------------------------------------

    def frame(self, key: tuple[str, ...], path: str, now: datetime) -> pl.DataFrame | None:
        """A copy of the frame kept for ``key``, or None when absent, stale or changed."""
        with self._lock:
            entry = self._frames.get(key)
            if entry is None:
                return None
            if now >= entry.fresh_until or file_token(path) != entry.token:
                del self._frames[key]
                return None
            self._frames.move_to_end(key)
        return entry.frame.clone()

    def keep(
        self, key: tuple[str, ...], frame: pl.DataFrame, fresh_until: datetime, token: FileToken
    ) -> None:
        """Keep ``frame`` for ``key`` until ``fresh_until`` or until the file token changes."""
        with self._lock:
            self._frames[key] = _Frame(frame, fresh_until, token)
            self._frames.move_to_end(key)
            while len(self._frames) > self._max_frames:
                self._frames.popitem(last=False)

    @property
    def frames(self) -> int:
        """How many frames are kept."""
        return len(self._frames)

    # -- stores ------------------------------------------------------------------------------

    def store(self, path: str) -> Store:
        """The open store of the SQLite file ``path`` (opened now if needed). Blocking."""
        from hubkit.store import Store

        stale: list[Store] = []
        try:
            with self._lock:
                kept = self._stores.get(path)
                if kept is not None and kept.inode == _inode(path) and kept.inode is not None:
                    self._stores.move_to_end(path)
                    return kept.store
                if kept is not None:  # the file was replaced or removed: not this store's file
                    stale.append(self._stores.pop(path).store)
                store = Store(path)
                self._stores[path] = _Open(store, _inode(path))
                while len(self._stores) > self._max_stores:
                    stale.append(self._stores.popitem(last=False)[1].store)
                return store
        finally:
            for old in stale:
                old.close()

    @property
    def stores(self) -> int:
        """How many stores are kept open."""
        return len(self._stores)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the kept stores and forget every frame. The cache may be used again."""
        with self._lock:
            stores = [kept.store for kept in self._stores.values()]
            self._stores.clear()
            self._frames.clear()
        for store in stores:
            store.close()

    def forget(self) -> None:
        """Drop everything without closing (in a forked child: the connections are the
        parent's)."""
        with self._lock:
            self._stores.clear()
            self._frames.clear()
