"""Bodies of the S3 adapter's requests and responses (s3.py): a request body spooled to a file
beyond a memory limit (Spool), a response body read in chunks (chunks), and the unread rest of a
response kept open for the read that continues it (Parked)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Protocol

import anyio.to_thread

from ._util import CHUNK_SIZE
from .s3_errors import translated


def md5_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class Spool:
    """A body held in memory up to `memory_limit` bytes, then in an anonymous temp file."""

    def __init__(self, directory: Path | None, memory_limit: int) -> None:
        self._directory = directory
        self._limit = memory_limit
        self._buf = bytearray()
        self._file: IO[bytes] | None = None
        self._digest = hashlib.md5()
        self.size = 0

    async def fill(self, body: AsyncIterable[bytes]) -> None:
        async for chunk in body:
            self._buf += chunk
            self.size += len(chunk)
            if self._file is None and len(self._buf) > self._limit:
                self._file = await anyio.to_thread.run_sync(self._make_file)
            if self._file is not None and len(self._buf) >= CHUNK_SIZE:
                await self._flush()
        if self._file is not None:
            await self._flush()

    def _make_file(self) -> IO[bytes]:
        return tempfile.TemporaryFile("w+b", dir=self._directory)

    async def _flush(self) -> None:
        data, self._buf = self._buf, bytearray()
        assert self._file is not None
        file = self._file

        def write() -> None:
            self._digest.update(data)
            file.write(data)

        await anyio.to_thread.run_sync(write)

    async def body(self) -> tuple[bytes | IO[bytes], str]:
        """(body for the SDK, base64 Content-MD5)."""
        if self._file is None:
            data = bytes(self._buf)
            digest = await anyio.to_thread.run_sync(hashlib.md5, data)
            return data, md5_b64(digest.digest())
        self._file.flush()
        self._file.seek(0)
        return self._file, md5_b64(self._digest.digest())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Readable(Protocol):
    async def read(self, n: int = -1, /) -> bytes: ...


async def chunks(path: str, stream: Readable, size: int | None = None) -> AsyncIterator[bytes]:
    """A response body in chunks of at most CHUNK_SIZE: `size` bytes of it (None: to its end)."""
    left = size
    while left is None or left > 0:
        with translated(path):  # a connection lost mid-body is Unavailable too
            chunk = await stream.read(CHUNK_SIZE if left is None else min(CHUNK_SIZE, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")  # first, last, total (or *)


def span_of(content_range: str) -> tuple[int, int] | None:
    """`bytes a-b/total` -> (a, b + 1)."""
    m = CONTENT_RANGE.fullmatch(content_range.strip())
    return (int(m[1]), int(m[2]) + 1) if m else None


class Parked:
    """The unread rest of a read_head response (bytes up to `end`), open until taken or closed."""

    __slots__ = ("body", "closed", "end", "stream", "timer")

    def __init__(self, body: AbstractAsyncContextManager[Readable], stream: Readable, end: int) -> None:
        self.body = body
        self.stream = stream
        self.end = end
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def close(self) -> None:
        self.cancel_timer()
        if not self.closed:
            self.closed = True
            await self.body.__aexit__(None, None, None)
