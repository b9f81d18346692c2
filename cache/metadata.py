"""Stat and list results of the UFS, kept in memory with the time the UFS gave them.

Bounded: each table is an LRU with a maximum number of entries. Negative stat results (NotFound)
are entries too, so a storm of GETs for a missing key costs one UFS call per TTL. The cache does
not decide freshness: callers compare `checked_at` with the age their rule allows (policy.py), so
`immutable`, `maxAge` and per-request revalidation share one table.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ufs_adapters.base import ListPage, ObjectInfo

ListKey = tuple[str, str, str | None, str | None, int]  # mount, prefix, delimiter, start_after, limit


@dataclass(frozen=True, slots=True)
class StatEntry:
    info: ObjectInfo | None  # None: the UFS said NotFound
    checked_at: float

    def fresh(self, now: float, max_age: float | None) -> bool:
        return max_age is not None and now - self.checked_at < max_age


@dataclass(frozen=True, slots=True)
class ListEntry:
    page: ListPage
    checked_at: float


class MetadataCache:
    def __init__(self, *, max_entries: int = 100_000, max_list_pages: int = 1_000) -> None:
        self.max_entries = max_entries
        self.max_list_pages = max_list_pages
        self._stats: OrderedDict[tuple[str, str], StatEntry] = OrderedDict()
        self._lists: OrderedDict[ListKey, ListEntry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._stats) + len(self._lists)

    def get_stat(self, mount: str, path: str) -> StatEntry | None:
        key = (mount, path)
        entry = self._stats.get(key)
        if entry is not None:
            self._stats.move_to_end(key)
        return entry

    def put_stat(self, mount: str, path: str, info: ObjectInfo | None, checked_at: float) -> None:
        key = (mount, path)
        self._stats[key] = StatEntry(info, checked_at)
        self._stats.move_to_end(key)
        while len(self._stats) > self.max_entries:
            self._stats.popitem(last=False)

    def get_list(self, key: ListKey, now: float, max_age: float) -> ListPage | None:
        entry = self._lists.get(key)
        if entry is None or now - entry.checked_at >= max_age:
            self.misses += 1
            return None
        self._lists.move_to_end(key)
        self.hits += 1
        return entry.page

    def put_list(self, key: ListKey, page: ListPage, checked_at: float) -> None:
        self._lists[key] = ListEntry(page, checked_at)
        self._lists.move_to_end(key)
        while len(self._lists) > self.max_list_pages:
            self._lists.popitem(last=False)

    def invalidate(self, mount: str, path: str) -> None:
        """Forget one object and every cached listing that could show it."""
        self._stats.pop((mount, path), None)
        for key in [k for k in self._lists if k[0] == mount and path.startswith(k[1])]:
            del self._lists[key]

    def invalidate_prefix(self, mount: str, prefix: str) -> None:
        """Forget every object under `prefix` and every listing that overlaps it."""
        for skey in [k for k in self._stats if k[0] == mount and k[1].startswith(prefix)]:
            del self._stats[skey]
        for lkey in [
            k for k in self._lists if k[0] == mount and (k[1].startswith(prefix) or prefix.startswith(k[1]))
        ]:
            del self._lists[lkey]

    def clear(self) -> None:
        self._stats.clear()
        self._lists.clear()
