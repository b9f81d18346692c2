"""An Azure Blob Storage container (or a prefix in one) as a UFS, schemes `wasbs`, `wasb`, `abfss`,
`abfs` and `az`, through azure-storage-blob's async client.

URIs: `wasbs://container@account.blob.core.windows.net/prefix` (`wasb://` is the same over plain
HTTP, as in Hadoop), `abfs[s]://container@account.dfs.core.windows.net/prefix` (the dfs host is
mapped to the blob endpoint of the same account) and `az://container/prefix` (the account comes
from the options).

Mount options (strings): `account_name`, `account_key` (shared key), `sas_token`,
`connection_string` (holds endpoint and credential itself), `endpoint_url` (an emulator or private
endpoint, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`), `max_attempts` (3, the SDK's
own retries), `connect_timeout` (10 s), `read_timeout` (60 s). Hadoop/Alluxio names work too:
`fs.azure.account.key.<account>.blob.core.windows.net` (or `.dfs.`) is the account key and
`fs.azure.sas.<container>.<account>.blob.core.windows.net` the SAS of the mounted account and
container; such keys for other accounts are ignored. No credential means anonymous access.

One BlobServiceClient per adapter, opened by `AzureBlobAdapter.open` and closed by `aclose`. SDK
calls go through `_call` (or `_translated` for iterators), which maps SDK and transport errors to
UfsErrors from the tables below.

How S3 semantics are kept on Azure:
- ETags. Azure's own ETag is an opaque version, S3's is the MD5 of the content. Hoard stores the
  MD5 as the blob's Content-MD5 (set on every write, computed while the body streams) and reports
  it as the ETag; a blob assembled by `complete_multipart` carries `md5(part md5s)-N` in its
  metadata (`hoard_etag`) instead. Blobs written by other tools without an MD5 report Azure's ETag.
  LIST returns the same ETag as HEAD (metadata is included in listings). `read` checks `if_match`
  against the ETag of the first response; the SDK pins the following range requests to Azure's
  ETag of that response, so a read never mixes two versions.
- Metadata. Azure metadata names must be C# identifiers; other S3 names (`my-key`) are stored as
  `hoard_x_` + the name with every byte other than [A-Za-z0-9] escaped as `_xx`, and decoded back.
- Order. Azure lists in UTF-16 code-unit order, S3 in UTF-8 byte order; they differ only where
  one name has a character U+E000..U+FFFF and the other one above U+FFFF at the first difference.
  `_scan` restores S3 order, sorting such blocks within the page at hand or, when they span
  pages, listing them separately with `start_from` (see below); listings stream page by page,
  and `start_after` is one listing request in the usual case.
- Writes. A body of up to 1 MiB is one Put Blob; a longer one is staged as blocks of `block_size`
  (8 MiB) while it arrives and committed with one Put Block List, so readers see the old or the
  new blob, and a failed or cancelled write leaves the old one. Blocks larger than `block_size`
  (huge objects, large parts) are spooled to a temp file in `state_dir`: memory stays at one block
  of at most `block_size`.
- Multipart uploads are block blobs: each part is staged as blocks of the target blob whose ids
  carry the upload id, part number, attempt (a timestamp) and, on the part's last block, its MD5;
  the uncommitted block list therefore *is* the part list. `complete_multipart` commits the
  chosen parts' blocks in part order. A marker blob `.hoard-uploads/<blob name>/<upload id>`
  (at the container root, JSON with content type and metadata) records that the upload exists,
  for `list_uploads`, `abort` and `NoSuchUpload`.
  Azure's limits apply: a Put Block List on the blob (a staged `write`, another upload's
  completion) discards all its other uncommitted blocks, so such a write invalidates uploads in
  progress on that key (their completion fails with InvalidPart; Azurite keeps them across a
  single-shot Put Blob, Azure may not); Azure drops uncommitted blocks after 7 days; a blob
  holds at most 50,000 committed blocks (a part of known size is cut into at most 5 blocks, so
  any 10,000-part upload fits). Abort removes the marker only: Azure has no call to drop staged
  blocks, they go with the next commit of that blob or after 7 days.
- Folders are key prefixes, as in the S3 adapter: `make_dir` writes a zero-byte `path/` blob.
- At a container-root mount the `.hoard-uploads/` prefix is reserved (InvalidPath) and hidden from
  listings; a listing whose delimiter occurs inside that name (e.g. `-`) may show `.hoard-` as a
  common prefix while uploads are in progress.

Not covered: hierarchical-namespace (ADLS Gen2) accounts list in path-segment order, which this
adapter does not reorder; there listings can deviate from S3 order for names with characters
below `/` (such as `-` and `.`). OAuth/Entra ID credentials are not supported.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from contextlib import AsyncExitStack, aclosing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio.to_thread
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob.aio import (
    BlobClient,
    BlobPrefix,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)

from ._util import (
    CHUNK_SIZE,
    check_options,
    check_part_list,
    check_part_number,
    composite_etag,
    float_option,
    int_option,
    unquote_etag,
)
from .base import (
    MIN_PART_SIZE,
    AlreadyExists,
    BadDigest,
    EntityTooSmall,
    InvalidPart,
    InvalidPath,
    ListPage,
    NoSuchUpload,
    NotEmpty,
    NotFound,
    NotSupported,
    ObjectInfo,
    PartInfo,
    PartsPage,
    PermissionDenied,
    PreconditionFailed,
    ReadOptions,
    UfsError,
    Unavailable,
    UploadInfo,
    UploadsPage,
    WriteMeta,
    read_head_in_two,
)

log = logging.getLogger("hoard.ufs.azure")

T = TypeVar("T")

MiB = 1024 * 1024
MAX_BLOCK_SIZE = 4000 * MiB
MAX_BLOCKS = 50_000  # committed blocks per blob
MAX_NAME_LENGTH = 1024
PAGE_SIZE_MAX = 5000  # the most List Blobs returns per request
UPLOADS = ".hoard-uploads/"  # marker blobs of multipart uploads, at the container root
ETAG_KEY = "hoard_etag"  # metadata name holding a multipart ETag
ESCAPED_KEY = "hoard_x_"  # metadata names that are not C# identifiers, escaped

# URI scheme -> HTTP scheme of the derived endpoint (Hadoop: wasb is plain HTTP, abfs uses TLS).
URI_SCHEMES: Mapping[str, str] = {
    "wasb": "http",
    "wasbs": "https",
    "abfs": "https",
    "abfss": "https",
    "az": "https",
}
DEFAULT_SUFFIX = "blob.core.windows.net"
OPTIONS = (
    "account_name",
    "account_key",
    "sas_token",
    "connection_string",
    "endpoint_url",
    "max_attempts",
    "connect_timeout",
    "read_timeout",
)
# Hadoop/Alluxio option names, matched against the mounted account (and container).
_KEY_ALIAS = re.compile(r"fs\.azure\.account\.key\.([a-z0-9]+)\.(?:blob|dfs)\..+")
_SAS_ALIAS = re.compile(r"fs\.azure\.sas\.([a-z0-9$-]+)\.([a-z0-9]+)\.(?:blob|dfs)\..+")
_CONTAINER = re.compile(r"\$root|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_PLAIN_META = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


# --- URI and options ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AzureLocation:
    """What a mount URI names: a container, a prefix in it ("" or ending in `/`), and the account
    and blob endpoint when the URI spells them."""

    container: str
    prefix: str
    account: str | None
    endpoint: str | None


def parse_azure_uri(uri: str) -> AzureLocation:
    """`wasbs://container@account.blob.core.windows.net/some/prefix` and its relatives."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in URI_SCHEMES:
        raise ValueError(f"not an Azure Blob URI ({', '.join(URI_SCHEMES)}): {uri!r}")
    container, at, host = parts.netloc.rpartition("@")
    if not at:
        if scheme != "az":
            raise ValueError(f"{uri!r}: expected {scheme}://container@account.blob.core.windows.net/prefix")
        container, host = host, ""
    if not _CONTAINER.fullmatch(container):
        raise ValueError(f"{uri!r}: {container!r} is not a valid container name (3-63 of a-z, 0-9, -)")
    account = endpoint = None
    if host:
        account, _, suffix = host.lower().partition(".")
        suffix = suffix or DEFAULT_SUFFIX
        if suffix.startswith("dfs."):  # ADLS Gen2 endpoint of the same account
            suffix = "blob." + suffix[len("dfs.") :]
        if not suffix.startswith("blob.") or not _ACCOUNT.fullmatch(account):
            raise ValueError(f"{uri!r}: expected a host like account.blob.core.windows.net, not {host!r}")
        endpoint = f"{URI_SCHEMES[scheme]}://{account}.{suffix}"
    prefix = unquote(parts.path).strip("/")
    if prefix:
        _check_key(prefix)
        if (prefix + "/").startswith(UPLOADS):
            raise ValueError(f"{uri!r}: the prefix {UPLOADS!r} is reserved for multipart uploads")
    return AzureLocation(container, prefix + "/" if prefix else "", account, endpoint)


