"""Load jobs as every uvicorn worker sees them.

A job runs in the worker whose admin request started it. That worker publishes the job's progress
to `<metastore>/jobs/<id>.json` twice a second, so a status request served by any other worker
answers from the file, and a stop request served elsewhere leaves a `<id>.stop` file that the
owning worker acts on. A start that finds a job running elsewhere returns that job.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from cache.jobs import LoadJobs
from cache.keys import Source

PUBLISH_EVERY = 0.5
# A published "running" job not refreshed for this long belongs to a worker that died.
STALE_AFTER = 5.0


class SharedJobs:
    def __init__(self, jobs: LoadJobs, directory: Path) -> None:
        self.jobs = jobs
        self.dir = directory

    def _file(self, ns_path: str, suffix: str = ".json") -> Path:
        return self.dir / (hashlib.sha256(ns_path.encode()).hexdigest()[:32] + suffix)

    def _published(self, ns_path: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._file(ns_path).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _running_elsewhere(self, ns_path: str) -> dict[str, Any] | None:
        data = self._published(ns_path)
        if data and data.get("state") == "running" and _worker_alive(data):
            return data
        return None

    async def start(self, src: Source, prefix: str) -> dict[str, Any]:
        ns = src.namespace_of(prefix)
        local = self.jobs.status(ns)
        if local is None or local.state != "running":
            other = await anyio.to_thread.run_sync(self._running_elsewhere, ns)
            if other is not None:
                return other
        job = self.jobs.start(src, prefix)
        await anyio.to_thread.run_sync(self._publish, ns, job.as_dict(time.time()))
        return job.as_dict(time.time())

    async def status(self, ns_path: str) -> dict[str, Any] | None:
        local = self.jobs.status(ns_path)
        if local is not None:
            return local.as_dict(time.time())
        data = await anyio.to_thread.run_sync(self._published, ns_path)
        if data is not None and data.get("state") == "running" and not _worker_alive(data):
            # Its worker died (killed, or this gateway restarted): the job will never finish.
            errors = [*data.get("last_errors", []), "the worker running this load stopped"]
            data = {**data, "state": "failed", "last_errors": errors}
        return data

    async def stop(self, ns_path: str) -> dict[str, Any] | None:
        local = self.jobs.status(ns_path)
        if local is not None:
            job = await self.jobs.stop(ns_path)
            return job.as_dict(time.time()) if job is not None else None
        await anyio.to_thread.run_sync(self._file(ns_path, ".stop").touch)
        for _ in range(int(3 * STALE_AFTER / PUBLISH_EVERY)):  # bounded wait for the owner
            await asyncio.sleep(PUBLISH_EVERY)
            data = await anyio.to_thread.run_sync(self._published, ns_path)
            if data is None or data.get("state") != "running":
                return data
        return await anyio.to_thread.run_sync(self._published, ns_path)

    def _publish(self, ns_path: str, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self._file(ns_path)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        owner = {"published_at": time.time(), "host": _HOST, "pid": os.getpid()}
        tmp.write_text(json.dumps({**data, **owner}))
        os.replace(tmp, target)

    async def run(self) -> None:
        """Publish local jobs' progress and honour stop requests left by other workers."""
        finished: set[str] = set()
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            for job in self.jobs.jobs():
                if job.path in finished and job.state != "running":
                    continue
                stop = self._file(job.path, ".stop")
                if job.state == "running" and await anyio.to_thread.run_sync(stop.exists):
                    await self.jobs.stop(job.path)
                    with contextlib.suppress(OSError):
                        await anyio.to_thread.run_sync(stop.unlink)
                await anyio.to_thread.run_sync(self._publish, job.path, job.as_dict(time.time()))
                if job.state == "running":
                    finished.discard(job.path)
                else:
                    finished.add(job.path)


_HOST = socket.gethostname()


def _worker_alive(data: dict[str, Any]) -> bool:
    """Whether the worker that published a job may still run it: it published recently and, when
    it is a process on this host, it is another process than this one and still exists (a
    gateway restarted within STALE_AFTER must not wait for the job of its killed predecessor)."""
    if time.time() - data.get("published_at", 0) >= STALE_AFTER:
        return False
    pid = data.get("pid")
    if data.get("host") != _HOST or not isinstance(pid, int):
        return True
    if pid == os.getpid():
        return False  # not a local job (the caller looked), so an earlier process with our pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
