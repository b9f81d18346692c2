"""ListObjects (v1) and ListObjectsV2.

A bucket's listing is a merge, in S3 key order, of the mount serving the bucket and of any mounts
nested below it (which shadow the keys of the outer mount under their path). Each source is read
page by page from its UFS, so a prefix with a million keys costs at most one UFS page per 1000 keys
returned, never the whole prefix in memory.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from cache.reader import ObjectCache
from gateway.namespace import Mount
from gateway.s3 import errors, xml
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.handlers.common import bucket_target
from gateway.s3.request import parse_int
from gateway.s3.responses import S3Response, xml_response
from gateway.services import Services
from ufs_adapters.base import ObjectInfo

_PAGE = 1000

# An entry of a merged listing: (key, info) for an object, (prefix, None) for a common prefix.
Entry = tuple[str, ObjectInfo | None]


@dataclass(frozen=True, slots=True)
class _Source:
    mount: Mount
    ufs_root: str  # this source's bucket root in its UFS ('' or 'bucket/')
    key_prefix: str  # where the source sits in the bucket's key space ('' or 'nested/mount/')


def _ufs_start(src: _Source, start_after: str | None) -> tuple[bool, str | None]:
    """Translate a key-space start_after into the source's UFS space: (skip source, ufs start_after)."""
    if start_after is None or start_after < src.key_prefix:
        return False, None
    if start_after.startswith(src.key_prefix):
        return False, src.ufs_root + start_after[len(src.key_prefix) :]
    return True, None  # start_after sorts after every key of this source


async def _entries(
    cache: ObjectCache,
    src: _Source,
    prefix: str,
    delimiter: str | None,
    start_after: str | None,
    shadow: tuple[str, ...],
) -> AsyncGenerator[Entry]:
    """One source's entries under `prefix` (key space), in order, a UFS page (via the metadata
    cache) at a time. Keys under `shadow` belong to mounts nested in this one and are skipped."""
    skip, ufs_after = _ufs_start(src, start_after)
    if skip:
        return
    rel = prefix[len(src.key_prefix) :] if prefix.startswith(src.key_prefix) else ""
    ufs_prefix = src.ufs_root + rel
    cut = len(src.ufs_root)
    while True:
        page = await cache.list_objects(
            src.mount.source, ufs_prefix, delimiter=delimiter, start_after=ufs_after, limit=_PAGE
        )
        batch: list[Entry] = [(src.key_prefix + o.path[cut:], o) for o in page.objects]
        batch.extend((src.key_prefix + p[cut:], None) for p in page.common_prefixes)
        batch.sort(key=lambda e: e[0])
        for entry in batch:
            if not shadow or not entry[0].startswith(shadow):
                yield entry
        if page.next_start_after is None:
            return
        ufs_after = page.next_start_after


async def _fixed(prefix: str) -> AsyncGenerator[Entry]:
    yield prefix, None


async def merged(
    svc: Services, req: S3Request, prefix: str, delimiter: str | None, start_after: str | None
) -> AsyncGenerator[Entry]:
    """All entries of the bucket under `prefix` after `start_after`, merged across mounts."""
    mount, ufs_dir = await bucket_target(req, svc)
    sources = [_Source(mount, f"{ufs_dir}/" if ufs_dir else "", "")]
    for child in svc.mounts.children(req.bucket, prefix):
        key_prefix = child.path.removeprefix(f"/{req.bucket}/") + "/"
        if key_prefix.startswith(prefix) or prefix.startswith(key_prefix):
            sources.append(_Source(child, "", key_prefix))
    # The deepest mount holding the whole prefix lists it; mounts nested below the prefix add
    # their own keys and hide the outer mount's keys under their mount points.
    owner = max((s for s in sources if prefix.startswith(s.key_prefix)), key=lambda s: len(s.key_prefix))
    below = [s for s in sources if s is not owner and s.key_prefix.startswith(prefix)]

    def shadow(of: _Source) -> tuple[str, ...]:
        return tuple(s.key_prefix for s in below if s is not of and s.key_prefix.startswith(of.key_prefix))

    streams = [_entries(svc.cache, owner, prefix, delimiter, start_after, shadow(owner))]
    for src in below:
        rest = src.key_prefix[len(prefix) :]
        if delimiter and delimiter in rest:
            streams.append(_fixed(prefix + rest.split(delimiter, 1)[0] + delimiter))
        else:
            streams.append(_entries(svc.cache, src, prefix, delimiter, start_after, shadow(src)))
    last_prefix: str | None = None
    merge = _merge(streams)
    try:
        async for key, info in merge:
            if start_after is not None and key <= start_after:
                continue
            if last_prefix is not None and key.startswith(last_prefix):
                continue  # already rolled up into the common prefix just returned
            if info is None:
                last_prefix = key
            yield key, info
    finally:
        await merge.aclose()