def azure_options(options: Mapping[str, str], location: AzureLocation) -> dict[str, str]:
    """Resolve Hadoop/Alluxio aliases for the mounted account; keep known options, ignore foreign
    namespaces, refuse anything else. Two spellings with different values are an error."""
    account = options.get("account_name") or location.account
    result: dict[str, str] = {}
    origin: dict[str, str] = {}
    for key, value in options.items():
        name = key
        if match := _KEY_ALIAS.fullmatch(key):
            if account is None or match[1] == account:
                name = "account_key"
                result.setdefault("account_name", match[1])
        elif match := _SAS_ALIAS.fullmatch(key):
            if match[1] == location.container and (account is None or match[2] == account):
                name = "sas_token"
                result.setdefault("account_name", match[2])
        if name in result and name in origin and result[name] != value:
            raise ValueError(f"mount options {origin[name]!r} and {key!r} give {name!r} different values")
        result[name] = value
        origin.setdefault(name, key)
    if location.account and result.get("account_name", location.account) != location.account:
        raise ValueError(
            f"option account_name is {result['account_name']!r} but the URI names {location.account!r}"
        )
    return check_options("azure", result, OPTIONS)


# --- error translation --------------------------------------------------------------------------


class RangeNotSatisfiable(UfsError):
    """A range starting at or past the end; `read` turns it into no bytes."""


_throttled = partial(Unavailable, throttled=True)

# Azure error code (x-ms-error-code) -> UfsError.
ERROR_CODES: Mapping[str, Callable[[str, str], UfsError]] = {
    "BlobNotFound": NotFound,
    "ContainerNotFound": NotFound,
    "ResourceNotFound": NotFound,
    "CannotVerifyCopySource": NotFound,
    "ConditionNotMet": PreconditionFailed,
    "SourceConditionNotMet": PreconditionFailed,
    "TargetConditionNotMet": PreconditionFailed,
    "AuthenticationFailed": PermissionDenied,
    "AuthorizationFailure": PermissionDenied,
    "AuthorizationPermissionMismatch": PermissionDenied,
    "AuthorizationProtocolMismatch": PermissionDenied,
    "AuthorizationResourceTypeMismatch": PermissionDenied,
    "AuthorizationServiceMismatch": PermissionDenied,
    "AuthorizationSourceIPMismatch": PermissionDenied,
    "InsufficientAccountPermissions": PermissionDenied,
    "InvalidAuthenticationInfo": PermissionDenied,
    "NoAuthenticationInformation": PermissionDenied,
    "AccountIsDisabled": PermissionDenied,
    "PublicAccessNotPermitted": PermissionDenied,
    "ServerBusy": _throttled,
    "OperationTimedOut": Unavailable,
    "InternalError": Unavailable,
    "ContainerBeingDeleted": Unavailable,
    "InvalidRange": RangeNotSatisfiable,
    "InvalidBlockList": InvalidPart,
    "Md5Mismatch": BadDigest,
    "InvalidMd5": BadDigest,
    "ContainerAlreadyExists": AlreadyExists,
    "BlobAlreadyExists": AlreadyExists,
    "InvalidResourceName": InvalidPath,
    "InvalidUri": InvalidPath,
    "UnsupportedHeader": NotSupported,
    "UnsupportedQueryParameter": NotSupported,
    "FeatureVersionMismatch": NotSupported,
}
# When the code is unknown (or absent: HEAD responses have no body), the HTTP status decides.
ERROR_STATUSES: Mapping[int, Callable[[str, str], UfsError]] = {
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    412: PreconditionFailed,
    416: RangeNotSatisfiable,
    429: _throttled,
    500: Unavailable,
    501: NotSupported,
    502: Unavailable,
    503: _throttled,
    504: Unavailable,
}
# Without a status (transport errors), or as a last resort, the exception type decides.
ERROR_TYPES: tuple[tuple[type[BaseException], Callable[[str, str], UfsError]], ...] = (
    (ClientAuthenticationError, PermissionDenied),
    (ResourceNotFoundError, NotFound),
    (ResourceModifiedError, PreconditionFailed),
    (ResourceExistsError, AlreadyExists),
    (ServiceRequestError, Unavailable),  # connect failures and timeouts
    (ServiceResponseError, Unavailable),  # connection lost while reading the response
    (aiohttp.ClientError, Unavailable),
    (TimeoutError, Unavailable),
)


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(code.value if isinstance(code, Enum) else code or "")


