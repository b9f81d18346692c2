from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cache.index import Txn
from cache.keys import PageKey
from cache.pagefile import HEADER, INLINE_MAX, TMP_SUFFIX
from cache.policy import Policy, Priority, Rule
from cache.stats import EvictionReason
from cache.store import WRITERS, PageMeta, PageStore
from tests.cache.helpers import Clock
from ufs_adapters.base import ObjectInfo

P = 1000  # data bytes per test page
FILE = HEADER.size + P  # bytes each page costs


def meta(nspath: str = "/m/x", *, priority: Priority = Priority.MEDIUM, ttl: float | None = None,
         quota_owner: str | None = None, quota: int | None = None) -> PageMeta:  # fmt: skip
    info = ObjectInfo(path=nspath, size=10 * P, etag="e1", last_modified=datetime(2024, 1, 1, tzinfo=UTC))
    return PageMeta(nspath, int(priority), ttl, quota_owner, quota, info, 0.0, 60.0)


def key(path: str, index: int = 0) -> PageKey:
    return PageKey("m", path, "e1", index)


async def open_store(tmp_path: Path, clock: Clock, capacity: int = 100 * FILE, **kw: object) -> PageStore:
    return await PageStore.open(
        str(tmp_path / "c"),
        capacity=capacity,
        page_size=P,
        clock=clock,
        fsync=True,
        **kw,  # type: ignore[arg-type]
    )


async def test_write_read_roundtrip_and_counters(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Clock())
    data = os.urandom(P)
    assert await store.write(key("a"), data, meta()) is True
    assert await store.write(key("a"), data, meta()) is True  # idempotent
    assert await store.read(key("a"), P) == data
    assert await store.read(key("b"), P) is None
    assert (store.used, store.pages) == (FILE, 1)
    assert await store.probe([key("a"), key("b")]) == [True, False]
    await store.aclose()


async def test_read_with_wrong_expected_length_is_corrupt(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Clock())
    await store.write(key("a"), b"x" * P, meta())
    assert await store.read(key("a"), P - 1) is None
    assert store.evictions[EvictionReason.CORRUPT] == 1 and store.pages == 0
    await store.aclose()


