"""Filling pages from the UFS: the machinery behind ObjectCache's misses (reader.py).

A missing page is claimed as a *flight* before any UFS call: the flight table is the single-flight
point (the event loop is single-threaded, so check-and-claim cannot race), and adjacent claimed
pages become one aligned ranged UFS read pinned with `if_match=etag`. Fetches run as tasks of the
cache, not of the request: a client that goes away does not cancel a fill others may be waiting
for, and the work is bounded (`max_merge` pages per fetch, `read_ahead` pages ahead of a reader).

A sequential reader's windows share one UFS stream (a chain, see `Filler._start_fetch`): the first
fetch asks for everything up to the read's end, fills its window and hands the rest of the stream
to the fetch of the next window, waiting for it (unread, TCP holding the UFS back) up to PARK_WAIT.
So streaming an object costs the UFS one request, not one per window, and no window waits for a
first byte; the fills stay bounded by the windows. (The S3 adapter goes one step further: the GET
of `read_head(more=True)` is the stream the first fetch continues, see ufs_adapters/s3.py.)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ufs_adapters.base import (
    ObjectInfo,
    PreconditionFailed,
    ReadOptions,
    UfsError,
    Unavailable,
    aclose_stream,
)

from .keys import PageKey, Source
from .metadata import MetadataCache
from .policy import Rule
from .settings import CacheSettings
from .stats import EvictionReason
from .store import PageMeta, PageStore

log = logging.getLogger(__name__)

# Seconds a fetch that filled its window holds its open-ended stream for the next window's fetch.
# That fetch starts when the reader reaches the window (read_ahead pages before its end), so a
# reader slower than the UFS parks the stream (TCP holds the UFS back) rather than losing it.
PARK_WAIT = 5.0


class WriteFailures:
    """Page writes that failed: a line in the log at most every LOG_EVERY seconds, with how many
    failed since the last one. A full or failing cache disk fails every fill, and a line per
    page would flood the log."""

    LOG_EVERY = 60.0

    __slots__ = ("count", "logged_at", "unlogged")

    def __init__(self) -> None:
        self.count = 0  # every failure since the cache opened
        self.unlogged = 0
        self.logged_at: float | None = None

    def record(self, index: int, path: str, exc: BaseException) -> None:
        self.count += 1
        self.unlogged += 1
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= self.LOG_EVERY:
            log.warning("cache could not store page %d of %s: %r (failed page writes since the "
                        "last such line: %d)", index, path, exc, self.unlogged)  # fmt: skip
            self.logged_at, self.unlogged = now, 0


class Flight:
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


class Tail:
    """The rest of a UFS stream, handed from a fetch to the next: bytes received past the last
    page of the first fetch (`parts`, `have` of them) and the stream itself."""

    __slots__ = ("body", "have", "parts")

    def __init__(self, body: AsyncIterator[bytes], parts: list[bytes | memoryview], have: int) -> None:
        self.body = body
        self.parts = parts
        self.have = have


class Link:
    """A fetch's open-ended stream, offered to the fetch that continues it (Filler._links):
    `waiter` is set by that successor when it starts, and gets the tail (or None if the stream
    failed); `last` is the last page the stream covers. `called` wakes a fetch parked with its
    stream after its run, when a successor comes or its read ends."""

    __slots__ = ("called", "last", "owner", "waiter")

    def __init__(self, last: int, owner: ObjectVersion) -> None:
        self.last = last
        self.owner = owner  # the read whose fetch opened or continued the stream
        self.waiter: asyncio.Future[Tail | None] | None = None
        self.called = asyncio.Event()


class ObjectVersion:
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


class Filler(abc.ABC):
    """The fill half of ObjectCache (which subclasses it and owns the state declared here): plan
    windows of pages, claim them as flights, fetch runs of them from the UFS (chained when they
    follow one another) and store them."""

    store: PageStore
    settings: CacheSettings
    metadata: MetadataCache
    clock: Callable[[], float]
    _page_size: int
    _read_ahead: int
    _max_merge: int
    _flights: dict[PageKey, Flight]
    _links: dict[PageKey, Link]  # open-ended streams of fetches still filling, by their next page
    _settled: int
    _write_slots: asyncio.Semaphore
    _write_failures: WriteFailures
    _tasks: set[asyncio.Future[Any]]

    @abc.abstractmethod
    def _invalidated_since(self, mount: str, path: str, generation: int) -> bool:
        """Whether `path` was written or deleted through Hoard since `generation` (reader.py)."""

    @abc.abstractmethod
    def _changed(self, src: Source, info: ObjectInfo) -> None:
        """The UFS no longer has `info`'s version (reader.py)."""

    @abc.abstractmethod
    def _max_age(self, rule: Rule) -> float:
        """How long metadata under `rule` is trusted (reader.py)."""

    async def _plan(
        self, obj: ObjectVersion, lo: int, last: int, ahead: dict[int, Flight], *, must: int | None = None
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
        run: list[tuple[int, Flight]] = []
        for i, on_disk in zip(unknown, present, strict=True):
            # Re-check after the await: another read may have claimed the page meanwhile.
            if (on_disk and i != must) or self._join(obj, i, ahead):
                self._start_fetch(obj, run, last)
                run = []
                continue
            flight = Flight()
            self._flights[obj.key(i)] = flight
            ahead[i] = flight
            if run and run[-1][0] != i - 1:
                self._start_fetch(obj, run, last)
                run = []
            run.append((i, flight))
        self._start_fetch(obj, run, last, ends_window=bool(run) and run[-1][0] == hi)
        return hi + 1

    def _join(self, obj: ObjectVersion, index: int, ahead: dict[int, Flight]) -> bool:
        flight = self._flights.get(obj.key(index))
        if flight is None:
            return False
        ahead[index] = flight
        return True

    def _start_fetch(
        self, obj: ObjectVersion, run: list[tuple[int, Flight]], last: int, *, ends_window: bool = False
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
        chain_in: asyncio.Future[Tail | None] | None = None
        link = self._links.get(obj.key(first))
        if link is not None and link.waiter is None and end_page <= link.last:
            del self._links[obj.key(first)]
            chain_in = link.waiter = asyncio.get_running_loop().create_future()
            link.called.set()
            last = link.last  # the stream ends where the read that opened it ends
        chain_out: Link | None = None
        if ends_window and end_page < last and self._read_ahead and (chain_in is not None or not obj.chained):
            chain_out = self._links[obj.key(end_page + 1)] = Link(last, obj)
            obj.chained = True
        chained = chain_in is not None or chain_out is not None
        stream_end = min((last + 1) * self._page_size, obj.info.size) if chained else None
        self._spawn(self._fetch(obj, run, chain_in, chain_out, stream_end))

    async def _fetch(
        self,
        obj: ObjectVersion,
        run: list[tuple[int, Flight]],
        chain_in: asyncio.Future[Tail | None] | None = None,
        chain_out: Link | None = None,
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
                    data = take(parts, n)
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
                    chain_out.waiter.set_result(Tail(body, parts, have))
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
                await aclose_stream(body)

    def _call_off(self, obj: ObjectVersion) -> None:
        """The read of `obj` is over: fetches parked with its streams close them now."""
        for link in self._links.values():
            if link.owner is obj:
                link.called.set()

    def _unlink(self, obj: ObjectVersion, run: list[tuple[int, Flight]], link: Link) -> None:
        key = obj.key(run[-1][0] + 1)
        if self._links.get(key) is link:
            del self._links[key]

    async def _store_page(self, obj: ObjectVersion, index: int, flight: Flight) -> None:
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
                self._write_failures.record(index, obj.path, exc)
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

    def _release(self, key: PageKey, flight: Flight) -> None:
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


def take(parts: list[bytes | memoryview], n: int) -> bytes:
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
