"""The handler table: one async function per operation, (request, services) -> response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from gateway.s3.context import S3Request
from gateway.s3.handlers import buckets, listing, multipart, objects
from gateway.s3.operations import Op
from gateway.s3.responses import S3Response
from gateway.services import Services

Handler = Callable[[S3Request, Services], Awaitable[S3Response]]

HANDLERS: Mapping[Op, Handler] = {
    Op.LIST_BUCKETS: buckets.list_buckets,
    Op.CREATE_BUCKET: buckets.create_bucket,
    Op.DELETE_BUCKET: buckets.delete_bucket,
    Op.HEAD_BUCKET: buckets.head_bucket,
    Op.GET_BUCKET_LOCATION: buckets.get_bucket_location,
    Op.LIST_OBJECTS: listing.list_objects,
    Op.LIST_OBJECTS_V2: listing.list_objects_v2,
    Op.LIST_MULTIPART_UPLOADS: multipart.list_multipart_uploads,
    Op.DELETE_OBJECTS: objects.delete_objects,
    Op.GET_OBJECT: objects.get_object,
    Op.HEAD_OBJECT: objects.head_object,
    Op.PUT_OBJECT: objects.put_object,
    Op.COPY_OBJECT: objects.copy_object,
    Op.DELETE_OBJECT: objects.delete_object,
    Op.CREATE_MULTIPART_UPLOAD: multipart.create_multipart_upload,
    Op.UPLOAD_PART: multipart.upload_part,
    Op.UPLOAD_PART_COPY: multipart.upload_part_copy,
    Op.COMPLETE_MULTIPART_UPLOAD: multipart.complete_multipart_upload,
    Op.ABORT_MULTIPART_UPLOAD: multipart.abort_multipart_upload,
    Op.LIST_PARTS: multipart.list_parts,
}
