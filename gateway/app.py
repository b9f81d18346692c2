"""The app factory. The lifespan builds every service in an AsyncExitStack; nothing is global.

The top-level ASGI callable routes `/_hoard/...` and the lifespan to a small Starlette app and every
other HTTP request straight to the S3 endpoint, so S3 requests pay for no router.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette

from cache.jobs import LoadJobs
from cache.policy import Priority, Rule
from cache.reader import ObjectCache
from cache.settings import CacheSettings
from gateway import admin
from gateway.config import CacheConfig, Config, from_env
from gateway.jobstate import SharedJobs
from gateway.memory import collect_less, keep_freed_memory
from gateway.metrics import Metrics
from gateway.namespace import MountTable
from gateway.s3 import errors
from gateway.s3.endpoint import S3Endpoint
from gateway.s3.errors import S3Error
from gateway.services import Services
from gateway.ufs import UfsStack

log = logging.getLogger("hoard")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_RELOAD_EVERY = 1.0


async def _reload_mounts(mounts: MountTable, cache: ObjectCache) -> None:
    """Other workers may add or remove mounts at run time; pick their changes up."""
    while True:
        await asyncio.sleep(_RELOAD_EVERY)
        try:
            if await mounts.reload_if_changed():
                sync_attached(mounts, cache)
        except Exception:  # a bad reload must not stop the loop
            log.exception("reloading mounts failed")


def cache_settings(c: CacheConfig) -> CacheSettings:
    rules = tuple(
        Rule(
            path=r.path,
            filter=r.filter,  # type: ignore[arg-type]  # validated by config against the same names
            max_age=r.max_age,
            priority=Priority.parse(r.priority or "medium"),
            ttl=r.ttl,
            quota=r.quota,
        )
        for r in c.rules
    )
    return CacheSettings(
        dir=str(c.dir),
        size=c.size,
        reserved=c.reserved,
        page_size=c.page_size,
        metadata_ttl=c.metadata_ttl,
        rules=rules,
        read_ahead=c.read_ahead,
        fsync=c.fsync,
        direct_io=c.direct_io,
        write_buffer=c.write_buffer,
        fill_waits=c.fill_waits,
    )


def sync_attached(mounts: MountTable, cache: ObjectCache) -> None:
    """The cache's background stale sweep covers exactly the mounted UFSs."""
    current = {m.id: m for m in mounts.mounts()}
    for mount_id in list(cache.attached()):
        if mount_id not in current:
            cache.detach(mount_id)
    for mount in current.values():
        cache.attach(mount.source)


class HoardApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = admin.AdminState()
        self.s3: S3Endpoint | None = None
        self.admin = Starlette(
            routes=admin.routes(self.state),
            lifespan=self._lifespan,
            exception_handlers=admin.EXCEPTION_HANDLERS,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        keep_freed_memory()  # each worker process: page buffers are reused, not faulted in anew
        async with contextlib.AsyncExitStack() as stack:
            ufs = UfsStack(self.config.ufs)
            mounts = await MountTable.open(
                self.config.mounts,
                self.config.metastore.dir,
                opener=ufs.open,
                wrap=ufs.wrap,
                private=self.config.private_dirs,
            )
            stack.push_async_callback(mounts.aclose)
            cache = await ObjectCache.open(cache_settings(self.config.cache))
            stack.push_async_callback(cache.aclose)
            local_jobs = LoadJobs(cache)
            stack.push_async_callback(local_jobs.aclose)
            jobs = SharedJobs(local_jobs, self.config.metastore.dir / "jobs")
            publisher = asyncio.create_task(jobs.run())
            stack.callback(publisher.cancel)
            for mount in mounts.mounts():
                cache.attach(mount.source)
            metrics = Metrics()
            metrics.watch_cache(cache)
            metrics.watch_mounts(mounts)
            stack.callback(metrics.close)
            syncer = asyncio.create_task(metrics.run())
            stack.callback(syncer.cancel)
            svc = Services(self.config, mounts, metrics, cache, jobs)
            maintenance = asyncio.create_task(cache.run_maintenance())
            stack.callback(maintenance.cancel)
            self.s3 = S3Endpoint(svc)
            self.state.verifier = self.s3.verifier  # one signing-key cache for S3 and admin calls
            self.state.services = svc
            reloader = asyncio.create_task(_reload_mounts(mounts, cache))
            stack.callback(reloader.cancel)
            collect_less()  # what start-up made stays; a request's garbage is collected less often
            yield
            self.state.services = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_hoard/"):
            s3 = self.s3
            if s3 is None:
                raise S3Error(errors.SERVICE_UNAVAILABLE)
            await s3(scope, receive, send)
            return
        await self.admin(scope, receive, send)


def create_app(config: Config) -> HoardApp:
    return HoardApp(config)


def app_from_env() -> HoardApp:
    """uvicorn factory: the CLI passes the resolved config in HOARD_RESOLVED_CONFIG."""
    return create_app(from_env(os.environ))
