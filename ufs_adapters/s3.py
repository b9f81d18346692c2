"""An S3 bucket (or a prefix in one) as a UFS, scheme `s3`: AWS S3, MinIO, GCS interop, OSS, COS,
TOS, BOS, anything that speaks the S3 API.

One aiobotocore client per adapter, opened by `S3Adapter.open` and closed by `aclose`. Every SDK
call goes through `_call`, which turns SDK and transport errors into UfsErrors from one table
(s3_errors.py).

Writes hold bounded memory:
- `write`: a body of up to `part_size` (8 MiB) bytes is one PutObject (ETag = MD5 of the content).
  A longer body is sent as a multipart upload of `part_size` parts while it arrives, so its ETag
  has the multipart form `md5(md5s)-N`, as with `aws s3 cp`. A failed or cancelled write aborts
  the upload; the old object stays.
- `upload_part`: the part is spooled (memory up to `part_size`, then a temp file in `state_dir`)
  because the SDK needs a sized, seekable body to sign and retry.

Reads: `read_head(more=True)` is one GET of the whole object (or of a range of it), of which it
reads the first `length` bytes; the rest of the response waits, unread, up to HEAD_PARK seconds for
a `read` of that version from that byte on, which continues it (`Parked`): a cache's cold read of
a large object is one GET.

Keys with `.` or `..` segments, empty keys and NUL are refused (InvalidPath): an HTTP stack that
normalises dot segments could otherwise step out of the mount prefix. Folders are key prefixes:
`make_dir` writes a zero-byte `path/` marker, `remove_dir` deletes only that marker (NotEmpty if
anything else is below it; in-progress multipart uploads there are left alone).

Mount options (strings, parsed in s3_options.py, where OPTION_ALIASES and FLAG_ALIASES list the
Alluxio/Hadoop spellings that also work):
`endpoint_url` (a bare `host:port` gets https://), `region` (us-east-1 when an endpoint is given),
`access_key_id`, `secret_access_key`, `session_token` (else botocore's credential chain),
`addressing_style` path|virtual|auto (auto), `signature_version` (s3v4), `max_attempts` (3, standard
retry mode), `connect_timeout` (10 s), `read_timeout` (60 s), `max_pool_connections` (64), `verify`
true|false|CA bundle path, `direct_get` (true: GETs and HEADs signed by botocore's signer but sent
without the SDK's per-call machinery, see s3_get.py; false: all through the SDK). Other options in
the alluxio./s3a./fs./aws. namespaces are ignored; anything else is refused, so that a typo cannot
silently send requests to AWS.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import aiohttp
import anyio.to_thread
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from ._util import (
    MAX_PARTS,
    check_key,
    check_options,
    check_part_list,
    check_part_number,
    float_option,
    int_option,
    parts_count_of,
    rechunk,
    unquote_etag,
)
from .base import (
    AlreadyExists,
    BadDigest,
    ListPage,
    NotEmpty,
    NotFound,
    ObjectInfo,
    PartInfo,
    PartsPage,
    PreconditionFailed,
    RangeNotSatisfiable,
    ReadOptions,
    Unavailable,
    UploadInfo,
    UploadsPage,
    WriteMeta,
    read_head_in_two,
)
from .s3_bodies import CONTENT_RANGE, Parked, Readable, Spool, chunks, md5_b64, span_of
from .s3_errors import translated
from .s3_get import SignedGet, content_of, fields_of
from .s3_options import OPTIONS, flag_option, normalize_options, parse_s3_uri, verify_option

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import (
        CompletedPartTypeDef,
        CopyObjectRequestTypeDef,
        CreateMultipartUploadRequestTypeDef,
        GetObjectRequestTypeDef,
        HeadObjectOutputTypeDef,
        ListMultipartUploadsRequestTypeDef,
        ListObjectsV2RequestTypeDef,
        PutObjectRequestTypeDef,
        ResponseMetadataTypeDef,
    )

T = TypeVar("T")

MiB = 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_COPY_SIZE = 5 * 1024 * MiB  # CopyObject's limit; larger objects are copied part by part
PART_SIZES_KEPT = 256  # object versions whose parts part_range remembers
HEAD_PARK = 5.0  # seconds the rest of a read_head response waits for the read that continues it

# --- helpers ------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime:
    return value.astimezone(UTC) if value is not None else datetime.now(UTC)


def _response_date(meta: ResponseMetadataTypeDef | None) -> datetime:
    """The server's Date header: the best last-modified time a PUT response offers."""
    try:
        return _utc(parsedate_to_datetime(meta["HTTPHeaders"]["date"])) if meta else datetime.now(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _quoted(etag: str) -> str:
    return f'"{unquote_etag(etag)}"'


# --- the adapter --------------------------------------------------------------------------------


class S3Adapter:
    """A bucket or a prefix in one, through one aiobotocore client."""

    scheme = "s3"
    part_size = 8 * MiB  # write() switches to multipart above this; also the spool's memory limit
    max_copy_size = MAX_COPY_SIZE
    copy_part_size = 512 * MiB

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        stack: AsyncExitStack | None = None,
        spool_dir: Path | None = None,
        signed_get: SignedGet | None = None,
    ) -> None:
        self._client = client
        self._signed_get = signed_get  # GETs without the SDK's per-call cost (s3_get.py)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._stack = stack
        self._spool_dir = spool_dir
        # The rest of read_head responses, by (key, etag, offset): see read_head.
        self._parked: dict[tuple[str, str, int], Parked] = {}
        # (key, ETag) -> {part number: its bytes [start, end)}, as far as part_range learnt them.
        self._known_parts: OrderedDict[tuple[str, str], dict[int, tuple[int, int]]] = OrderedDict()
        self._closing: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None) -> S3Adapter:
        """Open `s3://bucket/optional/prefix` with its mount options (aliases accepted).

        `state_dir`, when given, holds spooled upload parts; otherwise the system temp dir does.
        """
        bucket, prefix = parse_s3_uri(uri)
        opts = check_options("s3", normalize_options(options), OPTIONS)
        style = opts.get("addressing_style", "auto")
        if style not in ("path", "virtual", "auto"):
            raise ValueError(f"option 'addressing_style' is {style!r}; use path, virtual or auto")
        signature_version = opts.get("signature_version", "s3v4")
        connect_timeout = float_option(opts, "connect_timeout", 10.0)
        read_timeout = float_option(opts, "read_timeout", 60.0)
        max_pool_connections = int_option(opts, "max_pool_connections", 64)
        config = AioConfig(
            signature_version=signature_version,
            s3={"addressing_style": style},
            retries={"mode": "standard", "max_attempts": int_option(opts, "max_attempts", 3)},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            # Third-party S3 servers reject the newer default CRC trailers; checksum only on demand.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        endpoint = opts.get("endpoint_url")
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint  # Alluxio-style `host:port`
        region = opts.get("region") or ("us-east-1" if endpoint else None)
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                AioSession().create_client(
                    "s3",
                    region_name=region,
                    endpoint_url=endpoint,
                    aws_access_key_id=opts.get("access_key_id"),
                    aws_secret_access_key=opts.get("secret_access_key"),
                    aws_session_token=opts.get("session_token"),
                    verify=verify_option(opts),
                    config=config,
                )
            )
            signed_get = None
            if flag_option(opts, "direct_get", True) and signature_version == "s3v4":
                with translated(uri):  # no credentials anywhere: PermissionDenied, not a traceback
                    signed_get = await SignedGet.open(
                        client,
                        bucket,
                        verify=verify_option(opts),
                        max_connections=max_pool_connections,
                        connect_timeout=connect_timeout,
                        read_timeout=read_timeout,
                    )
                if signed_get is not None:
                    stack.push_async_callback(signed_get.aclose)
        except BaseException:
            await stack.aclose()
            raise
        return cls(client, bucket, prefix, stack=stack, spool_dir=state_dir, signed_get=signed_get)

    @property
    def signed_get(self) -> SignedGet | None:
        """The adapter's SDK-less GETs (None: every GET goes through the SDK); shareable as `client`."""
        return self._signed_get

    @property
    def client(self) -> S3Client:
        """The SDK client; other adapters on the same endpoint may share it (the opener closes it)."""
        return self._client

    async def aclose(self) -> None:
        while self._parked:
            _, parked = self._parked.popitem()
            await parked.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def __repr__(self) -> str:
        return f"S3Adapter('s3://{self.bucket}/{self.prefix}')"

    # --- plumbing -----------------------------------------------------------------------------

    async def _call(self, path: str, call: Awaitable[T]) -> T:
        """The one choke point for SDK calls: errors leave as UfsErrors naming `path`."""
        with translated(path):
            return await call

    def _key(self, path: str) -> str:
        check_key(path)
        return self.prefix + path

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) :]

    def _info(self, path: str, head: HeadObjectOutputTypeDef) -> ObjectInfo:
        etag = unquote_etag(head.get("ETag", ""))
        return ObjectInfo(
            path=path,
            size=head.get("ContentLength", 0),
            etag=etag,
            last_modified=_utc(head.get("LastModified")),
            content_type=head.get("ContentType"),
            metadata=dict(head.get("Metadata", {})),
            parts_count=parts_count_of(etag),
        )

    async def _abort_quietly(self, path: str, key: str, upload_id: str) -> None:
        """Abort an upload we started, even while being cancelled; failures are only leftovers."""
        task = asyncio.ensure_future(
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        )
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            await asyncio.shield(task)
        except BaseException:  # the caller re-raises its own error; this one adds nothing
            pass

    # --- objects ------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        key = self._key(path)
        direct = await self._direct_get(path, key, {}, method="HEAD")
        if isinstance(direct, aiohttp.ClientResponse):
            direct.release()
            return self._info(path, cast("HeadObjectOutputTypeDef", fields_of(direct.headers)))
        head = await self._call(path, self._client.head_object(Bucket=self.bucket, Key=key))
        self._sdk_answered(direct)
        return self._info(path, head)

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        """HEAD ?partNumber=N: S3 answers with the part's Content-Range and the object's ETag. A
        store that gives no Content-Range (moto gives the part's length and ETag) costs a HEAD of
        each part up to N not yet known, and one of the object, whose ETag confirms that every
        size came from the version asked about. Parts once placed are remembered (per version,
        for PART_SIZES_KEPT objects): a part read again costs no request."""
        key = self._key(path)
        known = self._known_parts.pop((key, etag), {})
        self._known_parts[(key, etag)] = known
        while len(self._known_parts) > PART_SIZES_KEPT:
            self._known_parts.popitem(last=False)
        if part_number in known:
            return known[part_number]
        head = await self._head_part(path, key, part_number)
        span = span_of(head.get("ContentRange") or "")
        if span is None or unquote_etag(head.get("ETag", "")) != unquote_etag(etag):
            start = 0
            for number in range(1, part_number):
                if number not in known:
                    size = (await self._head_part(path, key, number)).get("ContentLength", 0)
                    known[number] = (start, start + size)
                start = known[number][1]
            whole = await self._call(path, self._client.head_object(Bucket=self.bucket, Key=key))
            if unquote_etag(whole.get("ETag", "")) != unquote_etag(etag):
                self._known_parts.pop((key, etag), None)
                raise PreconditionFailed(path, f"ETag is {whole.get('ETag')!r}, not {etag!r}")
            span = (start, start + head.get("ContentLength", 0))
        known[part_number] = span
        return span

    async def _head_part(self, path: str, key: str, number: int) -> HeadObjectOutputTypeDef:
        return await self._call(
            path, self._client.head_object(Bucket=self.bucket, Key=key, PartNumber=number)
        )

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        """One GET: its headers carry everything HEAD would (the size in Content-Range).

        With `more` it asks for bytes `start` to `end` (None: the object's end) and reads `length`
        of them; the rest of the response, if any, waits (unread: TCP holds the store back) up to
        HEAD_PARK seconds for the read of that version from byte `start + length` on (a cache
        filling the next pages), which takes it over instead of making a request of its own: a
        cold read of an object, or of a range, costs one GET. Without, it asks for `length` bytes.
        """
        key = self._key(path)
        last = start + max(length, 1) - 1
        if more:
            last = -1 if end is None else max(end - 1, last)
        wanted = f"bytes={start}-{'' if last < 0 else last}"
        try:
            fields, body = await self._get(path, {"Bucket": self.bucket, "Key": key, "Range": wanted})
        except RangeNotSatisfiable:
            return await self.stat(path), b""  # no byte `start`: past the end (or an empty object)
        content_range = CONTENT_RANGE.fullmatch((fields.get("ContentRange") or "").strip())
        stream = await body.__aenter__()
        parked = False
        try:
            if start and (content_range is None or int(content_range[1]) != start):
                # A store that ignored the Range (a 200 from byte 0): not the bytes asked for.
                return await read_head_in_two(self, path, length, start)
            parts: list[bytes] = []
            got = 0
            while got < length:
                with translated(path):
                    chunk = await stream.read(length - got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            total = fields.get("ContentLength", 0)
            if content_range is not None and content_range[3] != "*":
                total = int(content_range[3])
            info = self._info(path, cast("HeadObjectOutputTypeDef", {**fields, "ContentLength": total}))
            stop = total if last < 0 else min(last + 1, total)  # where the response ends
            if more and got == length and start + length < stop:
                self._park((key, info.etag, start + length), Parked(body, stream, stop))
                parked = True
            return info, data
        finally:
            if not parked:
                await body.__aexit__(None, None, None)

    def _park(self, at: tuple[str, str, int], parked: Parked) -> None:
        old = self._parked.pop(at, None)
        if old is not None:
            self._close_soon(old)
        parked.timer = asyncio.get_running_loop().call_later(HEAD_PARK, self._expire, at, parked)
        self._parked[at] = parked

    def _expire(self, at: tuple[str, str, int], parked: Parked) -> None:
        if self._parked.get(at) is parked:
            del self._parked[at]
            self._close_soon(parked)

    def _close_soon(self, parked: Parked) -> None:
        task = asyncio.ensure_future(parked.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _continue(self, path: str, parked: Parked, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Bytes [start, end) from a parked read_head response that is at `start`."""
        try:
            stop = parked.end if end is None else min(end, parked.end)
            async for chunk in chunks(path, parked.stream, stop - start):
                yield chunk
        finally:
            await parked.close()

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        key = self._key(path)
        start, end = max(opts.start, 0), opts.end
        if end is not None and end <= start:
            if opts.if_match is not None:
                info = await self.stat(path)
                if info.etag != unquote_etag(opts.if_match):
                    raise PreconditionFailed(path, f"ETag is {info.etag!r}, not {opts.if_match!r}")
            return
        if opts.if_match is not None and self._parked:
            parked = self._parked.pop((key, unquote_etag(opts.if_match), start), None)
            if parked is not None:
                parked.cancel_timer()
                async for chunk in self._continue(path, parked, start, end):
                    yield chunk
                return
        request: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": key}
        if start > 0 or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if opts.if_match is not None:
            request["IfMatch"] = _quoted(opts.if_match)
        try:
            _, body = await self._get(path, request)
        except RangeNotSatisfiable:
            return  # start at or past the end: no bytes, as the local adapter does
        async with body as stream:
            async for chunk in chunks(path, stream):
                yield chunk

    async def _get(
        self, path: str, request: GetObjectRequestTypeDef
    ) -> tuple[Mapping[str, Any], AbstractAsyncContextManager[Readable]]:
        """One GetObject: (the response's fields as the SDK names them, its body to open).
        Through SignedGet when this adapter has it, else (or when it was refused) the SDK."""
        headers = {"Range": request["Range"]} if "Range" in request else {}
        if "IfMatch" in request:
            headers["If-Match"] = request["IfMatch"]
        direct = await self._direct_get(path, request["Key"], headers)
        if isinstance(direct, aiohttp.ClientResponse):
            return fields_of(direct.headers), content_of(direct)
        response = await self._call(path, self._client.get_object(**request))
        self._sdk_answered(direct)
        return cast("Mapping[str, Any]", response), response["Body"]

    async def _direct_get(
        self, path: str, key: str, headers: Mapping[str, str], method: str = "GET"
    ) -> aiohttp.ClientResponse | int | None:
        """The GET (or HEAD) through SignedGet when this adapter has it: its response, or the
        status it was refused with (make the call through the SDK, then `_sdk_answered`); None:
        no SignedGet."""
        direct = self._signed_get
        if direct is None or not direct.enabled:
            return None
        with translated(path):
            return await direct.get(key, headers, method)

    def _sdk_answered(self, refused: int | None) -> None:
        if refused is not None and self._signed_get is not None:
            self._signed_get.sdk_answered(refused)

    async def _put(self, path: str, key: str, data: bytes, meta: WriteMeta) -> ObjectInfo:
        digest = await anyio.to_thread.run_sync(hashlib.md5, data)
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentMD5": md5_b64(digest.digest()),
            "Metadata": dict(meta.metadata),
        }
        if meta.content_type:
            request["ContentType"] = meta.content_type
        response = await self._call(path, self._client.put_object(**request))
        etag = unquote_etag(response.get("ETag", "")) or digest.hexdigest()
        return ObjectInfo(
            path=path,
            size=len(data),
            etag=etag,
            last_modified=_response_date(response.get("ResponseMetadata")),
            content_type=meta.content_type,
            metadata=dict(meta.metadata),
            parts_count=parts_count_of(etag),
        )

    def _part_sizes(self, size: int | None) -> Callable[[int], int]:
        """Part n's size for write(): fixed when the size is known (at most 10,000 parts), else
        doubling every 1,000 parts so an unknown-size body can still reach terabytes."""
        if size is not None:
            fixed = max(self.part_size, -(-size // MAX_PARTS))
            fixed = -(-fixed // MiB) * MiB
            return lambda number: fixed
        return lambda number: min(self.part_size << ((number - 1) // 1000), MAX_PART_SIZE)

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        key = self._key(path)
        blocks = rechunk(body, self._part_sizes(size))
        try:
            block, last = await anext(blocks)
            if last:
                if size is not None and len(block) != size:
                    raise BadDigest(path, f"expected {size} bytes, received {len(block)}")
                return await self._put(path, key, block, meta)
            upload_id = await self.create_multipart(path, meta)
            try:
                parts: list[tuple[int, str]] = []
                total = 0
                while True:
                    number = len(parts) + 1
                    part = await self._upload(path, key, upload_id, number, block, None)
                    parts.append((number, part))
                    total += len(block)
                    if last:
                        break
                    block, last = await anext(blocks)
                if size is not None and total != size:
                    raise BadDigest(path, f"expected {size} bytes, received {total}")
                return await self.complete_multipart(path, upload_id, parts)
            except BaseException:
                await self._abort_quietly(path, key, upload_id)
                raise
        finally:
            await blocks.aclose()

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        src_key, dst_key = self._key(src), self._key(dst)
        source = await self.stat(src)
        if meta is None and src == dst:  # S3 refuses a copy onto itself that changes nothing
            meta = WriteMeta(source.content_type, source.metadata)
        if source.size > self.max_copy_size:
            await self._copy_in_parts(dst, src_key, dst_key, source, meta)
            return await self.stat(dst)
        request: CopyObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": dst_key,
            "CopySource": {"Bucket": self.bucket, "Key": src_key},
            "CopySourceIfMatch": _quoted(source.etag),
            "MetadataDirective": "COPY",
        }
        if meta is not None:
            request["MetadataDirective"] = "REPLACE"
            request["Metadata"] = dict(meta.metadata)
            if meta.content_type:
                request["ContentType"] = meta.content_type
        await self._call(dst, self._client.copy_object(**request))
        return await self.stat(dst)

    async def _copy_in_parts(
        self, dst: str, src_key: str, dst_key: str, source: ObjectInfo, meta: WriteMeta | None
    ) -> None:
        upload_id = await self.create_multipart(dst, meta or WriteMeta(source.content_type, source.metadata))
        try:
            step = max(self.copy_part_size, -(-source.size // MAX_PARTS))
            parts: list[CompletedPartTypeDef] = []
            for number, offset in enumerate(range(0, source.size, step), 1):
                last = min(offset + step, source.size) - 1
                response = await self._call(
                    dst,
                    self._client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": self.bucket, "Key": src_key},
                        CopySourceRange=f"bytes={offset}-{last}",
                        CopySourceIfMatch=_quoted(source.etag),
                    ),
                )
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"].get("ETag", "")})
            await self._call(
                dst,
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=dst_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            await self._abort_quietly(dst, dst_key, upload_id)
            raise

    async def delete(self, path: str) -> None:
        key = self._key(path)
        await self._call(path, self._client.delete_object(Bucket=self.bucket, Key=key))

    # --- listing ------------------------------------------------------------------------------

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        if limit <= 0:
            return ListPage([], [], None)
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": limit,
        }
        if delimiter:
            request["Delimiter"] = delimiter
        # Starting after the bare mount prefix also skips its own folder marker (`prefix/`).
        if self.prefix or start_after:
            request["StartAfter"] = self.prefix + (start_after or "")
        response = await self._call(prefix, self._client.list_objects_v2(**request))
        objects = []
        for item in response.get("Contents", []):
            path = self._rel(item.get("Key", ""))
            if not path:
                continue  # the mount prefix's own folder marker is not an object of this mount
            etag = unquote_etag(item.get("ETag", ""))
            objects.append(
                ObjectInfo(
                    path=path,
                    size=item.get("Size", 0),
                    etag=etag,
                    last_modified=_utc(item.get("LastModified")),
                    parts_count=parts_count_of(etag),
                )
            )
        prefixes = [self._rel(p.get("Prefix", "")) for p in response.get("CommonPrefixes", [])]
        next_start_after = None
        if response.get("IsTruncated"):
            candidates = [o.path for o in objects[-1:]] + prefixes[-1:]
            next_start_after = max(candidates) if candidates else None
        return ListPage(objects, prefixes, next_start_after)

    # --- directories --------------------------------------------------------------------------

    async def _keys_under(self, path: str, limit: int) -> list[str]:
        response = await self._call(
            path,
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(path) + "/", MaxKeys=limit),
        )
        return [item.get("Key", "") for item in response.get("Contents", [])]

    async def is_dir(self, path: str) -> bool:
        path = path.rstrip("/")
        if not path:
            try:
                await self._call(self.bucket, self._client.head_bucket(Bucket=self.bucket))
            except NotFound:
                return False
            return True
        return bool(await self._keys_under(path, 1))

    async def make_dir(self, path: str) -> None:
        path = path.rstrip("/")
        check_key(path)
        if await self.is_dir(path):
            raise AlreadyExists(path, "the folder exists")
        marker = self._key(path) + "/"
        await self._call(path, self._client.put_object(Bucket=self.bucket, Key=marker, Body=b""))

    async def remove_dir(self, path: str) -> None:
        path = path.rstrip("/")
        check_key(path)
        marker = self._key(path) + "/"
        keys = await self._keys_under(path, 2)
        if not keys:
            raise NotFound(path, "no such folder")
        if any(key != marker for key in keys):
            raise NotEmpty(path, "the folder holds objects")
        await self._call(path, self._client.delete_object(Bucket=self.bucket, Key=marker))

    # --- multipart ----------------------------------------------------------------------------

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        request: CreateMultipartUploadRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": self._key(path),
            "Metadata": dict(meta.metadata),
        }
        if meta.content_type:
            request["ContentType"] = meta.content_type
        response = await self._call(path, self._client.create_multipart_upload(**request))
        return response["UploadId"]

    async def _upload(
        self, path: str, key: str, upload_id: str, number: int, body: bytes | IO[bytes], md5: str | None
    ) -> str:
        if md5 is None:
            assert isinstance(body, bytes)
            md5 = md5_b64((await anyio.to_thread.run_sync(hashlib.md5, body)).digest())
        response = await self._call(
            path,
            self._client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=md5
            ),
        )
        return unquote_etag(response.get("ETag", ""))

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        check_part_number(path, part_number)
        key = self._key(path)
        spool = Spool(self._spool_dir, self.part_size)
        try:
            try:
                await spool.fill(body)
                data, md5 = await spool.body()
            except OSError as exc:
                raise Unavailable(path, f"cannot spool part {part_number}: {exc}") from exc
            if size is not None and spool.size != size:
                raise BadDigest(path, f"part {part_number}: expected {size} bytes, received {spool.size}")
            etag = await self._upload(path, key, upload_id, part_number, data, md5)
        finally:
            spool.close()
        return PartInfo(part_number, etag, spool.size, datetime.now(UTC))

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        key = self._key(path)
        check_part_list(path, parts)  # S3 checks too; some S3-compatible servers do not
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": n, "ETag": _quoted(etag)} for n, etag in parts
        ]
        await self._call(
            path,
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
            ),
        )
        return await self.stat(path)

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        key = self._key(path)
        await self._call(
            path, self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        )

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        key = self._key(path)
        response = await self._call(
            path,
            self._client.list_parts(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker, MaxParts=limit
            ),
        )
        parts = [
            PartInfo(
                part_number=p.get("PartNumber", 0),
                etag=unquote_etag(p.get("ETag", "")),
                size=p.get("Size", 0),
                last_modified=_utc(p.get("LastModified")),
            )
            for p in response.get("Parts", [])
        ]
        truncated = response.get("IsTruncated") and parts
        return PartsPage(parts, parts[-1].part_number if truncated else None)

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        request: ListMultipartUploadsRequestTypeDef = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxUploads": limit,
        }
        if delimiter:
            request["Delimiter"] = delimiter
        if key_marker:
            request["KeyMarker"] = self.prefix + key_marker
            if upload_id_marker:
                request["UploadIdMarker"] = upload_id_marker
        response = await self._call(prefix, self._client.list_multipart_uploads(**request))
        uploads = [
            UploadInfo(self._rel(u.get("Key", "")), u.get("UploadId", ""), _utc(u.get("Initiated")))
            for u in response.get("Uploads", [])
        ]
        prefixes = [self._rel(p.get("Prefix", "")) for p in response.get("CommonPrefixes", [])]
        if not response.get("IsTruncated"):
            return UploadsPage(uploads, prefixes, None, None)
        next_key = response.get("NextKeyMarker") or None
        return UploadsPage(
            uploads,
            prefixes,
            self._rel(next_key) if next_key else None,
            response.get("NextUploadIdMarker") or None,
        )

    # --- health -------------------------------------------------------------------------------

    async def check(self) -> None:
        await self._call(self.bucket, self._client.head_bucket(Bucket=self.bucket))
        await self._call(
            self.prefix or self.bucket,
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1),
        )
