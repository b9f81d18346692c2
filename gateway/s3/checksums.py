"""Integrity of request bodies: Content-MD5, x-amz-checksum-*, and a hex x-amz-content-sha256.

`BodyVerifier` reads the headers once, up front, so a malformed header fails before the body is
read; `update()` hashes the decoded payload as it streams; `verify(trailers)` compares at the end.
The rules and messages follow S3 (the PutObject reference, "Checking object integrity"):

- at most one `x-amz-checksum-<alg>`, whether as a header or as the trailer `x-amz-trailer` names;
- `x-amz-sdk-checksum-algorithm` must agree with it and cannot come alone;
- a value that is not base64 of the algorithm's digest size is InvalidRequest; a mismatch is
  BadDigest "The <ALG> you specified did not match the calculated checksum.";
- Content-MD5 that is not base64 of 16 bytes is InvalidDigest; a mismatch is BadDigest;
- a hex x-amz-content-sha256 that the body does not hash to is XAmzContentSHA256Mismatch.

The MD5 is computed whether or not the client sent Content-MD5: it is the ETag of a local object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from awscrt import checksums as crt

from gateway.s3.errors import (
    BAD_DIGEST,
    INCOMPLETE_BODY,
    INVALID_DIGEST,
    INVALID_REQUEST,
    MALFORMED_TRAILER,
    XAMZ_CONTENT_SHA256_MISMATCH,
    S3Error,
)
from gateway.s3.sigv4 import STREAMING, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER

CHECKSUM_PREFIX = "x-amz-checksum-"
# x-amz-checksum-* headers that name a mode or an algorithm rather than carry a value.
_NOT_VALUES = frozenset({"x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SINGLE = "Expecting a single x-amz-checksum- header"


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    __slots__ = ("_crc",)

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes, /) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(4, "big")


class _Crc32c(_Crc32):
    __slots__ = ()

    def update(self, data: bytes, /) -> None:
        self._crc = crt.crc32c(data, self._crc)


class _Crc64Nvme(_Crc32):
    __slots__ = ()

    def update(self, data: bytes, /) -> None:
        self._crc = crt.crc64nvme(data, self._crc)

    def digest(self) -> bytes:
        return self._crc.to_bytes(8, "big")


class _XXHash:
    """awscrt's xxhash, whose finalize() may be called once: digest() remembers it."""

    __slots__ = ("_digest", "_hash")

    def __init__(self, factory: Callable[[], crt.XXHash]) -> None:
        self._hash = factory()
        self._digest: bytes | None = None

    def update(self, data: bytes, /) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = bytes(self._hash.finalize())
        return self._digest


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str  # as S3 spells it in x-amz-sdk-checksum-algorithm and in messages
    size: int  # digest bytes
    new: Callable[[], Hasher]

    @property
    def header(self) -> str:
        return CHECKSUM_PREFIX + self.name.lower()


ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {
        a.name: a
        for a in (
            Algorithm("CRC32", 4, _Crc32),
            Algorithm("CRC32C", 4, _Crc32c),
            Algorithm("CRC64NVME", 8, _Crc64Nvme),
            Algorithm("SHA1", 20, hashlib.sha1),
            Algorithm("SHA256", 32, hashlib.sha256),
            Algorithm("SHA512", 64, hashlib.sha512),
            Algorithm("XXHASH64", 8, lambda: _XXHash(crt.XXHash.new_xxhash64)),
            Algorithm("XXHASH3", 8, lambda: _XXHash(crt.XXHash.new_xxhash3_64)),
            Algorithm("XXHASH128", 16, lambda: _XXHash(crt.XXHash.new_xxhash3_128)),
        )
    }
)
_BY_HEADER = {a.header: a for a in ALGORITHMS.values()}


def algorithm_for(header: str) -> Algorithm | None:
    """The algorithm of an `x-amz-checksum-<alg>` header name (lower case), if S3 has it."""
    return _BY_HEADER.get(header)


