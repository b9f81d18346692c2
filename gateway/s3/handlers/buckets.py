"""ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation.

Buckets are the root mount's top-level directories plus every mount point directly below `/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.s3 import errors, xml
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers.common import bucket_target
from gateway.s3.request import valid_bucket_name
from gateway.s3.responses import S3Response, empty, xml_response
from gateway.services import Services
from ufs_adapters.base import AlreadyExists, NotEmpty, NotFound

_STARTED = datetime.now(UTC)


async def list_buckets(req: S3Request, svc: Services) -> S3Response:
    names = set(svc.mounts.mount_buckets())
    root = svc.mounts.get("/")
    if root is not None:
        start_after: str | None = None
        while True:
            page = await root.adapter.list_objects("", delimiter="/", start_after=start_after, limit=1000)
            names.update(p.rstrip("/") for p in page.common_prefixes if valid_bucket_name(p.rstrip("/")))
            if page.next_start_after is None:
                break
            start_after = page.next_start_after
    return xml_response(xml.list_buckets([(name, _STARTED) for name in sorted(names)]))


async def create_bucket(req: S3Request, svc: Services) -> S3Response:
    name = req.bucket
    if not valid_bucket_name(name):
        raise S3Error(errors.INVALID_BUCKET_NAME, resource=req.resource, extra={"BucketName": name})
    xml.parse_create_bucket(await req.read_body(), req.resource)
    if name in svc.mounts.mount_buckets():
        raise S3Error(errors.BUCKET_ALREADY_OWNED_BY_YOU, resource=req.resource, extra={"BucketName": name})
    root = svc.mounts.get("/")
    if root is None:
        raise S3Error(
            errors.ACCESS_DENIED, "There is no root mount to create buckets in.", resource=req.resource
        )
    try:
        await root.adapter.make_dir(name)
    except AlreadyExists:
        raise S3Error(
            errors.BUCKET_ALREADY_OWNED_BY_YOU, resource=req.resource, extra={"BucketName": name}
        ) from None
    return empty(200, [(b"location", f"/{name}".encode())])


async def delete_bucket(req: S3Request, svc: Services) -> S3Response:
    mount, ufs_dir = await bucket_target(req, svc)
    if not ufs_dir:
        raise S3Error(
            errors.ACCESS_DENIED,
            "This bucket is a mount point; remove the mount instead.",
            resource=req.resource,
        )
    try:
        await mount.adapter.remove_dir(ufs_dir)
    except NotEmpty:
        raise S3Error(
            errors.BUCKET_NOT_EMPTY, resource=req.resource, extra={"BucketName": req.bucket}
        ) from None
    except NotFound:
        raise S3Error(
            errors.NO_SUCH_BUCKET, resource=req.resource, extra={"BucketName": req.bucket}
        ) from None
    return empty(204)


async def head_bucket(req: S3Request, svc: Services) -> S3Response:
    await bucket_target(req, svc)
    return empty(200, [(b"x-amz-bucket-region", svc.region.encode())])


async def get_bucket_location(req: S3Request, svc: Services) -> S3Response:
    await bucket_target(req, svc)
    return xml_response(xml.location(svc.region))
