"""Helpers shared by the adapters: ETag arithmetic, body re-chunking, mount-option checks, and
whether a process runs (the page cache's temporary files use it too)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Collection, Iterable, Mapping

from .base import InvalidPart, InvalidPartOrder, InvalidPath

log = logging.getLogger("hoard.ufs")

CHUNK_SIZE = 1024 * 1024  # reads are streamed in pieces of this size; writes are batched to it
MAX_PARTS = 10_000
MAX_PART_NUMBER = 10_000

# Mount options in these namespaces belong to other systems (Alluxio, Hadoop); users paste whole
# blocks of them, so an adapter ignores those it does not know instead of refusing to start.
FOREIGN_OPTION_PREFIXES = ("alluxio.", "s3a.", "fs.", "aws.")


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (one of another user's counts: it cannot be signalled, but is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unquote_etag(etag: str) -> str:
    """`"abc"` -> `abc`: clients and S3 quote ETags, Hoard keeps them bare."""
    etag = etag.strip()
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return etag[1:-1]
    return etag


def composite_etag(part_etags: Iterable[str]) -> str:
    """The multipart ETag as AWS computes it: hex md5 of the concatenated binary part md5s, `-N`."""
    digest = hashlib.md5()
    count = 0
    for etag in part_etags:
        digest.update(bytes.fromhex(unquote_etag(etag)))
        count += 1
    return f"{digest.hexdigest()}-{count}"


def parts_count_of(etag: str) -> int | None:
    """N of a multipart ETag `<md5>-N`; None for a plain ETag."""
    _, dash, count = etag.rpartition("-")
    return int(count) if dash and count.isdigit() else None


def check_part_number(path: str, part_number: int) -> None:
    if not 1 <= part_number <= MAX_PART_NUMBER:
        raise InvalidPart(path, f"part number {part_number} is not between 1 and {MAX_PART_NUMBER}")


def check_part_list(path: str, parts: list[tuple[int, str]]) -> None:
    """The checks CompleteMultipartUpload makes before looking at any part."""
    if not parts:
        raise InvalidPart(path, "the part list is empty")
    previous = 0
    for number, _ in parts:
        if number <= previous:
            raise InvalidPartOrder(path, f"part {number} follows part {previous}")
        previous = number


def check_options(scheme: str, options: Mapping[str, str], known: Collection[str]) -> dict[str, str]:
    """Keep the known options; ignore foreign namespaces with a log line; refuse anything else.

    A typo such as `endpoint` for `endpoint_url` would otherwise silently talk to AWS.
    """
    accepted: dict[str, str] = {}
    for key, value in options.items():
        if key in known:
            accepted[key] = value
        elif key.startswith(FOREIGN_OPTION_PREFIXES):
            log.info("%s mount: ignoring option %r that Hoard does not use", scheme, key)
        else:
            raise ValueError(
                f"unknown option {key!r} for a {scheme}:// mount (known: {', '.join(sorted(known))})"
            )
    return accepted


async def rechunk(
    body: AsyncIterable[bytes], part_size: Callable[[int], int]
) -> AsyncGenerator[tuple[bytes, bool]]:
    """Regroup a body into blocks of `part_size(n)` bytes for block n (1-based): (block, is_last).

    A full block is released only once a further byte has arrived, so the caller knows whether it
    is the last one; memory stays at one block plus one incoming chunk. An empty body yields one
    empty last block.
    """
    number = 1
    buf = bytearray()
    async for chunk in body:
        buf += chunk
        while len(buf) > part_size(number):
            size = part_size(number)
            yield bytes(buf[:size]), False
            del buf[:size]
            number += 1
    yield bytes(buf), True


def int_option(opts: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(opts[name]) if name in opts else default
    except ValueError:
        raise ValueError(f"option {name!r} is {opts[name]!r}; expected an integer") from None


def float_option(opts: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(opts[name]) if name in opts else default
    except ValueError:
        raise ValueError(f"option {name!r} is {opts[name]!r}; expected a number of seconds") from None


def check_key(path: str) -> None:
    """A key an object store can name: not empty, no NUL, no `.` or `..` segment."""
    if not path:
        raise InvalidPath(path, "empty key")
    if "\x00" in path:
        raise InvalidPath(path, "NUL in key")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InvalidPath(path, "'.' and '..' segments are not allowed in a key")