def checksum_of(algorithm: Algorithm, data: bytes) -> str:
    """The base64 value S3 puts in `x-amz-checksum-<alg>` for `data`."""
    hasher = algorithm.new()
    hasher.update(data)
    return base64.b64encode(hasher.digest()).decode()


class BodyVerifier:
    """Checks one request body against its integrity headers.

    `payload_hash` is `AuthResult.payload_hash`. `object_checksum=False` is for
    CompleteMultipartUpload, whose x-amz-checksum-* headers describe the assembled object, not the
    XML body. `md5=False` skips the MD5 when nobody needs the ETag and no Content-MD5 was sent.
    """

    __slots__ = (
        "_algorithm",
        "_checksums",
        "_content_md5",
        "_expected",
        "_expected_sha256",
        "_expected_size",
        "_hasher",
        "_md5",
        "_sha256",
        "_size",
        "_trailer",
    )

    def __init__(
        self,
        headers: Mapping[str, str],
        payload_hash: str,
        *,
        object_checksum: bool = True,
        md5: bool = True,
    ) -> None:
        self._content_md5 = _content_md5(headers.get("content-md5"))
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 or self._content_md5 is not None else None
        self._expected_sha256 = payload_hash.lower() if _HEX64.fullmatch(payload_hash) else None
        self._sha256 = hashlib.sha256() if self._expected_sha256 is not None else None
        self._algorithm: Algorithm | None = None
        self._expected: bytes | None = None  # from the header; a trailer's comes to verify()
        self._trailer: str | None = None
        if object_checksum:
            self._algorithm, self._expected, self._trailer = _declared_checksum(headers, payload_hash)
        self._hasher = self._algorithm.new() if self._algorithm is not None else None
        length = headers.get("content-length")
        streaming = payload_hash in STREAMING  # the aws-chunked decoder checks the decoded length
        self._expected_size = int(length) if length and length.isdigit() and not streaming else None
        self._size = 0
        self._checksums: dict[str, str] = {}

    @property
    def algorithm(self) -> str | None:
        """The x-amz-checksum algorithm the client chose (header or trailer), e.g. "CRC32"."""
        return self._algorithm.name if self._algorithm is not None else None

    @property
    def size(self) -> int:
        return self._size

    @property
    def md5_hex(self) -> str | None:
        """The body's MD5 as 32 hex digits (the ETag of a single-part object); None if skipped."""
        return self._md5.hexdigest() if self._md5 is not None else None

    @property
    def checksums(self) -> Mapping[str, str]:
        """`{"x-amz-checksum-<alg>": base64}` for the response, once verify() has passed."""
        return MappingProxyType(self._checksums)

    def update(self, data: bytes) -> None:
        self._size += len(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._hasher is not None:
            self._hasher.update(data)

    def verify(self, trailers: Mapping[str, str] | None = None) -> None:
        """Raise S3Error unless the body matched every digest the request declared.

        `trailers` are the aws-chunked trailing headers (`AwsChunkedDecoder.trailers`). Checked in
        the order S3 reads them: length, x-amz-content-sha256, x-amz-checksum-*, Content-MD5.
        """
        trailers = trailers or {}
        if self._expected_size is not None and self._size != self._expected_size:
            raise S3Error(
                INCOMPLETE_BODY,
                extra={
                    "NumberBytesExpected": str(self._expected_size),
                    "NumberBytesProvided": str(self._size),
                },
            )
        if self._sha256 is not None:
            computed = self._sha256.hexdigest()
            if computed != self._expected_sha256:
                raise S3Error(
                    XAMZ_CONTENT_SHA256_MISMATCH,
                    extra={
                        "ClientComputedContentSHA256": self._expected_sha256 or "",
                        "S3ComputedContentSHA256": computed,
                    },
                )
        expected = self._expected
        if self._trailer is not None:
            if set(trailers) != {self._trailer}:
                raise S3Error(MALFORMED_TRAILER)
            expected = _decode_value(self._algorithm, trailers[self._trailer], "trailing header")
        elif trailers:
            raise S3Error(MALFORMED_TRAILER)
        if self._algorithm is not None and self._hasher is not None and expected is not None:
            digest = self._hasher.digest()
            if digest != expected:
                raise S3Error(
                    BAD_DIGEST,
                    f"The {self._algorithm.name} you specified did not match the calculated checksum.",
                )
            self._checksums[self._algorithm.header] = base64.b64encode(digest).decode()
        if self._content_md5 is not None and self._md5 is not None:
            digest = self._md5.digest()
            if digest != self._content_md5:
                raise S3Error(
                    BAD_DIGEST,
                    extra={
                        "ExpectedDigest": base64.b64encode(self._content_md5).decode(),
                        "CalculatedDigest": base64.b64encode(digest).decode(),
                    },
                )


async def verified(
    body: AsyncIterable[bytes],
    verifier: BodyVerifier,
    trailers: Callable[[], Mapping[str, str]] | None = None,
) -> AsyncIterator[bytes]:
    """`body`, passed through `verifier`, which is checked after the last piece: a consumer that
    commits only when its `async for` ends normally never commits a body that failed a digest.
    `trailers` is read at the end, e.g. `lambda: decoder.trailers`."""
    async for piece in body:
        verifier.update(piece)
        yield piece
    verifier.verify(trailers() if trailers is not None else None)


def _content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    value = value.strip()
    digest = _strict_b64(value) if _BASE64.fullmatch(value) else None
    if digest is None or len(digest) != 16:
        raise S3Error(INVALID_DIGEST, extra={"Content-MD5": value})
    return digest


def _declared_checksum(
    headers: Mapping[str, str], payload_hash: str
) -> tuple[Algorithm | None, bytes | None, str | None]:
    """(algorithm, expected digest from a header, trailer name) from the request headers."""
    named = [name for name in headers if name.startswith(CHECKSUM_PREFIX) and name not in _NOT_VALUES]
    if any(name not in _BY_HEADER for name in named):
        raise S3Error(
            INVALID_REQUEST, "The algorithm type you specified in x-amz-checksum- header is invalid."
        )
    if len(named) > 1:
        raise S3Error(INVALID_REQUEST, f"{_SINGLE}. Multiple checksum Types are not allowed.")
    declared = headers.get("x-amz-trailer", "").strip()
    trailers = [t.strip().lower() for t in declared.rstrip(",").split(",")] if declared else []
    if any(t not in _BY_HEADER for t in trailers):
        raise S3Error(INVALID_REQUEST, "The value specified in the x-amz-trailer header is not supported")
    if len(trailers) > 1:
        raise S3Error(INVALID_REQUEST, f"{_SINGLE}. Multiple checksum Types are not allowed.")
    if named and trailers:
        raise S3Error(INVALID_REQUEST, _SINGLE)
    if trailers and payload_hash not in (STREAMING_UNSIGNED_TRAILER, STREAMING_PAYLOAD_TRAILER):
        raise S3Error(MALFORMED_TRAILER)

    algorithm = expected = trailer = None
    if named:
        algorithm = _BY_HEADER[named[0]]
        expected = _decode_value(algorithm, headers[named[0]], "header")
    elif trailers:
        trailer = trailers[0]
        algorithm = _BY_HEADER[trailer]

    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk is not None:
        if algorithm is None:
            raise S3Error(
                INVALID_REQUEST,
                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
                "or x-amz-trailer headers were found.",
            )
        if sdk.strip().upper() != algorithm.name:
            raise S3Error(INVALID_REQUEST, "Value for x-amz-sdk-checksum-algorithm header is invalid.")
    return algorithm, expected, trailer


def _decode_value(algorithm: Algorithm | None, value: str, where: str) -> bytes:
    assert algorithm is not None
    value = value.strip()
    digest = _strict_b64(value) if _BASE64.fullmatch(value) else None
    if digest is None or len(digest) != algorithm.size:
        raise S3Error(INVALID_REQUEST, f"Value for {algorithm.header} {where} is invalid.")
    return digest


def _strict_b64(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
