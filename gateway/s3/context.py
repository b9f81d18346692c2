"""One S3 request as the handlers see it: parsed target, lazy headers, and the decoded body stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.s3 import errors
from gateway.s3.checksums import BodyVerifier
from gateway.s3.errors import S3Error

Scope = Mapping[str, Any]
Receive = Any  # ASGI receive callable

MAX_XML_BODY = 2 * 1024 * 1024
MAX_PUT_SIZE = 5 * 1024**3


class S3Request:
    """Built once per request by the endpoint. `body()` yields the payload exactly once, decoded
    (aws-chunked) and verified (signatures, Content-MD5, checksums): it raises before its last
    chunk if anything does not match, so a writer that commits only at the end never commits
    a bad body."""

    __slots__ = (
        "_body_consumed",
        "_stream_factory",
        "body_asked",
        "bucket",
        "headers",
        "key",
        "method",
        "query",
        "receive",
        "request_id",
        "resource",
        "scope",
        "verifier",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        request_id: str,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.method = method
        self.bucket = bucket
        self.key = key
        self.query = query
        self.headers = headers
        self.request_id = request_id
        self.resource = f"/{bucket}/{key}" if key else f"/{bucket}" if bucket else "/"
        self._body_consumed = False
        self.body_asked = False  # receive() called: the client was told to send the body
        self._stream_factory: Any = None
        self.verifier: BodyVerifier | None = None  # set once the body is read

    def set_body_stream(self, factory: Any) -> None:
        """The endpoint installs the decoder chain after authentication."""
        self._stream_factory = factory

    def content_length(self) -> int | None:
        """The payload length: x-amz-decoded-content-length for aws-chunked bodies."""
        raw = self.headers.get("x-amz-decoded-content-length") or self.headers.get("content-length")
        if raw is None:
            return None
        try:
            n = int(raw)
        except ValueError:
            raise S3Error(
                errors.INVALID_ARGUMENT, f"Invalid content length {raw!r}.", resource=self.resource
            ) from None
        if n < 0:
            raise S3Error(errors.INVALID_ARGUMENT, f"Invalid content length {raw!r}.", resource=self.resource)
        return n

    def body(self) -> AsyncIterator[bytes]:
        if self._body_consumed:
            raise RuntimeError("request body read twice")
        self._body_consumed = True
        stream: AsyncIterator[bytes] = self._stream_factory()
        return stream

    def checksum_headers(self) -> list[tuple[bytes, bytes]]:
        """The verified x-amz-checksum-* values, echoed on PutObject/UploadPart responses."""
        if self.verifier is None:
            return []
        return [(k.encode(), v.encode()) for k, v in self.verifier.checksums.items()]

    async def read_body(self, limit: int = MAX_XML_BODY) -> bytes:
        """The whole (small) body, for XML requests; larger than `limit` is a client error."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.body():
            total += len(chunk)
            if total > limit:
                raise S3Error(errors.ENTITY_TOO_LARGE, resource=self.resource)
            parts.append(chunk)
        return b"".join(parts)