@pytest.mark.parametrize("size", [P, 4 * INLINE_MAX])  # one pread; preadv(RWF_NOWAIT) into a buffer
@pytest.mark.parametrize("damage", ["flip", "truncate", "longer", "header"])
async def test_damaged_page_fails_the_inline_read_and_is_dropped(
    tmp_path: Path, size: int, damage: str
) -> None:
    """The event-loop read never hands out a damaged page: it defers to the threaded read, which
    drops the file as corrupt."""
    store = await PageStore.open(str(tmp_path / "c"), capacity=100 * size, page_size=size, clock=Clock())
    data = os.urandom(size)
    await store.write(key("a"), data, meta())
    assert await store.read_soon(key("a"), size, None) == data
    file = store.file_of(key("a").name)
    with open(file, "r+b") as f:
        raw = bytearray(f.read())
        if damage == "flip":
            raw[-size // 3] ^= 0x01
        elif damage == "truncate":
            raw = raw[:-1]
        elif damage == "longer":
            raw += b"\0"
        else:
            raw[0:4] = b"XXXX"
        f.seek(0)
        f.truncate()
        f.write(raw)
    assert await store.read_soon(key("a"), size, None) is None
    assert store.evictions[EvictionReason.CORRUPT] == 1 and not os.path.exists(file)
    await store.aclose()


async def test_eviction_order_expired_then_low_medium_high_then_lru(tmp_path: Path) -> None:
    clock = Clock()
    store = await open_store(tmp_path, clock, capacity=6 * FILE)
    pages = [
        ("high-old", Priority.HIGH, None),
        ("med-old", Priority.MEDIUM, None),
        ("low-new", Priority.LOW, None),
        ("med-new", Priority.MEDIUM, None),
        ("high-ttl", Priority.HIGH, 5.0),
        ("low-touched", Priority.LOW, None),
    ]
    for name, prio, ttl in pages:
        clock.advance(1)
        await store.write(key(name), b"x" * P, meta(priority=prio, ttl=ttl))
    clock.advance(1)
    assert await store.read(key("low-touched"), P) is not None  # most recently used LOW
    clock.advance(10)  # high-ttl expires
    order = []
    for i in range(6):
        await store.write(key(f"new{i}"), b"y" * P, meta(priority=Priority.HIGH))
        present = await store.probe([key(n) for n, _, _ in pages])
        gone = [n for (n, _, _), p in zip(pages, present, strict=True) if not p and n not in order]
        order.extend(gone)
    assert order == ["high-ttl", "low-new", "low-touched", "med-old", "med-new", "high-old"]
    assert store.evictions[EvictionReason.TTL] == 1 and store.evictions[EvictionReason.CAPACITY] == 5
    assert store.used == 6 * FILE
    await store.aclose()


async def test_quota_evicts_only_its_own_pages(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Clock())
    for i in range(5):
        await store.write(key(f"other{i}"), b"o" * P, meta("/m/other"))
    quota = meta("/m/q/x", quota_owner="/m/q/", quota=3 * FILE)
    for i in range(10):
        assert await store.write(key(f"q{i}"), b"q" * P, quota)
    assert await store.quota_used("/m/q/") == 3 * FILE
    assert await store.probe([key(f"q{i}") for i in range(10)]) == [False] * 7 + [True] * 3
    assert all(await store.probe([key(f"other{i}") for i in range(5)]))
    assert store.evictions[EvictionReason.QUOTA] == 7
    # A page larger than its quota is not stored and evicts nothing.
    assert not await store.write(key("big"), b"b" * P, meta("/m/t", quota_owner="/m/t/", quota=10))
    assert store.pages == 8
    await store.aclose()


async def test_capacity_smaller_than_a_page_stores_nothing(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Clock(), capacity=P)
    assert not await store.write(key("a"), b"a" * P, meta())
    assert store.pages == 0 and store.not_stored == 1
    await store.aclose()


async def test_cull_is_bounded_per_insert(tmp_path: Path) -> None:
    store = await open_store(tmp_path, Clock(), capacity=10 * FILE, cull_limit=2)
    for i in range(10):
        await store.write(key(f"s{i}"), b"s" * 10, meta())  # small pages
    for i in range(10):
        await store.write(key(f"full{i}"), b"f" * P, meta())
    # Evicting two small pages never makes room for a full one: bounded, so the insert gives up.
    used = store.used
    assert used <= 10 * FILE
    await store.shrink(5 * FILE)
    assert store.used <= 5 * FILE
    await store.aclose()


async def test_reserved_free_space_is_kept(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    disk = st.f_blocks * st.f_frsize  # more than can ever be free
    store = await open_store(tmp_path, Clock(), capacity=100 * FILE, reserved=disk)
    assert not await store.write(key("a"), b"a" * P, meta())
    await store.aclose()


class SmallDisk:
    """The store's page files on a file system that holds `pages` of them: a write past that
    fails with ENOSPC, as a full disk's does (the files are real, their bytes counted on disk)."""

    def __init__(self, store: PageStore, monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
        self.refused = 0
        real = store.files.write_tmp

        def write_tmp(name: str, data: bytes, now: float, fsync: bool) -> str:
            on_disk = sum(f.stat().st_size for f in Path(store.files.pages_dir).rglob("*") if f.is_file())
            if on_disk + HEADER.size + len(data) > pages * FILE:
                self.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(name, data, now, fsync)

        monkeypatch.setattr(store.files, "write_tmp", write_tmp)


async def test_a_full_file_system_makes_room_as_the_capacity_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills before the cache's size is reached: a page write it refuses evicts pages
    (lowest priority, least recently used first) and is written again, so the cache keeps
    taking new pages instead of keeping the first ones forever."""
    store = await open_store(tmp_path, Clock(), capacity=100 * FILE)
    disk = SmallDisk(store, monkeypatch, pages=10)
    assert await store.write(key("high"), b"h" * P, meta(priority=Priority.HIGH))
    for i in range(30):
        assert await store.write(key(f"k{i}"), bytes([i]) * P, meta()), i
    # Past the tenth page every other write is refused: each refusal makes room for two pages.
    assert disk.refused == 11
    assert store.evictions[EvictionReason.CAPACITY] == 22 and store.pages == 9
    assert await store.read(key("high"), P) == b"h" * P
    assert [await store.read(key(f"k{i}"), P) for i in range(30)] == [None] * 22 + [
        bytes([i]) * P for i in range(22, 30)
    ]
    await store.aclose()


async def test_a_file_system_full_of_other_files_stores_nothing_and_evicts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path, Clock(), capacity=100 * FILE)
    SmallDisk(store, monkeypatch, pages=0)
    with pytest.raises(OSError) as refused:
        await store.write(key("a"), b"a" * P, meta())
    assert refused.value.errno == errno.ENOSPC
    assert store.pages == 0 and sum(store.evictions.values()) == 0
    assert list(Path(store.files.pages_dir).rglob("*.tmp")) == []
    await store.aclose()


async def test_a_row_whose_file_is_gone_does_not_keep_its_page_out(tmp_path: Path) -> None:
    """An eviction unlinks its files inside its transaction; if the commit then fails (a full
    disk), rows stay without files. Such a page is a miss, and storing it again works."""
    store = await open_store(tmp_path, Clock())
    assert await store.write(key("a"), b"a" * P, meta())
    os.unlink(store.file_of(key("a").name))
    assert await store.read(key("a"), P) is None
    assert await store.write(key("a"), b"a" * P, meta())
    assert await store.read(key("a"), P) == b"a" * P
    assert (store.pages, store.used) == (1, FILE)
    await store.aclose()


@pytest.mark.parametrize("damage", ["garbage", "torn"])
async def test_an_unreadable_index_is_set_aside_and_the_cache_starts_empty(
    tmp_path: Path, damage: str
) -> None:
    """An index overwritten with garbage, or one whose pages are torn: the store opens, empty (the
    page files it no longer knows go as orphans), keeps the old index beside as .corrupt, and works."""
    store = await open_store(tmp_path, Clock())
    for i in range(200):
        assert await store.write(key(f"k{i}"), bytes([i]) * P, meta())
    await store.aclose()
    index = tmp_path / "c" / "index.sqlite3"
    assert not (tmp_path / "c" / "index.sqlite3-wal").exists()  # checkpointed on close
    if damage == "garbage":
        index.write_bytes(os.urandom(8192))
    else:
        raw = bytearray(index.read_bytes())
        raw[4096:] = os.urandom(len(raw) - 4096)  # every page after the first (the schema's root)
        index.write_bytes(bytes(raw))
    store = await open_store(tmp_path, Clock())
    assert (store.pages, store.used) == (0, 0)
    assert (tmp_path / "c" / "index.sqlite3.corrupt").exists()
    assert await store.read(key("k1"), P) is None
    assert [f for f in Path(store.files.pages_dir).rglob("*") if f.is_file()] == []  # orphans removed
    assert await store.write(key("k1"), b"new" * 10, meta())
    assert await store.read(key("k1"), 30) == b"new" * 10
    await store.aclose()


async def test_every_page_directory_is_made_when_the_store_opens(tmp_path: Path) -> None:
    """A fresh cache's fills make no directories: all 256 exist once the store is open."""
    store = await open_store(tmp_path, Clock())
    pages = Path(store.files.pages_dir)
    made = sorted(p.name for p in pages.iterdir())
    assert made == [f"{i:02x}" for i in range(256)] and all((pages / d).is_dir() for d in made)
    for i in range(50):
        assert await store.write(key(f"k{i}"), bytes([i]) * P, meta())
    assert sorted(p.name for p in pages.iterdir()) == made
    assert [await store.read(key(f"k{i}"), P) for i in range(50)] == [bytes([i]) * P for i in range(50)]
    await store.aclose()


async def test_page_size_change_starts_empty(tmp_path: Path) -> None:
    clock = Clock()
    store = await open_store(tmp_path, clock)
    await store.write(key("a"), b"a" * P, meta())
    await store.aclose()
    store = await PageStore.open(str(tmp_path / "c"), capacity=100 * FILE, page_size=2 * P, clock=clock)
    assert store.pages == 0 and store.used == 0
    assert not any(files for _, _, files in os.walk(tmp_path / "c" / "pages"))
    await store.aclose()


async def test_rule_change_reapplies_priority_ttl_and_quota(tmp_path: Path) -> None:
    clock = Clock()
    path = str(tmp_path / "c")
    policy = Policy([], metadata_ttl=60)
    store = await PageStore.open(path, capacity=100 * FILE, page_size=P, clock=clock, policy=policy)
    for i in range(4):
        await store.write(key(f"q{i}"), b"q" * P, meta("/m/q/x"))
    await store.aclose()
    policy = Policy([Rule("/m/q", quota=2 * FILE, ttl=5, priority=Priority.LOW)], metadata_ttl=60)
    store = await PageStore.open(path, capacity=100 * FILE, page_size=P, clock=clock, policy=policy)
    assert await store.quota_used("/m/q/") == 4 * FILE
    clock.advance(6)
    assert await store.expire() == 4
    await store.aclose()


@pytest.mark.parametrize("fsync", [True, False])
async def test_files_and_rows_survive_reopen(tmp_path: Path, fsync: bool) -> None:
    clock = Clock()
    path = str(tmp_path / "c")
    store = await PageStore.open(path, capacity=100 * FILE, page_size=P, clock=clock, fsync=fsync)
    await store.write(key("a", 3), b"z" * P, meta("/m/a"))
    await store.aclose()
    store = await PageStore.open(path, capacity=100 * FILE, page_size=P, clock=clock, fsync=fsync)
    assert await store.read(key("a", 3), P) == b"z" * P
    assert await store.cached_indexes("m", "a", "e1") == {3}
    row = await store.get_object("m", "/m/a")  # meta() names the object by its nspath
    assert row is not None and row[0].etag == "e1"
    await store.aclose()


@pytest.mark.parametrize("n", [1, INLINE_MAX + 1, 2 * INLINE_MAX - HEADER.size, 300_001])
async def test_direct_io_writes_exact_files_around_the_page_cache(tmp_path: Path, n: int) -> None:
    """O_DIRECT pages (those over INLINE_MAX): files of exactly header + data (the last partial
    block written buffered), read back verified, across a reopen; and none of a large page's
    whole blocks went into the page cache. Small pages are written buffered."""
    path = str(tmp_path / "c")
    store = await PageStore.open(path, capacity=1 << 24, page_size=max(n, 1), fsync=False, direct_io=True)
    data = os.urandom(n)
    assert await store.write(key("a"), data, meta()) is True
    assert await store.write(key("b"), data[::-1], meta()) is True  # the thread's buffer, reused
    assert store.direct_io  # ext4 here takes O_DIRECT; had it refused, the flag would be off
    file = store.file_of(key("a").name)
    assert os.path.getsize(file) == HEADER.size + n
    fd = os.open(file, os.O_RDONLY)
    try:
        if n > INLINE_MAX:
            with pytest.raises(BlockingIOError):  # not cached: reading it would have to wait
                os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        else:
            assert os.preadv(fd, [bytearray(HEADER.size)], 0, os.RWF_NOWAIT) == HEADER.size
    finally:
        os.close(fd)
    assert await store.read(key("a"), n) == data
    assert await store.read(key("b"), n) == data[::-1]
    await store.aclose()
    store = await PageStore.open(path, capacity=1 << 24, page_size=max(n, 1), fsync=False, direct_io=True)
    assert await store.read(key("a"), n) == data
    await store.aclose()


@pytest.mark.parametrize("refused_at", ["open", "write"])
async def test_direct_io_falls_back_to_buffered_writes_where_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_at: str
) -> None:
    """A file system that refuses O_DIRECT (EINVAL at open, as tmpfs did before Linux 6.6, or at the
    write) gets buffered writes: that page and every later one are stored all the same."""
    real_open, real_write = os.open, os.write
    direct_fds: set[int] = set()

    def fake_open(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT and refused_at == "open":
            raise OSError(errno.EINVAL, "Invalid argument")
        fd = real_open(path, flags, mode)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def fake_write(fd: int, data: Any) -> int:
        if fd in direct_fds and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr("cache.store.os.open", fake_open)
    monkeypatch.setattr("cache.store.os.write", fake_write)
    n = 2 * INLINE_MAX
    store = await PageStore.open(
        str(tmp_path / "c"), capacity=1 << 24, page_size=n, fsync=False, direct_io=True
    )
    data = os.urandom(n)
    assert await store.write(key("a"), data, meta()) is True
    assert not store.direct_io
    assert await store.write(key("b"), data, meta()) is True
    assert os.path.getsize(store.file_of(key("a").name)) == HEADER.size + n
    assert await store.read(key("a"), n) == data
    assert await store.read(key("b"), n) == data
    await store.aclose()


async def test_pages_of_the_two_level_layout_are_moved_and_kept(tmp_path: Path) -> None:
    """A cache written as pages/ab/cd/<name> (before LAYOUT) opens with its pages, now one level
    down; the move happens once, and the second process to open finds nothing left to move."""
    clock = Clock()
    path = tmp_path / "c"
    store = await open_store(tmp_path, clock)
    data = {i: os.urandom(P) for i in range(20)}
    for i, d in data.items():
        await store.write(key("a", i), d, meta("/m/a"))
    await store.aclose()
    for i in data:  # back to the old layout, as an older Hoard left it
        name = key("a", i).name
        old = path / "pages" / name[:2] / name[2:4] / name
        old.parent.mkdir(exist_ok=True)
        os.replace(path / "pages" / name[:2] / name, old)
    with contextlib.closing(sqlite3.connect(path / "index.sqlite3")) as con, con:
        con.execute("DELETE FROM settings WHERE key = 'layout'")

    first, second = await asyncio.gather(open_store(tmp_path, clock), open_store(tmp_path, clock))
    for s in (first, second):
        assert s.pages == len(data)
        assert [await s.read(key("a", i), P) for i in data] == list(data.values())
    dirs = [p for p in (path / "pages").rglob("*") if p.is_dir()]
    assert dirs and all(p.parent == path / "pages" for p in dirs)
    assert first.evictions[EvictionReason.CORRUPT] == second.evictions[EvictionReason.CORRUPT] == 0
    await first.aclose()
    await second.aclose()


async def test_two_stores_share_one_directory(tmp_path: Path) -> None:
    """Two gateway processes on one cache directory: separate locks, one SQLite file."""
    clock = Clock()
    a = await open_store(tmp_path, clock, capacity=30 * FILE)
    b = await open_store(tmp_path, clock, capacity=30 * FILE)
    results = await asyncio.gather(
        *(s.write(key(f"k{i}"), bytes([i]) * P, meta()) for i in range(40) for s in (a, b))
    )
    assert all(results)
    await a.flush()
    await b.flush()
    assert a.used == b.used <= 30 * FILE and a.pages == b.pages
    stored = [await a.read(key(f"k{i}"), P) for i in range(40)]
    assert all(d is None or d == bytes([i]) * P for i, d in enumerate(stored))
    assert sum(d is not None for d in stored) == a.pages
    # Only one of them writes now: the other sees the new totals when it asks the index.
    assert await a.write(key("late"), b"l" * (P // 2), meta())  # a smaller page: `used` changes
    assert (a.used, a.pages) != (b.used, b.pages)
    b.refresh_totals()
    assert (a.used, a.pages) == (b.used, b.pages)
    await a.aclose()
    await b.aclose()


async def test_concurrent_writes_are_group_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers that arrive while a transaction is open share the next one: fewer transactions
    than pages, and every page stored with its row."""
    store = await open_store(tmp_path, Clock())
    index = store.index
    opened = 0
    real = index.transaction

    @contextlib.contextmanager
    def slow_transaction() -> Iterator[Txn]:
        nonlocal opened
        opened += 1
        with real() as txn:
            time.sleep(0.05)  # the others queue up meanwhile
            yield txn

    monkeypatch.setattr(index, "transaction", slow_transaction)
    results = await asyncio.gather(*(store.write(key(f"k{i}"), bytes([i]) * P, meta()) for i in range(40)))
    assert all(results)
    assert 0 < opened < 20
    assert (store.pages, store.used) == (40, 40 * FILE)
    monkeypatch.undo()
    await store.aclose()
    store = await open_store(tmp_path, Clock())  # the rows committed: they are there after a reopen
    assert [await store.read(key(f"k{i}"), P) for i in range(40)] == [bytes([i]) * P for i in range(40)]
    assert store.pages == 40
    await store.aclose()


class SlowFiles:
    """PageStore._write_file taking `delay` seconds (a slow disk) and failing the page of path k7
    (ENOSPC); `inside` is how many run at this moment, `most` the most that ever ran at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
        self.inside = self.most = 0
        self._lock = threading.Lock()
        real = PageStore._write_file

        def slow(store: PageStore, k: PageKey, data: bytes, m: PageMeta) -> Any:
            with self._lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                time.sleep(delay)
                if k.path == "k7":
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(store, k, data, m)
            finally:
                with self._lock:
                    self.inside -= 1

        monkeypatch.setattr(PageStore, "_write_file", slow)


async def test_page_writes_go_through_one_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many pages are written at once, one thread at a time writes page files (the lane),
    and a page whose file cannot be written fails alone; the lane goes on with the next ones."""
    store = await open_store(tmp_path, Clock())
    files = SlowFiles(monkeypatch, 0.002)
    results = await asyncio.gather(
        *(store.write(key(f"k{i}"), bytes([i]) * P, meta()) for i in range(30)), return_exceptions=True
    )
    assert files.most == 1
    assert isinstance(results[7], OSError) and results[7].errno == errno.ENOSPC
    assert all(r is True for i, r in enumerate(results) if i != 7)
    assert await store.write(key("after"), b"a" * P, meta()) is True  # the lane is free again
    assert store.pages == 30
    assert [await store.read(key(f"k{i}"), P) for i in (0, 7, 29)] == [bytes([0]) * P, None, bytes([29]) * P]
    monkeypatch.undo()
    await store.aclose()


async def test_large_pages_files_are_written_in_parallel_and_committed_by_the_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages over INLINE_MAX written with O_DIRECT: WRITERS threads write their files at once (each
    such write waits for the disk), the lane commits their rows; a failed file fails alone."""
    big = INLINE_MAX + 4096
    store = await PageStore.open(
        str(tmp_path / "c"), capacity=1 << 26, page_size=big, fsync=False, direct_io=True
    )
    files = SlowFiles(monkeypatch, 0.01)
    results = await asyncio.gather(
        *(store.write(key(f"k{i}"), bytes([i]) * big, meta()) for i in range(12)), return_exceptions=True
    )
    assert files.most == WRITERS > 1
    assert isinstance(results[7], OSError) and results[7].errno == errno.ENOSPC
    assert all(r is True for i, r in enumerate(results) if i != 7)
    assert store.pages == 11 and len(await store.cached_indexes("m", "k3", "e1")) == 1
    got = [await store.read(key(f"k{i}"), big) for i in (0, 7, 11)]
    assert got == [bytes([0]) * big, None, bytes([11]) * big]
    # A writer that stops waiting (its task cancelled) leaves no temporary file behind.
    writes = [store.write_soon(key(f"late{i}"), b"x" * big, meta()) for i in range(6)]
    async with asyncio.timeout(10):
        while files.inside < WRITERS:  # cancelled while their files are being written
            await asyncio.sleep(0.001)
    for w in writes:
        w.cancel()
    await asyncio.gather(*writes, return_exceptions=True)
    monkeypatch.undo()
    await store.aclose()
    assert list((tmp_path / "c" / "pages").rglob(f"*{TMP_SUFFIX}")) == []


async def test_failed_group_commit_fails_its_writes_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path, Clock())
    calls = 0
    real = Txn.upsert_object

    def flaky(self: Txn, *args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise sqlite3.OperationalError("disk I/O error")
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Txn, "upsert_object", flaky)
    results = await asyncio.gather(
        *(store.write(key(f"k{i}"), b"x" * P, meta()) for i in range(20)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, sqlite3.OperationalError)]
    assert failed and all(r is True for r in results if r not in failed)
    monkeypatch.undo()
    await store.flush()
    # Every page file on disk has its row, and the failed pages are simply not cached.
    # (No temporary file is left beside them either.)
    files = sum(len(f) for _, _, f in os.walk(tmp_path / "c" / "pages"))
    assert files == store.pages == 20 - len(failed)
    await store.aclose()


def _open_and_close(directory: str, barrier: Any) -> None:
    """One worker process starting on a cache directory (child of the test below)."""
    barrier.wait()
    store = asyncio.run(PageStore.open(directory, capacity=100 * FILE, page_size=P))
    asyncio.run(store.aclose())


def test_worker_processes_open_a_fresh_cache_at_once(tmp_path: Path) -> None:
    """uvicorn starts its workers together, and each opens the cache: on a fresh directory one of
    them switches the index to WAL and creates the schema while others do the same or already
    write their settings. None may fail with "database is locked"."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        directory = str(tmp_path / f"c{round_}")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_and_close, args=(directory, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0], round_


async def test_an_object_row_is_read_on_the_event_loop_or_in_a_thread_when_sqlite_would_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path, Clock())
    await store.write(key("a"), b"z" * P, meta("/m/a"))
    run = store._run

    def no_thread(*args: object) -> Any:
        raise AssertionError("an index thread was used")

    monkeypatch.setattr(store, "_run", no_thread)
    row = await store.get_object("m", "/m/a")
    assert row is not None and row[0].etag == "e1"
    assert await store.get_object("m", "/m/b") is None

    class Locked:  # what a connection with no busy timeout raises where SQLite would wait
        def execute(self, *args: object) -> Any:
            raise sqlite3.OperationalError("database is locked")

    threads: list[str] = []

    def in_thread(fn: Any, *args: object) -> Any:
        threads.append(fn.__name__)
        return run(fn, *args)

    monkeypatch.setattr(store.index, "_nowait_con", Locked)
    monkeypatch.setattr(store, "_run", in_thread)
    row = await store.get_object("m", "/m/a")
    assert row is not None and row[0].etag == "e1"
    assert threads == ["get_object"]
    await store.aclose()
