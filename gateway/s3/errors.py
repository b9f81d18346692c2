"""The one S3 error table, the one translation from lower-layer errors, and the one renderer.

Handlers raise `S3Error(NO_SUCH_KEY, resource=...)`; nothing else builds error XML. Codes, statuses
and messages follow the AWS S3 API reference ("Error responses", list of error codes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from ufs_adapters import base as ufs

log = logging.getLogger("hoard.s3")


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    status: int
    message: str


ACCESS_DENIED = ErrorSpec("AccessDenied", 403, "Access Denied")
AUTHORIZATION_HEADER_MALFORMED = ErrorSpec(
    "AuthorizationHeaderMalformed", 400, "The authorization header that you provided is not valid."
)
AUTHORIZATION_QUERY_PARAMETERS_ERROR = ErrorSpec(
    "AuthorizationQueryParametersError",
    400,
    "The query parameters that provide authentication are not valid.",
)
BAD_DIGEST = ErrorSpec("BadDigest", 400, "The Content-MD5 you specified did not match what we received.")
BAD_REQUEST = ErrorSpec("BadRequest", 400, "The request is not valid.")
BUCKET_ALREADY_EXISTS = ErrorSpec(
    "BucketAlreadyExists", 409, "The requested bucket name is not available. Select a different name."
)
BUCKET_ALREADY_OWNED_BY_YOU = ErrorSpec(
    "BucketAlreadyOwnedByYou", 409, "The bucket that you tried to create already exists, and you own it."
)
BUCKET_NOT_EMPTY = ErrorSpec("BucketNotEmpty", 409, "The bucket that you tried to delete is not empty.")
ENTITY_TOO_LARGE = ErrorSpec("EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed size.")
ENTITY_TOO_SMALL = ErrorSpec(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size."
)
INCOMPLETE_BODY = ErrorSpec(
    "IncompleteBody",
    400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
)
INTERNAL_ERROR = ErrorSpec("InternalError", 500, "We encountered an internal error. Please try again.")
INVALID_ACCESS_KEY_ID = ErrorSpec(
    "InvalidAccessKeyId", 403, "The AWS access key ID that you provided does not exist in our records."
)
INVALID_ARGUMENT = ErrorSpec("InvalidArgument", 400, "Invalid Argument")
INVALID_BUCKET_NAME = ErrorSpec("InvalidBucketName", 400, "The specified bucket is not valid.")
INVALID_DIGEST = ErrorSpec("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
INVALID_PART = ErrorSpec(
    "InvalidPart",
    400,
    "One or more of the specified parts could not be found. The part might not have been uploaded, "
    "or the specified entity tag might not have matched the part's entity tag.",
)
INVALID_PART_ORDER = ErrorSpec(
    "InvalidPartOrder",
    400,
    "The list of parts was not in ascending order. Parts must be ordered by part number.",
)
INVALID_PART_NUMBER = ErrorSpec("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
INVALID_RANGE = ErrorSpec("InvalidRange", 416, "The requested range is not satisfiable")
INVALID_REQUEST = ErrorSpec("InvalidRequest", 400, "Invalid Request")
INVALID_URI = ErrorSpec("InvalidURI", 400, "Couldn't parse the specified URI.")
KEY_TOO_LONG = ErrorSpec("KeyTooLongError", 400, "Your key is too long.")
MALFORMED_XML = ErrorSpec(
    "MalformedXML",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema.",
)
METADATA_TOO_LARGE = ErrorSpec(
    "MetadataTooLarge", 400, "Your metadata headers exceed the maximum allowed metadata size."
)
METHOD_NOT_ALLOWED = ErrorSpec(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource."
)
MISSING_CONTENT_LENGTH = ErrorSpec(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header."
)
NO_SUCH_BUCKET = ErrorSpec("NoSuchBucket", 404, "The specified bucket does not exist.")
NO_SUCH_KEY = ErrorSpec("NoSuchKey", 404, "The specified key does not exist.")
NO_SUCH_UPLOAD = ErrorSpec(
    "NoSuchUpload",
    404,
    "The specified multipart upload does not exist. The upload ID might be invalid, "
    "or the multipart upload might have been aborted or completed.",
)
NOT_IMPLEMENTED = ErrorSpec(
    "NotImplemented", 501, "A header or query you provided implies functionality that is not implemented."
)
NOT_MODIFIED = ErrorSpec("NotModified", 304, "Not Modified")
PRECONDITION_FAILED = ErrorSpec(
    "PreconditionFailed", 412, "At least one of the preconditions that you specified did not hold."
)
REQUEST_TIME_TOO_SKEWED = ErrorSpec(
    "RequestTimeTooSkewed", 403, "The difference between the request time and the server's time is too large."
)
SERVICE_UNAVAILABLE = ErrorSpec("ServiceUnavailable", 503, "Service is unable to handle request.")
SIGNATURE_DOES_NOT_MATCH = ErrorSpec(
    "SignatureDoesNotMatch",
    403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.",
)
SLOW_DOWN = ErrorSpec("SlowDown", 503, "Please reduce your request rate.")
XAMZ_CONTENT_SHA256_MISMATCH = ErrorSpec(
    "XAmzContentSHA256Mismatch",
    400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.",
)
INVALID_OBJECT_NAME = ErrorSpec(
    "XHoardInvalidObjectName", 400, "The object name cannot be stored by this mount."
)
# aws-chunked bodies (gateway/s3/chunked.py, checksums.py)
INVALID_CHUNK_SIZE = ErrorSpec(
    "InvalidChunkSizeError", 403, "Only the last chunk is allowed to have a size less than 8192 bytes"
)
MALFORMED_TRAILER = ErrorSpec(
    "MalformedTrailerError",
    400,
    "The request contained trailing data that was not well-formed or did not conform to our published schema.",
)


class S3Error(Exception):
    """An S3 error response. `resource` is the request path; `headers` go on the response."""

    def __init__(
        self,
        spec: ErrorSpec,
        message: str | None = None,
        *,
        resource: str = "",
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or spec.message)
        self.spec = spec
        self.message = message or spec.message
        self.resource = resource
        self.headers: Mapping[str, str] = headers or {}
        self.extra: Mapping[str, str] = extra or {}

    @property
    def code(self) -> str:
        return self.spec.code

    @property
    def status(self) -> int:
        return self.spec.status


# Lower-layer error -> S3 error. A NotFound is NoSuchKey here; handlers that mean a bucket catch it
# themselves. Order matters only through the class hierarchy (exact type looked up first).
_UFS_ERRORS: Mapping[type[ufs.UfsError], ErrorSpec] = {
    ufs.NotFound: NO_SUCH_KEY,
    ufs.AlreadyExists: BUCKET_ALREADY_OWNED_BY_YOU,
    ufs.NotEmpty: BUCKET_NOT_EMPTY,
    ufs.PreconditionFailed: PRECONDITION_FAILED,
    ufs.PermissionDenied: ACCESS_DENIED,
    ufs.InvalidPath: INVALID_OBJECT_NAME,
    ufs.NotSupported: NOT_IMPLEMENTED,
    ufs.Unavailable: SERVICE_UNAVAILABLE,
    ufs.NoSuchUpload: NO_SUCH_UPLOAD,
    ufs.InvalidPart: INVALID_PART,
    ufs.InvalidPartOrder: INVALID_PART_ORDER,
    ufs.EntityTooSmall: ENTITY_TOO_SMALL,
    ufs.BadDigest: BAD_DIGEST,
}


def from_exception(exc: BaseException, *, resource: str = "", request_id: str = "") -> S3Error:
    """Translate any exception into an S3Error; unknown ones become InternalError and are logged."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, ufs.UfsError):
        for cls in type(exc).__mro__:
            spec = _UFS_ERRORS.get(cls)
            if spec is not None:
                headers = None
                if isinstance(exc, ufs.Unavailable):
                    headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after or 1)))}
                message = f"{spec.message} ({exc.detail})" if exc.detail else spec.message
                if spec is SLOW_DOWN or (isinstance(exc, ufs.Unavailable) and exc.throttled):
                    spec = SLOW_DOWN
                return S3Error(spec, message, resource=resource, headers=headers)
    log.error("internal error on %s (request %s)", resource, request_id, exc_info=exc)
    return S3Error(INTERNAL_ERROR, resource=resource)


def xml_text(text: str) -> str:
    """XML 1.0 cannot carry control characters other than tab, newline and carriage return (keys
    may hold them): they are written as `\\xNN` so the document stays well-formed."""
    if text.isprintable():
        return text
    return "".join(c if _xml_char(c) else f"\\x{ord(c):02x}" for c in text)


def _xml_char(c: str) -> bool:
    n = ord(c)
    return c in "\t\n\r" or 0x20 <= n <= 0xD7FF or 0xE000 <= n <= 0xFFFD or n >= 0x10000


def render(err: S3Error, request_id: str) -> bytes:
    """The S3 error document: <Error><Code/><Message/><Resource/><RequestId/></Error>."""
    root = etree.Element("Error")
    etree.SubElement(root, "Code").text = err.code
    etree.SubElement(root, "Message").text = xml_text(err.message)
    for name, value in err.extra.items():
        etree.SubElement(root, name).text = xml_text(value)
    etree.SubElement(root, "Resource").text = xml_text(err.resource)
    etree.SubElement(root, "RequestId").text = request_id
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
