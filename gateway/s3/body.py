"""The request body as handlers read it: ASGI receive → aws-chunked decoding → verification.

Verification (payload SHA-256, Content-MD5, x-amz-checksum-* headers or trailers, length) runs when
the stream is exhausted, before the last chunk is handed on: a writer that commits only after a
clean end of the stream, or after its declared size, never commits a body that did not match.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from gateway.s3 import errors
from gateway.s3.checksums import BodyVerifier
from gateway.s3.chunked import decode, decoder_for
from gateway.s3.context import S3Request
from gateway.s3.errors import S3Error
from gateway.s3.sigv4 import AuthResult


def body_stream(
    req: S3Request, auth: AuthResult, *, object_checksum: bool = True
) -> Callable[[], AsyncIterator[bytes]]:
    """`object_checksum=False` for CompleteMultipartUpload, whose x-amz-checksum-* headers describe
    the assembled object, not its XML body."""
    return lambda: _verified(req, auth, object_checksum)


async def _received(req: S3Request) -> AsyncIterator[bytes]:
    req.body_asked = True  # uvicorn answers an Expect: 100-continue at the first receive()
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            raise S3Error(
                errors.INCOMPLETE_BODY,
                "The client disconnected before the body was complete.",
                resource=req.resource,
            )
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _verified(req: S3Request, auth: AuthResult, object_checksum: bool) -> AsyncIterator[bytes]:
    decoder = decoder_for(auth, req.headers)
    verifier = BodyVerifier(req.headers, auth.payload_hash, object_checksum=object_checksum, md5=False)
    req.verifier = verifier
    raw = _received(req)
    source = decode(raw, decoder) if decoder is not None else raw
    # One chunk is held back until the stream has ended and verified, so even a consumer that stops
    # reading once it has `size` bytes cannot receive the whole of a body that fails verification.
    pending: bytes | None = None
    async for chunk in source:
        verifier.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    verifier.verify(decoder.trailers if decoder is not None else None)
    if pending is not None:
        yield pending
