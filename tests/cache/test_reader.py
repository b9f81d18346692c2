from __future__ import annotations

import asyncio
import errno
import logging
import os
import random

import pytest

from cache import fill
from cache.fill import take
from cache.keys import PageKey, Source
from cache.policy import Priority, Rule
from cache.stats import EvictionReason, ReadStats
from cache.store import PageMeta
from tests.cache.helpers import PAGE, CountingAdapter, Env, payload, read_all
from ufs_adapters.base import NotFound, ObjectInfo, PreconditionFailed, UfsAdapter


async def test_second_read_needs_no_ufs_call(env: Env) -> None:
    data = env.put("a/obj", payload(10 * PAGE + 123))
    cache = await env.cache()
    info = await cache.stat(env.src, "a/obj")
    got, stats = await read_all(cache, env.src, info)
    assert got == data
    assert stats.outcome == "MISS"
    await cache.drain()
    env.ufs.reset()

    info = await cache.stat(env.src, "a/obj")
    got, stats = await read_all(cache, env.src, info)
    assert got == data
    assert stats.outcome == "HIT" and stats.bytes_from_cache == len(data)
    assert sum(env.ufs.calls.values()) == 0
    s = cache.stats()
    assert s.pages == 11 and s.hits == 11 and s.misses == 11


async def test_range_fetches_only_missing_pages_merged(env: Env) -> None:
    data = env.put("big", payload(20 * PAGE))
    cache = await env.cache(max_merge=64)
    info = await cache.stat(env.src, "big")
    # Cache pages 3 and 4, then read pages 1..8: the UFS must see [1,3) and [5,9) only.
    got, _ = await read_all(cache, env.src, info, 3 * PAGE + 10, 5 * PAGE - 10)
    assert got == data[3 * PAGE + 10 : 5 * PAGE - 10]
    await cache.drain()
    assert env.ufs.reads == [("big", 3 * PAGE, 5 * PAGE, info.etag)]
    env.ufs.reset()

    got, stats = await read_all(cache, env.src, info, PAGE + 1, 9 * PAGE - 1)
    assert got == data[PAGE + 1 : 9 * PAGE - 1]
    assert stats.outcome == "PARTIAL"
    assert stats.bytes_from_cache == 2 * PAGE
    assert sorted(env.ufs.reads) == [
        ("big", PAGE, 3 * PAGE, info.etag),
        ("big", 5 * PAGE, 9 * PAGE, info.etag),
    ]


async def test_one_kib_of_a_large_object_costs_one_page(env: Env) -> None:
    data = env.put("huge", payload(200 * PAGE))
    cache = await env.cache()
    info = await cache.stat(env.src, "huge")
    got, _ = await read_all(cache, env.src, info, 77 * PAGE + 5, 77 * PAGE + 5 + 1024)
    assert got == data[77 * PAGE + 5 : 77 * PAGE + 5 + 1024]
    assert env.ufs.reads == [("huge", 77 * PAGE, 78 * PAGE, info.etag)]


async def test_merge_is_bounded(env: Env) -> None:
    data = env.put("obj", payload(10 * PAGE))
    cache = await env.cache(max_merge=4)
    info = await cache.stat(env.src, "obj")
    got, _ = await read_all(cache, env.src, info)
    assert got == data
    assert [(s, e) for _, s, e, _ in env.ufs.reads] == [
        (0, 4 * PAGE),
        (4 * PAGE, 8 * PAGE),
        (8 * PAGE, 10 * PAGE),
    ]


