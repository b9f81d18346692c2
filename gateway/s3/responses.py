"""What handlers return: status, headers and a body (bytes or an async byte stream).

The endpoint is the one place that turns these into ASGI messages. Headers are pre-encoded pairs so
the hot path does no per-header work beyond what the handler already did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

XML = (b"content-type", b"application/xml")


class S3Response:
    __slots__ = ("body", "first", "headers", "length", "started", "status")

    def __init__(
        self,
        status: int = 200,
        headers: Headers | None = None,
        body: bytes | AsyncIterator[bytes] = b"",
        *,
        length: int | None = None,
        first: bytes | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        # For streamed bodies, the exact number of bytes that will follow (Content-Length).
        self.length = length
        self.started = False  # once true, an error can only abort the connection
        # A chunk already taken from `body` (to learn X-Cache, or to fail before the headers).
        self.first = first

    async def send(self, send: Send, extra: Headers, head: bool) -> None:
        headers = self.headers
        headers.extend(extra)
        body = self.body
        if isinstance(body, bytes):
            # A HEAD (or empty range) announces the object's length but sends no bytes.
            length = len(body) if self.length is None else self.length
            headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            self.started = True
            await send({"type": "http.response.body", "body": b"" if head else body})
            return
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        self.started = True
        if head:
            await body.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            if self.first:
                await send({"type": "http.response.body", "body": self.first, "more_body": True})
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await body.aclose()  # type: ignore[attr-defined]
        await send({"type": "http.response.body", "body": b""})


def xml_response(body: bytes, status: int = 200, headers: Headers | None = None) -> S3Response:
    h = headers if headers is not None else []
    h.append(XML)
    return S3Response(status, h, body)


def empty(status: int = 200, headers: Headers | None = None) -> S3Response:
    return S3Response(status, headers, b"")
