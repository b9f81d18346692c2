"""ObjectCache: everything the gateway asks of the cache.

A read of [start, end) walks its pages in order. A page on disk is one thread hop (store.py). A
missing page is claimed as a *flight* before any UFS call: the flight table is the single-flight
point (the event loop is single-threaded, so check-and-claim cannot race), and adjacent claimed
pages become one aligned ranged UFS read pinned with `if_match=etag`. Fetches run as tasks of the
cache, not of the request: a client that goes away does not cancel a fill others may be waiting
for, and the work is bounded (`max_merge` pages per fetch, `read_ahead` pages ahead of a reader).

A sequential reader's windows share one UFS stream (a chain, see `_start_fetch`): the first fetch
asks for everything up to the read's end, fills its window and hands the rest of the stream to the
fetch of the next window, waiting for it (unread, TCP holding the UFS back) up to PARK_WAIT. So
streaming an object costs the UFS one request, not one per window, and no window waits for a first
byte; the fills stay bounded by the windows. (The S3 adapter goes one step further: the GET of
`read_head(more=True)` is the stream the first fetch continues, see ufs_adapters/s3.py.)

Invariant: a read serves one version. Pages are keyed by the etag in `info`, and every UFS read is
pinned to it, so a changed object makes the UFS answer PreconditionFailed, which the read raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Coroutine
from typing import Any

from ufs_adapters.base import (
    ListPage,
    NotFound,
    ObjectInfo,
    PreconditionFailed,
    ReadOptions,
    UfsError,
    Unavailable,
)

from .keys import PageKey, Source
from .metadata import MetadataCache
from .policy import Policy, Rule
from .settings import CacheSettings
from .stats import CacheStats, EvictionReason, ReadStats
from .store import PageMeta, PageStore

log = logging.getLogger(__name__)

SEQUENTIAL_MEMORY = 4096  # objects whose last read end is remembered to detect sequential readers
INVALIDATION_MEMORY = 4096  # recent invalidations remembered to fence off UFS answers older than them


@contextlib.asynccontextmanager
async def _closing(body: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Close an adapter's body stream (an async generator) even when we stop reading early."""
    try:
        yield body
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


PREFILL_WAIT = 1.0  # seconds a page 0 from read_head waits for its reader before it is stored
# Seconds a fetch that filled its window holds its open-ended stream for the next window's fetch.
# That fetch starts when the reader reaches the window (read_ahead pages before its end), so a
# reader slower than the UFS parks the stream (TCP holds the UFS back) rather than losing it.
PARK_WAIT = 5.0


class _Flight:
    """One page being fetched. `ready` fires when its bytes (or the error) are known, `settled`
    once it is on disk or known not to be stored; it leaves the flight table only then, so no
    reader can miss both the table and the disk and fetch the page a second time."""

    __slots__ = ("data", "error", "joined", "ready", "settled")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.settled = asyncio.Event()
        # Set for a page that came with the metadata (read_head): fires when a reader takes it.
        self.joined: asyncio.Event | None = None

    async def wait(self) -> bytes:
        await self.ready.wait()
        if self.error is not None:
            raise self.error
        assert self.data is not None
        return self.data


class _Tail:
    """The rest of a UFS stream, handed from a fetch to the next: bytes received past the last
    page of the first fetch (`parts`, `have` of them) and the stream itself."""

    __slots__ = ("body", "have", "parts")

    def __init__(self, body: AsyncIterator[bytes], parts: list[bytes | memoryview], have: int) -> None:
        self.body = body
        self.parts = parts
        self.have = have


class _Link:
    """A fetch's open-ended stream, offered to the fetch that continues it (ObjectCache._links):
    `waiter` is set by that successor when it starts, and gets the tail (or None if the stream
    failed); `last` is the last page the stream covers. `called` wakes a fetch parked with its
    stream after its run, when a successor comes or its read ends."""

    __slots__ = ("called", "last", "owner", "waiter")

    def __init__(self, last: int, owner: _Object) -> None:
        self.last = last
        self.owner = owner  # the read whose fetch opened or continued the stream
        self.waiter: asyncio.Future[_Tail | None] | None = None
        self.called = asyncio.Event()


