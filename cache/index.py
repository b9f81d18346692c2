"""The page index: one SQLite database beside the page files (diskcache's layout, our own schema).

Why SQLite directly and not diskcache: eviction here orders by (expired, priority class, last
access), charges pages to per-directory quotas and deletes by object and by prefix. diskcache's
Cache is a key-value table with a fixed set of single-column eviction policies and no prefix or
grouped queries, so every one of those would become a scan over its rows. We keep its ideas:
counters maintained by triggers (a lookup, not a scan), eviction orders as data, bounded culls,
data files written before the row.

A hit never queries this index (see store.py); an object's first read (its row, on the event
loop), writes, evictions and admin calls do.
Every method here may block: callers run them in the store's executor threads (all but
`get_object(nowait=True)`, which never waits for a lock). Each thread has its
own connection. Writers are serialised in-process by a lock and across processes by an flock of
`<index>.lock` (then SQLite's BEGIN IMMEDIATE never waits in its sleeping busy handler), so several
gateway processes may share one cache directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ufs_adapters.base import ObjectInfo

from .stats import EvictionReason

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS pages (
    name TEXT PRIMARY KEY,          -- PageKey.name: the file name
    mount TEXT NOT NULL,
    path TEXT NOT NULL,
    version TEXT NOT NULL,
    idx INTEGER NOT NULL,
    nspath TEXT NOT NULL,           -- namespace path of the object: rules are re-matched from it
    size INTEGER NOT NULL,          -- bytes of the file (header + data)
    store_time REAL NOT NULL,
    access_time REAL NOT NULL,
    expire_time REAL,               -- store_time + the rule's ttl, NULL for no ttl
    priority INTEGER NOT NULL,      -- policy.Priority
    quota_owner TEXT                -- the quota rule's directory that pays for this page
);
CREATE INDEX IF NOT EXISTS pages_object ON pages (mount, path, version, idx);
CREATE INDEX IF NOT EXISTS pages_order ON pages (priority, access_time);
CREATE INDEX IF NOT EXISTS pages_expire ON pages (expire_time) WHERE expire_time IS NOT NULL;
CREATE INDEX IF NOT EXISTS pages_quota ON pages (quota_owner, priority, access_time)
    WHERE quota_owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS pages_quota_expire ON pages (quota_owner, expire_time)
    WHERE quota_owner IS NOT NULL AND expire_time IS NOT NULL;

-- Counters kept by triggers, so capacity and quota checks are lookups.
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL,
    pages INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS quota_used (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL);

CREATE TRIGGER IF NOT EXISTS pages_insert AFTER INSERT ON pages BEGIN
    UPDATE totals SET bytes = bytes + new.size, pages = pages + 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS pages_delete AFTER DELETE ON pages BEGIN
    UPDATE totals SET bytes = bytes - old.size, pages = pages - 1 WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS pages_quota_insert AFTER INSERT ON pages WHEN new.quota_owner IS NOT NULL
BEGIN
    INSERT INTO quota_used VALUES (new.quota_owner, new.size)
        ON CONFLICT (owner) DO UPDATE SET bytes = bytes + new.size;
END;
CREATE TRIGGER IF NOT EXISTS pages_quota_delete AFTER DELETE ON pages WHEN old.quota_owner IS NOT NULL
BEGIN
    UPDATE quota_used SET bytes = bytes - old.size WHERE owner = old.quota_owner;
END;

-- What the cache knows of each object that has pages: HEAD after a restart needs no UFS call.
CREATE TABLE IF NOT EXISTS objects (
    mount TEXT NOT NULL,
    path TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    content_type TEXT,
    metadata TEXT NOT NULL,
    parts_count INTEGER,
    checked_at REAL NOT NULL,       -- wall-clock time the UFS last confirmed this etag
    revalidate_at REAL,             -- when the stale sweep should ask the UFS again; NULL: never
    PRIMARY KEY (mount, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_due ON objects (mount, revalidate_at) WHERE revalidate_at IS NOT NULL;

-- Writes through Hoard, for the other worker processes to forget what they knew of these paths
-- (cache/invalidations.py). AUTOINCREMENT: numbers are never reused, so a gap means trimmed rows.
CREATE TABLE IF NOT EXISTS invalidations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    mount TEXT NOT NULL,
    path TEXT NOT NULL,             -- a path, or with `prefix` every path under it
    prefix INTEGER NOT NULL,
    at REAL NOT NULL                -- wall-clock time of the write
);
"""