def translate_error(exc: BaseException, path: str) -> UfsError:
    """One SDK or transport exception -> the UfsError the rest of Hoard understands."""
    code = _error_code(exc)
    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    detail = f"{code}: {message}" if code else message
    factory = ERROR_CODES.get(code) or (ERROR_STATUSES.get(status) if status else None)
    if factory is None:
        factory = next((f for kind, f in ERROR_TYPES if isinstance(exc, kind)), UfsError)
    return factory(path, detail)


@contextmanager
def _translated(path: str) -> Iterator[None]:
    try:
        yield
    except UfsError:
        raise
    except (AzureError, aiohttp.ClientError, TimeoutError) as exc:
        raise translate_error(exc, path) from exc


# --- names, metadata, ETags ---------------------------------------------------------------------


def _check_key(path: str) -> None:
    if not path:
        raise InvalidPath(path, "empty key")
    if "\x00" in path:
        raise InvalidPath(path, "NUL in key")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InvalidPath(path, "'.' and '..' segments are not allowed in a key")
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
    if _MULTIPART_ETAG.fullmatch(stored):
        return stored
    md5 = props.content_settings.content_md5 if props.content_settings else None
    if md5 and len(md5) == 16:
        return bytes(md5).hex()
    return unquote_etag(props.etag or "")


def _parts_count(etag: str) -> int | None:
    return int(etag.rpartition("-")[2]) if _MULTIPART_ETAG.fullmatch(etag) else None


def _utc(value: object) -> datetime:
    """A timestamp from the SDK (properties or a response dict entry) in UTC; now if absent."""
    return value.astimezone(UTC) if isinstance(value, datetime) else datetime.now(UTC)


# --- listing order ------------------------------------------------------------------------------
#
# Azure returns names in UTF-16 code-unit order, S3 wants code-point (UTF-8 byte) order. Split the
# characters into L (< U+E000), E (U+E000..U+FFFF) and S (> U+FFFF, a surrogate pair D800..DBFF
# in UTF-16). The orders agree except that below any name prefix m Azure delivers m's children as
# [L][S][E] and S3 wants [L][E][S]. So when a scan meets the first S child of some m, and the rest
# of m's subtree is in the page at hand, it sorts that rest by code point; otherwise it lists m's E
# block and then m's S block (each a listing with `start_from`, recursively in order) and resumes
# after m's subtree. Names without S characters cost nothing extra; a caller's `start_after` with
# E or S characters is split the same way (`_after`).

_E_FIRST = "\ue000"
_S_FIRST = "\U00010000"


def _astral(ch: str) -> bool:
    return ord(ch) > 0xFFFF


def _first_astral(name: str, start: int) -> int | None:
    if name.isascii():
        return None
    return next((i for i in range(start, len(name)) if _astral(name[i])), None)


def _first_high(name: str, start: int) -> int | None:
    """The first character at or after `start` that is not in L (where the orders may differ)."""
    if name.isascii():
        return None
    return next((i for i in range(start, len(name)) if ord(name[i]) >= 0xE000), None)


def _after_subtree(m: str) -> str | None:
    """The least name, in Azure's order, above every name that starts with `m` (None: nothing)."""
    while m:
        last = ord(m[-1])
        if last == 0xFFFF:  # the largest code unit: carry into the previous character
            m = m[:-1]
        elif last == 0xD7FF:  # the next code unit, D800, starts the surrogate pairs
            return m[:-1] + _S_FIRST
        elif last == 0x10FFFF:  # after the largest pair comes U+E000
            return m[:-1] + _E_FIRST
        else:
            return m[:-1] + chr(last + 1)
    return None


def _azure_key(name: str) -> bytes:
    return name.encode("utf-16-be")


# One listing entry: the blob name and its properties, or None for a common prefix.
_Entry = tuple[str, BlobProperties | None]


# --- block ids and bodies -----------------------------------------------------------------------
#
# Block id (64 characters, the most Azure allows; all ids of one blob must have the same length):
# upload id (19) | part number (5) | attempt (13 hex: microseconds) | block in part (5) | the part's
# MD5 in url-safe base64 on its last block, else dots (22).

_ID_LEN = 19
_ATTEMPT_LEN = 13
_NO_MD5 = "." * 22
_UPLOAD_ID = re.compile(r"[0-9a-f]{19}")


@dataclass(frozen=True, slots=True)
class _BlockId:
    upload_id: str
    part: int
    attempt: str
    seq: int
    md5: str | None  # hex, on the last block of a part

    def encode(self) -> str:
        tail = base64.urlsafe_b64encode(bytes.fromhex(self.md5)).decode()[:22] if self.md5 else _NO_MD5
        return f"{self.upload_id}{self.part:05d}{self.attempt}{self.seq:05d}{tail}"

    @classmethod
    def parse(cls, raw: str) -> _BlockId | None:
        if len(raw) != 64 or not raw[_ID_LEN : _ID_LEN + 5].isdigit() or not raw[37:42].isdigit():
            return None
        tail = raw[42:]
        try:
            md5 = None if tail == _NO_MD5 else base64.urlsafe_b64decode(tail + "==").hex()
        except (binascii.Error, ValueError):
            return None
        return cls(raw[:_ID_LEN], int(raw[_ID_LEN : _ID_LEN + 5]), raw[24:37], int(raw[37:42]), md5)


@dataclass(frozen=True, slots=True)
class _Part:
    """One complete attempt at a part, as the uncommitted block list shows it."""

    number: int
    md5: str
    size: int
    attempt: str
    block_ids: list[str]

    @property
    def info(self) -> PartInfo:
        when = datetime.fromtimestamp(int(self.attempt, 16) / 1e6, UTC)
        return PartInfo(self.number, self.md5, self.size, when)


def _parts_of(blocks: list[BlobBlock], upload_id: str) -> dict[int, _Part]:
    """The latest complete attempt of each part of `upload_id` (a part is complete when its last
    block, which carries the MD5, and all blocks before it are staged)."""
    attempts: dict[tuple[int, str], dict[int, tuple[str, int]]] = {}
    finals: dict[tuple[int, str], tuple[int, str]] = {}
    for block in blocks:
        parsed = _BlockId.parse(block.id)
        if parsed is None or parsed.upload_id != upload_id:
            continue
        key = (parsed.part, parsed.attempt)
        attempts.setdefault(key, {})[parsed.seq] = (block.id, block.size or 0)
        if parsed.md5 is not None:
            finals[key] = (parsed.seq, parsed.md5)
    parts: dict[int, _Part] = {}
    for (number, attempt), (last, md5) in sorted(finals.items()):
        staged = attempts[(number, attempt)]
        if all(seq in staged for seq in range(last + 1)):
            ids = [staged[seq][0] for seq in range(last + 1)]
            size = sum(staged[seq][1] for seq in range(last + 1))
            parts[number] = _Part(number, md5, size, attempt, ids)  # later attempts sort last
    return parts


