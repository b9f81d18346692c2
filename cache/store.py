"""Page files on local disk (their format, writes and reads: pagefile.py), indexed by PageIndex.

Layout under the cache directory:

    index.sqlite3          the index (WAL mode)
    index.sqlite3.lock     flock that queues writers of every process (PageIndex.transaction)
    index.sqlite3.corrupt  an index SQLite found corrupt at start-up, set aside (the cache starts empty)
    pages/ab/<name>        one file per page: HEADER + data, name = PageKey.name (hex), under
                           one of 256 directories (LAYOUT)
    pages/ab/<name>.<pid>.<tid>.tmp
                           a page being written, beside its final name: the rename into place
                           then locks one directory, not two and the file system's rename
                           mutex, and creating it locks one of 256 directories, not one shared
                           by every writer (perf showed writers spinning on that lock)

A page file is self-describing: its header holds a magic, the CRC-32 and length of the data and
the time it was stored. That makes the hit path one thread hop with no index query: open the file
named by the key, check length and checksum, return the bytes. The version is part of the key, so
a file that exists holds the right bytes or fails its checksum; it can never hold another version.

Crash ordering (as diskcache's `set`): the data goes to a temporary file, is fsynced, and only
then, inside the index's write transaction, renamed into place and given its row. A crash leaves
at worst a file without a row (removed by `recover` at the next start) or, after a power loss
with fsync off, a torn file under a row (caught by the checksum on read, dropped as `corrupt`).
Pages larger than INLINE_MAX are written with O_DIRECT (`direct_io`, on by default): on the
development VM a buffered page write cost 0.8-2.0 s of CPU per GB (the copy into, and the
allocation of, page-cache memory), an O_DIRECT one 0.4-0.65 (bench/disk_write.py), and Hoard's cold
read of 64 MiB objects went from 4.1 to 1.9 s of CPU per GB (bench/README.md). The first hit of such
a page reads it from the disk, and fills go no faster than the disk writes.
Evictions delete the row and unlink the file inside one write transaction, so no writer can put
the same key back between the two steps. A page write the file system refuses for want of space
(it filled before the cache's size was reached) evicts as an insert would and tries again.
Pages are written by one write lane per process (`write_soon`): the pages queued while it writes
a batch make its next batch, whose rows go in one transaction. Pages over INLINE_MAX have their
files written by WRITERS threads first, at once, and the lane only commits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

from ufs_adapters.base import ObjectInfo

from .index import PageIndex, PageRow, Txn, Victim
from .invalidations import KEEP as KEEP_INVALIDATIONS
from .invalidations import Signal
from .keys import PageKey
from .lane import Lane
from .pagefile import HEADER, INLINE_MAX, NOWAIT, SLOW, PageFiles, remove_if_dead
from .policy import Policy
from .stats import EvictionReason

log = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_THREADS = 2  # the index's threads: one may drain the write lane while another looks up
DROP_BATCH = 500  # rows deleted per transaction by free/stale/expiry, so writers are never held long
COMMIT_BATCH = 64  # pages per write-lane batch (one transaction)
WRITERS = 2  # threads writing the files of pages larger than INLINE_MAX (O_DIRECT), for the lane
FULL_DISK_TRIES = 3  # writes of a page when the file system is full, room made before each retry
# Page files sit one directory level down, pages/ab/<name> (256 directories: a million pages are
# 4,096 files per directory, which ext4 and XFS index). Until this layout there were two levels,
# pages/ab/cd/<name>: up to 65,536 directories, one made (an inode allocated) for nearly every page
# a fresh cache stored: mkdir was 4.2% of its CPU in a cold read of 64 MiB objects, 1.8% with one
# level (`--perf-cold`, bench/README.md). `_migrate_layout_sync` moves the pages of such a cache.
LAYOUT = "1"


@dataclass(frozen=True, slots=True)
class PageMeta:
    """What the index records about a page besides its key, decided by the rule of its path."""

    nspath: str
    priority: int
    ttl: float | None
    quota_owner: str | None
    quota: int | None
    info: ObjectInfo  # the object's metadata, kept so that HEAD after a restart needs no UFS call
    checked_at: float  # when the UFS last confirmed info.etag
    max_age: float | None  # revalidate after this (the stale sweep); None: immutable


@dataclass(frozen=True, slots=True)
class _PageWrite:
    """A page for the write lane."""

    key: PageKey
    data: bytes
    meta: PageMeta


@dataclass(slots=True)
class _Pending:
    """A page whose file is written (at `tmp`) and waits for its row in the lane's transaction."""

    key: PageKey
    tmp: str
    size: int  # file bytes, header included
    meta: PageMeta
    now: float
    stored: bool = False
    moved: bool = False  # renamed into place (so its writer has no temporary file to remove)
    error: Exception | None = None