# Eviction orders as data: the store asks for victims by reason and never branches on the order.
# Expired pages go first in every cull; among the rest, LOW before MEDIUM before HIGH, least
# recently used first within a class. Each query walks an index and stops at LIMIT.
VICTIMS: dict[str, str] = {
    "expired": "SELECT name, size FROM pages WHERE expire_time IS NOT NULL AND expire_time <= ?"
    " ORDER BY expire_time LIMIT ?",
    "ordered": "SELECT name, size FROM pages ORDER BY priority, access_time LIMIT ?",
    "quota_expired": "SELECT name, size FROM pages WHERE quota_owner = ? AND expire_time IS NOT NULL"
    " AND expire_time <= ? ORDER BY expire_time LIMIT ?",
    "quota_ordered": "SELECT name, size FROM pages WHERE quota_owner = ? ORDER BY priority, access_time LIMIT ?",
}


@dataclass(frozen=True, slots=True)
class PageRow:
    name: str
    mount: str
    path: str
    version: str
    idx: int
    nspath: str
    size: int
    store_time: float
    expire_time: float | None
    priority: int
    quota_owner: str | None


@dataclass(frozen=True, slots=True)
class Invalidation:
    seq: int
    mount: str
    path: str
    prefix: bool
    at: float


@dataclass(frozen=True, slots=True)
class Victim:
    name: str
    size: int
    reason: EvictionReason


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[lo, hi) of the strings starting with `prefix` in SQLite's binary order.

    UTF-8 preserves code point order, so incrementing the last code point gives the upper bound;
    the query then walks an index instead of scanning with LIKE/GLOB (which would need escaping).
    """
    if not prefix:
        return "", None
    last = ord(prefix[-1])
    if last == 0x10FFFF:
        return prefix, None
    return prefix, prefix[:-1] + chr(last + 1)


class Txn:
    """One write transaction (BEGIN IMMEDIATE): the statements the store composes into its steps."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def exists(self, name: str) -> bool:
        return self.con.execute("SELECT 1 FROM pages WHERE name = ?", (name,)).fetchone() is not None

    def setting(self, key: str) -> str | None:
        return _setting(self.con, key)

    def set_setting(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def insert(self, row: PageRow) -> None:
        self.con.execute(
            "INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.name,
                row.mount,
                row.path,
                row.version,
                row.idx,
                row.nspath,
                row.size,
                row.store_time,
                row.store_time,
                row.expire_time,
                row.priority,
                row.quota_owner,
            ),
        )

    def delete(self, names: Iterable[str]) -> None:
        self.con.executemany("DELETE FROM pages WHERE name = ?", ((n,) for n in names))

    def totals(self) -> tuple[int, int]:
        row = self.con.execute("SELECT bytes, pages FROM totals WHERE id = 0").fetchone()
        return int(row[0]), int(row[1])

    def quota_used(self, owner: str) -> int:
        row = self.con.execute("SELECT bytes FROM quota_used WHERE owner = ?", (owner,)).fetchone()
        return int(row[0]) if row else 0

    def touch(self, touches: Sequence[tuple[float, str]]) -> None:
        # max(): a touch recorded by another process later than ours must not move the page back.
        self.con.executemany("UPDATE pages SET access_time = max(access_time, ?) WHERE name = ?", touches)

    def victims(self, need: int, limit: int, now: float, quota_owner: str | None = None) -> list[Victim]:
        """Up to `limit` pages whose sizes add up to at least `need` bytes, in eviction order:
        expired first (reason ttl), then by priority and last access (reason capacity or quota)."""
        found: list[Victim] = []
        seen: set[str] = set()
        freed = 0
        steps: list[tuple[str, tuple[object, ...], EvictionReason]]
        if quota_owner is None:
            steps = [
                (VICTIMS["expired"], (now, limit), EvictionReason.TTL),
                (VICTIMS["ordered"], (limit,), EvictionReason.CAPACITY),
            ]
        else:
            steps = [
                (VICTIMS["quota_expired"], (quota_owner, now, limit), EvictionReason.TTL),
                (VICTIMS["quota_ordered"], (quota_owner, limit), EvictionReason.QUOTA),
            ]
        for sql, params, reason in steps:
            for name, size in self.con.execute(sql, params):
                if freed >= need or len(found) >= limit:
                    return found
                if name in seen:
                    continue
                seen.add(name)
                found.append(Victim(name, int(size), reason))
                freed += int(size)
        return found

    def log_invalidation(self, mount: str, path: str, prefix: bool, at: float, keep: int) -> int:
        """Log a write through Hoard (the newest `keep` rows are kept); its sequence number."""
        cur = self.con.execute(
            "INSERT INTO invalidations (mount, path, prefix, at) VALUES (?, ?, ?, ?)",
            (mount, path, prefix, at),
        )
        seq = int(cur.lastrowid or 0)
        self.con.execute("DELETE FROM invalidations WHERE seq <= ?", (seq - keep,))
        return seq

    def upsert_object(self, mount: str, info: ObjectInfo, checked_at: float, max_age: float | None) -> None:
        # Only a new etag rewrites the row: the same object's pages arrive one by one. And only a
        # newer confirmation: a slow fill of the old version must not undo the new one's row.
        self.con.execute(
            "INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (mount, path) DO UPDATE SET"
            " etag = excluded.etag, size = excluded.size, last_modified = excluded.last_modified,"
            " content_type = excluded.content_type, metadata = excluded.metadata,"
            " parts_count = excluded.parts_count, checked_at = excluded.checked_at,"
            " revalidate_at = excluded.revalidate_at"
            " WHERE objects.etag != excluded.etag AND objects.checked_at <= excluded.checked_at",
            (
                mount,
                info.path,
                info.etag,
                info.size,
                info.last_modified.isoformat(),
                info.content_type,
                json.dumps(dict(info.metadata), sort_keys=True),
                info.parts_count,
                checked_at,
                None if max_age is None else checked_at + max_age,
            ),
        )

    def set_checked(self, mount: str, path: str, etag: str, checked_at: float, max_age: float | None) -> None:
        self.con.execute(
            "UPDATE objects SET checked_at = ?, revalidate_at = ? WHERE mount = ? AND path = ? AND etag = ?",
            (checked_at, None if max_age is None else checked_at + max_age, mount, path, etag),
        )

    def delete_objects(self, mount: str, path: str) -> None:
        self.con.execute("DELETE FROM objects WHERE mount = ? AND path = ?", (mount, path))

    def delete_objects_under(self, mount: str, prefix: str) -> None:
        lo, hi = prefix_bounds(prefix)
        if hi is None:
            self.con.execute("DELETE FROM objects WHERE mount = ? AND path >= ?", (mount, lo))
        else:
            self.con.execute(
                "DELETE FROM objects WHERE mount = ? AND path >= ? AND path < ?", (mount, lo, hi)
            )