class _Block:
    """One block being assembled: in memory up to `memory_limit` bytes, beyond that in a temp file.

    Its body is a seekable file object (aiohttp sends those without blocking the event loop, and
    the SDK rewinds them to retry).
    """

    def __init__(self, directory: Path | None, memory_limit: int) -> None:
        self._directory = directory
        self._limit = memory_limit
        self._memory = io.BytesIO()
        self._pending = bytearray()  # on its way to the temp file
        self._file: IO[bytes] | None = None
        self.size = 0

    async def add(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is None and self.size > self._limit:
            self._file = await anyio.to_thread.run_sync(self._make_file)
            self._pending, self._memory = bytearray(self._memory.getbuffer()), io.BytesIO()
        if self._file is None:
            self._memory.write(data)
            return
        self._pending += data
        if len(self._pending) >= CHUNK_SIZE:
            await self._flush()

    def _make_file(self) -> IO[bytes]:
        return tempfile.TemporaryFile("w+b", dir=self._directory)

    async def _flush(self) -> None:
        data, self._pending = bytes(self._pending), bytearray()
        assert self._file is not None
        await anyio.to_thread.run_sync(self._file.write, data)

    async def body(self) -> IO[bytes]:
        if self._file is None:
            self._memory.seek(0)
            return self._memory
        await self._flush()
        self._file.flush()
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._memory = io.BytesIO()
        if self._file is not None:
            self._file.close()
            self._file = None


async def _blocks(
    body: AsyncIterable[bytes],
    block_size: Callable[[int], int],
    digest: Any,
    spool_dir: Path | None,
    memory_limit: int,
) -> AsyncGenerator[tuple[_Block, bool]]:
    """Cut a body into blocks of `block_size(n)` bytes for block n (1-based): (block, is_last).

    `digest` (an md5) sees every byte. A full block is released only once a further byte has
    arrived, so the caller knows whether it is the last; an empty body yields one empty last block.
    """
    number = 1
    block = _Block(spool_dir, memory_limit)
    try:
        async for chunk in body:
            if len(chunk) >= CHUNK_SIZE:
                await anyio.to_thread.run_sync(digest.update, chunk)
            else:
                digest.update(chunk)
            view = memoryview(chunk)
            while view:
                if block.size == block_size(number):
                    yield block, False
                    block.close()
                    number += 1
                    block = _Block(spool_dir, memory_limit)
                room = block_size(number) - block.size
                await block.add(bytes(view[:room]))
                view = view[room:]
        yield block, True
    finally:
        block.close()


@dataclass(frozen=True, slots=True)
class _Upload:
    """What the marker blob of a multipart upload records."""

    content_type: str | None
    metadata: dict[str, str]

    def dump(self) -> bytes:
        return json.dumps({"content_type": self.content_type, "metadata": self.metadata}).encode()

    @classmethod
    def load(cls, data: bytes) -> _Upload:
        doc = json.loads(data)
        return cls(doc.get("content_type"), dict(doc.get("metadata") or {}))


# --- the adapter --------------------------------------------------------------------------------


class AzureBlobAdapter:
    """A container or a prefix in one, through one BlobServiceClient."""

    scheme = "wasbs"
    block_size = 8 * MiB  # the size of staged blocks; also the most a block holds in memory
    # write() sends bodies up to this size as one Put Blob, longer ones as blocks + Put Block List.
    # The SDK hands Put Blob bodies to aiohttp as bytes, which aiohttp refuses to send above 1 MiB
    # without a warning (it would write them in one go); staged blocks are streamed from a file.
    single_put_size = CHUNK_SIZE
    read_chunk_size = 4 * MiB  # the SDK's range request size when reading
    list_page_size = PAGE_SIZE_MAX  # names per List Blobs request, at most
    copy_poll_interval = 0.05  # first wait for an asynchronous server-side copy; doubles up to 1 s

    def __init__(
        self,
        client: BlobServiceClient,
        container: str,
        prefix: str = "",
        *,
        stack: AsyncExitStack | None = None,
        spool_dir: Path | None = None,
        sas_token: str | None = None,
    ) -> None:
        self._client = client
        self._container: ContainerClient = client.get_container_client(container)
        self.container = container
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._stack = stack
        self._spool_dir = spool_dir
        self._sas = sas_token.lstrip("?") if sas_token else None
        self._start_from = True  # cleared if the service refuses List Blobs' startFrom
        self._last_stamp = 0

    @classmethod
    async def open(
        cls, uri: str, options: Mapping[str, str], *, state_dir: Path | None = None
    ) -> AzureBlobAdapter:
        """Open a container URI with its mount options (Hadoop/Alluxio aliases accepted)."""
        location = parse_azure_uri(uri)
        opts = azure_options(options, location)
        account = opts.get("account_name") or location.account
        connection_string = opts.get("connection_string")
        key, sas = opts.get("account_key"), opts.get("sas_token")
        endpoint = opts.get("endpoint_url")
        if connection_string and (endpoint or key or sas):
            raise ValueError("option connection_string holds endpoint and credential: drop the other options")
        if key and sas:
            raise ValueError("give either option account_key or option sas_token, not both")
        if endpoint and "://" not in endpoint:
            endpoint = "https://" + endpoint
        endpoint = (
            endpoint or location.endpoint or (f"https://{account}.{DEFAULT_SUFFIX}" if account else None)
        )
        if not connection_string and endpoint is None:
            raise ValueError(
                f"{uri!r}: name the account (option account_name, or container@account in the URI)"
            )
        credential: AzureNamedKeyCredential | AzureSasCredential | None = None
        if key:
            account = account or _account_from_endpoint(endpoint or "")
            _check_account_key(key)
            credential = AzureNamedKeyCredential(account, key)
        elif sas:
            credential = AzureSasCredential(sas.lstrip("?"))
        elif connection_string:
            sas = _connection_string_field(connection_string, "SharedAccessSignature")
        attempts = int_option(opts, "max_attempts", 3)
        settings: dict[str, Any] = {
            "retry_policy": ExponentialRetry(
                initial_backoff=1, increment_base=2, retry_total=max(attempts - 1, 0), random_jitter_range=1
            ),
            "connection_timeout": float_option(opts, "connect_timeout", 10.0),
            "read_timeout": float_option(opts, "read_timeout", 60.0),
            "max_single_get_size": cls.read_chunk_size,
            "max_chunk_get_size": cls.read_chunk_size,
        }
        stack = AsyncExitStack()
        try:
            if connection_string:
                client = BlobServiceClient.from_connection_string(connection_string, **settings)
            else:
                assert endpoint is not None
                client = BlobServiceClient(endpoint, credential=credential, **settings)
            client = await stack.enter_async_context(client)
        except BaseException:
            await stack.aclose()
            raise
        return cls(
            client, location.container, location.prefix, stack=stack, spool_dir=state_dir, sas_token=sas
        )

    @property
    def client(self) -> BlobServiceClient:
        """The SDK client; other adapters on the same account may share it (the opener closes it)."""
        return self._client

    async def aclose(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def __repr__(self) -> str:
        return f"AzureBlobAdapter({self._client.url!r}, {self.container!r}, {self.prefix!r})"

    # --- plumbing -----------------------------------------------------------------------------

    async def _call(self, path: str, call: Awaitable[T]) -> T:
        """The one choke point for SDK calls: errors leave as UfsErrors naming `path`."""
        with _translated(path):
            return await call

    def _name(self, path: str) -> str:
        _check_key(path)
        name = self.prefix + path
        if not self.prefix and name.startswith(UPLOADS):
            raise InvalidPath(path, f"{UPLOADS!r} is reserved for multipart uploads")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidPath(path, f"blob names are at most {MAX_NAME_LENGTH} characters")
        return name

    def _blob(self, name: str) -> BlobClient:
        return self._container.get_blob_client(name)

    def _stamp(self) -> str:
        """Microseconds since the epoch, strictly increasing within this adapter, as 13 hex digits."""
        self._last_stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        return f"{self._last_stamp:013x}"

    def _info(self, path: str, props: BlobProperties) -> ObjectInfo:
        etag = etag_of(props)
        return ObjectInfo(
            path=path,
            size=props.size,
            etag=etag,
            last_modified=_utc(props.last_modified),
            content_type=props.content_settings.content_type if props.content_settings else None,
            metadata=decode_metadata(props.metadata or {}),
            parts_count=_parts_count(etag),
        )

    # --- objects ------------------------------------------------------------------------------

    async def stat(self, path: str) -> ObjectInfo:
        name = self._name(path)
        return self._info(path, await self._call(path, self._blob(name).get_blob_properties()))

    async def _check_version(self, path: str, if_match: str | None) -> None:
        if if_match is not None:
            etag = (await self.stat(path)).etag
            if etag != unquote_etag(if_match):
                raise PreconditionFailed(path, f"ETag is {etag!r}, not {if_match!r}")

    async def read_head(
        self, path: str, length: int, *, start: int = 0, more: bool = False, end: int | None = None
    ) -> tuple[ObjectInfo, bytes]:
        return await read_head_in_two(self, path, length, start)

    async def part_range(self, path: str, part_number: int, etag: str) -> tuple[int, int]:
        """From the committed block list: each block id names its upload part (_BlockId), so the
        blocks before part N's first add up to where it starts. The blob's version is checked
        before and after (the block list takes no condition)."""
        await self._check_version(path, etag)
        committed, _ = await self._call(path, self._blob(self._name(path)).get_block_list("committed"))
        await self._check_version(path, etag)
        start = end = 0
        for block in committed:
            parsed = _BlockId.parse(block.id)
            if parsed is None:
                raise NotSupported(path, "the blob's blocks do not name the parts they came from")
            if parsed.part < part_number:
                start += block.size or 0
            elif parsed.part == part_number:
                end += block.size or 0
        if end == 0:
            raise NotSupported(path, f"no blocks of part {part_number}")
        return start, start + end

    async def read(self, path: str, opts: ReadOptions) -> AsyncIterator[bytes]:
        name = self._name(path)
        start, end = max(opts.start, 0), opts.end
        if end is not None and end <= start:
            await self._check_version(path, opts.if_match)
            return
        length = None if end is None else end - start
        try:
            # The first response fixes the version: the SDK sends If-Match with its Azure ETag on
            # every further range request, so the stream never mixes two versions.
            download = await self._call(
                path, self._blob(name).download_blob(offset=start, length=length, max_concurrency=1)
            )
        except RangeNotSatisfiable:
            await self._check_version(path, opts.if_match)
            return  # start at or past the end: no bytes, as the local adapter does
        if opts.if_match is not None:
            etag = etag_of(download.properties)
            if etag != unquote_etag(opts.if_match):
                raise PreconditionFailed(path, f"ETag is {etag!r}, not {opts.if_match!r}")
        chunks = download.chunks()
        while True:
            with _translated(path):  # a connection lost mid-body is Unavailable too
                chunk = await anext(chunks, None)
            if chunk is None:
                return
            for offset in range(0, len(chunk), CHUNK_SIZE):
                yield chunk[offset : offset + CHUNK_SIZE]

    def _write_block_sizes(self, size: int | None) -> Callable[[int], int]:
        """Block n's size for write(): fixed when the size is known (at most 50,000 blocks), else
        doubling every 5,000 blocks so that a body of unknown size can still reach terabytes."""
        if size is not None:
            fixed = max(self.block_size, -(-size // MAX_BLOCKS))
            fixed = min(-(-fixed // MiB) * MiB, MAX_BLOCK_SIZE)
            return lambda number: fixed
        return lambda number: min(self.block_size << min((number - 1) // 5000, 16), MAX_BLOCK_SIZE)

    def _part_block_sizes(self, size: int | None) -> Callable[[int], int]:
        """Block n's size within a part: at most 5 blocks for a part of known size (so 10,000 parts
        stay within 50,000 blocks), growing blocks for a part of unknown size."""
        if size is not None:
            fixed = max(self.block_size, -(-size // 5))
            fixed = min(-(-fixed // MiB) * MiB, MAX_BLOCK_SIZE)
            return lambda number: fixed
        return lambda number: min(self.block_size << min((number - 1) // 2, 16), MAX_BLOCK_SIZE)

    async def _stage(self, path: str, blob: BlobClient, block_id: _BlockId, block: _Block) -> str:
        raw = block_id.encode()
        data = await block.body()
        await self._call(path, blob.stage_block(raw, data, length=block.size))
        return raw

    async def write(
        self, path: str, body: AsyncIterable[bytes], *, size: int | None, meta: WriteMeta
    ) -> ObjectInfo:
        name = self._name(path)
        blob = self._blob(name)
        digest = hashlib.md5()
        blocks = _blocks(body, self._write_block_sizes(size), digest, self._spool_dir, self.block_size)
        async with aclosing(blocks):
            block, last = await anext(blocks)
            if last and block.size <= self.single_put_size:
                if size is not None and block.size != size:
                    raise BadDigest(path, f"expected {size} bytes, received {block.size}")
                settings = ContentSettings(
                    content_type=meta.content_type, content_md5=bytearray(digest.digest())
                )
                response = await self._call(
                    path,
                    blob.upload_blob(
                        await block.body(),
                        length=block.size,
                        overwrite=True,
                        metadata=encode_metadata(meta.metadata),
                        content_settings=settings,
                        max_concurrency=1,
                    ),
                )
                total = block.size
            else:
                upload_id, attempt = self._new_upload_id(), self._stamp()
                ids: list[str] = []
                total = 0
                while True:
                    if last and size is not None and total + block.size != size:
                        raise BadDigest(path, f"expected {size} bytes, received {total + block.size}")
                    ids.append(
                        await self._stage(path, blob, _BlockId(upload_id, 0, attempt, len(ids), None), block)
                    )
                    total += block.size
                    if last:
                        break
                    block, last = await anext(blocks)
                # One Put Block List makes the new content visible at once; the staged blocks of a
                # failed or cancelled write are never committed and Azure discards them.
                settings = ContentSettings(
                    content_type=meta.content_type, content_md5=bytearray(digest.digest())
                )
                response = await self._call(
                    path,
                    blob.commit_block_list(
                        [BlobBlock(i) for i in ids],
                        content_settings=settings,
                        metadata=encode_metadata(meta.metadata),
                    ),
                )
        return ObjectInfo(
            path=path,
            size=total,
            etag=digest.hexdigest(),
            last_modified=_utc(response.get("last_modified")),
            content_type=meta.content_type,
            metadata=dict(meta.metadata),
        )

    async def copy(self, src: str, dst: str, *, meta: WriteMeta | None) -> ObjectInfo:
        src_name, dst_name = self._name(src), self._name(dst)
        source = await self._call(src, self._blob(src_name).get_blob_properties())
        target = self._blob(dst_name)
        if src_name != dst_name:
            url = self._blob(src_name).url + (f"?{self._sas}" if self._sas else "")
            stored = self._stored_metadata(meta, source) if meta is not None else None
            response = await self._call(
                dst,
                target.start_copy_from_url(
                    url,
                    metadata=stored or None,  # None (and {}) copy the source's metadata
                    source_etag=source.etag,
                    source_match_condition=MatchConditions.IfNotModified,
                ),
            )
            etag = await self._finish_copy(dst, target, response)
        else:
            etag = source.etag
        if meta is not None:
            await self._replace_meta(dst, target, etag, meta, source)
        return await self.stat(dst)

    def _stored_metadata(self, meta: WriteMeta, source: BlobProperties) -> dict[str, str]:
        stored = encode_metadata(meta.metadata)
        etag = etag_of(source)
        if _MULTIPART_ETAG.fullmatch(etag):
            stored[ETAG_KEY] = etag  # the bytes are the source's, so is their ETag
        return stored

    async def _finish_copy(self, path: str, target: BlobClient, response: Mapping[str, Any]) -> str:
        """Wait for an asynchronous copy (Azure may copy large blobs in the background); its ETag."""
        status, etag = response.get("copy_status"), str(response.get("etag", ""))
        delay = self.copy_poll_interval
        try:
            while status == "pending":
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                props = await self._call(path, target.get_blob_properties())
                status, etag = props.copy.status, props.etag
        except BaseException:
            if status == "pending" and response.get("copy_id"):
                copy_id = str(response["copy_id"])
                task = asyncio.ensure_future(target.abort_copy(copy_id))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise
        if status != "success":
            raise Unavailable(path, f"server-side copy ended {status!r}")
        return etag

    async def _replace_meta(
        self, path: str, target: BlobClient, etag: str, meta: WriteMeta, source: BlobProperties
    ) -> None:
        """Content type and metadata of a copy, as S3's MetadataDirective=REPLACE; the stored MD5
        (the ETag) stays. Both requests are conditional on the copy being the current content."""
        md5 = source.content_settings.content_md5 if source.content_settings else None
        settings = ContentSettings(content_type=meta.content_type, content_md5=md5)
        done = await self._call(
            path,
            target.set_http_headers(settings, etag=etag, match_condition=MatchConditions.IfNotModified),
        )
        await self._call(
            path,
            target.set_blob_metadata(
                self._stored_metadata(meta, source),
                etag=str(done.get("etag", "")),
                match_condition=MatchConditions.IfNotModified,
            ),
        )

    async def delete(self, path: str) -> None:
        name = self._name(path)
        try:
            await self._call(path, self._blob(name).delete_blob(delete_snapshots="include"))
        except NotFound:
            pass

    # --- listing ------------------------------------------------------------------------------

    async def list_objects(
        self, prefix: str, *, delimiter: str | None, start_after: str | None, limit: int
    ) -> ListPage:
        if limit <= 0:
            return ListPage([], [], None)
        page_size = min(limit + 1, self.list_page_size)
        after = self.prefix + start_after if start_after else None
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last: str | None = None
        entries = self._ordered(self.prefix + prefix, after, delimiter or None, page_size)
        async with aclosing(entries):
            async for name, props in entries:
                rel = name[len(self.prefix) :]
                if not rel or (not self.prefix and name.startswith(UPLOADS)):
                    continue  # the mount's own folder marker; multipart markers
                if len(objects) + len(prefixes) == limit:
                    return ListPage(objects, prefixes, last)
                if props is None:
                    prefixes.append(rel)
                else:
                    objects.append(self._info(rel, props))
                last = rel
        return ListPage(objects, prefixes, None)

    async def _ordered(
        self, prefix: str, start_after: str | None, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[_Entry]:
        """Entries named `prefix...`, greater than `start_after`, in S3 order."""
        lo = start_after
        if lo is not None and not lo.startswith(prefix):
            if lo > prefix:
                return  # every name with this prefix sorts before start_after
            lo = None
        if lo is not None and delimiter:
            cut = lo.find(delimiter, len(prefix))
            if cut >= 0:  # names below the common prefix that holds start_after roll up into it
                lo = lo[: cut + len(delimiter)]
        if lo is None:
            entries = self._scan(prefix, None, len(prefix), None, delimiter, page_size)
        else:
            entries = self._after(prefix, lo, delimiter, page_size)
        async with aclosing(entries):
            async for entry in entries:
                if lo is None or entry[0] > lo:
                    yield entry

    async def _after(
        self, node: str, lo: str, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[_Entry]:
        """Entries named `node...` greater than `lo` (which starts with `node`), in S3 order.

        While `lo` has only L characters after `node`, "greater than lo" means the same in both
        orders and one scan from `lo` does it. At its first E or S character c (position i,
        n = lo[:i]): first the rest of n+c's subtree, then n's children after c in S3 order,
        then everything after n's subtree.
        """
        i = _first_high(lo, len(node))
        if i is None:
            scan = self._scan(node, lo, len(node), None, delimiter, page_size)
            async with aclosing(scan):
                async for entry in scan:
                    yield entry
            return
        n, nc = lo[:i], lo[: i + 1]
        after_c, after_n = _after_subtree(nc), _after_subtree(n)
        parts: list[Callable[[], AsyncGenerator[_Entry]]] = [
            partial(self._after, nc, lo, delimiter, page_size)
        ]
        if after_c is not None and after_c.startswith(n):  # n's children after c, in c's block
            stop = i if _astral(lo[i]) else None
            parts.append(partial(self._scan, n, after_c, i + 1, stop, delimiter, page_size))
        if not _astral(lo[i]):  # c is in E: n's S block follows
            parts.append(partial(self._scan, n, n + _S_FIRST, i + 1, i, delimiter, page_size))
        if n != node and after_n is not None and after_n.startswith(node):
            parts.append(partial(self._scan, node, after_n, len(node), None, delimiter, page_size))
        for make in parts:
            async with aclosing(make()) as part:
                async for entry in part:
                    yield entry

    async def _scan(
        self,
        prefix: str,
        floor: str | None,
        skip: int,
        stop_at: int | None,
        delimiter: str | None,
        page_size: int,
    ) -> AsyncGenerator[_Entry]:
        """Entries named `prefix...`, from `floor` on (Azure order), in S3 order.

        S characters at positions >= `skip` start the reordering described above. With `stop_at`
        = i the scan is confined to an S block: it ends at the first name whose character i is not
        astral. `floor`, when given, has no E or S characters after `prefix`, or starts a block.
        """
        while True:
            jumped, resume = False, None
            pages = self._pages(prefix, floor, delimiter, page_size)
            async with aclosing(pages):
                async for entries, final in pages:
                    k = 0
                    while k < len(entries):
                        name = entries[k][0]
                        if stop_at is not None and (len(name) <= stop_at or not _astral(name[stop_at])):
                            return
                        j = _first_astral(name, skip)
                        if j is None:
                            yield entries[k]
                            k += 1
                            continue
                        m = name[:j]  # `name` is the first of m's S block: m's E block comes first
                        end = next(
                            (x for x in range(k, len(entries)) if not entries[x][0].startswith(m)), None
                        )
                        if end is not None or final:
                            # The rest of m's subtree is in this page: sort it here.
                            end = len(entries) if end is None else end
                            for entry in sorted(entries[k:end], key=lambda e: e[0]):
                                yield entry
                            k = end
                            continue
                        for floor_m, stop in ((m + _E_FIRST, None), (m + _S_FIRST, j)):
                            block = self._scan(m, floor_m, j + 1, stop, delimiter, page_size)
                            async with aclosing(block):
                                async for entry in block:
                                    yield entry
                        jumped, resume = True, _after_subtree(m)
                        break
                    if jumped:
                        break
            if resume is None or not resume.startswith(prefix):
                return  # the listing ended, or m's subtree was the rest of prefix's
            floor = resume

    async def _pages(
        self, prefix: str, floor: str | None, delimiter: str | None, page_size: int
    ) -> AsyncGenerator[tuple[list[_Entry], bool]]:
        """List Blobs pages of entries named `prefix...` and >= `floor`, each in Azure's order, and
        whether it is the last page.

        `floor` goes to the service as `startFrom`; names below it are skipped here as well, so a
        service that ignores `startFrom` costs time, not correctness, and one that refuses it is
        asked without it from then on.
        """
        floor_key = _azure_key(floor) if floor else None
        use_start = floor is not None and self._start_from
        pages = self._list_pages(prefix, floor if use_start else None, delimiter, page_size)
        first = True
        while True:
            try:
                with _translated(prefix):
                    page = await anext(pages, None)
                    items = [item async for item in page] if page is not None else None
            except UfsError as exc:
                cause = exc.__cause__
                if first and use_start and isinstance(cause, HttpResponseError) and cause.status_code == 400:
                    log.info(
                        "the service refused List Blobs with startFrom (%s); skipping names instead", exc
                    )
                    self._start_from = use_start = False
                    pages = self._list_pages(prefix, None, delimiter, page_size)
                    continue
                raise
            if items is None:
                return
            first = False
            final = getattr(pages, "continuation_token", "unknown") is None
            # A page holds a range of names, but the SDK puts its common prefixes before its blobs.
            entries = sorted(
                (
                    (item.name, item if isinstance(item, BlobProperties) else None)
                    for item in items
                    if floor_key is None or _azure_key(item.name) >= floor_key
                ),
                key=lambda entry: _azure_key(entry[0]),
            )
            yield entries, final
            if final:
                return

    def _list_pages(
        self, prefix: str, start_from: str | None, delimiter: str | None, page_size: int
    ) -> AsyncIterator[AsyncIterator[BlobProperties | BlobPrefix]]:
        kwargs: dict[str, Any] = {
            "name_starts_with": prefix,
            "include": ["metadata"],
            "results_per_page": page_size,
        }
        if start_from is not None:
            kwargs["start_from"] = start_from
        if delimiter:
            return self._container.walk_blobs(delimiter=delimiter, **kwargs).by_page()
        return self._container.list_blobs(**kwargs).by_page()

    async def _first_names(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` blob names starting with `prefix` (one request)."""
        with _translated(prefix or self.container):
            pages = self._container.list_blobs(name_starts_with=prefix, results_per_page=limit).by_page()
            page = await anext(pages, None)
            return [item.name async for item in page][:limit] if page is not None else []

    # --- directories --------------------------------------------------------------------------

    async def _names_under(self, path: str, limit: int) -> list[str]:
        return await self._first_names(self._name(path) + "/", limit)

    async def is_dir(self, path: str) -> bool:
        path = path.rstrip("/")
        if not path:
            try:
                await self._first_names(self.prefix, 1)  # ContainerNotFound, else it exists
            except NotFound:
                return False
            return True
        return bool(await self._names_under(path, 1))

    async def make_dir(self, path: str) -> None:
        path = path.rstrip("/")
        name = self._name(path)
        if await self.is_dir(path):
            raise AlreadyExists(path, "the folder exists")
        await self._call(path, self._blob(name + "/").upload_blob(b"", overwrite=True))

    async def remove_dir(self, path: str) -> None:
        path = path.rstrip("/")
        marker = self._name(path) + "/"
        names = await self._names_under(path, 2)
        if not names:
            raise NotFound(path, "no such folder")
        if any(name != marker for name in names):
            raise NotEmpty(path, "the folder holds objects")
        await self._call(path, self._blob(marker).delete_blob())

    # --- multipart ----------------------------------------------------------------------------

    def _new_upload_id(self) -> str:
        """19 hex digits: a timestamp (so ids sort by initiation) and 24 random bits."""
        return self._stamp() + f"{int.from_bytes(os.urandom(3)):06x}"

    def _marker(self, name: str, upload_id: str) -> BlobClient:
        return self._blob(f"{UPLOADS}{name}/{upload_id}")

    async def _upload_marker(self, path: str, name: str, upload_id: str) -> BlobClient:
        """The marker blob of an upload, NoSuchUpload if it is not in progress."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NoSuchUpload(path, f"no upload {upload_id!r}")
        marker = self._marker(name, upload_id)
        try:
            await self._call(path, marker.get_blob_properties())
        except NotFound:
            raise NoSuchUpload(path, f"no upload {upload_id!r}") from None
        return marker

    async def _staged_parts(self, path: str, name: str, upload_id: str) -> dict[int, _Part]:
        try:
            _, uncommitted = await self._call(path, self._blob(name).get_block_list("uncommitted"))
        except NotFound:
            return {}  # no blob and no staged blocks yet
        return _parts_of(uncommitted, upload_id)

    async def create_multipart(self, path: str, meta: WriteMeta) -> str:
        name = self._name(path)
        upload_id = self._new_upload_id()
        record = _Upload(meta.content_type, dict(meta.metadata))
        await self._call(path, self._marker(name, upload_id).upload_blob(record.dump(), overwrite=False))
        return upload_id

    async def upload_part(
        self, path: str, upload_id: str, part_number: int, body: AsyncIterable[bytes], *, size: int | None
    ) -> PartInfo:
        check_part_number(path, part_number)
        name = self._name(path)
        await self._upload_marker(path, name, upload_id)
        blob = self._blob(name)
        attempt = self._stamp()
        digest = hashlib.md5()
        blocks = _blocks(body, self._part_block_sizes(size), digest, self._spool_dir, self.block_size)
        count = total = 0
        async with aclosing(blocks):
            async for block, last in blocks:
                if last and size is not None and total + block.size != size:
                    raise BadDigest(
                        path, f"part {part_number}: expected {size} bytes, received {total + block.size}"
                    )
                # The part's MD5 rides on its last block: a part without it was never complete.
                md5 = digest.hexdigest() if last else None
                await self._stage(path, blob, _BlockId(upload_id, part_number, attempt, count, md5), block)
                count += 1
                total += block.size
        return PartInfo(part_number, digest.hexdigest(), total, datetime.now(UTC))

    async def complete_multipart(self, path: str, upload_id: str, parts: list[tuple[int, str]]) -> ObjectInfo:
        name = self._name(path)
        check_part_list(path, parts)
        marker = await self._upload_marker(path, name, upload_id)
        record = _Upload.load(await self._download(path, marker))
        staged = await self._staged_parts(path, name, upload_id)
        chosen: list[_Part] = []
        for number, etag in parts:
            part = staged.get(number)
            if part is None or part.md5 != unquote_etag(etag).lower():
                raise InvalidPart(path, f"part {number} with ETag {etag!r} was not uploaded")
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise EntityTooSmall(
                    path, f"part {part.number} has {part.size} bytes, less than {MIN_PART_SIZE}"
                )
        etag = composite_etag(part.md5 for part in chosen)
        response = await self._call(
            path,
            self._blob(name).commit_block_list(
                [BlobBlock(block_id) for part in chosen for block_id in part.block_ids],
                content_settings=ContentSettings(content_type=record.content_type),
                metadata={**encode_metadata(record.metadata), ETAG_KEY: etag},
            ),
        )
        try:
            await self._call(path, marker.delete_blob())
        except NotFound:
            pass
        return ObjectInfo(
            path=path,
            size=sum(part.size for part in chosen),
            etag=etag,
            last_modified=_utc(response.get("last_modified")),
            content_type=record.content_type,
            metadata=record.metadata,
            parts_count=len(chosen),
        )

    async def _download(self, path: str, blob: BlobClient) -> bytes:
        download = await self._call(path, blob.download_blob())
        with _translated(path):
            return await download.readall()

    async def abort_multipart(self, path: str, upload_id: str) -> None:
        name = self._name(path)
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NoSuchUpload(path, f"no upload {upload_id!r}")
        try:
            await self._call(path, self._marker(name, upload_id).delete_blob())
        except NotFound:
            raise NoSuchUpload(path, f"no upload {upload_id!r}") from None

    async def list_parts(self, path: str, upload_id: str, *, marker: int, limit: int) -> PartsPage:
        name = self._name(path)
        await self._upload_marker(path, name, upload_id)
        staged = sorted(
            (p for p in (await self._staged_parts(path, name, upload_id)).values() if p.number > marker),
            key=lambda p: p.number,
        )
        page = staged[: max(limit, 0)]
        more = len(staged) > len(page) and page
        return PartsPage([p.info for p in page], page[-1].number if more else None)

    async def list_uploads(
        self,
        prefix: str,
        *,
        delimiter: str | None,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadsPage:
        """Reads every marker under the prefix (uploads in progress, not objects), then pages."""
        if limit <= 0:
            return UploadsPage([], [], None, None)
        root = UPLOADS + self.prefix
        found: list[UploadInfo] = []
        with _translated(prefix):
            async for item in self._container.list_blobs(name_starts_with=root + prefix):
                key, _, upload_id = item.name[len(root) :].rpartition("/")
                if key.startswith(prefix) and _UPLOAD_ID.fullmatch(upload_id):
                    found.append(UploadInfo(key, upload_id, _utc(item.creation_time or item.last_modified)))
        found.sort(key=lambda u: (u.path, u.upload_id))
        uploads: list[UploadInfo] = []
        prefixes: list[str] = []
        last: tuple[str, str | None] | None = None
        for upload in found:
            if key_marker is not None:
                if upload.path < key_marker:
                    continue
                if upload.path == key_marker and (
                    upload_id_marker is None or upload.upload_id <= upload_id_marker
                ):
                    continue
            rolled = None
            if delimiter:
                cut = upload.path.find(delimiter, len(prefix))
                rolled = upload.path[: cut + len(delimiter)] if cut >= 0 else None
            if rolled is not None and (prefixes[-1:] == [rolled] or (key_marker or "") >= rolled):
                continue
            if len(uploads) + len(prefixes) == limit:
                assert last is not None
                return UploadsPage(uploads, prefixes, last[0], last[1])
            if rolled is not None:
                prefixes.append(rolled)
                last = (rolled, None)
            else:
                uploads.append(upload)
                last = (upload.path, upload.upload_id)
        return UploadsPage(uploads, prefixes, None, None)

    # --- health -------------------------------------------------------------------------------

    async def check(self) -> None:
        # A listing, not Get Container Properties: a container SAS may list but not read properties.
        await self._first_names(self.prefix, 1)


def _account_from_endpoint(endpoint: str) -> str:
    """The account of an endpoint: `acct.blob...` or, for emulators, the path (`/devstoreaccount1`)."""
    parts = urlsplit(endpoint)
    path = parts.path.strip("/")
    account = path.split("/")[0] if path else (parts.hostname or "").split(".")[0]
    if not account:
        raise ValueError(f"cannot tell the account from endpoint {endpoint!r}: give option account_name")
    return account


def _check_account_key(key: str) -> None:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "option account_key is not base64 (copy it from the storage account's access keys)"
        ) from None


def _connection_string_field(connection_string: str, field: str) -> str | None:
    for item in connection_string.split(";"):
        name, _, value = item.partition("=")
        if name.strip().lower() == field.lower():
            return value.strip()
    return None