async def test_concurrent_misses_make_one_ufs_read_per_page(env: Env) -> None:
    data = env.put("hot", payload(8 * PAGE))
    cache = await env.cache(max_merge=2)
    info = await cache.stat(env.src, "hot")
    results = await asyncio.gather(*(read_all(cache, env.src, info) for _ in range(20)))
    assert all(got == data for got, _ in results)
    await cache.drain()
    fetched = [(s, e or 0) for _, s, e, _ in env.ufs.reads]
    pages = [i for s, e in fetched for i in range(s // PAGE, (e + PAGE - 1) // PAGE)]
    assert sorted(pages) == list(range(8)), fetched


async def test_concurrent_stats_make_one_ufs_call(env: Env) -> None:
    env.put("x", b"x")
    cache = await env.cache()
    infos = await asyncio.gather(*(cache.stat(env.src, "x") for _ in range(10)))
    assert {i.etag for i in infos} == {infos[0].etag}
    assert env.ufs.calls["stat"] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
async def test_damaged_page_is_dropped_and_refetched(env: Env, damage: str) -> None:
    data = env.put("obj", payload(3 * PAGE))
    cache = await env.cache()
    info = await cache.stat(env.src, "obj")
    await read_all(cache, env.src, info)
    await cache.drain()
    file = cache.store.file_of(PageKey("m1", "obj", info.etag, 1).name)
    with open(file, "rb") as f:
        raw = bytearray(f.read())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncate":
        raw = raw[:-100]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw[0:4] = b"XXXX"
    with open(file, "wb") as f:
        f.write(raw)
    env.ufs.reset()

    got, stats = await read_all(cache, env.src, info)
    assert got == data
    assert stats.bytes_from_ufs == PAGE
    assert env.ufs.reads == [("obj", PAGE, 2 * PAGE, info.etag)]
    assert cache.stats().evictions[EvictionReason.CORRUPT] == 1
    await cache.drain()
    env.ufs.reset()
    got, stats = await read_all(cache, env.src, info)
    assert got == data and stats.outcome == "HIT"


async def test_restart_keeps_pages_and_metadata(env: Env) -> None:
    data = env.put("obj", payload(5 * PAGE + 1))
    cache = await env.cache()
    info = await cache.stat(env.src, "obj")
    await read_all(cache, env.src, info)
    await env.close(cache)
    env.ufs.reset()

    cache = await env.cache()
    assert cache.stats().pages == 6
    info2 = await cache.stat(env.src, "obj")  # from the index: still within max age
    assert info2 == info
    got, stats = await read_all(cache, env.src, info2)
    assert got == data and stats.outcome == "HIT"
    assert sum(env.ufs.calls.values()) == 0


async def test_restart_removes_orphans_and_rows_without_files(env: Env) -> None:
    env.put("obj", payload(3 * PAGE))
    cache = await env.cache()
    info = await cache.stat(env.src, "obj")
    await read_all(cache, env.src, info)
    await env.close(cache)
    # A crash between rename and row: a page file nobody indexes. And a lost file under a row.
    orphan = env.cache_dir / "pages" / "ab" / ("abcd" + "0" * 28)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"junk")
    # Temporary files: of a dead writer, beside its page and in the tmp/ of older caches; and of
    # a writer that is alive (this process), which must be left alone.
    dead = orphan.parent / ("abef" + "0" * 28 + ".999999999.1.tmp")
    dead.write_bytes(b"partial")
    legacy = env.cache_dir / "tmp" / "deadbeef.999999999.1"
    legacy.parent.mkdir()
    legacy.write_bytes(b"partial")
    live = orphan.parent / ("abee" + "0" * 28 + f".{os.getpid()}.1.tmp")
    live.write_bytes(b"being written")
    os.unlink(cache.store.file_of(PageKey("m1", "obj", info.etag, 0).name))

    cache = await env.cache()
    assert not orphan.exists() and not dead.exists() and not legacy.exists()
    assert live.exists()
    assert cache.stats().pages == 2
    assert cache.stats().used == sum(
        os.path.getsize(cache.store.file_of(PageKey("m1", "obj", info.etag, i).name)) for i in (1, 2)
    )


async def test_new_version_is_served_and_old_pages_dropped(env: Env) -> None:
    env.put("obj", payload(2 * PAGE, seed=1))
    cache = await env.cache(metadata_ttl=10.0)
    old = await cache.stat(env.src, "obj")
    await read_all(cache, env.src, old)
    await cache.drain()
    new_data = env.replace("obj", payload(3 * PAGE, seed=2))

    assert await cache.stat(env.src, "obj") == old  # within max age: no UFS call
    env.clock.advance(11)
    new = await cache.stat(env.src, "obj")
    assert new.etag != old.etag
    assert cache.stats().evictions[EvictionReason.STALE] == 2
    got, _ = await read_all(cache, env.src, new)
    assert got == new_data


async def test_read_of_a_vanished_version_raises_precondition_failed(env: Env) -> None:
    env.put("obj", payload(4 * PAGE, seed=1))
    cache = await env.cache()
    old = await cache.stat(env.src, "obj")
    got, _ = await read_all(cache, env.src, old, 0, PAGE)  # page 0 cached
    await cache.drain()
    env.replace("obj", payload(4 * PAGE, seed=2))
    chunks = []
    with pytest.raises(PreconditionFailed):
        async for chunk in cache.read(env.src, old, 0, old.size, ReadStats()):
            chunks.append(chunk)
    assert chunks == [got]  # the cached page of the old version, then the error: never new bytes
    await cache.drain()
    # The old version's pages are gone and the metadata forgotten.
    assert await cache.store.cached_indexes("m1", "obj", old.etag) == set()
    assert (await cache.stat(env.src, "obj")).etag != old.etag


async def test_immutable_is_served_after_the_ufs_deleted_it(env: Env) -> None:
    data = env.put("imm/obj", payload(2 * PAGE))
    cache = await env.cache(rules=(Rule("/data/imm", filter="immutable"),))
    info = await cache.stat(env.src, "imm/obj")
    await read_all(cache, env.src, info)
    await cache.drain()
    (env.ufs_dir / "imm" / "obj").unlink()
    env.clock.advance(10_000)
    env.ufs.reset()
    info = await cache.stat(env.src, "imm/obj")
    got, _ = await read_all(cache, env.src, info)
    assert got == data and sum(env.ufs.calls.values()) == 0
    with pytest.raises(NotFound):  # an explicit revalidation (no-cache) asks the UFS
        await cache.stat(env.src, "imm/obj", revalidate=True)


async def test_skip_cache_and_no_store_stream_through(env: Env) -> None:
    data = env.put("skip/obj", payload(3 * PAGE))
    env.put("other", data)
    cache = await env.cache(rules=(Rule("/data/skip/", filter="skipCache"),))
    for _ in range(2):
        info = await cache.stat(env.src, "skip/obj")
        got, stats = await read_all(cache, env.src, info)
        assert got == data and stats.outcome == "MISS"
    assert env.ufs.calls["stat"] == 2 and env.ufs.calls["read"] == 2
    info = await cache.stat(env.src, "other")
    out = b"".join([c async for c in cache.read(env.src, info, 0, info.size, ReadStats(), no_store=True)])
    assert out == data
    await cache.drain()
    assert cache.stats().pages == 0


async def test_negative_stat_is_cached(env: Env) -> None:
    cache = await env.cache(metadata_ttl=5.0)
    for _ in range(3):
        with pytest.raises(NotFound):
            await cache.stat(env.src, "missing")
    assert env.ufs.calls["stat"] == 1
    env.put("missing", b"now here")
    env.clock.advance(6)
    assert (await cache.stat(env.src, "missing")).size == 8


async def test_invalidate_drops_pages_and_metadata(env: Env) -> None:
    env.put("obj", payload(2 * PAGE, seed=1))
    cache = await env.cache()
    info = await cache.stat(env.src, "obj")
    await read_all(cache, env.src, info)
    await cache.drain()
    new_data = env.replace("obj", payload(PAGE, seed=3))
    await cache.invalidate(env.src, "obj")
    assert cache.stats().pages == 0
    info = await cache.stat(env.src, "obj")
    assert (await read_all(cache, env.src, info))[0] == new_data


async def test_what_another_process_invalidates_is_forgotten_at_the_next_stat(env: Env) -> None:
    """Two caches over one directory, as two worker processes: a write through one (its
    invalidate) is seen by the other's next stat and listing, not after the metadata max age."""
    env.put("w/old", b"old")
    a, b = await env.cache(), await env.cache()
    with pytest.raises(NotFound):
        await b.stat(env.src, "w/new")
    old = await b.stat(env.src, "w/old")
    assert [o.path for o in (await b.list_objects(env.src, "w/", limit=10)).objects] == ["w/old"]
    env.put("w/new", b"new")
    env.replace("w/old", b"rewritten")
    await a.invalidate(env.src, "w/new")
    await a.invalidate(env.src, "w/old")
    assert (await b.stat(env.src, "w/new")).size == 3
    assert (await b.stat(env.src, "w/old")).etag != old.etag
    assert [o.path for o in (await b.list_objects(env.src, "w/", limit=10)).objects] == ["w/new", "w/old"]
    await a.invalidate_prefix(env.src, "w/")
    env.replace("w/new", b"newer")
    assert (await b.stat(env.src, "w/new")).size == 5


async def test_a_process_that_missed_trimmed_invalidations_forgets_everything(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cache.store.KEEP_INVALIDATIONS", 2)
    a, b = await env.cache(), await env.cache()
    await a.invalidate(env.src, "first")
    with pytest.raises(NotFound):
        await b.stat(env.src, "unlogged")  # b has seen "first", and remembers this NotFound
    for name in ("p1", "p2", "p3"):  # b misses p1: only the newest two rows are kept
        await a.invalidate(env.src, name)
    env.put("unlogged", b"written behind the cache's back")
    assert (await b.stat(env.src, "unlogged")).size == 31


async def test_tiny_cache_still_serves_correct_bytes(env: Env) -> None:
    data = env.put("obj", payload(50 * PAGE + 7))
    cache = await env.cache(size=3 * PAGE)  # room for two pages with headers
    info = await cache.stat(env.src, "obj")
    for _ in range(2):
        got, _ = await read_all(cache, env.src, info)
        assert got == data
        await cache.drain()
        assert cache.stats().used <= 3 * PAGE
    zero = await env.cache(dir=str(env.cache_dir) + "-zero", size=0)
    assert (await read_all(zero, env.src, info))[0] == data


async def test_sequential_reader_gets_read_ahead(env: Env) -> None:
    data = env.put("seq", payload(32 * PAGE))
    cache = await env.cache(read_ahead=4, max_merge=4)
    info = await cache.stat(env.src, "seq")
    got, _ = await read_all(cache, env.src, info, 0, 2 * PAGE)
    assert got == data[: 2 * PAGE]
    got, _ = await read_all(cache, env.src, info, 2 * PAGE, 4 * PAGE)  # continues: read ahead
    await cache.drain()
    assert got == data[2 * PAGE : 4 * PAGE]
    env.ufs.reset()
    got, stats = await read_all(cache, env.src, info, 4 * PAGE, 8 * PAGE)
    assert got == data[4 * PAGE : 8 * PAGE]
    assert stats.outcome == "HIT" and env.ufs.calls["read"] == 0


async def test_a_sequential_read_streams_its_windows_from_one_ufs_read(env: Env) -> None:
    """Windows of max_merge pages are planned read_ahead pages ahead, and each takes over the UFS
    stream of the one before (a chain): the UFS sees one request for the whole read."""
    data = env.put("stream", payload(40 * PAGE))
    cache = await env.cache(read_ahead=8, max_merge=8)
    info = await cache.stat(env.src, "stream")
    got, _ = await read_all(cache, env.src, info)
    assert got == data
    assert env.ufs.reads == [("stream", 0, 40 * PAGE, info.etag)]
    await cache.drain()
    assert env.ufs.open_reads == 0 and cache.stats().pages == 40


async def test_without_read_ahead_each_window_is_its_own_bounded_read(env: Env) -> None:
    data = env.put("stream", payload(40 * PAGE))
    cache = await env.cache(read_ahead=0, max_merge=8)
    info = await cache.stat(env.src, "stream")
    got, _ = await read_all(cache, env.src, info)
    assert got == data
    assert [(s, e) for _, s, e, _ in env.ufs.reads] == [(i * 8 * PAGE, (i + 1) * 8 * PAGE) for i in range(5)]


async def test_a_paused_reader_goes_on_with_its_parked_stream(env: Env) -> None:
    """A reader slower than the UFS: the fill of its next window waits with the stream unread
    (parked) until the reader reaches that window, and the read still costs one UFS request."""
    data = env.put("slow", payload(40 * PAGE))
    cache = await env.cache(read_ahead=8, max_merge=8)
    info = await cache.stat(env.src, "slow")
    gen = cache.read(env.src, info, 0, info.size, ReadStats())
    got = bytearray(await gen.__anext__())
    await asyncio.sleep(0.2)  # both planned windows are filled long before this
    assert env.ufs.open_reads == 1
    async for chunk in gen:
        got += chunk
    assert bytes(got) == data
    await cache.drain()
    assert env.ufs.reads == [("slow", 0, 40 * PAGE, info.etag)] and env.ufs.open_reads == 0


async def test_a_stream_parked_too_long_is_closed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """After PARK_WAIT the stream is closed, and the reader's later windows are bounded reads, not
    streams opened to the end only to be parked and closed again."""
    monkeypatch.setattr(fill, "PARK_WAIT", 0.05)
    data = env.put("slow", payload(40 * PAGE))
    cache = await env.cache(read_ahead=8, max_merge=8)
    info = await cache.stat(env.src, "slow")
    gen = cache.read(env.src, info, 0, info.size, ReadStats())
    got = bytearray(await gen.__anext__())
    await cache.drain()
    assert env.ufs.open_reads == 0
    async for chunk in gen:
        got += chunk
    assert bytes(got) == data
    await cache.drain()
    # The first two windows came from the first stream (the second took it over at once).
    assert [(s, e) for _, s, e, _ in env.ufs.reads] == [(0, 40 * PAGE)] + [
        (i * 8 * PAGE, (i + 1) * 8 * PAGE) for i in range(2, 5)
    ]
    assert env.ufs.open_reads == 0


async def test_a_chain_cut_by_the_client_closes_its_stream_at_once(env: Env) -> None:
    data = env.put("cut", payload(40 * PAGE))
    cache = await env.cache(read_ahead=8, max_merge=8)
    info = await cache.stat(env.src, "cut")
    gen = cache.read(env.src, info, 0, info.size, ReadStats())
    got = bytearray()
    async for chunk in gen:
        got += chunk
        if len(got) >= 12 * PAGE:
            break
    await gen.aclose()
    async with asyncio.timeout(fill.PARK_WAIT / 2):  # not left parked until PARK_WAIT
        await cache.drain()
    assert env.ufs.open_reads == 0 and bytes(got) == data[: len(got)]
    assert len(env.ufs.reads) == 1
    got2, _ = await read_all(cache, env.src, info)
    assert got2 == data


async def test_client_going_away_leaves_a_consistent_cache(env: Env) -> None:
    data = env.put("obj", payload(16 * PAGE))
    cache = await env.cache(max_merge=4)
    info = await cache.stat(env.src, "obj")
    gen = cache.read(env.src, info, 0, info.size, ReadStats())
    await gen.__anext__()
    await gen.aclose()
    await cache.drain()
    got, _ = await read_all(cache, env.src, info)
    assert got == data


async def test_ttl_rule_expires_pages(env: Env) -> None:
    env.put("t/obj", payload(2 * PAGE))
    env.put("keep", payload(PAGE))
    cache = await env.cache(rules=(Rule("/data/t", ttl=30),))
    for path in ("t/obj", "keep"):
        await read_all(cache, env.src, await cache.stat(env.src, path))
    await cache.drain()
    env.clock.advance(31)
    env.ufs.reset()
    info = await cache.stat(env.src, "t/obj")  # max age (60 s) not reached
    _, stats = await read_all(cache, env.src, info, 0, PAGE)
    assert stats.outcome == "MISS"  # the expired page is not served, and is dropped
    await cache.drain()
    await cache.sweep()  # the sweep takes the other expired page
    assert cache.stats().evictions[EvictionReason.TTL] == 2
    assert cache.stats().pages == 2


async def test_free_explain_and_stats(env: Env) -> None:
    env.put("d/a", payload(3 * PAGE))
    env.put("d/b", payload(PAGE))
    env.put("e/c", payload(PAGE))
    cache = await env.cache(rules=(Rule("/data/d", priority=Priority.HIGH, quota=100 * PAGE),))
    for path in ("d/a", "d/b", "e/c"):
        await read_all(cache, env.src, await cache.stat(env.src, path))
    await cache.drain()
    explained = await cache.explain(env.src, "d/a")
    assert explained["rule"] == "/data/d" and explained["priority"] == "high"
    assert explained["pages_cached"] == 3 and explained["pages_total"] == 3
    assert explained["quota"] == 100 * PAGE and explained["quota_used"] > 3 * PAGE
    assert await cache.free(env.src, "d/") == 4
    s = cache.stats()
    assert s.pages == 1 and s.evictions[EvictionReason.FREE] == 4
    assert (await cache.explain(env.src, "d/a"))["pages_cached"] == 0


async def test_list_is_cached_and_invalidated(env: Env) -> None:
    env.put("l/a", b"1")
    env.put("l/b", b"2")
    cache = await env.cache()
    page = await cache.list_objects(env.src, "l/", delimiter="/", limit=100)
    assert [o.path for o in page.objects] == ["l/a", "l/b"]
    await cache.list_objects(env.src, "l/", delimiter="/", limit=100)
    assert env.ufs.calls["list_objects"] == 1
    env.put("l/c", b"3")
    await cache.invalidate(env.src, "l/c")
    page = await cache.list_objects(env.src, "l/", delimiter="/", limit=100)
    assert [o.path for o in page.objects] == ["l/a", "l/b", "l/c"]


async def test_stale_sweep_drops_versions_the_ufs_lost(env: Env) -> None:
    env.put("s/obj", payload(2 * PAGE, seed=1))
    env.put("s/gone", payload(PAGE))
    cache = await env.cache(metadata_ttl=10.0)
    cache.attach(env.src)
    for path in ("s/obj", "s/gone"):
        await read_all(cache, env.src, await cache.stat(env.src, path))
    await cache.drain()
    env.replace("s/obj", payload(2 * PAGE, seed=2))
    (env.ufs_dir / "s" / "gone").unlink()
    await cache.sweep()
    assert cache.stats().pages == 3  # not due yet
    env.clock.advance(11)
    await cache.sweep()
    assert cache.stats().pages == 0
    assert cache.stats().evictions[EvictionReason.STALE] == 3


async def test_maintenance_loop_runs_sweeps(env: Env) -> None:
    env.put("t/obj", payload(PAGE))
    cache = await env.cache(rules=(Rule("/data/t", ttl=1),))
    await read_all(cache, env.src, await cache.stat(env.src, "t/obj"))
    await cache.drain()
    env.clock.advance(2)
    task = asyncio.ensure_future(cache.run_maintenance(interval=0.01))
    for _ in range(200):
        if cache.stats().pages == 0:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache.stats().pages == 0


async def test_quota_directory_evicts_only_itself(env: Env) -> None:
    for i in range(4):
        env.put(f"other/{i}", payload(2 * PAGE, seed=i))
    env.put("q/big", payload(30 * PAGE))
    cache = await env.cache(rules=(Rule("/data/q", quota=5 * (PAGE + 64)),), size=100 * PAGE)
    for i in range(4):
        await read_all(cache, env.src, await cache.stat(env.src, f"other/{i}"))
    await cache.drain()
    info = await cache.stat(env.src, "q/big")
    got, _ = await read_all(cache, env.src, info)
    assert got == env.ufs_dir.joinpath("q/big").read_bytes()
    await cache.drain()
    assert len(await cache.store.cached_indexes("m1", "q/big", info.etag)) == 5
    for i in range(4):
        other = await cache.stat(env.src, f"other/{i}")
        assert len(await cache.store.cached_indexes("m1", f"other/{i}", other.etag)) == 2
    assert cache.stats().evictions[EvictionReason.QUOTA] == 25
    assert cache.stats().evictions[EvictionReason.CAPACITY] == 0


async def test_priority_order_under_pressure(env: Env) -> None:
    for name in ("hi", "lo", "mid"):
        env.put(f"{name}/obj", payload(4 * PAGE))
    env.put("new/obj", payload(4 * PAGE))
    rules = (Rule("/data/hi", priority=Priority.HIGH), Rule("/data/lo", priority=Priority.LOW))
    cache = await env.cache(rules=rules, size=12 * (PAGE + 64))
    infos = {}
    for name in ("hi", "lo", "mid"):
        env.clock.advance(1)
        infos[name] = await cache.stat(env.src, f"{name}/obj")
        await read_all(cache, env.src, infos[name])
        await cache.drain()
    env.clock.advance(1)
    await read_all(cache, env.src, await cache.stat(env.src, "new/obj"))
    await cache.drain()

    async def cached(name: str) -> int:
        return len(await cache.store.cached_indexes("m1", f"{name}/obj", infos[name].etag))

    assert (await cached("lo"), await cached("mid"), await cached("hi")) == (0, 4, 4)


async def test_fill_racing_an_invalidation_is_not_kept(env: Env) -> None:
    env.put("w/obj", payload(8 * PAGE, seed=1))
    cache = await env.cache(max_merge=8)
    old = await cache.stat(env.src, "w/obj")
    gen = cache.read(env.src, old, 0, old.size, ReadStats())
    first = await gen.__anext__()  # the fill of all 8 pages is under way
    new_data = env.replace("w/obj", payload(3 * PAGE, seed=2))
    await cache.invalidate(env.src, "w/obj")  # a PUT through Hoard, acknowledged now
    rest = b"".join([c async for c in gen])
    assert first + rest == payload(8 * PAGE, seed=1)  # the reader that began earlier is whole
    await cache.drain()
    assert await cache.store.cached_indexes("m1", "w/obj", old.etag) == set()
    assert await cache.store.get_object("m1", "w/obj") is None
    new = await cache.stat(env.src, "w/obj")
    assert (await read_all(cache, env.src, new))[0] == new_data


class GatedStat(CountingAdapter):
    """Stat answers only when the test opens the gate: a UFS call caught in flight."""

    def __init__(self, inner: UfsAdapter) -> None:
        super().__init__(inner)
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def stat(self, path: str) -> ObjectInfo:
        info = await super().stat(path)
        self.started.set()
        await self.gate.wait()
        return info


async def test_stat_racing_an_invalidation_is_not_cached(env: Env) -> None:
    env.put("r/obj", b"old")
    cache = await env.cache()
    gated = GatedStat(env.ufs)
    src = Source("m1", "/data", gated)
    pending = asyncio.ensure_future(cache.stat(src, "r/obj"))
    await gated.started.wait()  # the UFS has answered "old", the answer is not cached yet
    env.replace("r/obj", b"new!")
    await cache.invalidate(src, "r/obj")
    gated.gate.set()
    assert (await pending).size == 3  # its caller asked before the write
    assert cache.metadata.get_stat("m1", "r/obj") is None
    assert (await cache.stat(env.src, "r/obj")).size == 4


async def test_fill_without_waiting_for_the_disk_still_serves_everything(env: Env) -> None:
    data = env.put("obj", payload(64 * PAGE))
    cache = await env.cache(write_buffer=PAGE, fill_waits=False, max_merge=64)
    info = await cache.stat(env.src, "obj")
    got, _ = await read_all(cache, env.src, info)
    assert got == data
    await cache.drain()
    assert 1 <= cache.stats().pages <= 64
    assert cache.stats().pages + cache.store.not_stored == 64


@pytest.mark.parametrize("pages", [2, 8])
async def test_a_fill_runs_ahead_of_a_stalled_disk_by_the_write_buffer(env: Env, pages: int) -> None:
    """Page writes that do not finish (a stalled cache disk) hold a fill back once `write_buffer`
    bytes wait for them, and not before; when the disk comes back every page is stored."""
    data = env.put("obj", payload(32 * PAGE))
    cache = await env.cache(write_buffer=pages * PAGE, max_merge=32, read_ahead=32)
    disk = asyncio.Event()
    queued: list[int] = []
    write_soon = cache.store.write_soon

    def stalled(key: PageKey, page: bytes, meta: PageMeta) -> asyncio.Future[bool]:
        queued.append(key.index)

        async def when_back() -> bool:
            await disk.wait()
            return await write_soon(key, page, meta)

        return asyncio.ensure_future(when_back())

    cache.store.write_soon = stalled  # type: ignore[method-assign]
    info = await cache.stat(env.src, "obj")
    reading = asyncio.ensure_future(read_all(cache, env.src, info))
    for _ in range(50):  # until the fill stops making progress
        before = len(queued)
        await asyncio.sleep(0.01)
        if len(queued) == before and before:
            break
    assert queued == list(range(pages)) and not reading.done()
    disk.set()
    got, _ = await reading
    assert got == data
    await cache.drain()
    assert cache.stats().pages == 32 and cache.store.not_stored == 0


async def test_failed_page_writes_serve_every_byte_count_and_log_one_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache disk that fails every write (full, read-only, broken): reads get every byte from the
    fill, the failures are counted in the stats, and the log gets one line, not one per page."""
    data = env.put("obj", payload(64 * PAGE))
    cache = await env.cache(max_merge=64)

    def failing(key: PageKey, page: bytes, meta: PageMeta) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        fut.set_exception(OSError(errno.ENOSPC, "No space left on device"))
        return fut

    cache.store.write_soon = failing  # type: ignore[method-assign]
    info = await cache.stat(env.src, "obj")
    with caplog.at_level(logging.WARNING, logger="cache.fill"):
        got, _ = await read_all(cache, env.src, info)
        await cache.drain()
    assert got == data
    assert cache.stats().page_write_failures == 64 and cache.stats().pages == 0
    [line] = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
    assert "No space left on device" in line and "(failed page writes since the last such line: 1)" in line


@pytest.mark.parametrize("seed", range(20))
def test_take_cuts_pages_out_of_any_chunking(seed: int) -> None:
    """However the UFS chunks its body, the pages cut from it are the body's bytes, in order."""
    rng = random.Random(seed)
    body = payload(rng.randrange(1, 20 * PAGE))
    parts: list[bytes | memoryview] = []
    pos = 0
    while pos < len(body):
        n = rng.choice([1, 7, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, rng.randrange(1, 5 * PAGE)])
        parts.append(body[pos : pos + n])
        pos += n
    pages = []
    for lo in range(0, len(body), PAGE):
        page = take(parts, min(PAGE, len(body) - lo))
        assert isinstance(page, bytes)
        pages.append(page)
    assert b"".join(pages) == body and sum(len(p) for p in parts) == 0
