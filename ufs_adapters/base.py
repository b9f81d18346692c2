"""The narrow under-storage (UFS) interface every adapter implements.

Paths are UFS-relative keys: no leading slash, `/` separated, exactly the S3 key below the mount
point (the adapter adds its own root, bucket or prefix). Conveniences live in free functions, not
in the protocol, so adapters and wrappers (limiter, retries) forward a small fixed set of methods.

Adapters raise only the `UfsError` subclasses below; the gateway maps them to S3 errors in one
place (`gateway/s3/errors.py: from_exception`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as the UFS knows it. `etag` is unquoted; it is also the cache version."""

    path: str
    size: int
    etag: str
    last_modified: datetime  # timezone-aware, UTC
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    parts_count: int | None = None  # for multipart objects, when the UFS knows it

    @property
    def version(self) -> str:
        return self.etag


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing in S3 order (UTF-8 binary order of the keys).

    `next_start_after` is the last key or common prefix this page covered; pass it back as
    `start_after` to get the next page. It is None when the listing is complete.
    """

    objects: list[ObjectInfo]
    common_prefixes: list[str]
    next_start_after: str | None

    @property
    def truncated(self) -> bool:
        return self.next_start_after is not None


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """A byte range [start, end) of one object; `if_match` pins the version (the ETag)."""

    start: int = 0
    end: int | None = None  # exclusive; None reads to the end
    if_match: str | None = None


@dataclass(frozen=True, slots=True)
class WriteMeta:
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartInfo:
    part_number: int
    etag: str  # unquoted
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class PartsPage:
    parts: list[PartInfo]
    next_marker: int | None  # part number to pass as `marker` for the next page


@dataclass(frozen=True, slots=True)
class UploadInfo:
    path: str
    upload_id: str
    initiated: datetime


@dataclass(frozen=True, slots=True)
class UploadsPage:
    uploads: list[UploadInfo]
    common_prefixes: list[str]
    next_key_marker: str | None
    next_upload_id_marker: str | None


class UfsError(Exception):
    """Base of every error an adapter raises. `path` names the object or prefix concerned."""

    def __init__(self, path: str = "", detail: str = "") -> None:
        super().__init__(f"{path}: {detail}" if detail else path)
        self.path = path
        self.detail = detail


class NotFound(UfsError):
    """The object (or directory/bucket) does not exist."""


class AlreadyExists(UfsError):
    """A directory/bucket that was to be created exists already."""


class NotEmpty(UfsError):
    """A directory/bucket that was to be removed still holds objects."""


class RangeNotSatisfiable(UfsError):
    """A range starting at or past the end of the object; an adapter's `read` turns it into no bytes."""


class PreconditionFailed(UfsError):
    """The object changed: its ETag no longer matches `ReadOptions.if_match`."""


class PermissionDenied(UfsError):
    """The UFS refused the credentials or the operation."""


class InvalidPath(UfsError):
    """The key cannot be stored here: it escapes the mount root, or the layout cannot hold it."""


class NotSupported(UfsError):
    """The adapter does not implement this operation."""


class Unavailable(UfsError):
    """The UFS is down, throttling or timing out; the operation may be retried.

    `retry_after` (seconds), when known, is how long to wait first: an open circuit breaker sets it.
    """

    def __init__(
        self, path: str = "", detail: str = "", *, throttled: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(path, detail)
        self.throttled = throttled
        self.retry_after = retry_after


class NoSuchUpload(UfsError):
    """The multipart upload id is unknown (never created, completed or aborted)."""


class InvalidPart(UfsError):
    """A part named in CompleteMultipartUpload was not uploaded or its ETag differs."""


class InvalidPartOrder(UfsError):
    """The parts of CompleteMultipartUpload are not in ascending order."""


class EntityTooSmall(UfsError):
    """A part other than the last is smaller than the minimum part size (5 MiB)."""


class BadDigest(UfsError):
    """The body did not match the digest the writer promised."""


MIN_PART_SIZE = 5 * 1024 * 1024


class UfsAdapter(Protocol):
    """Everything an adapter must implement. Directories are emulated as key prefixes."""

    scheme: str

    async def stat(self, path: str) -> ObjectInfo:
        """Metadata of one object; NotFound if there is none (a prefix is not an object)."""
        ...

    def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        """Stream bytes [opts.start, opts.end); PreconditionFailed if `opts.if_match` differs."""
        ...

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        """Metadata and `length` bytes from byte `start` (fewer at the object's end, none from
        past it), in one request where the store can: a cold read then costs one UFS call instead
        of a stat and a read. Adapters without such a request use `read_head_in_two`. `more`: the
        caller will read on from `start + length` to `end` (None: the object's end), pinned to the
        version returned; an adapter may ask for that much in the same request and keep the rest
        of its response for that read (S3: one GET for a whole cold read, or a whole range)."""
        ...

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        """Bytes [start, end) of part `part_number` of the multipart object whose version is
        `etag` (GetObject ?partNumber=N). PreconditionFailed if the object is no longer that
        version; NotSupported where the store does not keep the parts' sizes."""
        ...

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        """At most `limit` entries (objects + common prefixes) with keys > start_after, in S3 order."""
        ...

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        """Store a whole object atomically: readers see the old object or the new one, never a part."""
        ...

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        """Server-side copy within this adapter; `meta` None keeps the source's metadata."""
        ...

    async def delete(self, path: str) -> None:
        """Remove one object; deleting a missing object is not an error."""
        ...

    async def make_dir(self, path: str) -> None:
        """Create an empty directory (a bucket under the root mount); AlreadyExists if present."""
        ...

    async def remove_dir(self, path: str) -> None:
        """Remove an empty directory; NotEmpty if it holds objects, NotFound if absent."""
        ...

    async def is_dir(self, path: str) -> bool:
        """Whether `path` exists as a directory (a bucket under the root mount)."""
        ...

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        """Start a multipart upload; returns its upload id."""
        ...

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        """Store one part; uploading the same part number again replaces it (idempotent retry)."""
        ...

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        """Assemble (part number, etag) pairs into the object; the ETag is `md5(md5s)-N`."""
        ...

    async def abort_multipart(self, path: str, upload_id: str) -> None: ...

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage: ...

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage: ...

    async def check(self) -> None:
        """Verify credentials and reachability of the root; raises the exact UfsError."""
        ...

    async def aclose(self) -> None: ...


async def aclose_stream(stream: AsyncIterator[bytes]) -> None:
    """Close a `read` stream (an async generator) that its reader leaves before the end."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def read_head_in_two(
    adapter: UfsAdapter, path: str, length: int, start: int = 0
) -> tuple[ObjectInfo, bytes]:
    """`read_head` as a stat and a read pinned to the stat's ETag (never two versions mixed)."""
    info = await adapter.stat(path)
    end = min(start + length, info.size)
    if end <= start:
        return info, b""
    chunks = [c async for c in adapter.read(path, ReadOptions(start, end, if_match=info.etag))]
    return info, b"".join(chunks)
