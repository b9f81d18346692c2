"""Blob names, metadata and ETags as the Azure adapter (azure.py) keeps S3's: keys checked for
what a blob name may hold, S3 metadata names that are not C# identifiers escaped, and the S3-style
ETag of a blob (Hoard's multipart ETag, else its Content-MD5, else Azure's ETag)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime

from azure.storage.blob import BlobProperties

from . import _util
from ._util import unquote_etag
from .base import InvalidPath

UPLOADS = ".hoard-uploads/"  # marker blobs of multipart uploads, at the container root
ETAG_KEY = "hoard_etag"  # metadata name holding a multipart ETag
ESCAPED_KEY = "hoard_x_"  # metadata names that are not C# identifiers, escaped
_PLAIN_META = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


def check_key(path: str) -> None:
    """An object store's key (_util.check_key) that a blob name can hold: no lone surrogate."""
    _util.check_key(path)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in path):
        raise InvalidPath(path, "lone surrogate in key")


def _escape(name: str) -> str:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"_{b:02x}" for b in name.encode())


def _unescape(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return out.decode(errors="replace")


def encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """S3 metadata names -> Azure names (C# identifiers); `hoard_*` names are escaped too."""
    out: dict[str, str] = {}
    for name, value in metadata.items():
        plain = _PLAIN_META.fullmatch(name) and not name.lower().startswith("hoard_")
        out[name if plain else ESCAPED_KEY + _escape(name)] = value
    return out


def decode_metadata(stored: Mapping[str, str]) -> dict[str, str]:
    """The inverse of `encode_metadata`; Hoard's own entries are dropped."""
    out: dict[str, str] = {}
    for name, value in stored.items():
        lower = name.lower()
        if lower.startswith(ESCAPED_KEY):
            try:
                out[_unescape(name[len(ESCAPED_KEY) :])] = value
            except ValueError:
                out[name] = value
        elif lower != ETAG_KEY:
            out[name] = value
    return out


def etag_of(props: BlobProperties) -> str:
    """The S3-style ETag: Hoard's multipart ETag, else the stored Content-MD5, else Azure's ETag."""
    stored = {k.lower(): v for k, v in (props.metadata or {}).items()}.get(ETAG_KEY, "")
    if MULTIPART_ETAG.fullmatch(stored):
        return stored
    md5 = props.content_settings.content_md5 if props.content_settings else None
    if md5 and len(md5) == 16:
        return bytes(md5).hex()
    return unquote_etag(props.etag or "")


def parts_count(etag: str) -> int | None:
    return int(etag.rpartition("-")[2]) if MULTIPART_ETAG.fullmatch(etag) else None


def utc(value: object) -> datetime:
    """A timestamp from the SDK (properties or a response dict entry) in UTC; now if absent."""
    return value.astimezone(UTC) if isinstance(value, datetime) else datetime.now(UTC)
