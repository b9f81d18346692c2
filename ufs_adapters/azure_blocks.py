"""Block blobs as the Azure adapter (azure.py) writes them: bodies cut into blocks (in memory up to
a limit, then spooled to a file), and the ids of multipart uploads' blocks, which carry the upload,
the part, the attempt and the part's MD5, so that a blob's uncommitted block list is its uploads'
part list."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
from azure.storage.blob import BlobBlock

from ._util import CHUNK_SIZE
from .base import PartInfo

#
# Block id (64 characters, the most Azure allows; all ids of one blob must have the same length):
# upload id (19) | part number (5) | attempt (13 hex: microseconds) | block in part (5) | the part's
# MD5 in url-safe base64 on its last block, else dots (22).

_ID_LEN = 19
_ATTEMPT_LEN = 13
_NO_MD5 = "." * 22
UPLOAD_ID = re.compile(r"[0-9a-f]{19}")


@dataclass(frozen=True, slots=True)
class BlockId:
    upload_id: str
    part: int
    attempt: str
    seq: int
    md5: str | None  # hex, on the last block of a part

    def encode(self) -> str:
        tail = base64.urlsafe_b64encode(bytes.fromhex(self.md5)).decode()[:22] if self.md5 else _NO_MD5
        return f"{self.upload_id}{self.part:05d}{self.attempt}{self.seq:05d}{tail}"

    @classmethod
    def parse(cls, raw: str) -> BlockId | None:
        if len(raw) != 64 or not raw[_ID_LEN : _ID_LEN + 5].isdigit() or not raw[37:42].isdigit():
            return None
        tail = raw[42:]
        try:
            md5 = None if tail == _NO_MD5 else base64.urlsafe_b64decode(tail + "==").hex()
        except (binascii.Error, ValueError):
            return None
        return cls(raw[:_ID_LEN], int(raw[_ID_LEN : _ID_LEN + 5]), raw[24:37], int(raw[37:42]), md5)


@dataclass(frozen=True, slots=True)
class Part:
    """One complete attempt at a part, as the uncommitted block list shows it."""

    number: int
    md5: str
    size: int
    attempt: str
    block_ids: list[str]

    @property
    def info(self) -> PartInfo:
        when = datetime.fromtimestamp(int(self.attempt, 16) / 1e6, UTC)
        return PartInfo(self.number, self.md5, self.size, when)


def parts_of(blocks: list[BlobBlock], upload_id: str) -> dict[int, Part]:
    """The latest complete attempt of each part of `upload_id` (a part is complete when its last
    block, which carries the MD5, and all blocks before it are staged)."""
    attempts: dict[tuple[int, str], dict[int, tuple[str, int]]] = {}
    finals: dict[tuple[int, str], tuple[int, str]] = {}
    for block in blocks:
        parsed = BlockId.parse(block.id)
        if parsed is None or parsed.upload_id != upload_id:
            continue
        key = (parsed.part, parsed.attempt)
        attempts.setdefault(key, {})[parsed.seq] = (block.id, block.size or 0)
        if parsed.md5 is not None:
            finals[key] = (parsed.seq, parsed.md5)
    parts: dict[int, Part] = {}
    for (number, attempt), (last, md5) in sorted(finals.items()):
        staged = attempts[(number, attempt)]
        if all(seq in staged for seq in range(last + 1)):
            ids = [staged[seq][0] for seq in range(last + 1)]
            size = sum(staged[seq][1] for seq in range(last + 1))
            parts[number] = Part(number, md5, size, attempt, ids)  # later attempts sort last
    return parts


class Block:
    """One block being assembled: in memory up to `memory_limit` bytes, beyond that in a temp file.

    Its body is a seekable file object (aiohttp sends those without blocking the event loop, and
    the SDK rewinds them to retry).
    """

    def __init__(self, directory: Path | None, memory_limit: int) -> None:
        self._directory = directory
        self._limit = memory_limit
        self._memory = io.BytesIO()
        self._pending = bytearray()  # on its way to the temp file
        self._file: IO[bytes] | None = None
        self.size = 0

    async def add(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is None and self.size > self._limit:
            self._file = await anyio.to_thread.run_sync(self._make_file)
            self._pending, self._memory = bytearray(self._memory.getbuffer()), io.BytesIO()
        if self._file is None:
            self._memory.write(data)
            return
        self._pending += data
        if len(self._pending) >= CHUNK_SIZE:
            await self._flush()

    def _make_file(self) -> IO[bytes]:
        return tempfile.TemporaryFile("w+b", dir=self._directory)

    async def _flush(self) -> None:
        data, self._pending = bytes(self._pending), bytearray()
        assert self._file is not None
        await anyio.to_thread.run_sync(self._file.write, data)

    async def body(self) -> IO[bytes]:
        if self._file is None:
            self._memory.seek(0)
            return self._memory
        await self._flush()
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._memory = io.BytesIO()
        if self._file is not None:
            self._file.close()
            self._file = None


async def cut_blocks(
    body: AsyncIterable[bytes],
    block_size: Callable[[int], int],
    digest: Any,
    spool_dir: Path | None,
    memory_limit: int,
) -> AsyncGenerator[tuple[Block, bool]]:
    """Cut a body into blocks of `block_size(n)` bytes for block n (1-based): (block, is_last).

    `digest` (an md5) sees every byte. A full block is released only once a further byte has
    arrived, so the caller knows whether it is the last; an empty body yields one empty last block.
    """
    number = 1
    block = Block(spool_dir, memory_limit)
    try:
        async for chunk in body:
            if len(chunk) >= CHUNK_SIZE:
                await anyio.to_thread.run_sync(digest.update, chunk)
            else:
                digest.update(chunk)
            view = memoryview(chunk)
            while view:
                if block.size == block_size(number):
                    yield block, False
                    block.close()
                    number += 1
                    block = Block(spool_dir, memory_limit)
                room = block_size(number) - block.size
                await block.add(bytes(view[:room]))
                view = view[room:]
        yield block, True
    finally:
        block.close()


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """What the marker blob of a multipart upload records."""

    content_type: str | None
    metadata: dict[str, str]

    def dump(self) -> bytes:
        return json.dumps({"content_type": self.content_type, "metadata": self.metadata}).encode()

    @classmethod
    def load(cls, data: bytes) -> UploadRecord:
        doc = json.loads(data)
        return cls(doc.get("content_type"), dict(doc.get("metadata") or {}))
