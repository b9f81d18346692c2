"""Dispatch: a pure function from (method, bucket, key, query, headers) to an S3 operation.

The table is data, first match wins (Garage's `router.rs`, versitygw's `router.go`). A request that
names a sub-resource Hoard does not implement answers NotImplemented (501), never a wrong operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gateway.s3 import errors


class Op(Enum):
    LIST_BUCKETS = "ListBuckets"
    CREATE_BUCKET = "CreateBucket"
    DELETE_BUCKET = "DeleteBucket"
    HEAD_BUCKET = "HeadBucket"
    GET_BUCKET_LOCATION = "GetBucketLocation"
    LIST_OBJECTS = "ListObjects"
    LIST_OBJECTS_V2 = "ListObjectsV2"
    LIST_MULTIPART_UPLOADS = "ListMultipartUploads"
    DELETE_OBJECTS = "DeleteObjects"
    GET_OBJECT = "GetObject"
    HEAD_OBJECT = "HeadObject"
    PUT_OBJECT = "PutObject"
    COPY_OBJECT = "CopyObject"
    DELETE_OBJECT = "DeleteObject"
    CREATE_MULTIPART_UPLOAD = "CreateMultipartUpload"
    UPLOAD_PART = "UploadPart"
    UPLOAD_PART_COPY = "UploadPartCopy"
    COMPLETE_MULTIPART_UPLOAD = "CompleteMultipartUpload"
    ABORT_MULTIPART_UPLOAD = "AbortMultipartUpload"
    LIST_PARTS = "ListParts"


class Target(Enum):
    SERVICE = 0  # no bucket
    BUCKET = 1  # bucket, no key
    OBJECT = 2  # bucket and key


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    target: Target
    query: tuple[str, ...]  # all of these query keys must be present
    header: str | None  # this header must be present
    op: Op


ROUTES: tuple[Route, ...] = (
    Route("GET", Target.SERVICE, (), None, Op.LIST_BUCKETS),
    Route("PUT", Target.BUCKET, (), None, Op.CREATE_BUCKET),
    Route("DELETE", Target.BUCKET, (), None, Op.DELETE_BUCKET),
    Route("HEAD", Target.BUCKET, (), None, Op.HEAD_BUCKET),
    Route("GET", Target.BUCKET, ("location",), None, Op.GET_BUCKET_LOCATION),
    Route("GET", Target.BUCKET, ("uploads",), None, Op.LIST_MULTIPART_UPLOADS),
    Route("GET", Target.BUCKET, ("list-type",), None, Op.LIST_OBJECTS_V2),
    Route("GET", Target.BUCKET, (), None, Op.LIST_OBJECTS),
    Route("POST", Target.BUCKET, ("delete",), None, Op.DELETE_OBJECTS),
    Route("GET", Target.OBJECT, ("uploadId",), None, Op.LIST_PARTS),
    Route("GET", Target.OBJECT, (), None, Op.GET_OBJECT),
    Route("HEAD", Target.OBJECT, (), None, Op.HEAD_OBJECT),
    Route("PUT", Target.OBJECT, ("partNumber", "uploadId"), "x-amz-copy-source", Op.UPLOAD_PART_COPY),
    Route("PUT", Target.OBJECT, ("partNumber", "uploadId"), None, Op.UPLOAD_PART),
    Route("PUT", Target.OBJECT, (), "x-amz-copy-source", Op.COPY_OBJECT),
    Route("PUT", Target.OBJECT, (), None, Op.PUT_OBJECT),
    Route("DELETE", Target.OBJECT, ("uploadId",), None, Op.ABORT_MULTIPART_UPLOAD),
    Route("DELETE", Target.OBJECT, (), None, Op.DELETE_OBJECT),
    Route("POST", Target.OBJECT, ("uploads",), None, Op.CREATE_MULTIPART_UPLOAD),
    Route("POST", Target.OBJECT, ("uploadId",), None, Op.COMPLETE_MULTIPART_UPLOAD),
)

# Query keys that select a sub-resource (the AWS API reference's list). A request carrying one of these
# that no route consumes is an operation Hoard does not implement.
SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "attributes",
        "cors",
        "delete",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "list-type",
        "location",
        "logging",
        "metadataTable",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "partNumber",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "renameObject",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "select-type",
        "session",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
    }
)

# Sub-resources an operation may carry beyond those its route names (GetObject?partNumber=N).
_ALSO_ALLOWED: Mapping[Op, frozenset[str]] = {
    Op.GET_OBJECT: frozenset({"partNumber"}),
    Op.HEAD_OBJECT: frozenset({"partNumber"}),
}

_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})


def resolve(
    method: str, bucket: str | None, key: str | None, query: Mapping[str, str], headers: Mapping[str, str]
) -> Op:
    """The operation a request asks for; S3Error NotImplemented / MethodNotAllowed otherwise."""
    if method not in _METHODS:
        raise errors.S3Error(errors.METHOD_NOT_ALLOWED)
    target = Target.SERVICE if not bucket else Target.OBJECT if key else Target.BUCKET
    named = SUBRESOURCES.intersection(query)
    for route in ROUTES:
        if route.method != method or route.target is not target:
            continue
        if not all(q in query for q in route.query):
            continue
        if route.header is not None and route.header not in headers:
            continue
        if named.difference(route.query, _ALSO_ALLOWED.get(route.op, ())):
            break
        return route.op
    if not named and method == "POST" or target is Target.SERVICE and method != "GET":
        raise errors.S3Error(errors.METHOD_NOT_ALLOWED)
    what = ", ".join(sorted(named)) or method
    raise errors.S3Error(errors.NOT_IMPLEMENTED, f"Hoard does not implement this operation ({what}).")
