"""ObjectCache: everything the gateway asks of the cache.

A read of [start, end) walks its pages in order. A page on disk is one thread hop (store.py); a
missing one is filled from the UFS by the machinery in fill.py (flights, windows planned ahead of
the reader, fetches that share one stream), which ObjectCache inherits.

Invariant: a read serves one version. Pages are keyed by the etag in `info`, and every UFS read is
pinned to it, so a changed object makes the UFS answer PreconditionFailed, which the read raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from typing import Any

from ufs_adapters.base import (
    ListPage,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    ReadOptions,
    UfsError,
    aclose_stream,
)

from .fill import Filler, Flight, Link, ObjectVersion, WriteFailures
from .keys import PageKey, Source
from .metadata import MetadataCache
from .policy import Policy, Rule
from .settings import CacheSettings
from .stats import CacheStats, EvictionReason, ReadStats
from .store import PageStore

log = logging.getLogger(__name__)

SEQUENTIAL_MEMORY = 4096  # objects whose last read end is remembered to detect sequential readers
INVALIDATION_MEMORY = 4096  # recent invalidations remembered to fence off UFS answers older than them


@contextlib.asynccontextmanager
async def _closing(body: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Close an adapter's body stream (an async generator) even when we stop reading early."""
    try:
        yield body
    finally:
        await aclose_stream(body)


PREFILL_WAIT = 1.0  # seconds a page 0 from read_head waits for its reader before it is stored