async def _merge(streams: list[AsyncGenerator[Entry]]) -> AsyncGenerator[Entry]:
    """k-way merge of sorted streams; every stream is closed when the merge is."""
    try:
        heap: list[tuple[str, int, ObjectInfo | None]] = []
        for i, stream in enumerate(streams):
            entry = await anext(stream, None)
            if entry is not None:
                heap.append((entry[0], i, entry[1]))
        heapq.heapify(heap)
        while heap:
            key, i, info = heap[0]
            yield key, info
            entry = await anext(streams[i], None)
            if entry is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (entry[0], i, entry[1]))
    finally:
        for stream in streams:
            await stream.aclose()


async def collect(
    svc: Services, req: S3Request, prefix: str, delimiter: str | None, start_after: str | None, max_keys: int
) -> xml.Listing:
    listing = xml.Listing([], [], False)
    if max_keys == 0:
        return listing
    gen = merged(svc, req, prefix, delimiter, start_after)
    try:
        async for key, info in gen:
            if len(listing.objects) + len(listing.prefixes) == max_keys:
                listing.truncated = True
                break
            if info is None:
                listing.prefixes.append(key)
            else:
                listing.objects.append((key, info))
    finally:
        await gen.aclose()
    return listing


def _last_key(listing: xml.Listing) -> str:
    last_obj = listing.objects[-1][0] if listing.objects else ""
    last_pre = listing.prefixes[-1] if listing.prefixes else ""
    return max(last_obj, last_pre)


def _common(req: S3Request) -> tuple[str, str | None, int, bool]:
    q = req.query
    encoding = q.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error(
            errors.INVALID_ARGUMENT, "Invalid Encoding Method specified in Request", resource=req.resource
        )
    delimiter = q.get("delimiter") or None
    max_keys = parse_int(q, "max-keys", 1000, 0, 1000, req.resource)
    return q.get("prefix", ""), delimiter, max_keys, encoding == "url"


async def list_objects_v2(req: S3Request, svc: Services) -> S3Response:
    prefix, delimiter, max_keys, url = _common(req)
    if req.query.get("list-type") != "2":
        raise S3Error(errors.INVALID_ARGUMENT, "Invalid list-type.", resource=req.resource)
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after") or None
    after = start_after
    if token is not None:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise S3Error(
                errors.INVALID_ARGUMENT, "The continuation token provided is incorrect", resource=req.resource
            ) from None
        if start_after is not None and after < start_after:
            after = start_after
    listing = await collect(svc, req, prefix, delimiter, after, max_keys)
    next_token = base64.urlsafe_b64encode(_last_key(listing).encode()).decode() if listing.truncated else None
    body = xml.list_objects(
        listing,
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        url=url,
        v2=True,
        continuation_token=token,
        next_token=next_token,
        start_after=start_after,
        fetch_owner=req.query.get("fetch-owner") == "true",
    )
    return xml_response(body)


async def list_objects(req: S3Request, svc: Services) -> S3Response:
    prefix, delimiter, max_keys, url = _common(req)
    marker = req.query.get("marker", "")
    listing = await collect(svc, req, prefix, delimiter, marker or None, max_keys)
    next_marker = _last_key(listing) if listing.truncated else None
    body = xml.list_objects(
        listing,
        bucket=req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        max_keys=max_keys,
        url=url,
        v2=False,
        marker=marker,
        next_marker=next_marker,
    )
    return xml_response(body)
