"""Test helpers for the cache: a counting UFS wrapper, payloads, a clock, an environment."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from cache.keys import Source
from cache.reader import ObjectCache
from cache.settings import CacheSettings
from cache.stats import ReadStats
from ufs_adapters.base import (
    ListPage,
    ObjectInfo,
    PartInfo,
    PartsPage,
    ReadOptions,
    UfsAdapter,
    UploadsPage,
    WriteMeta,
)
from ufs_adapters.local import LocalAdapter

KiB = 1024
PAGE = 4 * KiB  # small pages keep the tests fast; the logic is the same as with 1 MiB


class CountingAdapter:
    """A real adapter with call counters: every method forwards to `inner` (a wrapper, not a mock).

    `reads` records each ranged read as (path, start, end, if_match); `open_reads` counts the read
    streams not yet closed."""

    def __init__(self, inner: UfsAdapter) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.calls: Counter[str] = Counter()
        self.reads: list[tuple[str, int, int | None, str | None]] = []
        self.bytes_read = 0
        self.open_reads = 0

    def reset(self) -> None:
        self.calls.clear()
        self.reads.clear()
        self.bytes_read = 0

    async def stat(self, path: str) -> ObjectInfo:
        self.calls["stat"] += 1
        return await self.inner.stat(path)

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        self.calls["part_range"] += 1
        return await self.inner.part_range(path, part_number, etag)

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        self.calls["read"] += 1
        self.reads.append((path, opts.start, opts.end, opts.if_match))
        self.open_reads += 1
        try:
            async for chunk in self.inner.read(path, opts):
                self.bytes_read += len(chunk)
                yield chunk
        finally:
            self.open_reads -= 1

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        self.calls["list_objects"] += 1
        return await self.inner.list_objects(
            prefix, delimiter=delimiter, start_after=start_after, limit=limit
        )

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        self.calls["write"] += 1
        return await self.inner.write(path, body, size=size, meta=meta)

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        self.calls["copy"] += 1
        return await self.inner.copy(src, dst, meta=meta)

    async def delete(self, path: str) -> None:
        self.calls["delete"] += 1
        await self.inner.delete(path)

    async def make_dir(self, path: str) -> None:
        await self.inner.make_dir(path)

    async def remove_dir(self, path: str) -> None:
        await self.inner.remove_dir(path)

    async def is_dir(self, path: str) -> bool:
        return await self.inner.is_dir(path)

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        return await self.inner.create_multipart(path, meta)

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        return await self.inner.upload_part(path, upload_id, part_number, body, size=size)

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        return await self.inner.complete_multipart(path, upload_id, parts)

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        await self.inner.abort_multipart(path, upload_id)

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        return await self.inner.list_parts(path, upload_id, marker=marker, limit=limit)

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        return await self.inner.list_uploads(
            prefix, delimiter=delimiter, key_marker=key_marker, upload_id_marker=upload_id_marker, limit=limit
        )

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


_: type[UfsAdapter] = CountingAdapter  # conformance checked by mypy


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes where every page differs (so a wrong page is caught)."""
    block = bytes((i * 31 + seed * 7 + i // 251) % 256 for i in range(4093))
    return (block * (size // len(block) + 1))[:size]


class Clock:
    """A settable wall clock for TTL and max-age tests."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Env:
    """A UFS directory behind a counting adapter, and a factory for caches over it."""

    def __init__(self, tmp_path: Path) -> None:
        self.ufs_dir = tmp_path / "ufs"
        self.ufs_dir.mkdir()
        self.cache_dir = tmp_path / "cache"
        self.ufs = CountingAdapter(LocalAdapter(self.ufs_dir))
        self.src = Source("m1", "/data", self.ufs)
        self.clock = Clock()
        self.caches: list[ObjectCache] = []

    def put(self, path: str, data: bytes) -> bytes:
        file = self.ufs_dir / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        return data

    def replace(self, path: str, data: bytes) -> bytes:
        """Overwrite behind the cache's back, with a new mtime so the UFS ETag surely changes."""
        file = self.ufs_dir / path
        st = file.stat()
        file.write_bytes(data)
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return data

    async def cache(self, **overrides: Any) -> ObjectCache:
        settings: dict[str, Any] = {
            "dir": str(self.cache_dir),
            "size": 10 * 1024 * 1024,
            "page_size": PAGE,
            "metadata_ttl": 60.0,
            "fsync": False,
            "read_ahead": 0,
        }
        settings.update(overrides)
        cache = await ObjectCache.open(CacheSettings(**settings), clock=self.clock)
        self.caches.append(cache)
        return cache

    async def close(self, cache: ObjectCache) -> None:
        await cache.aclose()
        self.caches.remove(cache)


async def read_all(
    cache: ObjectCache, src: Source, info: ObjectInfo, start: int = 0, end: int | None = None
) -> tuple[bytes, ReadStats]:
    stats = ReadStats()
    out = bytearray()
    async for chunk in cache.read(src, info, start, info.size if end is None else end, stats):
        out += chunk
    return bytes(out), stats