class _Object:
    """One version of one object being read: page geometry and how its pages are stored."""

    __slots__ = (
        "chained",
        "generation",
        "info",
        "last",
        "meta",
        "mount",
        "nspath",
        "page_size",
        "path",
        "rule",
        "src",
        "version",
    )

    def __init__(self, src: Source, info: ObjectInfo, rule: Rule, page_size: int, generation: int) -> None:
        self.generation = generation  # ObjectCache._generation when the read began
        self.src = src
        self.info = info
        self.rule = rule
        self.mount = src.mount_id
        self.path = info.path
        self.version = info.etag
        self.page_size = page_size
        self.nspath = src.namespace_of(info.path)
        self.last = (info.size - 1) // page_size  # -1 for an empty object
        self.meta: PageMeta | None = None
        self.chained = False  # an open-ended stream was opened for this read

    def key(self, index: int) -> PageKey:
        return PageKey(self.mount, self.path, self.version, index)

    def length(self, index: int) -> int:
        return min(self.page_size, self.info.size - index * self.page_size)


class ObjectCache:
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
        self._flights: dict[PageKey, _Flight] = {}
        # Open-ended streams of fetches still filling, by the page each will be at when done.
        self._links: dict[PageKey, _Link] = {}
        self._settled = 0  # flights that left the table after their write (see _plan)
        self._stat_flights: dict[tuple[str, str], asyncio.Task[ObjectInfo]] = {}
        self._write_slots = asyncio.Semaphore(settings.writers)
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
        prefetch: bool = False,
        prefetch_end: int | None = None,
    ) -> ObjectInfo:
        """The object's metadata, from memory, from the page index (after a restart) or the UFS.

        Freshness follows the rule of the path: `immutable` never asks the UFS again once the
        object is known, `maxAge` asks after `max_age`, `skipCache` always asks; `revalidate`
        (Cache-Control: no-cache) always asks. NotFound answers are cached for the max age too.
        When the UFS shows a new version, or no object, pages of older versions are dropped.
        `prefetch` (a GET is about to read): an object never seen before is asked for with
        `read_head`, and its first page goes straight into the flight table, so a cold read of a
        small object costs the UFS one request, not a HEAD and then a GET. `prefetch_end`: where
        that GET's Range ends (None: at the object's end, when the adapter may keep the response
        for the pages after page 0, read_head's `more`: a whole cold GET is one UFS request).
        """
        rule = self.policy.match(src.namespace_of(path))
        mount = src.mount_id
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
            head = prefetch and known is None and rule.stores
            # A GET to the object's end may take it all in one response (read_head's `more`); one
            # with an end takes page 0 alone, and its fetch of the rest asks for exactly its range
            # (an open-ended response would run on past it, and be cut, its buffers wasted).
            more = prefetch_end is None
            task = asyncio.ensure_future(self._stat_ufs(src, path, known, rule if head else None, more))
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
        self, src: Source, path: str, known: ObjectInfo | None, head_rule: Rule | None, more: bool = False
    ) -> ObjectInfo:
        now = self.clock()
        generation = self._generation
        first: bytes | None = None
        try:
            if head_rule is not None:
                info, first = await src.adapter.read_head(path, self._page_size, more=more)
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
        if (
            head_rule is not None
            and first is not None
            and info.size
            and len(first) == min(self._page_size, info.size)
        ):
            self._prefill(_Object(src, info, head_rule, self._page_size, generation), first)
        return info

    def _prefill(self, obj: _Object, data: bytes) -> None:
        """Page 0 came with the metadata: a finished flight that readers join, stored like a fill."""
        key = obj.key(0)
        if key in self._flights:
            return
        flight = _Flight()
        flight.data = data
        flight.joined = asyncio.Event()
        flight.ready.set()
        self._flights[key] = flight
        self._spawn(self._store_prefilled(obj, flight))

    async def _store_prefilled(self, obj: _Object, flight: _Flight) -> None:
        """Store page 0 once its reader has it (so that read counts it as a miss), or after a
        moment if no reader comes (a HEAD-like GET that failed its preconditions, say)."""
        assert flight.joined is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PREFILL_WAIT):
                await flight.joined.wait()
        await self._store_page(obj, 0, flight)

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
        """Forget `path` (metadata and pages of every version). Writes, copies and deletes through
        Hoard call this before they acknowledge, so the writer's next read sees its write."""
        self._fence(src.mount_id, path)
        self.metadata.invalidate(src.mount_id, path)
        await self.store.drop_object(src.mount_id, path, EvictionReason.STALE)

    def _fence(self, mount: str, path: str) -> None:
        """Fence off what was learnt of `path` before now: UFS answers still in flight
        (_invalidated_since) and metadata rows of the index (_confirmed_before_invalidation)."""
        self._generation += 1
        key = (mount, path)
        self._invalidated[key] = (self._generation, self.clock())
        self._invalidated.move_to_end(key)
        if len(self._invalidated) > INVALIDATION_MEMORY:
            _, (forgotten, _) = self._invalidated.popitem(last=False)
            self._forgotten_generation = max(self._forgotten_generation, forgotten)

    async def invalidate_prefix(self, src: Source, prefix: str) -> None:
        self._generation += 1
        self._invalidated_prefixes.append((src.mount_id, prefix, self._generation, self.clock()))
        if len(self._invalidated_prefixes) > 64:
            _, _, forgotten, _ = self._invalidated_prefixes.pop(0)
            self._forgotten_generation = max(self._forgotten_generation, forgotten)
        self.metadata.invalidate_prefix(src.mount_id, prefix)
        await self.store.drop_prefix(src.mount_id, prefix, EvictionReason.STALE)

    def _invalidated_since(self, mount: str, path: str, generation: int) -> bool:
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
        obj = _Object(src, info, rule, self._page_size, self._generation)
        ps = self._page_size
        first, last = start // ps, (end - 1) // ps
        sequential = self._note_position(obj, start, end)
        ahead: dict[int, _Flight] = {}  # pages this read waits for, claimed by it or by others
        stats.in_flight = ahead.keys()
        planned = first  # pages below this were planned: claimed, awaited or found on disk
        soon: asyncio.Future[bytes | None] | None = None  # the next page's disk read, started early
        try:
            for idx in range(first, last + 1):
                flight = ahead.pop(idx, None)
                if flight is None and idx == 0 and self._flights:
                    # A page 0 that this read's stat brought along (read_head): this read's UFS bytes.
                    pre = self._flights.get(obj.key(0))
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

    def _note_position(self, obj: _Object, start: int, end: int) -> bool:
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
            self._fence(src.mount_id, info.path)
            self.metadata.invalidate(src.mount_id, info.path)
        self._spawn(self.store.drop_object(src.mount_id, info.path, EvictionReason.STALE, version=info.etag))

    async def _plan(
        self, obj: _Object, lo: int, last: int, ahead: dict[int, _Flight], *, must: int | None = None
    ) -> int:
        """Make sure pages [lo, lo + max_merge) (up to `last`) are on disk or in flight: join the
        flights of others, claim the missing pages and start one fetch per run of adjacent claimed
        pages. Flights go into `ahead`. Page `must` is fetched even if a file for it exists (for a
        reader that keeps missing a file that keeps existing). Returns the first page not planned."""
        hi = min(last, lo + self._max_merge - 1)
        unknown = [i for i in range(lo, hi + 1) if i not in ahead and not self._join(obj, i, ahead)]
        if not unknown:
            return hi + 1
        settled = self._settled
        present = await self.store.probe([obj.key(i) for i in unknown])
        if settled != self._settled:
            # A fill that settled while we probed may have written a page after the probe looked
            # and left the flight table before we look there. A fill renames its file into place
            # before it settles, so one look now, with no await before the claims below, is final.
            present = [
                p or (i != must and self.store.has(obj.key(i))) for i, p in zip(unknown, present, strict=True)
            ]
        run: list[tuple[int, _Flight]] = []
        for i, on_disk in zip(unknown, present, strict=True):
            # Re-check after the await: another read may have claimed the page meanwhile.
            if (on_disk and i != must) or self._join(obj, i, ahead):
                self._start_fetch(obj, run, last)
                run = []
                continue
            flight = _Flight()
            self._flights[obj.key(i)] = flight
            ahead[i] = flight
            if run and run[-1][0] != i - 1:
                self._start_fetch(obj, run, last)
                run = []
            run.append((i, flight))
        self._start_fetch(obj, run, last, ends_window=bool(run) and run[-1][0] == hi)
        return hi + 1

    def _join(self, obj: _Object, index: int, ahead: dict[int, _Flight]) -> bool:
        flight = self._flights.get(obj.key(index))
        if flight is None:
            return False
        ahead[index] = flight
        return True

    def _start_fetch(
        self, obj: _Object, run: list[tuple[int, _Flight]], last: int, *, ends_window: bool = False
    ) -> None:
        """Start the fetch of `run` (adjacent claimed pages of a read ending at page `last`).

        If a fetch still filling has a stream that will be at `run`'s first page when it is done
        (a link), the new fetch takes that stream over (a chain), whichever read started it. A run
        that ends its window, with more of the stream's read after it, is fetched with an
        open-ended stream (up to that read's end) for the next window to take over: only by the
        read's first fetch and by fetches in a chain, so a reader slower than its fills does not
        open stream after stream only to close each early. With read_ahead 0 the next window is
        planned only once this one is consumed (its fetch has ended): no chain could form."""
        if not run:
            return
        first, end_page = run[0][0], run[-1][0]
        chain_in: asyncio.Future[_Tail | None] | None = None
        link = self._links.get(obj.key(first))
        if link is not None and link.waiter is None and end_page <= link.last:
            del self._links[obj.key(first)]
            chain_in = link.waiter = asyncio.get_running_loop().create_future()
            link.called.set()
            last = link.last  # the stream ends where the read that opened it ends
        chain_out: _Link | None = None
        if ends_window and end_page < last and self._read_ahead and (chain_in is not None or not obj.chained):
            chain_out = self._links[obj.key(end_page + 1)] = _Link(last, obj)
            obj.chained = True
        chained = chain_in is not None or chain_out is not None
        stream_end = min((last + 1) * self._page_size, obj.info.size) if chained else None
        self._spawn(self._fetch(obj, run, chain_in, chain_out, stream_end))

    async def _fetch(
        self,
        obj: _Object,
        run: list[tuple[int, _Flight]],
        chain_in: asyncio.Future[_Tail | None] | None = None,
        chain_out: _Link | None = None,
        stream_end: int | None = None,
    ) -> None:
        """Fill the flights of `run` (adjacent pages) from one ranged UFS read and store them:
        a stream of its own, or the tail of the previous fetch's (`chain_in`); `stream_end` is
        where that stream ends (None: at `run`'s end). With `chain_out` what is left of it after
        `run` goes to the fetch that waits on `chain_out`, if any."""
        first, last = run[0][0], run[-1][0]
        ps = self._page_size
        start, end = first * ps, min((last + 1) * ps, obj.info.size)
        body: AsyncIterator[bytes] | None = None
        pos = 0  # index into run of the next page to fill
        try:
            tail = await chain_in if chain_in is not None else None
            if tail is not None:
                body, parts, have = tail.body, tail.parts, tail.have
            else:
                opts = ReadOptions(start, stream_end or end, if_match=obj.version)
                body, parts, have = obj.src.adapter.read(obj.path, opts), [], 0
            while pos < len(run):
                while pos < len(run) and have >= (n := obj.length(run[pos][0])):
                    data = _take(parts, n)
                    have -= n
                    index, flight = run[pos]
                    flight.data = data
                    flight.ready.set()
                    pos += 1
                    # Waits for a write slot: a fill never runs further ahead of the disk.
                    await self._store_page(obj, index, flight)
                if pos < len(run):
                    chunk = await anext(body, None)
                    if chunk is None:
                        raise Unavailable(obj.path, f"short read: bytes {start}-{end} ended early")
                    parts.append(chunk)
                    have += len(chunk)
            if chain_out is not None:
                if chain_out.waiter is None:
                    # Parked: the stream waits (unread) for the next window's fetch.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PARK_WAIT):
                            await chain_out.called.wait()
                self._unlink(obj, run, chain_out)  # too late to join now: later fetches open their own
                if chain_out.waiter is not None and not chain_out.waiter.done():  # not cancelled
                    chain_out.waiter.set_result(_Tail(body, parts, have))
                    body = None  # the next fetch's now
            if body is not None and (stream_end or end) == end and await anext(body, None) is None:
                # Read to its end, the stream counts as a complete read (the adapter's metrics)
                # and its connection can be reused; one closed before its end cannot.
                body = None
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else Unavailable(obj.path, "fetch cancelled")
            for index, flight in run[pos:]:
                flight.error = error
                flight.ready.set()
                flight.settled.set()
                self._release(obj.key(index), flight)
            if isinstance(exc, PreconditionFailed):
                self._changed(obj.src, obj.info)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, UfsError):
                log.exception("cache fill of %s bytes %d-%d failed", obj.path, start, end)
        finally:
            if chain_out is not None:
                self._unlink(obj, run, chain_out)
                if chain_out.waiter is not None and not chain_out.waiter.done():
                    chain_out.waiter.set_result(None)  # failed: the next fetch opens its own stream
            if body is not None:
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()

    def _call_off(self, obj: _Object) -> None:
        """The read of `obj` is over: fetches parked with its streams close them now."""
        for link in self._links.values():
            if link.owner is obj:
                link.called.set()

    def _unlink(self, obj: _Object, run: list[tuple[int, _Flight]], link: _Link) -> None:
        key = obj.key(run[-1][0] + 1)
        if self._links.get(key) is link:
            del self._links[key]

    async def _store_page(self, obj: _Object, index: int, flight: _Flight) -> None:
        assert flight.data is not None
        if self._invalidated_since(obj.mount, obj.path, obj.generation):
            # Written or deleted through Hoard since this fill began: its bytes may still answer
            # the reads that asked for this version, but must not be kept (nor its metadata row).
            flight.settled.set()
            self._release(obj.key(index), flight)
            return
        if obj.meta is None:
            entry = self.metadata.get_stat(obj.mount, obj.path)
            known = entry is not None and entry.info is not None and entry.info.etag == obj.version
            rule = obj.rule
            obj.meta = PageMeta(
                nspath=obj.nspath,
                priority=int(rule.priority),
                ttl=rule.ttl,
                quota_owner=rule.prefix if rule.quota is not None else None,
                quota=rule.quota,
                info=obj.info,
                checked_at=entry.checked_at if known and entry is not None else self.clock(),
                max_age=None if rule.filter == "immutable" else self._max_age(rule),
            )
        key = obj.key(index)
        if not self.settings.fill_waits and self._write_slots.locked():
            self.store.not_stored += 1
            flight.settled.set()
            self._release(key, flight)
            return
        await self._write_slots.acquire()
        fut = self.store.write_soon(key, flight.data, obj.meta)
        self._tasks.add(fut)

        def done(f: asyncio.Future[bool]) -> None:
            self._tasks.discard(f)
            self._write_slots.release()
            if not f.cancelled() and (exc := f.exception()) is not None:
                log.warning("cache could not store page %d of %s: %r", index, obj.path, exc)
            flight.settled.set()
            self._release(key, flight)
            self._settled += 1
            if self._invalidated_since(obj.mount, obj.path, obj.generation):
                # The write finished after an invalidation of its path: take it back (every such
                # write does, as each may land after the previous drop).
                self._spawn(
                    self.store.drop_object(obj.mount, obj.path, EvictionReason.STALE, version=obj.version)
                )

        fut.add_done_callback(done)

    def _release(self, key: PageKey, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Future[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                log.warning("cache background task failed: %r", exc)

        task.add_done_callback(done)

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
        obj = _Object(src, info, rule, self._page_size, self._generation)
        fetched = skipped = 0
        window: dict[int, _Flight] | None = None
        lo = 0
        while True:
            nxt: dict[int, _Flight] | None = None
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

    async def _settle(self, obj: _Object, window: dict[int, _Flight]) -> int:
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
        store = self.store
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


def _take(parts: list[bytes | memoryview], n: int) -> bytes:
    """The first `n` bytes of `parts` (which hold at least that many), taken off its front.
    A part that is exactly the page is the page (no copy); otherwise one join copies the bytes."""
    first = parts[0]
    if len(first) == n and isinstance(first, bytes):
        del parts[0]
        return first
    taken: list[bytes | memoryview] = []
    got = 0
    while got < n:
        part = parts[0]
        if got + len(part) <= n:
            taken.append(part)
            got += len(part)
            del parts[0]
        else:
            view = memoryview(part)
            taken.append(view[: n - got])
            parts[0] = view[n - got :]  # the rest stays a view: a large chunk is never re-copied
            got = n
    return b"".join(taken)
