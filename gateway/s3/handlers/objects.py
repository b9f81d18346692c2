"""GetObject, HeadObject, PutObject, CopyObject, DeleteObject, DeleteObjects."""

from __future__ import annotations

from collections.abc import Mapping

from cache.stats import ReadStats
from gateway.namespace import Mount
from gateway.s3 import errors, xml
from gateway.s3.context import MAX_PUT_SIZE, S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers.common import (
    bucket_target,
    check_write_preconditions,
    missing,
    object_headers,
    object_target,
    write_meta,
)
from gateway.s3.request import Preconditions, parse_copy_source, parse_range, range_bounds
from gateway.s3.responses import Headers, S3Response, empty, xml_response
from gateway.services import Services
from ufs_adapters.base import NotFound, ObjectInfo, PreconditionFailed, ReadOptions, UfsError, WriteMeta

# response-* query parameters override these headers of a GetObject response.
_OVERRIDES = (
    ("response-content-type", b"content-type"),
    ("response-content-language", b"content-language"),
    ("response-expires", b"expires"),
    ("response-cache-control", b"cache-control"),
    ("response-content-disposition", b"content-disposition"),
    ("response-content-encoding", b"content-encoding"),
)


def cache_control(headers: Mapping[str, str]) -> tuple[bool, bool]:
    """(revalidate, no_store) from Cache-Control: `no-cache` revalidates the version with the UFS,
    `no-store` also streams the bytes through without caching them."""
    value = headers.get("cache-control")
    if not value:
        return False, False
    directives = {d.split("=", 1)[0].strip().lower() for d in value.split(",")}
    no_store = "no-store" in directives
    return no_store or "no-cache" in directives, no_store


async def stat_object(
    req: S3Request,
    svc: Services,
    mount: Mount,
    path: str,
    *,
    revalidate: bool = False,
    bucket: str | None = None,
    prefetch: tuple[int, int | None] | None = None,
) -> ObjectInfo:
    try:
        return await svc.cache.stat(mount.source, path, revalidate=revalidate, prefetch=prefetch)
    except NotFound:
        raise await missing(req, svc, bucket) from None


async def get_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    revalidate, no_store = cache_control(req.headers)
    # A cold GET may take its bytes with the metadata (one UFS request, not a HEAD and a GET).
    # (Not for ?partNumber=N: where part N starts is not known yet.)
    by_part = "partNumber" in req.query
    reads = req.method == "GET" and not no_store and not by_part
    prefetch = range_bounds(req.headers.get("range")) if reads else None
    info = await stat_object(req, svc, mount, path, revalidate=revalidate, prefetch=prefetch)
    span = None
    if by_part:  # (no await on the hit path without it)
        try:
            span = await _part_span(req, mount, path, info)
        except PreconditionFailed:  # changed at the UFS since we last looked: look again, once
            info = await stat_object(req, svc, mount, path, revalidate=True)
            span = await _part_span(req, mount, path, info)
    status, headers, start, end = _object_headers(req, info, span)
    if req.method == "HEAD" or end <= start:
        cached, total = await svc.cache.coverage(mount.source, info, 0, info.size)
        headers.append((b"x-cache", _outcome(cached, total)))
        return S3Response(status, headers, b"", length=end - start)
    for attempt in (1, 2):
        stats = ReadStats()
        body = svc.cache.read(mount.source, info, start, end, stats, no_store=no_store)
        try:
            # The first chunk is taken before the headers go out: it tells X-Cache, and a version
            # that vanished since the stat is still an error we can report (or retry) cleanly.
            first = await anext(body, b"")
        except PreconditionFailed:
            await body.aclose()
            if attempt == 2:
                raise
            info = await stat_object(req, svc, mount, path, revalidate=True)
            if span is not None:
                span = await _part_span(req, mount, path, info)
            status, headers, start, end = _object_headers(req, info, span)
            continue
        break
    page = svc.cache.settings.page_size
    if no_store or start // page == (end - 1) // page:
        outcome = stats.outcome.encode()  # no-store streams every byte from the UFS
    else:
        cached, total = await svc.cache.coverage(
            mount.source, info, start + len(first), end, exclude=stats.in_flight
        )
        outcome = _combine(stats.bytes_from_ufs == 0, cached, total)
    headers.append((b"x-cache", outcome))
    return S3Response(status, headers, body, length=end - start, first=first)


def _outcome(cached: int, total: int) -> bytes:
    return b"HIT" if cached == total else b"MISS" if cached == 0 else b"PARTIAL"


def _combine(first_hit: bool, cached: int, total: int) -> bytes:
    if first_hit and cached == total:
        return b"HIT"
    if not first_hit and cached == 0:
        return b"MISS"
    return b"PARTIAL"


async def head_object(req: S3Request, svc: Services) -> S3Response:
    return await get_object(req, svc)  # HEAD sends the same headers and no body


async def _part_span(req: S3Request, mount: Mount, path: str, info: ObjectInfo) -> tuple[int, int]:
    """GetObject ?partNumber=N: the bytes of part N (the whole object is part 1 of 1), asked of
    the UFS for a multipart object."""
    part = req.query["partNumber"]
    if not part.isdigit() or not 1 <= int(part) <= 10000:
        raise S3Error(
            errors.INVALID_ARGUMENT,
            "Part number must be an integer between 1 and 10000.",
            resource=req.resource,
        )
    if req.headers.get("range") is not None:
        raise S3Error(
            errors.INVALID_REQUEST,
            "Cannot specify both Range header and partNumber query parameter.",
            resource=req.resource,
        )
    number, count = int(part), info.parts_count or 1
    if number > count:
        raise S3Error(errors.INVALID_PART_NUMBER, resource=req.resource)
    if count == 1:
        return 0, info.size
    start, end = await mount.source.adapter.part_range(path, number, info.etag)
    if not 0 <= start <= end <= info.size:  # a store's answer that does not fit the object
        raise PreconditionFailed(path, f"part {part} is bytes {start}-{end} of a {info.size}-byte object")
    return start, end


