"""Directory listings of the local adapter (local.py): each directory read once per page of a
listing, sorted in S3 order (`name/` for a folder, `name` for a file: the UTF-8 byte order of the
keys below), without the names Hoard reserves or symlinks that lead out of the root."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from .local_fs import DIR_OBJECT, HIDDEN_PREFIX


@dataclass(frozen=True, slots=True)
class Entry:
    sort_key: str  # `name/` for a directory, `name` for a file: S3 order of the keys below
    name: str
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Listing:
    ident: tuple[int, int]  # (st_dev, st_ino): detects symlink cycles
    entries: list[Entry]  # sorted by sort_key (code point order is UTF-8 byte order)
    has_marker: bool


class _ListingCache:
    """Sorted listings of big directories, so paging through one costs one sort, not one per page.

    Entries are keyed by (path, inode, mtime_ns) and dropped on our own changes to a directory.
    """

    min_entries = 1024
    capacity = 16

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[int, int, Listing]] = OrderedDict()

    def get(self, path: str, st: os.stat_result) -> Listing | None:
        with self._lock:
            item = self._items.get(path)
            if item is None or item[:2] != (st.st_ino, st.st_mtime_ns):
                return None
            self._items.move_to_end(path)
            return item[2]

    def put(self, path: str, st: os.stat_result, listing: Listing) -> None:
        if len(listing.entries) < self.min_entries:
            return
        with self._lock:
            self._items[path] = (st.st_ino, st.st_mtime_ns, listing)
            self._items.move_to_end(path)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def discard(self, path: str) -> None:
        with self._lock:
            self._items.pop(path, None)


class Directories:
    """The directories below one root as the adapter lists them: sorted in S3 order, hidden names
    and symlinks leading out of the root left out, big ones cached (see _ListingCache)."""

    def __init__(self, real_root: str) -> None:
        self._real_root = real_root
        self._cache = _ListingCache()

    def inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root + os.sep)

    def scan(self, path: str) -> Listing:
        st = os.stat(path)
        cached = self._cache.get(path, st)
        if cached is not None:
            return cached
        entries: list[Entry] = []
        has_marker = False
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                try:
                    if name.startswith(HIDDEN_PREFIX):
                        has_marker = has_marker or (name == DIR_OBJECT and entry.is_file())
                        continue
                    name.encode("utf-8")
                    if entry.is_symlink() and not self.inside(os.path.realpath(entry.path)):
                        continue
                    if entry.is_dir():
                        entries.append(Entry(name + "/", name, True))
                    elif entry.is_file():
                        entries.append(Entry(name, name, False))
                except (OSError, UnicodeEncodeError):
                    continue  # vanished, unreadable, or a name no S3 key can spell
        entries.sort(key=lambda e: e.sort_key)
        listing = Listing((st.st_dev, st.st_ino), entries, has_marker)
        self._cache.put(path, st, listing)
        return listing

    def holds_objects(self, path: str, seen: frozenset[tuple[int, int]] = frozenset()) -> bool:
        """Whether any object lies below the directory (depth first, stops at the first one)."""
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                return False
            seen = seen | {(st.st_dev, st.st_ino)}
            subdirs = []
            with os.scandir(path) as it:
                for entry in it:
                    if entry.name.startswith(HIDDEN_PREFIX):
                        if entry.name == DIR_OBJECT and entry.is_file():
                            return True
                        continue
                    if entry.is_symlink() and not self.inside(os.path.realpath(entry.path)):
                        continue
                    if entry.is_file():
                        return True
                    if entry.is_dir():
                        subdirs.append(entry.path)
        except OSError:
            return False
        return any(self.holds_objects(sub, seen) for sub in subdirs)

    def discard(self, path: str) -> None:
        """Forget the cached listing of `path` (the adapter changed it)."""
        self._cache.discard(path)
