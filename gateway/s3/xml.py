"""S3 XML: one builder per response shape and the parsers for request bodies (lxml)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from lxml import etree

from gateway.s3 import errors
from gateway.s3.errors import S3Error, xml_text
from gateway.s3.request import iso8601
from ufs_adapters.base import ObjectInfo, PartInfo, UploadInfo

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
OWNER_ID = "hoard"
OWNER_NAME = "hoard"

# Request bodies are small (DeleteObjects: 1000 keys); entities and network access are refused.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)


def _root(tag: str) -> etree._Element:
    return etree.Element(tag, nsmap={None: S3_NS})


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = xml_text(text)
    return el


def _doc(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def _owner(parent: etree._Element, tag: str = "Owner") -> None:
    owner = _sub(parent, tag)
    _sub(owner, "ID", OWNER_ID)
    _sub(owner, "DisplayName", OWNER_NAME)


def list_buckets(buckets: Sequence[tuple[str, datetime]]) -> bytes:
    root = _root("ListAllMyBucketsResult")
    _owner(root)
    container = _sub(root, "Buckets")
    for name, created in buckets:
        b = _sub(container, "Bucket")
        _sub(b, "Name", name)
        _sub(b, "CreationDate", iso8601(created))
    return _doc(root)


def location(region: str) -> bytes:
    root = _root("LocationConstraint")
    if region != "us-east-1":
        root.text = region
    return _doc(root)


def _enc(value: str, url: bool) -> str:
    return quote(value, safe="/") if url else value


@dataclass(slots=True)
class Listing:
    """What a ListObjects(V2) page holds, already cut to max-keys."""

    objects: list[tuple[str, ObjectInfo]]  # (key in the bucket, info)
    prefixes: list[str]
    truncated: bool


def list_objects(
    listing: Listing,
    *,
    bucket: str,
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    url: bool,
    v2: bool,
    marker: str = "",
    next_marker: str | None = None,
    continuation_token: str | None = None,
    next_token: str | None = None,
    start_after: str | None = None,
    fetch_owner: bool = False,
) -> bytes:
    root = _root("ListBucketResult")
    _sub(root, "Name", bucket)
    _sub(root, "Prefix", _enc(prefix, url))
    if v2:
        if continuation_token is not None:
            _sub(root, "ContinuationToken", continuation_token)
        if start_after is not None:
            _sub(root, "StartAfter", _enc(start_after, url))
        _sub(root, "KeyCount", str(len(listing.objects) + len(listing.prefixes)))
    else:
        _sub(root, "Marker", _enc(marker, url))
        if next_marker is not None:
            _sub(root, "NextMarker", _enc(next_marker, url))
    _sub(root, "MaxKeys", str(max_keys))
    if delimiter is not None:
        _sub(root, "Delimiter", _enc(delimiter, url))
    if url:
        _sub(root, "EncodingType", "url")
    _sub(root, "IsTruncated", "true" if listing.truncated else "false")
    if v2 and next_token is not None:
        _sub(root, "NextContinuationToken", next_token)
    for key, info in listing.objects:
        c = _sub(root, "Contents")
        _sub(c, "Key", _enc(key, url))
        _sub(c, "LastModified", iso8601(info.last_modified))
        _sub(c, "ETag", quote_etag(info.etag))
        _sub(c, "Size", str(info.size))
        if fetch_owner or not v2:
            _owner(c)
        _sub(c, "StorageClass", "STANDARD")
    for p in listing.prefixes:
        _sub(_sub(root, "CommonPrefixes"), "Prefix", _enc(p, url))
    return _doc(root)


def copy_result(tag: str, etag: str, last_modified: datetime) -> bytes:
    root = _root(tag)
    _sub(root, "LastModified", iso8601(last_modified))
    _sub(root, "ETag", quote_etag(etag))
    return _doc(root)


def initiate_multipart(bucket: str, key: str, upload_id: str) -> bytes:
    root = _root("InitiateMultipartUploadResult")
    _sub(root, "Bucket", bucket)
    _sub(root, "Key", key)
    _sub(root, "UploadId", upload_id)
    return _doc(root)


def complete_multipart(location_url: str, bucket: str, key: str, etag: str) -> bytes:
    root = _root("CompleteMultipartUploadResult")
    _sub(root, "Location", location_url)
    _sub(root, "Bucket", bucket)
    _sub(root, "Key", key)
    _sub(root, "ETag", quote_etag(etag))
    return _doc(root)


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    parts: Iterable[PartInfo],
    *,
    marker: int,
    next_marker: int | None,
    max_parts: int,
) -> bytes:
    root = _root("ListPartsResult")
    _sub(root, "Bucket", bucket)
    _sub(root, "Key", key)
    _sub(root, "UploadId", upload_id)
    _owner(root, "Initiator")
    _owner(root)
    _sub(root, "StorageClass", "STANDARD")
    _sub(root, "PartNumberMarker", str(marker))
    if next_marker is not None:
        _sub(root, "NextPartNumberMarker", str(next_marker))
    _sub(root, "MaxParts", str(max_parts))
    _sub(root, "IsTruncated", "true" if next_marker is not None else "false")
    for part in parts:
        p = _sub(root, "Part")
        _sub(p, "PartNumber", str(part.part_number))
        _sub(p, "LastModified", iso8601(part.last_modified))
        _sub(p, "ETag", quote_etag(part.etag))
        _sub(p, "Size", str(part.size))
    return _doc(root)


def list_uploads(
    bucket: str,
    uploads: Iterable[tuple[str, UploadInfo]],
    prefixes: Iterable[str],
    *,
    prefix: str,
    delimiter: str | None,
    key_marker: str,
    upload_id_marker: str,
    next_key_marker: str | None,
    next_upload_id_marker: str | None,
    max_uploads: int,
    url: bool,
) -> bytes:
    root = _root("ListMultipartUploadsResult")
    _sub(root, "Bucket", bucket)
    _sub(root, "KeyMarker", _enc(key_marker, url))
    _sub(root, "UploadIdMarker", upload_id_marker)
    if next_key_marker is not None:
        _sub(root, "NextKeyMarker", _enc(next_key_marker, url))
        _sub(root, "NextUploadIdMarker", next_upload_id_marker or "")
    _sub(root, "Prefix", _enc(prefix, url))
    if delimiter is not None:
        _sub(root, "Delimiter", _enc(delimiter, url))
    _sub(root, "MaxUploads", str(max_uploads))
    if url:
        _sub(root, "EncodingType", "url")
    _sub(root, "IsTruncated", "true" if next_key_marker is not None else "false")
    for key, up in uploads:
        u = _sub(root, "Upload")
        _sub(u, "Key", _enc(key, url))
        _sub(u, "UploadId", up.upload_id)
        _owner(u, "Initiator")
        _owner(u)
        _sub(u, "StorageClass", "STANDARD")
        _sub(u, "Initiated", iso8601(up.initiated))
    for p in prefixes:
        _sub(_sub(root, "CommonPrefixes"), "Prefix", _enc(p, url))
    return _doc(root)


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: list[str]
    failed: list[tuple[str, str, str]]  # key, code, message


def delete_result(result: DeleteResult, quiet: bool) -> bytes:
    root = _root("DeleteResult")
    if not quiet:
        for key in result.deleted:
            _sub(_sub(root, "Deleted"), "Key", key)
    for key, code, message in result.failed:
        e = _sub(root, "Error")
        _sub(e, "Key", key)
        _sub(e, "Code", code)
        _sub(e, "Message", message)
    return _doc(root)


# ---- request bodies ---------------------------------------------------------------------------


def _parse(body: bytes, resource: str) -> etree._Element:
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        raise S3Error(errors.MALFORMED_XML, resource=resource) from None
    if root is None:
        raise S3Error(errors.MALFORMED_XML, resource=resource)
    return root


def _local(el: etree._Element) -> str:
    tag = el.tag
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if _local(c) == name]


def _text(el: etree._Element, name: str) -> str | None:
    found = _children(el, name)
    return (found[0].text or "") if found else None


def parse_delete(body: bytes, resource: str) -> tuple[list[str], bool]:
    """DeleteObjects: (keys, quiet). At most 1000 keys, as S3 allows."""
    root = _parse(body, resource)
    if _local(root) != "Delete":
        raise S3Error(errors.MALFORMED_XML, resource=resource)
    keys = []
    for obj in _children(root, "Object"):
        key = _text(obj, "Key")
        if not key:
            raise S3Error(errors.MALFORMED_XML, resource=resource)
        keys.append(key)
    if not keys or len(keys) > 1000:
        raise S3Error(errors.MALFORMED_XML, resource=resource)
    quiet = (_text(root, "Quiet") or "").strip().lower() == "true"
    return keys, quiet


def parse_complete(body: bytes, resource: str) -> list[tuple[int, str]]:
    """CompleteMultipartUpload: [(part number, etag unquoted)] in the order given."""
    root = _parse(body, resource)
    if _local(root) != "CompleteMultipartUpload":
        raise S3Error(errors.MALFORMED_XML, resource=resource)
    parts = []
    for part in _children(root, "Part"):
        number, etag = _text(part, "PartNumber"), _text(part, "ETag")
        if number is None or etag is None:
            raise S3Error(errors.MALFORMED_XML, resource=resource)
        try:
            n = int(number)
        except ValueError:
            raise S3Error(errors.MALFORMED_XML, resource=resource) from None
        if not 1 <= n <= 10000:
            raise S3Error(
                errors.INVALID_ARGUMENT,
                "Part number must be an integer between 1 and 10000.",
                resource=resource,
            )
        parts.append((n, etag.strip().strip('"')))
    if not parts:
        raise S3Error(errors.MALFORMED_XML, "You must specify at least one part.", resource=resource)
    return parts


def parse_create_bucket(body: bytes, resource: str) -> str | None:
    """CreateBucketConfiguration's LocationConstraint, or None for an empty body."""
    if not body.strip():
        return None
    root = _parse(body, resource)
    if _local(root) != "CreateBucketConfiguration":
        raise S3Error(errors.MALFORMED_XML, resource=resource)
    return _text(root, "LocationConstraint")
