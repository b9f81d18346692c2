"""Load jobs: preload every object under a prefix (`hoard load /PATH`).

The listing is streamed page by page into a bounded queue that `concurrency` workers drain, so
a prefix of millions of objects needs neither the whole listing in memory nor a request per
object at once. Each object is stat'ed through the cache (so later GETs find its metadata) and
its missing pages fetched; pages already cached are not read again, so a rerun is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ufs_adapters.base import UfsError

from .keys import Source
from .reader import ObjectCache

log = logging.getLogger(__name__)

State = Literal["running", "done", "stopped", "failed"]
LIST_PAGE = 1000
MAX_ERRORS_KEPT = 20


@dataclass(slots=True)
class LoadProgress:
    """A load job's counters. Totals are None until the listing has finished."""

    path: str  # namespace path of the prefix
    started_at: float
    state: State = "running"
    objects_listed: int = 0
    objects_done: int = 0
    objects_total: int | None = None
    bytes_listed: int = 0
    bytes_total: int | None = None
    bytes_fetched: int = 0  # read from the UFS by this job
    bytes_skipped: int = 0  # already cached
    errors: int = 0
    last_errors: list[str] = field(default_factory=list)
    finished_at: float | None = None

    @property
    def bytes_done(self) -> int:
        return self.bytes_fetched + self.bytes_skipped

    def rate(self, now: float) -> float:
        """Bytes per second fetched from the UFS (cached bytes cost nothing and are not counted)."""
        elapsed = (self.finished_at or now) - self.started_at
        return self.bytes_fetched / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate; None while the total is unknown or nothing moved."""
        if self.state != "running":
            return 0.0
        if self.bytes_total is None:
            return None
        rate = self.rate(now)
        left = self.bytes_total - self.bytes_done
        return left / rate if rate > 0 else None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "path": self.path,
            "state": self.state,
            "objects_done": self.objects_done,
            "objects_listed": self.objects_listed,
            "objects_total": self.objects_total,
            "bytes_done": self.bytes_done,
            "bytes_fetched": self.bytes_fetched,
            "bytes_skipped": self.bytes_skipped,
            "bytes_listed": self.bytes_listed,
            "bytes_total": self.bytes_total,
            "errors": self.errors,
            "last_errors": list(self.last_errors),
            "rate": self.rate(now),
            "eta": self.eta(now),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class LoadJobs:
    """At most one job per namespace path; starting a running one returns its progress."""

    def __init__(
        self, cache: ObjectCache, *, concurrency: int = 8, clock: Callable[[], float] = time.time
    ) -> None:
        if concurrency <= 0:
            raise ValueError(f"load concurrency {concurrency} must be positive")
        self.cache = cache
        self.concurrency = concurrency
        self.clock = clock
        self._jobs: dict[str, LoadProgress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, src: Source, prefix: str) -> LoadProgress:
        """Start preloading every object of `src` whose UFS path starts with `prefix`."""
        path = src.namespace_of(prefix)
        task = self._tasks.get(path)
        if task is not None and not task.done():
            return self._jobs[path]
        job = LoadProgress(path=path, started_at=self.clock())
        self._jobs[path] = job
        self._tasks[path] = asyncio.ensure_future(self._run(job, src, prefix))
        return job

    def status(self, path: str) -> LoadProgress | None:
        return self._jobs.get(path)

    def jobs(self) -> list[LoadProgress]:
        return list(self._jobs.values())

    async def wait(self, path: str) -> LoadProgress | None:
        task = self._tasks.get(path)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return self._jobs.get(path)

    async def stop(self, path: str) -> LoadProgress | None:
        task = self._tasks.get(path)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return self._jobs.get(path)

    async def aclose(self) -> None:
        for path in list(self._tasks):
            await self.stop(path)

    async def _run(self, job: LoadProgress, src: Source, prefix: str) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.concurrency * 4)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._list(job, src, prefix, queue))
                for _ in range(self.concurrency):
                    tg.create_task(self._work(job, src, queue))
            job.state = "done"
        except asyncio.CancelledError:
            job.state = "stopped"
            raise
        except BaseException as exc:  # the listing failed: nothing more can be loaded
            job.state = "failed"
            self._error(job, prefix, exc)
            log.warning("load %s failed: %r", job.path, exc)
        finally:
            job.finished_at = self.clock()

    async def _list(self, job: LoadProgress, src: Source, prefix: str, queue: asyncio.Queue[Any]) -> None:
        start_after: str | None = None
        try:
            while True:
                page = await src.adapter.list_objects(
                    prefix, delimiter=None, start_after=start_after, limit=LIST_PAGE
                )
                for info in page.objects:
                    job.objects_listed += 1
                    job.bytes_listed += info.size
                    await queue.put(info.path)
                if page.next_start_after is None:
                    break
                start_after = page.next_start_after
            job.objects_total = job.objects_listed
            job.bytes_total = job.bytes_listed
        finally:
            for _ in range(self.concurrency):
                await queue.put(None)

    async def _work(self, job: LoadProgress, src: Source, queue: asyncio.Queue[Any]) -> None:
        def progress(fetched: int, skipped: int) -> None:
            job.bytes_fetched += fetched
            job.bytes_skipped += skipped

        while (path := await queue.get()) is not None:
            try:
                info = await self.cache.stat(src, path)
                await self.cache.preload(src, info, progress)
            except UfsError as exc:  # one object failing does not stop the job
                self._error(job, path, exc)
            job.objects_done += 1

    def _error(self, job: LoadProgress, path: str, exc: BaseException) -> None:
        job.errors += 1
        job.last_errors.append(f"{path}: {exc!r}")
        del job.last_errors[:-MAX_ERRORS_KEPT]
