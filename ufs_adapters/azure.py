"""An Azure Blob Storage container (or a prefix in one) as a UFS, schemes `wasbs`, `wasb`, `abfss`,
`abfs` and `az`, through azure-storage-blob's async client.

URIs: `wasbs://container@account.blob.core.windows.net/prefix` (`wasb://` is the same over plain
HTTP, as in Hadoop), `abfs[s]://container@account.dfs.core.windows.net/prefix` (the dfs host is
mapped to the blob endpoint of the same account) and `az://container/prefix` (the account comes
from the options).

Mount options (strings): `account_name`, `account_key` (shared key), `sas_token`,
`connection_string` (holds endpoint and credential itself), `endpoint_url` (an emulator or private
endpoint, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`), `max_attempts` (3, the SDK's
own retries), `connect_timeout` (10 s), `read_timeout` (60 s). Hadoop/Alluxio names work too:
`fs.azure.account.key.<account>.blob.core.windows.net` (or `.dfs.`) is the account key and
`fs.azure.sas.<container>.<account>.blob.core.windows.net` the SAS of the mounted account and
container; such keys for other accounts are ignored. No credential means anonymous access.

One BlobServiceClient per adapter, opened by `AzureBlobAdapter.open` and closed by `aclose`. SDK
calls go through `_call` (or `translated` for iterators), which maps SDK and transport errors to
UfsErrors (azure_errors.py). The rest is in modules of its own: URIs and options
(azure_location.py), names, metadata and ETags (azure_names.py), the S3-order listing
(azure_listing.py), and blocks and multipart block ids (azure_blocks.py).

How S3 semantics are kept on Azure:
- ETags. Azure's own ETag is an opaque version, S3's is the MD5 of the content. Hoard stores the
  MD5 as the blob's Content-MD5 (set on every write, computed while the body streams) and reports
  it as the ETag; a blob assembled by `complete_multipart` carries `md5(part md5s)-N` in its
  metadata (`hoard_etag`) instead. Blobs written by other tools without an MD5 report Azure's ETag.
  LIST returns the same ETag as HEAD (metadata is included in listings). `read` checks `if_match`
  against the ETag of the first response; the SDK pins the following range requests to Azure's
  ETag of that response, so a read never mixes two versions.
- Metadata. Azure metadata names must be C# identifiers; other S3 names (`my-key`) are stored as
  `hoard_x_` + the name with every byte other than [A-Za-z0-9] escaped as `_xx`, and decoded back.
- Order. Azure lists in UTF-16 code-unit order, S3 in UTF-8 byte order; they differ only where
  one name has a character U+E000..U+FFFF and the other one above U+FFFF at the first difference.
  azure_listing.py restores S3 order, sorting such blocks within the page at hand or, when they span
  pages, listing them separately with `start_from` (see below); listings stream page by page,
  and `start_after` is one listing request in the usual case.
- Writes. A body of up to 1 MiB is one Put Blob; a longer one is staged as blocks of `block_size`
  (8 MiB) while it arrives and committed with one Put Block List, so readers see the old or the
  new blob, and a failed or cancelled write leaves the old one. Blocks larger than `block_size`
  (huge objects, large parts) are spooled to a temp file in `state_dir`: memory stays at one block
  of at most `block_size`.
- Multipart uploads are block blobs: each part is staged as blocks of the target blob whose ids
  carry the upload id, part number, attempt (a timestamp) and, on the part's last block, its MD5;
  the uncommitted block list therefore *is* the part list. `complete_multipart` commits the
  chosen parts' blocks in part order. A marker blob `.hoard-uploads/<blob name>/<upload id>`
  (at the container root, JSON with content type and metadata) records that the upload exists,
  for `list_uploads`, `abort` and `NoSuchUpload`.
  Azure's limits apply: a Put Block List on the blob (a staged `write`, another upload's
  completion) discards all its other uncommitted blocks, so such a write invalidates uploads in
  progress on that key (their completion fails with InvalidPart; Azurite keeps them across a
  single-shot Put Blob, Azure may not); Azure drops uncommitted blocks after 7 days; a blob
  holds at most 50,000 committed blocks (a part of known size is cut into at most 5 blocks, so
  any 10,000-part upload fits). Abort removes the marker only: Azure has no call to drop staged
  blocks, they go with the next commit of that blob or after 7 days.
- Folders are key prefixes, as in the S3 adapter: `make_dir` writes a zero-byte `path/` blob.
- At a container-root mount the `.hoard-uploads/` prefix is reserved (InvalidPath) and hidden from
  listings; a listing whose delimiter occurs inside that name (e.g. `-`) may show `.hoard-` as a
  common prefix while uploads are in progress.

Not covered: hierarchical-namespace (ADLS Gen2) accounts list in path-segment order, which this
adapter does not reorder; there listings can deviate from S3 order for names with characters
below `/` (such as `-` and `.`). OAuth/Entra ID credentials are not supported.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from contextlib import AsyncExitStack, aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob.aio import (
    BlobClient,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)

from ._util import (
    CHUNK_SIZE,
    check_part_list,
    check_part_number,
    composite_etag,
    float_option,
    int_option,
    unquote_etag,
)
from .azure_blocks import UPLOAD_ID, Block, BlockId, Part, UploadRecord, cut_blocks, parts_of
from .azure_errors import translated
from .azure_listing import S3OrderLister
from .azure_location import (
    DEFAULT_SUFFIX,
    account_from_endpoint,
    azure_options,
    check_account_key,
    connection_string_field,
    parse_azure_uri,
)
from .azure_names import (
    ETAG_KEY,
    MULTIPART_ETAG,
    UPLOADS,
    check_key,
    decode_metadata,
    encode_metadata,
    etag_of,
    parts_count,
    utc,
)
from .base import (
    MIN_PART_SIZE,
    AlreadyExists,
    BadDigest,
    EntityTooSmall,
    InvalidPart,
    InvalidPath,
    ListPage,
    NoSuchUpload,
    NotEmpty,
    NotFound,
    NotSupported,
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

T = TypeVar("T")

MiB = 1024 * 1024
MAX_BLOCK_SIZE = 4000 * MiB
MAX_BLOCKS = 50_000  # committed blocks per blob
MAX_NAME_LENGTH = 1024
PAGE_SIZE_MAX = 5000  # the most List Blobs returns per request


# --- the adapter --------------------------------------------------------------------------------


class AzureBlobAdapter:
    """A container or a prefix in one, through one BlobServiceClient."""

    scheme = "wasbs"
    block_size = 8 * MiB  # the size of staged blocks; also the most a block holds in memory
    # write() sends bodies up to this size as one Put Blob, longer ones as blocks + Put Block List.
    # The SDK hands Put Blob bodies to aiohttp as bytes, which aiohttp refuses to send above 1 MiB
    # without a warning (it would write them in one go); staged blocks are streamed from a file.
    single_put_size = CHUNK_SIZE
    read_chunk_size = 4 * MiB  # the SDK's range request size when reading
    list_page_size = PAGE_SIZE_MAX  # names per List Blobs request, at most
    copy_poll_interval = 0.05  # first wait for an asynchronous server-side copy; doubles up to 1 s

    def __init__(
        self,
        client: BlobServiceClient,
        container: str,
        prefix: str = "",
        *,
        stack: AsyncExitStack | None = None,
        spool_dir: Path | None = None,
        sas_token: str | None = None,
    ) -> None:
        self._client = client
        self._container: ContainerClient = client.get_container_client(container)
        self.container = container
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._stack = stack
        self._spool_dir = spool_dir
        self._sas = sas_token.lstrip("?") if sas_token else None
        self._lister = S3OrderLister(self._container)
        self._last_stamp = 0

    @classmethod
    async def open(
        cls, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> AzureBlobAdapter:
        """Open a container URI with its mount options (Hadoop/Alluxio aliases accepted)."""
        location = parse_azure_uri(uri)
        opts = azure_options(options, location)
        account = opts.get("account_name") or location.account
        connection_string = opts.get("connection_string")
        key, sas = opts.get("account_key"), opts.get("sas_token")
        endpoint = opts.get("endpoint_url")
        if connection_string and (endpoint or key or sas):
            raise ValueError("option connection_string holds endpoint and credential: drop the other options")
        if key and sas:
            raise ValueError("give either option account_key or option sas_token, not both")
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint
        endpoint = (
            endpoint or location.endpoint or (f"https://{account}.{DEFAULT_SUFFIX}" if account else None)
        )
        if not connection_string and endpoint is None:
            raise ValueError(
                f"{uri!r}: name the account (option account_name, or container@account in the URI)"
            )
        credential: AzureNamedKeyCredential | AzureSasCredential | None = None
        if key:
            account = account or account_from_endpoint(endpoint or "")
            check_account_key(key)
            credential = AzureNamedKeyCredential(account, key)
        elif sas:
            credential = AzureSasCredential(sas.lstrip("?"))
        elif connection_string:
            sas = connection_string_field(connection_string, "SharedAccessSignature")
        attempts = int_option(opts, "max_attempts", 3)
        settings: dict[str, Any] = {
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=max(attempts - 1, 0), random_jitter_range=1
            ),
            "connection_timeout": float_option(opts, "connect_timeout", 10.0),
            "read_timeout": float_option(opts, "read_timeout", 60.0),
            "max_single_get_size": cls.read_chunk_size,
            "max_chunk_get_size": cls.read_chunk_size,
        }
        stack = AsyncExitStack()
        try:
            if connection_string:
                client = BlobServiceClient.from_connection_string(connection_string, **settings)
            else:
                assert endpoint is not None
                client = BlobServiceClient(endpoint, credential=credential, **settings)
            client = await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            client, location.container, location.prefix, stack=stack, spool_dir=state_dir, sas_token=sas
        )

    @property
    def client(self) -> BlobServiceClient:
        """The SDK client; other adapters on the same account may share it (the opener closes it)."""
        return self._client

    async def aclose(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def __repr__(self) -> str:
        return f"AzureBlobAdapter({self._client.url!r}, {self.container!r}, {self.prefix!r})"

    # --- plumbing -----------------------------------------------------------------------------

    async def _call(self, path: str, call: Awaitable[T]) -> T:
        """The one choke point for SDK calls: errors leave as UfsErrors naming `path`."""
        with translated(path):
            return await call

    def _name(self, path: str) -> str:
        check_key(path)
        name = self.prefix + path
        if not self.prefix and name.startswith(UPLOADS):
            raise InvalidPath(path, f"{UPLOADS!r} is reserved for multipart uploads")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidPath(path, f"blob names are at most {MAX_NAME_LENGTH} characters")
        return name

    def _blob(self, name: str) -> BlobClient:
        return self._container.get_blob_client(name)

    def _stamp(self) -> str:
        """Microseconds since the epoch, strictly increasing within this adapter, as 13 hex digits."""
        self._last_stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        return f"{self._last_stamp:013x}"

    def _info(self, path: str, props: BlobProperties) -> ObjectInfo:
        etag = etag_of(props)
        return ObjectInfo(
            path=path,
            size=props.size,
            etag=etag,
            last_modified=utc(props.last_modified),
            content_type=props.content_settings.content_type if props.content_settings else None,
            metadata=decode_metadata(props.metadata or {}),
            parts_count=parts_count(etag),
        )

    # --- objects ------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        name = self._name(path)
        return self._info(path, await self._call(path, self._blob(name).get_blob_properties()))

    async def _check_version(self, path: str, if_match: str | None) -> None:
        if if_match is not None:
            etag = (await self.stat(path)).etag
            if etag != unquote_etag(if_match):
                raise PreconditionFailed(path, f"ETag is {etag!r}, not {if_match!r}")

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        return await read_head_in_two(self, path, length, start)

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        """From the committed block list: each block id names its upload part (BlockId), so the
        blocks before part N's first add up to where it starts. The blob's version is checked
        before and after (the block list takes no condition)."""
        await self._check_version(path, etag)
        committed, _ = await self._call(path, self._blob(self._name(path)).get_block_list("committed"))
        await self._check_version(path, etag)
        start = end = 0
        for block in committed:
            parsed = BlockId.parse(block.id)
            if parsed is None:
                raise NotSupported(path, "the blob's blocks do not name the parts they came from")
            if parsed.part < part_number:
                start += block.size or 0
            elif parsed.part == part_number:
                end += block.size or 0
        if end == 0:
            raise NotSupported(path, f"no blocks of part {part_number}")
        return start, start + end

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        name = self._name(path)
        start, end = max(opts.start, 0), opts.end
        if end is not None and end <= start:
            await self._check_version(path, opts.if_match)
            return
        length = None if end is None else end - start
        try:
            # The first response fixes the version: the SDK sends If-Match with its Azure ETag on
            # every further range request, so the stream never mixes two versions.
            download = await self._call(
                path, self._blob(name).download_blob(offset=start, length=length, max_concurrency=1)
            )
        except RangeNotSatisfiable:
            await self._check_version(path, opts.if_match)
            return  # start at or past the end: no bytes, as the local adapter does
        if opts.if_match is not None:
            etag = etag_of(download.properties)
            if etag != unquote_etag(opts.if_match):
                raise PreconditionFailed(path, f"ETag is {etag!r}, not {opts.if_match!r}")
        chunks = download.chunks()
        while True:
            with translated(path):  # a connection lost mid-body is Unavailable too
                chunk = await anext(chunks, None)
            if chunk is None:
                return
            for offset in range(0, len(chunk), CHUNK_SIZE):
                yield chunk[offset : offset + CHUNK_SIZE]

    def _write_block_sizes(self, size: int | None) -> Callable[[int], int]:
        """Block n's size for write(): fixed when the size is known (at most 50,000 blocks), else
        doubling every 5,000 blocks so that a body of unknown size can still reach terabytes."""
        if size is not None:
            fixed = max(self.block_size, -(-size // MAX_BLOCKS))
            fixed = min(-(-fixed // MiB) * MiB, MAX_BLOCK_SIZE)
            return lambda number: fixed
        return lambda number: min(self.block_size << min((number - 1) // 5000, 16), MAX_BLOCK_SIZE)

    def _part_block_sizes(self, size: int | None) -> Callable[[int], int]:
        """Block n's size within a part: at most 5 blocks for a part of known size (so 10,000 parts
        stay within 50,000 blocks), growing blocks for a part of unknown size."""
        if size is not None:
            fixed = max(self.block_size, -(-size // 5))
            fixed = min(-(-fixed // MiB) * MiB, MAX_BLOCK_SIZE)
            return lambda number: fixed
        return lambda number: min(self.block_size << min((number - 1) // 2, 16), MAX_BLOCK_SIZE)

    async def _stage(self, path: str, blob: BlobClient, block_id: BlockId, block: Block) -> str:
        raw = block_id.encode()
        data = await block.body()
        await self._call(path, blob.stage_block(raw, data, length=block.size))
        return raw

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        name = self._name(path)
        blob = self._blob(name)
        digest = hashlib.md5()
        blocks = cut_blocks(body, self._write_block_sizes(size), digest, self._spool_dir, self.block_size)
        async with aclosing(blocks):
            block, last = await anext(blocks)
            if last and block.size <= self.single_put_size:
                if size is not None and block.size != size:
                    raise BadDigest(path, f"expected {size} bytes, received {block.size}")
                settings = ContentSettings(
                    content_type=meta.content_type, content_md5=bytearray(digest.digest())
                )
                response = await self._call(
                    path,
                    blob.upload_blob(
                        await block.body(),
                        length=block.size,
                        overwrite=True,
                        metadata=encode_metadata(meta.metadata),
                        content_settings=settings,
                        max_concurrency=1,
                    ),
                )
                total = block.size
            else:
                upload_id, attempt = self._new_upload_id(), self._stamp()
                ids: list[str] = []
                total = 0
                while True:
                    if last and size is not None and total + block.size != size:
                        raise BadDigest(path, f"expected {size} bytes, received {total + block.size}")
                    ids.append(
                        await self._stage(path, blob, BlockId(upload_id, 0, attempt, len(ids), None), block)
                    )
                    total += block.size
                    if last:
                        break
                    block, last = await anext(blocks)
                # One Put Block List makes the new content visible at once; the staged blocks of a
                # failed or cancelled write are never committed and Azure discards them.
                settings = ContentSettings(
                    content_type=meta.content_type, content_md5=bytearray(digest.digest())
                )
                response = await self._call(
                    path,
                    blob.commit_block_list(
                        [BlobBlock(i) for i in ids],
                        content_settings=settings,
                        metadata=encode_metadata(meta.metadata),
                    ),
                )
        return ObjectInfo(
            path=path,
            size=total,
            etag=digest.hexdigest(),
            last_modified=utc(response.get("last_modified")),
            content_type=meta.content_type,
            metadata=dict(meta.metadata),
        )

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        src_name, dst_name = self._name(src), self._name(dst)
        source = await self._call(src, self._blob(src_name).get_blob_properties())
        target = self._blob(dst_name)
        if src_name != dst_name:
            url = self._blob(src_name).url + (f"?{self._sas}" if self._sas else "")
            stored = self._stored_metadata(meta, source) if meta is not None else None
            response = await self._call(
                dst,
                target.start_copy_from_url(
                    url,
                    metadata=stored or None,  # None (and {}) copy the source's metadata
                    source_etag=source.etag,
                    source_match_condition=MatchConditions.IfNotModified,
                ),
            )
            etag = await self._finish_copy(dst, target, response)
        else:
            etag = source.etag
        if meta is not None:
            await self._replace_meta(dst, target, etag, meta, source)
        return await self.stat(dst)

    def _stored_metadata(self, meta: WriteMeta, source: BlobProperties) -> dict[str, str]:
        stored = encode_metadata(meta.metadata)
        etag = etag_of(source)
        if MULTIPART_ETAG.fullmatch(etag):
            stored[ETAG_KEY] = etag  # the bytes are the source's, so is their ETag
        return stored

    async def _finish_copy(self, path: str, target: BlobClient, response: Mapping[str, Any]) -> str:
        """Wait for an asynchronous copy (Azure may copy large blobs in the background); its ETag."""
        status, etag = response.get("copy_status"), str(response.get("etag", ""))
        delay = self.copy_poll_interval
        try:
            while status == "pending":
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                props = await self._call(path, target.get_blob_properties())
                status, etag = props.copy.status, props.etag
        except BaseException:
            if status == "pending" and response.get("copy_id"):
                copy_id = str(response["copy_id"])
                task = asyncio.ensure_future(target.abort_copy(copy_id))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        if status != "success":
            raise Unavailable(path, f"server-side copy ended {status!r}")
        return etag

    async def _replace_meta(
        self, path: str, target: BlobClient, etag: str, meta: WriteMeta, source: BlobProperties
    ) -> None:
        """Content type and metadata of a copy, as S3's MetadataDirective=REPLACE; the stored MD5
        (the ETag) stays. Both requests are conditional on the copy being the current content."""
        md5 = source.content_settings.content_md5 if source.content_settings else None
        settings = ContentSettings(content_type=meta.content_type, content_md5=md5)
        done = await self._call(
            path,
            target.set_http_headers(settings, etag=etag, match_condition=MatchConditions.IfNotModified),
        )
        await self._call(
            path,
            target.set_blob_metadata(
                self._stored_metadata(meta, source),
                etag=str(done.get("etag", "")),
                match_condition=MatchConditions.IfNotModified,
            ),
        )

    async def delete(self, path: str) -> None:
        name = self._name(path)
        try:
            await self._call(path, self._blob(name).delete_blob(delete_snapshots="include"))
        except NotFound:
            pass

    # --- listing ------------------------------------------------------------------------------

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        if limit <= 0:
            return ListPage([], [], None)
        page_size = min(limit + 1, self.list_page_size)
        after = self.prefix + start_after if start_after else None
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        entries = self._lister.entries(self.prefix + prefix, after, delimiter or None, page_size)
        async with aclosing(entries):
            async for name, props in entries:
                rel = name[len(self.prefix) :]
                if not rel or (not self.prefix and name.startswith(UPLOADS)):
                    continue  # the mount's own folder marker; multipart markers
                if len(objects) + len(prefixes) == limit:
                    return ListPage(objects, prefixes, last)
                if props is None:
                    prefixes.append(rel)
                else:
                    objects.append(self._info(rel, props))
                last = rel
        return ListPage(objects, prefixes, None)

    async def _first_names(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` blob names starting with `prefix` (one request)."""
        with translated(prefix or self.container):
            pages = self._container.list_blobs(name_starts_with=prefix, results_per_page=limit).by_page()
            page = await anext(pages, None)
            return [item.name async for item in page][:limit] if page is not None else []

    # --- directories --------------------------------------------------------------------------

    async def _names_under(self, path: str, limit: int) -> list[str]:
        return await self._first_names(self._name(path) + "/", limit)

    async def is_dir(self, path: str) -> bool:
        path = path.rstrip("/")
        if not path:
            try:
                await self._first_names(self.prefix, 1)  # ContainerNotFound, else it exists
            except NotFound:
                return False
            return True
        return bool(await self._names_under(path, 1))

    async def make_dir(self, path: str) -> None:
        path = path.rstrip("/")
        name = self._name(path)
        if await self.is_dir(path):
            raise AlreadyExists(path, "the folder exists")
        await self._call(path, self._blob(name + "/").upload_blob(b"", overwrite=True))

    async def remove_dir(self, path: str) -> None:
        path = path.rstrip("/")
        marker = self._name(path) + "/"
        names = await self._names_under(path, 2)
        if not names:
            raise NotFound(path, "no such folder")
        if any(name != marker for name in names):
            raise NotEmpty(path, "the folder holds objects")
        await self._call(path, self._blob(marker).delete_blob())

    # --- multipart ----------------------------------------------------------------------------

    def _new_upload_id(self) -> str:
        """19 hex digits: a timestamp (so ids sort by initiation) and 24 random bits."""
        return self._stamp() + f"{int.from_bytes(os.urandom(3)):06x}"

    def _marker(self, name: str, upload_id: str) -> BlobClient:
        return self._blob(f"{UPLOADS}{name}/{upload_id}")

    async def _upload_marker(self, path: str, name: str, upload_id: str) -> BlobClient:
        """The marker blob of an upload, NoSuchUpload if it is not in progress."""
        if not UPLOAD_ID.fullmatch(upload_id):
            raise NoSuchUpload(path, f"no upload {upload_id!r}")
        marker = self._marker(name, upload_id)
        try:
            await self._call(path, marker.get_blob_properties())
        except NotFound:
            raise NoSuchUpload(path, f"no upload {upload_id!r}") from None
        return marker

    async def _staged_parts(self, path: str, name: str, upload_id: str) -> dict[int, Part]:
        try:
            _, uncommitted = await self._call(path, self._blob(name).get_block_list("uncommitted"))
        except NotFound:
            return {}  # no blob and no staged blocks yet
        return parts_of(uncommitted, upload_id)

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        name = self._name(path)
        upload_id = self._new_upload_id()
        record = UploadRecord(meta.content_type, dict(meta.metadata))
        await self._call(path, self._marker(name, upload_id).upload_blob(record.dump(), overwrite=False))
        return upload_id

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        check_part_number(path, part_number)
        name = self._name(path)
        await self._upload_marker(path, name, upload_id)
        blob = self._blob(name)
        attempt = self._stamp()
        digest = hashlib.md5()
        blocks = cut_blocks(body, self._part_block_sizes(size), digest, self._spool_dir, self.block_size)
        count = total = 0
        async with aclosing(blocks):
            async for block, last in blocks:
                if last and size is not None and total + block.size != size:
                    raise BadDigest(
                        path, f"part {part_number}: expected {size} bytes, received {total + block.size}"
                    )
                # The part's MD5 rides on its last block: a part without it was never complete.
                md5 = digest.hexdigest() if last else None
                await self._stage(path, blob, BlockId(upload_id, part_number, attempt, count, md5), block)
                count += 1
                total += block.size
        return PartInfo(part_number, digest.hexdigest(), total, datetime.now(UTC))

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        name = self._name(path)
        check_part_list(path, parts)
        marker = await self._upload_marker(path, name, upload_id)
        record = UploadRecord.load(await self._download(path, marker))
        staged = await self._staged_parts(path, name, upload_id)
        chosen: list[Part] = []
        for number, etag in parts:
            part = staged.get(number)
            if part is None or part.md5 != unquote_etag(etag).lower():
                raise InvalidPart(path, f"part {number} with ETag {etag!r} was not uploaded")
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise EntityTooSmall(
                    path, f"part {part.number} has {part.size} bytes, less than {MIN_PART_SIZE}"
                )
        etag = composite_etag(part.md5 for part in chosen)
        response = await self._call(
            path,
            self._blob(name).commit_block_list(
                [BlobBlock(block_id) for part in chosen for block_id in part.block_ids],
                content_settings=ContentSettings(content_type=record.content_type),
                metadata={**encode_metadata(record.metadata), ETAG_KEY: etag},
            ),
        )
        try:
            await self._call(path, marker.delete_blob())
        except NotFound:
            pass
        return ObjectInfo(
            path=path,
            size=sum(part.size for part in chosen),
            etag=etag,
            last_modified=utc(response.get("last_modified")),
            content_type=record.content_type,
            metadata=record.metadata,
            parts_count=len(chosen),
        )

    async def _download(self, path: str, blob: BlobClient) -> bytes:
        download = await self._call(path, blob.download_blob())
        with translated(path):
            return await download.readall()

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        name = self._name(path)
        if not UPLOAD_ID.fullmatch(upload_id):
            raise NoSuchUpload(path, f"no upload {upload_id!r}")
        try:
            await self._call(path, self._marker(name, upload_id).delete_blob())
        except NotFound:
            raise NoSuchUpload(path, f"no upload {upload_id!r}") from None

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        name = self._name(path)
        await self._upload_marker(path, name, upload_id)
        staged = sorted(
            (p for p in (await self._staged_parts(path, name, upload_id)).values() if p.number > marker),
            key=lambda p: p.number,
        )
        page = staged[: max(limit, 0)]
        more = len(staged) > len(page) and page
        return PartsPage([p.info for p in page], page[-1].number if more else None)

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        """Reads every marker under the prefix (uploads in progress, not objects), then pages."""
        if limit <= 0:
            return UploadsPage([], [], None, None)
        root = UPLOADS + self.prefix
        found: list[UploadInfo] = []
        with translated(prefix):
            async for item in self._container.list_blobs(name_starts_with=root + prefix):
                key, _, upload_id = item.name[len(root) :].rpartition("/")
                if key.startswith(prefix) and UPLOAD_ID.fullmatch(upload_id):
                    found.append(UploadInfo(key, upload_id, utc(item.creation_time or item.last_modified)))
        found.sort(key=lambda u: (u.path, u.upload_id))
        uploads: list[UploadInfo] = []
        prefixes: list[str] = []
        last: tuple[str, str | None] | None = None
        for upload in found:
            if key_marker is not None:
                if upload.path < key_marker:
                    continue
                if upload.path == key_marker and (
                    upload_id_marker is None or upload.upload_id <= upload_id_marker
                ):
                    continue
            rolled = None
            if delimiter:
                cut = upload.path.find(delimiter, len(prefix))
                rolled = upload.path[: cut + len(delimiter)] if cut >= 0 else None
            if rolled is not None and (prefixes[-1:] == [rolled] or (key_marker or "") >= rolled):
                continue
            if len(uploads) + len(prefixes) == limit:
                assert last is not None
                return UploadsPage(uploads, prefixes, last[0], last[1])
            if rolled is not None:
                prefixes.append(rolled)
                last = (rolled, None)
            else:
                uploads.append(upload)
                last = (upload.path, upload.upload_id)
        return UploadsPage(uploads, prefixes, None, None)

    # --- health -------------------------------------------------------------------------------

    async def check(self) -> None:
        # A listing, not Get Container Properties: a container SAS may list but not read properties.
        await self._first_names(self.prefix, 1)