def _info_of(row: tuple[Any, ...]) -> tuple[ObjectInfo, float]:
    path, etag, size, last_modified, content_type, metadata, parts_count, checked_at = row
    info = ObjectInfo(
        path=str(path),
        size=int(size),
        etag=str(etag),
        last_modified=datetime.fromisoformat(str(last_modified)),
        content_type=None if content_type is None else str(content_type),
        metadata=json.loads(str(metadata)),
        parts_count=None if parts_count is None else int(parts_count),
    )
    return info, float(checked_at)


class PageIndex:
    def __init__(self, path: str, *, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # Writers queue here rather than in SQLite's busy handler, which polls with sleeps (1, 2,
        # 5 ... 100 ms): threads of this process on the lock, other processes (uvicorn workers
        # sharing the cache) on an flock of `<index>.lock`, which wakes the next writer the moment
        # the last one commits. Polling had two busy workers' fills stall for tens of ms per page.
        self._write_lock = threading.Lock()
        self._lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Under the writers' locks: switching a fresh database to WAL needs it to itself, and
        # SQLite answers "database is locked" at once, without waiting, to a connection that asks
        # while another holds a write lock (worker processes open the cache at the same moment).
        with self._locked():
            try:
                self._create()
            except sqlite3.DatabaseError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                    raise
                # The index only says which pages are where: an unreadable one costs the cache,
                # not the gateway. Under the lock, so that no other worker process sets aside
                # the index this one makes next.
                log.warning("cache index %s is unreadable (%s): set aside as %s.corrupt; the cache "
                            "starts empty", path, exc, path)  # fmt: skip
                self._close_connections()
                os.replace(path, path + ".corrupt")
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path + suffix)
                self._create()

    def _close_connections(self) -> None:
        with self._connections_lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    def _create(self) -> None:
        con = self._con()
        con.execute("PRAGMA journal_mode = WAL")
        # executescript commits on its own; the statements are idempotent (IF NOT EXISTS).
        con.executescript(SCHEMA)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The write lock of every thread and process on this index (see transaction)."""
        with self._write_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _con(self) -> sqlite3.Connection:
        """The calling thread's connection; it waits up to `timeout` for a lock."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        return con if con is not None else self._connect("con", self.timeout)

    def _nowait_con(self) -> sqlite3.Connection:
        """The calling thread's connection that raises OperationalError at once where `_con`'s
        would wait for a lock (for the event loop)."""
        con: sqlite3.Connection | None = getattr(self._local, "nowait", None)
        return con if con is not None else self._connect("nowait", 0.0)

    def _connect(self, slot: str, timeout: float) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, reads run in autocommit.
        con = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            # NORMAL in WAL mode: a commit does not fsync, a power loss may drop the last
            # transactions but never corrupts the database. Losing rows only loses cached pages
            # (their files become orphans, removed at the next start).
            con.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            con.close()
            raise
        setattr(self._local, slot, con)
        with self._connections_lock:
            self._connections.append(con)
        return con

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        with self._locked():
            con = self._con()
            con.execute("BEGIN IMMEDIATE")
            try:
                yield Txn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # Reads: autocommit, no lock. Each sees a consistent snapshot of the last commit.

    def setting(self, key: str) -> str | None:
        return _setting(self._con(), key)

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as txn:
            txn.set_setting(key, value)

    def totals(self, *, nowait: bool = False) -> tuple[int, int]:
        """(bytes, pages) of every page, by every process. `nowait` as for `get_object`."""
        con = self._nowait_con() if nowait else self._con()
        row = con.execute("SELECT bytes, pages FROM totals WHERE id = 0").fetchone()
        return int(row[0]), int(row[1])

    def quota_used(self, owner: str) -> int:
        row = self._con().execute("SELECT bytes FROM quota_used WHERE owner = ?", (owner,)).fetchone()
        return int(row[0]) if row else 0

    def names_sorted(self) -> Iterator[str]:
        for (name,) in self._con().execute("SELECT name FROM pages ORDER BY name"):
            yield str(name)

    def rows_for_policy(self) -> list[tuple[str, str, float]]:
        return [
            (str(n), str(p), float(t))
            for n, p, t in self._con().execute("SELECT name, nspath, store_time FROM pages")
        ]

    def object_pages(self, mount: str, path: str, version: str | None = None) -> list[tuple[str, str, int]]:
        """(name, version, idx) of the pages of one object, of one version or all."""
        if version is None:
            cur = self._con().execute(
                "SELECT name, version, idx FROM pages WHERE mount = ? AND path = ?", (mount, path)
            )
        else:
            cur = self._con().execute(
                "SELECT name, version, idx FROM pages WHERE mount = ? AND path = ? AND version = ?",
                (mount, path, version),
            )
        return [(str(n), str(v), int(i)) for n, v, i in cur]

    def object_page_times(self, mount: str, path: str, version: str) -> list[tuple[int, float]]:
        """(idx, store_time) of the pages of one object version."""
        cur = self._con().execute(
            "SELECT idx, store_time FROM pages WHERE mount = ? AND path = ? AND version = ?",
            (mount, path, version),
        )
        return [(int(i), float(t)) for i, t in cur]

    def names_under(self, mount: str, prefix: str, limit: int) -> list[str]:
        lo, hi = prefix_bounds(prefix)
        if hi is None:
            cur = self._con().execute(
                "SELECT name FROM pages WHERE mount = ? AND path >= ? LIMIT ?", (mount, lo, limit)
            )
        else:
            cur = self._con().execute(
                "SELECT name FROM pages WHERE mount = ? AND path >= ? AND path < ? LIMIT ?",
                (mount, lo, hi, limit),
            )
        return [str(n) for (n,) in cur]

    def expired(self, now: float, limit: int) -> list[str]:
        cur = self._con().execute(
            "SELECT name FROM pages WHERE expire_time IS NOT NULL AND expire_time <= ? ORDER BY expire_time LIMIT ?",
            (now, limit),
        )
        return [str(n) for (n,) in cur]

    def get_object(self, mount: str, path: str, *, nowait: bool = False) -> tuple[ObjectInfo, float] | None:
        """The object's row. `nowait`: on a connection that raises sqlite3.OperationalError at once
        where the others would wait for a lock (for the event loop, which must not block)."""
        row = (
            (self._nowait_con() if nowait else self._con())
            .execute(
                "SELECT path, etag, size, last_modified, content_type, metadata, parts_count, checked_at"
                " FROM objects WHERE mount = ? AND path = ?",
                (mount, path),
            )
            .fetchone()
        )
        return None if row is None else _info_of(row)

    def invalidations_since(self, seq: int) -> tuple[list[Invalidation], bool]:
        """The writes logged after `seq`, oldest first, and whether some of them were trimmed
        already. On the no-wait connection (see `get_object`): the event loop reads them."""
        rows = [
            Invalidation(int(n), str(m), str(p), bool(x), float(t))
            for n, m, p, x, t in self._nowait_con().execute(
                "SELECT seq, mount, path, prefix, at FROM invalidations WHERE seq > ? ORDER BY seq", (seq,)
            )
        ]
        return rows, bool(rows) and rows[0].seq > seq + 1

    def objects_due(self, mount: str, now: float, limit: int) -> list[tuple[ObjectInfo, float]]:
        """Objects of `mount` whose version the stale sweep should confirm with the UFS."""
        cur = self._con().execute(
            "SELECT path, etag, size, last_modified, content_type, metadata, parts_count, checked_at"
            " FROM objects WHERE mount = ? AND revalidate_at IS NOT NULL AND revalidate_at <= ?"
            " ORDER BY revalidate_at LIMIT ?",
            (mount, now, limit),
        )
        return [_info_of(r) for r in cur]

    def delete_orphan_objects(self) -> int:
        """Objects rows whose pages are all gone (evicted) are forgotten."""
        with self.transaction() as txn:
            cur = txn.con.execute(
                "DELETE FROM objects WHERE NOT EXISTS (SELECT 1 FROM pages"
                " WHERE pages.mount = objects.mount AND pages.path = objects.path)"
            )
            return cur.rowcount

    def close(self) -> None:
        self._close_connections()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _setting(con: sqlite3.Connection, key: str) -> str | None:
    row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
