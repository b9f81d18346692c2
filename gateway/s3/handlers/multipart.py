"""Multipart uploads: create, upload part (and part copy), complete, abort, list parts, list uploads.

Upload ids are the UFS's own (S3 passes through; local keeps a staging directory), so a retry of a
part after a gateway restart lands in the same upload.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from gateway.namespace import Mount
from gateway.s3 import errors, xml
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers.common import bucket_target, check_write_preconditions, object_target, write_meta
from gateway.s3.handlers.objects import stat_object
from gateway.s3.request import Preconditions, parse_copy_source, parse_int
from gateway.s3.responses import XML, S3Response, empty, xml_response
from gateway.services import Services
from ufs_adapters.base import ObjectInfo, ReadOptions

MAX_PART_SIZE = 5 * 1024**3
# A complete that takes longer than this answers 200 at once and keeps the connection alive with
# whitespace until the result (or an error document) is ready, as S3 does.
_KEEPALIVE_AFTER = 2.0
_KEEPALIVE_EVERY = 5.0


def _part_number(req: S3Request) -> int:
    raw = req.query.get("partNumber", "")
    if not raw.isdigit() or not 1 <= int(raw) <= 10000:
        raise S3Error(
            errors.INVALID_ARGUMENT,
            "Part number must be an integer between 1 and 10000.",
            resource=req.resource,
        )
    return int(raw)


async def create_multipart_upload(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await bucket_target(req, svc)
    upload_id = await mount.adapter.create_multipart(path, write_meta(req.headers, req.resource))
    return xml_response(xml.initiate_multipart(req.bucket, req.key, upload_id))


async def upload_part(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    number = _part_number(req)
    size = req.content_length()
    if size is None and "chunked" not in req.headers.get("transfer-encoding", ""):
        raise S3Error(errors.MISSING_CONTENT_LENGTH, resource=req.resource)
    if size is not None and size > MAX_PART_SIZE:
        raise S3Error(errors.ENTITY_TOO_LARGE, resource=req.resource)
    part = await mount.adapter.upload_part(path, req.query["uploadId"], number, req.body(), size=size)
    return empty(200, [(b"etag", f'"{part.etag}"'.encode()), *req.checksum_headers()])


_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


async def upload_part_copy(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    number = _part_number(req)
    src = parse_copy_source(req.headers["x-amz-copy-source"], req.resource)
    src_mount, src_path = object_target(svc, src.bucket, src.key, f"/{src.bucket}/{src.key}")
    info = await stat_object(req, svc, src_mount, src_path, revalidate=True, bucket=src.bucket)
    pre = Preconditions.parse(req.headers, "x-amz-copy-source-if-")
    if pre is not None:
        pre.check(info.etag, info.last_modified, resource=req.resource, read=False)
    start, end = 0, info.size
    raw = req.headers.get("x-amz-copy-source-range")
    if raw is not None:
        m = _COPY_RANGE.match(raw.strip())
        if m is None or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) >= info.size:
            raise S3Error(
                errors.INVALID_RANGE, "The x-amz-copy-source-range value is not valid.", resource=req.resource
            )
        start, end = int(m.group(1)), int(m.group(2)) + 1
    body = src_mount.adapter.read(src_path, ReadOptions(start, end, if_match=info.etag))
    part = await mount.adapter.upload_part(path, req.query["uploadId"], number, body, size=end - start)
    return xml_response(xml.copy_result("CopyPartResult", part.etag, part.last_modified))


async def complete_multipart_upload(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    parts = xml.parse_complete(await req.read_body(), req.resource)
    await check_write_preconditions(req, svc, mount, path)
    task = asyncio.ensure_future(_complete(svc, mount, path, req.query["uploadId"], parts))
    done, _ = await asyncio.wait({task}, timeout=_KEEPALIVE_AFTER)
    location = f"/{req.bucket}/{req.key}"
    if done:
        info = task.result()
        return xml_response(xml.complete_multipart(location, req.bucket, req.key, info.etag))
    return S3Response(200, [XML], _keepalive(req, task, location))


async def _complete(
    svc: Services, mount: Mount, path: str, upload_id: str, parts: list[tuple[int, str]]
) -> ObjectInfo:
    try:
        return await mount.adapter.complete_multipart(path, upload_id, parts)
    finally:
        await svc.cache.invalidate(mount.source, path)


async def _keepalive(req: S3Request, task: asyncio.Future[ObjectInfo], location: str) -> AsyncIterator[bytes]:
    """The 200-then-whitespace form: the status is sent before the outcome is known, so a failure
    becomes an <Error> document in the body (clients such as botocore check for it)."""
    yield b'<?xml version="1.0" encoding="UTF-8"?>\n'
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_KEEPALIVE_EVERY)
            if not task.done():
                yield b" "
        info = task.result()
    except BaseException as exc:  # rendered into the document, never lost
        if not task.done():
            task.cancel()
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            raise
        err = errors.from_exception(exc, resource=req.resource, request_id=req.request_id)
        yield errors.render(err, req.request_id).split(b"?>", 1)[1]
        return
    body = xml.complete_multipart(location, req.bucket, req.key, info.etag)
    yield body.split(b"?>", 1)[1]


async def abort_multipart_upload(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await mount.adapter.abort_multipart(path, req.query["uploadId"])
    return empty(204)


async def list_parts(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    marker = parse_int(req.query, "part-number-marker", 0, 0, 10000, req.resource)
    limit = parse_int(req.query, "max-parts", 1000, 0, 1000, req.resource)
    upload_id = req.query["uploadId"]
    page = await mount.adapter.list_parts(path, upload_id, marker=marker, limit=limit)
    body = xml.list_parts(
        req.bucket,
        req.key,
        upload_id,
        page.parts,
        marker=marker,
        next_marker=page.next_marker,
        max_parts=limit,
    )
    return xml_response(body)


async def list_multipart_uploads(req: S3Request, svc: Services) -> S3Response:
    mount, ufs_dir = await bucket_target(req, svc)
    q = req.query
    encoding = q.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error(
            errors.INVALID_ARGUMENT, "Invalid Encoding Method specified in Request", resource=req.resource
        )
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter") or None
    key_marker = q.get("key-marker", "")
    upload_id_marker = q.get("upload-id-marker", "")
    limit = parse_int(q, "max-uploads", 1000, 0, 1000, req.resource)
    root = f"{ufs_dir}/" if ufs_dir else ""
    page = await mount.adapter.list_uploads(
        root + prefix,
        delimiter=delimiter,
        key_marker=root + key_marker if key_marker else None,
        upload_id_marker=upload_id_marker or None,
        limit=limit,
    )
    cut = len(root)
    body = xml.list_uploads(
        req.bucket,
        [(u.path[cut:], u) for u in page.uploads],
        [p[cut:] for p in page.common_prefixes],
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        next_key_marker=page.next_key_marker[cut:] if page.next_key_marker else None,
        next_upload_id_marker=page.next_upload_id_marker,
        max_uploads=limit,
        url=encoding == "url",
    )
    return xml_response(body)