def _object_headers(
    req: S3Request, info: ObjectInfo, span: tuple[int, int] | None = None
) -> tuple[int, Headers, int, int]:
    """Preconditions, then (status, headers, start, end) of the bytes to send; `span`: the part
    a GetObject ?partNumber=N asked for (_part_span)."""
    pre = Preconditions.parse(req.headers)
    if pre is not None:
        pre.check(info.etag, info.last_modified, resource=req.resource)
    headers = object_headers(info)
    status = 200
    start, end = 0, info.size
    if span is not None:
        count = info.parts_count or 1
        if count > 1:
            status, (start, end) = 206, span
            headers.append((b"content-range", f"bytes {start}-{end - 1}/{info.size}".encode()))
        headers.append((b"x-amz-mp-parts-count", str(count).encode()))
    else:
        rng = parse_range(req.headers.get("range"), info.size, req.resource)
        if rng is not None:
            status = 206
            start, end = rng.start, rng.end
            headers.append((b"content-range", rng.content_range(info.size).encode()))
    if req.query:
        _apply_overrides(req, headers)
    return status, headers, start, end


def _apply_overrides(req: S3Request, headers: list[tuple[bytes, bytes]]) -> None:
    for param, header in _OVERRIDES:
        value = req.query.get(param)
        if value is not None:
            headers[:] = [(k, v) for k, v in headers if k != header]
            headers.append((header, value.encode("latin-1", "replace")))


async def put_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await bucket_target(req, svc)
    size = req.content_length()
    if size is None and "chunked" not in req.headers.get("transfer-encoding", ""):
        raise S3Error(errors.MISSING_CONTENT_LENGTH, resource=req.resource)
    if size is not None and size > MAX_PUT_SIZE:
        raise S3Error(errors.ENTITY_TOO_LARGE, resource=req.resource)
    meta = write_meta(req.headers, req.resource)
    await check_write_preconditions(req, svc, mount, path)
    try:
        info = await mount.adapter.write(path, req.body(), size=size, meta=meta)
    finally:
        # Before the acknowledgement, and also when the write failed half-way on an S3 UFS.
        await svc.cache.invalidate(mount.source, path)
    return empty(200, [(b"etag", f'"{info.etag}"'.encode()), *req.checksum_headers()])


async def delete_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await bucket_target(req, svc)
    try:
        await mount.adapter.delete(path)
    finally:
        await svc.cache.invalidate(mount.source, path)
    return empty(204)


async def delete_objects(req: S3Request, svc: Services) -> S3Response:
    await bucket_target(req, svc)
    keys, quiet = xml.parse_delete(await req.read_body(), req.resource)
    deleted: list[str] = []
    failed: list[tuple[str, str, str]] = []
    for key in keys:
        resource = f"/{req.bucket}/{key}"
        try:
            mount, path = object_target(svc, req.bucket, key, resource)
            try:
                await mount.adapter.delete(path)
            finally:
                await svc.cache.invalidate(mount.source, path)
        except (S3Error, UfsError) as exc:
            err = errors.from_exception(exc, resource=resource)
            failed.append((key, err.code, err.message))
        else:
            deleted.append(key)
    return xml_response(xml.delete_result(xml.DeleteResult(deleted, failed), quiet))


async def copy_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await bucket_target(req, svc)
    src = parse_copy_source(req.headers["x-amz-copy-source"], req.resource)
    src_resource = f"/{src.bucket}/{src.key}"
    src_mount, src_path = object_target(svc, src.bucket, src.key, src_resource)
    info = await stat_object(req, svc, src_mount, src_path, revalidate=True, bucket=src.bucket)
    pre = Preconditions.parse(req.headers, "x-amz-copy-source-if-")
    if pre is not None:
        pre.check(info.etag, info.last_modified, resource=req.resource, read=False)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error(
            errors.INVALID_ARGUMENT, f"Unknown metadata directive {directive!r}.", resource=req.resource
        )
    meta = write_meta(req.headers, req.resource) if directive == "REPLACE" else None
    if src_mount is mount and src_path == path and meta is None:
        raise S3Error(
            errors.INVALID_REQUEST,
            "This copy request is illegal because it is trying to copy an object to itself without changing "
            "the object's metadata, storage class, website redirect location or encryption attributes.",
            resource=req.resource,
        )
    try:
        if src_mount is mount:
            new = await mount.adapter.copy(src_path, path, meta=meta)
        else:
            if meta is None:
                meta = _meta_of(info)
            body = src_mount.adapter.read(src_path, ReadOptions(0, info.size, if_match=info.etag))
            new = await mount.adapter.write(path, body, size=info.size, meta=meta)
    finally:
        await svc.cache.invalidate(mount.source, path)
    return xml_response(xml.copy_result("CopyObjectResult", new.etag, new.last_modified))


def _meta_of(info: ObjectInfo) -> WriteMeta:
    return WriteMeta(content_type=info.content_type, metadata=dict(info.metadata))
