"""The cache over a real S3 HTTP server (moto): ETags, ranged reads and If-Match as S3 does them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cache.keys import Source
from cache.reader import ObjectCache
from cache.settings import CacheSettings
from cache.stats import ReadStats
from tests.cache.helpers import PAGE, CountingAdapter, payload, read_all
from ufs_adapters.base import PreconditionFailed, UfsAdapter, WriteMeta
from ufs_adapters.registry import open_adapter

S3 = tuple[UfsAdapter, CountingAdapter, ObjectCache]


async def put(adapter: UfsAdapter, path: str, body: bytes) -> None:
    """Write straight to the UFS, behind the cache's back."""

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    await adapter.write(path, chunks(), size=len(body), meta=WriteMeta())


@pytest.fixture
async def s3(moto_endpoint: str, tmp_path: Path) -> AsyncIterator[S3]:
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    httpx.put(f"{moto_endpoint}/{bucket}").raise_for_status()  # moto creates buckets unsigned
    adapter = await open_adapter(
        f"s3://{bucket}/data",
        {"endpoint_url": moto_endpoint, "access_key_id": "testing", "secret_access_key": "testing"},
    )
    ufs = CountingAdapter(adapter)
    settings = CacheSettings(dir=str(tmp_path / "cache"), size=64 * 1024 * 1024, page_size=PAGE, fsync=False)
    cache = await ObjectCache.open(settings)
    yield adapter, ufs, cache
    await cache.aclose()
    await adapter.aclose()


async def test_second_pass_over_s3_makes_no_requests(
    s3: S3,
) -> None:
    raw, ufs, cache = s3
    src = Source("s3", "/s3", ufs)
    objects = {f"k{i}": payload(size, seed=i) for i, size in enumerate([1, PAGE, 5 * PAGE + 3, 40 * PAGE])}
    for key, body in objects.items():
        await put(raw, key, body)

    async def one_pass() -> list[str]:
        outcomes: list[str] = []
        for key, body in objects.items():
            info = await cache.stat(src, key)
            got, stats = await read_all(cache, src, info)
            assert got == body
            outcomes.append(stats.outcome)
        return outcomes

    assert await one_pass() == ["MISS"] * 4
    await cache.drain()
    ufs.reset()
    assert await one_pass() == ["HIT"] * 4
    assert sum(ufs.calls.values()) == 0


async def test_overwrite_at_s3_is_never_mixed(s3: S3) -> None:
    raw, ufs, cache = s3
    src = Source("s3", "/s3", ufs)
    await put(raw, "obj", payload(6 * PAGE, seed=1))
    old = await cache.stat(src, "obj")
    first, _ = await read_all(cache, src, old, 0, PAGE)
    await cache.drain()
    new_body = payload(6 * PAGE, seed=2)
    await put(raw, "obj", new_body)
    chunks = []
    with pytest.raises(PreconditionFailed):
        async for chunk in cache.read(src, old, 0, old.size, ReadStats()):
            chunks.append(chunk)
    assert chunks == [first]
    await cache.drain()
    new = await cache.stat(src, "obj")
    assert new.etag != old.etag
    assert (await read_all(cache, src, new))[0] == new_body


async def test_concurrent_cold_readers_over_s3(s3: S3) -> None:
    raw, ufs, cache = s3
    src = Source("s3", "/s3", ufs)
    body = payload(64 * PAGE + 17)
    await put(raw, "hot", body)
    info = await cache.stat(src, "hot")
    results = await asyncio.gather(*(read_all(cache, src, info) for _ in range(8)))
    assert all(got == body for got, _ in results)
    assert ufs.bytes_read == len(body)
