"""Request semantics as values: the parsed S3 request, byte ranges, preconditions, copy sources."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from urllib.parse import unquote

from gateway.s3 import errors
from gateway.s3.errors import S3Error

MAX_KEY_BYTES = 1024

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def valid_bucket_name(name: str) -> bool:
    """AWS general-purpose bucket naming rules (the S3 user guide, "Bucket naming rules")."""
    if not _BUCKET_RE.match(name) or ".." in name or _IP_RE.match(name):
        return False
    if ".-" in name or "-." in name:
        return False
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        return False
    return not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"))


def check_key(key: str, resource: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error(errors.KEY_TOO_LONG, resource=resource)


@lru_cache(maxsize=4096)
def http_date(dt: datetime) -> str:
    """Last-Modified of an object: the same few datetimes are formatted on every hit."""
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def iso8601(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_http_date(value: str) -> datetime | None:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Resolved [start, end) of an object of known size."""

    start: int
    end: int

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int, resource: str) -> ByteRange | None:
    """RFC 9110 section 14.1.2 for one range. A syntactically invalid header is ignored (S3 does
    the same); a valid one that cannot be satisfied is InvalidRange (416). Multiple ranges are not
    supported by S3 and are ignored."""
    if header is None:
        return None
    m = _RANGE_RE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size, resource)
        if size == 0:
            return None  # the whole of an empty object, as moto answers (206 would say "bytes 0--1/0")
        return ByteRange(max(0, size - n), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored as RFC 9110 says
    if start >= size:
        raise _unsatisfiable(size, resource)
    return ByteRange(start, end)


def range_bounds(header: str | None) -> tuple[int, int | None] | None:
    """Before the object's size is known: the bytes [start, end) a GET with this Range header
    reads (end None: to the object's end; (0, None) without a header or with one parse_range
    ignores), or None for a suffix range (the last N bytes: where they start is not known yet)."""
    m = _RANGE_RE.match(header.strip()) if header is not None else None
    if m is None or not (m.group(1) or m.group(2)):
        return 0, None  # the whole object
    first, last = m.group(1), m.group(2)
    if not first:
        return None
    if last and int(last) < int(first):
        return 0, None  # invalid: ignored, the whole object
    return int(first), int(last) + 1 if last else None


def _unsatisfiable(size: int, resource: str) -> S3Error:
    return S3Error(
        errors.INVALID_RANGE,
        resource=resource,
        headers={"Content-Range": f"bytes */{size}"},
        extra={"RangeRequested": "", "ActualObjectSize": str(size)},
    )


def _etag_list(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",") if v.strip()]


@dataclass(frozen=True, slots=True)
class Preconditions:
    if_match: list[str] | None = None
    if_none_match: list[str] | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str], prefix: str = "if-") -> Preconditions | None:
        im = headers.get(prefix + "match")
        inm = headers.get(prefix + "none-match")
        ims = headers.get(prefix + "modified-since")
        ius = headers.get(prefix + "unmodified-since")
        if im is None and inm is None and ims is None and ius is None:
            return None
        return cls(
            _etag_list(im) if im is not None else None,
            _etag_list(inm) if inm is not None else None,
            parse_http_date(ims) if ims else None,
            parse_http_date(ius) if ius else None,
        )

    def check(self, etag: str, last_modified: datetime, *, resource: str, read: bool = True) -> None:
        """RFC 9110 section 13.2.2 evaluation order. For reads a failed If-None-Match or
        If-Modified-Since is 304; for copies (read=False) every failure is 412."""
        modified = last_modified.replace(microsecond=0)
        if self.if_match is not None:
            if "*" not in self.if_match and etag not in self.if_match:
                raise S3Error(errors.PRECONDITION_FAILED, resource=resource, extra={"Condition": "If-Match"})
        elif self.if_unmodified_since is not None and modified > self.if_unmodified_since:
            raise S3Error(
                errors.PRECONDITION_FAILED, resource=resource, extra={"Condition": "If-Unmodified-Since"}
            )
        if self.if_none_match is not None:
            if "*" in self.if_none_match or etag in self.if_none_match:
                if read:
                    raise S3Error(errors.NOT_MODIFIED, resource=resource)
                raise S3Error(
                    errors.PRECONDITION_FAILED, resource=resource, extra={"Condition": "If-None-Match"}
                )
        elif self.if_modified_since is not None and modified <= self.if_modified_since:
            if read:
                raise S3Error(errors.NOT_MODIFIED, resource=resource)
            raise S3Error(
                errors.PRECONDITION_FAILED, resource=resource, extra={"Condition": "If-Modified-Since"}
            )


@dataclass(frozen=True, slots=True)
class CopySource:
    bucket: str
    key: str


def parse_copy_source(value: str, resource: str) -> CopySource:
    """`x-amz-copy-source: /bucket/key` or `bucket/key`, URL-encoded, optionally `?versionId=`."""
    raw, _, query = value.partition("?")
    if query and query != "versionId=null":
        raise S3Error(
            errors.NOT_IMPLEMENTED, "Copying a specific version is not supported.", resource=resource
        )
    path = unquote(raw).lstrip("/")
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise S3Error(
            errors.INVALID_ARGUMENT, "Copy Source must mention the source bucket and key.", resource=resource
        )
    return CopySource(bucket, key)


def parse_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int, resource: str) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error(
            errors.INVALID_ARGUMENT, f"{name} must be an integer, not {raw!r}.", resource=resource
        ) from None
    if value < lo:
        raise S3Error(errors.INVALID_ARGUMENT, f"{name} must be at least {lo}.", resource=resource)
    return min(value, hi)