class ObjectCache(Filler):
    def __init__(
        self,
        store: PageStore,
        policy: Policy,
        settings: CacheSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.settings = settings
        self.clock = clock
        self.metadata = MetadataCache(
            max_entries=settings.max_metadata_entries, max_list_pages=settings.max_list_pages
        )
        self._page_size = settings.page_size
        self._read_ahead = settings.read_ahead
        self._max_merge = settings.max_merge
        self._flights: dict[PageKey, Flight] = {}
        # Open-ended streams of fetches still filling, by the page each will be at when done.
        self._links: dict[PageKey, Link] = {}
        self._settled = 0  # flights that left the table after their write (see _plan)
        self._stat_flights: dict[tuple[str, str], asyncio.Task[ObjectInfo]] = {}
        self._write_slots = asyncio.Semaphore(settings.write_slots)
        self._write_failures = WriteFailures()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._positions: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._sources: dict[str, Source] = {}
        # Invalidation fences: a UFS answer obtained before an invalidation of its path must not be
        # cached after it (a stat or a fill racing a write through Hoard would resurrect the old
        # version). Each invalidation bumps the generation; work remembers the one it began in.
        self._generation = 0
        # (mount, path) or (mount, prefix) -> (generation, wall time) of its last invalidation
        self._invalidated: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._invalidated_prefixes: list[tuple[str, str, int, float]] = []
        self._forgotten_generation = 0
        # The other worker processes' writes, as far as this one has applied them (invalidations.py).
        self._seen_signal = -1
        self._seen_seq = 0
        self._sweeps = 0
        self.hits = 0
        self.misses = 0
        self.bytes_from_cache = 0
        self.bytes_from_ufs = 0

    @classmethod
    async def open(cls, settings: CacheSettings, *, clock: Callable[[], float] = time.time) -> ObjectCache:
        """Open (or create) the cache in `settings.dir`; pages cached by an earlier run are kept."""
        policy = Policy(settings.rules, metadata_ttl=settings.metadata_ttl)
        store = await PageStore.open(
            settings.dir,
            capacity=settings.size,
            page_size=settings.page_size,
            policy=policy,
            reserved=settings.reserved,
            cull_limit=settings.cull_limit,
            fsync=settings.fsync,
            direct_io=settings.direct_io,
            threads=settings.threads,
            clock=clock,
        )
        return cls(store, policy, settings, clock=clock)

    # -- mounts

    def attach(self, src: Source) -> None:
        """Let the background stale sweep revalidate this mount's objects."""
        self._sources[src.mount_id] = src

    def detach(self, mount_id: str) -> None:
        self._sources.pop(mount_id, None)

    def attached(self) -> list[str]:
        return list(self._sources)

    # -- metadata

    async def stat(
        self,
        src: Source,
        path: str,
        *,
        revalidate: bool = False,
        prefetch: tuple[int, int | None] | None = None,
    ) -> ObjectInfo:
        """The object's metadata, from memory, from the page index (after a restart) or the UFS.

        Freshness follows the rule of the path: `immutable` never asks the UFS again once the
        object is known, `maxAge` asks after `max_age`, `skipCache` always asks; `revalidate`
        (Cache-Control: no-cache) always asks. NotFound answers are cached for the max age too.
        When the UFS shows a new version, or no object, pages of older versions are dropped.
        `prefetch` (a GET is about to read bytes [start, end), end None: to the object's end):
        an object never seen before is asked for with `read_head` from the page where the read
        starts, and that page goes straight into the flight table, so a cold read of a small
        object costs the UFS one request, not a HEAD and then a GET. The same request asks for the
        rest of the read's pages (read_head's `more`), which the read's fetch then continues: a
        cold GET of a whole object, or of a range, is one UFS request.
        """
        rule = self.policy.match(src.namespace_of(path))
        mount = src.mount_id
        self._sync_invalidations()
        entry = self.metadata.get_stat(mount, path)
        if entry is None and rule.stores:
            row = await self.store.get_object(mount, path)
            if row is not None and not self._confirmed_before_invalidation(mount, path, row[1]):
                self.metadata.put_stat(mount, path, row[0], row[1])
            # Re-read: a concurrent stat may have filled the entry while we were in the index.
            entry = self.metadata.get_stat(mount, path)
        if entry is not None and not revalidate and rule.stores:
            now = self.clock()
            if entry.info is None:
                if entry.fresh(now, self._max_age(rule)):
                    self.metadata.hits += 1
                    raise NotFound(path, "cached: not found")
            elif rule.filter == "immutable" or entry.fresh(now, rule.max_age):
                self.metadata.hits += 1
                return entry.info
        self.metadata.misses += 1
        known = entry.info if entry is not None else None
        key = (mount, path)
        task = self._stat_flights.get(key)
        if task is None:
            # A task, not a call: the callers that share it must not be cancelled with its starter.
            head = prefetch if known is None and rule.stores else None
            task = asyncio.ensure_future(self._stat_ufs(src, path, known, rule, head))
            self._stat_flights[key] = task

            def done(t: asyncio.Task[ObjectInfo]) -> None:
                self._stat_flights.pop(key, None)
                if not t.cancelled():
                    t.exception()  # retrieved: every caller that still waits gets it through shield

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def _max_age(self, rule: Rule) -> float:
        return self.settings.metadata_ttl if rule.max_age is None else rule.max_age

    async def _stat_ufs(
        self,
        src: Source,
        path: str,
        known: ObjectInfo | None,
        rule: Rule,
        head: tuple[int, int | None] | None,
    ) -> ObjectInfo:
        now = self.clock()
        generation = self._generation
        first: bytes | None = None
        ps = self._page_size
        page = 0
        try:
            if head is not None:
                # From the read's first page to the end of its last (whole pages: what its fetch
                # continues with), or to the object's end.
                page, end = head[0] // ps, head[1]
                aligned_end = None if end is None else -(-end // ps) * ps
                more = aligned_end is None or aligned_end > (page + 1) * ps
                info, first = await src.adapter.read_head(
                    path, ps, start=page * ps, more=more, end=aligned_end
                )
            else:
                info = await src.adapter.stat(path)
        except NotFound:
            if not self._invalidated_since(src.mount_id, path, generation):
                self.metadata.put_stat(src.mount_id, path, None, now)
            if known is not None:
                await self.store.drop_object(src.mount_id, path, EvictionReason.STALE)
            raise
        if self._invalidated_since(src.mount_id, path, generation):
            return info  # answer this caller (it asked before the write) but cache nothing
        self.metadata.put_stat(src.mount_id, path, info, now)
        if known is not None and known.etag != info.etag:
            await self.store.drop_object(src.mount_id, path, EvictionReason.STALE, keep=info.etag)
        if first and len(first) == min(ps, info.size - page * ps):
            self._prefill(ObjectVersion(src, info, rule, ps, generation), page, first)
        return info

    def _prefill(self, obj: ObjectVersion, index: int, data: bytes) -> None:
        """A page came with the metadata: a finished flight that readers join, stored like a fill."""
        key = obj.key(index)
        if key in self._flights:
            return
        flight = Flight()
        flight.data = data
        flight.joined = asyncio.Event()
        flight.ready.set()
        self._flights[key] = flight
        self._spawn(self._store_prefilled(obj, index, flight))

    async def _store_prefilled(self, obj: ObjectVersion, index: int, flight: Flight) -> None:
        """Store the page once its reader has it (so that read counts it as a miss), or after a
        moment if no reader comes (a HEAD-like GET that failed its preconditions, say)."""
        assert flight.joined is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PREFILL_WAIT):
                await flight.joined.wait()
        await self._store_page(obj, index, flight)

    async def list_objects(
        self,
        src: Source,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        limit: int = 1000,
    ) -> ListPage:
        """One page of a listing, cached for the max age of the prefix's rule (never for skipCache)."""
        rule = self.policy.match(src.namespace_of(prefix))
        max_age = self._max_age(rule) if rule.stores else 0.0
        key = (src.mount_id, prefix, delimiter, start_after, limit)
        if max_age > 0:
            self._sync_invalidations()
            page = self.metadata.get_list(key, self.clock(), max_age)
            if page is not None:
                return page
        now = self.clock()
        page = await src.adapter.list_objects(
            prefix, delimiter=delimiter, start_after=start_after, limit=limit
        )
        if max_age > 0:
            self.metadata.put_list(key, page, now)
        return page

    async def invalidate(self, src: Source, path: str) -> None:
        """Forget `path` (metadata and pages of every version), here and, through the index's log,
        in every other worker process (invalidations.py). Writes, copies and deletes through Hoard
        call this before they acknowledge, so any read that starts after it sees the write."""
        self._forget(src.mount_id, path, self.clock())
        await self.store.drop_object(src.mount_id, path, EvictionReason.STALE)
        await self.store.log_invalidation(src.mount_id, path)

    async def invalidate_prefix(self, src: Source, prefix: str) -> None:
        self._forget_prefix(src.mount_id, prefix, self.clock())
        await self.store.drop_prefix(src.mount_id, prefix, EvictionReason.STALE)
        await self.store.log_invalidation(src.mount_id, prefix, prefix=True)

    def _forget(self, mount: str, path: str, at: float) -> None:
        """Drop `path` from memory and fence off what was learnt of it before `at`: UFS answers
        still in flight (_invalidated_since) and metadata rows of the index
        (_confirmed_before_invalidation)."""
        self._generation += 1
        key = (mount, path)
        self._invalidated[key] = (self._generation, at)
        self._invalidated.move_to_end(key)
        if len(self._invalidated) > INVALIDATION_MEMORY:
            _, (forgotten, _) = self._invalidated.popitem(last=False)
            self._forgotten_generation = max(self._forgotten_generation, forgotten)
        self.metadata.invalidate(mount, path)

    def _forget_prefix(self, mount: str, prefix: str, at: float) -> None:
        self._generation += 1
        self._invalidated_prefixes.append((mount, prefix, self._generation, at))
        if len(self._invalidated_prefixes) > 64:
            _, _, forgotten, _ = self._invalidated_prefixes.pop(0)
            self._forgotten_generation = max(self._forgotten_generation, forgotten)
        self.metadata.invalidate_prefix(mount, prefix)

    def _sync_invalidations(self) -> None:
        """Forget what the writes logged by any worker process since the last call name
        (invalidations.py; this process's own too, harmlessly). Unless one was logged, this is
        one read of shared memory."""
        signal = self.store.signal.read()
        if signal == self._seen_signal:
            return
        try:
            rows, missed = self.store.index.invalidations_since(self._seen_seq)
        except sqlite3.OperationalError:
            return  # the index is busy: the next call looks again
        self._seen_signal = signal
        if missed and self._seen_seq:
            self.metadata.clear()  # trimmed before this process read them: forget everything
            self._generation += 1
            self._forgotten_generation = self._generation
        for row in rows:
            if row.prefix:
                self._forget_prefix(row.mount, row.path, row.at)
            else:
                self._forget(row.mount, row.path, row.at)
        if rows:
            self._seen_seq = rows[-1].seq

    def _invalidated_since(self, mount: str, path: str, generation: int) -> bool:
        self._sync_invalidations()
        if generation == self._generation:
            return False  # the common case: nothing was invalidated meanwhile
        if generation < self._forgotten_generation:
            return True  # older than what we remember: caching less is always safe
        if self._invalidated.get((mount, path), (0, 0.0))[0] > generation:
            return True
        return any(
            m == mount and path.startswith(p) and g > generation for m, p, g, _ in self._invalidated_prefixes
        )

    def _confirmed_before_invalidation(self, mount: str, path: str, checked_at: float) -> bool:
        """Whether a stored metadata row predates an invalidation of its path (a fill that raced
        a write may have stored it just after the write was acknowledged)."""
        self._sync_invalidations()
        if self._generation == 0:
            return False
        entry = self._invalidated.get((mount, path))
        if entry is not None and checked_at <= entry[1]:
            return True
        return any(
            m == mount and path.startswith(p) and checked_at <= t for m, p, _, t in self._invalidated_prefixes
        )

    # -- data

    async def read(
        self, src: Source, info: ObjectInfo, start: int, end: int, stats: ReadStats, *, no_store: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) of the version in `info`, in order, in chunks of at most a page.

        Raises PreconditionFailed if the UFS no longer has that version when a page must be
        fetched: bytes of two versions are never mixed. `no_store` (and the skipCache filter)
        stream from the UFS without touching the cache.
        """
        end = min(end, info.size)
        if start >= end:
            return
        rule = self.policy.match(src.namespace_of(info.path))
        if no_store or not rule.stores:
            async for chunk in self._passthrough(src, info, start, end):
                stats.bytes_from_ufs += len(chunk)
                self.bytes_from_ufs += len(chunk)
                yield chunk
            return
        obj = ObjectVersion(src, info, rule, self._page_size, self._generation)
        ps = self._page_size
        first, last = start // ps, (end - 1) // ps
        sequential = self._note_position(obj, start, end)
        ahead: dict[int, Flight] = {}  # pages this read waits for, claimed by it or by others
        stats.in_flight = ahead.keys()
        planned = first  # pages below this were planned: claimed, awaited or found on disk
        soon: asyncio.Future[bytes | None] | None = None  # the next page's disk read, started early
        try:
            for idx in range(first, last + 1):
                flight = ahead.pop(idx, None)
                if flight is None and idx == first and self._flights:
                    # A page that this read's stat brought along (read_head): this read's UFS bytes.
                    pre = self._flights.get(obj.key(idx))
                    if pre is not None and pre.joined is not None:
                        flight = pre
                        pre.joined.set()
                data: bytes | None = None
                if flight is None:
                    fut = (
                        soon
                        if soon is not None
                        else self.store.read_soon(obj.key(idx), obj.length(idx), rule.ttl)
                    )
                    soon = None
                    data = await fut
                    attempts = 0
                    while data is None:
                        # A miss. Plan from here; if the page turns out to be on disk after all (its
                        # fill finished in between), read it again; after two such surprises, fetch.
                        must = idx if attempts >= 2 else None
                        planned = max(planned, await self._plan(obj, idx, last, ahead, must=must))
                        flight = ahead.pop(idx, None)
                        if flight is not None:
                            break
                        attempts += 1
                        data = await self.store.read(obj.key(idx), obj.length(idx), rule.ttl)
                if flight is not None:
                    if planned <= last and idx + self._read_ahead >= planned:
                        planned = await self._plan(obj, planned, last, ahead)
                    data = await flight.wait()
                    self.misses += 1
                else:
                    self.hits += 1
                assert data is not None
                if idx < last and idx + 1 not in ahead:
                    # Overlap the next disk read with sending this page.
                    soon = self.store.read_soon(obj.key(idx + 1), obj.length(idx + 1), rule.ttl)
                lo = start - idx * ps if idx == first else 0
                hi = end - idx * ps if idx == last else len(data)
                chunk = data if lo == 0 and hi == len(data) else data[lo:hi]
                if flight is None:
                    stats.bytes_from_cache += len(chunk)
                    self.bytes_from_cache += len(chunk)
                else:
                    stats.bytes_from_ufs += len(chunk)
                    self.bytes_from_ufs += len(chunk)
                yield chunk
        finally:
            if obj.chained:
                self._call_off(obj)
        if sequential and self._read_ahead and last < obj.last:
            self._spawn(self._plan(obj, last + 1, min(obj.last, last + self._read_ahead), {}))

    def _note_position(self, obj: ObjectVersion, start: int, end: int) -> bool:
        """Record where this read ends; True if it starts where the last read of the object ended."""
        key = (obj.mount, obj.path, obj.version)
        sequential = self._positions.get(key) == start
        self._positions[key] = end
        self._positions.move_to_end(key)
        if len(self._positions) > SEQUENTIAL_MEMORY:
            self._positions.popitem(last=False)
        return sequential

    async def _passthrough(self, src: Source, info: ObjectInfo, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            async with _closing(
                src.adapter.read(info.path, ReadOptions(start, end, if_match=info.etag))
            ) as body:
                async for chunk in body:
                    yield chunk
        except PreconditionFailed:
            self._changed(src, info)
            raise

    def _changed(self, src: Source, info: ObjectInfo) -> None:
        """The UFS no longer has `info`'s version: forget it and drop its pages in the background."""
        entry = self.metadata.get_stat(src.mount_id, info.path)
        if entry is None or (entry.info is not None and entry.info.etag == info.etag):
            # Also fence off the index's row of that version until the drop below removes it:
            # a stat in between would otherwise take it back from there.
            self._forget(src.mount_id, info.path, self.clock())
        self._spawn(self.store.drop_object(src.mount_id, info.path, EvictionReason.STALE, version=info.etag))

    async def preload(
        self, src: Source, info: ObjectInfo, progress: Callable[[int, int], None] | None = None
    ) -> tuple[int, int]:
        """Fetch and store every missing page of `info`; returns (bytes fetched, bytes already cached).

        Pages already on disk are not read at all. Two windows of `max_merge` pages are in flight
        at a time, so one large object neither stalls on each request nor fills memory.
        """
        rule = self.policy.match(src.namespace_of(info.path))
        if not rule.stores or info.size == 0:
            return 0, 0
        obj = ObjectVersion(src, info, rule, self._page_size, self._generation)
        fetched = skipped = 0
        window: dict[int, Flight] | None = None
        lo = 0
        while True:
            nxt: dict[int, Flight] | None = None
            if lo <= obj.last:
                nxt = {}
                planned = await self._plan(obj, lo, obj.last, nxt)
                cached = sum(obj.length(i) for i in range(lo, planned) if i not in nxt)
                skipped += cached
                if progress is not None and cached:
                    progress(0, cached)
                lo = planned
            if window is not None:
                size = await self._settle(obj, window)
                fetched += size
                if progress is not None and size:
                    progress(size, 0)
            if nxt is None:
                break
            window = nxt
        return fetched, skipped

    async def _settle(self, obj: ObjectVersion, window: dict[int, Flight]) -> int:
        for flight in window.values():
            await flight.wait()
            await flight.settled.wait()
        return sum(obj.length(i) for i in window)

    async def coverage(
        self, src: Source, info: ObjectInfo, start: int, end: int, exclude: Collection[int] = ()
    ) -> tuple[int, int]:
        """(cached pages, pages) of [start, end) of the version in `info`: one index query, used
        for X-Cache on HEAD and on reads longer than a page. Pages in `exclude` (the ones a read
        gets from fills in flight, ReadStats.in_flight) do not count as cached."""
        end = min(end, info.size)
        if start >= end:
            return 0, 0
        first, last = start // self._page_size, (end - 1) // self._page_size
        rule = self.policy.match(src.namespace_of(info.path))
        if not rule.stores:
            return 0, last - first + 1
        # Pages past the rule's TTL are still indexed until a read drops them: not cached.
        held = await self.store.cached_indexes(src.mount_id, info.path, info.etag, rule.ttl)
        return sum(1 for i in range(first, last + 1) if i in held and i not in exclude), last - first + 1

    # -- admin

    async def free(self, src: Source, prefix: str) -> int:
        """Evict every page of `src` under `prefix` (UFS-relative); returns the number of pages."""
        return await self.store.drop_prefix(src.mount_id, prefix, EvictionReason.FREE)

    def stats(self) -> CacheStats:
        """This process's counters; `used` and `pages` of the whole cache, read from the index."""
        store = self.store
        store.refresh_totals()
        return CacheStats(
            capacity=store.capacity,
            reserved=store.reserved,
            used=store.used,
            pages=store.pages,
            hits=self.hits,
            misses=self.misses,
            bytes_from_cache=self.bytes_from_cache,
            bytes_from_ufs=self.bytes_from_ufs,
            evictions=dict(store.evictions),
            metadata_entries=len(self.metadata),
            page_write_failures=self._write_failures.count,
        )

    async def explain(self, src: Source, path: str) -> dict[str, Any]:
        """Which rule applies to `path` and what of it is cached (for `hoard cache explain`)."""
        nspath = src.namespace_of(path)
        rule = self.policy.match(nspath)
        entry = self.metadata.get_stat(src.mount_id, path)
        row = await self.store.get_object(src.mount_id, path)
        info = entry.info if entry is not None and entry.info is not None else (row[0] if row else None)
        pages = await self.store.cached_indexes(src.mount_id, path, info.etag) if info is not None else set()
        owner = rule.prefix if rule.quota is not None else None
        return {
            "path": nspath,
            "rule": None if rule is self.policy.default else rule.path,
            "filter": rule.filter,
            "max_age": rule.max_age,
            "ttl": rule.ttl,
            "priority": rule.priority.name.lower(),
            "quota": rule.quota,
            "quota_used": await self.store.quota_used(owner) if owner is not None else None,
            "version": info.etag if info is not None else None,
            "size": info.size if info is not None else None,
            "pages_cached": len(pages),
            "pages_total": (info.size + self._page_size - 1) // self._page_size if info is not None else None,
        }

    # -- maintenance

    async def sweep(self) -> None:
        """One maintenance round: expire TTL pages, apply recorded accesses, evict down to the low
        watermark when above the high one, revalidate due objects of attached mounts (dropping
        stale versions) and forget metadata rows of objects without pages."""
        await self.store.expire()
        await self.store.flush()
        capacity = self.store.capacity
        if self.store.used > self.settings.evict_high * capacity:
            await self.store.shrink(int(self.settings.evict_low * capacity))
        for src in list(self._sources.values()):
            await self._sweep_stale(src)
        self._sweeps += 1
        if self._sweeps % 10 == 1:
            await self.store.forget_orphan_objects()

    async def _sweep_stale(self, src: Source) -> None:
        now = self.clock()
        for info, _ in await self.store.objects_due(src.mount_id, now, self.settings.stale_batch):
            rule = self.policy.match(src.namespace_of(info.path))
            max_age = None if rule.filter == "immutable" else self._max_age(rule)
            try:
                if max_age is not None:
                    current = await self.stat(src, info.path, revalidate=True)
                    if current.etag != info.etag:
                        continue  # stat dropped the old pages; the new version has its own row
            except NotFound:
                continue  # stat dropped the pages and the row
            except UfsError as exc:
                log.warning("stale sweep: %s%s: %r", src.namespace_path, info.path, exc)
            await self.store.set_checked(src.mount_id, info.path, info.etag, now, max_age)

    async def run_maintenance(self, interval: float | None = None) -> None:
        """Run `sweep` every `interval` seconds (settings.sweep_interval) until cancelled."""
        period = self.settings.sweep_interval if interval is None else interval
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except Exception:
                log.exception("cache maintenance failed")

    async def drain(self) -> None:
        """Wait for the background fetches and page writes started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            if isinstance(task, asyncio.Task):
                task.cancel()
        await self.drain()
        for stat_task in list(self._stat_flights.values()):
            stat_task.cancel()
        await self.store.aclose()