class PageStore:
    """Page files + index. Construct with `await PageStore.open(...)`. What may wait for the disk
    runs in the store's own threads; on the event loop run only reads that cannot wait: a page the
    kernel has in memory (read_soon) and an object's index row (get_object)."""

    signal: Signal  # the last write logged by any process (invalidations.py), set at open

    def __init__(
        self,
        directory: str,
        *,
        capacity: int,
        page_size: int,
        reserved: int = 0,
        cull_limit: int = 16,
        fsync: bool = True,
        direct_io: bool = False,
        threads: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if page_size <= 0:
            raise ValueError(f"page_size {page_size} must be positive")
        if capacity < 0 or reserved < 0:
            raise ValueError(f"capacity {capacity} and reserved {reserved} must not be negative")
        self.directory = os.path.abspath(directory)
        self.capacity = capacity
        self.reserved = reserved
        self.page_size = page_size
        self.cull_limit = max(1, cull_limit)
        self.fsync = fsync
        self.clock = clock
        self.evictions: Counter[EvictionReason] = Counter({r: 0 for r in EvictionReason})
        self.used = 0
        self.pages = 0
        self.not_stored = 0  # pages that found no room (quota smaller than a page, cull limit reached)
        self._pages_dir = os.path.join(self.directory, "pages")
        self.files = PageFiles(self._pages_dir, page_size, direct_io)
        self._tmp_dir = os.path.join(self.directory, "tmp")
        # name -> last access; written by reader threads, applied to the index in batches so that
        # a hit costs no write transaction. Losing some (crash) only blurs the LRU order.
        self._touches: dict[str, float] = {}
        # Two pools. The index's: lookups, drops and the write lane, in INDEX_THREADS threads, so
        # that a lookup need not wait for a lane's batch. And the page readers': a hit whose page
        # is not in memory, `threads` at once, as the disk takes many reads in parallel. Every
        # thread more that wakes per request costs CPU (the GIL, and SQLite connections whose
        # caches the others' commits invalidate), so the index work that every cold read does
        # stays in two threads.
        self._executor = ThreadPoolExecutor(max_workers=INDEX_THREADS, thread_name_prefix="hoard-index")
        self._readers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hoard-pages")
        # Large pages' files are written here, WRITERS at once, before the lane commits them.
        self._writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="hoard-writer")
        self._lane: Lane[_PageWrite | _Pending, bool] = Lane(self._executor, self._write_batch, COMMIT_BATCH)
        self._index: PageIndex | None = None

    @classmethod
    async def open(
        cls,
        directory: str,
        *,
        capacity: int,
        page_size: int,
        policy: Policy | None = None,
        reserved: int = 0,
        cull_limit: int = 16,
        fsync: bool = True,
        direct_io: bool = False,
        threads: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> PageStore:
        store = cls(
            directory,
            capacity=capacity,
            page_size=page_size,
            reserved=reserved,
            cull_limit=cull_limit,
            fsync=fsync,
            direct_io=direct_io,
            threads=threads,
            clock=clock,
        )
        try:
            await store._run(store._open_sync, policy)
        except BaseException:
            store._executor.shutdown(wait=False)
            store._readers.shutdown(wait=False)
            store._writers.shutdown(wait=False)
            raise
        return store

    # -- plumbing

    def _run(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """`fn(*args)` in an index thread."""
        return asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def _read_in_thread(self, key: PageKey, length: int, ttl: float | None) -> asyncio.Future[bytes | None]:
        return asyncio.get_running_loop().run_in_executor(self._readers, self._read_sync, key, length, ttl)

    @property
    def index(self) -> PageIndex:
        assert self._index is not None, "PageStore used before open()"
        return self._index

    def file_of(self, name: str) -> str:
        return self.files.file_of(name)

    @property
    def direct_io(self) -> bool:
        """Whether pages over INLINE_MAX are written with O_DIRECT (off once the disk refused it)."""
        return self.files.direct_io

    def _refresh(self, txn: Txn | None = None) -> None:
        self.used, self.pages = txn.totals() if txn is not None else self.index.totals()

    def refresh_totals(self) -> None:
        """`used` and `pages` from the index now, on the calling thread (one row; a read SQLite
        would have to wait for keeps the last ones). A process's own are otherwise refreshed by
        its own writes only, and the other worker processes sharing the cache write too."""
        with contextlib.suppress(sqlite3.OperationalError):
            self.used, self.pages = self.index.totals(nowait=True)

    # -- start-up

    def _open_sync(self, policy: Policy | None) -> None:
        os.makedirs(self._pages_dir, exist_ok=True)
        self._index = PageIndex(os.path.join(self.directory, "index.sqlite3"))
        self.signal = Signal(os.path.join(self.directory, "invalidations.seq"))
        stored = self.index.setting("page_size")
        if stored is not None and int(stored) != self.page_size:
            # Page indexes mean nothing under another page size: start empty.
            log.warning("cache page size changed from %s to %d; dropping all pages", stored, self.page_size)
            self._drop_all_sync()
        self.index.set_setting("page_size", str(self.page_size))
        self._migrate_layout_sync()
        self.files.make_dirs()
        if policy is not None and self.index.setting("policy") != policy.fingerprint():
            self._reapply_sync(policy)
            self.index.set_setting("policy", policy.fingerprint())
        self._recover_sync()
        self._refresh()

    def _migrate_layout_sync(self) -> None:
        """Move the files of a cache written in the two-level layout (pages/ab/cd/<name>) up to
        pages/ab/<name>, once: under the write lock, as every worker process opens the store."""
        if self.index.setting("layout") == LAYOUT:
            return
        with self.index.transaction() as txn:
            if txn.setting("layout") == LAYOUT:
                return  # another process migrated while we waited for the lock
            moved = 0
            for top in os.scandir(self._pages_dir):
                if not top.is_dir():
                    continue
                for sub in os.scandir(top.path):
                    if sub.is_dir():  # page files are never directories: an old second level
                        for entry in os.scandir(sub.path):
                            os.replace(entry.path, os.path.join(top.path, entry.name))
                            moved += 1
                        os.rmdir(sub.path)
            txn.set_setting("layout", LAYOUT)
        if moved:
            log.info("cache layout: moved %d page files to pages/ab/<name>", moved)

    def _drop_all_sync(self) -> None:
        while names := [n for n, _ in zip(self.index.names_sorted(), range(DROP_BATCH), strict=False)]:
            self._drop_sync(names, EvictionReason.FREE, count=False)

    def _reapply_sync(self, policy: Policy) -> None:
        """Rules changed since the pages were stored: recompute each page's priority, expiry and
        quota owner from its namespace path, and rebuild the quota counters."""
        rows = self.index.rows_for_policy()
        with self.index.transaction() as txn:
            updates = []
            for name, nspath, store_time in rows:
                rule = policy.match(nspath)
                expire = None if rule.ttl is None else store_time + rule.ttl
                owner = rule.prefix if rule.quota is not None else None
                updates.append((int(rule.priority), expire, owner, name))
            txn.con.executemany(
                "UPDATE pages SET priority = ?, expire_time = ?, quota_owner = ? WHERE name = ?", updates
            )
            txn.con.execute("DELETE FROM quota_used")
            txn.con.execute(
                "INSERT INTO quota_used SELECT quota_owner, SUM(size) FROM pages"
                " WHERE quota_owner IS NOT NULL GROUP BY quota_owner"
            )

    def _recover_sync(self) -> None:
        """Make files and rows agree after a crash: remove files without rows, rows without files,
        and temporary files of dead writers.

        Files and rows are both walked in name order and merged, so memory stays flat. The walk
        runs outside the write lock (other processes may be writing); each mismatch is confirmed
        again inside a write transaction, where no writer is between its rename and its row.
        """
        now = time.time()
        if os.path.isdir(self._tmp_dir):  # where caches written before 2026-11-26 kept them
            for entry in os.scandir(self._tmp_dir):
                remove_if_dead(entry.path, entry.name, now)
        files, rows = self.files.names_sorted(now), self.index.names_sorted()
        orphans: list[str] = []  # files without rows
        missing: list[str] = []  # rows without files
        file, row = next(files, None), next(rows, None)
        while file is not None or row is not None:
            if row is None or (file is not None and file < row):
                orphans.append(file)  # type: ignore[arg-type]
                file = next(files, None)
            elif file is None or row < file:
                missing.append(row)
                row = next(rows, None)
            else:
                file, row = next(files, None), next(rows, None)
        for batch in _batches(orphans, DROP_BATCH):
            with self.index.transaction() as txn:
                for name in batch:
                    if not txn.exists(name):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self.file_of(name))
        for batch in _batches(missing, DROP_BATCH):
            with self.index.transaction() as txn:
                gone = [n for n in batch if not os.path.exists(self.file_of(n))]
                txn.delete(gone)
        if orphans or missing:
            log.info(
                "cache recovery: removed %d orphan files and %d rows without files",
                len(orphans),
                len(missing),
            )

    # -- the hit path

    def read_soon(self, key: PageKey, length: int, ttl: float | None) -> asyncio.Future[bytes | None]:
        """Start reading a page; the future gives its data, or None if it is not cached.

        Separate from `read` so a reader can start the next page before sending this one.
        """
        if length <= INLINE_MAX or NOWAIT:
            name, now = key.name, self.clock()  # the name is a hash: made once per read
            data = self.files.read_inline(name, length, ttl, now)
            if data is not SLOW:
                if data is not None:
                    self._touches[name] = now
                done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
                done.set_result(cast("bytes | None", data))
                return done
        return self._read_in_thread(key, length, ttl)

    async def read(self, key: PageKey, length: int, ttl: float | None = None) -> bytes | None:
        return await self._read_in_thread(key, length, ttl)

    def _read_sync(self, key: PageKey, length: int, ttl: float | None) -> bytes | None:
        """Data of the page if its file is whole (PageFiles.read_checked). A file that fails is
        dropped (`corrupt`); one older than `ttl` (the current rule's, so a changed rule applies
        at once) is dropped as `ttl`. Both are misses."""
        name = key.name
        data, ino, store_time = self.files.read_checked(name, length)
        if data is None:
            if ino >= 0:
                log.warning("cache page %s (%s page %d) is corrupt; dropping it", name, key.path, key.index)
                self._drop_if_same(name, ino, EvictionReason.CORRUPT)
            return None
        now = self.clock()
        if ttl is not None and store_time + ttl <= now:
            self._drop_if_same(name, ino, EvictionReason.TTL)
            return None
        self._touches[name] = now
        return data

    def _drop_if_same(self, name: str, ino: int, reason: EvictionReason) -> None:
        """Drop the page only if its file is still the one we read: a writer may have replaced
        a bad file with a good one in the meantime."""
        path = self.file_of(name)
        with self.index.transaction() as txn:
            try:
                if os.stat(path).st_ino != ino:
                    return
                os.unlink(path)
            except FileNotFoundError:
                pass
            txn.delete([name])
            self.evictions[reason] += 1
            self._refresh(txn)

    async def probe(self, keys: Sequence[PageKey]) -> list[bool]:
        """Which of `keys` have a page file (not verified; a read still may miss)."""
        return await self._run(self._probe_sync, keys)

    def has(self, key: PageKey) -> bool:
        """Whether the page's file exists, looked up on the calling thread (one stat)."""
        return os.path.exists(self.file_of(key.name))

    def _probe_sync(self, keys: Sequence[PageKey]) -> list[bool]:
        return [self.has(k) for k in keys]

    # -- the fill path

    async def write(self, key: PageKey, data: bytes, meta: PageMeta) -> bool:
        """Store a page; False if it found no room (it is then simply not cached)."""
        return await self.write_soon(key, data, meta)

    def write_soon(self, key: PageKey, data: bytes, meta: PageMeta) -> asyncio.Future[bool]:
        """Queue a page for the write lane: one disk thread at a time takes every page queued,
        writes their files and commits their rows in one transaction (cache/lane.py).

        One lane, not a write per pool thread: eight page writes at once in eight threads
        contended for the GIL, for the group commit's condition variable (each commit woke every
        waiting writer) and for the directories they created files in, and a cold read of a small
        object cost more CPU the more writes ran at once (bench/cold_cpu.py, bench/README.md).
        Pages over INLINE_MAX are the exception (`_write_large`)."""
        if self.direct_io and len(data) > INLINE_MAX:
            return asyncio.ensure_future(self._write_large(key, data, meta))
        return self._lane.submit(_PageWrite(key, data, meta))

    async def _write_large(self, key: PageKey, data: bytes, meta: PageMeta) -> bool:
        """A large page: its file written in one of the WRITERS threads, its row by the lane.
        The lane's single thread wrote these files one after another, and each O_DIRECT write
        waits for the disk (and then for a core, and the GIL): in the cold pass of 64 MiB objects
        the lane was busy for most of the pass and the fills waited for it (bench/README.md)."""
        written = self._writers.submit(self._write_file, key, data, meta)
        try:
            pending = await asyncio.wrap_future(written)
        except asyncio.CancelledError:
            written.add_done_callback(_discard)  # a file written after all goes when it is
            raise
        if pending is None:
            return False
        try:
            return await self._lane.submit(pending)
        except RuntimeError:  # the store is closing: the lane never took the file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pending.tmp)
            raise

    def _write_batch(self, batch: list[_PageWrite | _Pending]) -> list[bool | Exception]:
        """The lane's work: each page's file (unless a writer thread wrote it already), then the
        rows of all of them in one transaction. A page's result: stored or not (no room), or the
        exception its write failed with."""
        results: list[bool | Exception] = []
        written: list[tuple[int, _Pending]] = []
        for page in batch:
            if isinstance(page, _Pending):
                written.append((len(results), page))
                results.append(False)
                continue
            try:
                pending = self._write_file(page.key, page.data, page.meta)
            except Exception as exc:
                results.append(exc)
                continue
            if pending is not None:
                written.append((len(results), pending))
            results.append(False)
        try:
            if written:
                self._commit_batch([p for _, p in written])
        finally:
            for i, pending in written:
                if not pending.moved:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(pending.tmp)
                results[i] = pending.error if pending.error is not None else pending.stored
        return results

    def _write_file(self, key: PageKey, data: bytes, meta: PageMeta) -> _Pending | None:
        """The page's temporary file, written (and fsynced if asked); None if it cannot fit."""
        size = HEADER.size + len(data)
        if size > self.capacity or (meta.quota is not None and size > meta.quota):
            self.not_stored += 1
            return None
        now = self.clock()
        for attempt in range(1, FULL_DISK_TRIES + 1):
            try:
                tmp = self.files.write_tmp(key.name, data, now, self.fsync)
                break
            except OSError as exc:
                # The file system is full before the cache is (other files on it, or a size
                # above what it holds): make room as the capacity would and write again. Without
                # this the pages on disk stayed and no new one was ever stored. Room for more
                # than this page, more each time: other writers and the index's own log (the
                # eviction's commit) take some of what an eviction frees.
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                if not full or attempt == FULL_DISK_TRIES or not self._free_disk(size * (attempt + 1), now):
                    raise
        return _Pending(key, tmp, size, meta, now)

    def _free_disk(self, size: int, now: float) -> bool:
        """Evict pages worth `size` bytes (at most `cull_limit` of them, in the capacity's order)
        for a write the file system refused; whether any went."""
        with self.index.transaction() as txn:
            victims = txn.victims(size, self.cull_limit, now)
            self._evict(txn, victims)
            self._refresh(txn)
        return bool(victims)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """One transaction: for each page, room, rename into place and row. Sets every item's
        outcome; a failed transaction fails them all and unlinks the files it renamed. Its error
        goes to those items (each writer raises its own), not to the lane."""
        renamed: list[str] = []
        try:
            with self.index.transaction() as txn:
                self._apply_touches(txn)
                for item in batch:
                    try:
                        self._commit_one(txn, item, renamed)
                    except OSError as exc:  # this page's file: the others go on
                        item.error = exc
                self._refresh(txn)
        except BaseException as exc:
            for final in renamed:  # the rows did not commit: the files must not outlive them
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(final)
            for item in batch:
                if item.error is None:
                    item.stored, item.error = False, exc if isinstance(exc, Exception) else RuntimeError(exc)
            if not isinstance(exc, Exception):
                raise

    def _commit_one(self, txn: Txn, item: _Pending, renamed: list[str]) -> None:
        """The page's part of a group transaction; files it renames into place go to `renamed`."""
        key, name, meta = item.key, item.key.name, item.meta
        final = self.file_of(name)
        if txn.exists(name):
            if os.path.exists(final):
                item.stored = True  # another request stored it first; same key, same bytes
                return
            # A row whose file is gone (an eviction unlinks inside its transaction, and a commit
            # that then failed, on a full disk say, kept the row): replace it, or the page could
            # never be stored again.
            txn.delete([name])
        if not self._make_room(txn, item.size, meta, item.now):
            self.not_stored += 1
            return
        os.replace(item.tmp, final)
        item.moved = True
        renamed.append(final)
        txn.insert(
            PageRow(
                name=name,
                mount=key.mount_id,
                path=key.path,
                version=key.version,
                idx=key.index,
                nspath=meta.nspath,
                size=item.size,
                store_time=item.now,
                expire_time=None if meta.ttl is None else item.now + meta.ttl,
                priority=meta.priority,
                quota_owner=meta.quota_owner,
            )
        )
        txn.upsert_object(key.mount_id, meta.info, meta.checked_at, meta.max_age)
        item.stored = True

    def _make_room(self, txn: Txn, size: int, meta: PageMeta, now: float) -> bool:
        """Evict at most `cull_limit` pages so that `size` more bytes fit the page's quota, the
        capacity and the reserved free space. A quota only ever evicts its own pages."""
        budget = self.cull_limit
        if meta.quota_owner is not None and meta.quota is not None:
            over = txn.quota_used(meta.quota_owner) + size - meta.quota
            if over > 0:
                victims = txn.victims(over, budget, now, quota_owner=meta.quota_owner)
                self._evict(txn, victims)
                budget -= len(victims)
                if sum(v.size for v in victims) < over:
                    return False
        used, _ = txn.totals()
        over = used + size - self.capacity
        if self.reserved:
            st = os.statvfs(self.directory)
            over = max(over, self.reserved - (st.f_bavail * st.f_frsize - size))
        if over > 0:
            if budget <= 0:
                return False
            victims = txn.victims(over, budget, now)
            self._evict(txn, victims)
            if sum(v.size for v in victims) < over:
                return False
        return True

    def _evict(self, txn: Txn, victims: Iterable[Victim]) -> None:
        victims = list(victims)
        txn.delete(v.name for v in victims)
        for v in victims:
            # Inside the transaction: no writer can re-insert this key before the unlink.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file_of(v.name))
            self.evictions[v.reason] += 1

    def _apply_touches(self, txn: Txn) -> None:
        if not self._touches:
            return
        touches, self._touches = self._touches, {}
        txn.touch([(t, n) for n, t in list(touches.items())])

    # -- removal

    def _drop_sync(self, names: Sequence[str], reason: EvictionReason, *, count: bool = True) -> int:
        dropped = 0
        with self.index.transaction() as txn:
            for name in names:
                if txn.con.execute("DELETE FROM pages WHERE name = ?", (name,)).rowcount:
                    dropped += 1
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.file_of(name))
            if count:
                self.evictions[reason] += dropped
            self._refresh(txn)
        return dropped

    async def drop_object(
        self,
        mount: str,
        path: str,
        reason: EvictionReason,
        *,
        version: str | None = None,
        keep: str | None = None,
    ) -> int:
        """Drop the pages of one object: of `version` only, or of every version except `keep`.
        The object's metadata row goes too unless `keep` is its etag."""
        return await self._run(self._drop_object_sync, mount, path, reason, version, keep)

    def _drop_object_sync(
        self, mount: str, path: str, reason: EvictionReason, version: str | None, keep: str | None
    ) -> int:
        names = [n for n, v, _ in self.index.object_pages(mount, path, version) if v != keep]
        dropped = sum(self._drop_sync(batch, reason) for batch in _batches(names, DROP_BATCH))
        row = self.index.get_object(mount, path)
        if row is not None and row[0].etag != keep and (version is None or row[0].etag == version):
            with self.index.transaction() as txn:
                txn.delete_objects(mount, path)
        return dropped

    async def drop_prefix(self, mount: str, prefix: str, reason: EvictionReason) -> int:
        """Drop every page of `mount` whose path starts with `prefix`, in bounded batches."""
        return await self._run(self._drop_prefix_sync, mount, prefix, reason)

    def _drop_prefix_sync(self, mount: str, prefix: str, reason: EvictionReason) -> int:
        dropped = 0
        while names := self.index.names_under(mount, prefix, DROP_BATCH):
            dropped += self._drop_sync(names, reason)
        with self.index.transaction() as txn:
            txn.delete_objects_under(mount, prefix)
        return dropped

    async def log_invalidation(self, mount: str, path: str, *, prefix: bool = False) -> None:
        """Log a write through Hoard for the other processes sharing the cache (invalidations.py):
        committed, then published, when this returns."""
        await self._run(self._log_invalidation_sync, mount, path, prefix, self.clock())

    def _log_invalidation_sync(self, mount: str, path: str, prefix: bool, at: float) -> None:
        with self.index.transaction() as txn:
            seq = txn.log_invalidation(mount, path, prefix, at, KEEP_INVALIDATIONS)
        self.signal.publish(seq)

    async def expire(self, limit: int = 10 * DROP_BATCH) -> int:
        """Drop up to `limit` pages whose TTL has passed."""
        return await self._run(self._expire_sync, limit)

    def _expire_sync(self, limit: int) -> int:
        dropped = 0
        while dropped < limit and (
            names := self.index.expired(self.clock(), min(DROP_BATCH, limit - dropped))
        ):
            dropped += self._drop_sync(names, EvictionReason.TTL)
        return dropped

    async def shrink(self, target: int, limit: int = 10 * DROP_BATCH) -> int:
        """Evict in eviction order until at most `target` bytes are used (the background
        evictor's low watermark), at most `limit` pages."""
        return await self._run(self._shrink_sync, target, limit)

    def _shrink_sync(self, target: int, limit: int) -> int:
        evicted = 0
        while evicted < limit:
            with self.index.transaction() as txn:
                self._apply_touches(txn)
                used, _ = txn.totals()
                if used <= target:
                    break
                victims = txn.victims(used - target, min(DROP_BATCH, limit - evicted), self.clock())
                if not victims:
                    break
                self._evict(txn, victims)
                evicted += len(victims)
                self._refresh(txn)
        return evicted

    # -- housekeeping and queries

    async def flush(self) -> None:
        """Apply recorded accesses to the index and refresh the counters."""
        await self._run(self._flush_sync)

    def _flush_sync(self) -> None:
        with self.index.transaction() as txn:
            self._apply_touches(txn)
            self._refresh(txn)

    async def forget_orphan_objects(self) -> int:
        return await self._run(self.index.delete_orphan_objects)

    async def get_object(self, mount: str, path: str) -> tuple[ObjectInfo, float] | None:
        """The object's row, looked up on the event loop: the first thing a cold read does, and a
        thread hop there cost more than the lookup (one indexed SELECT; WAL mode, so no writer
        holds it up). A read SQLite would have to wait for goes to an index thread instead."""
        try:
            return self.index.get_object(mount, path, nowait=True)
        except sqlite3.OperationalError:
            return await self._run(self.index.get_object, mount, path)

    async def objects_due(self, mount: str, now: float, limit: int) -> list[tuple[ObjectInfo, float]]:
        return await self._run(self.index.objects_due, mount, now, limit)

    async def set_checked(
        self, mount: str, path: str, etag: str, checked_at: float, max_age: float | None
    ) -> None:
        await self._run(self._set_checked_sync, mount, path, etag, checked_at, max_age)

    def _set_checked_sync(
        self, mount: str, path: str, etag: str, checked_at: float, max_age: float | None
    ) -> None:
        with self.index.transaction() as txn:
            txn.set_checked(mount, path, etag, checked_at, max_age)

    async def cached_indexes(self, mount: str, path: str, version: str, ttl: float | None = None) -> set[int]:
        """Page indexes of one object version that the index holds; with `ttl`, only the pages
        stored less than `ttl` ago (an older one is dropped by the next read, not served)."""
        if ttl is None:
            rows = await self._run(self.index.object_pages, mount, path, version)
            return {i for _, _, i in rows}
        now = self.clock()
        times = await self._run(self.index.object_page_times, mount, path, version)
        return {i for i, stored in times if stored + ttl > now}

    async def quota_used(self, owner: str) -> int:
        return await self._run(self.index.quota_used, owner)

    async def aclose(self) -> None:
        if self._index is not None:
            with contextlib.suppress(Exception):
                await self.flush()
        # Work already in the threads (say, the drop of a task cancelled at shutdown) finishes
        # first: closing the connections it is using would crash SQLite.
        self._readers.shutdown(wait=True)
        self._writers.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        if self._index is not None:
            self._index.close()
            self.signal.close()


def _discard(written: Future[_Pending | None]) -> None:
    """Remove the temporary file of a page written for a writer that stopped waiting."""
    if not written.cancelled() and written.exception() is None and (pending := written.result()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pending.tmp)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
