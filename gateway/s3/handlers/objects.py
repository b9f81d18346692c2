"""GetObject, HeadObject, PutObject, CopyObject, DeleteObject, DeleteObjects."""

from __future__ import annotations

from gateway.namespace import Mount
from gateway.s3 import errors, xml
from gateway.s3.context import MAX_PUT_SIZE, S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers.common import bucket_target, missing, object_headers, object_target, write_meta
from gateway.s3.request import Preconditions, parse_copy_source, parse_range
from gateway.s3.responses import S3Response, empty, xml_response
from gateway.services import Services
from ufs_adapters.base import NotFound, ObjectInfo, ReadOptions, UfsError, WriteMeta

# response-* query parameters override these headers of a GetObject response.
_OVERRIDES = (
    ("response-content-type", b"content-type"),
    ("response-content-language", b"content-language"),
    ("response-expires", b"expires"),
    ("response-cache-control", b"cache-control"),
    ("response-content-disposition", b"content-disposition"),
    ("response-content-encoding", b"content-encoding"),
)


async def _stat(req: S3Request, svc: Services, mount: Mount, path: str) -> ObjectInfo:
    try:
        return await mount.adapter.stat(path)
    except NotFound:
        raise await missing(req, svc) from None


def _parts_count(info: ObjectInfo) -> int:
    if info.parts_count is not None:
        return info.parts_count
    _, dash, n = info.etag.rpartition("-")
    return int(n) if dash and n.isdigit() else 1


async def get_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    info = await _stat(req, svc, mount, path)
    return _object_response(req, mount, path, info)


async def head_object(req: S3Request, svc: Services) -> S3Response:
    return await get_object(req, svc)  # the endpoint sends no body for HEAD


def _object_response(req: S3Request, mount: Mount, path: str, info: ObjectInfo) -> S3Response:
    pre = Preconditions.parse(req.headers)
    if pre is not None:
        pre.check(info.etag, info.last_modified, resource=req.resource)
    headers = object_headers(info)
    status = 200
    start, end = 0, info.size
    part = req.query.get("partNumber")
    if part is not None:
        if not part.isdigit() or not 1 <= int(part) <= 10000:
            raise S3Error(
                errors.INVALID_ARGUMENT,
                "Part number must be an integer between 1 and 10000.",
                resource=req.resource,
            )
        count = _parts_count(info)
        if count > 1:
            raise S3Error(
                errors.NOT_IMPLEMENTED,
                "GetObject by partNumber of a multipart object is not supported; use Range.",
                resource=req.resource,
            )
        if int(part) != 1:
            raise S3Error(errors.INVALID_PART_NUMBER, resource=req.resource)
        headers.append((b"x-amz-mp-parts-count", b"1"))
    else:
        rng = parse_range(req.headers.get("range"), info.size, req.resource)
        if rng is not None:
            status = 206
            start, end = rng.start, rng.end
            headers.append((b"content-range", rng.content_range(info.size).encode()))
    if req.query:
        _apply_overrides(req, headers)
    if end <= start or req.method == "HEAD":
        return S3Response(status, headers, b"", length=end - start)
    body = mount.adapter.read(path, ReadOptions(start, end, if_match=info.etag))
    return S3Response(status, headers, body, length=end - start)


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
    if req.headers.get("if-none-match", "").strip() == "*":
        try:
            await mount.adapter.stat(path)
        except NotFound:
            pass
        else:
            raise S3Error(
                errors.PRECONDITION_FAILED, resource=req.resource, extra={"Condition": "If-None-Match"}
            )
    info = await mount.adapter.write(path, req.body(), size=size, meta=meta)
    return empty(200, [(b"etag", f'"{info.etag}"'.encode()), *req.checksum_headers()])


async def delete_object(req: S3Request, svc: Services) -> S3Response:
    mount, path = object_target(svc, req.bucket, req.key, req.resource)
    await bucket_target(req, svc)
    await mount.adapter.delete(path)
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
            await mount.adapter.delete(path)
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
    try:
        info = await src_mount.adapter.stat(src_path)
    except NotFound:
        raise await missing(req, svc, src.bucket) from None
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
    if src_mount is mount:
        new = await mount.adapter.copy(src_path, path, meta=meta)
    else:
        if meta is None:
            meta = _meta_of(info)
        body = src_mount.adapter.read(src_path, ReadOptions(0, info.size, if_match=info.etag))
        new = await mount.adapter.write(path, body, size=info.size, meta=meta)
    return xml_response(xml.copy_result("CopyObjectResult", new.etag, new.last_modified))


def _meta_of(info: ObjectInfo) -> WriteMeta:
    return WriteMeta(content_type=info.content_type, metadata=dict(info.metadata))
