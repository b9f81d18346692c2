"""Counting wrapper: every UFS call by operation and outcome, and bytes read, as plain numbers.

It implements the same protocol as the adapter it wraps (like object_store's LimitStore), so it can
sit anywhere in a stack of wrappers. The gateway exports `stats()` as Prometheus metrics; nothing
here knows Prometheus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Mapping
from typing import TypeVar

from ufs_adapters.base import (
    ListPage,
    NotFound,
    ObjectInfo,
    PartInfo,
    PartsPage,
    PreconditionFailed,
    ReadOptions,
    UfsAdapter,
    Unavailable,
    UploadsPage,
    WriteMeta,
)

T = TypeVar("T")

# Outcome label of an exception; anything else raised by an adapter is "error". A read stream
# its consumer closed before the end (a client gone, the cache's parked stream given up) is "closed".
_OUTCOMES: Mapping[type[BaseException], str] = {
    NotFound: "not_found",
    PreconditionFailed: "precondition_failed",
    Unavailable: "unavailable",
    GeneratorExit: "closed",
}


def outcome_of(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        label = _OUTCOMES.get(cls)
        if label is not None:
            return str(label)
    return "error"


class Instrumented:
    """Counts calls of `inner`: `requests[(operation, outcome)]` and `bytes_read`."""

    def __init__(self, inner: UfsAdapter) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes_read = 0

    def stats(self) -> tuple[Mapping[tuple[str, str], int], int]:
        return dict(self.requests), self.bytes_read

    async def _count(self, operation: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except BaseException as exc:
            self.requests[(operation, outcome_of(exc))] += 1
            raise
        self.requests[(operation, "ok")] += 1
        return result

    async def stat(self, path: str) -> ObjectInfo:
        return await self._count("stat", self.inner.stat(path))

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        return await self._count("stat", self.inner.part_range(path, part_number, etag))

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        stream = self.inner.read(path, opts)
        try:
            async for chunk in stream:
                self.bytes_read += len(chunk)
                yield chunk
        except BaseException as exc:
            self.requests[("read", outcome_of(exc))] += 1
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        self.requests[("read", "ok")] += 1

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        info, data = await self._count(
            "read_head", self.inner.read_head(path, length, start=start, more=more, end=end)
        )
        self.bytes_read += len(data)
        return info, data

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        call = self.inner.list_objects(prefix, delimiter=delimiter, start_after=start_after, limit=limit)
        return await self._count("list", call)

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        return await self._count("write", self.inner.write(path, body, size=size, meta=meta))

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        return await self._count("copy", self.inner.copy(src, dst, meta=meta))

    async def delete(self, path: str) -> None:
        await self._count("delete", self.inner.delete(path))

    async def make_dir(self, path: str) -> None:
        await self._count("make_dir", self.inner.make_dir(path))

    async def remove_dir(self, path: str) -> None:
        await self._count("remove_dir", self.inner.remove_dir(path))

    async def is_dir(self, path: str) -> bool:
        return await self._count("is_dir", self.inner.is_dir(path))

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        return await self._count("create_multipart", self.inner.create_multipart(path, meta))

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        call = self.inner.upload_part(path, upload_id, part_number, body, size=size)
        return await self._count("upload_part", call)

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        return await self._count("complete_multipart", self.inner.complete_multipart(path, upload_id, parts))

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        await self._count("abort_multipart", self.inner.abort_multipart(path, upload_id))

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        return await self._count(
            "list_parts", self.inner.list_parts(path, upload_id, marker=marker, limit=limit)
        )

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        call = self.inner.list_uploads(
            prefix, delimiter=delimiter, key_marker=key_marker, upload_id_marker=upload_id_marker, limit=limit
        )
        return await self._count("list_uploads", call)

    async def check(self) -> None:
        await self._count("check", self.inner.check())

    async def aclose(self) -> None:
        await self.inner.aclose()
