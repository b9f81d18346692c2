"""Helpers every handler uses: where a bucket or key lives, and the object headers S3 sends."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.namespace import Mount
from gateway.s3 import errors
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.request import Preconditions, check_key, http_date
from gateway.s3.responses import Headers
from gateway.services import Services
from ufs_adapters.base import NotFound, ObjectInfo, UfsError, WriteMeta

DEFAULT_CONTENT_TYPE = "binary/octet-stream"


async def bucket_target(req: S3Request, svc: Services, bucket: str | None = None) -> tuple[Mount, str]:
    """The mount serving a bucket and the bucket's directory in it ('' when the mount is the bucket).
    NoSuchBucket if neither a mount nor a directory of the root mount has that name."""
    name = req.bucket if bucket is None else bucket
    found = svc.mounts.resolve_bucket(name)
    if found is None:
        raise S3Error(errors.NO_SUCH_BUCKET, resource=f"/{name}", extra={"BucketName": name})
    mount, ufs_dir = found
    if ufs_dir:
        try:
            exists = await mount.adapter.is_dir(ufs_dir)
        except UfsError as exc:
            raise errors.from_exception(exc, resource=f"/{name}") from exc
        if not exists:
            raise S3Error(errors.NO_SUCH_BUCKET, resource=f"/{name}", extra={"BucketName": name})
    return mount, ufs_dir


def object_target(svc: Services, bucket: str, key: str, resource: str) -> tuple[Mount, str]:
    """The mount and UFS path of a key, without I/O. The bucket's existence is checked only when
    the UFS says the key is missing (see `missing`), to keep the hit path free of extra calls."""
    check_key(key, resource)
    if svc.mounts.resolve_bucket(bucket) is None:
        raise S3Error(errors.NO_SUCH_BUCKET, resource=f"/{bucket}", extra={"BucketName": bucket})
    return svc.mounts.resolve(bucket, key)


async def missing(req: S3Request, svc: Services, bucket: str | None = None) -> S3Error:
    """NoSuchBucket when the bucket is gone, else NoSuchKey."""
    await bucket_target(req, svc, bucket)
    return S3Error(errors.NO_SUCH_KEY, resource=req.resource, extra={"Key": req.key})


async def check_write_preconditions(req: S3Request, svc: Services, mount: Mount, path: str) -> None:
    """S3's conditional writes (PutObject, CompleteMultipartUpload): `If-None-Match: *` writes
    only where no object is, `If-Match: <ETag>` only over that version (NoSuchKey where none
    is). Checked against the UFS just before the write, which is not conditional itself: two
    writers racing at the UFS can both pass."""
    cond = Preconditions.parse(req.headers)
    if cond is None or (cond.if_match is None and cond.if_none_match is None):
        return
    try:
        info = await svc.cache.stat(mount.source, path, revalidate=True)
    except NotFound:
        if cond.if_match is not None:
            raise await missing(req, svc) from None
        return
    writes = Preconditions(if_match=cond.if_match, if_none_match=cond.if_none_match)  # no dates
    writes.check(info.etag, info.last_modified, resource=req.resource, read=False)


def object_headers(info: ObjectInfo) -> Headers:
    headers: Headers = [
        (b"etag", f'"{info.etag}"'.encode()),
        (b"last-modified", http_date(info.last_modified).encode()),
        (b"accept-ranges", b"bytes"),
        (b"content-type", (info.content_type or DEFAULT_CONTENT_TYPE).encode("latin-1", "replace")),
    ]
    for name, value in info.metadata.items():
        headers.append(
            (f"x-amz-meta-{name}".encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        )
    return headers


MAX_METADATA_BYTES = 2048


def write_meta(headers: Mapping[str, str], resource: str) -> WriteMeta:
    """Content-Type and x-amz-meta-* of a PUT, copy or multipart create (2 KB limit as S3)."""
    meta = {name[11:]: value for name, value in headers.items() if name.startswith("x-amz-meta-")}
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_METADATA_BYTES:
        raise S3Error(errors.METADATA_TOO_LARGE, resource=resource)
    return WriteMeta(content_type=headers.get("content-type"), metadata=meta)
